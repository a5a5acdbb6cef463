//! The Kubernetes install of the plugin (`deploy/kubernetes/base/cni/`): the
//! init container's script, run here with `sh` against temporary
//! directories, installs the built plugin and a network configuration this
//! plugin accepts, and refuses to install without the Typha Service's
//! address.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use manul_cni::NetConf;

fn source_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes/base/cni")
}

/// Runs install-cni.sh with `env` on top of a clean environment; the host
/// directories are `root/opt/cni/bin` and `root/etc/cni/net.d`.
fn install(root: &Path, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new("sh");
    cmd.arg(source_dir().join("install-cni.sh"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("MANUL_CNI_SOURCE_DIR", source_dir())
        .env("MANUL_CNI_PLUGIN", env!("CARGO_BIN_EXE_manul-cni"))
        .env("MANUL_CNI_BIN_DIR", root.join("opt/cni/bin"))
        .env("MANUL_CNI_NET_DIR", root.join("etc/cni/net.d"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run sh")
}

/// Each plugin of the installed list as the runtime passes it: the list's
/// `cniVersion` and `name` added to the plugin's own keys.
fn installed_confs(root: &Path) -> Vec<NetConf> {
    let text = std::fs::read_to_string(root.join("etc/cni/net.d/10-manul.conflist")).unwrap();
    let list: serde_json::Value = serde_json::from_str(&text).unwrap();
    list["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let mut p = p.clone();
            p["cniVersion"] = list["cniVersion"].clone();
            p["name"] = list["name"].clone();
            NetConf::parse(p.to_string().as_bytes()).unwrap()
        })
        .collect()
}

#[test]
fn installs_the_plugin_and_a_configuration_it_accepts() {
    let root = tempfile::tempdir().unwrap();
    let out = install(
        root.path(),
        &[
            ("NODE_NAME", "node-a"),
            ("MANUL_TYPHA_SERVICE_HOST", "10.96.0.20"),
            ("MANUL_TYPHA_SERVICE_PORT_SYNC", "5473"),
        ],
    );
    assert!(out.status.success(), "{out:?}");

    let installed = std::fs::read(root.path().join("opt/cni/bin/manul-cni")).unwrap();
    let built = std::fs::read(env!("CARGO_BIN_EXE_manul-cni")).unwrap();
    assert!(
        installed == built,
        "the installed plugin differs from the built one"
    );

    let confs = installed_confs(root.path());
    assert_eq!(confs.len(), 1);
    let conf = &confs[0];
    assert_eq!(conf.plugin_type, "manul-cni");
    assert_eq!(conf.typha, vec!["10.96.0.20:5473".to_string()]);
    assert_eq!(conf.nodename.as_deref(), Some("node-a"));
    assert!(conf.policy_setup_timeout().is_some());
    assert_eq!(
        conf.endpoint_status_dir.as_deref(),
        Some(Path::new("/var/run/manul/endpoint-status"))
    );
    assert!(conf.unknown_keys().is_empty(), "{:?}", conf.unknown_keys());

    // No temporary file is left beside the installed ones.
    for dir in ["opt/cni/bin", "etc/cni/net.d"] {
        let names: Vec<_> = std::fs::read_dir(root.path().join(dir))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{dir}: {names:?}");
    }
}

#[test]
fn an_ipv6_service_address_is_bracketed() {
    let root = tempfile::tempdir().unwrap();
    let out = install(
        root.path(),
        &[
            ("NODE_NAME", "node-a"),
            ("MANUL_TYPHA_SERVICE_HOST", "fd00:10:96::20"),
            ("MANUL_TYPHA_SERVICE_PORT_SYNC", "5473"),
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let confs = installed_confs(root.path());
    assert_eq!(confs[0].typha, vec!["[fd00:10:96::20]:5473".to_string()]);
}

#[test]
fn nothing_is_installed_without_the_typha_service() {
    let root = tempfile::tempdir().unwrap();
    let out = install(root.path(), &[("NODE_NAME", "node-a")]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("manul-typha Service"), "{stderr}");
    assert!(!root.path().join("opt").exists());
    assert!(!root.path().join("etc").exists());
}
