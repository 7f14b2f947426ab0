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
    let compute = plan
        .pod
        .spec
        .as_ref()
        .unwrap()
        .containers
        .last()
        .unwrap()
        .clone();
    let mut config = local::container_config(&plan, &compute).unwrap();
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

#[test]
fn hostile_annotations_and_images_are_refused_cleanly() {
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
