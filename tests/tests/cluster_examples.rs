//! KubeVirt's example YAMLs on a real cluster (issue 15, section 3), as a KubeVirt user applies
//! them with `kubectl`, with virtshim installed from `manifests/`
//! ([`virtshim_tests::cluster::installed`]).
//!
//! Every file in the examples folder gets a verdict, none is skipped: what virtshim's validator
//! refuses (`vmi-host-disk`, `vmi-multus-ptp`: features it does not implement, by name) must be
//! denied by the webhook with the validator's field paths in kubectl's message, and nothing
//! stored; everything else is in scope and must run — each of its VMIs `Running` with its
//! pod's IP in `status.interfaces[0].ipAddress` (when on the pod network), the pod's node in
//! `status.nodeName` and `Ready` true, and its guest must boot (the test guest's marker in
//! `kubectl logs -c compute`). What the examples take for granted on a KubeVirt cluster
//! is provided first: the containerDisk and kernel images under the examples' names (the test
//! guests, tagged or repackaged by the fixture), their PersistentVolumeClaims (bound to
//! local volumes on the node; a boot disk holds the test guest, the others start blank) and
//! their PriorityClass. Guests boot under TCG on 2 cores, so at most three at once.
//!
//! Also a VirtualMachineInstanceReplicaSet (KubeVirt's `vmi-replicaset-cirros`) scaled 0→3→1
//! with `kubectl scale`.

#![allow(clippy::unwrap_used)]

use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;
use virtshim_api::manifest::parse_documents;
use virtshim_tests::cluster::{
    check_running_vmi, installed, list, pod_summary, running_vmi, vmi_pods, vmi_summary, Namespace,
};
use virtshim_tests::vm::READY_MARKER;
use virtshim_tests::{examples_dir, poll, tail, Kubectl};

/// Guests booted together at most (TCG on 2 cores).
const MAX_GUESTS: usize = 3;
/// How long a VMI may take to run (a bound for a stuck VMI, not a timing assertion).
const RUNNING: Duration = Duration::from_secs(300);
/// How long a guest may take to boot once running (UEFI under TCG with two others is slow; a
/// bound, not a timing assertion).
const BOOT: Duration = Duration::from_secs(420);
/// Where the hostPath PersistentVolumes live on the node.
const PV_ROOT: &str = "/var/lib/virtshim-tests/pv";

/// The tests of this file boot several guests each: one at a time.
static GUESTS: Mutex<()> = Mutex::new(());

/// What an example must do on the cluster.
#[derive(Debug)]
enum Verdict {
    /// Refused by virtshim's validator with these errors (field path, whole message): the
    /// webhook denies it with them.
    Denied(Vec<(String, String)>),
    /// In scope: its VMIs run.
    Runs(Runnable),
}

#[derive(Debug)]
struct Runnable {
    /// VirtualMachine, VirtualMachineInstance or VirtualMachineInstanceReplicaSet.
    kind: String,
    name: String,
    /// The object as JSON.
    object: Value,
    /// How many guests it boots.
    guests: usize,
    /// PersistentVolumeClaims its VMIs use, and those of them that are the first disk.
    claims: BTreeSet<String>,
    boot_claims: BTreeSet<String>,
    priority_class: Option<String>,
}

impl Runnable {
    /// The VMI spec (of the template for VMs and replica sets).
    fn vmi_spec(&self) -> &Value {
        if self.kind == "VirtualMachineInstance" {
            &self.object["spec"]
        } else {
            &self.object["spec"]["template"]["spec"]
        }
    }
}

struct Example {
    file: String,
    path: PathBuf,
    verdict: Verdict,
}

/// The verdict virtshim's own validator (after KubeVirt's defaults, as the webhooks run them)
/// gives an example; a file that is not one KubeVirt object fails the test.
fn judge(path: &Path) -> Verdict {
    let text = std::fs::read_to_string(path).unwrap();
    let mut objects = parse_documents(&text);
    assert_eq!(
        objects.len(),
        1,
        "{}: expected one KubeVirt object, found {}",
        path.display(),
        objects.len()
    );
    let mut object = match objects.remove(0) {
        Ok(o) => o,
        Err(e) => {
            let message = e.to_string();
            let path = message.split(':').next().unwrap_or_default().to_owned();
            return Verdict::Denied(vec![(path, message)]);
        }
    };
    object.apply_defaults();
    if let Err(errors) = object.validate() {
        return Verdict::Denied(
            errors
                .iter()
                .map(|e| (e.path.to_string(), e.to_string()))
                .collect(),
        );
    }
    let value = object.to_value();
    let kind = object.kind().to_owned();
    let guests = if kind == "VirtualMachineInstanceReplicaSet" {
        usize::try_from(value["spec"]["replicas"].as_u64().unwrap_or(1)).unwrap()
    } else {
        1
    };
    let mut runnable = Runnable {
        kind,
        name: object.name().to_owned(),
        object: value,
        guests,
        claims: BTreeSet::new(),
        boot_claims: BTreeSet::new(),
        priority_class: None,
    };
    let spec = runnable.vmi_spec().clone();
    let first_disk = spec["domain"]["devices"]["disks"][0]["name"].as_str();
    for (i, volume) in spec["volumes"].as_array().into_iter().flatten().enumerate() {
        if let Some(claim) = volume["persistentVolumeClaim"]["claimName"].as_str() {
            runnable.claims.insert(claim.to_owned());
            let first = match first_disk {
                Some(disk) => volume["name"].as_str() == Some(disk),
                None => i == 0,
            };
            if first {
                runnable.boot_claims.insert(claim.to_owned());
            }
        }
    }
    runnable.priority_class = spec["priorityClassName"].as_str().map(str::to_owned);
    Verdict::Runs(runnable)
}

fn examples() -> Vec<Example> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(examples_dir())
        .unwrap_or_else(|e| panic!("expected the examples at {}: {e}", examples_dir().display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|path| Example {
            file: path.file_name().unwrap().to_string_lossy().into_owned(),
            verdict: judge(&path),
            path,
        })
        .collect()
}

/// Groups the runnable examples into batches of at most [`MAX_GUESTS`] guests, no claim used
/// twice in a batch (one disk image cannot be opened by two VMs).
fn batches<'a>(runnable: &[&'a Example]) -> Vec<Vec<&'a Example>> {
    let mut batches: Vec<(usize, BTreeSet<String>, Vec<&Example>)> = Vec::new();
    for example in runnable {
        let Verdict::Runs(r) = &example.verdict else {
            continue;
        };
        let fits = batches.iter_mut().find(|(guests, claims, _)| {
            guests + r.guests <= MAX_GUESTS && claims.is_disjoint(&r.claims)
        });
        match fits {
            Some((guests, claims, members)) => {
                *guests += r.guests;
                claims.extend(r.claims.iter().cloned());
                members.push(example);
            }
            None => batches.push((r.guests, r.claims.clone(), vec![example])),
        }
    }
    batches.into_iter().map(|(_, _, b)| b).collect()
}

/// What the examples take for granted, made on the cluster; removed when dropped.
struct Prerequisites<'a> {
    k: &'a Kubectl,
    ns: String,
    volumes: Vec<String>,
    priority_classes: Vec<String>,
}

impl<'a> Prerequisites<'a> {
    fn new(k: &'a Kubectl, ns: &str) -> Self {
        Self {
            k,
            ns: ns.to_owned(),
            volumes: Vec::new(),
            priority_classes: Vec::new(),
        }
    }

    fn priority_class(&mut self, name: &str) {
        if self.priority_classes.iter().any(|p| p == name)
            || self.k.run(&["get", "priorityclass", name]).is_ok()
        {
            return;
        }
        let yaml = format!(
            "apiVersion: scheduling.k8s.io/v1\nkind: PriorityClass\nmetadata: {{name: {name}}}\n\
             value: 1000\npreemptionPolicy: Never\n"
        );
        self.k
            .run_stdin(&["apply", "-f", "-"], Some(&yaml))
            .unwrap_or_else(|e| panic!("expected PriorityClass {name} to be created: {e}"));
        self.priority_classes.push(name.to_owned());
    }

    /// A PersistentVolumeClaim bound to a local volume of its own (the kubelet bind-mounts it
    /// into the pod's folder; the shim refuses hostPath volumes outside the node's allowed
    /// storage roots): holding the test guest's
    /// disk as a raw `disk.img` when `boot`, else blank (the shim makes `disk.img`, as KubeVirt).
    fn claim(&mut self, claim: &str, boot: bool) {
        let dir = Path::new(PV_ROOT).join(&self.ns).join(claim);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        if boot {
            let guest = virtshim_tests::vm::guest_images().join("guest.qcow2");
            let out = std::process::Command::new("qemu-img")
                .args(["convert", "-O", "raw"])
                .arg(&guest)
                .arg(dir.join("disk.img"))
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "expected qemu-img to convert {} to raw: {}",
                guest.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let pv = format!("{}-{claim}", self.ns);
        let node = self
            .k
            .run(&["get", "nodes", "-o", "jsonpath={.items[0].metadata.name}"])
            .unwrap_or_else(|e| panic!("expected the cluster's node: {e}"));
        let yaml = format!(
            "apiVersion: v1\nkind: PersistentVolume\nmetadata: {{name: {pv}}}\nspec:\n\
             \x20 capacity: {{storage: 1Gi}}\n  accessModes: [ReadWriteOnce]\n\
             \x20 persistentVolumeReclaimPolicy: Retain\n  storageClassName: ''\n\
             \x20 local: {{path: '{}'}}\n\
             \x20 nodeAffinity: {{required: {{nodeSelectorTerms: [{{matchExpressions: [{{key: kubernetes.io/hostname, operator: In, values: ['{node}']}}]}}]}}}}\n\
             \x20 claimRef: {{namespace: {ns}, name: {claim}}}\n---\n\
             apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: {claim}, namespace: {ns}}}\n\
             spec:\n  accessModes: [ReadWriteOnce]\n  storageClassName: ''\n  volumeName: {pv}\n\
             \x20 resources: {{requests: {{storage: 1Gi}}}}\n",
            dir.display(),
            ns = self.ns,
            node = node.trim()
        );
        self.k
            .run_stdin(&["apply", "-f", "-"], Some(&yaml))
            .unwrap_or_else(|e| panic!("expected claim {claim} and its volume to be created: {e}"));
        self.volumes.push(pv);
        let phase = poll(
            &format!("claim {claim} Bound"),
            Duration::from_secs(60),
            || {
                let pvc = self.k.get_json(&self.ns, "pvc", claim);
                let phase = pvc.as_ref().map(|p| p["status"]["phase"].clone());
                (phase == Some(Value::from("Bound")))
                    .then_some(())
                    .ok_or_else(|| format!("phase {phase:?}"))
            },
        );
        phase.unwrap_or_else(|e| panic!("{e}"));
    }
}

impl Drop for Prerequisites<'_> {
    fn drop(&mut self) {
        for pv in &self.volumes {
            let _ = self
                .k
                .run(&["delete", "pv", pv, "--wait=false", "--ignore-not-found"]);
        }
        for pc in &self.priority_classes {
            let _ = self
                .k
                .run(&["delete", "priorityclass", pc, "--ignore-not-found"]);
        }
        let _ = std::fs::remove_dir_all(Path::new(PV_ROOT).join(&self.ns));
    }
}

/// The names of the VMIs an applied example runs, once all of them exist.
fn vmi_names(k: &Kubectl, ns: &str, r: &Runnable) -> Result<Vec<String>, String> {
    if r.kind != "VirtualMachineInstanceReplicaSet" {
        return Ok(vec![r.name.clone()]);
    }
    let selector = selector(&r.object);
    poll(
        &format!("{} VMIs of replica set {}", r.guests, r.name),
        RUNNING,
        || {
            let names: Vec<String> = list(k, ns, "vmi", &selector)
                .iter()
                .filter_map(|v| v["metadata"]["name"].as_str().map(str::to_owned))
                .collect();
            (names.len() == r.guests)
                .then(|| names.clone())
                .ok_or_else(|| format!("{} VMIs: {names:?}", names.len()))
        },
    )
}

/// A replica set's `matchLabels` as a label selector.
fn selector(rs: &Value) -> String {
    rs["spec"]["selector"]["matchLabels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

/// Applies an in-scope example (starting a VM, as `virtctl start` would) and waits for its
/// VMIs to run as KubeVirt reports them: what it saw and the launcher pods, or what went wrong.
fn run_example(
    k: &Kubectl,
    ns: &str,
    example: &Example,
    r: &Runnable,
) -> Result<(String, Vec<String>), String> {
    k.run(&["apply", "-n", ns, "-f", example.path.to_str().unwrap()])
        .map_err(|e| format!("expected kubectl apply to succeed: {e}"))?;
    if r.kind == "VirtualMachine" {
        let patch = if r.object["spec"].get("running").is_some() {
            r#"{"spec":{"running":true}}"#
        } else {
            r#"{"spec":{"runStrategy":"Always"}}"#
        };
        k.run(&[
            "patch", "-n", ns, "vm", &r.name, "--type", "merge", "-p", patch,
        ])
        .map_err(|e| format!("expected the VM to be started by {patch}: {e}"))?;
    }
    let names = vmi_names(k, ns, r)?;
    let mut seen = Vec::new();
    let mut pods = Vec::new();
    for name in &names {
        let vmi = running_vmi(k, ns, name, RUNNING)?;
        pods.push(vmi.pod_name().to_owned());
        seen.push(format!(
            "{name} on {} at {}",
            vmi.vmi["status"]["nodeName"].as_str().unwrap_or("?"),
            vmi.vmi["status"]["interfaces"][0]["ipAddress"]
                .as_str()
                .unwrap_or("(no pod network)")
        ));
    }
    Ok((format!("Running: {}", seen.join(", ")), pods))
}

/// Waits until the guest in each pod has booted: the test guest's marker in `kubectl logs -c
/// compute`, the serial console.
fn guests_boot(k: &Kubectl, ns: &str, pods: &[String]) -> Result<(), String> {
    for pod in pods {
        poll(
            &format!("{READY_MARKER} in kubectl logs {pod} -c compute"),
            BOOT,
            || {
                let logs = k.run(&["logs", "-n", ns, pod, "-c", "compute"])?;
                logs.contains(READY_MARKER)
                    .then_some(())
                    .ok_or_else(|| format!("the console ends with {:?}", tail(&logs, 400)))
            },
        )?;
    }
    Ok(())
}

/// Deletes what a batch applied and waits until no launcher pod is left in `ns`.
fn delete_batch(k: &Kubectl, ns: &str, batch: &[&Example]) {
    for example in batch {
        let _ = k.run(&[
            "delete",
            "-n",
            ns,
            "-f",
            example.path.to_str().unwrap(),
            "--ignore-not-found",
            "--wait=false",
        ]);
    }
    poll(
        "no VMI and no launcher pod left after the batch",
        Duration::from_secs(180),
        || {
            let vmis = k.run(&["get", "-n", ns, "vmi", "-o", "name"])?;
            let pods = k.run(&["get", "-n", ns, "pods", "-o", "name"])?;
            (vmis.trim().is_empty() && pods.trim().is_empty())
                .then_some(())
                .ok_or_else(|| format!("{vmis} {pods}").replace('\n', " "))
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
}

/// Applies a refused example: kubectl must fail with the webhook's denial, each of the
/// validator's errors in it (its field path once), and nothing may be stored.
fn denied_example(
    k: &Kubectl,
    ns: &str,
    example: &Example,
    errors: &[(String, String)],
) -> Result<String, String> {
    let text = std::fs::read_to_string(&example.path).unwrap();
    let object = parse_documents(&text).remove(0);
    let refused = match k.run(&["apply", "-n", ns, "-f", example.path.to_str().unwrap()]) {
        Ok(out) => {
            return Err(format!(
                "expected the webhook to deny it with {errors:?}; kubectl applied it: {out}"
            ))
        }
        Err(e) => e,
    };
    let mut wrong = Vec::new();
    for (path, message) in errors {
        if !refused.contains(message.as_str()) {
            wrong.push(format!("the validator's error {message:?}"));
        }
        if refused.matches(path.as_str()).count() != 1 {
            wrong.push(format!("the field path {path} once"));
        }
    }
    if let Ok(o) = &object {
        if k.get_json(ns, o.kind(), o.name()).is_some() {
            wrong.push(format!("no {} {} stored", o.kind(), o.name()));
        }
    }
    if wrong.is_empty() {
        Ok(format!("denied: {}", refused.trim()))
    } else {
        Err(format!(
            "expected {}; kubectl said: {}",
            wrong.join(", "),
            refused.trim()
        ))
    }
}

#[test]
fn kubevirt_examples_run_or_are_denied() {
    let Some(k) = installed("kubevirt_examples_run_or_are_denied") else {
        return;
    };
    let _guests = GUESTS.lock().unwrap_or_else(|e| e.into_inner());
    let examples = examples();
    assert!(
        !examples.is_empty(),
        "expected KubeVirt's examples in {}, found none",
        examples_dir().display()
    );
    // The two features the README names as refused are refused by the validator, by name.
    for (file, field) in [
        ("vmi-host-disk.yaml", "hostDisk"),
        ("vmi-multus-ptp.yaml", "multus"),
    ] {
        let verdict = examples.iter().find(|e| e.file == file).map(|e| &e.verdict);
        assert!(
            matches!(verdict, Some(Verdict::Denied(errors)) if errors.iter().any(|(p, _)| p.contains(field))),
            "expected {file} to be refused at a path naming {field}; got {verdict:?}"
        );
    }
    let ns = Namespace::new(&k, "vs-examples");
    let mut prerequisites = Prerequisites::new(&k, &ns.name);
    let mut outcomes: Vec<(String, Result<String, String>)> = Vec::new();

    for example in &examples {
        if let Verdict::Denied(errors) = &example.verdict {
            outcomes.push((
                example.file.clone(),
                denied_example(&k, &ns.name, example, errors),
            ));
        }
    }

    let runnable: Vec<&Example> = examples
        .iter()
        .filter(|e| matches!(e.verdict, Verdict::Runs(_)))
        .collect();
    let mut boot_claims = BTreeSet::new();
    for example in &runnable {
        if let Verdict::Runs(r) = &example.verdict {
            boot_claims.extend(r.boot_claims.iter().cloned());
            if let Some(pc) = &r.priority_class {
                prerequisites.priority_class(pc);
            }
        }
    }
    let claims: BTreeSet<String> = runnable
        .iter()
        .filter_map(|e| match &e.verdict {
            Verdict::Runs(r) => Some(r.claims.clone()),
            Verdict::Denied(_) => None,
        })
        .flatten()
        .collect();
    for claim in &claims {
        prerequisites.claim(claim, boot_claims.contains(claim));
    }

    for batch in batches(&runnable) {
        println!(
            "batch: {}",
            batch
                .iter()
                .map(|e| e.file.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        let mut running = Vec::new();
        for example in &batch {
            let Verdict::Runs(r) = &example.verdict else {
                continue;
            };
            running.push((example.file.clone(), run_example(&k, &ns.name, example, r)));
        }
        // Then the batch's guests boot together.
        for (file, outcome) in running {
            let booted = outcome.and_then(|(seen, pods)| {
                guests_boot(&k, &ns.name, &pods).map(|()| format!("{seen}; guest booted"))
            });
            outcomes.push((file, booted));
        }
        delete_batch(&k, &ns.name, &batch);
    }

    outcomes.sort();
    let mut failed = Vec::new();
    for (file, outcome) in &outcomes {
        match outcome {
            Ok(what) => println!("{file}: {what}"),
            Err(why) => {
                println!("{file}: FAILED: {why}");
                failed.push(format!("{file}: {why}"));
            }
        }
    }
    assert_eq!(
        outcomes.len(),
        examples.len(),
        "expected a verdict for each of the {} examples",
        examples.len()
    );
    assert!(
        failed.is_empty(),
        "expected every example to run or be denied as its verdict says; {} of {} did not:\n{}",
        failed.len(),
        outcomes.len(),
        failed.join("\n")
    );
    drop(prerequisites);
}

/// The replica set's VMIs (name, uid).
fn replica_vmis(k: &Kubectl, ns: &str, selector: &str) -> Vec<(String, String)> {
    list(k, ns, "vmi", selector)
        .iter()
        .filter(|v| v["metadata"]["deletionTimestamp"].is_null())
        .map(|v| {
            (
                v["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                v["metadata"]["uid"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn scale(k: &Kubectl, ns: &str, name: &str, replicas: usize) {
    k.run(&[
        "scale",
        "-n",
        ns,
        "vmirs",
        name,
        &format!("--replicas={replicas}"),
    ])
    .unwrap_or_else(|e| panic!("expected kubectl scale to {replicas} to succeed: {e}"));
}

#[test]
fn vmi_replicaset_scales_0_3_1() {
    let Some(k) = installed("vmi_replicaset_scales_0_3_1") else {
        return;
    };
    let _guests = GUESTS.lock().unwrap_or_else(|e| e.into_inner());
    let ns = Namespace::new(&k, "vs-replicaset");
    let n = ns.name.as_str();
    let path = examples_dir().join("vmi-replicaset-cirros.yaml");
    let yaml = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("expected {}: {e}", path.display()));
    let Verdict::Runs(rs) = judge(&path) else {
        panic!("expected {} to be in scope", path.display());
    };
    let name = rs.name.clone();
    let selector = selector(&rs.object);
    let zero = yaml.replace(&format!("replicas: {}", rs.guests), "replicas: 0");
    assert_ne!(
        zero,
        yaml,
        "expected `replicas: {}` in {}",
        rs.guests,
        path.display()
    );
    k.run_stdin(&["apply", "-n", n, "-f", "-"], Some(&zero))
        .unwrap_or_else(|e| panic!("expected the replica set to apply with 0 replicas: {e}"));

    // 0: no VMI, and the status says so.
    poll(
        "replica set status.replicas 0",
        Duration::from_secs(60),
        || {
            let status = k
                .get_json(n, "vmirs", &name)
                .map(|r| r["status"].clone())
                .unwrap_or_default();
            (status["replicas"].as_u64().unwrap_or(0) == 0 && status.get("labelSelector").is_some())
                .then_some(())
                .ok_or_else(|| format!("status {status}"))
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let vmis = replica_vmis(&k, n, &selector);
    assert!(
        vmis.is_empty(),
        "expected no VMI at 0 replicas, found {vmis:?}"
    );

    // 3: three VMIs, each Running with its pod's IP and node.
    scale(&k, n, &name, 3);
    let three = poll("3 VMIs", RUNNING, || {
        let vmis = replica_vmis(&k, n, &selector);
        (vmis.len() == 3)
            .then(|| vmis.clone())
            .ok_or_else(|| format!("{} VMIs: {vmis:?}", vmis.len()))
    })
    .unwrap_or_else(|e| panic!("{e}"));
    for (vmi, _) in &three {
        running_vmi(&k, n, vmi, RUNNING).unwrap_or_else(|e| panic!("{e}"));
    }
    poll(
        "replica set readyReplicas 3",
        Duration::from_secs(60),
        || {
            let status = k
                .get_json(n, "vmirs", &name)
                .map(|r| r["status"].clone())
                .unwrap_or_default();
            (status["replicas"] == 3 && status["readyReplicas"] == 3)
                .then_some(())
                .ok_or_else(|| format!("status {status}"))
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let get = k.run(&["get", "-n", n, "vmirs", &name]).unwrap();
    println!("{get}");

    // 1: two VMIs and their pods go, the third keeps running.
    scale(&k, n, &name, 1);
    let (kept, removed) = poll(
        "1 VMI left, the other two and their pods gone",
        Duration::from_secs(180),
        || {
            let left = replica_vmis(&k, n, &selector);
            let all = list(&k, n, "vmi", &selector).len();
            let removed: Vec<&(String, String)> =
                three.iter().filter(|v| !left.contains(v)).collect();
            let pods_left: Vec<String> = removed
                .iter()
                .flat_map(|(_, uid)| vmi_pods(&k, n, uid))
                .map(|p| pod_summary(&p))
                .collect();
            (left.len() == 1 && all == 1 && removed.len() == 2 && pods_left.is_empty())
                .then(|| (left[0].clone(), removed.len()))
                .ok_or_else(|| {
                    format!(
                        "VMIs not being deleted {left:?} ({all} in all), pods of removed ones {pods_left:?}"
                    )
                })
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        three.contains(&kept),
        "expected the remaining VMI to be one of the three {three:?}; it is {kept:?}"
    );
    assert_eq!(removed, 2, "expected two VMIs removed");
    let running = check_running_vmi(&k, n, &kept.0)
        .unwrap_or_else(|e| panic!("expected the remaining VMI still running: {e}"));
    println!("kept {}", vmi_summary(&running.vmi));
    poll(
        "replica set status.replicas 1",
        Duration::from_secs(60),
        || {
            let status = k
                .get_json(n, "vmirs", &name)
                .map(|r| r["status"].clone())
                .unwrap_or_default();
            (status["replicas"] == 1)
                .then_some(())
                .ok_or_else(|| format!("status {status}"))
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    k.run(&["delete", "-n", n, "vmirs", &name, "--wait=false"])
        .unwrap();
}
