//! Running a KubeVirt VM on this node without a cluster: the YAML is defaulted and validated,
//! turned into the pod of the pod contract, and that pod is driven through containerd's CRI the
//! way the kubelet drives it (RunPodSandbox with runtime handler `virtshim`, then
//! CreateContainer/StartContainer for each container in order). `virtctl local` and the
//! integration tests both use this module, so the tests exercise what users run.

use crate::cri::api;
use crate::cri::blocking::BlockingCri;
use k8s_openapi::api::core::v1::{Container, Pod};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use virtshim_api::config::{VmiConfig, VolumeSource};
use virtshim_api::manifest::Object;
use virtshim_api::pod as contract;
use virtshim_api::types::VirtualMachineInstance;

/// Label on every sandbox `virtctl local` makes, and the one naming its VMI.
pub const LABEL_LOCAL: &str = "virtshim.io/local";
pub const LABEL_VMI: &str = "virtshim.io/vmi-name";

/// Where `virtctl local` keeps the host side of a pod's volumes, as the kubelet keeps its own
/// under `<root>/pods/<pod uid>/`: the shim accepts only host paths under such a folder of the
/// pod's own uid (see [`pod_volumes_dir`]).
pub const LOCAL_VOLUMES: &str = "/var/lib/virtshim/local";

/// The host side of one local pod's volumes: `volumes/<name>` for emptyDirs, `binds/<name>` for
/// the Secret and PersistentVolumeClaim folders given on the command line, bind-mounted there
/// as the kubelet bind-mounts a local PersistentVolume into its pod's folder.
pub fn pod_volumes_dir(uid: &str) -> PathBuf {
    PathBuf::from(LOCAL_VOLUMES).join("pods").join(uid)
}

/// Bind-mounts `host` (a folder given with `--secret` or `--pvc`) into the pod's folder and
/// returns where: a host path the shim accepts for this pod only.
fn bind_into_pod(uid: &str, volume: &str, host: &Path) -> Result<PathBuf> {
    let target = pod_volumes_dir(uid).join("binds").join(volume);
    let io = |context: String| move |source: std::io::Error| Error::Io { context, source };
    std::fs::create_dir_all(&target).map_err(io(format!("creating {}", target.display())))?;
    let mounted = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(&*target.to_string_lossy()));
    if !mounted {
        rustix::mount::mount_bind(host, &target).map_err(|e| Error::Io {
            context: format!("bind-mounting {} on {}", host.display(), target.display()),
            source: e.into(),
        })?;
    }
    Ok(target)
}

/// Removes a local pod's volume folders. Bind mounts are detached first and their mount points
/// removed only when empty: a folder still holding a user's files is never deleted.
pub fn remove_pod_volumes(uid: &str) {
    let dir = pod_volumes_dir(uid);
    if let Ok(entries) = std::fs::read_dir(dir.join("binds")) {
        for entry in entries.flatten() {
            let target = entry.path();
            let _ = rustix::mount::unmount(&target, rustix::mount::UnmountFlags::DETACH);
            if let Err(e) = std::fs::remove_dir(&target) {
                eprintln!(
                    "virtctl: cannot remove the mount point {}: {e}",
                    target.display()
                );
            }
        }
    }
    let _ = std::fs::remove_dir(dir.join("binds"));
    let _ = std::fs::remove_dir_all(dir.join("volumes"));
    let _ = std::fs::remove_dir(&dir);
}

/// Where the CRI writes the consoles (container logs) of `virtctl local`'s pods. Not the
/// kubelet's `/var/log/pods`: a kubelet on the same node deletes every folder there that belongs
/// to no pod it knows, as an orphan, and a local VM's console would vanish under it.
pub const LOCAL_LOGS: &str = "/var/log/virtshim/pods";

/// The log folder of one local pod, named as the kubelet names its own.
fn log_directory(namespace: &str, pod: &str, uid: &str) -> String {
    format!("{LOCAL_LOGS}/{namespace}_{pod}_{uid}")
}

/// What can go wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Cri(#[from] crate::cri::Error),
    #[error("image {image} is not in containerd's k8s.io namespace: build and import it (make images), or `ctr -n k8s.io images import FILE`")]
    MissingImage { image: String },
    #[error("volume {volume}: {kind} {name:?} has no folder on this node: give one with {flag} {name}=DIR")]
    NeedsCluster {
        volume: String,
        kind: &'static str,
        name: String,
        flag: &'static str,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no local VM named {0:?}")]
    NotFound(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where Secrets and PersistentVolumeClaims are on this node, since there is no cluster to
/// provide them: a Secret as a folder holding one file per key (as the kubelet mounts it), a
/// PVC as a folder holding `disk.img` (filesystem mode) or as a block device (block mode).
#[derive(Debug, Clone, Default)]
pub struct HostVolumes {
    pub secrets: HashMap<String, PathBuf>,
    pub claims: HashMap<String, PathBuf>,
    /// The capacity in bytes of filesystem-mode claims, by claim name: what a cluster's PVC
    /// would say. It sizes the `disk.img` the shim makes in a blank folder (see
    /// [`contract::CLAIM_CAPACITY_ANNOTATION`]); without it the shim would take the size of the
    /// whole file system the folder is on.
    pub claim_sizes: HashMap<String, u64>,
}

/// The size a blank claim folder's `disk.img` gets when none is given: 10 GiB, or the free
/// space of the folder's file system when that is less (the file is sparse, so it costs only
/// what the guest writes). Small enough for a first try on a laptop, big enough for a data disk.
pub const DEFAULT_CLAIM_SIZE: u64 = 10 << 30;

/// The size to give a claim folder that came without one: `None` when it holds `disk.img`
/// already (an existing disk keeps its size), else [`DEFAULT_CLAIM_SIZE`] capped by the free
/// space of its file system, in whole MiB.
pub fn default_claim_size(dir: &Path) -> Result<Option<u64>> {
    if dir.join(contract::PVC_DISK_FILE).symlink_metadata().is_ok() {
        return Ok(None);
    }
    let stat = rustix::fs::statvfs(dir).map_err(|e| Error::Io {
        context: format!("reading the free space of {}", dir.display()),
        source: e.into(),
    })?;
    let free = stat.f_bavail.saturating_mul(stat.f_frsize);
    let size = DEFAULT_CLAIM_SIZE.min(free) / (1 << 20) * (1 << 20);
    if size == 0 {
        return Err(Error::Invalid(format!(
            "{}: no free space for a {}",
            dir.display(),
            contract::PVC_DISK_FILE
        )));
    }
    Ok(Some(size))
}

/// A VM ready to run: its VMI (defaulted), config and pod.
#[derive(Debug, Clone)]
pub struct Plan {
    pub vmi: VirtualMachineInstance,
    pub config: VmiConfig,
    pub pod: Pod,
    pub pod_name: String,
    pub uid: String,
    /// Where the pod's Secret and PVC volumes come from.
    host_volumes: HostVolumes,
}

impl Plan {
    /// Where the pod's Secret and PVC volumes come from.
    pub fn host_volumes(&self) -> &HostVolumes {
        &self.host_volumes
    }

    /// Says where the pod's Secrets and PVCs are, and rebuilds the pod: a claim given as a block
    /// device is a block-mode claim (the controller reads `volumeMode` from the PVC instead).
    pub fn set_host_volumes(&mut self, volumes: HostVolumes) -> Result<()> {
        use std::os::unix::fs::FileTypeExt;
        let mut block = std::collections::BTreeSet::new();
        for (claim, path) in &volumes.claims {
            let meta = std::fs::metadata(path).map_err(|source| Error::Io {
                context: format!("PersistentVolumeClaim {claim}: {}", path.display()),
                source,
            })?;
            if meta.file_type().is_block_device() {
                if volumes.claim_sizes.contains_key(claim) {
                    return Err(Error::Invalid(format!(
                        "PersistentVolumeClaim {claim}: {} is a block device, which has its own size; give a size only with a folder",
                        path.display()
                    )));
                }
                block.insert(claim.clone());
            } else if !meta.is_dir() {
                return Err(Error::Invalid(format!(
                    "PersistentVolumeClaim {claim}: {} is neither a folder holding {} nor a block device",
                    path.display(),
                    contract::PVC_DISK_FILE
                )));
            }
        }
        self.pod = contract::pod_for_vmi(&self.vmi, &self.config, &block)
            .map_err(|e| Error::Invalid(e.to_string()))?;
        // As the controller does from each PVC's capacity: by volume (disk) name.
        let capacities = self
            .config
            .disks
            .iter()
            .filter_map(|disk| match &disk.source {
                VolumeSource::PersistentVolumeClaim { claim_name, .. } => volumes
                    .claim_sizes
                    .get(claim_name)
                    .map(|bytes| (disk.name.clone(), *bytes)),
                _ => None,
            })
            .collect();
        contract::set_claim_capacities(&mut self.pod, &capacities);
        self.host_volumes = volumes;
        Ok(())
    }
}

/// Turns a VM or VMI into the pod that runs it.
pub fn plan(object: Object) -> Result<Plan> {
    let mut vmi = match object {
        Object::VirtualMachineInstance(vmi) => vmi,
        Object::VirtualMachine(mut vm) => {
            // The firmware UUID a VM's VMIs get comes from the VM's name, as in KubeVirt.
            virtshim_api::defaults::vm(&mut vm);
            let name = vm
                .metadata
                .name
                .clone()
                .ok_or_else(|| Error::Invalid("the VirtualMachine has no name".into()))?;
            let template = vm
                .spec
                .template
                .ok_or_else(|| Error::Invalid("spec.template: required value".into()))?;
            let mut vmi = VirtualMachineInstance::new(&name, template.spec.unwrap_or_default());
            vmi.metadata.namespace = vm.metadata.namespace;
            vmi.metadata.labels = template.metadata.and_then(|m| m.labels);
            vmi
        }
        Object::VirtualMachineInstanceReplicaSet(_) => return Err(Error::Invalid(
            "virtctl local runs one VirtualMachine or VirtualMachineInstance, not a replica set"
                .into(),
        )),
    };
    let name = vmi
        .metadata
        .name
        .clone()
        .ok_or_else(|| Error::Invalid("metadata.name: required value".into()))?;
    vmi.metadata
        .namespace
        .get_or_insert_with(|| "default".to_owned());
    let uid = uuid::Uuid::new_v4().to_string();
    vmi.metadata.uid = Some(uid.clone());
    virtshim_api::defaults::vmi(&mut vmi);
    let config = virtshim_api::validate::vmi(&vmi).map_err(|e| Error::Invalid(e.to_string()))?;
    let pod = contract::pod_for_vmi(&vmi, &config, &Default::default())
        .map_err(|e| Error::Invalid(e.to_string()))?;
    // The apiserver would complete generateName; here the suffix is made the same way.
    let suffix: String = uuid::Uuid::new_v4()
        .simple()
        .to_string()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(5)
        .collect();
    let pod_name = format!("virt-launcher-{name}-{suffix}");
    Ok(Plan {
        vmi,
        config,
        pod,
        pod_name,
        uid,
        host_volumes: HostVolumes::default(),
    })
}

fn pod_labels(plan: &Plan) -> HashMap<String, String> {
    let mut labels: HashMap<String, String> = plan
        .pod
        .metadata
        .labels
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    labels.insert("io.kubernetes.pod.name".into(), plan.pod_name.clone());
    labels.insert(
        "io.kubernetes.pod.namespace".into(),
        namespace(plan).to_owned(),
    );
    labels.insert("io.kubernetes.pod.uid".into(), plan.uid.clone());
    labels.insert(LABEL_LOCAL.into(), "true".into());
    labels.insert(
        LABEL_VMI.into(),
        plan.vmi.metadata.name.clone().unwrap_or_default(),
    );
    labels
}

/// The pod's annotations (the VMI among them), which the kubelet passes on the sandbox and on
/// every container alike.
fn pod_annotations(plan: &Plan) -> HashMap<String, String> {
    plan.pod
        .metadata
        .annotations
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect()
}

fn namespace(plan: &Plan) -> &str {
    plan.vmi.metadata.namespace.as_deref().unwrap_or("default")
}

/// The sandbox config the kubelet would send for this pod.
pub fn sandbox_config(plan: &Plan) -> api::PodSandboxConfig {
    let spec = plan.pod.spec.clone().unwrap_or_default();
    api::PodSandboxConfig {
        metadata: Some(api::PodSandboxMetadata {
            name: plan.pod_name.clone(),
            uid: plan.uid.clone(),
            namespace: namespace(plan).to_owned(),
            attempt: 0,
        }),
        hostname: spec.hostname.unwrap_or_else(|| plan.pod_name.clone()),
        log_directory: log_directory(namespace(plan), &plan.pod_name, &plan.uid),
        labels: pod_labels(plan),
        annotations: pod_annotations(plan),
        linux: Some(api::LinuxPodSandboxConfig {
            cgroup_parent: format!("/virtshim-local/pod{}", plan.uid),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn quantity_millis(
    q: Option<&k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
) -> Option<u64> {
    virtshim_api::quantity::Quantity::parse(&q?.0)
        .ok()?
        .to_millis()
}

/// The container config the kubelet would send for one of the pod's containers.
pub fn container_config(plan: &Plan, container: &Container) -> Result<api::ContainerConfig> {
    let spec = plan.pod.spec.clone().unwrap_or_default();
    let mut mounts = Vec::new();
    for mount in container.volume_mounts.iter().flatten() {
        let volume = spec
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == mount.name)
            .ok_or_else(|| {
                Error::Invalid(format!("volume {} is mounted but not declared", mount.name))
            })?;
        let host = if volume.empty_dir.is_some() {
            let dir = pod_volumes_dir(&plan.uid)
                .join("volumes")
                .join(&volume.name);
            std::fs::create_dir_all(&dir).map_err(|source| Error::Io {
                context: format!("creating {}", dir.display()),
                source,
            })?;
            dir
        } else if let Some(secret) = &volume.secret {
            let name = secret.secret_name.clone().unwrap_or_default();
            let host = plan
                .host_volumes
                .secrets
                .get(&name)
                .ok_or(Error::NeedsCluster {
                    volume: volume.name.clone(),
                    kind: "Secret",
                    name,
                    flag: "--secret",
                })?;
            bind_into_pod(&plan.uid, &volume.name, host)?
        } else if let Some(claim) = &volume.persistent_volume_claim {
            let host =
                plan.host_volumes
                    .claims
                    .get(&claim.claim_name)
                    .ok_or(Error::NeedsCluster {
                        volume: volume.name.clone(),
                        kind: "PersistentVolumeClaim",
                        name: claim.claim_name.clone(),
                        flag: "--pvc",
                    })?;
            bind_into_pod(&plan.uid, &volume.name, host)?
        } else {
            return Err(Error::Invalid(format!(
                "volume {}: a kind virtctl local does not know",
                volume.name
            )));
        };
        mounts.push(api::Mount {
            container_path: mount.mount_path.clone(),
            host_path: host.to_string_lossy().into_owned(),
            readonly: mount.read_only.unwrap_or(false),
            ..Default::default()
        });
    }
    let mut devices = Vec::new();
    for device in container.volume_devices.iter().flatten() {
        let claim = spec
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == device.name)
            .and_then(|v| v.persistent_volume_claim.as_ref())
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "volume device {} is not a declared PersistentVolumeClaim",
                    device.name
                ))
            })?;
        let host = plan
            .host_volumes
            .claims
            .get(&claim.claim_name)
            .ok_or(Error::NeedsCluster {
                volume: device.name.clone(),
                kind: "PersistentVolumeClaim",
                name: claim.claim_name.clone(),
                flag: "--pvc",
            })?;
        // As the kubelet passes a block volume: the node's device, read-write-mknod.
        devices.push(api::Device {
            container_path: device.device_path.clone(),
            host_path: host.to_string_lossy().into_owned(),
            permissions: "mrw".into(),
        });
    }
    let resources = container.resources.clone().unwrap_or_default();
    let cpu_request = quantity_millis(resources.requests.as_ref().and_then(|r| r.get("cpu")));
    let cpu_limit = quantity_millis(resources.limits.as_ref().and_then(|r| r.get("cpu")));
    let linux_resources = api::LinuxContainerResources {
        // The kubelet's conversions: shares from the request, quota from the limit.
        cpu_shares: cpu_request.map_or(2, |m| ((m * 1024) / 1000).max(2) as i64),
        cpu_period: cpu_limit.map_or(0, |_| 100_000),
        cpu_quota: cpu_limit.map_or(0, |m| (m * 100) as i64),
        ..Default::default()
    };
    let mut labels = pod_labels(plan);
    labels.insert(
        "io.kubernetes.container.name".into(),
        container.name.clone(),
    );
    Ok(api::ContainerConfig {
        metadata: Some(api::ContainerMetadata {
            name: container.name.clone(),
            attempt: 0,
        }),
        image: Some(crate::cri::image_spec(
            container.image.as_deref().unwrap_or(""),
        )),
        command: container.command.clone().unwrap_or_default(),
        mounts,
        devices,
        labels,
        annotations: pod_annotations(plan),
        log_path: format!("{}/0.log", container.name),
        stdin: container.stdin.unwrap_or(false),
        tty: container.tty.unwrap_or(false),
        linux: Some(api::LinuxContainerConfig {
            resources: Some(linux_resources),
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// A VM started through the CRI.
#[derive(Debug, Clone)]
pub struct Started {
    pub sandbox_id: String,
    /// Container ids by container name, compute last.
    pub containers: Vec<(String, String)>,
    pub log_directory: String,
}

impl Started {
    pub fn compute_id(&self) -> &str {
        self.containers
            .last()
            .map(|(_, id)| id.as_str())
            .unwrap_or("")
    }
    /// The CRI log file of compute: the VM's serial console.
    pub fn console_log(&self) -> PathBuf {
        Path::new(&self.log_directory)
            .join(contract::COMPUTE_CONTAINER)
            .join("0.log")
    }
}

/// Runs the pod: sandbox, then each container in pod order. On any error everything made so
/// far is removed again, so a failed run leaves nothing behind.
pub fn run(cri: &BlockingCri, plan: &Plan) -> Result<Started> {
    let spec = plan.pod.spec.clone().unwrap_or_default();
    for container in &spec.containers {
        let image = container.image.clone().unwrap_or_default();
        if cri.image_status(&image)?.is_none() {
            return Err(Error::MissingImage { image });
        }
    }
    let sandbox = sandbox_config(plan);
    let log_directory = sandbox.log_directory.clone();
    std::fs::create_dir_all(&log_directory).map_err(|source| Error::Io {
        context: format!("creating {log_directory}"),
        source,
    })?;
    let sandbox_id = cri.run_pod_sandbox(sandbox.clone(), contract::RUNTIME_CLASS)?;
    let mut started = Started {
        sandbox_id,
        containers: Vec::new(),
        log_directory,
    };
    let result = (|| -> Result<()> {
        for container in &spec.containers {
            let config = container_config(plan, container)?;
            let id = cri.create_container(&started.sandbox_id, config, sandbox.clone())?;
            started
                .containers
                .push((container.name.clone(), id.clone()));
            cri.start_container(&id)?;
        }
        Ok(())
    })();
    if let Err(e) = result {
        let _ = cri.stop_pod_sandbox(&started.sandbox_id);
        let _ = cri.remove_pod_sandbox(&started.sandbox_id);
        remove_pod_volumes(&plan.uid);
        return Err(e);
    }
    Ok(started)
}

/// A VM `virtctl local` started, as the CRI reports it now.
#[derive(Debug, Clone)]
pub struct LocalVm {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub sandbox_id: String,
    pub compute_id: Option<String>,
    /// The compute container's state: CONTAINER_RUNNING, CONTAINER_EXITED, …
    pub state: String,
    pub exit_code: Option<i32>,
    pub log_directory: String,
    /// How long the guest may take to power off: the VMI's `terminationGracePeriodSeconds`
    /// (KubeVirt's 30 s when unset), as the kubelet passes the pod's to StopContainer.
    pub grace_period: Duration,
}

impl LocalVm {
    /// Whether the VM (the compute container) is still running.
    pub fn is_running(&self) -> bool {
        self.state == api::ContainerState::ContainerRunning.as_str_name()
    }
}

/// The grace period of the VMI recorded on a sandbox (see [`LocalVm::grace_period`]); an
/// unreadable annotation gets the default rather than failing `ls` or `rm`.
fn grace_period(annotations: &HashMap<String, String>) -> Duration {
    let seconds = annotations
        .get(contract::VMI_ANNOTATION)
        .and_then(|text| serde_json::from_str::<VirtualMachineInstance>(text).ok())
        .and_then(|vmi| vmi.spec.termination_grace_period_seconds)
        .and_then(|s| u64::try_from(s).ok())
        .unwrap_or(DEFAULT_GRACE_PERIOD_SECONDS);
    Duration::from_secs(seconds)
}

/// KubeVirt's `terminationGracePeriodSeconds` when a VMI does not set one.
pub const DEFAULT_GRACE_PERIOD_SECONDS: u64 = 30;

/// Every VM `virtctl local` started on this node.
pub fn list(cri: &BlockingCri) -> Result<Vec<LocalVm>> {
    let filter = api::PodSandboxFilter {
        label_selector: HashMap::from([(LABEL_LOCAL.to_owned(), "true".to_owned())]),
        ..Default::default()
    };
    let mut out = Vec::new();
    for sandbox in cri.list_pod_sandbox(Some(filter))? {
        let meta = sandbox.metadata.clone().unwrap_or_default();
        let compute = cri
            .list_containers(Some(api::ContainerFilter {
                pod_sandbox_id: sandbox.id.clone(),
                ..Default::default()
            }))?
            .into_iter()
            .find(|c| {
                c.metadata
                    .as_ref()
                    .is_some_and(|m| m.name == contract::COMPUTE_CONTAINER)
            });
        let (state, exit_code) = match &compute {
            Some(c) => {
                let status = cri
                    .container_status(&c.id, false)?
                    .status
                    .unwrap_or_default();
                let state = api::ContainerState::try_from(status.state)
                    .map(|s| s.as_str_name().to_owned())
                    .unwrap_or_default();
                let exited = status.state == api::ContainerState::ContainerExited as i32;
                (state, exited.then_some(status.exit_code))
            }
            None => ("NO_VM".to_owned(), None),
        };
        out.push(LocalVm {
            name: sandbox.labels.get(LABEL_VMI).cloned().unwrap_or_default(),
            namespace: meta.namespace.clone(),
            uid: meta.uid.clone(),
            sandbox_id: sandbox.id.clone(),
            compute_id: compute.map(|c| c.id),
            state,
            exit_code,
            log_directory: log_directory(&meta.namespace, &meta.name, &meta.uid),
            grace_period: grace_period(&sandbox.annotations),
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Finds a local VM by VMI name.
pub fn find(cri: &BlockingCri, name: &str) -> Result<LocalVm> {
    list(cri)?
        .into_iter()
        .find(|v| v.name == name)
        .ok_or_else(|| Error::NotFound(name.to_owned()))
}

/// Stops the VM as the kubelet would: the compute container with its grace period (the shim
/// presses the ACPI power button, then destroys the VM when time is up), then the sandbox.
pub fn stop(cri: &BlockingCri, vm: &LocalVm, grace: Duration) -> Result<()> {
    if let Some(id) = &vm.compute_id {
        cri.stop_container(id, grace)?;
    }
    cri.stop_pod_sandbox(&vm.sandbox_id)?;
    Ok(())
}

/// Removes the VM's pod and its local volumes. A VM still running is killed with its pod:
/// callers that want a clean power-off [`stop`] it first.
pub fn remove(cri: &BlockingCri, vm: &LocalVm) -> Result<()> {
    cri.stop_pod_sandbox(&vm.sandbox_id)?;
    cri.remove_pod_sandbox(&vm.sandbox_id)?;
    remove_pod_volumes(&vm.uid);
    let _ = std::fs::remove_dir_all(&vm.log_directory);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh folder under the system's temporary folder, removed on drop.
    struct TempDir(PathBuf);
    impl TempDir {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir().join(format!(
                "virtctl-{name}-{}-{}",
                std::process::id(),
                uuid::Uuid::new_v4().simple()
            ));
            std::fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn blank_claim_folders_get_the_default_size_existing_disks_keep_theirs() {
        let dir = TempDir::new("claim");
        let size = default_claim_size(&dir.0).unwrap().unwrap();
        assert!(size > 0 && size <= DEFAULT_CLAIM_SIZE, "{size}");
        assert_eq!(size % (1 << 20), 0);
        std::fs::write(dir.0.join(contract::PVC_DISK_FILE), b"").unwrap();
        assert_eq!(default_claim_size(&dir.0).unwrap(), None);
    }

    /// The claim's size reaches the shim as the controller passes it: the pod's
    /// claim-capacities annotation, by volume name.
    #[test]
    fn claim_sizes_become_the_claim_capacity_annotation() {
        let yaml = "apiVersion: kubevirt.io/v1\nkind: VirtualMachineInstance\nmetadata: {name: sized}\nspec:\n  domain:\n    memory: {guest: 64Mi}\n    devices: {disks: [{name: data, disk: {bus: virtio}}]}\n  volumes:\n  - {name: data, persistentVolumeClaim: {claimName: my-claim}}\n";
        let object = virtshim_api::manifest::parse_documents(yaml)
            .remove(0)
            .unwrap();
        let mut plan = plan(object).unwrap();
        let dir = TempDir::new("sized");
        plan.set_host_volumes(HostVolumes {
            claims: HashMap::from([("my-claim".to_owned(), dir.0.clone())]),
            claim_sizes: HashMap::from([("my-claim".to_owned(), 2 << 30)]),
            ..Default::default()
        })
        .unwrap();
        let annotations = plan.pod.metadata.annotations.clone().unwrap_or_default();
        assert_eq!(
            contract::claim_capacities(
                annotations
                    .get(contract::CLAIM_CAPACITY_ANNOTATION)
                    .map(String::as_str)
            ),
            std::collections::BTreeMap::from([("data".to_owned(), 2 << 30)])
        );
        // Without a size, no annotation: the shim is not told a capacity nobody gave.
        plan.set_host_volumes(HostVolumes {
            claims: HashMap::from([("my-claim".to_owned(), dir.0.clone())]),
            ..Default::default()
        })
        .unwrap();
        let annotations = plan.pod.metadata.annotations.clone().unwrap_or_default();
        assert!(!annotations.contains_key(contract::CLAIM_CAPACITY_ANNOTATION));
    }

    /// A kubelet on the node garbage-collects `/var/log/pods/*` of pods it does not know (each
    /// minute): a local VM's console there vanished after a minute while a cluster ran.
    #[test]
    fn local_consoles_live_outside_the_kubelets_log_folder() {
        let yaml = "apiVersion: kubevirt.io/v1\nkind: VirtualMachineInstance\nmetadata: {name: logs}\nspec:\n  domain:\n    memory: {guest: 64Mi}\n    devices: {}\n";
        let object = virtshim_api::manifest::parse_documents(yaml)
            .remove(0)
            .unwrap();
        let plan = plan(object).unwrap();
        let dir = sandbox_config(&plan).log_directory;
        assert!(dir.starts_with(&format!("{LOCAL_LOGS}/default_")), "{dir}");
        assert!(!dir.starts_with("/var/log/pods"), "{dir}");
    }

    #[test]
    fn grace_period_comes_from_the_vmi_on_the_sandbox() {
        let vmi = |spec: &str| {
            HashMap::from([(
                contract::VMI_ANNOTATION.to_owned(),
                format!(
                    r#"{{"apiVersion":"kubevirt.io/v1","kind":"VirtualMachineInstance","metadata":{{"name":"a"}},"spec":{spec}}}"#
                ),
            )])
        };
        let cases = [
            (vmi(r#"{"terminationGracePeriodSeconds":5}"#), 5),
            (vmi(r#"{"terminationGracePeriodSeconds":0}"#), 0),
            (vmi("{}"), DEFAULT_GRACE_PERIOD_SECONDS),
            (
                vmi(r#"{"terminationGracePeriodSeconds":-1}"#),
                DEFAULT_GRACE_PERIOD_SECONDS,
            ),
            (
                HashMap::from([(contract::VMI_ANNOTATION.to_owned(), "{not json".to_owned())]),
                DEFAULT_GRACE_PERIOD_SECONDS,
            ),
            (HashMap::new(), DEFAULT_GRACE_PERIOD_SECONDS),
        ];
        for (annotations, seconds) in cases {
            assert_eq!(
                grace_period(&annotations),
                Duration::from_secs(seconds),
                "{annotations:?}"
            );
        }
    }
}
