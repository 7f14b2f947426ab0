//! `virtshim-handler` against a real VM (real containerd, shim, libvirt, QEMU), as the
//! controller uses it: mutual TLS with the controller's client certificate; the serial console
//! and VNC over WebSocket (`plain.kubevirt.io`); one console session at a time; pause and unpause
//! through containerd's task API; clients without the controller's certificate refused at the
//! handshake; a handler restarted during an open console leaves the VM running and serves a new
//! console; a forwarded TCP port of the guest (`virtctl port-forward`, `virtctl ssh`).

#![allow(clippy::unwrap_used)]

use rcgen::ExtendedKeyUsagePurpose;
use std::path::Path;
use std::time::{Duration, Instant};
use tungstenite::Message;
use virtctl::local;
use virtshim_api::manifest::parse_documents;
use virtshim_tests::handler::{
    connect, http, read_frame, setup, websocket, Pki, RunningHandler, Ws, CONTROLLER,
};
use virtshim_tests::vm;

/// Reads from the console until `text` appears; `Err` when the server closed the session.
fn read_until(ws: &mut Ws, text: &str, timeout: Duration) -> Result<(), String> {
    let started = Instant::now();
    let mut seen = String::new();
    while started.elapsed() < timeout {
        if let Some(data) = read_frame(ws)? {
            seen.push_str(&String::from_utf8_lossy(&data));
            if seen.contains(text) {
                return Ok(());
            }
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
            match read_frame(&mut self.ws) {
                Ok(Some(data)) => self.buf.extend(data),
                Ok(None) => {}
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

#[test]
fn console_vnc_and_pause_through_the_handler() {
    let test = "console_vnc_and_pause_through_the_handler";
    let Some(containerd) = vm::containerd(test) else {
        return;
    };
    let cri = containerd.cri().unwrap();
    // The kernel writes to the VGA console as well, so VNC shows text.
    let yaml = vm::kernel_boot_vmi(
        "name: remote, namespace: tenant",
        "192Mi",
        "autoattachPodInterface: false",
        "console=tty0 console=ttyS0",
        "",
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

    let dir = tempfile::tempdir().unwrap();
    let (pki, files, controller) = setup(dir.path());
    let impostor = pki.issue(
        &["virtshim-webhook.virtshim-system.svc"],
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let stranger = Pki::new("another CA").issue(&[CONTROLLER], ExtendedKeyUsagePurpose::ClientAuth);
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
    assert_eq!(containerd.task_status(&id), "PAUSED");
    assert_eq!(
        http(tls(), "PUT", &format!("{base}/unpause?uid={uid}")).0,
        200
    );
    assert_eq!(containerd.task_status(&id), "RUNNING");
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
    assert_eq!(containerd.task_status(&id), "RUNNING");
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

    vm::remove_pod(&cri, &started.sandbox_id);
    containerd.stop().unwrap();
}

#[test]
fn port_forward_through_the_handler() {
    let test = "port_forward_through_the_handler";
    let Some(containerd) = vm::containerd(test) else {
        return;
    };
    let cri = containerd.cri().unwrap();
    // Masquerade with one forwarded port: what the pod's IP passes on to the guest.
    let yaml = vm::kernel_boot_vmi(
        "name: web, namespace: tenant",
        "192Mi",
        "interfaces: [{name: default, masquerade: {}, ports: [{port: 80}]}]",
        "console=ttyS0",
        "  networks: [{name: default, pod: {}}]\n",
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

    let dir = tempfile::tempdir().unwrap();
    let (pki, files, controller) = setup(dir.path());
    let run_dir = Path::new(vm::STATE_ROOT).join("run");
    let handler = RunningHandler::start(&files, &run_dir, &containerd.socket());
    let tls = || connect(handler.addr, &pki.ca, Some(&controller)).unwrap();
    let base = "/v1/namespaces/tenant/virtualmachineinstances/web/portforward";

    // `virtctl port-forward` / `virtctl ssh`: raw bytes both ways over plain.kubevirt.io.
    let mut ws = websocket(tls(), &format!("{base}/80/tcp?uid={uid}")).unwrap();
    ws.send(Message::Binary(
        b"GET /healthz HTTP/1.0\r\n\r\n".to_vec().into(),
    ))
    .unwrap();
    let mut answer = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        match read_frame(&mut ws) {
            Ok(Some(bytes)) => answer.extend_from_slice(&bytes),
            Ok(None) => {}
            // The guest's HTTP/1.0 server closes after answering; so does the session.
            Err(_) => break,
        }
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.") && answer.ends_with("ok\n"),
        "{answer}"
    );

    // A port the pod does not forward, UDP, and nonsense are refused with HTTP codes.
    let Err(refused) = websocket(tls(), &format!("{base}/81/tcp?uid={uid}")) else {
        panic!("port 81 is not forwarded, yet a session opened");
    };
    assert!(refused.contains("503"), "{refused}");
    let (code, body) = http(tls(), "GET", &format!("{base}/53/udp?uid={uid}"));
    assert_eq!(code, 400, "{body}");
    assert!(
        body.contains("UDP port forwarding is not supported"),
        "{body}"
    );
    let (code, body) = http(tls(), "GET", &format!("{base}/0/tcp?uid={uid}"));
    assert_eq!(code, 400, "{body}");
    drop(handler);

    vm::remove_pod(&cri, &started.sandbox_id);
    containerd.stop().unwrap();
}
