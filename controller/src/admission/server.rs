//! The HTTPS server the apiserver calls: one POST route per webhook (see [`super::webhooks`]),
//! TLS from a [`CertResolver`] so a renewed certificate is served without a restart.
//!
//! Served by the project's one HTTP stack ([`virtshim_http`]: deadlines, logging, graceful
//! shutdown). Bodies are capped at [`MAX_REVIEW_BYTES`]; reviews run on the blocking pool, so a
//! large object does not stall other connections and a panic in one answers 500 instead of
//! taking the server down. Every answer the apiserver can read is an AdmissionReview.

use super::certs::CertResolver;
use super::review::{self, Action, AdmissionResponse, MAX_REVIEW_BYTES};
use super::webhooks::HOOKS;
use axum::body::{Body, Bytes};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use virtshim_http::body::{read_limited, BodyError};
use virtshim_http::Tls;

pub use virtshim_http::serve::SHUTDOWN_GRACE;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Serve(#[from] virtshim_http::ServeError),
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
}

/// A bound, not yet serving, webhook server (bind first to learn an ephemeral port).
#[derive(Debug)]
pub struct Server {
    inner: virtshim_http::Server,
}

impl Server {
    pub async fn bind(addr: SocketAddr) -> Result<Self, ServerError> {
        Ok(Self {
            inner: virtshim_http::Server::bind(addr, "webhook").await?,
        })
    }

    pub fn local_addr(&self) -> Result<SocketAddr, ServerError> {
        Ok(self.inner.local_addr()?)
    }

    /// Serves until `shutdown` completes, then lets requests in flight finish (up to
    /// [`SHUTDOWN_GRACE`]).
    pub async fn run(
        self,
        certs: Arc<CertResolver>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), ServerError> {
        let tls = Tls::Fixed(Arc::new(tls_config(certs)?));
        self.inner.serve(router(), tls, shutdown).await;
        Ok(())
    }
}

/// Binds `addr` and serves the webhooks on it until `shutdown` completes.
pub async fn serve(
    addr: SocketAddr,
    certs: Arc<CertResolver>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    Server::bind(addr).await?.run(certs, shutdown).await
}

/// rustls with ring, TLS 1.2 and 1.3, HTTP/1.1 by ALPN, the certificate from `certs`.
pub fn tls_config(certs: Arc<CertResolver>) -> Result<rustls::ServerConfig, ServerError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(certs);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// One POST route per webhook; anything else is answered in plain text.
fn router() -> Router {
    let mut router = Router::new();
    for hook in HOOKS {
        let action = hook.action;
        router = router.route(
            hook.path,
            post(move |headers: HeaderMap, body: Body| review_request(action, headers, body))
                .fallback(|| async {
                    text(
                        StatusCode::METHOD_NOT_ALLOWED,
                        "webhooks accept POST only\n".to_owned(),
                    )
                }),
        );
    }
    router.fallback(|uri: axum::http::Uri| async move {
        text(
            StatusCode::NOT_FOUND,
            format!("no webhook at {}\n", uri.path()),
        )
    })
}

fn text(status: StatusCode, body: String) -> Response {
    (status, [(CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

fn review_reply(status: StatusCode, response: &AdmissionResponse) -> Response {
    (
        status,
        [(CONTENT_TYPE, "application/json")],
        response.to_review_bytes(),
    )
        .into_response()
}

/// A denial with no uid, for requests that never became a review.
fn refusal(status: StatusCode, message: String) -> Response {
    let response = AdmissionResponse {
        uid: String::new(),
        decision: review::Decision::Deny(Box::new(Status {
            code: Some(i32::from(status.as_u16())),
            message: Some(message),
            reason: status.canonical_reason().map(|r| r.replace(' ', "")),
            status: Some("Failure".to_owned()),
            ..Status::default()
        })),
    };
    review_reply(status, &response)
}

async fn review_request(action: Action, headers: HeaderMap, body: Body) -> Response {
    match read_limited(&headers, body, MAX_REVIEW_BYTES).await {
        Ok(body) => answer(action, body).await,
        Err(BodyError::TooLarge { .. }) => refusal(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the admission review is larger than the {MAX_REVIEW_BYTES} bytes accepted"),
        ),
        Err(e) => refusal(StatusCode::BAD_REQUEST, e.to_string()),
    }
}

async fn answer(action: Action, body: Bytes) -> Response {
    match tokio::task::spawn_blocking(move || review::review(action, &body)).await {
        Ok(Ok(response)) => {
            tracing::debug!(uid = %response.uid, allowed = response.allowed(), ?action, "admission review");
            review_reply(StatusCode::OK, &response)
        }
        Ok(Err(e)) => review_reply(StatusCode::BAD_REQUEST, &e.to_response()),
        Err(e) => {
            tracing::error!(error = %e, ?action, "admission review failed");
            refusal(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the admission webhook failed on this object".to_owned(),
            )
        }
    }
}
