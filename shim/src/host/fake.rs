//! A recording fake of the node, for the pod's unit tests: it keeps what a real node would
//! hold (pod folders, mounts, prepared VMs, domains, QEMU processes, cgroups, records, the
//! hypervisor connection) as plain sets, records each call, fails any step on request, and
//! holds any step until the test releases it (a stalled start).
//!
//! Bundles are real `config.json` texts, read by the real [`Bundle::from_json`], so the pod's
//! refusals are the shim's own.

use super::{Host, PreparedVm, ProcessExit, VmRequest};
use crate::bundle::{Bundle, MountPolicy, Resources};
use crate::console::Endpoints;
use crate::error::{Error, LibvirtCause, LibvirtCode, Result};
use crate::libvirt::{OffReason, VmState};
use crate::paths::PodPaths;
use crate::rootfs::RootfsMount;
use crate::state::PodState;
use nix::sys::signal::Signal;
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// A step a test can make fail or hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Step {
    ReadBundle,
    CreatePodDirs,
    MountRootfs,
    PrepareVm,
    OpenHypervisor,
    WireNetwork,
    StartPaused,
    Confine,
    AttachConsole,
    WriteRecord,
    Resume,
    Suspend,
    PowerButton,
    Destroy,
    Undefine,
}

#[derive(Debug)]
pub struct FakeVm {
    domain: String,
}

impl PreparedVm for FakeVm {
    fn domain(&self) -> &str {
        &self.domain
    }
    fn pod_ip(&self) -> Option<std::net::IpAddr> {
        None
    }
}

#[derive(Debug)]
struct Domain {
    state: VmState,
    pid: u32,
}

#[derive(Debug, Default)]
struct World {
    calls: Vec<String>,
    bundles: HashMap<PathBuf, String>,
    failing: HashSet<Step>,
    held: HashSet<Step>,
    waiting: HashSet<Step>,
    /// Bumped by `kill_vm_processes`: a held start step then fails, as a libvirt call does
    /// when its QEMU is killed.
    kills: u64,
    pod_dirs: BTreeSet<PathBuf>,
    mounts: BTreeSet<PathBuf>,
    prepared: BTreeSet<PathBuf>,
    records: BTreeSet<PathBuf>,
    cgroups: BTreeSet<String>,
    hypervisor_open: bool,
    domains: HashMap<String, Domain>,
    /// QEMU processes by pid: `None` while they run.
    processes: HashMap<u32, Option<WaitStatus>>,
    next_pid: u32,
    consoles: usize,
    /// The guest ignores the ACPI power button (still booting, or no ACPI daemon).
    deaf_guest: bool,
    /// Which host paths the node's administrator allows as volumes.
    volume_policy: MountPolicy,
}

/// The fake node; clones share it (the pod owns one, the test keeps another).
#[derive(Clone, Debug, Default)]
pub struct FakeHost {
    world: Arc<(Mutex<World>, Condvar)>,
}

/// What stands for a running console: its threads end when QEMU's serial socket closes, so
/// dropping it is the end of the console.
#[derive(Debug)]
pub struct FakeConsole(FakeHost);

impl Drop for FakeConsole {
    fn drop(&mut self) {
        let mut w = self.0.world();
        w.consoles = w.consoles.saturating_sub(1);
    }
}

impl FakeHost {
    /// A node whose administrator allows the volumes `mounts` allows.
    pub fn new(mounts: MountPolicy) -> Self {
        let host = Self::default();
        host.world().volume_policy = mounts;
        host
    }

    fn world(&self) -> MutexGuard<'_, World> {
        match self.world.0.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    fn changed(&self) {
        self.world.1.notify_all();
    }

    /// Waits on the world's condition variable for at most `timeout`.
    fn wait<'a>(&self, guard: MutexGuard<'a, World>, timeout: Duration) -> MutexGuard<'a, World> {
        match self.world.1.wait_timeout(guard, timeout) {
            Ok((g, _)) => g,
            Err(p) => p.into_inner().0,
        }
    }

    /// `config.json` of the bundle in `dir`.
    pub fn add_bundle(&self, dir: &str, config: String) {
        self.world().bundles.insert(PathBuf::from(dir), config);
    }

    pub fn fail(&self, step: Step) {
        self.world().failing.insert(step);
    }

    pub fn heal(&self, step: Step) {
        self.world().failing.remove(&step);
    }

    /// Makes `step` block, when it is reached, until [`FakeHost::release`].
    pub fn hold(&self, step: Step) {
        self.world().held.insert(step);
    }

    pub fn release(&self, step: Step) {
        self.world().held.remove(&step);
        self.changed();
    }

    /// Blocks until a call waits at the held `step` (panics after 10 s: the test is wrong).
    pub fn wait_until_held(&self, step: Step) {
        let mut world = self.world();
        for _ in 0..1000 {
            if world.waiting.contains(&step) {
                return;
            }
            world = self.wait(world, Duration::from_millis(10));
        }
        panic!("nothing reached {step:?}");
    }

    pub fn set_deaf_guest(&self, deaf: bool) {
        self.world().deaf_guest = deaf;
    }

    /// The calls made so far, as `step argument` lines.
    pub fn calls(&self) -> Vec<String> {
        self.world().calls.clone()
    }

    pub fn clear_calls(&self) {
        self.world().calls.clear();
    }

    /// Everything the pod made on the node that is still there.
    pub fn leftovers(&self) -> Vec<String> {
        let w = self.world();
        let mut out = Vec::new();
        out.extend(
            w.pod_dirs
                .iter()
                .map(|p| format!("pod folder {}", p.display())),
        );
        out.extend(w.mounts.iter().map(|p| format!("mount {}", p.display())));
        out.extend(
            w.prepared
                .iter()
                .map(|p| format!("VM files {}", p.display())),
        );
        out.extend(w.records.iter().map(|p| format!("record {}", p.display())));
        out.extend(w.cgroups.iter().map(|c| format!("cgroup {c}")));
        out.extend(w.domains.keys().map(|d| format!("domain {d}")));
        out.extend(
            w.processes
                .iter()
                .filter(|(_, exit)| exit.is_none())
                .map(|(pid, _)| format!("QEMU {pid}")),
        );
        if w.hypervisor_open {
            out.push("hypervisor connection".into());
        }
        if w.consoles > 0 {
            out.push(format!("{} console(s)", w.consoles));
        }
        out.sort();
        out
    }

    /// The guest powers itself off (only a running guest can).
    pub fn guest_powers_off(&self, domain: &str) {
        let mut w = self.world();
        if w.domains.get(domain).map(|d| d.state) != Some(VmState::Running) {
            return;
        }
        stop_domain(&mut w, domain, OffReason::GuestShutdown, exited(0));
        drop(w);
        self.changed();
    }

    /// QEMU dies of `signal` on its own.
    pub fn qemu_dies(&self, domain: &str, signal: Signal) {
        let mut w = self.world();
        let pid = w.domains.get(domain).map_or(0, |d| d.pid);
        stop_domain(
            &mut w,
            domain,
            OffReason::Crashed,
            WaitStatus::Signaled(Pid::from_raw(pid as i32), signal, false),
        );
        drop(w);
        self.changed();
    }

    /// Records the call; fails it if asked to; holds it while asked to (failing it if QEMU is
    /// killed or `cancel` is set meanwhile).
    fn enter(&self, step: Step, arg: &str, cancel: Option<&AtomicBool>) -> Result<()> {
        let mut w = self.world();
        w.calls
            .push(format!("{step:?} {arg}").trim_end().to_owned());
        let kills = w.kills;
        if w.held.contains(&step) {
            w.waiting.insert(step);
            self.changed();
            while w.held.contains(&step) {
                if w.kills != kills || cancel.is_some_and(|c| c.load(Ordering::SeqCst)) {
                    w.waiting.remove(&step);
                    return Err(Error::FailedPrecondition(format!(
                        "{step:?}: QEMU was killed"
                    )));
                }
                w = self.wait(w, Duration::from_millis(5));
            }
            w.waiting.remove(&step);
        }
        if w.failing.contains(&step) {
            return Err(Error::FailedPrecondition(format!(
                "{step:?} failed (injected)"
            )));
        }
        Ok(())
    }

    fn domain_call(
        &self,
        step: Step,
        domain: &str,
        act: impl FnOnce(&mut World) -> Result<()>,
    ) -> Result<()> {
        self.enter(step, domain, None)?;
        let mut w = self.world();
        if !w.hypervisor_open {
            return Err(not_open());
        }
        let result = act(&mut w);
        drop(w);
        self.changed();
        result
    }
}

fn exited(code: i32) -> WaitStatus {
    WaitStatus::Exited(Pid::from_raw(0), code)
}

fn stop_domain(w: &mut World, domain: &str, reason: OffReason, status: WaitStatus) {
    let Some(d) = w.domains.get_mut(domain) else {
        return;
    };
    if matches!(d.state, VmState::Off(_)) {
        return;
    }
    d.state = VmState::Off(reason);
    let pid = d.pid;
    w.processes.insert(pid, Some(status));
}

/// An error as libvirt reports it, with its code: the pod decides by the code.
pub fn libvirt(context: &'static str, code: LibvirtCode, message: String) -> Error {
    Error::Libvirt {
        context,
        cause: LibvirtCause::Reported {
            code,
            domain: virt::enumutil::Enum::Known(virt::error::ErrorDomain::Qemu),
            message,
        },
    }
}

fn no_domain(domain: &str) -> Error {
    libvirt(
        "looking up the domain",
        LibvirtCode::NoDomain,
        format!("no domain with matching name '{domain}'"),
    )
}

/// libvirt's answer to a destroy, or a press of the power button, when the domain is not
/// running (for the power button: not running *now*, paused included).
fn not_running(context: &'static str) -> Error {
    libvirt(
        context,
        LibvirtCode::OperationInvalid,
        "domain is not running".into(),
    )
}

/// What `NodeHost` answers before libvirt is open.
fn not_open() -> Error {
    Error::Libvirt {
        context: "reaching the VM",
        cause: LibvirtCause::Unreachable("the hypervisor is not open"),
    }
}

impl Host for FakeHost {
    type Vm = FakeVm;
    type Cgroup = String;
    type Console = FakeConsole;

    fn read_bundle(&self, dir: &Path, id: &str) -> Result<Bundle> {
        self.enter(Step::ReadBundle, &dir.to_string_lossy(), None)?;
        let (text, policy) = {
            let w = self.world();
            (w.bundles.get(dir).cloned(), w.volume_policy.clone())
        };
        let text = text.ok_or_else(|| {
            Error::path(
                "reading the OCI spec",
                dir.join("config.json"),
                std::io::ErrorKind::NotFound.into(),
            )
        })?;
        Bundle::from_json(dir, id, &text, &policy)
    }

    fn create_pod_dirs(&self, paths: &PodPaths) -> Result<()> {
        self.enter(Step::CreatePodDirs, &paths.run.to_string_lossy(), None)?;
        let mut w = self.world();
        w.pod_dirs.insert(paths.run.clone());
        w.pod_dirs.insert(paths.lib.clone());
        Ok(())
    }

    fn remove_pod(&self, paths: &PodPaths) {
        self.kill_vm_processes(paths);
        let mut w = self.world();
        w.calls.push(format!("RemovePod {}", paths.run.display()));
        w.pod_dirs.remove(&paths.run);
        w.pod_dirs.remove(&paths.lib);
        w.prepared.remove(&paths.run);
        w.records.remove(&paths.run);
    }

    fn mount_rootfs(&self, _mounts: &[RootfsMount], target: &Path) -> Result<()> {
        self.enter(Step::MountRootfs, &target.to_string_lossy(), None)?;
        self.world().mounts.insert(target.to_path_buf());
        Ok(())
    }

    fn unmount_rootfs(&self, target: &Path) {
        let mut w = self.world();
        w.calls.push(format!("UnmountRootfs {}", target.display()));
        w.mounts.remove(target);
    }

    fn prepare_vm(&self, request: &VmRequest<'_>) -> Result<FakeVm> {
        let domain = request.identity.domain_name();
        self.enter(Step::PrepareVm, &domain, None)?;
        self.world().prepared.insert(request.paths.run.clone());
        Ok(FakeVm { domain })
    }

    fn discard_vm(&self, paths: &PodPaths) {
        let mut w = self.world();
        w.calls.push("DiscardVm".into());
        w.prepared.remove(&paths.run);
        w.records.remove(&paths.run);
    }

    fn open_hypervisor(&self, _paths: &PodPaths, _vm: &FakeVm, cancel: &AtomicBool) -> Result<()> {
        self.enter(Step::OpenHypervisor, "", Some(cancel))?;
        self.world().hypervisor_open = true;
        Ok(())
    }

    fn close_hypervisor(&self) {
        let mut w = self.world();
        w.calls.push("CloseHypervisor".into());
        w.hypervisor_open = false;
    }

    fn wire_network(&self, vm: &FakeVm) -> Result<()> {
        self.enter(Step::WireNetwork, &vm.domain, None)
    }

    fn start_paused(&self, vm: &FakeVm) -> Result<u32> {
        self.enter(Step::StartPaused, &vm.domain, None)?;
        let mut w = self.world();
        if !w.hypervisor_open {
            return Err(not_open());
        }
        if w.domains.contains_key(&vm.domain) {
            return Err(Error::FailedPrecondition(format!(
                "domain {} exists already",
                vm.domain
            )));
        }
        w.next_pid += 1;
        let pid = 1000 + w.next_pid;
        w.processes.insert(pid, None);
        w.domains.insert(
            vm.domain.clone(),
            Domain {
                state: VmState::Paused,
                pid,
            },
        );
        Ok(pid)
    }

    fn confine(&self, pid: u32, cgroups_path: &str, _resources: &Resources) -> Result<String> {
        self.enter(Step::Confine, &format!("{pid} {cgroups_path}"), None)?;
        self.world().cgroups.insert(cgroups_path.to_owned());
        Ok(cgroups_path.to_owned())
    }

    fn attach_console(
        &self,
        vm: &FakeVm,
        _endpoints: &Endpoints,
        _container_id: &str,
    ) -> Result<Option<FakeConsole>> {
        self.enter(Step::AttachConsole, &vm.domain, None)?;
        self.world().consoles += 1;
        Ok(Some(FakeConsole(self.clone())))
    }

    fn write_record(&self, paths: &PodPaths, record: &PodState) -> Result<()> {
        self.enter(Step::WriteRecord, &record.domain, None)?;
        self.world().records.insert(paths.run.clone());
        Ok(())
    }

    fn remove_record(&self, paths: &PodPaths) {
        let mut w = self.world();
        w.calls.push("RemoveRecord".into());
        w.records.remove(&paths.run);
    }

    fn resume(&self, domain: &str) -> Result<()> {
        self.domain_call(Step::Resume, domain, |w| {
            let d = w.domains.get_mut(domain).ok_or_else(|| no_domain(domain))?;
            match d.state {
                VmState::Paused => {
                    d.state = VmState::Running;
                    Ok(())
                }
                other => Err(Error::FailedPrecondition(format!("domain is {other:?}"))),
            }
        })
    }

    fn suspend(&self, domain: &str) -> Result<()> {
        self.domain_call(Step::Suspend, domain, |w| {
            let d = w.domains.get_mut(domain).ok_or_else(|| no_domain(domain))?;
            match d.state {
                VmState::Running => {
                    d.state = VmState::Paused;
                    Ok(())
                }
                other => Err(Error::FailedPrecondition(format!("domain is {other:?}"))),
            }
        })
    }

    fn power_button(&self, domain: &str) -> Result<()> {
        self.domain_call(Step::PowerButton, domain, |w| {
            let state = w
                .domains
                .get(domain)
                .ok_or_else(|| no_domain(domain))?
                .state;
            match state {
                VmState::Running if !w.deaf_guest => {
                    stop_domain(w, domain, OffReason::GuestShutdown, exited(0));
                    Ok(())
                }
                VmState::Running => Ok(()),
                _ => Err(not_running("pressing the ACPI power button")),
            }
        })
    }

    fn destroy(&self, domain: &str) -> Result<()> {
        self.domain_call(Step::Destroy, domain, |w| {
            let d = w.domains.get(domain).ok_or_else(|| no_domain(domain))?;
            if matches!(d.state, VmState::Off(_)) {
                return Err(not_running("destroying the VM"));
            }
            let pid = d.pid;
            stop_domain(
                w,
                domain,
                OffReason::Destroyed,
                WaitStatus::Signaled(Pid::from_raw(pid as i32), Signal::SIGKILL, false),
            );
            Ok(())
        })
    }

    fn undefine(&self, domain: &str) -> Result<()> {
        self.domain_call(Step::Undefine, domain, |w| {
            let d = w.domains.get(domain).ok_or_else(|| no_domain(domain))?;
            if !matches!(d.state, VmState::Off(_)) {
                return Err(Error::FailedPrecondition("domain is running".into()));
            }
            w.domains.remove(domain);
            Ok(())
        })
    }

    fn vm_state(&self, domain: &str) -> Result<VmState> {
        let w = self.world();
        w.domains
            .get(domain)
            .map(|d| d.state)
            .ok_or_else(|| no_domain(domain))
    }

    fn kill_vm_processes(&self, _paths: &PodPaths) {
        let mut w = self.world();
        w.calls.push("KillVmProcesses".into());
        w.kills += 1;
        let names: Vec<String> = w.domains.keys().cloned().collect();
        for name in names {
            let pid = w.domains.get(&name).map_or(0, |d| d.pid);
            stop_domain(
                &mut w,
                &name,
                OffReason::Crashed,
                WaitStatus::Signaled(Pid::from_raw(pid as i32), Signal::SIGKILL, false),
            );
        }
        drop(w);
        self.changed();
    }

    fn wait_exit(&self, pid: u32) -> ProcessExit {
        let mut w = self.world();
        loop {
            match w.processes.get(&pid) {
                Some(Some(status)) => return Some(*status),
                Some(None) => w = self.wait(w, Duration::from_millis(50)),
                None => return None,
            }
        }
    }

    fn join_console(&self, console: FakeConsole) {
        drop(console);
    }

    fn cgroup_metrics(
        &self,
        _cgroup: &String,
    ) -> containerd_shim_protos::cgroups::metrics::Metrics {
        containerd_shim_protos::cgroups::metrics::Metrics::new()
    }

    fn remove_cgroup(&self, cgroup: &String) {
        let mut w = self.world();
        w.calls.push(format!("RemoveCgroup {cgroup}"));
        w.cgroups.remove(cgroup);
    }
}
