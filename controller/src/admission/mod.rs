//! Admission webhooks: KubeVirt's defaults (mutating) and validation (validating), with exactly
//! the api crate's code that `virtctl validate` runs, on a certificate the controller makes and
//! rotates itself.
//!
//! - [`review`]: an AdmissionReview in, the verdict out (pure).
//! - [`webhooks`]: the webhook table — names, paths, rules — and the two configuration objects.
//! - [`certs`]: the CA and serving certificate in a Secret, renewal, CA bundle injection, and the
//!   swappable certificate the server presents.
//! - [`server`]: the HTTPS server.
//!
//! [`run`] ties them together for the controller binary.

pub mod certs;
pub mod review;
pub mod server;
pub mod webhooks;

#[cfg(test)]
mod tls_tests;

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};

/// Default Secret holding the webhook CA and serving certificate.
pub const DEFAULT_SECRET: &str = "virtshim-controller-webhook-certs";
/// Default Service in front of the webhook server.
pub const DEFAULT_SERVICE: &str = "virtshim-controller";
/// Default port the webhook server listens on (the Service maps 443 to it).
pub const DEFAULT_PORT: u16 = 8443;

/// Why the admission webhooks stopped or could not start.
#[derive(Debug, thiserror::Error)]
pub enum AdmissionError {
    #[error("webhook certificates: {0}")]
    Certs(#[from] certs::CertError),
    #[error("webhook server: {0}")]
    Server(#[from] server::ServerError),
}

/// Where the webhooks listen, how the apiserver reaches them, and the objects they maintain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// The address the HTTPS server binds.
    pub addr: SocketAddr,
    /// The Service the webhook configurations point at; its DNS names go into the certificate.
    pub service: webhooks::WebhookService,
    /// The Secret (in the Service's namespace) holding the certificates.
    pub secret: String,
    pub mutating_configuration: String,
    pub validating_configuration: String,
}

impl Settings {
    /// The defaults for a controller installed in `namespace`.
    pub fn new(namespace: &str) -> Self {
        Self {
            addr: SocketAddr::from((Ipv4Addr::UNSPECIFIED, DEFAULT_PORT)),
            service: webhooks::WebhookService {
                namespace: namespace.to_owned(),
                name: DEFAULT_SERVICE.to_owned(),
                port: None,
            },
            secret: DEFAULT_SECRET.to_owned(),
            mutating_configuration: webhooks::MUTATING_CONFIGURATION.to_owned(),
            validating_configuration: webhooks::VALIDATING_CONFIGURATION.to_owned(),
        }
    }

    pub fn cert_settings(&self) -> certs::CertSettings {
        certs::CertSettings {
            identity: certs::ServiceIdentity {
                service: self.service.name.clone(),
                namespace: self.service.namespace.clone(),
            },
            secret: self.secret.clone(),
            mutating_configuration: self.mutating_configuration.clone(),
            validating_configuration: self.validating_configuration.clone(),
            also_serves: Vec::new(),
            api_services: Vec::new(),
            handler: None,
        }
    }

    /// The `MutatingWebhookConfiguration` to install (manifests/), without its CA bundle.
    pub fn mutating_webhook_configuration(
        &self,
    ) -> k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration {
        webhooks::mutating_configuration(&self.mutating_configuration, &self.service)
    }

    /// The `ValidatingWebhookConfiguration` to install (manifests/), without its CA bundle.
    pub fn validating_webhook_configuration(
        &self,
    ) -> k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration {
        webhooks::validating_configuration(&self.validating_configuration, &self.service)
    }
}

/// Runs the admission webhooks until `shutdown` completes: makes or renews the certificates in
/// the Secret, injects the CA bundle into both webhook configurations, serves HTTPS on
/// `settings.addr`, and keeps the certificate fresh (re-checked every
/// [`certs::CHECK_INTERVAL`]) without restarting the server.
///
/// Every replica may run this; they share the Secret. Needs RBAC for `secrets` get/create/update
/// in the namespace and `mutatingwebhookconfigurations` / `validatingwebhookconfigurations`
/// get/patch. The controller binary runs one [`certs::CertManager`] for all its servers
/// instead, and calls [`serve`].
pub async fn run(
    client: kube::Client,
    settings: Settings,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AdmissionError> {
    let manager = certs::CertManager::new(client, settings.cert_settings());
    let (resolver, set) = manager.bootstrap().await?;
    let (published, _) = tokio::sync::watch::channel(set);
    tokio::select! {
        result = serve(settings.addr, resolver.clone(), shutdown) => result,
        () = manager.keep_fresh(resolver, published) => Ok(()),
    }
}

/// Serves the webhooks on `addr` with the certificate `resolver` holds until `shutdown`.
pub async fn serve(
    addr: SocketAddr,
    resolver: std::sync::Arc<certs::CertResolver>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AdmissionError> {
    let server = server::Server::bind(addr).await?;
    tracing::info!(%addr, "admission webhooks serving");
    Ok(server.run(resolver, shutdown).await?)
}
