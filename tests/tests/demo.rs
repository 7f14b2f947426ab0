//! `make demo` (scripts/demo.sh) against a private containerd: what a new user sees. Each step
//! on a line with its expected and its measured time, the guest's console up to the example's
//! cloud-init greeting with no terminal control sequences, the VM as crictl shows it (or how to
//! get crictl), how it was stopped; no kernel boot messages, no temporary paths.

#![allow(clippy::unwrap_used)]

use std::process::Command;
use virtshim_tests::{repo_root, vm};

#[test]
fn demo_shows_what_matters() {
    let test = "demo_shows_what_matters";
    let Some(containerd) = vm::containerd(test) else {
        return;
    };
    let out = Command::new("bash")
        .arg(repo_root().join("scripts/demo.sh"))
        .env("VIRTCTL", vm::virtctl_binary())
        .env("CONTAINERD_SOCKET", containerd.socket())
        .current_dir(repo_root())
        .output()
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "demo failed: {stderr}\n{}",
        containerd.log_tail()
    );
    let text = format!("{stdout}{stderr}");
    assert!(
        text.contains("hello from cloud-init user-data on "),
        "no cloud-init greeting"
    );
    assert!(!text.contains('\u{1b}'), "terminal control sequences shown");
    assert!(!text.contains("/tmp/"), "temporary paths shown");
    for noise in ["Linux version", "ACPI:", "pci 0000:", "-rw-r--r--"] {
        assert!(!text.contains(noise), "{noise:?} shown");
    }
    let lines = text.lines().count();
    assert!(lines < 60, "{lines} lines of output");
    for step in 1..=5 {
        assert!(text.contains(&format!("[{step}/5] ")), "no step {step}");
    }
    assert_eq!(text.matches("      took ").count(), 5, "a time per step");
    assert!(
        text.contains("stopped (exit code 0)"),
        "no clean stop shown"
    );
    assert!(
        text.contains("state CONTAINER_RUNNING") || text.contains("make crictl"),
        "neither crictl's view nor how to get crictl"
    );
    containerd.stop().unwrap();
}
