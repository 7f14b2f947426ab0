//! The serial console: the shim connects to QEMU's serial socket while the VM's CPUs are still
//! paused, so it owns the console from the first byte, and copies it to the container's stdout
//! (which containerd turns into the CRI log: `kubectl logs` / `crictl logs`).
//!
//! Writes to stdout never block: a stalled log reader must not stall the guest, so when the
//! pipe is full the bytes are dropped (and counted) rather than queued without bound.

use crate::error::{Error, Result};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::thread::JoinHandle;
use std::time::Duration;

/// The running copy from the serial socket to stdout.
#[derive(Debug)]
pub struct Console {
    thread: Option<JoinHandle<()>>,
}

impl Console {
    /// Connects to the serial socket and starts copying to the stdout FIFO (if any).
    pub fn start(serial_socket: &Path, stdout: &str, container_id: &str) -> Result<Self> {
        let mut stream = None;
        for _ in 0..50 {
            match UnixStream::connect(serial_socket) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        let mut stream = stream.ok_or_else(|| {
            Error::path(
                "connecting to the serial console",
                serial_socket,
                std::io::Error::from(ErrorKind::NotFound),
            )
        })?;
        // O_RDWR keeps the FIFO open across a restart of containerd (no EPIPE when the reader
        // goes away); O_NONBLOCK keeps a full FIFO from blocking the guest.
        let mut out = if stdout.is_empty() {
            None
        } else {
            Some(
                std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .custom_flags(nix::libc::O_NONBLOCK)
                    .open(stdout)
                    .map_err(|e| Error::path("opening the container's stdout", stdout, e))?,
            )
        };
        let id = container_id.to_owned();
        let thread = std::thread::Builder::new()
            .name("console".into())
            .spawn(move || {
                let mut buf = [0u8; 16 * 1024];
                let mut dropped = 0u64;
                loop {
                    let n = match stream.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                        Err(_) => break,
                    };
                    if let Some(out) = out.as_mut() {
                        let mut data = &buf[..n];
                        while !data.is_empty() {
                            match out.write(data) {
                                Ok(written) => data = &data[written..],
                                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                                Err(_) => {
                                    dropped += data.len() as u64;
                                    break;
                                }
                            }
                        }
                    }
                }
                if dropped > 0 {
                    tracing::warn!(container_id = %id, dropped, "console bytes dropped: nobody read the container's stdout");
                }
            })
            .map_err(|e| Error::io("starting the console thread", e))?;
        Ok(Self {
            thread: Some(thread),
        })
    }

    /// Waits for the copy to finish (QEMU closed the socket).
    pub fn join(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
