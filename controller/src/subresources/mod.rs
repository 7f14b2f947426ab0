//! The aggregated API `subresources.kubevirt.io` (v1 and v1alpha3) that the upstream `virtctl`
//! and ours call through the kube-apiserver: discovery, version, health and OpenAPI; start, stop
//! and restart of VMs; pause, unpause, console and VNC of VMIs, and port forwarding to a VMI (or
//! a VM's VMI: `virtctl port-forward`, `virtctl ssh`), these through the `virtshim-handler` on
//! the VMI's node (see `kubevirt-compat.md`, "Subresource API").
//!
//! Pure parts, each table-tested:
//! - [`routes`]: method and path → what is asked.
//! - [`options`]: request bodies (`StartOptions`, …, `dryRun`).
//! - [`authn`]: request-header settings, the allowed-names check, user info from headers.
//! - [`authz`]: the SubjectAccessReview and its verdict.
//! - [`discovery`]: APIResourceList, APIGroup, version, OpenAPI.
//! - [`vmi_checks`]: KubeVirt's 400 / 409 answers for console, VNC, pause, unpause.
//! - [`status`]: every refusal as a Kubernetes `Status`, in one place.
//!
//! At the edges: [`backend`] (the apiserver behind a trait), [`handler`] (mutual TLS to the
//! handlers), [`websocket`] (relaying), [`actions`] and [`server`].

pub mod actions;
pub mod authn;
pub mod authz;
pub mod backend;
pub mod discovery;
pub mod handler;
pub mod options;
pub mod routes;
pub mod server;
pub mod status;
pub mod vmi_checks;
pub mod websocket;

#[cfg(test)]
mod tls_tests;

use crate::admission::certs::{CertResolver, CertSet, LeafNames, ServiceIdentity};
use k8s_openapi::api::core::v1::ConfigMap;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Default port of the subresource API (the Service `virtshim-api` maps 443 to it).
pub const DEFAULT_PORT: u16 = 8444;
/// Default Service the APIServices point at.
pub const DEFAULT_SERVICE: &str = "virtshim-api";
/// The APIService objects whose CA bundle the controller keeps current.
pub const API_SERVICES: [&str; 2] = [
    "v1.subresources.kubevirt.io",
    "v1alpha3.subresources.kubevirt.io",
];
/// Default Secret the handler DaemonSet mounts.
pub const DEFAULT_HANDLER_SECRET: &str = "virtshim-handler-certs";
/// How often the request-header ConfigMap is re-read.
pub const REQUEST_HEADER_INTERVAL: Duration = Duration::from_secs(60);

/// Where the API listens and how it reaches the handlers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub addr: SocketAddr,
    /// The controller's namespace: the Service, the handlers and their Secret live there.
    pub namespace: String,
    pub service: String,
    pub handler_port: u16,
    pub handler_selector: String,
    pub handler_secret: String,
}

impl Settings {
    pub fn new(namespace: &str) -> Self {
        Self {
            addr: SocketAddr::from((Ipv4Addr::UNSPECIFIED, DEFAULT_PORT)),
            namespace: namespace.to_owned(),
            service: DEFAULT_SERVICE.to_owned(),
            handler_port: handler::DEFAULT_PORT,
            handler_selector: handler::DEFAULT_SELECTOR.to_owned(),
            handler_secret: DEFAULT_HANDLER_SECRET.to_owned(),
        }
    }

    /// The Service whose names the serving certificate must also carry.
    pub fn service_identity(&self) -> ServiceIdentity {
        ServiceIdentity {
            service: self.service.clone(),
            namespace: self.namespace.clone(),
        }
    }

    /// The names of the controller's client certificate and the handlers' certificate.
    pub fn leaf_names(&self) -> LeafNames {
        LeafNames::for_namespace(&self.namespace)
    }

    /// The cert manager's part for this API: its Service's names, the APIServices' bundle, the
    /// handler certificates and their Secret.
    pub fn extend_cert_settings(&self, certs: &mut crate::admission::certs::CertSettings) {
        certs.also_serves.push(self.service_identity());
        certs.api_services = API_SERVICES.iter().map(|s| (*s).to_owned()).collect();
        certs.handler = Some(crate::admission::certs::HandlerCertSettings {
            names: self.leaf_names(),
            secret: self.handler_secret.clone(),
        });
    }
}

/// Why the API stopped or could not start.
#[derive(Debug, thiserror::Error)]
pub enum SubresourceError {
    #[error("subresource API server: {0}")]
    Server(#[from] server::ServerError),
}

async fn read_request_header(client: &kube::Client) -> Option<authn::RequestHeaderConfig> {
    let api: kube::Api<ConfigMap> =
        kube::Api::namespaced(client.clone(), authn::CONFIGMAP_NAMESPACE);
    match api.get_opt(authn::CONFIGMAP_NAME).await {
        Ok(Some(cm)) => {
            match authn::RequestHeaderConfig::from_configmap(&cm.data.unwrap_or_default()) {
                Ok(config) => {
                    if config.client_cas.is_empty() {
                        tracing::warn!("requestheader-client-ca-file not found in {}/{}: every request needing a user is refused", authn::CONFIGMAP_NAMESPACE, authn::CONFIGMAP_NAME);
                    }
                    Some(config)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "unreadable request-header settings");
                    None
                }
            }
        }
        Ok(None) => {
            tracing::warn!(
                "ConfigMap {}/{} not found: every request needing a user is refused",
                authn::CONFIGMAP_NAMESPACE,
                authn::CONFIGMAP_NAME
            );
            Some(authn::RequestHeaderConfig::none())
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the request-header settings");
            None
        }
    }
}

/// Serves the API until `shutdown` completes: the serving certificate from `resolver` (the
/// controller's cert manager keeps it fresh), the handler client certificate from `certs`, the
/// request-header settings re-read every [`REQUEST_HEADER_INTERVAL`].
///
/// Needs RBAC: `get` on ConfigMap `kube-system/extension-apiserver-authentication`, `create`
/// on `subjectaccessreviews`, `get` on VMs and VMIs, `patch` on VMs, VMIs and their status,
/// `list` on pods in the controller's namespace.
pub async fn run(
    client: kube::Client,
    settings: Settings,
    resolver: Arc<CertResolver>,
    certs: watch::Receiver<CertSet>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), SubresourceError> {
    let backend = Arc::new(backend::KubeBackend::new(
        client.clone(),
        &settings.namespace,
        &settings.handler_selector,
    ));
    let dialer = handler::Dialer::new(certs, settings.leaf_names(), settings.handler_port);
    let initial = read_request_header(&client)
        .await
        .unwrap_or_else(authn::RequestHeaderConfig::none);
    let shared = server::Shared::new(backend, Some(dialer), resolver, initial)?;
    let server = server::Server::bind(settings.addr).await?;
    tracing::info!(addr = %settings.addr, "subresources.kubevirt.io serving");
    let refresh = {
        let shared = shared.clone();
        async move {
            loop {
                tokio::time::sleep(REQUEST_HEADER_INTERVAL).await;
                if let Some(config) = read_request_header(&client).await {
                    if *shared.request_header() != config {
                        match shared.set_request_header(config) {
                            Ok(()) => tracing::info!("request-header settings updated"),
                            Err(e) => {
                                tracing::warn!(error = %e, "cannot apply request-header settings")
                            }
                        }
                    }
                }
            }
        }
    };
    tokio::select! {
        () = server.run(shared, shutdown) => Ok(()),
        () = refresh => Ok(()),
    }
}
