//! Faults on the cluster, as a node and a control plane meet them (issue 15):
//!
//! - the kubelet restarted under running VMs: the VM keeps running (the same QEMU), the VMI
//!   stays `Running` and Ready, and the VM is still managed (its console answers, it stops);
//! - the controller's leader killed: the other replica takes the Lease and reconciles a change
//!   made while nobody led (a VM set to `running: false` loses its VMI);
//! - the handler's pod deleted under an open console: the console ends with a message and a
//!   non-zero exit, and a new console works once the DaemonSet's new pod serves.
//!
//! They run one after the other in one test: each disturbs what the others need.

#![allow(clippy::unwrap_used)]

use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;
use virtshim_tests::cluster::{list, qemu_pids, running_vmi, Namespace, NAMESPACE};
use virtshim_tests::console::Console;
use virtshim_tests::vm::KERNEL_BOOT_IMAGE;
use virtshim_tests::{repo_root, wait_for, Kubectl};

const VM: &str = "faults";

fn create_vm(k: &Kubectl, ns: &str) {
    let yaml = format!(
        "apiVersion: kubevirt.io/v1\nkind: VirtualMachine\nmetadata: {{name: {VM}, namespace: {ns}}}\n\
         spec:\n  running: true\n  template:\n    spec:\n\
         \x20     domain:\n        memory: {{guest: 128Mi}}\n        devices: {{autoattachPodInterface: false}}\n\
         \x20       firmware:\n          kernelBoot:\n            kernelArgs: console=ttyS0\n\
         \x20           container: {{image: '{KERNEL_BOOT_IMAGE}', kernelPath: /boot/vmlinuz, initrdPath: /boot/initrd.img}}\n"
    );
    k.run_stdin(&["apply", "-f", "-"], Some(&yaml)).unwrap();
}

fn open_console(ns: &str) -> Console {
    let kubeconfig = PathBuf::from(std::env::var_os("KUBECONFIG").unwrap());
    Console::open(&kubeconfig, ns, VM)
}

fn pid_file(name: &str) -> PathBuf {
    let dir = std::env::var_os("VIRTSHIM_CLUSTER_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/virtshim-cluster"));
    dir.join(format!("{name}.pid"))
}

/// Stops the project's kubelet and starts it again with `cluster/up.sh`, as an operator
/// restarts one (its state kept: the control plane runs).
fn restart_kubelet() {
    let pid: i32 = std::fs::read_to_string(pid_file("kubelet"))
        .expect("the project's cluster writes the kubelet's pid (cluster/up.sh)")
        .trim()
        .parse()
        .unwrap();
    let status = Command::new("kill").arg(pid.to_string()).status().unwrap();
    assert!(status.success(), "kill kubelet {pid}");
    wait_for("the kubelet to exit", Duration::from_secs(30), || {
        (!PathBuf::from(format!("/proc/{pid}")).exists()).then_some(())
    });
    let out = Command::new("bash")
        .arg(repo_root().join("cluster/up.sh"))
        .current_dir(repo_root())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cluster/up.sh did not start the kubelet again:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `spec.running` of the VM, as `kubectl patch` sets it.
fn set_running(k: &Kubectl, ns: &str, running: bool) {
    let patch = format!(r#"{{"spec":{{"running":{running}}}}}"#);
    k.run(&["patch", "vm", "-n", ns, VM, "--type=merge", "-p", &patch])
        .unwrap();
}

fn lease_holder(k: &Kubectl) -> Option<String> {
    let lease = k.get_json(NAMESPACE, "lease", "virtshim-controller")?;
    lease["spec"]["holderIdentity"]
        .as_str()
        .filter(|h| !h.is_empty())
        .map(str::to_owned)
}

fn controller_pods(k: &Kubectl) -> Vec<String> {
    list(
        k,
        NAMESPACE,
        "pod",
        "app.kubernetes.io/name=virtshim-controller",
    )
    .iter()
    .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
    .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_owned))
    .collect()
}

fn handler_pod(k: &Kubectl) -> Option<Value> {
    list(
        k,
        NAMESPACE,
        "pod",
        "app.kubernetes.io/name=virtshim-handler",
    )
    .into_iter()
    .find(|p| p["metadata"]["deletionTimestamp"].is_null())
}

#[test]
fn kubelet_restart_leader_loss_and_handler_loss() {
    let test = "kubelet_restart_leader_loss_and_handler_loss";
    let Some(k) = virtshim_tests::cluster::installed(test) else {
        return;
    };
    let ns = Namespace::new(&k, &format!("virtshim-faults-{}", std::process::id()));
    let ns = ns.name.as_str();
    create_vm(&k, ns);
    let before =
        running_vmi(&k, ns, VM, Duration::from_secs(240)).unwrap_or_else(|e| panic!("{e}"));
    let qemu = qemu_pids(ns);
    assert_eq!(qemu.len(), 1, "one QEMU for the VM, found {qemu:?}");
    open_console(ns).echo("before").unwrap();

    // 1. The kubelet restarted under the running VM.
    restart_kubelet();
    wait_for("the node Ready again", Duration::from_secs(120), || {
        let node = k
            .run(&[
                "get",
                "nodes",
                "-o",
                "jsonpath={.items[0].status.conditions[?(@.type==\"Ready\")].status}",
            ])
            .ok()?;
        (node.trim() == "True").then_some(())
    });
    // Give the kubelet a full status round: a wrong status would show now.
    std::thread::sleep(Duration::from_secs(15));
    let after = running_vmi(&k, ns, VM, Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("after the kubelet restart: {e}"));
    assert_eq!(
        after.vmi["metadata"]["uid"], before.vmi["metadata"]["uid"],
        "the same VMI after the kubelet restart"
    );
    assert_eq!(after.pod_name(), before.pod_name(), "the same pod");
    assert_eq!(
        qemu_pids(ns),
        qemu,
        "the same QEMU after the kubelet restart"
    );
    open_console(ns).echo("kubelet-restarted").unwrap();

    // 2. The controller's leader killed; a change made meanwhile is reconciled by the other.
    let leader = wait_for("a controller leading", Duration::from_secs(60), || {
        lease_holder(&k)
    });
    let pods = controller_pods(&k);
    assert!(
        pods.contains(&leader),
        "the Lease holder {leader:?} is one of the controller pods {pods:?}"
    );
    k.run(&[
        "delete",
        "pod",
        "-n",
        NAMESPACE,
        &leader,
        "--grace-period=0",
        "--force",
    ])
    .unwrap();
    set_running(&k, ns, false);
    let new_leader = wait_for("another replica leading", Duration::from_secs(120), || {
        lease_holder(&k).filter(|h| *h != leader)
    });
    wait_for(
        "the VMI gone: the new leader stopped the VM",
        Duration::from_secs(180),
        || k.get_json(ns, "vmi", VM).is_none().then_some(()),
    );
    wait_for("the QEMU gone", Duration::from_secs(60), || {
        qemu_pids(ns).is_empty().then_some(())
    });
    println!("{test}: leader {leader} killed, {new_leader} took over and stopped the VM");
    set_running(&k, ns, true);
    running_vmi(&k, ns, VM, Duration::from_secs(240)).unwrap_or_else(|e| panic!("restarted: {e}"));
    k.run(&[
        "rollout",
        "status",
        "-n",
        NAMESPACE,
        "deployment/virtshim-controller",
        "--timeout=240s",
    ])
    .unwrap();

    // 3. The handler's pod deleted under an open console.
    let mut console = open_console(ns);
    console.echo("handler-there").unwrap();
    let handler = handler_pod(&k).expect("a handler pod");
    let handler_name = handler["metadata"]["name"].as_str().unwrap().to_owned();
    k.run(&[
        "delete",
        "pod",
        "-n",
        NAMESPACE,
        &handler_name,
        "--wait=false",
    ])
    .unwrap();
    let (status, text) = console.exit(Duration::from_secs(120)).unwrap_or_else(|| {
        panic!(
            "virtctl console still open 120 s after its handler went: {}",
            console.text()
        )
    });
    assert!(!status.success(), "a broken console exits non-zero: {text}");
    assert!(
        text.contains("Disconnected from the console"),
        "the console says it was disconnected: {text}"
    );
    let said = text
        .lines()
        .rev()
        .find(|l| l.contains("Disconnected"))
        .unwrap_or("");
    println!("{test}: with its handler gone, virtctl console said: {said}");
    wait_for("a new handler pod Ready", Duration::from_secs(180), || {
        let pod = handler_pod(&k)?;
        let ready = pod["status"]["conditions"]
            .as_array()?
            .iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        (ready && pod["metadata"]["name"] != handler_name.as_str()).then_some(())
    });
    open_console(ns).echo("handler-back").unwrap();
    k.run(&["delete", "vm", "-n", ns, VM, "--wait=false"])
        .unwrap();
}
