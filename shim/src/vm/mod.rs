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
use virtshim_api::config::{DiskDevice, VmiConfig, VolumeSource};
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
    let images: ContainerImages = pod::container_images(config);
    let disks_dir = paths.disks();
    exposed::own_dir(&disks_dir, ids)?;
    exposed::own_dir(&paths.qemu_sockets(), ids)?;
    let mut disks = Vec::new();
    let mut block_devices = std::collections::HashSet::new();
    for d in &config.disks {
        let (cdrom, bus, read_only, tray_open) = match &d.device {
            DiskDevice::Disk { bus, read_only } => (false, *bus, *read_only, false),
            DiskDevice::Cdrom {
                bus,
                read_only,
                tray_open,
            } => (true, *bus, *read_only, *tray_open),
        };
        let (file, format, read_only) = match &d.source {
            VolumeSource::ContainerDisk { path, .. } => {
                let rootfs = if images.compute_volume.as_deref() == Some(d.name.as_str()) {
                    sources.compute_rootfs
                } else {
                    sources.container_rootfs(&pod::volume_container(&d.name), &d.name)?
                };
                let image = disk::container_disk_file(rootfs, path.as_deref(), &d.name)?;
                let info = disk::inspect(&image, &d.name)?;
                // The overlay names the image by its read-only bind in the VM's folder.
                let base = disks_dir.join(format!("{}.base", d.name));
                exposed::bind_file(&image, &base, true, ids, &d.name)?;
                let overlay = disks_dir.join(format!("{}.qcow2", d.name));
                let _ = std::fs::remove_file(&overlay);
                disk::create_overlay(&base, info.format, &overlay).map_err(|e| Error::Disk {
                    disk: d.name.clone(),
                    message: format!(
                        "creating the copy-on-write overlay in {}: {e}",
                        disks_dir.display()
                    ),
                })?;
                (overlay, "qcow2", read_only)
            }
            VolumeSource::CloudInit(ci) => {
                let iso = disks_dir.join(format!("{}.iso", d.name));
                // The SSH keys whose propagation method is this disk's kind.
                let mut public_keys = Vec::new();
                for (i, keys) in config.ssh_keys.iter().enumerate() {
                    if keys.format != ci.format {
                        continue;
                    }
                    let volume = pod::ssh_keys_volume(i);
                    let dir = sources.volume_dir(&volume).ok_or_else(|| Error::Disk {
                        disk: d.name.clone(),
                        message: format!(
                            "the SSH key Secret {:?} is not mounted into the pod (volume {volume})",
                            keys.secret
                        ),
                    })?;
                    public_keys.extend(cloudinit::read_public_keys(&dir, &d.name)?);
                }
                let identity = cloudinit::Identity {
                    instance_id: format!("{}.{}", identity.name, identity.namespace),
                    hostname: pod::guest_hostname(&identity.name, config.hostname.as_deref()),
                    public_keys,
                };
                let secret_dir = |volume: &str| sources.volume_dir(volume);
                cloudinit::build_iso(
                    ci,
                    &identity,
                    &secret_dir,
                    &disks_dir.join(format!("{}.d", d.name)),
                    &iso,
                    &d.name,
                )?;
                // Attached as the user asked, like KubeVirt: a read-only SATA disk does not exist.
                (iso, "raw", read_only)
            }
            VolumeSource::EmptyDisk { capacity } => {
                let dir = sources.volume_dir(&d.name).ok_or_else(|| Error::Disk {
                    disk: d.name.clone(),
                    message: "its emptyDir volume is not mounted into compute".into(),
                })?;
                let file = dir.join("disk.qcow2");
                disk::create_blank(&file, *capacity)?;
                let shown = disks_dir.join(format!("{}.empty", d.name));
                exposed::bind_file(&file, &shown, false, ids, &d.name)?;
                (shown, "qcow2", read_only)
            }
            VolumeSource::PersistentVolumeClaim {
                read_only: pvc_read_only,
                ..
            } => {
                let read_only = read_only || *pvc_read_only;
                // Filesystem mode: a mounted folder holding disk.img. Block mode: a device the
                // kubelet gave compute at VOLUME_DEVICE_ROOT/<volume>.
                if let Some(dir) = sources.volume_dir(&d.name) {
                    // A blank claim gets its disk.img made, as in KubeVirt; not a read-only one.
                    let existing = dir.join(pod::PVC_DISK_FILE).symlink_metadata().is_ok();
                    if !existing && !read_only {
                        let capacity = sources.claim_capacities.get(&d.name).copied();
                        disk::create_pvc_disk(&dir, capacity, &d.name)?;
                    }
                    let (file, _) =
                        disk::resolve_in_root(&dir, &format!("/{}", pod::PVC_DISK_FILE), &d.name)?;
                    let shown = disks_dir.join(format!("{}.img", d.name));
                    exposed::bind_file(&file, &shown, read_only, ids, &d.name)?;
                    (shown, "raw", read_only)
                } else if let Some(device) =
                    sources
                        .compute_devices
                        .get(&format!("{}/{}", pod::VOLUME_DEVICE_ROOT, d.name))
                {
                    let node = disks_dir.join(format!("{}.block", d.name));
                    disk::device_node(&node, *device, &d.name)?;
                    block_devices.insert(d.name.clone());
                    (node, "raw", read_only)
                } else {
                    return Err(Error::Disk {
                        disk: d.name.clone(),
                        message: format!(
                            "its PersistentVolumeClaim is neither mounted into compute at {}/{} nor a device at {}/{}",
                            pod::VOLUME_MOUNT_ROOT, d.name, pod::VOLUME_DEVICE_ROOT, d.name
                        ),
                    });
                }
            }
        };
        disks.push(ResolvedDisk {
            name: d.name.clone(),
            cdrom,
            tray_open,
            bus,
            read_only,
            file: file.to_string_lossy().into_owned(),
            block_device: block_devices.contains(&d.name),
            format,
            serial: d.serial.clone(),
            boot_order: d.boot_order,
        });
    }

    let kernel = match &config.kernel_boot {
        None => None,
        Some(kb) => {
            let rootfs = if images.compute_has_kernel {
                sources.compute_rootfs
            } else {
                sources.container_rootfs(pod::KERNEL_BOOT_CONTAINER, "kernelBoot")?
            };
            // Shown to QEMU under names no disk can have (volume names are DNS labels).
            let resolve = |p: &Option<String>, shown: &str| -> Result<Option<String>> {
                p.as_deref()
                    .map(|p| {
                        let (file, _) = disk::resolve_in_root(rootfs, p, "kernelBoot")?;
                        let shown = disks_dir.join(shown);
                        exposed::bind_file(&file, &shown, true, ids, "kernelBoot")?;
                        Ok(shown.to_string_lossy().into_owned())
                    })
                    .transpose()
            };
            Some(ResolvedKernel {
                kernel: resolve(&kb.kernel_path, "_kernel")?,
                initrd: resolve(&kb.initrd_path, "_initrd")?,
                cmdline: kb.kernel_args.clone(),
            })
        }
    };

    Ok(DomainPlan {
        name: identity.domain_name(),
        uuid: config.firmware_uuid.to_string(),
        memory_kib: config.memory.kib(),
        cpu: config.cpu,
        cpu_model: config.cpu_model.clone(),
        accel,
        tb_cache_mib: match accel {
            Accel::Tcg => crate::accel::tb_cache_mib(),
            Accel::Kvm => None,
        },
        machine: config.machine_type.clone(),
        acpi: config.acpi,
        smm: config.smm,
        bootloader: config.bootloader.clone(),
        kernel,
        smbios_serial: config.firmware_serial.clone(),
        disks,
        nics: nic
            .map(|n| DomainNic {
                name: n.name.clone(),
                bridge: network::BRIDGE.to_owned(),
                mac: virtshim_api::config::MacAddress(n.guest_mac).to_string(),
                model: n.model.as_str(),
                mtu: n.pod.mtu,
            })
            .into_iter()
            .collect(),
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

#[cfg(test)]
mod tests {
    use super::*;

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
