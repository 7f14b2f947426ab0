//! Disks: finding a disk file inside a container's root filesystem without ever leaving it,
//! refusing images whose headers point at other files, and creating the copy-on-write overlay
//! the VM writes to (the image itself is never written).

use crate::bundle::BlockDevice;
use crate::command::run;
use crate::error::{Error, Result};
use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstat, Mode, SFlag};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// Opens `path` below `root` as if `root` were `/`, following no symlink at all and staying on
/// the root's mount; returns the file's real host path. A hostile image can hold symlinks to
/// host files (`/disk/x.img -> /etc/shadow`); those fail here with a clear error.
pub fn resolve_in_root(root: &Path, path: &str, disk: &str) -> Result<(PathBuf, SFlag)> {
    let root_fd: OwnedFd = nix::fcntl::open(
        root,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::Disk {
        disk: disk.to_owned(),
        message: format!("cannot open the image root {}: {e}", root.display()),
    })?;
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
        .resolve(
            ResolveFlag::RESOLVE_IN_ROOT
                | ResolveFlag::RESOLVE_NO_SYMLINKS
                | ResolveFlag::RESOLVE_NO_MAGICLINKS
                | ResolveFlag::RESOLVE_NO_XDEV,
        );
    let relative = path.trim_start_matches('/');
    let fd = nix::fcntl::openat2(&root_fd, relative, how).map_err(|e| Error::Disk {
        disk: disk.to_owned(),
        message: match e {
            nix::errno::Errno::ELOOP => {
                format!("{path} is or passes through a symlink, which is not allowed")
            }
            nix::errno::Errno::EXDEV => format!("{path} leaves the image's file system"),
            nix::errno::Errno::ENOENT => format!("{path} does not exist in the image"),
            other => format!("{path}: {other}"),
        },
    })?;
    let kind = SFlag::from_bits_truncate(
        fstat(&fd)
            .map_err(|e| Error::Disk {
                disk: disk.to_owned(),
                message: format!("{path}: {e}"),
            })?
            .st_mode,
    ) & SFlag::S_IFMT;
    let real = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).map_err(|e| {
        Error::Disk {
            disk: disk.to_owned(),
            message: format!("{path}: {e}"),
        }
    })?;
    let canonical_root = std::fs::canonicalize(root)
        .map_err(|e| Error::path("resolving the image root", root, e))?;
    if !real.starts_with(&canonical_root) {
        return Err(Error::Disk {
            disk: disk.to_owned(),
            message: format!("{path} resolves outside the image"),
        });
    }
    Ok((real, kind))
}

/// The containerDisk's file: `path` if given, else the only file under `/disk`.
pub fn container_disk_file(rootfs: &Path, path: Option<&str>, disk: &str) -> Result<PathBuf> {
    let path = match path {
        Some(p) => p.to_owned(),
        None => {
            let (dir, kind) = resolve_in_root(rootfs, "/disk", disk)?;
            if kind != SFlag::S_IFDIR {
                return Err(Error::Disk {
                    disk: disk.to_owned(),
                    message: "/disk in the image is not a folder".into(),
                });
            }
            let mut files: Vec<String> = std::fs::read_dir(&dir)
                .map_err(|e| Error::path("listing /disk in the image", &dir, e))?
                .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
                .collect();
            files.sort();
            match files.as_slice() {
                [one] => format!("/disk/{one}"),
                [] => {
                    return Err(Error::Disk {
                        disk: disk.to_owned(),
                        message: "the image has no file under /disk".into(),
                    })
                }
                many => {
                    return Err(Error::Disk {
                        disk: disk.to_owned(),
                        message: format!(
                            "the image has {} files under /disk; name one with containerDisk.path",
                            many.len()
                        ),
                    })
                }
            }
        }
    };
    let (real, kind) = resolve_in_root(rootfs, &path, disk)?;
    if kind != SFlag::S_IFREG {
        return Err(Error::Disk {
            disk: disk.to_owned(),
            message: format!("{path} is not a regular file"),
        });
    }
    Ok(real)
}

/// What `qemu-img info` says of an image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageInfo {
    pub format: &'static str,
    pub virtual_size: u64,
}

/// Inspects an image and refuses anything but a self-contained qcow2 or raw file: a qcow2
/// whose backing file or data file names a host path would make QEMU open that path.
pub fn inspect(file: &Path, disk: &str) -> Result<ImageInfo> {
    let json = run(
        "qemu-img",
        &[
            "info".as_ref(),
            "--output=json".as_ref(),
            "-U".as_ref(),
            file.as_os_str(),
        ],
    )?;
    let info: serde_json::Value = serde_json::from_str(&json).map_err(|e| Error::Disk {
        disk: disk.to_owned(),
        message: format!("qemu-img info: {e}"),
    })?;
    let format = match info["format"].as_str() {
        Some("qcow2") => "qcow2",
        Some("raw") => "raw",
        other => {
            return Err(Error::Disk {
                disk: disk.to_owned(),
                message: format!("image format {other:?} is not qcow2 or raw"),
            })
        }
    };
    if info.get("backing-filename").is_some() || info.get("full-backing-filename").is_some() {
        return Err(Error::Disk {
            disk: disk.to_owned(),
            message: "the image has a backing file, which is not allowed".into(),
        });
    }
    if info["format-specific"]["data"].get("data-file").is_some() {
        return Err(Error::Disk {
            disk: disk.to_owned(),
            message: "the image has an external data file, which is not allowed".into(),
        });
    }
    let virtual_size = info["virtual-size"].as_u64().unwrap_or(0);
    Ok(ImageInfo {
        format,
        virtual_size,
    })
}

/// Creates a qcow2 overlay on top of a read-only image; the VM writes only to the overlay.
pub fn create_overlay(backing: &Path, backing_format: &str, overlay: &Path) -> Result<()> {
    run(
        "qemu-img",
        &[
            "create".as_ref(),
            "-q".as_ref(),
            "-f".as_ref(),
            "qcow2".as_ref(),
            "-F".as_ref(),
            backing_format.as_ref(),
            "-b".as_ref(),
            backing.as_os_str(),
            overlay.as_os_str(),
        ],
    )
    .map(|_| ())
}

/// Creates a blank sparse qcow2 disk unless it exists already (an emptyDisk survives restarts
/// of the container within the pod, as its emptyDir does).
pub fn create_blank(file: &Path, bytes: u64) -> Result<()> {
    if file.exists() {
        return Ok(());
    }
    let tmp = file.with_extension("tmp");
    run(
        "qemu-img",
        &[
            "create".as_ref(),
            "-q".as_ref(),
            "-f".as_ref(),
            "qcow2".as_ref(),
            tmp.as_os_str(),
            bytes.to_string().as_ref(),
        ],
    )?;
    std::fs::rename(&tmp, file).map_err(|e| Error::path("creating the empty disk", file, e))
}

/// KubeVirt's default share of a volume that its file system takes for itself
/// (`filesystemOverhead` of CDI's config, 5.5%).
const FILESYSTEM_OVERHEAD_PERMILLE: u64 = 55;
/// How much smaller than wanted a new PVC disk may be before creating it fails (KubeVirt's
/// `lessPVCSpaceToleration`, 10%).
const LESS_SPACE_TOLERATION_PERCENT: u64 = 10;
const MIB: u64 = 1 << 20;

/// The size of a new `disk.img` on a file system of `total` bytes with `available` free, as
/// KubeVirt sizes one on a blank filesystem-mode PVC: the volume less the file system's overhead,
/// shrunk to what is free when that is within the toleration, in whole MiB.
pub fn pvc_disk_size(total: u64, available: u64) -> std::result::Result<u64, String> {
    let wanted = total / 1000 * (1000 - FILESYSTEM_OVERHEAD_PERMILLE);
    let size = if available >= wanted {
        wanted
    } else if (wanted - available) * 100 <= wanted * LESS_SPACE_TOLERATION_PERCENT {
        available
    } else {
        return Err(format!(
            "not enough space on the PersistentVolumeClaim for a new {}: {} MiB free of the {} MiB wanted",
            PVC_DISK,
            available / MIB,
            wanted / MIB
        ));
    };
    let size = size / MIB * MIB;
    if size == 0 {
        return Err("the PersistentVolumeClaim is too small for a disk".to_owned());
    }
    Ok(size)
}

const PVC_DISK: &str = virtshim_api::pod::PVC_DISK_FILE;

/// Creates a sparse raw `disk.img` in a blank filesystem-mode PVC mounted at `dir`, as KubeVirt
/// does, so that a fresh claim can be a VM's data disk. Never replaces a file: `create_new`
/// refuses an existing name, a symlink planted there included.
///
/// `capacity` is the claim's (from the pod contract); without it, the file system's size.
pub fn create_pvc_disk(dir: &Path, capacity: Option<u64>, disk: &str) -> Result<PathBuf> {
    let fail = |message: String| Error::Disk {
        disk: disk.to_owned(),
        message,
    };
    let stat =
        nix::sys::statvfs::statvfs(dir).map_err(|e| fail(format!("{}: {e}", dir.display())))?;
    let frsize = stat.fragment_size();
    let file_system = stat.blocks().saturating_mul(frsize);
    let size = pvc_disk_size(
        capacity.map_or(file_system, |c| c.min(file_system)),
        stat.blocks_available().saturating_mul(frsize),
    )
    .map_err(fail)?;
    let file = dir.join(PVC_DISK);
    // Another pod on a shared claim may win the race: its disk is left alone.
    let created = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&file)
        .map_err(|e| fail(format!("creating {}: {e}", file.display())))?;
    if let Err(e) = created.set_len(size) {
        // Ours, and still empty: nothing of the guest's is lost.
        let _ = std::fs::remove_file(&file);
        return Err(fail(format!("sizing {}: {e}", file.display())));
    }
    tracing::info!(
        disk,
        size_mib = size / MIB,
        "created disk.img on a blank PersistentVolumeClaim"
    );
    Ok(file)
}

/// Makes a block device node for `device` at `node`, for QEMU to open.
///
/// The kubelet gives a block PVC to the container as a device in its OCI spec (type, major,
/// minor, created inside the container by runc for ordinary runtimes). QEMU runs on the host, so
/// the shim makes the same node in the pod's own folder instead of guessing a host path.
pub fn device_node(node: &Path, device: BlockDevice, disk: &str) -> Result<()> {
    let _ = std::fs::remove_file(node);
    nix::sys::stat::mknod(
        node,
        SFlag::S_IFBLK,
        Mode::from_bits_truncate(0o600),
        nix::sys::stat::makedev(device.major, device.minor),
    )
    .map_err(|e| Error::Disk {
        disk: disk.to_owned(),
        message: format!(
            "making block device node {}:{} at {}: {e}",
            device.major,
            device.minor,
            node.display()
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pvc_disks_are_sized_as_kubevirt_sizes_them() {
        const GIB: u64 = 1 << 30;
        // A 10 GiB claim, empty: 94.5% of it, in whole MiB.
        assert_eq!(pvc_disk_size(10 * GIB, 10 * GIB), Ok(9676 * MIB));
        // A little short of that (within 10%): what is free.
        assert_eq!(pvc_disk_size(10 * GIB, 9 * GIB), Ok(9 * GIB));
        // Far short: refused, saying how much.
        let err = pvc_disk_size(10 * GIB, 5 * GIB).unwrap_err();
        assert!(
            err.contains("5120 MiB free of the 9676 MiB wanted"),
            "{err}"
        );
        assert!(pvc_disk_size(MIB / 2, MIB / 2).is_err());
    }
}
