//! The shim through containerd's CRI, the way the kubelet drives it, with real libvirt and QEMU
//! booting the test guests: boot to the guest's marker in the CRI log, the QEMU pid in
//! `ContainerStatus`, a clean ACPI power-off on StopContainer within the grace period, a
//! non-zero exit when QEMU is killed, and nothing left after removal.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};
use virtctl::local;
use virtshim_api::manifest::parse_documents;
use virtshim_tests::vm::{self, READY_MARKER};

const BOOT_TIMEOUT: Duration = Duration::from_secs(60);
const GRACE: Duration = Duration::from_secs(30);

fn plan(yaml: &str) -> local::Plan {
    local::plan(parse_documents(yaml).remove(0).unwrap()).unwrap()
}

fn container_disk_vmi(name: &str, memory: &str) -> String {
    format!(
        "apiVersion: kubevirt.io/v1\nkind: VirtualMachineInstance\nmetadata: {{name: {name}}}\nspec:\n  terminationGracePeriodSeconds: 30\n  domain:\n    memory: {{guest: {memory}}}\n    devices:\n      disks:\n      - {{name: root, disk: {{bus: virtio}}}}\n      - {{name: ci, disk: {{bus: sata}}}}\n  volumes:\n  - {{name: root, containerDisk: {{image: '{}'}}}}\n  - name: ci\n    cloudInitNoCloud: {{userData: \"#!/bin/sh\\necho CLOUD-INIT-SAYS-HI\\n\"}}\n",
        vm::CONTAINER_DISK_IMAGE
    )
}

fn kernel_boot_vmi(name: &str, memory: &str) -> String {
    vm::kernel_boot_vmi(
        &format!("name: {name}"),
        memory,
        "",
        "console=ttyS0 quiet",
        "  terminationGracePeriodSeconds: 30\n",
    )
}

/// Boots `yaml`, checks the marker and the pid, stops it through the CRI with the grace
/// period, and checks the clean exit and that nothing is left.
fn boot_stop_remove(test: &str, yaml: &str, extra_marker: Option<&str>) {
    let Some(containerd) = vm::containerd(test) else {
        return;
    };
    let cri = containerd.cri().unwrap();
    let plan = plan(yaml);
    let started =
        local::run(&cri, &plan).unwrap_or_else(|e| panic!("run: {e}\n{}", containerd.log_tail()));
    let compute = started.compute_id().to_owned();

    let boot = vm::wait_for_console(&started.console_log(), READY_MARKER, BOOT_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}\n{}", containerd.log_tail()));
    println!("{test}: StartContainer → {READY_MARKER} in {boot:?}");
    if let Some(marker) = extra_marker {
        vm::wait_for_console(&started.console_log(), marker, BOOT_TIMEOUT).unwrap();
    }
    let status = cri
        .container_status(&compute, false)
        .unwrap()
        .status
        .unwrap();
    assert_eq!(
        status.state,
        virtctl::cri::api::ContainerState::ContainerRunning as i32
    );
    let pid = vm::container_pid(&cri, &compute).expect("the CRI reports a pid");
    let cmdline = String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/cmdline")).unwrap())
        .into_owned();
    assert!(
        cmdline.starts_with("/usr/bin/qemu-system-x86_64"),
        "pid {pid} is not QEMU: {cmdline}"
    );
    assert_eq!(vm::qemu_pids(&started.sandbox_id), vec![pid]);
    // QEMU, what a guest attacks, runs unprivileged and confined.
    vm::assert_confined(pid, &started.sandbox_id);
    // QEMU runs in the container's cgroup, so the kubelet's limits and stats see it.
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let memory = cgroups
        .lines()
        .find(|l| l.contains(":memory:") || l.starts_with("0::"))
        .unwrap_or("");
    assert!(
        memory.ends_with(&compute),
        "QEMU is not in the container's cgroup: {cgroups}"
    );

    // StopContainer: SIGTERM → ACPI power button; the guest powers off well within the grace.
    let stop_started = Instant::now();
    cri.stop_container(&compute, GRACE).unwrap();
    let exit = vm::wait_exited(&cri, &compute, GRACE).expect("exited");
    let took = stop_started.elapsed();
    println!("{test}: StopContainer → exit {exit} in {took:?}");
    assert_eq!(exit, 0, "a guest that powers off exits 0");
    assert!(
        took < GRACE,
        "the guest powered off within the grace period ({took:?})"
    );
    vm::wait_for_console(
        &started.console_log(),
        "reboot: Power down",
        Duration::from_secs(5),
    )
    .unwrap();

    vm::remove_pod(&cri, &started.sandbox_id);
    containerd.stop().unwrap();
}

#[test]
fn container_disk_vm_boots_logs_and_powers_off_cleanly() {
    boot_stop_remove(
        "container_disk_vm_boots_logs_and_powers_off_cleanly",
        &container_disk_vmi("disk-vm", "256Mi"),
        Some("CLOUD-INIT-SAYS-HI"),
    );
}

#[test]
fn kernel_boot_vm_boots_logs_and_powers_off_cleanly() {
    boot_stop_remove(
        "kernel_boot_vm_boots_logs_and_powers_off_cleanly",
        &kernel_boot_vmi("kernel-vm", "256Mi"),
        None,
    );
}

/// KubeVirt's quick-start VM asks for 64M: the test guest boots, runs its user-data and powers
/// off in that (Debian's own kernel cannot even unpack itself in 64 MiB; images/guest/kernel.sh).
#[test]
fn container_disk_vm_boots_in_64_mib() {
    boot_stop_remove(
        "container_disk_vm_boots_in_64_mib",
        &container_disk_vmi("small-disk-vm", "64Mi"),
        Some("CLOUD-INIT-SAYS-HI"),
    );
}

#[test]
fn kernel_boot_vm_boots_in_64_mib() {
    boot_stop_remove(
        "kernel_boot_vm_boots_in_64_mib",
        &kernel_boot_vmi("small-kernel-vm", "64Mi"),
        Some("VIRTSHIM-GUEST-UP"),
    );
}

#[test]
fn killing_qemu_makes_the_container_exit_non_zero() {
    let test = "killing_qemu_makes_the_container_exit_non_zero";
    let Some(containerd) = vm::containerd(test) else {
        return;
    };
    let cri = containerd.cri().unwrap();
    let started = local::run(&cri, &plan(&kernel_boot_vmi("doomed", "256Mi"))).unwrap();
    let compute = started.compute_id().to_owned();
    vm::wait_for_console(&started.console_log(), READY_MARKER, BOOT_TIMEOUT).unwrap();
    let pid = vm::container_pid(&cri, &compute).unwrap();
    std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    let exit =
        vm::wait_exited(&cri, &compute, Duration::from_secs(20)).expect("the CRI reports the exit");
    assert_eq!(exit, 137, "QEMU killed by SIGKILL: 128 + 9");
    let status = cri
        .container_status(&compute, false)
        .unwrap()
        .status
        .unwrap();
    assert_eq!(status.reason, "Error", "the CRI reports the failure");
    vm::remove_pod(&cri, &started.sandbox_id);
    containerd.stop().unwrap();
}
