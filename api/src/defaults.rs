//! KubeVirt's defaults (amd64), applied in the order its mutating webhook applies them.
//!
//! Every function here only fills what is unset, so applying it twice changes nothing; that lets
//! [`crate::validate`] default a copy of whatever it is handed, and the shim re-check a spec that
//! the controller already defaulted. Cluster-wide KubeVirt settings take their stock values:
//! machine type `q35`, default interface `bridge`, CPU model `host-model`.

use crate::quantity::Quantity;
use crate::types::{
    Disk, DiskTarget, Empty, FeatureState, Features, Firmware, Interface, Machine, Memory, Network,
    PodNetwork, VirtualMachine, VirtualMachineInstance, VirtualMachineInstanceSpec,
};

/// The machine type a VMI gets when it names none.
pub const DEFAULT_MACHINE_TYPE: &str = "q35";
/// The only architecture virtshim runs.
pub const DEFAULT_ARCHITECTURE: &str = "amd64";
/// The disk bus KubeVirt picks on amd64: every guest OS has a SATA driver.
pub const DEFAULT_DISK_BUS: &str = "sata";
/// KubeVirt's cluster-wide default CPU model.
pub const DEFAULT_CPU_MODEL: &str = "host-model";
/// Name of the interface and network added when a VMI names none.
pub const DEFAULT_NETWORK_NAME: &str = "default";
/// KubeVirt's namespace for the firmware UUID a VM derives from its name.
const FIRMWARE_UUID_NAMESPACE: uuid::Uuid = uuid::uuid!("6a1a24a1-4061-4607-8bf4-a3963d0c5895");

/// Defaults a VMI as KubeVirt's VMI mutating webhook does on create.
pub fn vmi(vmi: &mut VirtualMachineInstance) {
    vmi_spec(&mut vmi.spec);
}

/// Defaults a VM as KubeVirt's VM mutating webhook and VM controller do: the template gets its
/// architecture, machine type and a firmware UUID derived from the VM's name (so the guest sees
/// the same system UUID every time the VM starts). The rest of the template is defaulted when
/// the VMI is created, as in KubeVirt.
pub fn vm(vm: &mut VirtualMachine) {
    let name = vm.metadata.name.clone();
    let Some(spec) = vm.spec.template.as_mut().and_then(|t| t.spec.as_mut()) else {
        return;
    };
    set_architecture(spec);
    set_machine_type(spec);
    if let Some(name) = name {
        let firmware = spec
            .domain
            .get_or_insert_with(Default::default)
            .firmware
            .get_or_insert_with(Default::default);
        if firmware.uuid.as_deref().unwrap_or("").is_empty() {
            firmware.uuid = Some(vm_firmware_uuid(&name));
        }
    }
}

/// The firmware UUID KubeVirt gives the VMIs of a VM with this name.
pub fn vm_firmware_uuid(vm_name: &str) -> String {
    uuid::Uuid::new_v5(&FIRMWARE_UUID_NAMESPACE, vm_name.as_bytes()).to_string()
}

/// Defaults a VMI spec (also used for VM and replica-set templates when a VMI is made from them).
pub fn vmi_spec(spec: &mut VirtualMachineInstanceSpec) {
    set_architecture(spec);
    set_machine_type(spec);
    set_cpu_request_from_limit(spec);
    set_guest_memory(spec);
    set_cpu_topology(spec);
    set_container_disk_pull_policy(spec);
    set_default_network(spec);
    set_disks_for_volumes(spec);
    set_object_defaults(spec);
    set_disk_buses(spec);
    set_cpu_model(spec);
}

fn set_architecture(spec: &mut VirtualMachineInstanceSpec) {
    if spec.architecture.as_deref().unwrap_or("").is_empty() {
        spec.architecture = Some(DEFAULT_ARCHITECTURE.to_owned());
    }
}

fn set_machine_type(spec: &mut VirtualMachineInstanceSpec) {
    let machine = spec
        .domain
        .get_or_insert_with(Default::default)
        .machine
        .get_or_insert_with(Machine::default);
    if machine.type_.as_deref().unwrap_or("").is_empty() {
        machine.type_ = Some(DEFAULT_MACHINE_TYPE.to_owned());
    }
}

/// A quantity that parses and is not zero, as `!q.IsZero()` reads in KubeVirt.
fn nonzero(q: Option<&crate::types::QuantityString>) -> Option<Quantity> {
    let q = Quantity::parse(&q?.0).ok()?;
    (q.to_millis() != Some(0)).then_some(q)
}

fn set_cpu_request_from_limit(spec: &mut VirtualMachineInstanceSpec) {
    let Some(resources) = spec.domain.as_mut().and_then(|d| d.resources.as_mut()) else {
        return;
    };
    let limit = resources
        .limits
        .as_ref()
        .and_then(|l| l.get("cpu"))
        .cloned();
    let request = resources.requests.as_ref().and_then(|r| r.get("cpu"));
    if let Some(limit) = limit {
        if nonzero(Some(&limit)).is_some() && nonzero(request).is_none() {
            resources
                .requests
                .get_or_insert_with(Default::default)
                .insert("cpu".to_owned(), limit);
        }
    }
}

fn set_guest_memory(spec: &mut VirtualMachineInstanceSpec) {
    let domain = spec.domain.get_or_insert_with(Default::default);
    if domain.memory.as_ref().is_some_and(|m| m.guest.is_some()) {
        return;
    }
    let resources = domain.resources.as_ref();
    let pick = |list: Option<&std::collections::BTreeMap<String, crate::types::QuantityString>>| {
        let q = list?.get("memory")?;
        nonzero(Some(q)).map(|_| q.clone())
    };
    let guest = pick(resources.and_then(|r| r.requests.as_ref()))
        .or_else(|| pick(resources.and_then(|r| r.limits.as_ref())));
    let memory = domain.memory.get_or_insert_with(Memory::default);
    memory.guest = guest;
}

fn set_cpu_topology(spec: &mut VirtualMachineInstanceSpec) {
    let domain = spec.domain.get_or_insert_with(Default::default);
    let unset = |v: Option<u32>| v.unwrap_or(0) == 0;
    if let Some(cpu) = &domain.cpu {
        if !(unset(cpu.cores) && unset(cpu.sockets) && unset(cpu.threads)) {
            return;
        }
    }
    // Like KubeVirt: vCPUs from the CPU limit (else request) go into sockets, which performs best.
    let resources = domain.resources.as_ref();
    let from = |list: Option<&std::collections::BTreeMap<String, crate::types::QuantityString>>| {
        Quantity::parse(&list?.get("cpu")?.0).ok()?.to_units()
    };
    let sockets = from(resources.and_then(|r| r.limits.as_ref()))
        .or_else(|| from(resources.and_then(|r| r.requests.as_ref())))
        .map(|v| u32::try_from(v).unwrap_or(u32::MAX))
        .unwrap_or(1);
    let cpu = domain.cpu.get_or_insert_with(Default::default);
    cpu.sockets = Some(sockets);
    cpu.cores = Some(1);
    cpu.threads = Some(1);
}

fn set_container_disk_pull_policy(spec: &mut VirtualMachineInstanceSpec) {
    for volume in spec.volumes.iter_mut().flatten() {
        let Some(cd) = volume.container_disk.as_mut() else {
            continue;
        };
        if cd.image_pull_policy.as_deref().unwrap_or("").is_empty() {
            let image = cd.image.as_deref().unwrap_or("");
            let always = image.ends_with(":latest") || !image.contains([':', '@']);
            cd.image_pull_policy = Some(if always { "Always" } else { "IfNotPresent" }.to_owned());
        }
    }
}

fn set_default_network(spec: &mut VirtualMachineInstanceSpec) {
    let devices = spec
        .domain
        .get_or_insert_with(Default::default)
        .devices
        .get_or_insert_with(Default::default);
    if devices.autoattach_pod_interface == Some(false) {
        return;
    }
    let no_interfaces = devices.interfaces.as_ref().is_none_or(Vec::is_empty);
    let no_networks = spec.networks.as_ref().is_none_or(Vec::is_empty);
    if no_interfaces && no_networks {
        devices.interfaces = Some(vec![Interface {
            name: Some(DEFAULT_NETWORK_NAME.to_owned()),
            bridge: Some(Empty::default()),
            ..Default::default()
        }]);
        spec.networks = Some(vec![Network {
            name: Some(DEFAULT_NETWORK_NAME.to_owned()),
            pod: Some(PodNetwork::default()),
            ..Default::default()
        }]);
    }
}

fn set_disks_for_volumes(spec: &mut VirtualMachineInstanceSpec) {
    let Some(volumes) = spec.volumes.as_ref() else {
        return;
    };
    let devices = spec
        .domain
        .get_or_insert_with(Default::default)
        .devices
        .get_or_insert_with(Default::default);
    let disks = devices.disks.get_or_insert_with(Vec::new);
    for volume in volumes {
        let Some(name) = volume.name.as_ref() else {
            continue;
        };
        if !disks.iter().any(|d| d.name.as_ref() == Some(name)) {
            disks.push(Disk {
                name: Some(name.clone()),
                ..Default::default()
            });
        }
    }
}

fn set_object_defaults(spec: &mut VirtualMachineInstanceSpec) {
    let domain = spec.domain.get_or_insert_with(Default::default);
    let firmware = domain.firmware.get_or_insert_with(Firmware::default);
    if firmware.uuid.as_deref().unwrap_or("").is_empty() {
        firmware.uuid = Some(uuid::Uuid::new_v4().to_string());
    }
    let features = domain.features.get_or_insert_with(Features::default);
    let acpi = features.acpi.get_or_insert_with(FeatureState::default);
    acpi.enabled.get_or_insert(true);
    if let Some(smm) = features.smm.as_mut() {
        smm.enabled.get_or_insert(true);
    }
    for disk in domain
        .devices
        .iter_mut()
        .flat_map(|d| d.disks.iter_mut().flatten())
    {
        if disk.disk.is_none() && disk.cdrom.is_none() && disk.lun.is_none() {
            disk.disk = Some(DiskTarget::default());
        }
        if let Some(cdrom) = disk.cdrom.as_mut() {
            cdrom.read_only.get_or_insert(true);
            if cdrom.tray.as_deref().unwrap_or("").is_empty() {
                cdrom.tray = Some("closed".to_owned());
            }
        }
    }
}

fn set_disk_buses(spec: &mut VirtualMachineInstanceSpec) {
    let disks = spec
        .domain
        .iter_mut()
        .flat_map(|d| d.devices.iter_mut())
        .flat_map(|d| d.disks.iter_mut().flatten());
    for disk in disks {
        for bus in [
            disk.disk.as_mut().map(|t| &mut t.bus),
            disk.cdrom.as_mut().map(|t| &mut t.bus),
            disk.lun.as_mut().map(|t| &mut t.bus),
        ]
        .into_iter()
        .flatten()
        {
            if bus.as_deref().unwrap_or("").is_empty() {
                *bus = Some(DEFAULT_DISK_BUS.to_owned());
            }
        }
    }
}

fn set_cpu_model(spec: &mut VirtualMachineInstanceSpec) {
    let cpu = spec
        .domain
        .get_or_insert_with(Default::default)
        .cpu
        .get_or_insert_with(Default::default);
    if cpu.model.as_deref().unwrap_or("").is_empty() {
        cpu.model = Some(DEFAULT_CPU_MODEL.to_owned());
    }
}
