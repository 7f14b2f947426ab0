//! Helpers shared by the API crate's tests.
#![allow(dead_code)]
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use virtshim_api::manifest::{parse_documents, Object};

/// KubeVirt's example YAMLs: `$VIRTSHIM_EXAMPLES`, else `../shared/examples/kubevirt` beside the
/// repository (where CI and the development machines have them).
pub fn examples_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("VIRTSHIM_EXAMPLES") {
        return PathBuf::from(dir);
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/examples/kubevirt");
    assert!(
        dir.is_dir(),
        "KubeVirt examples not found at {}; set VIRTSHIM_EXAMPLES to their folder",
        dir.display()
    );
    dir
}

/// Every example as (file name, text).
pub fn examples() -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = std::fs::read_dir(examples_dir())
        .expect("read examples dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect();
    out.sort();
    assert!(
        out.len() >= 10,
        "expected the KubeVirt examples, found {}",
        out.len()
    );
    out
}

/// Parses a YAML text holding exactly one object.
pub fn one(yaml: &str) -> Object {
    let mut docs = parse_documents(yaml);
    assert_eq!(docs.len(), 1, "expected one document");
    docs.remove(0).expect("document parses")
}

/// Parses one VMI from YAML.
pub fn vmi(yaml: &str) -> virtshim_api::types::VirtualMachineInstance {
    match one(yaml) {
        Object::VirtualMachineInstance(vmi) => vmi,
        other => panic!("expected a VMI, got {}", other.kind()),
    }
}
