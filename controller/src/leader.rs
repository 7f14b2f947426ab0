//! Leader election on a `coordination.k8s.io/v1` Lease, so that of the controller's replicas
//! exactly one runs the reconcilers while the others stand by (and serve health, metrics and
//! admission, which need no lease).
//!
//! The rules are client-go's: the holder renews the lease every retry period; a candidate takes
//! it when nobody holds it or the holder has not renewed within the lease duration; a holder
//! that cannot renew for the renew deadline stops leading. Every write carries the
//! resourceVersion it read, so two candidates cannot both win: the slower one gets a conflict.
//!
//! [`decide`] is the pure part (take / renew / wait); [`run`] talks to the apiserver and
//! publishes "leading or not" on a watch channel the reconcilers follow.

use crate::error::{is_status, Result};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, PostParams};
use kube::Client;
use std::time::Duration;
use tokio::sync::watch;

/// The Lease's name.
pub const LEASE_NAME: &str = "virtshim-controller";
/// The namespace when `POD_NAMESPACE` is not set.
pub const DEFAULT_NAMESPACE: &str = "virtshim-system";

/// Timing, as client-go's defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// How long a lease stays valid after its last renewal.
    pub lease_duration: Duration,
    /// How long the holder keeps trying to renew before it gives up leading.
    pub renew_deadline: Duration,
    /// How often candidates and the holder look at the lease.
    pub retry_period: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// What the lease says, as far as the decision cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseView {
    pub holder: Option<String>,
    pub renew_time: Option<Timestamp>,
    pub lease_duration_seconds: Option<i32>,
}

impl LeaseView {
    pub fn of(lease: &Lease) -> Self {
        let spec = lease.spec.as_ref();
        Self {
            holder: spec
                .and_then(|s| s.holder_identity.clone())
                .filter(|h| !h.is_empty()),
            renew_time: spec.and_then(|s| s.renew_time.as_ref()).map(|t| t.0),
            lease_duration_seconds: spec.and_then(|s| s.lease_duration_seconds),
        }
    }
}

/// What a candidate does with the lease it read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseDecision {
    /// No lease exists yet: create it, holding it.
    Create,
    /// Nobody holds it, or the holder let it expire: write ourselves in.
    Take,
    /// We hold it: write a new renew time.
    Renew,
    /// Someone else holds a valid lease.
    Wait { holder: String },
}

/// Take, renew or wait. A lease whose holder never wrote a renew time counts as expired; one
/// with no duration uses `default_duration`.
pub fn decide(
    lease: Option<&LeaseView>,
    me: &str,
    now: Timestamp,
    default_duration: Duration,
) -> LeaseDecision {
    let Some(lease) = lease else {
        return LeaseDecision::Create;
    };
    let Some(holder) = lease.holder.as_deref() else {
        return LeaseDecision::Take;
    };
    if holder == me {
        return LeaseDecision::Renew;
    }
    let duration = lease
        .lease_duration_seconds
        .filter(|s| *s > 0)
        .map(|s| SignedDuration::from_secs(i64::from(s)))
        .unwrap_or_else(|| {
            SignedDuration::try_from(default_duration).unwrap_or(SignedDuration::MAX)
        });
    let expired = match lease.renew_time {
        None => true,
        Some(renewed) => renewed
            .checked_add(duration)
            .is_ok_and(|expiry| expiry <= now),
    };
    if expired {
        LeaseDecision::Take
    } else {
        LeaseDecision::Wait {
            holder: holder.to_owned(),
        }
    }
}

/// Whether a holder that last renewed successfully at `last_renewed` still leads at `now`.
pub fn still_leading(last_renewed: Timestamp, now: Timestamp, renew_deadline: Duration) -> bool {
    let deadline = SignedDuration::try_from(renew_deadline).unwrap_or(SignedDuration::MAX);
    now.duration_since(last_renewed) < deadline
}

/// The identity of this replica: `POD_NAME`, else the hostname, else a fixed name.
pub fn identity() -> String {
    std::env::var("POD_NAME")
        .ok()
        .filter(|n| !n.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
        })
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
        .unwrap_or_else(|| "virtshim-controller".to_owned())
}

/// The Lease's namespace: `POD_NAMESPACE`, else [`DEFAULT_NAMESPACE`].
pub fn namespace() -> String {
    std::env::var("POD_NAMESPACE")
        .ok()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned())
}

/// A candidate for the lease.
#[derive(Clone)]
pub struct Elector {
    api: Api<Lease>,
    identity: String,
    timing: Timing,
}

impl std::fmt::Debug for Elector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Elector")
            .field("identity", &self.identity)
            .field("timing", &self.timing)
            .finish_non_exhaustive()
    }
}

fn duration_seconds(d: Duration) -> i32 {
    i32::try_from(d.as_secs()).unwrap_or(i32::MAX)
}

impl Elector {
    pub fn new(client: Client, namespace: &str, identity: String, timing: Timing) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            identity,
            timing,
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// One look at the lease: `Ok(true)` when this replica holds it afterwards.
    pub async fn try_acquire_or_renew(&self) -> Result<bool> {
        let now = Timestamp::now();
        let current = self.api.get_opt(LEASE_NAME).await?;
        let decision = decide(
            current.as_ref().map(LeaseView::of).as_ref(),
            &self.identity,
            now,
            self.timing.lease_duration,
        );
        let spec = |acquired: Option<MicroTime>, transitions: Option<i32>| LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(duration_seconds(self.timing.lease_duration)),
            acquire_time: acquired,
            renew_time: Some(MicroTime(now)),
            lease_transitions: transitions,
            ..Default::default()
        };
        let written = match (decision, current) {
            (LeaseDecision::Wait { .. }, _) => return Ok(false),
            (LeaseDecision::Create, _) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(LEASE_NAME.to_owned()),
                        ..Default::default()
                    },
                    spec: Some(spec(Some(MicroTime(now)), Some(0))),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            (LeaseDecision::Take, Some(mut lease)) => {
                let old = lease.spec.take().unwrap_or_default();
                let transitions = old.lease_transitions.unwrap_or(0).saturating_add(1);
                lease.spec = Some(spec(Some(MicroTime(now)), Some(transitions)));
                self.api
                    .replace(LEASE_NAME, &PostParams::default(), &lease)
                    .await
            }
            (LeaseDecision::Renew, Some(mut lease)) => {
                let old = lease.spec.take().unwrap_or_default();
                lease.spec = Some(spec(old.acquire_time, old.lease_transitions));
                self.api
                    .replace(LEASE_NAME, &PostParams::default(), &lease)
                    .await
            }
            // Take / Renew are only decided on a lease that exists.
            (LeaseDecision::Take | LeaseDecision::Renew, None) => return Ok(false),
        };
        match written {
            Ok(_) => Ok(true),
            // Another candidate wrote first: it won this round.
            Err(e) if is_status(&e, 409) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Gives the lease up (on shutdown), so a standby takes over without waiting for expiry.
    pub async fn release(&self) -> Result<()> {
        let Some(mut lease) = self.api.get_opt(LEASE_NAME).await? else {
            return Ok(());
        };
        let holds = lease
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.as_deref())
            == Some(self.identity.as_str());
        if !holds {
            return Ok(());
        }
        if let Some(spec) = lease.spec.as_mut() {
            spec.holder_identity = None;
            spec.lease_duration_seconds = Some(1);
            spec.renew_time = Some(MicroTime(Timestamp::now()));
        }
        match self
            .api
            .replace(LEASE_NAME, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_status(&e, 409) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Campaigns for the lease forever, publishing on `leading` whether this replica leads.
    /// A holder that cannot renew within the renew deadline publishes `false` at once.
    pub async fn run(self, leading: watch::Sender<bool>) {
        let mut last_renewed: Option<Timestamp> = None;
        loop {
            let now = Timestamp::now();
            let holds = match self.try_acquire_or_renew().await {
                Ok(true) => {
                    last_renewed = Some(now);
                    true
                }
                Ok(false) => {
                    last_renewed = None;
                    false
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read or write the leader lease");
                    last_renewed.is_some_and(|t| {
                        still_leading(t, Timestamp::now(), self.timing.renew_deadline)
                    })
                }
            };
            let was = *leading.borrow();
            if holds != was {
                if holds {
                    tracing::info!(identity = %self.identity, "became the leader");
                } else {
                    tracing::warn!(identity = %self.identity, "stopped leading");
                }
                leading.send_replace(holds);
            }
            tokio::time::sleep(self.timing.retry_period).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    fn lease(holder: Option<&str>, renewed: Option<i64>, duration: Option<i32>) -> LeaseView {
        LeaseView {
            holder: holder.map(str::to_owned),
            renew_time: renewed.map(at),
            lease_duration_seconds: duration,
        }
    }

    #[test]
    fn lease_decisions() {
        let wait = |h: &str| LeaseDecision::Wait { holder: h.into() };
        // (name, lease, now, expected)
        let table = [
            ("no lease: create it", None, 100, LeaseDecision::Create),
            (
                "nobody holds it",
                Some(lease(None, Some(99), Some(15))),
                100,
                LeaseDecision::Take,
            ),
            (
                "we hold it: renew",
                Some(lease(Some("me"), Some(99), Some(15))),
                100,
                LeaseDecision::Renew,
            ),
            (
                "we hold it, even expired: renew",
                Some(lease(Some("me"), Some(1), Some(15))),
                100,
                LeaseDecision::Renew,
            ),
            (
                "other holder, fresh",
                Some(lease(Some("b"), Some(90), Some(15))),
                100,
                wait("b"),
            ),
            (
                "other holder, one second left",
                Some(lease(Some("b"), Some(86), Some(15))),
                100,
                wait("b"),
            ),
            (
                "other holder, expired exactly",
                Some(lease(Some("b"), Some(85), Some(15))),
                100,
                LeaseDecision::Take,
            ),
            (
                "other holder, long expired",
                Some(lease(Some("b"), Some(10), Some(15))),
                100,
                LeaseDecision::Take,
            ),
            (
                "other holder, never renewed",
                Some(lease(Some("b"), None, Some(15))),
                100,
                LeaseDecision::Take,
            ),
            (
                "no duration: default 15 s, fresh",
                Some(lease(Some("b"), Some(90), None)),
                100,
                wait("b"),
            ),
            (
                "no duration: default 15 s, expired",
                Some(lease(Some("b"), Some(80), None)),
                100,
                LeaseDecision::Take,
            ),
            (
                "zero duration: default",
                Some(lease(Some("b"), Some(90), Some(0))),
                100,
                wait("b"),
            ),
            (
                "released (duration 1)",
                Some(lease(None, Some(99), Some(1))),
                100,
                LeaseDecision::Take,
            ),
        ];
        for (name, lease, now, expected) in table {
            assert_eq!(
                decide(lease.as_ref(), "me", at(now), Duration::from_secs(15)),
                expected,
                "{name}"
            );
        }
    }

    #[test]
    fn renew_deadline() {
        let deadline = Duration::from_secs(10);
        // (last renewed, now, still leading)
        let table = [
            (100, 100, true),
            (100, 109, true),
            (100, 110, false),
            (100, 200, false),
        ];
        for (renewed, now, leads) in table {
            assert_eq!(
                still_leading(at(renewed), at(now), deadline),
                leads,
                "renewed {renewed}, now {now}"
            );
        }
    }

    #[test]
    fn reads_a_lease() {
        let l = Lease {
            metadata: Default::default(),
            spec: Some(LeaseSpec {
                holder_identity: Some(String::new()),
                renew_time: Some(MicroTime(at(5))),
                lease_duration_seconds: Some(15),
                ..Default::default()
            }),
        };
        assert_eq!(LeaseView::of(&l), lease(None, Some(5), Some(15)));
    }
}
