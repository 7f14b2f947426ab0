//! The controller as the handlers' only client: mutual TLS with the controller's client
//! certificate, the handler verified against the controller's CA under the handlers' name, then
//! a `plain.kubevirt.io` WebSocket (console, VNC) or a PUT (pause, unpause).
//!
//! The certificates come from the cert manager's latest [`CertSet`] (renewals are picked up on
//! the next dial). [`handler_path`] is pure; the rest is I/O.

use crate::admission::certs::{CertSet, LeafNames};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::WebSocketStream;

pub use virtshim_wire::websocket::PLAIN_PROTOCOL;
/// The handlers' port.
pub const DEFAULT_PORT: u16 = 8186;
/// The label selecting handler pods.
pub const DEFAULT_SELECTOR: &str = "app.kubernetes.io/name=virtshim-handler";
/// Connecting, the TLS handshake and the request must finish within this.
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a handler could not be used.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    #[error("the controller's client certificate is not ready yet")]
    NoClientCertificate,
    #[error("TLS configuration for the handler: {0}")]
    Tls(String),
    #[error("connecting to the handler at {addr}: {message}")]
    Connect { addr: SocketAddr, message: String },
    #[error("the handler at {addr} did not answer in time")]
    Timeout { addr: SocketAddr },
    #[error("the handler answered {status}: {message}")]
    Refused { status: u16, message: String },
}

/// What the handler serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Console,
    Vnc,
    Pause,
    Unpause,
    PortForward(crate::subresources::routes::Forward),
}

impl Endpoint {
    /// The path after the VMI's.
    fn path(self) -> String {
        match self {
            Self::Console => "console".to_owned(),
            Self::Vnc => "vnc".to_owned(),
            Self::Pause => "pause".to_owned(),
            Self::Unpause => "unpause".to_owned(),
            Self::PortForward(f) => format!("portforward/{}/{}", f.port, f.protocol()),
        }
    }
}

/// The handler's path for a VMI (names already checked by the router; the uid is the
/// apiserver's, percent-encoded anyway).
pub fn handler_path(endpoint: Endpoint, namespace: &str, name: &str, uid: &str) -> String {
    let uid: String = uid
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'-' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    format!(
        "/v1/namespaces/{namespace}/virtualmachineinstances/{name}/{}?uid={uid}",
        endpoint.path()
    )
}

/// The client TLS configuration for `set`: trust the CA bundle, present the client certificate.
pub fn client_config(
    set: &CertSet,
    now: OffsetDateTime,
) -> Result<rustls::ClientConfig, HandlerError> {
    let client = set
        .client
        .as_ref()
        .ok_or(HandlerError::NoClientCertificate)?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(set.ca_bundle(now).as_bytes()) {
        let cert = cert.map_err(|e| HandlerError::Tls(e.to_string()))?;
        roots
            .add(cert)
            .map_err(|e| HandlerError::Tls(e.to_string()))?;
    }
    let chain = vec![CertificateDer::from_pem_slice(client.cert.as_bytes())
        .map_err(|e| HandlerError::Tls(e.to_string()))?];
    let key = PrivateKeyDer::from_pem_slice(client.key.as_bytes())
        .map_err(|e| HandlerError::Tls(e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| HandlerError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| HandlerError::Tls(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Dials handlers with the controller's current certificates.
#[derive(Clone, Debug)]
pub struct Dialer {
    certs: watch::Receiver<CertSet>,
    names: LeafNames,
    port: u16,
}

/// A WebSocket to a handler.
pub type HandlerSocket = WebSocketStream<TlsStream<TcpStream>>;

impl Dialer {
    pub fn new(certs: watch::Receiver<CertSet>, names: LeafNames, port: u16) -> Self {
        Self { certs, names, port }
    }

    async fn tls(&self, ip: std::net::IpAddr) -> Result<TlsStream<TcpStream>, HandlerError> {
        let addr = SocketAddr::new(ip, self.port);
        let config = {
            let set = self.certs.borrow();
            client_config(&set, OffsetDateTime::now_utc())?
        };
        let name = ServerName::try_from(self.names.handler.clone())
            .map_err(|e| HandlerError::Tls(e.to_string()))?;
        let connect = async {
            let tcp = TcpStream::connect(addr)
                .await
                .map_err(|e| HandlerError::Connect {
                    addr,
                    message: e.to_string(),
                })?;
            tokio_rustls::TlsConnector::from(Arc::new(config))
                .connect(name, tcp)
                .await
                .map_err(|e| HandlerError::Connect {
                    addr,
                    message: e.to_string(),
                })
        };
        tokio::time::timeout(DIAL_TIMEOUT, connect)
            .await
            .map_err(|_| HandlerError::Timeout { addr })?
    }

    /// Opens the console or VNC WebSocket of a VMI on the handler at `ip`.
    pub async fn websocket(
        &self,
        ip: std::net::IpAddr,
        path: &str,
    ) -> Result<HandlerSocket, HandlerError> {
        let tls = self.tls(ip).await?;
        let addr = SocketAddr::new(ip, self.port);
        let mut request = format!("wss://{}{path}", self.names.handler)
            .into_client_request()
            .map_err(|e| HandlerError::Tls(e.to_string()))?;
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            hyper::header::HeaderValue::from_static(PLAIN_PROTOCOL),
        );
        let handshake = tokio_tungstenite::client_async(request, tls);
        match tokio::time::timeout(DIAL_TIMEOUT, handshake).await {
            Err(_) => Err(HandlerError::Timeout { addr }),
            Ok(Ok((ws, _))) => Ok(ws),
            Ok(Err(tokio_tungstenite::tungstenite::Error::Http(response))) => {
                let status = response.status().as_u16();
                let message = response
                    .body()
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).trim().to_owned())
                    .unwrap_or_default();
                Err(HandlerError::Refused { status, message })
            }
            Ok(Err(e)) => Err(HandlerError::Connect {
                addr,
                message: e.to_string(),
            }),
        }
    }

    /// Sends `PUT path` to the handler at `ip`.
    pub async fn put(&self, ip: std::net::IpAddr, path: &str) -> Result<(), HandlerError> {
        let addr = SocketAddr::new(ip, self.port);
        let exchange = async {
            let tls = self.tls(ip).await?;
            let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
                .await
                .map_err(|e| HandlerError::Connect {
                    addr,
                    message: e.to_string(),
                })?;
            tokio::spawn(connection);
            let request = hyper::Request::builder()
                .method(hyper::Method::PUT)
                .uri(path)
                .header(hyper::header::HOST, self.names.handler.as_str())
                .body(Empty::<Bytes>::new())
                .map_err(|e| HandlerError::Tls(e.to_string()))?;
            let response =
                sender
                    .send_request(request)
                    .await
                    .map_err(|e| HandlerError::Connect {
                        addr,
                        message: e.to_string(),
                    })?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            if status.is_success() {
                Ok(())
            } else {
                Err(HandlerError::Refused {
                    status: status.as_u16(),
                    message: String::from_utf8_lossy(&body).trim().to_owned(),
                })
            }
        };
        tokio::time::timeout(DIAL_TIMEOUT, exchange)
            .await
            .map_err(|_| HandlerError::Timeout { addr })?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let cases = [
            (
                Endpoint::Console,
                "3f0c9a2e-1d7b-4c59",
                "/v1/namespaces/default/virtualmachineinstances/vm1/console?uid=3f0c9a2e-1d7b-4c59",
            ),
            (
                Endpoint::Vnc,
                "u",
                "/v1/namespaces/default/virtualmachineinstances/vm1/vnc?uid=u",
            ),
            (
                Endpoint::Pause,
                "a&b=c",
                "/v1/namespaces/default/virtualmachineinstances/vm1/pause?uid=a%26b%3Dc",
            ),
            (
                Endpoint::Unpause,
                "u",
                "/v1/namespaces/default/virtualmachineinstances/vm1/unpause?uid=u",
            ),
            (
                Endpoint::PortForward(crate::subresources::routes::Forward {
                    port: 22,
                    udp: false,
                }),
                "u",
                "/v1/namespaces/default/virtualmachineinstances/vm1/portforward/22/tcp?uid=u",
            ),
        ];
        for (endpoint, uid, expected) in cases {
            assert_eq!(handler_path(endpoint, "default", "vm1", uid), expected);
        }
    }

    #[test]
    fn client_config_needs_the_client_certificate() {
        let now = OffsetDateTime::now_utc();
        let names = vec!["virtshim-controller.virtshim-system.svc".to_owned()];
        let set = CertSet::generate(&names, now).expect("set");
        assert!(matches!(
            client_config(&set, now),
            Err(HandlerError::NoClientCertificate)
        ));
        let (set, changed) = crate::admission::certs::renew_leaves(
            set,
            &LeafNames::for_namespace("virtshim-system"),
            now,
        )
        .expect("leaves");
        assert!(changed);
        assert!(client_config(&set, now).is_ok());
    }
}
