//! Several nodes (issue 14): the project's cluster grown to three with `NODES=3 cluster/up.sh`
//! (node-2 and node-3 made by cluster/node.sh: each its own mount, network and UTS namespaces,
//! containerd, kubelet, pod range and cgroup subtree), and virtshim on all of them through its
//! installer DaemonSet. The first node is cordoned, so that the VMs land on the new ones. In
//! order, each step using what the one before left:
//!
//! 1. **Spread**: two VMs (runStrategy Always, a soft topology spread over hostnames) go one to
//!    each new node; each VMI's `status.nodeName` is its pod's node, and its console, VNC and
//!    port-forward answer through that node's handler (the controller picks it by node).
//! 2. **Rolling the installer**: the DaemonSet set to a new image whose shim differs, its pods
//!    replaced node after node (OnDelete, as an operator upgrades): each node gets the new shim,
//!    while both VMs keep running (the same VMIs, the same QEMUs) and stay manageable (console;
//!    `virtctl stop` and `start`, which boots on the new shim).
//! 3. **Drain**: `kubectl drain` of a VM's node. The VM's pod is evicted; the kubelet stops it
//!    through the shim, which presses the ACPI button (the console shows the guest powering
//!    off); the VM comes back Running on the other node.
//! 4. **Node loss**: the node with both VMs powered off at once (cluster/node.sh kill: its
//!    kubelet, containerd, shims and QEMUs). The node goes NotReady; the operator (or a fencing
//!    agent) marks it out of service, as Kubernetes' non-graceful node shutdown asks, and the
//!    pods go; the VMIs end and both VMs run again on the remaining node. The node then boots
//!    again: none of the old VMs runs there, each VM runs once.
//!
//! One test: each step disturbs what the others need. The new nodes leave at the end whatever
//! happened (the other tests expect one node), and the first node is uncordoned.

#![allow(clippy::unwrap_used)]

use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};
use virtshim_tests::cluster::{list, qemu_pids, running_vmi, Namespace, NAMESPACE, READY_LABEL};
use virtshim_tests::console::Console;
use virtshim_tests::virtctl::Serving;
use virtshim_tests::vm::{self, KERNEL_BOOT_IMAGE};
use virtshim_tests::{repo_root, wait_for, Kubectl};

const NEW_NODES: [&str; 2] = ["node-2", "node-3"];
const VMS: [&str; 2] = ["spread-a", "spread-b"];
const SHIM: &str = "/usr/local/bin/containerd-shim-virtshim-v2";
const ROLLED_IMAGE: &str = "localhost/virtshim/installer:rolled";
const IMAGE: &str = "localhost/virtshim/installer:v1";

fn cluster_dir() -> PathBuf {
    std::env::var_os("VIRTSHIM_CLUSTER_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/virtshim-cluster"))
}

fn number(node: &str) -> &str {
    node.trim_start_matches("node-")
}

/// `cluster/node.sh ARGS`; its standard output, or what went wrong.
fn node_sh(args: &[&str]) -> Result<String, String> {
    let out = Command::new("bash")
        .arg(repo_root().join("cluster/node.sh"))
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(format!(
            "cluster/node.sh {}: {stdout}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// The grown cluster; dropped, the new nodes leave and the first node takes pods again.
struct Grown<'a> {
    k: &'a Kubectl,
    first: String,
}

impl Drop for Grown<'_> {
    fn drop(&mut self) {
        for node in NEW_NODES {
            if let Err(e) = node_sh(&["down", number(node)]) {
                eprintln!("{e}");
            }
        }
        let _ = self.k.run(&["uncordon", &self.first]);
        // The first node back on the installer it had.
        let _ = self.k.run(&[
            "set",
            "image",
            "-n",
            NAMESPACE,
            "daemonset/virtshim-installer",
            &format!("installer={IMAGE}"),
        ]);
        if installer_pod(self.k, &self.first).is_some_and(|p| image_of(&p) != IMAGE) {
            let _ = roll_node(self.k, &self.first, IMAGE);
        }
    }
}

fn grow(k: &Kubectl) -> Grown<'_> {
    let first = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_owned();
    let grown = Grown { k, first };
    let started = Instant::now();
    let out = Command::new("bash")
        .arg(repo_root().join("cluster/up.sh"))
        .env("NODES", "3")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "NODES=3 cluster/up.sh failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let ready = format!("{READY_LABEL}=true");
    wait_for(
        "three nodes labelled ready by the installer",
        Duration::from_secs(300),
        || {
            let nodes = k.run(&["get", "nodes", "-l", &ready, "-o", "name"]).ok()?;
            (nodes.lines().count() == 3).then_some(())
        },
    );
    k.run(&[
        "rollout",
        "status",
        "-n",
        NAMESPACE,
        "daemonset/virtshim-handler",
        "--timeout=300s",
    ])
    .unwrap();
    println!(
        "cluster grown to three nodes, virtshim on each, in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    grown
}

fn create_vm(k: &Kubectl, ns: &str, name: &str) {
    let yaml = format!(
        "apiVersion: kubevirt.io/v1\nkind: VirtualMachine\nmetadata: {{name: {name}, namespace: {ns}}}\n\
         spec:\n  runStrategy: Always\n  template:\n    metadata: {{labels: {{app: multinode}}}}\n    spec:\n\
         \x20     topologySpreadConstraints:\n\
         \x20     - {{maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: ScheduleAnyway, labelSelector: {{matchLabels: {{app: multinode}}}}}}\n\
         \x20     domain:\n        memory: {{guest: 128Mi}}\n        devices: {{}}\n\
         \x20       firmware:\n          kernelBoot:\n            kernelArgs: console=tty0 console=ttyS0\n\
         \x20           container: {{image: '{KERNEL_BOOT_IMAGE}', kernelPath: /boot/vmlinuz, initrdPath: /boot/initrd.img}}\n"
    );
    k.run_stdin(&["apply", "-f", "-"], Some(&yaml)).unwrap();
}

/// A VM's running VMI: (uid, node), once Running on a node other than `not_on` and with a uid
/// other than `not_uid`.
fn placed(
    k: &Kubectl,
    ns: &str,
    name: &str,
    not_uid: Option<&str>,
    not_on: &[&str],
) -> (String, String) {
    let started = Instant::now();
    loop {
        let running =
            running_vmi(k, ns, name, Duration::from_secs(360)).unwrap_or_else(|e| panic!("{e}"));
        let uid = running.vmi["metadata"]["uid"].as_str().unwrap().to_owned();
        let node = running.vmi["status"]["nodeName"]
            .as_str()
            .unwrap()
            .to_owned();
        if Some(uid.as_str()) != not_uid && !not_on.contains(&node.as_str()) {
            return (uid, node);
        }
        assert!(
            started.elapsed() < Duration::from_secs(360),
            "VM {name} still runs as {uid} on {node}"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn kubeconfig() -> PathBuf {
    PathBuf::from(std::env::var_os("KUBECONFIG").unwrap())
}

fn console(ns: &str, vm: &str) -> Console {
    Console::open(&kubeconfig(), ns, vm)
}

/// `virtctl vnc --proxy-only`: the RFB greeting on the port it prints.
fn vnc_greeting(ns: &str, vm: &str) -> Result<String, String> {
    let proxy = Serving::start(
        &vm::virtctl_binary(),
        &kubeconfig(),
        &["-n", ns, "vnc", "--proxy-only", vm],
    )?;
    let port = proxy.vnc_port()?;
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    let mut greeting = [0u8; 12];
    tcp.read_exact(&mut greeting)
        .map_err(|e| format!("the RFB greeting: {e}"))?;
    Ok(String::from_utf8_lossy(&greeting).trim().to_owned())
}

/// `virtctl port-forward vm/NAME.NS 0:80`, then `GET /healthz` through it.
fn forwarded_http(ns: &str, vm: &str) -> Result<String, String> {
    let forward = Serving::start(
        &vm::virtctl_binary(),
        &kubeconfig(),
        &["port-forward", &format!("vm/{vm}.{ns}"), "0:80"],
    )?;
    let addr = forward.forwarded_addr()?;
    let mut tcp = TcpStream::connect(&addr).map_err(|e| format!("{addr}: {e}"))?;
    tcp.set_read_timeout(Some(Duration::from_secs(20)))
        .map_err(|e| e.to_string())?;
    tcp.write_all(b"GET /healthz HTTP/1.0\r\nHost: guest\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut answer = String::new();
    tcp.read_to_string(&mut answer)
        .map_err(|e| format!("{addr}: {e} after {answer:?}"))?;
    Ok(answer)
}

/// Console, VNC and port-forward to the VM, whichever node runs it.
fn reach(ns: &str, vm: &str, word: &str) {
    console(ns, vm)
        .echo(word)
        .unwrap_or_else(|e| panic!("{vm}: {e}"));
    let greeting = vnc_greeting(ns, vm).unwrap_or_else(|e| panic!("{vm}: virtctl vnc: {e}"));
    assert!(
        greeting.starts_with("RFB "),
        "{vm}: VNC greeting {greeting:?}"
    );
    wait_for(
        &format!("{vm}: the guest's web server through virtctl port-forward"),
        Duration::from_secs(120),
        || {
            forwarded_http(ns, vm)
                .ok()
                .filter(|a| a.contains("\r\n\r\nok"))
        },
    );
}

fn installer_pod(k: &Kubectl, node: &str) -> Option<Value> {
    list(
        k,
        NAMESPACE,
        "pod",
        "app.kubernetes.io/name=virtshim-installer",
    )
    .into_iter()
    .find(|p| p["spec"]["nodeName"] == node && p["metadata"]["deletionTimestamp"].is_null())
}

fn image_of(pod: &Value) -> &str {
    pod["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap_or_default()
}

/// Replaces the installer's pod on `node` (the DaemonSet is OnDelete) and waits for the new one
/// to run `image` and to have installed; the new pod's log.
fn roll_node(k: &Kubectl, node: &str, image: &str) -> Result<String, String> {
    let old = installer_pod(k, node).ok_or_else(|| format!("no installer pod on {node}"))?;
    let old_name = old["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    k.run(&["delete", "pod", "-n", NAMESPACE, &old_name, "--wait=false"])?;
    let new = wait_for(
        &format!("the installer on {node} replaced by one running {image}"),
        Duration::from_secs(240),
        || {
            let pod = installer_pod(k, node)?;
            let running = pod["status"]["containerStatuses"][0]["state"]["running"].is_object();
            (pod["metadata"]["name"] != old_name.as_str() && image_of(&pod) == image && running)
                .then(|| {
                    pod["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned()
                })
        },
    );
    Ok(wait_for(
        &format!("the new installer on {node} done installing"),
        Duration::from_secs(120),
        || {
            let log = k.run(&["logs", "-n", NAMESPACE, &new]).ok()?;
            log.contains("labelled").then_some(log)
        },
    ))
}

fn sha256(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    format!("{:x}", Sha256::digest(bytes))
}

/// The sha256 of the shim installed on `node`.
fn installed_shim(first: &str, node: &str) -> String {
    if node == first {
        sha256(&std::fs::read(SHIM).unwrap_or_default())
    } else {
        let out = node_sh(&["exec", number(node), "sha256sum", SHIM]).unwrap_or_default();
        out.split_whitespace().next().unwrap_or_default().to_owned()
    }
}

/// The installer image with a shim that differs from the running one (the same code, a
/// trailing marker: a loader ignores bytes past the ELF's segments), imported on every node.
fn rolled_image(nodes: &[&str], first: &str) -> String {
    let out = repo_root().join("target/component-images-rolled");
    std::fs::create_dir_all(&out).unwrap();
    // The shim of the running tests' profile, built by now (the component images hold it).
    virtshim_tests::cluster::component_images();
    // Stripped as images/components/build.sh strips the shim it ships.
    let staged = out.join("rolled-shim");
    let status = Command::new("strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(&staged)
        .arg(vm::shim_dir().join("containerd-shim-virtshim-v2"))
        .status()
        .unwrap();
    assert!(status.success(), "strip the shim");
    let mut shim = std::fs::read(&staged).unwrap();
    shim.extend_from_slice(format!("\nvirtshim-rolled-{}\n", std::process::id()).as_bytes());
    std::fs::write(&staged, &shim).unwrap();
    let status = Command::new("bash")
        .arg(repo_root().join("images/components/build.sh"))
        .arg(&out)
        .env("PROFILE", "debug")
        .env("TAG", "rolled")
        .env("SHIM", &staged)
        .status()
        .unwrap();
    assert!(status.success(), "building {ROLLED_IMAGE}");
    let tar = out.join("installer.oci.tar");
    let tar = tar.to_string_lossy();
    for node in nodes {
        let imported = if *node == first {
            let out = Command::new("ctr")
                .args(["-n", "k8s.io", "images", "import", &tar])
                .output()
                .unwrap();
            out.status
                .success()
                .then_some(())
                .ok_or_else(|| String::from_utf8_lossy(&out.stderr).into_owned())
        } else {
            node_sh(&[
                "exec",
                number(node),
                "ctr",
                "-n",
                "k8s.io",
                "images",
                "import",
                &tar,
            ])
            .map(|_| ())
        };
        imported.unwrap_or_else(|e| panic!("importing {ROLLED_IMAGE} on {node}: {e}"));
    }
    sha256(&shim)
}

fn node_ready(k: &Kubectl, node: &str) -> Option<String> {
    k.run(&[
        "get",
        "node",
        node,
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
    ])
    .ok()
    .map(|s| s.trim().to_owned())
}

/// The cgroup of a process (its memory hierarchy's path).
fn cgroup_of(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.contains(":memory:") || l.starts_with("0::"))
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn spread_roll_drain_and_node_loss() {
    let test = "spread_roll_drain_and_node_loss";
    let Some(k) = virtshim_tests::cluster::installed(test) else {
        return;
    };
    let own = cluster_dir().join("admin.kubeconfig");
    if kubeconfig() != own {
        virtshim_tests::skip(
            test,
            &format!(
                "adding nodes needs the project's own cluster (KUBECONFIG={})",
                own.display()
            ),
        );
        return;
    }
    let grown = grow(&k);
    let first = grown.first.clone();
    let all: Vec<&str> = std::iter::once(first.as_str()).chain(NEW_NODES).collect();
    k.run(&["cordon", &first]).unwrap();
    let ns = Namespace::new(&k, &format!("virtshim-multinode-{}", std::process::id()));
    let ns = ns.name.as_str();

    // 1. Spread, and reached wherever they run.
    for name in VMS {
        create_vm(&k, ns, name);
    }
    let mut at: Vec<(String, String)> = VMS
        .iter()
        .map(|name| placed(&k, ns, name, None, &[&first]))
        .collect();
    println!("{test}: placed {at:?}");
    assert_ne!(
        at[0].1, at[1].1,
        "the scheduler spreads the two VMs over node-2 and node-3"
    );
    for name in VMS {
        reach(ns, name, "spread");
    }

    // 2. The installer rolled to a new image, node after node, under running VMs.
    let qemus = qemu_pids(ns);
    assert_eq!(qemus.len(), 2, "one QEMU per VM: {qemus:?}");
    let rolled_shim = rolled_image(&all, &first);
    k.run(&[
        "set",
        "image",
        "-n",
        NAMESPACE,
        "daemonset/virtshim-installer",
        &format!("installer={ROLLED_IMAGE}"),
    ])
    .unwrap();
    for node in &all {
        let started = Instant::now();
        let log = roll_node(&k, node, ROLLED_IMAGE).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            log.contains(&format!("shim: {SHIM} installed")),
            "the new installer on {node} installed its shim: {log}"
        );
        assert_eq!(
            installed_shim(&first, node),
            rolled_shim,
            "{node} has the new image's shim"
        );
        println!(
            "{test}: {node} rolled to {ROLLED_IMAGE} in {:.0} s",
            started.elapsed().as_secs_f64()
        );
    }
    assert_eq!(qemu_pids(ns), qemus, "the same QEMUs after the roll");
    for (i, name) in VMS.iter().enumerate() {
        let (uid, node) = placed(&k, ns, name, None, &[]);
        assert_eq!(
            (uid.as_str(), node.as_str()),
            (at[i].0.as_str(), at[i].1.as_str()),
            "{name}: the same VMI on the same node after the roll"
        );
        console(ns, name)
            .echo("rolled")
            .unwrap_or_else(|e| panic!("{name} after the roll: {e}"));
    }
    // Still managed: stopped, and started again on the new shim.
    let virtctl = |args: &[&str]| {
        let out = Command::new(vm::virtctl_binary())
            .arg("--kubeconfig")
            .arg(kubeconfig())
            .args(["-n", ns])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "virtctl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    virtctl(&["stop", VMS[0]]);
    wait_for(
        &format!("{} stopped after the roll", VMS[0]),
        Duration::from_secs(180),
        || k.get_json(ns, "vmi", VMS[0]).is_none().then_some(()),
    );
    virtctl(&["start", VMS[0]]);
    at[0] = placed(&k, ns, VMS[0], Some(&at[0].0), &[&first]);
    let shim_of_new_vm = qemu_pids(ns)
        .into_iter()
        .filter(|pid| !qemus.contains(pid))
        .filter_map(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            String::from_utf8_lossy(&cmdline)
                .contains(&format!("guest={ns}_{}", VMS[0]))
                .then_some(pid)
        })
        .count();
    assert_eq!(shim_of_new_vm, 1, "{} runs again in a new QEMU", VMS[0]);
    reach(ns, VMS[0], "restarted");

    // 3. Drain the node of the first VM.
    let (drained, other) = (at[0].1.clone(), at[1].1.clone());
    let mut watching = console(ns, VMS[0]);
    watching.echo("before-drain").unwrap();
    let started = Instant::now();
    let out = k
        .run(&[
            "drain",
            &drained,
            "--ignore-daemonsets",
            "--delete-emptydir-data",
            "--timeout=300s",
        ])
        .unwrap_or_else(|e| panic!("kubectl drain {drained}: {e}"));
    println!(
        "{test}: drained {drained} in {:.0} s: {}",
        started.elapsed().as_secs_f64(),
        out.trim()
    );
    let (_, said) = watching
        .exit(Duration::from_secs(60))
        .expect("the console ends with the drained VM");
    assert!(
        said.contains("reboot: Power down"),
        "the guest powered off on the ACPI button when its pod was evicted: {said}"
    );
    let moved = placed(&k, ns, VMS[0], Some(&at[0].0), &[&first, &drained]);
    println!(
        "{test}: {} back on {} {:.0} s after the drain began",
        VMS[0],
        moved.1,
        started.elapsed().as_secs_f64()
    );
    assert_eq!(moved.1, other, "the VM runs again on the node left");
    at[0] = moved;
    console(ns, VMS[0]).echo("moved").unwrap();
    k.run(&["uncordon", &drained]).unwrap();

    // 4. The node with both VMs loses its power.
    let lost = other;
    let qemus = qemu_pids(ns);
    assert_eq!(qemus.len(), 2, "both VMs run on {lost}: {qemus:?}");
    for pid in &qemus {
        let cgroup = cgroup_of(*pid);
        assert!(
            cgroup.contains(&format!("virtshim-node-{}/", number(&lost))),
            "QEMU {pid} lives in {lost}'s cgroups: {cgroup}"
        );
    }
    let started = Instant::now();
    node_sh(&["kill", number(&lost)]).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        qemu_pids(ns).is_empty(),
        "the power cut took the QEMUs: {:?}",
        qemu_pids(ns)
    );
    wait_for(
        &format!("{lost} NotReady"),
        Duration::from_secs(180),
        || (node_ready(&k, &lost).as_deref() != Some("True")).then_some(()),
    );
    println!(
        "{test}: {lost} NotReady {:.0} s after the power cut",
        started.elapsed().as_secs_f64()
    );
    k.run(&[
        "taint",
        "node",
        &lost,
        "node.kubernetes.io/out-of-service=nodeshutdown:NoExecute",
    ])
    .unwrap();
    for (i, name) in VMS.iter().enumerate() {
        at[i] = placed(&k, ns, name, Some(&at[i].0), &[&first, &lost]);
    }
    println!(
        "{test}: both VMs Running on {} {:.0} s after the power cut",
        at[0].1,
        started.elapsed().as_secs_f64()
    );
    // The node boots again; once it runs, nothing of the old VMs may run twice.
    node_sh(&["up", number(&lost)]).unwrap_or_else(|e| panic!("{e}"));
    k.run(&[
        "taint",
        "node",
        &lost,
        "node.kubernetes.io/out-of-service=nodeshutdown:NoExecute-",
    ])
    .unwrap();
    // The DaemonSets' pods went with the node (out of service); back, it gets new ones.
    wait_for(
        &format!("{lost}'s installer and handler running again"),
        Duration::from_secs(240),
        || {
            let running = |app: &str| {
                list(
                    &k,
                    NAMESPACE,
                    "pod",
                    &format!("app.kubernetes.io/name={app}"),
                )
                .iter()
                .any(|p| {
                    p["spec"]["nodeName"] == lost.as_str()
                        && p["status"]["containerStatuses"][0]["ready"] == true
                })
            };
            (running("virtshim-installer") && running("virtshim-handler")).then_some(())
        },
    );
    // A full kubelet sync after the boot: anything it wrongly started would show now.
    std::thread::sleep(Duration::from_secs(20));
    let computes = node_sh(&[
        "exec",
        number(&lost),
        "crictl",
        "--runtime-endpoint",
        "unix:///run/containerd/containerd.sock",
        "ps",
        "--name",
        "compute",
        "-q",
    ])
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        computes.trim().is_empty(),
        "no VM runs on {lost} after its boot: {computes}"
    );
    let qemus = qemu_pids(ns);
    assert_eq!(qemus.len(), 2, "each VM runs once: {qemus:?}");
    for (i, name) in VMS.iter().enumerate() {
        let now = placed(&k, ns, name, None, &[]);
        assert_eq!(now, at[i], "{name} kept its VMI after {lost} came back");
        console(ns, name).echo("after-loss").unwrap();
    }
    k.run(&["delete", "vm", "-n", ns, "--all", "--wait=false"])
        .unwrap();
    drop(grown);
}
