//! Wire types for `kubevirt.io/v1`: the shapes users write in YAML and the apiserver stores.
//!
//! Every field is optional on the wire so that parse → serialize → parse is lossless: a field the
//! user wrote as `{}` comes back as `{}`, one they left out stays out. Every object also keeps the
//! fields it does not model in `unknown`, so KubeVirt fields virtshim does not implement survive a
//! round trip and validation can name them as "not supported" instead of dropping them silently.
//! Code that *uses* a VMI works on the validated types of [`crate::validate`], never on these.

mod access;
mod devices;
mod domain;
mod network;
mod replicaset;
mod status;
mod vm;
mod vmi;
mod volume;

pub use access::*;
pub use devices::*;
pub use domain::*;
pub use network::*;
pub use replicaset::*;
pub use status::*;
pub use vm::*;
pub use vmi::*;
pub use volume::*;

use std::collections::BTreeMap;

/// Fields of an object that virtshim does not model, kept verbatim.
///
/// Serialized inline (serde `flatten`), so they round-trip. In the generated CRD such objects
/// carry `x-kubernetes-preserve-unknown-fields: true` (see [`crate::crd`]).
pub type Unknown = BTreeMap<String, serde_json::Value>;

/// A Kubernetes resource quantity as written ("128Mi", "1024M", "500m"), kept as text so it
/// round-trips exactly; [`crate::quantity::Quantity`] parses it.
pub type QuantityString = k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// An empty object such as `pod: {}`, `masquerade: {}` or `rng: {}`, which still keeps any
/// fields virtshim does not model.
#[derive(
    Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
pub struct Empty {
    #[serde(flatten, default, skip_serializing_if = "BTreeMap::is_empty")]
    pub unknown: Unknown,
}
