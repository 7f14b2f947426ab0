//! Which field names each wire struct may carry, so that a field virtshim does not model can be
//! told apart: a real KubeVirt field virtshim does not implement ("not supported by virtshim"),
//! or a name KubeVirt does not have either — almost always a typo ("unknown field", with the
//! nearest known name).
//!
//! virtshim's own names come from the struct's schema (schemars follows the serde renames);
//! KubeVirt's are listed by hand below, per KubeVirt Go type, with `json:",inline"` members
//! expanded. They were read from `staging/src/kubevirt.io/api/core/v1/{types,schema}.go` of
//! kubevirt/kubevirt at d923fdb8 (August 2026). A test checks that every field virtshim models is
//! in KubeVirt's list for that struct, which catches a struct mapped to the wrong KubeVirt type.

use crate::types::{
    AccessCredential, AccessCredentialSecretSource, Bios, Bootloader, CdromTarget, CloudInitSource,
    ContainerDiskSource, Cpu, Devices, Disk, DiskTarget, DomainSpec, Efi, Empty, EmptyDiskSource,
    FeatureState, Features, Firmware, Interface, KernelBoot, KernelBootContainer,
    LocalObjectReference, Machine, Memory, Network, PersistentVolumeClaimSource, PodNetwork, Port,
    PropagationMethod, ResourceRequirements, SshPublicKeyAccessCredential, SshPublicKeySource,
    Unknown, VirtualMachineInstanceReplicaSetSpec, VirtualMachineInstanceSpec,
    VirtualMachineInstanceTemplateSpec, VirtualMachineSpec, Volume,
};
use schemars::JsonSchema;

/// A wire struct that keeps the fields it does not model in an [`Unknown`] map.
pub(crate) trait Wire: JsonSchema {
    /// Every field the same object has in KubeVirt, modelled by virtshim or not.
    const KUBEVIRT_FIELDS: &'static [&'static str];
    /// The fields of this object virtshim does not model.
    fn unknown(&self) -> &Unknown;
}

/// How virtshim should name an unmodelled field.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Unmodelled {
    /// KubeVirt has it; virtshim does not implement it.
    KubeVirtField,
    /// Neither has it; the closest name either knows, when one is close enough to be meant.
    Unknown { did_you_mean: Option<String> },
}

/// Classifies `key`, a field of `T` that virtshim does not model.
pub(crate) fn classify<T: Wire>(key: &str) -> Unmodelled {
    if T::KUBEVIRT_FIELDS.contains(&key) {
        return Unmodelled::KubeVirtField;
    }
    let own = own_fields::<T>();
    let candidates = own
        .iter()
        .map(String::as_str)
        .chain(T::KUBEVIRT_FIELDS.iter().copied());
    Unmodelled::Unknown {
        did_you_mean: nearest(key, candidates).map(str::to_owned),
    }
}

/// The field names virtshim's struct has, from its JSON schema.
pub(crate) fn own_fields<T: JsonSchema>() -> Vec<String> {
    let schema = schemars::schema_for!(T);
    schema
        .get("properties")
        .and_then(|p| p.as_object())
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default()
}

/// The candidate closest to `key`, if it is close enough to be a typo of it: at most two edits
/// (letter case ignored, a swap of neighbours counts as one), and no more than a third of the
/// candidate's length, so short names do not attract unrelated ones ("tag" is not "tpm").
fn nearest<'a>(key: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let key_lower = key.to_ascii_lowercase();
    let key_len = key_lower.chars().count();
    candidates
        // A distance is at least the difference in length: a name more than 2 characters
        // longer or shorter is never suggested, so its (quadratic) distance is not computed.
        // Without this, a review of 1000 unknown 5000-character keys took 17 s of CPU.
        .filter(|c| c.chars().count().abs_diff(key_len) <= 2)
        .map(|c| (edit_distance(&key_lower, &c.to_ascii_lowercase()), c))
        .filter(|(d, c)| *d <= 2 && *d * 3 <= c.chars().count())
        .min_by_key(|(d, c)| (*d, *c))
        .map(|(_, c)| c)
}

/// Optimal string alignment distance: insertions, deletions, substitutions and swaps of two
/// neighbouring characters each cost one.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let width = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * width];
    for (i, row) in d.chunks_mut(width).enumerate() {
        row[0] = i;
    }
    for (j, cell) in d.iter_mut().take(width).enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[(i - 1) * width + j] + 1)
                .min(d[i * width + j - 1] + 1)
                .min(d[(i - 1) * width + j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[(i - 2) * width + j - 2] + 1);
            }
            d[i * width + j] = best;
        }
    }
    d[a.len() * width + b.len()]
}

/// `impl Wire for Struct` with KubeVirt's field names for the same object.
macro_rules! kubevirt_fields {
    ($($ty:ty => [$($field:literal),* $(,)?];)*) => {$(
        impl Wire for $ty {
            const KUBEVIRT_FIELDS: &'static [&'static str] = &[$($field),*];
            fn unknown(&self) -> &Unknown {
                &self.unknown
            }
        }
    )*};
}

kubevirt_fields! {
    // VirtualMachineSpec
    VirtualMachineSpec => [
        "running", "runStrategy", "instancetype", "preference", "template",
        "dataVolumeTemplates", "updateVolumesStrategy",
    ];
    // VirtualMachineInstanceReplicaSetSpec
    VirtualMachineInstanceReplicaSetSpec => ["replicas", "selector", "template", "paused"];
    // VirtualMachineInstanceTemplateSpec
    VirtualMachineInstanceTemplateSpec => ["metadata", "spec"];
    // VirtualMachineInstanceSpec
    VirtualMachineInstanceSpec => [
        "priorityClassName", "domain", "nodeSelector", "affinity", "schedulerName",
        "serviceAccountName", "tolerations", "topologySpreadConstraints", "evictionStrategy",
        "startStrategy", "terminationGracePeriodSeconds", "volumes", "livenessProbe",
        "readinessProbe", "hostname", "subdomain", "networks", "dnsPolicy", "dnsConfig",
        "accessCredentials", "architecture", "resourceClaims", "utilityVolumes",
    ];
    // AccessCredential
    AccessCredential => ["sshPublicKey", "userPassword"];
    // SSHPublicKeyAccessCredential
    SshPublicKeyAccessCredential => ["source", "propagationMethod"];
    // SSHPublicKeyAccessCredentialSource
    SshPublicKeySource => ["secret"];
    // AccessCredentialSecretSource
    AccessCredentialSecretSource => ["secretName"];
    // SSHPublicKeyAccessCredentialPropagationMethod
    PropagationMethod => ["configDrive", "noCloud", "qemuGuestAgent"];
    // DomainSpec
    DomainSpec => [
        "resources", "cpu", "memory", "machine", "firmware", "clock", "features", "devices",
        "ioThreadsPolicy", "ioThreads", "chassis", "launchSecurity", "rebootPolicy",
    ];
    // ResourceRequirements
    ResourceRequirements => ["requests", "limits", "overcommitGuestOverhead"];
    // Memory
    Memory => ["hugepages", "guest", "maxGuest", "reservedOverhead"];
    // CPU
    Cpu => [
        "cores", "sockets", "maxSockets", "threads", "model", "features",
        "dedicatedCpuPlacement", "numa", "isolateEmulatorThread", "realtime",
    ];
    // Machine
    Machine => ["type"];
    // Features
    Features => ["acpi", "apic", "hypervPassthrough", "hyperv", "smm", "kvm", "pvspinlock"];
    // FeatureState
    FeatureState => ["enabled"];
    // Firmware
    Firmware => ["uuid", "bootloader", "serial", "kernelBoot", "acpi"];
    // Bootloader
    Bootloader => ["bios", "efi"];
    // EFI
    Efi => ["secureBoot", "persistent"];
    // BIOS
    Bios => ["useSerial"];
    // KernelBoot
    KernelBoot => ["kernelArgs", "container"];
    // KernelBootContainer
    KernelBootContainer => [
        "image", "imagePullSecret", "imagePullPolicy", "kernelPath", "initrdPath",
    ];
    // Devices
    Devices => [
        "useVirtioTransitional", "disableHotplug", "disks", "watchdog", "interfaces", "inputs",
        "autoattachPodInterface", "autoattachGraphicsDevice", "autoattachSerialConsole",
        "logSerialConsole", "autoattachMemBalloon", "autoattachInputDevice",
        "autoattachVSOCK", "rng", "blockMultiQueue", "networkInterfaceMultiqueue", "gpus",
        "downwardMetrics", "panicDevices", "filesystems", "hostDevices", "clientPassthrough",
        "sound", "tpm", "video",
    ];
    // Rng, InterfaceBridge, InterfaceMasquerade: empty objects in KubeVirt too.
    Empty => [];
    // Volume with VolumeSource inline
    Volume => [
        "name", "hostDisk", "persistentVolumeClaim", "cloudInitNoCloud",
        "cloudInitConfigDrive", "sysprep", "containerDisk", "ephemeral", "emptyDisk",
        "dataVolume", "configMap", "secret", "downwardAPI", "serviceAccount",
        "downwardMetrics", "memoryDump", "containerPath",
    ];
    // EmptyDiskSource
    EmptyDiskSource => ["capacity"];
    // Kubernetes' LocalObjectReference (cloud-init secretRef, networkDataSecretRef)
    LocalObjectReference => ["name"];
    // PersistentVolumeClaimVolumeSource, with Kubernetes' PersistentVolumeClaimVolumeSource inline
    PersistentVolumeClaimSource => ["claimName", "readOnly", "hotpluggable"];
    // ContainerDiskSource
    ContainerDiskSource => ["image", "imagePullSecret", "path", "imagePullPolicy"];
    // CloudInitNoCloudSource and CloudInitConfigDriveSource (the same fields)
    CloudInitSource => [
        "secretRef", "userDataBase64", "userData", "networkDataSecretRef",
        "networkDataBase64", "networkData",
    ];
    // Disk with DiskDevice inline
    Disk => [
        "name", "disk", "lun", "cdrom", "bootOrder", "serial", "dedicatedIOThread", "cache",
        "io", "tag", "blockSize", "shareable", "errorPolicy", "changedBlockTracking",
    ];
    // DiskTarget
    DiskTarget => ["bus", "readonly", "pciAddress"];
    // CDRomTarget
    CdromTarget => ["bus", "readonly", "tray"];
    // Network with NetworkSource inline
    Network => ["name", "pod", "multus", "resourceClaim"];
    // PodNetwork
    PodNetwork => ["vmNetworkCIDR", "vmIPv6NetworkCIDR"];
    // Interface with InterfaceBindingMethod inline
    Interface => [
        "name", "model", "bridge", "slirp", "masquerade", "sriov", "macvtap", "passt",
        "passtBinding", "binding", "ports", "portRanges", "macAddress", "bootOrder",
        "pciAddress", "dhcpOptions", "tag", "acpiIndex", "state",
    ];
    // Port
    Port => ["name", "protocol", "port"];
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every field virtshim models must be a KubeVirt field of the same object; a struct mapped
    /// to the wrong KubeVirt type fails here.
    #[test]
    fn modelled_fields_are_kubevirt_fields() {
        fn check<T: Wire>() {
            let own = own_fields::<T>();
            let name = T::schema_name();
            if !T::KUBEVIRT_FIELDS.is_empty() {
                assert!(!own.is_empty(), "{name}: no properties in its schema");
            }
            for field in own {
                assert!(
                    T::KUBEVIRT_FIELDS.contains(&field.as_str()),
                    "{name}.{field} is not in KubeVirt's list"
                );
            }
        }
        check::<VirtualMachineSpec>();
        check::<VirtualMachineInstanceReplicaSetSpec>();
        check::<VirtualMachineInstanceTemplateSpec>();
        check::<VirtualMachineInstanceSpec>();
        check::<AccessCredential>();
        check::<SshPublicKeyAccessCredential>();
        check::<SshPublicKeySource>();
        check::<AccessCredentialSecretSource>();
        check::<PropagationMethod>();
        check::<DomainSpec>();
        check::<ResourceRequirements>();
        check::<Memory>();
        check::<Cpu>();
        check::<Machine>();
        check::<Features>();
        check::<FeatureState>();
        check::<Firmware>();
        check::<Bootloader>();
        check::<Efi>();
        check::<Bios>();
        check::<KernelBoot>();
        check::<KernelBootContainer>();
        check::<Devices>();
        check::<Empty>();
        check::<Volume>();
        check::<EmptyDiskSource>();
        check::<LocalObjectReference>();
        check::<PersistentVolumeClaimSource>();
        check::<ContainerDiskSource>();
        check::<CloudInitSource>();
        check::<Disk>();
        check::<DiskTarget>();
        check::<CdromTarget>();
        check::<Network>();
        check::<PodNetwork>();
        check::<Interface>();
        check::<Port>();
    }

    #[test]
    fn edit_distances() {
        for (a, b, d) in [
            ("bootloadr", "bootloader", 1),
            ("bootlaoder", "bootloader", 1),
            ("", "abc", 3),
            ("abc", "abc", 0),
            ("kitten", "sitting", 3),
        ] {
            assert_eq!(edit_distance(a, b), d, "{a} → {b}");
        }
    }

    #[test]
    fn suggestions_only_when_close() {
        let names = ["bootloader", "uuid", "serial", "kernelBoot", "acpi"];
        for (key, want) in [
            ("bootloadr", Some("bootloader")),
            ("BootLoader", Some("bootloader")),
            ("uid", Some("uuid")),
            ("kernelboot", Some("kernelBoot")),
            ("serials", Some("serial")),
            ("colour", None),
            ("ab", None),
            ("bootstrap", None),
        ] {
            assert_eq!(nearest(key, names.iter().copied()), want, "{key}");
        }
    }

    #[test]
    fn classifies_kubevirt_fields_and_typos() {
        assert_eq!(classify::<Devices>("gpus"), Unmodelled::KubeVirtField);
        assert_eq!(
            classify::<Firmware>("bootloadr"),
            Unmodelled::Unknown {
                did_you_mean: Some("bootloader".to_owned())
            }
        );
        assert_eq!(
            classify::<Devices>("gpu"),
            Unmodelled::Unknown {
                did_you_mean: Some("gpus".to_owned())
            }
        );
        assert_eq!(
            classify::<Empty>("foo"),
            Unmodelled::Unknown { did_you_mean: None }
        );
    }
}
