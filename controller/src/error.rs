//! The one error type of the reconcilers and the leader election: every failure that makes a
//! reconcile pass end early, and so be retried with backoff.

use crate::decide::run_strategy::RunStrategyError;
use crate::observed::ObservedError;
use virtshim_api::pod::PodError;

/// Why a reconcile pass (or a lease update) failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The apiserver refused a request or could not be reached.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// A patch or an object could not be (de)serialized.
    #[error("serialization: {0}")]
    Serialize(#[from] serde_json::Error),
    /// An object lacks a field the apiserver always sets (name, namespace, uid).
    #[error("{kind} has no {field}")]
    MissingField {
        kind: &'static str,
        field: &'static str,
    },
    /// A VMI's status holds something virtshim never writes.
    #[error("unreadable VMI: {0}")]
    Observed(#[from] ObservedError),
    /// A VM's run strategy cannot be read (both `running` and `runStrategy`, or an unknown one).
    #[error("run strategy: {0}")]
    RunStrategy(#[from] RunStrategyError),
    /// The pod contract could not build a pod.
    #[error("building the pod: {0}")]
    Pod(#[from] PodError),
    /// A replica set's label selector is malformed.
    #[error("label selector: {0}")]
    Selector(#[from] kube::core::ParseExpressionError),
}

impl Error {
    /// A short, bounded name for metrics labels.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Kube(kube::Error::Api(e)) if e.code == 409 => "conflict",
            Self::Kube(kube::Error::Api(e)) if e.code == 404 => "not_found",
            Self::Kube(_) => "kube",
            Self::Serialize(_) => "serialize",
            Self::MissingField { .. } => "missing_field",
            Self::Observed(_) => "observed",
            Self::RunStrategy(_) => "run_strategy",
            Self::Pod(_) => "pod",
            Self::Selector(_) => "selector",
        }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Whether a kube error is the apiserver answering with this HTTP status.
pub fn is_status(error: &kube::Error, code: u16) -> bool {
    matches!(error, kube::Error::Api(e) if e.code == code)
}

/// Whether the apiserver refused to create something because the namespace is being deleted
/// (403, cause `NamespaceTerminating`). Nothing can be made there any more; the objects that
/// wanted it are on their way out too, so a pass treats this as done, not as a failure to retry.
pub fn is_namespace_terminating(error: &kube::Error) -> bool {
    let kube::Error::Api(status) = error else {
        return false;
    };
    status.code == 403
        && (status
            .details
            .as_ref()
            .is_some_and(|d| d.causes.iter().any(|c| c.reason == "NamespaceTerminating"))
            || status.message.contains("because it is being terminated"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: u16, message: &str) -> kube::Error {
        kube::Error::Api(
            kube::core::Status::failure(message, "Forbidden")
                .with_code(code)
                .boxed(),
        )
    }

    #[test]
    fn namespace_terminating_is_recognised() {
        let table = [
            (403, "virtualmachineinstances \"v\" is forbidden: unable to create new content in namespace ns because it is being terminated", true),
            (403, "pods is forbidden: User cannot create", false),
            (409, "because it is being terminated", false),
        ];
        for (code, message, want) in table {
            assert_eq!(
                is_namespace_terminating(&api(code, message)),
                want,
                "{code} {message}"
            );
        }
    }
}
