//! Mounting a container's root filesystem (the snapshot mounts containerd sends) on the
//! bundle's `rootfs`, where the shim reads the disk images and kernels from. Mounted directly
//! with mount(2): containerd-shim's helper forks and waits through a reaper this shim does not
//! run (the shim reaps only QEMU).

use crate::error::{Error, Result};
use nix::mount::MsFlags;
use std::path::Path;

/// A mount of the root filesystem, as containerd sends it.
#[derive(Clone, Debug)]
pub struct RootfsMount {
    pub kind: String,
    pub source: String,
    pub options: Vec<String>,
}

/// Splits mount options into flags and the data string the file system gets.
fn parse_options(options: &[String]) -> (MsFlags, String) {
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    for option in options {
        let (set, clear) = match option.as_str() {
            "ro" => (MsFlags::MS_RDONLY, MsFlags::empty()),
            "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY),
            "bind" => (MsFlags::MS_BIND, MsFlags::empty()),
            "rbind" => (MsFlags::MS_BIND | MsFlags::MS_REC, MsFlags::empty()),
            "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty()),
            "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID),
            "nodev" => (MsFlags::MS_NODEV, MsFlags::empty()),
            "dev" => (MsFlags::empty(), MsFlags::MS_NODEV),
            "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty()),
            "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC),
            "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty()),
            "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty()),
            "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
            "remount" => (MsFlags::MS_REMOUNT, MsFlags::empty()),
            "defaults" => (MsFlags::empty(), MsFlags::empty()),
            other => {
                data.push(other.to_owned());
                continue;
            }
        };
        flags.insert(set);
        flags.remove(clear);
    }
    (flags, data.join(","))
}

/// The kernel takes at most a page of mount data.
const MAX_DATA: usize = 4096;

pub fn mount(mounts: &[RootfsMount], target: &Path) -> Result<()> {
    std::fs::create_dir_all(target)
        .map_err(|e| Error::path("creating the rootfs folder", target, e))?;
    for m in mounts {
        let (flags, data) = parse_options(&m.options);
        if data.len() >= MAX_DATA {
            return Err(Error::invalid(
                "rootfs mount",
                format!(
                    "{} bytes of mount options; the image has too many layers",
                    data.len()
                ),
            ));
        }
        let kind = if m.kind.is_empty() {
            None
        } else {
            Some(m.kind.as_str())
        };
        let data = if data.is_empty() {
            None
        } else {
            Some(data.as_str())
        };
        nix::mount::mount(Some(m.source.as_str()), target, kind, flags, data).map_err(|e| {
            Error::io(
                format!(
                    "mounting the container's root filesystem ({}) on {}",
                    m.kind,
                    target.display()
                ),
                e.into(),
            )
        })?;
    }
    Ok(())
}

pub fn unmount(target: &Path) {
    loop {
        match nix::mount::umount2(target, nix::mount::MntFlags::MNT_DETACH) {
            Ok(()) => continue,
            Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => break,
            Err(e) => {
                tracing::warn!(path = %target.display(), error = %e, "cannot unmount the root filesystem");
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_split_into_flags_and_data() {
        let opts: Vec<String> = ["ro", "nodev", "lowerdir=/a:/b", "index=off"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let (flags, data) = parse_options(&opts);
        assert_eq!(flags, MsFlags::MS_RDONLY | MsFlags::MS_NODEV);
        assert_eq!(data, "lowerdir=/a:/b,index=off");
        let (flags, _) = parse_options(&["ro".to_string(), "rw".to_string()]);
        assert_eq!(flags, MsFlags::empty());
    }
}
