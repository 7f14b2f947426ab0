//! The unprivileged user and group each VM's QEMU runs as: its own, one per pod.
//!
//! QEMU is what a guest attacks. A guest that escapes it gets QEMU's uid; with one uid per VM it
//! can reach its own VM's files and nothing of another VM's (one shared `qemu` user, as in
//! KubeVirt, relies on each launcher pod's mount namespace and SELinux categories to keep VMs
//! apart, which a QEMU started from the shim on the host does not have). The ids come from a
//! range no login user has (`VIRTSHIM_QEMU_ID_BASE`, default [`DEFAULT_BASE`], [`COUNT`] ids)
//! and need no entry in `/etc/passwd`: libvirt takes numeric ids (`+N`).
//!
//! A claim is a file `<claims>/<uid>` created exclusively and holding the claiming pod's run
//! folder; it is released when the pod's sandbox is deleted. A claim whose pod folder is gone
//! (the shim died and the cleanup did not run) is taken over.

use crate::error::{Error, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The first id of the range: above the 32-bit ids of login users and of the subordinate id
/// ranges `useradd` hands out (from 100000, 65536 per user).
pub const DEFAULT_BASE: u32 = 3_800_000_000;
/// How many VMs a node can run at once.
pub const COUNT: u32 = 65_536;

/// Where the claims are: node-wide, whatever run folder a shim was given, so that two
/// containerds on one node never hand out the same id.
pub const CLAIMS_DIR: &str = "/run/virtshim-qemu-ids";

/// A VM's QEMU user and group: the user its own; the group `/dev/kvm`'s where the node has one
/// (see [`group`]), else the user's number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QemuIds {
    pub uid: u32,
    pub gid: u32,
}

fn base() -> u32 {
    std::env::var("VIRTSHIM_QEMU_ID_BASE")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .filter(|b| *b >= 1000 && b.checked_add(COUNT).is_some())
        .unwrap_or(DEFAULT_BASE)
}

/// Claims an id for the pod whose run folder is `pod_dir` (the same id again if it holds one).
pub fn claim(pod_dir: &Path) -> Result<QemuIds> {
    let ids = claim_in(Path::new(CLAIMS_DIR), base(), pod_dir)?;
    Ok(QemuIds {
        gid: group().unwrap_or(ids.gid),
        ..ids
    })
}

/// The ids QEMU's capabilities are probed with (libvirt keeps the answer only for a user with
/// the same access to `/dev/kvm`, so any VM's id will do).
pub fn for_probing() -> QemuIds {
    let id = base();
    QemuIds {
        uid: id,
        gid: group().unwrap_or(id),
    }
}

/// `/dev/kvm`'s group. QEMU opens `/dev/kvm` with KVM, and libvirt adds no supplementary
/// groups to a numeric user. It is given under TCG too: libvirt judges its cached QEMU
/// capabilities by whether QEMU's user may open `/dev/kvm`, while it probes them with QEMU's
/// `-runas` (which opens it as root first); without access every start found the cache stale
/// and probed again, for a minute. A VM's files stay its user's own (mode 0700 folders), so
/// sharing the group shares nothing else.
fn group() -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/dev/kvm").ok().map(|m| m.gid())
}

/// Releases the pod's claim, if any.
pub fn release(pod_dir: &Path) {
    release_in(Path::new(CLAIMS_DIR), pod_dir)
}

fn own_file(pod_dir: &Path) -> PathBuf {
    pod_dir.join(virtshim_wire::node::QEMU_ID_FILE)
}

fn claim_in(claims: &Path, base: u32, pod_dir: &Path) -> Result<QemuIds> {
    if let Some(id) = std::fs::read_to_string(own_file(pod_dir))
        .ok()
        .and_then(|t| t.trim().parse::<u32>().ok())
    {
        if held_by(claims, id).as_deref() == Some(pod_dir) {
            return Ok(QemuIds { uid: id, gid: id });
        }
    }
    std::fs::create_dir_all(claims)
        .map_err(|e| Error::path("creating the QEMU id claims", claims, e))?;
    // Start where the pod's folder name hashes to: concurrent pods rarely probe the same ids.
    let start = pod_dir
        .to_string_lossy()
        .bytes()
        .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)))
        % COUNT;
    for step in 0..COUNT {
        let id = base + (start + step) % COUNT;
        let path = claims.join(id.to_string());
        let mut tries = 0;
        loop {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut file) => {
                    file.write_all(pod_dir.to_string_lossy().as_bytes())
                        .map_err(|e| Error::path("writing a QEMU id claim", &path, e))?;
                    std::fs::write(own_file(pod_dir), id.to_string())
                        .map_err(|e| Error::path("recording the pod's QEMU id", pod_dir, e))?;
                    return Ok(QemuIds { uid: id, gid: id });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && tries == 0 => {
                    // Taken; taken over when its pod is gone.
                    tries += 1;
                    match held_by(claims, id) {
                        Some(holder) if !holder.exists() => {
                            tracing::info!(id, holder = %holder.display(), "taking over a QEMU id whose pod is gone");
                            let _ = std::fs::remove_file(&path);
                        }
                        _ => break,
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => break,
                Err(e) => return Err(Error::path("claiming a QEMU id", &path, e)),
            }
        }
    }
    Err(Error::FailedPrecondition(format!(
        "all {COUNT} QEMU ids from {base} are in use on this node"
    )))
}

fn held_by(claims: &Path, id: u32) -> Option<PathBuf> {
    std::fs::read_to_string(claims.join(id.to_string()))
        .ok()
        .map(PathBuf::from)
}

fn release_in(claims: &Path, pod_dir: &Path) {
    let Some(id) = std::fs::read_to_string(own_file(pod_dir))
        .ok()
        .and_then(|t| t.trim().parse::<u32>().ok())
    else {
        return;
    };
    if held_by(claims, id).as_deref() == Some(pod_dir) {
        let _ = std::fs::remove_file(claims.join(id.to_string()));
    }
    let _ = std::fs::remove_file(own_file(pod_dir));
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn pods_get_their_own_ids_until_they_release_them() {
        let tmp = tempfile::tempdir().unwrap();
        let claims = tmp.path().join("claims");
        let pod = |n: &str| {
            let dir = tmp.path().join(n);
            std::fs::create_dir_all(&dir).unwrap();
            dir
        };
        let (a, b) = (pod("a"), pod("b"));
        let ida = claim_in(&claims, 5000, &a).unwrap();
        let idb = claim_in(&claims, 5000, &b).unwrap();
        assert_ne!(ida, idb);
        assert!((5000..5000 + COUNT).contains(&ida.uid));
        assert_eq!(ida.uid, ida.gid);
        // Claiming again keeps the id.
        assert_eq!(claim_in(&claims, 5000, &a).unwrap(), ida);
        release_in(&claims, &a);
        assert!(!claims.join(ida.uid.to_string()).exists());
        // A claim whose pod folder is gone is taken over by the next pod hashing there.
        std::fs::write(
            claims.join(idb.uid.to_string()),
            tmp.path().join("gone").to_string_lossy().as_bytes(),
        )
        .unwrap();
        std::fs::remove_file(b.join("qemu-id")).unwrap();
        let again = claim_in(&claims, 5000, &b).unwrap();
        assert_eq!(again, idb, "the same folder hashes to the same first id");
    }
}
