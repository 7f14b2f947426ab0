//! virtshim installed on the test cluster exactly as the README's "Install on a cluster" tells a
//! user: the component images and the test guests imported into the node's containerd (no
//! registry), the guests also tagged with the names KubeVirt's examples use, `kubectl apply -k
//! manifests/`, then the installer labelling the node, the controller Available, the handler
//! Ready, the APIServices Available and the webhooks given their CA.
//!
//! The images are built with the profile of the running tests (debug under `make test`:
//! `make images` builds the same images in release mode for users).

use crate::{repo_root, wait_for, Kubectl};
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
    for tar in &tars {
        ctr(&["images", "import", &tar.to_string_lossy()]);
    }
    for (name, ours) in EXAMPLE_IMAGES {
        ctr(&["images", "tag", "--force", ours, name]);
    }
    // An earlier `kubectl delete -k` may still be deleting the namespace: applying into it
    // fails, and would re-create the APIServices whose dead backends then block its deletion.
    let _ = k.run(&[
        "wait",
        "--for=delete",
        &format!("namespace/{NAMESPACE}"),
        "--timeout=300s",
    ]);
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
    println!(
        "virtshim installed from manifests/ in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
