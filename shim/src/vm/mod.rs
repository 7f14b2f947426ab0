//! Turning a validated VMI into a domain: disks found and prepared, the domain XML planned.

pub mod cloudinit;
pub mod disk;
pub mod domain_xml;
pub mod exposed;

use crate::bundle::BlockDevice;
use crate::error::{Error, Result};
use crate::network::{self, NicPlan};
use crate::paths::PodPaths;
use crate::qemu_ids::QemuIds;
use domain_xml::{Accel, DomainNic, DomainPlan, ResolvedDisk, ResolvedKernel};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use virtshim_api::config::{
    CloudInit, CloudInitFormat, DiskBus, DiskConfig, DiskDevice, KernelBoot, VmiConfig,
    VolumeSource,
};
use virtshim_api::pod::{self, ContainerImages};

/// Who the VMI is.
#[derive(Clone, Debug)]
pub struct VmiIdentity {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl VmiIdentity {
    /// The libvirt domain name, as KubeVirt names it (`<namespace>_<name>`), cut to 200 bytes:
    /// libvirt makes file names of it (`<domain>.xml`, `<domain>_VARS.fd`, `<domain>.log`),
    /// which may not exceed 255, and VMI names may be 253 long. Each pod has its own embedded
    /// libvirt, so a cut name cannot meet another VM's.
    pub fn domain_name(&self) -> String {
        const MAX: usize = 200;
        let mut name = format!("{}_{}", self.namespace, self.name);
        // Namespaces and names are ASCII (checked), so any byte is a char boundary.
        name.truncate(name.floor_char_boundary(MAX));
        name
    }
}

/// Where the VM's inputs are on the host.
#[derive(Debug)]
pub struct Sources<'a> {
    /// compute's root filesystem.
    pub compute_rootfs: &'a Path,
    /// compute's mounts: destination in the container → host path (the kubelet's volumes).
    pub compute_mounts: &'a HashMap<String, PathBuf>,
    /// compute's block devices: path in the container → device (the kubelet's volumeDevices).
    pub compute_devices: &'a HashMap<String, BlockDevice>,
    /// Root filesystems of the pod's other containers, by container name.
    pub containers: &'a HashMap<String, PathBuf>,
    /// Filesystem-mode claims' capacities by volume (the pod contract's annotation).
    pub claim_capacities: &'a std::collections::BTreeMap<String, u64>,
}

impl Sources<'_> {
    fn volume_dir(&self, volume: &str) -> Option<PathBuf> {
        self.compute_mounts
            .get(&format!("{}/{volume}", pod::VOLUME_MOUNT_ROOT))
            .cloned()
    }

    fn container_rootfs(&self, container: &str, disk: &str) -> Result<&Path> {
        self.containers.get(container).map(PathBuf::as_path).ok_or_else(|| Error::Disk {
            disk: disk.to_owned(),
            message: format!("the pod has no container {container:?} carrying it (the pod contract puts it before compute)"),
        })
    }
}

/// Plans the VM's NIC on the pod network (reads the pod's interface; changes nothing).
pub fn plan_nic(
    identity: &VmiIdentity,
    config: &VmiConfig,
    sources: &Sources<'_>,
) -> Result<Option<NicPlan>> {
    let Some(iface) = config.interfaces.first() else {
        return Ok(None);
    };
    let hostname = pod::guest_hostname(&identity.name, config.hostname.as_deref());
    let resolv = sources
        .compute_mounts
        .get("/etc/resolv.conf")
        .map(PathBuf::as_path);
    let seed = format!("{}/{}/{}", identity.namespace, identity.name, identity.uid);
    network::plan(
        iface,
        iface.vm_network_cidr.as_deref(),
        &network::GuestName {
            hostname: &hostname,
            subdomain: config.subdomain.as_deref(),
            namespace: &identity.namespace,
        },
        resolv,
        &seed,
    )
    .map(Some)
}

/// Prepares every disk (overlays, cloud-init ISOs, empty disks) in the VM's own folders, which
/// QEMU running as `ids` may enter, and plans the domain.
pub fn plan(
    identity: &VmiIdentity,
    config: &VmiConfig,
    sources: &Sources<'_>,
    paths: &PodPaths,
    accel: Accel,
    nic: Option<&NicPlan>,
    ids: QemuIds,
) -> Result<DomainPlan> {
    let files = VmFiles {
        identity,
        config,
        sources,
        images: pod::container_images(config),
        dir: paths.disks(),
        ids,
    };
    exposed::own_dir(&files.dir, ids)?;
    exposed::own_dir(&paths.qemu_sockets(), ids)?;
    let disks = config
        .disks
        .iter()
        .map(|d| files.disk(d))
        .collect::<Result<Vec<_>>>()?;
    let kernel = config
        .kernel_boot
        .as_ref()
        .map(|kb| files.kernel(kb))
        .transpose()?;
    Ok(DomainPlan {
        name: identity.domain_name(),
        uuid: config.firmware_uuid.to_string(),
        // Memory and CPUs.
        memory_kib: config.memory.kib(),
        cpu: config.cpu,
        cpu_model: config.cpu_model.clone(),
        accel,
        tb_cache_mib: tb_cache_mib(accel),
        // Machine and firmware, or a kernel booted directly.
        machine: config.machine_type.clone(),
        acpi: config.acpi,
        smm: config.smm,
        bootloader: config.bootloader.clone(),
        kernel,
        smbios_serial: config.firmware_serial.clone(),
        disks,
        nics: nic.map(domain_nic).into_iter().collect(),
        // Console and display, on sockets in QEMU's folder.
        serial_socket: config
            .serial_console
            .then(|| paths.serial_socket().to_string_lossy().into_owned()),
        vnc_socket: config
            .graphics
            .then(|| paths.vnc_socket().to_string_lossy().into_owned()),
        rng: config.rng,
        emulator: "/usr/bin/qemu-system-x86_64".to_owned(),
    })
}

/// QEMU's translated-code cache: configured for TCG only (KVM translates nothing).
fn tb_cache_mib(accel: Accel) -> Option<u32> {
    match accel {
        Accel::Tcg => crate::accel::tb_cache_mib(),
        Accel::Kvm => None,
    }
}

/// The VM's NIC as the domain shows it: on the pod's bridge, with the guest's MAC.
fn domain_nic(nic: &NicPlan) -> DomainNic {
    DomainNic {
        name: nic.name.clone(),
        bridge: network::BRIDGE.to_owned(),
        mac: virtshim_api::config::MacAddress(nic.guest_mac).to_string(),
        model: nic.model.as_str(),
        mtu: nic.pod.mtu,
    }
}

/// How the guest sees a disk, from `disks[].disk` or `disks[].cdrom`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct GuestDevice {
    cdrom: bool,
    bus: DiskBus,
    /// As asked for on the device; a read-only claim makes the disk read-only too.
    read_only: bool,
    tray_open: bool,
}

impl From<&DiskDevice> for GuestDevice {
    fn from(device: &DiskDevice) -> Self {
        match device {
            DiskDevice::Disk { bus, read_only } => Self {
                cdrom: false,
                bus: *bus,
                read_only: *read_only,
                tray_open: false,
            },
            DiskDevice::Cdrom {
                bus,
                read_only,
                tray_open,
            } => Self {
                cdrom: true,
                bus: *bus,
                read_only: *read_only,
                tray_open: *tray_open,
            },
        }
    }
}

/// A disk's file as QEMU opens it, in the VM's folder.
#[derive(Debug)]
struct DiskFile {
    file: PathBuf,
    /// `qcow2` or `raw`.
    format: &'static str,
    read_only: bool,
    /// A block device node (a block-mode PVC), not a regular file.
    block_device: bool,
}

impl DiskFile {
    fn file(file: PathBuf, format: &'static str, read_only: bool) -> Self {
        Self {
            file,
            format,
            read_only,
            block_device: false,
        }
    }
}

/// The files QEMU opens, made ready in the VM's own folder (`dir`, its QEMU user's): what
/// preparing them reads is who the VM is and where its inputs are on the host.
#[derive(Debug)]
struct VmFiles<'a> {
    identity: &'a VmiIdentity,
    config: &'a VmiConfig,
    sources: &'a Sources<'a>,
    images: ContainerImages,
    dir: PathBuf,
    ids: QemuIds,
}

impl VmFiles<'_> {
    /// One disk of the domain: its volume made ready for QEMU, shown as the guest asked.
    fn disk(&self, d: &DiskConfig) -> Result<ResolvedDisk> {
        let device = GuestDevice::from(&d.device);
        let prepared = match &d.source {
            VolumeSource::ContainerDisk { path, .. } => {
                self.container_disk(&d.name, path.as_deref(), device.read_only)?
            }
            VolumeSource::CloudInit(ci) => self.cloud_init(&d.name, ci, device.read_only)?,
            VolumeSource::EmptyDisk { capacity } => {
                self.empty_disk(&d.name, *capacity, device.read_only)?
            }
            VolumeSource::PersistentVolumeClaim {
                read_only: pvc_read_only,
                ..
            } => self.pvc(&d.name, device.read_only || *pvc_read_only)?,
        };
        Ok(ResolvedDisk {
            name: d.name.clone(),
            cdrom: device.cdrom,
            tray_open: device.tray_open,
            bus: device.bus,
            read_only: prepared.read_only,
            file: prepared.file.to_string_lossy().into_owned(),
            block_device: prepared.block_device,
            format: prepared.format,
            serial: d.serial.clone(),
            boot_order: d.boot_order,
        })
    }

    /// A containerDisk: a qcow2 overlay in the VM's folder on the image in its container (compute,
    /// or the container carrying it), so the VM writes only to the overlay.
    fn container_disk(&self, name: &str, path: Option<&str>, read_only: bool) -> Result<DiskFile> {
        let rootfs = if self.images.compute_volume.as_deref() == Some(name) {
            self.sources.compute_rootfs
        } else {
            self.sources
                .container_rootfs(&pod::volume_container(name), name)?
        };
        let image = disk::container_disk_file(rootfs, path, name)?;
        let info = disk::inspect(&image, name)?;
        // The overlay names the image by its read-only bind in the VM's folder.
        let base = self.dir.join(format!("{name}.base"));
        exposed::bind_file(&image, &base, true, self.ids, name)?;
        let overlay = self.dir.join(format!("{name}.qcow2"));
        let _ = std::fs::remove_file(&overlay);
        disk::create_overlay(&base, info.format, &overlay).map_err(|e| Error::Disk {
            disk: name.to_owned(),
            message: format!(
                "creating the copy-on-write overlay in {}: {e}",
                self.dir.display()
            ),
        })?;
        Ok(DiskFile::file(overlay, "qcow2", read_only))
    }

    /// A cloud-init disk: an ISO of the guest's identity, its data and the SSH keys meant for
    /// this kind of disk.
    fn cloud_init(&self, name: &str, ci: &CloudInit, read_only: bool) -> Result<DiskFile> {
        let iso = self.dir.join(format!("{name}.iso"));
        let identity = cloudinit::Identity {
            instance_id: format!("{}.{}", self.identity.name, self.identity.namespace),
            hostname: pod::guest_hostname(&self.identity.name, self.config.hostname.as_deref()),
            public_keys: self.public_keys(name, ci.format)?,
        };
        let secret_dir = |volume: &str| self.sources.volume_dir(volume);
        cloudinit::build_iso(
            ci,
            &identity,
            &secret_dir,
            &self.dir.join(format!("{name}.d")),
            &iso,
            name,
        )?;
        // Attached as the user asked, like KubeVirt: a read-only SATA disk does not exist.
        Ok(DiskFile::file(iso, "raw", read_only))
    }

    /// The SSH keys whose propagation method is this cloud-init disk's kind, from their mounted
    /// Secrets in order.
    fn public_keys(&self, name: &str, format: CloudInitFormat) -> Result<Vec<String>> {
        let mut public_keys = Vec::new();
        for (i, keys) in self.config.ssh_keys.iter().enumerate() {
            if keys.format != format {
                continue;
            }
            let volume = pod::ssh_keys_volume(i);
            let dir = self
                .sources
                .volume_dir(&volume)
                .ok_or_else(|| Error::Disk {
                    disk: name.to_owned(),
                    message: format!(
                        "the SSH key Secret {:?} is not mounted into the pod (volume {volume})",
                        keys.secret
                    ),
                })?;
            public_keys.extend(cloudinit::read_public_keys(&dir, name)?);
        }
        Ok(public_keys)
    }

    /// An emptyDisk: a blank qcow2 on its emptyDir (kept across restarts of compute, as the
    /// emptyDir is), shown in the VM's folder.
    fn empty_disk(&self, name: &str, capacity: u64, read_only: bool) -> Result<DiskFile> {
        let dir = self.sources.volume_dir(name).ok_or_else(|| Error::Disk {
            disk: name.to_owned(),
            message: "its emptyDir volume is not mounted into compute".into(),
        })?;
        let file = dir.join("disk.qcow2");
        disk::create_blank(&file, capacity)?;
        let shown = self.dir.join(format!("{name}.empty"));
        exposed::bind_file(&file, &shown, false, self.ids, name)?;
        Ok(DiskFile::file(shown, "qcow2", read_only))
    }

    /// A PersistentVolumeClaim. Filesystem mode: a mounted folder holding disk.img. Block mode:
    /// a device the kubelet gave compute at VOLUME_DEVICE_ROOT/<volume>.
    fn pvc(&self, name: &str, read_only: bool) -> Result<DiskFile> {
        if let Some(dir) = self.sources.volume_dir(name) {
            // A blank claim gets its disk.img made, as in KubeVirt; not a read-only one.
            let existing = dir.join(pod::PVC_DISK_FILE).symlink_metadata().is_ok();
            if !existing && !read_only {
                let capacity = self.sources.claim_capacities.get(name).copied();
                disk::create_pvc_disk(&dir, capacity, name)?;
            }
            let (file, _) = disk::resolve_in_root(&dir, &format!("/{}", pod::PVC_DISK_FILE), name)?;
            let shown = self.dir.join(format!("{name}.img"));
            exposed::bind_file(&file, &shown, read_only, self.ids, name)?;
            Ok(DiskFile::file(shown, "raw", read_only))
        } else if let Some(device) =
            self.sources
                .compute_devices
                .get(&format!("{}/{}", pod::VOLUME_DEVICE_ROOT, name))
        {
            let node = self.dir.join(format!("{name}.block"));
            disk::device_node(&node, *device, name)?;
            Ok(DiskFile {
                block_device: true,
                ..DiskFile::file(node, "raw", read_only)
            })
        } else {
            Err(Error::Disk {
                disk: name.to_owned(),
                message: format!(
                    "its PersistentVolumeClaim is neither mounted into compute at {}/{} nor a device at {}/{}",
                    pod::VOLUME_MOUNT_ROOT, name, pod::VOLUME_DEVICE_ROOT, name
                ),
            })
        }
    }

    /// A kernel boot: the kernel and initrd from their image (compute's, or the kernel-boot
    /// container's), shown in the VM's folder.
    fn kernel(&self, kb: &KernelBoot) -> Result<ResolvedKernel> {
        let rootfs = if self.images.compute_has_kernel {
            self.sources.compute_rootfs
        } else {
            self.sources
                .container_rootfs(pod::KERNEL_BOOT_CONTAINER, "kernelBoot")?
        };
        Ok(ResolvedKernel {
            kernel: self.kernel_file(rootfs, kb.kernel_path.as_deref(), "_kernel")?,
            initrd: self.kernel_file(rootfs, kb.initrd_path.as_deref(), "_initrd")?,
            cmdline: kb.kernel_args.clone(),
        })
    }

    /// One file of a kernel boot, shown under a name no disk can have (volume names are DNS
    /// labels).
    fn kernel_file(
        &self,
        rootfs: &Path,
        path: Option<&str>,
        shown: &str,
    ) -> Result<Option<String>> {
        path.map(|p| {
            let (file, _) = disk::resolve_in_root(rootfs, p, "kernelBoot")?;
            let shown = self.dir.join(shown);
            exposed::bind_file(&file, &shown, true, self.ids, "kernelBoot")?;
            Ok(shown.to_string_lossy().into_owned())
        })
        .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guest_device_is_a_disk_or_a_cdrom() {
        let disk = DiskDevice::Disk {
            bus: DiskBus::Scsi,
            read_only: true,
        };
        assert_eq!(
            GuestDevice::from(&disk),
            GuestDevice {
                cdrom: false,
                bus: DiskBus::Scsi,
                read_only: true,
                tray_open: false,
            }
        );
        let cdrom = DiskDevice::Cdrom {
            bus: DiskBus::Sata,
            read_only: false,
            tray_open: true,
        };
        assert_eq!(
            GuestDevice::from(&cdrom),
            GuestDevice {
                cdrom: true,
                bus: DiskBus::Sata,
                read_only: false,
                tray_open: true,
            }
        );
    }

    #[test]
    fn the_nic_sits_on_the_pod_bridge_with_the_guest_mac() {
        let nic = NicPlan {
            name: "default".into(),
            model: virtshim_api::config::NicModel::E1000e,
            binding: virtshim_api::config::Binding::Bridge,
            guest_mac: [0x02, 0x00, 0x0a, 0xff, 0x01, 0x2b],
            pod: network::PodInterface {
                mac: [0x0a, 0x58, 0x0a, 0x00, 0x00, 0x05],
                address: std::net::Ipv4Addr::new(10, 0, 0, 5),
                prefix: 24,
                gateway: None,
                mtu: 1450,
            },
            lease: network::dhcp::Lease {
                mac: [0x02, 0x00, 0x0a, 0xff, 0x01, 0x2b],
                address: std::net::Ipv4Addr::new(10, 0, 0, 5),
                prefix: 24,
                router: None,
                dns: vec![],
                search: vec![],
                hostname: "vm1".into(),
                mtu: Some(1450),
                server: std::net::Ipv4Addr::new(10, 0, 0, 1),
            },
        };
        assert_eq!(
            domain_nic(&nic),
            DomainNic {
                name: "default".into(),
                bridge: network::BRIDGE.into(),
                mac: "02:00:0a:ff:01:2b".into(),
                model: "e1000e",
                mtu: 1450,
            }
        );
    }

    #[test]
    fn domain_names_fit_in_a_file_name() {
        let id = |name: &str| VmiIdentity {
            namespace: "default".into(),
            name: name.into(),
            uid: "u".into(),
        };
        assert_eq!(id("web").domain_name(), "default_web");
        let long = format!("{}.{}", "a".repeat(63), "b".repeat(189));
        let domain = id(&long).domain_name();
        assert_eq!(domain.len(), 200);
        assert!(domain.starts_with("default_aaa"));
        // What libvirt makes of it still fits in 255 bytes.
        assert!(format!("{domain}_VARS.fd").len() <= 255);
    }
}
