//! `virtctl port-forward TYPE/NAME[.NAMESPACE] [LOCAL:]REMOTE…`: local TCP ports relayed to
//! ports of a VM, as upstream's command. Each accepted connection gets a WebSocket of its own
//! to `…/{virtualmachines|virtualmachineinstances}/NAME/portforward/REMOTE/tcp`, so one slow
//! connection never holds up another; `--stdio` relays standard input and output instead (for
//! `ssh -o ProxyCommand`).

use super::{block_on, ClusterArgs};
use anyhow::{Context as _, Result};
use std::net::IpAddr;
use std::process::ExitCode;
use virtctl::cluster;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// `vm/NAME`, `vmi/NAME`, optionally `.NAMESPACE` after the name.
    pub target: String,
    /// `[LOCAL:]REMOTE[/tcp]`; LOCAL 0 picks a free port.
    #[arg(required = true)]
    pub ports: Vec<String>,
    /// The local address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub address: IpAddr,
    /// Relay standard input and output to the single port given, instead of listening.
    #[arg(long)]
    pub stdio: bool,
}

/// What `TYPE/NAME[.NAMESPACE]` names.
#[derive(Debug, PartialEq, Eq)]
pub struct Target {
    /// `virtualmachines` or `virtualmachineinstances`.
    pub resource: &'static str,
    pub name: String,
    pub namespace: Option<String>,
}

/// One `[LOCAL:]REMOTE` mapping.
#[derive(Debug, PartialEq, Eq)]
pub struct Mapping {
    pub local: u16,
    pub remote: u16,
}

pub fn parse_target(text: &str) -> Result<Target, String> {
    let (kind, rest) = text
        .split_once('/')
        .ok_or_else(|| format!("{text:?}: expected TYPE/NAME[.NAMESPACE], e.g. vm/my-vm"))?;
    let resource = match kind {
        "vm" | "vms" | "virtualmachine" | "virtualmachines" => "virtualmachines",
        "vmi" | "vmis" | "virtualmachineinstance" | "virtualmachineinstances" => {
            "virtualmachineinstances"
        }
        other => return Err(format!("{other:?}: the type is vm or vmi")),
    };
    // Names are DNS labels or subdomains; upstream splits the namespace at the first dot.
    let (name, namespace) = match rest.split_once('.') {
        Some((name, ns)) => (name, Some(ns.to_owned())),
        None => (rest, None),
    };
    if name.is_empty() || namespace.as_deref() == Some("") {
        return Err(format!("{text:?}: empty name or namespace"));
    }
    Ok(Target {
        resource,
        name: name.to_owned(),
        namespace,
    })
}

pub fn parse_mapping(text: &str) -> Result<Mapping, String> {
    let (ports, protocol) = match text.split_once('/') {
        Some((ports, protocol)) => (ports, protocol),
        None => (text, "tcp"),
    };
    if protocol != "tcp" {
        return Err(format!(
            "{text:?}: protocol {protocol:?} is not forwarded by this virtctl (tcp only)"
        ));
    }
    let port = |p: &str| -> Result<u16, String> {
        p.parse::<u16>()
            .map_err(|_| format!("{text:?}: {p:?} is not a port (0-65535)"))
    };
    let (local, remote) = match ports.split_once(':') {
        Some((local, remote)) => (port(local)?, port(remote)?),
        None => (port(ports)?, port(ports)?),
    };
    if remote == 0 {
        return Err(format!("{text:?}: the VM's port cannot be 0"));
    }
    Ok(Mapping { local, remote })
}

pub fn run(args: &Args, cluster_args: &ClusterArgs) -> Result<ExitCode> {
    let target = parse_target(&args.target).map_err(anyhow::Error::msg)?;
    let mappings = args
        .ports
        .iter()
        .map(|p| parse_mapping(p))
        .collect::<Result<Vec<_>, _>>()
        .map_err(anyhow::Error::msg)?;
    if args.stdio && mappings.len() != 1 {
        anyhow::bail!("--stdio relays exactly one port, {} given", mappings.len());
    }
    let mut cluster_args = cluster_args.clone();
    if target.namespace.is_some() {
        cluster_args.namespace = target.namespace.clone();
    }
    block_on(async move {
        let (client, ns) = cluster_args.connect().await?;
        let path = |remote: u16| {
            cluster::subresource_path(
                &ns,
                target.resource,
                &target.name,
                &format!("portforward/{remote}/tcp"),
            )
        };
        if args.stdio {
            let remote = mappings[0].remote;
            let ws = cluster::open_stream_once(&client, &path(remote))
                .await
                .map_err(|e| {
                    anyhow::anyhow!("forwarding to port {remote} of {}: {e}", args.target)
                })?;
            let stdio = tokio::io::join(tokio::io::stdin(), tokio::io::stdout());
            return match cluster::relay(ws, stdio).await {
                cluster::Ended::Broken(why) => anyhow::bail!("the connection broke: {why}"),
                _ => Ok(ExitCode::SUCCESS),
            };
        }
        let mut forwards = tokio::task::JoinSet::new();
        for mapping in &mappings {
            let listener = tokio::net::TcpListener::bind((args.address, mapping.local))
                .await
                .with_context(|| format!("listening on {}:{}", args.address, mapping.local))?;
            let local = listener.local_addr()?;
            println!(
                "Forwarding from {local} to port {} of {}",
                mapping.remote, args.target
            );
            let (client, path, what) = (
                client.clone(),
                path(mapping.remote),
                format!("port {} of {}", mapping.remote, args.target),
            );
            forwards.spawn(async move {
                loop {
                    let (tcp, peer) = match listener.accept().await {
                        Ok(accepted) => accepted,
                        Err(e) => return anyhow::Error::from(e).context("accepting a connection"),
                    };
                    let (client, path, what) = (client.clone(), path.clone(), what.clone());
                    tokio::spawn(async move {
                        match cluster::open_stream_once(&client, &path).await {
                            Ok(ws) => {
                                if let cluster::Ended::Broken(why) = cluster::relay(ws, tcp).await {
                                    eprintln!("{peer} → {what}: the connection broke: {why}");
                                }
                            }
                            // The client's connection closes; the reason is the user's to see.
                            Err(e) => eprintln!("{peer} → {what}: {e}"),
                        }
                    });
                }
            });
        }
        // Listeners only end on an error; the first one ends the command.
        match forwards.join_next().await {
            Some(Ok(error)) => Err(error),
            Some(Err(e)) => Err(anyhow::Error::from(e).context("a forward stopped")),
            None => Ok(ExitCode::SUCCESS),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(
            parse_target("vm/web"),
            Ok(Target {
                resource: "virtualmachines",
                name: "web".into(),
                namespace: None
            })
        );
        assert_eq!(
            parse_target("vmi/web.prod"),
            Ok(Target {
                resource: "virtualmachineinstances",
                name: "web".into(),
                namespace: Some("prod".into())
            })
        );
        for bad in ["web", "pod/web", "vm/", "vm/web.", "/web"] {
            assert!(parse_target(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn mappings() {
        assert_eq!(
            parse_mapping("22"),
            Ok(Mapping {
                local: 22,
                remote: 22
            })
        );
        assert_eq!(
            parse_mapping("8080:80"),
            Ok(Mapping {
                local: 8080,
                remote: 80
            })
        );
        assert_eq!(
            parse_mapping("0:80/tcp"),
            Ok(Mapping {
                local: 0,
                remote: 80
            })
        );
        let udp = parse_mapping("53/udp").unwrap_err();
        assert!(udp.contains("tcp only"), "{udp}");
        for bad in ["x", "1:2:3", "80:0", "70000", ""] {
            assert!(parse_mapping(bad).is_err(), "{bad}");
        }
    }
}
