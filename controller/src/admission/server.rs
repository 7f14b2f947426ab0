//! The HTTPS server the apiserver calls: one POST path per webhook (see [`super::webhooks`]),
//! TLS from a [`CertResolver`] so a renewed certificate is served without a restart.
//!
//! HTTP/1.1 over rustls (ring). Bodies are capped at [`MAX_REVIEW_BYTES`]; handshakes and
//! request headers have deadlines; reviews run on the blocking pool, so a large object does not
//! stall other connections and a panic in one answers 500 instead of taking the server down.

use super::certs::CertResolver;
use super::review::{self, Action, AdmissionResponse, MAX_REVIEW_BYTES};
use super::webhooks::action_for_path;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::https::HEADER_TIMEOUT;
/// On shutdown, requests in flight get this long to finish.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("reading the bound address: {0}")]
    LocalAddr(#[source] std::io::Error),
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
}

/// A bound, not yet serving, webhook server (bind first to learn an ephemeral port).
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
}

impl Server {
    pub async fn bind(addr: SocketAddr) -> Result<Self, ServerError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServerError::Bind { addr, source })?;
        Ok(Self { listener })
    }

    pub fn local_addr(&self) -> Result<SocketAddr, ServerError> {
        self.listener.local_addr().map_err(ServerError::LocalAddr)
    }

    /// Serves until `shutdown` completes, then lets requests in flight finish (up to
    /// [`SHUTDOWN_GRACE`]).
    pub async fn run(
        self,
        certs: Arc<CertResolver>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), ServerError> {
        let acceptor = TlsAcceptor::from(Arc::new(tls_config(certs)?));
        let graceful = GracefulShutdown::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                (tcp, peer) = crate::https::accept(&self.listener, "webhook") => {
                    let acceptor = acceptor.clone();
                    let watcher = graceful.watcher();
                    tokio::spawn(async move {
                        let Some(tls) = crate::https::handshake(&acceptor, tcp, peer, "webhook").await else {
                            return;
                        };
                        let connection = hyper::server::conn::http1::Builder::new()
                            .timer(TokioTimer::new())
                            .header_read_timeout(HEADER_TIMEOUT)
                            .serve_connection(TokioIo::new(tls), service_fn(handle));
                        if let Err(e) = watcher.watch(connection).await {
                            tracing::debug!(%peer, error = %e, "webhook connection ended with an error");
                        }
                    });
                }
            }
        }
        if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("webhook connections still open after the shutdown grace period");
        }
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

fn reply(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn review_reply(status: StatusCode, response: &AdmissionResponse) -> Response<Full<Bytes>> {
    reply(status, "application/json", response.to_review_bytes())
}

/// A denial with no uid, for requests that never became a review.
fn refusal(status: StatusCode, message: String) -> Response<Full<Bytes>> {
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

async fn handle(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = request.uri().path().to_owned();
    let Some(action) = action_for_path(&path) else {
        return Ok(reply(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            format!("no webhook at {path}\n").into_bytes(),
        ));
    };
    if request.method() != Method::POST {
        return Ok(reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            b"webhooks accept POST only\n".to_vec(),
        ));
    }
    let declared = request
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_REVIEW_BYTES as u64) {
        return Ok(refusal(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the admission review is larger than the {MAX_REVIEW_BYTES} bytes accepted"),
        ));
    }
    let body = match Limited::new(request.into_body(), MAX_REVIEW_BYTES)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            return Ok(refusal(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the admission review is larger than the {MAX_REVIEW_BYTES} bytes accepted"
                ),
            ));
        }
        Err(e) => {
            return Ok(refusal(
                StatusCode::BAD_REQUEST,
                format!("reading the request body: {e}"),
            ))
        }
    };
    Ok(answer(action, body).await)
}

async fn answer(action: Action, body: Bytes) -> Response<Full<Bytes>> {
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
