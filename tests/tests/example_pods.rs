//! The pods the controller makes never ask for what the shim refuses (see `shim/src/bundle.rs`):
//! for every KubeVirt example, the VMI's pod shares none of the node's namespaces, is not
//! privileged, adds no capability and mounts no hostPath.

#![allow(clippy::unwrap_used)]

use serde_json::{json, Value};
use virtshim_api::manifest::{parse_documents, parse_json, Object};
use virtshim_tests::examples_dir;

/// The VMI an example runs: itself, or its VirtualMachine's or ReplicaSet's template.
fn vmi_of(object: &Object, name: &str) -> virtshim_api::types::VirtualMachineInstance {
    let value = match object {
        Object::VirtualMachineInstance(vmi) => serde_json::to_value(vmi).unwrap(),
        Object::VirtualMachine(vm) => serde_json::to_value(vm).unwrap(),
        Object::VirtualMachineInstanceReplicaSet(rs) => serde_json::to_value(rs).unwrap(),
    };
    let spec = if value["kind"] == "VirtualMachineInstance" {
        value["spec"].clone()
    } else {
        value["spec"]["template"]["spec"].clone()
    };
    let vmi = json!({
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstance",
        "metadata": {"name": name, "namespace": "default", "uid": "6a1c5b7e-0000-4000-8000-000000000001"},
        "spec": spec,
    });
    match parse_json(&vmi.to_string()).unwrap() {
        Object::VirtualMachineInstance(vmi) => vmi,
        other => panic!("expected a VMI, got a {}", other.kind()),
    }
}

#[test]
fn the_pods_of_every_example_ask_for_nothing_the_shim_refuses() {
    let dir = examples_dir();
    let Ok(entries) = std::fs::read_dir(&dir) else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "expected KubeVirt's examples at {}",
            dir.display()
        );
        println!("SKIPPED: no examples at {}", dir.display());
        return;
    };
    let mut checked = 0;
    let mut files: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    files.sort();
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        for object in parse_documents(&text).into_iter().flatten() {
            let mut vmi = vmi_of(&object, "example");
            virtshim_api::defaults::vmi(&mut vmi);
            // Examples the admission webhook denies (hostDisk, Multus) make no pod.
            let Ok(config) = virtshim_api::validate::vmi(&vmi) else {
                println!("{}: denied, no pod", path.display());
                continue;
            };
            let pod = virtshim_api::pod::pod_for_vmi(&vmi, &config, &Default::default()).unwrap();
            let pod: Value = serde_json::to_value(&pod).unwrap();
            let spec = &pod["spec"];
            for field in ["hostNetwork", "hostPID", "hostIPC"] {
                assert!(
                    spec[field].is_null() || spec[field] == false,
                    "{}: {field} in {spec}",
                    path.display()
                );
            }
            for volume in spec["volumes"].as_array().into_iter().flatten() {
                assert!(
                    volume["hostPath"].is_null(),
                    "{}: a hostPath volume {volume}",
                    path.display()
                );
            }
            let containers = spec["containers"].as_array().unwrap();
            for container in containers
                .iter()
                .chain(spec["initContainers"].as_array().into_iter().flatten())
            {
                let security = &container["securityContext"];
                assert!(
                    security["privileged"].is_null() || security["privileged"] == false,
                    "{}: privileged {}",
                    path.display(),
                    container["name"]
                );
                assert!(
                    security["capabilities"]["add"].is_null(),
                    "{}: capabilities added to {}",
                    path.display(),
                    container["name"]
                );
            }
            assert_eq!(
                pod["metadata"]["generateName"], "virt-launcher-example-",
                "the shim ties the VMI to the pod's name"
            );
            checked += 1;
        }
    }
    println!("{checked} pods checked");
    assert!(
        checked >= 10,
        "expected the examples' pods, checked {checked}"
    );
}
