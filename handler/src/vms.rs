//! Finding the VMs that run on this node.
//!
//! The shim writes `state.json` into each pod's run folder while the VM runs (the node contract
//! in `virtshim_wire::node`); the console and VNC sockets are beside it. The sockets' paths are
//! derived from the folder, never taken from the record, and a VMI is matched by namespace, name
//! and UID, so a recreated VMI of the same name is never confused with the old one.

use std::path::{Path, PathBuf};
use virtshim_wire::node::{self, PodState, VmiRecord};

/// A VM running on this node.
#[derive(Clone, Debug)]
pub struct LocalVm {
    pub vmi: VmiRecord,
    pub sandbox_id: String,
    /// The compute container: the containerd task that is the VM.
    pub container_id: String,
    /// Where the guest answers on the pod network (see `PodState::pod_ip`).
    pub pod_ip: Option<std::net::IpAddr>,
    dir: PathBuf,
}

impl LocalVm {
    pub fn console_socket(&self) -> PathBuf {
        self.dir.join(node::CONSOLE_SOCKET)
    }
    pub fn vnc_socket(&self) -> PathBuf {
        self.dir.join(node::QEMU_DIR).join(node::VNC_SOCKET)
    }

    /// Connects to QEMU's VNC socket. It lives in a folder QEMU's user owns, so QEMU (a guest
    /// that escaped into it) could put a symlink or a hard link there in its place, to make the
    /// handler, root, connect to another socket of the node (containerd's, say) on the user's
    /// behalf. So the path is opened without following symlinks, must be a socket of the VM's
    /// own QEMU user, and is connected to through that very open file.
    pub fn connect_vnc(&self) -> std::io::Result<std::os::unix::net::UnixStream> {
        use rustix::fs::{FileType, Mode, OFlags};
        let path = self.vnc_socket();
        let fd = rustix::fs::open(
            &path,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let stat = rustix::fs::fstat(&fd)?;
        if FileType::from_raw_mode(stat.st_mode) != FileType::Socket {
            return Err(std::io::Error::other(format!(
                "{} is not a socket",
                path.display()
            )));
        }
        let uid = std::fs::read_to_string(self.dir.join(node::QEMU_ID_FILE))
            .ok()
            .and_then(|t| t.trim().parse::<u32>().ok());
        if uid != Some(stat.st_uid) {
            return Err(std::io::Error::other(format!(
                "{} belongs to uid {}, not to the VM's QEMU user {uid:?}",
                path.display(),
                stat.st_uid
            )));
        }
        use std::os::fd::AsRawFd;
        std::os::unix::net::UnixStream::connect(format!("/proc/self/fd/{}", fd.as_raw_fd()))
    }
}

/// Why a VMI has no VM here.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LookupError {
    #[error("virtualmachineinstance {namespace}/{name} is not running on this node")]
    NotHere { namespace: String, name: String },
    #[error("virtualmachineinstance {namespace}/{name} runs here with UID {found}, not {wanted}")]
    OtherUid {
        namespace: String,
        name: String,
        found: String,
        wanted: String,
    },
}

/// The VMs under one run directory.
#[derive(Clone, Debug)]
pub struct VmIndex {
    run_dir: PathBuf,
}

impl VmIndex {
    pub fn new(run_dir: impl Into<PathBuf>) -> Self {
        Self {
            run_dir: run_dir.into(),
        }
    }

    /// Every VM with a readable record. A folder whose record is missing or unreadable (a pod
    /// starting or stopping) is skipped.
    pub fn list(&self) -> Vec<LocalVm> {
        let Ok(entries) = std::fs::read_dir(self.run_dir.join(node::PODS_SUBDIR)) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|entry| read_vm(&entry.path()))
            .collect()
    }

    /// The VM of VMI `namespace/name`, and with `uid` when given.
    pub fn find(
        &self,
        namespace: &str,
        name: &str,
        uid: Option<&str>,
    ) -> Result<LocalVm, LookupError> {
        let mut named = self
            .list()
            .into_iter()
            .filter(|vm| vm.vmi.namespace == namespace && vm.vmi.name == name);
        let first = named.next().ok_or_else(|| LookupError::NotHere {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        })?;
        let Some(uid) = uid else {
            return Ok(first);
        };
        std::iter::once(first.clone())
            .chain(named)
            .find(|vm| vm.vmi.uid == uid)
            .ok_or_else(|| LookupError::OtherUid {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                found: first.vmi.uid,
                wanted: uid.to_owned(),
            })
    }
}

fn read_vm(dir: &Path) -> Option<LocalVm> {
    let text = std::fs::read_to_string(dir.join(node::STATE_FILE)).ok()?;
    let state: PodState = serde_json::from_str(&text).ok()?;
    let vmi = state.vmi?;
    // The VMI's identity comes from the pod's annotation; the pod's from containerd. A record
    // without the pod's (written by a shim older than this check) or naming another namespace
    // than the pod's is not served: it could be a pod posing as another namespace's VMI.
    match &state.pod {
        Some(pod) if pod.namespace == vmi.namespace => {}
        other => {
            tracing::warn!(
                dir = %dir.display(),
                vmi = %format!("{}/{}", vmi.namespace, vmi.name),
                pod = ?other,
                "not serving a VM whose VMI is not of its pod's namespace"
            );
            return None;
        }
    }
    Some(LocalVm {
        vmi,
        sandbox_id: state.sandbox_id,
        container_id: state.container_id,
        pod_ip: state.pod_ip,
        dir: dir.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn write(run: &Path, short: &str, json: &str) {
        let dir = run.join("p").join(short);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("state.json"), json).unwrap();
    }

    fn record(ns: &str, name: &str, uid: &str, container: &str) -> String {
        format!(
            r#"{{"qemu_pid":1,"domain":"d","embed_root":"/x","vmi":{{"namespace":"{ns}","name":"{name}","uid":"{uid}"}},"pod":{{"namespace":"{ns}","name":"virt-launcher-{name}-abcde","uid":"p-{uid}"}},"sandbox_id":"s","container_id":"{container}"}}"#
        )
    }

    #[test]
    fn finds_by_namespace_name_and_uid() {
        let run = tempfile::tempdir().unwrap();
        write(run.path(), "aaaa", &record("default", "web", "u1", "c1"));
        write(run.path(), "bbbb", &record("other", "web", "u2", "c2"));
        write(run.path(), "cccc", "not json");
        write(
            run.path(),
            "dddd",
            r#"{"qemu_pid":1,"domain":"d","embed_root":"/x"}"#,
        );
        // A pod in namespace "attacker" whose annotation claims VMI default/web.
        write(
            run.path(),
            "eeee",
            &record("default", "web", "u1", "evil").replace(
                r#""pod":{"namespace":"default""#,
                r#""pod":{"namespace":"attacker""#,
            ),
        );
        // A record without the pod's identity.
        write(
            run.path(),
            "ffff",
            r#"{"qemu_pid":1,"domain":"d","embed_root":"/x","vmi":{"namespace":"default","name":"web","uid":"u1"},"sandbox_id":"s","container_id":"old"}"#,
        );
        let index = VmIndex::new(run.path());
        assert_eq!(index.list().len(), 2);
        let vm = index.find("default", "web", Some("u1")).unwrap();
        assert_eq!(vm.container_id, "c1");
        assert_eq!(vm.console_socket(), run.path().join("p/aaaa/console.sock"));
        assert_eq!(vm.vnc_socket(), run.path().join("p/aaaa/vm/vnc.sock"));
        assert_eq!(index.find("other", "web", None).unwrap().container_id, "c2");
        assert_eq!(
            index.find("default", "web", Some("old")).unwrap_err(),
            LookupError::OtherUid {
                namespace: "default".into(),
                name: "web".into(),
                found: "u1".into(),
                wanted: "old".into()
            }
        );
        assert!(matches!(
            index.find("default", "db", None),
            Err(LookupError::NotHere { .. })
        ));
        assert!(VmIndex::new(run.path().join("missing")).list().is_empty());
    }

    #[test]
    fn vnc_is_reached_only_through_a_socket_of_the_vms_qemu_user() {
        let run = tempfile::tempdir().unwrap();
        write(run.path(), "aaaa", &record("default", "web", "u1", "c1"));
        let dir = run.path().join("p/aaaa");
        std::fs::create_dir_all(dir.join("vm")).unwrap();
        let vm = VmIndex::new(run.path())
            .find("default", "web", None)
            .unwrap();
        // QEMU's socket, here made by the test (uid 0).
        let listener = std::os::unix::net::UnixListener::bind(vm.vnc_socket()).unwrap();
        std::fs::write(dir.join("qemu-id"), "0").unwrap();
        vm.connect_vnc().unwrap();
        drop(listener);
        // The QEMU user is another: refused.
        std::fs::write(dir.join("qemu-id"), "3800000001").unwrap();
        let e = vm.connect_vnc().unwrap_err().to_string();
        assert!(e.contains("not to the VM's QEMU user"), "{e}");
        // A symlink in its place (to another socket of the node): refused, not followed.
        std::fs::write(dir.join("qemu-id"), "0").unwrap();
        std::fs::remove_file(vm.vnc_socket()).unwrap();
        let other = run.path().join("containerd.sock");
        let _other = std::os::unix::net::UnixListener::bind(&other).unwrap();
        std::os::unix::fs::symlink(&other, vm.vnc_socket()).unwrap();
        assert!(vm.connect_vnc().is_err(), "a symlink was followed");
    }
}
