//! A VM's `status.printableStatus` (the STATUS column of `kubectl get vm`), `created`, `ready`
//! and conditions, from its VMI.
//!
//! The printable status is the first of KubeVirt's checks that holds, in this order
//! (`setPrintableStatus` in KubeVirt's VM controller):
//!
//! 1. Terminating — the VM is being deleted.
//! 2. Stopping — a VMI that is not final is being deleted, or its deletion was just requested.
//! 3. (Migrating — virtshim has no live migration.)
//! 4. Paused — the VMI runs and has `Paused=True`.
//! 5. Running — the VMI runs, not paused.
//! 6. ErrorPvcNotFound — the VMI's `Synchronized` is False with reason `FailedPvcNotFound`.
//! 7. (DataVolumeError — virtshim has no CDI DataVolumes.)
//! 8. ErrorUnschedulable — the VMI's `PodScheduled` is False with reason `Unschedulable`.
//! 9. (Provisioning — DataVolumes again.)
//! 10. WaitingForVolumeBinding — the VM is meant to run and one of its PVCs is unbound.
//! 11. ErrImagePull / 12. ImagePullBackOff — the VMI's `Synchronized` is False with that reason.
//! 13. Starting — no VMI but one was just created, or the VMI is Pending / Scheduling / Scheduled.
//! 14. CrashLoopBackOff — no live VMI, none just created, start failures counted, and a strategy
//!     that restarts by itself (Always, RerunOnFailure, Once).
//! 15. Stopped — the VMI is final, or there is none and none was just created.
//! 16. (WaitingForReceiver — migration again.)
//! 17. Unknown — anything else (a VMI in phase Unknown).

use super::conditions::{self, TRUE};
use super::vmi_phase::{POD_SCHEDULED, READY, SYNCHRONIZED};
use crate::decide::run_strategy::RunStrategy;
use crate::decide::start_failure::StartFailureState;
use crate::observed::{ObservedVmi, VmiPhase};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use virtshim_api::types::Condition;

/// VM condition types virtshim writes.
pub const FAILURE: &str = "Failure";
pub const PAUSED: &str = "Paused";
pub const RESTART_REQUIRED: &str = "RestartRequired";
/// Reasons on the VMI's conditions that the printable status looks for.
pub const REASON_FAILED_PVC_NOT_FOUND: &str = "FailedPvcNotFound";
pub const REASON_UNSCHEDULABLE: &str = "Unschedulable";

/// The values of `printableStatus` virtshim can produce.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PrintableStatus {
    Terminating,
    Stopping,
    Paused,
    Running,
    ErrorPvcNotFound,
    ErrorUnschedulable,
    WaitingForVolumeBinding,
    ErrImagePull,
    ImagePullBackOff,
    Starting,
    CrashLoopBackOff,
    Stopped,
    Unknown,
}

impl PrintableStatus {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Terminating => "Terminating",
            Self::Stopping => "Stopping",
            Self::Paused => "Paused",
            Self::Running => "Running",
            Self::ErrorPvcNotFound => "ErrorPvcNotFound",
            Self::ErrorUnschedulable => "ErrorUnschedulable",
            Self::WaitingForVolumeBinding => "WaitingForVolumeBinding",
            Self::ErrImagePull => "ErrImagePull",
            Self::ImagePullBackOff => "ImagePullBackOff",
            Self::Starting => "Starting",
            Self::CrashLoopBackOff => "CrashLoopBackOff",
            Self::Stopped => "Stopped",
            Self::Unknown => "Unknown",
        }
    }
}

/// What the printable status reads.
#[derive(Clone, Copy, Debug)]
pub struct PrintableInput<'a> {
    /// The VM has a deletionTimestamp.
    pub vm_deleting: bool,
    pub strategy: RunStrategy,
    pub vmi: Option<&'a ObservedVmi>,
    /// `status.startFailure` after this pass's update.
    pub start_failure: Option<&'a StartFailureState>,
    /// A VMI creation was sent and the cache has not shown it yet.
    pub start_expected: bool,
    /// A VMI deletion was sent and the cache has not shown it yet.
    pub stop_expected: bool,
    /// The VM is meant to run ([`crate::decide::vm::is_set_to_start`]).
    pub set_to_start: bool,
    /// A PVC the VM's volumes name exists and is not Bound yet.
    pub unbound_pvc: bool,
}

fn vmi_condition(vmi: Option<&ObservedVmi>, type_: &str, status: &str, reason: &str) -> bool {
    vmi.is_some_and(|v| conditions::has_status_and_reason(&v.conditions, type_, status, reason))
}

/// The VM's `printableStatus`.
pub fn printable_status(input: &PrintableInput<'_>) -> PrintableStatus {
    use PrintableStatus as P;
    let vmi = input.vmi;
    let live = vmi.filter(|v| !v.phase.is_final());
    let running = vmi.filter(|v| v.phase == VmiPhase::Running);
    let paused = running.is_some_and(|v| conditions::has_status(&v.conditions, PAUSED, TRUE));
    let failures = input.start_failure.map_or(0, |s| s.consecutive_failures);
    let sync_false = |reason| vmi_condition(vmi, SYNCHRONIZED, "False", reason);

    if input.vm_deleting {
        P::Terminating
    } else if live.is_some_and(|v| v.deleting || input.stop_expected) {
        P::Stopping
    } else if paused {
        P::Paused
    } else if running.is_some() {
        P::Running
    } else if sync_false(REASON_FAILED_PVC_NOT_FOUND) {
        P::ErrorPvcNotFound
    } else if vmi_condition(vmi, POD_SCHEDULED, "False", REASON_UNSCHEDULABLE) {
        P::ErrorUnschedulable
    } else if input.set_to_start && input.unbound_pvc {
        P::WaitingForVolumeBinding
    } else if sync_false(super::vmi_phase::REASON_ERR_IMAGE_PULL) {
        P::ErrImagePull
    } else if sync_false(super::vmi_phase::REASON_IMAGE_PULL_BACK_OFF) {
        P::ImagePullBackOff
    } else if match vmi {
        None => input.start_expected,
        Some(v) => matches!(
            v.phase,
            VmiPhase::Unset | VmiPhase::Pending | VmiPhase::Scheduling | VmiPhase::Scheduled
        ),
    } {
        P::Starting
    } else if live.is_none()
        && !input.start_expected
        && failures > 0
        && input.strategy.restarts_automatically()
    {
        P::CrashLoopBackOff
    } else if match vmi {
        Some(v) => v.phase.is_final(),
        None => !input.start_expected,
    } {
        P::Stopped
    } else {
        P::Unknown
    }
}

/// A failed reconcile pass, shown as the VM's `Failure` condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncFailure {
    /// CamelCase, e.g. `FailedCreate`.
    pub reason: String,
    pub message: String,
}

/// The VM's conditions (KubeVirt's `syncConditions`):
/// - `Ready` mirrors the VMI's Ready condition, or is False with `VMINotExists` /
///   `VMIConditionMissing`;
/// - `Failure` is True while a reconcile pass fails, and gone otherwise;
/// - every other VMI condition (`Paused`, …) is copied, and VM conditions the VMI no longer has
///   are dropped — except `RestartRequired`, which belongs to the VM, and except while there is
///   no VMI at all, when the rest are left as they were.
pub fn vm_conditions(
    existing: &[Condition],
    vmi: Option<&ObservedVmi>,
    failure: Option<&SyncFailure>,
    now: &Time,
) -> Vec<Condition> {
    let mut out = existing.to_vec();
    let vm_false = |reason: &str, message: &str| Condition {
        type_: READY.to_owned(),
        status: "False".to_owned(),
        last_probe_time: Some(now.clone()),
        last_transition_time: Some(now.clone()),
        reason: Some(reason.to_owned()),
        message: Some(message.to_owned()),
    };
    let ready = match vmi {
        None => vm_false("VMINotExists", "VMI does not exist"),
        Some(v) => match conditions::find(&v.conditions, READY) {
            Some(c) => c.clone(),
            None => vm_false("VMIConditionMissing", "VMI is missing the Ready condition"),
        },
    };
    conditions::upsert(&mut out, ready);

    match failure {
        Some(f) => conditions::upsert(
            &mut out,
            Condition {
                type_: FAILURE.to_owned(),
                status: TRUE.to_owned(),
                last_probe_time: None,
                last_transition_time: Some(now.clone()),
                reason: Some(f.reason.clone()),
                message: Some(f.message.clone()),
            },
        ),
        None => conditions::remove(&mut out, FAILURE),
    }

    let Some(vmi) = vmi else {
        return out;
    };
    let owned_by_vm = |t: &str| matches!(t, READY | FAILURE | RESTART_REQUIRED);
    for c in vmi.conditions.iter().filter(|c| !owned_by_vm(&c.type_)) {
        conditions::upsert(&mut out, c.clone());
    }
    out.retain(|c| owned_by_vm(&c.type_) || conditions::find(&vmi.conditions, &c.type_).is_some());
    out
}

/// `status.created`: a VMI exists.
pub fn created(vmi: Option<&ObservedVmi>) -> bool {
    vmi.is_some()
}

/// `status.ready`: the VMI exists and its Ready condition is True.
pub fn ready(vmi: Option<&ObservedVmi>) -> bool {
    vmi.is_some_and(|v| conditions::has_status(&v.conditions, READY, TRUE))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;
    use PrintableStatus as P;
    use RunStrategy::*;
    use VmiPhase::*;

    fn cond(type_: &str, status: &str, reason: &str) -> Condition {
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: (!reason.is_empty()).then(|| reason.to_owned()),
            ..Default::default()
        }
    }

    fn vmi(phase: VmiPhase, conds: &[Condition]) -> ObservedVmi {
        ObservedVmi {
            conditions: conds.to_vec(),
            ..ObservedVmi::new("uid-1", phase)
        }
    }

    fn input<'a>(vmi: Option<&'a ObservedVmi>) -> PrintableInput<'a> {
        PrintableInput {
            vm_deleting: false,
            strategy: Always,
            vmi,
            start_failure: None,
            start_expected: false,
            stop_expected: false,
            set_to_start: true,
            unbound_pvc: false,
        }
    }

    #[test]
    fn printable_status_table() {
        let paused = [cond(PAUSED, "True", "PausedByUser")];
        let unpaused = [cond(PAUSED, "False", "")];
        let pvc = [cond(SYNCHRONIZED, "False", REASON_FAILED_PVC_NOT_FOUND)];
        let unsched = [cond(POD_SCHEDULED, "False", REASON_UNSCHEDULABLE)];
        let pull = [cond(SYNCHRONIZED, "False", "ErrImagePull")];
        let backoff = [cond(SYNCHRONIZED, "False", "ImagePullBackOff")];
        let looping = StartFailureState {
            consecutive_failures: 2,
            last_failed_vmi_uid: None,
            retry_after: None,
        };
        let deleting = |v: ObservedVmi| ObservedVmi {
            deleting: true,
            ..v
        };

        type Tweak = fn(&mut PrintableInput<'_>);
        let none: Tweak = |_| {};
        let vm_deleting: Tweak = |i| i.vm_deleting = true;
        let stop_expected: Tweak = |i| i.stop_expected = true;
        let start_expected: Tweak = |i| i.start_expected = true;
        let unbound: Tweak = |i| i.unbound_pvc = true;
        let unbound_not_starting: Tweak = |i| {
            i.unbound_pvc = true;
            i.set_to_start = false;
        };
        let manual: Tweak = |i| i.strategy = Manual;

        // (name, vmi, crash-looping, tweak, expected)
        let table: Vec<(&str, Option<ObservedVmi>, bool, Tweak, PrintableStatus)> = vec![
            (
                "VM deleting beats everything",
                Some(vmi(Running, &paused)),
                false,
                vm_deleting,
                P::Terminating,
            ),
            (
                "VMI deleting",
                Some(deleting(vmi(Running, &[]))),
                false,
                none,
                P::Stopping,
            ),
            (
                "VMI deletion just sent",
                Some(vmi(Running, &[])),
                false,
                stop_expected,
                P::Stopping,
            ),
            (
                "final VMI deleting is not stopping",
                Some(deleting(vmi(Succeeded, &[]))),
                false,
                none,
                P::Stopped,
            ),
            (
                "paused",
                Some(vmi(Running, &paused)),
                false,
                none,
                P::Paused,
            ),
            (
                "paused False is running",
                Some(vmi(Running, &unpaused)),
                false,
                none,
                P::Running,
            ),
            ("running", Some(vmi(Running, &[])), false, none, P::Running),
            (
                "running beats pull errors",
                Some(vmi(Running, &pull)),
                false,
                none,
                P::Running,
            ),
            (
                "pvc not found",
                Some(vmi(Pending, &pvc)),
                false,
                none,
                P::ErrorPvcNotFound,
            ),
            (
                "unschedulable",
                Some(vmi(Scheduling, &unsched)),
                false,
                none,
                P::ErrorUnschedulable,
            ),
            (
                "unbound PVC",
                Some(vmi(Pending, &[])),
                false,
                unbound,
                P::WaitingForVolumeBinding,
            ),
            (
                "unbound PVC, not meant to run",
                None,
                false,
                unbound_not_starting,
                P::Stopped,
            ),
            (
                "image pull error",
                Some(vmi(Scheduling, &pull)),
                false,
                none,
                P::ErrImagePull,
            ),
            (
                "image pull backoff",
                Some(vmi(Scheduling, &backoff)),
                false,
                none,
                P::ImagePullBackOff,
            ),
            (
                "unprocessed",
                Some(vmi(Unset, &[])),
                false,
                none,
                P::Starting,
            ),
            ("pending", Some(vmi(Pending, &[])), false, none, P::Starting),
            (
                "scheduling",
                Some(vmi(Scheduling, &[])),
                false,
                none,
                P::Starting,
            ),
            (
                "scheduled",
                Some(vmi(Scheduled, &[])),
                false,
                none,
                P::Starting,
            ),
            ("just created", None, false, start_expected, P::Starting),
            (
                "just created while looping",
                None,
                true,
                start_expected,
                P::Starting,
            ),
            ("crash loop, no VMI", None, true, none, P::CrashLoopBackOff),
            (
                "crash loop, failed VMI",
                Some(vmi(Failed, &[])),
                true,
                none,
                P::CrashLoopBackOff,
            ),
            ("no crash loop under Manual", None, true, manual, P::Stopped),
            ("no VMI", None, false, none, P::Stopped),
            (
                "succeeded",
                Some(vmi(Succeeded, &[])),
                false,
                none,
                P::Stopped,
            ),
            ("failed", Some(vmi(Failed, &[])), false, none, P::Stopped),
            ("unknown", Some(vmi(Unknown, &[])), false, none, P::Unknown),
        ];
        for (name, v, loops, tweak, want) in table {
            let mut i = input(v.as_ref());
            if loops {
                i.start_failure = Some(&looping);
            }
            tweak(&mut i);
            assert_eq!(printable_status(&i), want, "{name}");
        }
    }

    #[test]
    fn created_and_ready() {
        let ready_vmi = vmi(Running, &[cond(READY, "True", "")]);
        let unready = vmi(Running, &[cond(READY, "False", "GuestNotRunning")]);
        assert!(!created(None) && !ready(None));
        assert!(created(Some(&unready)) && !ready(Some(&unready)));
        assert!(created(Some(&ready_vmi)) && ready(Some(&ready_vmi)));
    }

    fn now() -> Time {
        Time(Timestamp::from_second(1_000).unwrap())
    }

    fn summary(conds: &[Condition]) -> Vec<(String, String, Option<String>)> {
        conds
            .iter()
            .map(|c| (c.type_.clone(), c.status.clone(), c.reason.clone()))
            .collect()
    }

    fn row(t: &str, s: &str, r: &str) -> (String, String, Option<String>) {
        (t.into(), s.into(), (!r.is_empty()).then(|| r.to_owned()))
    }

    #[test]
    fn vm_conditions_follow_the_vmi() {
        let t = now();
        let failure = SyncFailure {
            reason: "FailedCreate".into(),
            message: "quota".into(),
        };
        let restart = cond(RESTART_REQUIRED, "True", "");
        let stale_paused = cond(PAUSED, "True", "PausedByUser");

        // No VMI: Ready False/VMINotExists; other conditions stay.
        let got = vm_conditions(std::slice::from_ref(&stale_paused), None, None, &t);
        assert_eq!(
            summary(&got),
            vec![
                row(PAUSED, "True", "PausedByUser"),
                row(READY, "False", "VMINotExists")
            ]
        );

        // VMI without Ready; a failure is reported.
        let bare = vmi(Scheduling, &[]);
        let got = vm_conditions(&[], Some(&bare), Some(&failure), &t);
        assert_eq!(
            summary(&got),
            vec![
                row(READY, "False", "VMIConditionMissing"),
                row(FAILURE, "True", "FailedCreate")
            ]
        );

        // The failure goes when the pass succeeds; VMI conditions are mirrored and stale ones
        // dropped, RestartRequired kept.
        let running = vmi(
            Running,
            &[
                cond(READY, "True", ""),
                cond("LiveMigratable", "False", "NotMigratable"),
            ],
        );
        let got = vm_conditions(
            &[restart, stale_paused, got[1].clone()],
            Some(&running),
            None,
            &t,
        );
        assert_eq!(
            summary(&got),
            vec![
                row(RESTART_REQUIRED, "True", ""),
                row(READY, "True", ""),
                row("LiveMigratable", "False", "NotMigratable"),
            ]
        );
    }
}
