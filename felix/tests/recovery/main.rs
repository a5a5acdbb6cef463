//! A failed batch on a real node, for each kernel driver: Felix's agent
//! loop resyncs the driver from the calculation graph's whole state until
//! the kernel takes it, and nothing the policy denies gets through
//! meanwhile (the scenario: [`scenario`]). Needs root.
//!
//! - nftables: the fault is an `nft` wrapper that refuses every call while
//!   a flag file exists;
//! - eBPF: the address map is made small enough that growing an IP set
//!   overflows it; each resync is refused while the set is too big, until
//!   room is made. Pins live under a test root and are removed afterwards.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod scenario;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use manul_dataplane_api::Driver;
use manul_dataplane_bpf::{BpfConfig, BpfDriver};
use manul_dataplane_conformance::driver_thread::chain;
use manul_dataplane_conformance::{Factory, NodeContext, privileges};
use manul_dataplane_iptables::{Nft, NftDriver};
use scenario::{BULK_GROWN, DataFault, Fault, run_failed_batch_recovery};

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
fn nft_a_refused_transaction_is_resynced_and_fails_closed_meanwhile() {
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

/// Room for the scenario's state with the small set, not the grown one.
const ADDR_CAPACITY: u32 = 96;

#[test]
fn bpf_a_full_map_is_resynced_once_there_is_room_and_fails_closed_meanwhile() {
    if !privileges().expect("privileges") {
        eprintln!("skipped: needs root (set CI=true to make this a failure)");
        return;
    }
    assert!(BULK_GROWN > ADDR_CAPACITY as usize);
    let pin_root = PathBuf::from("/sys/fs/bpf/manul-test");
    let nodes: Arc<Mutex<Vec<String>>> = Arc::default();
    let (root, seen) = (pin_root.clone(), nodes.clone());
    let factory: Arc<Factory> = Arc::new(move |ctx: &NodeContext| {
        seen.lock().unwrap().push(ctx.node.clone());
        let mut config = BpfConfig::new(&ctx.node);
        config.pin_root = root.clone();
        config.addr_capacity = Some(ADDR_CAPACITY);
        BpfDriver::new(config)
            .map(|d| Box::new(d) as Box<dyn Driver>)
            .map_err(|e| chain(&e))
    });
    let result = run_failed_batch_recovery("bpfrs", factory, &DataFault);
    for node in nodes.lock().unwrap().iter() {
        BpfDriver::purge_node(&pin_root, node).expect("remove the test's pins");
    }
    match result {
        Ok(report) => eprintln!("{report:?}"),
        Err(e) => panic!("{e}"),
    }
}
