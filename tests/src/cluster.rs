//! virtshim installed on the test cluster exactly as the README's "Install on a cluster" tells a
//! user: the component images and the test guests imported into the node's containerd (no
//! registry), the guests also tagged with the names KubeVirt's examples use, `kubectl apply -k
//! manifests/`, then the installer labelling the node, the controller Available, the handler
//! Ready, the APIServices Available and the webhooks given their CA.
//!
//! The images are built with the profile of the running tests (debug under `make test`:
//! `make images` builds the same images in release mode for users).

use crate::{poll, repo_root, wait_for, Kubectl};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

/// virtshim's namespace (manifests/namespace.yaml).
pub const NAMESPACE: &str = "virtshim-system";
/// The label the installer puts on nodes it set up.
pub const READY_LABEL: &str = "virtshim.io/ready";

/// The names KubeVirt's example YAMLs boot (a registry this machine cannot reach), given to the
/// project's test guests, as the README tells users to do.
pub const EXAMPLE_IMAGES: &[(&str, &str)] = &[
    (
        "registry:5000/kubevirt/cirros-container-disk-demo:devel",
        crate::vm::CONTAINER_DISK_IMAGE,
    ),
    (
        "registry:5000/kubevirt/alpine-container-disk-demo:devel",
        crate::vm::CONTAINER_DISK_IMAGE,
    ),
    (
        "registry:5000/kubevirt/fedora-with-test-tooling-container-disk:devel",
        crate::vm::CONTAINER_DISK_IMAGE,
    ),
];

/// KubeVirt's kernel-boot example image, `/boot/vmlinuz-virt` and `/boot/initramfs-virt` in
/// Alpine's layout: the test guest's kernel and initramfs under those names (a tag cannot
/// rename files, so this image is built rather than tagged).
pub const EXAMPLE_KERNEL_BOOT_IMAGE: &str =
    "registry:5000/kubevirt/alpine-ext-kernel-boot-demo:devel";

/// Whether this process installed virtshim already.
static INSTALLED: Mutex<bool> = Mutex::new(false);

/// Says that virtshim was removed (`kubectl delete -k manifests/`): the next [`installed`]
/// installs it again.
pub fn forget_install() {
    *INSTALLED.lock().unwrap_or_else(|e| e.into_inner()) = false;
}

/// The cluster with virtshim installed from `manifests/`; `None` (said) when the environment
/// gives no cluster outside CI. Installs once per test process; later calls only check.
pub fn installed(test: &str) -> Option<Kubectl> {
    let k = crate::cluster(test)?;
    let mut done = INSTALLED.lock().unwrap_or_else(|e| e.into_inner());
    if !*done {
        install(&k);
        *done = true;
    }
    Some(k)
}

/// Component images built for the running tests' profile; their folder.
pub fn component_images() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let profile = if exe.to_string_lossy().contains("/release/") {
        "release"
    } else {
        "debug"
    };
    let out = repo_root().join("target/component-images");
    let status = Command::new("bash")
        .arg(repo_root().join("images/components/build.sh"))
        .arg(&out)
        .env("PROFILE", profile)
        .status()
        .expect("run images/components/build.sh");
    assert!(status.success(), "images/components/build.sh failed");
    out
}

/// The placeholder image compute runs when a VM boots from a PVC or a kernel only.
fn placeholder_image() -> PathBuf {
    let out = repo_root().join("target/component-images/placeholder.oci.tar");
    if !out.exists() {
        let status = Command::new("python3")
            .arg(repo_root().join("images/oci_image.py"))
            .args([
                "--name",
                "localhost/virtshim/placeholder:v1",
                "--entrypoint",
                "/bin/busybox",
                "--cmd",
                "true",
                "--add",
                "/bin/busybox",
                "/bin/busybox:0755",
            ])
            .arg(&out)
            .stdout(std::process::Stdio::null())
            .status()
            .expect("run images/oci_image.py");
        assert!(status.success(), "building the placeholder image failed");
    }
    out
}

/// [`EXAMPLE_KERNEL_BOOT_IMAGE`] built from the test guest (deterministic: the same guest
/// gives the same image).
fn example_kernel_boot_image() -> PathBuf {
    let guest = crate::vm::guest_images();
    let out = repo_root().join("target/component-images/example-kernel-boot.oci.tar");
    let status = Command::new("python3")
        .arg(repo_root().join("images/oci_image.py"))
        .args(["--name", EXAMPLE_KERNEL_BOOT_IMAGE, "--add"])
        .arg(guest.join("vmlinuz"))
        .arg("/boot/vmlinuz-virt")
        .arg("--add")
        .arg(guest.join("initrd.img"))
        .arg("/boot/initramfs-virt")
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("run images/oci_image.py");
    assert!(
        status.success(),
        "building {EXAMPLE_KERNEL_BOOT_IMAGE} failed"
    );
    out
}

fn ctr(args: &[&str]) {
    let out = Command::new("ctr")
        .args(["-n", "k8s.io"])
        .args(args)
        .output()
        .expect("run ctr");
    assert!(
        out.status.success(),
        "ctr {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// sha256 of the files, to tell whether the images changed since the last install.
fn digest(files: &[PathBuf]) -> String {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    for f in files {
        hash.update(std::fs::read(f).unwrap_or_default());
    }
    format!("{:x}", hash.finalize())
}

fn oci_tars(dir: &Path) -> Vec<PathBuf> {
    let mut tars: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    tars.retain(|p| p.to_string_lossy().ends_with(".oci.tar"));
    tars.sort();
    tars
}

fn must(k: &Kubectl, args: &[&str]) -> String {
    k.run(args).unwrap_or_else(|e| panic!("{e}"))
}

/// Installs virtshim (idempotent) and waits until every part of it serves.
pub fn install(k: &Kubectl) {
    let started = std::time::Instant::now();
    let mut tars = oci_tars(&component_images());
    tars.extend(oci_tars(&crate::vm::guest_images()));
    tars.push(placeholder_image());
    tars.push(example_kernel_boot_image());
    for tar in &tars {
        ctr(&["images", "import", &tar.to_string_lossy()]);
    }
    for (name, ours) in EXAMPLE_IMAGES {
        ctr(&["images", "tag", "--force", ours, name]);
    }
    // An earlier `kubectl delete -k` may still be deleting the namespace: applying into it
    // fails, and would re-create the APIServices whose dead backends then block its deletion.
    // (Only then: `kubectl wait --for=delete` on a namespace that stays waits its whole timeout,
    // which cost every test binary after the first five minutes.)
    wait_for(
        &format!("namespace {NAMESPACE} not terminating"),
        Duration::from_secs(300),
        || {
            let out = k
                .run(&[
                    "get",
                    "namespace",
                    NAMESPACE,
                    "--ignore-not-found",
                    "-o",
                    "json",
                ])
                .ok()?;
            if out.trim().is_empty() {
                return Some(());
            }
            let ns: serde_json::Value = serde_json::from_str(&out).ok()?;
            ns["metadata"]["deletionTimestamp"].is_null().then_some(())
        },
    );
    let manifests = repo_root().join("manifests");
    must(k, &["apply", "-k", &manifests.to_string_lossy()]);
    // Images are tagged v1 whatever they hold: pods of an earlier install keep the image they
    // started with, so they are replaced when the images changed since then.
    let stamp = std::env::temp_dir().join("virtshim-cluster-images.sha256");
    let images = digest(&tars);
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(images.as_str()) {
        for app in ["virtshim-controller", "virtshim-handler"] {
            let _ = k.run(&[
                "delete",
                "pod",
                "-n",
                NAMESPACE,
                "-l",
                &format!("app.kubernetes.io/name={app}"),
                "--wait=false",
            ]);
        }
        let _ = std::fs::write(&stamp, &images);
    }
    let ready = format!("{READY_LABEL}=true");
    wait_for(
        "the installer labels the node ready",
        Duration::from_secs(240),
        || {
            k.run(&["get", "nodes", "-l", &ready, "-o", "name"])
                .ok()
                .filter(|o| !o.trim().is_empty())
        },
    );
    must(
        k,
        &[
            "rollout",
            "status",
            "-n",
            NAMESPACE,
            "deployment/virtshim-controller",
            "--timeout=240s",
        ],
    );
    must(
        k,
        &[
            "rollout",
            "status",
            "-n",
            NAMESPACE,
            "daemonset/virtshim-handler",
            "--timeout=240s",
        ],
    );
    for api in [
        "v1.subresources.kubevirt.io",
        "v1alpha3.subresources.kubevirt.io",
    ] {
        must(
            k,
            &[
                "wait",
                "--for=condition=Available",
                &format!("apiservice/{api}"),
                "--timeout=120s",
            ],
        );
    }
    wait_for(
        "the webhooks carry the controller's CA",
        Duration::from_secs(60),
        || {
            k.run(&[
                "get",
                "validatingwebhookconfigurations",
                "-o",
                "jsonpath={.items[*].webhooks[*].clientConfig.caBundle}",
            ])
            .ok()
            .filter(|o| !o.trim().is_empty())
        },
    );
    wait_for_garbage_collector(k);
    println!(
        "virtshim installed from manifests/ in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// Waits until Kubernetes' garbage collector watches VMs and VMIs.
///
/// The collector finds resources that appeared after it started (CRDs just applied) by
/// rediscovering the API every 30 s. Until then it has no VM nor VMI in its graph, and a
/// `kubectl delete vm --cascade=orphan` in that window is carried out without the VMI: the VM
/// goes, and when the collector then meets the VMI, its owner is gone and it deletes the VMI
/// the user meant to keep. Clusters that installed KubeVirt half a minute earlier have the
/// same window; tests that start right after `kubectl apply -k manifests/` must not fall in
/// it (vm_cirros_follows_kubevirt_run_strategies did, in CI).
///
/// The probe: a ConfigMap owning a Halted VM and a VMI no node can take (so no guest boots),
/// the ConfigMap deleted, and both dependents gone, which only the collector, watching both
/// kinds, does.
fn wait_for_garbage_collector(k: &Kubectl) {
    let name = format!("virtshim-gc-probe-{}", std::process::id());
    // Names of their own: a VM adopts an ownerless VMI of its name, and would then delete it.
    let (vm, vmi) = (format!("{name}-vm"), format!("{name}-vmi"));
    let owner = must(
        k,
        &[
            "create",
            "configmap",
            "-n",
            NAMESPACE,
            &name,
            "-o",
            "jsonpath={.metadata.uid}",
        ],
    );
    let owner_reference = serde_json::json!([{
        "apiVersion": "v1", "kind": "ConfigMap", "name": name, "uid": owner.trim(),
    }]);
    let vmi_spec = serde_json::json!({
        "domain": {
            "memory": {"guest": "64Mi"},
            "devices": {"autoattachPodInterface": false},
            "firmware": {"kernelBoot": {
                "kernelArgs": "console=ttyS0",
                "container": {
                    "image": crate::vm::KERNEL_BOOT_IMAGE,
                    "kernelPath": "/boot/vmlinuz",
                    "initrdPath": "/boot/initrd.img",
                },
            }},
        },
        "nodeSelector": {"kubernetes.io/hostname": "virtshim-gc-probe-no-such-node"},
        "terminationGracePeriodSeconds": 0,
    });
    let objects = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": [
        {
            "apiVersion": "kubevirt.io/v1",
            "kind": "VirtualMachine",
            "metadata": {"name": vm, "ownerReferences": owner_reference},
            "spec": {"runStrategy": "Halted", "template": {"spec": vmi_spec}},
        },
        {
            "apiVersion": "kubevirt.io/v1",
            "kind": "VirtualMachineInstance",
            "metadata": {"name": vmi, "ownerReferences": owner_reference},
            "spec": vmi_spec,
        },
    ]});
    k.run_stdin(
        &["create", "-n", NAMESPACE, "-f", "-"],
        Some(&objects.to_string()),
    )
    .unwrap_or_else(|e| panic!("the garbage collector's probe objects: {e}"));
    must(k, &["delete", "configmap", "-n", NAMESPACE, &name]);
    wait_for(
        "the garbage collector watches VMs and VMIs",
        Duration::from_secs(120),
        || {
            (k.get_json(NAMESPACE, "vm", &vm).is_none()
                && k.get_json(NAMESPACE, "vmi", &vmi).is_none())
            .then_some(())
        },
    );
}

/// A namespace of a test's own (made afresh), deleted without waiting when dropped.
#[derive(Debug)]
pub struct Namespace<'a> {
    k: &'a Kubectl,
    pub name: String,
}

impl<'a> Namespace<'a> {
    /// Deletes a leftover namespace of that name (waiting for it to go), then creates it.
    pub fn new(k: &'a Kubectl, name: &str) -> Self {
        let _ = k.run(&[
            "delete",
            "namespace",
            name,
            "--wait=true",
            "--ignore-not-found",
        ]);
        k.run(&["create", "namespace", name])
            .unwrap_or_else(|e| panic!("expected namespace {name} to be created: {e}"));
        Self {
            k,
            name: name.to_owned(),
        }
    }
}

impl Drop for Namespace<'_> {
    fn drop(&mut self) {
        let _ = self
            .k
            .run(&["delete", "namespace", &self.name, "--wait=false"]);
    }
}

/// The objects of `kind` in `ns` matching the label `selector` (empty when none or kubectl
/// fails).
pub fn list(k: &Kubectl, ns: &str, kind: &str, selector: &str) -> Vec<Value> {
    k.run(&["get", "-n", ns, kind, "-l", selector, "-o", "json"])
        .ok()
        .and_then(|s| serde_json::from_str::<Value>(&s).ok())
        .and_then(|v| v["items"].as_array().cloned())
        .unwrap_or_default()
}

/// The launcher pods of the VMI with `uid` (label `kubevirt.io/created-by`).
pub fn vmi_pods(k: &Kubectl, ns: &str, uid: &str) -> Vec<Value> {
    list(k, ns, "pods", &format!("kubevirt.io/created-by={uid}"))
}

/// A VMI's status in one line: phase, node, interfaces, conditions.
pub fn vmi_summary(vmi: &Value) -> String {
    let status = &vmi["status"];
    let conditions: Vec<String> = status["conditions"]
        .as_array()
        .map(|c| {
            c.iter()
                .map(|c| {
                    format!(
                        "{}={} {} {}",
                        c["type"].as_str().unwrap_or("?"),
                        c["status"].as_str().unwrap_or("?"),
                        c["reason"].as_str().unwrap_or(""),
                        c["message"].as_str().unwrap_or("")
                    )
                    .trim_end()
                    .to_owned()
                })
                .collect()
        })
        .unwrap_or_default();
    format!(
        "VMI {} phase={} nodeName={} interfaces={} conditions=[{}]",
        vmi["metadata"]["name"].as_str().unwrap_or("?"),
        status["phase"],
        status["nodeName"],
        status["interfaces"],
        conditions.join("; ")
    )
}

/// A pod's status in one line: phase, node, IP, its containers' states.
pub fn pod_summary(pod: &Value) -> String {
    let containers: Vec<String> = pod["status"]["containerStatuses"]
        .as_array()
        .map(|c| {
            c.iter()
                .map(|c| format!("{}: {}", c["name"].as_str().unwrap_or("?"), c["state"]))
                .collect()
        })
        .unwrap_or_default();
    format!(
        "pod {} phase={} nodeName={} podIP={} containers=[{}]",
        pod["metadata"]["name"].as_str().unwrap_or("?"),
        pod["status"]["phase"],
        pod["spec"]["nodeName"],
        pod["status"]["podIP"],
        containers.join("; ")
    )
}

/// Whether the VMI is on the pod network (a network with `pod`; none given means KubeVirt's
/// default one unless `autoattachPodInterface: false`).
pub fn on_pod_network(vmi: &Value) -> bool {
    match vmi["spec"]["networks"].as_array() {
        Some(networks) if !networks.is_empty() => networks.iter().any(|n| n.get("pod").is_some()),
        _ => vmi["spec"]["domain"]["devices"]["autoattachPodInterface"] != false,
    }
}

/// A VMI running as KubeVirt reports one, and its pod, as [`running_vmi`] saw them.
#[derive(Debug, Clone)]
pub struct RunningVmi {
    pub vmi: Value,
    pub pod: Value,
}

impl RunningVmi {
    /// The launcher pod's name.
    pub fn pod_name(&self) -> &str {
        self.pod["metadata"]["name"].as_str().unwrap_or_default()
    }
}

/// What is wrong with VMI `name` as a running one, or it and its pod: `Running`, one launcher
/// pod (RuntimeClass `virtshim`) whose node is `status.nodeName`, the pod's IP in
/// `status.interfaces[0].ipAddress` when the VMI is on the pod network, condition `Ready` true.
pub fn check_running_vmi(k: &Kubectl, ns: &str, name: &str) -> Result<RunningVmi, String> {
    let vmi = k
        .get_json(ns, "vmi", name)
        .ok_or_else(|| format!("no VMI {name}"))?;
    let uid = vmi["metadata"]["uid"].as_str().unwrap_or_default();
    let pods = vmi_pods(k, ns, uid);
    let [pod] = pods.as_slice() else {
        return Err(format!(
            "{} with {} launcher pods, expected 1: [{}]",
            vmi_summary(&vmi),
            pods.len(),
            pods.iter().map(pod_summary).collect::<Vec<_>>().join(", ")
        ));
    };
    let seen = || format!("{}; {}", vmi_summary(&vmi), pod_summary(pod));
    let mut wrong = Vec::new();
    if vmi["status"]["phase"] != "Running" {
        wrong.push("phase Running".to_owned());
    }
    if pod["spec"]["runtimeClassName"] != "virtshim" {
        wrong.push(format!(
            "runtimeClassName virtshim (got {})",
            pod["spec"]["runtimeClassName"]
        ));
    }
    if vmi["status"]["nodeName"].is_null() || vmi["status"]["nodeName"] != pod["spec"]["nodeName"] {
        wrong.push("status.nodeName equal to the pod's node".to_owned());
    }
    if on_pod_network(&vmi) {
        let ip = pod["status"]["podIP"].as_str().unwrap_or_default();
        if ip.is_empty() || vmi["status"]["interfaces"][0]["ipAddress"].as_str() != Some(ip) {
            wrong.push("status.interfaces[0].ipAddress equal to the pod's IP".to_owned());
        }
    }
    let ready = vmi["status"]["conditions"].as_array().is_some_and(|c| {
        c.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    });
    if !ready {
        wrong.push("condition Ready=True".to_owned());
    }
    if wrong.is_empty() {
        Ok(RunningVmi {
            vmi,
            pod: pod.clone(),
        })
    } else {
        Err(format!("expected {}; seen {}", wrong.join(", "), seen()))
    }
}

/// Waits until [`check_running_vmi`] passes; `Err` shows what was last seen.
pub fn running_vmi(
    k: &Kubectl,
    ns: &str,
    name: &str,
    timeout: Duration,
) -> Result<RunningVmi, String> {
    poll(
        &format!("VMI {ns}/{name} Running with its pod's IP and node, Ready"),
        timeout,
        || check_running_vmi(k, ns, name),
    )
}

/// QEMU processes whose command line names the VMI's namespace (the domain is
/// `<namespace>_<name>`).
pub fn qemu_pids(ns: &str) -> Vec<u32> {
    let domain_prefix = format!("guest={ns}_");
    crate::vm::qemu_pids_where(|cmdline| cmdline.contains(&domain_prefix))
}

/// Prints what a failed test needs to be understood after the fact, before its namespace goes:
/// the namespace's VMs, VMIs, pods and events, the lines of virtshim's controller log that name
/// the namespace, and those of the controller-manager's (its garbage collector, at
/// `--vmodule=garbagecollector=2,graph_builder=2`, logs each object it considers and deletes).
/// CI keeps only the test output.
pub fn post_mortem(k: &Kubectl, ns: &str) {
    println!("--- post-mortem of namespace {ns}");
    for args in [
        &["get", "-n", ns, "vm,vmi,pods", "-o", "wide"][..],
        &["get", "-n", ns, "events", "--sort-by=.lastTimestamp"][..],
    ] {
        match k.run(args) {
            Ok(out) => println!("$ kubectl {}\n{out}", args.join(" ")),
            Err(e) => println!("{e}"),
        }
    }
    // Every replica's log (`deploy/…` would pick one, not necessarily the leader).
    let controller = k.run(&[
        "logs",
        "-n",
        NAMESPACE,
        "-l",
        "app.kubernetes.io/name=virtshim-controller",
        "--prefix",
        "--tail=5000",
    ]);
    match controller {
        Ok(log) => print_lines_naming("virtshim-controller", &log, ns),
        Err(e) => println!("{e}"),
    }
    let dir = std::env::var("VIRTSHIM_CLUSTER_DIR")
        .unwrap_or_else(|_| "/var/lib/virtshim-cluster".to_owned());
    let path = Path::new(&dir).join("log/controller-manager.log");
    match std::fs::read(&path) {
        Ok(log) => print_lines_naming(
            "kube-controller-manager",
            &String::from_utf8_lossy(&log),
            ns,
        ),
        Err(e) => println!("{}: {e}", path.display()),
    }
    println!("--- end of the post-mortem of {ns}");
}

/// The last 200 lines of `log` that contain `needle`.
fn print_lines_naming(what: &str, log: &str, needle: &str) {
    let lines: Vec<&str> = log.lines().filter(|l| l.contains(needle)).collect();
    println!("{what}: {} lines name {needle}; the last 200:", lines.len());
    for line in &lines[lines.len().saturating_sub(200)..] {
        println!("  {line}");
    }
}
