//! Where the shim keeps things on the node.
//!
//! Per pod: `/run/virtshim/p/<sandbox-id prefix>/` holds small runtime state (libvirt's embedded
//! root, the console and VNC sockets, `state.json`); `/var/lib/virtshim/pods/<sandbox-id>/`
//! holds disk overlays and cloud-init images, which can grow and so stay off tmpfs. Delete
//! removes both. `/var/lib/virtshim/cache` holds what pods share (QEMU's capabilities).

use std::path::PathBuf;
use virtshim_wire::node;

/// Roots, overridable for tests and unusual nodes (`VIRTSHIM_RUN_DIR`, `VIRTSHIM_LIB_DIR`,
/// `VIRTSHIM_CACHE_DIR`).
#[derive(Clone, Debug)]
pub struct Roots {
    pub run: PathBuf,
    pub lib: PathBuf,
    pub cache: PathBuf,
}

impl Roots {
    pub fn from_env() -> Self {
        let dir = |var: &str, default: &str| {
            std::env::var_os(var)
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(default))
        };
        let lib = dir("VIRTSHIM_LIB_DIR", "/var/lib/virtshim");
        let cache = std::env::var_os("VIRTSHIM_CACHE_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| lib.join("cache"));
        Self {
            run: dir("VIRTSHIM_RUN_DIR", node::DEFAULT_RUN_DIR),
            lib,
            cache,
        }
    }

    pub fn pod(&self, sandbox_id: &str) -> PodPaths {
        // Unix socket paths (QEMU's monitor, the console) must stay under 108 bytes, so the
        // run folder takes a prefix of the 64-character sandbox id: unique enough per node.
        PodPaths {
            run: node::pod_run_dir(&self.run, sandbox_id),
            lib: self.lib.join("pods").join(sandbox_id),
            capabilities_cache: self.capabilities_cache(),
        }
    }

    /// QEMU's capabilities as libvirt probed them, shared by every pod of the node.
    pub fn capabilities_cache(&self) -> PathBuf {
        self.cache.join("qemu/capabilities")
    }
}

/// The folders and files of one pod.
#[derive(Clone, Debug)]
pub struct PodPaths {
    pub run: PathBuf,
    pub lib: PathBuf,
    pub capabilities_cache: PathBuf,
}

impl PodPaths {
    /// libvirt's embedded driver root (`qemu:///embed?root=…`).
    pub fn embed_root(&self) -> PathBuf {
        self.run.join("libvirt")
    }
    /// Where QEMU makes its sockets: a folder of the VM's QEMU user, apart from the records and
    /// sockets the shim keeps for the handler (which QEMU must not be able to replace).
    pub fn qemu_sockets(&self) -> PathBuf {
        self.run.join(node::QEMU_DIR)
    }
    pub fn serial_socket(&self) -> PathBuf {
        self.qemu_sockets().join("serial.sock")
    }
    /// The console for the node daemon: every client reads the output and may type.
    pub fn console_socket(&self) -> PathBuf {
        self.run.join(node::CONSOLE_SOCKET)
    }
    pub fn vnc_socket(&self) -> PathBuf {
        self.qemu_sockets().join(node::VNC_SOCKET)
    }
    pub fn state_file(&self) -> PathBuf {
        self.run.join(node::STATE_FILE)
    }
    pub fn disks(&self) -> PathBuf {
        self.lib.join("disks")
    }
}
