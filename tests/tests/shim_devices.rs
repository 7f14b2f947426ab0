//! More of the VM through the real CRI: several containerDisks (the extra ones in `volume<name>`
//! containers), an emptyDisk on its emptyDir, a ConfigDrive cloud-init disk; the VNC socket;
//! and pause/resume
//! through containerd's task API with stats from the container's cgroup (`crictl stats`).

#![allow(clippy::unwrap_used)]

use std::time::Duration;
use virtctl::cri::api;
use virtctl::local;
use virtshim_api::manifest::parse_documents;
use virtshim_tests::vm;

#[test]
fn several_container_disks_an_empty_disk_and_a_config_drive() {
    let test = "several_container_disks_an_empty_disk_and_a_config_drive";
    let Some(containerd) = vm::containerd(test) else {
        return;
    };
    let cri = containerd.cri().unwrap();
    let image = vm::CONTAINER_DISK_IMAGE;
    let yaml = format!(
        "apiVersion: kubevirt.io/v1\nkind: VirtualMachineInstance\nmetadata: {{name: disks}}\nspec:\n  domain:\n    memory: {{guest: 256Mi}}\n    devices:\n      disks:\n      - {{name: root, disk: {{bus: virtio}}, bootOrder: 1}}\n      - {{name: data, disk: {{bus: virtio}}, serial: DATA01}}\n      - {{name: scratch, disk: {{bus: scsi}}}}\n      - {{name: ci, disk: {{bus: sata}}}}\n  volumes:\n  - {{name: root, containerDisk: {{image: '{image}'}}}}\n  - {{name: data, containerDisk: {{image: '{image}', path: /disk/guest.qcow2}}}}\n  - {{name: scratch, emptyDisk: {{capacity: 64Mi}}}}\n  - name: ci\n    cloudInitConfigDrive: {{userData: \"#!/bin/sh\\necho CONFIG-DRIVE-RAN\\n\"}}\n"
    );
    let plan = local::plan(parse_documents(&yaml).remove(0).unwrap()).unwrap();
    let started =
        local::run(&cri, &plan).unwrap_or_else(|e| panic!("{e}\n{}", containerd.log_tail()));
    // The second containerDisk rides in its own container, which runs nothing.
    let names: Vec<&str> = started.containers.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["volumedata", "compute"]);
    vm::wait_for_console(
        &started.console_log(),
        "CONFIG-DRIVE-RAN",
        Duration::from_secs(90),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", containerd.log_tail()));
    // libvirt's definition of the domain holds all four disks, on their buses.
    let run = &vm::pod_dirs(&started.sandbox_id)[0];
    let xml = std::fs::read_to_string(run.join("libvirt/etc/qemu/default_disks.xml")).unwrap();
    for expected in [
        "dev='vda' bus='virtio'",
        "dev='vdb' bus='virtio'",
        "dev='sda' bus='scsi'",
        "dev='sdb' bus='sata'",
        "<serial>DATA01</serial>",
        "model='virtio-scsi'",
    ] {
        assert!(xml.contains(expected), "missing {expected} in\n{xml}");
    }
    // The emptyDisk is a sparse qcow2 of its capacity on the pod's emptyDir.
    let empty = local::pod_volumes_dir(&plan.uid).join("volumes/scratch/disk.qcow2");
    let info = std::process::Command::new("qemu-img")
        .args(["info", "--output=json", "-U"])
        .arg(&empty)
        .output()
        .unwrap();
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(info["virtual-size"], 64 << 20);
    assert_eq!(info["format"], "qcow2");
    vm::remove_pod(&cri, &started.sandbox_id);
    local::remove_pod_volumes(&plan.uid);
    containerd.stop().unwrap();
}

fn cpu_ns(cri: &virtctl::cri::blocking::BlockingCri, id: &str) -> u64 {
    cri.container_stats(id)
        .unwrap()
        .cpu
        .and_then(|c| c.usage_core_nano_seconds)
        .map_or(0, |v| v.value)
}

fn ctr_task(socket: &std::path::Path, verb: &str, id: &str) {
    let status = std::process::Command::new("ctr")
        .arg("--address")
        .arg(socket)
        .args(["-n", "k8s.io", "tasks", verb, id])
        .status()
        .unwrap();
    assert!(status.success(), "ctr tasks {verb}");
}

#[test]
fn vnc_pause_resume_and_stats() {
    let test = "vnc_pause_resume_and_stats";
    let Some(containerd) = vm::containerd(test) else {
        return;
    };
    let cri = containerd.cri().unwrap();
    let yaml = vm::kernel_boot_vmi("name: pausable", "192Mi", "", "console=ttyS0", "");
    let plan = local::plan(parse_documents(&yaml).remove(0).unwrap()).unwrap();
    let started = local::run(&cri, &plan).unwrap();
    let id = started.compute_id().to_owned();
    vm::wait_for_console(
        &started.console_log(),
        vm::READY_MARKER,
        Duration::from_secs(60),
    )
    .unwrap();

    // VNC listens on the pod's unix socket (for the node daemon): an RFB server greets.
    let vnc = vm::pod_dirs(&started.sandbox_id)[0].join("vm/vnc.sock");
    let mut greeting = [0u8; 12];
    let mut stream = std::os::unix::net::UnixStream::connect(&vnc).unwrap();
    std::io::Read::read_exact(&mut stream, &mut greeting).unwrap();
    assert_eq!(&greeting, b"RFB 003.008\n");
    drop(stream);

    // Stats come from QEMU's cgroup: the guest has used CPU and memory.
    let stats = cri.container_stats(&id).unwrap();
    let memory = stats
        .memory
        .and_then(|m| m.working_set_bytes)
        .map_or(0, |v| v.value);
    assert!(
        cpu_ns(&cri, &id) > 1_000_000_000,
        "a booted TCG guest has used over a second of CPU"
    );
    assert!(memory > 32 << 20, "QEMU's working set is {memory} bytes");

    let socket = containerd.socket();
    ctr_task(&socket, "pause", &id);
    assert_eq!(containerd.task_status(&id), "PAUSED");
    let before = cpu_ns(&cri, &id);
    std::thread::sleep(Duration::from_secs(2));
    let paused_use = cpu_ns(&cri, &id) - before;
    ctr_task(&socket, "resume", &id);
    assert_eq!(containerd.task_status(&id), "RUNNING");
    println!(
        "{test}: CPU used in 2 s while paused: {} ms",
        paused_use / 1_000_000
    );
    assert!(
        paused_use < 500_000_000,
        "a paused VM used {paused_use} ns of CPU in 2 s"
    );
    let status = cri.container_status(&id, false).unwrap().status.unwrap();
    assert_eq!(status.state, api::ContainerState::ContainerRunning as i32);

    cri.stop_container(&id, Duration::from_secs(30)).unwrap();
    assert_eq!(vm::wait_exited(&cri, &id, Duration::from_secs(30)), Some(0));
    vm::remove_pod(&cri, &started.sandbox_id);
    containerd.stop().unwrap();
}

#[test]
fn a_full_disk_folder_fails_cleanly() {
    let test = "a_full_disk_folder_fails_cleanly";
    // The shim's disk folder on a tiny tmpfs, filled up before the VM starts.
    let lib = format!("{}/full-lib-{}", vm::STATE_ROOT, std::process::id());
    std::fs::create_dir_all(&lib).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs", &lib])
        .status()
        .unwrap();
    assert!(mounted.success(), "mount a tmpfs on {lib}");
    let _ = std::process::Command::new("dd")
        .args(["if=/dev/zero", &format!("of={lib}/filler"), "bs=64k"])
        .output();
    let unmount = || {
        let _ = std::process::Command::new("umount").arg(&lib).status();
        let _ = std::fs::remove_dir(&lib);
    };
    let Some(containerd) = vm::containerd_with_lib_dir(test, &lib) else {
        unmount();
        return;
    };
    let cri = containerd.cri().unwrap();
    let yaml = format!(
        "apiVersion: kubevirt.io/v1\nkind: VirtualMachineInstance\nmetadata: {{name: cramped}}\nspec:\n  domain:\n    memory: {{guest: 128Mi}}\n    devices: {{disks: [{{name: root, disk: {{bus: virtio}}}}]}}\n  volumes:\n  - {{name: root, containerDisk: {{image: '{}'}}}}\n",
        vm::CONTAINER_DISK_IMAGE
    );
    let plan = local::plan(parse_documents(&yaml).remove(0).unwrap()).unwrap();
    let error = local::run(&cri, &plan)
        .expect_err("no room for the overlay")
        .to_string();
    assert!(
        error.contains("creating the copy-on-write overlay in")
            && error.contains("No space left on device"),
        "{error}"
    );
    // local::run removed the pod; nothing of it is left, on the full folder either.
    let leftovers: Vec<_> = std::fs::read_dir(format!("{lib}/pods"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(
        leftovers.is_empty(),
        "left in the full folder: {leftovers:?}"
    );
    let qemu_for_it = std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        String::from_utf8_lossy(&cmdline).contains("guest=default_cramped")
    });
    assert!(
        !qemu_for_it,
        "QEMU started for a VM whose disk could not be made"
    );
    containerd.stop().unwrap();
    unmount();
}
