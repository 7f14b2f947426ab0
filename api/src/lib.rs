//! virtshim's view of the KubeVirt API.
//!
//! - [`types`]: `kubevirt.io/v1` wire types, lossless for fields virtshim does not model.
//! - [`quantity`]: Kubernetes resource quantities.
//! - [`defaults`]: KubeVirt's defaults, applied the way its mutating webhook applies them.
//! - [`config`]: the validated configuration of one VM, which the shim builds a domain from.
//! - [`validate`]: KubeVirt's rules plus what virtshim supports, every error with its field path.
//! - [`crd`]: the CustomResourceDefinitions, generated from [`types`].
//! - [`manifest`]: reading multi-document YAML of VMs, VMIs and replica sets.
//! - [`pod`]: the pod contract between the controller, `virtctl local` and the shim.

pub mod config;
pub mod crd;
pub mod defaults;
pub mod manifest;
pub mod pod;
pub mod quantity;
pub mod types;
pub mod validate;

/// The API group KubeVirt's resources live in.
pub const GROUP: &str = "kubevirt.io";
