//! The `manul-flows` binary's command line: bad flags are refused before
//! anything listens, with exit status 2 and a message naming the flag.

use std::process::Command;

#[test]
fn bad_flags_exit_2_naming_the_flag() {
    for (args, flag) in [
        (&["--window-seconds", "0"][..], "--window-seconds"),
        (&["--max-records", "many"][..], "--max-records"),
        (&["--listen", "not-an-address"][..], "--listen"),
        (&["--log-format", "xml"][..], "--log-format"),
        (&["--no-such-flag"][..], "--no-such-flag"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_manul-flows"))
            .args(args)
            .output()
            .expect("run manul-flows");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains(flag),
            "{args:?} does not name {flag}: {stderr}"
        );
        assert!(out.stdout.is_empty(), "{args:?} printed to stdout");
    }
}
