//! The subresource API for real, on loopback, with no cluster: TLS from the controller's CA, a
//! test request-header CA standing in for the aggregator's front-proxy CA, and a fake backend
//! standing in for the apiserver. Drives discovery, version and health without a client
//! certificate, and the authentication refusals (no certificate, another CA, a name not
//! allowed), authorization (403), and an accepted start (202) over real TLS.

use super::authn::RequestHeaderConfig;
use super::backend::{Backend, Part};
use super::server::{Server, Shared};
use crate::admission::certs::{CertResolver, CertSet, ServiceIdentity};
use futures::future::BoxFuture;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::authorization::v1::{SubjectAccessReview, SubjectAccessReviewStatus};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use time::OffsetDateTime;
use virtshim_api::types::{VirtualMachine, VirtualMachineInstance};

const SERVER_NAME: &str = "virtshim-api.virtshim-system.svc";

/// A CA that issues client certificates.
struct ClientPki {
    ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl ClientPki {
    fn new(name: &str) -> Self {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_pem = params.self_signed(&key).expect("CA").pem();
        Self {
            ca_pem,
            issuer: Issuer::new(params, key),
        }
    }

    /// A client certificate with common name `cn`: (cert PEM, key PEM).
    fn client(&self, cn: &str) -> (String, String) {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &self.issuer).expect("cert").pem();
        (cert, key.serialize_pem())
    }
}

/// The apiserver, faked: alice may do anything, nobody else anything; one VM `vm1` (Halted)
/// and one VMI `vmi1` (Scheduling, or Running on `node1` whose handler is on loopback);
/// patches are recorded.
#[derive(Debug, Default)]
struct FakeBackend {
    patches: Mutex<Vec<(String, Part, Value, bool)>>,
    reviews: Mutex<Vec<SubjectAccessReview>>,
    running: bool,
}

impl Backend for FakeBackend {
    fn get_vm<'a>(
        &'a self,
        _namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<VirtualMachine>, kube::Error>> {
        Box::pin(async move {
            Ok((name == "vm1").then(|| {
                serde_json::from_value(json!({
                    "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
                    "metadata": {"name": "vm1", "namespace": "default", "uid": "vm-uid"},
                    "spec": {"runStrategy": "Halted", "template": {"spec": {"domain": {"devices": {}}}}},
                }))
                .expect("VM")
            }))
        })
    }

    fn get_vmi<'a>(
        &'a self,
        _namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<VirtualMachineInstance>, kube::Error>> {
        Box::pin(async move {
            Ok((name == "vmi1").then(|| {
                serde_json::from_value(json!({
                    "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
                    "metadata": {"name": "vmi1", "namespace": "default", "uid": "vmi-uid"},
                    "spec": {"domain": {"devices": {}}},
                    "status": if self.running {
                        json!({"phase": "Running", "nodeName": "node1"})
                    } else {
                        json!({"phase": "Scheduling"})
                    },
                }))
                .expect("VMI")
            }))
        })
    }

    fn patch_vm<'a>(
        &'a self,
        _namespace: &'a str,
        name: &'a str,
        part: Part,
        patch: json_patch::Patch,
        dry_run: bool,
    ) -> BoxFuture<'a, Result<(), kube::Error>> {
        Box::pin(async move {
            let value = serde_json::to_value(&patch).expect("json");
            self.patches
                .lock()
                .expect("lock")
                .push((name.to_owned(), part, value, dry_run));
            Ok(())
        })
    }

    fn patch_vmi<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        part: Part,
        patch: json_patch::Patch,
        dry_run: bool,
    ) -> BoxFuture<'a, Result<(), kube::Error>> {
        self.patch_vm(namespace, name, part, patch, dry_run)
    }

    fn review(
        &self,
        review: SubjectAccessReview,
    ) -> BoxFuture<'_, Result<SubjectAccessReviewStatus, kube::Error>> {
        Box::pin(async move {
            let allowed = review.spec.user.as_deref() == Some("alice");
            self.reviews.lock().expect("lock").push(review);
            Ok(SubjectAccessReviewStatus {
                allowed,
                ..SubjectAccessReviewStatus::default()
            })
        })
    }

    fn handler_ip<'a>(
        &'a self,
        node: &'a str,
    ) -> BoxFuture<'a, Result<Option<IpAddr>, kube::Error>> {
        Box::pin(async move {
            Ok((self.running && node == "node1").then(|| IpAddr::from([127, 0, 0, 1])))
        })
    }
}

struct Running {
    addr: SocketAddr,
    ca_pem: String,
    shared: Arc<Shared>,
    backend: Arc<FakeBackend>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn request_header(ca_pem: &str, allowed: &[&str]) -> RequestHeaderConfig {
    let mut data = BTreeMap::new();
    data.insert("requestheader-client-ca-file".to_owned(), ca_pem.to_owned());
    data.insert(
        "requestheader-allowed-names".to_owned(),
        serde_json::to_string(allowed).expect("json"),
    );
    data.insert(
        "requestheader-username-headers".to_owned(),
        r#"["X-Remote-User"]"#.to_owned(),
    );
    RequestHeaderConfig::from_configmap(&data).expect("config")
}

/// The test's own uid, which owns the sockets it makes.
fn own_uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(0)
}

async fn start(front_proxy: &ClientPki) -> Running {
    let names = ServiceIdentity {
        service: "virtshim-api".to_owned(),
        namespace: "virtshim-system".to_owned(),
    }
    .dns_names();
    let set = CertSet::generate(&names, OffsetDateTime::now_utc()).expect("certs");
    let resolver = CertResolver::new(&set).expect("resolver");
    let backend = Arc::new(FakeBackend::default());
    let shared = Shared::new(
        backend.clone(),
        None,
        resolver,
        request_header(&front_proxy.ca_pem, &["front-proxy-client"]),
    )
    .expect("shared");
    let server = Server::bind("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("bind");
    let addr = server.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.run(shared.clone(), async {
        let _ = stopped.await;
    }));
    Running {
        addr,
        ca_pem: set.ca_cert.clone(),
        shared,
        backend,
        stop: Some(stop),
    }
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// An HTTP/1.1 connection trusting the server's CA, presenting `identity` if any.
async fn connect(running: &Running, identity: Option<&(String, String)>) -> Result<Sender, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(running.ca_pem.as_bytes()).map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let mut config = match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(cert.as_bytes()).map_err(|e| e.to_string())?],
                PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(|e| e.to_string())?,
            )
            .map_err(|e| e.to_string())?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(running.addr)
        .await
        .map_err(|e| e.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(
            ServerName::try_from(SERVER_NAME).map_err(|e| e.to_string())?,
            tcp,
        )
        .await
        .map_err(|e| e.to_string())?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    Ok(sender)
}

/// Sends a request; the status and body, or the transport error (TLS 1.3 reports a refused
/// client certificate on the first read).
async fn send(
    sender: &mut Sender,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<(StatusCode, Vec<u8>), String> {
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header("host", SERVER_NAME);
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    let request = builder
        .body(Full::new(Bytes::from(body.to_owned())))
        .map_err(|e| e.to_string())?;
    // Wait until the connection takes the next request (it may still be finishing the last).
    sender.ready().await.map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes()
        .to_vec();
    Ok((status, body))
}

fn json_of(body: &[u8]) -> Value {
    serde_json::from_slice(body).expect("JSON body")
}

const START: &str =
    "/apis/subresources.kubevirt.io/v1/namespaces/default/virtualmachines/vm1/start";
const CONSOLE: &str =
    "/apis/subresources.kubevirt.io/v1/namespaces/default/virtualmachineinstances/vmi1/console";

#[tokio::test]
async fn subresources_discovery_version_and_health_need_no_certificate() {
    let front_proxy = ClientPki::new("front-proxy-ca");
    let running = start(&front_proxy).await;
    let mut sender = connect(&running, None).await.expect("connect");
    for (path, check) in [
        ("/healthz", "ok"),
        ("/apis/subresources.kubevirt.io/v1/healthz", "ok"),
        ("/apis/subresources.kubevirt.io/v1", "APIResourceList"),
        ("/apis/subresources.kubevirt.io/v1alpha3", "APIResourceList"),
        ("/apis", "APIGroupList"),
        ("/apis/subresources.kubevirt.io", "APIGroup"),
        ("/apis/subresources.kubevirt.io/v1/version", "gitVersion"),
        ("/openapi/v2", "swagger"),
        ("/openapi/v3", "serverRelativeURL"),
        ("/openapi/v3/apis/subresources.kubevirt.io/v1", "openapi"),
        ("/", "paths"),
    ] {
        let (status, body) = send(&mut sender, "GET", path, &[], "").await.expect(path);
        assert_eq!(status, StatusCode::OK, "{path}");
        let text = String::from_utf8_lossy(&body);
        assert!(text.contains(check), "{path}: {text}");
    }
    let (status, body) = send(
        &mut sender,
        "GET",
        "/apis/subresources.kubevirt.io/v1",
        &[],
        "",
    )
    .await
    .expect("list");
    assert_eq!(status, StatusCode::OK);
    let list: k8s_openapi::apimachinery::pkg::apis::meta::v1::APIResourceList =
        serde_json::from_slice(&body).expect("APIResourceList");
    assert!(list
        .resources
        .iter()
        .any(|r| r.name == "virtualmachineinstances/console"));
    let (status, _) = send(&mut sender, "GET", "/apis/other.io/v1", &[], "")
        .await
        .expect("404");
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn subresources_authentication_refusals() {
    let front_proxy = ClientPki::new("front-proxy-ca");
    let running = start(&front_proxy).await;
    let alice = [
        ("X-Remote-User", "alice"),
        ("X-Remote-Group", "system:authenticated"),
    ];

    // No certificate: the user headers are not believed.
    let mut anonymous = connect(&running, None).await.expect("connect");
    let (status, body) = send(&mut anonymous, "PUT", START, &alice, "")
        .await
        .expect("answer");
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(json_of(&body)["kind"], "Status");
    assert_eq!(json_of(&body)["code"], 401);

    // A certificate from another CA: refused at the handshake.
    let other = ClientPki::new("mallory-ca");
    let forged = other.client("front-proxy-client");
    let refused = match connect(&running, Some(&forged)).await {
        Err(e) => Err(e),
        Ok(mut s) => send(&mut s, "PUT", START, &alice, "").await,
    };
    assert!(refused.is_err(), "{refused:?}");

    // The right CA, a name not allowed.
    let unnamed = front_proxy.client("someone-else");
    let mut sender = connect(&running, Some(&unnamed)).await.expect("connect");
    let (status, body) = send(&mut sender, "PUT", START, &alice, "")
        .await
        .expect("answer");
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        json_of(&body)["message"]
            .as_str()
            .is_some_and(|m| m.contains("someone-else")),
        "{}",
        String::from_utf8_lossy(&body)
    );

    // The right certificate without a user header.
    let proxy = front_proxy.client("front-proxy-client");
    let mut sender = connect(&running, Some(&proxy)).await.expect("connect");
    let (status, _) = send(&mut sender, "PUT", START, &[], "")
        .await
        .expect("answer");
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(running.backend.reviews.lock().expect("lock").is_empty());

    // A new request-header CA replaces the old one from the next connection on.
    let rotated = ClientPki::new("front-proxy-ca-2");
    running
        .shared
        .set_request_header(request_header(&rotated.ca_pem, &[]))
        .expect("swap");
    let stale = match connect(&running, Some(&proxy)).await {
        Err(e) => Err(e),
        Ok(mut s) => send(&mut s, "PUT", START, &alice, "").await,
    };
    assert!(stale.is_err(), "{stale:?}");
    let mut sender = connect(&running, Some(&rotated.client("anything")))
        .await
        .expect("connect");
    let (status, _) = send(&mut sender, "PUT", START, &alice, "")
        .await
        .expect("answer");
    assert_eq!(status, StatusCode::ACCEPTED);
}

#[tokio::test]
async fn subresources_authorized_requests() {
    let front_proxy = ClientPki::new("front-proxy-ca");
    let running = start(&front_proxy).await;
    let proxy = front_proxy.client("front-proxy-client");
    let mut sender = connect(&running, Some(&proxy)).await.expect("connect");

    // bob has no rights: 403, and nothing is patched.
    let bob = [("X-Remote-User", "bob"), ("X-Remote-Group", "devs")];
    let (status, body) = send(&mut sender, "PUT", START, &bob, "")
        .await
        .expect("answer");
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "{}",
        String::from_utf8_lossy(&body)
    );
    assert!(running.backend.patches.lock().expect("lock").is_empty());
    {
        let reviews = running.backend.reviews.lock().expect("lock");
        let attrs = reviews[0]
            .spec
            .resource_attributes
            .as_ref()
            .expect("attributes");
        assert_eq!(reviews[0].spec.user.as_deref(), Some("bob"));
        assert_eq!(reviews[0].spec.groups, Some(vec!["devs".to_owned()]));
        assert_eq!(attrs.verb.as_deref(), Some("update"));
        assert_eq!(attrs.subresource.as_deref(), Some("start"));
        assert_eq!(attrs.resource.as_deref(), Some("virtualmachines"));
    }

    // alice starts vm1 (Halted): 202 and the run strategy patched to Always; dry run too.
    let alice = [("X-Remote-User", "alice")];
    let (status, _) = send(&mut sender, "PUT", START, &alice, r#"{"dryRun":["All"]}"#)
        .await
        .expect("answer");
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, _) = send(&mut sender, "PUT", START, &alice, "{}")
        .await
        .expect("answer");
    assert_eq!(status, StatusCode::ACCEPTED);
    {
        let patches = running.backend.patches.lock().expect("lock");
        assert_eq!(patches.len(), 2);
        assert!(patches[0].3, "the first was a dry run");
        assert!(!patches[1].3);
        assert_eq!(patches[1].1, Part::Main);
        assert!(
            patches[1].2.to_string().contains("Always"),
            "{}",
            patches[1].2
        );
    }

    // Stopping a Halted VM without a VMI: KubeVirt's 409.
    let stop = START.replace("/start", "/stop");
    let (status, body) = send(&mut sender, "PUT", &stop, &alice, "")
        .await
        .expect("answer");
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(
        json_of(&body)["message"],
        "Operation cannot be fulfilled on virtualmachine.kubevirt.io \"vm1\": VM is not running"
    );

    // An unknown VM: 404.
    let missing = START.replace("/vm1/", "/nope/");
    let (status, body) = send(&mut sender, "PUT", &missing, &alice, "")
        .await
        .expect("answer");
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        json_of(&body)["message"],
        "virtualmachine.kubevirt.io \"nope\" not found"
    );

    // The console of a VMI still scheduling: 400 "VMI is not running", which virtctl retries.
    let upgrade = [
        ("X-Remote-User", "alice"),
        ("Connection", "Upgrade"),
        ("Upgrade", "websocket"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("Sec-WebSocket-Protocol", "plain.kubevirt.io"),
    ];
    let mut sender = connect(&running, Some(&proxy)).await.expect("connect");
    let (status, body) = send(&mut sender, "GET", CONSOLE, &upgrade, "")
        .await
        .expect("answer");
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(json_of(&body)["message"], "VMI is not running");
    let reviews = running.backend.reviews.lock().expect("lock");
    let last = reviews
        .last()
        .and_then(|r| r.spec.resource_attributes.clone());
    assert_eq!(last.as_ref().and_then(|a| a.verb.as_deref()), Some("get"));
    assert_eq!(
        last.as_ref().and_then(|a| a.subresource.as_deref()),
        Some("console")
    );
}

/// Writes `data` (a Secret's) as files, as the kubelet mounts them.
fn mount(dir: &std::path::Path, data: &BTreeMap<String, k8s_openapi::ByteString>) {
    for (key, value) in data {
        std::fs::write(dir.join(key), &value.0).expect("write");
    }
}

/// A TCP listener on 127.0.0.1 that echoes what each connection sends; its port.
async fn tcp_echo() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut reader, mut writer) = stream.split();
                let _ = tokio::io::copy(&mut reader, &mut writer).await;
            });
        }
    });
    port
}

/// A unix socket that echoes what it reads, standing in for a VM's console or VNC socket.
fn echo_socket(path: &std::path::Path) {
    let listener = tokio::net::UnixListener::bind(path).expect("bind");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut rx, mut tx) = stream.split();
                let _ = tokio::io::copy(&mut rx, &mut tx).await;
            });
        }
    });
}

/// virtctl's side through the aggregator: a front-proxy connection asserting alice, a
/// `plain.kubevirt.io` WebSocket at `path`.
async fn open_websocket(
    running: &Running,
    proxy: &(String, String),
    path: &str,
) -> Result<
    tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
    String,
> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(running.ca_pem.as_bytes()).map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_client_auth_cert(
            vec![CertificateDer::from_pem_slice(proxy.0.as_bytes()).map_err(|e| e.to_string())?],
            PrivateKeyDer::from_pem_slice(proxy.1.as_bytes()).map_err(|e| e.to_string())?,
        )
        .map_err(|e| e.to_string())?;
    let tcp = tokio::net::TcpStream::connect(running.addr)
        .await
        .map_err(|e| e.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(
            ServerName::try_from(SERVER_NAME).map_err(|e| e.to_string())?,
            tcp,
        )
        .await
        .map_err(|e| e.to_string())?;
    let mut request = format!("wss://{SERVER_NAME}{path}")
        .into_client_request()
        .map_err(|e| e.to_string())?;
    let headers = request.headers_mut();
    headers.insert("X-Remote-User", "alice".parse().map_err(|_| "header")?);
    headers.insert(
        "Sec-WebSocket-Protocol",
        "plain.kubevirt.io".parse().map_err(|_| "header")?,
    );
    let (ws, response) = tokio_tungstenite::client_async(request, tls)
        .await
        .map_err(|e| e.to_string())?;
    assert_eq!(
        response
            .headers()
            .get("Sec-WebSocket-Protocol")
            .map(|v| v.as_bytes()),
        Some(&b"plain.kubevirt.io"[..])
    );
    Ok(ws)
}

/// The whole stream path without a cluster: our server, the controller's client certificate
/// and the handler certificate from the cert manager's rules, the real handler (its TLS
/// configuration built from the files of the Secret the controller writes), and a unix socket
/// in the handler's run directory standing in for the VM (a TCP echo server for its port).
#[tokio::test]
async fn subresources_console_vnc_and_port_forward_through_the_real_handler() {
    use crate::admission::certs::{renew_leaves, LeafNames};
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let now = OffsetDateTime::now_utc();
    let api_names = ServiceIdentity {
        service: "virtshim-api".to_owned(),
        namespace: "virtshim-system".to_owned(),
    }
    .dns_names();
    let leaves = LeafNames::for_namespace("virtshim-system");
    let (set, _) = renew_leaves(
        CertSet::generate(&api_names, now).expect("certs"),
        &leaves,
        now,
    )
    .expect("leaves");

    // The handler, as its DaemonSet runs it.
    let files = tempfile::tempdir().expect("tempdir");
    mount(
        files.path(),
        &set.handler_secret_data(now).expect("handler data"),
    );
    let handler_tls = virtshim_handler::tls::server_config(
        &virtshim_handler::tls::TlsFiles {
            cert: files.path().join("tls.crt"),
            key: files.path().join("tls.key"),
            client_ca: files.path().join("ca.crt"),
        },
        &leaves.client,
    )
    .expect("handler TLS");
    let run = tempfile::tempdir().expect("run dir");
    let pod = run.path().join("p/aaaa");
    std::fs::create_dir_all(&pod).expect("pod dir");
    // A TCP echo server standing in for the guest's port at the pod's IP.
    let guest_port = tcp_echo().await;
    std::fs::write(
        pod.join("state.json"),
        r#"{"qemu_pid":1,"domain":"d","embed_root":"/x","vmi":{"namespace":"default","name":"vmi1","uid":"vmi-uid"},"pod":{"namespace":"default","name":"virt-launcher-vmi1-abcde","uid":"pod-uid"},"sandbox_id":"s","container_id":"c","pod_ip":"127.0.0.1"}"#,
    )
    .expect("state");
    echo_socket(&pod.join("console.sock"));
    std::fs::create_dir_all(pod.join("vm")).expect("QEMU's folder");
    echo_socket(&pod.join("vm/vnc.sock"));
    // The VNC socket must be QEMU's user's; here the test's.
    std::fs::write(pod.join("qemu-id"), own_uid().to_string()).expect("qemu-id");
    let handler = Arc::new(virtshim_handler::server::Handler::new(
        run.path(),
        virtshim_handler::tasks::Tasks::new(run.path().join("no-containerd.sock"), "k8s.io"),
    ));
    let handler_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let handler_port = handler_listener.local_addr().expect("addr").port();
    tokio::spawn(virtshim_handler::server::serve(
        handler_listener,
        handler_tls,
        handler,
        std::future::pending::<()>(),
    ));

    // Our server, reaching that handler.
    let front_proxy = ClientPki::new("front-proxy-ca");
    let resolver = CertResolver::new(&set).expect("resolver");
    let backend = Arc::new(FakeBackend {
        running: true,
        ..FakeBackend::default()
    });
    let (_published, certs) = tokio::sync::watch::channel(set.clone());
    let dialer = super::handler::Dialer::new(certs, leaves.clone(), handler_port);
    let shared = Shared::new(
        backend.clone(),
        Some(dialer),
        resolver,
        request_header(&front_proxy.ca_pem, &[]),
    )
    .expect("shared");
    let server = Server::bind("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("bind");
    let addr = server.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.run(shared.clone(), async {
        let _ = stopped.await;
    }));
    let running = Running {
        addr,
        ca_pem: set.ca_cert.clone(),
        shared,
        backend,
        stop: Some(stop),
    };
    let proxy = front_proxy.client("front-proxy-client");

    let forward = format!("portforward/{guest_port}");
    for sub in ["console", "vnc", forward.as_str()] {
        let path = CONSOLE.replace("/console", &format!("/{sub}"));
        let mut ws = open_websocket(&running, &proxy, &path).await.expect(sub);
        ws.send(Message::Binary(b"echo me\r".to_vec().into()))
            .await
            .expect("send");
        let mut got = Vec::new();
        while got.len() < 8 {
            match tokio::time::timeout(std::time::Duration::from_secs(10), ws.next()).await {
                Ok(Some(Ok(Message::Binary(data)))) => got.extend_from_slice(&data),
                other => panic!("{sub}: {other:?}"),
            }
        }
        assert_eq!(got, b"echo me\r", "{sub}");
        ws.close(None).await.expect("close");
    }

    // A VM's port-forward needs the VM: rights on VMs never reach a standalone VMI.
    let vm_forward = CONSOLE.replace(
        "virtualmachineinstances/vmi1/console",
        &format!("virtualmachines/vmi1/portforward/{guest_port}"),
    );
    let Err(refused) = open_websocket(&running, &proxy, &vm_forward).await else {
        panic!("a VMI that belongs to no VM was reached through virtualmachines/portforward");
    };
    assert!(refused.contains("404"), "{refused}");

    // Pause reaches the handler, which cannot reach containerd here: a 500 naming it.
    let mut sender = connect(&running, Some(&proxy)).await.expect("connect");
    let pause = CONSOLE.replace("/console", "/pause");
    let (status, body) = send(
        &mut sender,
        "PUT",
        &pause,
        &[("X-Remote-User", "alice")],
        "",
    )
    .await
    .expect("answer");
    assert_eq!(
        status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "{}",
        String::from_utf8_lossy(&body)
    );
    assert!(
        json_of(&body)["message"]
            .as_str()
            .is_some_and(|m| m.contains("the handler answered")),
        "{}",
        String::from_utf8_lossy(&body)
    );
}
