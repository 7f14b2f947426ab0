//! `make bench ONLY=boot RUNS=1` as a user runs it from a clone: from a shell, not from cargo, so
//! nothing of cargo's or rustup's environment reaches it. `virtshim-bench` then builds the shim
//! with a cargo of its own; on a fresh clone that once failed on a dependency's
//! `rust-toolchain.toml` naming a toolchain nobody installed (`vm::cargo_command` pins the one
//! the project builds with). The figures themselves are not judged (this machine is noisy):
//! that each boot line is printed with a ratio, and the command succeeds.

#![allow(clippy::unwrap_used)]

use std::process::Command;
use virtshim_tests::{repo_root, skip};

#[test]
fn make_bench_only_boot_runs_outside_cargo() {
    let test = "make_bench_only_boot_runs_outside_cargo";
    if !rustix::process::geteuid().is_root() {
        skip(test, "the benchmark starts its own containerd: needs root");
        return;
    }
    let mut make = Command::new("make");
    make.args(["--no-print-directory", "bench", "ONLY=boot", "RUNS=1"])
        .current_dir(repo_root());
    // A user's shell: none of what cargo and rustup's proxy set for a test (CARGO, CARGO_PKG_*,
    // CARGO_MANIFEST_DIR, …, RUSTUP_TOOLCHAIN); where cargo and rustup live stays as it was.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy().into_owned();
        let set_by_cargo = name.starts_with("CARGO") && name != "CARGO_HOME";
        if set_by_cargo || name == "RUSTUP_TOOLCHAIN" {
            make.env_remove(&name);
        }
    }
    let out = make.output().expect("make runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "make bench ONLY=boot RUNS=1 failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    for guest in ["kernelBoot", "containerDisk"] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(guest))
            .unwrap_or_else(|| panic!("no {guest} line in:\n{stdout}"));
        let ratio: f64 = line
            .split("ratio ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|r| r.parse().ok())
            .unwrap_or_else(|| panic!("no ratio on {line:?}"));
        assert!(
            ratio > 0.0,
            "a ratio of {ratio} is a failed reading: {line}"
        );
    }
}
