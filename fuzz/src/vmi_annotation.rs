//! The `vmi_annotation` fuzz target's check: what the shim does with the pod annotation
//! `virtshim.io/vmi` on CreateContainer (`shim/src/pod.rs`, `prepare_vm`), which anyone who may
//! create a pod can set. It must refuse with an error, never panic.
//!
//! The shim also ties the VMI to its pod as containerd names it (`verified_identity`): the pod
//! here is in namespace [`POD_NAMESPACE`] and named as the apiserver names the pod the controller
//! makes for this VMI (its `generateName`, cut to 58 characters, and five more).
//!
//! For an annotation the shim accepts, it also checks the controller's side: the same VMI,
//! defaulted as the controller defaults it, stays valid with the same configuration; the pod
//! the controller makes of it carries an annotation the shim accepts as that configuration; and
//! the name the apiserver gives that pod is one the shim ties to the VMI.
//!
//! This file is also compiled into `api/tests/fuzz_regressions.rs` (with `target.rs`), which
//! runs it on the seeds and on every finding kept in `fuzz/regressions/vmi_annotation/`, so a
//! finding stays fixed under plain `cargo test`.

use crate::target::{Outcome, Target};
use std::collections::BTreeSet;
use virtshim_api::manifest::{parse_json, Object};
use virtshim_api::pod::{is_launcher_pod_of, pod_for_vmi, VMI_ANNOTATION};
use virtshim_api::validate::{self, is_dns_label, is_dns_subdomain};

/// The most of the annotation the shim reads (larger ones are refused unread).
pub const MAX_LEN: usize = 1 << 20;

/// The namespace of the pod the annotation is read in, as containerd names it.
pub const POD_NAMESPACE: &str = "default";

/// The `vmi_annotation` fuzz target.
#[derive(Debug)]
pub struct VmiAnnotation;

impl Target for VmiAnnotation {
    const NAME: &'static str = "vmi_annotation";

    fn check(text: &str) -> Outcome {
        check(text)
    }
}

/// The shim's reading of the annotation text, then the controller's round trip for what it
/// accepts. Panics only when a rule above is broken (a finding).
pub fn check(text: &str) -> Outcome {
    if text.len() > MAX_LEN {
        return Outcome::Refused("larger than 1 MiB".to_owned());
    }
    let vmi = match parse_json(text) {
        Ok(Object::VirtualMachineInstance(vmi)) => vmi,
        Ok(other) => {
            return Outcome::Refused(format!(
                "holds a {}, not a VirtualMachineInstance",
                other.kind()
            ))
        }
        Err(e) => return Outcome::Refused(e.to_string()),
    };
    let config = match validate::vmi(&vmi) {
        Ok(config) => config,
        Err(e) => {
            assert!(
                !e.0.is_empty(),
                "validation refused the VMI without naming a field"
            );
            return Outcome::Refused(e.to_string().replace('\n', "; "));
        }
    };
    let namespace = match vmi.metadata.namespace.as_deref() {
        Some(ns) if ns != POD_NAMESPACE => {
            return Outcome::Refused(format!(
                "names namespace {ns:?}, but the pod is in {POD_NAMESPACE:?}"
            ))
        }
        _ => POD_NAMESPACE.to_owned(),
    };
    let name = vmi.metadata.name.clone().unwrap_or_default();
    if !is_dns_subdomain(&name) || !is_dns_label(&namespace) {
        return Outcome::Refused(
            "metadata.name must be a DNS subdomain and metadata.namespace a DNS label".to_owned(),
        );
    }

    // The controller's side for the same VMI: defaulted, validated, made into a pod.
    let mut defaulted = vmi.clone();
    virtshim_api::defaults::vmi(&mut defaulted);
    let config = match validate::vmi(&defaulted) {
        Ok(mut again) => {
            // A VMI without a firmware UUID gets a random one each time it is defaulted (as in
            // KubeVirt); once defaulted, it keeps it.
            let unset = vmi
                .spec
                .domain
                .as_ref()
                .and_then(|d| d.firmware.as_ref())
                .and_then(|f| f.uuid.as_deref())
                .unwrap_or("")
                .is_empty();
            let uuid = again.firmware_uuid;
            if unset {
                again.firmware_uuid = config.firmware_uuid;
            }
            assert_eq!(again, config, "defaulting changed the VMI's configuration");
            again.firmware_uuid = uuid;
            again
        }
        Err(e) => panic!("valid VMI is invalid once defaulted: {e}"),
    };
    let pod = match pod_for_vmi(&defaulted, &config, &BTreeSet::new()) {
        Ok(pod) => pod,
        Err(e) => panic!("no pod for a valid VMI: {e}"),
    };
    let carried = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(VMI_ANNOTATION))
        .map(String::as_str)
        .unwrap_or("");
    let carried_vmi = match parse_json(carried) {
        Ok(Object::VirtualMachineInstance(vmi)) => vmi,
        other => panic!("the pod's annotation is not a VMI: {other:?}"),
    };
    match validate::vmi(&carried_vmi) {
        Ok(carried) => assert_eq!(
            carried, config,
            "the pod's annotation gives the shim another configuration"
        ),
        Err(e) => panic!("the shim refuses the pod the controller made: {e}"),
    }
    // The apiserver cuts a generateName to 63 - 5 characters and appends 5 of its alphabet
    // (the name is a DNS subdomain, so ASCII: any cut is on a character boundary).
    let mut pod_name = pod.metadata.generate_name.clone().unwrap_or_default();
    if pod_name.len() > 58 {
        pod_name.truncate(58);
    }
    pod_name.push_str("x7k2q");
    assert!(
        is_launcher_pod_of(&pod_name, &name),
        "the shim does not tie pod {pod_name:?} (the controller's, named by the apiserver) to VMI {name:?}"
    );
    Outcome::Accepted
}
