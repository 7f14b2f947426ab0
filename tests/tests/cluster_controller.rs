//! End to end on a real cluster (issue 5): the controller turns KubeVirt's example `vm-cirros`
//! into a VMI and a pod the virtshim runtime boots, and follows KubeVirt's run strategies.
//!
//! Runs on the cluster `make test` starts (or the one `KUBECONFIG` names), with virtshim
//! installed from `manifests/` as the README says ([`virtshim_tests::cluster::installed`]): the
//! controller, its webhooks and the node's runtime are the installed ones.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::Duration;
use virtshim_tests::cluster::{installed, list, post_mortem};
use virtshim_tests::{examples_dir, wait_for, Kubectl};

const TEST: &str = "vm_cirros_follows_kubevirt_run_strategies";
const VM: &str = "vm-cirros";

fn patch_vm(k: &Kubectl, ns: &str, name: &str, patch: &str) {
    k.run(&[
        "patch", "-n", ns, "vm", name, "--type", "merge", "-p", patch,
    ])
    .unwrap_or_else(|e| panic!("patch {patch}: {e}"));
}

/// Waits for the VM's VMI to run with the pod's IP and node; returns the VMI's uid.
fn wait_running(
    k: &Kubectl,
    ns: &str,
    name: &str,
    not_uid: Option<&str>,
    timeout: Duration,
) -> String {
    let (uid, vmi) = wait_for(&format!("VMI {name} Running"), timeout, || {
        let vmi = k.get_json(ns, "vmi", name)?;
        let uid = vmi["metadata"]["uid"].as_str()?.to_owned();
        (Some(uid.as_str()) != not_uid && vmi["status"]["phase"] == "Running").then_some((uid, vmi))
    });
    let pods = list(k, ns, "pods", &format!("kubevirt.io/created-by={uid}"));
    assert_eq!(pods.len(), 1, "one pod per VMI");
    let pod = &pods[0];
    assert_eq!(pod["spec"]["runtimeClassName"], "virtshim");
    let owner = &pod["metadata"]["ownerReferences"][0];
    assert_eq!(
        (owner["kind"].as_str(), owner["uid"].as_str()),
        (Some("VirtualMachineInstance"), Some(uid.as_str()))
    );
    let ip = wait_for(
        "the VMI reports the pod's IP",
        Duration::from_secs(30),
        || {
            let vmi = k.get_json(ns, "vmi", name)?;
            let ip = vmi["status"]["interfaces"][0]["ipAddress"]
                .as_str()?
                .to_owned();
            (!ip.is_empty()).then_some(ip)
        },
    );
    let pod = k
        .get_json(ns, "pod", pod["metadata"]["name"].as_str().unwrap())
        .unwrap();
    assert_eq!(
        Some(ip.as_str()),
        pod["status"]["podIP"].as_str(),
        "VMI IP is the pod IP"
    );
    assert_eq!(
        vmi["status"]["nodeName"], pod["spec"]["nodeName"],
        "VMI node is the pod's"
    );
    uid
}

/// Waits until the VM has no VMI and no pod is left for `uid`.
fn wait_stopped(k: &Kubectl, ns: &str, name: &str, uid: &str) {
    wait_for(
        &format!("VMI {name} and its pod gone"),
        Duration::from_secs(90),
        || {
            let gone = k
                .get_json(ns, "vmi", name)
                .is_none_or(|v| v["metadata"]["uid"].as_str() != Some(uid));
            (gone && list(k, ns, "pods", &format!("kubevirt.io/created-by={uid}")).is_empty())
                .then_some(())
        },
    );
}

fn printable(k: &Kubectl, ns: &str, name: &str) -> Option<String> {
    k.get_json(ns, "vm", name)?["status"]["printableStatus"]
        .as_str()
        .map(str::to_owned)
}

/// `kubectl get vm NAME` shows STATUS and READY.
fn get_vm_columns(k: &Kubectl, ns: &str, name: &str) -> (String, String) {
    let out = k
        .run(&["get", "-n", ns, "vm", name, "--no-headers"])
        .unwrap();
    let cols: Vec<&str> = out.split_whitespace().collect();
    // NAME AGE STATUS READY
    (
        cols.get(2).unwrap_or(&"").to_string(),
        cols.get(3).unwrap_or(&"").to_string(),
    )
}

#[test]
fn vm_cirros_follows_kubevirt_run_strategies() {
    let Some(k) = installed(TEST) else {
        return;
    };
    let ns = format!("virtshim-ctrl-test-{}", std::process::id());
    k.run(&["create", "namespace", &ns]).expect("namespace");
    let example = examples_dir().join("vm-cirros.yaml");
    let example = example.to_str().unwrap();

    let result = std::panic::catch_unwind(|| {
        // Halted: applied, no VMI, Stopped.
        k.run(&["apply", "-n", &ns, "-f", example])
            .expect("vm-cirros applies");
        wait_for("VM Stopped", Duration::from_secs(30), || {
            (printable(&k, &ns, VM)? == "Stopped").then_some(())
        });
        assert!(
            k.get_json(&ns, "vmi", VM).is_none(),
            "a Halted VM has no VMI"
        );
        let vm = k.get_json(&ns, "vm", VM).unwrap();
        assert!(
            vm["metadata"]["finalizers"].as_array().is_some_and(|f| f
                .iter()
                .any(|x| x == "kubevirt.io/virtualMachineControllerFinalize")),
            "KubeVirt's VM finalizer: {vm}"
        );

        // Always: a Running VMI with the pod's IP and node within 90 s; Running / True.
        patch_vm(&k, &ns, VM, r#"{"spec":{"runStrategy":"Always"}}"#);
        let first = wait_running(&k, &ns, VM, None, Duration::from_secs(90));
        wait_for(
            "kubectl get vm: Running True",
            Duration::from_secs(30),
            || (get_vm_columns(&k, &ns, VM) == ("Running".into(), "True".into())).then_some(()),
        );
        let vmi = k.get_json(&ns, "vmi", VM).unwrap();
        let owner = &vmi["metadata"]["ownerReferences"][0];
        assert_eq!(owner["kind"], "VirtualMachine");
        assert_eq!(owner["controller"], true);
        assert_eq!(vmi["metadata"]["labels"]["vm.kubevirt.io/name"], VM);
        assert_eq!(
            vmi["metadata"]["labels"]["kubevirt.io/vm"], VM,
            "template labels"
        );

        // kubectl delete vmi → a new VMI.
        k.run(&["delete", "-n", &ns, "vmi", VM, "--wait=false"])
            .expect("delete vmi");
        let second = wait_running(&k, &ns, VM, Some(&first), Duration::from_secs(120));
        assert_ne!(first, second);

        // Halted → VMI and pod gone, Stopped.
        patch_vm(&k, &ns, VM, r#"{"spec":{"runStrategy":"Halted"}}"#);
        wait_stopped(&k, &ns, VM, &second);
        wait_for("VM Stopped", Duration::from_secs(30), || {
            (printable(&k, &ns, VM)? == "Stopped").then_some(())
        });

        // The deprecated `running` field, as KubeVirt: true starts, false stops.
        patch_vm(
            &k,
            &ns,
            VM,
            r#"{"spec":{"runStrategy":null,"running":true}}"#,
        );
        let third = wait_running(&k, &ns, VM, Some(&second), Duration::from_secs(90));
        patch_vm(&k, &ns, VM, r#"{"spec":{"running":false}}"#);
        wait_stopped(&k, &ns, VM, &third);

        // Orphan delete leaves the VMI; the VM created again adopts it.
        patch_vm(&k, &ns, VM, r#"{"spec":{"running":true}}"#);
        let fourth = wait_running(&k, &ns, VM, Some(&third), Duration::from_secs(90));
        k.run(&["delete", "-n", &ns, "vm", VM, "--cascade=orphan"])
            .expect("orphan delete");
        wait_for("VM gone", Duration::from_secs(60), || {
            k.get_json(&ns, "vm", VM).is_none().then_some(())
        });
        let orphan = k
            .get_json(&ns, "vmi", VM)
            .expect("the VMI survives an orphan delete");
        assert_eq!(orphan["metadata"]["uid"].as_str(), Some(fourth.as_str()));
        // Created again as it was, running (applied Halted, KubeVirt's VM would adopt the VMI
        // and then stop it, as ours does).
        let running_again = std::fs::read_to_string(example_path())
            .unwrap()
            .replace("runStrategy: Halted", "runStrategy: Always");
        k.run_stdin(&["apply", "-n", &ns, "-f", "-"], Some(&running_again))
            .expect("vm-cirros applies again");
        let vm_uid = k.get_json(&ns, "vm", VM).unwrap()["metadata"]["uid"]
            .as_str()
            .unwrap()
            .to_owned();
        wait_for("the new VM adopts the VMI", Duration::from_secs(60), || {
            let vmi = k.get_json(&ns, "vmi", VM)?;
            (vmi["metadata"]["uid"].as_str() == Some(fourth.as_str())
                && vmi["metadata"]["ownerReferences"]
                    .as_array()?
                    .iter()
                    .any(|o| o["uid"].as_str() == Some(vm_uid.as_str()) && o["controller"] == true))
            .then_some(())
        });

        // A guest poweroff: the VMI Succeeds and an Always VM gets a new one.
        let poweroff_vm = std::fs::read_to_string(example_path())
            .unwrap()
            .replace("name: vm-cirros\n", "name: vm-poweroff\n")
            .replace("kubevirt.io/vm: vm-cirros", "kubevirt.io/vm: vm-poweroff")
            .replace("runStrategy: Halted", "runStrategy: Always")
            .replace(
                "echo 'printed from cloud-init userdata'",
                "echo 'powering off'; sleep 5; poweroff",
            );
        k.run_stdin(&["apply", "-n", &ns, "-f", "-"], Some(&poweroff_vm))
            .expect("vm-poweroff applies");
        let before = wait_running(&k, &ns, "vm-poweroff", None, Duration::from_secs(90));
        wait_for(
            "the powered-off VMI Succeeded and was replaced",
            Duration::from_secs(180),
            || {
                let events = k
                    .run(&[
                        "get",
                        "events",
                        "-n",
                        &ns,
                        "--field-selector",
                        "involvedObject.name=vm-poweroff",
                        "-o",
                        "json",
                    ])
                    .ok()?;
                let succeeded = events.contains(&before) && events.contains("succeeded");
                let vmi = k.get_json(&ns, "vmi", "vm-poweroff")?;
                (succeeded && vmi["metadata"]["uid"].as_str() != Some(before.as_str()))
                    .then_some(())
            },
        );

        // An invalid VM is refused by `kubectl apply` with the validator's field path, once.
        {
            let invalid = std::fs::read_to_string(example_path())
                .unwrap()
                .replace("name: vm-cirros\n", "name: vm-invalid\n")
                .replace(
                    "bus: virtio\n            name: containerdisk",
                    "bus: floppy\n            name: containerdisk",
                );
            let object = virtshim_api::manifest::parse_documents(&invalid)
                .into_iter()
                .next()
                .unwrap()
                .unwrap();
            let errors = object.validate().expect_err("the edited VM is invalid");
            let path = errors.iter().next().unwrap().path.to_string();
            let refused = k
                .run_stdin(&["apply", "-n", &ns, "-f", "-"], Some(&invalid))
                .expect_err("an invalid VM is refused");
            assert!(
                refused.contains(&path),
                "the refusal names {path}: {refused}"
            );
            assert_eq!(
                refused.matches(&path).count(),
                1,
                "the refusal names {path} once: {refused}"
            );
        }

        // Deleting the VM removes everything.
        for vm in [VM, "vm-poweroff"] {
            k.run(&[
                "delete",
                "-n",
                &ns,
                "vm",
                vm,
                "--wait=true",
                "--timeout=120s",
            ])
            .expect("delete vm");
        }
        wait_for("no VMI and no pod left", Duration::from_secs(120), || {
            let vmis = list(&k, &ns, "vmi", "vm.kubevirt.io/name");
            let pods = list(&k, &ns, "pods", "kubevirt.io=virt-launcher");
            (vmis.is_empty() && pods.is_empty()).then_some(())
        });
    });
    if result.is_err() {
        post_mortem(&k, &ns);
    }
    let _ = k.run(&["delete", "namespace", &ns, "--wait=false"]);
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

fn example_path() -> PathBuf {
    examples_dir().join("vm-cirros.yaml")
}
