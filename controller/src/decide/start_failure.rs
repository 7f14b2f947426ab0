//! Crash-loop bookkeeping: `VirtualMachine.status.startFailure` and the backoff it imposes.
//!
//! KubeVirt counts a *start failure* when a VMI finishes (Succeeded or Failed) without ever
//! having reached Running, and only under the strategies that restart VMIs by themselves
//! (Always, RerunOnFailure, Once). Each failure pushes the next automatic start back by
//! ≈ 10 s × failures², plus up to half of that again at random so that many failing VMs spread
//! out, capped at 300 s; the VM shows `CrashLoopBackOff` meanwhile. A VMI that reaches Running,
//! or a switch to Manual / Halted, clears the count. The subresources clear it as well (see
//! [`super::subresource`]), so a user's explicit start is never delayed.
//!
//! The random part is an input (`random`), so that the rule stays a pure function.

use super::run_strategy::RunStrategy;
use crate::observed::ObservedVmi;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use virtshim_api::types::StartFailure;

/// The smallest backoff step, seconds.
pub const MIN_INTERVAL_SECONDS: i64 = 10;
/// The longest backoff, seconds (KubeVirt's `defaultMaxCrashLoopBackoffDelaySeconds`).
pub const MAX_DELAY_SECONDS: i64 = 300;

/// How long to wait before the next automatic start after `failures` consecutive start
/// failures. `random` is any random number; it picks the jitter in `[0, base / 2]`.
pub fn backoff_delay(failures: u32, random: u64) -> SignedDuration {
    let n = i64::from(failures.max(1));
    // KubeVirt scales the step with the cap (cap / 30), never below 10 s: 10 s for a 300 s cap.
    let interval = (MAX_DELAY_SECONDS / 30).max(MIN_INTERVAL_SECONDS);
    let base = interval.saturating_mul(n.saturating_mul(n));
    // `base / 2 + 1` is positive and fits in u64; the remainder is below it, so it fits in i64.
    let range = u64::try_from(base / 2 + 1).unwrap_or(u64::MAX);
    let jitter = i64::try_from(random % range).unwrap_or(0);
    SignedDuration::from_secs(base.saturating_add(jitter).min(MAX_DELAY_SECONDS))
}

/// `status.startFailure`, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StartFailureState {
    pub consecutive_failures: u32,
    /// The VMI whose failure was counted last, so that one VMI is never counted twice.
    pub last_failed_vmi_uid: Option<String>,
    /// No automatic start before this.
    pub retry_after: Option<Timestamp>,
}

impl From<&StartFailure> for StartFailureState {
    fn from(wire: &StartFailure) -> Self {
        let count = wire.consecutive_fail_count.unwrap_or(0).max(0);
        Self {
            consecutive_failures: u32::try_from(count).unwrap_or(u32::MAX),
            last_failed_vmi_uid: wire.last_failed_vmi_uid.clone(),
            retry_after: wire.retry_after_timestamp.as_ref().map(|t| t.0),
        }
    }
}

impl From<&StartFailureState> for StartFailure {
    fn from(state: &StartFailureState) -> Self {
        Self {
            consecutive_fail_count: Some(i64::from(state.consecutive_failures)),
            last_failed_vmi_uid: state.last_failed_vmi_uid.clone(),
            retry_after_timestamp: state.retry_after.map(Time),
        }
    }
}

/// What to do with `status.startFailure`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StartFailureUpdate {
    Unchanged,
    /// Remove it.
    Clear,
    /// Write this.
    Set(StartFailureState),
}

/// The start-failure record after observing `vmi` (KubeVirt's `syncStartFailureStatus`).
pub fn next_start_failure(
    strategy: RunStrategy,
    current: Option<&StartFailureState>,
    vmi: Option<&ObservedVmi>,
    now: Timestamp,
    random: u64,
) -> StartFailureUpdate {
    let ever_running = vmi.is_some_and(|v| v.ever_running);
    if ever_running || !strategy.restarts_automatically() {
        return match current {
            Some(_) => StartFailureUpdate::Clear,
            None => StartFailureUpdate::Unchanged,
        };
    }
    let Some(vmi) = vmi.filter(|v| v.phase.is_final()) else {
        return StartFailureUpdate::Unchanged;
    };
    if current.is_some_and(|c| c.last_failed_vmi_uid.as_deref() == Some(vmi.uid.as_str())) {
        return StartFailureUpdate::Unchanged;
    }
    let failures = current.map_or(1, |c| c.consecutive_failures.saturating_add(1));
    let retry_after = now
        .checked_add(backoff_delay(failures, random))
        .unwrap_or(Timestamp::MAX);
    StartFailureUpdate::Set(StartFailureState {
        consecutive_failures: failures,
        last_failed_vmi_uid: Some(vmi.uid.clone()),
        retry_after: Some(retry_after),
    })
}

/// When the backoff ends, if it has not ended by `now` (compared in whole seconds, as KubeVirt
/// does).
pub fn backoff_until(current: Option<&StartFailureState>, now: Timestamp) -> Option<Timestamp> {
    let retry_after = current?.retry_after?;
    (retry_after.as_second() > now.as_second()).then_some(retry_after)
}

#[cfg(test)]
// Table rows are tuples, one column per input and expectation.
#[allow(clippy::type_complexity)]
mod tests {
    use super::*;
    use crate::observed::VmiPhase;

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(second).unwrap()
    }

    #[test]
    fn backoff_grows_with_the_square_and_is_capped() {
        // (failures, random, seconds)
        let table = [
            (0, 0, 10), // treated as one failure
            (1, 0, 10),
            (1, 5, 15), // jitter range [0, 5]
            (1, 6, 10), // 6 % 6 == 0
            (2, 0, 40),
            (2, 20, 60),
            (3, 0, 90),
            (4, 0, 160),
            (5, 0, 250),
            (5, 125, 300), // 375 capped
            (6, 0, 300),   // 360 capped
            (u32::MAX, u64::MAX, 300),
        ];
        for (failures, random, secs) in table {
            assert_eq!(
                backoff_delay(failures, random),
                SignedDuration::from_secs(secs),
                "failures={failures} random={random}"
            );
        }
    }

    fn state(count: u32, uid: &str, retry: i64) -> StartFailureState {
        StartFailureState {
            consecutive_failures: count,
            last_failed_vmi_uid: Some(uid.into()),
            retry_after: Some(at(retry)),
        }
    }

    fn vmi(uid: &str, phase: VmiPhase, ever_running: bool) -> ObservedVmi {
        ObservedVmi {
            ever_running,
            ..ObservedVmi::new(uid, phase)
        }
    }

    #[test]
    fn counting_start_failures() {
        use RunStrategy::*;
        use StartFailureUpdate::*;
        use VmiPhase::*;
        let now = 1000;
        let prior = state(2, "old", 1040);
        let table: Vec<(
            &str,
            RunStrategy,
            Option<&StartFailureState>,
            Option<ObservedVmi>,
            StartFailureUpdate,
        )> = vec![
            (
                "first early failure",
                Always,
                None,
                Some(vmi("a", Failed, false)),
                Set(state(1, "a", now + 10)),
            ),
            (
                "early success also counts",
                Always,
                None,
                Some(vmi("a", Succeeded, false)),
                Set(state(1, "a", now + 10)),
            ),
            (
                "next failure adds one",
                Always,
                Some(&prior),
                Some(vmi("b", Failed, false)),
                Set(state(3, "b", now + 90)),
            ),
            (
                "same VMI counted once",
                Always,
                Some(&prior),
                Some(vmi("old", Failed, false)),
                Unchanged,
            ),
            (
                "RerunOnFailure counts",
                RerunOnFailure,
                None,
                Some(vmi("a", Failed, false)),
                Set(state(1, "a", now + 10)),
            ),
            (
                "Once counts",
                Once,
                None,
                Some(vmi("a", Failed, false)),
                Set(state(1, "a", now + 10)),
            ),
            (
                "a VMI that ran clears",
                Always,
                Some(&prior),
                Some(vmi("b", Running, true)),
                Clear,
            ),
            (
                "a VMI that ran then failed clears",
                Always,
                Some(&prior),
                Some(vmi("b", Failed, true)),
                Clear,
            ),
            (
                "nothing to clear",
                Always,
                None,
                Some(vmi("b", Running, true)),
                Unchanged,
            ),
            (
                "Manual clears",
                Manual,
                Some(&prior),
                Some(vmi("b", Failed, false)),
                Clear,
            ),
            ("Halted clears", Halted, Some(&prior), None, Clear),
            ("Halted, nothing recorded", Halted, None, None, Unchanged),
            ("no VMI keeps", Always, Some(&prior), None, Unchanged),
            (
                "starting VMI keeps",
                Always,
                Some(&prior),
                Some(vmi("b", Scheduling, false)),
                Unchanged,
            ),
        ];
        for (name, strategy, current, vmi, want) in table {
            let got = next_start_failure(strategy, current, vmi.as_ref(), at(now), 0);
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn backoff_window() {
        let s = state(1, "a", 1010);
        assert_eq!(backoff_until(Some(&s), at(1000)), Some(at(1010)));
        assert_eq!(backoff_until(Some(&s), at(1009)), Some(at(1010)));
        assert_eq!(backoff_until(Some(&s), at(1010)), None);
        assert_eq!(backoff_until(Some(&s), at(2000)), None);
        assert_eq!(backoff_until(None, at(0)), None);
        let no_time = StartFailureState {
            retry_after: None,
            ..s
        };
        assert_eq!(backoff_until(Some(&no_time), at(0)), None);
    }

    #[test]
    fn wire_round_trip() {
        let s = state(4, "x", 1234);
        let wire = StartFailure::from(&s);
        assert_eq!(wire.consecutive_fail_count, Some(4));
        assert_eq!(StartFailureState::from(&wire), s);
        let negative = StartFailure {
            consecutive_fail_count: Some(-3),
            ..Default::default()
        };
        assert_eq!(StartFailureState::from(&negative).consecutive_failures, 0);
    }
}
