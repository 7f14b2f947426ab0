//! `virtctl console VMI`: the serial console in the terminal. Waits (retrying every second on
//! the API's 400) while the VMI starts, for at most `--timeout` minutes; the terminal is raw
//! while connected, so every key reaches the guest; Ctrl+] leaves.

use super::{block_on, ClusterArgs};
use anyhow::{Context as _, Result};
use futures::{SinkExt, StreamExt};
use std::io::Read;
use std::os::fd::AsFd;
use std::process::ExitCode;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use virtctl::cluster;

/// Ctrl+] (also what many terminals send for Ctrl+5).
pub const ESCAPE: u8 = 0x1d;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The VirtualMachineInstance.
    pub name: String,
    /// Minutes to wait for the VMI to run.
    #[arg(long, default_value_t = 5)]
    pub timeout: u64,
}

/// What the keyboard gave.
#[derive(Debug, PartialEq, Eq)]
pub enum Input {
    Bytes(Vec<u8>),
    /// Ctrl+] was typed: leave.
    Escape,
}

/// Splits what one read gave at the escape key: the bytes before it go to the guest.
pub fn split_escape(chunk: &[u8]) -> Vec<Input> {
    match chunk.iter().position(|b| *b == ESCAPE) {
        None => vec![Input::Bytes(chunk.to_vec())],
        Some(0) => vec![Input::Escape],
        Some(i) => vec![Input::Bytes(chunk[..i].to_vec()), Input::Escape],
    }
}

/// The terminal in raw mode while this lives (when standard input is a terminal); dropping it,
/// on the way out or on an error, restores the mode it had.
pub struct RawTerminal {
    saved: Option<rustix::termios::Termios>,
}

impl RawTerminal {
    pub fn enable() -> Result<Self> {
        let stdin = std::io::stdin();
        if !rustix::termios::isatty(stdin.as_fd()) {
            return Ok(Self { saved: None });
        }
        let saved =
            rustix::termios::tcgetattr(stdin.as_fd()).context("reading the terminal mode")?;
        let mut raw = saved.clone();
        raw.make_raw();
        rustix::termios::tcsetattr(stdin.as_fd(), rustix::termios::OptionalActions::Now, &raw)
            .context("making the terminal raw")?;
        Ok(Self { saved: Some(saved) })
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        if let Some(saved) = &self.saved {
            let stdin = std::io::stdin();
            if let Err(e) = rustix::termios::tcsetattr(
                stdin.as_fd(),
                rustix::termios::OptionalActions::Now,
                saved,
            ) {
                eprintln!("cannot restore the terminal: {e}");
            }
        }
    }
}

/// Reads standard input on a thread of its own (a blocking read cannot be cancelled); `None`
/// from the channel means end of input.
pub fn keyboard() -> tokio::sync::mpsc::Receiver<Input> {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin();
        let mut buf = [0u8; 1024];
        loop {
            let n = match stdin.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            for input in split_escape(&buf[..n]) {
                let leave = input == Input::Escape;
                if tx.blocking_send(input).is_err() || leave {
                    return;
                }
            }
        }
    });
    rx
}

pub fn run(args: &Args, cluster_args: &ClusterArgs) -> Result<ExitCode> {
    block_on(async {
        let (client, ns) = cluster_args.connect().await?;
        let path = cluster::subresource_path(&ns, "virtualmachineinstances", &args.name, "console");
        let timeout = Duration::from_secs(args.timeout.saturating_mul(60));
        let ws = cluster::open_stream(&client, &path, timeout)
            .await
            .map_err(|e| anyhow::anyhow!("connecting to the console of {}: {e}", args.name))?;
        let terminal = RawTerminal::enable()?;
        eprint!(
            "Connected to the console of {}. Type Ctrl+] to leave.\r\n",
            args.name
        );
        let (mut tx, mut rx) = ws.split();
        let mut keys = keyboard();
        let mut stdout = tokio::io::stdout();
        let mut broken = None;
        loop {
            tokio::select! {
                key = keys.recv() => match key {
                    Some(Input::Bytes(bytes)) => {
                        if let Err(e) = tx.send(Message::Binary(bytes.into())).await {
                            broken = Some(e.to_string());
                            break;
                        }
                    }
                    Some(Input::Escape) | None => {
                        let _ = tx.send(Message::Close(None)).await;
                        break;
                    }
                },
                message = rx.next() => match message {
                    Some(Ok(Message::Binary(data))) => {
                        stdout.write_all(&data).await?;
                        stdout.flush().await?;
                    }
                    Some(Ok(Message::Text(text))) => {
                        stdout.write_all(text.as_bytes()).await?;
                        stdout.flush().await?;
                    }
                    Some(Ok(Message::Close(frame))) => {
                        if let Some(frame) = frame.filter(|f| f.code != CloseCode::Normal) {
                            broken = Some(format!("{} {}", u16::from(frame.code), frame.reason));
                        }
                        break;
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        broken = Some(e.to_string());
                        break;
                    }
                    None => {
                        broken = Some("the connection closed".into());
                        break;
                    }
                },
            }
        }
        drop(terminal);
        eprintln!();
        if let Some(why) = broken {
            eprintln!(
                "Disconnected from the console ({why}): the VM may have powered off, another \
                 client may have taken the console, or the network failed."
            );
            return Ok(ExitCode::FAILURE);
        }
        Ok(ExitCode::SUCCESS)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_table() {
        let cases: [(&[u8], Vec<Input>); 5] = [
            (b"ls\r", vec![Input::Bytes(b"ls\r".to_vec())]),
            (&[ESCAPE], vec![Input::Escape]),
            (
                b"ab\x1dcd",
                vec![Input::Bytes(b"ab".to_vec()), Input::Escape],
            ),
            (b"\x1dafter", vec![Input::Escape]),
            // Ctrl+C goes to the guest.
            (&[0x03], vec![Input::Bytes(vec![0x03])]),
        ];
        for (chunk, expected) in cases {
            assert_eq!(split_escape(chunk), expected, "{chunk:?}");
        }
    }
}
