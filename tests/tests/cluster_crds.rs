//! On a real kube-apiserver: the generated CRDs apply, every example VM applies and comes back
//! unchanged (unknown fields included), and `kubectl get vm,vmi` shows KubeVirt's columns.
//! Skipped, saying so, when the environment gives no cluster.

#![allow(clippy::unwrap_used)]

use virtshim_tests::{cluster, examples_dir, repo_root};

#[test]
fn crds_apply_and_examples_round_trip_through_the_apiserver() {
    let Some(k) = cluster("crds_apply_and_examples_round_trip_through_the_apiserver") else {
        return;
    };
    let crds = repo_root().join("manifests/crds");
    k.run(&["apply", "--server-side", "-f", crds.to_str().unwrap()])
        .expect("CRDs apply");
    for crd in [
        "virtualmachines",
        "virtualmachineinstances",
        "virtualmachineinstancereplicasets",
    ] {
        k.run(&[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            &format!("crd/{crd}.kubevirt.io"),
        ])
        .expect("CRD established");
    }
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
            assert_eq!(
                stored["spec"],
                sent["spec"],
                "{}: the apiserver changed the spec",
                path.display()
            );
            applied += 1;
        }
        assert!(applied >= 4, "expected the example VMs, applied {applied}");

        // Unknown (not implemented) fields are preserved, not pruned.
        let vm = r#"{"apiVersion":"kubevirt.io/v1","kind":"VirtualMachine","metadata":{"name":"unknown-fields"},
          "spec":{"runStrategy":"Halted","futureField":{"x":1},"template":{"spec":{"domain":{"devices":{"gpus":[{"name":"g","deviceName":"d"}]},"memory":{"guest":"64Mi"}}}}}}"#;
        k.run_stdin(&["apply", "-n", &ns, "-f", "-"], Some(vm))
            .expect("apply");
        let stored: serde_json::Value = serde_json::from_str(
            &k.run(&["get", "-n", &ns, "vm", "unknown-fields", "-o", "json"])
                .expect("get"),
        )
        .expect("json");
        assert_eq!(stored["spec"]["futureField"]["x"], 1);
        assert_eq!(
            stored["spec"]["template"]["spec"]["domain"]["devices"]["gpus"][0]["deviceName"],
            "d"
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
