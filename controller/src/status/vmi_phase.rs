//! A VMI's status from its pod: phase, node, interfaces, QoS class and the Ready,
//! Synchronized (image pull errors) and PodScheduled conditions.
//!
//! In KubeVirt two components share this job: virt-controller moves a VMI through Pending →
//! Scheduling → Scheduled by watching the launcher pod, and virt-handler reports Running and the
//! end of the domain. In virtshim the kubelet runs the VM as the pod's `compute` container, so
//! the pod tells it all:
//!
//! | pod | phase |
//! | --- | --- |
//! | none yet | Pending (Failed if the VMI is being deleted) |
//! | none any more, after Pending | Failed (the pod vanished) |
//! | Pending (unscheduled, pulling images, creating containers) | Scheduling |
//! | Running, `compute` not running yet | Scheduled |
//! | Running, `compute` running (QEMU is up) | Running |
//! | `compute` terminated with exit code 0 (guest powered off), or pod Succeeded | Succeeded |
//! | `compute` terminated otherwise, or pod Failed | Failed |
//! | being deleted before the VM ever started | Failed |
//! | phase Unknown (node lost) | Unknown |
//!
//! Succeeded and Failed are final; otherwise a phase never moves backwards (a pod deleted while
//! the guest shuts down keeps the VMI Running until `compute` exits), except out of Unknown.
//! The caller passes `pod: None` only once it is sure the pod is gone, not merely unseen yet.

use super::conditions::{self, FALSE};
use crate::observed::VmiPhase;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod, PodCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use virtshim_api::pod::COMPUTE_CONTAINER;
use virtshim_api::types::{Condition, NetworkInterfaceStatus, VirtualMachineInstanceStatus};

/// VMI condition types and reasons (KubeVirt's names).
pub const READY: &str = "Ready";
pub const SYNCHRONIZED: &str = "Synchronized";
pub const POD_SCHEDULED: &str = "PodScheduled";
pub const REASON_POD_NOT_EXISTS: &str = "PodNotExists";
pub const REASON_POD_TERMINATING: &str = "PodTerminating";
pub const REASON_GUEST_NOT_RUNNING: &str = "GuestNotRunning";
pub const REASON_POD_CONDITION_MISSING: &str = "PodConditionMissing";
pub const REASON_ERR_IMAGE_PULL: &str = "ErrImagePull";
pub const REASON_IMAGE_PULL_BACK_OFF: &str = "ImagePullBackOff";

/// What the VMI status computation reads.
#[derive(Clone, Copy, Debug)]
pub struct VmiStatusInput<'a> {
    /// The VMI's current phase.
    pub phase: VmiPhase,
    /// The VMI has a deletionTimestamp.
    pub deleting: bool,
    /// The VMI's current conditions.
    pub conditions: &'a [Condition],
    /// The VMI's pod.
    pub pod: Option<&'a Pod>,
    /// The name of the VMI's pod-network interface (`default` unless the spec names another),
    /// which gets the pod's IPs; `None` when the VMI has no pod network.
    pub pod_network_interface: Option<&'a str>,
    /// Stamped on conditions this pass creates.
    pub now: &'a Time,
}

/// The status fields the pod decides. `None` fields are left as they are.
#[derive(Clone, Debug, PartialEq)]
pub struct VmiStatusUpdate {
    pub phase: VmiPhase,
    pub node_name: Option<String>,
    pub interfaces: Option<Vec<NetworkInterfaceStatus>>,
    pub qos_class: Option<String>,
    /// The whole new condition list.
    pub conditions: Vec<Condition>,
}

impl VmiStatusUpdate {
    /// Writes these fields into a VMI status.
    pub fn apply(self, status: &mut VirtualMachineInstanceStatus) {
        status.phase = Some(self.phase.as_str().to_owned());
        if self.node_name.is_some() {
            status.node_name = self.node_name;
        }
        if self.interfaces.is_some() {
            status.interfaces = self.interfaces;
        }
        if self.qos_class.is_some() {
            status.qos_class = self.qos_class;
        }
        status.conditions = (!self.conditions.is_empty()).then_some(self.conditions);
    }
}

fn compute_status(pod: &Pod) -> Option<&ContainerStatus> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == COMPUTE_CONTAINER)
}

/// The compute container's exit code, once it terminated.
fn compute_exit_code(pod: &Pod) -> Option<i32> {
    compute_status(pod)?
        .state
        .as_ref()?
        .terminated
        .as_ref()
        .map(|t| t.exit_code)
}

/// Why the compute container failed, as the kubelet reports it (its termination message,
/// e.g. the shim's "/boot/vmlinuz-virt does not exist in the image", else the reason and exit
/// code), from its current state or, failing that, its last one. `None` while it has not
/// failed. KubeVirt carries the launcher's failure into the VMI the same way.
pub fn compute_failure(pod: &Pod) -> Option<String> {
    let status = compute_status(pod)?;
    let terminated = [status.state.as_ref(), status.last_state.as_ref()]
        .into_iter()
        .flatten()
        .filter_map(|s| s.terminated.as_ref())
        .find(|t| t.exit_code != 0)?;
    let reason = terminated.reason.as_deref().unwrap_or("Error");
    let code = terminated.exit_code;
    Some(match terminated.message.as_deref().map(str::trim) {
        Some(message) if !message.is_empty() => {
            format!("compute container failed ({reason}, exit code {code}): {message}")
        }
        _ => format!("compute container failed ({reason}, exit code {code})"),
    })
}

fn compute_running(pod: &Pod) -> bool {
    compute_status(pod)
        .and_then(|c| c.state.as_ref())
        .is_some_and(|s| s.running.is_some())
}

fn pod_phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

/// The pod is finished or on its way out (KubeVirt's `IsPodDownOrGoingDown`).
fn pod_down_or_going_down(pod: &Pod) -> bool {
    matches!(pod_phase(pod), "Succeeded" | "Failed")
        || compute_exit_code(pod).is_some()
        || pod.metadata.deletion_timestamp.is_some()
}

fn rank(phase: VmiPhase) -> u8 {
    match phase {
        VmiPhase::Unset => 0,
        VmiPhase::Pending => 1,
        VmiPhase::Scheduling => 2,
        VmiPhase::Scheduled => 3,
        VmiPhase::Running | VmiPhase::Unknown => 4,
        VmiPhase::Succeeded | VmiPhase::Failed => 5,
    }
}

/// The VMI's next phase.
pub fn next_phase(phase: VmiPhase, deleting: bool, pod: Option<&Pod>) -> VmiPhase {
    if phase.is_final() {
        return phase;
    }
    let Some(pod) = pod else {
        return match phase {
            VmiPhase::Unset | VmiPhase::Pending if !deleting => VmiPhase::Pending,
            _ => VmiPhase::Failed,
        };
    };
    if let Some(code) = compute_exit_code(pod) {
        return if code == 0 {
            VmiPhase::Succeeded
        } else {
            VmiPhase::Failed
        };
    }
    let derived = match pod_phase(pod) {
        "Succeeded" => return VmiPhase::Succeeded,
        "Failed" => return VmiPhase::Failed,
        // Going away before the VM ever ran: it never will.
        _ if pod.metadata.deletion_timestamp.is_some()
            && rank(phase) <= rank(VmiPhase::Scheduling) =>
        {
            return VmiPhase::Failed
        }
        "Unknown" => return VmiPhase::Unknown,
        "Running" if compute_running(pod) => VmiPhase::Running,
        "Running" => VmiPhase::Scheduled,
        _ => VmiPhase::Scheduling,
    };
    if phase == VmiPhase::Unknown || rank(derived) >= rank(phase) {
        derived
    } else {
        phase
    }
}

fn condition(type_: &str, status: &str, reason: &str, message: &str, now: &Time) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        last_probe_time: Some(now.clone()),
        last_transition_time: Some(now.clone()),
        reason: Some(reason.to_owned()),
        message: Some(message.to_owned()),
    }
}

fn from_pod_condition(c: &PodCondition) -> Condition {
    Condition {
        type_: c.type_.clone(),
        status: c.status.clone(),
        last_probe_time: c.last_probe_time.clone(),
        last_transition_time: c.last_transition_time.clone(),
        reason: c.reason.clone(),
        message: c.message.clone(),
    }
}

fn pod_condition<'a>(pod: &'a Pod, type_: &str) -> Option<&'a PodCondition> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

/// The VMI's Ready condition: the pod's Ready condition once the VM runs, otherwise False with
/// the reason it is not (KubeVirt's `syncReadyConditionFromPod`).
pub fn ready_condition(phase: VmiPhase, pod: Option<&Pod>, now: &Time) -> Condition {
    let not_ready = |reason, message| condition(READY, FALSE, reason, message, now);
    let Some(pod) = pod else {
        return not_ready(
            REASON_POD_NOT_EXISTS,
            "virt-launcher pod has not yet been scheduled",
        );
    };
    if pod_down_or_going_down(pod) {
        return match compute_failure(pod) {
            Some(failure) => condition(
                READY,
                FALSE,
                REASON_POD_TERMINATING,
                &format!("virt-launcher pod is terminating: {failure}"),
                now,
            ),
            None => not_ready(REASON_POD_TERMINATING, "virt-launcher pod is terminating"),
        };
    }
    if phase != VmiPhase::Running {
        return not_ready(
            REASON_GUEST_NOT_RUNNING,
            "Guest VM is not reported as running",
        );
    }
    match pod_condition(pod, READY) {
        Some(c) => from_pod_condition(c),
        None => not_ready(
            REASON_POD_CONDITION_MISSING,
            "virt-launcher pod is missing the Ready condition",
        ),
    }
}

/// The first image pull error among the pod's containers: (reason, message).
pub fn image_pull_error(pod: &Pod) -> Option<(&str, &str)> {
    let status = pod.status.as_ref()?;
    status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten())
        .filter_map(|c| c.state.as_ref()?.waiting.as_ref())
        .find_map(|w| {
            let reason = w.reason.as_deref()?;
            matches!(reason, REASON_ERR_IMAGE_PULL | REASON_IMAGE_PULL_BACK_OFF)
                .then(|| (reason, w.message.as_deref().unwrap_or("")))
        })
}

fn is_image_pull_reason(c: &Condition) -> bool {
    matches!(
        c.reason.as_deref(),
        Some(REASON_ERR_IMAGE_PULL | REASON_IMAGE_PULL_BACK_OFF)
    )
}

/// The VMI status fields that follow from its pod.
pub fn vmi_status(input: &VmiStatusInput<'_>) -> VmiStatusUpdate {
    let phase = next_phase(input.phase, input.deleting, input.pod);
    let pod = input.pod;
    let mut conds = input.conditions.to_vec();
    conditions::upsert(&mut conds, ready_condition(phase, pod, input.now));

    let scheduling = rank(phase) <= rank(VmiPhase::Scheduling);
    // Image pull errors and an unschedulable pod only matter before the pod runs.
    match pod.filter(|_| scheduling).and_then(image_pull_error) {
        Some((reason, message)) => {
            if !conditions::has_status_and_reason(&conds, SYNCHRONIZED, FALSE, reason) {
                conditions::remove(&mut conds, SYNCHRONIZED);
                conds.push(Condition {
                    last_probe_time: None,
                    ..condition(SYNCHRONIZED, FALSE, reason, message, input.now)
                });
            }
        }
        None => conds.retain(|c| !(c.type_ == SYNCHRONIZED && is_image_pull_reason(c))),
    }
    match pod
        .filter(|_| scheduling)
        .and_then(|p| pod_condition(p, POD_SCHEDULED))
        .filter(|c| c.status == FALSE)
    {
        Some(c) => conditions::upsert(&mut conds, from_pod_condition(c)),
        None => conditions::remove(&mut conds, POD_SCHEDULED),
    }

    let placed = matches!(
        phase,
        VmiPhase::Scheduled | VmiPhase::Running | VmiPhase::Unknown
    );
    let pod_spec_node = pod
        .and_then(|p| p.spec.as_ref())
        .and_then(|s| s.node_name.clone());
    let interfaces = match (placed, pod.and_then(|p| p.status.as_ref())) {
        (true, Some(status)) => status.pod_ip.as_ref().map(|ip| {
            let ips: Vec<String> = status
                .pod_ips
                .iter()
                .flatten()
                .map(|p| p.ip.clone())
                .collect();
            vec![NetworkInterfaceStatus {
                name: input.pod_network_interface.map(str::to_owned),
                ip_address: Some(ip.clone()),
                ip_addresses: Some(if ips.is_empty() {
                    vec![ip.clone()]
                } else {
                    ips
                }),
                ..Default::default()
            }]
        }),
        _ => None,
    };
    let interfaces = interfaces.filter(|_| input.pod_network_interface.is_some());

    VmiStatusUpdate {
        phase,
        node_name: pod_spec_node.filter(|_| placed),
        interfaces,
        qos_class: pod
            .and_then(|p| p.status.as_ref())
            .and_then(|s| s.qos_class.clone()),
        conditions: conds,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
        PodIP, PodSpec, PodStatus,
    };
    use k8s_openapi::jiff::Timestamp;
    use VmiPhase::*;

    fn now() -> Time {
        Time(Timestamp::from_second(1_000).unwrap())
    }

    #[derive(Clone, Copy, Debug)]
    enum Compute {
        Absent,
        Waiting(&'static str),
        Up,
        Exited(i32),
    }

    fn pod(phase: &str, compute: Compute, deleting: bool) -> Pod {
        let state = match compute {
            Compute::Absent => None,
            Compute::Waiting(reason) => Some(ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some(reason.into()),
                    message: Some(format!("{reason} for image x")),
                }),
                ..Default::default()
            }),
            Compute::Up => Some(ContainerState {
                running: Some(ContainerStateRunning::default()),
                ..Default::default()
            }),
            Compute::Exited(code) => Some(ContainerState {
                terminated: Some(ContainerStateTerminated {
                    exit_code: code,
                    ..Default::default()
                }),
                ..Default::default()
            }),
        };
        let mut p = Pod {
            spec: Some(PodSpec {
                node_name: Some("node1".into()),
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                container_statuses: state.map(|s| {
                    vec![ContainerStatus {
                        name: COMPUTE_CONTAINER.into(),
                        state: Some(s),
                        ..Default::default()
                    }]
                }),
                pod_ip: Some("10.88.0.7".into()),
                pod_ips: Some(vec![PodIP {
                    ip: "10.88.0.7".into(),
                }]),
                qos_class: Some("Burstable".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        if deleting {
            p.metadata.deletion_timestamp = Some(now());
        }
        p
    }

    #[test]
    fn a_failed_launcher_says_why() {
        let failed = |message: Option<&str>, last: bool| {
            let mut p = pod("Failed", Compute::Exited(1), false);
            let status = &mut p
                .status
                .as_mut()
                .unwrap()
                .container_statuses
                .as_mut()
                .unwrap()[0];
            let terminated = ContainerState {
                terminated: Some(ContainerStateTerminated {
                    exit_code: 1,
                    reason: Some("Error".into()),
                    message: message.map(str::to_owned),
                    ..Default::default()
                }),
                ..Default::default()
            };
            if last {
                status.state = Some(ContainerState {
                    waiting: Some(ContainerStateWaiting::default()),
                    ..Default::default()
                });
                status.last_state = Some(terminated);
            } else {
                status.state = Some(terminated);
            }
            p
        };
        let missing = "/boot/vmlinuz-virt does not exist in the image";
        let table = [
            (
                failed(Some(missing), false),
                Some(format!(
                    "compute container failed (Error, exit code 1): {missing}"
                )),
            ),
            (
                failed(Some(missing), true),
                Some(format!(
                    "compute container failed (Error, exit code 1): {missing}"
                )),
            ),
            (
                failed(None, false),
                Some("compute container failed (Error, exit code 1)".to_owned()),
            ),
            (pod("Succeeded", Compute::Exited(0), false), None),
            (pod("Running", Compute::Up, false), None),
        ];
        for (p, want) in table {
            assert_eq!(compute_failure(&p), want);
        }
        let ready = ready_condition(Failed, Some(&failed(Some(missing), false)), &now());
        assert_eq!(ready.reason.as_deref(), Some(REASON_POD_TERMINATING));
        assert!(
            ready.message.as_deref().unwrap_or("").ends_with(missing),
            "{ready:?}"
        );
    }

    #[test]
    fn phase_table() {
        use Compute::*;
        // (name, current phase, VMI deleting, pod, expected)
        let table: Vec<(&str, VmiPhase, bool, Option<Pod>, VmiPhase)> = vec![
            ("new VMI, no pod", Unset, false, None, Pending),
            ("pending, no pod", Pending, false, None, Pending),
            ("deleted before a pod", Pending, true, None, Failed),
            (
                "pod vanished while scheduling",
                Scheduling,
                false,
                None,
                Failed,
            ),
            ("pod vanished while running", Running, false, None, Failed),
            ("pod vanished in unknown", Unknown, false, None, Failed),
            (
                "pod created",
                Pending,
                false,
                Some(pod("Pending", Absent, false)),
                Scheduling,
            ),
            (
                "pod created, first sight",
                Unset,
                false,
                Some(pod("Pending", Absent, false)),
                Scheduling,
            ),
            (
                "pulling image",
                Scheduling,
                false,
                Some(pod("Pending", Waiting("ContainerCreating"), false)),
                Scheduling,
            ),
            (
                "pod running, compute not yet",
                Scheduling,
                false,
                Some(pod("Running", Waiting("ContainerCreating"), false)),
                Scheduled,
            ),
            (
                "compute running",
                Scheduling,
                false,
                Some(pod("Running", Up, false)),
                Running,
            ),
            (
                "compute running after scheduled",
                Scheduled,
                false,
                Some(pod("Running", Up, false)),
                Running,
            ),
            (
                "running stays running",
                Running,
                false,
                Some(pod("Running", Up, false)),
                Running,
            ),
            (
                "guest powered off",
                Running,
                false,
                Some(pod("Running", Exited(0), false)),
                Succeeded,
            ),
            (
                "guest powered off, pod done",
                Running,
                false,
                Some(pod("Succeeded", Exited(0), false)),
                Succeeded,
            ),
            (
                "QEMU crashed",
                Running,
                false,
                Some(pod("Failed", Exited(1), false)),
                Failed,
            ),
            (
                "killed",
                Running,
                false,
                Some(pod("Running", Exited(137), false)),
                Failed,
            ),
            (
                "pod failed, no statuses (evicted)",
                Running,
                false,
                Some(pod("Failed", Absent, false)),
                Failed,
            ),
            (
                "pod succeeded, no statuses",
                Scheduled,
                false,
                Some(pod("Succeeded", Absent, false)),
                Succeeded,
            ),
            (
                "pod deleted while scheduling",
                Scheduling,
                false,
                Some(pod("Pending", Absent, true)),
                Failed,
            ),
            (
                "pod deleted before first sight",
                Pending,
                false,
                Some(pod("Pending", Absent, true)),
                Failed,
            ),
            (
                "pod deleted while running: guest shutting down",
                Running,
                true,
                Some(pod("Running", Up, true)),
                Running,
            ),
            (
                "pod deleted, guest off",
                Running,
                true,
                Some(pod("Running", Exited(0), true)),
                Succeeded,
            ),
            (
                "node lost",
                Running,
                false,
                Some(pod("Unknown", Up, false)),
                Unknown,
            ),
            (
                "node back",
                Unknown,
                false,
                Some(pod("Running", Up, false)),
                Running,
            ),
            (
                "never backwards",
                Running,
                false,
                Some(pod("Running", Waiting("x"), false)),
                Running,
            ),
            (
                "final stays: succeeded",
                Succeeded,
                false,
                Some(pod("Running", Up, false)),
                Succeeded,
            ),
            ("final stays: failed", Failed, false, None, Failed),
        ];
        for (name, phase, deleting, p, want) in table {
            assert_eq!(next_phase(phase, deleting, p.as_ref()), want, "{name}");
        }
    }

    fn ready_pod(status: &str) -> Pod {
        let mut p = pod("Running", Compute::Up, false);
        if let Some(s) = p.status.as_mut() {
            s.conditions = Some(vec![PodCondition {
                type_: "Ready".into(),
                status: status.into(),
                reason: Some("PodReason".into()),
                ..Default::default()
            }]);
        }
        p
    }

    #[test]
    fn ready_table() {
        use Compute::*;
        // (name, phase, pod, status, reason)
        let table: Vec<(&str, VmiPhase, Option<Pod>, &str, &str)> = vec![
            ("no pod", Pending, None, "False", REASON_POD_NOT_EXISTS),
            (
                "pod deleting",
                Running,
                Some(pod("Running", Up, true)),
                "False",
                REASON_POD_TERMINATING,
            ),
            (
                "compute exited",
                Running,
                Some(pod("Running", Exited(0), false)),
                "False",
                REASON_POD_TERMINATING,
            ),
            (
                "pod failed",
                Running,
                Some(pod("Failed", Absent, false)),
                "False",
                REASON_POD_TERMINATING,
            ),
            (
                "not running yet",
                Scheduled,
                Some(ready_pod("True")),
                "False",
                REASON_GUEST_NOT_RUNNING,
            ),
            (
                "mirrors pod: true",
                Running,
                Some(ready_pod("True")),
                "True",
                "PodReason",
            ),
            (
                "mirrors pod: false",
                Running,
                Some(ready_pod("False")),
                "False",
                "PodReason",
            ),
            (
                "pod without Ready",
                Running,
                Some(pod("Running", Up, false)),
                "False",
                REASON_POD_CONDITION_MISSING,
            ),
        ];
        for (name, phase, p, status, reason) in table {
            let c = ready_condition(phase, p.as_ref(), &now());
            assert_eq!(c.type_, READY);
            assert_eq!(
                (c.status.as_str(), c.reason.as_deref()),
                (status, Some(reason)),
                "{name}"
            );
        }
    }

    fn input<'a>(
        phase: VmiPhase,
        conds: &'a [Condition],
        p: Option<&'a Pod>,
        t: &'a Time,
    ) -> VmiStatusInput<'a> {
        VmiStatusInput {
            phase,
            deleting: false,
            conditions: conds,
            pod: p,
            pod_network_interface: Some("default"),
            now: t,
        }
    }

    #[test]
    fn running_pod_gives_node_and_ip() {
        let t = now();
        let p = ready_pod("True");
        let got = vmi_status(&input(Scheduled, &[], Some(&p), &t));
        assert_eq!(got.phase, Running);
        assert_eq!(got.node_name.as_deref(), Some("node1"));
        assert_eq!(got.qos_class.as_deref(), Some("Burstable"));
        let ifaces = got.interfaces.clone().unwrap();
        assert_eq!(ifaces.len(), 1);
        assert_eq!(ifaces[0].name.as_deref(), Some("default"));
        assert_eq!(ifaces[0].ip_address.as_deref(), Some("10.88.0.7"));
        assert_eq!(ifaces[0].ip_addresses, Some(vec!["10.88.0.7".to_owned()]));
        assert!(conditions::has_status(&got.conditions, READY, "True"));

        let mut status = VirtualMachineInstanceStatus::default();
        got.apply(&mut status);
        assert_eq!(status.phase.as_deref(), Some("Running"));
        assert_eq!(status.node_name.as_deref(), Some("node1"));
        assert_eq!(
            status.interfaces.unwrap()[0].ip_address.as_deref(),
            Some("10.88.0.7")
        );
    }

    #[test]
    fn no_node_or_ip_before_the_pod_runs() {
        let t = now();
        let p = pod("Pending", Compute::Absent, false);
        let got = vmi_status(&input(Pending, &[], Some(&p), &t));
        assert_eq!(got.phase, Scheduling);
        assert_eq!(got.node_name, None);
        assert_eq!(got.interfaces, None);
        // No pod network: no interface status.
        let p = ready_pod("True");
        let no_net = VmiStatusInput {
            pod_network_interface: None,
            ..input(Running, &[], Some(&p), &t)
        };
        assert_eq!(vmi_status(&no_net).interfaces, None);
    }

    #[test]
    fn image_pull_errors_and_unschedulable_pods() {
        let t = now();
        // (compute waiting reason, expected Synchronized reason)
        let table = [
            ("ErrImagePull", Some(REASON_ERR_IMAGE_PULL)),
            ("ImagePullBackOff", Some(REASON_IMAGE_PULL_BACK_OFF)),
            ("ContainerCreating", None),
        ];
        for (waiting, want) in table {
            let p = pod("Pending", Compute::Waiting(waiting), false);
            let got = vmi_status(&input(Scheduling, &[], Some(&p), &t));
            let sync = conditions::find(&got.conditions, SYNCHRONIZED);
            assert_eq!(sync.and_then(|c| c.reason.as_deref()), want, "{waiting}");
            if let Some(c) = sync {
                assert_eq!(c.status, FALSE);
                assert_eq!(
                    c.message.as_deref(),
                    Some(format!("{waiting} for image x").as_str())
                );
            }
        }
        // The error clears once the image is there.
        let p = pod("Pending", Compute::Waiting("ErrImagePull"), false);
        let with_error = vmi_status(&input(Scheduling, &[], Some(&p), &t)).conditions;
        let p = pod("Running", Compute::Up, false);
        let got = vmi_status(&input(Scheduling, &with_error, Some(&p), &t));
        assert!(conditions::find(&got.conditions, SYNCHRONIZED).is_none());

        // An unschedulable pod's PodScheduled condition is copied, then dropped once scheduled.
        let mut p = pod("Pending", Compute::Absent, false);
        if let Some(s) = p.status.as_mut() {
            s.conditions = Some(vec![PodCondition {
                type_: POD_SCHEDULED.into(),
                status: "False".into(),
                reason: Some("Unschedulable".into()),
                message: Some("0/1 nodes are available".into()),
                ..Default::default()
            }]);
        }
        let got = vmi_status(&input(Scheduling, &[], Some(&p), &t));
        assert!(conditions::has_status_and_reason(
            &got.conditions,
            POD_SCHEDULED,
            FALSE,
            "Unschedulable"
        ));
        let running = ready_pod("True");
        let got = vmi_status(&input(Scheduling, &got.conditions, Some(&running), &t));
        assert!(conditions::find(&got.conditions, POD_SCHEDULED).is_none());
    }
}
