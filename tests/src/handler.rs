//! Talking to `virtshim-handler` as the controller does, for tests and benchmarks: a test PKI
//! (a CA issuing the handler's serving certificate and client certificates), a handler served
//! in-process, and mutual-TLS connections, plain HTTP and WebSockets (`plain.kubevirt.io`).

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tungstenite::client::IntoClientRequest;
use virtshim_handler::server::{serve, Handler};
use virtshim_handler::tasks::Tasks;
use virtshim_handler::tls::{server_config, TlsFiles};

/// The name the controller's client certificate carries.
pub const CONTROLLER: &str = "virtshim-controller.virtshim-system.svc";

/// A client identity: certificate and key, PEM.
#[derive(Debug)]
pub struct Identity {
    pub cert: String,
    pub key: String,
}

/// The test PKI: one CA issuing the handler's serving certificate and client certificates.
pub struct Pki {
    pub ca: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki")
            .field("ca", &self.ca)
            .finish_non_exhaustive()
    }
}

impl Pki {
    pub fn new(name: &str) -> Self {
        let key = KeyPair::generate().expect("handler harness");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("handler harness");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = params.self_signed(&key).expect("handler harness").pem();
        let issuer = Issuer::new(params, key);
        Self { ca, issuer }
    }

    pub fn issue(&self, names: &[&str], usage: ExtendedKeyUsagePurpose) -> Identity {
        let key = KeyPair::generate().expect("handler harness");
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("handler harness");
        params.distinguished_name.push(DnType::CommonName, names[0]);
        params.extended_key_usages = vec![usage];
        Identity {
            cert: params
                .signed_by(&key, &self.issuer)
                .expect("handler harness")
                .pem(),
            key: key.serialize_pem(),
        }
    }
}

/// A handler serving in this process, on its own runtime.
#[derive(Debug)]
pub struct RunningHandler {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RunningHandler {
    pub fn start(files: &TlsFiles, run_dir: &Path, containerd: &Path) -> Self {
        let tls = server_config(files, CONTROLLER).expect("handler harness");
        let handler = Arc::new(Handler::new(run_dir, Tasks::new(containerd, "k8s.io")));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("handler harness");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("handler harness");
                addr_tx
                    .send(listener.local_addr().expect("handler harness"))
                    .expect("handler harness");
                serve(listener, tls, handler, async {
                    let _ = stopped.await;
                })
                .await;
            });
        });
        Self {
            addr: addr_rx.recv().expect("handler harness"),
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            thread.join().expect("handler harness");
        }
    }
}

impl Drop for RunningHandler {
    fn drop(&mut self) {
        self.stop();
    }
}

pub type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A TLS connection to the handler, trusting `ca`, presenting `identity` if any.
pub fn connect(addr: SocketAddr, ca: &str, identity: Option<&Identity>) -> std::io::Result<Tls> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.as_bytes()).expect("handler harness"))
        .expect("handler harness");
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("handler harness")
        .with_root_certificates(roots);
    let config = match identity {
        Some(id) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(id.cert.as_bytes()).expect("handler harness")],
                PrivateKeyDer::from_pem_slice(id.key.as_bytes()).expect("handler harness"),
            )
            .expect("handler harness"),
        None => builder.with_no_client_auth(),
    };
    let connection = rustls::ClientConnection::new(
        Arc::new(config),
        ServerName::try_from("localhost").expect("handler harness"),
    )
    .expect("handler harness");
    let tcp = TcpStream::connect(addr)?;
    tcp.set_nodelay(true)?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut tls = rustls::StreamOwned::new(connection, tcp);
    // Finish the handshake now (TLS 1.3 reports a refused client certificate on first read).
    tls.write_all(b"")?;
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock)?;
    }
    Ok(tls)
}

/// A plain HTTP/1.1 request over `tls`; the status code and body.
pub fn http(mut tls: Tls, method: &str, path: &str) -> (u16, String) {
    write!(
        tls,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .expect("handler harness");
    let mut response = Vec::new();
    let _ = tls.read_to_end(&mut response);
    let response = String::from_utf8_lossy(&response).into_owned();
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (code, body)
}

pub type Ws = tungstenite::WebSocket<Tls>;

/// Opens the WebSocket at `path`, offering `plain.kubevirt.io`.
pub fn websocket(tls: Tls, path: &str) -> Result<Ws, String> {
    let mut request = format!("wss://localhost{path}")
        .into_client_request()
        .expect("handler harness");
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "plain.kubevirt.io".parse().expect("handler harness"),
    );
    let (ws, response) = tungstenite::client(request, tls).map_err(|e| e.to_string())?;
    assert_eq!(
        response.headers()["Sec-WebSocket-Protocol"],
        "plain.kubevirt.io"
    );
    ws.get_ref()
        .sock
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("handler harness");
    Ok(ws)
}

/// A handler's TLS files in `dir` (serving certificate for `localhost`, the controller's CA),
/// the PKI, and the controller's client identity.
pub fn setup(dir: &Path) -> (Pki, TlsFiles, Identity) {
    let pki = Pki::new("virtshim test CA");
    let serving = pki.issue(&["localhost"], ExtendedKeyUsagePurpose::ServerAuth);
    let controller = pki.issue(&[CONTROLLER], ExtendedKeyUsagePurpose::ClientAuth);
    let files = TlsFiles {
        cert: dir.join("tls.crt"),
        key: dir.join("tls.key"),
        client_ca: dir.join("ca.crt"),
    };
    std::fs::write(&files.cert, &serving.cert).expect("handler harness");
    std::fs::write(&files.key, &serving.key).expect("handler harness");
    std::fs::write(&files.client_ca, &pki.ca).expect("handler harness");
    (pki, files, controller)
}

/// One read from a WebSocket whose socket has a read timeout: `Some(bytes)` for a binary frame,
/// `None` when nothing came in time (or a control frame came), `Err` when the peer closed the
/// session or the read failed.
pub fn read_frame<S: Read + Write>(
    ws: &mut tungstenite::WebSocket<S>,
) -> Result<Option<Vec<u8>>, String> {
    use tungstenite::Message;
    match ws.read() {
        Ok(Message::Binary(data)) => Ok(Some(data.to_vec())),
        Ok(Message::Close(frame)) => Err(format!("closed: {frame:?}")),
        Ok(_) => Ok(None),
        Err(tungstenite::Error::Io(e))
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e.to_string()),
    }
}
