//! One pod's containers and its VM: what containerd's task calls do to them.
//!
//! The sandbox container and the containers that only carry an image (`volume<name>`,
//! `kernel-boot`) run nothing; their "process" is the shim itself. The `compute` container is
//! the VM: Create validates the VMI and prepares its disks (so a bad annotation fails
//! CreateContainer, before anything runs), Start boots QEMU with its CPUs paused, gives QEMU
//! to the container's cgroup, attaches the console and only then lets the guest run.
//!
//! This module decides what happens and in which order; every step that touches the node is a
//! call on the pod's [`Host`] (see `crate::host`), so the whole lifecycle is unit-tested over a
//! recording fake (`tests.rs`).

use crate::bundle::{check_id, Bundle, Role};
use crate::error::{Error, Result};
use crate::host::{Host, PreparedVm, ProcessExit, VmRequest};
use crate::libvirt::{LibvirtCode, OffReason, VmState};
use crate::paths::{PodPaths, Roots};
use crate::rootfs::RootfsMount;
use crate::state::PodState;
use crate::vm::VmiIdentity;
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
    pub at: std::time::SystemTime,
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
struct Running<G> {
    domain: String,
    cgroup: Option<G>,
    /// Set when the shim destroys the VM on SIGKILL, so the exit code says "killed".
    killed: Arc<AtomicBool>,
}

#[derive(Debug)]
struct VmSlot<H: Host> {
    identity: VmiIdentity,
    /// What the host prepared: shared with a start in progress, which runs without the lock.
    vm: Arc<H::Vm>,
    start_paused: bool,
    running: Option<Running<H::Cgroup>>,
}

#[derive(Debug)]
struct Container<H: Host> {
    bundle: Bundle,
    kind: Kind,
    stdout: String,
    stdin: String,
    terminal: bool,
    status: Status,
    pid: u32,
    exit: Arc<ExitCell>,
    rootfs_mounted: bool,
    vm: Option<VmSlot<H>>,
    /// While the VM starts (without the pod's lock): set by a `Kill` to cancel the start.
    starting: Option<Arc<AtomicBool>>,
}

#[derive(Debug)]
struct Inner<H: Host> {
    sandbox_id: Option<String>,
    paths: Option<PodPaths>,
    /// Pod annotations as the sandbox received them (the VMI may be read from there).
    sandbox_annotations: HashMap<String, String>,
    containers: HashMap<String, Container<H>>,
}

impl<H: Host> Default for Inner<H> {
    fn default() -> Self {
        Self {
            sandbox_id: None,
            paths: None,
            sandbox_annotations: HashMap::new(),
            containers: HashMap::new(),
        }
    }
}

/// What a VM's preparation reads of its pod, taken under the pod's lock.
#[derive(Debug)]
struct PodView {
    paths: Option<PodPaths>,
    sandbox_annotations: HashMap<String, String>,
    /// The root filesystems of the containers carrying images, by container name.
    carriers: HashMap<String, PathBuf>,
}

impl PodView {
    fn of<H: Host>(inner: &Inner<H>) -> Self {
        Self {
            paths: inner.paths.clone(),
            sandbox_annotations: inner.sandbox_annotations.clone(),
            carriers: inner
                .containers
                .values()
                .filter(|c| c.kind == Kind::Carrier)
                .filter_map(|c| match &c.bundle.role {
                    Role::Container { name, .. } => Some((name.clone(), c.bundle.rootfs())),
                    Role::Sandbox => None,
                })
                .collect(),
        }
    }
}

/// One pod, served by one shim, on the node `H` (see `crate::host`).
#[derive(Debug)]
pub struct Pod<H: Host> {
    roots: Roots,
    host: Arc<H>,
    exits: Arc<dyn ExitSink>,
    /// Why the shim is not in the pod's network namespace, when it could not enter it.
    netns_failure: Option<String>,
    inner: Mutex<Inner<H>>,
}

fn now() -> std::time::SystemTime {
    std::time::SystemTime::now()
}

/// Where the pod reports a task's exit (containerd's `TaskExit` event, from the service): the
/// pod's lifecycle knows nothing of ttrpc or protobuf.
pub trait ExitSink: Send + Sync + std::fmt::Debug {
    fn exit(&self, container_id: &str, pid: u32, exit: &ExitInfo);
}

/// The error a start returns when a `Kill` cancelled it.
pub(crate) fn killed_while_starting() -> Error {
    Error::FailedPrecondition("killed while starting".into())
}

impl<H: Host> Pod<H> {
    pub fn new(
        roots: Roots,
        host: H,
        exits: Arc<dyn ExitSink>,
        netns_failure: Option<String>,
    ) -> Self {
        Self {
            roots,
            host: Arc::new(host),
            exits,
            netns_failure,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner<H>> {
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
        let bundle = self
            .host
            .read_bundle(std::path::Path::new(bundle_dir), id)?;
        if let Some(failure) = &self.netns_failure {
            return Err(Error::FailedPrecondition(format!(
                "{failure}: the shim stops rather than work in the node's namespace"
            )));
        }
        let mut inner = self.lock();
        if inner.containers.contains_key(id) {
            return Err(Error::AlreadyExists(id.to_owned()));
        }
        let kind = match &bundle.role {
            Role::Sandbox => {
                let paths = self.roots.pod(id);
                self.host.create_pod_dirs(&paths)?;
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
        // What the VM's preparation reads of the pod; it runs without the lock (qemu-img, the
        // cloud-init image, bind mounts: seconds on a slow disk).
        let view = (kind == Kind::Compute).then(|| PodView::of(&inner));
        drop(inner);
        let _span = tracing::info_span!("create", container_id = id, pod = %bundle.pod).entered();

        let mut rootfs_mounted = false;
        if kind != Kind::Sandbox && !rootfs.is_empty() {
            self.host.mount_rootfs(rootfs, &bundle.rootfs())?;
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
            starting: None,
        };
        // Nothing half-made: a failure undoes the mount and whatever the preparation wrote.
        let undo = |container: &Container<H>, view: Option<&PodView>| {
            if let Some(paths) = view.and_then(|v| v.paths.as_ref()) {
                self.host.discard_vm(paths);
            }
            if container.rootfs_mounted {
                self.host.unmount_rootfs(&container.bundle.rootfs());
            }
        };
        if let Some(view) = &view {
            match self.prepare_vm(view, &container) {
                Ok(slot) => {
                    container.vm = Some(slot);
                    container.pid = 0;
                }
                Err(e) => {
                    undo(&container, Some(view));
                    tracing::warn!(error = %e, "create failed");
                    return Err(e);
                }
            }
        }
        let pid = container.pid;
        let mut inner = self.lock();
        if inner.containers.contains_key(id) {
            undo(&container, view.as_ref());
            return Err(Error::AlreadyExists(id.to_owned()));
        }
        inner.containers.insert(id.to_owned(), container);
        tracing::info!(pid, "created");
        Ok(pid)
    }

    /// Reads and validates the VMI and prepares its disks.
    fn prepare_vm(&self, inner: &PodView, compute: &Container<H>) -> Result<VmSlot<H>> {
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
        let identity = verified_identity(&vmi, &compute.bundle.pod)?;
        let paths = inner
            .paths
            .as_ref()
            .ok_or_else(|| Error::FailedPrecondition("the pod sandbox is missing".into()))?;
        let claim_capacities =
            contract::claim_capacities(annotation(contract::CLAIM_CAPACITY_ANNOTATION));
        let _span = tracing::info_span!(
            "prepare",
            namespace = %identity.namespace,
            vmi = %identity.name,
            vmi_uid = %identity.uid
        )
        .entered();
        let vm = self.host.prepare_vm(&VmRequest {
            identity: &identity,
            config: &config,
            paths,
            compute: &compute.bundle,
            carriers: &inner.carriers,
            claim_capacities: &claim_capacities,
        })?;
        Ok(VmSlot {
            identity,
            vm: Arc::new(vm),
            start_paused: config.start_paused,
            running: None,
        })
    }

    /// Starts a container. For the VM, the slow part (opening libvirt, which probes QEMU on a
    /// fresh root; wiring the network; QEMU's start) runs without the pod's lock, so containerd's
    /// `State`, `Pids` and `Connect` answer meanwhile and a `Kill` cancels the start.
    pub fn start(self: &Arc<Self>, id: &str) -> Result<u32> {
        let job = {
            let mut inner = self.lock();
            let paths = inner
                .paths
                .clone()
                .ok_or_else(|| Error::FailedPrecondition("the pod sandbox is missing".into()))?;
            let sandbox_id = inner.sandbox_id.clone().unwrap_or_default();
            let container = inner
                .containers
                .get_mut(id)
                .ok_or_else(|| Error::NotFound(id.to_owned()))?;
            if container.status != Status::Created || container.starting.is_some() {
                return Err(Error::FailedPrecondition(format!(
                    "container {id} was started already"
                )));
            }
            let Some(slot) = container.vm.as_ref() else {
                container.status = Status::Running;
                return Ok(container.pid);
            };
            let cancel = Arc::new(AtomicBool::new(false));
            container.starting = Some(cancel.clone());
            StartJob {
                id: id.to_owned(),
                sandbox_id,
                paths,
                identity: slot.identity.clone(),
                vm: slot.vm.clone(),
                start_paused: slot.start_paused,
                pod: container.bundle.pod.clone(),
                cgroups_path: container.bundle.cgroups_path.clone(),
                resources: container.bundle.resources.clone(),
                stdout: container.stdout.clone(),
                stdin: container.stdin.clone(),
                cancel,
            }
        };
        let vmi = format!("{}/{}", job.identity.namespace, job.identity.name);
        let _span = tracing::info_span!("start", container_id = id, %vmi).entered();
        let launched = launch(&*self.host, &job);

        let mut inner = self.lock();
        let Some(container) = inner.containers.get_mut(id) else {
            return Err(Error::NotFound(id.to_owned()));
        };
        container.starting = None;
        let cancelled = job.cancel.load(Ordering::SeqCst);
        let vm = match launched {
            Ok(vm) if !cancelled => vm,
            outcome => {
                // Killed while starting, or failed: nothing of the VM stays.
                if outcome.is_ok() {
                    let domain = job.vm.domain();
                    let _ = self.host.destroy(domain);
                    let _ = self.host.undefine(domain);
                    self.host.remove_record(&job.paths);
                }
                if !cancelled {
                    return Err(outcome
                        .err()
                        .unwrap_or_else(|| Error::FailedPrecondition("the start failed".into())));
                }
                let exit = ExitInfo {
                    code: 137,
                    at: now(),
                };
                container.status = Status::Stopped;
                container.exit.set(exit.clone());
                let pid = container.pid;
                drop(inner);
                tracing::info!("killed while starting");
                self.exits.exit(id, pid, &exit);
                return Err(Error::FailedPrecondition(format!(
                    "container {id} was killed while it started"
                )));
            }
        };
        let killed = Arc::new(AtomicBool::new(false));
        let Some(slot) = container.vm.as_mut() else {
            return Err(Error::NotFound(id.to_owned()));
        };
        let domain = job.vm.domain().to_owned();
        slot.running = Some(Running {
            domain: domain.clone(),
            cgroup: vm.cgroup,
            killed: killed.clone(),
        });
        container.status = if job.start_paused {
            Status::Paused
        } else {
            Status::Running
        };
        container.pid = vm.pid;
        drop(inner);
        tracing::info!(pid = vm.pid, "VM started");
        self.watch_exit(id.to_owned(), vm.pid, domain, killed, vm.console)?;
        Ok(vm.pid)
    }

    /// Waits for QEMU to exit (the shim is its subreaper), then records why.
    fn watch_exit(
        self: &Arc<Self>,
        id: String,
        pid: u32,
        domain: String,
        killed: Arc<AtomicBool>,
        console: Option<H::Console>,
    ) -> Result<()> {
        let pod = Arc::clone(self);
        let events = self.exits.clone();
        let host = self.host.clone();
        std::thread::Builder::new()
            .name("qemu-exit".into())
            .spawn(move || {
                let status: ProcessExit = host.wait_exit(pid);
                // libvirt notices the exit through QEMU's monitor on its event thread; give it a
                // moment to record the reason.
                let mut reason = None;
                for _ in 0..50 {
                    match host.vm_state(&domain) {
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
                    host.join_console(console);
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

    pub fn kill(&self, id: &str, signal: u32) -> Result<()> {
        let mut inner = self.lock();
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
        if let Some(cancel) = container.starting.clone() {
            cancel.store(true, Ordering::SeqCst);
            let paths = inner.paths.clone();
            drop(inner);
            tracing::info!("cancelling the start in progress");
            // A QEMU already running for the start (or libvirt's probe of it) is ended, so the
            // start returns now rather than whenever QEMU would have answered; it records the
            // exit.
            if let Some(paths) = paths {
                self.host.kill_vm_processes(&paths);
            }
            return Ok(());
        }
        let running = container.vm.as_ref().and_then(|vm| vm.running.as_ref());
        match running {
            Some(run) => {
                let domain = run.domain.clone();
                let paused = container.status == Status::Paused;
                let host = &*self.host;
                if sigkill || paused {
                    run.killed.store(true, Ordering::SeqCst);
                    drop(inner);
                    tracing::info!(%domain, "destroying the VM");
                    host.destroy(&domain)
                        .or_else(|e| already_off(host, &domain, StopCall::Destroy, e))
                } else {
                    let exit = container.exit.clone();
                    drop(inner);
                    tracing::info!(%domain, "pressing the ACPI power button");
                    match host.power_button(&domain) {
                        Ok(()) => keep_pressing(self.host.clone(), domain, exit),
                        Err(e) => already_off(host, &domain, StopCall::PowerButton, e)?,
                    }
                    Ok(())
                }
            }
            None => {
                // Nothing runs in this container: it ends now.
                let exit = ExitInfo {
                    code: if sigkill { 137 } else { 0 },
                    at: now(),
                };
                container.status = Status::Stopped;
                container.exit.set(exit.clone());
                let pid = container.pid;
                drop(inner);
                self.exits.exit(id, pid, &exit);
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

    /// Pauses or resumes the VM's CPUs; libvirt is called without the pod's lock (a QEMU that
    /// does not answer must not hold up `State` or the `Kill` that would end it).
    fn set_paused(&self, id: &str, pause: bool) -> Result<()> {
        let domain = {
            let inner = self.lock();
            let c = inner
                .containers
                .get(id)
                .ok_or_else(|| Error::NotFound(id.to_owned()))?;
            let Some(run) = c.vm.as_ref().and_then(|v| v.running.as_ref()) else {
                return Err(Error::FailedPrecondition(format!(
                    "container {id} is not a running VM"
                )));
            };
            match (pause, c.status) {
                (true, Status::Running) | (false, Status::Paused) => {}
                (_, status) => {
                    return Err(Error::FailedPrecondition(format!(
                        "container {id} is {status:?}"
                    )))
                }
            }
            run.domain.clone()
        };
        if pause {
            self.host.suspend(&domain)?;
        } else {
            self.host.resume(&domain)?;
        }
        let mut inner = self.lock();
        if let Some(c) = inner.containers.get_mut(id) {
            // The VM may have stopped meanwhile: its exit stays what it is.
            if c.status != Status::Stopped {
                c.status = if pause {
                    Status::Paused
                } else {
                    Status::Running
                };
            }
        }
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
            Some(cgroup) => Ok(self.host.cgroup_metrics(cgroup)),
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
        if matches!(c.status, Status::Running | Status::Paused) || c.starting.is_some() {
            return Err(Error::FailedPrecondition(format!(
                "container {id} is still running; kill it first"
            )));
        }
        let _span = tracing::info_span!("delete", container_id = id).entered();
        let Some(c) = inner.containers.remove(id) else {
            return Err(Error::NotFound(id.to_owned()));
        };
        // Taken under the lock; the cleanup (libvirt, unmounts, folders) runs without it.
        let paths = inner.paths.clone();
        if c.kind == Kind::Sandbox {
            inner.paths = None;
        }
        drop(inner);
        let exit = c.exit.get().unwrap_or(ExitInfo { code: 0, at: now() });
        if let Some(run) = c.vm.as_ref().and_then(|v| v.running.as_ref()) {
            if let Err(e) = self.host.undefine(&run.domain) {
                tracing::warn!(error = %e, "cannot undefine the domain");
            }
            if let Some(cgroup) = &run.cgroup {
                self.host.remove_cgroup(cgroup);
            }
        }
        if c.kind == Kind::Compute {
            if let Some(paths) = &paths {
                self.host.discard_vm(paths);
            }
        }
        if c.rootfs_mounted {
            self.host.unmount_rootfs(&c.bundle.rootfs());
        }
        if c.kind == Kind::Sandbox {
            self.host.close_hypervisor();
            if let Some(paths) = paths {
                self.host.remove_pod(&paths);
            }
        }
        tracing::info!(code = exit.code, "deleted");
        Ok((c.pid, exit))
    }
}

/// What a VM's start needs, taken from the pod under its lock.
#[derive(Debug)]
struct StartJob<V> {
    id: String,
    sandbox_id: String,
    paths: PodPaths,
    identity: VmiIdentity,
    vm: Arc<V>,
    start_paused: bool,
    pod: crate::bundle::PodRef,
    cgroups_path: Option<String>,
    resources: crate::bundle::Resources,
    stdout: String,
    stdin: String,
    /// Set by a `Kill` while the start runs.
    cancel: Arc<AtomicBool>,
}

/// A VM that [`launch`] started.
struct Launched<H: Host> {
    pid: u32,
    cgroup: Option<H::Cgroup>,
    console: Option<H::Console>,
}

/// The slow part of a VM's start, run without the pod's lock: opens the pod's hypervisor (the
/// first time), wires the pod network to the VM, starts QEMU with its CPUs paused, puts it in
/// the container's cgroup, attaches the console, writes the node record, and lets the guest
/// run. A failure after QEMU started stops it again.
fn launch<H: Host>(host: &H, job: &StartJob<H::Vm>) -> Result<Launched<H>> {
    let cancelled = || {
        if job.cancel.load(Ordering::SeqCst) {
            Err(killed_while_starting())
        } else {
            Ok(())
        }
    };
    host.open_hypervisor(&job.paths, &job.vm, &job.cancel)?;
    cancelled()?;
    host.wire_network(&job.vm)?;
    let domain = job.vm.domain();
    let launched = std::time::Instant::now();
    let pid = host.start_paused(&job.vm)?;
    tracing::info!(
        elapsed_ms = launched.elapsed().as_millis() as u64,
        pid,
        "QEMU started, CPUs paused"
    );
    let mut cgroup = None;
    let attached = (|| -> Result<Option<H::Console>> {
        cancelled()?;
        if let Some(path) = &job.cgroups_path {
            cgroup = Some(host.confine(pid, path, &job.resources)?);
        }
        let endpoints = crate::console::Endpoints {
            stdout: job.stdout.clone(),
            stdin: job.stdin.clone(),
            listen: job.paths.console_socket(),
        };
        let console = host.attach_console(&job.vm, &endpoints, &job.id)?;
        let record = PodState {
            qemu_pid: pid,
            domain: domain.to_owned(),
            embed_root: job.paths.embed_root(),
            vmi: Some(crate::state::VmiRecord {
                namespace: job.identity.namespace.clone(),
                name: job.identity.name.clone(),
                uid: job.identity.uid.clone(),
            }),
            pod: Some(crate::state::PodRecord {
                namespace: job.pod.namespace.clone(),
                name: job.pod.name.clone(),
                uid: job.pod.uid.clone(),
            }),
            sandbox_id: job.sandbox_id.clone(),
            container_id: job.id.clone(),
            pod_ip: job.vm.pod_ip(),
        };
        host.write_record(&job.paths, &record)?;
        cancelled()?;
        if !job.start_paused {
            host.resume(domain)?;
        }
        Ok(console)
    })();
    match attached {
        Ok(console) => Ok(Launched {
            pid,
            cgroup,
            console,
        }),
        Err(e) => {
            tracing::warn!(error = %e, "start failed; stopping QEMU");
            let _ = host.destroy(domain);
            let _ = host.undefine(domain);
            host.remove_record(&job.paths);
            if let Some(cgroup) = &cgroup {
                host.remove_cgroup(cgroup);
            }
            Err(e)
        }
    }
}

/// Who the VM is: its namespace is the pod's, as containerd's CRI plugin names it, and its name
/// must be the one the pod's name was made from (`virt-launcher-<vmi>-xxxxx`). The annotation
/// says which VMI the pod runs; it cannot make a pod in one namespace run (or be found by the
/// handler as) a VMI of another.
fn verified_identity(
    vmi: &virtshim_api::types::VirtualMachineInstance,
    pod: &crate::bundle::PodRef,
) -> Result<VmiIdentity> {
    let refused = |field: &str, message: String| Error::Refused {
        field: format!("{field} (in the {} annotation)", contract::VMI_ANNOTATION),
        message,
    };
    let namespace = match vmi.metadata.namespace.as_deref() {
        Some(ns) if ns != pod.namespace => {
            return Err(refused(
                "metadata.namespace",
                format!(
                    "names namespace {ns:?}, but the pod is in {:?}: a pod runs only a VMI of its own namespace",
                    pod.namespace
                ),
            ))
        }
        _ => pod.namespace.clone(),
    };
    let name = vmi.metadata.name.clone().unwrap_or_default();
    // The apiserver's own rules for these names; they end up in the libvirt domain's name
    // and in log fields, so a hostile annotation must not get anything else through.
    if !is_dns_subdomain(&name) || !is_dns_label(&namespace) {
        return Err(Error::Vmi {
            annotation: contract::VMI_ANNOTATION,
            message: "metadata.name must be a DNS subdomain and metadata.namespace a DNS label"
                .into(),
        });
    }
    if !contract::is_launcher_pod_of(&pod.name, &name) {
        return Err(refused(
            "metadata.name",
            format!(
                "names VMI {name:?}, whose pod would be named {:?} and five characters, not {:?}",
                contract::launcher_name_prefix(&name),
                pod.name
            ),
        ));
    }
    Ok(VmiIdentity {
        namespace,
        name,
        uid: vmi.metadata.uid.clone().unwrap_or_default(),
    })
}

/// The call a kill stops the VM with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StopCall {
    Destroy,
    PowerButton,
}

/// What a failed [`StopCall`]'s error says about the VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AfterFailedStop {
    /// libvirt said nothing runs: the VM is off.
    Off,
    /// libvirt failed the call for another reason.
    Failed,
    /// The error cannot tell: only the VM's state can.
    AskState,
}

/// Reads libvirt's code (`None`: not an error libvirt reported) for a failed stop call.
/// `NoDomain` means nothing runs under the name. Destroy reports `OperationInvalid` only for a
/// domain that is not running, but the power button reports it for a paused one too (libvirt
/// presses it only on a running domain), so that one case still asks the VM's state; so does
/// an error libvirt never answered with, as before codes were kept.
fn after_failed_stop(call: StopCall, code: Option<LibvirtCode>) -> AfterFailedStop {
    match (code, call) {
        (Some(LibvirtCode::NoDomain), _) => AfterFailedStop::Off,
        (Some(LibvirtCode::OperationInvalid), StopCall::Destroy) => AfterFailedStop::Off,
        (Some(LibvirtCode::OperationInvalid), StopCall::PowerButton) | (None, _) => {
            AfterFailedStop::AskState
        }
        (Some(LibvirtCode::Other(_)), _) => AfterFailedStop::Failed,
    }
}

/// A kill that finds the VM already off (the guest powered off, or QEMU died, just before) has
/// nothing left to do: its exit is being recorded. Any other failure is the caller's. libvirt's
/// code decides where it can (see [`after_failed_stop`]).
fn already_off<H: Host>(host: &H, domain: &str, call: StopCall, error: Error) -> Result<()> {
    let off = match after_failed_stop(call, error.libvirt_code()) {
        AfterFailedStop::Off => true,
        AfterFailedStop::Failed => false,
        AfterFailedStop::AskState => {
            matches!(host.vm_state(domain), Ok(VmState::Off(_)) | Err(_))
        }
    };
    if off {
        tracing::info!(%domain, "the VM was already off");
        Ok(())
    } else {
        Err(error)
    }
}

/// A guest that is still booting may miss one press of the power button (nothing listens for
/// it yet), so it is pressed again every few seconds until the VM is off; the kubelet's
/// SIGKILL at the end of the grace period ends the VM in any case.
fn keep_pressing<H: Host>(host: Arc<H>, domain: String, exit: Arc<ExitCell>) {
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
                if host
                    .vm_state(&domain)
                    .map_or(true, |s| s != VmState::Running)
                {
                    return;
                }
                tracing::debug!(%domain, "pressing the ACPI power button again");
                let _ = host.power_button(&domain);
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the power-button thread");
    }
}

/// The container's exit code: 0 for a guest that powered off, 137 when the shim destroyed it
/// (SIGKILL), else what QEMU's own exit says (128 + signal when it was killed).
fn exit_code(reason: Option<OffReason>, killed: bool, status: ProcessExit) -> u32 {
    use nix::sys::wait::WaitStatus;
    match (reason, killed, status) {
        (Some(OffReason::GuestShutdown), _, _) => 0,
        (_, true, _) => 137,
        (_, _, Some(WaitStatus::Signaled(_, sig, _))) => 128 + sig as u32,
        (_, _, Some(WaitStatus::Exited(_, code))) if code != 0 => code as u32,
        _ => 255,
    }
}

#[cfg(test)]
mod tests;
