//! The host files QEMU opens, shown to it inside the VM's own folder.
//!
//! QEMU runs as the VM's own unprivileged user (see `qemu_ids`), and the VM's folder (`disks/`
//! of the pod) is the only one that user owns. What QEMU needs from elsewhere — a
//! containerDisk's image and a kernel inside a container's root filesystem, a PVC's `disk.img`,
//! an emptyDisk on its emptyDir — is bind-mounted into that folder, read-only unless the VM
//! writes it, so QEMU never needs to traverse the kubelet's or containerd's folders (which its
//! user cannot) and sees no other file of theirs. libvirt's DAC driver gives each disk to the
//! VM's user as it starts QEMU; on a read-only bind that fails harmlessly (EROFS), so an image
//! in a container's root filesystem is never changed, and must be readable by anyone.

use crate::error::{Error, Result};
use crate::qemu_ids::QemuIds;
use nix::mount::{MntFlags, MsFlags};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

/// Makes `dir` the VM user's own folder: only that user (and root) may enter it.
pub fn own_dir(dir: &Path, ids: QemuIds) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::path("creating the VM's folder", dir, e))?;
    nix::unistd::chown(
        dir,
        Some(nix::unistd::Uid::from_raw(ids.uid)),
        Some(nix::unistd::Gid::from_raw(ids.gid)),
    )
    .map_err(|e| Error::path("giving the VM's folder to its QEMU user", dir, e.into()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| Error::path("restricting the VM's folder", dir, e))
}

/// Whether QEMU running as `ids` may read `path` by its mode bits.
fn readable_by(meta: &std::fs::Metadata, ids: QemuIds) -> bool {
    let mode = meta.mode();
    mode & 0o004 != 0
        || (meta.gid() == ids.gid && mode & 0o040 != 0)
        || (meta.uid() == ids.uid && mode & 0o400 != 0)
}

/// Bind-mounts the file `source` at `target` (a new file in the VM's folder), read-only when
/// asked. A read-only file must already be readable by QEMU's user: it will not be changed.
pub fn bind_file(
    source: &Path,
    target: &Path,
    read_only: bool,
    ids: QemuIds,
    disk: &str,
) -> Result<()> {
    let meta = std::fs::metadata(source).map_err(|e| Error::Disk {
        disk: disk.to_owned(),
        message: format!("{}: {e}", source.display()),
    })?;
    if read_only && !readable_by(&meta, ids) {
        return Err(Error::Disk {
            disk: disk.to_owned(),
            message: format!(
                "the file is not readable by QEMU's unprivileged user (mode {:04o}, owner {}:{}): make it readable by all (chmod a+r) in the image",
                meta.mode() & 0o7777,
                meta.uid(),
                meta.gid()
            ),
        });
    }
    unbind(target);
    let _ = std::fs::remove_file(target);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(target)
        .map_err(|e| Error::path("creating a mount point for QEMU", target, e))?;
    let failed = |e: nix::errno::Errno| Error::Disk {
        disk: disk.to_owned(),
        message: format!(
            "bind-mounting {} at {}: {e}",
            source.display(),
            target.display()
        ),
    };
    nix::mount::mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(failed)?;
    if read_only {
        // A bind mount takes the read-only flag only on a remount.
        let remounted = nix::mount::mount(
            None::<&str>,
            target,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None::<&str>,
        );
        if let Err(e) = remounted {
            unbind(target);
            return Err(failed(e));
        }
    }
    Ok(())
}

fn unbind(target: &Path) {
    // EINVAL: not a mount point; ENOENT: not there.
    let _ = nix::mount::umount2(target, MntFlags::MNT_DETACH);
}

/// Removes the VM's folder: every bind mount in it is detached first, so that removing the
/// folder can never reach into a volume.
pub fn remove_dir(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            unbind(&entry.path());
        }
    }
    if let Err(e) = std::fs::remove_dir_all(dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(path = %dir.display(), error = %e, "cannot remove the VM's folder");
        }
    }
}
