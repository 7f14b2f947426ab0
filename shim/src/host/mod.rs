//! Everything a pod's lifecycle does to the node, behind one trait.
//!
//! [`crate::pod::Pod`] is the state machine containerd's task calls drive (create, start, kill,
//! pause, delete, and the VM's exit); it decides *what* happens and in which order, and asks a
//! [`Host`] to do it. [`node::NodeHost`] is the real node: OCI bundles on disk, root filesystem
//! mounts, the VM's disks, libvirt's embedded QEMU driver, the pod network, cgroups, the serial
//! console, `state.json`. The unit tests drive the same state machine over a recording fake
//! (`fake.rs`), so that every order of calls, a failure at each step, and a start that stalls
//! can be tested without containerd, libvirt or root.
//!
//! Each method is one step a failure can stop; the state machine undoes what the steps before
//! it did. Methods block (libvirt, mounts, `qemu-img`): the pod calls them without its lock.

pub mod node;

#[cfg(test)]
pub mod fake;

use crate::bundle::{Bundle, Resources};
use crate::console::Endpoints;
use crate::error::Result;
use crate::libvirt::VmState;
use crate::paths::PodPaths;
use crate::rootfs::RootfsMount;
use crate::state::PodState;
use crate::vm::VmiIdentity;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use virtshim_api::config::VmiConfig;

/// What a VM's preparation is given: the VMI, validated and tied to its pod, and where its
/// inputs are on the node.
#[derive(Debug)]
pub struct VmRequest<'a> {
    pub identity: &'a VmiIdentity,
    pub config: &'a VmiConfig,
    pub paths: &'a PodPaths,
    /// The compute container's bundle: its root filesystem, mounts and block devices.
    pub compute: &'a Bundle,
    /// The root filesystems of the containers carrying images, by container name.
    pub carriers: &'a HashMap<String, PathBuf>,
    /// Filesystem-mode claims' capacities by volume (the pod contract's annotation).
    pub claim_capacities: &'a BTreeMap<String, u64>,
}

/// A VM its host prepared (disks made, domain planned), not yet started.
pub trait PreparedVm: Send + Sync + std::fmt::Debug {
    /// The libvirt domain's name.
    fn domain(&self) -> &str;
    /// The pod's address the VM takes over (when it has a NIC on the pod network).
    fn pod_ip(&self) -> Option<std::net::IpAddr>;
}

/// How QEMU's process ended, as the reaper saw it (`None`: it could not tell).
pub type ProcessExit = Option<nix::sys::wait::WaitStatus>;

/// The node, as one pod's lifecycle uses it. One value serves one pod (one shim).
pub trait Host: Send + Sync + std::fmt::Debug + 'static {
    type Vm: PreparedVm;
    /// The cgroup QEMU was moved into.
    type Cgroup: Send + Sync + std::fmt::Debug;
    /// The serial console's copying threads.
    type Console: Send;

    /// Reads the container's OCI bundle and judges it fit for a VM pod (refusing host
    /// namespaces, privilege, host paths).
    fn read_bundle(&self, dir: &Path, id: &str) -> Result<Bundle>;
    /// Makes the pod's folders (sandbox Create).
    fn create_pod_dirs(&self, paths: &PodPaths) -> Result<()>;
    /// Removes the pod's folders and whatever is left in them, and ends any QEMU left running
    /// under its libvirt root (sandbox Delete).
    fn remove_pod(&self, paths: &PodPaths);
    fn mount_rootfs(&self, mounts: &[RootfsMount], target: &Path) -> Result<()>;
    fn unmount_rootfs(&self, target: &Path);

    /// Prepares the VM's disks and plans its domain (compute Create).
    fn prepare_vm(&self, request: &VmRequest<'_>) -> Result<Self::Vm>;
    /// Removes what [`Host::prepare_vm`] and a start made: disks, sockets, `state.json`.
    fn discard_vm(&self, paths: &PodPaths);

    /// Opens the pod's hypervisor connection, the first time (a VM's start; slow on a fresh
    /// node). Returns early with an error when `cancel` is set.
    fn open_hypervisor(&self, paths: &PodPaths, vm: &Self::Vm, cancel: &AtomicBool) -> Result<()>;
    /// Closes it (sandbox Delete).
    fn close_hypervisor(&self);
    /// Wires the pod's network to the VM's NIC (when the VM has one on the pod network).
    fn wire_network(&self, vm: &Self::Vm) -> Result<()>;
    /// Starts QEMU with the VM's CPUs paused; returns QEMU's pid.
    fn start_paused(&self, vm: &Self::Vm) -> Result<u32>;
    /// Moves QEMU into the container's cgroup, made with the container's resources.
    fn confine(&self, pid: u32, cgroups_path: &str, resources: &Resources) -> Result<Self::Cgroup>;
    /// Attaches the serial console to the container's stdio and the console socket (when the
    /// VM has a serial console).
    fn attach_console(
        &self,
        vm: &Self::Vm,
        endpoints: &Endpoints,
        container_id: &str,
    ) -> Result<Option<Self::Console>>;
    /// Writes the node's record of the running VM (`state.json`: the handler's and a later
    /// cleanup's source).
    fn write_record(&self, paths: &PodPaths, record: &PodState) -> Result<()>;
    fn remove_record(&self, paths: &PodPaths);

    fn resume(&self, domain: &str) -> Result<()>;
    fn suspend(&self, domain: &str) -> Result<()>;
    /// Presses the VM's ACPI power button.
    fn power_button(&self, domain: &str) -> Result<()>;
    /// Stops QEMU at once.
    fn destroy(&self, domain: &str) -> Result<()>;
    fn undefine(&self, domain: &str) -> Result<()>;
    fn vm_state(&self, domain: &str) -> Result<VmState>;
    /// Ends every QEMU of the pod, whatever it is doing (a start being cancelled: a QEMU that
    /// does not answer its monitor must not hold the start up).
    fn kill_vm_processes(&self, paths: &PodPaths);

    /// Blocks until QEMU's process `pid` has exited.
    fn wait_exit(&self, pid: u32) -> ProcessExit;
    /// Waits for the console's threads to finish copying what QEMU wrote last.
    fn join_console(&self, console: Self::Console);
    fn cgroup_metrics(
        &self,
        cgroup: &Self::Cgroup,
    ) -> containerd_shim_protos::cgroups::metrics::Metrics;
    fn remove_cgroup(&self, cgroup: &Self::Cgroup);
}
