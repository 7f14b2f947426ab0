//! A VM's start runs without the pod's lock. While it is held up — here at the shim's test gate
//! (`VIRTSHIM_TEST_START_GATE`), standing for a slow first probe of QEMU or a QEMU that does not
//! answer — containerd's `State` for that task answers, and a `Kill` (the kubelet's
//! StopContainer) ends the start: the container exits 137, no QEMU runs, nothing is left.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};
use virtctl::local;
use virtshim_api::manifest::parse_documents;
use virtshim_tests::vm;

/// containerd's view of the task (`ctr tasks ls`, which asks the shim's `State`), and how long
/// the answer took; `None` when none came within 10 s (a call stuck behind the start).
fn task_state(
    containerd: &virtshim_tests::containerd::PrivateContainerd,
    id: &str,
) -> Option<(String, Duration)> {
    let asked = Instant::now();
    let out = std::process::Command::new("timeout")
        .arg("10")
        .arg("ctr")
        .arg("--address")
        .arg(containerd.socket())
        .args(["-n", "k8s.io", "tasks", "ls"])
        .output()
        .unwrap();
    let took = asked.elapsed();
    if !out.status.success() {
        return None;
    }
    let status = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.starts_with(id))
        .and_then(|l| l.split_whitespace().nth(2))
        .unwrap_or("")
        .to_owned();
    Some((status, took))
}

#[test]
fn a_held_up_start_answers_state_and_yields_to_kill() {
    let test = "a_held_up_start_answers_state_and_yields_to_kill";
    let gate = std::path::PathBuf::from(format!(
        "{}/start-gate-{}",
        vm::STATE_ROOT,
        std::process::id()
    ));
    let Some(containerd) = vm::containerd_with_env(
        test,
        &[("VIRTSHIM_TEST_START_GATE", gate.to_str().unwrap())],
    ) else {
        return;
    };
    std::fs::write(&gate, "").unwrap();
    let yaml = format!(
        "apiVersion: kubevirt.io/v1\nkind: VirtualMachineInstance\nmetadata: {{name: held}}\nspec:\n  domain:\n    memory: {{guest: 128Mi}}\n    devices:\n      disks:\n      - {{name: root, disk: {{bus: virtio}}}}\n  volumes:\n  - {{name: root, containerDisk: {{image: '{}'}}}}\n",
        vm::CONTAINER_DISK_IMAGE
    );
    let plan = local::plan(parse_documents(&yaml).remove(0).unwrap()).unwrap();
    let sandbox = local::sandbox_config(&plan);
    std::fs::create_dir_all(&sandbox.log_directory).unwrap();
    let cri = containerd.cri().unwrap();
    let sandbox_id = cri.run_pod_sandbox(sandbox.clone(), "virtshim").unwrap();
    let config = vm::compute_config(&plan).unwrap();
    let id = cri.create_container(&sandbox_id, config, sandbox).unwrap();

    // StartContainer waits at the gate.
    let starting = {
        let cri = containerd.cri().unwrap();
        let id = id.clone();
        std::thread::spawn(move || cri.start_container(&id).map_err(|e| e.to_string()))
    };
    std::thread::sleep(Duration::from_secs(1));
    assert!(!starting.is_finished(), "the start was not held up");

    // State answers meanwhile: the task is there, not yet running.
    let mut slowest = Duration::ZERO;
    for _ in 0..5 {
        let (status, took) = task_state(&containerd, &id)
            .expect("containerd's State for the task answers while its start is held up");
        assert_eq!(status, "CREATED", "the task while it starts");
        slowest = slowest.max(took);
    }
    println!("{test}: State answered during the start, slowest of 5 in {slowest:?} (ctr included)");
    assert!(!starting.is_finished(), "the start went on");

    // Kill ends it. The CRI's StopContainer leaves a container that is still starting alone;
    // containerd kills its task when the start's deadline (the kubelet's runtime request
    // timeout) passes, as `ctr tasks kill` does here.
    let killed = Instant::now();
    let out = std::process::Command::new("ctr")
        .arg("--address")
        .arg(containerd.socket())
        .args(["-n", "k8s.io", "tasks", "kill", "--signal", "SIGKILL", &id])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ctr tasks kill: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let start = starting.join().unwrap();
    println!(
        "{test}: killed during its start, StartContainer returned in {:?}",
        killed.elapsed()
    );
    let error = start.expect_err("StartContainer fails when the start is killed");
    assert!(error.contains("killed while it started"), "{error}");
    let (status, _) = task_state(&containerd, &id).expect("State answers");
    assert!(
        status.is_empty() || status == "STOPPED",
        "the task after the kill: {status:?}"
    );
    assert!(gate.exists(), "the kill, not the gate, ended the start");
    assert!(
        vm::qemu_pids(&sandbox_id).is_empty(),
        "QEMU runs after the kill"
    );
    vm::remove_pod(&cri, &sandbox_id);
    let _ = std::fs::remove_file(&gate);
    containerd.stop().unwrap();
}
