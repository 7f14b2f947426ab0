//! The `start`, `stop` and `restart` subresources of a VM: the patch they make, or why not.
//!
//! These never touch a VMI themselves. They either rewrite the VM's run strategy (start:
//! Halted → Always; stop: Always / Once → Halted) or append state change requests to the VM's
//! status for the VM reconciler ([`super::vm`]) to carry out. Refusals carry KubeVirt's exact
//! status codes and messages (`virtctl` prints them verbatim), read from
//! `pkg/virt-api/rest/lifecycle.go`:
//!
//! | request | Always | Once | RerunOnFailure | Manual | Halted |
//! | --- | --- | --- | --- | --- | --- |
//! | start | 409 | 409 | Start (Stop+Start after Succeeded; 409 after Failed) | Start (Stop+Start after a final VMI) | runStrategy → Always (Start{paused} if paused) |
//! | stop | → Halted | → Halted | Stop{uid} (409 without a live VMI) | same | 409 unless a shorter grace period |
//! | restart | Stop{uid}, Start | 409 | Stop{uid}, Start | Stop{uid}, Start | 409 |
//!
//! `start` is refused first of all with "VM is already running" while a VMI exists that is
//! neither final, Unknown nor unprocessed-without-phase. Requests only ever go onto an empty
//! list, except that a lone Stop replaces whatever is queued; otherwise the apiserver would see
//! a start/stop already underway. Every status patch also drops `status.startFailure`, so an
//! explicit start is never held back by crash-loop backoff.

use super::run_strategy::{effective, RunStrategy, RunStrategyError, RunStrategyPatch};
use super::vm::{start_request, stop_request, START_PAUSED_KEY, START_PAUSED_TRUE};
use crate::observed::{ObservedVmi, VmiPhase};
use serde_json::json;
use std::collections::BTreeMap;
use std::fmt;
use virtshim_api::types::{StateChangeRequest, VirtualMachine, VirtualMachineStatus};

/// `StartOptions` (the body of `PUT .../start`), minus `dryRun`, which the caller passes on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StartOptions {
    pub paused: bool,
}

/// `StopOptions`, minus `dryRun`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StopOptions {
    /// Seconds; shortens the VMI's `terminationGracePeriodSeconds`.
    pub grace_period: Option<i64>,
}

/// `RestartOptions`, minus `dryRun`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RestartOptions {
    /// Only 0 (force) is accepted.
    pub grace_period_seconds: Option<i64>,
}

/// Why a request is refused, as the text after "Operation cannot be fulfilled on …: ".
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConflictReason {
    AlreadyRunning,
    StartNotSupported(RunStrategy),
    StartFromFailed,
    NotRunning,
    HaltedNeedsShorterGracePeriod,
    RestartNotSupported(RunStrategy),
    RestartWithoutVmi,
}

impl fmt::Display for ConflictReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AlreadyRunning => f.write_str("VM is already running"),
            Self::StartNotSupported(s) => write!(f, "{s} does not support manual start requests"),
            Self::StartFromFailed => write!(
                f,
                "{} does not support starting VM from failed state",
                RunStrategy::RerunOnFailure
            ),
            Self::NotRunning => f.write_str("VM is not running"),
            Self::HaltedNeedsShorterGracePeriod => write!(
                f,
                "{} only supports manual stop requests with a shorter graceperiod",
                RunStrategy::Halted
            ),
            // "RunStategy" is KubeVirt's spelling.
            Self::RestartNotSupported(s) => {
                write!(f, "RunStategy {s} does not support manual restart requests")
            }
            Self::RestartWithoutVmi => write!(f, "VM is not running: {}", RunStrategy::Halted),
        }
    }
}

/// A refused request; [`SubresourceError::status_code`] and the `Display` text are what the
/// API answers (a `metav1.Status` with that code and message).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SubresourceError {
    /// 409.
    #[error("Operation cannot be fulfilled on virtualmachine.kubevirt.io {name:?}: {reason}")]
    Conflict {
        name: String,
        reason: ConflictReason,
    },
    /// 400.
    #[error("{0}")]
    BadRequest(&'static str),
    /// 500: the VM's spec is unusable.
    #[error("Internal error occurred: {0}")]
    RunStrategy(#[from] RunStrategyError),
    /// 500: requests are queued that a new one may not join (KubeVirt reports this as an
    /// internal error, not a conflict).
    #[error("Internal error occurred: unable to complete request: stop/start already underway")]
    AlreadyUnderway,
}

impl SubresourceError {
    /// The HTTP status code KubeVirt answers with.
    pub fn status_code(&self) -> u16 {
        match self {
            Self::Conflict { .. } => 409,
            Self::BadRequest(_) => 400,
            Self::RunStrategy(_) | Self::AlreadyUnderway => 500,
        }
    }

    /// `metav1.Status.reason`.
    pub fn status_reason(&self) -> &'static str {
        match self {
            Self::Conflict { .. } => "Conflict",
            Self::BadRequest(_) => "BadRequest",
            Self::RunStrategy(_) | Self::AlreadyUnderway => "InternalError",
        }
    }
}

/// A status patch appending state change requests (KubeVirt's `getChangeRequestJson`).
#[derive(Clone, Debug, PartialEq)]
pub struct RequestsPatch {
    /// The VM has no status at all: the patch adds one.
    pub whole_status: bool,
    /// The list the patch tests for, so that a concurrent change fails it with a 409.
    pub previous: Vec<StateChangeRequest>,
    /// The list after the patch.
    pub requests: Vec<StateChangeRequest>,
    /// Remove `status.startFailure` too.
    pub clear_start_failure: bool,
}

impl RequestsPatch {
    fn new(
        status: Option<&VirtualMachineStatus>,
        changes: Vec<StateChangeRequest>,
    ) -> Result<Self, SubresourceError> {
        let empty = VirtualMachineStatus::default();
        let status = status.unwrap_or(&empty);
        if *status == empty {
            return Ok(Self {
                whole_status: true,
                previous: Vec::new(),
                requests: changes,
                clear_start_failure: false,
            });
        }
        let previous = status.state_change_requests.clone().unwrap_or_default();
        let lone_stop = changes.len() == 1 && changes[0].action == super::vm::STOP_REQUEST;
        if !previous.is_empty() && !lone_stop {
            return Err(SubresourceError::AlreadyUnderway);
        }
        Ok(Self {
            whole_status: false,
            previous,
            requests: changes,
            clear_start_failure: status.start_failure.is_some(),
        })
    }

    /// The JSON patch (RFC 6902) for the VM's `status` subresource.
    pub fn json_patch(&self) -> serde_json::Value {
        if self.whole_status {
            return json!([{
                "op": "add",
                "path": "/status",
                "value": {"stateChangeRequests": self.requests},
            }]);
        }
        let mut ops = Vec::new();
        if self.previous.is_empty() {
            // An absent list and an empty one are the same to KubeVirt; testing for either
            // would make the patch fail on the other, so the add alone stands.
            ops.push(
                json!({"op": "add", "path": "/status/stateChangeRequests", "value": self.requests}),
            );
        } else {
            ops.push(json!({"op": "test", "path": "/status/stateChangeRequests", "value": self.previous}));
            ops.push(json!({"op": "replace", "path": "/status/stateChangeRequests", "value": self.requests}));
        }
        if self.clear_start_failure {
            ops.push(json!({"op": "remove", "path": "/status/startFailure"}));
        }
        serde_json::Value::Array(ops)
    }
}

/// The change to the VM.
#[derive(Clone, Debug, PartialEq)]
pub enum VmPatch {
    /// Patch the VM's spec (main resource).
    Spec(RunStrategyPatch),
    /// Patch the VM's status subresource.
    Status(RequestsPatch),
}

impl VmPatch {
    /// The JSON patch to send.
    pub fn json_patch(&self) -> serde_json::Value {
        match self {
            Self::Spec(p) => p.json_patch(),
            Self::Status(p) => p.json_patch(),
        }
    }
}

/// A shortened `terminationGracePeriodSeconds` for the VMI, patched before the VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GracePeriodPatch {
    pub from: Option<i64>,
    pub to: i64,
}

impl GracePeriodPatch {
    /// The JSON patch for the VMI's main resource.
    pub fn json_patch(&self) -> serde_json::Value {
        json!([
            {"op": "test", "path": "/spec/terminationGracePeriodSeconds", "value": self.from},
            {"op": "replace", "path": "/spec/terminationGracePeriodSeconds", "value": self.to},
        ])
    }
}

/// An accepted request (HTTP 202): patch the VMI's grace period if given, then the VM.
#[derive(Clone, Debug, PartialEq)]
pub struct Accepted {
    pub vmi_grace_period: Option<GracePeriodPatch>,
    pub vm: VmPatch,
}

fn conflict(vm: &VirtualMachine, reason: ConflictReason) -> SubresourceError {
    SubresourceError::Conflict {
        name: vm.metadata.name.clone().unwrap_or_default(),
        reason,
    }
}

fn requests(
    vm: &VirtualMachine,
    changes: Vec<StateChangeRequest>,
    vmi_grace_period: Option<GracePeriodPatch>,
) -> Result<Accepted, SubresourceError> {
    Ok(Accepted {
        vmi_grace_period,
        vm: VmPatch::Status(RequestsPatch::new(vm.status.as_ref(), changes)?),
    })
}

/// `PUT virtualmachines/{name}/start`.
pub fn start(
    vm: &VirtualMachine,
    vmi: Option<&ObservedVmi>,
    opts: StartOptions,
) -> Result<Accepted, SubresourceError> {
    if let Some(v) = vmi {
        if !v.phase.is_final() && !matches!(v.phase, VmiPhase::Unknown | VmiPhase::Unset) {
            return Err(conflict(vm, ConflictReason::AlreadyRunning));
        }
    }
    let strategy = effective(&vm.spec)?;
    let mut start = start_request();
    if opts.paused {
        start.data = Some(BTreeMap::from([(
            START_PAUSED_KEY.to_owned(),
            START_PAUSED_TRUE.to_owned(),
        )]));
    }
    match strategy.strategy {
        // A paused start must reach the controller as a request (it carries the flag); the
        // controller then switches the VM to Always itself.
        RunStrategy::Halted if opts.paused => requests(vm, vec![start], None),
        RunStrategy::Halted => Ok(Accepted {
            vmi_grace_period: None,
            vm: VmPatch::Spec(RunStrategyPatch::start(strategy)),
        }),
        s @ (RunStrategy::RerunOnFailure | RunStrategy::Manual) => {
            let phase = vmi.map(|v| v.phase);
            if s == RunStrategy::RerunOnFailure && phase == Some(VmiPhase::Failed) {
                return Err(conflict(vm, ConflictReason::StartFromFailed));
            }
            let replace_finished = match (s, vmi) {
                (RunStrategy::RerunOnFailure, Some(v)) => v.phase == VmiPhase::Succeeded,
                (_, Some(v)) => v.phase.is_final(),
                (_, None) => false,
            };
            match vmi {
                Some(v) if replace_finished => {
                    requests(vm, vec![stop_request(&v.uid), start], None)
                }
                _ => requests(vm, vec![start], None),
            }
        }
        s @ (RunStrategy::Always | RunStrategy::Once) => {
            Err(conflict(vm, ConflictReason::StartNotSupported(s)))
        }
    }
}

/// `PUT virtualmachines/{name}/stop`.
pub fn stop(
    vm: &VirtualMachine,
    vmi: Option<&ObservedVmi>,
    opts: StopOptions,
) -> Result<Accepted, SubresourceError> {
    let strategy = effective(&vm.spec)?;
    let live = vmi.filter(|v| !v.phase.is_final());
    let grace = match (live, opts.grace_period) {
        (Some(v), Some(to)) => Some(GracePeriodPatch {
            from: v.termination_grace_period_seconds,
            to,
        }),
        _ => None,
    };
    match strategy.strategy {
        RunStrategy::Halted => {
            let Some(v) = live else {
                return Err(conflict(vm, ConflictReason::NotRunning));
            };
            // KubeVirt compares with the old grace period, taken as 0 when the VMI has none;
            // a VMI without one therefore accepts any grace period.
            let shorter = match (opts.grace_period, v.termination_grace_period_seconds) {
                (None, _) => false,
                (Some(_), None) => true,
                (Some(new), Some(old)) => new < old,
            };
            if !shorter {
                return Err(conflict(vm, ConflictReason::HaltedNeedsShorterGracePeriod));
            }
            requests(vm, vec![stop_request(&v.uid)], grace)
        }
        RunStrategy::RerunOnFailure | RunStrategy::Manual => {
            let Some(v) = live else {
                return Err(conflict(vm, ConflictReason::NotRunning));
            };
            requests(vm, vec![stop_request(&v.uid)], grace)
        }
        RunStrategy::Always | RunStrategy::Once => Ok(Accepted {
            vmi_grace_period: grace,
            vm: VmPatch::Spec(RunStrategyPatch::stop(strategy)),
        }),
    }
}

/// `PUT virtualmachines/{name}/restart`.
pub fn restart(
    vm: &VirtualMachine,
    vmi: Option<&ObservedVmi>,
    opts: RestartOptions,
) -> Result<Accepted, SubresourceError> {
    match opts.grace_period_seconds {
        Some(g) if g > 0 => {
            return Err(SubresourceError::BadRequest(
                "For force restart, only gracePeriod=0 is supported for now",
            ))
        }
        Some(g) if g < 0 => {
            return Err(SubresourceError::BadRequest(
                "gracePeriod has to be greater or equal to 0",
            ))
        }
        _ => {}
    }
    let strategy = effective(&vm.spec)?;
    if let s @ (RunStrategy::Halted | RunStrategy::Once) = strategy.strategy {
        return Err(conflict(vm, ConflictReason::RestartNotSupported(s)));
    }
    let Some(v) = vmi else {
        return Err(conflict(vm, ConflictReason::RestartWithoutVmi));
    };
    // A forced restart first cuts the grace period to 1 s, the shortest that still lets the
    // guest be stopped cleanly.
    let grace = (opts.grace_period_seconds == Some(0)).then_some(GracePeriodPatch {
        from: v.termination_grace_period_seconds,
        to: 1,
    });
    requests(vm, vec![stop_request(&v.uid), start_request()], grace)
}

#[cfg(test)]
// Table rows are tuples, one column per input and expectation.
#[allow(clippy::type_complexity)]
mod tests {
    use super::*;
    use crate::decide::start_failure::StartFailureState;
    use virtshim_api::types::{StartFailure, VirtualMachineSpec};
    use RunStrategy::*;
    use VmiPhase::*;

    fn vm(strategy: Option<RunStrategy>) -> VirtualMachine {
        let mut vm = VirtualMachine::new(
            "vm1",
            VirtualMachineSpec {
                run_strategy: strategy.map(|s| s.as_str().to_owned()),
                ..Default::default()
            },
        );
        // A status with something in it, so that patches test the request list.
        vm.status = Some(VirtualMachineStatus {
            printable_status: Some("Stopped".into()),
            ..Default::default()
        });
        vm
    }

    fn vmi(phase: VmiPhase) -> ObservedVmi {
        ObservedVmi::new("uid-1", phase)
    }

    fn paused_start() -> StateChangeRequest {
        StateChangeRequest {
            data: Some(BTreeMap::from([("paused".into(), "true".into())])),
            ..start_request()
        }
    }

    fn spec_patch(from: RunStrategy, to: RunStrategy) -> Result<VmPatch, String> {
        Ok(VmPatch::Spec(RunStrategyPatch::RunStrategy { from, to }))
    }

    fn status_patch(requests: Vec<StateChangeRequest>) -> Result<VmPatch, String> {
        Ok(VmPatch::Status(RequestsPatch {
            whole_status: false,
            previous: vec![],
            requests,
            clear_start_failure: false,
        }))
    }

    fn err(code: u16, msg: &str) -> Result<VmPatch, String> {
        Err(format!("{code} {msg}"))
    }

    fn outcome(r: Result<Accepted, SubresourceError>) -> Result<VmPatch, String> {
        r.map(|a| a.vm)
            .map_err(|e| format!("{} {}", e.status_code(), e))
    }

    const ON: &str = "Operation cannot be fulfilled on virtualmachine.kubevirt.io \"vm1\": ";

    #[test]
    fn start_table() {
        let stop_start = vec![stop_request("uid-1"), start_request()];
        let table: Vec<(
            &str,
            RunStrategy,
            Option<VmiPhase>,
            bool,
            Result<VmPatch, String>,
        )> = vec![
            (
                "Halted → Always",
                Halted,
                None,
                false,
                spec_patch(Halted, Always),
            ),
            (
                "Halted, paused → request",
                Halted,
                None,
                true,
                status_patch(vec![paused_start()]),
            ),
            (
                "Halted, final VMI",
                Halted,
                Some(Succeeded),
                false,
                spec_patch(Halted, Always),
            ),
            (
                "Manual, no VMI",
                Manual,
                None,
                false,
                status_patch(vec![start_request()]),
            ),
            (
                "Manual, paused",
                Manual,
                None,
                true,
                status_patch(vec![paused_start()]),
            ),
            (
                "Manual, succeeded VMI",
                Manual,
                Some(Succeeded),
                false,
                status_patch(stop_start.clone()),
            ),
            (
                "Manual, failed VMI",
                Manual,
                Some(Failed),
                false,
                status_patch(stop_start.clone()),
            ),
            (
                "Manual, unknown VMI",
                Manual,
                Some(Unknown),
                false,
                status_patch(vec![start_request()]),
            ),
            (
                "Manual, unprocessed VMI",
                Manual,
                Some(Unset),
                false,
                status_patch(vec![start_request()]),
            ),
            (
                "Rerun, no VMI",
                RerunOnFailure,
                None,
                false,
                status_patch(vec![start_request()]),
            ),
            (
                "Rerun, succeeded VMI",
                RerunOnFailure,
                Some(Succeeded),
                false,
                status_patch(stop_start.clone()),
            ),
            (
                "Rerun, failed VMI",
                RerunOnFailure,
                Some(Failed),
                false,
                err(
                    409,
                    &format!("{ON}RerunOnFailure does not support starting VM from failed state"),
                ),
            ),
            (
                "Always, no VMI",
                Always,
                None,
                false,
                err(
                    409,
                    &format!("{ON}Always does not support manual start requests"),
                ),
            ),
            (
                "Once, final VMI",
                Once,
                Some(Succeeded),
                false,
                err(
                    409,
                    &format!("{ON}Once does not support manual start requests"),
                ),
            ),
            (
                "running VMI",
                Manual,
                Some(Running),
                false,
                err(409, &format!("{ON}VM is already running")),
            ),
            (
                "pending VMI",
                Halted,
                Some(Pending),
                false,
                err(409, &format!("{ON}VM is already running")),
            ),
            (
                "scheduling VMI",
                Always,
                Some(Scheduling),
                false,
                err(409, &format!("{ON}VM is already running")),
            ),
        ];
        for (name, strategy, phase, paused, want) in table {
            let v = phase.map(vmi);
            let got = outcome(start(
                &vm(Some(strategy)),
                v.as_ref(),
                StartOptions { paused },
            ));
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn stop_table() {
        let stop_req = vec![stop_request("uid-1")];
        let not_running = format!("{ON}VM is not running");
        let halted_grace =
            format!("{ON}Halted only supports manual stop requests with a shorter graceperiod");
        // (name, strategy, phase, VMI grace, requested grace, want)
        let table: Vec<(
            &str,
            RunStrategy,
            Option<VmiPhase>,
            Option<i64>,
            Option<i64>,
            Result<VmPatch, String>,
        )> = vec![
            (
                "Always → Halted",
                Always,
                Some(Running),
                None,
                None,
                spec_patch(Always, Halted),
            ),
            (
                "Always, no VMI → Halted",
                Always,
                None,
                None,
                None,
                spec_patch(Always, Halted),
            ),
            (
                "Once → Halted",
                Once,
                Some(Succeeded),
                None,
                None,
                spec_patch(Once, Halted),
            ),
            (
                "Manual → Stop",
                Manual,
                Some(Running),
                None,
                None,
                status_patch(stop_req.clone()),
            ),
            (
                "Rerun → Stop",
                RerunOnFailure,
                Some(Scheduling),
                None,
                None,
                status_patch(stop_req.clone()),
            ),
            (
                "Manual, no VMI",
                Manual,
                None,
                None,
                None,
                err(409, &not_running),
            ),
            (
                "Manual, final VMI",
                Manual,
                Some(Failed),
                None,
                None,
                err(409, &not_running),
            ),
            (
                "Halted, no VMI",
                Halted,
                None,
                None,
                None,
                err(409, &not_running),
            ),
            (
                "Halted, final VMI",
                Halted,
                Some(Succeeded),
                None,
                Some(0),
                err(409, &not_running),
            ),
            (
                "Halted, no grace",
                Halted,
                Some(Running),
                Some(30),
                None,
                err(409, &halted_grace),
            ),
            (
                "Halted, same grace",
                Halted,
                Some(Running),
                Some(30),
                Some(30),
                err(409, &halted_grace),
            ),
            (
                "Halted, shorter grace",
                Halted,
                Some(Running),
                Some(30),
                Some(0),
                status_patch(stop_req.clone()),
            ),
            (
                "Halted, VMI without grace",
                Halted,
                Some(Running),
                None,
                Some(10),
                status_patch(stop_req.clone()),
            ),
        ];
        for (name, strategy, phase, vmi_grace, grace, want) in table {
            let v = phase.map(|p| ObservedVmi {
                termination_grace_period_seconds: vmi_grace,
                ..vmi(p)
            });
            let got = outcome(stop(
                &vm(Some(strategy)),
                v.as_ref(),
                StopOptions {
                    grace_period: grace,
                },
            ));
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn stop_shortens_the_grace_period_of_a_live_vmi() {
        let v = ObservedVmi {
            termination_grace_period_seconds: Some(180),
            ..vmi(Running)
        };
        let got = stop(
            &vm(Some(Always)),
            Some(&v),
            StopOptions {
                grace_period: Some(5),
            },
        )
        .unwrap();
        let grace = got.vmi_grace_period.unwrap();
        assert_eq!(
            grace,
            GracePeriodPatch {
                from: Some(180),
                to: 5
            }
        );
        assert_eq!(
            grace.json_patch(),
            json!([
                {"op": "test", "path": "/spec/terminationGracePeriodSeconds", "value": 180},
                {"op": "replace", "path": "/spec/terminationGracePeriodSeconds", "value": 5},
            ])
        );
        let done = vmi(Failed);
        let got = stop(
            &vm(Some(Always)),
            Some(&done),
            StopOptions {
                grace_period: Some(5),
            },
        )
        .unwrap();
        assert_eq!(got.vmi_grace_period, None);
    }

    #[test]
    fn restart_table() {
        let stop_start = vec![stop_request("uid-1"), start_request()];
        let table: Vec<(
            &str,
            RunStrategy,
            Option<VmiPhase>,
            Option<i64>,
            Result<VmPatch, String>,
        )> = vec![
            (
                "Always",
                Always,
                Some(Running),
                None,
                status_patch(stop_start.clone()),
            ),
            (
                "Manual",
                Manual,
                Some(Running),
                None,
                status_patch(stop_start.clone()),
            ),
            (
                "Rerun",
                RerunOnFailure,
                Some(Running),
                None,
                status_patch(stop_start.clone()),
            ),
            (
                "final VMI restarts too",
                Manual,
                Some(Failed),
                None,
                status_patch(stop_start.clone()),
            ),
            (
                "force",
                Always,
                Some(Running),
                Some(0),
                status_patch(stop_start.clone()),
            ),
            (
                "Halted",
                Halted,
                Some(Running),
                None,
                err(
                    409,
                    &format!("{ON}RunStategy Halted does not support manual restart requests"),
                ),
            ),
            (
                "Once",
                Once,
                Some(Running),
                None,
                err(
                    409,
                    &format!("{ON}RunStategy Once does not support manual restart requests"),
                ),
            ),
            (
                "no VMI",
                Always,
                None,
                None,
                err(409, &format!("{ON}VM is not running: Halted")),
            ),
            (
                "grace > 0",
                Always,
                Some(Running),
                Some(5),
                err(
                    400,
                    "For force restart, only gracePeriod=0 is supported for now",
                ),
            ),
            (
                "grace < 0",
                Halted,
                None,
                Some(-1),
                err(400, "gracePeriod has to be greater or equal to 0"),
            ),
        ];
        for (name, strategy, phase, grace, want) in table {
            let v = phase.map(vmi);
            let got = outcome(restart(
                &vm(Some(strategy)),
                v.as_ref(),
                RestartOptions {
                    grace_period_seconds: grace,
                },
            ));
            assert_eq!(got, want, "{name}");
        }
        let forced = restart(
            &vm(Some(Always)),
            Some(&vmi(Running)),
            RestartOptions {
                grace_period_seconds: Some(0),
            },
        )
        .unwrap();
        assert_eq!(
            forced.vmi_grace_period,
            Some(GracePeriodPatch { from: None, to: 1 })
        );
    }

    #[test]
    fn queued_requests() {
        let mut busy = vm(Some(Manual));
        let queued = vec![start_request()];
        if let Some(s) = busy.status.as_mut() {
            s.state_change_requests = Some(queued.clone());
        }
        let running = vmi(Running);
        // A start or restart may not join a queue...
        let e = start(&busy, None, StartOptions::default()).unwrap_err();
        assert_eq!(e, SubresourceError::AlreadyUnderway);
        assert_eq!(e.status_code(), 500);
        assert_eq!(
            e.to_string(),
            "Internal error occurred: unable to complete request: stop/start already underway"
        );
        assert!(restart(&busy, Some(&running), RestartOptions::default()).is_err());
        // ...but a stop replaces it.
        let got = stop(&busy, Some(&running), StopOptions::default()).unwrap();
        let VmPatch::Status(patch) = &got.vm else {
            panic!("expected a status patch");
        };
        assert_eq!(patch.previous, queued);
        assert_eq!(
            got.vm.json_patch(),
            json!([
                {"op": "test", "path": "/status/stateChangeRequests", "value": [{"action": "Start"}]},
                {"op": "replace", "path": "/status/stateChangeRequests", "value": [{"action": "Stop", "uid": "uid-1"}]},
            ])
        );
    }

    #[test]
    fn status_patch_shapes() {
        // No status at all: the patch adds one.
        let mut bare = vm(Some(Manual));
        bare.status = None;
        let got = start(&bare, None, StartOptions::default()).unwrap();
        assert_eq!(
            got.vm.json_patch(),
            json!([{"op": "add", "path": "/status", "value": {"stateChangeRequests": [{"action": "Start"}]}}])
        );
        // A start failure is cleared with the request.
        let mut looping = vm(Some(RerunOnFailure));
        if let Some(s) = looping.status.as_mut() {
            s.start_failure = Some(StartFailure::from(&StartFailureState {
                consecutive_failures: 3,
                last_failed_vmi_uid: None,
                retry_after: None,
            }));
        }
        let got = start(&looping, None, StartOptions::default()).unwrap();
        assert_eq!(
            got.vm.json_patch(),
            json!([
                {"op": "add", "path": "/status/stateChangeRequests", "value": [{"action": "Start"}]},
                {"op": "remove", "path": "/status/startFailure"},
            ])
        );
    }

    #[test]
    fn unusable_spec_is_an_internal_error() {
        let mut both = vm(Some(Always));
        both.spec.running = Some(true);
        for e in [
            start(&both, None, StartOptions::default()).unwrap_err(),
            stop(&both, None, StopOptions::default()).unwrap_err(),
            restart(&both, None, RestartOptions::default()).unwrap_err(),
        ] {
            assert_eq!(e.status_code(), 500);
            assert_eq!(e.status_reason(), "InternalError");
            assert_eq!(
                e.to_string(),
                "Internal error occurred: running and runstrategy are mutually exclusive"
            );
        }
    }

    #[test]
    fn start_and_stop_with_spec_running() {
        let mut legacy = vm(None);
        legacy.spec.running = Some(false);
        let got = start(&legacy, None, StartOptions::default()).unwrap();
        assert_eq!(
            got.vm,
            VmPatch::Spec(RunStrategyPatch::Running {
                from: Some(false),
                to: true
            })
        );
        legacy.spec.running = Some(true);
        let got = stop(&legacy, None, StopOptions::default()).unwrap();
        assert_eq!(
            got.vm,
            VmPatch::Spec(RunStrategyPatch::Running {
                from: Some(true),
                to: false
            })
        );
    }
}
