//! The webhooks virtshim registers: one table that both the HTTPS server's routes and the
//! `MutatingWebhookConfiguration` / `ValidatingWebhookConfiguration` objects are built from.
//!
//! Webhook names and paths are KubeVirt's (`virtualmachine-validator.kubevirt.io` on
//! `/virtualmachines-validate`, …), so `kubectl` names the same webhook in a denial as it would
//! under KubeVirt. Every hook: failurePolicy Fail, sideEffects None, admissionReviewVersions
//! [v1], timeout 10 s, rules for `kubevirt.io` v1 and v1alpha3. The replica-set mutator is
//! virtshim's own (KubeVirt has none); it exists so replica sets get whatever defaults the api
//! crate gives them, today none.

use super::review::Action;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhook, MutatingWebhookConfiguration, RuleWithOperations, ServiceReference,
    ValidatingWebhook, ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use std::collections::BTreeMap;

/// Default name of the `MutatingWebhookConfiguration` (KubeVirt's is `virt-api-mutator`).
pub const MUTATING_CONFIGURATION: &str = "virtshim-mutator";
/// Default name of the `ValidatingWebhookConfiguration` (KubeVirt's is `virt-api-validator`).
pub const VALIDATING_CONFIGURATION: &str = "virtshim-validator";
/// The API versions the rules match (KubeVirt's `ApiSupportedWebhookVersions`).
pub const API_VERSIONS: &[&str] = &["v1alpha3", "v1"];
/// How long the apiserver waits for an answer (KubeVirt's value).
pub const TIMEOUT_SECONDS: i32 = 10;

/// One webhook: its name, the path it is served on, what it does, and what it matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hook {
    pub name: &'static str,
    pub path: &'static str,
    pub action: Action,
    pub resource: &'static str,
    pub operations: &'static [&'static str],
}

const CREATE_UPDATE: &[&str] = &["CREATE", "UPDATE"];

/// Every webhook, mutating ones first.
pub const HOOKS: &[Hook] = &[
    Hook {
        name: "virtualmachines-mutator.kubevirt.io",
        path: "/virtualmachines-mutate",
        action: Action::Mutate,
        resource: "virtualmachines",
        operations: CREATE_UPDATE,
    },
    Hook {
        name: "virtualmachineinstances-mutator.kubevirt.io",
        path: "/virtualmachineinstances-mutate",
        action: Action::Mutate,
        resource: "virtualmachineinstances",
        operations: CREATE_UPDATE,
    },
    Hook {
        name: "virtualmachineinstancereplicasets-mutator.kubevirt.io",
        path: "/virtualmachineinstancereplicasets-mutate",
        action: Action::Mutate,
        resource: "virtualmachineinstancereplicasets",
        operations: CREATE_UPDATE,
    },
    Hook {
        name: "virtualmachineinstances-create-validator.kubevirt.io",
        path: "/virtualmachineinstances-validate-create",
        action: Action::Validate,
        resource: "virtualmachineinstances",
        operations: &["CREATE"],
    },
    Hook {
        name: "virtualmachineinstances-update-validator.kubevirt.io",
        path: "/virtualmachineinstances-validate-update",
        action: Action::Validate,
        resource: "virtualmachineinstances",
        operations: &["UPDATE"],
    },
    Hook {
        name: "virtualmachine-validator.kubevirt.io",
        path: "/virtualmachines-validate",
        action: Action::Validate,
        resource: "virtualmachines",
        operations: CREATE_UPDATE,
    },
    Hook {
        name: "virtualmachinereplicaset-validator.kubevirt.io",
        path: "/virtualmachinereplicaset-validate",
        action: Action::Validate,
        resource: "virtualmachineinstancereplicasets",
        operations: CREATE_UPDATE,
    },
];

/// Where the apiserver reaches the webhooks: a Service in front of the controller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookService {
    pub namespace: String,
    pub name: String,
    /// The Service's port; the apiserver's default is 443.
    pub port: Option<i32>,
}

fn metadata(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        labels: Some(BTreeMap::from([(
            "app.kubernetes.io/managed-by".to_owned(),
            "virtshim-controller".to_owned(),
        )])),
        ..ObjectMeta::default()
    }
}

fn client_config(service: &WebhookService, hook: &Hook) -> WebhookClientConfig {
    WebhookClientConfig {
        // Injected at run time by `certs`, from the CA the controller makes.
        ca_bundle: None,
        service: Some(ServiceReference {
            namespace: service.namespace.clone(),
            name: service.name.clone(),
            path: Some(hook.path.to_owned()),
            port: service.port,
        }),
        url: None,
    }
}

fn rules(hook: &Hook) -> Option<Vec<RuleWithOperations>> {
    let owned = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect();
    Some(vec![RuleWithOperations {
        api_groups: Some(vec![virtshim_api::GROUP.to_owned()]),
        api_versions: Some(owned(API_VERSIONS)),
        operations: Some(owned(hook.operations)),
        resources: Some(vec![hook.resource.to_owned()]),
        scope: None,
    }])
}

/// The `MutatingWebhookConfiguration` named `name`, without its CA bundle.
pub fn mutating_configuration(
    name: &str,
    service: &WebhookService,
) -> MutatingWebhookConfiguration {
    let webhooks = HOOKS
        .iter()
        .filter(|h| h.action == Action::Mutate)
        .map(|hook| MutatingWebhook {
            name: hook.name.to_owned(),
            admission_review_versions: vec!["v1".to_owned()],
            client_config: client_config(service, hook),
            failure_policy: Some("Fail".to_owned()),
            side_effects: "None".to_owned(),
            timeout_seconds: Some(TIMEOUT_SECONDS),
            rules: rules(hook),
            ..MutatingWebhook::default()
        })
        .collect();
    MutatingWebhookConfiguration {
        metadata: metadata(name),
        webhooks: Some(webhooks),
    }
}

/// The `ValidatingWebhookConfiguration` named `name`, without its CA bundle.
pub fn validating_configuration(
    name: &str,
    service: &WebhookService,
) -> ValidatingWebhookConfiguration {
    let webhooks = HOOKS
        .iter()
        .filter(|h| h.action == Action::Validate)
        .map(|hook| ValidatingWebhook {
            name: hook.name.to_owned(),
            admission_review_versions: vec!["v1".to_owned()],
            client_config: client_config(service, hook),
            failure_policy: Some("Fail".to_owned()),
            side_effects: "None".to_owned(),
            timeout_seconds: Some(TIMEOUT_SECONDS),
            rules: rules(hook),
            ..ValidatingWebhook::default()
        })
        .collect();
    ValidatingWebhookConfiguration {
        metadata: metadata(name),
        webhooks: Some(webhooks),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// What the server routes a path to (the server builds one route per hook).
    fn action_for_path(path: &str) -> Option<Action> {
        HOOKS.iter().find(|h| h.path == path).map(|h| h.action)
    }

    fn service() -> WebhookService {
        WebhookService {
            namespace: "virtshim-system".to_owned(),
            name: "virtshim-controller".to_owned(),
            port: None,
        }
    }

    #[test]
    fn admission_configurations_cover_every_hook() {
        let mutating = mutating_configuration(MUTATING_CONFIGURATION, &service());
        let validating = validating_configuration(VALIDATING_CONFIGURATION, &service());
        let mutating_hooks = mutating.webhooks.unwrap_or_default();
        let validating_hooks = validating.webhooks.unwrap_or_default();
        assert_eq!(mutating_hooks.len() + validating_hooks.len(), HOOKS.len());
        let value = serde_json::to_value(&validating_hooks[2]).expect("json");
        assert_eq!(
            value,
            json!({
                "name": "virtualmachine-validator.kubevirt.io",
                "admissionReviewVersions": ["v1"],
                "clientConfig": {"service": {
                    "namespace": "virtshim-system",
                    "name": "virtshim-controller",
                    "path": "/virtualmachines-validate",
                }},
                "failurePolicy": "Fail",
                "sideEffects": "None",
                "timeoutSeconds": 10,
                "rules": [{
                    "apiGroups": ["kubevirt.io"],
                    "apiVersions": ["v1alpha3", "v1"],
                    "operations": ["CREATE", "UPDATE"],
                    "resources": ["virtualmachines"],
                }],
            })
        );
        for hook in &mutating_hooks {
            assert_eq!(hook.failure_policy.as_deref(), Some("Fail"));
            assert_eq!(hook.side_effects, "None");
            let path = hook
                .client_config
                .service
                .as_ref()
                .and_then(|s| s.path.as_deref())
                .unwrap_or("");
            assert_eq!(action_for_path(path), Some(Action::Mutate), "{path}");
        }
        for hook in &validating_hooks {
            let path = hook
                .client_config
                .service
                .as_ref()
                .and_then(|s| s.path.as_deref())
                .unwrap_or("");
            assert_eq!(action_for_path(path), Some(Action::Validate), "{path}");
        }
        assert_eq!(action_for_path("/"), None);
        assert_eq!(action_for_path("/virtualmachines-validate/x"), None);
    }

    #[test]
    fn admission_hook_names_and_paths_are_unique() {
        for (i, a) in HOOKS.iter().enumerate() {
            for b in &HOOKS[i + 1..] {
                assert_ne!(a.name, b.name);
                assert_ne!(a.path, b.path);
            }
        }
    }
}
