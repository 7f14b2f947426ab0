//! VirtualMachineInstanceReplicaSet: how many VMIs to create, which to delete, and the status.
//!
//! KubeVirt's rules (`pkg/virt-controller/watch/replicaset/replicaset.go`):
//! - Only VMIs that are neither final, nor being deleted, nor stuck (Ready False with reason
//!   `PodTerminating`) count as replicas.
//! - Nothing is created or deleted while the replica set is paused, being deleted, or still
//!   waiting to observe its own earlier creates/deletes.
//! - Otherwise it creates or deletes the difference to `spec.replicas` (default 1), at most
//!   250 (`BurstReplicas`) per pass, and deletes every finished or stuck VMI, also at most 250.
//! - `status.replicas` counts the replicas, `status.readyReplicas` those with Ready True.
//!
//! Which surplus VMI goes first: KubeVirt takes them in cache order, with a note that it should
//! prefer VMIs that do not run yet. virtshim does that, deterministically: not yet running
//! before running, then not ready before ready, then newest first, then by name.

use crate::observed::{ObservedVmi, VmiPhase};
use crate::status::conditions::{self, FALSE, TRUE};
use crate::status::vmi_phase::{READY, REASON_POD_TERMINATING};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use std::cmp::Reverse;
use virtshim_api::types::Condition;

/// The most VMIs created or deleted in one pass.
pub const BURST_REPLICAS: usize = 250;
/// Replica-set condition types.
pub const REPLICA_FAILURE: &str = "ReplicaFailure";
pub const REPLICA_PAUSED: &str = "ReplicaPaused";

/// One VMI the replica set controls.
#[derive(Clone, Debug)]
pub struct ReplicaVmi<'a> {
    pub name: &'a str,
    /// `metadata.creationTimestamp`.
    pub created: Option<Timestamp>,
    pub vmi: &'a ObservedVmi,
}

/// What the replica-set decision reads.
#[derive(Clone, Copy, Debug)]
pub struct ReplicaSetInput<'a> {
    /// `spec.replicas`; `None` means 1.
    pub replicas: Option<i32>,
    /// `spec.paused`.
    pub paused: bool,
    /// The replica set has a deletionTimestamp.
    pub deleting: bool,
    /// Every create and delete sent earlier has shown up in the cache.
    pub expectations_satisfied: bool,
    pub vmis: &'a [ReplicaVmi<'a>],
}

/// What to do and what to report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaSetDecision {
    /// Create this many VMIs from the template.
    pub create: usize,
    /// Delete these surplus VMIs (names).
    pub delete_surplus: Vec<String>,
    /// Delete these finished or stuck VMIs (names); KubeVirt does so only when scaling
    /// succeeded.
    pub delete_finished: Vec<String>,
    /// `status.replicas`.
    pub replicas: i32,
    /// `status.readyReplicas`.
    pub ready_replicas: i32,
}

fn stuck(v: &ObservedVmi) -> bool {
    conditions::has_status_and_reason(&v.conditions, READY, FALSE, REASON_POD_TERMINATING)
}

/// A VMI that counts as a replica.
fn active(v: &ObservedVmi) -> bool {
    !v.phase.is_final() && !v.deleting && !stuck(v)
}

fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// The replica set's decision for one pass.
pub fn decide(input: &ReplicaSetInput<'_>) -> ReplicaSetDecision {
    let wanted = usize::try_from(input.replicas.unwrap_or(1).max(0)).unwrap_or(0);
    let mut actives: Vec<&ReplicaVmi<'_>> = input.vmis.iter().filter(|r| active(r.vmi)).collect();
    let ready = actives
        .iter()
        .filter(|r| conditions::has_status(&r.vmi.conditions, READY, TRUE))
        .count();
    let mut decision = ReplicaSetDecision {
        create: 0,
        delete_surplus: Vec::new(),
        delete_finished: Vec::new(),
        replicas: count(actives.len()),
        ready_replicas: count(ready),
    };
    if !input.expectations_satisfied || input.paused || input.deleting {
        return decision;
    }
    if actives.len() > wanted {
        actives.sort_by_key(|r| {
            (
                r.vmi.phase == VmiPhase::Running,
                conditions::has_status(&r.vmi.conditions, READY, TRUE),
                Reverse(r.created),
                r.name,
            )
        });
        decision.delete_surplus = actives
            .iter()
            .take((actives.len() - wanted).min(BURST_REPLICAS))
            .map(|r| r.name.to_owned())
            .collect();
    } else {
        decision.create = (wanted - actives.len()).min(BURST_REPLICAS);
    }
    let finished = input
        .vmis
        .iter()
        .filter(|r| !r.vmi.deleting && (r.vmi.phase.is_final() || stuck(r.vmi)));
    decision.delete_finished = finished
        .take(BURST_REPLICAS)
        .map(|r| r.name.to_owned())
        .collect();
    decision
}

/// The `generateName` of the VMIs: the template's name, else its generateName, else the
/// replica set's name — used as is, so KubeVirt's VMIs are named `<base><random>` with no dash.
pub fn vmi_generate_name<'a>(
    template_name: Option<&'a str>,
    template_generate_name: Option<&'a str>,
    replica_set_name: &'a str,
) -> &'a str {
    template_name
        .filter(|n| !n.is_empty())
        .or(template_generate_name.filter(|n| !n.is_empty()))
        .unwrap_or(replica_set_name)
}

/// A failed create or delete, for the `ReplicaFailure` condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScaleFailure<'a> {
    Create(&'a str),
    Delete(&'a str),
}

/// The replica set's conditions: `ReplicaPaused` while paused, `ReplicaFailure` while scaling
/// fails (kept as first reported until it clears).
pub fn replica_set_conditions(
    existing: &[Condition],
    paused: bool,
    failure: Option<ScaleFailure<'_>>,
    now: &Time,
) -> Vec<Condition> {
    let mut out = existing.to_vec();
    let add = |out: &mut Vec<Condition>, type_: &str, reason: &str, message: &str| {
        if conditions::find(out, type_).is_none() {
            out.push(Condition {
                type_: type_.to_owned(),
                status: TRUE.to_owned(),
                last_probe_time: None,
                last_transition_time: Some(now.clone()),
                reason: Some(reason.to_owned()),
                message: Some(message.to_owned()),
            });
        }
    };
    if paused {
        add(&mut out, REPLICA_PAUSED, "Paused", "Controller got paused");
    } else {
        conditions::remove(&mut out, REPLICA_PAUSED);
    }
    match failure {
        Some(ScaleFailure::Create(message)) => {
            add(&mut out, REPLICA_FAILURE, "FailedCreate", message)
        }
        Some(ScaleFailure::Delete(message)) => {
            add(&mut out, REPLICA_FAILURE, "FailedDelete", message)
        }
        None => conditions::remove(&mut out, REPLICA_FAILURE),
    }
    out
}

#[cfg(test)]
// Table rows are tuples, one column per input and expectation.
#[allow(clippy::type_complexity)]
mod tests {
    use super::*;
    use VmiPhase::*;

    struct V {
        name: &'static str,
        created: i64,
        vmi: ObservedVmi,
    }

    fn v(name: &'static str, created: i64, phase: VmiPhase) -> V {
        V {
            name,
            created,
            vmi: ObservedVmi::new(name, phase),
        }
    }

    fn with_ready(mut x: V, status: &str, reason: Option<&str>) -> V {
        x.vmi.conditions.push(Condition {
            type_: READY.into(),
            status: status.into(),
            reason: reason.map(str::to_owned),
            ..Default::default()
        });
        x
    }

    fn deleting(mut x: V) -> V {
        x.vmi.deleting = true;
        x
    }

    fn run(
        vs: &[V],
        replicas: Option<i32>,
        tweak: impl Fn(&mut ReplicaSetInput<'_>),
    ) -> ReplicaSetDecision {
        let rs: Vec<ReplicaVmi<'_>> = vs
            .iter()
            .map(|x| ReplicaVmi {
                name: x.name,
                created: Some(Timestamp::from_second(x.created).unwrap()),
                vmi: &x.vmi,
            })
            .collect();
        let mut input = ReplicaSetInput {
            replicas,
            paused: false,
            deleting: false,
            expectations_satisfied: true,
            vmis: &rs,
        };
        tweak(&mut input);
        decide(&input)
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn scaling_table() {
        let keep = |_: &mut ReplicaSetInput<'_>| {};
        // (name, vmis, replicas, create, delete surplus, delete finished, replicas, ready)
        let table: Vec<(
            &str,
            Vec<V>,
            Option<i32>,
            usize,
            Vec<&str>,
            Vec<&str>,
            i32,
            i32,
        )> = vec![
            ("empty, default one", vec![], None, 1, vec![], vec![], 0, 0),
            ("empty, three", vec![], Some(3), 3, vec![], vec![], 0, 0),
            (
                "zero replicas",
                vec![v("a", 1, Running)],
                Some(0),
                0,
                vec!["a"],
                vec![],
                1,
                0,
            ),
            (
                "exact",
                vec![v("a", 1, Running), v("b", 2, Pending)],
                Some(2),
                0,
                vec![],
                vec![],
                2,
                0,
            ),
            (
                "finished ones are replaced and deleted",
                vec![v("a", 1, Running), v("b", 2, Succeeded), v("c", 3, Failed)],
                Some(3),
                2,
                vec![],
                vec!["b", "c"],
                1,
                0,
            ),
            (
                "being deleted: neither counted nor deleted again",
                vec![deleting(v("a", 1, Running)), deleting(v("b", 2, Failed))],
                Some(1),
                1,
                vec![],
                vec![],
                0,
                0,
            ),
            (
                "stuck (pod terminating) counts as finished",
                vec![with_ready(
                    v("a", 1, Running),
                    "False",
                    Some("PodTerminating"),
                )],
                Some(1),
                1,
                vec![],
                vec!["a"],
                0,
                0,
            ),
            (
                "not-ready for another reason still counts",
                vec![with_ready(
                    v("a", 1, Running),
                    "False",
                    Some("GuestNotRunning"),
                )],
                Some(1),
                0,
                vec![],
                vec![],
                1,
                0,
            ),
            (
                "ready replicas",
                vec![
                    with_ready(v("a", 1, Running), "True", None),
                    v("b", 2, Scheduling),
                ],
                Some(2),
                0,
                vec![],
                vec![],
                2,
                1,
            ),
            (
                "scale down: not running first, then newest",
                vec![
                    with_ready(v("old-ready", 1, Running), "True", None),
                    v("old-running", 2, Running),
                    v("new-running", 5, Running),
                    v("pending", 3, Pending),
                    v("scheduled", 4, Scheduled),
                ],
                Some(1),
                0,
                vec!["scheduled", "pending", "new-running", "old-running"],
                vec![],
                5,
                1,
            ),
            (
                "scale down by one picks the newest not running",
                vec![
                    v("a", 1, Running),
                    v("b", 2, Scheduling),
                    v("c", 3, Scheduling),
                ],
                Some(2),
                0,
                vec!["c"],
                vec![],
                3,
                0,
            ),
        ];
        for (name, vs, replicas, create, surplus, finished, count, ready) in table {
            let got = run(&vs, replicas, keep);
            assert_eq!(got.create, create, "{name}: create");
            assert_eq!(got.delete_surplus, names(&surplus), "{name}: surplus");
            assert_eq!(got.delete_finished, names(&finished), "{name}: finished");
            assert_eq!(
                (got.replicas, got.ready_replicas),
                (count, ready),
                "{name}: status"
            );
        }
    }

    #[test]
    fn no_scaling_while_paused_deleting_or_waiting() {
        let vs = [v("a", 1, Failed), v("b", 2, Running)];
        let tweaks: [fn(&mut ReplicaSetInput<'_>); 3] = [
            |i| i.paused = true,
            |i| i.deleting = true,
            |i| i.expectations_satisfied = false,
        ];
        for tweak in tweaks {
            let got = run(&vs, Some(5), tweak);
            assert_eq!(
                (
                    got.create,
                    got.delete_surplus.len(),
                    got.delete_finished.len()
                ),
                (0, 0, 0)
            );
            assert_eq!(got.replicas, 1);
        }
    }

    #[test]
    fn burst_limit() {
        let got = run(&[], Some(1000), |_| {});
        assert_eq!(got.create, BURST_REPLICAS);
        let got = run(&[], Some(-4), |_| {});
        assert_eq!(got.create, 0);
    }

    #[test]
    fn generate_name() {
        assert_eq!(vmi_generate_name(Some("t"), Some("g-"), "rs"), "t");
        assert_eq!(vmi_generate_name(Some(""), Some("g-"), "rs"), "g-");
        assert_eq!(vmi_generate_name(None, None, "rs"), "rs");
    }

    #[test]
    fn conditions_table() {
        let t = Time(Timestamp::from_second(5).unwrap());
        let got = replica_set_conditions(&[], true, Some(ScaleFailure::Create("quota")), &t);
        let brief: Vec<_> = got
            .iter()
            .map(|c| (c.type_.as_str(), c.reason.as_deref(), c.message.as_deref()))
            .collect();
        assert_eq!(
            brief,
            vec![
                (
                    REPLICA_PAUSED,
                    Some("Paused"),
                    Some("Controller got paused")
                ),
                (REPLICA_FAILURE, Some("FailedCreate"), Some("quota")),
            ]
        );
        // An existing failure is kept as first reported.
        let again = replica_set_conditions(&got, true, Some(ScaleFailure::Delete("other")), &t);
        assert_eq!(again, got);
        // Both clear.
        assert!(replica_set_conditions(&got, false, None, &t).is_empty());
    }
}
