//! Telling the cluster what the node can do: labels on the Node (`virtshim.io/ready`, which the
//! RuntimeClass's nodeSelector and the handler's DaemonSet select, and `virtshim.io/accel`) and
//! an event when VMs will run under emulation (TCG) rather than KVM.
//!
//! The pod's service account credentials are read before the installer enters the host's mount
//! namespace (after that, its own files are out of sight), so they are kept in memory.

use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::config::{AuthInfo, Config};
use std::path::Path;

/// Label: the node runs virtshim VMs.
pub const READY_LABEL: &str = "virtshim.io/ready";
/// Label: `kvm` or `tcg`.
pub const ACCEL_LABEL: &str = "virtshim.io/accel";
const SERVICE_ACCOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
const FIELD_MANAGER: &str = "virtshim-installer";

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("reading the service account's {file}: {source}")]
    Credentials {
        file: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("Kubernetes client: {0}")]
    Client(String),
    #[error("reading {what}: {source}")]
    Lookup {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("patching node {node}: {source}")]
    Patch {
        node: String,
        #[source]
        source: kube::Error,
    },
}

/// The in-cluster client configuration, with token and CA held in memory. `None` outside a pod.
pub fn in_cluster_config() -> Result<Option<Config>, NodeError> {
    let (Ok(host), Ok(port)) = (
        std::env::var("KUBERNETES_SERVICE_HOST"),
        std::env::var("KUBERNETES_SERVICE_PORT"),
    ) else {
        return Ok(None);
    };
    let dir = Path::new(SERVICE_ACCOUNT);
    let token =
        std::fs::read_to_string(dir.join("token")).map_err(|source| NodeError::Credentials {
            file: "token",
            source,
        })?;
    let ca = std::fs::read(dir.join("ca.crt")).map_err(|source| NodeError::Credentials {
        file: "ca.crt",
        source,
    })?;
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host
    };
    let url = format!("https://{host}:{port}")
        .parse()
        .map_err(|e| NodeError::Client(format!("apiserver address: {e}")))?;
    let mut config = Config::new(url);
    config.root_cert =
        Some(pem_certificates(&ca).map_err(|e| NodeError::Client(format!("ca.crt: {e}")))?);
    config.auth_info = AuthInfo {
        token: Some(token.trim().to_owned().into()),
        ..Default::default()
    };
    Ok(Some(config))
}

/// The DER certificates in a PEM bundle.
fn pem_certificates(pem: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let text = std::str::from_utf8(pem).map_err(|e| e.to_string())?;
    let mut certs = Vec::new();
    let mut body = None::<String>;
    for line in text.lines() {
        let line = line.trim();
        if line == "-----BEGIN CERTIFICATE-----" {
            body = Some(String::new());
        } else if line == "-----END CERTIFICATE-----" {
            let b64 = body.take().ok_or("END without BEGIN")?;
            certs.push(base64_decode(&b64)?);
        } else if let Some(b) = body.as_mut() {
            b.push_str(line);
        }
    }
    if certs.is_empty() {
        return Err("no certificate".into());
    }
    Ok(certs)
}

fn base64_decode(text: &str) -> Result<Vec<u8>, String> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes().filter(|c| *c != b'=') {
        let v = ALPHABET
            .iter()
            .position(|a| *a == c)
            .ok_or_else(|| format!("not base64: {:?}", c as char))? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Ok(out)
}

/// Sets or removes virtshim's labels on `node`, and records an event when VMs fall back to
/// emulation. `accel: None` removes the labels (uninstall).
pub async fn report(config: Config, node: &str, accel: Option<&str>) -> Result<(), NodeError> {
    let client = kube::Client::try_from(config).map_err(|e| NodeError::Client(e.to_string()))?;
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
    let labels = match accel {
        Some(accel) => serde_json::json!({ READY_LABEL: "true", ACCEL_LABEL: accel }),
        None => serde_json::json!({ READY_LABEL: null, ACCEL_LABEL: null }),
    };
    nodes
        .patch(
            node,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "metadata": { "labels": labels } })),
        )
        .await
        .map_err(|source| NodeError::Patch {
            node: node.to_owned(),
            source,
        })?;
    if accel == Some("tcg") {
        let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client, "default");
        let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::now(),
        );
        let event = k8s_openapi::api::core::v1::Event {
            metadata: kube::api::ObjectMeta {
                generate_name: Some(format!("{node}.virtshim-")),
                ..Default::default()
            },
            involved_object: k8s_openapi::api::core::v1::ObjectReference {
                kind: Some("Node".into()),
                name: Some(node.to_owned()),
                uid: Some(node.to_owned()),
                ..Default::default()
            },
            reason: Some("VirtshimNoKVM".into()),
            message: Some(
                "KVM does not work on this node: virtshim VMs run under QEMU's emulation (TCG), much slower"
                    .into(),
            ),
            type_: Some("Warning".into()),
            first_timestamp: Some(now.clone()),
            last_timestamp: Some(now),
            count: Some(1),
            source: Some(k8s_openapi::api::core::v1::EventSource {
                component: Some(FIELD_MANAGER.into()),
                host: Some(node.to_owned()),
            }),
            ..Default::default()
        };
        // An event is informative: failing to record it does not fail the install.
        if let Err(e) = events.create(&PostParams::default(), &event).await {
            eprintln!("virtshim-installer: recording the TCG event: {e}");
        }
    }
    Ok(())
}

/// Whether DaemonSet `namespace/name` exists and is not being deleted: then this pod is only
/// being replaced (an upgrade, a restart), and uninstalling would take virtshim away from the
/// node's running VMs.
pub async fn daemonset_remains(
    config: Config,
    namespace: &str,
    name: &str,
) -> Result<bool, NodeError> {
    let client = kube::Client::try_from(config).map_err(|e| NodeError::Client(e.to_string()))?;
    let sets: Api<k8s_openapi::api::apps::v1::DaemonSet> = Api::namespaced(client, namespace);
    match sets.get_opt(name).await {
        Ok(Some(set)) => Ok(set.metadata.deletion_timestamp.is_none()),
        Ok(None) => Ok(false),
        // `kubectl delete -k manifests/` removes the installer's RBAC and ServiceAccount at the
        // moment its pods start terminating: being refused is how removal looks from here.
        Err(kube::Error::Api(status)) if status.code == 401 || status.code == 403 => Ok(false),
        Err(source) => Err(NodeError::Lookup {
            what: format!("daemonset {namespace}/{name}"),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn base64_and_pem() {
        assert_eq!(base64_decode("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(base64_decode("aGk=").unwrap(), b"hi");
        assert!(base64_decode("a*").is_err());
        let pem = b"-----BEGIN CERTIFICATE-----\naGVs\nbG8=\n-----END CERTIFICATE-----\n";
        assert_eq!(pem_certificates(pem).unwrap(), vec![b"hello".to_vec()]);
        assert!(pem_certificates(b"nothing").is_err());
    }
}
