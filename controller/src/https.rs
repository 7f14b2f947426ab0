//! What the controller's two HTTPS servers (admission webhooks, the subresource API) share:
//! accepting a connection without giving up on transient errors, and a TLS handshake with a
//! deadline, so a client that connects and says nothing cannot hold a task forever.

use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// A TLS handshake must finish within this.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Request headers must arrive within this.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// The next connection on `listener`. Accept errors (out of file descriptors and the like) are
/// logged and retried after a short pause: the server keeps serving. `what` names the server
/// in logs.
pub async fn accept(listener: &TcpListener, what: &str) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(pair) => return pair,
            Err(e) => {
                tracing::warn!(error = %e, "accepting a {what} connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// The TLS handshake on `tcp`, within [`HANDSHAKE_TIMEOUT`]; `None` (logged) when it fails or
/// takes too long.
pub async fn handshake(
    acceptor: &TlsAcceptor,
    tcp: TcpStream,
    peer: SocketAddr,
    what: &str,
) -> Option<TlsStream<TcpStream>> {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => Some(tls),
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "{what} TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "{what} TLS handshake timed out");
            None
        }
    }
}
