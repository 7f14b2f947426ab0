//! The metrics and health server over real HTTP on 127.0.0.1 (no cluster needed).

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use virtshim_controller::observability::{self, Metrics};

/// One HTTP/1.1 request; returns (status code, body).
async fn get(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let (status, _, body) = exchange(addr, method, path).await;
    (status, body)
}

/// One HTTP/1.1 request; returns (status code, head, body).
async fn exchange(addr: SocketAddr, method: &str, path: &str) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .expect("the server answers within 10 s")
        .unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP response");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status code");
    assert!(head.starts_with("HTTP/1.1 "), "{head}");
    (status, head.to_owned(), body.to_owned())
}

#[tokio::test]
async fn serves_metrics_health_and_readiness() {
    let metrics = Arc::new(Metrics::new());
    let (listener, addr) = observability::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    assert_ne!(addr.port(), 0);
    let server = tokio::spawn(observability::serve(listener, metrics.clone()));

    assert_eq!(get(addr, "GET", "/healthz").await, (200, "ok\n".into()));
    let (status, body) = get(addr, "GET", "/readyz").await;
    assert_eq!(status, 503, "not ready before the caches sync: {body}");

    metrics.set_ready(true);
    metrics.set_leading(true);
    metrics.reconciled("vm", Duration::from_millis(2), None);
    metrics.operation("vmi", "create");
    assert_eq!(get(addr, "GET", "/readyz").await, (200, "ok\n".into()));

    let (status, body) = get(addr, "GET", "/metrics").await;
    assert_eq!(status, 200);
    for line in [
        "# TYPE kubevirt_vmi_phase_count gauge",
        "kubevirt_virt_controller_leading_status 1",
        "kubevirt_virt_controller_ready_status 1",
        "virtshim_reconcile_total{controller=\"vm\",result=\"success\"} 1",
        "virtshim_operations_total{kind=\"vmi\",operation=\"create\"} 1",
    ] {
        assert!(
            body.lines().any(|l| l == line),
            "missing {line:?} in\n{body}"
        );
    }

    // OpenMetrics text: the page ends with `# EOF`.
    assert!(body.ends_with("\n# EOF\n"), "{body}");
    let (_, head, _) = exchange(addr, "GET", "/metrics").await;
    assert!(
        head.lines()
            .any(|l| l
                .eq_ignore_ascii_case(&format!("content-type: {}", observability::OPENMETRICS))),
        "{head}"
    );

    assert_eq!(get(addr, "GET", "/nope").await.0, 404);
    assert_eq!(get(addr, "POST", "/metrics").await.0, 405);
    server.abort();
}
