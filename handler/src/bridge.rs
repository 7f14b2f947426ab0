//! One WebSocket ↔ one byte stream (a VM's unix socket, or a TCP connection to the guest), byte
//! for byte: what `plain.kubevirt.io` means. Binary (and, leniently, text) frames from the client
//! are written to the stream; what the stream says goes back as binary frames. A session ends
//! when either side closes, or when it is replaced.

use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// How a session ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    ClientClosed,
    SocketClosed,
    /// Another session took over (a console has one user at a time, as in KubeVirt).
    Replaced,
    Failed(String),
}

/// Pipes `ws` and `socket` into each other until one ends or `replaced` fires.
pub async fn bridge<S, T>(
    ws: WebSocketStream<S>,
    socket: T,
    mut replaced: oneshot::Receiver<()>,
) -> Ended
where
    S: AsyncRead + AsyncWrite + Unpin,
    T: AsyncRead + AsyncWrite + Unpin,
{
    let (mut ws_tx, mut ws_rx) = ws.split();
    let (mut from_vm, mut to_vm) = tokio::io::split(socket);
    let mut buf = vec![0u8; 32 * 1024];
    let ended = loop {
        tokio::select! {
            message = ws_rx.next() => match message {
                Some(Ok(Message::Binary(data))) => {
                    if let Err(e) = to_vm.write_all(&data).await {
                        break Ended::Failed(format!("writing to the VM: {e}"));
                    }
                }
                Some(Ok(Message::Text(text))) => {
                    if let Err(e) = to_vm.write_all(text.as_bytes()).await {
                        break Ended::Failed(format!("writing to the VM: {e}"));
                    }
                }
                Some(Ok(Message::Close(_))) | None => break Ended::ClientClosed,
                // Pings are answered by the WebSocket layer.
                Some(Ok(_)) => {}
                Some(Err(e)) => break Ended::Failed(format!("reading from the client: {e}")),
            },
            read = from_vm.read(&mut buf) => match read {
                Ok(0) => break Ended::SocketClosed,
                Ok(n) => {
                    if let Err(e) = ws_tx.send(Message::Binary(buf[..n].to_vec().into())).await {
                        break Ended::Failed(format!("writing to the client: {e}"));
                    }
                }
                Err(e) => break Ended::Failed(format!("reading from the VM: {e}")),
            },
            _ = &mut replaced => break Ended::Replaced,
        }
    };
    let reason = match &ended {
        Ended::Replaced => Some(CloseFrame {
            code: CloseCode::Policy,
            reason: "another client connected to this console".into(),
        }),
        Ended::SocketClosed => Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "the VM closed the connection".into(),
        }),
        _ => None,
    };
    if ended != Ended::ClientClosed {
        let _ = ws_tx.send(Message::Close(reason)).await;
    }
    let _ = ws_tx.close().await;
    ended
}
