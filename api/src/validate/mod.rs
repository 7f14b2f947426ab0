//! KubeVirt's validation rules, plus what virtshim supports, with every error's field path.
//!
//! The entry points default a copy of what they are given (defaults are idempotent, see
//! [`crate::defaults`]) and then check it, collecting *every* error rather than stopping at the
//! first, because a user fixing a YAML file wants the whole list at once. Fields that KubeVirt
//! has but virtshim does not implement are named as "not supported", never silently ignored;
//! names KubeVirt does not have either are "unknown fields", with the nearest known name.
//! [`vmi_spec`] also turns the checked spec into a [`VmiConfig`], the only way to obtain one.

mod fields;
mod names;
pub use names::{is_dns_label, is_dns_subdomain};
mod owners;
mod spec;

use crate::config::VmiConfig;
use crate::types::{
    VirtualMachine, VirtualMachineInstance, VirtualMachineInstanceReplicaSet,
    VirtualMachineInstanceSpec,
};
use std::fmt;

/// A field's path as KubeVirt and Kubernetes print it: `spec.domain.devices.disks[1].disk.bus`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldPath(String);

impl FieldPath {
    pub fn root(name: &str) -> Self {
        Self(name.to_owned())
    }
    pub fn child(&self, name: &str) -> Self {
        Self(format!("{}.{name}", self.0))
    }
    pub fn index(&self, i: usize) -> Self {
        Self(format!("{}[{i}]", self.0))
    }
    pub fn key(&self, key: &str) -> Self {
        Self(format!("{}[{key}]", self.0))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What is wrong with one field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The field must be set.
    Required { detail: String },
    /// The value breaks a rule.
    Invalid { value: String, reason: String },
    /// The value is not one of the accepted ones.
    UnsupportedValue {
        value: String,
        supported: Vec<String>,
    },
    /// virtshim does not implement the field (or this use of it); [`NotSupported`] says whether
    /// KubeVirt has it. One variant for both, as both are refused the same way, with the
    /// Kubernetes cause `FieldValueNotSupported`.
    NotSupported(NotSupported),
    /// The value repeats one given earlier in the same list.
    Duplicate { value: String },
    /// The field may not be set in this combination.
    Forbidden { reason: String },
}

/// Why a field virtshim does not implement is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NotSupported {
    /// A KubeVirt feature virtshim does not model; `detail` says why, or what to use instead.
    Feature { detail: String },
    /// A name KubeVirt does not have either at this place: almost always a typo, so it is
    /// reported as such, with the nearest name KubeVirt or virtshim know when one is close.
    UnknownField { did_you_mean: Option<String> },
}

/// One validation error: a field path and what is wrong there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    pub path: FieldPath,
    pub kind: ErrorKind,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = &self.path;
        match &self.kind {
            ErrorKind::Required { detail } => write!(f, "{path}: required value: {detail}"),
            ErrorKind::Invalid { value, reason } => {
                write!(f, "{path}: invalid value {value:?}: {reason}")
            }
            ErrorKind::UnsupportedValue { value, supported } => {
                let list: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
                write!(
                    f,
                    "{path}: unsupported value {value:?} (supported: {})",
                    list.join(", ")
                )
            }
            ErrorKind::NotSupported(NotSupported::Feature { detail }) => {
                write!(f, "{path}: not supported by virtshim: {detail}")
            }
            ErrorKind::NotSupported(NotSupported::UnknownField { did_you_mean }) => {
                write!(f, "{path}: unknown field")?;
                match did_you_mean {
                    Some(name) => write!(f, "; did you mean {name:?}?"),
                    None => Ok(()),
                }
            }
            ErrorKind::Duplicate { value } => write!(f, "{path}: duplicate value {value:?}"),
            ErrorKind::Forbidden { reason } => write!(f, "{path}: forbidden: {reason}"),
        }
    }
}

/// All the errors found in one object, in field order.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ValidationErrors(pub Vec<FieldError>);

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl ValidationErrors {
    pub fn iter(&self) -> impl Iterator<Item = &FieldError> {
        self.0.iter()
    }
}

/// Collects errors while a check walks an object.
#[derive(Debug, Default)]
pub(crate) struct Checker {
    errors: Vec<FieldError>,
}

impl Checker {
    fn push(&mut self, path: &FieldPath, kind: ErrorKind) {
        self.errors.push(FieldError {
            path: path.clone(),
            kind,
        });
    }
    fn required(&mut self, path: &FieldPath, detail: impl Into<String>) {
        self.push(
            path,
            ErrorKind::Required {
                detail: detail.into(),
            },
        );
    }
    fn invalid(&mut self, path: &FieldPath, value: impl fmt::Display, reason: impl Into<String>) {
        self.push(
            path,
            ErrorKind::Invalid {
                value: value.to_string(),
                reason: reason.into(),
            },
        );
    }
    fn unsupported_value(&mut self, path: &FieldPath, value: &str, supported: &[&str]) {
        let supported = supported.iter().map(|s| (*s).to_owned()).collect();
        self.push(
            path,
            ErrorKind::UnsupportedValue {
                value: value.to_owned(),
                supported,
            },
        );
    }
    fn not_supported(&mut self, path: &FieldPath, detail: impl Into<String>) {
        self.push(
            path,
            ErrorKind::NotSupported(NotSupported::Feature {
                detail: detail.into(),
            }),
        );
    }
    fn duplicate(&mut self, path: &FieldPath, value: &str) {
        self.push(
            path,
            ErrorKind::Duplicate {
                value: value.to_owned(),
            },
        );
    }
    fn forbidden(&mut self, path: &FieldPath, reason: impl Into<String>) {
        self.push(
            path,
            ErrorKind::Forbidden {
                reason: reason.into(),
            },
        );
    }
    /// Every field virtshim does not model is named, so nothing is ignored silently: a KubeVirt
    /// field as not supported, any other name as unknown (a typo until proven otherwise).
    fn unknown<T: fields::Wire>(&mut self, path: &FieldPath, object: &T) {
        for key in object.unknown().keys() {
            let path = path.child(key);
            match fields::classify::<T>(key) {
                fields::Unmodelled::KubeVirtField => {
                    self.not_supported(&path, "field is not implemented")
                }
                fields::Unmodelled::Unknown { did_you_mean } => self.push(
                    &path,
                    ErrorKind::NotSupported(NotSupported::UnknownField { did_you_mean }),
                ),
            }
        }
    }
    fn count(&self) -> usize {
        self.errors.len()
    }
    fn finish(self) -> Result<(), ValidationErrors> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ValidationErrors(self.errors))
        }
    }
}

/// Defaults a copy of `spec` and validates it; on success, the VM's configuration.
pub fn vmi_spec(spec: &VirtualMachineInstanceSpec) -> Result<VmiConfig, ValidationErrors> {
    let mut spec = spec.clone();
    crate::defaults::vmi_spec(&mut spec);
    let mut checker = Checker::default();
    let config = spec::check(&mut checker, &spec, &FieldPath::root("spec"));
    checker.finish()?;
    // check() returns a config exactly when it recorded no error.
    config.ok_or_else(|| ValidationErrors(Vec::new()))
}

/// Validates a VMI (defaulting a copy first).
pub fn vmi(vmi: &VirtualMachineInstance) -> Result<VmiConfig, ValidationErrors> {
    vmi_spec(&vmi.spec)
}

/// Validates a VM: its run strategy and, defaulted, its template.
pub fn vm(vm: &VirtualMachine) -> Result<(), ValidationErrors> {
    let mut checker = Checker::default();
    owners::check_vm(&mut checker, vm);
    checker.finish()
}

/// Validates a VMI replica set: replicas, selector, and its defaulted template.
pub fn replica_set(rs: &VirtualMachineInstanceReplicaSet) -> Result<(), ValidationErrors> {
    let mut checker = Checker::default();
    owners::check_replica_set(&mut checker, rs);
    checker.finish()
}
