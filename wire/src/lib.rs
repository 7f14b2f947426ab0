//! What virtshim's own processes agree on beyond the KubeVirt API (`virtshim-api`), kept apart
//! so the API crate carries no transport code:
//!
//! - [`node`]: the node contract between the shim and the handler (the per-pod folder and its
//!   `state.json`).
//! - [`websocket`]: KubeVirt's console and VNC WebSocket subprotocol and the upgrade check the
//!   controller's subresource API and the node's handler both make.

pub mod node;
pub mod websocket;
