//! The stack on loopback: plain HTTP with the peer's address, TLS whose configuration is read
//! per connection, and a shutdown that ends upgraded sessions.

#![allow(clippy::unwrap_used)]

use axum::extract::{Extension, Request};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use futures_util::StreamExt as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use virtshim_http::websocket::PlainUpgrade;
use virtshim_http::{Peer, Server, Sessions, Tls, TlsConfigSource};

async fn bound() -> (Server, SocketAddr) {
    let server = Server::bind("127.0.0.1:0".parse().unwrap(), "test")
        .await
        .unwrap();
    let addr = server.local_addr().unwrap();
    (server, addr)
}

/// One request on a fresh connection; the whole answer.
async fn raw_get<S>(mut stream: S, path: &str) -> String
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .expect("an answer within 10 s")
        .unwrap();
    String::from_utf8(raw).unwrap()
}

#[tokio::test]
async fn plain_http_gives_handlers_the_peer() {
    let (server, addr) = bound().await;
    let router = Router::new().route(
        "/peer",
        get(|Extension(peer): Extension<Peer>| async move { peer.addr.ip().to_string() }),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(server.serve(router, Tls::Plain, async {
        let _ = stopped.await;
    }));
    let answer = raw_get(TcpStream::connect(addr).await.unwrap(), "/peer").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("127.0.0.1"), "{answer}");
    let answer = raw_get(TcpStream::connect(addr).await.unwrap(), "/nothing").await;
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("the server stops")
        .unwrap();
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "a stopped server no longer listens"
    );
}

/// A self-signed certificate for `name`, as a server configuration and its DER.
fn server_config(name: &str) -> (Arc<rustls::ServerConfig>, CertificateDer<'static>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec![name.to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let der = cert.der().clone();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![der.clone()],
            PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        )
        .unwrap();
    (Arc::new(config), der)
}

/// A configuration that can be swapped, as a renewed certificate is.
struct Swappable(Mutex<Arc<rustls::ServerConfig>>);

impl TlsConfigSource for Swappable {
    fn server_config(&self) -> Arc<rustls::ServerConfig> {
        self.0.lock().unwrap().clone()
    }
}

async fn tls_get(addr: SocketAddr, trusted: &CertificateDer<'static>, path: &str) -> String {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(trusted.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("server.test").unwrap(), tcp)
        .await
        .expect("the server presents the certificate trusted");
    raw_get(tls, path).await
}

#[tokio::test]
async fn tls_configuration_is_read_per_connection() {
    let (first, first_der) = server_config("server.test");
    let (second, second_der) = server_config("server.test");
    let source = Arc::new(Swappable(Mutex::new(first)));
    let (server, addr) = bound().await;
    let router = Router::new().route("/", get(|| async { "hello" }));
    tokio::spawn(server.serve(
        router,
        Tls::Reloading(source.clone()),
        std::future::pending(),
    ));
    let answer = tls_get(addr, &first_der, "/").await;
    assert!(answer.ends_with("hello"), "{answer}");
    *source.0.lock().unwrap() = second;
    let answer = tls_get(addr, &second_der, "/").await;
    assert!(answer.ends_with("hello"), "{answer}");
}

#[tokio::test]
async fn shutdown_ends_upgraded_sessions() {
    let (server, addr) = bound().await;
    let router = Router::new().route(
        "/ws",
        get(
            |Extension(sessions): Extension<Sessions>, mut request: Request| async move {
                let upgrade = match PlainUpgrade::check(&mut request) {
                    Ok(upgrade) => upgrade,
                    Err(e) => {
                        return Response::builder()
                            .status(400)
                            .body(e.to_string().into())
                            .unwrap()
                    }
                };
                // A session that never ends by itself.
                upgrade.accept(&sessions, |socket| async move {
                    let _socket = socket;
                    std::future::pending::<()>().await;
                })
            },
        ),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(server.with_grace(Duration::ZERO).serve(
        router,
        Tls::Plain,
        async {
            let _ = stopped.await;
        },
    ));

    let answer = raw_get(TcpStream::connect(addr).await.unwrap(), "/ws").await;
    assert!(
        answer.starts_with("HTTP/1.1 400"),
        "not an upgrade: {answer}"
    );

    let mut request = format!("ws://{addr}/ws").into_client_request().unwrap();
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        virtshim_http::websocket::PLAIN_PROTOCOL.parse().unwrap(),
    );
    let (mut client, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(response.status(), 101);
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("the server stops")
        .unwrap();
    let next = tokio::time::timeout(Duration::from_secs(10), client.next())
        .await
        .expect("the session ends with the server");
    assert!(
        !matches!(
            next,
            Some(Ok(tokio_tungstenite::tungstenite::Message::Binary(_)))
        ),
        "{next:?}"
    );
}
