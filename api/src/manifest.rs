//! Reading YAML (or JSON) manifests of VMs, VMIs and VMI replica sets, as `kubectl apply` would.
//!
//! Decoding errors carry the field path (`spec.domain.cpu.cores: invalid type: …`), because the
//! same decoder reads the hostile `virtshim.io/vmi` annotation in the shim.

use crate::types::{VirtualMachine, VirtualMachineInstance, VirtualMachineInstanceReplicaSet};
use crate::validate::ValidationErrors;
use serde::de::DeserializeOwned;
use serde::Deserialize;

/// The API versions accepted for KubeVirt objects (v1alpha3 is served with v1's schema).
pub const API_VERSIONS: &[&str] = &["kubevirt.io/v1", "kubevirt.io/v1alpha3"];

/// One KubeVirt object from a manifest.
#[derive(Clone, Debug, PartialEq)]
pub enum Object {
    VirtualMachine(VirtualMachine),
    VirtualMachineInstance(VirtualMachineInstance),
    VirtualMachineInstanceReplicaSet(VirtualMachineInstanceReplicaSet),
}

/// Why a document is not a KubeVirt object virtshim reads.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("not valid YAML: {0}")]
    Yaml(#[from] serde_yaml_ng::Error),
    #[error("not valid JSON: {0}")]
    Json(#[source] serde_json::Error),
    #[error("a manifest must be a mapping with apiVersion and kind")]
    NotAnObject,
    #[error("{field}: required value")]
    MissingField { field: &'static str },
    #[error("{api_version} {kind} is not a KubeVirt VirtualMachine, VirtualMachineInstance or VirtualMachineInstanceReplicaSet")]
    UnsupportedKind { api_version: String, kind: String },
    #[error("{path}: {message}")]
    Decode { path: String, message: String },
}

impl Object {
    /// Decodes one object from a JSON value, checking apiVersion and kind first.
    pub fn from_value(value: serde_json::Value) -> Result<Self, ManifestError> {
        let map = value.as_object().ok_or(ManifestError::NotAnObject)?;
        let text = |field: &'static str| -> Result<String, ManifestError> {
            map.get(field)
                .and_then(|v| v.as_str())
                .map(str::to_owned)
                .ok_or(ManifestError::MissingField { field })
        };
        let (api_version, kind) = (text("apiVersion")?, text("kind")?);
        if !API_VERSIONS.contains(&api_version.as_str()) {
            return Err(ManifestError::UnsupportedKind { api_version, kind });
        }
        Ok(match kind.as_str() {
            "VirtualMachine" => Self::VirtualMachine(decode(value)?),
            "VirtualMachineInstance" => Self::VirtualMachineInstance(decode(value)?),
            "VirtualMachineInstanceReplicaSet" => {
                Self::VirtualMachineInstanceReplicaSet(decode(value)?)
            }
            _ => return Err(ManifestError::UnsupportedKind { api_version, kind }),
        })
    }

    /// `VirtualMachine`, `VirtualMachineInstance` or `VirtualMachineInstanceReplicaSet`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::VirtualMachine(_) => "VirtualMachine",
            Self::VirtualMachineInstance(_) => "VirtualMachineInstance",
            Self::VirtualMachineInstanceReplicaSet(_) => "VirtualMachineInstanceReplicaSet",
        }
    }

    /// The object's name, or its generateName prefix, or "".
    pub fn name(&self) -> &str {
        let meta = match self {
            Self::VirtualMachine(o) => &o.metadata,
            Self::VirtualMachineInstance(o) => &o.metadata,
            Self::VirtualMachineInstanceReplicaSet(o) => &o.metadata,
        };
        meta.name
            .as_deref()
            .or(meta.generate_name.as_deref())
            .unwrap_or("")
    }

    /// Applies KubeVirt's defaults, as its mutating webhooks do on create.
    pub fn apply_defaults(&mut self) {
        match self {
            Self::VirtualMachine(vm) => crate::defaults::vm(vm),
            Self::VirtualMachineInstance(vmi) => crate::defaults::vmi(vmi),
            // KubeVirt defaults a replica set's VMIs when it creates them, not the template.
            Self::VirtualMachineInstanceReplicaSet(_) => {}
        }
    }

    /// Validates the object (its templates defaulted, as KubeVirt's webhooks see them).
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        match self {
            Self::VirtualMachine(vm) => crate::validate::vm(vm),
            Self::VirtualMachineInstance(vmi) => crate::validate::vmi(vmi).map(|_| ()),
            Self::VirtualMachineInstanceReplicaSet(rs) => crate::validate::replica_set(rs),
        }
    }

    /// The object as a JSON value (what `-o json`/`-o yaml` print).
    pub fn to_value(&self) -> serde_json::Value {
        let value = match self {
            Self::VirtualMachine(o) => serde_json::to_value(o),
            Self::VirtualMachineInstance(o) => serde_json::to_value(o),
            Self::VirtualMachineInstanceReplicaSet(o) => serde_json::to_value(o),
        };
        // Serializing these types cannot fail: every map key is a string.
        value.unwrap_or(serde_json::Value::Null)
    }
}

fn decode<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, ManifestError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        ManifestError::Decode {
            path: if path == "." {
                "(root)".to_owned()
            } else {
                path
            },
            message: e.into_inner().to_string(),
        }
    })
}

/// Splits a YAML stream into documents, skipping empty ones; each is decoded separately so
/// one bad document does not hide the others.
pub fn parse_documents(text: &str) -> Vec<Result<Object, ManifestError>> {
    let mut out = Vec::new();
    for document in serde_yaml_ng::Deserializer::from_str(text) {
        match serde_json::Value::deserialize(document) {
            Ok(serde_json::Value::Null) => {}
            Ok(value) => out.push(Object::from_value(value)),
            Err(e) => {
                // After a syntax error the stream cannot be resynchronised.
                out.push(Err(ManifestError::Yaml(e)));
                break;
            }
        }
    }
    out
}

/// Decodes a single JSON object, as the `virtshim.io/vmi` annotation carries it.
pub fn parse_json(text: &str) -> Result<Object, ManifestError> {
    Object::from_value(serde_json::from_str(text).map_err(ManifestError::Json)?)
}
