//! The node-local contract between the shim and `virtshim-handler`: where a running VM's serial
//! console and VNC sockets are, and the record (`state.json`) by which the handler finds a VMI
//! by its UID and pauses it through containerd by the compute container's id.
//!
//! Per pod the shim keeps `<run dir>/p/<first 16 characters of the sandbox id>/` (unix socket
//! paths must stay under 108 bytes) holding [`STATE_FILE`], [`CONSOLE_SOCKET`] and
//! [`QEMU_DIR`]`/`[`VNC_SOCKET`]. The record exists only while the VM runs.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The shim's default run directory (`VIRTSHIM_RUN_DIR` overrides it on both sides).
pub const DEFAULT_RUN_DIR: &str = "/run/virtshim";
/// Under the run directory: one folder per pod.
pub const PODS_SUBDIR: &str = "p";
/// How much of the sandbox id names a pod's folder.
pub const POD_DIR_ID_LEN: usize = 16;
pub const STATE_FILE: &str = "state.json";
/// The serial console: every client reads the output and may type.
pub const CONSOLE_SOCKET: &str = "console.sock";
/// The folder of the VM's QEMU user, in the pod's folder: QEMU's own sockets.
pub const QEMU_DIR: &str = "vm";
/// QEMU's VNC server (RFB), in [`QEMU_DIR`]. QEMU's user owns that folder, so whoever connects
/// must not follow a symlink there (the handler checks what it opens is a socket of that user).
pub const VNC_SOCKET: &str = "vnc.sock";
/// In the pod's folder: the uid the VM's QEMU runs as (decimal), which owns [`QEMU_DIR`].
pub const QEMU_ID_FILE: &str = "qemu-id";

/// The folder of the pod `sandbox_id` under `run_dir`.
pub fn pod_run_dir(run_dir: &Path, sandbox_id: &str) -> PathBuf {
    let short = sandbox_id
        .get(..POD_DIR_ID_LEN.min(sandbox_id.len()))
        .unwrap_or(sandbox_id);
    run_dir.join(PODS_SUBDIR).join(short)
}

/// `state.json`: what the shim writes when the VM starts.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PodState {
    pub qemu_pid: u32,
    /// The libvirt domain name.
    pub domain: String,
    /// libvirt's embedded root, which QEMU's command line names.
    pub embed_root: PathBuf,
    #[serde(default)]
    pub vmi: Option<VmiRecord>,
    /// The pod as containerd's CRI plugin named it (not as the pod's annotations say): the
    /// handler serves a VM only when its VMI is of the pod's namespace.
    #[serde(default)]
    pub pod: Option<PodRecord>,
    #[serde(default)]
    pub sandbox_id: String,
    /// The compute container (the containerd task that is the VM).
    #[serde(default)]
    pub container_id: String,
    /// The pod's IP, where the guest answers (its own address with bridge binding, forwarded
    /// ports with masquerade): what the handler's port forwarding dials. None without a pod
    /// network interface.
    #[serde(default)]
    pub pod_ip: Option<std::net::IpAddr>,
}

/// Who the VM is, as the pod's VMI annotation says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmiRecord {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

/// The pod a VM runs in, from the CRI sandbox's metadata.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodRecord {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_folders_use_a_prefix_of_the_sandbox_id() {
        let id = "0123456789abcdef0123456789abcdef";
        assert_eq!(
            pod_run_dir(Path::new("/run/virtshim"), id),
            Path::new("/run/virtshim/p/0123456789abcdef")
        );
        assert_eq!(
            pod_run_dir(Path::new("/r"), "short"),
            Path::new("/r/p/short")
        );
    }

    #[test]
    fn records_without_identity_still_read() {
        let old: PodState =
            serde_json::from_str(r#"{"qemu_pid":1,"domain":"d","embed_root":"/x"}"#)
                .expect("reads");
        assert!(old.vmi.is_none());
        assert!(old.container_id.is_empty());
    }
}
