//! Volumes that come from the pod rather than from images, through the real CRI: cloud-init
//! user data and network data from mounted Secret volumes, a VM booting from a filesystem-mode
//! PVC (`disk.img`), and one booting from a block-mode PVC (a device) with its cloud-init data on
//! a CD-ROM. `virtctl local` maps them to folders and devices of this node, as the kubelet would.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::time::Duration;
use virtctl::local;
use virtshim_api::manifest::parse_documents;
use virtshim_tests::vm;

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
    let yaml = vm::kernel_boot_vmi(
        "name: secretive",
        "192Mi",
        "autoattachPodInterface: false, disks: [{name: ci, disk: {bus: virtio}}]",
        "console=ttyS0",
        "  volumes:\n  - name: ci\n    cloudInitNoCloud: {secretRef: {name: ci-user}, networkDataSecretRef: {name: ci-net}}\n",
    );
    let mut plan = local::plan(parse_documents(&yaml).remove(0).unwrap()).unwrap();
    plan.set_host_volumes(local::HostVolumes {
        secrets: HashMap::from([("ci-user".to_owned(), user), ("ci-net".to_owned(), network)]),
        ..Default::default()
    })
    .unwrap();
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
    vm::remove_pod(&cri, &started.sandbox_id);
    containerd.stop().unwrap();
}

#[test]
fn boots_from_a_filesystem_pvc() {
    let test = "boots_from_a_filesystem_pvc";
    let Some(containerd) = vm::containerd(test) else {
        return;
    };
    // A VM without a containerDisk or kernel runs compute on the placeholder image.
    vm::import_placeholder(&containerd);
    let cri = containerd.cri().unwrap();
    let claim = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("qemu-img")
        .args(["convert", "-O", "raw"])
        .arg(vm::guest_images().join("guest.qcow2"))
        .arg(claim.path().join("disk.img"))
        .status()
        .unwrap();
    assert!(status.success());
    // A blank claim (its own 64 MiB file system) becomes a data disk: the shim makes its
    // disk.img, as KubeVirt does.
    let blank = Tmpfs::mount(64);
    let yaml = "apiVersion: kubevirt.io/v1\nkind: VirtualMachineInstance\nmetadata: {name: persistent}\nspec:\n  domain:\n    memory: {guest: 192Mi}\n    devices: {autoattachPodInterface: false, disks: [{name: root, disk: {bus: virtio}}, {name: data, disk: {bus: virtio}}]}\n  volumes:\n  - {name: root, persistentVolumeClaim: {claimName: boot-disk}}\n  - {name: data, persistentVolumeClaim: {claimName: blank}}\n";
    let mut plan = local::plan(parse_documents(yaml).remove(0).unwrap()).unwrap();
    plan.set_host_volumes(local::HostVolumes {
        claims: HashMap::from([
            ("boot-disk".to_owned(), claim.path().to_path_buf()),
            ("blank".to_owned(), blank.path().to_path_buf()),
        ]),
        ..Default::default()
    })
    .unwrap();
    // The controller records the claim's own capacity, which sizes the disk rather than the
    // file system it lives on (here: 32 MiB of the 64 MiB tmpfs).
    virtshim_api::pod::set_claim_capacities(
        &mut plan.pod,
        &std::collections::BTreeMap::from([("data".to_owned(), 32 << 20)]),
    );
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
    // Each claim's folder is bind-mounted into the pod's folder (as the kubelet does with a
    // local volume: the only host paths the shim accepts), and its disk.img into the VM's own
    // folder, where QEMU's unprivileged user opens it: the very same file.
    use std::os::unix::fs::MetadataExt;
    let disks = vm::pod_dirs(&started.sandbox_id)[1].join("disks");
    for (volume, dir) in [("root", claim.path()), ("data", blank.path())] {
        let shown = disks.join(format!("{volume}.img"));
        assert!(
            xml.contains(&format!("<source file='{}'/>", shown.display())),
            "the VM does not use {}:\n{xml}",
            shown.display()
        );
        let (a, b) = (
            std::fs::metadata(&shown).unwrap(),
            std::fs::metadata(dir.join("disk.img")).unwrap(),
        );
        assert_eq!(
            (a.dev(), a.ino()),
            (b.dev(), b.ino()),
            "{volume}: not the PVC's disk.img"
        );
        let bound = local::pod_volumes_dir(&plan.uid).join("binds").join(volume);
        assert!(
            bound.join("disk.img").exists(),
            "{} is not bound",
            bound.display()
        );
    }
    // 94.5% of the claim's 32 MiB (KubeVirt's file system overhead), in whole MiB; sparse.
    let made = std::fs::metadata(blank.path().join("disk.img")).unwrap();
    assert_eq!(made.len(), 30 << 20);
    vm::stop_cleanly(&cri, &started, Duration::from_secs(30));
    vm::remove_pod(&cri, &started.sandbox_id);
    // The PVC's disk outlives the pod.
    assert!(claim.path().join("disk.img").exists());
    containerd.stop().unwrap();
}

/// A tmpfs of a given size standing in for a blank PVC's file system; unmounted when dropped.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(mib: u32) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "blank-claim"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(status.success(), "mounting a tmpfs");
        Tmpfs(dir)
    }

    fn path(&self) -> &std::path::Path {
        self.0.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.0.path())
            .status();
    }
}

/// A loop device holding the guest disk; detached when dropped.
struct LoopDevice(String);

impl LoopDevice {
    fn attach(file: &std::path::Path) -> Self {
        let out = std::process::Command::new("losetup")
            .args(["--find", "--show"])
            .arg(file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "losetup: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self(String::from_utf8(out.stdout).unwrap().trim().to_owned())
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = std::process::Command::new("losetup")
            .args(["-d", &self.0])
            .status();
    }
}

#[test]
fn boots_from_a_block_pvc_with_a_cdrom() {
    let test = "boots_from_a_block_pvc_with_a_cdrom";
    let Some(containerd) = vm::containerd(test) else {
        return;
    };
    vm::import_placeholder(&containerd);
    let cri = containerd.cri().unwrap();
    // The block PVC: a loop device over a raw copy of the guest disk, as a CSI driver would
    // hand the kubelet a device.
    let backing = tempfile::tempdir().unwrap();
    let raw = backing.path().join("volume.raw");
    let status = std::process::Command::new("qemu-img")
        .args(["convert", "-O", "raw"])
        .arg(vm::guest_images().join("guest.qcow2"))
        .arg(&raw)
        .status()
        .unwrap();
    assert!(status.success());
    let device = LoopDevice::attach(&raw);
    // The cloud-init data rides on a CD-ROM (sata), which the guest searches for its label.
    let yaml = "apiVersion: kubevirt.io/v1\nkind: VirtualMachineInstance\nmetadata: {name: blocky}\nspec:\n  domain:\n    memory: {guest: 192Mi}\n    devices:\n      autoattachPodInterface: false\n      disks:\n      - {name: root, disk: {bus: virtio}, bootOrder: 1}\n      - {name: seed, cdrom: {bus: sata}}\n  volumes:\n  - {name: root, persistentVolumeClaim: {claimName: fast-block}}\n  - name: seed\n    cloudInitNoCloud: {userData: \"#!/bin/sh\\necho FROM-THE-CDROM $(cat /sys/block/sr0/device/type)\\n\"}\n";
    let mut plan = local::plan(parse_documents(yaml).remove(0).unwrap()).unwrap();
    plan.set_host_volumes(local::HostVolumes {
        claims: HashMap::from([("fast-block".to_owned(), device.0.clone().into())]),
        ..Default::default()
    })
    .unwrap();
    // The pod asks for the claim as a device, as for a Block-mode PVC.
    let compute = plan.pod.spec.as_ref().unwrap().containers.last().unwrap();
    assert_eq!(
        compute.volume_devices.as_ref().unwrap()[0].device_path,
        "/dev/virtshim/root"
    );
    let started =
        local::run(&cri, &plan).unwrap_or_else(|e| panic!("{e}\n{}", containerd.log_tail()));
    // Booted from the device (syslinux, kernel and initramfs all read through it) and the
    // CD-ROM (SCSI device type 5) carried the user data.
    vm::wait_for_console(
        &started.console_log(),
        "FROM-THE-CDROM 5",
        Duration::from_secs(60),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", containerd.log_tail()));
    let xml = std::fs::read_to_string(
        vm::pod_dirs(&started.sandbox_id)[0].join("libvirt/etc/qemu/default_blocky.xml"),
    )
    .unwrap();
    assert!(
        xml.contains("<disk type='block' device='disk'>"),
        "the PVC is not a block disk:\n{xml}"
    );
    assert!(
        xml.contains("<disk type='file' device='cdrom'>"),
        "no CD-ROM:\n{xml}"
    );
    vm::stop_cleanly(&cri, &started, Duration::from_secs(30));
    // The node the shim made for QEMU went with the pod; the device itself stays.
    vm::remove_pod(&cri, &started.sandbox_id);
    assert!(std::path::Path::new(&device.0).exists());
    drop(device);
    containerd.stop().unwrap();
}
