//! Reading a container's OCI bundle (`config.json`, typed by the `oci-spec` crate) and judging
//! it: a pod with `runtimeClassName: virtshim` is written by whoever may create pods, so the
//! bundle is untrusted input like the VMI annotation is.
//!
//! What the bundle says falls in two kinds. containerd's CRI plugin writes the pod's identity
//! (`io.kubernetes.cri.sandbox-namespace`, `-name`, `-uid`, `-id`) and the namespaces, mounts
//! and capabilities it made from the kubelet's request: those are facts, and [`Bundle::read`]
//! refuses a bundle whose facts make the pod something a VM pod must never be — sharing the
//! node's network, PID or IPC namespace, privileged, with added capabilities, or with a host
//! path the kubelet did not make for this very pod. Pod annotations (`virtshim.io/*`) are what
//! the pod says about itself: the VM is read from them, its identity never is.

use crate::error::{Error, Result};
use oci_spec::runtime::{
    Capabilities, Capability, LinuxCapabilities, LinuxDeviceType, LinuxNamespaceType, Spec,
};
use std::collections::{BTreeSet, HashMap};
use std::path::{Component, Path, PathBuf};

const CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
const CONTAINER_NAME: &str = "io.kubernetes.cri.container-name";
const SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";
const SANDBOX_NAME: &str = "io.kubernetes.cri.sandbox-name";
const SANDBOX_NAMESPACE: &str = "io.kubernetes.cri.sandbox-namespace";
const SANDBOX_UID: &str = "io.kubernetes.cri.sandbox-uid";

/// The capabilities containerd gives a container that asks for none (its default set, the
/// same as Docker's). A VM pod runs no process of its own, so it never needs more.
const DEFAULT_CAPABILITIES: [Capability; 14] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// Where the node's administrator lets VM pods take disks from host paths the kubelet passes
/// unchanged (a PersistentVolume of type `hostPath`, as hostpath-provisioner and
/// local-path-provisioner make): one absolute path per line in this file, or
/// `VIRTSHIM_HOST_VOLUME_ROOTS` (colon-separated). Nothing by default. A pod author cannot
/// write either; an inline `hostPath` volume under such a root is allowed too, which is the
/// price of trusting the administrator's storage there.
pub const HOST_VOLUME_ROOTS_FILE: &str = "/etc/virtshim/host-volume-roots";

/// Which host paths a VM pod's mounts may come from (see [`HOST_VOLUME_ROOTS_FILE`]).
#[derive(Clone, Debug, Default)]
pub struct MountPolicy {
    roots: Vec<PathBuf>,
}

impl MountPolicy {
    pub fn from_node() -> Self {
        let text = match std::env::var("VIRTSHIM_HOST_VOLUME_ROOTS") {
            Ok(v) => v.replace(':', "\n"),
            Err(_) => std::fs::read_to_string(HOST_VOLUME_ROOTS_FILE).unwrap_or_default(),
        };
        Self::from_roots(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(PathBuf::from),
        )
    }

    /// Keeps only absolute, normalized roots: a relative or `..` line would allow more than it
    /// says.
    pub fn from_roots(roots: impl IntoIterator<Item = PathBuf>) -> Self {
        Self {
            roots: roots
                .into_iter()
                .filter(|r| is_normal_absolute(r))
                .collect(),
        }
    }
}

/// A block device given to the container, by its number: the host path the kubelet resolved is
/// not in the spec, only what the node must create.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockDevice {
    pub major: u64,
    pub minor: u64,
}

/// CPU limits of the container, as the kubelet computed them.
#[derive(Clone, Debug, Default)]
pub struct Resources {
    pub cpu: Option<CpuResources>,
}

#[derive(Clone, Debug, Default)]
pub struct CpuResources {
    pub shares: Option<u64>,
    pub quota: Option<i64>,
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

impl Role {
    /// The sandbox this container belongs to (`own_id`, the container's own, for the sandbox).
    pub fn sandbox_id<'a>(&'a self, own_id: &'a str) -> &'a str {
        match self {
            Role::Sandbox => own_id,
            Role::Container { sandbox_id, .. } => sandbox_id,
        }
    }
}

/// The pod as containerd's CRI plugin names it (from the kubelet's sandbox metadata).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl std::fmt::Display for PodRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A container's bundle, read and judged fit for a VM pod.
#[derive(Clone, Debug)]
pub struct Bundle {
    pub dir: PathBuf,
    pub role: Role,
    pub annotations: HashMap<String, String>,
    pub pod: PodRef,
    /// The pod's network namespace (the sandbox's is always given: see [`judge`]).
    pub netns: Option<PathBuf>,
    pub cgroups_path: Option<String>,
    pub resources: Resources,
    /// Mount destination in the container → host source, for the volumes the kubelet gave.
    pub mounts: HashMap<String, PathBuf>,
    /// Path in the container → block device, for the `volumeDevices` the kubelet gave.
    pub block_devices: HashMap<String, BlockDevice>,
}

/// Which pod a bundle belongs to, read without judging it: what `start` (grouping containers by
/// sandbox) and the cleanup of a dead shim need, which must work for refused bundles too.
#[derive(Clone, Debug)]
pub struct Membership {
    pub role: Role,
    pub netns: Option<PathBuf>,
}

impl Membership {
    pub fn read(dir: &Path) -> Result<Self> {
        let spec = load(dir)?;
        let annotations = spec.annotations().clone().unwrap_or_default();
        Ok(Self {
            role: role(&annotations)?,
            netns: netns(&spec),
        })
    }
}

fn load(dir: &Path) -> Result<Spec> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| Error::path("reading the OCI spec", &path, e))?;
    parse(&text).map_err(|source| Error::BundleSpec { path, source })
}

/// Parses `config.json`. Its size is bounded by containerd, which wrote it.
pub fn parse(text: &str) -> std::result::Result<Spec, serde_json::Error> {
    serde_json::from_str(text)
}

fn role(annotations: &HashMap<String, String>) -> Result<Role> {
    match annotations.get(CONTAINER_TYPE).map(String::as_str) {
        Some("sandbox") => Ok(Role::Sandbox),
        Some("container") => Ok(Role::Container {
            name: annotations.get(CONTAINER_NAME).cloned().unwrap_or_default(),
            sandbox_id: annotations.get(SANDBOX_ID).cloned().unwrap_or_default(),
        }),
        other => Err(Error::BundleAnnotation {
            annotation: CONTAINER_TYPE,
            problem: format!("is {other:?}: virtshim runs pods created through the CRI only"),
        }),
    }
}

fn netns(spec: &Spec) -> Option<PathBuf> {
    namespace(spec, LinuxNamespaceType::Network)
        .flatten()
        .filter(|p| !p.as_os_str().is_empty())
}

/// `None`: the spec has no such namespace (the container shares the host's). `Some(None)`: a
/// new one. `Some(Some(path))`: joins that one.
fn namespace(spec: &Spec, kind: LinuxNamespaceType) -> Option<Option<PathBuf>> {
    spec.linux()
        .as_ref()?
        .namespaces()
        .as_ref()?
        .iter()
        .find(|n| n.typ() == kind)
        .map(|n| n.path().clone())
}

impl Bundle {
    /// Reads `dir/config.json` and judges it (see the module's doc); `own_id` is the
    /// container's id, which is the sandbox id for the sandbox.
    pub fn read(dir: &Path, own_id: &str, policy: &MountPolicy) -> Result<Self> {
        Self::from_spec(dir, own_id, load(dir)?, policy)
    }

    /// What [`Bundle::read`] does after reading the file, for `config.json` text (the fuzzer's
    /// entry).
    pub fn from_json(dir: &Path, own_id: &str, text: &str, policy: &MountPolicy) -> Result<Self> {
        let spec = parse(text).map_err(|source| Error::BundleSpec {
            path: dir.join("config.json"),
            source,
        })?;
        Self::from_spec(dir, own_id, spec, policy)
    }

    fn from_spec(dir: &Path, own_id: &str, spec: Spec, policy: &MountPolicy) -> Result<Self> {
        let annotations = spec.annotations().clone().unwrap_or_default();
        let role = role(&annotations)?;
        let required = |key: &'static str| {
            annotations
                .get(key)
                .filter(|v| !v.is_empty())
                .cloned()
                .ok_or_else(|| Error::BundleAnnotation {
                    annotation: key,
                    problem: "is missing: virtshim needs containerd's CRI plugin (1.6 or newer) \
                              to name the pod"
                        .into(),
                })
        };
        let pod = PodRef {
            namespace: required(SANDBOX_NAMESPACE)?,
            name: required(SANDBOX_NAME)?,
            uid: required(SANDBOX_UID)?,
        };
        judge(&spec, &role, role.sandbox_id(own_id), &pod.uid, policy)?;

        let linux = spec.linux().clone().unwrap_or_default();
        let netns = netns(&spec);
        let mounts = spec
            .mounts()
            .iter()
            .flatten()
            .filter(|m| is_bind(m))
            .filter_map(|m| {
                Some((
                    m.destination().to_string_lossy().into_owned(),
                    m.source().clone()?,
                ))
            })
            .collect();
        // Character devices (and anything else) are not disks: only block devices are kept.
        let block_devices = linux
            .devices()
            .iter()
            .flatten()
            .filter(|d| d.typ() == LinuxDeviceType::B)
            .filter_map(|d| {
                Some((
                    d.path().to_string_lossy().into_owned(),
                    BlockDevice {
                        major: u64::try_from(d.major()).ok()?,
                        minor: u64::try_from(d.minor()).ok()?,
                    },
                ))
            })
            .collect();
        let cpu = linux
            .resources()
            .as_ref()
            .and_then(|r| r.cpu().as_ref())
            .map(|c| CpuResources {
                shares: c.shares(),
                quota: c.quota(),
                period: c.period(),
            });
        Ok(Self {
            dir: dir.to_path_buf(),
            role,
            annotations,
            pod,
            netns,
            cgroups_path: linux
                .cgroups_path()
                .as_ref()
                .map(|p| p.to_string_lossy().into_owned())
                .filter(|p| !p.is_empty()),
            resources: Resources { cpu },
            mounts,
            block_devices,
        })
    }

    /// The container's root filesystem mount point.
    pub fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }
}

fn is_bind(m: &oci_spec::runtime::Mount) -> bool {
    m.typ().as_deref() == Some("bind")
        || m.options()
            .iter()
            .flatten()
            .any(|o| o == "bind" || o == "rbind")
}

fn refused(field: impl Into<String>, message: impl Into<String>) -> Error {
    Error::Refused {
        field: field.into(),
        message: message.into(),
    }
}

/// Refuses what a VM pod must not be. The field named is the pod spec's, since that is what the
/// pod's author wrote and must change.
fn judge(
    spec: &Spec,
    role: &Role,
    sandbox_id: &str,
    pod_uid: &str,
    policy: &MountPolicy,
) -> Result<()> {
    let container = match role {
        Role::Sandbox => None,
        Role::Container { name, .. } => Some(name.as_str()),
    };
    let security_context = |what: &str| match container {
        Some(name) => format!("spec.containers[{name}].securityContext.{what}"),
        None => format!("spec.securityContext (a container's {what})"),
    };
    // Host namespaces: containerd leaves a namespace out of the spec when the pod shares the
    // node's.
    for (kind, field, what) in [
        (LinuxNamespaceType::Network, "spec.hostNetwork", "network"),
        (LinuxNamespaceType::Pid, "spec.hostPID", "PID"),
        (LinuxNamespaceType::Ipc, "spec.hostIPC", "IPC"),
    ] {
        if namespace(spec, kind).is_none() {
            return Err(refused(
                field,
                format!("a VM pod must not share the node's {what} namespace"),
            ));
        }
    }
    // The shim joins the sandbox's network namespace and never makes one: without a path it
    // would wire the VM into the node's.
    if netns(spec).is_none() {
        return Err(refused(
            "spec.hostNetwork",
            "the pod has no network namespace of its own (containerd named none)",
        ));
    }

    if allows_every_device(spec) {
        return Err(refused(
            security_context("privileged"),
            "a VM pod's containers must not be privileged",
        ));
    }
    let added = added_capabilities(
        spec.process()
            .as_ref()
            .and_then(|p| p.capabilities().as_ref()),
    );
    if !added.is_empty() {
        return Err(refused(
            security_context("capabilities.add"),
            format!(
                "{} not allowed in a VM pod, whose containers run no process of their own",
                added.join(", ")
            ),
        ));
    }

    for mount in spec.mounts().iter().flatten().filter(|m| is_bind(m)) {
        let destination = mount.destination().display();
        let Some(source) = mount.source() else {
            return Err(refused(
                format!("mount {destination}"),
                "a bind mount without a source",
            ));
        };
        let allowed_root =
            is_normal_absolute(source) && policy.roots.iter().any(|r| source.starts_with(r));
        if !(kubelet_made(source, sandbox_id, pod_uid) || allowed_root) {
            return Err(refused(
                match container {
                    Some(name) => format!("spec.containers[{name}].volumeMounts[{destination}]"),
                    None => format!("mount {destination}"),
                },
                format!(
                    "host path {} is not a volume the kubelet made for this pod: a VM pod may not \
                     use hostPath volumes (the node's administrator may allow a storage root in {})",
                    source.display(),
                    HOST_VOLUME_ROOTS_FILE
                ),
            ));
        }
    }
    Ok(())
}

/// What makes a container privileged in containerd's spec, beyond its capabilities: a device
/// cgroup rule that allows every device (type `a` or none, any major and minor).
fn allows_every_device(spec: &Spec) -> bool {
    spec.linux()
        .as_ref()
        .and_then(|l| l.resources().as_ref())
        .and_then(|r| r.devices().as_ref())
        .is_some_and(|rules| {
            rules.iter().any(|r| {
                r.allow()
                    && matches!(r.typ(), None | Some(LinuxDeviceType::A))
                    && r.major().is_none()
                    && r.minor().is_none()
            })
        })
}

/// The capabilities beyond containerd's default set, in any of the process's sets, by name
/// (`CAP_…`, sorted).
fn added_capabilities(caps: Option<&LinuxCapabilities>) -> Vec<String> {
    let Some(caps) = caps else {
        return Vec::new();
    };
    let sets: [&Option<Capabilities>; 5] = [
        caps.bounding(),
        caps.effective(),
        caps.permitted(),
        caps.inheritable(),
        caps.ambient(),
    ];
    let added: BTreeSet<String> = sets
        .into_iter()
        .flatten()
        .flatten()
        .filter(|c| !DEFAULT_CAPABILITIES.contains(c))
        .map(|c| format!("CAP_{c}"))
        .collect();
    added.into_iter().collect()
}

/// Whether a bind mount's host path is one the kubelet or containerd made for this pod: the
/// kubelet's `…/pods/<pod uid>/…` (volumes, `/etc/hosts`, the termination log) and containerd's
/// `…/sandboxes/<sandbox id>/…` (`/dev/shm`, `resolv.conf`, `hostname`). A pod's uid and its
/// sandbox id are made after its spec is fixed, so its author cannot name them in a hostPath.
/// The path is judged as written, without following symlinks, and must be normalized.
fn kubelet_made(source: &Path, sandbox_id: &str, pod_uid: &str) -> bool {
    if !is_normal_absolute(source) || sandbox_id.is_empty() || pod_uid.is_empty() {
        return false;
    }
    let parts: Vec<&std::ffi::OsStr> = source
        .components()
        .filter_map(|c| match c {
            Component::Normal(p) => Some(p),
            _ => None,
        })
        .collect();
    parts
        .windows(2)
        .any(|w| (w[0] == "pods" && w[1] == pod_uid) || (w[0] == "sandboxes" && w[1] == sandbox_id))
}

fn is_normal_absolute(path: &Path) -> bool {
    path.is_absolute()
        && path
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    // containerd's default capability set and the pod the fuzzer's seeds are of.
    use crate::seeds::{DEFAULT_CAPS, OWN_ID as SANDBOX, POD_UID as UID};
    use serde_json::{json, Value};

    /// The shape of containerd 1.6's spec for a pod's container, as seen on a node (trimmed).
    fn compute_spec() -> Value {
        json!({
            "ociVersion": "1.0.2-dev",
            "process": {
                "user": {"uid": 0, "gid": 0}, "args": ["/virtshim-runs-no-process"], "cwd": "/",
                "capabilities": {"bounding": DEFAULT_CAPS, "effective": DEFAULT_CAPS, "permitted": DEFAULT_CAPS}
            },
            "root": {"path": "rootfs"},
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/etc/hosts", "type": "bind", "source": format!("/var/lib/kubelet/pods/{UID}/etc-hosts"), "options": ["rbind", "rprivate", "rw"]},
                {"destination": "/var/run/virtshim/volumes/disk", "type": "bind", "source": format!("/var/lib/kubelet/pods/{UID}/volumes/kubernetes.io~local-volume/pv1"), "options": ["rbind"]},
                {"destination": "/dev/shm", "type": "bind", "source": format!("/run/containerd/io.containerd.grpc.v1.cri/sandboxes/{SANDBOX}/shm"), "options": ["rbind"]}
            ],
            "annotations": {
                "io.kubernetes.cri.container-type": "container",
                "io.kubernetes.cri.container-name": "compute",
                "io.kubernetes.cri.sandbox-id": SANDBOX,
                "io.kubernetes.cri.sandbox-name": "virt-launcher-vm1-abcde",
                "io.kubernetes.cri.sandbox-namespace": "default",
                "io.kubernetes.cri.sandbox-uid": UID
            },
            "linux": {
                "resources": {
                    "cpu": {"shares": 102, "quota": 50000, "period": 100000},
                    "devices": [{"allow": false, "access": "rwm"}, {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"}]
                },
                "cgroupsPath": "/kubepods/pod1/c1",
                "namespaces": [
                    {"type": "pid"}, {"type": "ipc", "path": "/proc/1/ns/ipc"}, {"type": "uts"},
                    {"type": "mount"}, {"type": "network", "path": "/proc/1/ns/net"}
                ],
                "devices": [{"path": "/dev/virtshim/blk", "type": "b", "major": 7, "minor": 3}],
                "maskedPaths": ["/proc/kcore"]
            }
        })
    }

    fn read(spec: &Value) -> Result<Bundle> {
        Bundle::from_json(
            Path::new("/b"),
            "c1",
            &spec.to_string(),
            &MountPolicy::default(),
        )
    }

    fn refusal(spec: &Value) -> String {
        read(spec).unwrap_err().to_string()
    }

    #[test]
    fn a_kubelet_made_container_is_read() {
        let b = read(&compute_spec()).unwrap();
        assert_eq!(
            b.role,
            Role::Container {
                name: "compute".into(),
                sandbox_id: SANDBOX.into()
            }
        );
        assert_eq!(b.pod.to_string(), "default/virt-launcher-vm1-abcde");
        assert_eq!(b.pod.uid, UID);
        assert_eq!(b.netns.as_deref(), Some(Path::new("/proc/1/ns/net")));
        assert_eq!(b.cgroups_path.as_deref(), Some("/kubepods/pod1/c1"));
        assert_eq!(b.resources.cpu.as_ref().unwrap().quota, Some(50000));
        assert!(b.mounts.contains_key("/var/run/virtshim/volumes/disk"));
        assert!(
            !b.mounts.contains_key("/proc"),
            "only bind mounts are volumes"
        );
        assert_eq!(
            b.block_devices["/dev/virtshim/blk"],
            BlockDevice { major: 7, minor: 3 }
        );
    }

    #[test]
    fn host_namespaces_are_refused_naming_the_pod_field() {
        for (kind, field) in [
            ("network", "spec.hostNetwork"),
            ("pid", "spec.hostPID"),
            ("ipc", "spec.hostIPC"),
        ] {
            let mut spec = compute_spec();
            spec["linux"]["namespaces"]
                .as_array_mut()
                .unwrap()
                .retain(|n| n["type"] != kind);
            let e = refusal(&spec);
            assert!(
                e.starts_with(&format!("{field}: a VM pod must not share")),
                "{e}"
            );
        }
        let mut spec = compute_spec();
        spec["linux"]["namespaces"][4] = json!({"type": "network"});
        assert!(refusal(&spec).contains("no network namespace of its own"));
    }

    #[test]
    fn privilege_and_added_capabilities_are_refused() {
        let mut spec = compute_spec();
        spec["process"]["capabilities"]["bounding"]
            .as_array_mut()
            .unwrap()
            .push(json!("CAP_NET_ADMIN"));
        let e = refusal(&spec);
        assert!(
            e.starts_with("spec.containers[compute].securityContext.capabilities.add: CAP_NET_ADMIN not allowed"),
            "{e}"
        );
        spec["linux"]["resources"]["devices"] = json!([{"allow": true, "access": "rwm"}]);
        let e = refusal(&spec);
        assert!(
            e.starts_with("spec.containers[compute].securityContext.privileged:"),
            "{e}"
        );
    }

    #[test]
    fn host_paths_the_kubelet_did_not_make_are_refused() {
        for source in [
            "/etc".to_owned(),
            format!("/var/lib/kubelet/pods/{UID}/../../../etc"),
            "/var/lib/kubelet/pods/another-uid/volumes/x".to_owned(),
            format!("/var/lib/containerd/sandboxes/{SANDBOX}x/hostname"),
            "relative/pods/x".to_owned(),
        ] {
            let mut spec = compute_spec();
            spec["mounts"][2]["source"] = json!(source);
            let e = refusal(&spec);
            assert!(
                e.starts_with("spec.containers[compute].volumeMounts[/var/run/virtshim/volumes/disk]: host path"),
                "{source}: {e}"
            );
        }
        // Under a storage root, but leaving it with `..` (a fuzzing finding).
        let mut spec = compute_spec();
        spec["mounts"][2]["source"] = json!("/srv/hpvolumes/../../etc");
        let policy = MountPolicy::from_roots([PathBuf::from("/srv/hpvolumes")]);
        let e = Bundle::from_json(Path::new("/b"), "c1", &spec.to_string(), &policy)
            .unwrap_err()
            .to_string();
        assert!(e.contains("is not a volume the kubelet made"), "{e}");
        // A storage root the administrator allowed.
        let mut spec = compute_spec();
        spec["mounts"][2]["source"] = json!("/srv/hpvolumes/pvc-1");
        let policy = MountPolicy::from_roots([
            PathBuf::from("/srv/hpvolumes"),
            PathBuf::from("relative"),
            PathBuf::from("/srv/../etc"),
        ]);
        assert_eq!(policy.roots, vec![PathBuf::from("/srv/hpvolumes")]);
        Bundle::from_json(Path::new("/b"), "c1", &spec.to_string(), &policy).unwrap();
    }

    #[test]
    fn a_bundle_without_the_pods_identity_is_refused() {
        let mut spec = compute_spec();
        spec["annotations"]
            .as_object_mut()
            .unwrap()
            .remove("io.kubernetes.cri.sandbox-uid");
        let e = read(&spec).unwrap_err();
        assert!(
            matches!(
                e,
                Error::BundleAnnotation {
                    annotation: SANDBOX_UID,
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(e
            .to_string()
            .contains("io.kubernetes.cri.sandbox-uid is missing"));
        assert!(refusal(&json!({"annotations": {}})).contains("through the CRI only"));
    }

    /// A config.json that is no OCI spec names the file and keeps serde's error (the fuzzer's
    /// `not-json` seed expects its "EOF").
    #[test]
    fn a_spec_that_does_not_parse_keeps_its_cause() {
        let e = Bundle::from_json(
            Path::new("/b"),
            "c1",
            "{\"ociVersion\": ",
            &MountPolicy::default(),
        )
        .unwrap_err();
        let message = e.to_string();
        assert!(
            message.starts_with("reading the OCI bundle: /b/config.json: EOF"),
            "{message}"
        );
        let source = std::error::Error::source(&e)
            .and_then(|s| s.downcast_ref::<serde_json::Error>())
            .unwrap();
        assert!(source.is_eof());
    }

    /// What the kubelet is told of a refused bundle: PERMISSION_DENIED, the pod's field first.
    #[test]
    fn a_refused_bundle_reaches_containerd_as_permission_denied() {
        let mut spec = compute_spec();
        spec["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .retain(|n| n["type"] != "pid");
        let ttrpc::Error::RpcStatus(status) = ttrpc::Error::from(read(&spec).unwrap_err()) else {
            panic!("not a status");
        };
        assert_eq!(status.code(), ttrpc::Code::PERMISSION_DENIED);
        assert!(
            status.message.starts_with("spec.hostPID: "),
            "{}",
            status.message
        );
        let ttrpc::Error::RpcStatus(status) = ttrpc::Error::from(check_id("../x").unwrap_err())
        else {
            panic!("not a status");
        };
        assert_eq!(status.code(), ttrpc::Code::INVALID_ARGUMENT);
    }
}
