//! VM → VMI: whether the VM's reconciler creates its VMI, deletes it, waits, or does nothing.
//!
//! This is KubeVirt's `syncRunStrategy` plus the status bookkeeping that goes with it in the
//! same pass (which state change request is done, `status.startFailure`, `status.runStrategy`),
//! because the three read the same observation and must agree. Rules, per strategy:
//!
//! | strategy | VMI exists | no VMI |
//! | --- | --- | --- |
//! | Always | delete it when it is final or a Stop request names its UID | create it, after any crash-loop backoff |
//! | RerunOnFailure | delete it when final or a Stop names it; if it *Failed*, also queue a Start | create it on a Start request, or when the strategy just became RerunOnFailure (after backoff) |
//! | Manual | delete it when a Stop names it | create it on a Start request (no backoff) |
//! | Halted | delete it | on a Start request, rewrite the spec to Always |
//! | Once | nothing | create it |
//!
//! A VMI already being deleted is never deleted again. Only the *first* state change request is
//! acted on; it is removed once done: a Stop when its VMI is gone (or is another one, or the
//! request names none), a Start once a live VMI exists. So a restart, `[Stop{uid}, Start]`,
//! deletes the VMI, then drops the Stop, then creates a new VMI, then drops the Start.
//!
//! While the VM is being deleted, its VMI is deleted too, unless the deletion orphans
//! dependents (`kubectl delete --cascade=orphan`); once no VMI is left the VM's finalizer goes.

use super::run_strategy::{EffectiveRunStrategy, RunStrategy, RunStrategyPatch};
use super::start_failure::{
    backoff_until, next_start_failure, StartFailureState, StartFailureUpdate,
};
use crate::observed::{ObservedVmi, VmiPhase};
use k8s_openapi::jiff::Timestamp;
use virtshim_api::types::StateChangeRequest;

/// `status.stateChangeRequests[].action` of a start request.
pub const START_REQUEST: &str = "Start";
/// `status.stateChangeRequests[].action` of a stop request.
pub const STOP_REQUEST: &str = "Stop";

/// Everything the VM decision reads.
#[derive(Clone, Copy, Debug)]
pub struct VmObservation<'a> {
    pub strategy: EffectiveRunStrategy,
    /// The VM has a deletionTimestamp.
    pub vm_deleting: bool,
    /// The VM is being deleted with the `orphan` finalizer: leave its VMI.
    pub orphan_dependents: bool,
    /// The VM's VMI (same name, controlled by this VM), if the cache has one.
    pub vmi: Option<&'a ObservedVmi>,
    /// `status.stateChangeRequests`.
    pub requests: &'a [StateChangeRequest],
    /// `status.startFailure`.
    pub start_failure: Option<&'a StartFailureState>,
    /// `status.runStrategy`: the strategy recorded when a VMI last existed (`None` before the
    /// first VMI, or if unreadable).
    pub status_run_strategy: Option<RunStrategy>,
    pub now: Timestamp,
    /// Any random number: the crash-loop jitter.
    pub random: u64,
}

/// Why the VMI is deleted (for events and logs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeleteReason {
    /// A Stop request names this VMI.
    StopRequested,
    /// The VMI finished; Always / RerunOnFailure replace or clear it.
    Finished(VmiPhase),
    /// The strategy is Halted.
    RunStrategyHalted,
    /// The VM is being deleted.
    VmDeleted,
}

/// The one thing the reconciler does to the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VmAction {
    Nothing,
    /// Create the VMI from the VM's template; with `startStrategy: Paused` when the Start
    /// request being served asked for a paused start.
    CreateVmi {
        start_paused: bool,
    },
    /// Delete the VMI.
    DeleteVmi {
        reason: DeleteReason,
    },
    /// A VMI is due but the crash-loop backoff runs until `until`: requeue then.
    WaitBackoff {
        until: Timestamp,
    },
    /// Halted with a Start request: rewrite the VM's spec so that it runs.
    PatchSpec(RunStrategyPatch),
    /// The VM is being deleted and no VMI is left (or it is orphaned): remove the VM's finalizer.
    RemoveVmFinalizer,
}

/// The VM decision: one action, and the status fields that change with it.
#[derive(Clone, Debug, PartialEq)]
pub struct VmDecision {
    pub action: VmAction,
    /// The new `status.stateChangeRequests`, if it changed.
    pub requests: Option<Vec<StateChangeRequest>>,
    pub start_failure: StartFailureUpdate,
    /// The value for `status.runStrategy` (`None`: leave it unset). KubeVirt starts recording the
    /// strategy once a VMI has existed, which is how RerunOnFailure tells "just switched to" from
    /// "ran and succeeded".
    pub status_run_strategy: Option<RunStrategy>,
}

/// `data` key/value of a Start request that starts the VM paused.
pub const START_PAUSED_KEY: &str = "paused";
pub const START_PAUSED_TRUE: &str = "true";

/// The first request is a Start asking for a paused VM.
fn first_is_paused_start(requests: &[StateChangeRequest]) -> bool {
    requests.first().is_some_and(|r| {
        r.action == START_REQUEST
            && r.data
                .as_ref()
                .and_then(|d| d.get(START_PAUSED_KEY))
                .is_some_and(|v| v == START_PAUSED_TRUE)
    })
}

fn create(requests: &[StateChangeRequest]) -> VmAction {
    VmAction::CreateVmi {
        start_paused: first_is_paused_start(requests),
    }
}

fn first_is_start(requests: &[StateChangeRequest]) -> bool {
    requests.first().is_some_and(|r| r.action == START_REQUEST)
}

fn stop_requested_for(requests: &[StateChangeRequest], vmi: &ObservedVmi) -> bool {
    requests
        .first()
        .is_some_and(|r| r.action == STOP_REQUEST && r.uid.as_deref() == Some(vmi.uid.as_str()))
}

/// A start request, as the subresources and the controller write it.
pub fn start_request() -> StateChangeRequest {
    StateChangeRequest {
        action: START_REQUEST.to_owned(),
        data: None,
        uid: None,
    }
}

/// A stop request for the VMI with this UID.
pub fn stop_request(uid: &str) -> StateChangeRequest {
    StateChangeRequest {
        action: STOP_REQUEST.to_owned(),
        data: None,
        uid: Some(uid.to_owned()),
    }
}

/// Delete the VMI unless it is already going.
fn delete(vmi: &ObservedVmi, reason: DeleteReason) -> VmAction {
    if vmi.deleting {
        VmAction::Nothing
    } else {
        VmAction::DeleteVmi { reason }
    }
}

/// Create the VMI unless the crash-loop backoff forbids it yet.
fn create_after_backoff(obs: &VmObservation<'_>) -> VmAction {
    match backoff_until(obs.start_failure, obs.now) {
        Some(until) => VmAction::WaitBackoff { until },
        None => create(obs.requests),
    }
}

/// The action for a VM that is not being deleted, and whether a Start request is queued with it.
fn sync_run_strategy(obs: &VmObservation<'_>) -> (VmAction, bool) {
    let requests = obs.requests;
    match (obs.strategy.strategy, obs.vmi) {
        (RunStrategy::Always, Some(vmi)) => {
            if stop_requested_for(requests, vmi) {
                (delete(vmi, DeleteReason::StopRequested), false)
            } else if vmi.phase.is_final() {
                (delete(vmi, DeleteReason::Finished(vmi.phase)), false)
            } else {
                (VmAction::Nothing, false)
            }
        }
        (RunStrategy::Always, None) => (create_after_backoff(obs), false),

        (RunStrategy::RerunOnFailure, Some(vmi)) => {
            if vmi.deleting {
                (VmAction::Nothing, false)
            } else if stop_requested_for(requests, vmi) {
                let failed = vmi.phase == VmiPhase::Failed;
                (delete(vmi, DeleteReason::StopRequested), failed)
            } else if vmi.phase.is_final() {
                let failed = vmi.phase == VmiPhase::Failed;
                (delete(vmi, DeleteReason::Finished(vmi.phase)), failed)
            } else {
                (VmAction::Nothing, false)
            }
        }
        (RunStrategy::RerunOnFailure, None) => {
            let just_switched = obs.status_run_strategy != Some(RunStrategy::RerunOnFailure);
            if first_is_start(requests) || just_switched {
                (create_after_backoff(obs), false)
            } else {
                (VmAction::Nothing, false)
            }
        }

        (RunStrategy::Manual, Some(vmi)) if stop_requested_for(requests, vmi) => {
            (delete(vmi, DeleteReason::StopRequested), false)
        }
        (RunStrategy::Manual, Some(_)) => (VmAction::Nothing, false),
        (RunStrategy::Manual, None) if first_is_start(requests) => (create(requests), false),
        (RunStrategy::Manual, None) => (VmAction::Nothing, false),

        (RunStrategy::Halted, Some(vmi)) => (delete(vmi, DeleteReason::RunStrategyHalted), false),
        (RunStrategy::Halted, None) if first_is_start(requests) => (
            VmAction::PatchSpec(RunStrategyPatch::start(obs.strategy)),
            false,
        ),
        (RunStrategy::Halted, None) => (VmAction::Nothing, false),

        (RunStrategy::Once, Some(_)) => (VmAction::Nothing, false),
        (RunStrategy::Once, None) => (create(requests), false),
    }
}

/// Whether the first state change request is done and can be dropped, judged against the VMI
/// seen at the start of the pass (KubeVirt's `isTrimFirstChangeRequestNeeded`).
pub fn first_request_done(requests: &[StateChangeRequest], vmi: Option<&ObservedVmi>) -> bool {
    let Some(first) = requests.first() else {
        return false;
    };
    match (first.action.as_str(), vmi) {
        (STOP_REQUEST, None) => true,
        // A Stop naming no VMI can never be acted on; one naming another VMI was done earlier.
        (STOP_REQUEST, Some(vmi)) => first.uid.as_deref() != Some(vmi.uid.as_str()),
        (START_REQUEST, Some(vmi)) => !vmi.deleting && !vmi.phase.is_final(),
        _ => false,
    }
}

/// The VM decision for one reconcile pass.
pub fn decide(obs: &VmObservation<'_>) -> VmDecision {
    let (action, queue_start) = if obs.vm_deleting {
        match obs.vmi {
            Some(vmi) if !obs.orphan_dependents => (delete(vmi, DeleteReason::VmDeleted), false),
            _ => (VmAction::RemoveVmFinalizer, false),
        }
    } else {
        sync_run_strategy(obs)
    };

    let mut requests = obs.requests.to_vec();
    if queue_start {
        requests.push(start_request());
    }
    if first_request_done(&requests, obs.vmi) {
        requests.remove(0);
    }
    let requests = (requests.as_slice() != obs.requests).then_some(requests);

    let strategy = obs.strategy.strategy;
    let status_run_strategy = (obs.status_run_strategy.is_some() || obs.vmi.is_some())
        .then_some(strategy)
        .or(obs.status_run_strategy);

    VmDecision {
        action,
        requests,
        start_failure: next_start_failure(
            strategy,
            obs.start_failure,
            obs.vmi,
            obs.now,
            obs.random,
        ),
        status_run_strategy,
    }
}

/// Whether the VM is meant to be running now (KubeVirt's `isSetToStart`); the printable status
/// uses it to decide whether waiting for a volume is worth reporting.
pub fn is_set_to_start(
    strategy: RunStrategy,
    vmi: Option<&ObservedVmi>,
    requests: &[StateChangeRequest],
    status_run_strategy: Option<RunStrategy>,
) -> bool {
    match (strategy, vmi) {
        (RunStrategy::Always, _) => true,
        (RunStrategy::Halted, _) => false,
        (RunStrategy::Manual, Some(vmi)) => !stop_requested_for(requests, vmi),
        (RunStrategy::Manual, None) => first_is_start(requests),
        (RunStrategy::RerunOnFailure, Some(vmi)) => vmi.phase != VmiPhase::Succeeded,
        (RunStrategy::RerunOnFailure, None) => {
            first_is_start(requests) || status_run_strategy != Some(RunStrategy::RerunOnFailure)
        }
        (RunStrategy::Once, vmi) => vmi.is_none(),
    }
}

#[cfg(test)]
// Table rows are tuples, one column per input and expectation.
#[allow(clippy::type_complexity)]
mod tests {
    use super::*;
    use crate::decide::run_strategy::StrategyField;
    use RunStrategy::*;
    use VmiPhase::*;

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(second).unwrap()
    }

    const NOW: i64 = 1_000;

    fn paused_start() -> StateChangeRequest {
        StateChangeRequest {
            data: Some([(START_PAUSED_KEY.to_owned(), START_PAUSED_TRUE.to_owned())].into()),
            ..start_request()
        }
    }

    fn vmi(phase: VmiPhase) -> ObservedVmi {
        ObservedVmi::new("uid-1", phase)
    }

    fn deleting(phase: VmiPhase) -> ObservedVmi {
        ObservedVmi {
            deleting: true,
            ..vmi(phase)
        }
    }

    fn eff(strategy: RunStrategy) -> EffectiveRunStrategy {
        EffectiveRunStrategy {
            strategy,
            field: StrategyField::RunStrategy,
        }
    }

    fn backoff(retry: i64) -> StartFailureState {
        StartFailureState {
            consecutive_failures: 2,
            last_failed_vmi_uid: Some("uid-0".into()),
            retry_after: Some(at(retry)),
        }
    }

    struct Case {
        name: &'static str,
        strategy: RunStrategy,
        vmi: Option<ObservedVmi>,
        requests: Vec<StateChangeRequest>,
        start_failure: Option<StartFailureState>,
        status_run_strategy: Option<RunStrategy>,
        action: VmAction,
        requests_after: Option<Vec<StateChangeRequest>>,
    }

    fn case(name: &'static str, strategy: RunStrategy, vmi: Option<ObservedVmi>) -> Case {
        Case {
            name,
            strategy,
            vmi,
            requests: vec![],
            start_failure: None,
            status_run_strategy: Some(strategy),
            action: VmAction::Nothing,
            requests_after: None,
        }
    }

    impl Case {
        fn requests(mut self, r: Vec<StateChangeRequest>) -> Self {
            self.requests = r;
            self
        }
        fn backoff(mut self, retry: i64) -> Self {
            self.start_failure = Some(backoff(retry));
            self
        }
        fn status_strategy(mut self, s: Option<RunStrategy>) -> Self {
            self.status_run_strategy = s;
            self
        }
        fn expect(mut self, action: VmAction) -> Self {
            self.action = action;
            self
        }
        fn then_requests(mut self, r: Vec<StateChangeRequest>) -> Self {
            self.requests_after = Some(r);
            self
        }
    }

    fn created() -> VmAction {
        VmAction::CreateVmi {
            start_paused: false,
        }
    }

    fn del(reason: DeleteReason) -> VmAction {
        VmAction::DeleteVmi { reason }
    }

    #[test]
    fn run_strategy_table() {
        use DeleteReason::*;
        let start = start_request;
        let stop = || stop_request("uid-1");
        let stop_other = || stop_request("uid-0");
        let wait = |s| VmAction::WaitBackoff { until: at(s) };
        let cases = vec![
            // Always
            case("Always, no VMI: create", Always, None).expect(created()),
            case("Always, no VMI, in backoff: wait", Always, None)
                .backoff(NOW + 30)
                .expect(wait(NOW + 30)),
            case("Always, no VMI, backoff over: create", Always, None)
                .backoff(NOW)
                .expect(created()),
            case("Always, running: nothing", Always, Some(vmi(Running))),
            case("Always, pending: nothing", Always, Some(vmi(Pending))),
            case("Always, unknown: nothing", Always, Some(vmi(Unknown))),
            case("Always, succeeded: delete", Always, Some(vmi(Succeeded)))
                .expect(del(Finished(Succeeded))),
            case("Always, failed: delete", Always, Some(vmi(Failed))).expect(del(Finished(Failed))),
            case(
                "Always, failed, deleting: wait for it",
                Always,
                Some(deleting(Failed)),
            ),
            case(
                "Always, running, stop request: delete (restart)",
                Always,
                Some(vmi(Running)),
            )
            .requests(vec![stop(), start()])
            .expect(del(StopRequested)),
            case(
                "Always, stop request for another VMI: dropped",
                Always,
                Some(vmi(Running)),
            )
            .requests(vec![stop_other(), start()])
            .then_requests(vec![start()]),
            case("Always, restart: stop done once VMI gone", Always, None)
                .requests(vec![stop(), start()])
                .expect(created())
                .then_requests(vec![start()]),
            case(
                "Always, restart: start done once new VMI lives",
                Always,
                Some(ObservedVmi::new("uid-2", Pending)),
            )
            .requests(vec![start()])
            .then_requests(vec![]),
            case(
                "Always, start request kept while VMI is final",
                Always,
                Some(vmi(Failed)),
            )
            .requests(vec![start()])
            .expect(del(Finished(Failed))),
            case(
                "Always, paused start after Halted: create paused",
                Always,
                None,
            )
            .requests(vec![paused_start()])
            .expect(VmAction::CreateVmi { start_paused: true }),
            case("Manual, paused start: create paused", Manual, None)
                .requests(vec![paused_start()])
                .expect(VmAction::CreateVmi { start_paused: true }),
            case("Manual, start with paused=false", Manual, None)
                .requests(vec![StateChangeRequest {
                    data: Some([(START_PAUSED_KEY.to_owned(), "false".to_owned())].into()),
                    ..start()
                }])
                .expect(created()),
            // RerunOnFailure
            case(
                "Rerun, running: nothing",
                RerunOnFailure,
                Some(vmi(Running)),
            ),
            case(
                "Rerun, failed: delete and queue a start",
                RerunOnFailure,
                Some(vmi(Failed)),
            )
            .expect(del(Finished(Failed)))
            .then_requests(vec![start()]),
            case(
                "Rerun, succeeded: delete, no start",
                RerunOnFailure,
                Some(vmi(Succeeded)),
            )
            .expect(del(Finished(Succeeded))),
            case(
                "Rerun, failed, deleting: nothing",
                RerunOnFailure,
                Some(deleting(Failed)),
            ),
            case(
                "Rerun, stop request: delete",
                RerunOnFailure,
                Some(vmi(Running)),
            )
            .requests(vec![stop()])
            .expect(del(StopRequested)),
            case("Rerun, no VMI, start request: create", RerunOnFailure, None)
                .requests(vec![start()])
                .expect(created()),
            case(
                "Rerun, no VMI, start request, backoff: wait",
                RerunOnFailure,
                None,
            )
            .requests(vec![start()])
            .backoff(NOW + 5)
            .expect(wait(NOW + 5)),
            case(
                "Rerun, no VMI after success: stays stopped",
                RerunOnFailure,
                None,
            ),
            case("Rerun, never started: create", RerunOnFailure, None)
                .status_strategy(None)
                .expect(created()),
            case("Rerun, switched from Manual: create", RerunOnFailure, None)
                .status_strategy(Some(Manual))
                .expect(created()),
            // Manual
            case("Manual, no VMI: nothing", Manual, None),
            case("Manual, no VMI, start: create", Manual, None)
                .requests(vec![start()])
                .expect(created()),
            case("Manual, start ignores backoff", Manual, None)
                .requests(vec![start()])
                .backoff(NOW + 100)
                .expect(created()),
            case("Manual, running: nothing", Manual, Some(vmi(Running))),
            case("Manual, failed: left alone", Manual, Some(vmi(Failed))),
            case(
                "Manual, stop for this VMI: delete",
                Manual,
                Some(vmi(Running)),
            )
            .requests(vec![stop()])
            .expect(del(StopRequested)),
            case(
                "Manual, stop, VMI deleting: wait",
                Manual,
                Some(deleting(Running)),
            )
            .requests(vec![stop()]),
            case(
                "Manual, stop without uid: dropped",
                Manual,
                Some(vmi(Running)),
            )
            .requests(vec![StateChangeRequest {
                action: STOP_REQUEST.into(),
                ..Default::default()
            }])
            .then_requests(vec![]),
            case(
                "Manual, stop for old VMI then start: drop stop",
                Manual,
                Some(vmi(Running)),
            )
            .requests(vec![stop_other(), start()])
            .then_requests(vec![start()]),
            case(
                "Manual, first stop, no VMI: drop stop, no create yet",
                Manual,
                None,
            )
            .requests(vec![stop(), start()])
            .then_requests(vec![start()]),
            case(
                "Manual, start with final VMI: kept",
                Manual,
                Some(vmi(Succeeded)),
            )
            .requests(vec![start()]),
            case(
                "Manual, start with deleting VMI: kept",
                Manual,
                Some(deleting(Running)),
            )
            .requests(vec![start()]),
            // Halted
            case("Halted, no VMI: nothing", Halted, None),
            case("Halted, running: delete", Halted, Some(vmi(Running)))
                .expect(del(RunStrategyHalted)),
            case("Halted, final VMI: delete", Halted, Some(vmi(Succeeded)))
                .expect(del(RunStrategyHalted)),
            case("Halted, deleting: nothing", Halted, Some(deleting(Running))),
            case("Halted, start request: switch to Always", Halted, None)
                .requests(vec![start()])
                .expect(VmAction::PatchSpec(RunStrategyPatch::RunStrategy {
                    from: Halted,
                    to: Always,
                })),
            // Once
            case("Once, no VMI: create", Once, None).expect(created()),
            case("Once, ignores backoff", Once, None)
                .backoff(NOW + 50)
                .expect(created()),
            case("Once, running: nothing", Once, Some(vmi(Running))),
            case("Once, failed: never recreated", Once, Some(vmi(Failed))),
            case("Once, succeeded: never deleted", Once, Some(vmi(Succeeded))),
        ];
        for c in cases {
            let obs = VmObservation {
                strategy: eff(c.strategy),
                vm_deleting: false,
                orphan_dependents: false,
                vmi: c.vmi.as_ref(),
                requests: &c.requests,
                start_failure: c.start_failure.as_ref(),
                status_run_strategy: c.status_run_strategy,
                now: at(NOW),
                random: 0,
            };
            let got = decide(&obs);
            assert_eq!(got.action, c.action, "{}", c.name);
            assert_eq!(got.requests, c.requests_after, "{}: requests", c.name);
        }
    }

    #[test]
    fn halted_start_writes_running_when_the_vm_uses_it() {
        let requests = [start_request()];
        for field in [StrategyField::Running, StrategyField::Neither] {
            let obs = VmObservation {
                strategy: EffectiveRunStrategy {
                    strategy: Halted,
                    field,
                },
                vm_deleting: false,
                orphan_dependents: false,
                vmi: None,
                requests: &requests,
                start_failure: None,
                status_run_strategy: None,
                now: at(NOW),
                random: 0,
            };
            let VmAction::PatchSpec(RunStrategyPatch::Running { to, .. }) = decide(&obs).action
            else {
                panic!("{field:?}: expected a spec.running patch");
            };
            assert!(to);
        }
    }

    #[test]
    fn vm_deletion() {
        let running = vmi(Running);
        let going = deleting(Running);
        // (vmi, orphan, action)
        let table = [
            (Some(&running), false, del(DeleteReason::VmDeleted)),
            (Some(&going), false, VmAction::Nothing),
            (Some(&running), true, VmAction::RemoveVmFinalizer),
            (None, false, VmAction::RemoveVmFinalizer),
        ];
        for strategy in RunStrategy::ALL {
            for (vmi, orphan, want) in &table {
                let obs = VmObservation {
                    strategy: eff(strategy),
                    vm_deleting: true,
                    orphan_dependents: *orphan,
                    vmi: *vmi,
                    requests: &[],
                    start_failure: None,
                    status_run_strategy: None,
                    now: at(NOW),
                    random: 0,
                };
                assert_eq!(
                    &decide(&obs).action,
                    want,
                    "{strategy} vmi={vmi:?} orphan={orphan}"
                );
            }
        }
    }

    #[test]
    fn start_failure_and_status_strategy_travel_with_the_decision() {
        let failed = vmi(Failed);
        let obs = VmObservation {
            strategy: eff(Always),
            vm_deleting: false,
            orphan_dependents: false,
            vmi: Some(&failed),
            requests: &[],
            start_failure: None,
            status_run_strategy: None,
            now: at(NOW),
            random: 0,
        };
        let d = decide(&obs);
        assert_eq!(d.action, del(DeleteReason::Finished(Failed)));
        assert_eq!(
            d.start_failure,
            StartFailureUpdate::Set(StartFailureState {
                consecutive_failures: 1,
                last_failed_vmi_uid: Some("uid-1".into()),
                retry_after: Some(at(NOW + 10)),
            })
        );
        assert_eq!(d.status_run_strategy, Some(Always));

        // (status strategy before, VMI exists, after)
        let table = [
            (None, false, None),
            (None, true, Some(Manual)),
            (Some(Always), false, Some(Manual)),
            (Some(Always), true, Some(Manual)),
        ];
        let running = vmi(Running);
        for (before, exists, after) in table {
            let obs = VmObservation {
                strategy: eff(Manual),
                vmi: exists.then_some(&running),
                status_run_strategy: before,
                ..obs
            };
            assert_eq!(
                decide(&obs).status_run_strategy,
                after,
                "{before:?} {exists}"
            );
        }
    }

    #[test]
    fn set_to_start() {
        let running = vmi(Running);
        let succeeded = vmi(Succeeded);
        let start = [start_request()];
        let stop = [stop_request("uid-1")];
        // (strategy, vmi, requests, status strategy, want)
        let table: &[(
            RunStrategy,
            Option<&ObservedVmi>,
            &[StateChangeRequest],
            Option<RunStrategy>,
            bool,
        )] = &[
            (Always, None, &[], None, true),
            (Halted, Some(&running), &[], None, false),
            (Manual, Some(&running), &[], None, true),
            (Manual, Some(&running), &stop, None, false),
            (Manual, None, &[], None, false),
            (Manual, None, &start, None, true),
            (RerunOnFailure, Some(&running), &[], None, true),
            (RerunOnFailure, Some(&succeeded), &[], None, false),
            (RerunOnFailure, None, &[], Some(RerunOnFailure), false),
            (RerunOnFailure, None, &[], None, true),
            (RerunOnFailure, None, &start, Some(RerunOnFailure), true),
            (Once, None, &[], None, true),
            (Once, Some(&running), &[], None, false),
        ];
        for (strategy, vmi, requests, status, want) in table {
            assert_eq!(
                is_set_to_start(*strategy, *vmi, requests, *status),
                *want,
                "{strategy} {vmi:?} {requests:?} {status:?}"
            );
        }
    }
}
