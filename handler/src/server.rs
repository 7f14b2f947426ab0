//! The handler's HTTPS API, for the controller only (see [`crate::tls`]):
//!
//! | verb | path | what |
//! | --- | --- | --- |
//! | GET (WebSocket) | `/v1/namespaces/{ns}/virtualmachineinstances/{name}/console?uid=` | serial console |
//! | GET (WebSocket) | `/v1/namespaces/{ns}/virtualmachineinstances/{name}/vnc?uid=` | VNC (RFB) |
//! | PUT | `/v1/namespaces/{ns}/virtualmachineinstances/{name}/pause?uid=` | pause the task |
//! | PUT | `/v1/namespaces/{ns}/virtualmachineinstances/{name}/unpause?uid=` | resume it |
//! | GET (WebSocket) | `/v1/namespaces/{ns}/virtualmachineinstances/{name}/portforward/{port}/tcp?uid=` | a TCP connection to the guest's port |
//!
//! WebSockets speak exactly one subprotocol, `plain.kubevirt.io` (raw bytes, no channel byte),
//! which the controller relays unchanged to `virtctl`. A console has one user at a time: a new
//! session closes the previous one, as KubeVirt's does. Errors map to HTTP codes in one place,
//! [`HandlerError::status`].

use crate::tasks::{TaskError, Tasks};
use crate::vms::{LocalVm, LookupError, VmIndex};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, CONNECTION, UPGRADE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::net::{TcpListener, TcpStream, UnixStream};
use tokio::sync::oneshot;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;

pub use virtshim_wire::websocket::PLAIN_PROTOCOL;

type Body = Full<Bytes>;

/// Everything that can go wrong with a request.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    #[error("not found: {0}")]
    NoRoute(String),
    #[error(transparent)]
    Lookup(#[from] LookupError),
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("the {what} of virtualmachineinstance {vmi} is not available: {message}")]
    SocketUnavailable {
        what: &'static str,
        vmi: String,
        message: String,
    },
    #[error(transparent)]
    Task(#[from] TaskError),
}

impl HandlerError {
    /// The one place errors become HTTP codes.
    pub fn status(&self) -> StatusCode {
        match self {
            HandlerError::NoRoute(_) => StatusCode::NOT_FOUND,
            HandlerError::Lookup(LookupError::NotHere { .. }) => StatusCode::NOT_FOUND,
            HandlerError::Lookup(LookupError::OtherUid { .. }) => StatusCode::CONFLICT,
            HandlerError::BadRequest(_) => StatusCode::BAD_REQUEST,
            HandlerError::SocketUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            HandlerError::Task(TaskError::Connect { .. }) => StatusCode::BAD_GATEWAY,
            HandlerError::Task(TaskError::Rpc(status)) => match status.code() {
                tonic::Code::NotFound => StatusCode::NOT_FOUND,
                tonic::Code::FailedPrecondition => StatusCode::CONFLICT,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            },
        }
    }
}

fn text(status: StatusCode, body: String) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stream {
    Console,
    Vnc,
    /// A TCP port of the guest (`virtctl port-forward`, `virtctl ssh`).
    Port(u16),
}

/// How long dialling the guest's port may take.
const PORT_DIAL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// What a session pipes the WebSocket to.
enum Connected {
    Unix(UnixStream),
    Tcp(TcpStream),
}

/// `{port}/{protocol}` of a port-forward path: KubeVirt's virtctl sends `tcp` or `udp`.
fn port_forward_target(port: &str, protocol: &str) -> Result<u16, HandlerError> {
    let port: u16 = port.parse().ok().filter(|p| *p != 0).ok_or_else(|| {
        HandlerError::BadRequest(format!("invalid port {port:?}: must be 1 to 65535"))
    })?;
    match protocol {
        "tcp" => Ok(port),
        "udp" => Err(HandlerError::BadRequest(
            "UDP port forwarding is not supported by virtshim; use tcp".into(),
        )),
        other => Err(HandlerError::BadRequest(format!(
            "unsupported protocol {other:?}: use tcp"
        ))),
    }
}

/// The handler's state: where VMs are, containerd, and the open console per VMI.
#[derive(Debug)]
pub struct Handler {
    index: VmIndex,
    tasks: Tasks,
    /// VMI UID → (session number, the way to end that session).
    consoles: Mutex<HashMap<String, (u64, oneshot::Sender<()>)>>,
    sessions: AtomicU64,
}

impl Handler {
    pub fn new(run_dir: impl Into<PathBuf>, tasks: Tasks) -> Self {
        Self {
            index: VmIndex::new(run_dir),
            tasks,
            consoles: Mutex::new(HashMap::new()),
            sessions: AtomicU64::new(0),
        }
    }

    async fn find(
        &self,
        namespace: &str,
        name: &str,
        uid: Option<&str>,
    ) -> Result<LocalVm, HandlerError> {
        let index = self.index.clone();
        let (namespace, name, uid) = (
            namespace.to_owned(),
            name.to_owned(),
            uid.map(str::to_owned),
        );
        tokio::task::spawn_blocking(move || index.find(&namespace, &name, uid.as_deref()))
            .await
            .map_err(|e| HandlerError::BadRequest(format!("lookup failed: {e}")))?
            .map_err(HandlerError::from)
    }

    /// Answers one request.
    pub async fn route(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        let uid = query_value(req.uri().query(), "uid");
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let result = match (&method, segments.as_slice()) {
            (&Method::GET, ["healthz"]) => Ok(text(StatusCode::OK, "ok".into())),
            (_, ["v1", "namespaces", ns, "virtualmachineinstances", name, sub]) => {
                let (ns, name) = ((*ns).to_owned(), (*name).to_owned());
                match (&method, *sub) {
                    (&Method::GET, "console") => {
                        self.clone()
                            .websocket(req, Stream::Console, &ns, &name, uid.as_deref())
                            .await
                    }
                    (&Method::GET, "vnc") => {
                        self.clone()
                            .websocket(req, Stream::Vnc, &ns, &name, uid.as_deref())
                            .await
                    }
                    (&Method::PUT, "pause") => self.pause(&ns, &name, uid.as_deref(), true).await,
                    (&Method::PUT, "unpause") => {
                        self.pause(&ns, &name, uid.as_deref(), false).await
                    }
                    _ => Err(HandlerError::NoRoute(format!("{method} {path}"))),
                }
            }
            (
                &Method::GET,
                ["v1", "namespaces", ns, "virtualmachineinstances", name, "portforward", port, protocol],
            ) => match port_forward_target(port, protocol) {
                Ok(port) => {
                    let (ns, name) = ((*ns).to_owned(), (*name).to_owned());
                    self.clone()
                        .websocket(req, Stream::Port(port), &ns, &name, uid.as_deref())
                        .await
                }
                Err(e) => Err(e),
            },
            _ => Err(HandlerError::NoRoute(format!("{method} {path}"))),
        };
        result.unwrap_or_else(|e| {
            tracing::info!(%method, %path, error = %e, "request refused");
            text(e.status(), format!("{e}\n"))
        })
    }

    async fn pause(
        &self,
        namespace: &str,
        name: &str,
        uid: Option<&str>,
        pause: bool,
    ) -> Result<Response<Body>, HandlerError> {
        let vm = self.find(namespace, name, uid).await?;
        if pause {
            self.tasks.pause(&vm.container_id).await?;
        } else {
            self.tasks.resume(&vm.container_id).await?;
        }
        tracing::info!(
            vmi = %format!("{namespace}/{name}"),
            container_id = %vm.container_id,
            paused = pause,
            "VM {}", if pause { "paused" } else { "resumed" }
        );
        Ok(text(StatusCode::OK, String::new()))
    }

    async fn websocket(
        self: Arc<Self>,
        mut req: Request<Incoming>,
        stream: Stream,
        namespace: &str,
        name: &str,
        uid: Option<&str>,
    ) -> Result<Response<Body>, HandlerError> {
        let vm = self.find(namespace, name, uid).await?;
        let accept = websocket_accept(&req)?;
        let vmi = format!("{namespace}/{name}");
        let unavailable = |what: &'static str, message: String| HandlerError::SocketUnavailable {
            what,
            vmi: vmi.clone(),
            message,
        };
        // Connect before answering 101, so an unavailable socket is an HTTP error, not a
        // WebSocket that closes at once.
        let (socket, what) = match stream {
            Stream::Console => {
                let what = "serial console";
                let socket = UnixStream::connect(vm.console_socket())
                    .await
                    .map_err(|e| unavailable(what, e.to_string()))?;
                (Connected::Unix(socket), what)
            }
            Stream::Vnc => {
                let what = "VNC display";
                let socket = vm
                    .connect_vnc()
                    .and_then(|s| {
                        s.set_nonblocking(true)?;
                        UnixStream::from_std(s)
                    })
                    .map_err(|e| unavailable(what, e.to_string()))?;
                (Connected::Unix(socket), what)
            }
            Stream::Port(port) => {
                let what = "forwarded port";
                let ip = vm.pod_ip.ok_or_else(|| {
                    unavailable(what, "the VM has no pod network interface".into())
                })?;
                let socket =
                    tokio::time::timeout(PORT_DIAL_TIMEOUT, TcpStream::connect((ip, port)))
                        .await
                        .map_err(|_| {
                            unavailable(what, format!("{ip}:{port} did not answer in time"))
                        })?
                        .map_err(|e| unavailable(what, format!("{ip}:{port}: {e}")))?;
                // Interactive sessions (ssh) want each keystroke sent at once.
                let _ = socket.set_nodelay(true);
                (Connected::Tcp(socket), what)
            }
        };
        let on_upgrade = hyper::upgrade::on(&mut req);
        let session = self.sessions.fetch_add(1, Ordering::Relaxed);
        let (replace_tx, replaced) = oneshot::channel();
        // A VNC session is never replaced: its sender lives as long as the session does (a
        // dropped sender would end the session at once).
        let mut keep_open = None;
        if stream == Stream::Console {
            let previous = self
                .consoles
                .lock()
                .map_err(|_| HandlerError::BadRequest("console table poisoned".into()))?
                .insert(vm.vmi.uid.clone(), (session, replace_tx));
            if let Some((_, end)) = previous {
                let _ = end.send(());
            }
        } else {
            keep_open = Some(replace_tx);
        }
        let handler = self.clone();
        let uid = vm.vmi.uid.clone();
        tokio::spawn(async move {
            let upgraded = match on_upgrade.await {
                Ok(upgraded) => upgraded,
                Err(e) => {
                    tracing::info!(%vmi, error = %e, "WebSocket upgrade failed");
                    return;
                }
            };
            let ws =
                WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
            tracing::info!(%vmi, vmi_uid = %uid, stream = what, session, "session opened");
            let ended = match socket {
                Connected::Unix(s) => crate::bridge::bridge(ws, s, replaced).await,
                Connected::Tcp(s) => crate::bridge::bridge(ws, s, replaced).await,
            };
            drop(keep_open);
            tracing::info!(%vmi, vmi_uid = %uid, stream = what, session, ?ended, "session closed");
            if stream == Stream::Console {
                if let Ok(mut consoles) = handler.consoles.lock() {
                    if consoles.get(&uid).is_some_and(|(s, _)| *s == session) {
                        consoles.remove(&uid);
                    }
                }
            }
        });
        let mut response = Response::new(Full::new(Bytes::new()));
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = response.headers_mut();
        headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
        headers.insert(
            "Sec-WebSocket-Accept",
            HeaderValue::from_str(&accept).map_err(|e| HandlerError::BadRequest(e.to_string()))?,
        );
        headers.insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_static(PLAIN_PROTOCOL),
        );
        Ok(response)
    }
}

/// Checks a WebSocket upgrade request (version 13, asking for `plain.kubevirt.io`) and computes
/// its `Sec-WebSocket-Accept` (the same check the controller makes: `virtshim_wire::websocket`).
fn websocket_accept(req: &Request<Incoming>) -> Result<String, HandlerError> {
    virtshim_wire::websocket::accept_plain_upgrade(|name| {
        req.headers()
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect()
    })
    .map_err(|e| HandlerError::BadRequest(e.to_string()))
}

fn query_value(query: Option<&str>, key: &str) -> Option<String> {
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v.to_owned())
        .filter(|v| !v.is_empty())
}

/// Where each connection's TLS configuration comes from.
#[derive(Clone, Debug)]
pub enum TlsSource {
    Fixed(Arc<rustls::ServerConfig>),
    /// Reloaded from its files when they change.
    Files(Arc<crate::tls::ReloadingConfig>),
}

impl TlsSource {
    fn acceptor(&self) -> TlsAcceptor {
        match self {
            TlsSource::Fixed(config) => TlsAcceptor::from(config.clone()),
            TlsSource::Files(reloading) => TlsAcceptor::from(reloading.config()),
        }
    }
}

impl From<Arc<rustls::ServerConfig>> for TlsSource {
    fn from(config: Arc<rustls::ServerConfig>) -> Self {
        TlsSource::Fixed(config)
    }
}

impl From<Arc<crate::tls::ReloadingConfig>> for TlsSource {
    fn from(reloading: Arc<crate::tls::ReloadingConfig>) -> Self {
        TlsSource::Files(reloading)
    }
}

/// Serves `handler` on `listener` with `tls` until `shutdown` completes; then every open
/// connection (and session) is closed too.
pub async fn serve(
    listener: TcpListener,
    tls: impl Into<TlsSource>,
    handler: Arc<Handler>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let tls: TlsSource = tls.into();
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => accepted?,
            _ = &mut shutdown => break,
            // Reap finished connections so the set does not grow.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        // Keystrokes are tiny writes: without this, Nagle's algorithm and delayed ACKs add
        // ~40 ms to a console echo or a handshake.
        let _ = tcp.set_nodelay(true);
        let acceptor = tls.acceptor();
        let handler = handler.clone();
        connections.spawn(async move {
            let tls = match acceptor.accept(tcp).await {
                Ok(tls) => tls,
                Err(e) => {
                    tracing::info!(%peer, error = %e, "TLS handshake refused");
                    return;
                }
            };
            let service = hyper::service::service_fn(move |req| {
                let handler = handler.clone();
                async move { Ok::<_, Infallible>(handler.route(req).await) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service)
                .with_upgrades()
                .await
            {
                tracing::debug!(%peer, error = %e, "connection ended");
            }
        });
    }
    connections.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values() {
        assert_eq!(
            query_value(Some("uid=abc&x=1"), "uid").as_deref(),
            Some("abc")
        );
        assert_eq!(query_value(Some("x=1"), "uid"), None);
        assert_eq!(query_value(Some("uid="), "uid"), None);
        assert_eq!(query_value(None, "uid"), None);
    }

    #[test]
    fn port_forward_targets() {
        assert_eq!(port_forward_target("22", "tcp").unwrap(), 22);
        for (port, protocol) in [
            ("0", "tcp"),
            ("65536", "tcp"),
            ("ssh", "tcp"),
            ("53", "udp"),
            ("1", "sctp"),
        ] {
            let e = port_forward_target(port, protocol).unwrap_err();
            assert_eq!(
                e.status(),
                StatusCode::BAD_REQUEST,
                "{port}/{protocol}: {e}"
            );
        }
    }

    #[test]
    fn errors_map_to_http_codes() {
        let not_here = HandlerError::Lookup(LookupError::NotHere {
            namespace: "a".into(),
            name: "b".into(),
        });
        assert_eq!(not_here.status(), StatusCode::NOT_FOUND);
        let other = HandlerError::Lookup(LookupError::OtherUid {
            namespace: "a".into(),
            name: "b".into(),
            found: "1".into(),
            wanted: "2".into(),
        });
        assert_eq!(other.status(), StatusCode::CONFLICT);
        assert_eq!(
            HandlerError::Task(TaskError::Rpc(tonic::Status::failed_precondition("x"))).status(),
            StatusCode::CONFLICT
        );
    }
}
