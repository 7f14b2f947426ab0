//! The shim's error type, and the one place that decides each error's ttrpc (gRPC) code.

pub use crate::libvirt::{LibvirtCause, LibvirtCode};
use std::path::PathBuf;

/// Everything that can go wrong while serving containerd.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("container {0:?} not found")]
    NotFound(String),
    #[error("container {0:?} already exists")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0} is not supported for VM workloads")]
    Unsupported(&'static str),
    #[error("invalid {what}: {message}")]
    InvalidArgument { what: String, message: String },
    #[error("the {annotation} annotation is invalid: {message}")]
    Vmi {
        annotation: &'static str,
        message: String,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{context} ({path}): {source}")]
    Path {
        context: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A libvirt call failed. `cause` keeps libvirt's error code, so that callers decide by
    /// what libvirt said (see [`Error::libvirt_code`]) rather than by asking it again.
    #[error("libvirt: {context}: {cause}")]
    Libvirt {
        context: &'static str,
        #[source]
        cause: LibvirtCause,
    },
    /// QEMU's pid file (which libvirt writes) does not hold a pid.
    #[error("libvirt: reading QEMU's pid ({path}): {text:?}: {source}")]
    QemuPid {
        path: PathBuf,
        text: String,
        #[source]
        source: std::num::ParseIntError,
    },
    #[error("{program} failed: {message}")]
    Command {
        program: &'static str,
        message: String,
    },
    #[error("disk {disk:?}: {message}")]
    Disk { disk: String, message: String },
    /// The spec's `linux.cgroupsPath` is not one the shim places QEMU under.
    #[error("cgroup: cgroupsPath {cgroups_path:?} {problem}")]
    CgroupPath {
        cgroups_path: String,
        problem: &'static str,
    },
    /// Making one of the container's cgroup folders failed.
    #[error("cgroup: creating {path}: {source}")]
    CgroupCreate {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Writing a cgroup file failed: a CPU limit, or QEMU's pid into `cgroup.procs`.
    #[error("cgroup: writing {value:?} to {path}: {source}")]
    CgroupWrite {
        path: PathBuf,
        value: String,
        #[source]
        source: std::io::Error,
    },
    /// The cgroup's figures could not be encoded into containerd's metrics message.
    #[error("cgroup: encoding metrics: {0}")]
    Metrics(#[source] containerd_shim::Error),
    /// `config.json` is not an OCI runtime spec.
    #[error("reading the OCI bundle: {path}: {source}")]
    BundleSpec {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// An annotation containerd's CRI plugin writes (the container's role, the pod's name) is
    /// missing or unexpected: the bundle was not made through the CRI, and the shim cannot
    /// tell which pod it belongs to.
    #[error("reading the OCI bundle: {annotation} {problem}")]
    BundleAnnotation {
        annotation: &'static str,
        problem: String,
    },
    /// The pod is something a VM pod must never be (host namespaces, privileged, host paths,
    /// another namespace's VMI): `field` is where the pod's author must change it.
    #[error("{field}: {message}")]
    Refused { field: String, message: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
    pub fn path(context: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Path {
            context,
            path: path.into(),
            source,
        }
    }
    pub fn invalid(what: impl Into<String>, message: impl Into<String>) -> Self {
        Self::InvalidArgument {
            what: what.into(),
            message: message.into(),
        }
    }
    /// libvirt's code for this error, when libvirt itself reported it (`None` for every other
    /// error, and for a libvirt that never answered).
    pub fn libvirt_code(&self) -> Option<LibvirtCode> {
        match self {
            Error::Libvirt {
                cause: LibvirtCause::Reported { code, .. },
                ..
            } => Some(*code),
            _ => None,
        }
    }
}

impl From<Error> for ttrpc::Error {
    fn from(e: Error) -> Self {
        use ttrpc::Code;
        let code = match &e {
            Error::NotFound(_) => Code::NOT_FOUND,
            Error::AlreadyExists(_) => Code::ALREADY_EXISTS,
            Error::FailedPrecondition(_) => Code::FAILED_PRECONDITION,
            Error::Unsupported(_) => Code::UNIMPLEMENTED,
            Error::Refused { .. } => Code::PERMISSION_DENIED,
            Error::InvalidArgument { .. } | Error::Vmi { .. } | Error::Disk { .. } => {
                Code::INVALID_ARGUMENT
            }
            Error::Io { .. }
            | Error::Path { .. }
            | Error::Libvirt { .. }
            | Error::QemuPid { .. }
            | Error::Command { .. }
            | Error::CgroupPath { .. }
            | Error::CgroupCreate { .. }
            | Error::CgroupWrite { .. }
            | Error::Metrics(_)
            | Error::BundleSpec { .. }
            | Error::BundleAnnotation { .. } => Code::INTERNAL,
        };
        ttrpc::Error::RpcStatus(ttrpc::get_status(code, e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;
    use ttrpc::Code;

    /// The code containerd (and the kubelet after it) sees for `e`, with its message.
    fn status(e: Error) -> (Code, String) {
        match ttrpc::Error::from(e) {
            ttrpc::Error::RpcStatus(s) => (s.code(), s.message),
            other => panic!("not a status: {other:?}"),
        }
    }

    fn io_error() -> std::io::Error {
        std::io::ErrorKind::PermissionDenied.into()
    }

    /// Each variant's code, one by one: what the kubelet retries, reports as the pod's fault
    /// (INVALID_ARGUMENT, PERMISSION_DENIED) or as the node's (INTERNAL) depends on it.
    #[test]
    fn each_error_maps_to_its_ttrpc_code() {
        let cases = [
            (Error::NotFound("c1".into()), Code::NOT_FOUND),
            (Error::AlreadyExists("c1".into()), Code::ALREADY_EXISTS),
            (
                Error::FailedPrecondition("x".into()),
                Code::FAILED_PRECONDITION,
            ),
            (Error::Unsupported("exec"), Code::UNIMPLEMENTED),
            (Error::invalid("signal", "9"), Code::INVALID_ARGUMENT),
            (
                Error::Vmi {
                    annotation: "virtshim.io/vmi",
                    message: "x".into(),
                },
                Code::INVALID_ARGUMENT,
            ),
            (
                Error::Disk {
                    disk: "d".into(),
                    message: "x".into(),
                },
                Code::INVALID_ARGUMENT,
            ),
            (
                Error::Refused {
                    field: "spec.hostNetwork".into(),
                    message: "x".into(),
                },
                Code::PERMISSION_DENIED,
            ),
            (Error::io("x", io_error()), Code::INTERNAL),
            (Error::path("x", "/p", io_error()), Code::INTERNAL),
            (
                Error::Command {
                    program: "qemu-img",
                    message: "x".into(),
                },
                Code::INTERNAL,
            ),
            (
                Error::Libvirt {
                    context: "x",
                    cause: LibvirtCause::Unreachable("y"),
                },
                Code::INTERNAL,
            ),
            (
                Error::Libvirt {
                    context: "destroying the VM",
                    cause: LibvirtCause::Reported {
                        code: LibvirtCode::OperationInvalid,
                        domain: virt::enumutil::Enum::Known(virt::error::ErrorDomain::Qemu),
                        message: "domain is not running".into(),
                    },
                },
                Code::INTERNAL,
            ),
            (
                Error::QemuPid {
                    path: "/run/qemu/vm.pid".into(),
                    text: "x".into(),
                    source: "x".parse::<u32>().unwrap_err(),
                },
                Code::INTERNAL,
            ),
            (
                Error::CgroupPath {
                    cgroups_path: "a:b".into(),
                    problem: "x",
                },
                Code::INTERNAL,
            ),
            (
                Error::CgroupCreate {
                    path: "/sys/fs/cgroup/x".into(),
                    source: io_error(),
                },
                Code::INTERNAL,
            ),
            (
                Error::CgroupWrite {
                    path: "/sys/fs/cgroup/x/cpu.max".into(),
                    value: "1 2".into(),
                    source: io_error(),
                },
                Code::INTERNAL,
            ),
            (
                Error::Metrics(containerd_shim::Error::Other("x".into())),
                Code::INTERNAL,
            ),
            (
                Error::BundleSpec {
                    path: "/b/config.json".into(),
                    source: serde_json::from_str::<u8>("x").unwrap_err(),
                },
                Code::INTERNAL,
            ),
            (
                Error::BundleAnnotation {
                    annotation: "io.kubernetes.cri.sandbox-uid",
                    problem: "is missing".into(),
                },
                Code::INTERNAL,
            ),
        ];
        for (error, code) in cases {
            let text = error.to_string();
            let (got, message) = status(error);
            assert_eq!(got, code, "{text}");
            assert_eq!(message, text);
        }
    }

    /// A refusal names the pod's field first: that is what the pod's author reads in
    /// `kubectl describe`.
    #[test]
    fn a_refusal_names_the_field() {
        let (code, message) = status(Error::Refused {
            field: "spec.hostPID".into(),
            message: "a VM pod must not share the node's PID namespace".into(),
        });
        assert_eq!(code, Code::PERMISSION_DENIED);
        assert!(message.starts_with("spec.hostPID: "), "{message}");
    }
}
