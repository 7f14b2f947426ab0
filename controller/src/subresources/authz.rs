//! May this user do this: the SubjectAccessReview KubeVirt's API sends (pure; the apiserver
//! call is [`super::backend::Backend::review`]).
//!
//! The attributes are the request's own: group `subresources.kubevirt.io`, its version, the
//! namespace, `virtualmachines` or `virtualmachineinstances`, the object's name, the
//! subresource, and the verb of the HTTP method (`get` for the WebSockets, `update` for PUT).

use super::authn::UserInfo;
use super::routes::{Target, GROUP};
use super::status::ApiError;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec, SubjectAccessReviewStatus,
};
use std::collections::BTreeMap;

/// The review to send for `user` doing `target`.
pub fn access_review(user: &UserInfo, target: &Target) -> SubjectAccessReview {
    SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(user.user.clone()),
            groups: Some(user.groups.clone()),
            extra: (!user.extra.is_empty()).then(|| {
                user.extra
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect::<BTreeMap<_, _>>()
            }),
            resource_attributes: Some(ResourceAttributes {
                group: Some(GROUP.to_owned()),
                version: Some(target.version.as_str().to_owned()),
                namespace: Some(target.namespace.clone()),
                resource: Some(target.action.resource().to_owned()),
                subresource: Some(target.action.subresource().to_owned()),
                name: Some(target.name.clone()),
                verb: Some(target.action.verb().to_owned()),
                ..ResourceAttributes::default()
            }),
            ..SubjectAccessReviewSpec::default()
        },
        ..SubjectAccessReview::default()
    }
}

/// The verdict: `Ok` when allowed, else the 403 to answer.
pub fn verdict(
    user: &UserInfo,
    target: &Target,
    status: &SubjectAccessReviewStatus,
) -> Result<(), ApiError> {
    if status.allowed && !status.denied.unwrap_or(false) {
        return Ok(());
    }
    Err(ApiError::forbidden(
        &user.user,
        target,
        status.reason.as_deref().unwrap_or(""),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::subresources::routes::{Action, Version};
    use serde_json::json;

    fn alice() -> UserInfo {
        UserInfo {
            user: "alice".into(),
            groups: vec!["devs".into(), "system:authenticated".into()],
            extra: BTreeMap::from([("scopes".into(), vec!["a".into()])]),
        }
    }

    fn target(action: Action) -> Target {
        Target {
            version: Version::V1,
            namespace: "default".into(),
            name: "vm1".into(),
            action,
            forward: None,
        }
    }

    #[test]
    fn review_table() {
        let cases = [
            (Action::Console, "virtualmachineinstances", "console", "get"),
            (Action::Vnc, "virtualmachineinstances", "vnc", "get"),
            (Action::Pause, "virtualmachineinstances", "pause", "update"),
            (
                Action::Unpause,
                "virtualmachineinstances",
                "unpause",
                "update",
            ),
            (Action::Start, "virtualmachines", "start", "update"),
            (Action::Stop, "virtualmachines", "stop", "update"),
            (Action::Restart, "virtualmachines", "restart", "update"),
            (
                Action::PortForward,
                "virtualmachineinstances",
                "portforward",
                "get",
            ),
            (
                Action::VmPortForward,
                "virtualmachines",
                "portforward",
                "get",
            ),
        ];
        for (action, resource, subresource, verb) in cases {
            let review = access_review(&alice(), &target(action));
            assert_eq!(
                serde_json::to_value(&review.spec).expect("json"),
                json!({
                    "user": "alice",
                    "groups": ["devs", "system:authenticated"],
                    "extra": {"scopes": ["a"]},
                    "resourceAttributes": {
                        "group": "subresources.kubevirt.io",
                        "version": "v1",
                        "namespace": "default",
                        "resource": resource,
                        "subresource": subresource,
                        "name": "vm1",
                        "verb": verb,
                    }
                }),
                "{action:?}"
            );
        }
    }

    #[test]
    fn verdict_table() {
        let status =
            |allowed: bool, denied: Option<bool>, reason: Option<&str>| SubjectAccessReviewStatus {
                allowed,
                denied,
                reason: reason.map(str::to_owned),
                ..SubjectAccessReviewStatus::default()
            };
        let t = target(Action::Start);
        assert_eq!(verdict(&alice(), &t, &status(true, None, None)), Ok(()));
        assert_eq!(
            verdict(&alice(), &t, &status(true, Some(false), None)),
            Ok(())
        );
        let denied = verdict(&alice(), &t, &status(true, Some(true), None)).expect_err("denied");
        assert_eq!(denied.code, 403);
        let no = verdict(
            &alice(),
            &t,
            &status(false, None, Some("no RBAC policy matched")),
        )
        .expect_err("not allowed");
        assert_eq!(no.code, 403);
        assert!(
            no.message.ends_with(
                "User \"alice\" cannot update resource \"virtualmachines/start\" in API group \
                 \"subresources.kubevirt.io\" in the namespace \"default\": no RBAC policy matched"
            ),
            "{}",
            no.message
        );
    }
}
