//! The HTTPS server the aggregator proxies to: TLS with the controller's serving certificate
//! (swapped on renewal by [`CertResolver`]) and an optional client certificate checked against
//! the request-header CA (swapped when the ConfigMap changes); then route, authenticate,
//! authorize, act.
//!
//! Served by the project's one HTTP stack ([`virtshim_http`]: HTTP/1.1, over which the
//! aggregator proxies WebSocket upgrades; deadlines, logging, graceful shutdown). The route
//! table is KubeVirt's and lives in [`routes`], a pure parse of method and path into a
//! validated [`Route`] (names checked before they reach a handler URL or a log line), so the
//! axum router hands every request to it. Bodies are capped at [`options::MAX_BODY_BYTES`].

use super::actions;
use super::authn::{self, RequestHeaderConfig};
use super::authz;
use super::backend::Backend;
use super::discovery;
use super::handler::{handler_path, Dialer, Endpoint};
use super::options;
use super::routes::{self, Action, Route, RouteError, Target};
use super::status::ApiError;
use super::vmi_checks;
use super::websocket;
use crate::admission::certs::CertResolver;
use axum::body::Bytes;
use axum::extract::{Extension, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Router;
use rustls::pki_types::CertificateDer;
use rustls::ServerConfig;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use virtshim_http::body::{read_limited, BodyError};
use virtshim_http::websocket::PlainUpgrade;
use virtshim_http::{Peer, Sessions, Tls, TlsConfigSource};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Serve(#[from] virtshim_http::ServeError),
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("request-header configuration: {0}")]
    RequestHeader(#[from] authn::ConfigError),
}

/// What every request reads: the backend, the handler dialer, the request-header settings and
/// the TLS configuration built from them.
#[derive(Debug)]
pub struct Shared {
    backend: Arc<dyn Backend>,
    dialer: Option<Dialer>,
    certs: Arc<CertResolver>,
    auth: RwLock<Arc<RequestHeaderConfig>>,
    tls: RwLock<Arc<ServerConfig>>,
}

fn tls_config(
    certs: Arc<CertResolver>,
    auth: &RequestHeaderConfig,
) -> Result<ServerConfig, ServerError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder =
        ServerConfig::builder_with_provider(provider).with_safe_default_protocol_versions()?;
    let mut config = match authn::client_verifier(auth)? {
        Some(verifier) => builder
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(certs),
        None => builder.with_no_client_auth().with_cert_resolver(certs),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

impl Shared {
    /// `dialer` is `None` where no handler can be reached (tests): console, VNC, pause and
    /// unpause then answer 503.
    pub fn new(
        backend: Arc<dyn Backend>,
        dialer: Option<Dialer>,
        certs: Arc<CertResolver>,
        auth: RequestHeaderConfig,
    ) -> Result<Arc<Self>, ServerError> {
        let tls = tls_config(certs.clone(), &auth)?;
        Ok(Arc::new(Self {
            backend,
            dialer,
            certs,
            auth: RwLock::new(Arc::new(auth)),
            tls: RwLock::new(Arc::new(tls)),
        }))
    }

    /// The request-header settings in force.
    pub fn request_header(&self) -> Arc<RequestHeaderConfig> {
        self.auth.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Applies new request-header settings from the next connection on.
    pub fn set_request_header(&self, auth: RequestHeaderConfig) -> Result<(), ServerError> {
        let tls = tls_config(self.certs.clone(), &auth)?;
        *self.tls.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(tls);
        *self.auth.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(auth);
        Ok(())
    }
}

impl TlsConfigSource for Shared {
    fn server_config(&self) -> Arc<ServerConfig> {
        self.tls.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// A bound, not yet serving, server (bind first to learn an ephemeral port).
#[derive(Debug)]
pub struct Server {
    inner: virtshim_http::Server,
}

impl Server {
    pub async fn bind(addr: SocketAddr) -> Result<Self, ServerError> {
        Ok(Self {
            inner: virtshim_http::Server::bind(addr, "subresource API").await?,
        })
    }

    pub fn local_addr(&self) -> Result<SocketAddr, ServerError> {
        Ok(self.inner.local_addr()?)
    }

    /// Serves until `shutdown` completes; requests in flight then get the stack's grace
    /// period, and open consoles end.
    pub async fn run(self, shared: Arc<Shared>, shutdown: impl Future<Output = ()>) {
        let tls = Tls::Reloading(shared.clone());
        let router = Router::new().fallback(handle).with_state(shared);
        self.inner.serve(router, tls, shutdown).await;
    }
}

fn reply(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> Response {
    (status, [(CONTENT_TYPE, content_type)], body).into_response()
}

fn json(value: &serde_json::Value) -> Response {
    reply(
        StatusCode::OK,
        "application/json",
        value.to_string().into_bytes(),
    )
}

/// The one place an [`ApiError`] becomes an answer: a Kubernetes `Status`, as `virtctl` and
/// kubectl read it.
impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        reply(
            StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            "application/json",
            self.body(),
        )
    }
}

/// Answers one request.
pub async fn handle(
    State(shared): State<Arc<Shared>>,
    Extension(peer): Extension<Peer>,
    Extension(sessions): Extension<Sessions>,
    request: Request,
) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    match answer(&shared, peer.certificates.as_deref(), &sessions, request).await {
        Ok(response) => response,
        Err(error) => {
            tracing::debug!(%method, %path, code = error.code, message = %error.message, "subresource request refused");
            error.into_response()
        }
    }
}

async fn answer(
    shared: &Arc<Shared>,
    client_chain: Option<&[CertificateDer<'static>]>,
    sessions: &Sessions,
    request: Request,
) -> Result<Response, ApiError> {
    let route = routes::route(request.method(), request.uri().path()).map_err(|e| match e {
        RouteError::NotFound => ApiError::no_route(e.to_string()),
        RouteError::MethodNotAllowed { .. } => ApiError::method_not_allowed(e.to_string()),
        RouteError::InvalidName { .. } | RouteError::InvalidPort(_) => {
            ApiError::bad_request(e.to_string())
        }
    })?;
    let target = match route {
        Route::Root => return Ok(json(&discovery::root_paths())),
        Route::Groups => return Ok(json(&discovery::api_group_list())),
        Route::Group => return Ok(json(&discovery::api_group())),
        Route::Resources(v) => return Ok(json(&discovery::api_resource_list(v))),
        Route::ServerVersion => return Ok(json(&discovery::server_version())),
        Route::Healthz => return Ok(reply(StatusCode::OK, "text/plain", b"ok".to_vec())),
        Route::OpenApiV2 => return Ok(json(&discovery::openapi_v2())),
        Route::OpenApiV3 => return Ok(json(&discovery::openapi_v3_discovery())),
        Route::OpenApiV3Group(v) => return Ok(json(&discovery::openapi_v3_group(v))),
        Route::Action(target) => target,
    };
    let auth = shared.request_header();
    let user = authn::authenticate(&auth, client_chain, request.headers())
        .map_err(|e| ApiError::unauthorized(e.to_string()))?;
    let status = shared
        .backend
        .review(authz::access_review(&user, &target))
        .await
        .map_err(|e| ApiError::internal(format!("authorizing the request: {e}")))?;
    authz::verdict(&user, &target, &status)?;
    tracing::debug!(user = %user.user, namespace = %target.namespace, name = %target.name, action = ?target.action, "authorized");
    match target.action {
        Action::Start | Action::Stop | Action::Restart => {
            let body = read_body(request).await?;
            actions::vm_action(shared.backend.as_ref(), &target, &body).await?;
            Ok(reply(StatusCode::ACCEPTED, "application/json", Vec::new()))
        }
        Action::Pause | Action::Unpause => {
            let body = read_body(request).await?;
            let dialer = shared.dialer.as_ref().ok_or_else(no_handlers)?;
            actions::pause(shared.backend.as_ref(), dialer, &target, &body).await?;
            Ok(reply(StatusCode::OK, "application/json", Vec::new()))
        }
        Action::Console | Action::Vnc | Action::PortForward | Action::VmPortForward => {
            stream(shared, sessions, target, request).await
        }
    }
}

fn no_handlers() -> ApiError {
    ApiError::unavailable("this server reaches no virtshim-handler")
}

async fn read_body(request: Request) -> Result<Bytes, ApiError> {
    let (parts, body) = request.into_parts();
    read_limited(&parts.headers, body, options::MAX_BODY_BYTES)
        .await
        .map_err(|e| match e {
            BodyError::TooLarge { limit } => ApiError::too_large(limit),
            BodyError::Read(_) => ApiError::bad_request(e.to_string()),
        })
}

/// Console, VNC or a forwarded port (of a VMI, or of a VM's VMI, which has the VM's name): the
/// VMI must run; the handler's WebSocket is opened first (so a failure is
/// an HTTP answer, not a WebSocket that closes at once), then the client's is accepted and the
/// two are relayed.
async fn stream(
    shared: &Arc<Shared>,
    sessions: &Sessions,
    target: Target,
    mut request: Request,
) -> Result<Response, ApiError> {
    let upgrade = PlainUpgrade::check(&mut request).map_err(websocket::refused_upgrade)?;
    let vmi = if target.action == Action::VmPortForward {
        actions::vm_vmi(shared.backend.as_ref(), &target).await?
    } else {
        actions::vmi(shared.backend.as_ref(), &target).await?
    };
    let endpoint = match (target.action, target.forward) {
        (Action::Console, _) => {
            vmi_checks::console(&vmi)?;
            Endpoint::Console
        }
        (Action::PortForward | Action::VmPortForward, Some(forward)) => {
            vmi_checks::port_forward(&vmi)?;
            Endpoint::PortForward(forward)
        }
        _ => {
            vmi_checks::vnc(&vmi)?;
            Endpoint::Vnc
        }
    };
    let dialer = shared.dialer.as_ref().ok_or_else(no_handlers)?;
    let ip = actions::handler_of(shared.backend.as_ref(), &vmi).await?;
    let uid = vmi.metadata.uid.clone().unwrap_or_default();
    let handler = dialer
        .websocket(
            ip,
            &handler_path(endpoint, &target.namespace, &target.name, &uid),
        )
        .await?;
    let (namespace, name, action) = (target.namespace, target.name, target.action);
    Ok(upgrade.accept(sessions, move |client| async move {
        tracing::info!(%namespace, vmi = %name, ?action, "stream opened");
        let ended = websocket::relay(client, handler).await;
        tracing::info!(%namespace, vmi = %name, ?action, ?ended, "stream closed");
    }))
}
