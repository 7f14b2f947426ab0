//! Volumes that come from the pod rather than from images, through the real CRI: cloud-init
//! user data and network data from mounted Secret volumes, and a VM booting from a
//! filesystem-mode PVC (`disk.img`). `virtctl local` maps them to folders of this node, as the
//! kubelet mounts them.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::time::Duration;
use virtctl::local;
use virtshim_api::manifest::parse_documents;
use virtshim_tests::{oci, vm};

#[test]
fn cloud_init_from_secrets() {
    let test = "cloud_init_from_secrets";
    let Some(containerd) = vm::containerd(test) else {
        return;
    };
    let cri = containerd.cri().unwrap();
    let secrets = tempfile::tempdir().unwrap();
    let user = secrets.path().join("user");
    let network = secrets.path().join("network");
    std::fs::create_dir_all(&user).unwrap();
    std::fs::create_dir_all(&network).unwrap();
    std::fs::write(user.join("userdata"), "#!/bin/sh\necho FROM-A-SECRET\n").unwrap();
    std::fs::write(
        network.join("networkData"),
        "version: 2\nethernets: {eth0: {dhcp4: true}}\n",
    )
    .unwrap();
    let yaml = format!(
        "apiVersion: kubevirt.io/v1\nkind: VirtualMachineInstance\nmetadata: {{name: secretive}}\nspec:\n  domain:\n    memory: {{guest: 192Mi}}\n    devices: {{autoattachPodInterface: false, disks: [{{name: ci, disk: {{bus: virtio}}}}]}}\n    firmware:\n      kernelBoot:\n        kernelArgs: console=ttyS0\n        container: {{image: '{}', kernelPath: /boot/vmlinuz, initrdPath: /boot/initrd.img}}\n  volumes:\n  - name: ci\n    cloudInitNoCloud: {{secretRef: {{name: ci-user}}, networkDataSecretRef: {{name: ci-net}}}}\n",
        vm::KERNEL_BOOT_IMAGE
    );
    let mut plan = local::plan(parse_documents(&yaml).remove(0).unwrap()).unwrap();
    plan.host_volumes.secrets =
        HashMap::from([("ci-user".to_owned(), user), ("ci-net".to_owned(), network)]);
    let started =
        local::run(&cri, &plan).unwrap_or_else(|e| panic!("{e}\n{}", containerd.log_tail()));
    vm::wait_for_console(
        &started.console_log(),
        "FROM-A-SECRET",
        Duration::from_secs(60),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", containerd.log_tail()));
    // The NoCloud disk carries the network data as network-config.
    let iso = vm::pod_dirs(&started.sandbox_id)[1].join("disks/ci.iso");
    let listing = std::process::Command::new("isoinfo")
        .args(["-R", "-f", "-i"])
        .arg(&iso)
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout).into_owned();
    for file in ["/user-data", "/meta-data", "/network-config"] {
        assert!(
            listing.lines().any(|l| l == file),
            "{file} missing from the NoCloud disk: {listing}"
        );
    }
    cri.stop_pod_sandbox(&started.sandbox_id).unwrap();
    cri.remove_pod_sandbox(&started.sandbox_id).unwrap();
    vm::assert_nothing_left(&started.sandbox_id);
    containerd.stop().unwrap();
}

#[test]
fn boots_from_a_filesystem_pvc() {
    let test = "boots_from_a_filesystem_pvc";
    let Some(containerd) = vm::containerd(test) else {
        return;
    };
    // A VM without a containerDisk or kernel runs compute on the placeholder image.
    let placeholder = oci::busybox_image(
        virtshim_api::pod::PLACEHOLDER_IMAGE,
        &["/bin/busybox", "true"],
    )
    .unwrap();
    containerd.import_image(&placeholder).unwrap();
    let cri = containerd.cri().unwrap();
    let claim = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("qemu-img")
        .args(["convert", "-O", "raw"])
        .arg(vm::guest_images().join("guest.qcow2"))
        .arg(claim.path().join("disk.img"))
        .status()
        .unwrap();
    assert!(status.success());
    let yaml = "apiVersion: kubevirt.io/v1\nkind: VirtualMachineInstance\nmetadata: {name: persistent}\nspec:\n  domain:\n    memory: {guest: 192Mi}\n    devices: {autoattachPodInterface: false, disks: [{name: root, disk: {bus: virtio}}]}\n  volumes:\n  - {name: root, persistentVolumeClaim: {claimName: boot-disk}}\n";
    let mut plan = local::plan(parse_documents(yaml).remove(0).unwrap()).unwrap();
    plan.host_volumes.claims =
        HashMap::from([("boot-disk".to_owned(), claim.path().to_path_buf())]);
    let started =
        local::run(&cri, &plan).unwrap_or_else(|e| panic!("{e}\n{}", containerd.log_tail()));
    vm::wait_for_console(
        &started.console_log(),
        vm::READY_MARKER,
        Duration::from_secs(60),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", containerd.log_tail()));
    let xml = std::fs::read_to_string(
        vm::pod_dirs(&started.sandbox_id)[0].join("libvirt/etc/qemu/default_persistent.xml"),
    )
    .unwrap();
    assert!(
        xml.contains(&format!("{}/disk.img", claim.path().display())),
        "the VM does not use the PVC's disk.img:\n{xml}"
    );
    cri.stop_container(started.compute_id(), Duration::from_secs(30))
        .unwrap();
    assert_eq!(
        vm::wait_exited(&cri, started.compute_id(), Duration::from_secs(30)),
        Some(0)
    );
    cri.stop_pod_sandbox(&started.sandbox_id).unwrap();
    cri.remove_pod_sandbox(&started.sandbox_id).unwrap();
    vm::assert_nothing_left(&started.sandbox_id);
    // The PVC's disk outlives the pod.
    assert!(claim.path().join("disk.img").exists());
    containerd.stop().unwrap();
}
