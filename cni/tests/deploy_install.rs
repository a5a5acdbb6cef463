//! The Kubernetes install of the plugin (`deploy/kubernetes/base/cni/`): the
//! init container's script, run here with `sh` against temporary
//! directories, installs the built plugin, a network configuration this
//! plugin accepts (Kubernetes mode) and the plugin's kubeconfig, and
//! refuses to install without the Typha Service's address or the
//! ServiceAccount's token.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use std::os::unix::fs::PermissionsExt;

use kube::config::Kubeconfig;
use manul_cni::{Datastore, NetConf};

fn source_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes/base/cni")
}

const TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.test-token";
const CA: &str = "-----BEGIN CERTIFICATE-----\nMIIBtest\n-----END CERTIFICATE-----\n";

/// Runs install-cni.sh with `env` on top of a clean environment; the host
/// directories are `root/opt/cni/bin` and `root/etc/cni/net.d`, the
/// mounted token Secret `root/token`, the TLS Secret `root/tls`.
fn install(root: &Path, env: &[(&str, &str)]) -> Output {
    let token_dir = root.join("token");
    if !token_dir.exists() {
        std::fs::create_dir_all(&token_dir).unwrap();
        std::fs::write(token_dir.join("token"), TOKEN).unwrap();
        std::fs::write(token_dir.join("ca.crt"), CA).unwrap();
    }
    let tls_dir = root.join("tls");
    if !tls_dir.exists() {
        std::fs::create_dir_all(&tls_dir).unwrap();
        for f in ["ca.crt", "tls.crt", "tls.key"] {
            std::fs::write(
                tls_dir.join(f),
                format!("{f} of the manul-cni-tls Secret\n"),
            )
            .unwrap();
        }
    }
    let mut cmd = Command::new("sh");
    cmd.arg(source_dir().join("install-cni.sh"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("MANUL_CNI_SOURCE_DIR", source_dir())
        .env("MANUL_CNI_PLUGIN", env!("CARGO_BIN_EXE_manul-cni"))
        .env("MANUL_CNI_BIN_DIR", root.join("opt/cni/bin"))
        .env("MANUL_CNI_NET_DIR", root.join("etc/cni/net.d"))
        .env("MANUL_CNI_TOKEN_DIR", &token_dir)
        .env("MANUL_CNI_TLS_DIR", &tls_dir)
        .env("KUBERNETES_SERVICE_HOST", "10.96.0.1")
        .env("KUBERNETES_SERVICE_PORT", "443");
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
    assert_eq!(
        conf.datastore,
        Datastore::Kubernetes {
            kubeconfig: PathBuf::from("/etc/cni/net.d/manul-kubeconfig")
        }
    );

    // The kubeconfig: the API server, its CA and the token, for root only.
    let path = root.path().join("etc/cni/net.d/manul-kubeconfig");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let kc = Kubeconfig::read_from(&path).unwrap();
    let cluster = kc.clusters[0].cluster.clone().unwrap();
    assert_eq!(cluster.server.as_deref(), Some("https://10.96.0.1:443"));
    let ca = cluster.certificate_authority_data.unwrap();
    assert_eq!(
        base64_decode(&ca),
        CA.as_bytes(),
        "the CA is carried as base64"
    );
    assert!(kc.auth_infos[0].auth_info.as_ref().unwrap().token.is_some());
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(&format!("token: {TOKEN}\n")), "{text}");

    // The TLS identity, copied for root only, where the conflist names it.
    let tls = root.path().join("etc/cni/net.d/manul-tls");
    assert_eq!(
        std::fs::metadata(&tls).unwrap().permissions().mode() & 0o777,
        0o700
    );
    for f in ["ca.crt", "tls.crt", "tls.key"] {
        let copied = tls.join(f);
        assert_eq!(
            std::fs::read_to_string(&copied).unwrap(),
            format!("{f} of the manul-cni-tls Secret\n")
        );
        assert_eq!(
            std::fs::metadata(&copied).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    // No temporary file is left beside the installed ones.
    for (dir, want) in [
        ("opt/cni/bin", 1),
        ("etc/cni/net.d", 3),
        ("etc/cni/net.d/manul-tls", 3),
    ] {
        let names: Vec<_> = std::fs::read_dir(root.path().join(dir))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), want, "{dir}: {names:?}");
    }
}

/// Decodes standard base64 (what `base64 -w0` writes).
fn base64_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in text.bytes().filter(|c| *c != b'=') {
        let v = ALPHABET.iter().position(|a| *a == c).unwrap() as u32;
        bits = (bits << 6) | v;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
            bits &= (1 << n) - 1;
        }
    }
    out
}

#[test]
fn nothing_is_installed_without_the_service_account_token() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("token")).unwrap();
    let out = install(
        root.path(),
        &[
            ("NODE_NAME", "node-a"),
            ("MANUL_TYPHA_SERVICE_HOST", "10.96.0.20"),
            ("MANUL_TYPHA_SERVICE_PORT_SYNC", "5473"),
        ],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("manul-cni-token Secret"), "{stderr}");
    assert!(!root.path().join("opt").exists());
    assert!(!root.path().join("etc").exists());
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
