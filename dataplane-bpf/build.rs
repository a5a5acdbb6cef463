//! Compiles the kernel programs with clang and generates the Rust view of
//! `bpf/manul_maps.h` and `bpf/manul_ctlb.h` with bindgen: one definition
//! of every map key and value serves both sides.

use std::env;
use std::error::Error;
use std::path::PathBuf;
use std::process::Command;

fn main() -> Result<(), Box<dyn Error>> {
    let out = PathBuf::from(env::var_os("OUT_DIR").ok_or("cargo did not set OUT_DIR")?);
    let header = "bpf/manul_maps.h";
    let ctlb_header = "bpf/manul_ctlb.h";
    println!("cargo:rerun-if-changed={header}");
    // The headers manul_tc.c and manul_ctlb.c include.
    println!("cargo:rerun-if-changed=bpf");
    println!("cargo:rerun-if-changed={ctlb_header}");
    println!("cargo:rerun-if-env-changed=CLANG");
    let clang = env::var("CLANG").unwrap_or_else(|_| "clang".to_owned());
    // The TC programs, and the connect-time load balancer's cgroup and
    // iterator programs (their own object: loaded only when enabled).
    for (source, object) in [
        ("bpf/manul_tc.c", "manul_tc.o"),
        ("bpf/manul_ctlb.c", "manul_ctlb.o"),
    ] {
        println!("cargo:rerun-if-changed={source}");
        compile(&clang, source, &out.join(object))?;
    }

    let bindings = bindgen::Builder::default()
        .header(header)
        .header(ctlb_header)
        .header_contents("manul_skb.h", "#include <linux/bpf.h>")
        .allowlist_type("__sk_buff")
        .clang_arg("-I/usr/include/x86_64-linux-gnu")
        .allowlist_type("manul_.*")
        .allowlist_var("MANUL_.*")
        .derive_default(true)
        .derive_debug(true)
        .derive_copy(true)
        .derive_eq(true)
        .derive_hash(true)
        .prepend_enum_name(false)
        .default_enum_style(bindgen::EnumVariation::Consts)
        .layout_tests(true)
        .generate()
        .map_err(|e| format!("bindgen cannot read {header}: {e}"))?;
    bindings.write_to_file(out.join("manul_maps.rs"))?;
    Ok(())
}

fn compile(clang: &str, source: &str, object: &std::path::Path) -> Result<(), Box<dyn Error>> {
    let status = Command::new(clang)
        .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"])
        .arg("-I/usr/include/x86_64-linux-gnu")
        .arg("-Ibpf")
        .arg("-c")
        .arg(source)
        .arg("-o")
        .arg(object)
        .status()
        .map_err(|e| {
            format!("cannot run {clang} (install clang and libbpf-dev, see scripts/deps.sh): {e}")
        })?;
    if !status.success() {
        return Err(format!("{clang} failed to compile {source}").into());
    }
    Ok(())
}
