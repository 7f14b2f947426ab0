//! The `oci_bundle` fuzz target's check: the shim's reading of a container's `config.json`
//! (`virtshim_shim::bundle::Bundle::from_json`, what `Bundle::read` does after reading the
//! file), which a pod's author shapes through the pod spec. It must refuse with an error, never
//! panic; and a bundle it accepts must be what the shim relies on, checked here on the spec
//! itself rather than through the reader's own helpers:
//! - the pod's own network (with a path to join), PID and IPC namespaces;
//! - no device rule allowing every device (privileged), no capability that makes the shim's
//!   process root on the node (`CAP_SYS_ADMIN` and the like);
//! - every bind mount from a normalized absolute host path that the kubelet or containerd made
//!   for this pod (`…/pods/<pod uid>/…`, `…/sandboxes/<sandbox id>/…`) or under a storage root
//!   the node's administrator allowed (`STORAGE_ROOT` of the seeds, here);
//! - the pod's namespace, name and uid named.
//!
//! This file is also compiled into `tests/tests/fuzz_regressions.rs`, which runs it on the seeds
//! (`seeds.rs` and `target.rs`, which it needs too) and on every finding kept in
//! `fuzz/regressions/oci_bundle/`.

use crate::seeds::{OWN_ID, STORAGE_ROOT};
use crate::target::{Outcome, Target};
use oci_spec::runtime::{Capability, LinuxDeviceType, LinuxNamespaceType, Spec};
use std::path::{Component, Path, PathBuf};
use virtshim_shim::bundle::{Bundle, MountPolicy, Role};

/// Where containerd puts the bundle.
pub const BUNDLE_DIR: &str = "/run/containerd/io.containerd.runtime.v2.task/k8s.io/c76a1477";

/// Capabilities that would give the pod's processes (and so a VM pod's author) the node.
const NEVER: [Capability; 6] = [
    Capability::SysAdmin,
    Capability::NetAdmin,
    Capability::SysModule,
    Capability::SysPtrace,
    Capability::SysRawio,
    Capability::DacReadSearch,
];

/// The `oci_bundle` fuzz target.
#[derive(Debug)]
pub struct OciBundle;

impl Target for OciBundle {
    const NAME: &'static str = "oci_bundle";

    fn check(text: &str) -> Outcome {
        check(text)
    }
}

/// The shim's reading of `config.json`, then what an accepted bundle must be. Panics only when a
/// rule above is broken (a finding).
pub fn check(text: &str) -> Outcome {
    let policy = MountPolicy::from_roots([PathBuf::from(STORAGE_ROOT)]);
    let bundle = match Bundle::from_json(Path::new(BUNDLE_DIR), OWN_ID, text, &policy) {
        Ok(bundle) => bundle,
        Err(e) => return Outcome::Refused(e.to_string()),
    };
    let spec: Spec = match serde_json::from_str(text) {
        Ok(spec) => spec,
        Err(e) => panic!("accepted a config.json that is not an OCI spec: {e}"),
    };

    for (field, value) in [
        ("namespace", &bundle.pod.namespace),
        ("name", &bundle.pod.name),
        ("uid", &bundle.pod.uid),
    ] {
        assert!(
            !value.is_empty(),
            "accepted a bundle without the pod's {field}"
        );
    }

    let namespaces = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().clone())
        .unwrap_or_default();
    for kind in [LinuxNamespaceType::Pid, LinuxNamespaceType::Ipc] {
        assert!(
            namespaces.iter().any(|n| n.typ() == kind),
            "accepted a bundle sharing the node's {kind:?} namespace"
        );
    }
    let netns = namespaces
        .iter()
        .find(|n| n.typ() == LinuxNamespaceType::Network)
        .and_then(|n| n.path().clone())
        .filter(|p| !p.as_os_str().is_empty());
    assert!(
        netns.is_some(),
        "accepted a bundle without a network namespace to join"
    );
    assert_eq!(bundle.netns, netns, "the shim would join another namespace");

    let devices = spec
        .linux()
        .as_ref()
        .and_then(|l| l.resources().as_ref())
        .and_then(|r| r.devices().clone())
        .unwrap_or_default();
    assert!(
        !devices.iter().any(|r| r.allow()
            && matches!(r.typ(), None | Some(LinuxDeviceType::A))
            && r.major().is_none()
            && r.minor().is_none()),
        "accepted a privileged bundle (a rule allowing every device)"
    );
    if let Some(caps) = spec
        .process()
        .as_ref()
        .and_then(|p| p.capabilities().as_ref())
    {
        for set in [
            caps.bounding(),
            caps.effective(),
            caps.permitted(),
            caps.inheritable(),
            caps.ambient(),
        ]
        .into_iter()
        .flatten()
        {
            for cap in NEVER {
                assert!(!set.contains(&cap), "accepted a bundle with CAP_{cap}");
            }
        }
    }

    let sandbox_id = match &bundle.role {
        Role::Sandbox => OWN_ID,
        Role::Container { sandbox_id, .. } => sandbox_id.as_str(),
    };
    for mount in spec.mounts().iter().flatten() {
        let bind = mount.typ().as_deref() == Some("bind")
            || mount
                .options()
                .iter()
                .flatten()
                .any(|o| o == "bind" || o == "rbind");
        if !bind {
            continue;
        }
        let source = mount.source().clone().unwrap_or_default();
        assert!(
            made_for_pod(&source, &bundle.pod.uid, sandbox_id),
            "accepted a bind mount of {} at {}, not made for this pod nor under {STORAGE_ROOT}",
            source.display(),
            mount.destination().display()
        );
    }
    for source in bundle.mounts.values() {
        assert!(
            made_for_pod(source, &bundle.pod.uid, sandbox_id),
            "the shim would use host path {}",
            source.display()
        );
    }
    Outcome::Accepted
}

/// Whether a host path is normalized, absolute, and one the kubelet or containerd made for this
/// pod or under the allowed storage root.
fn made_for_pod(source: &Path, pod_uid: &str, sandbox_id: &str) -> bool {
    let mut parts: Vec<String> = Vec::new();
    for (i, component) in source.components().enumerate() {
        match component {
            Component::RootDir if i == 0 => {}
            Component::Normal(part) => parts.push(part.to_string_lossy().into_owned()),
            _ => return false,
        }
    }
    if parts.is_empty() {
        return false;
    }
    let root: Vec<&str> = STORAGE_ROOT.split('/').filter(|p| !p.is_empty()).collect();
    let under_root = parts.len() >= root.len() && parts.iter().zip(&root).all(|(a, b)| a == b);
    under_root
        || parts.windows(2).any(|w| {
            (w[0] == "pods" && !pod_uid.is_empty() && w[1] == pod_uid)
                || (w[0] == "sandboxes" && !sandbox_id.is_empty() && w[1] == sandbox_id)
        })
}
