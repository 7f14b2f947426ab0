//! VMI → pod, and the VMI's status from that pod.
//!
//! One pass:
//! 1. A VMI that is not final gets KubeVirt's VMI finalizer, so it cannot disappear before its
//!    pod has.
//! 2. The pod is the one labelled `kubevirt.io/created-by=<vmi uid>`. The cache is asked first;
//!    when it has none, a live list confirms it (so a pod created a moment ago is never created
//!    twice, and a pod is never declared gone because the cache lags).
//! 3. A VMI being deleted has its pod deleted with the VMI's `terminationGracePeriodSeconds`.
//! 4. A VMI with no pod yet is defaulted and validated; its PVCs are looked up for their
//!    `volumeMode`; then the pod contract builds the pod and it is created. A validation failure
//!    makes the VMI Failed with the field-path message (condition and event) and no pod at all;
//!    a missing PVC waits, as KubeVirt does, with reason `FailedPvcNotFound`.
//! 5. The status follows the pod ([`crate::status::vmi_phase`]) and goes out by server-side
//!    apply when it changed; a phase change is an event (`Started`, `Stopped`) and a metric.
//! 6. A final VMI whose pod is gone loses the VMI finalizer, and the VM controller's finalizer
//!    too when no VM owns it any more.

use super::{
    apply_status, await_own_write, measured, namespace_and_name, now, remove_finalizers, uid,
    Context, RESYNC,
};
use crate::error::{is_namespace_terminating, is_status, Result};
use crate::observed::VmiPhase;
use crate::reconcile::add_finalizer;
use crate::reconcile::vm::VM_FINALIZER;
use crate::status::conditions::{self, FALSE};
use crate::status::vmi_phase::{compute_failure, vmi_status, VmiStatusInput, SYNCHRONIZED};
use k8s_openapi::api::core::v1::{ObjectReference, PersistentVolumeClaim, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;
use virtshim_api::config::VolumeSource;
use virtshim_api::pod::{pod_for_vmi, set_claim_capacities, LABEL_CREATED_BY};
use virtshim_api::types::{
    Condition, PhaseTransitionTimestamp, VirtualMachine, VirtualMachineInstance,
    VirtualMachineInstanceStatus,
};

/// KubeVirt's VMI finalizer: the VMI stays until its pod is gone.
pub const VMI_FINALIZER: &str = "kubevirt.io/foregroundDeleteVirtualMachine";

/// Condition reasons and event reasons (KubeVirt's).
pub const REASON_FAILED_CREATE: &str = "FailedCreate";
pub const REASON_SUCCESSFUL_CREATE: &str = "SuccessfulCreate";
pub const REASON_FAILED_DELETE: &str = "FailedDelete";
pub const REASON_SUCCESSFUL_DELETE: &str = "SuccessfulDelete";
pub const REASON_FAILED_PVC_NOT_FOUND: &str = "FailedPvcNotFound";
pub const REASON_STARTED: &str = "Started";
pub const REASON_STOPPED: &str = "Stopped";

/// How soon a VMI waiting for a PVC looks again (PVCs are not watched).
const PVC_RETRY: Duration = Duration::from_secs(10);

/// The controller's entry point for one VMI.
pub async fn reconcile(vmi: Arc<VirtualMachineInstance>, ctx: Arc<Context>) -> Result<Action> {
    let (ns, name) = namespace_and_name(vmi.as_ref(), "VirtualMachineInstance")?;
    let span = tracing::info_span!("vmi", namespace = %ns, vmi = %name);
    measured("vmi", vmi.as_ref(), &ctx, sync(&vmi, &ctx, &ns))
        .instrument(span)
        .await
}

/// Why no pod could be made for the VMI.
#[derive(Debug)]
enum Blocked {
    /// The VMI is invalid: the validator's message, with field paths.
    Invalid(String),
    /// A PVC the VMI names does not exist.
    MissingPvc(String),
}

/// The pod for a VMI without one, or why there can be none.
async fn build_pod(
    ctx: &Context,
    ns: &str,
    defaulted: &VirtualMachineInstance,
) -> Result<std::result::Result<Pod, Blocked>> {
    let config = match virtshim_api::validate::vmi(defaulted) {
        Ok(c) => c,
        Err(errors) => {
            let message = errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ");
            return Ok(Err(Blocked::Invalid(message)));
        }
    };
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), ns);
    let mut block_claims = BTreeSet::new();
    let mut capacities = BTreeMap::new();
    for disk in &config.disks {
        let VolumeSource::PersistentVolumeClaim { claim_name, .. } = &disk.source else {
            continue;
        };
        match pvcs.get_opt(claim_name).await? {
            None => return Ok(Err(Blocked::MissingPvc(claim_name.clone()))),
            Some(pvc) => {
                let mode = pvc.spec.as_ref().and_then(|s| s.volume_mode.as_deref());
                if mode == Some("Block") {
                    block_claims.insert(claim_name.clone());
                } else if let Some(bytes) = claim_capacity(&pvc) {
                    capacities.insert(disk.name.clone(), bytes);
                }
            }
        }
    }
    let mut pod = pod_for_vmi(defaulted, &config, &block_claims)?;
    set_claim_capacities(&mut pod, &capacities);
    Ok(Ok(pod))
}

/// A claim's size as KubeVirt takes it for a new disk.img: the smaller of what it was given
/// (`status.capacity`) and what it asked for (`spec.resources.requests`), whichever are known.
fn claim_capacity(pvc: &PersistentVolumeClaim) -> Option<u64> {
    let bytes = |q: Option<&k8s_openapi::apimachinery::pkg::api::resource::Quantity>| {
        q.and_then(|q| virtshim_api::quantity::Quantity::parse(&q.0).ok())
            .and_then(|q| q.to_units())
    };
    let given = bytes(
        pvc.status
            .as_ref()
            .and_then(|s| s.capacity.as_ref())
            .and_then(|c| c.get("storage")),
    );
    let asked = bytes(
        pvc.spec
            .as_ref()
            .and_then(|s| s.resources.as_ref())
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("storage")),
    );
    match (given, asked) {
        (Some(g), Some(a)) => Some(g.min(a)),
        (g, a) => g.or(a),
    }
}

/// The newest pod not being deleted, else the newest one.
fn pick_pod(mut pods: Vec<Pod>) -> Option<Pod> {
    pods.sort_by_key(|p| {
        (
            p.metadata.deletion_timestamp.is_none(),
            p.metadata.creation_timestamp.as_ref().map(|t| t.0),
        )
    });
    pods.pop()
}

/// The VMI's pod: from the cache, else confirmed by a live list.
async fn find_pod(ctx: &Context, pods: &Api<Pod>, ns: &str, uid: &str) -> Result<Option<Pod>> {
    let cached: Vec<Pod> = ctx
        .caches
        .pods
        .state_filter(|p| {
            p.metadata.namespace.as_deref() == Some(ns)
                && p.labels().get(LABEL_CREATED_BY).map(String::as_str) == Some(uid)
        })
        .into_iter()
        .map(|p| (*p).clone())
        .collect();
    if !cached.is_empty() {
        return Ok(pick_pod(cached));
    }
    let listed = pods
        .list(&ListParams::default().labels(&format!("{LABEL_CREATED_BY}={uid}")))
        .await?;
    Ok(pick_pod(listed.items))
}

/// The name of the interface on the pod network (it gets the pod's IP), from the defaulted spec.
pub fn pod_network_interface(defaulted: &VirtualMachineInstance) -> Option<String> {
    defaulted
        .spec
        .networks
        .iter()
        .flatten()
        .find(|n| n.pod.is_some())
        .and_then(|n| n.name.clone())
}

fn synchronized_false(
    reason: &str,
    message: String,
    now: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
) -> Condition {
    Condition {
        type_: SYNCHRONIZED.to_owned(),
        status: FALSE.to_owned(),
        last_probe_time: None,
        last_transition_time: Some(now.clone()),
        reason: Some(reason.to_owned()),
        message: Some(message),
    }
}

/// The status fields this controller owns, as the apply body carries them.
pub fn owned_status(status: &VirtualMachineInstanceStatus) -> serde_json::Value {
    let owned = VirtualMachineInstanceStatus {
        phase: status.phase.clone(),
        phase_transition_timestamps: status.phase_transition_timestamps.clone(),
        node_name: status.node_name.clone(),
        interfaces: status.interfaces.clone(),
        qos_class: status.qos_class.clone(),
        conditions: status.conditions.clone(),
        ..Default::default()
    };
    serde_json::to_value(owned).unwrap_or(serde_json::Value::Null)
}

/// Adds a transition timestamp when the phase changes.
pub fn record_transition(
    status: &mut VirtualMachineInstanceStatus,
    old: VmiPhase,
    new: VmiPhase,
    now: Timestamp,
) {
    if old == new || new == VmiPhase::Unset {
        return;
    }
    status
        .phase_transition_timestamps
        .get_or_insert_with(Vec::new)
        .push(PhaseTransitionTimestamp {
            phase: Some(new.as_str().to_owned()),
            phase_transition_timestamp: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                now,
            )),
        });
}

/// The event a phase change is worth, if any: (type, reason, note).
pub fn phase_event(
    old: VmiPhase,
    new: VmiPhase,
) -> Option<(EventType, &'static str, &'static str)> {
    if old == new {
        return None;
    }
    match new {
        VmiPhase::Running => Some((
            EventType::Normal,
            REASON_STARTED,
            "VirtualMachineInstance is running",
        )),
        VmiPhase::Succeeded => Some((
            EventType::Normal,
            REASON_STOPPED,
            "The guest shut down; the VirtualMachineInstance succeeded",
        )),
        VmiPhase::Failed => Some((
            EventType::Warning,
            REASON_STOPPED,
            "The VirtualMachineInstance failed",
        )),
        _ => None,
    }
}

/// Whether `vm` (the VM named as the VMI's controller, read live) still wants to see the
/// final VMI before its VM finalizer goes: only the same VM (uid), and only while it is not
/// being deleted. A VM being deleted has no use for the VMI's last state, and waiting for its
/// pass to drop the finalizer made the two wait on each other when that pass kept failing
/// (a namespace being deleted): VMIs stayed Terminating until the leader restarted.
pub fn vm_awaits_final_vmi(owner_uid: &str, vm: Option<&VirtualMachine>) -> bool {
    vm.is_some_and(|vm| {
        vm.metadata.uid.as_deref() == Some(owner_uid) && vm.metadata.deletion_timestamp.is_none()
    })
}

/// Whether the VMI's controlling VM still holds its VM finalizer on it.
async fn owner_vm_awaits(ctx: &Context, ns: &str, vmi: &VirtualMachineInstance) -> Result<bool> {
    let Some(owner) = vmi
        .owner_references()
        .iter()
        .find(|o| o.kind == "VirtualMachine" && o.controller == Some(true))
    else {
        return Ok(false);
    };
    let vms: Api<VirtualMachine> = Api::namespaced(ctx.client.clone(), ns);
    let vm = vms.get_opt(&owner.name).await?;
    Ok(vm_awaits_final_vmi(&owner.uid, vm.as_ref()))
}

/// The VMI's key in [`Context::written`].
fn written_key(ns: &str, name: &str) -> String {
    format!("vmi/{ns}/{name}")
}

/// One pass: observe the VMI and its pod, make or delete the pod, write the status the pod
/// gives, and let a final VMI go.
async fn sync(vmi: &VirtualMachineInstance, ctx: &Context, ns: &str) -> Result<Action> {
    let key = written_key(ns, &vmi.name_any());
    if let Some(wait) = await_own_write(ctx, &key, vmi.metadata.resource_version.as_deref()) {
        return Ok(wait);
    }
    let pass = VmiPass::new(vmi, ctx, ns)?;
    let old_status = vmi.status.clone().unwrap_or_default();
    let phase = VmiPhase::parse(old_status.phase.as_deref())?;
    pass.ensure_finalizer(phase).await?;

    let mut defaulted = vmi.clone();
    virtshim_api::defaults::vmi(&mut defaulted);
    let pod = find_pod(ctx, &pass.pods, ns, &pass.uid).await?;
    let now = now();
    let mut outcome = Outcome::new(pod, &old_status);
    if pass.deleting {
        pass.delete_pod(&mut outcome).await?;
    } else if outcome.pod.is_none() && phase.is_unprocessed() {
        pass.make_pod(&defaulted, &old_status, &now, &mut outcome)
            .await?;
    }

    let (status, new_phase) = status_after(
        &old_status,
        phase,
        pass.deleting,
        &defaulted,
        &outcome,
        &now,
    )?;
    if pass.write_status(&old_status, &status).await? {
        pass.announce_phase(phase, new_phase, outcome.pod.as_ref(), &now)
            .await;
    }
    if new_phase.is_final() && outcome.pod.is_none() {
        pass.release_finalizers().await?;
    }
    Ok(Action::requeue(outcome.requeue))
}

/// What making or deleting the pod leaves for the rest of the pass.
#[derive(Debug)]
struct Outcome {
    /// The VMI's pod; `None` only once it is known to be gone (or not made yet).
    pod: Option<Pod>,
    /// The VMI's conditions, with what this pass found about making its pod.
    conditions: Vec<Condition>,
    /// Failed, when the VMI is invalid and no pod will ever be made.
    blocked_phase: Option<VmiPhase>,
    requeue: Duration,
}

impl Outcome {
    fn new(pod: Option<Pod>, old_status: &VirtualMachineInstanceStatus) -> Self {
        Self {
            pod,
            conditions: old_status.conditions.clone().unwrap_or_default(),
            blocked_phase: None,
            requeue: RESYNC,
        }
    }
}

/// The grace period a deleted VMI's pod gets: the VMI's `terminationGracePeriodSeconds`
/// (negative is none at all).
fn grace_period(vmi: &VirtualMachineInstance) -> Option<u32> {
    vmi.spec
        .termination_grace_period_seconds
        .and_then(|g| u32::try_from(g.max(0)).ok())
}

/// The VMI's status after this pass, and its phase: the status the pod gives
/// ([`crate::status::vmi_phase`]); an invalid VMI Failed with its validation failure kept
/// beside what that computation added; a phase change stamped.
fn status_after(
    old: &VirtualMachineInstanceStatus,
    phase: VmiPhase,
    deleting: bool,
    defaulted: &VirtualMachineInstance,
    outcome: &Outcome,
    now: &Time,
) -> Result<(VirtualMachineInstanceStatus, VmiPhase)> {
    let iface = pod_network_interface(defaulted);
    let update = vmi_status(&VmiStatusInput {
        phase,
        deleting,
        conditions: &outcome.conditions,
        pod: outcome.pod.as_ref(),
        pod_network_interface: iface.as_deref(),
        now,
    });
    let mut status = old.clone();
    update.apply(&mut status);
    if let Some(p) = outcome.blocked_phase {
        status.phase = Some(p.as_str().to_owned());
        // Keep the validation failure next to whatever the status computation added.
        let mut list = status.conditions.take().unwrap_or_default();
        if let Some(c) = conditions::find(&outcome.conditions, SYNCHRONIZED).cloned() {
            conditions::upsert(&mut list, c);
        }
        status.conditions = Some(list);
    }
    let new_phase = VmiPhase::parse(status.phase.as_deref())?;
    record_transition(&mut status, phase, new_phase, now.0);
    Ok((status, new_phase))
}

/// One pass over one VMI: what its steps share.
struct VmiPass<'a> {
    vmi: &'a VirtualMachineInstance,
    ctx: &'a Context,
    ns: &'a str,
    name: String,
    uid: String,
    api: Api<VirtualMachineInstance>,
    pods: Api<Pod>,
    /// The VMI, as its events name it.
    reference: ObjectReference,
    /// The VMI has a deletionTimestamp.
    deleting: bool,
    /// The VMI's resourceVersion as this pass last saw or wrote it.
    version: std::sync::Mutex<Option<String>>,
}

impl<'a> VmiPass<'a> {
    fn new(vmi: &'a VirtualMachineInstance, ctx: &'a Context, ns: &'a str) -> Result<Self> {
        Ok(Self {
            vmi,
            ctx,
            ns,
            uid: uid(vmi, "VirtualMachineInstance")?,
            name: vmi.name_any(),
            api: Api::namespaced(ctx.client.clone(), ns),
            pods: Api::namespaced(ctx.client.clone(), ns),
            reference: vmi.object_ref(&()),
            deleting: vmi.metadata.deletion_timestamp.is_some(),
            version: std::sync::Mutex::new(vmi.metadata.resource_version.clone()),
        })
    }

    /// Notes a write of the VMI that left it at version `after`.
    fn wrote(&self, after: Option<String>) {
        let mut version = self
            .version
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.ctx.written.wrote(
            &written_key(self.ns, &self.name),
            version.as_deref(),
            after.as_deref(),
        );
        if after.is_some() {
            *version = after;
        }
    }

    /// Puts KubeVirt's VMI finalizer on a VMI that is not final nor being deleted, so that it
    /// cannot disappear before its pod has.
    async fn ensure_finalizer(&self, phase: VmiPhase) -> Result<()> {
        if self.deleting || phase.is_final() {
            return Ok(());
        }
        if let Some(patched) = add_finalizer(&self.api, self.vmi, VMI_FINALIZER).await? {
            self.wrote(patched.metadata.resource_version);
            self.ctx.metrics.operation("vmi", "add_finalizer");
        }
        Ok(())
    }

    /// Deletes the pod of a VMI being deleted (unless it is going already), with the VMI's
    /// grace period. A pod already gone is gone; another failure is an event and fails the
    /// pass.
    async fn delete_pod(&self, outcome: &mut Outcome) -> Result<()> {
        let Some(p) = outcome
            .pod
            .as_ref()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
        else {
            return Ok(());
        };
        let pod_name = p.name_any();
        let grace = grace_period(self.vmi);
        let params = DeleteParams {
            grace_period_seconds: grace,
            ..DeleteParams::default()
        };
        match self.pods.delete(&pod_name, &params).await {
            Ok(_) => {
                self.ctx.metrics.operation("pod", "delete");
                tracing::info!(pod = %pod_name, ?grace, "deleting the pod of a deleted VMI");
                self.ctx
                    .event(
                        &self.reference,
                        EventType::Normal,
                        REASON_SUCCESSFUL_DELETE,
                        "Delete",
                        format!("Deleted virtual machine pod {pod_name}"),
                    )
                    .await;
            }
            Err(e) if is_status(&e, 404) => outcome.pod = None,
            Err(e) => {
                self.ctx
                    .event(
                        &self.reference,
                        EventType::Warning,
                        REASON_FAILED_DELETE,
                        "Delete",
                        format!("Error deleting pod {pod_name}: {e}"),
                    )
                    .await;
                return Err(e.into());
            }
        }
        Ok(())
    }

    /// Makes the pod of a VMI that has none yet, or says why there can be none: an invalid
    /// VMI fails for good, a missing PVC is waited for.
    async fn make_pod(
        &self,
        defaulted: &VirtualMachineInstance,
        old_status: &VirtualMachineInstanceStatus,
        now: &Time,
        outcome: &mut Outcome,
    ) -> Result<()> {
        match build_pod(self.ctx, self.ns, defaulted).await? {
            Ok(new_pod) => self.create_pod(&new_pod, old_status, now, outcome).await?,
            Err(Blocked::Invalid(message)) => {
                tracing::warn!(%message, "invalid VMI: no pod made");
                let message = format!("Invalid VirtualMachineInstance: {message}");
                self.report_blocked(REASON_FAILED_CREATE, "Validate", message, now, outcome)
                    .await;
                outcome.blocked_phase = Some(VmiPhase::Failed);
            }
            Err(Blocked::MissingPvc(claim)) => {
                let message = format!(
                    "PVC {}/{claim} does not exist, waiting for it to appear",
                    self.ns
                );
                self.report_blocked(REASON_FAILED_PVC_NOT_FOUND, "Create", message, now, outcome)
                    .await;
                outcome.requeue = PVC_RETRY;
            }
        }
        Ok(())
    }

    /// Creates the pod. Done, it clears the conditions of earlier failed attempts. A namespace
    /// going away is no failure. Another failure is an event, and the VMI Pending with a
    /// `Synchronized=False` condition saying why (written at once: the pass fails here).
    async fn create_pod(
        &self,
        new_pod: &Pod,
        old_status: &VirtualMachineInstanceStatus,
        now: &Time,
        outcome: &mut Outcome,
    ) -> Result<()> {
        match self.pods.create(&PostParams::default(), new_pod).await {
            Ok(created) => {
                self.ctx.metrics.operation("pod", "create");
                let pod_name = created.name_any();
                tracing::info!(pod = %pod_name, "created the VMI's pod");
                self.ctx
                    .event(
                        &self.reference,
                        EventType::Normal,
                        REASON_SUCCESSFUL_CREATE,
                        "Create",
                        format!("Created virtual machine pod {pod_name}"),
                    )
                    .await;
                outcome.conditions.retain(|c| {
                    !(c.type_ == SYNCHRONIZED
                        && matches!(
                            c.reason.as_deref(),
                            Some(REASON_FAILED_CREATE | REASON_FAILED_PVC_NOT_FOUND)
                        ))
                });
                outcome.pod = Some(created);
            }
            // The namespace is going away, and this VMI with it: nothing to make.
            Err(e) if is_namespace_terminating(&e) => {
                tracing::debug!("namespace terminating: no pod made");
            }
            Err(e) => {
                let message = format!("Error creating pod: {e}");
                self.ctx
                    .event(
                        &self.reference,
                        EventType::Warning,
                        REASON_FAILED_CREATE,
                        "Create",
                        message.clone(),
                    )
                    .await;
                conditions::upsert(
                    &mut outcome.conditions,
                    synchronized_false(REASON_FAILED_CREATE, message, now),
                );
                let mut status = old_status.clone();
                status.conditions = Some(std::mem::take(&mut outcome.conditions));
                status.phase = Some(VmiPhase::Pending.as_str().to_owned());
                match apply_status(&self.api, &self.name, None, owned_status(&status)).await {
                    Ok(after) => self.wrote(after),
                    Err(status_error) => {
                        tracing::warn!(error = %status_error, "cannot write the VMI status");
                    }
                }
                return Err(e.into());
            }
        }
        Ok(())
    }

    /// Says why no pod can be made: a Warning event, only when the `Synchronized=False`
    /// condition does not say so already (each retry would repeat it), and that condition.
    async fn report_blocked(
        &self,
        reason: &str,
        action: &str,
        message: String,
        now: &Time,
        outcome: &mut Outcome,
    ) {
        if !conditions::has_status_and_reason(&outcome.conditions, SYNCHRONIZED, FALSE, reason) {
            self.ctx
                .event(
                    &self.reference,
                    EventType::Warning,
                    reason,
                    action,
                    message.clone(),
                )
                .await;
        }
        conditions::upsert(
            &mut outcome.conditions,
            synchronized_false(reason, message, now),
        );
    }

    /// Writes the fields of the status this controller owns, if they changed. Returns whether
    /// it wrote.
    async fn write_status(
        &self,
        old: &VirtualMachineInstanceStatus,
        status: &VirtualMachineInstanceStatus,
    ) -> Result<bool> {
        let body = owned_status(status);
        if body == owned_status(old) {
            return Ok(false);
        }
        let after = apply_status(&self.api, &self.name, None, body).await?;
        self.wrote(after);
        self.ctx.metrics.operation("vmi", "status");
        Ok(true)
    }

    /// A phase change written: logged, measured from the VMI's creation, and an event when it
    /// is one worth telling (a failed launcher says why).
    async fn announce_phase(
        &self,
        phase: VmiPhase,
        new_phase: VmiPhase,
        pod: Option<&Pod>,
        now: &Time,
    ) {
        if new_phase != phase {
            tracing::info!(from = phase.as_str(), to = new_phase.as_str(), "VMI phase");
            if let Some(created) = self.vmi.metadata.creation_timestamp.as_ref() {
                let secs = now.0.duration_since(created.0).as_secs_f64();
                self.ctx.metrics.phase_reached(new_phase.as_str(), secs);
            }
        }
        if let Some((type_, reason, note)) = phase_event(phase, new_phase) {
            // A failed launcher says why (the compute container's termination message).
            let failure = pod.and_then(compute_failure);
            let note = match failure {
                Some(failure) if new_phase == VmiPhase::Failed => format!("{note}: {failure}"),
                _ => note.to_owned(),
            };
            self.ctx
                .event(&self.reference, type_, reason, "Sync", note)
                .await;
        }
    }

    /// A final VMI whose pod is gone loses the VMI finalizer, and the VM controller's too
    /// unless a VM still waits to see it final ([`vm_awaits_final_vmi`]): in one patch.
    async fn release_finalizers(&self) -> Result<()> {
        let mut gone = vec![VMI_FINALIZER];
        if self.vmi.finalizers().iter().any(|f| f == VM_FINALIZER)
            && !owner_vm_awaits(self.ctx, self.ns, self.vmi).await?
        {
            gone.push(VM_FINALIZER);
        }
        if remove_finalizers(&self.api, self.vmi, &gone).await? {
            self.ctx.metrics.operation("vmi", "remove_finalizer");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
    use virtshim_api::types::{Network, PodNetwork};

    #[test]
    fn a_claims_capacity_is_the_smaller_of_given_and_asked() {
        let pvc = |status: Option<&str>, request: Option<&str>| -> PersistentVolumeClaim {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "c"},
                "spec": {"resources": {"requests": request.map(|r| serde_json::json!({"storage": r}))}},
                "status": {"capacity": status.map(|c| serde_json::json!({"storage": c}))},
            }))
            .expect("pvc")
        };
        assert_eq!(
            claim_capacity(&pvc(Some("10Gi"), Some("8Gi"))),
            Some(8 << 30)
        );
        assert_eq!(
            claim_capacity(&pvc(Some("1Gi"), Some("8Gi"))),
            Some(1 << 30)
        );
        assert_eq!(claim_capacity(&pvc(None, Some("2Gi"))), Some(2 << 30));
        assert_eq!(claim_capacity(&pvc(None, None)), None);
    }

    fn pod(name: &str, created: i64, deleting: bool) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                creation_timestamp: Some(Time(Timestamp::from_second(created).unwrap())),
                deletion_timestamp: deleting
                    .then(|| Time(Timestamp::from_second(created).unwrap())),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn only_a_live_owner_vm_holds_the_vm_finalizer() {
        let vm = |uid: &str, deleting: bool| {
            let mut vm = VirtualMachine::new("vm", Default::default());
            vm.metadata.uid = Some(uid.into());
            vm.metadata.deletion_timestamp =
                deleting.then(|| Time(Timestamp::from_second(1).unwrap()));
            vm
        };
        let table = [
            (None, false),
            (Some(vm("u1", false)), true),
            (Some(vm("u2", false)), false),
            // Being deleted (a namespace going away): the finalizer must not wait on its pass.
            (Some(vm("u1", true)), false),
        ];
        for (vm, want) in table {
            assert_eq!(vm_awaits_final_vmi("u1", vm.as_ref()), want, "{vm:?}");
        }
    }

    #[test]
    fn picks_the_newest_live_pod() {
        let table = [
            (vec![], None),
            (vec![pod("a", 1, false)], Some("a")),
            (vec![pod("a", 1, false), pod("b", 2, false)], Some("b")),
            (vec![pod("a", 1, false), pod("b", 2, true)], Some("a")),
            (vec![pod("a", 1, true), pod("b", 2, true)], Some("b")),
        ];
        for (pods, expected) in table {
            assert_eq!(
                pick_pod(pods).and_then(|p| p.metadata.name).as_deref(),
                expected
            );
        }
    }

    #[test]
    fn pod_network_interface_follows_the_pod_network() {
        let mut vmi = VirtualMachineInstance::new("v", Default::default());
        virtshim_api::defaults::vmi(&mut vmi);
        assert_eq!(pod_network_interface(&vmi).as_deref(), Some("default"));
        vmi.spec.networks = Some(vec![Network {
            name: Some("net0".into()),
            pod: Some(PodNetwork::default()),
            ..Default::default()
        }]);
        assert_eq!(pod_network_interface(&vmi).as_deref(), Some("net0"));
        vmi.spec.networks = Some(vec![]);
        assert_eq!(pod_network_interface(&vmi), None);
    }

    #[test]
    fn transitions_are_recorded_once_per_change() {
        let t = Timestamp::from_second(5).unwrap();
        let mut s = VirtualMachineInstanceStatus::default();
        record_transition(&mut s, VmiPhase::Unset, VmiPhase::Pending, t);
        record_transition(&mut s, VmiPhase::Pending, VmiPhase::Pending, t);
        record_transition(&mut s, VmiPhase::Pending, VmiPhase::Running, t);
        let phases: Vec<_> = s
            .phase_transition_timestamps
            .unwrap()
            .into_iter()
            .map(|p| p.phase.unwrap())
            .collect();
        assert_eq!(phases, ["Pending", "Running"]);
    }

    #[test]
    fn phase_events() {
        use VmiPhase::*;
        let table = [
            (
                Scheduled,
                Running,
                Some((EventType::Normal, REASON_STARTED)),
            ),
            (Running, Running, None),
            (
                Running,
                Succeeded,
                Some((EventType::Normal, REASON_STOPPED)),
            ),
            (Running, Failed, Some((EventType::Warning, REASON_STOPPED))),
            (Pending, Scheduling, None),
        ];
        for (old, new, expected) in table {
            assert_eq!(
                phase_event(old, new).map(|(t, r, _)| (t, r)),
                expected,
                "{old:?} → {new:?}"
            );
        }
    }

    #[test]
    fn a_deleted_vmis_pod_gets_its_grace_period() {
        let mut vmi = VirtualMachineInstance::new("v", Default::default());
        assert_eq!(grace_period(&vmi), None);
        vmi.spec.termination_grace_period_seconds = Some(30);
        assert_eq!(grace_period(&vmi), Some(30));
        vmi.spec.termination_grace_period_seconds = Some(-5);
        assert_eq!(grace_period(&vmi), Some(0));
    }

    #[test]
    fn an_invalid_vmi_fails_with_its_validation_failure() {
        let mut vmi = VirtualMachineInstance::new("v", Default::default());
        virtshim_api::defaults::vmi(&mut vmi);
        let now = Time(Timestamp::from_second(5).unwrap());
        let invalid = synchronized_false(
            REASON_FAILED_CREATE,
            "Invalid VirtualMachineInstance: spec.domain: bad".into(),
            &now,
        );
        let mut outcome = Outcome {
            pod: None,
            conditions: vec![invalid.clone()],
            blocked_phase: Some(VmiPhase::Failed),
            requeue: RESYNC,
        };
        let old = VirtualMachineInstanceStatus::default();
        let (status, phase) =
            status_after(&old, VmiPhase::Unset, false, &vmi, &outcome, &now).unwrap();
        assert_eq!(phase, VmiPhase::Failed);
        assert_eq!(status.phase.as_deref(), Some("Failed"));
        let list = status.conditions.clone().unwrap_or_default();
        assert_eq!(conditions::find(&list, SYNCHRONIZED), Some(&invalid));
        let stamped: Vec<_> = status
            .phase_transition_timestamps
            .unwrap_or_default()
            .into_iter()
            .filter_map(|t| t.phase)
            .collect();
        assert_eq!(stamped, ["Failed"]);

        // Not blocked: the status is the pod's (none yet: Pending).
        outcome.blocked_phase = None;
        let (status, phase) =
            status_after(&old, VmiPhase::Unset, false, &vmi, &outcome, &now).unwrap();
        assert_eq!(phase, VmiPhase::Pending);
        assert_eq!(status.phase.as_deref(), Some("Pending"));
    }

    #[test]
    fn owned_status_leaves_other_fields_out() {
        let s = VirtualMachineInstanceStatus {
            phase: Some("Running".into()),
            node_name: Some("n1".into()),
            reason: Some("not ours".into()),
            ..Default::default()
        };
        assert_eq!(
            owned_status(&s),
            serde_json::json!({"phase": "Running", "nodeName": "n1"})
        );
    }
}
