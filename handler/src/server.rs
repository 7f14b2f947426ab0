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
use axum::extract::{Extension, Path, Query, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put, MethodRouter};
use axum::Router;
use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::net::{TcpListener, TcpStream, UnixStream};
use tokio::sync::oneshot;
use virtshim_http::websocket::PlainUpgrade;
use virtshim_http::{Sessions, Tls};

pub use virtshim_wire::websocket::PLAIN_PROTOCOL;

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

/// A refused request answers its error's code and message in plain text (the controller
/// passes the message on to `virtctl`).
impl IntoResponse for HandlerError {
    fn into_response(self) -> Response {
        tracing::info!(error = %self, "request refused");
        (self.status(), format!("{self}\n")).into_response()
    }
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

    async fn pause(
        &self,
        namespace: &str,
        name: &str,
        uid: Option<&str>,
        pause: bool,
    ) -> Result<StatusCode, HandlerError> {
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
        Ok(StatusCode::OK)
    }

    async fn websocket(
        self: Arc<Self>,
        mut req: Request,
        sessions: &Sessions,
        stream: Stream,
        vmi: VmiRef,
    ) -> Result<Response, HandlerError> {
        let VmiRef {
            namespace,
            name,
            uid,
        } = vmi;
        let vm = self.find(&namespace, &name, uid.as_deref()).await?;
        let upgrade =
            PlainUpgrade::check(&mut req).map_err(|e| HandlerError::BadRequest(e.to_string()))?;
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
        Ok(upgrade.accept(sessions, move |ws| async move {
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
        }))
    }
}

/// The VMI a request names: namespace and name from the path, the UID from `?uid=` (the
/// controller always sends it, so that a VMI recreated under the same name is not reached by
/// an old session's request).
#[derive(Clone, Debug)]
struct VmiRef {
    namespace: String,
    name: String,
    uid: Option<String>,
}

#[derive(Debug, serde::Deserialize)]
struct UidQuery {
    uid: Option<String>,
}

impl VmiRef {
    fn new((namespace, name): (String, String), query: UidQuery) -> Self {
        Self {
            namespace,
            name,
            uid: query.uid.filter(|u| !u.is_empty()),
        }
    }
}

const VMI_PATH: &str = "/v1/namespaces/{namespace}/virtualmachineinstances/{name}";

/// The handler's routes (the table at the top of this module).
pub fn router(handler: Arc<Handler>) -> Router {
    let vmi = |sub: &str| format!("{VMI_PATH}/{sub}");
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(&vmi("console"), stream(Stream::Console))
        .route(&vmi("vnc"), stream(Stream::Vnc))
        .route(&vmi("pause"), pausing(true))
        .route(&vmi("unpause"), pausing(false))
        .route(&vmi("portforward/{port}/{protocol}"), get(port_forward))
        .fallback(|request: Request| async move {
            HandlerError::NoRoute(format!("{} {}", request.method(), request.uri().path()))
        })
        .with_state(handler)
}

type Named = Path<(String, String)>;

/// GET of a console or VNC WebSocket of the VMI the path names.
fn stream(kind: Stream) -> MethodRouter<Arc<Handler>> {
    get(
        move |State(handler): State<Arc<Handler>>,
              Extension(sessions): Extension<Sessions>,
              Path(names): Named,
              Query(query): Query<UidQuery>,
              request: Request| async move {
            let vmi = VmiRef::new(names, query);
            handler.websocket(request, &sessions, kind, vmi).await
        },
    )
}

/// PUT pausing (or resuming) the VMI the path names.
fn pausing(pause: bool) -> MethodRouter<Arc<Handler>> {
    put(
        move |State(handler): State<Arc<Handler>>,
              Path(names): Named,
              Query(query): Query<UidQuery>| async move {
            let vmi = VmiRef::new(names, query);
            handler
                .pause(&vmi.namespace, &vmi.name, vmi.uid.as_deref(), pause)
                .await
        },
    )
}

async fn port_forward(
    State(handler): State<Arc<Handler>>,
    Extension(sessions): Extension<Sessions>,
    Path((namespace, name, port, protocol)): Path<(String, String, String, String)>,
    Query(query): Query<UidQuery>,
    request: Request,
) -> Result<Response, HandlerError> {
    let port = port_forward_target(&port, &protocol)?;
    let vmi = VmiRef::new((namespace, name), query);
    handler
        .websocket(request, &sessions, Stream::Port(port), vmi)
        .await
}

/// Serves `handler` on `listener` with `tls` until `shutdown` completes; then every open
/// connection (and session) is closed too.
pub async fn serve(
    listener: TcpListener,
    tls: impl Into<Tls>,
    handler: Arc<Handler>,
    shutdown: impl Future<Output = ()>,
) {
    virtshim_http::Server::from_listener(listener, "handler")
        .serve(router(handler), tls.into(), shutdown)
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

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

    /// The routes without TLS or sockets: what each path answers when no VM is on the node.
    #[tokio::test]
    async fn routes_answer_by_path_and_method() {
        use tower::ServiceExt as _;
        let run = tempfile::tempdir().expect("run dir");
        let handler = Arc::new(Handler::new(
            run.path(),
            Tasks::new(run.path().join("no-containerd.sock"), "k8s.io"),
        ));
        let vmi = "/v1/namespaces/ns/virtualmachineinstances/vm1";
        for (method, path, status, says) in [
            ("GET", "/healthz".to_owned(), 200, "ok"),
            (
                "GET",
                format!("{vmi}/console?uid=u"),
                404,
                "not running on this node",
            ),
            ("GET", format!("{vmi}/vnc"), 404, "not running on this node"),
            (
                "PUT",
                format!("{vmi}/pause?uid=u"),
                404,
                "not running on this node",
            ),
            (
                "PUT",
                format!("{vmi}/unpause"),
                404,
                "not running on this node",
            ),
            (
                "GET",
                format!("{vmi}/portforward/22/tcp"),
                404,
                "not running on this node",
            ),
            (
                "GET",
                format!("{vmi}/portforward/0/tcp"),
                400,
                "invalid port",
            ),
            ("GET", format!("{vmi}/portforward/53/udp"), 400, "UDP"),
            ("PUT", format!("{vmi}/console"), 405, ""),
            ("GET", format!("{vmi}/pause"), 405, ""),
            (
                "GET",
                "/v1/elsewhere".to_owned(),
                404,
                "not found: GET /v1/elsewhere",
            ),
        ] {
            let request = axum::http::Request::builder()
                .method(method)
                .uri(&path)
                .body(axum::body::Body::empty())
                .expect("request");
            let response = router(handler.clone())
                .layer(axum::Extension(Sessions::default()))
                .oneshot(request)
                .await
                .expect("an answer");
            assert_eq!(response.status().as_u16(), status, "{method} {path}");
            let body = axum::body::to_bytes(response.into_body(), 1 << 16)
                .await
                .expect("body");
            let body = String::from_utf8_lossy(&body);
            assert!(body.contains(says), "{method} {path}: {body}");
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
