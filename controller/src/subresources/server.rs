//! The HTTPS server the aggregator proxies to: TLS with the controller's serving certificate
//! (swapped on renewal by [`CertResolver`]) and an optional client certificate checked against
//! the request-header CA (swapped when the ConfigMap changes); then route, authenticate,
//! authorize, act.
//!
//! HTTP/1.1 only (the aggregator proxies WebSocket upgrades over it). Handshakes and request
//! headers have deadlines; bodies are capped at [`options::MAX_BODY_BYTES`].

use super::actions;
use super::authn::{self, RequestHeaderConfig};
use super::authz;
use super::backend::Backend;
use super::discovery;
use super::handler::{handler_path, Dialer, Endpoint, PLAIN_PROTOCOL};
use super::options;
use super::routes::{self, Action, Route, RouteError, Target};
use super::status::ApiError;
use super::vmi_checks;
use super::websocket;
use crate::admission::certs::CertResolver;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, CONNECTION, CONTENT_TYPE, UPGRADE};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::pki_types::CertificateDer;
use rustls::ServerConfig;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;

use crate::https::HEADER_TIMEOUT;

type Body = Full<Bytes>;

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

    fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.tls.read().unwrap_or_else(|e| e.into_inner()).clone())
    }
}

/// A bound, not yet serving, server (bind first to learn an ephemeral port).
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

    /// Serves until `shutdown` completes; connections still open then (consoles) end with the
    /// process.
    pub async fn run(self, shared: Arc<Shared>, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                (tcp, peer) = crate::https::accept(&self.listener, "subresource API") => {
                    let acceptor = shared.acceptor();
                    let shared = shared.clone();
                    tokio::spawn(async move {
                        let Some(tls) = crate::https::handshake(&acceptor, tcp, peer, "subresource API").await else {
                            return;
                        };
                        let client_chain: Option<Arc<Vec<CertificateDer<'static>>>> = tls
                            .get_ref()
                            .1
                            .peer_certificates()
                            .map(|c| Arc::new(c.to_vec()));
                        let service = service_fn(move |request| {
                            let shared = shared.clone();
                            let chain = client_chain.clone();
                            async move { Ok::<_, Infallible>(handle(shared, chain, request).await) }
                        });
                        let connection = hyper::server::conn::http1::Builder::new()
                            .timer(TokioTimer::new())
                            .header_read_timeout(HEADER_TIMEOUT)
                            .serve_connection(TokioIo::new(tls), service)
                            .with_upgrades();
                        if let Err(e) = connection.await {
                            tracing::debug!(%peer, error = %e, "subresource API connection ended with an error");
                        }
                    });
                }
            }
        }
    }
}

fn reply(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn json(value: &serde_json::Value) -> Response<Body> {
    reply(
        StatusCode::OK,
        "application/json",
        value.to_string().into_bytes(),
    )
}

fn refusal(error: &ApiError) -> Response<Body> {
    reply(
        StatusCode::from_u16(error.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        "application/json",
        error.body(),
    )
}

/// Answers one request.
pub async fn handle(
    shared: Arc<Shared>,
    client_chain: Option<Arc<Vec<CertificateDer<'static>>>>,
    request: Request<Incoming>,
) -> Response<Body> {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    match answer(&shared, client_chain.as_deref().map(Vec::as_slice), request).await {
        Ok(response) => response,
        Err(error) => {
            tracing::debug!(%method, %path, code = error.code, message = %error.message, "subresource request refused");
            refusal(&error)
        }
    }
}

async fn answer(
    shared: &Arc<Shared>,
    client_chain: Option<&[CertificateDer<'static>]>,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
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
            stream(shared, target, request).await
        }
    }
}

fn no_handlers() -> ApiError {
    ApiError::unavailable("this server reaches no virtshim-handler")
}

async fn read_body(request: Request<Incoming>) -> Result<Bytes, ApiError> {
    let limit = options::MAX_BODY_BYTES;
    match Limited::new(request.into_body(), limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(ApiError::too_large(limit)),
        Err(e) => Err(ApiError::bad_request(format!(
            "reading the request body: {e}"
        ))),
    }
}

/// Console, VNC or a forwarded port (of a VMI, or of a VM's VMI, which has the VM's name): the
/// VMI must run; the handler's WebSocket is opened first (so a failure is
/// an HTTP answer, not a WebSocket that closes at once), then the client's is accepted and the
/// two are relayed.
async fn stream(
    shared: &Arc<Shared>,
    target: Target,
    mut request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let accept = websocket::accept_key(request.headers())?;
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
    let on_upgrade = hyper::upgrade::on(&mut request);
    let (namespace, name, action) = (target.namespace, target.name, target.action);
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(e) => {
                tracing::info!(%namespace, vmi = %name, error = %e, "WebSocket upgrade failed");
                return;
            }
        };
        let client =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        tracing::info!(%namespace, vmi = %name, ?action, "stream opened");
        let ended = websocket::relay(client, handler).await;
        tracing::info!(%namespace, vmi = %name, ?action, ?ended, "stream closed");
    });
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(
        "Sec-WebSocket-Accept",
        HeaderValue::from_str(&accept).map_err(ApiError::internal)?,
    );
    headers.insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static(PLAIN_PROTOCOL),
    );
    Ok(response)
}
