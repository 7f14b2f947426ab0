//! The serial console. The shim connects to QEMU's serial socket while the VM's CPUs are still
//! paused, so it owns the console from the first byte, and is its one writer and reader:
//!
//! - output goes to the container's stdout (which containerd turns into the CRI log: `kubectl
//!   logs`, `crictl logs`) and to every client of the pod's `console.sock` (the node daemon's
//!   `virtctl console`);
//! - input comes from the container's stdin (`kubectl attach -it`, `crictl attach`) and from
//!   every `console.sock` client.
//!
//! Output never blocks: a stalled log reader or console client must not stall the guest, so
//! bytes that do not fit are dropped (and counted) rather than queued without bound.

use crate::error::{Error, Result};
use nix::sys::socket::{send, MsgFlags};
use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Where the console's bytes come from and go to.
#[derive(Clone, Debug, Default)]
pub struct Endpoints {
    /// The container's stdout FIFO ("" when containerd gave none).
    pub stdout: String,
    /// The container's stdin FIFO ("" when the container has no stdin).
    pub stdin: String,
    /// The unix socket the shim listens on for console clients.
    pub listen: PathBuf,
}

/// The running console.
#[derive(Debug)]
pub struct Console {
    output: Option<JoinHandle<()>>,
    listen: PathBuf,
}

type Clients = Arc<Mutex<Vec<UnixStream>>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// Copies everything from `input` to the guest until `input` ends.
fn feed(mut input: impl Read, guest: Arc<Mutex<UnixStream>>) {
    let mut buf = [0u8; 4096];
    loop {
        match input.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if lock(&guest).write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

impl Console {
    /// Connects to the serial socket and starts the copies.
    pub fn start(serial_socket: &Path, endpoints: &Endpoints, container_id: &str) -> Result<Self> {
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
        let mut serial = stream.ok_or_else(|| {
            Error::path(
                "connecting to the serial console",
                serial_socket,
                std::io::Error::from(ErrorKind::NotFound),
            )
        })?;
        let guest = Arc::new(Mutex::new(
            serial
                .try_clone()
                .map_err(|e| Error::io("cloning the console socket", e))?,
        ));
        // O_RDWR keeps the FIFO open across a restart of containerd (no EPIPE when the reader
        // goes away); O_NONBLOCK keeps a full FIFO from blocking the guest.
        let mut stdout = if endpoints.stdout.is_empty() {
            None
        } else {
            Some(
                std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .custom_flags(nix::libc::O_NONBLOCK)
                    .open(&endpoints.stdout)
                    .map_err(|e| {
                        Error::path("opening the container's stdout", &endpoints.stdout, e)
                    })?,
            )
        };
        if !endpoints.stdin.is_empty() {
            // O_RDWR: the read never sees end-of-file when an attach session ends; the next
            // attach writes into the same FIFO.
            let stdin = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&endpoints.stdin)
                .map_err(|e| Error::path("opening the container's stdin", &endpoints.stdin, e))?;
            let guest = guest.clone();
            std::thread::Builder::new()
                .name("console-stdin".into())
                .spawn(move || feed(stdin, guest))
                .map_err(|e| Error::io("starting the console input thread", e))?;
        }

        let clients: Clients = Arc::new(Mutex::new(Vec::new()));
        let _ = std::fs::remove_file(&endpoints.listen);
        let listener = UnixListener::bind(&endpoints.listen)
            .map_err(|e| Error::path("listening for console clients", &endpoints.listen, e))?;
        {
            let clients = clients.clone();
            let guest = guest.clone();
            std::thread::Builder::new()
                .name("console-accept".into())
                .spawn(move || {
                    for client in listener.incoming().flatten() {
                        let Ok(reader) = client.try_clone() else {
                            continue;
                        };
                        lock(&clients).push(client);
                        let guest = guest.clone();
                        let _ = std::thread::Builder::new()
                            .name("console-client".into())
                            .spawn(move || feed(reader, guest));
                    }
                })
                .map_err(|e| Error::io("starting the console listener", e))?;
        }

        let id = container_id.to_owned();
        let output = std::thread::Builder::new()
            .name("console".into())
            .spawn(move || {
                let mut buf = [0u8; 16 * 1024];
                let mut dropped = 0u64;
                loop {
                    let n = match serial.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                        Err(_) => break,
                    };
                    let data = &buf[..n];
                    if let Some(out) = stdout.as_mut() {
                        dropped += write_nonblocking(out, data);
                    }
                    lock(&clients).retain(|client| match send(client.as_raw_fd(), data, MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL) {
                        Ok(_) | Err(nix::errno::Errno::EAGAIN) => true,
                        Err(_) => false,
                    });
                }
                for client in lock(&clients).drain(..) {
                    let _ = client.shutdown(std::net::Shutdown::Both);
                }
                if dropped > 0 {
                    tracing::warn!(container_id = %id, dropped, "console bytes dropped: nobody read the container's stdout");
                }
            })
            .map_err(|e| Error::io("starting the console thread", e))?;
        Ok(Self {
            output: Some(output),
            listen: endpoints.listen.clone(),
        })
    }

    /// Waits for the copy to finish (QEMU closed the socket) and stops taking clients.
    pub fn join(mut self) {
        if let Some(t) = self.output.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.listen);
    }
}

/// Writes what fits without blocking; the number of bytes that did not fit.
fn write_nonblocking(out: &mut std::fs::File, mut data: &[u8]) -> u64 {
    while !data.is_empty() {
        match out.write(data) {
            Ok(written) => data = &data[written..],
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return data.len() as u64,
        }
    }
    0
}
