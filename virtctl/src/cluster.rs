//! Talking to a cluster's `subresources.kubevirt.io` API through the kube-apiserver, as the
//! upstream `virtctl` does: the client from a kubeconfig, the subresource URLs (pure), PUTs
//! with KubeVirt's option bodies, and the `plain.kubevirt.io` WebSocket of console and VNC,
//! retried every second while the API answers 400 (the VMI is not running yet).

use futures::{SinkExt, StreamExt};
use hyper::header::{HeaderValue, CONNECTION, CONTENT_TYPE, UPGRADE};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// The API group and the version virtctl calls.
pub const GROUP: &str = "subresources.kubevirt.io";
pub const VERSION: &str = "v1";
pub use virtshim_wire::websocket::PLAIN_PROTOCOL;
/// How often a stream is retried while the VMI is not running.
pub const RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// Why a cluster request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("kubeconfig: {0}")]
    Config(String),
    #[error("{0}")]
    Kube(#[from] kube::Error),
    /// The API refused, with its `Status` message.
    #[error("{message}")]
    Refused { code: u16, message: String },
    #[error("WebSocket: {0}")]
    WebSocket(String),
    #[error("timed out after {0:?} waiting for the VMI to run")]
    Timeout(Duration),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl ClusterError {
    /// The HTTP code the API answered with, if it answered.
    pub fn code(&self) -> Option<u16> {
        match self {
            Self::Refused { code, .. } => Some(*code),
            Self::Kube(kube::Error::Api(status)) => Some(status.code),
            _ => None,
        }
    }
}

/// Where the cluster is: upstream's `--kubeconfig`, `--context`, `-n/--namespace`.
#[derive(Clone, Debug, Default)]
pub struct Target {
    pub kubeconfig: Option<std::path::PathBuf>,
    pub context: Option<String>,
    pub namespace: Option<String>,
}

/// A client and the namespace to work in (the flag, else the kubeconfig context's, else
/// `default`).
pub async fn connect(target: &Target) -> Result<(kube::Client, String), ClusterError> {
    let options = kube::config::KubeConfigOptions {
        context: target.context.clone(),
        ..Default::default()
    };
    let config = match &target.kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| ClusterError::Config(format!("{}: {e}", path.display())))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .map_err(|e| ClusterError::Config(e.to_string()))?
        }
        None if target.context.is_some() => kube::Config::from_kubeconfig(&options)
            .await
            .map_err(|e| ClusterError::Config(e.to_string()))?,
        None => kube::Config::infer()
            .await
            .map_err(|e| ClusterError::Config(e.to_string()))?,
    };
    let namespace = target
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let mut config = config;
    // A console may sit idle for long: no read deadline on the (upgraded) connection.
    config.read_timeout = None;
    let client = kube::Client::try_from(config)?;
    Ok((client, namespace))
}

/// `/apis/subresources.kubevirt.io/v1/namespaces/{ns}/{resource}/{name}/{subresource}`.
pub fn subresource_path(namespace: &str, resource: &str, name: &str, subresource: &str) -> String {
    format!("/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{resource}/{name}/{subresource}")
}

/// `/apis/subresources.kubevirt.io/v1/version`.
pub fn version_path() -> String {
    format!("/apis/{GROUP}/{VERSION}/version")
}

/// `dryRun` as KubeVirt's options carry it.
pub fn dry_run_value(dry_run: bool) -> Option<Vec<&'static str>> {
    dry_run.then(|| vec!["All"])
}

/// A refusal's message: the `Status` message when the body is one, else the body text.
pub fn refusal_message(code: u16, body: &[u8]) -> String {
    match serde_json::from_slice::<Status>(body) {
        Ok(status) if status.message.as_deref().is_some_and(|m| !m.is_empty()) => {
            status.message.unwrap_or_default()
        }
        _ => {
            let text = String::from_utf8_lossy(body).trim().to_owned();
            if text.is_empty() {
                format!("the server answered {code}")
            } else {
                text
            }
        }
    }
}

/// `PUT path` with a JSON body; `Ok` on any 2xx.
pub async fn put(
    client: &kube::Client,
    path: &str,
    body: serde_json::Value,
) -> Result<(), ClusterError> {
    let request = Request::builder()
        .method(Method::PUT)
        .uri(path)
        .header(CONTENT_TYPE, "application/json")
        .body(serde_json::to_vec(&body).unwrap_or_default())
        .map_err(|e| ClusterError::WebSocket(e.to_string()))?;
    let response = client.send(request.map(kube::client::Body::from)).await?;
    let status = response.status();
    let bytes = http_body_util::BodyExt::collect(response.into_body())
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    if status.is_success() {
        Ok(())
    } else {
        Err(ClusterError::Refused {
            code: status.as_u16(),
            message: refusal_message(status.as_u16(), &bytes),
        })
    }
}

/// `GET path` as JSON.
pub async fn get_json(
    client: &kube::Client,
    path: &str,
) -> Result<serde_json::Value, ClusterError> {
    let request = Request::builder()
        .method(Method::GET)
        .uri(path)
        .body(Vec::new())
        .map_err(|e| ClusterError::WebSocket(e.to_string()))?;
    Ok(client.request(request).await?)
}

/// A WebSocket to a VMI's stream, over the apiserver's connection.
pub type Stream = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// Opens a `plain.kubevirt.io` WebSocket at `path` once.
pub async fn open_stream_once(client: &kube::Client, path: &str) -> Result<Stream, ClusterError> {
    let key = tokio_tungstenite::tungstenite::handshake::client::generate_key();
    let request = Request::builder()
        .method(Method::GET)
        .uri(path)
        .header(CONNECTION, "Upgrade")
        .header(UPGRADE, "websocket")
        .header("Sec-WebSocket-Version", "13")
        .header("Sec-WebSocket-Key", key.as_str())
        .header("Sec-WebSocket-Protocol", PLAIN_PROTOCOL)
        .body(kube::client::Body::from(Vec::new()))
        .map_err(|e| ClusterError::WebSocket(e.to_string()))?;
    let response = client.send(request).await?;
    let status = response.status();
    if status != StatusCode::SWITCHING_PROTOCOLS {
        let bytes = http_body_util::BodyExt::collect(response.into_body())
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        return Err(ClusterError::Refused {
            code: status.as_u16(),
            message: refusal_message(status.as_u16(), &bytes),
        });
    }
    let expected = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let headers = response.headers();
    if headers.get("Sec-WebSocket-Accept") != HeaderValue::from_str(&expected).ok().as_ref() {
        return Err(ClusterError::WebSocket(
            "the server's Sec-WebSocket-Accept does not match".into(),
        ));
    }
    let protocol = headers
        .get("Sec-WebSocket-Protocol")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if protocol != PLAIN_PROTOCOL {
        return Err(ClusterError::WebSocket(format!(
            "the server chose subprotocol {protocol:?}, not {PLAIN_PROTOCOL}"
        )));
    }
    let upgraded = hyper::upgrade::on(response)
        .await
        .map_err(|e| ClusterError::WebSocket(e.to_string()))?;
    Ok(WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Client, None).await)
}

/// Whether a failed attempt is worth another one: the API said 400 (KubeVirt's "VMI is not
/// running"), and only that, as upstream.
pub fn should_retry(error: &ClusterError) -> bool {
    error.code() == Some(400)
}

/// Opens the stream, retrying every [`RETRY_INTERVAL`] while [`should_retry`], for at most
/// `timeout`.
pub async fn open_stream(
    client: &kube::Client,
    path: &str,
    timeout: Duration,
) -> Result<Stream, ClusterError> {
    let start = Instant::now();
    loop {
        match open_stream_once(client, path).await {
            Ok(stream) => return Ok(stream),
            Err(e) if should_retry(&e) && start.elapsed() + RETRY_INTERVAL < timeout => {
                tokio::time::sleep(RETRY_INTERVAL).await;
            }
            Err(e) if should_retry(&e) => return Err(ClusterError::Timeout(timeout)),
            Err(e) => return Err(e),
        }
    }
}

/// How a relay ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// The local side closed (EOF).
    Local,
    /// The server closed normally.
    Remote,
    /// The connection broke.
    Broken(String),
}

/// Relays raw bytes between a local byte stream (a TCP connection, for VNC) and the stream.
pub async fn relay<S, L>(ws: WebSocketStream<S>, local: L) -> Ended
where
    S: AsyncRead + AsyncWrite + Unpin,
    L: AsyncRead + AsyncWrite + Unpin,
{
    let (mut tx, mut rx) = ws.split();
    let (mut local_rx, mut local_tx) = tokio::io::split(local);
    let mut buf = vec![0u8; 32 * 1024];
    let ended = loop {
        tokio::select! {
            read = local_rx.read(&mut buf) => match read {
                Ok(0) => break Ended::Local,
                Ok(n) => {
                    if let Err(e) = tx.send(Message::Binary(buf[..n].to_vec().into())).await {
                        break Ended::Broken(e.to_string());
                    }
                }
                Err(e) => break Ended::Broken(e.to_string()),
            },
            message = rx.next() => match message {
                Some(Ok(Message::Binary(data))) => {
                    if let Err(e) = local_tx.write_all(&data).await {
                        break Ended::Broken(e.to_string());
                    }
                }
                Some(Ok(Message::Text(text))) => {
                    if let Err(e) = local_tx.write_all(text.as_bytes()).await {
                        break Ended::Broken(e.to_string());
                    }
                }
                Some(Ok(Message::Close(_))) | None => break Ended::Remote,
                Some(Ok(_)) => {}
                Some(Err(e)) => break Ended::Broken(e.to_string()),
            },
        }
    };
    let _ = tx.send(Message::Close(None)).await;
    let _ = tx.close().await;
    let _ = local_tx.shutdown().await;
    ended
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(
            subresource_path("default", "virtualmachineinstances", "vm1", "console"),
            "/apis/subresources.kubevirt.io/v1/namespaces/default/virtualmachineinstances/vm1/console"
        );
        assert_eq!(
            subresource_path("ns", "virtualmachines", "v", "start"),
            "/apis/subresources.kubevirt.io/v1/namespaces/ns/virtualmachines/v/start"
        );
        assert_eq!(version_path(), "/apis/subresources.kubevirt.io/v1/version");
        assert_eq!(dry_run_value(true), Some(vec!["All"]));
        assert_eq!(dry_run_value(false), None);
    }

    #[test]
    fn refusal_messages() {
        let status = br#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"VMI is not running","reason":"BadRequest","code":400}"#;
        assert_eq!(refusal_message(400, status), "VMI is not running");
        assert_eq!(refusal_message(401, b"Unauthorized\n"), "Unauthorized");
        assert_eq!(refusal_message(503, b""), "the server answered 503");
        assert_eq!(
            refusal_message(500, br#"{"kind":"Status","message":""}"#),
            r#"{"kind":"Status","message":""}"#
        );
    }

    #[test]
    fn retry_only_on_400() {
        let refused = |code| ClusterError::Refused {
            code,
            message: String::new(),
        };
        for (error, retry) in [
            (refused(400), true),
            (refused(409), false),
            (refused(403), false),
            (refused(404), false),
            (ClusterError::WebSocket("x".into()), false),
            (ClusterError::Timeout(Duration::from_secs(1)), false),
        ] {
            assert_eq!(should_retry(&error), retry, "{error:?}");
        }
    }

    #[tokio::test]
    async fn relay_moves_bytes_both_ways() {
        let (ws_near, ws_far) = tokio::io::duplex(4096);
        let (local_near, mut local_far) = tokio::io::duplex(4096);
        let ws = WebSocketStream::from_raw_socket(ws_near, Role::Client, None).await;
        let task = tokio::spawn(relay(ws, local_near));
        let mut server = WebSocketStream::from_raw_socket(ws_far, Role::Server, None).await;
        server
            .send(Message::Binary(b"RFB 003.008\n".to_vec().into()))
            .await
            .expect("send");
        let mut got = [0u8; 12];
        local_far.read_exact(&mut got).await.expect("read");
        assert_eq!(&got, b"RFB 003.008\n");
        local_far.write_all(b"RFB 003.008\n").await.expect("write");
        assert_eq!(
            server.next().await.and_then(Result::ok),
            Some(Message::Binary(b"RFB 003.008\n".to_vec().into()))
        );
        drop(local_far);
        assert_eq!(task.await.expect("relay"), Ended::Local);
    }
}
