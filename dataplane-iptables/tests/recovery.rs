//! A refused `nft` transaction on a real node: Felix's agent loop resyncs
//! the driver until the kernel takes it, and nothing the policy denies gets
//! through meanwhile (see `manul_dataplane_conformance::recovery`). The
//! fault is an `nft` wrapper that refuses every call while a flag file
//! exists.

#![allow(clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;

use manul_dataplane_api::Driver;
use manul_dataplane_conformance::driver_thread::chain;
use manul_dataplane_conformance::recovery::{Fault, run_failed_batch_recovery};
use manul_dataplane_conformance::{Factory, privileges};
use manul_dataplane_iptables::{Nft, NftDriver};

/// Refuses every `nft` call while `flag` exists.
struct RefusingNft {
    flag: PathBuf,
}

impl Fault for RefusingNft {
    fn arm(&self) {
        std::fs::write(&self.flag, b"").expect("arm the fault");
    }
    fn clear(&self) {
        std::fs::remove_file(&self.flag).expect("clear the fault");
    }
}

#[test]
fn a_refused_transaction_is_resynced_and_fails_closed_meanwhile() {
    if !privileges().expect("privileges") {
        eprintln!("skipped: needs root (set CI=true to make this a failure)");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let flag = dir.path().join("refuse");
    let wrapper = dir.path().join("nft");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nif [ -e '{}' ]; then echo 'injected fault: transaction refused' >&2; exit 1; fi\nexec nft \"$@\"\n",
            flag.display()
        ),
    )
    .expect("write the wrapper");
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let program = wrapper.display().to_string();
    let factory: Arc<Factory> = Arc::new(move |_ctx| {
        NftDriver::new(Nft::with_program(program.clone()))
            .map(|d| Box::new(d) as Box<dyn Driver>)
            .map_err(|e| chain(&e))
    });
    let report = run_failed_batch_recovery("iptrs", factory, &RefusingNft { flag })
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("{report:?}");
}
