//! KubeVirt's console, VNC and port-forward WebSocket (`plain.kubevirt.io`) on the server side.
//!
//! Both the subresource API and the handler check the upgrade, connect to what they relay to
//! *before* answering 101 (so that a failure is an HTTP error, not a WebSocket that closes at
//! once), and then run a session. A session outlives hyper's connection — after the 101 the
//! connection belongs to the session — so the server hands each request [`Sessions`], and a
//! session spawned through it ends when the server stops.

use axum::body::Body;
use axum::http::header::{
    HeaderValue, CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_PROTOCOL, UPGRADE,
};
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use std::future::Future;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

pub use virtshim_wire::websocket::{UpgradeError, PLAIN_PROTOCOL};

/// A server-side WebSocket over an upgraded HTTP/1.1 connection.
pub type ServerSocket = WebSocketStream<TokioIo<Upgraded>>;

/// The sessions of one running server, as a request extension: everything spawned through it
/// stops when the server has stopped (after its grace period).
#[derive(Clone, Debug, Default)]
pub struct Sessions {
    stop: CancellationToken,
}

impl Sessions {
    pub(crate) fn stop(&self) {
        self.stop.cancel();
    }

    /// Runs `session` in its own task, in the caller's span, until it ends or the server stops.
    pub fn spawn(&self, session: impl Future<Output = ()> + Send + 'static) {
        let stop = self.stop.clone();
        tokio::spawn(
            async move {
                tokio::select! {
                    () = session => {}
                    () = stop.cancelled() => tracing::debug!("session ended by the server's shutdown"),
                }
            }
            .in_current_span(),
        );
    }
}

/// A checked upgrade request, not yet answered.
#[derive(Debug)]
pub struct PlainUpgrade {
    accept: HeaderValue,
    on_upgrade: OnUpgrade,
}

impl PlainUpgrade {
    /// Checks `request` as an upgrade to `plain.kubevirt.io` (RFC 6455 version 13) and takes
    /// hold of its connection for after the answer.
    pub fn check(request: &mut Request<Body>) -> Result<Self, UpgradeError> {
        let headers = request.headers();
        let accept = virtshim_wire::websocket::accept_plain_upgrade(|name| {
            headers
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect()
        })?;
        // The key is base64, always a valid header value; a failure would be ours.
        let accept = HeaderValue::try_from(accept).map_err(|_| UpgradeError::NoKey)?;
        Ok(Self {
            accept,
            on_upgrade: hyper::upgrade::on(request),
        })
    }

    /// The 101 answer. Once the client has it, `session` runs on the WebSocket under
    /// `sessions` (in the caller's span).
    pub fn accept<F, Fut>(self, sessions: &Sessions, session: F) -> Response
    where
        F: FnOnce(ServerSocket) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let on_upgrade = self.on_upgrade;
        sessions.spawn(async move {
            match on_upgrade.await {
                Ok(upgraded) => {
                    let socket = WebSocketStream::from_raw_socket(
                        TokioIo::new(upgraded),
                        Role::Server,
                        None,
                    )
                    .await;
                    session(socket).await;
                }
                Err(e) => tracing::info!(error = %e, "WebSocket upgrade failed"),
            }
        });
        (
            StatusCode::SWITCHING_PROTOCOLS,
            [
                (UPGRADE, HeaderValue::from_static("websocket")),
                (CONNECTION, HeaderValue::from_static("Upgrade")),
                (SEC_WEBSOCKET_ACCEPT, self.accept),
                (
                    SEC_WEBSOCKET_PROTOCOL,
                    HeaderValue::from_static(PLAIN_PROTOCOL),
                ),
            ],
        )
            .into_response()
    }
}
