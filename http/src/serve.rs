//! Serving a router on a listener: every virtshim server's connections are handled here.
//!
//! HTTP/1.1 only: the apiserver calls webhooks and proxies the aggregated API's WebSocket
//! upgrades over HTTP/1.1, and the handler has one client, the controller.

use crate::websocket::Sessions;
use axum::http::{Request, StatusCode};
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::CertificateDer;
use rustls::ServerConfig;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnFailure, DefaultOnResponse, TraceLayer};
use tracing::Level;

/// A TLS handshake must finish within this: a client that connects and says nothing cannot
/// hold a task forever.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Request headers must arrive within this.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// A request must be answered within this (an upgrade is answered when its session starts;
/// the session itself is not bounded). The slowest answers wait on a peer: the apiserver, the
/// handler on another node, containerd, a guest's port (dialled for at most 10 s).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// On shutdown, requests in flight get this long to finish by default.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("reading the bound address: {0}")]
    LocalAddr(#[source] std::io::Error),
}

/// Something that gives the TLS configuration for the next connection: certificates renewed
/// in a Secret, or a client CA changed in a ConfigMap, take effect without a restart.
pub trait TlsConfigSource: Send + Sync + 'static {
    fn server_config(&self) -> Arc<ServerConfig>;
}

/// How a server speaks on its connections.
#[derive(Clone)]
pub enum Tls {
    /// Plain HTTP: health and metrics, which carry nothing secret.
    Plain,
    /// One configuration for every connection.
    Fixed(Arc<ServerConfig>),
    /// The configuration in force when each connection arrives.
    Reloading(Arc<dyn TlsConfigSource>),
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Plain => "Tls::Plain",
            Self::Fixed(_) => "Tls::Fixed",
            Self::Reloading(_) => "Tls::Reloading",
        })
    }
}

impl From<Arc<ServerConfig>> for Tls {
    fn from(config: Arc<ServerConfig>) -> Self {
        Self::Fixed(config)
    }
}

impl Tls {
    fn acceptor(&self) -> Option<TlsAcceptor> {
        match self {
            Self::Plain => None,
            Self::Fixed(config) => Some(TlsAcceptor::from(config.clone())),
            Self::Reloading(source) => Some(TlsAcceptor::from(source.server_config())),
        }
    }
}

/// Who is on the other end of a request's connection, as a request extension.
#[derive(Clone, Debug)]
pub struct Peer {
    pub addr: SocketAddr,
    /// The certificate chain the client presented in the TLS handshake, leaf first.
    pub certificates: Option<Arc<[CertificateDer<'static>]>>,
}

/// A bound, not yet serving, server (bind first to learn an ephemeral port).
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    name: &'static str,
    grace: Duration,
}

impl Server {
    /// Binds `addr`; `name` names the server in logs.
    pub async fn bind(addr: SocketAddr, name: &'static str) -> Result<Self, ServeError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind { addr, source })?;
        Ok(Self::from_listener(listener, name))
    }

    pub fn from_listener(listener: TcpListener, name: &'static str) -> Self {
        Self {
            listener,
            name,
            grace: SHUTDOWN_GRACE,
        }
    }

    /// How long requests in flight may take to finish once shutdown begins (default
    /// [`SHUTDOWN_GRACE`]).
    pub fn with_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    pub fn local_addr(&self) -> Result<SocketAddr, ServeError> {
        self.listener.local_addr().map_err(ServeError::LocalAddr)
    }

    /// Serves `app` until `shutdown` completes; then stops accepting, lets requests in flight
    /// finish within the grace period, and ends every connection and session still open.
    pub async fn serve(self, app: Router, tls: Tls, shutdown: impl Future<Output = ()>) {
        let name = self.name;
        let app = layered(app, name);
        let stop = CancellationToken::new();
        let sessions = Sessions::default();
        let mut connections = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                // Reap finished connections so that the set does not grow.
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
                (tcp, addr) = accept(&self.listener, name) => {
                    let connection = Connection {
                        app: app.clone(),
                        sessions: sessions.clone(),
                        stop: stop.clone(),
                        name,
                    };
                    connections.spawn(connection.run(tls.acceptor(), tcp, addr));
                }
            }
        }
        drop(self.listener);
        stop.cancel();
        let drained = tokio::time::timeout(self.grace, async {
            while connections.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                server = name,
                open = connections.len(),
                "connections still open after the shutdown grace period: closing them"
            );
        }
        sessions.stop();
        connections.shutdown().await;
    }
}

/// The middleware every server has: a span and a log line per request, and the deadline.
fn layered(app: Router, name: &'static str) -> Router {
    app.layer(TimeoutLayer::with_status_code(
        StatusCode::GATEWAY_TIMEOUT,
        REQUEST_TIMEOUT,
    ))
    .layer(
        TraceLayer::new_for_http()
            .make_span_with(move |request: &Request<_>| {
                // At info, so that what a handler logs at info (a refusal, a session opened or
                // closed, in the session's task too) carries the method and path.
                tracing::info_span!(
                    "request",
                    server = name,
                    method = %request.method(),
                    path = %request.uri().path(),
                )
            })
            .on_response(DefaultOnResponse::new().level(Level::DEBUG))
            // 5xx answers; a refusal (4xx) is logged by the server that knows why.
            .on_failure(DefaultOnFailure::new().level(Level::INFO)),
    )
}

/// The next connection on `listener`, with Nagle's algorithm off. Accept errors (out of file
/// descriptors and the like) are logged and retried after a short pause: the server keeps
/// serving.
///
/// Without TCP_NODELAY a response written in two segments (headers, then body) waits for the
/// client's delayed ACK — about 40 ms per request, which made every admission review of a
/// `kubectl apply` of 500 VMs slow, and every console keystroke.
async fn accept(listener: &TcpListener, name: &str) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok((tcp, peer)) => {
                if let Err(e) = tcp.set_nodelay(true) {
                    tracing::debug!(server = name, %peer, error = %e, "cannot set TCP_NODELAY");
                }
                return (tcp, peer);
            }
            Err(e) => {
                tracing::warn!(server = name, error = %e, "accepting a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// What one connection's task needs.
struct Connection {
    app: Router,
    sessions: Sessions,
    stop: CancellationToken,
    name: &'static str,
}

impl Connection {
    async fn run(self, acceptor: Option<TlsAcceptor>, tcp: TcpStream, addr: SocketAddr) {
        let Some(acceptor) = acceptor else {
            let peer = Peer {
                addr,
                certificates: None,
            };
            return self.http(tcp, peer).await;
        };
        let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                tracing::debug!(server = self.name, peer = %addr, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(server = self.name, peer = %addr, "TLS handshake timed out");
                return;
            }
        };
        let certificates = tls.get_ref().1.peer_certificates().map(Arc::from);
        self.http(tls, Peer { addr, certificates }).await;
    }

    /// HTTP/1.1 on `io` until the client closes, the connection is upgraded, or the server
    /// stops (then the request in flight is finished first).
    async fn http<I>(self, io: I, peer: Peer)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let addr = peer.addr;
        let sessions = self.sessions;
        let service = self.app.map_request(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(peer.clone());
            request.extensions_mut().insert(sessions.clone());
            request
        });
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_TIMEOUT)
            .serve_connection(TokioIo::new(io), TowerToHyperService::new(service))
            .with_upgrades();
        tokio::pin!(connection);
        let ended = tokio::select! {
            ended = connection.as_mut() => ended,
            () = self.stop.cancelled() => {
                connection.as_mut().graceful_shutdown();
                connection.await
            }
        };
        if let Err(e) = ended {
            tracing::debug!(server = self.name, peer = %addr, error = %e, "connection ended with an error");
        }
    }
}
