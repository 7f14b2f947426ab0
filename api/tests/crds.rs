//! The committed CRDs are exactly what the types generate (`make crds` regenerates them).

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

#[test]
fn committed_crds_match_the_types() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../manifests/crds");
    let mut stale = Vec::new();
    for (file, crd) in virtshim_api::crd::all() {
        let generated = virtshim_api::crd::render(&crd).expect("render");
        let committed = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
        if committed != generated {
            stale.push(file);
        }
    }
    assert!(
        stale.is_empty(),
        "stale CRDs {stale:?}: run `make crds` and commit the result"
    );
}

#[test]
fn crds_are_structural_and_serve_both_versions() {
    for (file, crd) in virtshim_api::crd::all() {
        let names: Vec<_> = crd
            .spec
            .versions
            .iter()
            .map(|v| (v.name.as_str(), v.served, v.storage))
            .collect();
        assert_eq!(
            names,
            [("v1", true, true), ("v1alpha3", true, false)],
            "{file}"
        );
        let text = serde_json::to_string(&crd).expect("json");
        // additionalProperties: true is not structural; unknown fields are preserved instead.
        assert!(!text.contains(r#""additionalProperties":true"#), "{file}");
        assert!(
            text.contains(r#""x-kubernetes-preserve-unknown-fields":true"#),
            "{file}"
        );
    }
}

#[test]
fn printer_columns_match_kubevirt() {
    let columns = |kind: &str| -> Vec<String> {
        let (_, crd) = virtshim_api::crd::all()
            .into_iter()
            .find(|(_, c)| c.spec.names.kind == kind)
            .expect("crd");
        crd.spec.versions[0]
            .additional_printer_columns
            .clone()
            .unwrap_or_default()
            .iter()
            .filter(|c| c.priority.unwrap_or(0) == 0)
            .map(|c| format!("{}={}", c.name, c.json_path))
            .collect()
    };
    assert_eq!(
        columns("VirtualMachineInstance"),
        [
            "Age=.metadata.creationTimestamp",
            "Phase=.status.phase",
            "IP=.status.interfaces[0].ipAddress",
            "NodeName=.status.nodeName",
            "Ready=.status.conditions[?(@.type=='Ready')].status",
        ]
    );
    assert_eq!(
        columns("VirtualMachine"),
        [
            "Age=.metadata.creationTimestamp",
            "Status=.status.printableStatus",
            "Ready=.status.conditions[?(@.type=='Ready')].status",
        ]
    );
    assert_eq!(
        columns("VirtualMachineInstanceReplicaSet"),
        [
            "Desired=.spec.replicas",
            "Current=.status.replicas",
            "Ready=.status.readyReplicas",
            "Age=.metadata.creationTimestamp",
        ]
    );
}

/// Checks the rules of a structural schema the apiserver enforces on CRDs (no apiserver is
/// needed): every node has a type unless it is int-or-string or keeps unknown fields,
/// `properties` and `additionalProperties` never meet, and there are no `$ref`s.
fn check_structural(path: &str, node: &serde_json::Value, problems: &mut Vec<String>) {
    let Some(obj) = node.as_object() else { return };
    let flag = |k: &str| obj.get(k).and_then(|v| v.as_bool()).unwrap_or(false);
    if obj
        .get("type")
        .and_then(|t| t.as_str())
        .unwrap_or("")
        .is_empty()
        && !flag("x-kubernetes-int-or-string")
        && !flag("x-kubernetes-preserve-unknown-fields")
    {
        problems.push(format!("{path}: no type"));
    }
    if obj.contains_key("properties") && obj.contains_key("additionalProperties") {
        problems.push(format!(
            "{path}: properties and additionalProperties together"
        ));
    }
    if obj
        .get("additionalProperties")
        .is_some_and(|a| a.is_boolean())
    {
        problems.push(format!("{path}: additionalProperties must be a schema"));
    }
    if obj.contains_key("$ref") {
        problems.push(format!("{path}: $ref"));
    }
    for (name, child) in obj
        .get("properties")
        .and_then(|p| p.as_object())
        .into_iter()
        .flatten()
    {
        check_structural(&format!("{path}.{name}"), child, problems);
    }
    if let Some(items) = obj.get("items") {
        check_structural(&format!("{path}[]"), items, problems);
    }
    if let Some(additional) = obj.get("additionalProperties").filter(|a| a.is_object()) {
        check_structural(&format!("{path}{{}}"), additional, problems);
    }
}

#[test]
fn schemas_follow_the_structural_rules() {
    for (file, crd) in virtshim_api::crd::all() {
        for version in &crd.spec.versions {
            let schema =
                serde_json::to_value(&version.schema.as_ref().unwrap().open_api_v3_schema).unwrap();
            let mut problems = Vec::new();
            check_structural("", &schema, &mut problems);
            assert!(
                problems.is_empty(),
                "{file} {}: {problems:#?}",
                version.name
            );
        }
    }
}
