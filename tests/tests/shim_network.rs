//! The VM on the pod network, through the real CRI and CNI: with bridge binding the guest takes
//! the pod's IP (by the shim's DHCP), with masquerade it gets 10.0.2.2 and the pod's IP is NATed
//! to it; either way a client in another pod on the bridge reaches the guest's HTTP server at
//! the pod's IP. With masquerade, the CRI's PortForward (`kubectl port-forward`) reaches it too.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};
use virtctl::local;
use virtshim_api::manifest::parse_documents;
use virtshim_tests::handler::read_frame;
use virtshim_tests::{peer, vm};

fn vmi(name: &str, interfaces: &str) -> String {
    let networks = if interfaces.is_empty() {
        ""
    } else {
        "  networks: [{name: default, pod: {}}]\n"
    };
    vm::kernel_boot_vmi(
        &format!("name: {name}"),
        "256Mi",
        interfaces,
        "console=ttyS0",
        networks,
    )
}

fn guest_serves_http_at_the_pod_ip(
    test: &str,
    interfaces: &str,
    expected_guest_ip: Option<&str>,
    port_forward: bool,
) {
    let Some(containerd) = vm::containerd(test) else {
        return;
    };
    let cri = containerd.cri().unwrap();
    let plan = local::plan(parse_documents(&vmi("web", interfaces)).remove(0).unwrap()).unwrap();
    let started =
        local::run(&cri, &plan).unwrap_or_else(|e| panic!("{e}\n{}", containerd.log_tail()));
    let ip = peer::pod_ip(&cri, &started.sandbox_id);
    let guest_ip = expected_guest_ip.unwrap_or(&ip).to_owned();
    let marker = format!("VIRTSHIM-GUEST-UP ip={guest_ip}");
    let took = vm::wait_for_console(&started.console_log(), &marker, Duration::from_secs(90))
        .unwrap_or_else(|e| panic!("{e}\n{}", containerd.log_tail()));
    println!("{test}: guest up with {guest_ip} (pod {ip}) after {took:?}");
    let started_fetch = Instant::now();
    let output = peer::fetch_from_another_pod(&containerd, &cri, &ip, "/healthz", "ok");
    assert!(
        output.contains("ok") && output.contains("FETCHED"),
        "no answer from the guest at {ip}:\n{output}"
    );
    println!(
        "{test}: another pod fetched http://{ip}/healthz in {:?}",
        started_fetch.elapsed()
    );
    if port_forward {
        let url = cri.port_forward(&started.sandbox_id, &[80]).unwrap();
        let answer = http_through_port_forward(&url, 80, "/healthz")
            .unwrap_or_else(|e| panic!("{e}\n{}", containerd.log_tail()));
        assert!(
            answer.starts_with("HTTP/1.") && answer.ends_with("ok\n"),
            "{answer}"
        );
        println!("{test}: GET /healthz through the CRI's PortForward answered");
    }
    vm::remove_pod(&cri, &started.sandbox_id);
    containerd.stop().unwrap();
}

/// Whether `data` (after the two port bytes) holds headers and the whole body they announce.
fn complete_http_answer(data: &[u8]) -> bool {
    let text = String::from_utf8_lossy(data);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    head.lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .and_then(|n| n.trim().parse::<usize>().ok())
        .is_some_and(|n| body.len() >= n)
}

/// Follows a PortForward URL as `kubectl port-forward` does (WebSocket, `v4.channel.k8s.io`:
/// per port a data channel and an error channel, each opened by the port number in two
/// little-endian bytes), sends one HTTP/1.0 request and returns the whole answer.
fn http_through_port_forward(url: &str, port: u16, path: &str) -> Result<String, String> {
    use tungstenite::client::IntoClientRequest;
    use tungstenite::Message;
    let ws_url = format!("{}?port={port}", url.replacen("http://", "ws://", 1));
    let mut request = ws_url.into_client_request().map_err(|e| e.to_string())?;
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        tungstenite::http::HeaderValue::from_static("v4.channel.k8s.io"),
    );
    let (mut socket, _) =
        tungstenite::connect(request).map_err(|e| format!("connecting to {url}: {e}"))?;
    if let tungstenite::stream::MaybeTlsStream::Plain(tcp) = socket.get_ref() {
        tcp.set_read_timeout(Some(Duration::from_millis(500)))
            .map_err(|e| e.to_string())?;
    }
    let mut frame = vec![0u8];
    frame.extend_from_slice(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes());
    socket
        .send(Message::Binary(frame.into()))
        .map_err(|e| e.to_string())?;
    // Each channel's first two bytes are the port, then the data (or the error's text).
    let mut data = Vec::new();
    let mut error = Vec::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        match read_frame(&mut socket) {
            Ok(Some(frame)) => match frame.split_first() {
                Some((0, bytes)) => data.extend_from_slice(bytes),
                Some((1, bytes)) => error.extend_from_slice(bytes),
                _ => {}
            },
            Ok(None) => {}
            // The guest's HTTP/1.0 server closes the connection after answering.
            Err(_) => break,
        }
        if complete_http_answer(&data) {
            break;
        }
    }
    let port_prefix = port.to_le_bytes();
    let body = data.strip_prefix(&port_prefix[..]).unwrap_or(&data);
    let error = error.strip_prefix(&port_prefix[..]).unwrap_or(&error);
    if !error.is_empty() {
        return Err(format!(
            "port-forward error: {}",
            String::from_utf8_lossy(error)
        ));
    }
    Ok(String::from_utf8_lossy(body).into_owned())
}

#[test]
fn bridge_binding_gives_the_guest_the_pod_ip() {
    // No interfaces: KubeVirt's default, a bridge on the pod network.
    guest_serves_http_at_the_pod_ip("bridge_binding_gives_the_guest_the_pod_ip", "", None, false);
}

#[test]
fn masquerade_forwards_the_pod_ip_to_the_guest() {
    guest_serves_http_at_the_pod_ip(
        "masquerade_forwards_the_pod_ip_to_the_guest",
        "interfaces: [{name: default, masquerade: {}, model: e1000, ports: [{port: 80}]}]",
        Some("10.0.2.2"),
        true,
    );
}
