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

/// The next connection on `listener`, with Nagle's algorithm off. Accept errors (out of file
/// descriptors and the like) are logged and retried after a short pause: the server keeps
/// serving. `what` names the server in logs.
///
/// Without TCP_NODELAY a response written in two segments (headers, then body) waits for the
/// client's delayed ACK — about 40 ms per request, which made every admission review of a
/// `kubectl apply` of 500 VMs slow (the handler had the same 43.6 ms per exchange).
pub async fn accept(listener: &TcpListener, what: &str) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok((tcp, peer)) => {
                if let Err(e) = tcp.set_nodelay(true) {
                    tracing::debug!(%peer, error = %e, "cannot set TCP_NODELAY on a {what} connection");
                }
                return (tcp, peer);
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accepted_connections_have_nagle_off() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let client = tokio::spawn(async move { TcpStream::connect(addr).await });
        let (tcp, _) = accept(&listener, "test").await;
        assert!(tcp.nodelay().expect("nodelay"), "TCP_NODELAY is set");
        drop(client.await);
    }
}
