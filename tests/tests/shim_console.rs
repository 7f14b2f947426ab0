//! The serial console's inputs and outputs through the real CRI: the pod's `console.sock`
//! (what the node daemon serves to `virtctl console`) takes many clients, each seeing the output
//! and able to type; the container's stdin FIFO (what `kubectl attach -it` / `crictl attach`
//! write to) reaches the guest too, and so does a real CRI Attach through containerd's
//! streaming server; the CRI log keeps everything.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use virtctl::local;
use virtshim_api::manifest::parse_documents;
use virtshim_tests::handler::read_frame;
use virtshim_tests::vm;

/// Reads from `stream` until `text` shows up.
fn read_until(stream: &mut UnixStream, text: &str) -> Result<(), String> {
    stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let started = Instant::now();
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    while started.elapsed() < Duration::from_secs(30) {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                seen.push_str(&String::from_utf8_lossy(&buf[..n]));
                if seen.contains(text) {
                    return Ok(());
                }
            }
            Err(_) => {}
        }
    }
    Err(format!("no {text:?}; got: {seen}"))
}

fn find_file(dir: &Path, name: &str) -> Option<PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        if path.file_name().is_some_and(|n| n == name) {
            return Some(path);
        }
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            if let Some(found) = find_file(&path, name) {
                return Some(found);
            }
        }
    }
    None
}

/// Attaches at `url` (from the CRI's Attach), types `line` on stdin and waits for `text` on stdout.
fn attach_echo(url: &str, line: &str, text: &str) -> Result<(), String> {
    use tungstenite::client::IntoClientRequest;
    use tungstenite::Message;
    let ws_url = url.replacen("http://", "ws://", 1);
    let mut request = ws_url.into_client_request().map_err(|e| e.to_string())?;
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "v4.channel.k8s.io".parse().unwrap(),
    );
    let (mut socket, response) =
        tungstenite::connect(request).map_err(|e| format!("connecting to {url}: {e}"))?;
    assert_eq!(
        response
            .headers()
            .get("Sec-WebSocket-Protocol")
            .and_then(|v| v.to_str().ok()),
        Some("v4.channel.k8s.io")
    );
    if let tungstenite::stream::MaybeTlsStream::Plain(tcp) = socket.get_ref() {
        tcp.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
    }
    let mut frame = vec![0u8]; // channel 0: stdin
    frame.extend_from_slice(line.as_bytes());
    socket
        .send(Message::Binary(frame.into()))
        .map_err(|e| e.to_string())?;
    let started = Instant::now();
    let mut seen = String::new();
    while started.elapsed() < Duration::from_secs(30) {
        match read_frame(&mut socket) {
            // Channel 1: stdout.
            Ok(Some(data)) if data.first() == Some(&1) => {
                seen.push_str(&String::from_utf8_lossy(&data[1..]));
                if seen.contains(text) {
                    let _ = socket.close(None);
                    return Ok(());
                }
            }
            Ok(_) => {}
            Err(e) => return Err(format!("reading the attach stream: {e}; got: {seen}")),
        }
    }
    Err(format!("no {text:?} on the attach stream; got: {seen}"))
}

#[test]
fn console_socket_clients_and_stdin_reach_the_guest() {
    let test = "console_socket_clients_and_stdin_reach_the_guest";
    let Some(containerd) = vm::containerd(test) else {
        return;
    };
    let cri = containerd.cri().unwrap();
    let yaml = vm::kernel_boot_vmi(
        "name: chatty",
        "192Mi",
        "autoattachPodInterface: false",
        "console=ttyS0",
        "",
    );
    let plan = local::plan(parse_documents(&yaml).remove(0).unwrap()).unwrap();
    let started = local::run(&cri, &plan).unwrap();
    vm::wait_for_console(
        &started.console_log(),
        "VIRTSHIM-GUEST-UP",
        Duration::from_secs(60),
    )
    .unwrap();

    let socket = vm::pod_dirs(&started.sandbox_id)[0].join("console.sock");
    let mut typist = UnixStream::connect(&socket).unwrap();
    let mut watcher = UnixStream::connect(&socket).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    typist.write_all(b"echo console-$((6*7))\n").unwrap();
    read_until(&mut typist, "console-42").unwrap();
    read_until(&mut watcher, "console-42").unwrap();

    // What `crictl attach` writes goes into the container's stdin FIFO.
    let stdin = find_file(containerd.dir(), &format!("{}-stdin", started.compute_id()))
        .expect("the compute container has stdin");
    let mut fifo = std::fs::OpenOptions::new()
        .write(true)
        .open(&stdin)
        .unwrap();
    fifo.write_all(b"echo stdin-$((6*7))\n").unwrap();
    read_until(&mut watcher, "stdin-42").unwrap();
    vm::wait_for_console(&started.console_log(), "stdin-42", Duration::from_secs(10)).unwrap();
    vm::wait_for_console(
        &started.console_log(),
        "console-42",
        Duration::from_secs(10),
    )
    .unwrap();

    // `kubectl attach -it` / `crictl attach`: the CRI's Attach, then containerd's streaming
    // server over WebSocket (Kubernetes' channel protocol: one leading byte names the stream).
    let url = cri.attach(started.compute_id(), true).unwrap();
    attach_echo(&url, "echo attach-$((6*7))\n", "attach-42").unwrap();
    vm::wait_for_console(&started.console_log(), "attach-42", Duration::from_secs(10)).unwrap();
    read_until(&mut watcher, "attach-42").unwrap();

    vm::remove_pod(&cri, &started.sandbox_id);
    containerd.stop().unwrap();
}
