//! Reading YAML (or JSON) manifests of VMs, VMIs and VMI replica sets, as `kubectl apply` would.
//!
//! Decoding errors carry the field path (`spec.domain.cpu.cores: invalid type: …`), because the
//! same decoder reads the hostile `virtshim.io/vmi` annotation in the shim.

use crate::types::{VirtualMachine, VirtualMachineInstance, VirtualMachineInstanceReplicaSet};
use crate::validate::ValidationErrors;
use serde::de::DeserializeOwned;

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
        let twice = std::cell::RefCell::new(None);
        let seed = strict::Strict {
            path: "",
            twice: &twice,
        };
        match serde::de::DeserializeSeed::deserialize(seed, document) {
            Ok(serde_json::Value::Null) => {}
            Ok(value) => out.push(Object::from_value(value)),
            Err(_) if twice.borrow().is_some() => {
                let path = twice.into_inner().unwrap_or_default();
                out.push(Err(ManifestError::Decode {
                    path,
                    message: "key given twice in one mapping (kubectl refuses it too)".to_owned(),
                }));
            }
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

/// YAML read into JSON values the way kubectl reads it: a key given twice in one mapping is an
/// error. serde_json's own `Value` keeps the last one silently, so a second `devices:` under
/// `domain` replaced the first without a word, and the VM lost its disks.
mod strict {
    use serde::de::{DeserializeSeed, Deserializer, Error, MapAccess, SeqAccess, Visitor};
    use serde_json::{Map, Number, Value};
    use std::cell::RefCell;
    use std::fmt;

    /// Reads the value at `path` (dotted, as errors name fields); the path of a key given twice
    /// goes to `twice` (serde_yaml_ng would prefix its own, coarser path to an error's text).
    pub(super) struct Strict<'a> {
        pub(super) path: &'a str,
        pub(super) twice: &'a RefCell<Option<String>>,
    }

    impl<'de> DeserializeSeed<'de> for Strict<'_> {
        type Value = Value;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for Strict<'_> {
        type Value = Value;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a YAML value")
        }
        fn visit_bool<E: Error>(self, v: bool) -> Result<Value, E> {
            Ok(Value::Bool(v))
        }
        fn visit_i64<E: Error>(self, v: i64) -> Result<Value, E> {
            Ok(Value::Number(v.into()))
        }
        fn visit_u64<E: Error>(self, v: u64) -> Result<Value, E> {
            Ok(Value::Number(v.into()))
        }
        fn visit_f64<E: Error>(self, v: f64) -> Result<Value, E> {
            // As serde_json's Value: a float JSON cannot hold (NaN, infinity) is null.
            Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
        }
        fn visit_str<E: Error>(self, v: &str) -> Result<Value, E> {
            Ok(Value::String(v.to_owned()))
        }
        fn visit_string<E: Error>(self, v: String) -> Result<Value, E> {
            Ok(Value::String(v))
        }
        fn visit_none<E: Error>(self) -> Result<Value, E> {
            Ok(Value::Null)
        }
        fn visit_unit<E: Error>(self) -> Result<Value, E> {
            Ok(Value::Null)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
            d.deserialize_any(self)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
            let mut items = Vec::new();
            loop {
                let path = format!("{}[{}]", self.path, items.len());
                let seed = Strict {
                    path: &path,
                    twice: self.twice,
                };
                match seq.next_element_seed(seed)? {
                    Some(item) => items.push(item),
                    None => return Ok(Value::Array(items)),
                }
            }
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
            let mut object = Map::new();
            while let Some(key) = map.next_key::<String>()? {
                let path = if self.path.is_empty() {
                    key.clone()
                } else {
                    format!("{}.{key}", self.path)
                };
                if object.contains_key(&key) {
                    let error = A::Error::custom(format!("{path}: key given twice"));
                    *self.twice.borrow_mut() = Some(path);
                    return Err(error);
                }
                let value = map.next_value_seed(Strict {
                    path: &path,
                    twice: self.twice,
                })?;
                object.insert(key, value);
            }
            Ok(Value::Object(object))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_given_twice_is_refused_naming_it_and_its_line() {
        let yaml = "apiVersion: kubevirt.io/v1\nkind: VirtualMachineInstance\nmetadata: {name: dup}\nspec:\n  domain:\n    devices: {disks: [{name: root}]}\n    memory: {guest: 64Mi}\n    devices: {}\n";
        let error = match parse_documents(yaml).remove(0) {
            Err(e) => e.to_string(),
            Ok(o) => panic!("accepted: {o:?}"),
        };
        assert_eq!(
            error,
            "spec.domain.devices: key given twice in one mapping (kubectl refuses it too)"
        );
        // Inside a list, the path names the item.
        let yaml = "apiVersion: kubevirt.io/v1\nkind: VirtualMachineInstance\nmetadata: {name: dup}\nspec:\n  volumes:\n  - {name: a, name: b}\n";
        let error = parse_documents(yaml).remove(0).unwrap_err().to_string();
        assert!(
            error.contains("spec.volumes[0].name: key given twice"),
            "{error}"
        );
    }

    #[test]
    fn values_read_as_serde_json_reads_them() {
        let yaml = "apiVersion: kubevirt.io/v1\nkind: VirtualMachineInstance\nmetadata: {name: v, labels: {a: 'x', b: ~}}\nspec:\n  domain: {memory: {guest: 64Mi}, cpu: {cores: 2}, devices: {autoattachPodInterface: false}}\n";
        let doc = serde_yaml_ng::Deserializer::from_str(yaml).next().unwrap();
        let twice = std::cell::RefCell::new(None);
        let seed = strict::Strict {
            path: "",
            twice: &twice,
        };
        let strict = serde::de::DeserializeSeed::deserialize(seed, doc).unwrap();
        let plain: serde_json::Value = serde_yaml_ng::from_str(yaml).unwrap();
        assert_eq!(strict, plain);
    }
}
