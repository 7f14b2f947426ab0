//! Whether a VMI can take a console, VNC, pause or unpause request right now, with KubeVirt's
//! answers (`pkg/virt-api/rest/console.go`, `vnc.go`, `lifecycle.go`), and the `Paused`
//! condition the pause subresource records (pure).
//!
//! Console and VNC answer **400 "VMI is not running"** until the VMI runs: `virtctl` retries on
//! 400 (and only on 400) every second, which is how `virtctl console` waits for a booting VM.

use super::status::ApiError;
use crate::status::conditions::{self, TRUE};
use virtshim_api::types::{Condition, VirtualMachineInstance};

pub const VMI: &str = "virtualmachineinstance";
pub const NOT_RUNNING: &str = "VMI is not running";
/// The `Paused` condition type, and the reason KubeVirt gives a user's pause.
pub const PAUSED: &str = "Paused";
pub const PAUSED_BY_USER: &str = "PausedByUser";

fn devices(vmi: &VirtualMachineInstance) -> Option<&virtshim_api::types::Devices> {
    vmi.spec.domain.as_ref()?.devices.as_ref()
}

fn name(vmi: &VirtualMachineInstance) -> String {
    vmi.metadata.name.clone().unwrap_or_default()
}

fn phase(vmi: &VirtualMachineInstance) -> &str {
    vmi.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

fn conditions_of(vmi: &VirtualMachineInstance) -> &[Condition] {
    vmi.status
        .as_ref()
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or(&[])
}

/// Whether the VMI carries `Paused=True`.
pub fn is_paused(vmi: &VirtualMachineInstance) -> bool {
    conditions::has_status(conditions_of(vmi), PAUSED, TRUE)
}

/// `GET …/console`.
pub fn console(vmi: &VirtualMachineInstance) -> Result<(), ApiError> {
    if devices(vmi).and_then(|d| d.autoattach_serial_console) == Some(false) {
        return Err(ApiError::bad_request("No serial consoles are present."));
    }
    match phase(vmi) {
        "Failed" => Err(ApiError::conflict(
            VMI,
            &name(vmi),
            "VMI is in failed status",
        )),
        "Running" => Ok(()),
        _ => Err(ApiError::bad_request(NOT_RUNNING)),
    }
}

/// `GET …/vnc`.
pub fn vnc(vmi: &VirtualMachineInstance) -> Result<(), ApiError> {
    if devices(vmi).and_then(|d| d.autoattach_graphics_device) == Some(false) {
        return Err(ApiError::bad_request("No graphics devices are present."));
    }
    port_forward(vmi)
}

/// `GET …/portforward/{port}`: only a running VMI has a guest to connect to (VNC's rule too).
pub fn port_forward(vmi: &VirtualMachineInstance) -> Result<(), ApiError> {
    match phase(vmi) {
        "Running" => Ok(()),
        _ => Err(ApiError::bad_request(NOT_RUNNING)),
    }
}

/// `PUT …/pause`.
pub fn pause(vmi: &VirtualMachineInstance) -> Result<(), ApiError> {
    if phase(vmi) != "Running" {
        return Err(ApiError::conflict(VMI, &name(vmi), "VM is not running"));
    }
    if is_paused(vmi) {
        return Err(ApiError::conflict(VMI, &name(vmi), "VMI is already paused"));
    }
    Ok(())
}

/// `PUT …/unpause`.
pub fn unpause(vmi: &VirtualMachineInstance) -> Result<(), ApiError> {
    if phase(vmi) != "Running" {
        return Err(ApiError::conflict(VMI, &name(vmi), NOT_RUNNING));
    }
    if !is_paused(vmi) {
        return Err(ApiError::conflict(VMI, &name(vmi), "VMI is not paused"));
    }
    Ok(())
}

/// The JSON patch recording a pause (`paused`) or its end on the VMI's status, guarded by a
/// `test` of the conditions it read so that a concurrent status write fails it; `None` when
/// the status already says so.
pub fn paused_condition_patch(
    vmi: &VirtualMachineInstance,
    paused: bool,
    now: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
) -> Option<serde_json::Value> {
    let old = vmi.status.as_ref().and_then(|s| s.conditions.clone());
    let mut new = old.clone().unwrap_or_default();
    if paused {
        if is_paused(vmi) {
            return None;
        }
        conditions::upsert(
            &mut new,
            Condition {
                type_: PAUSED.to_owned(),
                status: TRUE.to_owned(),
                last_probe_time: None,
                last_transition_time: Some(now),
                reason: Some(PAUSED_BY_USER.to_owned()),
                message: Some("VMI was paused by user".to_owned()),
            },
        );
    } else {
        conditions::find(&new, PAUSED)?;
        conditions::remove(&mut new, PAUSED);
    }
    let mut ops = Vec::new();
    if vmi.status.is_none() {
        ops.push(serde_json::json!({"op": "add", "path": "/status", "value": {}}));
    }
    match old {
        Some(old) => {
            ops.push(serde_json::json!({"op": "test", "path": "/status/conditions", "value": old}));
            ops.push(
                serde_json::json!({"op": "replace", "path": "/status/conditions", "value": new}),
            );
        }
        None => {
            ops.push(serde_json::json!({"op": "add", "path": "/status/conditions", "value": new}))
        }
    }
    Some(serde_json::Value::Array(ops))
}

#[cfg(test)]
mod tests {
    use super::*;
    use virtshim_api::types::VirtualMachineInstanceStatus;

    fn vmi(phase: Option<&str>, paused: bool) -> VirtualMachineInstance {
        let mut vmi = VirtualMachineInstance::new("v", Default::default());
        vmi.status = Some(VirtualMachineInstanceStatus {
            phase: phase.map(str::to_owned),
            conditions: paused.then(|| {
                vec![Condition {
                    type_: PAUSED.into(),
                    status: TRUE.into(),
                    last_probe_time: None,
                    last_transition_time: None,
                    reason: Some(PAUSED_BY_USER.into()),
                    message: None,
                }]
            }),
            ..Default::default()
        });
        vmi
    }

    fn outcome(r: Result<(), ApiError>) -> Result<(), (u16, String)> {
        r.map_err(|e| (e.code, e.message))
    }

    #[test]
    fn console_and_vnc_table() {
        let running = Ok(());
        let not_running = Err((400, NOT_RUNNING.to_owned()));
        let cases = [
            (None, not_running.clone(), not_running.clone()),
            (Some("Pending"), not_running.clone(), not_running.clone()),
            (Some("Scheduling"), not_running.clone(), not_running.clone()),
            (Some("Scheduled"), not_running.clone(), not_running.clone()),
            (Some("Running"), running.clone(), running.clone()),
            (Some("Succeeded"), not_running.clone(), not_running.clone()),
            (
                Some("Failed"),
                Err((
                    409,
                    "Operation cannot be fulfilled on virtualmachineinstance.kubevirt.io \"v\": VMI is in failed status".to_owned(),
                )),
                not_running.clone(),
            ),
        ];
        for (phase, console_expected, vnc_expected) in cases {
            let v = vmi(phase, false);
            assert_eq!(outcome(console(&v)), console_expected, "console {phase:?}");
            assert_eq!(outcome(vnc(&v)), vnc_expected, "vnc {phase:?}");
        }
        let mut headless = vmi(Some("Running"), false);
        headless.spec.domain = Some(virtshim_api::types::DomainSpec {
            devices: Some(virtshim_api::types::Devices {
                autoattach_serial_console: Some(false),
                autoattach_graphics_device: Some(false),
                ..Default::default()
            }),
            ..Default::default()
        });
        assert_eq!(
            outcome(console(&headless)),
            Err((400, "No serial consoles are present.".to_owned()))
        );
        assert_eq!(
            outcome(vnc(&headless)),
            Err((400, "No graphics devices are present.".to_owned()))
        );
    }

    #[test]
    fn pause_unpause_table() {
        let conflict = |why: &str| {
            Err((
                409,
                format!(
                    "Operation cannot be fulfilled on virtualmachineinstance.kubevirt.io \"v\": {why}"
                ),
            ))
        };
        let cases = [
            (
                Some("Running"),
                false,
                Ok(()),
                conflict("VMI is not paused"),
            ),
            (
                Some("Running"),
                true,
                conflict("VMI is already paused"),
                Ok(()),
            ),
            (
                Some("Scheduled"),
                false,
                conflict("VM is not running"),
                conflict("VMI is not running"),
            ),
            (
                Some("Succeeded"),
                true,
                conflict("VM is not running"),
                conflict("VMI is not running"),
            ),
        ];
        for (phase, paused, pause_expected, unpause_expected) in cases {
            let v = vmi(phase, paused);
            assert_eq!(
                outcome(pause(&v)),
                pause_expected,
                "pause {phase:?} {paused}"
            );
            assert_eq!(
                outcome(unpause(&v)),
                unpause_expected,
                "unpause {phase:?} {paused}"
            );
        }
    }

    #[test]
    fn paused_condition_patches() {
        let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
        );
        let running = vmi(Some("Running"), false);
        let patch = paused_condition_patch(&running, true, now.clone()).expect("a patch");
        let mut doc = serde_json::to_value(&running).expect("json");
        json_patch::patch(
            &mut doc,
            &serde_json::from_value::<json_patch::Patch>(patch).expect("patch"),
        )
        .expect("applies");
        let paused: VirtualMachineInstance = serde_json::from_value(doc).expect("vmi");
        assert!(is_paused(&paused));
        assert!(paused_condition_patch(&paused, true, now.clone()).is_none());
        let unpatch = paused_condition_patch(&paused, false, now.clone()).expect("a patch");
        let mut doc = serde_json::to_value(&paused).expect("json");
        json_patch::patch(
            &mut doc,
            &serde_json::from_value::<json_patch::Patch>(unpatch).expect("patch"),
        )
        .expect("applies");
        let resumed: VirtualMachineInstance = serde_json::from_value(doc).expect("vmi");
        assert!(!is_paused(&resumed));
        assert!(paused_condition_patch(&resumed, false, now.clone()).is_none());
        // A concurrent change to the conditions makes the test op fail (a Running VMI always
        // has conditions: the VMI controller writes Ready).
        let mut ready = vmi(Some("Running"), false);
        if let Some(status) = ready.status.as_mut() {
            status.conditions = Some(vec![Condition {
                type_: "Ready".into(),
                status: TRUE.into(),
                last_probe_time: None,
                last_transition_time: None,
                reason: None,
                message: None,
            }]);
        }
        let stale = paused_condition_patch(&ready, true, now).expect("a patch");
        let mut doc = serde_json::to_value(vmi(Some("Running"), false)).expect("json");
        doc["status"]["conditions"] = serde_json::json!([]);
        assert!(json_patch::patch(
            &mut doc,
            &serde_json::from_value::<json_patch::Patch>(stale).expect("patch")
        )
        .is_err());
    }
}
