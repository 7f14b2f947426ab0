//! Property tests: whatever JSON or YAML arrives (a hostile annotation, a broken file), parsing,
//! defaulting and validating return errors and never panic.

#![allow(clippy::unwrap_used)]

mod common;

use proptest::prelude::*;
use serde::Deserialize;
use virtshim_api::manifest::{parse_documents, Object};

/// Arbitrary JSON values, biased toward the shapes and names KubeVirt objects use.
fn json() -> impl Strategy<Value = serde_json::Value> {
    let key = prop_oneof![
        Just("spec".to_owned()),
        Just("domain".to_owned()),
        Just("devices".to_owned()),
        Just("disks".to_owned()),
        Just("volumes".to_owned()),
        Just("name".to_owned()),
        Just("memory".to_owned()),
        Just("guest".to_owned()),
        Just("bus".to_owned()),
        Just("containerDisk".to_owned()),
        Just("interfaces".to_owned()),
        Just("networks".to_owned()),
        Just("pod".to_owned()),
        Just("masquerade".to_owned()),
        Just("ports".to_owned()),
        Just("cpu".to_owned()),
        Just("firmware".to_owned()),
        Just("template".to_owned()),
        "[a-zA-Z]{1,8}",
    ];
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f)
            .map_or(serde_json::Value::Null, serde_json::Value::Number)),
        ".{0,12}".prop_map(serde_json::Value::from),
        prop_oneof![
            Just("64Mi"),
            Just("1e400"),
            Just("-1"),
            Just("virtio"),
            Just("../x"),
            Just("/disk/a")
        ]
        .prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(6, 96, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
            prop::collection::btree_map(key.clone(), inner, 0..6)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

fn check(value: serde_json::Value) {
    if let Ok(mut object) = Object::from_value(value) {
        let _ = object.validate();
        object.apply_defaults();
        let _ = object.validate();
        let _ = object.to_value();
    }
}

fn with_kind(kind: &str, spec: serde_json::Value) -> serde_json::Value {
    serde_json::json!({"apiVersion": "kubevirt.io/v1", "kind": kind, "metadata": {"name": "p"}, "spec": spec})
}

/// Replaces the value at the `n`-th node (in a depth-first walk) with `replacement`.
fn replace_nth(
    value: &mut serde_json::Value,
    n: &mut usize,
    replacement: &serde_json::Value,
) -> bool {
    if *n == 0 {
        *value = replacement.clone();
        return true;
    }
    *n -= 1;
    let children: Vec<&mut serde_json::Value> = match value {
        serde_json::Value::Array(a) => a.iter_mut().collect(),
        serde_json::Value::Object(o) => o.values_mut().collect(),
        _ => vec![],
    };
    for child in children {
        if replace_nth(child, n, replacement) {
            return true;
        }
    }
    false
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_specs_never_panic(spec in json(), kind in prop_oneof![
        Just("VirtualMachine"), Just("VirtualMachineInstance"), Just("VirtualMachineInstanceReplicaSet")]) {
        check(with_kind(kind, spec));
    }

    #[test]
    fn mutated_examples_never_panic(index in 0usize..64, node in 0usize..200, replacement in json()) {
        let examples = common::examples();
        let (_, text) = &examples[index % examples.len()];
        for document in serde_yaml_ng::Deserializer::from_str(text) {
            let mut value = serde_json::Value::deserialize(document).expect("example yaml");
            let mut n = node;
            replace_nth(&mut value, &mut n, &replacement);
            check(value);
        }
    }

    #[test]
    fn arbitrary_text_never_panics(text in ".{0,300}") {
        for object in parse_documents(&text).into_iter().flatten() {
            let _ = object.validate();
        }
    }

    #[test]
    fn arbitrary_quantities_never_panic(text in "[-+]?[0-9.]{0,30}([eE][-+]?[0-9]{0,5}|[KMGTPE]i?|[numk])?") {
        if let Ok(q) = virtshim_api::quantity::Quantity::parse(&text) {
            let _ = (q.to_units(), q.to_millis());
        }
    }
}
