//! The WebSocket half of console and VNC: checking the upgrade request (pure), and relaying
//! frames between `virtctl` (through the apiserver) and the handler, byte for byte.

use super::status::ApiError;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// The close frame `virtctl` gets when the handler's side ends without one (its pod deleted or
/// its node gone): a plain close would read as a normal end, and the user would not learn
/// that the console was cut rather than closed by the VM.
fn handler_lost() -> Message {
    Message::Close(Some(CloseFrame {
        code: CloseCode::Error,
        reason: "lost the connection to virtshim-handler on the VM's node".into(),
    }))
}

/// An upgrade request that is not KubeVirt's WebSocket (the same check the handler makes:
/// `virtshim_wire::websocket`) is a bad request.
pub fn refused_upgrade(error: virtshim_http::websocket::UpgradeError) -> ApiError {
    ApiError::bad_request(error.to_string())
}

/// How a relay ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// `virtctl`'s side closed.
    ClientClosed,
    /// The handler's side closed (the VM's console closed, or another session took over).
    HandlerClosed,
    Failed(String),
}

/// Relays frames between `client` and `handler` until either side closes; a close frame from
/// one side is passed on to the other.
pub async fn relay<C, H>(client: WebSocketStream<C>, handler: WebSocketStream<H>) -> Ended
where
    C: AsyncRead + AsyncWrite + Unpin,
    H: AsyncRead + AsyncWrite + Unpin,
{
    let (mut client_tx, mut client_rx) = client.split();
    let (mut handler_tx, mut handler_rx) = handler.split();
    let ended = loop {
        tokio::select! {
            from_client = client_rx.next() => match from_client {
                Some(Ok(message @ (Message::Binary(_) | Message::Text(_)))) => {
                    if let Err(e) = handler_tx.send(message).await {
                        break Ended::Failed(format!("writing to the handler: {e}"));
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    let _ = handler_tx.send(Message::Close(frame)).await;
                    break Ended::ClientClosed;
                }
                None => {
                    let _ = handler_tx.send(Message::Close(None)).await;
                    break Ended::ClientClosed;
                }
                // Pings are answered by the WebSocket layer.
                Some(Ok(_)) => {}
                Some(Err(e)) => break Ended::Failed(format!("reading from the client: {e}")),
            },
            from_handler = handler_rx.next() => match from_handler {
                Some(Ok(message @ (Message::Binary(_) | Message::Text(_)))) => {
                    if let Err(e) = client_tx.send(message).await {
                        break Ended::Failed(format!("writing to the client: {e}"));
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    let _ = client_tx.send(Message::Close(frame)).await;
                    break Ended::HandlerClosed;
                }
                None => {
                    let _ = client_tx.send(handler_lost()).await;
                    break Ended::HandlerClosed;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    let _ = client_tx.send(handler_lost()).await;
                    break Ended::Failed(format!("reading from the handler: {e}"));
                }
            },
        }
    };
    let _ = client_tx.close().await;
    let _ = handler_tx.close().await;
    ended
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_tungstenite::tungstenite::protocol::Role;

    #[tokio::test]
    async fn relay_passes_bytes_both_ways_and_closes() {
        let (client_near, client_far) = tokio::io::duplex(1024);
        let (handler_near, handler_far) = tokio::io::duplex(1024);
        let client_side = WebSocketStream::from_raw_socket(client_near, Role::Server, None).await;
        let handler_side = WebSocketStream::from_raw_socket(handler_near, Role::Client, None).await;
        let relay = tokio::spawn(relay(client_side, handler_side));
        let mut virtctl = WebSocketStream::from_raw_socket(client_far, Role::Client, None).await;
        let mut vm = WebSocketStream::from_raw_socket(handler_far, Role::Server, None).await;
        virtctl
            .send(Message::Binary(b"ls\r".to_vec().into()))
            .await
            .expect("send");
        assert_eq!(
            vm.next().await.and_then(Result::ok),
            Some(Message::Binary(b"ls\r".to_vec().into()))
        );
        vm.send(Message::Binary(b"bin etc\r\n".to_vec().into()))
            .await
            .expect("send");
        assert_eq!(
            virtctl.next().await.and_then(Result::ok),
            Some(Message::Binary(b"bin etc\r\n".to_vec().into()))
        );
        vm.close(None).await.expect("close");
        assert!(matches!(
            virtctl.next().await,
            Some(Ok(Message::Close(_))) | None
        ));
        assert_eq!(relay.await.expect("relay"), Ended::HandlerClosed);
    }

    /// The handler's connection cut without a close frame (its pod deleted): virtctl gets a
    /// close that says so, not a normal one.
    #[tokio::test]
    async fn a_lost_handler_is_an_abnormal_close_that_says_so() {
        let (client_near, client_far) = tokio::io::duplex(1024);
        let (handler_near, handler_far) = tokio::io::duplex(1024);
        let client_side = WebSocketStream::from_raw_socket(client_near, Role::Server, None).await;
        let handler_side = WebSocketStream::from_raw_socket(handler_near, Role::Client, None).await;
        let relay = tokio::spawn(relay(client_side, handler_side));
        let mut virtctl = WebSocketStream::from_raw_socket(client_far, Role::Client, None).await;
        drop(handler_far);
        match virtctl.next().await {
            Some(Ok(Message::Close(Some(frame)))) => {
                assert_eq!(frame.code, CloseCode::Error);
                assert!(
                    frame.reason.contains("virtshim-handler"),
                    "{}",
                    frame.reason
                );
            }
            other => panic!("expected an abnormal close frame, got {other:?}"),
        }
        assert!(matches!(
            relay.await.expect("relay"),
            Ended::Failed(_) | Ended::HandlerClosed
        ));
    }
}
