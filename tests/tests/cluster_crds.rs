//! On a real kube-apiserver with virtshim installed from `manifests/` (so its mutating and
//! validating webhooks run, as in KubeVirt): every example VM applies and comes back with all it
//! said (the webhook only adds KubeVirt's defaults), a field virtshim does not model is refused
//! naming it, and `kubectl get vm,vmi` shows KubeVirt's columns.

#![allow(clippy::unwrap_used)]

use serde_json::Value;
use virtshim_tests::cluster::installed;
use virtshim_tests::examples_dir;

/// Every value in `sent` is in `stored` at the same path (objects may gain fields: defaults);
/// the paths where they differ.
fn missing(sent: &Value, stored: &Value, path: &str, out: &mut Vec<String>) {
    match (sent, stored) {
        (Value::Object(a), Value::Object(b)) => {
            for (key, value) in a {
                let here = format!("{path}.{key}");
                match b.get(key) {
                    Some(other) => missing(value, other, &here, out),
                    None => out.push(here),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                missing(x, y, &format!("{path}[{i}]"), out);
            }
        }
        (a, b) if a == b => {}
        _ => out.push(format!("{path}: sent {sent}, stored {stored}")),
    }
}

#[test]
fn crds_apply_and_examples_round_trip_through_the_apiserver() {
    let Some(k) = installed("crds_apply_and_examples_round_trip_through_the_apiserver") else {
        return;
    };
    let ns = format!("virtshim-crd-test-{}", std::process::id());
    k.run(&["create", "namespace", &ns]).expect("namespace");
    let result = std::panic::catch_unwind(|| {
        let mut applied = 0;
        for entry in std::fs::read_dir(examples_dir()).expect("examples") {
            let path = entry.expect("entry").path();
            let text = std::fs::read_to_string(&path).expect("read");
            if !text.contains("kind: VirtualMachine\n") {
                continue;
            }
            k.run(&["apply", "-n", &ns, "-f", path.to_str().unwrap()])
                .expect("example VM applies");
            let sent: serde_json::Value = serde_json::from_str(
                &k.run(&[
                    "create",
                    "--dry-run=client",
                    "-o",
                    "json",
                    "-f",
                    path.to_str().unwrap(),
                ])
                .expect("read back"),
            )
            .expect("json");
            let name = sent["metadata"]["name"].as_str().expect("name");
            let stored: serde_json::Value = serde_json::from_str(
                &k.run(&["get", "-n", &ns, "vm", name, "-o", "json"])
                    .expect("get"),
            )
            .expect("json");
            let mut lost = Vec::new();
            missing(&sent["spec"], &stored["spec"], "spec", &mut lost);
            assert!(
                lost.is_empty(),
                "{}: the stored VM lost or changed what was sent: {lost:?}",
                path.display()
            );
            applied += 1;
        }
        assert!(applied >= 4, "expected the example VMs, applied {applied}");

        // A field virtshim does not model is refused by the validating webhook, naming it.
        let vm = r#"{"apiVersion":"kubevirt.io/v1","kind":"VirtualMachine","metadata":{"name":"unknown-fields"},
          "spec":{"runStrategy":"Halted","template":{"spec":{"domain":{"devices":{"gpus":[{"name":"g","deviceName":"d"}]},"memory":{"guest":"64Mi"}}}}}}"#;
        let refused = k
            .run_stdin(&["apply", "-n", &ns, "-f", "-"], Some(vm))
            .expect_err("a VM with GPUs is refused");
        assert!(
            refused.contains("spec.template.spec.domain.devices.gpus"),
            "{refused}"
        );

        let vmi = std::fs::read_to_string(examples_dir().join("vmi-sata.yaml")).expect("vmi-sata");
        k.run_stdin(&["apply", "-n", &ns, "-f", "-"], Some(&vmi))
            .expect("VMI applies");
        let vms = k.run(&["get", "-n", &ns, "vm"]).expect("get vm");
        let header: Vec<&str> = vms
            .lines()
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        assert_eq!(header, ["NAME", "AGE", "STATUS", "READY"], "{vms}");
        let vmis = k.run(&["get", "-n", &ns, "vmi"]).expect("get vmi");
        let header: Vec<&str> = vmis
            .lines()
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        assert_eq!(
            header,
            ["NAME", "AGE", "PHASE", "IP", "NODENAME", "READY"],
            "{vmis}"
        );
        println!("{vms}{vmis}");
    });
    let _ = k.run(&["delete", "namespace", &ns, "--wait=false"]);
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}
