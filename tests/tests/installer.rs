//! `virtshim-installer` on a real containerd with a VM running: it checks the node (QEMU,
//! libvirt through the shim, the accelerator), writes the `virtshim` runtime into containerd's
//! config.toml leaving the rest of it alone, and replaces the shim binary with a newer one while
//! the VM runs — which keeps running, stays reachable through its console and
//! is still stopped through the CRI afterwards — and a new VM runs on the new binary.
//! (containerd is restarted by the test harness here, which owns that private instance; on a
//! node the installer restarts it itself.)

#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use virtctl::local;
use virtshim_api::manifest::parse_documents;
use virtshim_tests::vm;

fn installer(args: &[&str], bin_dir: &Path, config: &Path) -> String {
    let out = Command::new(vm::installer_binary())
        .arg("--config")
        .arg(config)
        .arg("--bin-dir")
        .arg(bin_dir)
        .args(["--restart", "false"])
        .args(args)
        .env("VIRTSHIM_RUN_DIR", format!("{}/run", vm::STATE_ROOT))
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("NODE_NAME")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "installer {args:?} failed:\n{text}");
    println!("installer {args:?}:\n{text}");
    text
}

fn vmi(name: &str) -> String {
    vm::kernel_boot_vmi(
        &format!("name: {name}"),
        "160Mi",
        "autoattachPodInterface: false",
        "console=ttyS0",
        "",
    )
}

/// The shim process serving a sandbox, by the sandbox id on its command line.
fn shim_exe(sandbox_id: &str) -> String {
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        if cmdline.contains("containerd-shim-virtshim-v2") && cmdline.contains(sandbox_id) {
            return std::fs::read_link(entry.path().join("exe"))
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default();
        }
    }
    panic!("no shim for sandbox {sandbox_id}");
}

fn console_echo(sandbox_id: &str, word: &str) {
    let socket = vm::pod_dirs(sandbox_id)[0].join("console.sock");
    let mut console = UnixStream::connect(&socket).unwrap();
    console
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    console
        .write_all(format!("echo {word}-$((6*7))\n").as_bytes())
        .unwrap();
    let wanted = format!("{word}-42");
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        if let Ok(n) = std::io::Read::read(&mut console, &mut buf) {
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
            if seen.contains(&wanted) {
                return;
            }
        }
    }
    panic!("the VM did not answer on its console: {seen}");
}

#[test]
fn reinstalling_a_newer_shim_leaves_running_vms_running() {
    let test = "reinstalling_a_newer_shim_leaves_running_vms_running";
    // containerd finds the shim in a folder of this test's own, which the installer manages.
    let bin = tempfile::tempdir().unwrap();
    std::fs::copy(
        vm::shim_dir().join("containerd-shim-virtshim-v2"),
        bin.path().join("containerd-shim-virtshim-v2"),
    )
    .unwrap();
    let Some(mut containerd) =
        vm::containerd_with(test, &format!("{}/lib", vm::STATE_ROOT), bin.path().into())
    else {
        return;
    };
    let config = containerd.config_file();
    let original = std::fs::read_to_string(&config).unwrap();
    let cri = containerd.cri().unwrap();
    let first = local::run(
        &cri,
        &local::plan(parse_documents(&vmi("before")).remove(0).unwrap()).unwrap(),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", containerd.log_tail()));
    vm::wait_for_console(
        &first.console_log(),
        "VIRTSHIM-GUEST-UP",
        Duration::from_secs(60),
    )
    .unwrap();
    let qemu = vm::qemu_pids(&first.sandbox_id);
    assert_eq!(qemu.len(), 1);

    // The node check: QEMU, the shim (and so libvirt) and the accelerator VMs will get.
    let report = installer(&["check"], bin.path(), &config);
    assert!(report.contains("check: qemu ok"), "{report}");
    assert!(report.contains("check: shim and libvirt ok"), "{report}");
    assert!(
        report.contains("check: accelerator ok (kvm)")
            || report.contains("check: accelerator ok (tcg)"),
        "{report}"
    );

    // A newer shim (same code, different bytes) installed while the VM runs.
    let newer = bin.path().join("newer-shim");
    let mut bytes = std::fs::read(vm::shim_dir().join("containerd-shim-virtshim-v2")).unwrap();
    bytes.extend_from_slice(b"\0virtshim-installer-test-build\0");
    std::fs::write(&newer, &bytes).unwrap();
    let out = installer(
        &["install", "--shim", &newer.to_string_lossy()],
        bin.path(),
        &config,
    );
    assert!(out.contains("installed"), "{out}");
    let with = std::fs::read_to_string(&config).unwrap();
    assert!(with.contains("io.containerd.virtshim.v2"), "{with}");
    assert!(with.contains("virtshim.io/*"), "{with}");
    // Everything else of the original config is still there, comments included.
    assert!(with.contains("restrict_oom_score_adj"), "{with}");
    for line in original.lines().filter(|l| l.starts_with('#')) {
        assert!(with.contains(line), "lost {line:?}:\n{with}");
    }
    assert_eq!(
        std::fs::read(bin.path().join("containerd-shim-virtshim-v2")).unwrap(),
        bytes
    );
    // Installing the same again changes nothing (and would not restart containerd).
    let again = installer(
        &["install", "--shim", &newer.to_string_lossy()],
        bin.path(),
        &config,
    );
    assert!(again.contains("already up to date"), "{again}");
    assert!(again.contains("already configured"), "{again}");
    containerd.restart().unwrap();
    let cri = containerd.cri().unwrap();

    // The first VM never stopped: same QEMU, still answering; its shim runs the old binary.
    assert_eq!(vm::qemu_pids(&first.sandbox_id), qemu);
    console_echo(&first.sandbox_id, "still-here");
    assert!(
        shim_exe(&first.sandbox_id).ends_with("(deleted)"),
        "the running shim should keep its old (replaced) binary"
    );
    // A new VM runs on the new binary.
    let second = local::run(
        &cri,
        &local::plan(parse_documents(&vmi("after")).remove(0).unwrap()).unwrap(),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", containerd.log_tail()));
    vm::wait_for_console(
        &second.console_log(),
        "VIRTSHIM-GUEST-UP",
        Duration::from_secs(60),
    )
    .unwrap();
    assert_eq!(
        shim_exe(&second.sandbox_id),
        bin.path()
            .join("containerd-shim-virtshim-v2")
            .to_string_lossy()
    );
    // Both are still managed through the CRI: stopped with their grace period, removed.
    for started in [&first, &second] {
        vm::stop_cleanly(&cri, started, Duration::from_secs(30));
        vm::remove_pod(&cri, &started.sandbox_id);
    }
    // Uninstall once no VM runs: only the runtime leaves the config, and the binary goes.
    installer(&["uninstall", "--wait-for-vms", "30"], bin.path(), &config);
    let without = std::fs::read_to_string(&config).unwrap();
    assert!(!without.contains("io.containerd.virtshim.v2"), "{without}");
    assert!(without.contains("io.containerd.runc.v2"), "{without}");
    assert!(without.contains("restrict_oom_score_adj"), "{without}");
    assert!(!bin.path().join("containerd-shim-virtshim-v2").exists());
    containerd.restart().unwrap();
    containerd.stop().unwrap();
}
