//! Checks for the objects that own VMIs: VirtualMachine and VirtualMachineInstanceReplicaSet.

use super::{spec, Checker, FieldPath};
use crate::types::{
    VirtualMachine, VirtualMachineInstanceReplicaSet, VirtualMachineInstanceTemplateSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use std::collections::BTreeMap;

/// Run strategies virtshim implements, in KubeVirt's order.
pub const RUN_STRATEGIES: &[&str] = &["Always", "RerunOnFailure", "Manual", "Halted", "Once"];

pub(crate) fn check_vm(c: &mut Checker, vm: &VirtualMachine) {
    let mut vm = vm.clone();
    crate::defaults::vm(&mut vm);
    let p = FieldPath::root("spec");
    c.unknown(&p, &vm.spec);
    if vm.spec.running.is_some() && vm.spec.run_strategy.is_some() {
        c.forbidden(
            &p.child("running"),
            "running and runStrategy are mutually exclusive; runStrategy replaces running",
        );
    }
    match vm.spec.run_strategy.as_deref() {
        None => {}
        Some(s) if RUN_STRATEGIES.contains(&s) => {}
        Some("WaitAsReceiver") => c.not_supported(
            &p.child("runStrategy"),
            "\"WaitAsReceiver\" is for live migration, which virtshim does not have",
        ),
        Some(other) => c.unsupported_value(&p.child("runStrategy"), other, RUN_STRATEGIES),
    }
    check_template(c, vm.spec.template.as_ref(), &p.child("template"));
}

pub(crate) fn check_replica_set(c: &mut Checker, rs: &VirtualMachineInstanceReplicaSet) {
    let p = FieldPath::root("spec");
    c.unknown(&p, &rs.spec);
    if let Some(replicas) = rs.spec.replicas {
        if replicas < 0 {
            c.invalid(
                &p.child("replicas"),
                replicas,
                "must be greater than or equal to 0",
            );
        }
    }
    let labels = rs
        .spec
        .template
        .as_ref()
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    match &rs.spec.selector {
        None => c.required(
            &p.child("selector"),
            "a label selector for the VMIs of this replica set",
        ),
        Some(selector) if selector_is_empty(selector) => c.invalid(
            &p.child("selector"),
            "{}",
            "an empty selector would select every VMI in the namespace",
        ),
        Some(selector) => match selector_matches(selector, &labels) {
            Ok(true) => {}
            Ok(false) => c.invalid(
                &p.child("template").child("metadata").child("labels"),
                format_labels(&labels),
                "selector does not match template labels",
            ),
            Err(problem) => c.invalid(&p.child("selector"), "matchExpressions", problem),
        },
    }
    check_template(c, rs.spec.template.as_ref(), &p.child("template"));
}

fn check_template(
    c: &mut Checker,
    template: Option<&VirtualMachineInstanceTemplateSpec>,
    p: &FieldPath,
) {
    let Some(template) = template else {
        c.required(p, "the template of the VMI to create");
        return;
    };
    c.unknown(p, template);
    match &template.spec {
        None => c.required(&p.child("spec"), "the VMI spec"),
        Some(vmi_spec) => {
            let mut vmi_spec = vmi_spec.clone();
            crate::defaults::vmi_spec(&mut vmi_spec);
            spec::check(c, &vmi_spec, &p.child("spec"));
        }
    }
}

fn selector_is_empty(s: &LabelSelector) -> bool {
    s.match_labels.as_ref().is_none_or(BTreeMap::is_empty)
        && s.match_expressions.as_ref().is_none_or(Vec::is_empty)
}

/// Evaluates a label selector as Kubernetes does; an error names a malformed expression.
pub fn selector_matches(
    s: &LabelSelector,
    labels: &BTreeMap<String, String>,
) -> Result<bool, String> {
    for (k, v) in s.match_labels.iter().flatten() {
        if labels.get(k) != Some(v) {
            return Ok(false);
        }
    }
    for expr in s.match_expressions.iter().flatten() {
        let values = expr.values.clone().unwrap_or_default();
        let value = labels.get(&expr.key);
        let ok = match expr.operator.as_str() {
            "In" if !values.is_empty() => value.is_some_and(|v| values.contains(v)),
            "NotIn" if !values.is_empty() => value.is_none_or(|v| !values.contains(v)),
            "Exists" if values.is_empty() => value.is_some(),
            "DoesNotExist" if values.is_empty() => value.is_none(),
            "In" | "NotIn" => return Err(format!("operator {} needs values", expr.operator)),
            "Exists" | "DoesNotExist" => {
                return Err(format!("operator {} takes no values", expr.operator))
            }
            other => return Err(format!("unknown operator {other:?}")),
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

fn format_labels(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}
