//! The pod's lifecycle over the recording fake node (`crate::host::fake`): each transition,
//! a failure at each step, a stalled start, containerd reconnecting, and every order of calls
//! up to a length, checked against a model of what containerd must see.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;
use crate::bundle::MountPolicy;
use crate::host::fake::{FakeHost, Step};
use nix::sys::signal::Signal;
use serde_json::json;
use std::sync::mpsc;

use crate::seeds;

const SANDBOX: &str = seeds::OWN_ID;
const COMPUTE: &str = seeds::COMPUTE_ID;
const DOMAIN: &str = "default_vm1";
const SIGTERM: u32 = Signal::SIGTERM as u32;
const SIGKILL: u32 = Signal::SIGKILL as u32;

/// The exits the pod reported, as containerd's event stream would carry them.
#[derive(Debug, Default)]
struct Exits(Mutex<Vec<(String, u32)>>);

impl ExitSink for Exits {
    fn exit(&self, container_id: &str, _pid: u32, exit: &ExitInfo) {
        self.0
            .lock()
            .unwrap()
            .push((container_id.to_owned(), exit.code));
    }
}

impl Exits {
    fn of(&self, id: &str) -> Vec<u32> {
        let exits = self.0.lock().unwrap();
        exits
            .iter()
            .filter(|(c, _)| c == id)
            .map(|(_, code)| *code)
            .collect()
    }
}

/// The VMI the pod's annotation carries (the pod's name is `virt-launcher-vm1-x7k2q`).
fn vmi(namespace: &str) -> String {
    json!({
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstance",
        "metadata": {"name": "vm1", "namespace": namespace, "uid": "vmi-uid"},
        "spec": {"domain": {"devices": {}, "resources": {"requests": {"memory": "64Mi"}}}}
    })
    .to_string()
}

fn spec(container: Option<&str>, edit: impl FnOnce(&mut serde_json::Value)) -> String {
    let mut spec = seeds::oci_spec(container);
    spec["annotations"]["virtshim.io/vmi"] = json!(vmi("default"));
    edit(&mut spec);
    spec.to_string()
}

struct Fixture {
    pod: Arc<Pod<FakeHost>>,
    host: FakeHost,
    exits: Arc<Exits>,
}

fn io() -> TaskIo {
    TaskIo::default()
}

fn image() -> Vec<RootfsMount> {
    vec![RootfsMount {
        kind: "overlay".into(),
        source: "overlay".into(),
        options: vec![],
    }]
}

impl Fixture {
    /// A pod with `netns_failure` and the bundles containerd writes for it.
    fn with(netns_failure: Option<String>) -> Self {
        let host = FakeHost::new(MountPolicy::from_roots([PathBuf::from(
            seeds::STORAGE_ROOT,
        )]));
        host.add_bundle("/b/sandbox", spec(None, |_| {}));
        host.add_bundle("/b/compute", spec(Some("compute"), |_| {}));
        let exits = Arc::new(Exits::default());
        let roots = Roots {
            run: "/run/virtshim".into(),
            lib: "/var/lib/virtshim".into(),
            cache: "/var/lib/virtshim/cache".into(),
        };
        let pod = Arc::new(Pod::new(roots, host.clone(), exits.clone(), netns_failure));
        Self { pod, host, exits }
    }

    /// A pod whose sandbox runs and whose compute container is created.
    fn created() -> Self {
        let f = Self::with(None);
        f.pod.create(SANDBOX, "/b/sandbox", &[], &io()).unwrap();
        f.pod.start(SANDBOX).unwrap();
        f.pod
            .create(COMPUTE, "/b/compute", &image(), &io())
            .unwrap();
        f
    }

    fn running() -> Self {
        let f = Self::created();
        f.pod.start(COMPUTE).unwrap();
        f
    }

    fn status(&self) -> Status {
        self.pod.state(COMPUTE).unwrap().status
    }

    /// Waits until compute is stopped and its exit event is sent. The exit watcher does both on
    /// its own thread, in that order (containerd, told of the exit, reads State and must see
    /// Stopped), so seeing Stopped alone does not mean the event is out yet.
    fn stopped(&self) -> ExitInfo {
        for _ in 0..2000 {
            let state = self.pod.state(COMPUTE).unwrap();
            if state.status == Status::Stopped && !self.exits.of(COMPUTE).is_empty() {
                return state.exit.expect("a stopped container has an exit");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!("compute did not stop, or its exit event was not sent");
    }

    /// Ends everything as the kubelet does, and returns what the node still holds.
    fn tear_down(&self) -> Vec<String> {
        if let Ok(state) = self.pod.state(COMPUTE) {
            if state.status != Status::Stopped {
                self.pod.kill(COMPUTE, SIGKILL).unwrap();
                self.stopped();
            }
            self.pod.delete(COMPUTE).unwrap();
        }
        if self.pod.state(SANDBOX).is_ok() {
            let _ = self.pod.kill(SANDBOX, SIGKILL);
            self.pod.delete(SANDBOX).unwrap();
        }
        assert!(self.pod.is_empty());
        self.host.leftovers()
    }
}

/// Runs `f` on a thread and fails the test, rather than hanging it, when `f` does not return:
/// a call that waits behind the pod's lock never would.
fn answers<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(20))
        .unwrap_or_else(|_| panic!("{what} did not answer"))
}

fn position(calls: &[String], step: &str) -> usize {
    calls
        .iter()
        .position(|c| c.starts_with(step))
        .unwrap_or_else(|| panic!("no {step} in {calls:#?}"))
}

#[test]
fn a_vm_starts_in_order_and_powers_off_through_the_power_button() {
    let f = Fixture::created();
    assert_eq!(f.status(), Status::Created);
    f.host.clear_calls();
    let pid = f.pod.start(COMPUTE).unwrap();
    assert_eq!(f.status(), Status::Running);
    assert_eq!(f.pod.state(COMPUTE).unwrap().pid, pid);
    let calls = f.host.calls();
    let order = [
        "OpenHypervisor",
        "WireNetwork",
        "StartPaused",
        "Confine",
        "AttachConsole",
        "WriteRecord",
        "Resume",
    ];
    let at: Vec<usize> = order.iter().map(|s| position(&calls, s)).collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "{calls:#?}");

    f.pod.kill(COMPUTE, SIGTERM).unwrap();
    assert_eq!(f.pod.wait(COMPUTE).unwrap().code, 0);
    f.stopped();
    assert_eq!(f.exits.of(COMPUTE), [0]);
    f.host.clear_calls();
    let (_, exit) = f.pod.delete(COMPUTE).unwrap();
    assert_eq!(exit.code, 0);
    let calls = f.host.calls();
    for step in ["Undefine", "RemoveCgroup", "DiscardVm", "UnmountRootfs"] {
        position(&calls, step);
    }
    assert_eq!(f.tear_down(), Vec::<String>::new());
}

#[test]
fn sigkill_destroys_the_vm_with_137() {
    let f = Fixture::running();
    f.pod.kill(COMPUTE, SIGKILL).unwrap();
    assert_eq!(f.stopped().code, 137);
    assert_eq!(f.exits.of(COMPUTE), [137]);
    assert_eq!(f.tear_down(), Vec::<String>::new());
}

#[test]
fn a_paused_vm_cannot_hear_the_power_button_and_is_destroyed() {
    let f = Fixture::running();
    f.pod.pause(COMPUTE).unwrap();
    assert_eq!(f.status(), Status::Paused);
    f.pod.kill(COMPUTE, SIGTERM).unwrap();
    assert_eq!(f.stopped().code, 137);
    assert_eq!(f.tear_down(), Vec::<String>::new());
}

#[test]
fn a_guest_deaf_to_the_power_button_runs_until_sigkill() {
    let f = Fixture::running();
    f.host.set_deaf_guest(true);
    f.pod.kill(COMPUTE, SIGTERM).unwrap();
    assert_eq!(f.status(), Status::Running);
    f.pod.kill(COMPUTE, SIGKILL).unwrap();
    assert_eq!(f.stopped().code, 137);
    assert_eq!(f.tear_down(), Vec::<String>::new());
}

#[test]
fn a_failed_stop_is_read_by_libvirts_code() {
    use AfterFailedStop::{AskState, Failed, Off};
    use LibvirtCode::{NoDomain, OperationInvalid, Other};
    let timeout = Other(virt::sys::VIR_ERR_OPERATION_TIMEOUT);
    for (call, code, after) in [
        (StopCall::Destroy, Some(NoDomain), Off),
        (StopCall::Destroy, Some(OperationInvalid), Off),
        (StopCall::Destroy, Some(timeout), Failed),
        (StopCall::Destroy, None, AskState),
        (StopCall::PowerButton, Some(NoDomain), Off),
        // libvirt refuses the power button of a paused VM with the same code.
        (StopCall::PowerButton, Some(OperationInvalid), AskState),
        (StopCall::PowerButton, Some(timeout), Failed),
        (StopCall::PowerButton, None, AskState),
    ] {
        assert_eq!(after_failed_stop(call, code), after, "{call:?} {code:?}");
    }
}

/// A kill's failed stop is judged by libvirt's code, not by what the VM's state says a moment
/// later; only what the code cannot tell asks the state.
#[test]
fn a_kill_that_finds_the_vm_off_is_done_by_libvirts_code() {
    use crate::host::fake::libvirt;
    let f = Fixture::running();
    let gone = libvirt(
        "destroying the VM",
        LibvirtCode::NoDomain,
        "no domain".into(),
    );
    assert!(
        already_off(&f.host, DOMAIN, StopCall::Destroy, gone).is_ok(),
        "no domain: nothing runs, though the state was not asked"
    );

    // Paused: the power button is refused as "not running", and the state says it is not off.
    f.pod.pause(COMPUTE).unwrap();
    let refused = f.host.power_button(DOMAIN).unwrap_err();
    assert_eq!(refused.libvirt_code(), Some(LibvirtCode::OperationInvalid));
    assert!(already_off(&f.host, DOMAIN, StopCall::PowerButton, refused).is_err());
    f.pod.resume(COMPUTE).unwrap();

    // Off: a destroy is refused as "not running", which is a kill already done; a destroy
    // that failed for another reason stays failed.
    f.host.guest_powers_off(DOMAIN);
    assert_eq!(f.stopped().code, 0);
    let refused = f.host.destroy(DOMAIN).unwrap_err();
    assert_eq!(refused.libvirt_code(), Some(LibvirtCode::OperationInvalid));
    assert!(already_off(&f.host, DOMAIN, StopCall::Destroy, refused).is_ok());
    let timeout = libvirt(
        "destroying the VM",
        LibvirtCode::Other(virt::sys::VIR_ERR_OPERATION_TIMEOUT),
        "cannot acquire state change lock".into(),
    );
    assert!(already_off(&f.host, DOMAIN, StopCall::Destroy, timeout).is_err());
    assert_eq!(f.tear_down(), Vec::<String>::new());
}

#[test]
fn the_guest_powering_off_or_qemu_dying_ends_the_container() {
    let f = Fixture::running();
    f.host.guest_powers_off(DOMAIN);
    assert_eq!(f.stopped().code, 0);
    assert_eq!(f.tear_down(), Vec::<String>::new());

    let f = Fixture::running();
    f.host.qemu_dies(DOMAIN, Signal::SIGSEGV);
    assert_eq!(f.stopped().code, 128 + Signal::SIGSEGV as u32);
    assert_eq!(f.exits.of(COMPUTE), [139]);
    assert_eq!(f.tear_down(), Vec::<String>::new());
}

#[test]
fn pause_and_resume_move_between_running_and_paused() {
    let f = Fixture::running();
    f.pod.pause(COMPUTE).unwrap();
    assert_eq!(f.status(), Status::Paused);
    assert!(f.pod.pause(COMPUTE).is_err());
    f.pod.resume(COMPUTE).unwrap();
    assert_eq!(f.status(), Status::Running);
    assert!(f.pod.resume(COMPUTE).is_err());
    // A failed pause changes nothing.
    f.host.fail(Step::Suspend);
    assert!(f.pod.pause(COMPUTE).is_err());
    assert_eq!(f.status(), Status::Running);
    assert_eq!(f.tear_down(), Vec::<String>::new());
}

#[test]
fn a_create_that_fails_at_any_step_leaves_nothing() {
    for step in [Step::ReadBundle, Step::MountRootfs, Step::PrepareVm] {
        let f = Fixture::with(None);
        f.pod.create(SANDBOX, "/b/sandbox", &[], &io()).unwrap();
        f.host.fail(step);
        let error = f
            .pod
            .create(COMPUTE, "/b/compute", &image(), &io())
            .unwrap_err();
        assert!(error.to_string().contains("injected"), "{step:?}: {error}");
        assert!(matches!(f.pod.state(COMPUTE), Err(Error::NotFound(_))));
        let left = f.host.leftovers();
        assert!(
            left.iter().all(|l| l.starts_with("pod folder")),
            "{step:?}: {left:?}"
        );
        // containerd may try again.
        f.host.heal(step);
        f.pod
            .create(COMPUTE, "/b/compute", &image(), &io())
            .unwrap();
        assert_eq!(f.tear_down(), Vec::<String>::new(), "{step:?}");
    }

    let f = Fixture::with(None);
    f.host.fail(Step::CreatePodDirs);
    assert!(f.pod.create(SANDBOX, "/b/sandbox", &[], &io()).is_err());
    assert!(f.pod.is_empty());
    assert_eq!(f.host.leftovers(), Vec::<String>::new());
}

#[test]
fn a_start_that_fails_at_any_step_stops_qemu_and_can_be_retried() {
    for step in [
        Step::OpenHypervisor,
        Step::WireNetwork,
        Step::StartPaused,
        Step::Confine,
        Step::AttachConsole,
        Step::WriteRecord,
        Step::Resume,
    ] {
        let f = Fixture::created();
        f.host.fail(step);
        let error = f.pod.start(COMPUTE).unwrap_err();
        assert!(error.to_string().contains("injected"), "{step:?}: {error}");
        assert_eq!(f.status(), Status::Created, "{step:?}");
        let left = f.host.leftovers();
        assert!(
            left.iter().all(|l| l.starts_with("pod folder")
                || l.starts_with("mount")
                || l.starts_with("VM files")
                || l.starts_with("hypervisor")),
            "{step:?}: a failed start left {left:?}"
        );
        assert!(f.exits.of(COMPUTE).is_empty());
        f.host.heal(step);
        f.pod.start(COMPUTE).unwrap();
        assert_eq!(f.status(), Status::Running);
        assert_eq!(f.tear_down(), Vec::<String>::new(), "{step:?}");
    }
}

#[test]
fn state_answers_and_kill_cancels_while_a_start_is_held() {
    // Held while libvirt opens (a slow probe), while QEMU starts, and after it started.
    for step in [Step::OpenHypervisor, Step::StartPaused, Step::Confine] {
        let f = Fixture::created();
        f.host.hold(step);
        let pod = f.pod.clone();
        let start = std::thread::spawn(move || pod.start(COMPUTE));
        f.host.wait_until_held(step);

        let pod = f.pod.clone();
        let state = answers("State", move || pod.state(COMPUTE).unwrap());
        assert_eq!(state.status, Status::Created, "{step:?}");
        let pod = f.pod.clone();
        let deleted = answers("Delete", move || pod.delete(COMPUTE));
        assert!(
            matches!(deleted, Err(Error::FailedPrecondition(_))),
            "{step:?}: delete during a start: {deleted:?}"
        );
        let pod = f.pod.clone();
        answers("Kill", move || pod.kill(COMPUTE, SIGKILL)).unwrap();

        let error = start.join().unwrap().unwrap_err();
        assert!(
            error.to_string().contains("killed while it started"),
            "{step:?}: {error}"
        );
        assert_eq!(f.stopped().code, 137, "{step:?}");
        assert_eq!(f.exits.of(COMPUTE), [137], "{step:?}");
        assert!(
            !f.host.leftovers().iter().any(|l| l.starts_with("QEMU")),
            "{step:?}: {:?}",
            f.host.leftovers()
        );
        f.host.release(step);
        assert_eq!(f.tear_down(), Vec::<String>::new(), "{step:?}");
    }
}

#[test]
fn calls_out_of_order_are_refused_and_change_nothing() {
    let f = Fixture::with(None);
    // A container before its sandbox, and one of another sandbox.
    assert!(matches!(
        f.pod.create(COMPUTE, "/b/compute", &image(), &io()),
        Err(Error::FailedPrecondition(_))
    ));
    f.pod.create(SANDBOX, "/b/sandbox", &[], &io()).unwrap();
    f.host.add_bundle(
        "/b/other",
        spec(Some("compute"), |v| {
            v["annotations"]["io.kubernetes.cri.sandbox-id"] = json!("another-sandbox");
            // Its volumes are another sandbox's too: here only the membership is judged.
            v["mounts"] = json!([]);
        }),
    );
    assert!(matches!(
        f.pod.create("other", "/b/other", &[], &io()),
        Err(Error::FailedPrecondition(_))
    ));
    assert!(matches!(
        f.pod.create(SANDBOX, "/b/sandbox", &[], &io()),
        Err(Error::AlreadyExists(_))
    ));
    assert!(matches!(f.pod.start("nobody"), Err(Error::NotFound(_))));
    assert!(matches!(
        f.pod.kill("nobody", SIGKILL),
        Err(Error::NotFound(_))
    ));
    assert!(matches!(f.pod.delete("nobody"), Err(Error::NotFound(_))));
    assert!(f.pod.create("../x", "/b/compute", &[], &io()).is_err());

    f.pod
        .create(COMPUTE, "/b/compute", &image(), &io())
        .unwrap();
    assert!(matches!(
        f.pod.create(COMPUTE, "/b/compute", &image(), &io()),
        Err(Error::AlreadyExists(_))
    ));
    assert!(f.pod.pause(COMPUTE).is_err());
    assert!(matches!(
        f.pod.kill(COMPUTE, Signal::SIGHUP as u32),
        Err(Error::InvalidArgument { .. })
    ));
    f.pod.start(COMPUTE).unwrap();
    assert!(f.pod.start(COMPUTE).is_err());
    assert!(matches!(
        f.pod.delete(COMPUTE),
        Err(Error::FailedPrecondition(_))
    ));
    assert_eq!(f.status(), Status::Running);
    f.pod.kill(COMPUTE, SIGKILL).unwrap();
    f.stopped();
    assert!(matches!(
        f.pod.kill(COMPUTE, SIGKILL),
        Err(Error::NotFound(_))
    ));
    assert!(f.pod.start(COMPUTE).is_err());
    assert_eq!(f.tear_down(), Vec::<String>::new());
}

#[test]
fn containerd_reconnecting_finds_the_vm_as_it_was() {
    let f = Fixture::running();
    let pid = f.pod.state(COMPUTE).unwrap().pid;
    // The Wait of the connection containerd lost when it restarted, still blocked.
    let pod = f.pod.clone();
    let old_wait = std::thread::spawn(move || pod.wait(COMPUTE).unwrap());
    // The restarted containerd asks again: the same VM, the same pid, and its own Wait.
    let state = f.pod.state(COMPUTE).unwrap();
    assert_eq!((state.status, state.pid), (Status::Running, pid));
    let pod = f.pod.clone();
    let new_wait = std::thread::spawn(move || pod.wait(COMPUTE).unwrap());
    f.pod.kill(COMPUTE, SIGKILL).unwrap();
    assert_eq!(new_wait.join().unwrap().code, 137);
    assert_eq!(old_wait.join().unwrap().code, 137);
    f.stopped();
    // One exit, however many waited for it; and a late Wait gets it at once.
    assert_eq!(f.exits.of(COMPUTE), [137]);
    assert_eq!(f.pod.wait(COMPUTE).unwrap().code, 137);
    assert_eq!(f.tear_down(), Vec::<String>::new());
}

#[test]
fn refused_pods_make_nothing_on_the_node() {
    // hostNetwork: the sandbox has no network namespace of its own.
    let f = Fixture::with(None);
    f.host.add_bundle(
        "/b/host-network",
        spec(None, |v| {
            v["linux"]["namespaces"]
                .as_array_mut()
                .unwrap()
                .retain(|n| n["type"] != "network")
        }),
    );
    let error = f
        .pod
        .create(SANDBOX, "/b/host-network", &[], &io())
        .unwrap_err();
    assert!(error.to_string().contains("spec.hostNetwork"), "{error}");
    assert_eq!(f.host.calls(), ["ReadBundle /b/host-network"]);
    assert_eq!(f.host.leftovers(), Vec::<String>::new());

    // A VMI of another namespace: refused before anything is prepared.
    let f = Fixture::with(None);
    f.pod.create(SANDBOX, "/b/sandbox", &[], &io()).unwrap();
    f.host.add_bundle(
        "/b/foreign",
        spec(Some("compute"), |v| {
            v["annotations"]["virtshim.io/vmi"] = json!(vmi("kube-system"))
        }),
    );
    let error = f
        .pod
        .create(COMPUTE, "/b/foreign", &image(), &io())
        .unwrap_err();
    assert!(matches!(error, Error::Refused { .. }), "{error}");
    assert!(error.to_string().contains("metadata.namespace"), "{error}");
    assert!(!f.host.calls().iter().any(|c| c.starts_with("PrepareVm")));
    assert_eq!(f.tear_down(), Vec::<String>::new());

    // A shim that could not enter the pod's network namespace creates nothing.
    let f = Fixture::with(Some("cannot enter /var/run/netns/x".into()));
    let error = f.pod.create(SANDBOX, "/b/sandbox", &[], &io()).unwrap_err();
    assert!(matches!(error, Error::FailedPrecondition(_)), "{error}");
    assert_eq!(f.host.leftovers(), Vec::<String>::new());
}

/// What containerd (or the guest) does to the compute container.
#[derive(Clone, Copy, Debug)]
enum Op {
    Start,
    Term,
    Kill,
    Pause,
    Resume,
    Delete,
    /// The guest powers itself off.
    PowerOff,
    /// QEMU dies of SIGSEGV.
    Crash,
}

const OPS: [Op; 8] = [
    Op::Start,
    Op::Term,
    Op::Kill,
    Op::Pause,
    Op::Resume,
    Op::Delete,
    Op::PowerOff,
    Op::Crash,
];

/// The container as containerd must see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Model {
    Created,
    Running,
    Paused,
    Stopped(u32),
    Deleted,
}

/// What `op` does to a container in `from`: the state after it, or `None` when the call must
/// be refused (guest events that cannot happen change nothing).
fn model(from: Model, op: Op) -> Option<Model> {
    use Model::*;
    match (op, from) {
        (Op::Start, Created) => Some(Running),
        (Op::Term, Created) => Some(Stopped(0)),
        (Op::Term, Running) => Some(Stopped(0)),
        (Op::Term, Paused) => Some(Stopped(137)),
        (Op::Kill, Created | Running | Paused) => Some(Stopped(137)),
        (Op::Pause, Running) => Some(Paused),
        (Op::Resume, Paused) => Some(Running),
        (Op::Delete, Created | Stopped(_)) => Some(Deleted),
        (Op::PowerOff, Running) => Some(Stopped(0)),
        (Op::Crash, Running | Paused) => Some(Stopped(139)),
        (Op::PowerOff | Op::Crash, _) => Some(from),
        _ => None,
    }
}

fn apply(f: &Fixture, op: Op) -> bool {
    match op {
        Op::Start => f.pod.start(COMPUTE).is_ok(),
        Op::Term => f.pod.kill(COMPUTE, SIGTERM).is_ok(),
        Op::Kill => f.pod.kill(COMPUTE, SIGKILL).is_ok(),
        Op::Pause => f.pod.pause(COMPUTE).is_ok(),
        Op::Resume => f.pod.resume(COMPUTE).is_ok(),
        Op::Delete => f.pod.delete(COMPUTE).is_ok(),
        Op::PowerOff => {
            f.host.guest_powers_off(DOMAIN);
            true
        }
        Op::Crash => {
            f.host.qemu_dies(DOMAIN, Signal::SIGSEGV);
            true
        }
    }
}

fn observed(f: &Fixture, expected: Model) -> Model {
    match f.pod.state(COMPUTE) {
        Err(Error::NotFound(_)) => Model::Deleted,
        Err(e) => panic!("State failed: {e}"),
        Ok(_) if matches!(expected, Model::Stopped(_)) => Model::Stopped(f.stopped().code),
        Ok(s) => match s.status {
            Status::Created => Model::Created,
            Status::Running => Model::Running,
            Status::Paused => Model::Paused,
            Status::Stopped => Model::Stopped(s.exit.map_or(u32::MAX, |e| e.code)),
        },
    }
}

#[test]
fn every_order_of_four_calls_matches_the_model_and_leaves_nothing() {
    let mut sequences: Vec<Vec<Op>> = vec![vec![]];
    for _ in 0..4 {
        sequences = sequences
            .into_iter()
            .flat_map(|s| {
                OPS.iter().map(move |op| {
                    let mut next = s.clone();
                    next.push(*op);
                    next
                })
            })
            .collect();
    }
    assert_eq!(sequences.len(), 4096);
    for sequence in sequences {
        let f = Fixture::created();
        let mut state = Model::Created;
        let mut stops = 0;
        for op in &sequence {
            let expected = model(state, *op);
            let accepted = apply(&f, *op);
            assert_eq!(
                accepted,
                expected.is_some(),
                "{sequence:?}: {op:?} from {state:?}"
            );
            let next = expected.unwrap_or(state);
            if matches!(next, Model::Stopped(_)) && !matches!(state, Model::Stopped(_)) {
                stops += 1;
            }
            assert_eq!(
                observed(&f, next),
                next,
                "{sequence:?}: after {op:?} from {state:?}"
            );
            state = next;
        }
        // Exactly one exit event for a container that stopped, with the code State gave.
        let exits = f.exits.of(COMPUTE);
        assert_eq!(exits.len(), stops, "{sequence:?}: exits {exits:?}");
        assert_eq!(f.tear_down(), Vec::<String>::new(), "{sequence:?}");
    }
}
