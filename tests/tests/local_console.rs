//! `virtctl local console` and `virtctl local rm`, the binary itself against a real guest: the
//! console (the CRI's Attach, through containerd's streaming server) takes keys from a pipe and
//! shows what the guest prints, Ctrl+] (byte 0x1d) leaves with the VM still running; `rm` of
//! the running VM presses the ACPI power button and lets the guest power off, rather than
//! killing it.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use virtctl::local;
use virtshim_api::manifest::parse_documents;
use virtshim_tests::vm;

/// Our virtctl, built from this workspace into the target folder these tests run from.
fn virtctl_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let mut dir = exe.parent().unwrap().to_path_buf();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.pop();
    }
    let mut build = vm::cargo_command();
    build
        .args(["build", "-q", "-p", "virtctl"])
        .env("CARGO_TARGET_DIR", dir.parent().unwrap())
        .current_dir(virtshim_tests::repo_root());
    if dir.file_name().is_some_and(|p| p == "release") {
        build.arg("--release");
    }
    assert!(build.status().unwrap().success(), "building virtctl failed");
    dir.join("virtctl")
}

/// Collects everything `from` gives on a thread of its own.
fn collect(mut from: impl Read + Send + 'static) -> Arc<Mutex<Vec<u8>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    seen
}

fn text(seen: &Arc<Mutex<Vec<u8>>>) -> String {
    String::from_utf8_lossy(&seen.lock().unwrap()).into_owned()
}

/// Waits until `child` exits; its status, or `None` after `timeout`.
fn wait_child(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let started = Instant::now();
    while started.elapsed() < timeout {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

#[test]
fn local_console_types_into_the_guest_and_rm_powers_it_off() {
    let test = "local_console_types_into_the_guest_and_rm_powers_it_off";
    let Some(containerd) = vm::containerd(test) else {
        return;
    };
    let virtctl = virtctl_binary();
    let socket = containerd.socket();
    let cri = containerd.cri().unwrap();
    let yaml = vm::kernel_boot_vmi(
        "name: typist",
        "192Mi",
        "autoattachPodInterface: false",
        "console=ttyS0",
        "  terminationGracePeriodSeconds: 25\n",
    );
    let plan = local::plan(parse_documents(&yaml).remove(0).unwrap()).unwrap();
    let started =
        local::run(&cri, &plan).unwrap_or_else(|e| panic!("run: {e}\n{}", containerd.log_tail()));
    vm::wait_for_console(
        &started.console_log(),
        vm::READY_MARKER,
        // TCG on a busy machine can be slow to boot.
        Duration::from_secs(180),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", containerd.log_tail()));

    // The console from a pipe: a typed command runs in the guest and its output comes back.
    let mut console = Command::new(&virtctl)
        .arg("local")
        .arg("--socket")
        .arg(&socket)
        .args(["console", "typist"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = collect(console.stdout.take().unwrap());
    let stderr = collect(console.stderr.take().unwrap());
    let mut keys = console.stdin.take().unwrap();
    keys.write_all(b"echo typed-$((6*7))\n").unwrap();
    let typed = Instant::now();
    while !text(&stdout).contains("typed-42") {
        assert!(
            typed.elapsed() < Duration::from_secs(30),
            "no typed-42 from the guest; stdout: {}\nstderr: {}",
            text(&stdout),
            text(&stderr)
        );
        assert!(
            console.try_wait().unwrap().is_none(),
            "virtctl local console ended early; stderr: {}",
            text(&stderr)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(text(&stderr).contains("Ctrl+]"), "{}", text(&stderr));
    // Ctrl+] leaves; the VM keeps running.
    keys.write_all(&[0x1d]).unwrap();
    let status = wait_child(&mut console, Duration::from_secs(10))
        .unwrap_or_else(|| panic!("Ctrl+] did not end the console: {}", text(&stderr)));
    assert!(status.success(), "{status}: {}", text(&stderr));
    assert!(local::find(&cri, "typist").unwrap().is_running());
    vm::wait_for_console(&started.console_log(), "typed-42", Duration::from_secs(5)).unwrap();

    // rm of the running VM: the power button, and the guest's own power-off within the grace
    // period. The log is removed with the pod, so it is read through a handle opened before.
    let mut log = std::fs::File::open(started.console_log()).unwrap();
    let removing = Instant::now();
    let output = Command::new(&virtctl)
        .arg("local")
        .arg("--socket")
        .arg(&socket)
        .args(["rm", "typist"])
        .output()
        .unwrap();
    let took = removing.elapsed();
    let rm_stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "rm failed: {rm_stderr}");
    assert!(rm_stderr.contains("up to 25s"), "{rm_stderr}");
    let mut console_log = String::new();
    log.read_to_string(&mut console_log).unwrap();
    assert!(
        console_log.contains("VIRTSHIM-GUEST-POWEROFF"),
        "the guest saw no power button press before rm ({took:?}):\n{console_log}"
    );
    assert!(took < Duration::from_secs(25), "rm took {took:?}");
    assert!(
        local::find(&cri, "typist").is_err(),
        "the VM is still listed"
    );
    vm::assert_nothing_left(&started.sandbox_id);
    containerd.stop().unwrap();
}
