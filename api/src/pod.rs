//! The pod contract: how a VMI becomes a pod, and the names the shim reads back.
//!
//! The controller and `virtctl local` build pods with [`pod_for_vmi`]; the shim recognises the
//! containers by the names here and reads the VMI from [`VMI_ANNOTATION`] (containerd passes it
//! because the runtime's `pod_annotations` lists `virtshim.io/*`). Keeping both sides in one
//! module is what keeps them in step.
//!
//! - The boot containerDisk's image is the `compute` container's image (else the kernelBoot
//!   image, else [`PLACEHOLDER_IMAGE`]); the shim finds the disk in compute's root filesystem.
//! - Every further containerDisk is a container `volume<name>` that runs nothing; the kernelBoot
//!   image, when it is not compute's, is a container `kernel-boot`. They come *before* compute,
//!   so the kubelet has created them when compute starts.
//! - emptyDisk, PVC (filesystem) and cloud-init Secret volumes are pod volumes mounted into
//!   compute under [`VOLUME_MOUNT_ROOT`]`/<volume>`; a block PVC is a device at
//!   [`VOLUME_DEVICE_ROOT`]`/<volume>`.

use crate::config::{CloudInitData, ImageRef, VmiConfig, VolumeSource};
use crate::types::VirtualMachineInstance;
use k8s_openapi::api::core::v1::{
    Container, EmptyDirVolumeSource, LocalObjectReference, PersistentVolumeClaimVolumeSource, Pod,
    PodSpec, ResourceRequirements, SecretVolumeSource, Volume, VolumeDevice, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use std::collections::{BTreeMap, BTreeSet};

/// The pod annotation carrying the defaulted VMI as JSON.
pub const VMI_ANNOTATION: &str = "virtshim.io/vmi";
/// The annotation prefix containerd must pass to the shim (`pod_annotations`).
pub const ANNOTATION_PREFIX: &str = "virtshim.io/";
/// RuntimeClass name and CRI runtime handler.
pub const RUNTIME_CLASS: &str = "virtshim";
/// The container that is the VM.
pub const COMPUTE_CONTAINER: &str = "compute";
/// The container holding the kernelBoot image when compute holds another image.
pub const KERNEL_BOOT_CONTAINER: &str = "kernel-boot";
/// Prefix of the containers holding further containerDisks.
pub const VOLUME_CONTAINER_PREFIX: &str = "volume";
/// Where compute mounts the pod volumes the VM's disks live on.
pub const VOLUME_MOUNT_ROOT: &str = "/var/run/virtshim/volumes";
/// Where compute sees block PVCs.
pub const VOLUME_DEVICE_ROOT: &str = "/dev/virtshim";
/// The image of a compute container with no image of its own to carry (PVC boot); it runs
/// nothing, so any small image does.
pub const PLACEHOLDER_IMAGE: &str = "localhost/virtshim/placeholder:v1";
/// The command of every container in a virtshim pod. The shim never executes it (the image's
/// files are all it uses), but containerd refuses containers without a command, and images such
/// as containerDisks have none.
pub const CONTAINER_COMMAND: &str = "/virtshim-runs-no-process";
/// The file a filesystem-mode PVC holds the disk in, as in KubeVirt.
pub const PVC_DISK_FILE: &str = "disk.img";
/// Pod annotation: `{"<volume>": <bytes>}`, the capacity of each filesystem-mode PVC (the smaller
/// of its status capacity and its request), which sizes a `disk.img` the shim makes on a blank
/// claim as KubeVirt sizes it: a file system shared by many claims says nothing about one.
pub const CLAIM_CAPACITY_ANNOTATION: &str = "virtshim.io/claim-capacities";

/// Records the claims' capacities on the pod (see [`CLAIM_CAPACITY_ANNOTATION`]).
pub fn set_claim_capacities(pod: &mut Pod, capacities: &BTreeMap<String, u64>) {
    if capacities.is_empty() {
        return;
    }
    if let Ok(text) = serde_json::to_string(capacities) {
        pod.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(CLAIM_CAPACITY_ANNOTATION.to_owned(), text);
    }
}

/// Reads [`CLAIM_CAPACITY_ANNOTATION`]; anything unreadable counts as no capacity known (the
/// shim then sizes by the file system, bounded by its free space either way).
pub fn claim_capacities(annotation: Option<&str>) -> BTreeMap<String, u64> {
    annotation
        .filter(|t| t.len() <= 64 << 10)
        .and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or_default()
}

/// Labels KubeVirt puts on launcher pods, which Services and `virtctl expose` select on.
pub const LABEL_CREATED_BY: &str = "kubevirt.io/created-by";
pub const LABEL_APP: &str = "kubevirt.io";
pub const LABEL_DOMAIN: &str = "kubevirt.io/domain";
pub const LABEL_VM_NAME: &str = "vm.kubevirt.io/name";
/// The VMI's name as a label value (what `virtctl expose` selects, as in KubeVirt).
pub const LABEL_VMI_ID: &str = "vmi.kubevirt.io/id";

/// The value of [`LABEL_VMI_ID`]: the name itself when it fits a label (63 characters), else its
/// first 54 characters, `-` and the first 8 hex digits of the name's SHA-1, as KubeVirt makes it.
pub fn vmi_id_label(name: &str) -> String {
    const MAX: usize = 63;
    const HASH: usize = 8;
    if name.len() <= MAX {
        return name.to_owned();
    }
    use sha1::Digest;
    let digest = sha1::Sha1::digest(name.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    // Names are DNS subdomains (ASCII), so byte slicing is safe; stay on a char boundary anyway.
    let prefix = &name[..name.floor_char_boundary(MAX - HASH - 1)];
    format!("{prefix}-{}", &hex[..HASH])
}

/// The guest's (and the pod's) hostname: `spec.hostname`, else the VMI's name up to its first dot,
/// cut to a DNS label's 63 characters, as KubeVirt's launcher pods have it. (VMI names are DNS
/// subdomains; a pod hostname must be a label.)
pub fn guest_hostname(vmi_name: &str, spec_hostname: Option<&str>) -> String {
    if let Some(hostname) = spec_hostname {
        return hostname.to_owned();
    }
    let first = vmi_name.split('.').next().unwrap_or(vmi_name);
    // Names are ASCII; a cut must not leave a trailing '-', which no label may end with.
    first[..first.floor_char_boundary(63)]
        .trim_end_matches('-')
        .to_owned()
}

/// KubeVirt's default CPU request per vCPU when a VMI asks for none: one tenth of a CPU
/// (`cpuAllocationRatio: 10`), so that VMs get a scheduling weight by their size.
const MILLICPU_PER_VCPU: u32 = 100;

/// The pod volume holding the Secret of `spec.accessCredentials` entry `index` (of those the
/// config keeps), mounted into compute like every other volume.
pub fn ssh_keys_volume(index: usize) -> String {
    format!("{RESERVED_VOLUME_PREFIX}ssh-keys-{index}")
}

/// Pod volumes of virtshim's own start with this; validation keeps VMI volumes from using it.
pub const RESERVED_VOLUME_PREFIX: &str = "virtshim-";

/// The container that carries a further containerDisk volume.
pub fn volume_container(volume: &str) -> String {
    format!("{VOLUME_CONTAINER_PREFIX}{volume}")
}

/// Which image each container of the pod runs, derived from the VMI's config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerImages {
    /// The compute container's image.
    pub compute: ImageRef,
    /// The volume whose containerDisk compute carries, if any.
    pub compute_volume: Option<String>,
    /// Whether compute's image is the kernelBoot image.
    pub compute_has_kernel: bool,
    /// `(container name, image)` for every other container, in pod order.
    pub others: Vec<(String, ImageRef)>,
}

/// Decides the containers of a VMI's pod.
pub fn container_images(config: &VmiConfig) -> ContainerImages {
    let mut disks = config.disks.iter().filter_map(|d| match &d.source {
        VolumeSource::ContainerDisk { image, .. } => Some((d.name.clone(), image.clone())),
        _ => None,
    });
    // The disk that boots first carries compute; without boot orders, the first containerDisk.
    let mut ordered: Vec<_> = config.disks.iter().collect();
    ordered.sort_by_key(|d| d.boot_order.unwrap_or(u32::MAX));
    let boot = ordered.iter().find_map(|d| match &d.source {
        VolumeSource::ContainerDisk { image, .. } => Some((d.name.clone(), image.clone())),
        _ => None,
    });
    let kernel = config.kernel_boot.as_ref().map(|k| k.image.clone());
    let (compute, compute_volume, compute_has_kernel) = match (&boot, &kernel) {
        (Some((name, image)), _) => (image.clone(), Some(name.clone()), false),
        (None, Some(image)) => (image.clone(), None, true),
        (None, None) => (
            ImageRef {
                reference: PLACEHOLDER_IMAGE.to_owned(),
                pull_policy: None,
                pull_secret: None,
            },
            None,
            false,
        ),
    };
    let mut others = Vec::new();
    for (name, image) in disks.by_ref() {
        if Some(&name) != compute_volume.as_ref() {
            others.push((volume_container(&name), image));
        }
    }
    if let (Some(image), false) = (kernel, compute_has_kernel) {
        others.push((KERNEL_BOOT_CONTAINER.to_owned(), image));
    }
    ContainerImages {
        compute,
        compute_volume,
        compute_has_kernel,
        others,
    }
}

/// Why a pod cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum PodError {
    #[error("the VMI has no name")]
    NoName,
    #[error("cannot serialize the VMI for the {VMI_ANNOTATION} annotation: {0}")]
    Serialize(#[from] serde_json::Error),
}

/// The `generateName` of a VMI's pod, as KubeVirt names its launcher pods.
fn launcher_generate_name(vmi_name: &str) -> String {
    format!("virt-launcher-{vmi_name}-")
}

/// The apiserver keeps at most this much of a `generateName` and appends five characters.
const GENERATED_NAME_BASE: usize = 63 - GENERATED_SUFFIX;
const GENERATED_SUFFIX: usize = 5;

/// What every name the apiserver makes from a VMI's pod `generateName` starts with.
pub fn launcher_name_prefix(vmi_name: &str) -> String {
    let mut base = launcher_generate_name(vmi_name);
    // Names are ASCII (DNS subdomains); a cut inside a character cannot happen, but is refused
    // rather than panicking.
    if base.len() > GENERATED_NAME_BASE && base.is_char_boundary(GENERATED_NAME_BASE) {
        base.truncate(GENERATED_NAME_BASE);
    }
    base
}

/// Whether `pod_name` is a name the apiserver could have made for the pod of VMI `vmi_name`:
/// how the shim ties the VMI an annotation names to the pod containerd names.
pub fn is_launcher_pod_of(pod_name: &str, vmi_name: &str) -> bool {
    let prefix = launcher_name_prefix(vmi_name);
    pod_name.len() == prefix.len() + GENERATED_SUFFIX
        && pod_name.starts_with(&prefix)
        && pod_name[prefix.len()..]
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// Builds the pod that runs `vmi` (already defaulted and validated into `config`).
///
/// `block_claims` names the PersistentVolumeClaims whose `volumeMode` is `Block`: the VMI does
/// not say, the claim does, so whoever builds the pod (the controller, `virtctl local`) looks.
/// Those reach compute as `volumeDevices`, the others as mounts holding `disk.img`.
///
/// The name is left to `generateName` (`virt-launcher-<vmi>-`), as KubeVirt's launcher pods are.
pub fn pod_for_vmi(
    vmi: &VirtualMachineInstance,
    config: &VmiConfig,
    block_claims: &BTreeSet<String>,
) -> Result<Pod, PodError> {
    let name = vmi.metadata.name.clone().ok_or(PodError::NoName)?;
    let mut labels = vmi.metadata.labels.clone().unwrap_or_default();
    labels.insert(LABEL_APP.to_owned(), "virt-launcher".to_owned());
    // Label values stop at 63 characters; VMI names may be longer (the same cut as the id).
    labels.insert(LABEL_DOMAIN.to_owned(), vmi_id_label(&name));
    labels.insert(LABEL_VMI_ID.to_owned(), vmi_id_label(&name));
    if let Some(uid) = &vmi.metadata.uid {
        labels.insert(LABEL_CREATED_BY.to_owned(), uid.clone());
    }
    let owner_vm = vmi
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.kind == "VirtualMachine" && o.controller == Some(true));
    if let Some(vm) = owner_vm {
        labels.insert(LABEL_VM_NAME.to_owned(), vm.name.clone());
    }

    // The annotation carries what the shim needs: identity and the defaulted spec.
    let carried = serde_json::json!({
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstance",
        "metadata": {
            "name": name,
            "namespace": vmi.metadata.namespace,
            "uid": vmi.metadata.uid,
        },
        "spec": vmi.spec,
    });
    let annotations =
        BTreeMap::from([(VMI_ANNOTATION.to_owned(), serde_json::to_string(&carried)?)]);

    let owner_references = vmi.metadata.uid.as_ref().map(|uid| {
        vec![OwnerReference {
            api_version: "kubevirt.io/v1".to_owned(),
            kind: "VirtualMachineInstance".to_owned(),
            name: name.clone(),
            uid: uid.clone(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }]
    });

    let images = container_images(config);
    // Every image's pull Secret goes on the pod (the kubelet tries each for every image).
    let mut pull_secrets = BTreeSet::new();
    for image in std::iter::once(&images.compute).chain(images.others.iter().map(|(_, i)| i)) {
        pull_secrets.extend(image.pull_secret.clone());
    }
    let image_pull_secrets: Vec<LocalObjectReference> = pull_secrets
        .into_iter()
        .map(|name| LocalObjectReference { name })
        .collect();
    let (volumes, mounts, devices) = pod_volumes(config, block_claims);
    let compute_resources = compute_resources(vmi, config);
    // Runs nothing: the shim only needs its root filesystem. A tiny request keeps it from being
    // BestEffort next to compute; when compute is Guaranteed, equal limits keep the pod so.
    let carrier_requests = BTreeMap::from([
        ("cpu".to_owned(), Quantity("1m".to_owned())),
        ("memory".to_owned(), Quantity("1Mi".to_owned())),
    ]);
    let carrier_resources = ResourceRequirements {
        limits: is_guaranteed(&compute_resources).then(|| carrier_requests.clone()),
        requests: Some(carrier_requests),
        ..Default::default()
    };
    let mut containers: Vec<Container> = images
        .others
        .iter()
        .map(|(container, image)| Container {
            name: container.clone(),
            image: Some(image.reference.clone()),
            image_pull_policy: image.pull_policy.map(|p| p.as_str().to_owned()),
            command: Some(vec![CONTAINER_COMMAND.to_owned()]),
            resources: Some(carrier_resources.clone()),
            ..Default::default()
        })
        .collect();
    containers.push(Container {
        name: COMPUTE_CONTAINER.to_owned(),
        image: Some(images.compute.reference.clone()),
        image_pull_policy: images.compute.pull_policy.map(|p| p.as_str().to_owned()),
        command: Some(vec![CONTAINER_COMMAND.to_owned()]),
        resources: Some(compute_resources),
        volume_mounts: (!mounts.is_empty()).then_some(mounts),
        volume_devices: (!devices.is_empty()).then_some(devices),
        stdin: Some(true),
        tty: Some(true),
        ..Default::default()
    });

    let spec = &vmi.spec;
    Ok(Pod {
        metadata: ObjectMeta {
            generate_name: Some(launcher_generate_name(&name)),
            namespace: vmi.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references,
            ..Default::default()
        },
        spec: Some(PodSpec {
            runtime_class_name: Some(RUNTIME_CLASS.to_owned()),
            restart_policy: Some("Never".to_owned()),
            termination_grace_period_seconds: Some(i64::from(
                config.termination_grace_period_seconds,
            )),
            containers,
            volumes: (!volumes.is_empty()).then_some(volumes),
            node_selector: spec.node_selector.clone(),
            affinity: spec.affinity.clone(),
            tolerations: spec.tolerations.clone(),
            topology_spread_constraints: spec.topology_spread_constraints.clone(),
            priority_class_name: spec.priority_class_name.clone(),
            scheduler_name: spec.scheduler_name.clone(),
            hostname: Some(guest_hostname(&name, spec.hostname.as_deref())),
            image_pull_secrets: (!image_pull_secrets.is_empty()).then_some(image_pull_secrets),
            subdomain: spec.subdomain.clone(),
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            ..Default::default()
        }),
        status: None,
    })
}

/// Compute's resources, as KubeVirt sizes its launcher's compute container less the VM's fixed
/// overhead (that is the RuntimeClass's `overhead.podFixed` here): the VMI's requests and
/// limits; memory requested is the guest's unless the VMI requests another amount (a request
/// below the guest's memory overcommits, as in KubeVirt); with no CPU asked for at all, 100m
/// per vCPU.
fn compute_resources(vmi: &VirtualMachineInstance, config: &VmiConfig) -> ResourceRequirements {
    let resources = vmi.spec.domain.as_ref().and_then(|d| d.resources.as_ref());
    let mut requests: BTreeMap<String, Quantity> = resources
        .and_then(|r| r.requests.clone())
        .unwrap_or_default();
    let limits = resources.and_then(|r| r.limits.clone());
    // Without a request, Kubernetes would take the limit; without either, the guest's size.
    let memory_limit = limits.as_ref().and_then(|l| l.get("memory")).cloned();
    requests.entry("memory".to_owned()).or_insert_with(|| {
        memory_limit.unwrap_or_else(|| Quantity(config.memory.bytes().to_string()))
    });
    let cpu_limited = limits.as_ref().is_some_and(|l| l.contains_key("cpu"));
    if !cpu_limited {
        requests
            .entry("cpu".to_owned())
            .or_insert_with(|| Quantity(format!("{}m", config.cpu.vcpus() * MILLICPU_PER_VCPU)));
    }
    ResourceRequirements {
        requests: Some(requests),
        limits,
        ..Default::default()
    }
}

/// Whether a container's resources make it Guaranteed: CPU and memory limits, each equal to
/// its request (by value: `128Mi` equals `134217728`).
fn is_guaranteed(resources: &ResourceRequirements) -> bool {
    let (Some(requests), Some(limits)) = (&resources.requests, &resources.limits) else {
        return false;
    };
    let millis = |q: Option<&Quantity>| {
        q.and_then(|q| crate::quantity::Quantity::parse(&q.0).ok())
            .and_then(|q| q.to_millis())
    };
    ["cpu", "memory"].iter().all(|k| {
        let limit = millis(limits.get(*k));
        limit.is_some() && limit == millis(requests.get(*k))
    })
}

/// The pod volumes that back disks, and their mounts and devices in compute.
fn pod_volumes(
    config: &VmiConfig,
    block_claims: &BTreeSet<String>,
) -> (Vec<Volume>, Vec<VolumeMount>, Vec<VolumeDevice>) {
    let mut volumes = Vec::new();
    let mut mounts = Vec::new();
    let mut devices = Vec::new();
    let mount = |name: &str, read_only: bool| VolumeMount {
        name: name.to_owned(),
        mount_path: format!("{VOLUME_MOUNT_ROOT}/{name}"),
        read_only: Some(read_only),
        ..Default::default()
    };
    for disk in &config.disks {
        match &disk.source {
            VolumeSource::EmptyDisk { .. } => {
                volumes.push(Volume {
                    name: disk.name.clone(),
                    empty_dir: Some(EmptyDirVolumeSource::default()),
                    ..Default::default()
                });
                mounts.push(mount(&disk.name, false));
            }
            VolumeSource::PersistentVolumeClaim {
                claim_name,
                read_only,
            } => {
                volumes.push(Volume {
                    name: disk.name.clone(),
                    persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                        claim_name: claim_name.clone(),
                        read_only: Some(*read_only),
                    }),
                    ..Default::default()
                });
                if block_claims.contains(claim_name) {
                    devices.push(VolumeDevice {
                        name: disk.name.clone(),
                        device_path: format!("{VOLUME_DEVICE_ROOT}/{}", disk.name),
                    });
                } else {
                    mounts.push(mount(&disk.name, *read_only));
                }
            }
            VolumeSource::CloudInit(ci) => {
                // Secrets travel as Secret volumes, never as annotations.
                for (suffix, data) in [
                    ("userdata", &ci.user_data),
                    ("networkdata", &ci.network_data),
                ] {
                    if let Some(CloudInitData::Secret { name }) = data {
                        let volume = format!("{}-{suffix}", disk.name);
                        volumes.push(Volume {
                            name: volume.clone(),
                            secret: Some(SecretVolumeSource {
                                secret_name: Some(name.clone()),
                                ..Default::default()
                            }),
                            ..Default::default()
                        });
                        mounts.push(mount(&volume, true));
                    }
                }
            }
            VolumeSource::ContainerDisk { .. } => {}
        }
    }
    for (i, keys) in config.ssh_keys.iter().enumerate() {
        let volume = ssh_keys_volume(i);
        volumes.push(Volume {
            name: volume.clone(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(keys.secret.clone()),
                ..Default::default()
            }),
            ..Default::default()
        });
        mounts.push(mount(&volume, true));
    }
    (volumes, mounts, devices)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml: &str) -> (VirtualMachineInstance, VmiConfig) {
        let object = crate::manifest::parse_documents(yaml)
            .remove(0)
            .expect("parses");
        let crate::manifest::Object::VirtualMachineInstance(mut vmi) = object else {
            panic!("vmi")
        };
        crate::defaults::vmi(&mut vmi);
        let config = crate::validate::vmi(&vmi).expect("valid");
        (vmi, config)
    }

    const TWO_DISKS_AND_KERNEL: &str = r#"
apiVersion: kubevirt.io/v1
kind: VirtualMachineInstance
metadata: {name: t, namespace: ns, uid: '1234', labels: {app: web}}
spec:
  domain:
    memory: {guest: 64Mi}
    firmware: {kernelBoot: {container: {image: 'k:1', kernelPath: /boot/vmlinuz}}}
    devices:
      disks:
      - {name: data, disk: {}}
      - {name: root, disk: {}, bootOrder: 1}
      - {name: scratch, disk: {}}
  volumes:
  - {name: data, containerDisk: {image: 'data:1'}}
  - {name: root, containerDisk: {image: 'root:1'}}
  - {name: scratch, emptyDisk: {capacity: 1Gi}}
"#;

    #[test]
    fn the_boot_disk_rides_in_compute_and_the_rest_come_first() {
        let (_, config) = config(TWO_DISKS_AND_KERNEL);
        let images = container_images(&config);
        assert_eq!(images.compute.reference, "root:1");
        assert_eq!(images.compute_volume.as_deref(), Some("root"));
        let others: Vec<(&str, &str)> = images
            .others
            .iter()
            .map(|(c, i)| (c.as_str(), i.reference.as_str()))
            .collect();
        assert_eq!(others, [("volumedata", "data:1"), ("kernel-boot", "k:1")]);
    }

    #[test]
    fn a_kernel_boot_vm_without_disks_runs_the_kernel_image_as_compute() {
        let (_, config) = config(
            "apiVersion: kubevirt.io/v1\nkind: VirtualMachineInstance\nmetadata: {name: k}\nspec:\n  domain:\n    memory: {guest: 64Mi}\n    firmware: {kernelBoot: {container: {image: 'k:1', initrdPath: /boot/initrd.img}}}\n",
        );
        let images = container_images(&config);
        assert_eq!(
            (images.compute.reference.as_str(), images.compute_has_kernel),
            ("k:1", true)
        );
        assert!(images.others.is_empty());
    }

    #[test]
    fn block_claims_are_devices_and_filesystem_claims_are_mounts() {
        let (vmi, config) = config(
            r#"
apiVersion: kubevirt.io/v1
kind: VirtualMachineInstance
metadata: {name: p, namespace: ns, uid: "1"}
spec:
  domain: {devices: {}, memory: {guest: 64Mi}}
  volumes:
  - {name: raw, persistentVolumeClaim: {claimName: fast-block}}
  - {name: files, persistentVolumeClaim: {claimName: on-disk, readOnly: true}}
"#,
        );
        let block = BTreeSet::from(["fast-block".to_owned()]);
        let pod = pod_for_vmi(&vmi, &config, &block).expect("pod");
        let spec = pod.spec.expect("spec");
        let compute = spec.containers.last().expect("compute");
        let devices = compute.volume_devices.as_ref().expect("devices");
        assert_eq!(devices.len(), 1);
        assert_eq!(devices[0].name, "raw");
        assert_eq!(devices[0].device_path, "/dev/virtshim/raw");
        let mounts = compute.volume_mounts.as_ref().expect("mounts");
        assert_eq!(mounts.len(), 1);
        assert_eq!(mounts[0].mount_path, "/var/run/virtshim/volumes/files");
        assert_eq!(mounts[0].read_only, Some(true));
        let claims: Vec<_> = spec
            .volumes
            .iter()
            .flatten()
            .filter_map(|v| v.persistent_volume_claim.as_ref())
            .map(|c| c.claim_name.as_str())
            .collect();
        assert_eq!(claims, ["fast-block", "on-disk"]);
    }

    #[test]
    fn vmi_id_labels_fit_in_a_label() {
        assert_eq!(vmi_id_label("testvmi"), "testvmi");
        let long = "a".repeat(70);
        let id = vmi_id_label(&long);
        assert_eq!(id.len(), 63);
        assert!(id.starts_with(&"a".repeat(54)));
        // `printf 'a%.0s' $(seq 70) | sha1sum`, first 8 hex digits
        assert_eq!(&id[54..], "-ed6c69d9");
    }

    #[test]
    fn the_pod_follows_the_contract() {
        let (vmi, config) = config(TWO_DISKS_AND_KERNEL);
        let pod = pod_for_vmi(&vmi, &config, &BTreeSet::new()).expect("pod");
        let spec = pod.spec.as_ref().expect("spec");
        assert_eq!(
            pod.metadata.generate_name.as_deref(),
            Some("virt-launcher-t-")
        );
        assert_eq!(spec.runtime_class_name.as_deref(), Some("virtshim"));
        assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
        let names: Vec<_> = spec.containers.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["volumedata", "kernel-boot", "compute"]);
        let labels = pod.metadata.labels.as_ref().expect("labels");
        assert_eq!(labels.get("app").map(String::as_str), Some("web"));
        assert_eq!(
            labels.get(LABEL_CREATED_BY).map(String::as_str),
            Some("1234")
        );
        let compute = spec.containers.last().expect("compute");
        let memory = compute
            .resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("memory"));
        assert_eq!(memory.map(|q| q.0.as_str()), Some("67108864"));
        assert_eq!(
            compute
                .volume_mounts
                .as_ref()
                .map(|m| m[0].mount_path.as_str()),
            Some("/var/run/virtshim/volumes/scratch")
        );
        // The annotation carries a VMI that the shim can parse and validate back.
        let carried = &pod.metadata.annotations.as_ref().expect("annotations")[VMI_ANNOTATION];
        let back = crate::manifest::parse_json(carried).expect("annotation parses");
        let crate::manifest::Object::VirtualMachineInstance(back) = back else {
            panic!("vmi")
        };
        assert_eq!(crate::validate::vmi(&back).expect("valid"), config);
    }

    fn compute_resources_of(yaml: &str) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
        let (vmi, config) = config(yaml);
        let pod = pod_for_vmi(&vmi, &config, &BTreeSet::new()).expect("pod");
        let compute = pod.spec.expect("spec").containers.pop().expect("compute");
        let resources = compute.resources.unwrap_or_default();
        let flat = |m: Option<BTreeMap<String, Quantity>>| {
            m.unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect::<BTreeMap<_, _>>()
        };
        (flat(resources.requests), flat(resources.limits))
    }

    fn vmi_with_domain(domain: &str) -> String {
        format!("apiVersion: kubevirt.io/v1\nkind: VirtualMachineInstance\nmetadata: {{name: r}}\nspec:\n  domain: {{devices: {{}}, {domain}}}\n")
    }

    #[test]
    fn launcher_pod_names_are_tied_to_their_vmi() {
        assert!(is_launcher_pod_of("virt-launcher-vm1-x7k2q", "vm1"));
        assert!(!is_launcher_pod_of("virt-launcher-vm1-x7k2", "vm1"));
        assert!(!is_launcher_pod_of("virt-launcher-vm1-x7k2qq", "vm1"));
        assert!(!is_launcher_pod_of("virt-launcher-vm2-x7k2q", "vm1"));
        assert!(!is_launcher_pod_of("virt-launcher-vm1-X7K2Q", "vm1"));
        assert!(!is_launcher_pod_of("attacker", "vm1"));
        // A long VMI name: the apiserver cuts generateName to 58 characters.
        let long = "a".repeat(80);
        let prefix = launcher_name_prefix(&long);
        assert_eq!(prefix.len(), 58);
        assert!(is_launcher_pod_of(&format!("{prefix}abcde"), &long));
        assert!(!is_launcher_pod_of(
            &format!("{prefix}abcde"),
            &"b".repeat(80)
        ));
    }

    #[test]
    fn compute_is_sized_as_kubevirt_sizes_its_launcher() {
        let pairs = |v: &[(&str, &str)]| {
            v.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>()
        };
        // Nothing asked for CPU: a tenth of a CPU per vCPU; memory is the guest's.
        let (requests, limits) =
            compute_resources_of(&vmi_with_domain("cpu: {cores: 3}, memory: {guest: 64Mi}"));
        assert_eq!(requests, pairs(&[("cpu", "300m"), ("memory", "67108864")]));
        assert!(limits.is_empty());
        // A memory request below the guest's memory overcommits; it is kept, not replaced.
        let (requests, _) = compute_resources_of(&vmi_with_domain(
            "memory: {guest: 1Gi}, resources: {requests: {memory: 512Mi, cpu: 250m}}",
        ));
        assert_eq!(requests, pairs(&[("cpu", "250m"), ("memory", "512Mi")]));
        // A CPU limit becomes the request (KubeVirt's defaults copy it), so requests equal
        // limits and the pod is Guaranteed; no 100m per vCPU beside it.
        let (requests, limits) = compute_resources_of(&vmi_with_domain(
            "resources: {requests: {memory: 128Mi}, limits: {cpu: '2', memory: 128Mi}}",
        ));
        assert_eq!(requests, pairs(&[("cpu", "2"), ("memory", "128Mi")]));
        assert_eq!(limits, pairs(&[("cpu", "2"), ("memory", "128Mi")]));
    }

    #[test]
    fn a_guaranteed_compute_keeps_the_pod_guaranteed() {
        let yaml = |resources: &str| {
            format!("apiVersion: kubevirt.io/v1\nkind: VirtualMachineInstance\nmetadata: {{name: g}}\nspec:\n  domain:\n    resources: {resources}\n    devices: {{disks: [{{name: a, disk: {{}}}}, {{name: b, disk: {{}}}}]}}\n  volumes:\n  - {{name: a, containerDisk: {{image: 'a:1'}}}}\n  - {{name: b, containerDisk: {{image: 'b:1'}}}}\n")
        };
        let carrier_limits = |yaml: &str| {
            let (vmi, config) = config(yaml);
            let pod = pod_for_vmi(&vmi, &config, &BTreeSet::new()).expect("pod");
            let spec = pod.spec.expect("spec");
            assert_eq!(spec.containers[0].name, "volumeb");
            spec.containers[0]
                .resources
                .as_ref()
                .and_then(|r| r.limits.clone())
        };
        let limits = carrier_limits(&yaml("{limits: {cpu: '1', memory: 128Mi}}")).expect("limits");
        assert_eq!(limits["cpu"].0, "1m");
        assert_eq!(limits["memory"].0, "1Mi");
        assert_eq!(carrier_limits(&yaml("{requests: {memory: 128Mi}}")), None);
        // A guest smaller than the memory limit: the request is the limit, still Guaranteed.
        let smaller_guest = yaml("{limits: {cpu: '1', memory: 256Mi}}\n    memory: {guest: 128Mi}");
        assert!(carrier_limits(&smaller_guest).is_some());
        let (requests, _) = compute_resources_of(&smaller_guest);
        assert_eq!(requests["memory"], "256Mi");
    }

    #[test]
    fn claim_capacities_round_trip_and_hostile_ones_are_ignored() {
        let (vmi, config) = config(TWO_DISKS_AND_KERNEL);
        let mut pod = pod_for_vmi(&vmi, &config, &BTreeSet::new()).expect("pod");
        let capacities = BTreeMap::from([("data".to_owned(), 10u64 << 30)]);
        set_claim_capacities(&mut pod, &capacities);
        let annotation = pod
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(CLAIM_CAPACITY_ANNOTATION))
            .map(String::as_str);
        assert_eq!(claim_capacities(annotation), capacities);
        for hostile in ["not json", r#"{"data": -1}"#, r#"{"data": "1Gi"}"#, "[1]"] {
            assert!(claim_capacities(Some(hostile)).is_empty(), "{hostile}");
        }
        assert!(claim_capacities(None).is_empty());
    }

    #[test]
    fn ssh_key_secrets_are_mounted_into_compute() {
        let (vmi, config) = config(
            r#"
apiVersion: kubevirt.io/v1
kind: VirtualMachineInstance
metadata: {name: s}
spec:
  accessCredentials:
  - sshPublicKey: {source: {secret: {secretName: my-keys}}, propagationMethod: {noCloud: {}}}
  domain: {devices: {}, memory: {guest: 64Mi}}
  volumes:
  - {name: ci, cloudInitNoCloud: {userData: hello}}
"#,
        );
        let pod = pod_for_vmi(&vmi, &config, &BTreeSet::new()).expect("pod");
        let spec = pod.spec.expect("spec");
        let volume = spec
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == ssh_keys_volume(0))
            .expect("the Secret's volume");
        assert_eq!(
            volume
                .secret
                .as_ref()
                .and_then(|s| s.secret_name.as_deref()),
            Some("my-keys")
        );
        let mounts = spec.containers[0].volume_mounts.clone().unwrap_or_default();
        assert!(mounts.iter().any(|m| m.name == ssh_keys_volume(0)
            && m.mount_path == format!("{VOLUME_MOUNT_ROOT}/{}", ssh_keys_volume(0))
            && m.read_only == Some(true)));
    }

    #[test]
    fn pull_policies_go_on_containers_and_pull_secrets_on_the_pod() {
        let (vmi, config) = config(
            r#"
apiVersion: kubevirt.io/v1
kind: VirtualMachineInstance
metadata: {name: p}
spec:
  domain:
    memory: {guest: 64Mi}
    firmware: {kernelBoot: {container: {image: 'reg.example/k:1', kernelPath: /vmlinuz, imagePullSecret: kernel-creds, imagePullPolicy: Always}}}
    devices: {disks: [{name: root, disk: {}}, {name: data, disk: {}}]}
  volumes:
  - {name: root, containerDisk: {image: 'reg.example/root:1', imagePullSecret: creds, imagePullPolicy: Never}}
  - {name: data, containerDisk: {image: 'reg.example/data:latest', imagePullSecret: creds}}
"#,
        );
        let pod = pod_for_vmi(&vmi, &config, &BTreeSet::new()).expect("pod");
        let spec = pod.spec.expect("spec");
        let policies: Vec<(&str, Option<&str>)> = spec
            .containers
            .iter()
            .map(|c| (c.name.as_str(), c.image_pull_policy.as_deref()))
            .collect();
        // data's policy is KubeVirt's default for `:latest`.
        assert_eq!(
            policies,
            [
                ("volumedata", Some("Always")),
                ("kernel-boot", Some("Always")),
                ("compute", Some("Never"))
            ]
        );
        let secrets: Vec<&str> = spec
            .image_pull_secrets
            .iter()
            .flatten()
            .map(|s| s.name.as_str())
            .collect();
        assert_eq!(secrets, ["creds", "kernel-creds"]);
    }

    #[test]
    fn hostnames_are_labels_made_from_the_name_as_kubevirt_makes_them() {
        assert_eq!(guest_hostname("web", None), "web");
        assert_eq!(guest_hostname("web.example.com", None), "web");
        assert_eq!(guest_hostname("web.example.com", Some("db")), "db");
        let long = format!("{}-{}", "a".repeat(62), "b".repeat(10));
        assert_eq!(guest_hostname(&long, None), "a".repeat(62));
        let (vmi, config) = config(
            "apiVersion: kubevirt.io/v1\nkind: VirtualMachineInstance\nmetadata: {name: web.example.com}\nspec: {domain: {devices: {}, memory: {guest: 64Mi}}}\n",
        );
        let pod = pod_for_vmi(&vmi, &config, &BTreeSet::new()).expect("pod");
        assert_eq!(pod.spec.expect("spec").hostname.as_deref(), Some("web"));
    }
}
