//! `virtctl validate` as a user runs it: files, folders, stdin, output formats, exit status.

#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn virtctl(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_virtctl"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run virtctl");
    let mut input = child.stdin.take().expect("stdin");
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).expect("write stdin");
    }
    drop(input);
    child.wait_with_output().expect("wait")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn examples() -> String {
    std::env::var("VIRTSHIM_EXAMPLES").unwrap_or_else(|_| {
        format!(
            "{}/../../shared/examples/kubevirt",
            env!("CARGO_MANIFEST_DIR")
        )
    })
}

const GOOD: &str = "apiVersion: kubevirt.io/v1\nkind: VirtualMachineInstance\nmetadata: {name: good}\nspec:\n  domain: {devices: {}, memory: {guest: 64Mi}}\n";
const BAD: &str = "apiVersion: kubevirt.io/v1\nkind: VirtualMachineInstance\nmetadata: {name: bad}\nspec:\n  domain:\n    devices: {disks: [{name: a}, {name: b, disk: {bus: foo}}]}\n    memory: {guest: 64Mi}\n  volumes: [{name: a, containerDisk: {image: 'x:1'}}, {name: b, containerDisk: {image: 'y:1'}}]\n";

#[test]
fn a_valid_object_prints_its_defaults_as_yaml() {
    let out = virtctl(&["validate", "-f", "-", "-o", "yaml"], Some(GOOD));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for expected in [
        "type: q35",
        "bridge: {}",
        "name: default",
        "model: host-model",
        "enabled: true",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
}

#[test]
fn json_output_of_several_objects_is_a_list() {
    let two = format!("{GOOD}---\n{}", GOOD.replace("name: good", "name: good2"));
    let out = virtctl(&["validate", "-f", "-", "-o", "json"], Some(&two));
    assert!(out.status.success());
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(list["kind"], "List");
    assert_eq!(list["items"][1]["metadata"]["name"], "good2");
}

#[test]
fn an_invalid_object_names_the_field_and_exits_1() {
    let out = virtctl(&["validate", "-f", "-"], Some(BAD));
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(r#"VirtualMachineInstance "bad" is invalid"#),
        "{stderr}"
    );
    assert!(
        stderr.contains(r#"spec.domain.devices.disks[1].disk.bus: unsupported value "foo" (supported: "virtio", "sata", "scsi", "usb")"#),
        "{stderr}"
    );
    assert!(text(&out.stdout).is_empty());
}

#[test]
fn valid_and_invalid_documents_are_each_reported() {
    let both = format!("{GOOD}---\n{BAD}---\nkind: Pod\napiVersion: v1\n");
    let out = virtctl(&["validate", "-f", "-"], Some(&both));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stdout),
        "virtualmachineinstance.kubevirt.io/good is valid\n"
    );
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("document 3: v1 Pod is not a KubeVirt"),
        "{stderr}"
    );
}

#[test]
fn the_kubevirt_examples_folder() {
    let out = virtctl(&["validate", "-f", &examples()], None);
    // Two examples use features virtshim does not have; everything else is valid.
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("spec.volumes[0].hostDisk: not supported by virtshim"),
        "{stderr}"
    );
    assert!(
        stderr.contains("spec.networks[0].multus: not supported by virtshim"),
        "{stderr}"
    );
    assert_eq!(
        text(&out.stdout).lines().count(),
        15,
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn yaml_syntax_errors_and_missing_files_are_clear() {
    let out = virtctl(&["validate", "-f", "-"], Some("a: [unclosed\n"));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("not valid YAML"),
        "{}",
        text(&out.stderr)
    );
    let out = virtctl(&["validate", "-f", "/nonexistent/vm.yaml"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("reading /nonexistent/vm.yaml"),
        "{}",
        text(&out.stderr)
    );
}
