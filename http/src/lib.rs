//! The one HTTP stack every virtshim server stands on: the admission webhooks and the
//! subresource API (controller), the metrics and health endpoints, and the node handler.
//!
//! Each server is an [`axum::Router`] of its own routes; this crate serves it the same way for
//! all of them, so that a fix to how connections are handled is made once:
//!
//! - [`serve`]: accepting (Nagle off, transient accept errors survived), TLS by rustls with a
//!   configuration read per connection (certificates renewed without a restart), deadlines on
//!   the handshake, the request headers and the whole request, request logging (tower-http's
//!   trace layer), and a graceful shutdown that ends upgraded sessions too.
//! - [`body`]: reading a request body with a cap.
//! - [`websocket`]: accepting KubeVirt's `plain.kubevirt.io` WebSocket and running the session
//!   as part of the server, so that stopping the server stops it.
//!
//! What stays with each server: its routes, and the one place its errors become HTTP status
//! codes (an `IntoResponse` for its error type), because the answer's shape is the protocol's —
//! an AdmissionReview for the apiserver, a Kubernetes `Status` for `virtctl`, plain text for
//! the handler's one client.

pub mod body;
pub mod serve;
pub mod websocket;

pub use serve::{Peer, ServeError, Server, Tls, TlsConfigSource};
pub use websocket::Sessions;
