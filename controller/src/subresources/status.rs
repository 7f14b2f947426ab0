//! Every refusal as a Kubernetes `Status` (pure): the one place errors become HTTP codes.
//!
//! Messages follow apimachinery's `errors.New…` constructors, which KubeVirt's API uses and
//! `virtctl` prints verbatim: `virtualmachine.kubevirt.io "x" not found`, `Operation cannot be
//! fulfilled on virtualmachineinstance.kubevirt.io "x": VMI is not running`, ….

use crate::decide::subresource::SubresourceError;
use serde_json::{json, Value};

/// A refused request: the HTTP code and the `Status` body.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code} {reason}: {message}")]
pub struct ApiError {
    pub code: u16,
    /// `Status.reason` (`NotFound`, `Conflict`, …).
    pub reason: &'static str,
    pub message: String,
    /// `Status.details`: the object's name and its resource (singular, as KubeVirt's
    /// `v1.Resource(…)` gives it).
    pub details: Option<(String, &'static str)>,
}

/// The group KubeVirt qualifies resource names with in messages.
const GROUP: &str = "kubevirt.io";

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    fn about(mut self, resource: &'static str, name: &str) -> Self {
        self.details = Some((name.to_owned(), resource));
        self
    }

    /// 400.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// 401: no (acceptable) front-proxy client certificate or user headers.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(401, "Unauthorized", message)
    }

    /// 403 for `user` doing `target`, worded as the apiserver words RBAC denials.
    pub fn forbidden(user: &str, target: &super::routes::Target, why: &str) -> Self {
        let action = target.action;
        let (resource, group) = (action.resource(), super::routes::GROUP);
        let mut message = format!(
            "{resource}.{group} {:?} is forbidden: User {user:?} cannot {} resource \
             \"{resource}/{}\" in API group {group:?} in the namespace {:?}",
            target.name,
            action.verb(),
            action.subresource(),
            target.namespace,
        );
        if !why.is_empty() {
            message.push_str(": ");
            message.push_str(why);
        }
        Self::new(403, "Forbidden", message)
    }

    /// 404 for `resource` (`virtualmachine`, `virtualmachineinstance`).
    pub fn not_found(resource: &'static str, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{resource}.{GROUP} {name:?} not found"),
        )
        .about(resource, name)
    }

    /// 404 for a path we do not serve.
    pub fn no_route(message: impl Into<String>) -> Self {
        Self::new(404, "NotFound", message)
    }

    /// 405.
    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(405, "MethodNotAllowed", message)
    }

    /// 409 about `resource`.
    pub fn conflict(resource: &'static str, name: &str, why: impl std::fmt::Display) -> Self {
        Self::new(
            409,
            "Conflict",
            format!("Operation cannot be fulfilled on {resource}.{GROUP} {name:?}: {why}"),
        )
        .about(resource, name)
    }

    /// 413.
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            413,
            "RequestEntityTooLarge",
            format!("the request body is larger than the {limit} bytes accepted"),
        )
    }

    /// 500.
    pub fn internal(why: impl std::fmt::Display) -> Self {
        Self::new(
            500,
            "InternalError",
            format!("Internal error occurred: {why}"),
        )
    }

    /// 503: a part we depend on (the handler, the apiserver) cannot be reached.
    pub fn unavailable(why: impl Into<String>) -> Self {
        Self::new(503, "ServiceUnavailable", why)
    }

    /// The `Status` object.
    pub fn status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some((name, kind)) = &self.details {
            status["details"] = json!({"name": name, "group": GROUP, "kind": kind});
        }
        status
    }

    /// The body to send.
    pub fn body(&self) -> Vec<u8> {
        self.status().to_string().into_bytes()
    }
}

impl From<SubresourceError> for ApiError {
    fn from(e: SubresourceError) -> Self {
        let mut error = Self::new(e.status_code(), e.status_reason(), e.to_string());
        if let SubresourceError::Conflict { name, .. } = &e {
            error = error.about("virtualmachine", name);
        }
        error
    }
}

impl From<super::handler::HandlerError> for ApiError {
    fn from(e: super::handler::HandlerError) -> Self {
        use super::handler::HandlerError as H;
        match e {
            H::NoClientCertificate | H::Connect { .. } | H::Timeout { .. } => {
                Self::unavailable(e.to_string())
            }
            H::Tls(_) | H::Refused { .. } => Self::internal(e),
        }
    }
}

/// A kube client error on `resource` `name` as the API answers it: the apiserver's 404 as ours,
/// a failed JSON patch `test` (someone changed the object meanwhile) as a 409, the rest 500.
pub fn from_kube(e: &kube::Error, resource: &'static str, name: &str) -> ApiError {
    match e {
        kube::Error::Api(status) if status.code == 404 => ApiError::not_found(resource, name),
        kube::Error::Api(status)
            if status.code == 409
                || status.message.contains("test operation does not apply")
                || status.message.contains("testing value") =>
        {
            ApiError::conflict(resource, name, &status.message)
        }
        other => ApiError::internal(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::subresource::ConflictReason;

    #[test]
    fn status_bodies() {
        let cases = [
            (
                ApiError::not_found("virtualmachine", "vm1"),
                json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                       "message": "virtualmachine.kubevirt.io \"vm1\" not found",
                       "reason": "NotFound", "code": 404,
                       "details": {"name": "vm1", "group": "kubevirt.io", "kind": "virtualmachine"}}),
            ),
            (
                ApiError::conflict("virtualmachineinstance", "v", "VMI is not running"),
                json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                       "message": "Operation cannot be fulfilled on virtualmachineinstance.kubevirt.io \"v\": VMI is not running",
                       "reason": "Conflict", "code": 409,
                       "details": {"name": "v", "group": "kubevirt.io", "kind": "virtualmachineinstance"}}),
            ),
            (
                ApiError::bad_request("VMI is not running"),
                json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                       "message": "VMI is not running", "reason": "BadRequest", "code": 400}),
            ),
            (
                ApiError::internal("boom"),
                json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                       "message": "Internal error occurred: boom", "reason": "InternalError", "code": 500}),
            ),
        ];
        for (error, expected) in cases {
            assert_eq!(error.status(), expected, "{error}");
            let parsed: Value = serde_json::from_slice(&error.body()).expect("json");
            assert_eq!(parsed, expected);
        }
    }

    #[test]
    fn forbidden_reads_like_rbac() {
        let target = super::super::routes::Target {
            version: super::super::routes::Version::V1,
            namespace: "default".into(),
            name: "v".into(),
            action: super::super::routes::Action::Console,
            forward: None,
        };
        let e = ApiError::forbidden("alice", &target, "");
        assert_eq!(e.code, 403);
        assert_eq!(
            e.message,
            "virtualmachineinstances.subresources.kubevirt.io \"v\" is forbidden: User \"alice\" \
             cannot get resource \"virtualmachineinstances/console\" in API group \
             \"subresources.kubevirt.io\" in the namespace \"default\""
        );
    }

    #[test]
    fn decisions_map_to_codes() {
        let cases = [
            (
                SubresourceError::Conflict {
                    name: "vm1".into(),
                    reason: ConflictReason::AlreadyRunning,
                },
                409,
                "Conflict",
                "Operation cannot be fulfilled on virtualmachine.kubevirt.io \"vm1\": VM is already running",
            ),
            (
                SubresourceError::BadRequest("gracePeriod has to be greater or equal to 0"),
                400,
                "BadRequest",
                "gracePeriod has to be greater or equal to 0",
            ),
            (
                SubresourceError::AlreadyUnderway,
                500,
                "InternalError",
                "Internal error occurred: unable to complete request: stop/start already underway",
            ),
        ];
        for (decision, code, reason, message) in cases {
            let e = ApiError::from(decision);
            assert_eq!(
                (e.code, e.reason, e.message.as_str()),
                (code, reason, message)
            );
        }
    }

    #[test]
    fn kube_errors() {
        let api = |code: u16, message: &str| {
            kube::Error::Api(Box::new(kube::core::Status {
                code,
                message: message.into(),
                ..kube::core::Status::default()
            }))
        };
        let cases = [
            (api(404, "x"), 404),
            (api(409, "x"), 409),
            (
                api(
                    422,
                    "the server rejected our request: test operation does not apply",
                ),
                409,
            ),
            (api(500, "x"), 500),
            (api(403, "x"), 500),
        ];
        for (e, code) in cases {
            assert_eq!(from_kube(&e, "virtualmachine", "vm").code, code, "{e}");
        }
    }
}
