//! Reading a container's OCI bundle: the CRI annotations that say what the container is, the
//! pod's network namespace, its cgroup, and the mounts the kubelet gave it.

use crate::error::{Error, Result};
use serde::Deserialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

const CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
const CONTAINER_NAME: &str = "io.kubernetes.cri.container-name";
const SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";
const SANDBOX_NAME: &str = "io.kubernetes.cri.sandbox-name";
const SANDBOX_NAMESPACE: &str = "io.kubernetes.cri.sandbox-namespace";

/// The parts of `config.json` the shim uses.
#[derive(Debug, Default, Deserialize)]
struct RawSpec {
    #[serde(default)]
    annotations: HashMap<String, String>,
    #[serde(default)]
    mounts: Vec<RawMount>,
    #[serde(default)]
    linux: Option<RawLinux>,
}

#[derive(Debug, Default, Deserialize)]
struct RawMount {
    destination: String,
    #[serde(default)]
    source: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawLinux {
    #[serde(default)]
    cgroups_path: Option<String>,
    #[serde(default)]
    namespaces: Vec<RawNamespace>,
    #[serde(default)]
    resources: Option<Resources>,
    #[serde(default)]
    devices: Vec<RawDevice>,
}

/// A device node the runtime creates in the container (`linux.devices`): how the kubelet's
/// `volumeDevices` (block PVCs) reach the container.
#[derive(Debug, Default, Deserialize)]
struct RawDevice {
    path: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    major: i64,
    #[serde(default)]
    minor: i64,
}

/// A block device given to the container, by its number: the host path the kubelet resolved is
/// not in the spec, only what the node must create.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockDevice {
    pub major: u64,
    pub minor: u64,
}

#[derive(Debug, Default, Deserialize)]
struct RawNamespace {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    path: Option<String>,
}

/// CPU limits of the container, as the kubelet computed them.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Resources {
    #[serde(default)]
    pub cpu: Option<CpuResources>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct CpuResources {
    #[serde(default)]
    pub shares: Option<u64>,
    #[serde(default)]
    pub quota: Option<i64>,
    #[serde(default)]
    pub period: Option<u64>,
}

/// What a container is in its pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// The pod sandbox: runs nothing, stands for the pod's network namespace.
    Sandbox,
    /// A pod container, by its name in the pod spec.
    Container { name: String, sandbox_id: String },
}

/// A container's bundle, read.
#[derive(Clone, Debug)]
pub struct Bundle {
    pub dir: PathBuf,
    pub role: Role,
    pub annotations: HashMap<String, String>,
    /// `namespace/name` of the pod, for logs.
    pub pod: String,
    pub netns: Option<PathBuf>,
    pub cgroups_path: Option<String>,
    pub resources: Resources,
    /// Mount destination in the container → host source, for the volumes the kubelet gave.
    pub mounts: HashMap<String, PathBuf>,
    /// Path in the container → block device, for the `volumeDevices` the kubelet gave.
    pub block_devices: HashMap<String, BlockDevice>,
}

impl Bundle {
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path)
            .map_err(|e| Error::path("reading the OCI spec", &path, e))?;
        let raw: RawSpec = serde_json::from_str(&text)
            .map_err(|e| Error::Bundle(format!("{}: {e}", path.display())))?;
        let annotations = raw.annotations;
        let role = match annotations.get(CONTAINER_TYPE).map(String::as_str) {
            Some("sandbox") => Role::Sandbox,
            Some("container") => Role::Container {
                name: annotations.get(CONTAINER_NAME).cloned().unwrap_or_default(),
                sandbox_id: annotations.get(SANDBOX_ID).cloned().unwrap_or_default(),
            },
            other => {
                return Err(Error::Bundle(format!(
                    "{CONTAINER_TYPE} is {other:?}: virtshim runs pods created through the CRI only"
                )))
            }
        };
        let pod = format!(
            "{}/{}",
            annotations
                .get(SANDBOX_NAMESPACE)
                .map(String::as_str)
                .unwrap_or("?"),
            annotations
                .get(SANDBOX_NAME)
                .map(String::as_str)
                .unwrap_or("?")
        );
        let linux = raw.linux.unwrap_or_default();
        let netns = linux
            .namespaces
            .iter()
            .find(|n| n.kind == "network")
            .and_then(|n| n.path.clone())
            .filter(|p| !p.is_empty())
            .map(PathBuf::from);
        let mounts = raw
            .mounts
            .into_iter()
            .filter_map(|m| Some((m.destination, PathBuf::from(m.source?))))
            .collect();
        // Character devices (and anything else) are not disks: only block devices are kept.
        let block_devices = linux
            .devices
            .iter()
            .filter(|d| d.kind == "b")
            .filter_map(|d| {
                Some((
                    d.path.clone(),
                    BlockDevice {
                        major: u64::try_from(d.major).ok()?,
                        minor: u64::try_from(d.minor).ok()?,
                    },
                ))
            })
            .collect();
        Ok(Self {
            dir: dir.to_path_buf(),
            role,
            annotations,
            pod,
            netns,
            cgroups_path: linux.cgroups_path.filter(|p| !p.is_empty()),
            resources: linux.resources.unwrap_or_default(),
            mounts,
            block_devices,
        })
    }

    /// The sandbox this container belongs to (itself for the sandbox).
    pub fn sandbox_id<'a>(&'a self, own_id: &'a str) -> &'a str {
        match &self.role {
            Role::Sandbox => own_id,
            Role::Container { sandbox_id, .. } => sandbox_id,
        }
    }

    /// The container's root filesystem mount point.
    pub fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }
}

/// Checks that an ID from containerd is safe to use as a file name.
pub fn check_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && !id.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "container id",
            format!("{id:?} is not a plain identifier"),
        ))
    }
}
