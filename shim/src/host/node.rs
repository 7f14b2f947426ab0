//! The real node: what each [`Host`] step does on it.

use super::{Host, PreparedVm, ProcessExit, VmRequest};
use crate::bundle::{Bundle, MountPolicy, Resources};
use crate::cgroup::Cgroup;
use crate::console::{Console, Endpoints};
use crate::error::{Error, LibvirtCause, Result};
use crate::libvirt::{Libvirt, VmState};
use crate::network::NicPlan;
use crate::paths::{PodPaths, Roots};
use crate::qemu_ids::QemuIds;
use crate::rootfs::{self, RootfsMount};
use crate::state::{PodState, PodStateFile};
use crate::vm::domain_xml::DomainPlan;
use crate::vm::{self, exposed};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A VM prepared on the node: its domain, who its QEMU runs as, its NIC on the pod network.
#[derive(Debug)]
pub struct NodeVm {
    plan: DomainPlan,
    ids: QemuIds,
    nic: Option<NicPlan>,
}

impl PreparedVm for NodeVm {
    fn domain(&self) -> &str {
        &self.plan.name
    }
    fn pod_ip(&self) -> Option<std::net::IpAddr> {
        self.nic.as_ref().map(|n| n.pod.address.into())
    }
}

/// The node one shim serves its pod on.
#[derive(Debug)]
pub struct NodeHost {
    roots: Roots,
    mounts: MountPolicy,
    /// The pod's libvirt, once a VM's start opened it.
    libvirt: Mutex<Option<Arc<Libvirt>>>,
}

impl NodeHost {
    pub fn new(roots: Roots) -> Self {
        Self {
            roots,
            mounts: MountPolicy::from_node(),
            libvirt: Mutex::new(None),
        }
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Option<Arc<Libvirt>>> {
        match self.libvirt.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    fn libvirt(&self) -> Result<Arc<Libvirt>> {
        self.slot().clone().ok_or(Error::Libvirt {
            context: "reaching the VM",
            cause: LibvirtCause::Unreachable("the pod's libvirt is not open (no VM was started)"),
        })
    }
}

/// For tests that need a start in progress: while the file named by `VIRTSHIM_TEST_START_GATE`
/// (in containerd's environment, which only the node's administrator sets) exists, a VM's
/// start waits before it opens libvirt, as a slow probe or a stuck QEMU would make it wait.
const START_GATE: &str = "VIRTSHIM_TEST_START_GATE";

fn wait_at_gate(cancel: &AtomicBool) -> Result<()> {
    let Some(gate) = std::env::var_os(START_GATE) else {
        return Ok(());
    };
    let gate = std::path::PathBuf::from(gate);
    if gate.exists() {
        tracing::info!(gate = %gate.display(), "start waits at the test gate");
    }
    while gate.exists() {
        if cancel.load(Ordering::SeqCst) {
            return Err(crate::pod::killed_while_starting());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

impl Host for NodeHost {
    type Vm = NodeVm;
    type Cgroup = Cgroup;
    type Console = Console;

    fn read_bundle(&self, dir: &Path, id: &str) -> Result<Bundle> {
        Bundle::read(dir, id, &self.mounts)
    }

    fn create_pod_dirs(&self, paths: &PodPaths) -> Result<()> {
        for dir in [&paths.run, &paths.lib] {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::path("creating the pod's folder", dir, e))?;
        }
        Ok(())
    }

    fn remove_pod(&self, paths: &PodPaths) {
        crate::state::kill_qemus_under(&paths.embed_root());
        exposed::remove_dir(&paths.disks());
        crate::qemu_ids::release(&paths.run);
        for dir in [&paths.run, &paths.lib] {
            if let Err(e) = std::fs::remove_dir_all(dir) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(path = %dir.display(), error = %e, "cannot remove the pod's folder");
                }
            }
        }
    }

    fn mount_rootfs(&self, mounts: &[RootfsMount], target: &Path) -> Result<()> {
        rootfs::mount(mounts, target)
    }

    fn unmount_rootfs(&self, target: &Path) {
        rootfs::unmount(target)
    }

    fn prepare_vm(&self, request: &VmRequest<'_>) -> Result<NodeVm> {
        let rootfs = request.compute.rootfs();
        let sources = vm::Sources {
            compute_rootfs: &rootfs,
            compute_mounts: &request.compute.mounts,
            compute_devices: &request.compute.block_devices,
            containers: request.carriers,
            claim_capacities: request.claim_capacities,
        };
        let accel = crate::accel::choose(&self.roots.run);
        let nic = vm::plan_nic(request.identity, request.config, &sources)?;
        let ids = crate::qemu_ids::claim(&request.paths.run)?;
        let plan = vm::plan(
            request.identity,
            request.config,
            &sources,
            request.paths,
            accel,
            nic.as_ref(),
            ids,
        )?;
        tracing::info!(
            ?accel,
            qemu_uid = ids.uid,
            disks = plan.disks.len(),
            "VM prepared"
        );
        Ok(NodeVm { plan, ids, nic })
    }

    fn discard_vm(&self, paths: &PodPaths) {
        exposed::remove_dir(&paths.disks());
        let _ = std::fs::remove_file(paths.state_file());
        let _ = std::fs::remove_dir_all(paths.qemu_sockets());
        let _ = std::fs::remove_file(paths.console_socket());
    }

    fn open_hypervisor(&self, paths: &PodPaths, vm: &NodeVm, cancel: &AtomicBool) -> Result<()> {
        wait_at_gate(cancel)?;
        if self.slot().is_some() {
            return Ok(());
        }
        let opened = std::time::Instant::now();
        let libvirt = Libvirt::open(&paths.embed_root(), &paths.capabilities_cache, vm.ids)?;
        tracing::info!(
            elapsed_ms = opened.elapsed().as_millis() as u64,
            "libvirt opened"
        );
        self.slot().get_or_insert_with(|| Arc::new(libvirt));
        Ok(())
    }

    fn close_hypervisor(&self) {
        // The last reference: dropping it closes the connection and joins libvirt's thread.
        let libvirt = self.slot().take();
        drop(libvirt);
    }

    fn wire_network(&self, vm: &NodeVm) -> Result<()> {
        if let Some(nic) = &vm.nic {
            crate::network::apply(nic)?;
            tracing::info!(binding = ?nic.binding, guest = %nic.lease.address, "pod network wired to the VM");
        }
        Ok(())
    }

    fn start_paused(&self, vm: &NodeVm) -> Result<u32> {
        self.libvirt()?
            .start_paused(&vm.plan.name, vm.plan.to_xml())
    }

    fn confine(&self, pid: u32, cgroups_path: &str, resources: &Resources) -> Result<Cgroup> {
        let cgroup = Cgroup::create(cgroups_path, resources)?;
        if let Err(e) = cgroup.add(pid) {
            cgroup.remove();
            return Err(e);
        }
        Ok(cgroup)
    }

    fn attach_console(
        &self,
        vm: &NodeVm,
        endpoints: &Endpoints,
        container_id: &str,
    ) -> Result<Option<Console>> {
        vm.plan
            .serial_socket
            .as_ref()
            .map(|socket| Console::start(Path::new(socket), endpoints, container_id))
            .transpose()
    }

    fn write_record(&self, paths: &PodPaths, record: &PodState) -> Result<()> {
        record.write(&paths.state_file())
    }

    fn remove_record(&self, paths: &PodPaths) {
        let _ = std::fs::remove_file(paths.state_file());
    }

    fn resume(&self, domain: &str) -> Result<()> {
        self.libvirt()?.resume(domain)
    }

    fn suspend(&self, domain: &str) -> Result<()> {
        self.libvirt()?.suspend(domain)
    }

    fn power_button(&self, domain: &str) -> Result<()> {
        self.libvirt()?.power_button(domain)
    }

    fn destroy(&self, domain: &str) -> Result<()> {
        self.libvirt()?.destroy(domain)
    }

    fn undefine(&self, domain: &str) -> Result<()> {
        self.libvirt()?.undefine(domain)
    }

    fn vm_state(&self, domain: &str) -> Result<VmState> {
        self.libvirt()?.state(domain)
    }

    fn kill_vm_processes(&self, paths: &PodPaths) {
        crate::state::kill_qemus_under(&paths.embed_root());
    }

    fn wait_exit(&self, pid: u32) -> ProcessExit {
        crate::reaper::wait(pid)
    }

    fn join_console(&self, console: Console) {
        console.join();
    }

    fn cgroup_metrics(&self, cgroup: &Cgroup) -> containerd_shim_protos::cgroups::metrics::Metrics {
        cgroup.metrics_v1()
    }

    fn remove_cgroup(&self, cgroup: &Cgroup) {
        cgroup.remove();
    }
}
