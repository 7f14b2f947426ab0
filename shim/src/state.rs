//! What the shim writes down about a running VM so that `containerd-shim-virtshim-v2 delete`
//! (run by containerd when a shim died) can stop QEMU and clean up without the dead shim.

use crate::error::{Error, Result};
use std::path::Path;

pub use virtshim_wire::node::{PodRecord, PodState, VmiRecord};

/// Writing, reading and acting on `state.json` (the record itself is the node contract in
/// `virtshim_wire::node`, shared with the handler).
pub trait PodStateFile: Sized {
    fn write(&self, path: &Path) -> Result<()>;
    fn read(path: &Path) -> Option<Self>;
    fn kill_qemu(&self);
}

impl PodStateFile for PodState {
    fn write(&self, path: &Path) -> Result<()> {
        let tmp = path.with_extension("tmp");
        let text = serde_json::to_string(self)
            .map_err(|e| Error::io("encoding the pod state", std::io::Error::other(e)))?;
        std::fs::write(&tmp, text).map_err(|e| Error::path("writing the pod state", &tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| Error::path("writing the pod state", path, e))
    }

    fn read(path: &Path) -> Option<Self> {
        serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
    }

    /// Kills QEMU if it still runs. The pid is checked against QEMU's command line (it must
    /// name this pod's embedded root) so a recycled pid is never killed.
    fn kill_qemu(&self) {
        let cmdline = std::fs::read(format!("/proc/{}/cmdline", self.qemu_pid)).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        if cmdline.contains("qemu-system") && cmdline.contains(&*self.embed_root.to_string_lossy())
        {
            let pid = nix::unistd::Pid::from_raw(self.qemu_pid as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            for _ in 0..50 {
                if nix::sys::signal::kill(pid, None).is_err() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        }
    }
}

/// Kills every QEMU whose command line names `embed_root` (the VM's, and any capability probe
/// libvirt left behind after a failure), so that removing a pod never leaves a process.
pub fn kill_qemus_under(embed_root: &Path) {
    let root = embed_root.to_string_lossy().into_owned();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        if cmdline.starts_with("/usr/bin/qemu-system") && cmdline.contains(&root) {
            tracing::warn!(pid, "killing a QEMU left in the pod's libvirt root");
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}
