//! Pod annotations are user input: anyone who may create a pod can set `virtshim.io/vmi`.
//! Each hostile annotation or image here must make the shim refuse the container (containerd's
//! CRI creates the task, and so calls the shim's Create, in StartContainer) with an error that
//! says what is wrong, start no QEMU, read nothing outside the container's root filesystem, and
//! leave nothing behind.

#![allow(clippy::unwrap_used)]

use serde_json::{json, Value};
use virtctl::cri::api;
use virtctl::local;
use virtshim_api::manifest::parse_documents;
use virtshim_api::pod::VMI_ANNOTATION;
use virtshim_tests::oci::OciImage;
use virtshim_tests::vm;

const SYMLINK_IMAGE: &str = "localhost/virtshim/hostile-symlink:1";
const BACKING_IMAGE: &str = "localhost/virtshim/hostile-backing:1";

fn base_plan() -> local::Plan {
    let yaml = format!(
        "apiVersion: kubevirt.io/v1\nkind: VirtualMachineInstance\nmetadata: {{name: victim}}\nspec:\n  domain:\n    memory: {{guest: 128Mi}}\n    devices:\n      disks:\n      - {{name: root, disk: {{bus: virtio}}}}\n  volumes:\n  - {{name: root, containerDisk: {{image: '{}'}}}}\n",
        vm::CONTAINER_DISK_IMAGE
    );
    local::plan(parse_documents(&yaml).remove(0).unwrap()).unwrap()
}

/// Runs the plan's pod with `annotation` (None: no annotation) and `image` for compute;
/// returns StartContainer's error text after checking nothing ran and cleaning up.
fn refused(
    containerd: &virtshim_tests::containerd::PrivateContainerd,
    annotation: Option<String>,
    image: &str,
) -> String {
    let cri = containerd.cri().unwrap();
    let plan = base_plan();
    let mut sandbox = local::sandbox_config(&plan);
    let mut config = vm::compute_config(&plan).unwrap();
    config.image = Some(virtctl::cri::image_spec(image));
    for annotations in [&mut sandbox.annotations, &mut config.annotations] {
        match &annotation {
            Some(text) => annotations.insert(VMI_ANNOTATION.to_owned(), text.clone()),
            None => annotations.remove(VMI_ANNOTATION),
        };
    }
    std::fs::create_dir_all(&sandbox.log_directory).unwrap();
    let sandbox_id = cri.run_pod_sandbox(sandbox.clone(), "virtshim").unwrap();
    let id = cri.create_container(&sandbox_id, config, sandbox).unwrap();
    let error = cri
        .start_container(&id)
        .expect_err("the shim must refuse this container")
        .to_string();
    // Refused before anything ran: no QEMU, no disk overlay, the container never started.
    assert!(
        vm::qemu_pids(&sandbox_id).is_empty(),
        "QEMU started for a refused container"
    );
    let disks = vm::pod_dirs(&sandbox_id)[1].join("disks");
    assert!(
        !disks.exists() || std::fs::read_dir(&disks).unwrap().count() == 0,
        "disk files left in {}",
        disks.display()
    );
    let status = cri.container_status(&id, false).unwrap().status.unwrap();
    assert_ne!(status.state, api::ContainerState::ContainerRunning as i32);
    vm::remove_pod(&cri, &sandbox_id);
    error
}

fn annotation_with(edit: impl FnOnce(&mut Value)) -> Option<String> {
    let plan = base_plan();
    let mut value: Value =
        serde_json::from_str(&plan.pod.metadata.annotations.as_ref().unwrap()[VMI_ANNOTATION])
            .unwrap();
    edit(&mut value);
    Some(value.to_string())
}

fn hostile_images(containerd: &virtshim_tests::containerd::PrivateContainerd) {
    // A containerDisk whose disk is a symlink to a host file.
    let symlink = OciImage::new(SYMLINK_IMAGE)
        .add_symlink("/disk/evil.img", "/etc/hostname")
        .unwrap();
    containerd.import_image(&symlink).unwrap();
    // A qcow2 whose backing file names a host file: QEMU would open it through the header.
    let dir = tempfile::tempdir().unwrap();
    let qcow = dir.path().join("evil.qcow2");
    let status = std::process::Command::new("qemu-img")
        .args([
            "create",
            "-q",
            "-f",
            "qcow2",
            "-F",
            "raw",
            "-b",
            "/etc/hostname",
        ])
        .arg(&qcow)
        .arg("1M")
        .status()
        .unwrap();
    assert!(status.success());
    let backing = OciImage::new(BACKING_IMAGE)
        .add_file(&qcow, "/disk/evil.qcow2", 0o444)
        .unwrap();
    containerd.import_image(&backing).unwrap();
}

/// The tests here run one at a time: one compares the node's network before and after each
/// pod, and the other's pods change it while they live.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn hostile_annotations_and_images_are_refused_cleanly() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let test = "hostile_annotations_and_images_are_refused_cleanly";
    let Some(containerd) = vm::containerd(test) else {
        return;
    };
    hostile_images(&containerd);
    let image = vm::CONTAINER_DISK_IMAGE;
    let cases: Vec<(&str, Option<String>, &str, &str)> = vec![
        ("invalid JSON", Some("{\"apiVersion\": \"kubevirt.io/v1\", ".to_owned()), image, "virtshim.io/vmi annotation is invalid: not valid JSON"),
        ("no annotation", None, image, "virtshim.io/vmi annotation is invalid: missing"),
        ("not a VMI", Some(json!({"apiVersion": "v1", "kind": "Pod"}).to_string()), image, "v1 Pod is not a KubeVirt"),
        (
            "XML in the name",
            annotation_with(|v| v["metadata"]["name"] = json!("x'/><devices><disk type='file'>")),
            image,
            "metadata.name must be a DNS subdomain and metadata.namespace a DNS label",
        ),
        (
            "XML in a disk serial",
            annotation_with(|v| v["spec"]["domain"]["devices"]["disks"][0]["serial"] = json!("</serial><x>")),
            image,
            "spec.domain.devices.disks[0].serial: invalid value",
        ),
        (
            "a path with ..",
            annotation_with(|v| v["spec"]["volumes"][0]["containerDisk"]["path"] = json!("/disk/../../../etc/shadow")),
            image,
            "spec.volumes[0].containerDisk.path: invalid value \"/disk/../../../etc/shadow\": must be a normalized path",
        ),
        (
            "an absolute host path",
            annotation_with(|v| v["spec"]["volumes"][0]["containerDisk"]["path"] = json!("/etc/shadow")),
            image,
            "disk \"root\": /etc/shadow does not exist in the image",
        ),
        (
            "a symlink out of the image",
            annotation_with(|v| v["spec"]["volumes"][0]["containerDisk"]["image"] = json!(SYMLINK_IMAGE)),
            SYMLINK_IMAGE,
            "disk \"root\": /disk/evil.img is or passes through a symlink, which is not allowed",
        ),
        (
            "a qcow2 backed by a host file",
            annotation_with(|v| v["spec"]["volumes"][0]["containerDisk"]["image"] = json!(BACKING_IMAGE)),
            BACKING_IMAGE,
            "disk \"root\": the image has a backing file, which is not allowed",
        ),
        (
            "absurd memory",
            annotation_with(|v| v["spec"]["domain"]["memory"]["guest"] = json!("64Ti")),
            image,
            "spec.domain.memory.guest: invalid value \"64Ti\": must be between 1M",
        ),
        (
            "missing memory",
            annotation_with(|v| {
                v["spec"]["domain"]["memory"] = json!({});
            }),
            image,
            "spec.domain.memory.guest: required value",
        ),
        (
            "a wrong type",
            annotation_with(|v| v["spec"]["domain"]["cpu"] = json!({"cores": "many"})),
            image,
            "spec.domain.cpu.cores: invalid type",
        ),
    ];
    for (name, annotation, image, expected) in cases {
        let error = refused(&containerd, annotation, image);
        assert!(
            error.contains(expected),
            "{name}: expected {expected:?} in:\n{error}"
        );
        println!(
            "{name}: refused: …{}",
            &error[error.find(expected).unwrap_or(0)..]
        );
    }
    containerd.stop().unwrap();
}

/// What a pod could change on the node's network if the shim worked in the node's namespace:
/// its links, routes and firewall rules, as text (iptables' packet counters left out).
fn host_network() -> String {
    let run = |program: &str, args: &[&str]| {
        let out = std::process::Command::new(program)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("expected {program} to run: {e}"));
        assert!(out.status.success(), "{program} {args:?} failed");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let rules: String = run("iptables-save", &[])
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            // ":CHAIN POLICY [packets:bytes]": the counters move with any traffic.
            match l.rsplit_once(" [") {
                Some((head, _)) if l.starts_with(':') => format!("{head}\n"),
                _ => format!("{l}\n"),
            }
        })
        .collect();
    // A bridge's carrier follows its ports (containerd's CNI bridge loses it a moment after its
    // last pod's veth is gone): link state, not configuration.
    let links = run("ip", &["-o", "link", "show"])
        .replace("NO-CARRIER,", "")
        .split(' ')
        .scan(false, |after_state, word| {
            let keep = !*after_state && word != "state";
            *after_state = word == "state";
            Some(if keep { word } else { "" })
        })
        .collect::<Vec<_>>()
        .join(" ");
    format!(
        "{links}{}{}{rules}",
        // An address's duplicate-address detection ends on its own, seconds after it was added.
        run("ip", &["-o", "address", "show"]).replace(" tentative", ""),
        run("ip", &["route", "show", "table", "all"]).replace(" linkdown", ""),
    )
}

/// Waits until the node's network reads the same twice, 2 s apart (at most 30 s).
fn settle() {
    let mut last = host_network();
    for _ in 0..15 {
        std::thread::sleep(std::time::Duration::from_secs(2));
        let now = host_network();
        if now == last {
            return;
        }
        last = now;
    }
}

/// A pod the kubelet would make from a pod spec with `edit` applied to its CRI requests.
type Edit = fn(&mut api::PodSandboxConfig, &mut api::ContainerConfig);

/// What the kubelet sends for a pod sharing one of the node's namespaces: the namespace mode
/// `Node` on the sandbox and on the container alike.
fn share_node(
    sandbox: &mut api::PodSandboxConfig,
    container: &mut api::ContainerConfig,
    mode: fn(&mut api::NamespaceOption),
) {
    let mut node = api::NamespaceOption::default();
    mode(&mut node);
    sandbox
        .linux
        .get_or_insert_default()
        .security_context
        .get_or_insert_default()
        .namespace_options = Some(node.clone());
    container
        .linux
        .get_or_insert_default()
        .security_context
        .get_or_insert_default()
        .namespace_options = Some(node);
}

/// Runs the pod as the kubelet would; returns the error of whichever call the shim refused
/// (RunPodSandbox for the sandbox, StartContainer for compute), after checking that no QEMU
/// ran, nothing of the pod is left, and the node's network is as it was.
fn refused_host_access(
    containerd: &virtshim_tests::containerd::PrivateContainerd,
    edit: Edit,
) -> String {
    let cri = containerd.cri().unwrap();
    let plan = base_plan();
    let mut sandbox = local::sandbox_config(&plan);
    let mut config = vm::compute_config(&plan).unwrap();
    edit(&mut sandbox, &mut config);
    std::fs::create_dir_all(&sandbox.log_directory).unwrap();
    let before = host_network();
    let error = match cri.run_pod_sandbox(sandbox.clone(), "virtshim") {
        Err(e) => e.to_string(),
        Ok(sandbox_id) => {
            let started = cri
                .create_container(&sandbox_id, config, sandbox)
                .and_then(|id| cri.start_container(&id));
            assert!(vm::qemu_pids(&sandbox_id).is_empty(), "QEMU started");
            vm::remove_pod(&cri, &sandbox_id);
            started
                .expect_err("the shim must refuse this pod")
                .to_string()
        }
    };
    let after = host_network();
    if before != after {
        let changed: Vec<_> = after.lines().filter(|l| !before.contains(l)).collect();
        let gone: Vec<_> = before.lines().filter(|l| !after.contains(l)).collect();
        panic!("the node's network changed:\nnew: {changed:#?}\ngone: {gone:#?}");
    }
    local::remove_pod_volumes(&plan.uid);
    error
}

#[test]
fn host_namespaces_privilege_host_paths_and_foreign_vmis_are_refused() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let test = "host_namespaces_privilege_host_paths_and_foreign_vmis_are_refused";
    let Some(containerd) = vm::containerd(test) else {
        return;
    };
    // containerd's CNI bridge plugin makes the bridge with the first pod on the pod network and
    // keeps it, and the kernel gives it an IPv6 link-local address once a port brings its
    // carrier up: one pod first, until the node's network stops changing, so that what follows
    // compares like with like.
    {
        let cri = containerd.cri().unwrap();
        let sandbox = local::sandbox_config(&base_plan());
        std::fs::create_dir_all(&sandbox.log_directory).unwrap();
        let id = cri.run_pod_sandbox(sandbox, "virtshim").unwrap();
        settle();
        vm::remove_pod(&cri, &id);
        settle();
    }
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "hostNetwork",
            |sandbox, container| {
                share_node(sandbox, container, |o| o.network = api::NamespaceMode::Node as i32)
            },
            "spec.hostNetwork: a VM pod must not share the node's network namespace",
        ),
        (
            "hostPID",
            |sandbox, container| {
                share_node(sandbox, container, |o| o.pid = api::NamespaceMode::Node as i32)
            },
            "spec.hostPID: a VM pod must not share the node's PID namespace",
        ),
        (
            "hostIPC",
            |sandbox, container| {
                share_node(sandbox, container, |o| o.ipc = api::NamespaceMode::Node as i32)
            },
            "spec.hostIPC: a VM pod must not share the node's IPC namespace",
        ),
        (
            "privileged",
            |sandbox, container| {
                sandbox.linux.get_or_insert_default().security_context.get_or_insert_default().privileged = true;
                container.linux.get_or_insert_default().security_context.get_or_insert_default().privileged = true;
            },
            "securityContext.privileged: a VM pod's containers must not be privileged",
        ),
        (
            "an added capability",
            |_, container| {
                container.linux.get_or_insert_default().security_context.get_or_insert_default().capabilities =
                    Some(api::Capability { add_capabilities: vec!["NET_ADMIN".into()], ..Default::default() });
            },
            "spec.containers[compute].securityContext.capabilities.add: CAP_NET_ADMIN not allowed",
        ),
        (
            "a hostPath volume",
            |_, container| {
                container.mounts.push(api::Mount {
                    container_path: "/var/run/virtshim/volumes/root".into(),
                    host_path: "/etc".into(),
                    ..Default::default()
                });
            },
            "spec.containers[compute].volumeMounts[/var/run/virtshim/volumes/root]: host path /etc is not a volume the kubelet made for this pod",
        ),
    ];
    for (name, edit, expected) in cases {
        let error = refused_host_access(&containerd, edit);
        assert!(
            error.contains(expected),
            "{name}: expected {expected:?} in:\n{error}"
        );
        println!(
            "{name}: refused, the node's network unchanged: …{}",
            &error[error.find(expected).unwrap_or(0)..]
        );
    }

    // The annotation says which VMI the pod runs; containerd says which pod it is.
    let image = vm::CONTAINER_DISK_IMAGE;
    for (name, annotation, expected) in [
        (
            "another namespace's VMI",
            annotation_with(|v| v["metadata"]["namespace"] = json!("kube-system")),
            "metadata.namespace (in the virtshim.io/vmi annotation): names namespace \"kube-system\", but the pod is in \"default\"",
        ),
        (
            "a VMI the pod was not made for",
            annotation_with(|v| v["metadata"]["name"] = json!("other")),
            "metadata.name (in the virtshim.io/vmi annotation): names VMI \"other\", whose pod would be named \"virt-launcher-other-\"",
        ),
    ] {
        let error = refused(&containerd, annotation, image);
        assert!(error.contains(expected), "{name}: expected {expected:?} in:\n{error}");
        println!("{name}: refused: …{}", &error[error.find(expected).unwrap_or(0)..]);
    }
    containerd.stop().unwrap();
}
