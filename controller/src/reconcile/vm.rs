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
    add_finalizer, apply_status, await_own_write, measured, namespace_and_name, now, random,
    remove_finalizer, uid, Context, RACE_RETRY, RESYNC,
};
use crate::decide::run_strategy::{
    self, EffectiveRunStrategy, RunStrategy, RunStrategyPatch, StrategyField,
};
use crate::decide::start_failure::{StartFailureState, StartFailureUpdate};
use crate::decide::vm::{
    decide, is_set_to_start, DeleteReason, VmAction, VmDecision, VmObservation,
};
use crate::error::{is_namespace_terminating, is_status, Error, Result};
use crate::observed::ObservedVmi;
use crate::status::printable::{
    created, printable_status, ready, vm_conditions, PrintableInput, SyncFailure,
};
use k8s_openapi::api::core::v1::{ObjectReference, PersistentVolumeClaim};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
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
    StartFailure, StateChangeRequest, VirtualMachine, VirtualMachineInstance, VirtualMachineSpec,
    VirtualMachineStatus,
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

/// The VM's key in [`Context::written`].
fn written_key(ns: &str, name: &str) -> String {
    format!("vm/{ns}/{name}")
}

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

/// One pass: observe the VM and its VMI, decide, carry out the decision's one action, write
/// the status, and let a final VMI go.
async fn sync(vm: &VirtualMachine, ctx: &Context, ns: &str, name: &str) -> Result<Action> {
    let key = written_key(ns, name);
    if let Some(wait) = await_own_write(ctx, &key, vm.metadata.resource_version.as_deref()) {
        return Ok(wait);
    }
    let pass = VmPass::new(vm, ctx, ns, name)?;
    let old_status = vm.status.clone().unwrap_or_default();
    let (strategy, strategy_error) = strategy_of(&vm.spec);
    let resource_version = pass.ensure_finalizer().await?;

    let found = pass.read_vmi().await?;
    let (vmi, conflict) = pass.claim_vmi(found).await?;
    let observed = vmi.as_ref().map(ObservedVmi::try_from).transpose()?;
    let recorded = Recorded::of(&old_status);
    let decision = pass.decide(strategy, observed.as_ref(), &recorded);

    // A VM whose strategy cannot be read does nothing but say so.
    let action = if strategy_error.is_some() && !pass.deleting {
        VmAction::Nothing
    } else {
        decision.action.clone()
    };
    let mut outcome = Outcome::new(resource_version, strategy_error.as_ref());
    match action {
        VmAction::Nothing => {}
        VmAction::CreateVmi { start_paused } => {
            pass.create_vmi(start_paused, conflict.as_deref(), &mut outcome)
                .await?;
        }
        VmAction::DeleteVmi { reason } => {
            pass.delete_vmi(reason, observed.as_ref(), &mut outcome)
                .await;
        }
        VmAction::WaitBackoff { until } => outcome.requeue = pass.wait_backoff(until),
        VmAction::PatchSpec(patch) => pass.patch_spec(&patch, &mut outcome).await?,
        VmAction::RemoveVmFinalizer => return pass.let_vm_go().await,
    }

    let status = pass
        .status(
            &old_status,
            strategy.strategy,
            observed.as_ref(),
            recorded,
            &decision,
            &outcome,
        )
        .await?;
    let status_error = pass
        .write_status(&old_status, &status, outcome.resource_version.as_deref())
        .await;
    pass.release_final_vmi(vmi.as_ref(), observed.as_ref())
        .await?;

    match outcome.error.or(status_error) {
        Some(e) => Err(e),
        None => Ok(Action::requeue(outcome.requeue)),
    }
}

/// The run strategy the pass follows. One that cannot be read (both `running` and
/// `runStrategy`, or an unknown strategy) is taken as Halted, in neither field, and comes
/// with the error the VM's `Failure` condition reports.
fn strategy_of(
    spec: &VirtualMachineSpec,
) -> (EffectiveRunStrategy, Option<run_strategy::RunStrategyError>) {
    match run_strategy::effective(spec) {
        Ok(s) => (s, None),
        Err(e) => (
            EffectiveRunStrategy {
                strategy: RunStrategy::Halted,
                field: StrategyField::Neither,
            },
            Some(e),
        ),
    }
}

/// What the VM's status recorded of earlier passes, as the decision reads it.
#[derive(Clone, Debug, PartialEq)]
struct Recorded {
    /// `status.stateChangeRequests`.
    requests: Vec<StateChangeRequest>,
    /// `status.startFailure`.
    start_failure: Option<StartFailureState>,
    /// `status.runStrategy`; `None` if unset or unreadable.
    run_strategy: Option<RunStrategy>,
}

impl Recorded {
    fn of(status: &VirtualMachineStatus) -> Self {
        Self {
            requests: status.state_change_requests.clone().unwrap_or_default(),
            start_failure: status.start_failure.as_ref().map(StartFailureState::from),
            run_strategy: status.run_strategy.as_deref().and_then(|s| s.parse().ok()),
        }
    }
}

/// What carrying out the decision's action leaves for the rest of the pass.
#[derive(Debug)]
struct Outcome {
    /// The version the status write is conditional on; our own spec patch moves it.
    resource_version: Option<String>,
    /// The VM's `Failure` condition: an unreadable strategy, or the action that failed.
    failure: Option<SyncFailure>,
    /// The action's error: the pass fails with it once the status is written.
    error: Option<Error>,
    /// A VMI was created (or already was, the cache lagging): printableStatus says Starting.
    start_expected: bool,
    /// The VMI is being deleted: printableStatus says Stopping.
    stop_expected: bool,
    requeue: Duration,
}

impl Outcome {
    fn new(
        resource_version: Option<String>,
        strategy_error: Option<&run_strategy::RunStrategyError>,
    ) -> Self {
        Self {
            resource_version,
            failure: strategy_error.map(|e| SyncFailure {
                reason: REASON_FAILED_CREATE.to_owned(),
                message: e.to_string(),
            }),
            error: None,
            start_expected: false,
            stop_expected: false,
            requeue: RESYNC,
        }
    }
}

/// How long a crash-loop backoff until `until` waits from `now`: at least a second.
fn backoff_wait(until: Timestamp, now: Timestamp) -> Duration {
    let wait = until.duration_since(now).as_secs_f64().max(1.0);
    Duration::from_secs_f64(wait)
}

/// One pass over one VM: what its steps share.
struct VmPass<'a> {
    vm: &'a VirtualMachine,
    ctx: &'a Context,
    ns: &'a str,
    name: &'a str,
    vm_uid: String,
    vms: Api<VirtualMachine>,
    vmis: Api<VirtualMachineInstance>,
    /// The VM, as its events name it.
    reference: ObjectReference,
    /// The VM has a deletionTimestamp.
    deleting: bool,
    now: Time,
}

impl<'a> VmPass<'a> {
    fn new(vm: &'a VirtualMachine, ctx: &'a Context, ns: &'a str, name: &'a str) -> Result<Self> {
        Ok(Self {
            vm,
            ctx,
            ns,
            name,
            vm_uid: uid(vm, "VirtualMachine")?,
            vms: Api::namespaced(ctx.client.clone(), ns),
            vmis: Api::namespaced(ctx.client.clone(), ns),
            reference: vm.object_ref(&()),
            deleting: vm.metadata.deletion_timestamp.is_some(),
            now: now(),
        })
    }

    /// Notes a write of the VM that replaced version `before`.
    fn wrote(&self, before: Option<&str>, after: &VirtualMachine) {
        self.ctx.written.wrote(
            &written_key(self.ns, self.name),
            before,
            after.metadata.resource_version.as_deref(),
        );
    }

    /// Puts KubeVirt's VM controller finalizer on a VM not being deleted, so that the VM
    /// cannot go before its VMI has. Returns the resourceVersion the status write is
    /// conditional on, which that patch moves.
    async fn ensure_finalizer(&self) -> Result<Option<String>> {
        let mut resource_version = self.vm.metadata.resource_version.clone();
        if !self.deleting {
            if let Some(patched) = add_finalizer(&self.vms, self.vm, VM_FINALIZER).await? {
                self.ctx.metrics.operation("vm", "add_finalizer");
                self.wrote(resource_version.as_deref(), &patched);
                resource_version = patched.metadata.resource_version;
            }
        }
        Ok(resource_version)
    }

    /// The VMI with the VM's name: the cache's copy. Whenever ownership would decide
    /// something hard to undo (see [`confirm_live`]), the cached copy is confirmed by a live
    /// read. A VMI the cache does not show is confirmed absent by a live read only while the
    /// VM is being deleted (its finalizer must not go while a VMI is left). Otherwise a lagging
    /// cache costs nothing: a create then answers 409 and the pass looks again, and a VMI that
    /// should stop brings its own event. That read was one request per VM started and two per
    /// VM stopped, all answered 404 (BENCHMARKS.md, the controller's 500-VM throughput).
    async fn read_vmi(&self) -> Result<Option<VirtualMachineInstance>> {
        let cached = self
            .ctx
            .caches
            .vmis
            .get(&ObjectRef::new(self.name).within(self.ns))
            .map(|v| (*v).clone());
        Ok(match cached {
            Some(v) if !confirm_live(self.deleting, controlled_by(&v, &self.vm_uid)) => Some(v),
            None if !self.deleting => None,
            _ => self.vmis.get_opt(self.name).await?,
        })
    }

    /// Whether the VMI found is this VM's: one it controls is; an orphan is adopted (not
    /// while the VM is being deleted); one controlled by something else is not, and is the
    /// conflict a create will then report. Returns the VM's VMI, and the conflict if any.
    async fn claim_vmi(
        &self,
        found: Option<VirtualMachineInstance>,
    ) -> Result<(Option<VirtualMachineInstance>, Option<String>)> {
        let Some(v) = found else {
            return Ok((None, None));
        };
        Ok(match controlled_by(&v, &self.vm_uid) {
            Some(true) => (Some(v), None),
            None if !self.deleting => (adopt(self.ctx, self.vm, &v).await?, None),
            None => (None, None),
            Some(false) => (
                None,
                Some(format!(
                    "VirtualMachineInstance {} exists and is controlled by another object",
                    self.name
                )),
            ),
        })
    }

    /// The decision ([`crate::decide::vm::decide`]) on what the pass observed.
    fn decide(
        &self,
        strategy: EffectiveRunStrategy,
        observed: Option<&ObservedVmi>,
        recorded: &Recorded,
    ) -> VmDecision {
        decide(&VmObservation {
            strategy,
            vm_deleting: self.deleting,
            orphan_dependents: self.vm.finalizers().iter().any(|f| f == ORPHAN_FINALIZER),
            vmi: observed,
            requests: &recorded.requests,
            start_failure: recorded.start_failure.as_ref(),
            status_run_strategy: recorded.run_strategy,
            now: self.now.0,
            random: random(),
        })
    }

    /// Creates the VMI from the VM's template. A VMI already there (the cache lagged) is
    /// looked at again shortly; a namespace going away is no failure; any other failure is
    /// an event, the VM's `Failure` condition and the pass's error.
    async fn create_vmi(
        &self,
        start_paused: bool,
        conflict: Option<&str>,
        outcome: &mut Outcome,
    ) -> Result<()> {
        let new_vmi = vmi_from_template(self.vm, start_paused)?;
        match self.vmis.create(&PostParams::default(), &new_vmi).await {
            Ok(created) => {
                self.ctx.metrics.operation("vmi", "create");
                outcome.start_expected = true;
                tracing::info!(vmi = %created.name_any(), "created the VMI");
                self.ctx
                    .event(
                        &self.reference,
                        EventType::Normal,
                        REASON_SUCCESSFUL_CREATE,
                        "Create",
                        format!(
                            "Started the virtual machine by creating the new virtual machine instance {}",
                            self.name
                        ),
                    )
                    .await;
            }
            // The cache lagged: the VMI exists; look again shortly.
            Err(e) if is_status(&e, 409) && conflict.is_none() => {
                outcome.start_expected = true;
                outcome.requeue = RACE_RETRY;
            }
            // The namespace is going away, and this VM with it: nothing to make, and
            // no error to retry (the deletion comes as the next change).
            Err(e) if is_namespace_terminating(&e) => {
                tracing::debug!("namespace terminating: no VMI made");
            }
            Err(e) => {
                let message = format!("Error creating virtual machine instance: {e}");
                let message = conflict.map_or(message, str::to_owned);
                self.ctx
                    .event(
                        &self.reference,
                        EventType::Warning,
                        REASON_FAILED_CREATE,
                        "Create",
                        message.clone(),
                    )
                    .await;
                outcome.failure = Some(SyncFailure {
                    reason: REASON_FAILED_CREATE.to_owned(),
                    message,
                });
                outcome.error = Some(e.into());
            }
        }
        Ok(())
    }

    /// Deletes the VMI, saying why. One already gone is done; any other failure is an event,
    /// the VM's `Failure` condition and the pass's error.
    async fn delete_vmi(
        &self,
        reason: DeleteReason,
        observed: Option<&ObservedVmi>,
        outcome: &mut Outcome,
    ) {
        let vmi_uid = observed.map(|o| o.uid.clone()).unwrap_or_default();
        match self.vmis.delete(self.name, &DeleteParams::default()).await {
            Ok(_) => {
                self.ctx.metrics.operation("vmi", "delete");
                outcome.stop_expected = true;
                tracing::info!(?reason, "deleting the VMI");
                self.ctx
                    .event(
                        &self.reference,
                        EventType::Normal,
                        REASON_SUCCESSFUL_DELETE,
                        "Delete",
                        delete_note(reason, &vmi_uid),
                    )
                    .await;
            }
            Err(e) if is_status(&e, 404) => {}
            Err(e) => {
                let message = format!("Error deleting virtual machine instance {}: {e}", self.name);
                self.ctx
                    .event(
                        &self.reference,
                        EventType::Warning,
                        REASON_FAILED_DELETE,
                        "Delete",
                        message.clone(),
                    )
                    .await;
                outcome.failure = Some(SyncFailure {
                    reason: REASON_FAILED_DELETE.to_owned(),
                    message,
                });
                outcome.error = Some(e.into());
            }
        }
    }

    /// A VMI is due but the crash-loop backoff runs: the pass looks again when it ends.
    fn wait_backoff(&self, until: Timestamp) -> Duration {
        let requeue = backoff_wait(until, self.now.0);
        tracing::info!(?requeue, "crash-loop backoff before the next VMI");
        requeue
    }

    /// A start request on a Halted VM rewrites its run strategy, so that it runs. A failure
    /// is an event and the pass's error.
    async fn patch_spec(&self, patch: &RunStrategyPatch, outcome: &mut Outcome) -> Result<()> {
        let json: json_patch::Patch = serde_json::from_value(patch.json_patch())?;
        match self
            .vms
            .patch(self.name, &PatchParams::default(), &Patch::Json::<()>(json))
            .await
        {
            Ok(patched) => {
                self.wrote(outcome.resource_version.as_deref(), &patched);
                outcome.resource_version = patched.metadata.resource_version;
                self.ctx.metrics.operation("vm", "patch_spec");
                tracing::info!(?patch, "a start request rewrote the run strategy");
            }
            Err(e) => {
                self.ctx
                    .event(
                        &self.reference,
                        EventType::Warning,
                        REASON_FAILED_UPDATE,
                        "Update",
                        format!("Error starting the virtual machine: {e}"),
                    )
                    .await;
                outcome.error = Some(e.into());
            }
        }
        Ok(())
    }

    /// The VM is being deleted and has no VMI left to wait for (or leaves it, orphaned): its
    /// finalizer goes, and with it the VM; there is no status left to write.
    async fn let_vm_go(&self) -> Result<Action> {
        if remove_finalizer(&self.vms, self.vm, VM_FINALIZER).await? {
            self.ctx.metrics.operation("vm", "remove_finalizer");
        }
        Ok(Action::await_change())
    }

    /// The status this pass leaves: the decision's bookkeeping (requests, startFailure,
    /// runStrategy), and what the VM looks like after the action (printableStatus, ready,
    /// created, conditions).
    async fn status(
        &self,
        old: &VirtualMachineStatus,
        strategy: RunStrategy,
        observed: Option<&ObservedVmi>,
        recorded: Recorded,
        decision: &VmDecision,
        outcome: &Outcome,
    ) -> Result<VirtualMachineStatus> {
        let start_failure = match &decision.start_failure {
            StartFailureUpdate::Unchanged => recorded.start_failure,
            StartFailureUpdate::Clear => None,
            StartFailureUpdate::Set(s) => Some(s.clone()),
        };
        let requests = decision.requests.clone().unwrap_or(recorded.requests);
        let set_to_start =
            is_set_to_start(strategy, observed, &requests, decision.status_run_strategy);
        let unbound_pvc = self.unbound_pvc(set_to_start, observed).await?;
        let printable = printable_status(&PrintableInput {
            vm_deleting: self.deleting,
            strategy,
            vmi: observed,
            start_failure: start_failure.as_ref(),
            start_expected: outcome.start_expected,
            stop_expected: outcome.stop_expected,
            set_to_start,
            unbound_pvc,
        });
        let existing_conditions = old.conditions.clone().unwrap_or_default();
        Ok(VirtualMachineStatus {
            created: Some(created(observed)),
            ready: Some(ready(observed)),
            printable_status: Some(printable.as_str().to_owned()),
            conditions: Some(vm_conditions(
                &existing_conditions,
                observed,
                outcome.failure.as_ref(),
                &self.now,
            )),
            state_change_requests: Some(requests),
            start_failure: start_failure.as_ref().map(StartFailure::from),
            run_strategy: decision.status_run_strategy.map(|s| s.as_str().to_owned()),
            ..old.clone()
        })
    }

    /// Whether a VM about to start waits for a PVC of its template to be bound
    /// (printableStatus WaitingForVolumeBinding). The PVCs are read only then.
    async fn unbound_pvc(
        &self,
        set_to_start: bool,
        observed: Option<&ObservedVmi>,
    ) -> Result<bool> {
        let waiting = observed.is_none_or(|v| v.phase.is_unprocessed());
        let claims = template_claims(self.vm);
        if set_to_start && waiting && !claims.is_empty() {
            any_unbound_pvc(self.ctx, self.ns, &claims).await
        } else {
            Ok(false)
        }
    }

    /// Writes the fields of the status this controller owns, if they changed, by server-side
    /// apply conditional on `resource_version`: a request written meanwhile fails the write,
    /// which is retried, and is never lost. A VM gone meanwhile while being deleted is no
    /// failure; any other is returned, for the pass to end with after the steps left.
    async fn write_status(
        &self,
        old: &VirtualMachineStatus,
        status: &VirtualMachineStatus,
        resource_version: Option<&str>,
    ) -> Option<Error> {
        let body = owned_status(status);
        if body == owned_status(old) {
            return None;
        }
        match apply_status(&self.vms, self.name, resource_version, body).await {
            Ok(after) => {
                self.ctx.written.wrote(
                    &written_key(self.ns, self.name),
                    resource_version,
                    after.as_deref(),
                );
                self.ctx.metrics.operation("vm", "status");
                None
            }
            // The VM went away meanwhile.
            Err(Error::Kube(e)) if self.deleting && is_status(&e, 404) => None,
            Err(e) => Some(e),
        }
    }

    /// KubeVirt keeps its finalizer on a VMI until the VM has seen it final. This pass has
    /// seen it; a status write that failed (and is retried) must not hold the VMI's deletion.
    async fn release_final_vmi(
        &self,
        vmi: Option<&VirtualMachineInstance>,
        observed: Option<&ObservedVmi>,
    ) -> Result<()> {
        if let (Some(v), Some(o)) = (vmi, observed) {
            if o.phase.is_final() && remove_finalizer(&self.vmis, v, VM_FINALIZER).await? {
                self.ctx.metrics.operation("vmi", "remove_finalizer");
            }
        }
        Ok(())
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
    fn an_unreadable_strategy_is_halted_with_its_error() {
        let mut v = vm(&[]);
        assert_eq!(
            strategy_of(&v.spec),
            (
                EffectiveRunStrategy {
                    strategy: RunStrategy::Always,
                    field: StrategyField::RunStrategy,
                },
                None
            )
        );
        v.spec.running = Some(true);
        let (strategy, error) = strategy_of(&v.spec);
        assert_eq!(
            strategy,
            EffectiveRunStrategy {
                strategy: RunStrategy::Halted,
                field: StrategyField::Neither,
            }
        );
        assert!(error.is_some());
        let failure = Outcome::new(None, error.as_ref()).failure.unwrap();
        assert_eq!(failure.reason, REASON_FAILED_CREATE);
        assert_eq!(failure.message, error.unwrap().to_string());
    }

    #[test]
    fn the_status_records_what_the_decision_reads() {
        let status = VirtualMachineStatus {
            state_change_requests: Some(vec![crate::decide::vm::start_request()]),
            start_failure: Some(StartFailure {
                consecutive_fail_count: Some(2),
                last_failed_vmi_uid: Some("u".into()),
                retry_after_timestamp: None,
            }),
            run_strategy: Some("RerunOnFailure".into()),
            ..Default::default()
        };
        let recorded = Recorded::of(&status);
        assert_eq!(recorded.requests, [crate::decide::vm::start_request()]);
        assert_eq!(
            recorded.start_failure.map(|f| f.consecutive_failures),
            Some(2)
        );
        assert_eq!(recorded.run_strategy, Some(RunStrategy::RerunOnFailure));
        // Nothing recorded yet, and a strategy no one knows: none.
        let unreadable = VirtualMachineStatus {
            run_strategy: Some("Sometimes".into()),
            ..Default::default()
        };
        assert_eq!(
            Recorded::of(&unreadable),
            Recorded {
                requests: vec![],
                start_failure: None,
                run_strategy: None,
            }
        );
    }

    #[test]
    fn a_backoff_waits_until_it_ends_and_at_least_a_second() {
        let now = k8s_openapi::jiff::Timestamp::from_second(1_000).unwrap();
        let at = |s| k8s_openapi::jiff::Timestamp::from_second(s).unwrap();
        assert_eq!(backoff_wait(at(1_090), now), Duration::from_secs(90));
        assert_eq!(backoff_wait(at(1_000), now), Duration::from_secs(1));
        assert_eq!(backoff_wait(at(900), now), Duration::from_secs(1));
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
