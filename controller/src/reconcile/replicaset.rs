//! VirtualMachineInstanceReplicaSet → N VMIs, via [`crate::decide::replicaset::decide`].
//!
//! The replica set's VMIs are read with a live list (label selector), not from a cache, so a
//! pass always sees its own earlier creates and deletes and KubeVirt's "expectations" are
//! always satisfied. VMIs matching the selector that nothing controls are adopted. New VMIs
//! take the template's metadata and spec, `generateName` per KubeVirt, and an owner reference
//! with `controller: true`; creates and deletes of one pass run concurrently.

use super::{apply_status, measured, namespace_and_name, now, uid, Context, RESYNC};
use crate::decide::replicaset::{
    decide, replica_set_conditions, vmi_generate_name, ReplicaSetInput, ReplicaVmi, ScaleFailure,
};
use crate::error::{is_status, Error, Result};
use crate::observed::ObservedVmi;
use futures::future::join_all;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::core::{Selector, SelectorExt};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use std::sync::Arc;
use tracing::Instrument;
use virtshim_api::types::{
    VirtualMachineInstance, VirtualMachineInstanceReplicaSet,
    VirtualMachineInstanceReplicaSetStatus,
};

/// The controller's entry point for one replica set.
pub async fn reconcile(
    rs: Arc<VirtualMachineInstanceReplicaSet>,
    ctx: Arc<Context>,
) -> Result<Action> {
    let (ns, name) = namespace_and_name(rs.as_ref(), "VirtualMachineInstanceReplicaSet")?;
    let span = tracing::info_span!("replicaset", namespace = %ns, replicaset = %name);
    measured("replicaset", rs.as_ref(), &ctx, sync(&rs, &ctx, &ns, &name))
        .instrument(span)
        .await
}

/// A new VMI for the replica set.
pub fn new_vmi(rs: &VirtualMachineInstanceReplicaSet) -> Result<VirtualMachineInstance> {
    let (ns, name) = namespace_and_name(rs, "VirtualMachineInstanceReplicaSet")?;
    let owner = rs.controller_owner_ref(&()).ok_or(Error::MissingField {
        kind: "VirtualMachineInstanceReplicaSet",
        field: "metadata.uid",
    })?;
    let template = rs.spec.template.clone().unwrap_or_default();
    let meta = template.metadata.unwrap_or_default();
    let base =
        vmi_generate_name(meta.name.as_deref(), meta.generate_name.as_deref(), &name).to_owned();
    let mut vmi = VirtualMachineInstance::new("", template.spec.unwrap_or_default());
    vmi.metadata = ObjectMeta {
        generate_name: Some(base),
        namespace: Some(ns),
        labels: meta.labels,
        annotations: meta.annotations,
        owner_references: Some(vec![owner]),
        ..Default::default()
    };
    Ok(vmi)
}

/// The label selector as Kubernetes writes it (`status.labelSelector`, for `kubectl scale`).
pub fn selector_string(rs: &VirtualMachineInstanceReplicaSet) -> Result<Option<Selector>> {
    rs.spec
        .selector
        .clone()
        .map(Selector::try_from)
        .transpose()
        .map_err(Error::from)
}

async fn sync(
    rs: &VirtualMachineInstanceReplicaSet,
    ctx: &Context,
    ns: &str,
    name: &str,
) -> Result<Action> {
    let rs_uid = uid(rs, "VirtualMachineInstanceReplicaSet")?;
    let api: Api<VirtualMachineInstanceReplicaSet> = Api::namespaced(ctx.client.clone(), ns);
    let vmis: Api<VirtualMachineInstance> = Api::namespaced(ctx.client.clone(), ns);
    let reference = rs.object_ref(&());
    let deleting = rs.metadata.deletion_timestamp.is_some();
    // Admission refuses a replica set without a selector; one stored before gets no VMIs.
    let Some(selector) = selector_string(rs)? else {
        return Ok(Action::requeue(RESYNC));
    };

    // Ours, and orphans to adopt.
    let listed = vmis
        .list(&ListParams::default().labels(&selector.to_string()))
        .await?
        .items;
    let mut owned = Vec::new();
    for vmi in listed {
        if !selector.matches(vmi.labels()) {
            continue;
        }
        let controller = vmi
            .owner_references()
            .iter()
            .find(|o| o.controller == Some(true))
            .map(|o| o.uid.clone());
        match controller {
            Some(u) if u == rs_uid => owned.push(vmi),
            None if !deleting && vmi.metadata.deletion_timestamp.is_none() => {
                let Some(owner) = rs.controller_owner_ref(&()) else {
                    continue;
                };
                let mut refs = vmi.owner_references().to_vec();
                refs.push(owner);
                let patch = serde_json::json!({"metadata": {
                    "resourceVersion": vmi.metadata.resource_version,
                    "ownerReferences": refs,
                }});
                match vmis
                    .patch(
                        &vmi.name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(&patch),
                    )
                    .await
                {
                    Ok(adopted) => {
                        ctx.metrics.operation("vmi", "adopt");
                        owned.push(adopted);
                    }
                    Err(e) if is_status(&e, 409) || is_status(&e, 404) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            _ => {}
        }
    }

    let observed: Vec<(String, Option<_>, ObservedVmi)> = owned
        .iter()
        .map(|v| {
            Ok((
                v.name_any(),
                v.metadata.creation_timestamp.as_ref().map(|t| t.0),
                ObservedVmi::try_from(v)?,
            ))
        })
        .collect::<Result<_>>()?;
    let replica_vmis: Vec<ReplicaVmi<'_>> = observed
        .iter()
        .map(|(name, created, vmi)| ReplicaVmi {
            name,
            created: *created,
            vmi,
        })
        .collect();
    let paused = rs.spec.paused.unwrap_or(false);
    let decision = decide(&ReplicaSetInput {
        replicas: rs.spec.replicas,
        paused,
        deleting,
        expectations_satisfied: true,
        vmis: &replica_vmis,
    });

    let mut create_error: Option<String> = None;
    let mut delete_error: Option<String> = None;
    let mut first_error: Option<Error> = None;

    if decision.create > 0 {
        let template = new_vmi(rs)?;
        let post = PostParams::default();
        let results = join_all((0..decision.create).map(|_| vmis.create(&post, &template))).await;
        for result in results {
            match result {
                Ok(created) => {
                    ctx.metrics.operation("vmi", "create");
                    ctx.event(
                        &reference,
                        EventType::Normal,
                        "SuccessfulCreate",
                        "Create",
                        format!(
                            "Started the virtual machine by creating the new virtual machine instance {}",
                            created.name_any()
                        ),
                    )
                    .await;
                }
                Err(e) => {
                    let message = format!("Error creating virtual machine instance: {e}");
                    ctx.event(
                        &reference,
                        EventType::Warning,
                        "FailedCreate",
                        "Create",
                        message.clone(),
                    )
                    .await;
                    create_error.get_or_insert(message);
                    first_error.get_or_insert(e.into());
                }
            }
        }
    }

    let to_delete: Vec<&String> = decision
        .delete_surplus
        .iter()
        .chain(&decision.delete_finished)
        .collect();
    let params = DeleteParams::default();
    let results = join_all(to_delete.iter().map(|n| vmis.delete(n, &params))).await;
    for (vmi_name, result) in to_delete.iter().zip(results) {
        match result {
            Ok(_) => {
                ctx.metrics.operation("vmi", "delete");
                let vmi_uid = observed
                    .iter()
                    .find(|(n, _, _)| n == *vmi_name)
                    .map(|(_, _, o)| o.uid.clone())
                    .unwrap_or_default();
                ctx.event(
                    &reference,
                    EventType::Normal,
                    "SuccessfulDelete",
                    "Delete",
                    format!(
                        "Stopped the virtual machine by deleting the virtual machine instance {vmi_uid}"
                    ),
                )
                .await;
            }
            Err(e) if is_status(&e, 404) => {}
            Err(e) => {
                let message = format!("Error deleting virtual machine instance {vmi_name}: {e}");
                ctx.event(
                    &reference,
                    EventType::Warning,
                    "FailedDelete",
                    "Delete",
                    message.clone(),
                )
                .await;
                delete_error.get_or_insert(message);
                first_error.get_or_insert(e.into());
            }
        }
    }

    let failure = match (&create_error, &delete_error) {
        (Some(m), _) => Some(ScaleFailure::Create(m)),
        (None, Some(m)) => Some(ScaleFailure::Delete(m)),
        (None, None) => None,
    };
    let old = rs.status.clone().unwrap_or_default();
    let conditions = replica_set_conditions(
        old.conditions.as_deref().unwrap_or_default(),
        paused,
        failure,
        &now(),
    );
    let status = VirtualMachineInstanceReplicaSetStatus {
        replicas: Some(decision.replicas),
        ready_replicas: Some(decision.ready_replicas),
        conditions: (!conditions.is_empty()).then_some(conditions),
        label_selector: Some(selector.to_string()),
    };
    if status != old {
        match apply_status(&api, name, None, serde_json::to_value(&status)?).await {
            Ok(_) => ctx.metrics.operation("replicaset", "status"),
            Err(Error::Kube(e)) if deleting && is_status(&e, 404) => {}
            Err(e) => return Err(e),
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(Action::requeue(RESYNC)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
    use virtshim_api::types::{
        VirtualMachineInstanceReplicaSetSpec, VirtualMachineInstanceTemplateSpec,
    };

    fn rs() -> VirtualMachineInstanceReplicaSet {
        let mut rs = VirtualMachineInstanceReplicaSet::new(
            "rs1",
            VirtualMachineInstanceReplicaSetSpec {
                replicas: Some(2),
                selector: Some(LabelSelector {
                    match_labels: Some([("app".to_owned(), "web".to_owned())].into()),
                    match_expressions: Some(vec![LabelSelectorRequirement {
                        key: "tier".into(),
                        operator: "In".into(),
                        values: Some(vec!["a".into(), "b".into()]),
                    }]),
                }),
                template: Some(VirtualMachineInstanceTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some([("app".to_owned(), "web".to_owned())].into()),
                        ..Default::default()
                    }),
                    spec: Some(Default::default()),
                    ..Default::default()
                }),
                ..Default::default()
            },
        );
        rs.metadata.namespace = Some("ns".into());
        rs.metadata.uid = Some("rs-uid".into());
        rs
    }

    #[test]
    fn new_vmis_follow_the_template() {
        let vmi = new_vmi(&rs()).unwrap();
        assert_eq!(vmi.metadata.name, None);
        assert_eq!(vmi.metadata.generate_name.as_deref(), Some("rs1"));
        assert_eq!(vmi.metadata.namespace.as_deref(), Some("ns"));
        assert_eq!(vmi.labels().get("app").map(String::as_str), Some("web"));
        let owner = &vmi.owner_references()[0];
        assert_eq!(owner.kind, "VirtualMachineInstanceReplicaSet");
        assert_eq!(owner.uid, "rs-uid");
        assert_eq!(owner.controller, Some(true));
    }

    #[test]
    fn selector_as_a_string() {
        let s = selector_string(&rs()).unwrap().unwrap();
        assert_eq!(s.to_string(), "app=web,tier in (a,b)");
        let mut none = rs();
        none.spec.selector = None;
        assert!(selector_string(&none).unwrap().is_none());
    }
}
