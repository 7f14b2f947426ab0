//! Checks a defaulted VMI spec and builds its [`VmiConfig`].
//!
//! Each `check_*` function records its errors in the [`Checker`] and returns the validated value
//! when its part was sound, so one pass yields both the full error list and the config.

use super::names::{image_path_problem, is_dns_label, is_dns_subdomain, is_printable};
use super::{Checker, FieldPath};
use crate::config::{
    Binding, Bootloader, CloudInit, CloudInitData, CloudInitFormat, CpuModel, CpuTopology, DiskBus,
    DiskConfig, DiskDevice, ImageRef, InterfaceConfig, KernelBoot, MacAddress, MemoryBytes,
    NicModel, PortConfig, Protocol, PullPolicy, SshKeys, VmiConfig, VolumeSource,
};
use crate::quantity::Quantity;
use crate::types::{
    AccessCredential, CloudInitSource, ContainerDiskSource, Cpu, Devices, Disk, DomainSpec,
    Features, Firmware, Interface, Network, QuantityString, ResourceRequirements,
    VirtualMachineInstanceSpec, Volume,
};
use base64::Engine as _;
use std::collections::{BTreeMap, HashMap, HashSet};

/// KubeVirt's limit on inline cloud-init user data and network data (larger data goes in a Secret).
pub(crate) const CLOUD_INIT_INLINE_MAX: usize = 2048;
/// Bounds that keep a hostile spec from making the shim build huge domains or files.
pub(crate) const MAX_DISKS: usize = 64;
pub(crate) const MAX_INTERFACES: usize = 16;
pub(crate) const MAX_PORTS: usize = 1024;
pub(crate) const MAX_EMPTY_DISK_BYTES: u64 = 64 << 40;
/// Grace periods beyond a day are surely mistakes and would keep a pod terminating for ever.
pub(crate) const MAX_GRACE_PERIOD_SECONDS: i64 = 86_400;
/// KubeVirt's default `terminationGracePeriodSeconds` for VMIs.
pub(crate) const DEFAULT_GRACE_PERIOD_SECONDS: u32 = 30;

pub(crate) fn check(
    c: &mut Checker,
    spec: &VirtualMachineInstanceSpec,
    p: &FieldPath,
) -> Option<VmiConfig> {
    let before = c.count();
    c.unknown(p, spec);

    if let Some(arch) = spec.architecture.as_deref() {
        if arch != "amd64" {
            c.unsupported_value(&p.child("architecture"), arch, &["amd64"]);
        }
    }
    match spec.eviction_strategy.as_deref() {
        None | Some("None") | Some("External") => {}
        Some(s @ ("LiveMigrate" | "LiveMigrateIfPossible")) => c.not_supported(
            &p.child("evictionStrategy"),
            format!("{s:?}: virtshim has no live migration; use \"None\" or \"External\""),
        ),
        Some(other) => c.unsupported_value(
            &p.child("evictionStrategy"),
            other,
            &["None", "External", "LiveMigrate", "LiveMigrateIfPossible"],
        ),
    }
    let start_paused = match spec.start_strategy.as_deref() {
        None => false,
        Some("Paused") => true,
        Some(other) => {
            c.unsupported_value(&p.child("startStrategy"), other, &["Paused"]);
            false
        }
    };
    let grace = match spec.termination_grace_period_seconds {
        None => DEFAULT_GRACE_PERIOD_SECONDS,
        Some(s) if (0..=MAX_GRACE_PERIOD_SECONDS).contains(&s) => s as u32,
        Some(s) => {
            c.invalid(
                &p.child("terminationGracePeriodSeconds"),
                s,
                format!("must be between 0 and {MAX_GRACE_PERIOD_SECONDS}"),
            );
            0
        }
    };
    for (field, value) in [("hostname", &spec.hostname), ("subdomain", &spec.subdomain)] {
        if let Some(v) = value {
            if !is_dns_label(v) {
                c.invalid(
                    &p.child(field),
                    v,
                    "must be a DNS label (lowercase letters, digits and '-', at most 63)",
                );
            }
        }
    }
    if let Some(name) = &spec.priority_class_name {
        if !is_dns_subdomain(name) {
            c.invalid(
                &p.child("priorityClassName"),
                name,
                "must be a DNS subdomain",
            );
        }
    }

    let Some(domain) = spec.domain.as_ref() else {
        c.required(&p.child("domain"), "a VMI needs a domain");
        return None;
    };
    let dp = p.child("domain");
    let hw = check_domain(c, domain, &dp);
    let volumes = check_volumes(
        c,
        spec.volumes.as_deref().unwrap_or(&[]),
        &p.child("volumes"),
    );
    let devices_default = Devices::default();
    let devices = domain.devices.as_ref().unwrap_or(&devices_default);
    let devp = dp.child("devices");
    c.unknown(&devp, devices);
    if let Some(rng) = &devices.rng {
        c.unknown(&devp.child("rng"), rng);
    }
    let disks = check_disks(
        c,
        devices.disks.as_deref().unwrap_or(&[]),
        &volumes,
        &devp.child("disks"),
        &p.child("volumes"),
    );
    let interfaces = check_interfaces(
        c,
        devices.interfaces.as_deref().unwrap_or(&[]),
        spec.networks.as_deref().unwrap_or(&[]),
        &devp.child("interfaces"),
        &p.child("networks"),
    );

    let ssh_keys = check_access_credentials(
        c,
        spec.access_credentials.as_deref().unwrap_or(&[]),
        &volumes,
        &p.child("accessCredentials"),
    );

    if c.count() != before {
        return None;
    }
    let hw = hw?;
    Some(VmiConfig {
        memory: hw.memory,
        cpu: hw.cpu,
        cpu_model: hw.cpu_model,
        machine_type: hw.machine_type,
        bootloader: hw.bootloader,
        kernel_boot: hw.kernel_boot,
        firmware_uuid: hw.firmware_uuid,
        firmware_serial: hw.firmware_serial,
        acpi: hw.acpi,
        smm: hw.smm,
        disks: disks?,
        interfaces: interfaces?,
        serial_console: devices.autoattach_serial_console.unwrap_or(true),
        graphics: devices.autoattach_graphics_device.unwrap_or(true),
        rng: devices.rng.is_some(),
        start_paused,
        termination_grace_period_seconds: grace,
        hostname: spec.hostname.clone(),
        subdomain: spec.subdomain.clone(),
        ssh_keys,
    })
}

/// `spec.accessCredentials`: SSH public keys from Secrets, propagated through the VMI's
/// cloud-init disk of the kind named (KubeVirt refuses the method when the VMI has no such
/// disk). Passwords and the guest agent method need a guest agent, which virtshim does not run.
fn check_access_credentials(
    c: &mut Checker,
    credentials: &[AccessCredential],
    volumes: &Volumes,
    p: &FieldPath,
) -> Vec<SshKeys> {
    let has_disk = |format: CloudInitFormat| {
        volumes
            .values()
            .any(|v| matches!(v, Some(VolumeSource::CloudInit(ci)) if ci.format == format))
    };
    let mut out = Vec::new();
    for (i, credential) in credentials.iter().enumerate() {
        let cp = p.index(i);
        c.unknown(&cp, credential);
        if credential.user_password.is_some() {
            c.not_supported(
                &cp.child("userPassword"),
                "passwords are propagated by the QEMU guest agent, which virtshim does not run; use sshPublicKey with noCloud or configDrive",
            );
        }
        let Some(key) = &credential.ssh_public_key else {
            if credential.user_password.is_none() {
                c.required(&cp, "one of sshPublicKey and userPassword");
            }
            continue;
        };
        if credential.user_password.is_some() {
            c.forbidden(&cp, "only one of sshPublicKey and userPassword may be set");
        }
        let kp = cp.child("sshPublicKey");
        c.unknown(&kp, key);
        let sp = kp.child("source");
        let secret = key.source.as_ref().and_then(|s| {
            c.unknown(&sp, s);
            s.secret.as_ref()
        });
        let secret = match secret {
            None => {
                c.required(&sp.child("secret"), "the Secret holding the public keys");
                None
            }
            Some(s) => {
                c.unknown(&sp.child("secret"), s);
                match s.secret_name.as_deref() {
                    Some(n) if !n.is_empty() && is_dns_subdomain(n) => Some(n.to_owned()),
                    Some(n) => {
                        c.invalid(
                            &sp.child("secret").child("secretName"),
                            n,
                            "must be a DNS subdomain",
                        );
                        None
                    }
                    None => {
                        c.required(&sp.child("secret").child("secretName"), "a Secret name");
                        None
                    }
                }
            }
        };
        let mp = kp.child("propagationMethod");
        let format = match &key.propagation_method {
            None => {
                c.required(&mp, "one of noCloud, configDrive and qemuGuestAgent");
                None
            }
            Some(m) => {
                c.unknown(&mp, m);
                let set = [
                    m.no_cloud.is_some(),
                    m.config_drive.is_some(),
                    m.qemu_guest_agent.is_some(),
                ];
                if set.iter().filter(|s| **s).count() != 1 {
                    c.forbidden(
                        &mp,
                        "exactly one of noCloud, configDrive and qemuGuestAgent must be set",
                    );
                    None
                } else if m.qemu_guest_agent.is_some() {
                    c.not_supported(
                        &mp.child("qemuGuestAgent"),
                        "virtshim runs no QEMU guest agent; use noCloud or configDrive",
                    );
                    None
                } else {
                    let (format, field, volume) = if m.no_cloud.is_some() {
                        (CloudInitFormat::NoCloud, "noCloud", "cloudInitNoCloud")
                    } else {
                        (
                            CloudInitFormat::ConfigDrive,
                            "configDrive",
                            "cloudInitConfigDrive",
                        )
                    };
                    if has_disk(format) {
                        Some(format)
                    } else {
                        c.forbidden(
                            &mp.child(field),
                            format!("needs a {volume} volume to carry the keys"),
                        );
                        None
                    }
                }
            }
        };
        if let (Some(secret), Some(format)) = (secret, format) {
            out.push(SshKeys { secret, format });
        }
    }
    out
}

/// The validated hardware part of `spec.domain` (everything but devices).
struct Hardware {
    memory: MemoryBytes,
    cpu: CpuTopology,
    cpu_model: CpuModel,
    machine_type: String,
    bootloader: Bootloader,
    kernel_boot: Option<KernelBoot>,
    firmware_uuid: uuid::Uuid,
    firmware_serial: Option<String>,
    acpi: bool,
    smm: bool,
}

fn check_domain(c: &mut Checker, domain: &DomainSpec, p: &FieldPath) -> Option<Hardware> {
    c.unknown(p, domain);
    let limits = check_resources(c, domain.resources.as_ref(), &p.child("resources"));
    let memory = check_memory(c, domain, limits.memory, p);
    let (cpu, cpu_model) = check_cpu(c, domain.cpu.as_ref(), &p.child("cpu")).unzip();
    let machine_type = check_machine(c, domain, &p.child("machine"));
    let features = domain.features.clone().unwrap_or_default();
    let (acpi, smm) = check_features(c, &features, &p.child("features"));
    let firmware = check_firmware(
        c,
        domain.firmware.as_ref().unwrap_or(&Firmware::default()),
        smm,
        &p.child("firmware"),
    );
    let (bootloader, kernel_boot, firmware_uuid, firmware_serial) = firmware?;
    Some(Hardware {
        memory: memory?,
        cpu: cpu?,
        cpu_model: cpu_model?,
        machine_type: machine_type?,
        bootloader,
        kernel_boot,
        firmware_uuid,
        firmware_serial,
        acpi,
        smm,
    })
}

/// Memory and CPU limits, in bytes and millicores, for the cross-checks of guest resources.
#[derive(Default)]
struct Limits {
    memory: Option<u64>,
}

fn parse_quantity(c: &mut Checker, q: &QuantityString, p: &FieldPath) -> Option<Quantity> {
    match Quantity::parse(&q.0) {
        Ok(parsed) if parsed.is_negative() => {
            c.invalid(p, &q.0, "must be greater than or equal to 0");
            None
        }
        Ok(parsed) => Some(parsed),
        Err(e) => {
            c.invalid(p, &q.0, e.to_string());
            None
        }
    }
}

fn check_resources(
    c: &mut Checker,
    resources: Option<&ResourceRequirements>,
    p: &FieldPath,
) -> Limits {
    let Some(resources) = resources else {
        return Limits::default();
    };
    c.unknown(p, resources);
    let mut parsed: HashMap<(&str, &str), u64> = HashMap::new();
    for (kind, list) in [
        ("requests", &resources.requests),
        ("limits", &resources.limits),
    ] {
        for (name, q) in list.iter().flatten() {
            let qp = p.child(kind).child(name);
            let Some(value) = parse_quantity(c, q, &qp) else {
                continue;
            };
            let amount = if name == "cpu" {
                value.to_millis()
            } else {
                value.to_units()
            };
            match amount {
                Some(a) => {
                    parsed.insert((kind, name.as_str()), a);
                }
                None => c.invalid(&qp, &q.0, "is too large"),
            }
        }
    }
    if let Some(&request) = parsed.get(&("requests", "memory")) {
        if request > 0 && request < MemoryBytes::MIN {
            c.invalid(
                &p.child("requests").child("memory"),
                bytes_text(resources.requests.as_ref(), "memory"),
                "must be greater than or equal to 1M",
            );
        }
    }
    for resource in ["cpu", "memory"] {
        if let (Some(req), Some(lim)) = (
            parsed.get(&("requests", resource)),
            parsed.get(&("limits", resource)),
        ) {
            if req > lim {
                c.invalid(
                    &p.child("requests").child(resource),
                    bytes_text(resources.requests.as_ref(), resource),
                    format!("must be less than or equal to {resource} limit"),
                );
            }
        }
    }
    Limits {
        memory: parsed.get(&("limits", "memory")).copied(),
    }
}

fn bytes_text(list: Option<&BTreeMap<String, QuantityString>>, name: &str) -> String {
    list.and_then(|l| l.get(name))
        .map(|q| q.0.clone())
        .unwrap_or_default()
}

fn check_memory(
    c: &mut Checker,
    domain: &DomainSpec,
    limit: Option<u64>,
    p: &FieldPath,
) -> Option<MemoryBytes> {
    let mp = p.child("memory");
    if let Some(memory) = &domain.memory {
        c.unknown(&mp, memory);
    }
    let Some(guest) = domain.memory.as_ref().and_then(|m| m.guest.as_ref()) else {
        c.required(
            &mp.child("guest"),
            "no memory requested: set spec.domain.memory.guest or spec.domain.resources.requests.memory",
        );
        return None;
    };
    let gp = mp.child("guest");
    let bytes = parse_quantity(c, guest, &gp)?;
    let Some(bytes) = bytes.to_units() else {
        c.invalid(&gp, &guest.0, "is too large");
        return None;
    };
    let Some(memory) = MemoryBytes::new(bytes) else {
        c.invalid(
            &gp,
            &guest.0,
            format!("must be between 1M and {} bytes (16Ti)", MemoryBytes::MAX),
        );
        return None;
    };
    if let Some(limit) = limit {
        if bytes > limit {
            c.invalid(
                &gp,
                &guest.0,
                "must be less than or equal to spec.domain.resources.limits.memory",
            );
            return None;
        }
    }
    Some(memory)
}

fn check_cpu(c: &mut Checker, cpu: Option<&Cpu>, p: &FieldPath) -> Option<(CpuTopology, CpuModel)> {
    let default = Cpu::default();
    let cpu = cpu.unwrap_or(&default);
    c.unknown(p, cpu);
    // An unset or zero count means one, as in KubeVirt's domain converter.
    let count = |v: Option<u32>| v.unwrap_or(0).max(1);
    let (sockets, cores, threads) = (count(cpu.sockets), count(cpu.cores), count(cpu.threads));
    let topology = CpuTopology::new(sockets, cores, threads);
    if topology.is_none() {
        c.invalid(
            p,
            format!("sockets={sockets} cores={cores} threads={threads}"),
            format!(
                "sockets × cores × threads must be at most {}",
                CpuTopology::MAX_VCPUS
            ),
        );
    }
    let model = match cpu.model.as_deref() {
        None | Some("host-model") => Some(CpuModel::HostModel),
        Some("host-passthrough") => Some(CpuModel::HostPassthrough),
        Some(name)
            if !name.is_empty()
                && name.len() <= 64
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) =>
        {
            Some(CpuModel::Named(name.to_owned()))
        }
        Some(name) => {
            c.invalid(&p.child("model"), name, "must be host-model, host-passthrough or a CPU model name (letters, digits, '-', '_', '.')");
            None
        }
    };
    Some((topology?, model?))
}

fn check_machine(c: &mut Checker, domain: &DomainSpec, p: &FieldPath) -> Option<String> {
    let machine = domain.machine.as_ref();
    if let Some(m) = machine {
        c.unknown(p, m);
    }
    let name = machine
        .and_then(|m| m.type_.as_deref())
        .unwrap_or(crate::defaults::DEFAULT_MACHINE_TYPE);
    let versioned = name.strip_prefix("pc-q35-").is_some_and(|v| {
        !v.is_empty() && v.len() <= 16 && v.bytes().all(|b| b.is_ascii_digit() || b == b'.')
    });
    if name == "q35" || versioned {
        Some(name.to_owned())
    } else {
        c.unsupported_value(&p.child("type"), name, &["q35", "pc-q35-*"]);
        None
    }
}

fn check_features(c: &mut Checker, features: &Features, p: &FieldPath) -> (bool, bool) {
    c.unknown(p, features);
    for (name, state) in [("acpi", &features.acpi), ("smm", &features.smm)] {
        if let Some(s) = state {
            c.unknown(&p.child(name), s);
        }
    }
    let acpi = features.acpi.as_ref().is_none_or(|s| s.is_enabled());
    let smm = features.smm.as_ref().is_some_and(|s| s.is_enabled());
    (acpi, smm)
}

type FirmwareParts = (Bootloader, Option<KernelBoot>, uuid::Uuid, Option<String>);

fn check_firmware(
    c: &mut Checker,
    firmware: &Firmware,
    smm: bool,
    p: &FieldPath,
) -> Option<FirmwareParts> {
    let before = c.count();
    c.unknown(p, firmware);
    let uuid = match firmware.uuid.as_deref() {
        // Defaulting always sets one; a missing UUID here means the caller skipped defaults.
        None => uuid::Uuid::new_v4(),
        Some(text) => match uuid::Uuid::parse_str(text) {
            Ok(u) => u,
            Err(_) => {
                c.invalid(&p.child("uuid"), text, "must be a UUID");
                uuid::Uuid::nil()
            }
        },
    };
    if let Some(serial) = &firmware.serial {
        if serial.is_empty() || !is_printable(serial, 64) {
            c.invalid(
                &p.child("serial"),
                serial,
                "must be 1 to 64 printable ASCII characters",
            );
        }
    }
    let bootloader = match &firmware.bootloader {
        None => Bootloader::Bios { use_serial: false },
        Some(b) => {
            let bp = p.child("bootloader");
            c.unknown(&bp, b);
            match (&b.bios, &b.efi) {
                (Some(_), Some(_)) => {
                    c.forbidden(&bp, "only one of bios and efi may be set");
                    Bootloader::Bios { use_serial: false }
                }
                (_, Some(efi)) => {
                    c.unknown(&bp.child("efi"), efi);
                    let secure_boot = efi.secure_boot.unwrap_or(true);
                    if secure_boot && !smm {
                        c.forbidden(
                            &bp.child("efi").child("secureBoot"),
                            "EFI secure boot requires SMM: set spec.domain.features.smm.enabled: true, or secureBoot: false",
                        );
                    }
                    Bootloader::Efi { secure_boot }
                }
                (Some(bios), None) => {
                    c.unknown(&bp.child("bios"), bios);
                    Bootloader::Bios {
                        use_serial: bios.use_serial.unwrap_or(false),
                    }
                }
                (None, None) => Bootloader::Bios { use_serial: false },
            }
        }
    };
    let kernel_boot = firmware.kernel_boot.as_ref().and_then(|kb| {
        let kp = p.child("kernelBoot");
        c.unknown(&kp, kb);
        if let Some(args) = &kb.kernel_args {
            if !is_printable(args, 4096) {
                c.invalid(
                    &kp.child("kernelArgs"),
                    args,
                    "must be at most 4096 printable ASCII characters",
                );
            }
        }
        let Some(container) = &kb.container else {
            if kb.kernel_args.is_some() {
                c.required(
                    &kp.child("container"),
                    "kernelArgs needs a kernel: set kernelBoot.container",
                );
            }
            return None;
        };
        let cp = kp.child("container");
        c.unknown(&cp, container);
        let image = check_image_ref(
            c,
            container.image.as_deref(),
            container.image_pull_policy.as_deref(),
            container.image_pull_secret.as_deref(),
            &cp,
        );
        for (field, path) in [
            ("kernelPath", &container.kernel_path),
            ("initrdPath", &container.initrd_path),
        ] {
            if let Some(problem) = path.as_deref().and_then(image_path_problem) {
                c.invalid(&cp.child(field), path.as_deref().unwrap_or(""), problem);
            }
        }
        if container.kernel_path.is_none() && container.initrd_path.is_none() {
            c.required(&cp, "at least one of kernelPath and initrdPath");
        } else if container.kernel_path.is_none() && kb.kernel_args.is_some() {
            // As KubeVirt: QEMU takes no command line without a kernel to pass it to.
            c.forbidden(
                &kp.child("kernelArgs"),
                "kernel arguments cannot be provided without an external kernel: set kernelBoot.container.kernelPath",
            );
        }
        Some(KernelBoot {
            image: image?,
            kernel_path: container.kernel_path.clone(),
            initrd_path: container.initrd_path.clone(),
            kernel_args: kb.kernel_args.clone(),
        })
    });
    (c.count() == before).then_some((bootloader, kernel_boot, uuid, firmware.serial.clone()))
}

fn check_image(c: &mut Checker, image: Option<&str>, p: &FieldPath) -> Option<String> {
    match image {
        None | Some("") => {
            c.required(p, "an image reference");
            None
        }
        Some(i) if i.len() > 1024 || !i.bytes().all(|b| b.is_ascii_graphic()) => {
            c.invalid(
                p,
                i,
                "must be an image reference: at most 1024 printable characters, no spaces",
            );
            None
        }
        Some(i) => Some(i.to_owned()),
    }
}

/// An image with its pull settings; `p` is the object holding `image`, `imagePullPolicy` and
/// `imagePullSecret`.
fn check_image_ref(
    c: &mut Checker,
    image: Option<&str>,
    policy: Option<&str>,
    secret: Option<&str>,
    p: &FieldPath,
) -> Option<ImageRef> {
    let reference = check_image(c, image, &p.child("image"));
    let pull_policy = match policy {
        None => Some(None),
        Some("Always") => Some(Some(PullPolicy::Always)),
        Some("IfNotPresent") => Some(Some(PullPolicy::IfNotPresent)),
        Some("Never") => Some(Some(PullPolicy::Never)),
        Some(other) => {
            c.unsupported_value(
                &p.child("imagePullPolicy"),
                other,
                &["Always", "IfNotPresent", "Never"],
            );
            None
        }
    };
    let pull_secret = match secret {
        None => Some(None),
        Some(name) if is_dns_subdomain(name) => Some(Some(name.to_owned())),
        Some(name) => {
            c.invalid(
                &p.child("imagePullSecret"),
                name,
                "must be a Secret name (a DNS subdomain)",
            );
            None
        }
    };
    Some(ImageRef {
        reference: reference?,
        pull_policy: pull_policy?,
        pull_secret: pull_secret?,
    })
}

/// The validated sources of the named volumes; a volume with errors maps to `None`.
type Volumes = HashMap<String, Option<VolumeSource>>;

const VOLUME_SOURCES: &[&str] = &[
    "containerDisk",
    "cloudInitNoCloud",
    "cloudInitConfigDrive",
    "emptyDisk",
    "persistentVolumeClaim",
];

fn check_volumes(c: &mut Checker, volumes: &[Volume], p: &FieldPath) -> Volumes {
    let mut out = Volumes::new();
    if volumes.len() > MAX_DISKS {
        c.invalid(p, volumes.len(), format!("at most {MAX_DISKS} volumes"));
        return out;
    }
    for (i, volume) in volumes.iter().enumerate() {
        let vp = p.index(i);
        let before = c.count();
        c.unknown(&vp, volume);
        let name = volume.name.clone().unwrap_or_default();
        if name.is_empty() {
            c.required(&vp.child("name"), "every volume needs a name");
        } else if !is_dns_label(&name) {
            c.invalid(
                &vp.child("name"),
                &name,
                "must be a DNS label (lowercase letters, digits and '-', at most 63)",
            );
        } else if name.starts_with(crate::pod::RESERVED_VOLUME_PREFIX) {
            c.invalid(
                &vp.child("name"),
                &name,
                format!(
                    "names starting with {:?} are reserved for virtshim's own pod volumes",
                    crate::pod::RESERVED_VOLUME_PREFIX
                ),
            );
        } else if out.contains_key(&name) {
            c.duplicate(&vp.child("name"), &name);
        }
        let mut sources = Vec::new();
        if let Some(cd) = &volume.container_disk {
            sources.push(check_container_disk(c, cd, &vp.child("containerDisk")));
        }
        if let Some(ci) = &volume.cloud_init_no_cloud {
            sources.push(check_cloud_init(
                c,
                ci,
                CloudInitFormat::NoCloud,
                &vp.child("cloudInitNoCloud"),
            ));
        }
        if let Some(ci) = &volume.cloud_init_config_drive {
            sources.push(check_cloud_init(
                c,
                ci,
                CloudInitFormat::ConfigDrive,
                &vp.child("cloudInitConfigDrive"),
            ));
        }
        if let Some(ed) = &volume.empty_disk {
            let ep = vp.child("emptyDisk");
            c.unknown(&ep, ed);
            sources.push(match &ed.capacity {
                None => {
                    c.required(&ep.child("capacity"), "the size of the empty disk");
                    None
                }
                Some(q) => {
                    parse_quantity(c, q, &ep.child("capacity")).and_then(|v| match v.to_units() {
                        Some(b) if b > 0 && b <= MAX_EMPTY_DISK_BYTES => {
                            Some(VolumeSource::EmptyDisk { capacity: b })
                        }
                        _ => {
                            c.invalid(
                                &ep.child("capacity"),
                                &q.0,
                                "must be more than 0 and at most 64Ti",
                            );
                            None
                        }
                    })
                }
            });
        }
        if let Some(pvc) = &volume.persistent_volume_claim {
            let pp = vp.child("persistentVolumeClaim");
            c.unknown(&pp, pvc);
            if pvc.hotpluggable == Some(true) {
                c.not_supported(
                    &pp.child("hotpluggable"),
                    "volume hotplug is not implemented",
                );
            }
            sources.push(match pvc.claim_name.as_deref() {
                Some(n) if is_dns_subdomain(n) && !n.is_empty() => {
                    Some(VolumeSource::PersistentVolumeClaim {
                        claim_name: n.to_owned(),
                        read_only: pvc.read_only.unwrap_or(false),
                    })
                }
                Some(n) if !n.is_empty() => {
                    c.invalid(&pp.child("claimName"), n, "must be a DNS subdomain");
                    None
                }
                _ => {
                    c.required(&pp.child("claimName"), "the PersistentVolumeClaim's name");
                    None
                }
            });
        }
        if volume.ephemeral.is_some() {
            c.not_supported(
                &vp.child("ephemeral"),
                "use persistentVolumeClaim, or a containerDisk for a throw-away disk",
            );
            sources.push(None);
        }
        if volume.host_disk.is_some() {
            c.not_supported(
                &vp.child("hostDisk"),
                "a disk at a node path would let VM authors reach the host; use a persistentVolumeClaim",
            );
            sources.push(None);
        }
        let unknown_source = !volume.unknown.is_empty();
        match sources.len() {
            0 if !unknown_source => c.required(
                &vp,
                format!("one volume source: {}", VOLUME_SOURCES.join(", ")),
            ),
            0 | 1 => {}
            _ => c.forbidden(&vp, "only one volume source may be set"),
        }
        let source = if c.count() == before {
            sources.into_iter().next().flatten()
        } else {
            None
        };
        if !name.is_empty() && !out.contains_key(&name) {
            out.insert(name, source);
        }
    }
    out
}

fn check_container_disk(
    c: &mut Checker,
    cd: &ContainerDiskSource,
    p: &FieldPath,
) -> Option<VolumeSource> {
    c.unknown(p, cd);
    let image = check_image_ref(
        c,
        cd.image.as_deref(),
        cd.image_pull_policy.as_deref(),
        cd.image_pull_secret.as_deref(),
        p,
    );
    if let Some(path) = &cd.path {
        if let Some(problem) = image_path_problem(path) {
            c.invalid(&p.child("path"), path, problem);
            return None;
        }
    }
    Some(VolumeSource::ContainerDisk {
        image: image?,
        path: cd.path.clone(),
    })
}

fn check_cloud_init(
    c: &mut Checker,
    ci: &CloudInitSource,
    format: CloudInitFormat,
    p: &FieldPath,
) -> Option<VolumeSource> {
    let before = c.count();
    c.unknown(p, ci);
    let user = check_cloud_init_data(
        c,
        p,
        ("userData", ci.user_data.as_deref()),
        ("userDataBase64", ci.user_data_base64.as_deref()),
        ("secretRef", ci.secret_ref.as_ref()),
    );
    let network = check_cloud_init_data(
        c,
        p,
        ("networkData", ci.network_data.as_deref()),
        ("networkDataBase64", ci.network_data_base64.as_deref()),
        ("networkDataSecretRef", ci.network_data_secret_ref.as_ref()),
    );
    if user.is_none() && network.is_none() && c.count() == before {
        c.required(p, "one of userData, userDataBase64, secretRef, networkData, networkDataBase64, networkDataSecretRef");
    }
    (c.count() == before).then_some(VolumeSource::CloudInit(CloudInit {
        format,
        user_data: user,
        network_data: network,
    }))
}

fn check_cloud_init_data(
    c: &mut Checker,
    p: &FieldPath,
    (inline_field, inline): (&str, Option<&str>),
    (b64_field, b64): (&str, Option<&str>),
    (secret_field, secret): (&str, Option<&crate::types::LocalObjectReference>),
) -> Option<CloudInitData> {
    let given = [inline.is_some(), b64.is_some(), secret.is_some()]
        .iter()
        .filter(|x| **x)
        .count();
    if given > 1 {
        c.forbidden(
            p,
            format!("only one of {inline_field}, {b64_field} and {secret_field} may be set"),
        );
        return None;
    }
    if let Some(text) = inline {
        if text.len() > CLOUD_INIT_INLINE_MAX {
            c.invalid(&p.child(inline_field), format!("{} bytes", text.len()), format!("exceeds the {CLOUD_INIT_INLINE_MAX} byte limit; use {secret_field} for larger data"));
            return None;
        }
        return Some(CloudInitData::Inline(text.to_owned()));
    }
    if let Some(encoded) = b64 {
        let bp = p.child(b64_field);
        // Generous bound before decoding, the exact one after.
        if encoded.len() > CLOUD_INIT_INLINE_MAX * 2 {
            c.invalid(&bp, format!("{} bytes", encoded.len()), format!("exceeds the {CLOUD_INIT_INLINE_MAX} byte limit; use {secret_field} for larger data"));
            return None;
        }
        let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim());
        return match decoded.map(String::from_utf8) {
            Ok(Ok(text)) if text.len() <= CLOUD_INIT_INLINE_MAX => {
                Some(CloudInitData::Inline(text))
            }
            Ok(Ok(text)) => {
                c.invalid(&bp, format!("{} bytes", text.len()), format!("exceeds the {CLOUD_INIT_INLINE_MAX} byte limit; use {secret_field} for larger data"));
                None
            }
            Ok(Err(_)) => {
                c.invalid(&bp, "<binary>", "must decode to UTF-8 text");
                None
            }
            Err(e) => {
                c.invalid(&bp, "<not base64>", format!("is not valid base64: {e}"));
                None
            }
        };
    }
    let secret = secret?;
    let sp = p.child(secret_field);
    c.unknown(&sp, secret);
    match secret.name.as_deref() {
        Some(n) if !n.is_empty() && is_dns_subdomain(n) => {
            Some(CloudInitData::Secret { name: n.to_owned() })
        }
        Some(n) if !n.is_empty() => {
            c.invalid(&sp.child("name"), n, "must be a DNS subdomain");
            None
        }
        _ => {
            c.required(&sp.child("name"), "the Secret's name");
            None
        }
    }
}

fn check_disks(
    c: &mut Checker,
    disks: &[Disk],
    volumes: &Volumes,
    p: &FieldPath,
    volumes_path: &FieldPath,
) -> Option<Vec<DiskConfig>> {
    let before = c.count();
    if disks.len() > MAX_DISKS {
        c.invalid(p, disks.len(), format!("at most {MAX_DISKS} disks"));
        return None;
    }
    let mut names = HashSet::new();
    let mut boot_orders = HashSet::new();
    let mut out = Vec::new();
    for (i, disk) in disks.iter().enumerate() {
        let dp = p.index(i);
        c.unknown(&dp, disk);
        let name = disk.name.as_deref().unwrap_or("");
        if name.is_empty() {
            c.required(&dp.child("name"), "the name of the volume this disk shows");
        } else if !names.insert(name) {
            c.duplicate(&dp.child("name"), name);
        } else if !volumes.contains_key(name) && is_dns_label(name) {
            c.invalid(
                &dp.child("name"),
                name,
                format!("no volume of this name in {volumes_path}"),
            );
        } else if !is_dns_label(name) {
            c.invalid(
                &dp.child("name"),
                name,
                "must be a DNS label (lowercase letters, digits and '-', at most 63)",
            );
        }
        let targets = [
            disk.disk.is_some(),
            disk.cdrom.is_some(),
            disk.lun.is_some(),
        ]
        .iter()
        .filter(|x| **x)
        .count();
        if targets > 1 {
            c.forbidden(&dp, "only one of disk, cdrom and lun may be set");
        }
        let bus =
            |c: &mut Checker, bus: Option<&str>, bp: FieldPath, cdrom: bool| -> Option<DiskBus> {
                let name = bus.unwrap_or(crate::defaults::DEFAULT_DISK_BUS);
                match DiskBus::parse(name) {
                    Some(DiskBus::Virtio) if cdrom => {
                        c.invalid(
                            &bp,
                            name,
                            "a CD-ROM cannot sit on the virtio bus; use sata, scsi or usb",
                        );
                        None
                    }
                    Some(b) => Some(b),
                    None => {
                        c.unsupported_value(&bp, name, DiskBus::NAMES);
                        None
                    }
                }
            };
        let device = if let Some(d) = &disk.disk {
            c.unknown(&dp.child("disk"), d);
            let read_only = d.read_only.unwrap_or(false);
            bus(c, d.bus.as_deref(), dp.child("disk").child("bus"), false).and_then(|bus| {
                if read_only && matches!(bus, DiskBus::Sata | DiskBus::Usb) {
                    c.forbidden(
                        &dp.child("disk").child("readonly"),
                        format!(
                            "a read-only disk on the {bus} bus is not possible; use virtio or scsi"
                        ),
                    );
                    return None;
                }
                Some(DiskDevice::Disk { bus, read_only })
            })
        } else if let Some(cd) = &disk.cdrom {
            let cp = dp.child("cdrom");
            c.unknown(&cp, cd);
            let tray_open = match cd.tray.as_deref() {
                None | Some("closed") => false,
                Some("open") => true,
                Some(other) => {
                    c.unsupported_value(&cp.child("tray"), other, &["open", "closed"]);
                    false
                }
            };
            bus(c, cd.bus.as_deref(), cp.child("bus"), true).map(|bus| DiskDevice::Cdrom {
                bus,
                read_only: cd.read_only.unwrap_or(true),
                tray_open,
            })
        } else if disk.lun.is_some() {
            c.not_supported(
                &dp.child("lun"),
                "SCSI LUN passthrough is not implemented; use disk",
            );
            None
        } else {
            Some(DiskDevice::Disk {
                bus: DiskBus::Sata,
                read_only: false,
            })
        };
        if let Some(order) = disk.boot_order {
            if order < 1 {
                c.invalid(&dp.child("bootOrder"), order, "must be 1 or more");
            } else if !boot_orders.insert(order) {
                c.invalid(
                    &dp.child("bootOrder"),
                    order,
                    "another disk has this boot order",
                );
            }
        }
        if let Some(serial) = &disk.serial {
            let ok = !serial.is_empty()
                && serial.len() <= 20
                && serial
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.+-".contains(&b));
            if !ok {
                c.invalid(
                    &dp.child("serial"),
                    serial,
                    "must be 1 to 20 of letters, digits, '_', '.', '+', '-'",
                );
            }
        }
        let source = volumes.get(name).cloned().flatten();
        if let (Some(device), Some(source)) = (device, source) {
            out.push(DiskConfig {
                name: name.to_owned(),
                device,
                boot_order: disk.boot_order,
                serial: disk.serial.clone(),
                source,
            });
        }
    }
    (c.count() == before && out.len() == disks.len()).then_some(out)
}

fn check_interfaces(
    c: &mut Checker,
    interfaces: &[Interface],
    networks: &[Network],
    p: &FieldPath,
    np: &FieldPath,
) -> Option<Vec<InterfaceConfig>> {
    let before = c.count();
    if interfaces.len() > MAX_INTERFACES {
        c.invalid(
            p,
            interfaces.len(),
            format!("at most {MAX_INTERFACES} interfaces"),
        );
        return None;
    }
    if networks.len() > MAX_INTERFACES {
        c.invalid(
            np,
            networks.len(),
            format!("at most {MAX_INTERFACES} networks"),
        );
        return None;
    }
    let mut network_names = HashSet::new();
    let mut pod_networks = 0;
    for (i, network) in networks.iter().enumerate() {
        let netp = np.index(i);
        c.unknown(&netp, network);
        let name = network.name.as_deref().unwrap_or("");
        if name.is_empty() {
            c.required(&netp.child("name"), "every network needs a name");
        } else if !network_names.insert(name) {
            c.duplicate(&netp.child("name"), name);
        }
        if !interfaces
            .iter()
            .any(|iface| iface.name.as_deref() == Some(name))
            && !name.is_empty()
        {
            c.invalid(
                &netp.child("name"),
                name,
                format!("no interface of this name in {p}"),
            );
        }
        let sources = usize::from(network.pod.is_some()) + usize::from(network.multus.is_some());
        if sources > 1 {
            c.forbidden(&netp, "only one of pod and multus may be set");
        } else if sources == 0 && network.unknown.is_empty() {
            c.required(&netp, "one network source: pod");
        }
        if let Some(pod) = &network.pod {
            pod_networks += 1;
            c.unknown(&netp.child("pod"), pod);
            if let Some(cidr) = &pod.vm_network_cidr {
                if !is_ipv4_cidr(cidr) {
                    c.invalid(
                        &netp.child("pod").child("vmNetworkCIDR"),
                        cidr,
                        "must be an IPv4 CIDR such as 10.0.2.0/24",
                    );
                }
            }
            if let Some(cidr) = &pod.vm_ipv6_network_cidr {
                if !is_ipv6_cidr(cidr) {
                    c.invalid(
                        &netp.child("pod").child("vmIPv6NetworkCIDR"),
                        cidr,
                        "must be an IPv6 CIDR such as fd10:0:2::/120",
                    );
                }
            }
        }
        if network.multus.is_some() {
            c.not_supported(
                &netp.child("multus"),
                "secondary networks through Multus are not implemented; use pod",
            );
        }
    }
    if pod_networks > 1 {
        c.forbidden(np, "at most one pod network");
    }

    let mut names = HashSet::new();
    let mut macs = HashSet::new();
    let mut out = Vec::new();
    for (i, iface) in interfaces.iter().enumerate() {
        let ip = p.index(i);
        c.unknown(&ip, iface);
        let name = iface.name.as_deref().unwrap_or("");
        if name.is_empty() {
            c.required(
                &ip.child("name"),
                "the name of the network this interface connects to",
            );
        } else if !names.insert(name) {
            c.duplicate(&ip.child("name"), name);
        } else if !network_names.contains(name) {
            c.invalid(
                &ip.child("name"),
                name,
                format!("no network of this name in {np}"),
            );
        }
        let model = match iface.model.as_deref() {
            None => Some(NicModel::Virtio),
            Some(m) => NicModel::parse(m).or_else(|| {
                c.unsupported_value(&ip.child("model"), m, NicModel::NAMES);
                None
            }),
        };
        let ports = check_ports(c, iface.ports.as_deref().unwrap_or(&[]), &ip.child("ports"));
        let binding = match (&iface.bridge, &iface.masquerade) {
            (Some(_), Some(_)) => {
                c.forbidden(&ip, "only one of bridge and masquerade may be set");
                None
            }
            (Some(b), None) => {
                c.unknown(&ip.child("bridge"), b);
                if iface.ports.as_ref().is_some_and(|p| !p.is_empty()) {
                    c.forbidden(
                        &ip.child("ports"),
                        "ports are only forwarded with masquerade; a bridged guest owns every port",
                    );
                }
                Some(Binding::Bridge)
            }
            (None, Some(m)) => {
                c.unknown(&ip.child("masquerade"), m);
                ports.map(|ports| Binding::Masquerade { ports })
            }
            (None, None) => {
                // A binding virtshim does not know (sriov, passt, …) was named by unknown() already.
                if iface.unknown.is_empty() {
                    c.required(&ip, "one binding: bridge or masquerade");
                }
                None
            }
        };
        let mac = iface
            .mac_address
            .as_deref()
            .and_then(|text| match parse_mac(text) {
                Some(mac) if mac.0[0] & 1 == 1 => {
                    c.invalid(&ip.child("macAddress"), text, "must be a unicast address");
                    None
                }
                Some(mac) if !macs.insert(mac.0) => {
                    c.duplicate(&ip.child("macAddress"), text);
                    None
                }
                Some(mac) => Some(mac),
                None => {
                    c.invalid(
                        &ip.child("macAddress"),
                        text,
                        "must be six hex octets such as 02:00:00:00:00:01",
                    );
                    None
                }
            });
        if let (Some(model), Some(binding)) = (model, binding) {
            let vm_network_cidr = networks
                .iter()
                .find(|n| n.name.as_deref() == Some(name))
                .and_then(|n| n.pod.as_ref())
                .and_then(|p| p.vm_network_cidr.clone());
            out.push(InterfaceConfig {
                name: name.to_owned(),
                model,
                binding,
                mac,
                vm_network_cidr,
            });
        }
    }
    (c.count() == before).then_some(out)
}

fn check_ports(
    c: &mut Checker,
    ports: &[crate::types::Port],
    p: &FieldPath,
) -> Option<Vec<PortConfig>> {
    if ports.len() > MAX_PORTS {
        c.invalid(p, ports.len(), format!("at most {MAX_PORTS} ports"));
        return None;
    }
    let before = c.count();
    let mut out = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let pp = p.index(i);
        c.unknown(&pp, port);
        let protocol = match port.protocol.as_deref() {
            None | Some("TCP") => Some(Protocol::Tcp),
            Some("UDP") => Some(Protocol::Udp),
            Some(other) => {
                c.unsupported_value(&pp.child("protocol"), other, &["TCP", "UDP"]);
                None
            }
        };
        let number = match port.port {
            None => {
                c.required(&pp.child("port"), "the port number");
                None
            }
            Some(n) => match u16::try_from(n) {
                Ok(n) if n > 0 => Some(n),
                _ => {
                    c.invalid(&pp.child("port"), n, "must be between 1 and 65535");
                    None
                }
            },
        };
        if let (Some(protocol), Some(port)) = (protocol, number) {
            out.push(PortConfig { protocol, port });
        }
    }
    (c.count() == before).then_some(out)
}

fn parse_mac(text: &str) -> Option<MacAddress> {
    let parts: Vec<&str> = text.split([':', '-']).collect();
    if parts.len() != 6 {
        return None;
    }
    let mut octets = [0u8; 6];
    for (octet, part) in octets.iter_mut().zip(parts) {
        if part.len() != 2 {
            return None;
        }
        *octet = u8::from_str_radix(part, 16).ok()?;
    }
    Some(MacAddress(octets))
}

fn is_ipv4_cidr(text: &str) -> bool {
    text.split_once('/').is_some_and(|(addr, len)| {
        addr.parse::<std::net::Ipv4Addr>().is_ok() && len.parse::<u8>().is_ok_and(|l| l <= 30)
    })
}

fn is_ipv6_cidr(text: &str) -> bool {
    text.split_once('/').is_some_and(|(addr, len)| {
        addr.parse::<std::net::Ipv6Addr>().is_ok() && len.parse::<u8>().is_ok_and(|l| l <= 126)
    })
}
