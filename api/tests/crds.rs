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
