//! The actions, each a thin sequence of backend calls around the pure decisions: start, stop
//! and restart ([`crate::decide::subresource`]), pause and unpause, and finding the handler of
//! a VMI that console and VNC connect to.

use super::backend::{Backend, Part};
use super::handler::{handler_path, Dialer, Endpoint};
use super::options;
use super::routes::{Action, Target};
use super::status::{from_kube, ApiError};
use super::vmi_checks::{self, VMI};
use crate::decide::subresource::{self, VmPatch};
use crate::observed::ObservedVmi;
use std::net::IpAddr;
use virtshim_api::types::{VirtualMachine, VirtualMachineInstance};

const VM: &str = "virtualmachine";

fn json_patch(value: serde_json::Value) -> Result<json_patch::Patch, ApiError> {
    serde_json::from_value(value).map_err(ApiError::internal)
}

/// Reads a VMI; 404 when there is none.
pub async fn vmi(
    backend: &dyn Backend,
    target: &Target,
) -> Result<VirtualMachineInstance, ApiError> {
    backend
        .get_vmi(&target.namespace, &target.name)
        .await
        .map_err(|e| from_kube(&e, VMI, &target.name))?
        .ok_or_else(|| ApiError::not_found(VMI, &target.name))
}

/// Reads a VM; 404 when there is none.
async fn vm(backend: &dyn Backend, target: &Target) -> Result<VirtualMachine, ApiError> {
    backend
        .get_vm(&target.namespace, &target.name)
        .await
        .map_err(|e| from_kube(&e, VM, &target.name))?
        .ok_or_else(|| ApiError::not_found(VM, &target.name))
}

/// The VMI of VM `target.name`, for the VM's own subresources (`virtualmachines/…/portforward`):
/// the VM must exist and the VMI must be the one it created (its controller owner is the VM), so
/// that rights on VMs never reach a standalone VMI that merely shares the name.
pub async fn vm_vmi(
    backend: &dyn Backend,
    target: &Target,
) -> Result<VirtualMachineInstance, ApiError> {
    let vm = vm(backend, target).await?;
    let vmi = vmi(backend, target).await?;
    let owned = vmi
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true) && Some(&o.uid) == vm.metadata.uid.as_ref());
    if !owned {
        return Err(ApiError::conflict(
            VM,
            &target.name,
            "its VirtualMachineInstance was not created by this VirtualMachine",
        ));
    }
    Ok(vmi)
}

/// `PUT virtualmachines/{name}/start|stop|restart`: decides, then patches the VMI's grace
/// period (if shortened) and the VM. `Ok` means 202 Accepted.
pub async fn vm_action(
    backend: &dyn Backend,
    target: &Target,
    body: &[u8],
) -> Result<(), ApiError> {
    let (ns, name) = (target.namespace.as_str(), target.name.as_str());
    let vm = vm(backend, target).await?;
    let vmi = backend
        .get_vmi(ns, name)
        .await
        .map_err(|e| from_kube(&e, VMI, name))?;
    let observed = vmi
        .as_ref()
        .map(ObservedVmi::try_from)
        .transpose()
        .map_err(ApiError::internal)?;
    let (accepted, dry_run) = match target.action {
        Action::Start => {
            let (opts, dry_run) = options::start(body)?;
            (subresource::start(&vm, observed.as_ref(), opts)?, dry_run)
        }
        Action::Stop => {
            let (opts, dry_run) = options::stop(body)?;
            (subresource::stop(&vm, observed.as_ref(), opts)?, dry_run)
        }
        Action::Restart => {
            let (opts, dry_run) = options::restart(body)?;
            (subresource::restart(&vm, observed.as_ref(), opts)?, dry_run)
        }
        other => {
            return Err(ApiError::internal(format!(
                "{other:?} is not an action on a VM"
            )))
        }
    };
    if let Some(grace) = accepted.vmi_grace_period {
        backend
            .patch_vmi(
                ns,
                name,
                Part::Main,
                json_patch(grace.json_patch())?,
                dry_run,
            )
            .await
            .map_err(|e| from_kube(&e, VMI, name))?;
    }
    let part = match &accepted.vm {
        VmPatch::Spec(_) => Part::Main,
        VmPatch::Status(_) => Part::Status,
    };
    backend
        .patch_vm(
            ns,
            name,
            part,
            json_patch(accepted.vm.json_patch())?,
            dry_run,
        )
        .await
        .map_err(|e| from_kube(&e, VM, name))?;
    tracing::info!(namespace = %ns, vm = %name, action = ?target.action, dry_run, "VM request accepted");
    Ok(())
}

/// The IP of the handler serving `vmi`'s node.
pub async fn handler_of(
    backend: &dyn Backend,
    vmi: &VirtualMachineInstance,
) -> Result<IpAddr, ApiError> {
    let name = vmi.metadata.name.as_deref().unwrap_or_default();
    let node = vmi
        .status
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::bad_request(vmi_checks::NOT_RUNNING))?;
    backend
        .handler_ip(node)
        .await
        .map_err(|e| ApiError::internal(format!("finding the handler on node {node}: {e}")))?
        .ok_or_else(|| {
            ApiError::unavailable(format!(
                "no ready virtshim-handler on node {node:?} to reach {VMI} {name:?}"
            ))
        })
}

/// `PUT virtualmachineinstances/{name}/pause|unpause`: checks, asks the handler, then records
/// the `Paused` condition. `Ok` means 200.
pub async fn pause(
    backend: &dyn Backend,
    dialer: &Dialer,
    target: &Target,
    body: &[u8],
) -> Result<(), ApiError> {
    let dry_run = options::pause(body)?;
    let paused = target.action == Action::Pause;
    let vmi = vmi(backend, target).await?;
    if paused {
        vmi_checks::pause(&vmi)?;
    } else {
        vmi_checks::unpause(&vmi)?;
    }
    if dry_run {
        return Ok(());
    }
    let uid = vmi.metadata.uid.clone().unwrap_or_default();
    let ip = handler_of(backend, &vmi).await?;
    let endpoint = if paused {
        Endpoint::Pause
    } else {
        Endpoint::Unpause
    };
    dialer
        .put(
            ip,
            &handler_path(endpoint, &target.namespace, &target.name, &uid),
        )
        .await?;
    tracing::info!(namespace = %target.namespace, vmi = %target.name, paused, "VMI pause state changed");
    record_paused(backend, target, paused).await;
    Ok(())
}

/// Sets or clears the VMI's `Paused` condition, retrying when the status changed meanwhile.
/// A failure is logged only: the VM's state has changed either way.
async fn record_paused(backend: &dyn Backend, target: &Target, paused: bool) {
    for _ in 0..5 {
        let current = match vmi(backend, target).await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(vmi = %target.name, error = %e, "cannot read the VMI to record its pause state");
                return;
            }
        };
        let Some(patch) =
            vmi_checks::paused_condition_patch(&current, paused, crate::reconcile::now())
        else {
            return;
        };
        let Ok(patch) = json_patch(patch) else {
            return;
        };
        match backend
            .patch_vmi(&target.namespace, &target.name, Part::Status, patch, false)
            .await
        {
            Ok(()) => return,
            Err(e) if from_kube(&e, VMI, &target.name).code == 409 => continue,
            Err(e) => {
                tracing::warn!(vmi = %target.name, error = %e, "cannot record the VMI's pause state");
                return;
            }
        }
    }
}
