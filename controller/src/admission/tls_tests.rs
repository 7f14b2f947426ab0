//! The webhook server for real, on loopback: TLS from a freshly made CA, AdmissionReviews over
//! HTTPS from a client that trusts only that CA, and certificate rotation while it runs.

use super::certs::{cert_info, renew, CertInfo, CertResolver, CertSet, Renewal, ServiceIdentity};
use super::server::Server;
use base64::Engine as _;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use virtshim_api::manifest::Object;

fn identity() -> ServiceIdentity {
    ServiceIdentity {
        service: "virtshim-controller".to_owned(),
        namespace: "virtshim-system".to_owned(),
    }
}

fn example(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/examples/kubevirt")
        .join(name);
    let text = std::fs::read_to_string(&path).expect("example");
    serde_yaml_ng::from_str(&text).expect("YAML")
}

fn review_of(object: &Value) -> Vec<u8> {
    let kind = object["kind"].as_str().unwrap_or_default();
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "3f0c9a2e-1d7b-4c59-8e43-6a1b2c3d4e5f",
            "kind": {"group": "kubevirt.io", "version": "v1", "kind": kind},
            "resource": {"group": "kubevirt.io", "version": "v1", "resource": "x"},
            "name": object["metadata"]["name"],
            "namespace": "default",
            "operation": "CREATE",
            "userInfo": {"username": "admin"},
            "object": object,
        }
    })
    .to_string()
    .into_bytes()
}

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// An HTTP/1.1 connection over TLS, trusting only the CAs in `ca_pem`; also the certificate
/// the server presented.
async fn connect(
    addr: SocketAddr,
    ca_pem: &str,
) -> Result<(SendRequest<Full<Bytes>>, CertInfo), String> {
    let (tls, info) = tls_connect(addr, ca_pem).await?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    Ok((sender, info))
}

/// A TLS connection trusting only the CAs in `ca_pem`, and the certificate presented.
async fn tls_connect(addr: SocketAddr, ca_pem: &str) -> Result<(Tls, CertInfo), String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots
            .add(cert.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = ServerName::try_from("virtshim-controller.virtshim-system.svc")
        .map_err(|e| e.to_string())?;
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let presented = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .cloned()
        .ok_or("no server certificate")?;
    let pem = format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        base64::engine::general_purpose::STANDARD.encode(presented.as_ref())
    );
    let info = cert_info(&pem).map_err(|e| e.to_string())?;
    Ok((tls, info))
}

async fn send(
    sender: &mut SendRequest<Full<Bytes>>,
    method: &str,
    path: &str,
    body: Vec<u8>,
) -> (StatusCode, Vec<u8>) {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "virtshim-controller.virtshim-system.svc")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("request");
    // hyper's connection may still be finishing the previous exchange: wait until it takes
    // the next request (without this, a fast client sees "connection was not ready").
    sender
        .ready()
        .await
        .expect("connection ready for the next request");
    let response = sender.send_request(request).await.expect("response");
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes()
        .to_vec();
    (status, body)
}

async fn post_review(
    sender: &mut SendRequest<Full<Bytes>>,
    path: &str,
    body: Vec<u8>,
) -> (StatusCode, Value) {
    let (status, body) = send(sender, "POST", path, body).await;
    let review: Value = serde_json::from_slice(&body).expect("a JSON review");
    (status, review["response"].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_over_tls_with_rotation() {
    let names = identity().dns_names();
    let set = CertSet::generate(&names, OffsetDateTime::now_utc()).expect("certificates");
    let first = cert_info(&set.cert).expect("serving certificate");
    let resolver = CertResolver::new(&set).expect("resolver");
    let server = Server::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("bind");
    let addr = server.local_addr().expect("address");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(server.run(resolver.clone(), async {
        let _ = stopped.await;
    }));

    let (mut client, presented) = connect(addr, &set.ca_cert).await.expect("TLS to the CA");
    assert_eq!(presented.serial, first.serial);

    // A valid VM: allowed, with a patch that turns it into its defaulted form.
    let vm = example("vm-cirros.yaml");
    let (status, response) =
        post_review(&mut client, "/virtualmachines-mutate", review_of(&vm)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        response["uid"],
        json!("3f0c9a2e-1d7b-4c59-8e43-6a1b2c3d4e5f")
    );
    assert_eq!(response["allowed"], json!(true));
    assert_eq!(response["patchType"], json!("JSONPatch"));
    let patch = base64::engine::general_purpose::STANDARD
        .decode(response["patch"].as_str().expect("a patch"))
        .expect("base64");
    let patch: json_patch::Patch = serde_json::from_slice(&patch).expect("JSON Patch");
    let mut patched = vm.clone();
    json_patch::patch(&mut patched, &patch.0).expect("the patch applies");
    let mut expected = Object::from_value(vm.clone()).expect("decodes");
    expected.apply_defaults();
    assert_eq!(patched, expected.to_value());
    assert_ne!(patched, vm);
    let (status, response) = post_review(
        &mut client,
        "/virtualmachines-validate",
        review_of(&patched),
    )
    .await;
    assert_eq!(
        (status, &response["allowed"]),
        (StatusCode::OK, &json!(true))
    );

    // An invalid VM: denied, 422, naming the field.
    let mut invalid = vm.clone();
    invalid["spec"]["template"]["spec"]["volumes"][0]["hostDisk"] =
        json!({"path": "/var/lib/disk.img", "type": "DiskOrCreate"});
    let (status, response) = post_review(
        &mut client,
        "/virtualmachines-validate",
        review_of(&invalid),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(response["allowed"], json!(false));
    assert_eq!(response["status"]["code"], json!(422));
    let message = response["status"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("spec.template.spec.volumes[0].hostDisk"),
        "{message}"
    );
    assert_eq!(
        response["status"]["details"]["causes"][0]["field"],
        json!("spec.template.spec.volumes[0].hostDisk")
    );
    // And a VMI example the same way.
    let (_, response) = post_review(
        &mut client,
        "/virtualmachineinstances-validate-create",
        review_of(&example("vmi-multus-ptp.yaml")),
    )
    .await;
    assert_eq!(response["allowed"], json!(false));
    assert_eq!(
        response["status"]["details"]["causes"][0]["field"],
        json!("spec.networks[0].multus")
    );

    // Hostile or misdirected requests get an answer, and the server lives on.
    let (status, response) = post_review(
        &mut client,
        "/virtualmachines-validate",
        b"{not json".to_vec(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(response["allowed"], json!(false));
    let (status, _) = send(&mut client, "GET", "/virtualmachines-validate", Vec::new()).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    let (status, _) = send(&mut client, "POST", "/nowhere", Vec::new()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // A body announced too large is refused before it is read.
    let (mut raw, _) = tls_connect(addr, &set.ca_cert).await.expect("TLS");
    let head = format!(
        "POST /virtualmachines-validate HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        super::review::MAX_REVIEW_BYTES + 1
    );
    raw.write_all(head.as_bytes()).await.expect("write");
    raw.flush().await.expect("flush");
    let mut answer = Vec::new();
    let _ = raw.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains(r#""allowed":false"#), "{answer}");

    // Rotation of the serving certificate, same CA: new connections get the new certificate,
    // verified by the CA the client already trusts; the open connection carries on.
    let renewed = renew(
        Some(&set),
        Renewal::Serving,
        &names,
        OffsetDateTime::now_utc(),
    )
    .expect("renewal");
    let second = cert_info(&renewed.cert).expect("renewed certificate");
    assert_ne!(second.serial, first.serial);
    resolver.install(&renewed).expect("install");
    let (mut fresh, presented) = connect(addr, &set.ca_cert)
        .await
        .expect("the old CA verifies the renewed certificate");
    assert_eq!(presented.serial, second.serial);
    assert_eq!(presented.not_after, second.not_after);
    assert!(presented.not_after >= first.not_after);
    let (status, response) =
        post_review(&mut fresh, "/virtualmachines-mutate", review_of(&vm)).await;
    assert_eq!(
        (status, &response["allowed"]),
        (StatusCode::OK, &json!(true))
    );
    let (status, _) = post_review(&mut client, "/virtualmachines-mutate", review_of(&vm)).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "a connection from before the rotation still works"
    );

    // Rotation of the CA: a client that trusts only the old CA is refused; one that trusts the
    // bundle the webhook configurations get (new CA + old CA) connects.
    let rotated = renew(
        Some(&renewed),
        Renewal::All,
        &names,
        OffsetDateTime::now_utc(),
    )
    .expect("CA renewal");
    resolver.install(&rotated).expect("install");
    let refused = connect(addr, &set.ca_cert).await;
    assert!(
        refused.is_err(),
        "the old CA alone must not verify a certificate of the new CA"
    );
    let bundle = rotated.ca_bundle(OffsetDateTime::now_utc());
    let (mut third, presented) = connect(addr, &bundle).await.expect("TLS with the bundle");
    assert_eq!(
        presented.serial,
        cert_info(&rotated.cert).expect("cert").serial
    );
    let (status, _) = post_review(&mut third, "/virtualmachines-mutate", review_of(&vm)).await;
    assert_eq!(status, StatusCode::OK);

    // Shutdown: the server returns.
    let _ = stop.send(());
    tokio::time::timeout(std::time::Duration::from_secs(20), running)
        .await
        .expect("the server stops")
        .expect("the server task")
        .expect("the server ran cleanly");
}
