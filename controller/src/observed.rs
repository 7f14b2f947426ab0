//! The facts about a VMI that the VM, replica-set and printable-status decisions read.
//!
//! Parsed once from the wire object so that the decisions match on an enum instead of comparing
//! strings, and so that a phase virtshim never writes (KubeVirt's migration-only
//! `WaitingForSync`, or a typo) is an error at the edge rather than a silent "not running".

use virtshim_api::types::{Condition, VirtualMachineInstance};

/// `VirtualMachineInstance.status.phase`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VmiPhase {
    /// No phase yet: the controller has not processed the VMI.
    Unset,
    /// Accepted, no pod yet.
    Pending,
    /// The pod exists and is not running yet.
    Scheduling,
    /// The pod runs; the VM itself does not yet.
    Scheduled,
    /// The VM runs.
    Running,
    /// The VM stopped by itself (guest power-off).
    Succeeded,
    /// The VM or its pod failed, or the pod disappeared.
    Failed,
    /// The pod's state cannot be known (its node is unreachable).
    Unknown,
}

impl VmiPhase {
    /// Every phase that can be written, in lifecycle order.
    pub const ALL: [VmiPhase; 8] = [
        VmiPhase::Unset,
        VmiPhase::Pending,
        VmiPhase::Scheduling,
        VmiPhase::Scheduled,
        VmiPhase::Running,
        VmiPhase::Succeeded,
        VmiPhase::Failed,
        VmiPhase::Unknown,
    ];

    /// Reads `status.phase`; absent and `""` are [`VmiPhase::Unset`].
    pub fn parse(phase: Option<&str>) -> Result<Self, ObservedError> {
        match phase.unwrap_or("") {
            "" => Ok(Self::Unset),
            "Pending" => Ok(Self::Pending),
            "Scheduling" => Ok(Self::Scheduling),
            "Scheduled" => Ok(Self::Scheduled),
            "Running" => Ok(Self::Running),
            "Succeeded" => Ok(Self::Succeeded),
            "Failed" => Ok(Self::Failed),
            "Unknown" => Ok(Self::Unknown),
            other => Err(ObservedError::UnsupportedPhase(other.to_owned())),
        }
    }

    /// The wire spelling (`""` for [`VmiPhase::Unset`]).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unset => "",
            Self::Pending => "Pending",
            Self::Scheduling => "Scheduling",
            Self::Scheduled => "Scheduled",
            Self::Running => "Running",
            Self::Succeeded => "Succeeded",
            Self::Failed => "Failed",
            Self::Unknown => "Unknown",
        }
    }

    /// Succeeded or Failed: the VMI will never run again (KubeVirt's `IsFinal`).
    pub fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed)
    }

    /// Unset or Pending: no pod has been seen yet (KubeVirt's `IsUnprocessed`).
    pub fn is_unprocessed(self) -> bool {
        matches!(self, Self::Unset | Self::Pending)
    }
}

/// Why a VMI could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ObservedError {
    #[error("the VMI has no metadata.uid")]
    NoUid,
    #[error("VMI phase {0:?} is not one virtshim writes")]
    UnsupportedPhase(String),
}

/// A VMI as the VM and replica-set decisions see it.
#[derive(Clone, Debug, PartialEq)]
pub struct ObservedVmi {
    pub uid: String,
    pub phase: VmiPhase,
    /// `metadata.deletionTimestamp` is set.
    pub deleting: bool,
    /// `status.phaseTransitionTimestamps` has a Running entry: the VM booted at least once,
    /// which is what resets KubeVirt's crash-loop counter.
    pub ever_running: bool,
    /// `status.conditions` (Ready, Paused, Synchronized, PodScheduled, …).
    pub conditions: Vec<Condition>,
    /// `spec.terminationGracePeriodSeconds`, which the stop and restart subresources shorten.
    pub termination_grace_period_seconds: Option<i64>,
}

impl ObservedVmi {
    /// A VMI in `phase` with no conditions, not being deleted, that never ran (a test helper
    /// and a starting point for callers that build one by hand).
    pub fn new(uid: impl Into<String>, phase: VmiPhase) -> Self {
        Self {
            uid: uid.into(),
            phase,
            deleting: false,
            ever_running: false,
            conditions: Vec::new(),
            termination_grace_period_seconds: None,
        }
    }
}

impl TryFrom<&VirtualMachineInstance> for ObservedVmi {
    type Error = ObservedError;

    fn try_from(vmi: &VirtualMachineInstance) -> Result<Self, Self::Error> {
        let uid = vmi.metadata.uid.clone().ok_or(ObservedError::NoUid)?;
        let status = vmi.status.as_ref();
        let phase = VmiPhase::parse(status.and_then(|s| s.phase.as_deref()))?;
        let ever_running = status
            .and_then(|s| s.phase_transition_timestamps.as_ref())
            .is_some_and(|ts| ts.iter().any(|t| t.phase.as_deref() == Some("Running")));
        Ok(Self {
            uid,
            phase,
            deleting: vmi.metadata.deletion_timestamp.is_some(),
            ever_running,
            conditions: status
                .and_then(|s| s.conditions.clone())
                .unwrap_or_default(),
            termination_grace_period_seconds: vmi.spec.termination_grace_period_seconds,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use virtshim_api::types::{PhaseTransitionTimestamp, VirtualMachineInstanceStatus};

    #[test]
    fn phases_round_trip() {
        for phase in VmiPhase::ALL {
            assert_eq!(VmiPhase::parse(Some(phase.as_str())), Ok(phase));
        }
        assert_eq!(VmiPhase::parse(None), Ok(VmiPhase::Unset));
        assert_eq!(
            VmiPhase::parse(Some("WaitingForSync")),
            Err(ObservedError::UnsupportedPhase("WaitingForSync".into()))
        );
    }

    #[test]
    fn final_and_unprocessed() {
        let table = [
            (VmiPhase::Unset, false, true),
            (VmiPhase::Pending, false, true),
            (VmiPhase::Scheduling, false, false),
            (VmiPhase::Scheduled, false, false),
            (VmiPhase::Running, false, false),
            (VmiPhase::Succeeded, true, false),
            (VmiPhase::Failed, true, false),
            (VmiPhase::Unknown, false, false),
        ];
        for (phase, is_final, unprocessed) in table {
            assert_eq!(phase.is_final(), is_final, "{phase:?}");
            assert_eq!(phase.is_unprocessed(), unprocessed, "{phase:?}");
        }
    }

    #[test]
    fn reads_a_vmi() {
        let mut vmi = VirtualMachineInstance::new("v", Default::default());
        assert_eq!(ObservedVmi::try_from(&vmi), Err(ObservedError::NoUid));
        vmi.metadata.uid = Some("u1".into());
        vmi.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        vmi.status = Some(VirtualMachineInstanceStatus {
            phase: Some("Failed".into()),
            phase_transition_timestamps: Some(vec![PhaseTransitionTimestamp {
                phase: Some("Running".into()),
                phase_transition_timestamp: None,
            }]),
            ..Default::default()
        });
        let seen = ObservedVmi::try_from(&vmi).unwrap();
        assert_eq!(seen.uid, "u1");
        assert_eq!(seen.phase, VmiPhase::Failed);
        assert!(seen.deleting);
        assert!(seen.ever_running);
    }
}
