//! One test per KubeVirt default listed in kubevirt-compat.md (and the others KubeVirt's
//! webhook applies), checked both on the defaulted object and on the validated config.

#![allow(clippy::unwrap_used)]

mod common;

use virtshim_api::config::{
    Binding, Bootloader, DiskBus, DiskDevice, ImageRef, PullPolicy, VolumeSource,
};
use virtshim_api::defaults;
use virtshim_api::manifest::Object;
use virtshim_api::validate;

const BASE: &str = r#"
apiVersion: kubevirt.io/v1
kind: VirtualMachineInstance
metadata: {name: t}
spec:
  domain:
    devices: {}
    resources: {requests: {memory: 64Mi}}
"#;

fn defaulted(yaml: &str) -> virtshim_api::types::VirtualMachineInstance {
    let mut vmi = common::vmi(yaml);
    defaults::vmi(&mut vmi);
    vmi
}

#[test]
fn guest_memory_defaults_from_requests() {
    let vmi = defaulted(BASE);
    let guest = vmi
        .spec
        .domain
        .as_ref()
        .and_then(|d| d.memory.as_ref())
        .and_then(|m| m.guest.as_ref());
    assert_eq!(guest.map(|q| q.0.as_str()), Some("64Mi"));
    assert_eq!(validate::vmi(&vmi).unwrap().memory.bytes(), 64 << 20);
}

#[test]
fn guest_memory_defaults_from_limits_when_no_request() {
    let vmi = defaulted(&BASE.replace("requests: {memory: 64Mi}", "limits: {memory: 96Mi}"));
    assert_eq!(validate::vmi(&vmi).unwrap().memory.bytes(), 96 << 20);
}

#[test]
fn explicit_guest_memory_wins_over_requests() {
    let vmi = defaulted(&BASE.replace("devices: {}", "devices: {}\n    memory: {guest: 32Mi}"));
    assert_eq!(validate::vmi(&vmi).unwrap().memory.bytes(), 32 << 20);
}

#[test]
fn no_memory_at_all_is_an_error_naming_the_field() {
    let vmi = common::vmi(&BASE.replace("resources: {requests: {memory: 64Mi}}", "resources: {}"));
    let errors = validate::vmi(&vmi).unwrap_err().to_string();
    assert!(
        errors.starts_with("spec.domain.memory.guest: required value"),
        "{errors}"
    );
}

#[test]
fn machine_type_defaults_to_q35() {
    let vmi = defaulted(BASE);
    let machine = vmi
        .spec
        .domain
        .as_ref()
        .and_then(|d| d.machine.as_ref())
        .and_then(|m| m.type_.clone());
    assert_eq!(machine.as_deref(), Some("q35"));
    assert_eq!(validate::vmi(&vmi).unwrap().machine_type, "q35");
}

#[test]
fn firmware_is_bios_unless_efi_is_asked_for() {
    assert_eq!(
        validate::vmi(&defaulted(BASE)).unwrap().bootloader,
        Bootloader::Bios { use_serial: false }
    );
    let efi = BASE.replace(
        "devices: {}",
        "devices: {}\n    firmware: {bootloader: {efi: {secureBoot: false}}}",
    );
    assert_eq!(
        validate::vmi(&defaulted(&efi)).unwrap().bootloader,
        Bootloader::Efi { secure_boot: false }
    );
}

#[test]
fn efi_secure_boot_defaults_on_and_needs_smm() {
    let efi = BASE.replace(
        "devices: {}",
        "devices: {}\n    firmware: {bootloader: {efi: {}}}",
    );
    let errors = validate::vmi(&defaulted(&efi)).unwrap_err().to_string();
    assert!(errors.contains("spec.domain.firmware.bootloader.efi.secureBoot: forbidden: EFI secure boot requires SMM"), "{errors}");
    let with_smm = efi.replace("devices: {}", "devices: {}\n    features: {smm: {}}");
    let config = validate::vmi(&defaulted(&with_smm)).unwrap();
    assert_eq!(config.bootloader, Bootloader::Efi { secure_boot: true });
    assert!(config.smm);
}

#[test]
fn firmware_uuid_is_set_and_kept() {
    let vmi = defaulted(BASE);
    let uuid = vmi
        .spec
        .domain
        .as_ref()
        .and_then(|d| d.firmware.as_ref())
        .and_then(|f| f.uuid.clone())
        .expect("uuid");
    assert_eq!(validate::vmi(&vmi).unwrap().firmware_uuid.to_string(), uuid);
    let mut again = vmi.clone();
    defaults::vmi(&mut again);
    assert_eq!(again, vmi);
}

#[test]
fn vm_firmware_uuid_comes_from_the_vm_name_as_in_kubevirt() {
    let yaml = r#"
apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata: {name: vm-cirros}
spec:
  template:
    spec:
      domain: {devices: {}, memory: {guest: 64Mi}}
"#;
    let Object::VirtualMachine(mut vm) = common::one(yaml) else {
        panic!("vm")
    };
    defaults::vm(&mut vm);
    let uuid = vm
        .spec
        .template
        .as_ref()
        .and_then(|t| t.spec.as_ref())
        .and_then(|s| s.domain.as_ref())
        .and_then(|d| d.firmware.as_ref())
        .and_then(|f| f.uuid.clone())
        .expect("uuid");
    // uuid.NewSHA1(6a1a24a1-4061-4607-8bf4-a3963d0c5895, "vm-cirros"), as KubeVirt computes it.
    let expected = uuid::Uuid::new_v5(
        &uuid::uuid!("6a1a24a1-4061-4607-8bf4-a3963d0c5895"),
        b"vm-cirros",
    );
    assert_eq!(uuid, expected.to_string());
    assert_eq!(expected.get_version_num(), 5);
    assert_eq!(defaults::vm_firmware_uuid("vm-cirros"), uuid);
}

#[test]
fn disk_without_bus_gets_sata() {
    let yaml = BASE.replace("devices: {}", "devices: {disks: [{name: d, disk: {}}, {name: c, cdrom: {}}]}")
        + "  volumes:\n  - {name: d, containerDisk: {image: x:1}}\n  - {name: c, containerDisk: {image: y:1}}\n";
    let vmi = defaulted(&yaml);
    let disks = vmi
        .spec
        .domain
        .as_ref()
        .unwrap()
        .devices
        .as_ref()
        .unwrap()
        .disks
        .as_ref()
        .unwrap();
    assert_eq!(disks[0].disk.as_ref().unwrap().bus.as_deref(), Some("sata"));
    assert_eq!(
        disks[1].cdrom.as_ref().unwrap().bus.as_deref(),
        Some("sata")
    );
    let config = validate::vmi(&vmi).unwrap();
    assert_eq!(
        config.disks[0].device,
        DiskDevice::Disk {
            bus: DiskBus::Sata,
            read_only: false
        }
    );
    // A CD-ROM is read-only with its tray closed unless told otherwise.
    assert_eq!(
        config.disks[1].device,
        DiskDevice::Cdrom {
            bus: DiskBus::Sata,
            read_only: true,
            tray_open: false
        }
    );
}

#[test]
fn volume_without_disk_gets_a_disk() {
    let yaml =
        BASE.to_owned() + "  volumes:\n  - {name: containerdisk, containerDisk: {image: 'x:1'}}\n";
    let vmi = defaulted(&yaml);
    let disks = vmi
        .spec
        .domain
        .as_ref()
        .unwrap()
        .devices
        .as_ref()
        .unwrap()
        .disks
        .as_ref()
        .unwrap();
    assert_eq!(disks.len(), 1);
    assert_eq!(disks[0].name.as_deref(), Some("containerdisk"));
    assert_eq!(disks[0].disk.as_ref().unwrap().bus.as_deref(), Some("sata"));
    let config = validate::vmi(&vmi).unwrap();
    assert_eq!(
        config.disks[0].source,
        VolumeSource::ContainerDisk {
            // KubeVirt's default pull policy for a tagged image.
            image: ImageRef {
                reference: "x:1".into(),
                pull_policy: Some(PullPolicy::IfNotPresent),
                pull_secret: None,
            },
            path: None
        }
    );
}

#[test]
fn no_interfaces_and_no_networks_gets_the_default_bridge_on_the_pod_network() {
    let vmi = defaulted(BASE);
    let iface = &vmi
        .spec
        .domain
        .as_ref()
        .unwrap()
        .devices
        .as_ref()
        .unwrap()
        .interfaces
        .as_ref()
        .unwrap()[0];
    assert_eq!(iface.name.as_deref(), Some("default"));
    assert!(iface.bridge.is_some() && iface.masquerade.is_none());
    let network = &vmi.spec.networks.as_ref().unwrap()[0];
    assert_eq!(network.name.as_deref(), Some("default"));
    assert!(network.pod.is_some());
    let config = validate::vmi(&vmi).unwrap();
    assert_eq!(config.interfaces.len(), 1);
    assert_eq!(config.interfaces[0].binding, Binding::Bridge);
}

#[test]
fn autoattach_pod_interface_false_means_no_network() {
    let vmi = defaulted(&BASE.replace("devices: {}", "devices: {autoattachPodInterface: false}"));
    assert!(vmi.spec.networks.is_none());
    assert!(validate::vmi(&vmi).unwrap().interfaces.is_empty());
}

#[test]
fn given_interfaces_are_not_replaced() {
    let yaml = BASE.replace(
        "devices: {}",
        "devices: {interfaces: [{name: n, masquerade: {}}]}",
    ) + "  networks: [{name: n, pod: {}}]\n";
    let config = validate::vmi(&defaulted(&yaml)).unwrap();
    assert_eq!(config.interfaces.len(), 1);
    assert_eq!(
        config.interfaces[0].binding,
        Binding::Masquerade { ports: vec![] }
    );
}

#[test]
fn cpu_topology_takes_sockets_from_the_cpu_limit() {
    let vmi = defaulted(&BASE.replace(
        "requests: {memory: 64Mi}",
        "requests: {memory: 64Mi}, limits: {cpu: 1500m}",
    ));
    let cpu = vmi.spec.domain.as_ref().unwrap().cpu.clone().unwrap();
    assert_eq!(
        (cpu.sockets, cpu.cores, cpu.threads),
        (Some(2), Some(1), Some(1))
    );
    assert_eq!(cpu.model.as_deref(), Some("host-model"));
    // The CPU request follows the limit when only the limit is given.
    let requests = vmi
        .spec
        .domain
        .as_ref()
        .unwrap()
        .resources
        .as_ref()
        .unwrap()
        .requests
        .clone()
        .unwrap();
    assert_eq!(requests.get("cpu").map(|q| q.0.as_str()), Some("1500m"));
    assert_eq!(validate::vmi(&vmi).unwrap().cpu.vcpus(), 2);
}

#[test]
fn acpi_is_on_by_default() {
    let vmi = defaulted(BASE);
    let acpi = vmi
        .spec
        .domain
        .as_ref()
        .unwrap()
        .features
        .as_ref()
        .unwrap()
        .acpi
        .clone()
        .unwrap();
    assert_eq!(acpi.enabled, Some(true));
    assert!(validate::vmi(&vmi).unwrap().acpi);
    let off = defaulted(&BASE.replace(
        "devices: {}",
        "devices: {}\n    features: {acpi: {enabled: false}}",
    ));
    assert!(!validate::vmi(&off).unwrap().acpi);
}

#[test]
fn container_disk_pull_policy_follows_the_tag() {
    let yaml = BASE.to_owned()
        + "  volumes:\n  - {name: a, containerDisk: {image: 'r/x:latest'}}\n  - {name: b, containerDisk: {image: 'r/x'}}\n  - {name: c, containerDisk: {image: 'r/x:1.0'}}\n";
    let vmi = defaulted(&yaml);
    let policies: Vec<_> = vmi
        .spec
        .volumes
        .unwrap()
        .iter()
        .map(|v| {
            v.container_disk
                .as_ref()
                .unwrap()
                .image_pull_policy
                .clone()
                .unwrap()
        })
        .collect();
    assert_eq!(policies, ["Always", "Always", "IfNotPresent"]);
}

#[test]
fn serial_console_and_graphics_are_attached_unless_disabled() {
    let config = validate::vmi(&defaulted(BASE)).unwrap();
    assert!(config.serial_console && config.graphics);
    let off = BASE.replace(
        "devices: {}",
        "devices: {autoattachSerialConsole: false, autoattachGraphicsDevice: false}",
    );
    let config = validate::vmi(&defaulted(&off)).unwrap();
    assert!(!config.serial_console && !config.graphics);
}

#[test]
fn grace_period_defaults_to_30_seconds() {
    assert_eq!(
        validate::vmi(&defaulted(BASE))
            .unwrap()
            .termination_grace_period_seconds,
        30
    );
    let zero = BASE.to_owned() + "  terminationGracePeriodSeconds: 0\n";
    assert_eq!(
        validate::vmi(&defaulted(&zero))
            .unwrap()
            .termination_grace_period_seconds,
        0
    );
}
