//! The `subresources.kubevirt.io` API end to end on a real cluster (issue 6), through `virtctl`
//! as a user runs it: the kube-apiserver's aggregator, the controller's subresource API, the
//! handler on the VM's node, the VM.
//!
//! - `virtctl console`: typed input reaches the guest and its answer comes back (an echo round
//!   trip), and Ctrl+] leaves;
//! - `virtctl vnc --proxy-only`: the `{"port":N}` line, an RFB handshake on that port, and a
//!   framebuffer update that is not blank;
//! - start, stop, restart, pause, unpause change the VM as KubeVirt would;
//! - a user bound to `kubevirt.io:view` gets 403 for console and start; `kubevirt.io:edit`
//!   succeeds.
//!
//! Each runs with our virtctl, and also with the upstream one when `VIRTSHIM_UPSTREAM_VIRTCTL`
//! names its binary (built from KubeVirt's source, for testing only).
//!
//! Runs on the cluster `make test` starts (or the one `KUBECONFIG` names), with virtshim
//! installed from `manifests/` as the README says ([`virtshim_tests::cluster::installed`]).

#![allow(clippy::unwrap_used)]

use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use virtshim_tests::cluster::Namespace;
use virtshim_tests::virtctl::Serving;
use virtshim_tests::vm::KERNEL_BOOT_IMAGE;
use virtshim_tests::{repo_root, wait_for, Kubectl};

/// Ctrl+].
const ESCAPE: u8 = 0x1d;

/// The cluster with virtshim installed from `manifests/` (its APIService Available), or `None`
/// (with the reason printed) when no cluster is given outside CI.
fn setup(test: &str) -> Option<Kubectl> {
    virtshim_tests::cluster::installed(test)
}

/// Our virtctl, built from this workspace into the target folder these tests run from.
fn our_virtctl() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let mut dir = exe.parent().unwrap().to_path_buf();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.pop();
    }
    let status = virtshim_tests::vm::cargo_command()
        .args(["build", "-q", "-p", "virtctl"])
        .env("CARGO_TARGET_DIR", dir.parent().unwrap())
        .current_dir(repo_root())
        .status()
        .unwrap();
    assert!(status.success(), "building virtctl failed");
    dir.join("virtctl")
}

/// The virtctls to run: ours, and upstream's when given.
fn virtctls() -> Vec<(&'static str, PathBuf)> {
    let mut all = vec![("ours", our_virtctl())];
    if let Some(upstream) = std::env::var_os("VIRTSHIM_UPSTREAM_VIRTCTL") {
        all.push(("upstream", PathBuf::from(upstream)));
    }
    all
}

fn kubeconfig() -> PathBuf {
    PathBuf::from(std::env::var_os("KUBECONFIG").unwrap())
}

fn virtctl(bin: &Path, kubeconfig: &Path, ns: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(bin)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["-n", ns])
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(text)
    }
}

/// A VM booting the test guest's kernel and busybox initramfs, with a shell on the serial
/// console and kernel messages on the display too.
fn create_vm(k: &Kubectl, ns: &str, name: &str, run_strategy: &str) {
    let yaml = format!(
        "apiVersion: kubevirt.io/v1\nkind: VirtualMachine\nmetadata: {{name: {name}, namespace: {ns}}}\n\
         spec:\n  runStrategy: {run_strategy}\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n    spec:\n\
         \x20     domain:\n        memory: {{guest: 192Mi}}\n        devices: {{autoattachPodInterface: false}}\n\
         \x20       firmware:\n          kernelBoot:\n            kernelArgs: console=tty0 console=ttyS0\n\
         \x20           container: {{image: '{KERNEL_BOOT_IMAGE}', kernelPath: /boot/vmlinuz, initrdPath: /boot/initrd.img}}\n"
    );
    k.run_stdin(&["apply", "-f", "-"], Some(&yaml)).unwrap();
}

/// Waits until the VMI runs (and is not `not_uid`); its uid.
fn wait_running(k: &Kubectl, ns: &str, name: &str, not_uid: Option<&str>) -> String {
    wait_for(
        &format!("VMI {name} Running"),
        Duration::from_secs(240),
        || {
            let vmi = k.get_json(ns, "vmi", name)?;
            let uid = vmi["metadata"]["uid"].as_str()?.to_owned();
            (Some(uid.as_str()) != not_uid && vmi["status"]["phase"] == "Running").then_some(uid)
        },
    )
}

/// A child's output, line by line and as raw bytes, on a channel.
fn pump(mut out: impl Read + Send + 'static) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                return;
            }
        }
    });
    rx
}

/// Runs `virtctl console`, types until the guest's answer comes back, leaves with Ctrl+].
fn console_round_trip(bin: &Path, kubeconfig: &Path, ns: &str, vmi: &str) -> Result<(), String> {
    let mut child: Child = Command::new(bin)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["-n", ns, "console", vmi, "--timeout", "3"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| e.to_string())?;
    let output = pump(child.stdout.take().unwrap());
    let mut stdin = child.stdin.take().unwrap();
    let mut seen = Vec::new();
    let start = Instant::now();
    let mut typed = Instant::now() - Duration::from_secs(10);
    let found = loop {
        if start.elapsed() > Duration::from_secs(120) {
            break false;
        }
        if typed.elapsed() > Duration::from_secs(3) {
            // The console may still be connecting: type again now and then.
            let _ = stdin.write_all(b"echo round-$((6*7))-trip\n");
            let _ = stdin.flush();
            typed = Instant::now();
        }
        if let Ok(chunk) = output.recv_timeout(Duration::from_millis(200)) {
            seen.extend_from_slice(&chunk);
            if String::from_utf8_lossy(&seen).contains("round-42-trip") {
                break true;
            }
        }
    };
    let _ = stdin.write_all(&[ESCAPE]);
    let _ = stdin.flush();
    let left = wait_exit(&mut child, Duration::from_secs(15));
    if !found {
        return Err(format!(
            "no echo from the guest; the console showed: {}",
            String::from_utf8_lossy(&seen)
        ));
    }
    match left {
        Some(status) if status.success() => Ok(()),
        other => Err(format!(
            "virtctl console did not leave on Ctrl+]: {other:?}"
        )),
    }
}

fn wait_exit(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

fn read_exact(stream: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    stream.read_exact(&mut buf).unwrap();
    buf
}

fn u16_at(b: &[u8], i: usize) -> usize {
    usize::from(u16::from_be_bytes([b[i], b[i + 1]]))
}

/// An RFB 3.8 handshake without authentication, then full framebuffer updates in raw encoding
/// (the default, as no other is asked for) until one has a non-zero pixel byte, for up to ten
/// tries; the number of non-zero pixel bytes in the last one.
fn rfb_non_blank_bytes(port: u16) -> usize {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let version = read_exact(&mut s, 12);
    assert!(version.starts_with(b"RFB 003."), "{version:?}");
    s.write_all(b"RFB 003.008\n").unwrap();
    let count = read_exact(&mut s, 1)[0] as usize;
    assert!(count > 0, "the server refused the connection");
    let types = read_exact(&mut s, count);
    assert!(types.contains(&1), "no 'None' security type: {types:?}");
    s.write_all(&[1]).unwrap();
    assert_eq!(read_exact(&mut s, 4), vec![0, 0, 0, 0], "security result");
    s.write_all(&[1]).unwrap(); // ClientInit: shared
    let init = read_exact(&mut s, 24);
    let (width, height) = (u16_at(&init, 0), u16_at(&init, 2));
    let bytes_per_pixel = usize::from(init[4]) / 8;
    let name_len = u32::from_be_bytes([init[20], init[21], init[22], init[23]]) as usize;
    read_exact(&mut s, name_len);
    assert!(width > 0 && height > 0, "{width}x{height}");
    let mut non_zero = 0;
    for _ in 0..10 {
        // FramebufferUpdateRequest, not incremental, the whole screen.
        let mut request = vec![3u8, 0, 0, 0, 0, 0];
        request.extend_from_slice(&u16::try_from(width).unwrap().to_be_bytes());
        request.extend_from_slice(&u16::try_from(height).unwrap().to_be_bytes());
        s.write_all(&request).unwrap();
        non_zero = read_update(&mut s, bytes_per_pixel);
        if non_zero > 0 {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    non_zero
}

/// Reads server messages up to and including one FramebufferUpdate; its non-zero pixel bytes.
fn read_update(s: &mut TcpStream, bytes_per_pixel: usize) -> usize {
    loop {
        match read_exact(s, 1)[0] {
            0 => break,
            // SetColourMapEntries: padding, first colour, count, then 6 bytes a colour.
            1 => {
                let head = read_exact(s, 5);
                read_exact(s, u16_at(&head, 3) * 6);
            }
            // Bell.
            2 => {}
            // ServerCutText: padding, length, text.
            3 => {
                let head = read_exact(s, 7);
                read_exact(
                    s,
                    u32::from_be_bytes([head[3], head[4], head[5], head[6]]) as usize,
                );
            }
            other => panic!("unexpected RFB server message {other}"),
        }
    }
    let head = read_exact(s, 3);
    let rects = u16_at(&head, 1);
    let mut non_zero = 0;
    for _ in 0..rects {
        let rect = read_exact(s, 12);
        let (w, h) = (u16_at(&rect, 4), u16_at(&rect, 6));
        let encoding = i32::from_be_bytes([rect[8], rect[9], rect[10], rect[11]]);
        match encoding {
            0 => {
                let pixels = read_exact(s, w * h * bytes_per_pixel);
                non_zero += pixels.iter().filter(|b| **b != 0).count();
            }
            // LastRect ends the update early.
            -224 => break,
            // DesktopSize carries no data.
            -223 => {}
            other => panic!("unexpected RFB encoding {other} (only raw was offered)"),
        }
    }
    non_zero
}

/// `virtctl vnc --proxy-only`: the port line, then the handshake and a non-blank update.
fn vnc_proxy(bin: &Path, kubeconfig: &Path, ns: &str, vmi: &str) -> Result<(), String> {
    let proxy = Serving::start(bin, kubeconfig, &["-n", ns, "vnc", "--proxy-only", vmi])?;
    let port = proxy.vnc_port()?;
    let started = Instant::now();
    let non_blank = rfb_non_blank_bytes(port);
    println!(
        "VNC: handshake and first update in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    drop(proxy);
    if non_blank == 0 {
        return Err("the framebuffer update is blank".into());
    }
    Ok(())
}

#[test]
fn cluster_console_and_vnc() {
    let test = "cluster_console_and_vnc";
    let Some(k) = setup(test) else { return };
    let ns = Namespace::new(&k, "vs-sub-streams");
    create_vm(&k, &ns.name, "echo", "Always");
    wait_running(&k, &ns.name, "echo", None);
    for (which, bin) in virtctls() {
        console_round_trip(&bin, &kubeconfig(), &ns.name, "echo")
            .unwrap_or_else(|e| panic!("{which} virtctl console: {e}"));
        vnc_proxy(&bin, &kubeconfig(), &ns.name, "echo")
            .unwrap_or_else(|e| panic!("{which} virtctl vnc: {e}"));
    }
}

#[test]
fn cluster_console_waits_for_a_starting_vmi() {
    let test = "cluster_console_waits_for_a_starting_vmi";
    let Some(k) = setup(test) else { return };
    let ns = Namespace::new(&k, "vs-sub-wait");
    create_vm(&k, &ns.name, "late", "Always");
    // Connect at once: the API answers 400 until the VMI runs, and virtctl keeps trying.
    console_round_trip(&our_virtctl(), &kubeconfig(), &ns.name, "late").unwrap();
}

fn paused(k: &Kubectl, ns: &str, name: &str) -> bool {
    k.get_json(ns, "vmi", name).is_some_and(|v| {
        v["status"]["conditions"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Paused" && c["status"] == "True")
        })
    })
}

#[test]
fn cluster_lifecycle_subresources() {
    let test = "cluster_lifecycle_subresources";
    let Some(k) = setup(test) else { return };
    let ns = Namespace::new(&k, "vs-sub-lifecycle");
    let n = ns.name.as_str();
    create_vm(&k, n, "life", "Halted");
    for (which, bin) in virtctls() {
        let run = |args: &[&str]| virtctl(&bin, &kubeconfig(), n, args);
        // A dry run changes nothing.
        run(&["start", "life", "--dry-run"]).unwrap();
        std::thread::sleep(Duration::from_secs(3));
        assert!(
            k.get_json(n, "vmi", "life").is_none(),
            "{which}: dry run started the VM"
        );
        assert_eq!(
            k.get_json(n, "vm", "life").unwrap()["spec"]["runStrategy"],
            "Halted"
        );

        let out = run(&["start", "life"]).unwrap();
        assert!(out.contains("was scheduled to start"), "{which}: {out}");
        let first = wait_running(&k, n, "life", None);
        assert_eq!(
            k.get_json(n, "vm", "life").unwrap()["spec"]["runStrategy"],
            "Always"
        );
        let again = run(&["start", "life"]).unwrap_err();
        assert!(
            again.contains("already running") || again.contains("does not support"),
            "{which}: {again}"
        );

        run(&["pause", "vm", "life"]).unwrap();
        wait_for("Paused=True", Duration::from_secs(30), || {
            paused(&k, n, "life").then_some(())
        });
        let twice = run(&["pause", "vmi", "life"]).unwrap_err();
        assert!(twice.contains("already paused"), "{which}: {twice}");
        run(&["unpause", "vmi", "life"]).unwrap();
        wait_for("Paused gone", Duration::from_secs(30), || {
            (!paused(&k, n, "life")).then_some(())
        });

        run(&["restart", "life"]).unwrap();
        let second = wait_running(&k, n, "life", Some(&first));
        assert_ne!(first, second);

        run(&["stop", "life"]).unwrap();
        wait_for("VMI gone", Duration::from_secs(120), || {
            k.get_json(n, "vmi", "life").is_none().then_some(())
        });
        assert_eq!(
            k.get_json(n, "vm", "life").unwrap()["spec"]["runStrategy"],
            "Halted"
        );
        let stopped = run(&["stop", "life"]).unwrap_err();
        assert!(stopped.contains("VM is not running"), "{which}: {stopped}");
        let unpause = run(&["unpause", "vm", "life"]).unwrap_err();
        assert!(
            unpause.contains("not set to run") || unpause.contains("not found"),
            "{which}: {unpause}"
        );
    }
}

/// A kubeconfig for ServiceAccount `sa` in `ns`, bound to `role`.
fn user_kubeconfig(k: &Kubectl, ns: &str, sa: &str, role: &str, dir: &Path) -> PathBuf {
    k.run(&["create", "serviceaccount", "-n", ns, sa]).unwrap();
    k.run(&[
        "create",
        "rolebinding",
        "-n",
        ns,
        sa,
        &format!("--clusterrole={role}"),
        &format!("--serviceaccount={ns}:{sa}"),
    ])
    .unwrap();
    let token = k.run(&["create", "token", "-n", ns, sa]).unwrap();
    let config: Value = serde_json::from_str(
        &k.run(&["config", "view", "--raw", "--minify", "-o", "json"])
            .unwrap(),
    )
    .unwrap();
    let cluster = &config["clusters"][0]["cluster"];
    let kubeconfig = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": cluster}],
        "users": [{"name": sa, "user": {"token": token.trim()}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": sa, "namespace": ns}}],
        "current-context": "c",
    });
    let path = dir.join(format!("{sa}.kubeconfig"));
    std::fs::write(&path, kubeconfig.to_string()).unwrap();
    path
}

#[test]
fn cluster_view_is_forbidden_edit_is_allowed() {
    let test = "cluster_view_is_forbidden_edit_is_allowed";
    let Some(k) = setup(test) else { return };
    let ns = Namespace::new(&k, "vs-sub-rbac");
    let n = ns.name.as_str();
    let dir = tempfile::tempdir().unwrap();
    let viewer = user_kubeconfig(&k, n, "viewer", "kubevirt.io:view", dir.path());
    let editor = user_kubeconfig(&k, n, "editor", "kubevirt.io:edit", dir.path());
    create_vm(&k, n, "guarded", "Halted");
    for (which, bin) in virtctls() {
        let denied = virtctl(&bin, &viewer, n, &["start", "guarded"]).unwrap_err();
        assert!(
            denied.contains("forbidden") || denied.contains("403"),
            "{which}: {denied}"
        );
        assert!(k.get_json(n, "vmi", "guarded").is_none());
        virtctl(&bin, &editor, n, &["start", "guarded"]).unwrap();
        wait_running(&k, n, "guarded", None);
        let denied =
            virtctl(&bin, &viewer, n, &["console", "guarded", "--timeout", "1"]).unwrap_err();
        assert!(
            denied.contains("forbidden") || denied.contains("403"),
            "{which}: {denied}"
        );
        console_round_trip(&bin, &editor, n, "guarded").unwrap();
        virtctl(&bin, &editor, n, &["stop", "guarded"]).unwrap();
        wait_for("VMI gone", Duration::from_secs(120), || {
            k.get_json(n, "vmi", "guarded").is_none().then_some(())
        });
    }
}
