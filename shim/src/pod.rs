//! One pod's containers and its VM: what containerd's task calls do to them.
//!
//! The sandbox container and the containers that only carry an image (`volume<name>`,
//! `kernel-boot`) run nothing; their "process" is the shim itself. The `compute` container is
//! the VM: Create validates the VMI and prepares its disks (so a bad annotation fails
//! CreateContainer, before anything runs), Start boots QEMU with its CPUs paused, gives QEMU
//! to the container's cgroup, attaches the console and only then lets the guest run.

use crate::bundle::{check_id, Bundle, Role};
use crate::cgroup::Cgroup;
use crate::console::Console;
use crate::error::{Error, Result};
use crate::libvirt::{Libvirt, OffReason, VmState};
use crate::paths::{PodPaths, Roots};
use crate::rootfs::{self, RootfsMount};
use crate::service::Events;
use crate::state::{PodState, PodStateFile};
use crate::vm::domain_xml::DomainPlan;
use crate::vm::{self, VmiIdentity};
use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;
use virtshim_api::manifest::{parse_json, Object};
use virtshim_api::pod as contract;
use virtshim_api::validate::{is_dns_label, is_dns_subdomain};

/// The FIFOs containerd gave a task.
#[derive(Clone, Debug, Default)]
pub struct TaskIo {
    pub stdin: String,
    pub stdout: String,
    pub terminal: bool,
}

/// A container's lifecycle state, as containerd sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Created,
    Running,
    Paused,
    Stopped,
}

/// How a container's task ended.
#[derive(Clone, Debug)]
pub struct ExitInfo {
    pub code: u32,
    pub at: Timestamp,
}

/// What `State` reports.
#[derive(Clone, Debug)]
pub struct TaskState {
    pub bundle: String,
    pub pid: u32,
    pub status: Status,
    pub stdout: String,
    pub terminal: bool,
    pub exit: Option<ExitInfo>,
}

/// Set once when a task exits; `Wait` blocks on it without holding the pod's lock.
#[derive(Debug, Default)]
struct ExitCell {
    exit: Mutex<Option<ExitInfo>>,
    changed: Condvar,
}

impl ExitCell {
    fn set(&self, info: ExitInfo) {
        if let Ok(mut exit) = self.exit.lock() {
            if exit.is_none() {
                *exit = Some(info);
            }
        }
        self.changed.notify_all();
    }
    fn get(&self) -> Option<ExitInfo> {
        self.exit.lock().ok().and_then(|e| e.clone())
    }
    fn wait_timeout(&self, timeout: Duration) -> Option<ExitInfo> {
        let guard = match self.exit.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let (guard, _) = match self
            .changed
            .wait_timeout_while(guard, timeout, |e| e.is_none())
        {
            Ok(r) => r,
            Err(p) => p.into_inner(),
        };
        guard.clone()
    }

    fn wait(&self) -> ExitInfo {
        let mut guard = match self.exit.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        loop {
            if let Some(info) = guard.clone() {
                return info;
            }
            guard = match self.changed.wait(guard) {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Kind {
    Sandbox,
    /// Carries an image for the VM; runs nothing.
    Carrier,
    Compute,
}

#[derive(Debug)]
struct Running {
    domain: String,
    cgroup: Option<Cgroup>,
    /// Set when the shim destroys the VM on SIGKILL, so the exit code says "killed".
    killed: Arc<AtomicBool>,
}

#[derive(Debug)]
struct VmSlot {
    identity: VmiIdentity,
    plan: DomainPlan,
    nic: Option<crate::network::NicPlan>,
    start_paused: bool,
    running: Option<Running>,
}

#[derive(Debug)]
struct Container {
    bundle: Bundle,
    kind: Kind,
    stdout: String,
    stdin: String,
    terminal: bool,
    status: Status,
    pid: u32,
    exit: Arc<ExitCell>,
    rootfs_mounted: bool,
    vm: Option<VmSlot>,
}

#[derive(Debug, Default)]
struct Inner {
    sandbox_id: Option<String>,
    paths: Option<PodPaths>,
    /// Pod annotations as the sandbox received them (the VMI may be read from there).
    sandbox_annotations: HashMap<String, String>,
    containers: HashMap<String, Container>,
    libvirt: Option<Arc<Libvirt>>,
}

/// One pod, served by one shim.
#[derive(Debug)]
pub struct Pod {
    roots: Roots,
    inner: Mutex<Inner>,
}

fn now() -> Timestamp {
    containerd_shim::util::timestamp().unwrap_or_default()
}

impl Pod {
    pub fn new(roots: Roots) -> Self {
        Self {
            roots,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.lock().containers.is_empty()
    }

    pub fn create(
        &self,
        id: &str,
        bundle_dir: &str,
        rootfs: &[RootfsMount],
        io: &TaskIo,
    ) -> Result<u32> {
        check_id(id)?;
        let bundle = Bundle::read(std::path::Path::new(bundle_dir))?;
        let mut inner = self.lock();
        if inner.containers.contains_key(id) {
            return Err(Error::AlreadyExists(id.to_owned()));
        }
        let kind = match &bundle.role {
            Role::Sandbox => {
                let paths = self.roots.pod(id);
                for dir in [&paths.run, &paths.lib] {
                    std::fs::create_dir_all(dir)
                        .map_err(|e| Error::path("creating the pod's folder", dir, e))?;
                }
                inner.sandbox_id = Some(id.to_owned());
                inner.paths = Some(paths);
                inner.sandbox_annotations = bundle.annotations.clone();
                Kind::Sandbox
            }
            Role::Container { name, sandbox_id } => {
                if inner.sandbox_id.as_deref() != Some(sandbox_id.as_str()) {
                    return Err(Error::FailedPrecondition(format!(
                        "container {id} belongs to sandbox {sandbox_id}, which this shim does not serve"
                    )));
                }
                if name == contract::COMPUTE_CONTAINER {
                    Kind::Compute
                } else {
                    Kind::Carrier
                }
            }
        };
        let _span = tracing::info_span!("create", container_id = id, pod = %bundle.pod).entered();

        let mut rootfs_mounted = false;
        if kind != Kind::Sandbox && !rootfs.is_empty() {
            rootfs::mount(rootfs, &bundle.rootfs())?;
            rootfs_mounted = true;
        }
        let mut container = Container {
            bundle,
            kind,
            stdout: io.stdout.clone(),
            stdin: io.stdin.clone(),
            terminal: io.terminal,
            status: Status::Created,
            pid: std::process::id(),
            exit: Arc::new(ExitCell::default()),
            rootfs_mounted,
            vm: None,
        };
        if container.kind == Kind::Compute {
            match self.prepare_vm(&inner, &container) {
                Ok(slot) => {
                    container.vm = Some(slot);
                    container.pid = 0;
                }
                Err(e) => {
                    // Nothing half-made: undo the mount and whatever the preparation wrote.
                    if let Some(paths) = &inner.paths {
                        let _ = std::fs::remove_dir_all(paths.disks());
                    }
                    rootfs::unmount(&container.bundle.rootfs());
                    tracing::warn!(error = %e, "create failed");
                    return Err(e);
                }
            }
        }
        let pid = container.pid;
        inner.containers.insert(id.to_owned(), container);
        tracing::info!(pid, "created");
        Ok(pid)
    }

    /// Reads and validates the VMI and prepares its disks.
    fn prepare_vm(&self, inner: &Inner, compute: &Container) -> Result<VmSlot> {
        // A pod annotation, on compute's bundle or else on the sandbox's.
        let annotation = |key: &str| {
            compute
                .bundle
                .annotations
                .get(key)
                .or_else(|| inner.sandbox_annotations.get(key))
                .map(String::as_str)
        };
        let text = annotation(contract::VMI_ANNOTATION)
            .ok_or_else(|| Error::Vmi {
                annotation: contract::VMI_ANNOTATION,
                message: "missing: the pod was not made by virtshim, or containerd does not pass virtshim.io/* pod annotations".into(),
            })?;
        if text.len() > 1 << 20 {
            return Err(Error::Vmi {
                annotation: contract::VMI_ANNOTATION,
                message: "larger than 1 MiB".into(),
            });
        }
        let vmi = match parse_json(text) {
            Ok(Object::VirtualMachineInstance(vmi)) => vmi,
            Ok(other) => {
                return Err(Error::Vmi {
                    annotation: contract::VMI_ANNOTATION,
                    message: format!("holds a {}, not a VirtualMachineInstance", other.kind()),
                })
            }
            Err(e) => {
                return Err(Error::Vmi {
                    annotation: contract::VMI_ANNOTATION,
                    message: e.to_string(),
                })
            }
        };
        let config = virtshim_api::validate::vmi(&vmi).map_err(|e| Error::Vmi {
            annotation: contract::VMI_ANNOTATION,
            message: e.to_string().replace('\n', "; "),
        })?;
        let identity = VmiIdentity {
            namespace: vmi
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".to_owned()),
            name: vmi.metadata.name.clone().unwrap_or_default(),
            uid: vmi.metadata.uid.clone().unwrap_or_default(),
        };
        // The apiserver's own rules for these names; they end up in the libvirt domain's name
        // and in log fields, so a hostile annotation must not get anything else through.
        if !is_dns_subdomain(&identity.name) || !is_dns_label(&identity.namespace) {
            return Err(Error::Vmi {
                annotation: contract::VMI_ANNOTATION,
                message: "metadata.name must be a DNS subdomain and metadata.namespace a DNS label"
                    .into(),
            });
        }
        let paths = inner
            .paths
            .as_ref()
            .ok_or_else(|| Error::FailedPrecondition("the pod sandbox is missing".into()))?;
        let containers: HashMap<String, PathBuf> = inner
            .containers
            .values()
            .filter(|c| c.kind == Kind::Carrier)
            .filter_map(|c| match &c.bundle.role {
                Role::Container { name, .. } => Some((name.clone(), c.bundle.rootfs())),
                Role::Sandbox => None,
            })
            .collect();
        let rootfs = compute.bundle.rootfs();
        let claim_capacities =
            contract::claim_capacities(annotation(contract::CLAIM_CAPACITY_ANNOTATION));
        let sources = vm::Sources {
            compute_rootfs: &rootfs,
            compute_mounts: &compute.bundle.mounts,
            compute_devices: &compute.bundle.block_devices,
            containers: &containers,
            claim_capacities: &claim_capacities,
        };
        let accel = crate::accel::choose(&self.roots.run);
        let nic = vm::plan_nic(&identity, &config, &sources)?;
        let plan = vm::plan(&identity, &config, &sources, paths, accel, nic.as_ref())?;
        tracing::info!(
            namespace = %identity.namespace,
            vmi = %identity.name,
            vmi_uid = %identity.uid,
            ?accel,
            disks = plan.disks.len(),
            "VM prepared"
        );
        Ok(VmSlot {
            identity,
            plan,
            nic,
            start_paused: config.start_paused,
            running: None,
        })
    }

    pub fn start(self: &Arc<Self>, id: &str, events: &Events) -> Result<u32> {
        let mut inner = self.lock();
        let paths = inner
            .paths
            .clone()
            .ok_or_else(|| Error::FailedPrecondition("the pod sandbox is missing".into()))?;
        let libvirt = match (&inner.libvirt, inner.containers.get(id).map(|c| &c.kind)) {
            (Some(l), _) => Some(l.clone()),
            (None, Some(Kind::Compute)) => {
                let opened = std::time::Instant::now();
                let l = Arc::new(Libvirt::open(
                    &paths.embed_root(),
                    &paths.capabilities_cache,
                )?);
                tracing::info!(
                    elapsed_ms = opened.elapsed().as_millis() as u64,
                    "libvirt opened"
                );
                inner.libvirt = Some(l.clone());
                Some(l)
            }
            _ => None,
        };
        let sandbox_id = inner.sandbox_id.clone().unwrap_or_default();
        let container = inner
            .containers
            .get_mut(id)
            .ok_or_else(|| Error::NotFound(id.to_owned()))?;
        if container.status != Status::Created {
            return Err(Error::FailedPrecondition(format!(
                "container {id} was started already"
            )));
        }
        let Some(slot) = container.vm.as_mut() else {
            container.status = Status::Running;
            return Ok(container.pid);
        };
        let libvirt =
            libvirt.ok_or_else(|| Error::FailedPrecondition("libvirt is not open".into()))?;
        let vmi = format!("{}/{}", slot.identity.namespace, slot.identity.name);
        let _span = tracing::info_span!("start", container_id = id, %vmi).entered();
        let domain = slot.plan.name.clone();
        if let Some(nic) = &slot.nic {
            crate::network::apply(nic)?;
            tracing::info!(binding = ?nic.binding, guest = %nic.lease.address, "pod network wired to the VM");
        }
        let launched = std::time::Instant::now();
        let pid = libvirt.start_paused(&domain, slot.plan.to_xml())?;
        tracing::info!(
            elapsed_ms = launched.elapsed().as_millis() as u64,
            pid,
            "QEMU started, CPUs paused"
        );
        let started = (|| -> Result<(Option<Cgroup>, Option<Console>)> {
            let cgroup = match &container.bundle.cgroups_path {
                Some(path) => {
                    let cgroup = Cgroup::create(path, &container.bundle.resources)?;
                    cgroup.add(pid)?;
                    Some(cgroup)
                }
                None => None,
            };
            let console = match &slot.plan.serial_socket {
                Some(socket) => {
                    let endpoints = crate::console::Endpoints {
                        stdout: container.stdout.clone(),
                        stdin: container.stdin.clone(),
                        listen: paths.console_socket(),
                    };
                    Some(Console::start(
                        std::path::Path::new(socket),
                        &endpoints,
                        id,
                    )?)
                }
                None => None,
            };
            PodState {
                qemu_pid: pid,
                domain: domain.clone(),
                embed_root: paths.embed_root(),
                vmi: Some(crate::state::VmiRecord {
                    namespace: slot.identity.namespace.clone(),
                    name: slot.identity.name.clone(),
                    uid: slot.identity.uid.clone(),
                }),
                sandbox_id: sandbox_id.clone(),
                container_id: id.to_owned(),
                pod_ip: slot.nic.as_ref().map(|n| n.pod.address.into()),
            }
            .write(&paths.state_file())?;
            if !slot.start_paused {
                libvirt.resume(&domain)?;
            }
            Ok((cgroup, console))
        })();
        let (cgroup, console) = match started {
            Ok(parts) => parts,
            Err(e) => {
                tracing::warn!(error = %e, "start failed; stopping QEMU");
                let _ = libvirt.destroy(&domain);
                let _ = libvirt.undefine(&domain);
                let _ = std::fs::remove_file(paths.state_file());
                return Err(e);
            }
        };
        let killed = Arc::new(AtomicBool::new(false));
        slot.running = Some(Running {
            domain: domain.clone(),
            cgroup,
            killed: killed.clone(),
        });
        container.status = if slot.start_paused {
            Status::Paused
        } else {
            Status::Running
        };
        container.pid = pid;
        drop(inner);
        tracing::info!(pid, "VM started");
        self.watch_exit(
            id.to_owned(),
            pid,
            domain,
            libvirt,
            killed,
            console,
            events.clone(),
        )?;
        Ok(pid)
    }

    /// Waits for QEMU to exit (the shim is its subreaper), then records why.
    #[allow(clippy::too_many_arguments)]
    fn watch_exit(
        self: &Arc<Self>,
        id: String,
        pid: u32,
        domain: String,
        libvirt: Arc<Libvirt>,
        killed: Arc<AtomicBool>,
        console: Option<Console>,
        events: Events,
    ) -> Result<()> {
        let pod = Arc::clone(self);
        std::thread::Builder::new()
            .name("qemu-exit".into())
            .spawn(move || {
                let status = crate::reaper::wait(pid);
                // libvirt notices the exit through QEMU's monitor on its event thread; give it a
                // moment to record the reason.
                let mut reason = None;
                for _ in 0..50 {
                    match libvirt.state(&domain) {
                        Ok(VmState::Off(r)) => {
                            reason = Some(r);
                            break;
                        }
                        Ok(_) => std::thread::sleep(Duration::from_millis(100)),
                        Err(_) => break,
                    }
                }
                let code = exit_code(reason, killed.load(Ordering::SeqCst), status);
                if let Some(console) = console {
                    console.join();
                }
                let exit = ExitInfo { code, at: now() };
                tracing::info!(container_id = %id, pid, code, ?reason, "VM exited");
                let mut inner = pod.lock();
                if let Some(c) = inner.containers.get_mut(&id) {
                    c.status = Status::Stopped;
                    c.exit.set(exit.clone());
                }
                drop(inner);
                events.exit(&id, pid, &exit);
            })
            .map(|_| ())
            .map_err(|e| Error::io("starting the exit watcher", e))
    }

    pub fn kill(&self, id: &str, signal: u32, events: &Events) -> Result<()> {
        let mut inner = self.lock();
        let libvirt = inner.libvirt.clone();
        let container = inner
            .containers
            .get_mut(id)
            .ok_or_else(|| Error::NotFound(id.to_owned()))?;
        let _span = tracing::info_span!("kill", container_id = id, signal).entered();
        let sigkill = signal == nix::sys::signal::Signal::SIGKILL as u32;
        let graceful = [
            nix::sys::signal::Signal::SIGTERM,
            nix::sys::signal::Signal::SIGINT,
            nix::sys::signal::Signal::SIGPWR,
        ]
        .iter()
        .any(|s| *s as u32 == signal);
        if !sigkill && !graceful {
            return Err(Error::invalid(
                "signal",
                format!("{signal}: a VM understands SIGTERM (ACPI power button) and SIGKILL"),
            ));
        }
        if container.status == Status::Stopped {
            return Err(Error::NotFound(format!(
                "process of container {id} already finished"
            )));
        }
        let running = container.vm.as_ref().and_then(|vm| vm.running.as_ref());
        match (running, libvirt) {
            (Some(run), Some(libvirt)) => {
                let domain = run.domain.clone();
                let paused = container.status == Status::Paused;
                if sigkill || paused {
                    run.killed.store(true, Ordering::SeqCst);
                    drop(inner);
                    tracing::info!(%domain, "destroying the VM");
                    libvirt
                        .destroy(&domain)
                        .or_else(|e| already_off(&libvirt, &domain, e))
                } else {
                    let exit = container.exit.clone();
                    drop(inner);
                    tracing::info!(%domain, "pressing the ACPI power button");
                    match libvirt.power_button(&domain) {
                        Ok(()) => keep_pressing(libvirt, domain, exit),
                        Err(e) => already_off(&libvirt, &domain, e)?,
                    }
                    Ok(())
                }
            }
            _ => {
                // Nothing runs in this container: it ends now.
                let exit = ExitInfo {
                    code: if sigkill { 137 } else { 0 },
                    at: now(),
                };
                container.status = Status::Stopped;
                container.exit.set(exit.clone());
                let pid = container.pid;
                drop(inner);
                events.exit(id, pid, &exit);
                Ok(())
            }
        }
    }

    pub fn wait(&self, id: &str) -> Result<ExitInfo> {
        let cell = self
            .lock()
            .containers
            .get(id)
            .map(|c| c.exit.clone())
            .ok_or_else(|| Error::NotFound(id.to_owned()))?;
        Ok(cell.wait())
    }

    pub fn state(&self, id: &str) -> Result<TaskState> {
        let inner = self.lock();
        let c = inner
            .containers
            .get(id)
            .ok_or_else(|| Error::NotFound(id.to_owned()))?;
        Ok(TaskState {
            bundle: c.bundle.dir.to_string_lossy().into_owned(),
            pid: c.pid,
            status: c.status,
            stdout: c.stdout.clone(),
            terminal: c.terminal,
            exit: c.exit.get(),
        })
    }

    pub fn pause(&self, id: &str) -> Result<()> {
        self.set_paused(id, true)
    }

    pub fn resume(&self, id: &str) -> Result<()> {
        self.set_paused(id, false)
    }

    fn set_paused(&self, id: &str, pause: bool) -> Result<()> {
        let mut inner = self.lock();
        let libvirt = inner.libvirt.clone();
        let c = inner
            .containers
            .get_mut(id)
            .ok_or_else(|| Error::NotFound(id.to_owned()))?;
        let (Some(run), Some(libvirt)) = (c.vm.as_ref().and_then(|v| v.running.as_ref()), libvirt)
        else {
            return Err(Error::FailedPrecondition(format!(
                "container {id} is not a running VM"
            )));
        };
        match (pause, c.status) {
            (true, Status::Running) => libvirt.suspend(&run.domain)?,
            (false, Status::Paused) => libvirt.resume(&run.domain)?,
            (_, status) => {
                return Err(Error::FailedPrecondition(format!(
                    "container {id} is {status:?}"
                )))
            }
        }
        c.status = if pause {
            Status::Paused
        } else {
            Status::Running
        };
        Ok(())
    }

    pub fn metrics(&self, id: &str) -> Result<containerd_shim_protos::cgroups::metrics::Metrics> {
        let inner = self.lock();
        let c = inner
            .containers
            .get(id)
            .ok_or_else(|| Error::NotFound(id.to_owned()))?;
        match c
            .vm
            .as_ref()
            .and_then(|v| v.running.as_ref())
            .and_then(|r| r.cgroup.as_ref())
        {
            Some(cgroup) => Ok(cgroup.metrics_v1()),
            None => Ok(containerd_shim_protos::cgroups::metrics::Metrics::new()),
        }
    }

    /// Removes a stopped container and everything the shim made for it; the sandbox takes the
    /// pod's folders (and libvirt's embedded root) with it.
    pub fn delete(&self, id: &str) -> Result<(u32, ExitInfo)> {
        let mut inner = self.lock();
        let c = inner
            .containers
            .get(id)
            .ok_or_else(|| Error::NotFound(id.to_owned()))?;
        if matches!(c.status, Status::Running | Status::Paused) {
            return Err(Error::FailedPrecondition(format!(
                "container {id} is still running; kill it first"
            )));
        }
        let _span = tracing::info_span!("delete", container_id = id).entered();
        let Some(c) = inner.containers.remove(id) else {
            return Err(Error::NotFound(id.to_owned()));
        };
        let exit = c.exit.get().unwrap_or(ExitInfo { code: 0, at: now() });
        if let Some(run) = c.vm.as_ref().and_then(|v| v.running.as_ref()) {
            if let Some(libvirt) = &inner.libvirt {
                if let Err(e) = libvirt.undefine(&run.domain) {
                    tracing::warn!(error = %e, "cannot undefine the domain");
                }
            }
            if let Some(cgroup) = &run.cgroup {
                cgroup.remove();
            }
        }
        if c.kind == Kind::Compute {
            if let Some(paths) = &inner.paths {
                let _ = std::fs::remove_dir_all(paths.disks());
                let _ = std::fs::remove_file(paths.state_file());
                let _ = std::fs::remove_file(paths.serial_socket());
                let _ = std::fs::remove_file(paths.vnc_socket());
                let _ = std::fs::remove_file(paths.console_socket());
            }
        }
        if c.rootfs_mounted {
            rootfs::unmount(&c.bundle.rootfs());
        }
        if c.kind == Kind::Sandbox {
            inner.libvirt = None;
            if let Some(paths) = inner.paths.take() {
                crate::state::kill_qemus_under(&paths.embed_root());
                for dir in [&paths.run, &paths.lib] {
                    if let Err(e) = std::fs::remove_dir_all(dir) {
                        if e.kind() != std::io::ErrorKind::NotFound {
                            tracing::warn!(path = %dir.display(), error = %e, "cannot remove the pod's folder");
                        }
                    }
                }
            }
        }
        tracing::info!(code = exit.code, "deleted");
        Ok((c.pid, exit))
    }
}

/// A kill that finds the VM already off (the guest powered off, or QEMU died, just before) has
/// nothing left to do: its exit is being recorded. Any other failure is the caller's.
fn already_off(libvirt: &Libvirt, domain: &str, error: Error) -> Result<()> {
    match libvirt.state(domain) {
        Ok(VmState::Off(_)) | Err(_) => {
            tracing::info!(%domain, "the VM was already off");
            Ok(())
        }
        Ok(_) => Err(error),
    }
}

/// A guest that is still booting may miss one press of the power button (nothing listens for
/// it yet), so it is pressed again every few seconds until the VM is off; the kubelet's
/// SIGKILL at the end of the grace period ends the VM in any case.
fn keep_pressing(libvirt: Arc<Libvirt>, domain: String, exit: Arc<ExitCell>) {
    const EVERY: Duration = Duration::from_secs(3);
    const FOR_AT_MOST: Duration = Duration::from_secs(3600);
    let spawned = std::thread::Builder::new()
        .name("power-button".into())
        .spawn(move || {
            let started = std::time::Instant::now();
            while started.elapsed() < FOR_AT_MOST {
                if exit.wait_timeout(EVERY).is_some() {
                    return;
                }
                if libvirt
                    .state(&domain)
                    .map_or(true, |s| s != VmState::Running)
                {
                    return;
                }
                tracing::debug!(%domain, "pressing the ACPI power button again");
                let _ = libvirt.power_button(&domain);
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the power-button thread");
    }
}

/// The container's exit code: 0 for a guest that powered off, 137 when the shim destroyed it
/// (SIGKILL), else what QEMU's own exit says (128 + signal when it was killed).
fn exit_code(
    reason: Option<OffReason>,
    killed: bool,
    status: Option<nix::sys::wait::WaitStatus>,
) -> u32 {
    use nix::sys::wait::WaitStatus;
    match (reason, killed, status) {
        (Some(OffReason::GuestShutdown), _, _) => 0,
        (_, true, _) => 137,
        (_, _, Some(WaitStatus::Signaled(_, sig, _))) => 128 + sig as u32,
        (_, _, Some(WaitStatus::Exited(_, code))) if code != 0 => code as u32,
        _ => 255,
    }
}
