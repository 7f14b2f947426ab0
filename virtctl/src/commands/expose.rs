//! `virtctl expose vm|vmi|vmirs NAME --name SERVICE --port N`: a Service whose selector is the
//! object's labels (the VMI's own, a VM's template labels, a replica set's matchLabels), which
//! the VMI's pod carries by the pod contract; owned by the object, so it goes with it.

use super::{block_on, ClusterArgs};
use anyhow::{bail, Context as _, Result};
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;
use std::collections::BTreeMap;
use std::process::ExitCode;
use virtctl::cluster;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// vm, vmi or vmirs (singular, plural and long forms accepted).
    pub kind: String,
    /// The object's name.
    pub name: String,
    /// The Service's name.
    #[arg(long = "name", value_name = "SERVICE")]
    pub service_name: String,
    /// The port the Service serves on.
    #[arg(long)]
    pub port: i32,
    /// The VM's port (a number or a name); default: --port.
    #[arg(long)]
    pub target_port: Option<String>,
    /// ClusterIP, NodePort or LoadBalancer.
    #[arg(long = "type", default_value = "ClusterIP")]
    pub service_type: String,
    /// TCP, UDP or SCTP.
    #[arg(long, default_value = "TCP")]
    pub protocol: String,
    /// The port's name.
    #[arg(long)]
    pub port_name: Option<String>,
    /// A fixed cluster IP, or `None` for a headless Service.
    #[arg(long)]
    pub cluster_ip: Option<String>,
}

/// The kinds that can be exposed: (kind, plural path segment).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Vm,
    Vmi,
    ReplicaSet,
}

impl Kind {
    pub fn parse(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "vm" | "vms" | "virtualmachine" | "virtualmachines" => Ok(Self::Vm),
            "vmi" | "vmis" | "virtualmachineinstance" | "virtualmachineinstances" => Ok(Self::Vmi),
            "vmirs"
            | "vmirss"
            | "virtualmachineinstancereplicaset"
            | "virtualmachineinstancereplicasets" => Ok(Self::ReplicaSet),
            other => bail!("unsupported resource type {other:?}: use vm, vmi or vmirs"),
        }
    }

    fn plural(self) -> &'static str {
        match self {
            Self::Vm => "virtualmachines",
            Self::Vmi => "virtualmachineinstances",
            Self::ReplicaSet => "virtualmachineinstancereplicasets",
        }
    }

    fn kind(self) -> &'static str {
        match self {
            Self::Vm => "VirtualMachine",
            Self::Vmi => "VirtualMachineInstance",
            Self::ReplicaSet => "VirtualMachineInstanceReplicaSet",
        }
    }
}

fn string_map(value: &Value) -> BTreeMap<String, String> {
    value
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

/// The selector for `object` of `kind`.
pub fn selector(kind: Kind, object: &Value) -> Result<BTreeMap<String, String>> {
    let labels = match kind {
        Kind::Vmi => string_map(&object["metadata"]["labels"]),
        Kind::Vm => string_map(&object["spec"]["template"]["metadata"]["labels"]),
        Kind::ReplicaSet => {
            let selector = &object["spec"]["selector"];
            if selector["matchExpressions"]
                .as_array()
                .is_some_and(|e| !e.is_empty())
            {
                bail!(
                    "cannot expose a VirtualMachineInstanceReplicaSet selected by matchExpressions"
                );
            }
            string_map(&selector["matchLabels"])
        }
    };
    if labels.is_empty() {
        bail!(
            "cannot expose {} {:?}: it has no labels to select its pod with",
            kind.kind(),
            object["metadata"]["name"].as_str().unwrap_or("")
        );
    }
    Ok(labels)
}

/// The Service to create.
pub fn service(args: &Args, kind: Kind, object: &Value, namespace: &str) -> Result<Service> {
    let service_type = match args.service_type.to_ascii_lowercase().as_str() {
        "clusterip" => "ClusterIP",
        "nodeport" => "NodePort",
        "loadbalancer" => "LoadBalancer",
        other => {
            bail!("unsupported service type {other:?}: use ClusterIP, NodePort or LoadBalancer")
        }
    };
    let protocol = match args.protocol.to_ascii_uppercase().as_str() {
        p @ ("TCP" | "UDP" | "SCTP") => p.to_owned(),
        other => bail!("unknown protocol {other:?}"),
    };
    if !(1..=65535).contains(&args.port) {
        bail!("--port must be between 1 and 65535");
    }
    let target_port = match &args.target_port {
        None => IntOrString::Int(args.port),
        Some(p) => match p.parse::<i32>() {
            Ok(n) => IntOrString::Int(n),
            Err(_) => IntOrString::String(p.clone()),
        },
    };
    let owner = OwnerReference {
        api_version: "kubevirt.io/v1".to_owned(),
        kind: kind.kind().to_owned(),
        name: object["metadata"]["name"].as_str().unwrap_or("").to_owned(),
        uid: object["metadata"]["uid"].as_str().unwrap_or("").to_owned(),
        controller: Some(true),
        block_owner_deletion: Some(false),
    };
    Ok(Service {
        metadata: ObjectMeta {
            name: Some(args.service_name.clone()),
            namespace: Some(namespace.to_owned()),
            owner_references: (!owner.uid.is_empty()).then(|| vec![owner]),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            selector: Some(selector(kind, object)?),
            type_: Some(service_type.to_owned()),
            cluster_ip: args.cluster_ip.clone(),
            ports: Some(vec![ServicePort {
                name: args.port_name.clone(),
                port: args.port,
                protocol: Some(protocol),
                target_port: Some(target_port),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    })
}

pub fn run(args: &Args, cluster_args: &ClusterArgs) -> Result<ExitCode> {
    let kind = Kind::parse(&args.kind)?;
    block_on(async {
        let (client, ns) = cluster_args.connect().await?;
        let path = format!(
            "/apis/kubevirt.io/v1/namespaces/{ns}/{}/{}",
            kind.plural(),
            args.name
        );
        let object = cluster::get_json(&client, &path)
            .await
            .map_err(|e| anyhow::anyhow!("getting {} {}: {e}", kind.kind(), args.name))?;
        let service = service(args, kind, &object, &ns)?;
        kube::Api::<Service>::namespaced(client, &ns)
            .create(&kube::api::PostParams::default(), &service)
            .await
            .context("creating the Service")?;
        println!(
            "Service {} successfully created for {} {}",
            args.service_name, args.kind, args.name
        );
        Ok(ExitCode::SUCCESS)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn args() -> Args {
        Args {
            kind: "vm".into(),
            name: "vm1".into(),
            service_name: "vm1-ssh".into(),
            port: 22,
            target_port: None,
            service_type: "NodePort".into(),
            protocol: "tcp".into(),
            port_name: None,
            cluster_ip: None,
        }
    }

    #[test]
    fn selectors() {
        let vm = json!({"metadata": {"name": "vm1"},
                        "spec": {"template": {"metadata": {"labels": {"app": "web"}}}}});
        let vmi = json!({"metadata": {"name": "v", "labels": {"kubevirt.io/vm": "v", "n": 1}}});
        let rs = json!({"metadata": {"name": "rs"}, "spec": {"selector": {"matchLabels": {"tier": "db"}}}});
        let rs_expr = json!({"metadata": {"name": "rs"}, "spec": {"selector": {
            "matchLabels": {"tier": "db"}, "matchExpressions": [{"key": "a", "operator": "Exists"}]}}});
        let bare = json!({"metadata": {"name": "bare"}, "spec": {}});
        let map = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>()
        };
        assert_eq!(selector(Kind::Vm, &vm).ok(), Some(map(&[("app", "web")])));
        assert_eq!(
            selector(Kind::Vmi, &vmi).ok(),
            Some(map(&[("kubevirt.io/vm", "v")]))
        );
        assert_eq!(
            selector(Kind::ReplicaSet, &rs).ok(),
            Some(map(&[("tier", "db")]))
        );
        assert!(selector(Kind::ReplicaSet, &rs_expr).is_err());
        assert!(selector(Kind::Vm, &bare).is_err());
        assert!(selector(Kind::Vmi, &bare).is_err());
    }

    #[test]
    fn services() {
        let vm = json!({"metadata": {"name": "vm1", "uid": "u1"},
                        "spec": {"template": {"metadata": {"labels": {"app": "web"}}}}});
        let svc = service(&args(), Kind::Vm, &vm, "default").expect("service");
        assert_eq!(
            serde_json::to_value(&svc).expect("json"),
            json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "vm1-ssh", "namespace": "default", "ownerReferences": [{
                    "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "name": "vm1",
                    "uid": "u1", "controller": true, "blockOwnerDeletion": false}]},
                "spec": {"selector": {"app": "web"}, "type": "NodePort",
                         "ports": [{"port": 22, "protocol": "TCP", "targetPort": 22}]},
            })
        );
        let named = Args {
            target_port: Some("ssh".into()),
            ..args()
        };
        let svc = service(&named, Kind::Vm, &vm, "default").expect("service");
        let port = &svc.spec.expect("spec").ports.expect("ports")[0];
        assert_eq!(port.target_port, Some(IntOrString::String("ssh".into())));
        for bad in [
            Args {
                service_type: "ExternalName".into(),
                ..args()
            },
            Args {
                protocol: "icmp".into(),
                ..args()
            },
            Args { port: 0, ..args() },
        ] {
            assert!(service(&bad, Kind::Vm, &vm, "default").is_err(), "{bad:?}");
        }
        assert_eq!(Kind::parse("VMIRS").ok(), Some(Kind::ReplicaSet));
        assert!(Kind::parse("pod").is_err());
    }
}
