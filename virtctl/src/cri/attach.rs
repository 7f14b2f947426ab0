//! The stream behind the CRI's Attach: what `kubectl attach -it` and `crictl attach` follow to
//! reach a container's stdin and stdout. The runtime's streaming server (containerd's, on
//! localhost) speaks Kubernetes' channel protocol over WebSocket: every binary message starts
//! with one byte naming the stream (0 stdin, 1 stdout, 2 stderr, 3 error, 4 terminal size).
//! For a virtshim compute container, stdin and stdout are the VM's serial console.

use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::WebSocketStream;

/// The channel protocol version asked for; containerd's streaming server serves it.
pub const PROTOCOL: &str = "v4.channel.k8s.io";

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;

/// What can go wrong opening the stream.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the CRI's attach URL {0:?} is not http://HOST:PORT/…; a TLS streaming server is not supported")]
    Url(String),
    #[error("connecting to the CRI's streaming server at {address}: {source}")]
    Connect {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("opening the attach stream at {url}: {source}")]
    Handshake {
        url: String,
        #[source]
        source: Box<tokio_tungstenite::tungstenite::Error>,
    },
}

/// Connects to the streaming URL Attach gave, asking for [`PROTOCOL`].
pub async fn open(url: &str) -> Result<WebSocketStream<TcpStream>, Error> {
    let address = url
        .strip_prefix("http://")
        .and_then(|rest| rest.split('/').next())
        .filter(|a| !a.is_empty())
        .ok_or_else(|| Error::Url(url.to_owned()))?;
    let tcp = TcpStream::connect(address)
        .await
        .map_err(|source| Error::Connect {
            address: address.to_owned(),
            source,
        })?;
    let handshake = |source| Error::Handshake {
        url: url.to_owned(),
        source: Box::new(source),
    };
    let mut request = url
        .replacen("http://", "ws://", 1)
        .into_client_request()
        .map_err(handshake)?;
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        tokio_tungstenite::tungstenite::http::HeaderValue::from_static(PROTOCOL),
    );
    let (socket, _) = tokio_tungstenite::client_async(request, tcp)
        .await
        .map_err(handshake)?;
    Ok(socket)
}

/// The message carrying `bytes` to the container's stdin.
pub fn stdin_message(bytes: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(bytes.len() + 1);
    message.push(STDIN);
    message.extend_from_slice(bytes);
    message
}

/// What one message from the streaming server carries.
#[derive(Debug, PartialEq, Eq)]
pub enum Output<'a> {
    /// Bytes the container wrote (stdout or stderr).
    Data(&'a [u8]),
    /// The server's closing status (a Kubernetes `Status` as JSON); empty when all went well.
    Status(&'a [u8]),
    /// Anything else (an empty message, a channel this client does not use).
    Other,
}

/// Reads one binary message of the channel protocol.
pub fn parse(message: &[u8]) -> Output<'_> {
    match message.split_first() {
        Some((&STDOUT | &STDERR, data)) => Output::Data(data),
        Some((&ERROR, status)) => Output::Status(status),
        _ => Output::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_framing() {
        assert_eq!(stdin_message(b"ls\r"), b"\x00ls\r");
        assert_eq!(parse(b"\x01hello"), Output::Data(b"hello"));
        assert_eq!(parse(b"\x02oops"), Output::Data(b"oops"));
        assert_eq!(parse(b"\x03{}"), Output::Status(b"{}"));
        assert_eq!(parse(b""), Output::Other);
        assert_eq!(parse(b"\x04{}"), Output::Other);
    }

    #[tokio::test]
    async fn urls_that_are_not_plain_http_are_refused() {
        for url in [
            "https://127.0.0.1:1/attach/x",
            "http:///attach/x",
            "nonsense",
        ] {
            assert!(matches!(open(url).await, Err(Error::Url(_))), "{url}");
        }
    }
}
