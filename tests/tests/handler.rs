//! `virtshim-handler` against a real VM (real containerd, shim, libvirt, QEMU), as the
//! controller uses it: mutual TLS with the controller's client certificate; the serial console
//! and VNC over WebSocket (`plain.kubevirt.io`); one console session at a time; pause and unpause
//! through containerd's task API; clients without the controller's certificate refused at the
//! handshake; a handler restarted during an open console leaves the VM running and serves a new
//! console.

#![allow(clippy::unwrap_used)]

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tungstenite::client::IntoClientRequest;
use tungstenite::Message;
use virtctl::local;
use virtshim_api::manifest::parse_documents;
use virtshim_handler::server::{serve, Handler};
use virtshim_handler::tasks::Tasks;
use virtshim_handler::tls::{server_config, TlsFiles};
use virtshim_tests::vm;

const CONTROLLER: &str = "virtshim-controller.virtshim-system.svc";

/// A client identity: certificate and key, PEM.
struct Identity {
    cert: String,
    key: String,
}

/// The test PKI: one CA issuing the handler's serving certificate and client certificates.
struct Pki {
    ca: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Pki {
    fn new(name: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = params.self_signed(&key).unwrap().pem();
        let issuer = Issuer::new(params, key);
        Self { ca, issuer }
    }

    fn issue(&self, names: &[&str], usage: ExtendedKeyUsagePurpose) -> Identity {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name.push(DnType::CommonName, names[0]);
        params.extended_key_usages = vec![usage];
        Identity {
            cert: params.signed_by(&key, &self.issuer).unwrap().pem(),
            key: key.serialize_pem(),
        }
    }
}

/// A handler serving in this process, on its own runtime.
struct RunningHandler {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RunningHandler {
    fn start(files: &TlsFiles, run_dir: &Path, containerd: &Path) -> Self {
        let tls = server_config(files, CONTROLLER).unwrap();
        let handler = Arc::new(Handler::new(run_dir, Tasks::new(containerd, "k8s.io")));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                serve(listener, tls, handler, async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
            });
        });
        Self {
            addr: addr_rx.recv().unwrap(),
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
    }
}

impl Drop for RunningHandler {
    fn drop(&mut self) {
        self.stop();
    }
}

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A TLS connection to the handler, trusting `ca`, presenting `identity` if any.
fn connect(addr: SocketAddr, ca: &str, identity: Option<&Identity>) -> std::io::Result<Tls> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.as_bytes()).unwrap())
        .unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match identity {
        Some(id) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(id.cert.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(id.key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    let connection =
        rustls::ClientConnection::new(Arc::new(config), ServerName::try_from("localhost").unwrap())
            .unwrap();
    let tcp = TcpStream::connect(addr)?;
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
fn http(mut tls: Tls, method: &str, path: &str) -> (u16, String) {
    write!(
        tls,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
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

type Ws = tungstenite::WebSocket<Tls>;

/// Opens the WebSocket at `path`, offering `plain.kubevirt.io`.
fn websocket(tls: Tls, path: &str) -> Result<Ws, String> {
    let mut request = format!("wss://localhost{path}")
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "plain.kubevirt.io".parse().unwrap(),
    );
    let (ws, response) = tungstenite::client(request, tls).map_err(|e| e.to_string())?;
    assert_eq!(
        response.headers()["Sec-WebSocket-Protocol"],
        "plain.kubevirt.io"
    );
    ws.get_ref()
        .sock
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    Ok(ws)
}

/// Reads from the console until `text` appears; `Err` when the server closed the session.
fn read_until(ws: &mut Ws, text: &str, timeout: Duration) -> Result<(), String> {
    let started = Instant::now();
    let mut seen = String::new();
    while started.elapsed() < timeout {
        match ws.read() {
            Ok(Message::Binary(data)) => {
                seen.push_str(&String::from_utf8_lossy(&data));
                if seen.contains(text) {
                    return Ok(());
                }
            }
            Ok(Message::Close(frame)) => return Err(format!("closed: {frame:?}")),
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(format!("{e}")),
        }
    }
    Err(format!("no {text:?} in: {seen}"))
}

fn type_line(ws: &mut Ws, line: &str) {
    ws.send(Message::Binary(line.as_bytes().to_vec().into()))
        .unwrap();
}

/// The RFB bytes of a VNC WebSocket, whatever the framing.
struct Rfb {
    ws: Ws,
    buf: std::collections::VecDeque<u8>,
}

impl Rfb {
    fn take(&mut self, n: usize) -> Vec<u8> {
        let started = Instant::now();
        while self.buf.len() < n {
            assert!(started.elapsed() < Duration::from_secs(30), "VNC stalled");
            match self.ws.read() {
                Ok(Message::Binary(data)) => self.buf.extend(data.iter()),
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!("VNC: {e} (wanted {n} bytes, have {})", self.buf.len()),
            }
        }
        self.buf.drain(..n).collect()
    }

    fn send(&mut self, bytes: &[u8]) {
        self.ws
            .send(Message::Binary(bytes.to_vec().into()))
            .unwrap();
    }
}

/// RFB 3.8 without authentication up to one full framebuffer update; whether any pixel is
/// not black.
fn vnc_screen_has_content(ws: Ws) -> bool {
    let mut rfb = Rfb {
        ws,
        buf: Default::default(),
    };
    assert_eq!(rfb.take(12), b"RFB 003.008\n");
    rfb.send(b"RFB 003.008\n");
    let count = rfb.take(1)[0] as usize;
    let types = rfb.take(count);
    assert!(types.contains(&1), "no 'None' security type: {types:?}");
    rfb.send(&[1]);
    assert_eq!(rfb.take(4), [0, 0, 0, 0], "security result");
    rfb.send(&[1]); // ClientInit, shared
    let init = rfb.take(24);
    let (width, height) = (
        u16::from_be_bytes([init[0], init[1]]),
        u16::from_be_bytes([init[2], init[3]]),
    );
    let bytes_per_pixel = (init[4] / 8) as usize;
    let name_len = u32::from_be_bytes([init[20], init[21], init[22], init[23]]) as usize;
    rfb.take(name_len);
    // SetEncodings: Raw only; then a full (non-incremental) update request.
    rfb.send(&[2, 0, 0, 1, 0, 0, 0, 0]);
    let mut request = vec![3, 0, 0, 0, 0, 0];
    request.extend_from_slice(&width.to_be_bytes());
    request.extend_from_slice(&height.to_be_bytes());
    rfb.send(&request);
    loop {
        let header = rfb.take(4);
        assert_eq!(header[0], 0, "expected a FramebufferUpdate");
        let rects = u16::from_be_bytes([header[2], header[3]]);
        let mut content = false;
        for _ in 0..rects {
            let rect = rfb.take(12);
            let (w, h) = (
                u16::from_be_bytes([rect[4], rect[5]]) as usize,
                u16::from_be_bytes([rect[6], rect[7]]) as usize,
            );
            let encoding = i32::from_be_bytes([rect[8], rect[9], rect[10], rect[11]]);
            if encoding != 0 {
                // A pseudo-encoding (desktop size and the like) carries no pixels here.
                continue;
            }
            let pixels = rfb.take(w * h * bytes_per_pixel);
            content |= pixels.iter().any(|&b| b != 0);
        }
        if rects > 0 {
            return content;
        }
    }
}

fn task_status(socket: &Path, id: &str) -> String {
    let out = std::process::Command::new("ctr")
        .arg("--address")
        .arg(socket)
        .args(["-n", "k8s.io", "task", "ls"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.starts_with(id))
        .and_then(|l| l.split_whitespace().nth(2))
        .unwrap_or("")
        .to_owned()
}

#[test]
fn console_vnc_and_pause_through_the_handler() {
    let test = "console_vnc_and_pause_through_the_handler";
    let Some(containerd) = vm::containerd(test) else {
        return;
    };
    let cri = containerd.cri().unwrap();
    // The kernel writes to the VGA console as well, so VNC shows text.
    let yaml = format!(
        "apiVersion: kubevirt.io/v1\nkind: VirtualMachineInstance\nmetadata: {{name: remote, namespace: tenant}}\nspec:\n  domain:\n    memory: {{guest: 192Mi}}\n    devices: {{autoattachPodInterface: false}}\n    firmware:\n      kernelBoot:\n        kernelArgs: console=tty0 console=ttyS0\n        container: {{image: '{}', kernelPath: /boot/vmlinuz, initrdPath: /boot/initrd.img}}\n",
        vm::KERNEL_BOOT_IMAGE
    );
    let plan = local::plan(parse_documents(&yaml).remove(0).unwrap()).unwrap();
    let uid = plan.uid.clone();
    let started =
        local::run(&cri, &plan).unwrap_or_else(|e| panic!("{e}\n{}", containerd.log_tail()));
    vm::wait_for_console(
        &started.console_log(),
        "VIRTSHIM-GUEST-UP",
        Duration::from_secs(90),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", containerd.log_tail()));

    let pki = Pki::new("virtshim test CA");
    let serving = pki.issue(&["localhost"], ExtendedKeyUsagePurpose::ServerAuth);
    let controller = pki.issue(&[CONTROLLER], ExtendedKeyUsagePurpose::ClientAuth);
    let impostor = pki.issue(
        &["virtshim-webhook.virtshim-system.svc"],
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let stranger = Pki::new("another CA").issue(&[CONTROLLER], ExtendedKeyUsagePurpose::ClientAuth);
    let dir = tempfile::tempdir().unwrap();
    let files = TlsFiles {
        cert: dir.path().join("tls.crt"),
        key: dir.path().join("tls.key"),
        client_ca: dir.path().join("ca.crt"),
    };
    std::fs::write(&files.cert, &serving.cert).unwrap();
    std::fs::write(&files.key, &serving.key).unwrap();
    std::fs::write(&files.client_ca, &pki.ca).unwrap();
    let run_dir = Path::new(vm::STATE_ROOT).join("run");
    let mut handler = RunningHandler::start(&files, &run_dir, &containerd.socket());
    let base = "/v1/namespaces/tenant/virtualmachineinstances/remote";
    let console = format!("{base}/console?uid={uid}");

    // Only the controller's certificate opens the door.
    for (who, identity) in [
        ("no certificate", None),
        ("another name from the same CA", Some(&impostor)),
        ("the right name from another CA", Some(&stranger)),
    ] {
        let refused = connect(handler.addr, &pki.ca, identity)
            .map_err(|e| e.to_string())
            .and_then(|tls| websocket(tls, &console).map(|_| ()));
        assert!(refused.is_err(), "{who} was let in");
        println!("{test}: {who}: refused ({})", refused.unwrap_err());
    }

    // The console: typed input reaches the guest, its answer comes back.
    let mut first = websocket(
        connect(handler.addr, &pki.ca, Some(&controller)).unwrap(),
        &console,
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    type_line(&mut first, "echo handler-$((6*7))\n");
    read_until(&mut first, "handler-42", Duration::from_secs(30)).unwrap();

    // One console user at a time: a second session closes the first.
    let mut second = websocket(
        connect(handler.addr, &pki.ca, Some(&controller)).unwrap(),
        &console,
    )
    .unwrap();
    let closed = read_until(&mut first, "never printed", Duration::from_secs(10)).unwrap_err();
    assert!(
        closed.contains("closed"),
        "the first session was not closed: {closed}"
    );
    type_line(&mut second, "echo second-$((6*7))\n");
    read_until(&mut second, "second-42", Duration::from_secs(30)).unwrap();

    // VNC: an RFB server with a non-blank screen.
    let vnc = websocket(
        connect(handler.addr, &pki.ca, Some(&controller)).unwrap(),
        &format!("{base}/vnc?uid={uid}"),
    )
    .unwrap();
    assert!(vnc_screen_has_content(vnc), "the VNC framebuffer is blank");

    // Pause and unpause reach containerd's task.
    let id = started.compute_id().to_owned();
    let tls = || connect(handler.addr, &pki.ca, Some(&controller)).unwrap();
    assert_eq!(
        http(tls(), "PUT", &format!("{base}/pause?uid={uid}")).0,
        200
    );
    assert_eq!(task_status(&containerd.socket(), &id), "PAUSED");
    assert_eq!(
        http(tls(), "PUT", &format!("{base}/unpause?uid={uid}")).0,
        200
    );
    assert_eq!(task_status(&containerd.socket(), &id), "RUNNING");
    type_line(&mut second, "echo resumed-$((6*7))\n");
    read_until(&mut second, "resumed-42", Duration::from_secs(30)).unwrap();

    // Errors: another VMI of the same name (UID), a VMI not on this node, no subprotocol.
    let (code, body) = http(tls(), "PUT", &format!("{base}/pause?uid=not-this-one"));
    assert_eq!(code, 409, "{body}");
    let (code, body) = http(
        tls(),
        "GET",
        "/v1/namespaces/tenant/virtualmachineinstances/elsewhere/console",
    );
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("not running on this node"), "{body}");
    let (code, _) = http(tls(), "GET", &console);
    assert_eq!(code, 400, "a plain GET is not a WebSocket");

    // Restarting the handler while a console is open: the session ends, the VM does not, and
    // a new handler serves a new console.
    handler.stop();
    assert!(read_until(&mut second, "never printed", Duration::from_secs(10)).is_err());
    assert_eq!(task_status(&containerd.socket(), &id), "RUNNING");
    let handler = RunningHandler::start(&files, &run_dir, &containerd.socket());
    let mut third = websocket(
        connect(handler.addr, &pki.ca, Some(&controller)).unwrap(),
        &console,
    )
    .unwrap();
    type_line(&mut third, "echo again-$((6*7))\n");
    read_until(&mut third, "again-42", Duration::from_secs(30)).unwrap();
    drop(third);
    drop(handler);

    cri.stop_pod_sandbox(&started.sandbox_id).unwrap();
    cri.remove_pod_sandbox(&started.sandbox_id).unwrap();
    vm::assert_nothing_left(&started.sandbox_id);
    containerd.stop().unwrap();
}
