//! A running VM seen from the node's side on a real cluster (issue 15, section 3), with
//! virtshim installed from `manifests/` ([`virtshim_tests::cluster::installed`]): the kubelet's
//! own tools reach it as a container.
//!
//! - `kubectl logs <pod> -c compute` is the serial console (the test guest's markers);
//! - `kubectl attach -it` types into the console and the guest's answer comes back;
//! - `kubectl port-forward` reaches the guest's HTTP server (masquerade binding);
//! - `crictl ps`, `inspect` (QEMU's pid), `logs` and `stats` (cgroup CPU and memory) on the
//!   node's containerd show the VM.

#![allow(clippy::unwrap_used)]

use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use virtshim_tests::cluster::{installed, running_vmi, Namespace};
use virtshim_tests::vm::{kernel_boot_vmi, READY_MARKER};
use virtshim_tests::{poll, repo_root, tail, Kubectl};

/// The marker the test guest prints once its network is up (images/guest/README.md).
const UP_MARKER: &str = "VIRTSHIM-GUEST-UP";
/// The node's containerd, the kubelet's runtime.
const RUNTIME_ENDPOINT: &str = "unix:///run/containerd/containerd.sock";

/// crictl from the project's cluster build, else the one on `PATH`.
fn crictl(args: &[&str]) -> Result<String, String> {
    let built = repo_root().join("out/cluster/bin/crictl");
    let bin = if built.exists() {
        built
    } else {
        "crictl".into()
    };
    let out = Command::new(&bin)
        .args(["--runtime-endpoint", RUNTIME_ENDPOINT])
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "crictl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn crictl_json(args: &[&str]) -> Result<Value, String> {
    let out = crictl(args)?;
    serde_json::from_str(&out)
        .map_err(|e| format!("crictl {}: not JSON ({e}): {out}", args.join(" ")))
}

/// A protobuf uint64 as crictl prints it (a string or a number).
fn uint(v: &Value) -> u64 {
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or(0)
}

/// A child's output as chunks on a channel.
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

fn stop(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// `kubectl logs <pod> -c compute` until the guest's markers are in it.
fn logs_show_console(k: &Kubectl, ns: &str, pod: &str) -> Result<String, String> {
    poll(
        &format!("kubectl logs {pod} -c compute showing {READY_MARKER} and {UP_MARKER}"),
        Duration::from_secs(120),
        || {
            let logs = k.run(&["logs", "-n", ns, pod, "-c", "compute"])?;
            (logs.contains(READY_MARKER) && logs.contains(UP_MARKER))
                .then(|| logs.clone())
                .ok_or_else(|| format!("the log ends with: {:?}", tail(&logs, 600)))
        },
    )
}

/// `kubectl attach -it` as a user runs it on a terminal (script(1) gives it one: without a
/// terminal kubectl still asks the compute container, which has a TTY, for one, together with
/// stderr, and the CRI refuses that pair): types `echo attach-$((6*7))-ok` until `attach-42-ok`
/// comes back.
fn attach_round_trip(k: &Kubectl, ns: &str, pod: &str) -> Result<(), String> {
    let mut child = Command::new("script")
        .env("KUBECONFIG", k.kubeconfig())
        .args(["-q", "-f", "-e", "-c"])
        .arg(format!("kubectl attach -it -n {ns} {pod} -c compute"))
        .arg("/dev/null")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run script(1) for kubectl attach: {e}"))?;
    let output = pump(child.stdout.take().unwrap());
    let errors = pump(child.stderr.take().unwrap());
    let mut stdin = child.stdin.take().unwrap();
    let mut seen = Vec::new();
    let start = Instant::now();
    let mut typed: Option<Instant> = None;
    let found = loop {
        if start.elapsed() > Duration::from_secs(90) {
            break false;
        }
        if typed.is_none_or(|t| t.elapsed() > Duration::from_secs(3)) {
            // The stream may still be connecting: type again now and then.
            let _ = stdin.write_all(b"echo attach-$((6*7))-ok\n");
            let _ = stdin.flush();
            typed = Some(Instant::now());
        }
        if let Ok(chunk) = output.recv_timeout(Duration::from_millis(200)) {
            seen.extend_from_slice(&chunk);
            if String::from_utf8_lossy(&seen).contains("attach-42-ok") {
                break true;
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            let stderr: Vec<u8> = errors.try_iter().flatten().collect();
            return Err(format!(
                "expected kubectl attach -it to stay attached until the guest answered; it exited \
                 ({status}); stdout: {:?}; stderr: {:?}",
                String::from_utf8_lossy(&seen),
                String::from_utf8_lossy(&stderr)
            ));
        }
    };
    drop(stdin);
    stop(&mut child);
    if found {
        Ok(())
    } else {
        let stderr: Vec<u8> = errors.try_iter().flatten().collect();
        Err(format!(
            "expected attach-42-ok back through kubectl attach -it within 90 s; stdout: {:?}; \
             stderr: {:?}",
            tail(&String::from_utf8_lossy(&seen), 600),
            String::from_utf8_lossy(&stderr)
        ))
    }
}

/// One HTTP/1.0 GET to 127.0.0.1:`port`; the whole answer.
fn http_get(port: u16, path: &str) -> Result<String, String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: guest\r\n\r\n").as_bytes())
        .map_err(|e| format!("send: {e}"))?;
    let mut answer = String::new();
    s.read_to_string(&mut answer)
        .map_err(|e| format!("read: {e} (got {answer:?})"))?;
    Ok(answer)
}

/// `kubectl port-forward pod/<pod> :80`, then `GET /healthz` answered `ok` by the guest.
fn port_forward_reaches_guest(k: &Kubectl, ns: &str, pod: &str) -> Result<String, String> {
    let mut child = k
        .command()
        .args(["port-forward", "-n", ns, &format!("pod/{pod}"), ":80"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run kubectl port-forward: {e}"))?;
    let errors = pump(child.stderr.take().unwrap());
    let mut line = String::new();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let _ = stdout.read_line(&mut line);
    // "Forwarding from 127.0.0.1:PORT -> 80"
    let port = line
        .split_whitespace()
        .nth(2)
        .and_then(|a| a.rsplit(':').next())
        .and_then(|p| p.parse::<u16>().ok());
    let Some(port) = port else {
        stop(&mut child);
        let stderr: Vec<u8> = errors.try_iter().flatten().collect();
        return Err(format!(
            "expected kubectl port-forward to say `Forwarding from 127.0.0.1:PORT -> 80`; it said \
             {line:?}, stderr {:?}",
            String::from_utf8_lossy(&stderr)
        ));
    };
    // Drain stdout so kubectl never blocks writing "Handling connection" lines.
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut stdout, &mut std::io::sink());
    });
    let answer = poll(
        &format!("GET /healthz through kubectl port-forward (127.0.0.1:{port}) answered ok"),
        Duration::from_secs(60),
        || {
            let answer = http_get(port, "/healthz")?;
            (answer.starts_with("HTTP/1.") && answer.contains(" 200") && answer.ends_with("ok\n"))
                .then(|| answer.clone())
                .ok_or_else(|| format!("answer {answer:?}"))
        },
    );
    let stderr: Vec<u8> = errors.try_iter().flatten().collect();
    stop(&mut child);
    answer.map_err(|e| {
        format!(
            "{e}; kubectl port-forward stderr: {:?}",
            String::from_utf8_lossy(&stderr)
        )
    })
}

/// crictl on the node: the compute container running, QEMU's pid, the console log, cgroup
/// figures.
fn crictl_shows_vm(ns: &str, pod: &str) -> Result<String, String> {
    let ps = crictl_json(&[
        "ps",
        "-o",
        "json",
        "--name",
        "^compute$",
        "--label",
        &format!("io.kubernetes.pod.namespace={ns}"),
        "--label",
        &format!("io.kubernetes.pod.name={pod}"),
    ])?;
    let containers = ps["containers"].as_array().cloned().unwrap_or_default();
    let [container] = containers.as_slice() else {
        return Err(format!(
            "expected crictl ps to list one compute container of pod {ns}/{pod}; it listed {}",
            ps["containers"]
        ));
    };
    let id = container["id"].as_str().unwrap_or_default().to_owned();
    let mut wrong = Vec::new();
    if container["state"] != "CONTAINER_RUNNING" {
        wrong.push(format!(
            "crictl ps: state CONTAINER_RUNNING, seen {}",
            container["state"]
        ));
    }

    let inspect = crictl_json(&["inspect", &id])?;
    let pid = uint(&inspect["info"]["pid"]);
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .unwrap_or_default();
    if pid == 0 || !cmdline.contains("qemu-system") {
        wrong.push(format!(
            "crictl inspect: info.pid QEMU's, seen pid {pid} running {:?}",
            tail(&cmdline, 300)
        ));
    }
    if inspect["status"]["state"] != "CONTAINER_RUNNING" {
        wrong.push(format!(
            "crictl inspect: status.state CONTAINER_RUNNING, seen {}",
            inspect["status"]["state"]
        ));
    }

    let logs = crictl(&["logs", &id])?;
    if !logs.contains(READY_MARKER) {
        wrong.push(format!(
            "crictl logs: the serial console with {READY_MARKER}, seen {:?}",
            tail(&logs, 600)
        ));
    }

    let stats = crictl_json(&["stats", "-o", "json", &id])?;
    let stat = &stats["stats"][0];
    let cpu = uint(&stat["cpu"]["usageCoreNanoSeconds"]["value"]);
    let memory = uint(&stat["memory"]["workingSetBytes"]["value"]);
    if stat["attributes"]["id"].as_str() != Some(id.as_str()) || cpu == 0 || memory == 0 {
        wrong.push(format!(
            "crictl stats: non-zero CPU and working set of {id}, seen {stat}"
        ));
    }
    if wrong.is_empty() {
        Ok(format!(
            "container {id}, QEMU pid {pid}, CPU {cpu} ns, working set {memory} bytes"
        ))
    } else {
        Err(wrong.join("; "))
    }
}

#[test]
fn node_tools_show_and_reach_the_vm() {
    let Some(k) = installed("node_tools_show_and_reach_the_vm") else {
        return;
    };
    let ns = Namespace::new(&k, "vs-node");
    let n = ns.name.as_str();
    // The test guest (kernel boot) behind masquerade: its HTTP server on port 80 is reached from
    // the pod's own localhost, where kubectl port-forward connects.
    let vmi = kernel_boot_vmi(
        &format!("name: node-vm, namespace: {n}"),
        "128Mi",
        "interfaces: [{name: default, masquerade: {}}]",
        "console=ttyS0",
        "  networks: [{name: default, pod: {}}]\n  terminationGracePeriodSeconds: 0\n",
    );
    k.run_stdin(&["apply", "-f", "-"], Some(&vmi))
        .unwrap_or_else(|e| panic!("expected the VMI to apply: {e}"));
    let running =
        running_vmi(&k, n, "node-vm", Duration::from_secs(240)).unwrap_or_else(|e| panic!("{e}"));
    let pod = running.pod_name().to_owned();

    let mut results: Vec<(&str, Result<String, String>)> = Vec::new();
    results.push((
        "kubectl logs",
        logs_show_console(&k, n, &pod).map(|_| "console markers".into()),
    ));
    results.push((
        "kubectl attach -it",
        attach_round_trip(&k, n, &pod).map(|()| "echo round trip".into()),
    ));
    results.push((
        "kubectl logs after attach",
        k.run(&["logs", "-n", n, &pod, "-c", "compute"])
            .and_then(|logs| {
                logs.contains("attach-42-ok")
                    .then_some("has the typed command's output".into())
                    .ok_or_else(|| {
                        format!(
                            "expected the console log to hold attach-42-ok; it ends with {:?}",
                            tail(&logs, 600)
                        )
                    })
            }),
    ));
    results.push((
        "kubectl port-forward",
        port_forward_reaches_guest(&k, n, &pod),
    ));
    results.push(("crictl", crictl_shows_vm(n, &pod)));

    let mut failed = Vec::new();
    for (what, result) in &results {
        match result {
            Ok(seen) => println!("{what}: ok: {}", seen.lines().next().unwrap_or_default()),
            Err(why) => {
                println!("{what}: FAILED: {why}");
                failed.push(format!("{what}: {why}"));
            }
        }
    }
    assert!(
        failed.is_empty(),
        "expected every node tool to show and reach the VM; failed:\n{}",
        failed.join("\n")
    );
    k.run(&["delete", "-n", n, "vmi", "node-vm", "--wait=false"])
        .unwrap();
}
