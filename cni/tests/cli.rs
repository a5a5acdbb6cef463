//! The binary's contract without a kernel or datastore: VERSION, and the
//! JSON errors for bad environments and configurations (nothing is
//! contacted before the inputs are checked).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{cni, vars};

fn good_conf() -> String {
    common::conf("127.0.0.1:1", 0, std::path::Path::new("/nonexistent"))
}

#[tokio::test]
async fn version_lists_supported_versions() {
    let run = cni(
        vec![("CNI_COMMAND", "VERSION".into())],
        r#"{"cniVersion":"0.4.0"}"#.into(),
    )
    .await;
    assert!(run.ok, "{run:?}");
    let v = run.json();
    assert_eq!(v["cniVersion"], "0.4.0");
    assert_eq!(
        v["supportedVersions"],
        serde_json::json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0"])
    );
}

#[tokio::test]
async fn bad_inputs_are_json_errors() {
    let pod = Some(("production", "api"));
    let netns = Some(std::path::Path::new("/run/netns/x"));
    type Env = Vec<(&'static str, String)>;
    let cases: Vec<(Env, String, u64, &str)> = vec![
        (vec![], good_conf(), 4, "CNI_COMMAND"),
        (
            vars("ADD", "", netns, pod),
            good_conf(),
            4,
            "CNI_CONTAINERID",
        ),
        (vars("ADD", "abc", None, pod), good_conf(), 4, "CNI_NETNS"),
        (
            vars("ADD", "abc", netns, None),
            good_conf(),
            4,
            "K8S_POD_NAME",
        ),
        (vars("ADD", "abc", netns, pod), "{".into(), 6, "decode"),
        (
            vars("ADD", "abc", netns, pod),
            good_conf().replace("1.0.0", "9.0.0"),
            1,
            "9.0.0",
        ),
        (
            vars("ADD", "abc", netns, pod),
            good_conf().replace("[\"127.0.0.1:1\"]", "[]"),
            7,
            "typha",
        ),
        (
            vars("CHECK", "abc", netns, pod),
            good_conf().replace("1.0.0", "0.3.1"),
            1,
            "CHECK",
        ),
    ];
    for (env, stdin, code, mention) in cases {
        let run = cni(env.clone(), stdin.clone()).await;
        assert!(!run.ok, "{env:?} {stdin}: {run:?}");
        let e = run.json();
        assert_eq!(e["code"], code, "{env:?} {stdin}: {e}");
        assert!(e["msg"].as_str().unwrap().contains(mention), "{env:?}: {e}");
        assert!(e["cniVersion"].is_string(), "{e}");
    }
}

#[tokio::test]
async fn an_unreachable_datastore_is_try_again_later() {
    let run = cni(
        vars("DEL", "abc", None, Some(("production", "api"))),
        good_conf(),
    )
    .await;
    assert!(!run.ok, "{run:?}");
    assert_eq!(run.json()["code"], 11, "{run:?}");
}
