//! Validation rules, table-driven: each bad spec and the exact error lines it must produce.

#![allow(clippy::unwrap_used)]

mod common;

use virtshim_api::manifest::{parse_documents, parse_json, Object};

const VMI: &str = r##"
apiVersion: kubevirt.io/v1
kind: VirtualMachineInstance
metadata: {name: t}
spec:
  domain:
    memory: {guest: 64Mi}
    devices:
      disks:
      - {name: root, disk: {bus: virtio}}
      - {name: ci, disk: {bus: virtio}}
  volumes:
  - {name: root, containerDisk: {image: 'localhost/guest:v1'}}
  - name: ci
    cloudInitNoCloud: {userData: "#!/bin/sh\necho hi\n"}
"##;

fn errors_of(yaml: &str) -> Vec<String> {
    match common::one(yaml).validate() {
        Ok(()) => vec![],
        Err(e) => e.iter().map(|e| e.to_string()).collect(),
    }
}

#[test]
fn the_base_is_valid() {
    assert_eq!(errors_of(VMI), Vec::<String>::new());
}

#[test]
fn virtshim_volume_names_are_reserved() {
    let yaml = VMI
        .replacen("{name: root, disk:", "{name: virtshim-root, disk:", 1)
        .replacen(
            "{name: root, containerDisk:",
            "{name: virtshim-root, containerDisk:",
            1,
        );
    assert_eq!(
        errors_of(&yaml),
        vec![r#"spec.volumes[0].name: invalid value "virtshim-root": names starting with "virtshim-" are reserved for virtshim's own pod volumes"#.to_owned()]
    );
}

#[test]
fn ssh_keys_ride_on_the_cloud_init_disk() {
    let yaml = VMI.replacen(
        "  volumes:",
        "  accessCredentials: [{sshPublicKey: {source: {secret: {secretName: my-keys}}, propagationMethod: {noCloud: {}}}}]\n  volumes:",
        1,
    );
    assert_eq!(errors_of(&yaml), Vec::<String>::new());
}

#[test]
fn each_bad_field_is_named_with_its_path() {
    let cases: &[(&str, &str, &str)] = &[
        ("{name: ci, disk: {bus: virtio}}", "{name: ci, disk: {bus: foo}}",
         r#"spec.domain.devices.disks[1].disk.bus: unsupported value "foo" (supported: "virtio", "sata", "scsi", "usb")"#),
        ("{name: ci, disk: {bus: virtio}}", "{name: ci, cdrom: {bus: virtio}}",
         r#"spec.domain.devices.disks[1].cdrom.bus: invalid value "virtio": a CD-ROM cannot sit on the virtio bus; use sata, scsi or usb"#),
        ("{name: ci, disk: {bus: virtio}}", "{name: ci, lun: {}}",
         "spec.domain.devices.disks[1].lun: not supported by virtshim: SCSI LUN passthrough is not implemented; use disk"),
        ("{name: ci, disk: {bus: virtio}}", "{name: ci, disk: {}, cdrom: {}}",
         "spec.domain.devices.disks[1]: forbidden: only one of disk, cdrom and lun may be set"),
        ("{name: ci, disk: {bus: virtio}}", "{name: root, disk: {}}",
         r#"spec.domain.devices.disks[1].name: duplicate value "root""#),
        ("{name: ci, disk: {bus: virtio}}", "{name: nope, disk: {}}",
         r#"spec.domain.devices.disks[1].name: invalid value "nope": no volume of this name in spec.volumes"#),
        ("{name: ci, disk: {bus: virtio}}", "{name: ci, disk: {}, serial: 'a<b>'}",
         r#"spec.domain.devices.disks[1].serial: invalid value "a<b>": must be 1 to 20 of letters, digits, '_', '.', '+', '-'"#),
        ("{name: ci, disk: {bus: virtio}}", "{name: ci, disk: {}, bootOrder: 0}",
         r#"spec.domain.devices.disks[1].bootOrder: invalid value "0": must be 1 or more"#),
        ("memory: {guest: 64Mi}", "memory: {guest: 64Ti}",
         r#"spec.domain.memory.guest: invalid value "64Ti": must be between 1M and 17592186044416 bytes (16Ti)"#),
        ("memory: {guest: 64Mi}", "memory: {guest: lots}",
         r#"spec.domain.memory.guest: invalid value "lots": quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"#),
        ("memory: {guest: 64Mi}", "memory: {guest: 64Mi}\n    cpu: {cores: 600}",
         r#"spec.domain.cpu: invalid value "sockets=1 cores=600 threads=1": sockets × cores × threads must be at most 512"#),
        ("memory: {guest: 64Mi}", "memory: {guest: 64Mi}\n    machine: {type: pc}",
         r#"spec.domain.machine.type: unsupported value "pc" (supported: "q35", "pc-q35-*")"#),
        ("memory: {guest: 64Mi}", "memory: {guest: 64Mi}\n    resources: {limits: {memory: 32Mi}}",
         r#"spec.domain.memory.guest: invalid value "64Mi": must be less than or equal to spec.domain.resources.limits.memory"#),
        ("image: 'localhost/guest:v1'", "image: 'localhost/guest:v1', path: /disk/../../etc/shadow",
         r#"spec.volumes[0].containerDisk.path: invalid value "/disk/../../etc/shadow": must be a normalized path without '.', '..' or empty components"#),
        ("image: 'localhost/guest:v1'", "image: 'localhost/guest:v1', path: disk.img",
         r#"spec.volumes[0].containerDisk.path: invalid value "disk.img": must be an absolute path"#),
        ("{name: root, containerDisk: {image: 'localhost/guest:v1'}}", "{name: root}",
         "spec.volumes[0]: required value: one volume source: containerDisk, cloudInitNoCloud, cloudInitConfigDrive, emptyDisk, persistentVolumeClaim"),
        ("{name: root, containerDisk: {image: 'localhost/guest:v1'}}", "{name: root, containerDisk: {image: 'a:1'}, emptyDisk: {capacity: 1Gi}}",
         "spec.volumes[0]: forbidden: only one volume source may be set"),
        ("{name: root, containerDisk: {image: 'localhost/guest:v1'}}", "{name: root, emptyDisk: {capacity: 0}}",
         r#"spec.volumes[0].emptyDisk.capacity: invalid value "0": must be more than 0 and at most 64Ti"#),
        ("{name: root, containerDisk: {image: 'localhost/guest:v1'}}", "{name: root, containerDisk: {}}",
         "spec.volumes[0].containerDisk.image: required value: an image reference"),
        ("{name: root, containerDisk: {image: 'localhost/guest:v1'}}", "{name: root, persistentVolumeClaim: {claimName: Bad_Name}}",
         r#"spec.volumes[0].persistentVolumeClaim.claimName: invalid value "Bad_Name": must be a DNS subdomain"#),
        ("cloudInitNoCloud: {userData: \"#!/bin/sh\\necho hi\\n\"}", "cloudInitNoCloud: {userData: x, userDataBase64: eA==}",
         "spec.volumes[1].cloudInitNoCloud: forbidden: only one of userData, userDataBase64 and secretRef may be set"),
        ("cloudInitNoCloud: {userData: \"#!/bin/sh\\necho hi\\n\"}", "cloudInitNoCloud: {userDataBase64: '%%%'}",
         r#"spec.volumes[1].cloudInitNoCloud.userDataBase64: invalid value "<not base64>": is not valid base64: Invalid symbol 37, offset 0."#),
        ("cloudInitNoCloud: {userData: \"#!/bin/sh\\necho hi\\n\"}", "cloudInitNoCloud: {}",
         "spec.volumes[1].cloudInitNoCloud: required value: one of userData, userDataBase64, secretRef, networkData, networkDataBase64, networkDataSecretRef"),
        ("  volumes:", "  evictionStrategy: LiveMigrate\n  volumes:",
         r#"spec.evictionStrategy: not supported by virtshim: "LiveMigrate": virtshim has no live migration; use "None" or "External""#),
        ("  volumes:", "  hostname: Not_A_Label\n  volumes:",
         r#"spec.hostname: invalid value "Not_A_Label": must be a DNS label (lowercase letters, digits and '-', at most 63)"#),
        ("  volumes:", "  terminationGracePeriodSeconds: -1\n  volumes:",
         r#"spec.terminationGracePeriodSeconds: invalid value "-1": must be between 0 and 86400"#),
        ("  volumes:", "  architecture: arm64\n  volumes:",
         r#"spec.architecture: unsupported value "arm64" (supported: "amd64")"#),
        ("  volumes:", "  readinessProbe: {tcpSocket: {port: 22}}\n  volumes:",
         "spec.readinessProbe: not supported by virtshim: field is not implemented"),
        ("image: 'localhost/guest:v1'", "image: 'localhost/guest:v1', imagePullSecret: 'Bad/Secret'",
         r#"spec.volumes[0].containerDisk.imagePullSecret: invalid value "Bad/Secret": must be a Secret name (a DNS subdomain)"#),
        ("image: 'localhost/guest:v1'", "image: 'localhost/guest:v1', imagePullPolicy: Sometimes",
         r#"spec.volumes[0].containerDisk.imagePullPolicy: unsupported value "Sometimes" (supported: "Always", "IfNotPresent", "Never")"#),
        ("  volumes:", "  accessCredentials: [{sshPublicKey: {source: {secret: {secretName: keys}}, propagationMethod: {configDrive: {}}}}]\n  volumes:",
         "spec.accessCredentials[0].sshPublicKey.propagationMethod.configDrive: forbidden: needs a cloudInitConfigDrive volume to carry the keys"),
        ("  volumes:", "  accessCredentials: [{sshPublicKey: {source: {secret: {secretName: keys}}, propagationMethod: {qemuGuestAgent: {users: [root]}}}}]\n  volumes:",
         "spec.accessCredentials[0].sshPublicKey.propagationMethod.qemuGuestAgent: not supported by virtshim: virtshim runs no QEMU guest agent; use noCloud or configDrive"),
        ("  volumes:", "  accessCredentials: [{sshPublicKey: {source: {secret: {}}, propagationMethod: {noCloud: {}}}}]\n  volumes:",
         "spec.accessCredentials[0].sshPublicKey.source.secret.secretName: required value: a Secret name"),
        ("  volumes:", "  accessCredentials: [{userPassword: {source: {secret: {secretName: pw}}, propagationMethod: {qemuGuestAgent: {}}}}]\n  volumes:",
         "spec.accessCredentials[0].userPassword: not supported by virtshim: passwords are propagated by the QEMU guest agent, which virtshim does not run; use sshPublicKey with noCloud or configDrive"),
        ("memory: {guest: 64Mi}", "memory: {guest: 64Mi}\n    firmware: {kernelBoot: {kernelArgs: console=ttyS0, container: {image: 'k:1', initrdPath: /initrd}}}",
         "spec.domain.firmware.kernelBoot.kernelArgs: forbidden: kernel arguments cannot be provided without an external kernel: set kernelBoot.container.kernelPath"),
    ];
    for (from, to, expected) in cases {
        assert!(VMI.contains(from), "fixture lacks {from:?}");
        let yaml = VMI.replacen(from, to, 1);
        assert_eq!(
            errors_of(&yaml),
            vec![expected.to_string()],
            "after replacing {from:?} with {to:?}"
        );
    }
}

#[test]
fn interface_and_network_rules() {
    let base = VMI.replace(
        "      - {name: ci, disk: {bus: virtio}}\n",
        "      - {name: ci, disk: {bus: virtio}}\n      interfaces: IFACES\n",
    ) + "  networks: NETS\n";
    let cases: &[(&str, &str, &[&str])] = &[
        ("[{name: a, masquerade: {}, ports: [{port: 80}, {port: 53, protocol: UDP}]}]", "[{name: a, pod: {}}]", &[]),
        ("[{name: a, bridge: {}, ports: [{port: 80}]}]", "[{name: a, pod: {}}]",
         &["spec.domain.devices.interfaces[0].ports: forbidden: ports are only forwarded with masquerade; a bridged guest owns every port"]),
        ("[{name: a, masquerade: {}, ports: [{port: 70000, protocol: SCTP}]}]", "[{name: a, pod: {}}]",
         &[r#"spec.domain.devices.interfaces[0].ports[0].protocol: unsupported value "SCTP" (supported: "TCP", "UDP")"#,
           r#"spec.domain.devices.interfaces[0].ports[0].port: invalid value "70000": must be between 1 and 65535"#]),
        ("[{name: a, masquerade: {}}]", "[{name: b, pod: {}}]",
         &[r#"spec.networks[0].name: invalid value "b": no interface of this name in spec.domain.devices.interfaces"#,
           r#"spec.domain.devices.interfaces[0].name: invalid value "a": no network of this name in spec.networks"#]),
        ("[{name: a, masquerade: {}, model: rtl9999}]", "[{name: a, pod: {}}]",
         &[r#"spec.domain.devices.interfaces[0].model: unsupported value "rtl9999" (supported: "virtio", "e1000", "e1000e", "igb", "ne2k_pci", "pcnet", "rtl8139")"#]),
        ("[{name: a, masquerade: {}, macAddress: 'zz:00:00:00:00:01'}]", "[{name: a, pod: {}}]",
         &[r#"spec.domain.devices.interfaces[0].macAddress: invalid value "zz:00:00:00:00:01": must be six hex octets such as 02:00:00:00:00:01"#]),
        ("[{name: a, masquerade: {}, macAddress: '01:00:00:00:00:01'}]", "[{name: a, pod: {}}]",
         &[r#"spec.domain.devices.interfaces[0].macAddress: invalid value "01:00:00:00:00:01": must be a unicast address"#]),
        ("[{name: a, sriov: {}}]", "[{name: a, pod: {}}]",
         &["spec.domain.devices.interfaces[0].sriov: not supported by virtshim: field is not implemented"]),
        ("[{name: a}]", "[{name: a, pod: {}}]",
         &["spec.domain.devices.interfaces[0]: required value: one binding: bridge or masquerade"]),
        ("[{name: a, bridge: {}}, {name: b, bridge: {}}]", "[{name: a, pod: {}}, {name: b, pod: {}}]",
         &["spec.networks: forbidden: at most one pod network"]),
        ("[{name: a, bridge: {}}]", "[{name: a, multus: {networkName: x}}]",
         &["spec.networks[0].multus: not supported by virtshim: secondary networks through Multus are not implemented; use pod"]),
    ];
    for (ifaces, nets, expected) in cases {
        let yaml = base.replace("IFACES", ifaces).replace("NETS", nets);
        assert_eq!(
            errors_of(&yaml),
            expected.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            "{ifaces} / {nets}"
        );
    }
}

#[test]
fn every_error_is_reported_at_once() {
    let yaml = VMI
        .replace(
            "{name: ci, disk: {bus: virtio}}",
            "{name: ci, disk: {bus: ide}}",
        )
        .replace(
            "memory: {guest: 64Mi}",
            "memory: {guest: 64Mi}\n    gpus: []\n    machine: {type: pc-i440fx-7.2}",
        );
    let errors = errors_of(&yaml);
    assert_eq!(errors.len(), 3, "{errors:#?}");
    // gpus is a KubeVirt field of devices, not of domain: here it is no field at all.
    assert!(errors
        .iter()
        .any(|e| e == "spec.domain.gpus: unknown field"));
    assert!(errors
        .iter()
        .any(|e| e.starts_with("spec.domain.machine.type: unsupported value")));
    assert!(
        errors
            .iter()
            .any(|e| e
                .starts_with("spec.domain.devices.disks[1].disk.bus: unsupported value \"ide\""))
    );
}

#[test]
fn vm_rules() {
    let vm = |spec: &str| {
        format!(
        "apiVersion: kubevirt.io/v1\nkind: VirtualMachine\nmetadata: {{name: v}}\nspec:\n{spec}\n  template:\n    spec:\n      domain: {{devices: {{}}, memory: {{guest: 64Mi}}}}\n"
    )
    };
    assert_eq!(
        errors_of(&vm("  runStrategy: Always")),
        Vec::<String>::new()
    );
    assert_eq!(errors_of(&vm("  running: true")), Vec::<String>::new());
    assert_eq!(
        errors_of(&vm("  running: true\n  runStrategy: Always")),
        ["spec.running: forbidden: running and runStrategy are mutually exclusive; runStrategy replaces running"]
    );
    assert_eq!(
        errors_of(&vm("  runStrategy: Sometimes")),
        [
            r#"spec.runStrategy: unsupported value "Sometimes" (supported: "Always", "RerunOnFailure", "Manual", "Halted", "Once")"#
        ]
    );
    assert_eq!(
        errors_of(&vm("  runStrategy: Always").replace(
            "memory: {guest: 64Mi}",
            "memory: {guest: 64Mi}, cpu: {model: 'a b'}"
        )),
        [
            r#"spec.template.spec.domain.cpu.model: invalid value "a b": must be host-model, host-passthrough or a CPU model name (letters, digits, '-', '_', '.')"#
        ]
    );
    let no_template = "apiVersion: kubevirt.io/v1\nkind: VirtualMachine\nmetadata: {name: v}\nspec: {runStrategy: Halted}\n";
    assert_eq!(
        errors_of(no_template),
        ["spec.template: required value: the template of the VMI to create"]
    );
}

#[test]
fn replica_set_rules() {
    let rs = |selector: &str, labels: &str| {
        format!(
        "apiVersion: kubevirt.io/v1\nkind: VirtualMachineInstanceReplicaSet\nmetadata: {{name: r}}\nspec:\n  replicas: 2\n  selector: {selector}\n  template:\n    metadata: {{labels: {labels}}}\n    spec:\n      domain: {{devices: {{}}, memory: {{guest: 64Mi}}}}\n"
    )
    };
    assert_eq!(
        errors_of(&rs("{matchLabels: {a: b}}", "{a: b, c: d}")),
        Vec::<String>::new()
    );
    assert_eq!(
        errors_of(&rs(
            "{matchExpressions: [{key: a, operator: In, values: [b, x]}]}",
            "{a: b}"
        )),
        Vec::<String>::new()
    );
    assert_eq!(
        errors_of(&rs("{matchLabels: {a: b}}", "{a: c}")),
        [
            r#"spec.template.metadata.labels: invalid value "a=c": selector does not match template labels"#
        ]
    );
    assert_eq!(
        errors_of(&rs("{}", "{a: b}")),
        [
            r#"spec.selector: invalid value "{}": an empty selector would select every VMI in the namespace"#
        ]
    );
    assert_eq!(
        errors_of(&rs(
            "{matchExpressions: [{key: a, operator: Exists, values: [b]}]}",
            "{a: b}"
        )),
        [r#"spec.selector: invalid value "matchExpressions": operator Exists takes no values"#]
    );
}

#[test]
fn decoding_errors_name_the_field() {
    let err = parse_json(r#"{"apiVersion":"kubevirt.io/v1","kind":"VirtualMachineInstance","metadata":{"name":"x"},"spec":{"domain":{"cpu":{"cores":"two"}}}}"#)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("spec.domain.cpu.cores: invalid type: string \"two\""),
        "{err}"
    );
    let err = parse_json("{not json").unwrap_err().to_string();
    assert!(err.starts_with("not valid JSON"), "{err}");
    let err = parse_json(r#"{"apiVersion":"v1","kind":"Pod"}"#)
        .unwrap_err()
        .to_string();
    assert!(err.contains("v1 Pod is not a KubeVirt"), "{err}");
    let err = parse_json(r#"{"kind":"VirtualMachine"}"#)
        .unwrap_err()
        .to_string();
    assert_eq!(err, "apiVersion: required value");
}

/// A name KubeVirt has but virtshim does not model is "not supported"; any other name is a typo
/// until proven otherwise: "unknown field", with the nearest known name when one is close.
#[test]
fn unknown_fields_are_typos_kubevirt_fields_are_not_supported() {
    let cases: &[(&str, &str, &str)] = &[
        ("memory: {guest: 64Mi}", "memory: {guest: 64Mi}\n    firmware: {bootloadr: {efi: {}}}",
         r#"spec.domain.firmware.bootloadr: unknown field; did you mean "bootloader"?"#),
        ("memory: {guest: 64Mi}", "memory: {guest: 64Mi}\n    firmware: {BootLoader: {efi: {}}}",
         r#"spec.domain.firmware.BootLoader: unknown field; did you mean "bootloader"?"#),
        ("memory: {guest: 64Mi}", "memory: {guest: 64Mi}\n    cpu: {cores: 1, sokcets: 1}",
         r#"spec.domain.cpu.sokcets: unknown field; did you mean "sockets"?"#),
        ("memory: {guest: 64Mi}", "memroy: {guest: 64Mi}\n    resources: {requests: {memory: 64Mi}}",
         r#"spec.domain.memroy: unknown field; did you mean "memory"?"#),
        // Close to a KubeVirt field virtshim lacks: named, so the next message explains it.
        ("    devices:\n", "    devices:\n      gpu: []\n",
         r#"spec.domain.devices.gpu: unknown field; did you mean "gpus"?"#),
        ("  volumes:", "  colour: blue\n  volumes:", "spec.colour: unknown field"),
        ("{name: root, disk: {bus: virtio}}", "{name: root, disk: {bus: virtio}, bootOdrer: 1}",
         r#"spec.domain.devices.disks[0].bootOdrer: unknown field; did you mean "bootOrder"?"#),
        ("image: 'localhost/guest:v1'", "image: 'localhost/guest:v1', imagePulPolicy: Always",
         r#"spec.volumes[0].containerDisk.imagePulPolicy: unknown field; did you mean "imagePullPolicy"?"#),
        ("cloudInitNoCloud: {userData:", "cloudInitNoCloud: {usrData: x, userData:",
         r#"spec.volumes[1].cloudInitNoCloud.usrData: unknown field; did you mean "userData"?"#),
        // KubeVirt fields virtshim does not model keep their message.
        ("    devices:\n", "    devices:\n      gpus: []\n",
         "spec.domain.devices.gpus: not supported by virtshim: field is not implemented"),
        ("memory: {guest: 64Mi}", "memory: {guest: 64Mi}\n    clock: {utc: {}}",
         "spec.domain.clock: not supported by virtshim: field is not implemented"),
        ("memory: {guest: 64Mi}", "memory: {guest: 64Mi}\n    firmware: {bootloader: {efi: {secureBoot: false, persistent: true}}}",
         "spec.domain.firmware.bootloader.efi.persistent: not supported by virtshim: field is not implemented"),
        ("{name: root, disk: {bus: virtio}}", "{name: root, disk: {bus: virtio}, cache: none}",
         "spec.domain.devices.disks[0].cache: not supported by virtshim: field is not implemented"),
    ];
    for (from, to, expected) in cases {
        assert!(VMI.contains(from), "fixture lacks {from:?}");
        let yaml = VMI.replacen(from, to, 1);
        assert_eq!(
            errors_of(&yaml),
            vec![expected.to_string()],
            "after replacing {from:?} with {to:?}"
        );
    }
}

#[test]
fn multi_document_streams_keep_going_past_a_bad_document() {
    let text = format!(
        "---\n{VMI}---\napiVersion: v1\nkind: ConfigMap\n---\n---\n{}",
        VMI.replace("name: t}", "name: u}")
    );
    let docs = parse_documents(&text);
    assert_eq!(docs.len(), 3);
    assert!(docs[0].is_ok() && docs[1].is_err() && docs[2].is_ok());
    assert!(
        matches!(&docs[2], Ok(Object::VirtualMachineInstance(v)) if v.metadata.name.as_deref() == Some("u"))
    );
}

#[test]
fn v1alpha3_is_read_with_the_v1_schema_and_written_as_v1() {
    // The same schema under both versions; like `kubectl get`, output uses the storage version.
    let yaml = VMI.replace("kubevirt.io/v1", "kubevirt.io/v1alpha3");
    let object = common::one(&yaml);
    assert!(object.validate().is_ok());
    assert_eq!(object.to_value()["apiVersion"], "kubevirt.io/v1");
}

#[test]
fn read_only_disks_need_a_bus_that_has_them() {
    let yaml = VMI.replace(
        "{name: ci, disk: {bus: virtio}}",
        "{name: ci, disk: {bus: sata, readonly: true}}",
    );
    assert_eq!(
        errors_of(&yaml),
        ["spec.domain.devices.disks[1].disk.readonly: forbidden: a read-only disk on the sata bus is not possible; use virtio or scsi"]
    );
    let yaml = VMI.replace(
        "{name: ci, disk: {bus: virtio}}",
        "{name: ci, disk: {bus: virtio, readonly: true}}",
    );
    assert_eq!(errors_of(&yaml), Vec::<String>::new());
}
