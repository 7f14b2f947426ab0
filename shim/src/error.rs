//! The shim's error type, and the one place that decides each error's ttrpc (gRPC) code.

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
    #[error("libvirt: {context}: {message}")]
    Libvirt {
        context: &'static str,
        message: String,
    },
    #[error("{program} failed: {message}")]
    Command {
        program: &'static str,
        message: String,
    },
    #[error("disk {disk:?}: {message}")]
    Disk { disk: String, message: String },
    #[error("cgroup: {0}")]
    Cgroup(String),
    #[error("reading the OCI bundle: {0}")]
    Bundle(String),
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
            | Error::Command { .. }
            | Error::Cgroup(_)
            | Error::Bundle(_) => Code::INTERNAL,
        };
        ttrpc::Error::RpcStatus(ttrpc::get_status(code, e.to_string()))
    }
}
