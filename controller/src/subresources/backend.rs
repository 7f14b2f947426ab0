//! Everything the subresource API asks the apiserver, behind one narrow trait so the server can
//! be driven without a cluster: read a VM or VMI, patch them, review access, find a node's
//! handler pod.

use futures::future::BoxFuture;
use k8s_openapi::api::authorization::v1::{SubjectAccessReview, SubjectAccessReviewStatus};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use std::net::IpAddr;
use virtshim_api::types::{VirtualMachine, VirtualMachineInstance};

/// Which part of an object a patch goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    Main,
    Status,
}

/// The field manager of every write.
pub const FIELD_MANAGER: &str = "virtshim-controller";

/// The apiserver, as the subresource API uses it.
pub trait Backend: Send + Sync + std::fmt::Debug {
    fn get_vm<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<VirtualMachine>, kube::Error>>;

    fn get_vmi<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<VirtualMachineInstance>, kube::Error>>;

    /// A JSON patch (RFC 6902) to a VM.
    fn patch_vm<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        part: Part,
        patch: json_patch::Patch,
        dry_run: bool,
    ) -> BoxFuture<'a, Result<(), kube::Error>>;

    /// A JSON patch (RFC 6902) to a VMI.
    fn patch_vmi<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        part: Part,
        patch: json_patch::Patch,
        dry_run: bool,
    ) -> BoxFuture<'a, Result<(), kube::Error>>;

    fn review(
        &self,
        review: SubjectAccessReview,
    ) -> BoxFuture<'_, Result<SubjectAccessReviewStatus, kube::Error>>;

    /// The pod IP of a ready handler on `node`, if there is one.
    fn handler_ip<'a>(
        &'a self,
        node: &'a str,
    ) -> BoxFuture<'a, Result<Option<IpAddr>, kube::Error>>;
}

/// The real apiserver.
#[derive(Clone)]
pub struct KubeBackend {
    client: kube::Client,
    /// Where the handler DaemonSet runs, and the label selecting its pods.
    handler_namespace: String,
    handler_selector: String,
}

impl std::fmt::Debug for KubeBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeBackend")
            .field("handler_namespace", &self.handler_namespace)
            .field("handler_selector", &self.handler_selector)
            .finish_non_exhaustive()
    }
}

impl KubeBackend {
    pub fn new(client: kube::Client, handler_namespace: &str, handler_selector: &str) -> Self {
        Self {
            client,
            handler_namespace: handler_namespace.to_owned(),
            handler_selector: handler_selector.to_owned(),
        }
    }
}

fn patch_params(dry_run: bool) -> PatchParams {
    PatchParams {
        dry_run,
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PatchParams::default()
    }
}

/// Whether a pod is a running, ready handler with an IP.
pub fn ready_ip(pod: &Pod) -> Option<IpAddr> {
    let status = pod.status.as_ref()?;
    if pod.metadata.deletion_timestamp.is_some() || status.phase.as_deref() != Some("Running") {
        return None;
    }
    let ready = status
        .conditions
        .as_ref()
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    if !ready {
        return None;
    }
    status.pod_ip.as_deref()?.parse().ok()
}

/// Reads one namespaced object of kind `K`.
async fn get<K>(client: kube::Client, namespace: &str, name: &str) -> Result<Option<K>, kube::Error>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    Api::<K>::namespaced(client, namespace).get_opt(name).await
}

/// A JSON patch (RFC 6902) to one namespaced object of kind `K`, or to its status.
async fn patch<K>(
    client: kube::Client,
    namespace: &str,
    name: &str,
    part: Part,
    patch: json_patch::Patch,
    dry_run: bool,
) -> Result<(), kube::Error>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let api = Api::<K>::namespaced(client, namespace);
    let params = patch_params(dry_run);
    let patch = Patch::<()>::Json(patch);
    match part {
        Part::Main => api.patch(name, &params, &patch).await.map(|_| ()),
        Part::Status => api.patch_status(name, &params, &patch).await.map(|_| ()),
    }
}

impl Backend for KubeBackend {
    fn get_vm<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<VirtualMachine>, kube::Error>> {
        Box::pin(get(self.client.clone(), namespace, name))
    }

    fn get_vmi<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<VirtualMachineInstance>, kube::Error>> {
        Box::pin(get(self.client.clone(), namespace, name))
    }

    fn patch_vm<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        part: Part,
        json: json_patch::Patch,
        dry_run: bool,
    ) -> BoxFuture<'a, Result<(), kube::Error>> {
        Box::pin(patch::<VirtualMachine>(
            self.client.clone(),
            namespace,
            name,
            part,
            json,
            dry_run,
        ))
    }

    fn patch_vmi<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        part: Part,
        json: json_patch::Patch,
        dry_run: bool,
    ) -> BoxFuture<'a, Result<(), kube::Error>> {
        Box::pin(patch::<VirtualMachineInstance>(
            self.client.clone(),
            namespace,
            name,
            part,
            json,
            dry_run,
        ))
    }

    fn review(
        &self,
        review: SubjectAccessReview,
    ) -> BoxFuture<'_, Result<SubjectAccessReviewStatus, kube::Error>> {
        Box::pin(async move {
            let created = Api::<SubjectAccessReview>::all(self.client.clone())
                .create(&PostParams::default(), &review)
                .await?;
            Ok(created.status.unwrap_or_default())
        })
    }

    fn handler_ip<'a>(
        &'a self,
        node: &'a str,
    ) -> BoxFuture<'a, Result<Option<IpAddr>, kube::Error>> {
        Box::pin(async move {
            let params = ListParams::default()
                .labels(&self.handler_selector)
                .fields(&format!("spec.nodeName={node}"));
            let pods = Api::<Pod>::namespaced(self.client.clone(), &self.handler_namespace)
                .list(&params)
                .await?;
            Ok(pods.items.iter().find_map(ready_ip))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};

    #[test]
    fn ready_handler_pods() {
        let pod = |phase: &str, ready: &str, ip: Option<&str>| Pod {
            status: Some(PodStatus {
                phase: Some(phase.into()),
                pod_ip: ip.map(str::to_owned),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: ready.into(),
                    ..PodCondition::default()
                }]),
                ..PodStatus::default()
            }),
            ..Pod::default()
        };
        let cases = [
            (pod("Running", "True", Some("10.88.0.7")), Some("10.88.0.7")),
            (pod("Running", "False", Some("10.88.0.7")), None),
            (pod("Pending", "True", Some("10.88.0.7")), None),
            (pod("Running", "True", None), None),
            (pod("Running", "True", Some("not an ip")), None),
        ];
        for (p, expected) in cases {
            assert_eq!(
                ready_ip(&p),
                expected.map(|ip| ip.parse().expect("ip")),
                "{:?}",
                p.status
            );
        }
    }
}
