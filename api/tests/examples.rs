//! KubeVirt's own example YAMLs: they parse, round-trip losslessly, and validate (or fail
//! naming exactly the field virtshim does not support).

#![allow(clippy::unwrap_used)]

mod common;

use serde::Deserialize;
use virtshim_api::manifest::Object;

/// Examples that use features virtshim does not implement, and the field each must name.
const UNSUPPORTED: &[(&str, &str)] = &[
    (
        "vmi-host-disk.yaml",
        "spec.volumes[0].hostDisk: not supported by virtshim",
    ),
    (
        "vmi-multus-ptp.yaml",
        "spec.networks[0].multus: not supported by virtshim",
    ),
];

fn yaml_values(text: &str) -> Vec<serde_json::Value> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|d| serde_json::Value::deserialize(d).expect("yaml"))
        .filter(|v| !v.is_null())
        .collect()
}

#[test]
fn every_example_round_trips_losslessly() {
    for (file, text) in common::examples() {
        for original in yaml_values(&text) {
            let object =
                Object::from_value(original.clone()).unwrap_or_else(|e| panic!("{file}: {e}"));
            let serialized = object.to_value();
            assert_eq!(serialized, original, "{file}: serialize(parse(x)) != x");
            // And once more through YAML text, as kubectl would send it.
            let yaml = serde_yaml_ng::to_string(&serialized).expect("to yaml");
            assert_eq!(
                yaml_values(&yaml),
                vec![original],
                "{file}: YAML round trip"
            );
        }
    }
}

#[test]
fn unknown_fields_survive_a_round_trip() {
    let (_, text) = common::examples()
        .into_iter()
        .find(|(f, _)| f == "vmi-fedora.yaml")
        .expect("vmi-fedora");
    let mut value = yaml_values(&text).remove(0);
    value["spec"]["domain"]["devices"]["gpus"] =
        serde_json::json!([{"name": "gpu1", "deviceName": "nvidia.com/GP102GL"}]);
    value["spec"]["someFutureField"] = serde_json::json!({"a": [1, 2, {"b": null}]});
    value["spec"]["domain"]["devices"]["interfaces"][0]["masquerade"]["futureKnob"] =
        serde_json::json!(true);
    value["spec"]["volumes"][0]["containerDisk"]["futureOption"] = serde_json::json!("x");
    let object = Object::from_value(value.clone()).expect("parses");
    assert_eq!(object.to_value(), value);
    let errors = object
        .validate()
        .expect_err("unknown fields are rejected")
        .to_string();
    for path in [
        "spec.domain.devices.gpus: not supported by virtshim",
        // Names KubeVirt does not have either are reported as what they most likely are: typos.
        "spec.someFutureField: unknown field",
        "spec.domain.devices.interfaces[0].masquerade.futureKnob: unknown field",
        "spec.volumes[0].containerDisk.futureOption: unknown field",
    ] {
        assert!(errors.contains(path), "missing {path:?} in:\n{errors}");
    }
    assert_eq!(
        errors.lines().count(),
        4,
        "exactly the four unknown fields:\n{errors}"
    );
}

#[test]
fn every_example_validates_or_names_the_unsupported_field() {
    for (file, text) in common::examples() {
        for original in yaml_values(&text) {
            let object = Object::from_value(original).expect("parses");
            let result = object.validate();
            match UNSUPPORTED.iter().find(|(f, _)| *f == file) {
                None => assert!(
                    result.is_ok(),
                    "{file} should validate:\n{}",
                    result.unwrap_err()
                ),
                Some((_, expected)) => {
                    let errors = result
                        .expect_err(&format!("{file} uses an unsupported feature"))
                        .to_string();
                    assert!(
                        errors.contains(expected),
                        "{file}: expected {expected:?} in:\n{errors}"
                    );
                    assert_eq!(
                        errors.lines().count(),
                        1,
                        "{file}: only the unsupported field:\n{errors}"
                    );
                }
            }
        }
    }
}

#[test]
fn defaulting_twice_changes_nothing() {
    for (file, text) in common::examples() {
        for original in yaml_values(&text) {
            let mut once = Object::from_value(original).expect("parses");
            once.apply_defaults();
            let mut twice = once.clone();
            twice.apply_defaults();
            assert_eq!(once, twice, "{file}: defaults are not idempotent");
            assert!(
                once.validate().is_ok() || UNSUPPORTED.iter().any(|(f, _)| *f == file),
                "{file}"
            );
        }
    }
}
