//! Machine detection and the parsers behind it.

use super::super::Machine;
use super::super::machine::{
    cpuinfo_model, cpuinfo_processors, meminfo_total_bytes, os_release_pretty_name,
};

#[test]
fn detect_gives_sane_values() {
    let m = Machine::detect();
    assert!(m.cpus >= 1, "{m:?}");
    assert!(
        !m.kernel.is_empty() && !m.os.is_empty() && !m.cpu_model.is_empty(),
        "{m:?}"
    );
    if cfg!(target_os = "linux") {
        assert!(m.memory_bytes >= 64 << 20, "{m:?}");
        assert!(m.memory_bytes < 1 << 50, "{m:?}");
        assert_ne!(m.kernel, "unknown", "{m:?}");
        assert!(
            m.kernel.chars().next().is_some_and(|c| c.is_ascii_digit()),
            "{m:?}"
        );
    }
    let json = serde_json::to_value(&m).unwrap();
    assert_eq!(json["cpus"], m.cpus);
}

#[test]
fn meminfo() {
    let cases = [
        (
            "MemTotal:       16314924 kB\nMemFree: 1 kB\n",
            Some(16_314_924 * 1024),
        ),
        ("MemFree: 1 kB\nMemTotal: 2048 kB\n", Some(2048 * 1024)),
        ("MemTotal: 5\n", Some(5)),
        ("MemTotal: lots kB\n", None),
        ("MemTotal: 1 GB\n", None),
        ("", None),
    ];
    for (text, want) in cases {
        assert_eq!(meminfo_total_bytes(text), want, "{text:?}");
    }
}

#[test]
fn os_release() {
    let cases = [
        (
            "NAME=\"Debian GNU/Linux\"\nPRETTY_NAME=\"Debian GNU/Linux 13 (trixie)\"\n",
            Some("Debian GNU/Linux 13 (trixie)"),
        ),
        (
            "PRETTY_NAME='Alpine Linux v3.20'\n",
            Some("Alpine Linux v3.20"),
        ),
        ("PRETTY_NAME=Plain\n", Some("Plain")),
        ("NAME=Fallback\n", Some("Fallback")),
        ("PRETTY_NAME=\"\"\nNAME=Other\n", Some("Other")),
        ("PRETTY_NAME_EXTRA=x\n", None),
        ("", None),
    ];
    for (text, want) in cases {
        assert_eq!(os_release_pretty_name(text).as_deref(), want, "{text:?}");
    }
}

#[test]
fn cpuinfo() {
    let x86 = "processor\t: 0\nmodel name\t: AMD EPYC 7B13\n\nprocessor\t: 1\nmodel name\t: AMD EPYC 7B13\n";
    assert_eq!(cpuinfo_processors(x86), Some(2));
    assert_eq!(cpuinfo_model(x86).as_deref(), Some("AMD EPYC 7B13"));
    let arm = "processor : 0\nBogoMIPS : 50.00\nCPU part : 0xd0c\n";
    assert_eq!(cpuinfo_processors(arm), Some(1));
    assert_eq!(cpuinfo_model(arm).as_deref(), Some("0xd0c"));
    assert_eq!(cpuinfo_processors(""), None);
    assert_eq!(cpuinfo_model(""), None);
}
