//! VM → VMI: carries out [`crate::decide::vm::decide`] and writes the VM's status.
//!
//! One pass:
//! 1. A VM not being deleted gets KubeVirt's VM controller finalizer.
//! 2. Its VMI is the one with the VM's name (cache first, else a live read). One this VM
//!    controls is used; an orphan (no controller) is adopted, after a live re-read confirms the
//!    VM is still this one and not being deleted — that is how a VM deleted with
//!    `--cascade=orphan` and created again takes its VMI back. A VMI controlled by something
//!    else is left alone, and creating ours then fails visibly. Ownership that decides an
//!    adoption, a conflict or a delete during the VM's deletion is confirmed by a live read
//!    ([`confirm_live`]): a lagging cache once made an orphan-deleted VM delete the VMI it
//!    was meant to leave, which the VM created again could then never adopt.
//! 3. The decision's action: create the VMI from `spec.template` (owner reference with
//!    `controller: true`, the template's labels plus `vm.kubevirt.io/name`, the stable firmware
//!    UUID, the VM controller's finalizer), delete it, wait out the crash-loop backoff, rewrite
//!    a Halted VM's run strategy on a start request, or drop the VM's finalizer once it may go.
//! 4. The status — printableStatus, ready, created, conditions, stateChangeRequests,
//!    startFailure, runStrategy — goes out by server-side apply with the resourceVersion read,
//!    so a start/stop request written meanwhile is never lost (the write fails and is retried).
//! 5. A final VMI loses the VM controller's finalizer once its state is on the VM.

use super::{
    add_finalizer, apply_status, measured, namespace_and_name, now, random, remove_finalizer, uid,
    Context, RESYNC,
};
use crate::decide::run_strategy::{self, EffectiveRunStrategy, RunStrategy, StrategyField};
use crate::decide::start_failure::{StartFailureState, StartFailureUpdate};
use crate::decide::vm::{decide, is_set_to_start, DeleteReason, VmAction, VmObservation};
use crate::error::{is_namespace_terminating, is_status, Error, Result};
use crate::observed::ObservedVmi;
use crate::status::printable::{
    created, printable_status, ready, vm_conditions, PrintableInput, SyncFailure,
};
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;
use virtshim_api::pod::LABEL_VM_NAME;
use virtshim_api::types::{
    StartFailure, VirtualMachine, VirtualMachineInstance, VirtualMachineStatus,
};

/// KubeVirt's VM controller finalizer, on the VM and on the VMIs it creates.
pub const VM_FINALIZER: &str = "kubevirt.io/virtualMachineControllerFinalize";
/// The finalizer the apiserver sets for `kubectl delete --cascade=orphan`.
pub const ORPHAN_FINALIZER: &str = "orphan";
/// `spec.startStrategy` of a VMI started paused.
pub const START_STRATEGY_PAUSED: &str = "Paused";

/// Event reasons (KubeVirt's).
pub const REASON_SUCCESSFUL_CREATE: &str = "SuccessfulCreate";
pub const REASON_FAILED_CREATE: &str = "FailedCreate";
pub const REASON_SUCCESSFUL_DELETE: &str = "SuccessfulDelete";
pub const REASON_FAILED_DELETE: &str = "FailedDelete";
pub const REASON_FAILED_UPDATE: &str = "FailedUpdate";

/// How soon to look again after a create raced with a VMI the cache had not shown yet.
const RACE_RETRY: Duration = Duration::from_secs(1);

/// The controller's entry point for one VM.
pub async fn reconcile(vm: Arc<VirtualMachine>, ctx: Arc<Context>) -> Result<Action> {
    let (ns, name) = namespace_and_name(vm.as_ref(), "VirtualMachine")?;
    let span = tracing::info_span!("vm", namespace = %ns, vm = %name);
    measured("vm", vm.as_ref(), &ctx, sync(&vm, &ctx, &ns, &name))
        .instrument(span)
        .await
}

/// The VMI a VM creates: the template's metadata and spec under the VM's name, controlled by
/// the VM, with the VM's stable firmware UUID and the VM controller's finalizer.
pub fn vmi_from_template(
    vm: &VirtualMachine,
    start_paused: bool,
) -> Result<VirtualMachineInstance> {
    let (ns, name) = namespace_and_name(vm, "VirtualMachine")?;
    let owner = vm.controller_owner_ref(&()).ok_or(Error::MissingField {
        kind: "VirtualMachine",
        field: "metadata.uid",
    })?;
    let template = vm.spec.template.clone().unwrap_or_default();
    let meta = template.metadata.unwrap_or_default();
    let mut spec = template.spec.unwrap_or_default();
    if start_paused {
        spec.start_strategy = Some(START_STRATEGY_PAUSED.to_owned());
    }
    let firmware = spec
        .domain
        .get_or_insert_with(Default::default)
        .firmware
        .get_or_insert_with(Default::default);
    if firmware.uuid.as_deref().unwrap_or("").is_empty() {
        firmware.uuid = Some(virtshim_api::defaults::vm_firmware_uuid(&name));
    }
    let mut labels = meta.labels.unwrap_or_default();
    labels.insert(LABEL_VM_NAME.to_owned(), name.clone());
    let mut vmi = VirtualMachineInstance::new(&name, spec);
    vmi.metadata = ObjectMeta {
        name: Some(name),
        namespace: Some(ns),
        labels: Some(labels),
        annotations: meta.annotations,
        owner_references: Some(vec![owner]),
        finalizers: Some(vec![VM_FINALIZER.to_owned()]),
        ..Default::default()
    };
    Ok(vmi)
}

/// Whether `vmi` is controlled by the object with this uid; `None` when nothing controls it.
pub fn controlled_by(vmi: &VirtualMachineInstance, owner_uid: &str) -> Option<bool> {
    vmi.owner_references()
        .iter()
        .find(|o| o.controller == Some(true))
        .map(|o| o.uid == owner_uid)
}

/// Whether the cached VMI must be confirmed by a live read before this pass acts on it:
/// - the VM is being deleted: the garbage collector orphans the VMI (drops our owner
///   reference) and then removes the `orphan` finalizer, so a pass that no longer sees that
///   finalizer but still sees our reference in a lagging cache would delete the VMI that
///   `--cascade=orphan` meant to keep (and a VM created again could then never adopt it);
/// - the VMI is an orphan (we would adopt it, with the cached resourceVersion) or someone
///   else's (we would report a conflict): a lagging cache must not decide either.
pub fn confirm_live(vm_deleting: bool, control: Option<bool>) -> bool {
    vm_deleting || control != Some(true)
}

/// The claim names of the PVCs a VM's template uses.
pub fn template_claims(vm: &VirtualMachine) -> Vec<String> {
    vm.spec
        .template
        .as_ref()
        .and_then(|t| t.spec.as_ref())
        .and_then(|s| s.volumes.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|v| {
            v.persistent_volume_claim
                .as_ref()
                .or(v
                    .ephemeral
                    .as_ref()
                    .and_then(|e| e.persistent_volume_claim.as_ref()))
                .and_then(|p| p.claim_name.clone())
        })
        .collect()
}

/// The status fields this controller owns, as the apply body carries them. The request list
/// is always written, empty included, because the subresources write it too.
pub fn owned_status(status: &VirtualMachineStatus) -> serde_json::Value {
    let owned = VirtualMachineStatus {
        created: status.created.filter(|c| *c),
        ready: status.ready.filter(|r| *r),
        printable_status: status.printable_status.clone(),
        conditions: status.conditions.clone().filter(|c| !c.is_empty()),
        state_change_requests: Some(status.state_change_requests.clone().unwrap_or_default()),
        start_failure: status.start_failure.clone(),
        run_strategy: status.run_strategy.clone(),
        ..Default::default()
    };
    serde_json::to_value(owned).unwrap_or(serde_json::Value::Null)
}

/// Adopts an orphaned VMI: re-reads the VM (it must still be this one and not being deleted),
/// then makes it the VMI's controller. `None` when the VM may not adopt.
async fn adopt(
    ctx: &Context,
    vm: &VirtualMachine,
    vmi: &VirtualMachineInstance,
) -> Result<Option<VirtualMachineInstance>> {
    let (ns, name) = namespace_and_name(vm, "VirtualMachine")?;
    let vms: Api<VirtualMachine> = Api::namespaced(ctx.client.clone(), &ns);
    let fresh = vms.get_opt(&name).await?;
    let same = fresh.as_ref().is_some_and(|f| {
        f.metadata.uid == vm.metadata.uid && f.metadata.deletion_timestamp.is_none()
    });
    if !same || vmi.metadata.deletion_timestamp.is_some() {
        return Ok(None);
    }
    let Some(owner) = vm.controller_owner_ref(&()) else {
        return Ok(None);
    };
    let mut refs = vmi.owner_references().to_vec();
    refs.push(owner);
    let patch = serde_json::json!({
        "metadata": {
            "resourceVersion": vmi.metadata.resource_version,
            "ownerReferences": refs,
            "labels": { LABEL_VM_NAME: name },
        }
    });
    let vmis: Api<VirtualMachineInstance> = Api::namespaced(ctx.client.clone(), &ns);
    let adopted = vmis
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    ctx.metrics.operation("vmi", "adopt");
    tracing::info!("adopted the orphaned VMI");
    Ok(Some(adopted))
}

/// Whether one of the PVCs is missing or not Bound yet.
async fn any_unbound_pvc(ctx: &Context, ns: &str, claims: &[String]) -> Result<bool> {
    let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), ns);
    for claim in claims {
        let bound = api.get_opt(claim).await?.is_some_and(|pvc| {
            pvc.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound")
        });
        if !bound {
            return Ok(true);
        }
    }
    Ok(false)
}

fn delete_note(reason: DeleteReason, uid: &str) -> String {
    let why = match reason {
        DeleteReason::StopRequested => "a stop was requested".to_owned(),
        DeleteReason::Finished(phase) => format!("it {}", phase.as_str().to_lowercase()),
        DeleteReason::RunStrategyHalted => "the run strategy is Halted".to_owned(),
        DeleteReason::VmDeleted => "the virtual machine is being deleted".to_owned(),
    };
    format!("Stopped the virtual machine by deleting the virtual machine instance {uid} ({why})")
}

async fn sync(vm: &VirtualMachine, ctx: &Context, ns: &str, name: &str) -> Result<Action> {
    let vm_uid = uid(vm, "VirtualMachine")?;
    let vms: Api<VirtualMachine> = Api::namespaced(ctx.client.clone(), ns);
    let vmis: Api<VirtualMachineInstance> = Api::namespaced(ctx.client.clone(), ns);
    let reference = vm.object_ref(&());
    let deleting = vm.metadata.deletion_timestamp.is_some();
    let orphan = vm.finalizers().iter().any(|f| f == ORPHAN_FINALIZER);
    let old_status = vm.status.clone().unwrap_or_default();
    let now = now();

    let (strategy, strategy_error) = match run_strategy::effective(&vm.spec) {
        Ok(s) => (s, None),
        Err(e) => (
            EffectiveRunStrategy {
                strategy: RunStrategy::Halted,
                field: StrategyField::Neither,
            },
            Some(e),
        ),
    };

    // The status write is conditional on this version: keep it current across our own patches.
    let mut resource_version = vm.metadata.resource_version.clone();
    if !deleting {
        if let Some(patched) = add_finalizer(&vms, vm, VM_FINALIZER).await? {
            ctx.metrics.operation("vm", "add_finalizer");
            resource_version = patched.metadata.resource_version;
        }
    }

    // The VMI: cache, else a live read; then ownership. Whenever ownership decides something
    // hard to undo (see `confirm_live`), the cached copy is confirmed by a live read.
    let cached = ctx
        .caches
        .vmis
        .get(&ObjectRef::new(name).within(ns))
        .map(|v| (*v).clone());
    let found = match cached {
        Some(v) if !confirm_live(deleting, controlled_by(&v, &vm_uid)) => Some(v),
        _ => vmis.get_opt(name).await?,
    };
    let mut conflict = None;
    let vmi = match found {
        Some(v) => match controlled_by(&v, &vm_uid) {
            Some(true) => Some(v),
            None if !deleting => adopt(ctx, vm, &v).await?,
            None => None,
            Some(false) => {
                conflict = Some(format!(
                    "VirtualMachineInstance {name} exists and is controlled by another object"
                ));
                None
            }
        },
        None => None,
    };
    let observed = vmi.as_ref().map(ObservedVmi::try_from).transpose()?;

    let requests = old_status.state_change_requests.clone().unwrap_or_default();
    let start_failure = old_status
        .start_failure
        .as_ref()
        .map(StartFailureState::from);
    let status_strategy: Option<RunStrategy> = old_status
        .run_strategy
        .as_deref()
        .and_then(|s| s.parse().ok());
    let decision = decide(&VmObservation {
        strategy,
        vm_deleting: deleting,
        orphan_dependents: orphan,
        vmi: observed.as_ref(),
        requests: &requests,
        start_failure: start_failure.as_ref(),
        status_run_strategy: status_strategy,
        now: now.0,
        random: random(),
    });

    // A VM whose strategy cannot be read does nothing but say so.
    let action = if strategy_error.is_some() && !deleting {
        VmAction::Nothing
    } else {
        decision.action.clone()
    };

    let mut failure: Option<SyncFailure> = strategy_error.as_ref().map(|e| SyncFailure {
        reason: REASON_FAILED_CREATE.to_owned(),
        message: e.to_string(),
    });
    let mut pass_error: Option<Error> = None;
    let mut start_expected = false;
    let mut stop_expected = false;
    let mut requeue = RESYNC;

    match action {
        VmAction::Nothing => {}
        VmAction::CreateVmi { start_paused } => {
            let new_vmi = vmi_from_template(vm, start_paused)?;
            match vmis.create(&PostParams::default(), &new_vmi).await {
                Ok(created) => {
                    ctx.metrics.operation("vmi", "create");
                    start_expected = true;
                    tracing::info!(vmi = %created.name_any(), "created the VMI");
                    ctx.event(
                        &reference,
                        EventType::Normal,
                        REASON_SUCCESSFUL_CREATE,
                        "Create",
                        format!(
                            "Started the virtual machine by creating the new virtual machine instance {name}"
                        ),
                    )
                    .await;
                }
                // The cache lagged: the VMI exists; look again shortly.
                Err(e) if is_status(&e, 409) && conflict.is_none() => {
                    start_expected = true;
                    requeue = RACE_RETRY;
                }
                // The namespace is going away, and this VM with it: nothing to make, and
                // no error to retry (the deletion comes as the next change).
                Err(e) if is_namespace_terminating(&e) => {
                    tracing::debug!("namespace terminating: no VMI made");
                }
                Err(e) => {
                    let message = format!("Error creating virtual machine instance: {e}");
                    ctx.event(
                        &reference,
                        EventType::Warning,
                        REASON_FAILED_CREATE,
                        "Create",
                        conflict.clone().unwrap_or_else(|| message.clone()),
                    )
                    .await;
                    failure = Some(SyncFailure {
                        reason: REASON_FAILED_CREATE.to_owned(),
                        message: conflict.clone().unwrap_or(message),
                    });
                    pass_error = Some(e.into());
                }
            }
        }
        VmAction::DeleteVmi { reason } => {
            let vmi_uid = observed.as_ref().map(|o| o.uid.clone()).unwrap_or_default();
            match vmis.delete(name, &DeleteParams::default()).await {
                Ok(_) => {
                    ctx.metrics.operation("vmi", "delete");
                    stop_expected = true;
                    tracing::info!(?reason, "deleting the VMI");
                    ctx.event(
                        &reference,
                        EventType::Normal,
                        REASON_SUCCESSFUL_DELETE,
                        "Delete",
                        delete_note(reason, &vmi_uid),
                    )
                    .await;
                }
                Err(e) if is_status(&e, 404) => {}
                Err(e) => {
                    let message = format!("Error deleting virtual machine instance {name}: {e}");
                    ctx.event(
                        &reference,
                        EventType::Warning,
                        REASON_FAILED_DELETE,
                        "Delete",
                        message.clone(),
                    )
                    .await;
                    failure = Some(SyncFailure {
                        reason: REASON_FAILED_DELETE.to_owned(),
                        message,
                    });
                    pass_error = Some(e.into());
                }
            }
        }
        VmAction::WaitBackoff { until } => {
            let wait = until.duration_since(now.0).as_secs_f64().max(1.0);
            requeue = Duration::from_secs_f64(wait);
            tracing::info!(?requeue, "crash-loop backoff before the next VMI");
        }
        VmAction::PatchSpec(patch) => {
            let json: json_patch::Patch = serde_json::from_value(patch.json_patch())?;
            match vms
                .patch(name, &PatchParams::default(), &Patch::Json::<()>(json))
                .await
            {
                Ok(patched) => {
                    resource_version = patched.metadata.resource_version;
                    ctx.metrics.operation("vm", "patch_spec");
                    tracing::info!(?patch, "a start request rewrote the run strategy");
                }
                Err(e) => {
                    ctx.event(
                        &reference,
                        EventType::Warning,
                        REASON_FAILED_UPDATE,
                        "Update",
                        format!("Error starting the virtual machine: {e}"),
                    )
                    .await;
                    pass_error = Some(e.into());
                }
            }
        }
        VmAction::RemoveVmFinalizer => {
            if remove_finalizer(&vms, vm, VM_FINALIZER).await? {
                ctx.metrics.operation("vm", "remove_finalizer");
            }
            return Ok(Action::await_change());
        }
    }

    // Status.
    let start_failure_after = match &decision.start_failure {
        StartFailureUpdate::Unchanged => start_failure.clone(),
        StartFailureUpdate::Clear => None,
        StartFailureUpdate::Set(s) => Some(s.clone()),
    };
    let requests_after = decision.requests.clone().unwrap_or(requests);
    let set_to_start = is_set_to_start(
        strategy.strategy,
        observed.as_ref(),
        &requests_after,
        decision.status_run_strategy,
    );
    let waiting = observed.as_ref().is_none_or(|v| v.phase.is_unprocessed());
    let claims = template_claims(vm);
    let unbound_pvc = if set_to_start && waiting && !claims.is_empty() {
        any_unbound_pvc(ctx, ns, &claims).await?
    } else {
        false
    };
    let printable = printable_status(&PrintableInput {
        vm_deleting: deleting,
        strategy: strategy.strategy,
        vmi: observed.as_ref(),
        start_failure: start_failure_after.as_ref(),
        start_expected,
        stop_expected,
        set_to_start,
        unbound_pvc,
    });
    let existing_conditions = old_status.conditions.clone().unwrap_or_default();
    let status = VirtualMachineStatus {
        created: Some(created(observed.as_ref())),
        ready: Some(ready(observed.as_ref())),
        printable_status: Some(printable.as_str().to_owned()),
        conditions: Some(vm_conditions(
            &existing_conditions,
            observed.as_ref(),
            failure.as_ref(),
            &now,
        )),
        state_change_requests: Some(requests_after),
        start_failure: start_failure_after.as_ref().map(StartFailure::from),
        run_strategy: decision.status_run_strategy.map(|s| s.as_str().to_owned()),
        ..old_status.clone()
    };
    let body = owned_status(&status);
    let mut status_error = None;
    if body != owned_status(&old_status) {
        match apply_status(&vms, name, resource_version.as_deref(), body).await {
            Ok(()) => ctx.metrics.operation("vm", "status"),
            // The VM went away meanwhile.
            Err(Error::Kube(e)) if deleting && is_status(&e, 404) => {}
            Err(e) => status_error = Some(e),
        }
    }

    // KubeVirt keeps its finalizer on a VMI until the VM has seen it final. This pass has
    // seen it; a status write that failed (and is retried) must not hold the VMI's deletion.
    if let (Some(v), Some(o)) = (vmi.as_ref(), observed.as_ref()) {
        if o.phase.is_final() && remove_finalizer(&vmis, v, VM_FINALIZER).await? {
            ctx.metrics.operation("vmi", "remove_finalizer");
        }
    }

    match pass_error.or(status_error) {
        Some(e) => Err(e),
        None => Ok(Action::requeue(requeue)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
    use virtshim_api::types::{
        PersistentVolumeClaimSource, VirtualMachineInstanceSpec,
        VirtualMachineInstanceTemplateSpec, VirtualMachineSpec, Volume,
    };

    fn vm(template_labels: &[(&str, &str)]) -> VirtualMachine {
        let mut vm = VirtualMachine::new(
            "vm1",
            VirtualMachineSpec {
                run_strategy: Some("Always".into()),
                template: Some(VirtualMachineInstanceTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(
                            template_labels
                                .iter()
                                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                                .collect(),
                        ),
                        annotations: Some([("a".to_owned(), "b".to_owned())].into()),
                        ..Default::default()
                    }),
                    spec: Some(VirtualMachineInstanceSpec {
                        termination_grace_period_seconds: Some(0),
                        volumes: Some(vec![Volume {
                            name: Some("disk".into()),
                            persistent_volume_claim: Some(PersistentVolumeClaimSource {
                                claim_name: Some("pvc1".into()),
                                ..Default::default()
                            }),
                            ..Default::default()
                        }]),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            },
        );
        vm.metadata.namespace = Some("ns".into());
        vm.metadata.uid = Some("vm-uid".into());
        vm
    }

    #[test]
    fn vmi_from_the_template() {
        let vmi = vmi_from_template(&vm(&[("kubevirt.io/vm", "vm1")]), false).unwrap();
        assert_eq!(vmi.metadata.name.as_deref(), Some("vm1"));
        assert_eq!(vmi.metadata.namespace.as_deref(), Some("ns"));
        let labels = vmi.metadata.labels.clone().unwrap();
        assert_eq!(
            labels.get("kubevirt.io/vm").map(String::as_str),
            Some("vm1")
        );
        assert_eq!(labels.get(LABEL_VM_NAME).map(String::as_str), Some("vm1"));
        assert_eq!(
            vmi.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get("a"))
                .map(String::as_str),
            Some("b")
        );
        let owner = &vmi.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (
                owner.kind.as_str(),
                owner.name.as_str(),
                owner.uid.as_str(),
                owner.controller
            ),
            ("VirtualMachine", "vm1", "vm-uid", Some(true))
        );
        assert_eq!(owner.api_version, "kubevirt.io/v1");
        assert_eq!(vmi.metadata.finalizers, Some(vec![VM_FINALIZER.to_owned()]));
        let uuid = vmi
            .spec
            .domain
            .as_ref()
            .and_then(|d| d.firmware.as_ref())
            .and_then(|f| f.uuid.clone());
        assert_eq!(uuid, Some(virtshim_api::defaults::vm_firmware_uuid("vm1")));
        assert_eq!(vmi.spec.start_strategy, None);
        assert_eq!(vmi.spec.termination_grace_period_seconds, Some(0));

        let paused = vmi_from_template(&vm(&[]), true).unwrap();
        assert_eq!(
            paused.spec.start_strategy.as_deref(),
            Some(START_STRATEGY_PAUSED)
        );
    }

    #[test]
    fn a_firmware_uuid_in_the_template_is_kept() {
        let mut v = vm(&[]);
        let spec = v.spec.template.as_mut().unwrap().spec.as_mut().unwrap();
        spec.domain
            .get_or_insert_with(Default::default)
            .firmware
            .get_or_insert_with(Default::default)
            .uuid = Some("given".into());
        let vmi = vmi_from_template(&v, false).unwrap();
        assert_eq!(
            vmi.spec.domain.unwrap().firmware.unwrap().uuid.as_deref(),
            Some("given")
        );
    }

    #[test]
    fn a_vm_without_uid_cannot_own() {
        let mut v = vm(&[]);
        v.metadata.uid = None;
        assert!(vmi_from_template(&v, false).is_err());
    }

    /// (VM being deleted, control per the cache, read live?)
    #[test]
    fn ownership_decisions_are_confirmed_live() {
        let table = [
            // Ours, VM alive: the cache is enough (the common pass).
            (false, Some(true), false),
            // VM being deleted: the cached owner reference may be one the garbage collector
            // has already dropped for `--cascade=orphan`.
            (true, Some(true), true),
            (true, None, true),
            // An orphan to adopt, or someone else's VMI: not on a lagging cache's word.
            (false, None, true),
            (false, Some(false), true),
        ];
        for (deleting, control, live) in table {
            assert_eq!(
                confirm_live(deleting, control),
                live,
                "deleting={deleting} control={control:?}"
            );
        }
    }

    #[test]
    fn control() {
        let owner = |uid: &str, controller: Option<bool>| OwnerReference {
            api_version: "kubevirt.io/v1".into(),
            kind: "VirtualMachine".into(),
            name: "vm1".into(),
            uid: uid.into(),
            controller,
            block_owner_deletion: None,
        };
        let table = [
            (vec![], None),
            (vec![owner("vm-uid", Some(true))], Some(true)),
            (vec![owner("other", Some(true))], Some(false)),
            (vec![owner("vm-uid", None)], None),
            (
                vec![owner("x", Some(false)), owner("vm-uid", Some(true))],
                Some(true),
            ),
        ];
        for (refs, expected) in table {
            let mut vmi = VirtualMachineInstance::new("vm1", Default::default());
            vmi.metadata.owner_references = Some(refs.clone());
            assert_eq!(controlled_by(&vmi, "vm-uid"), expected, "{refs:?}");
        }
    }

    #[test]
    fn claims_of_the_template() {
        assert_eq!(template_claims(&vm(&[])), ["pvc1"]);
    }

    #[test]
    fn owned_status_writes_requests_always_and_false_flags_never() {
        let s = VirtualMachineStatus {
            created: Some(false),
            ready: Some(true),
            printable_status: Some("Stopped".into()),
            observed_generation: Some(3),
            ..Default::default()
        };
        assert_eq!(
            owned_status(&s),
            serde_json::json!({
                "ready": true,
                "printableStatus": "Stopped",
                "stateChangeRequests": [],
            })
        );
    }

    #[test]
    fn delete_notes_name_the_reason() {
        assert!(delete_note(DeleteReason::RunStrategyHalted, "u").contains("Halted"));
        assert!(delete_note(
            DeleteReason::Finished(crate::observed::VmiPhase::Succeeded),
            "u"
        )
        .contains("succeeded"));
    }
}
