//! The VM's NIC on the pod network, inside the pod's network namespace (where the whole shim
//! lives), as KubeVirt's launcher wires it:
//!
//! - **bridge**: the pod interface `eth0` gives up its IP and MAC and joins the bridge
//!   `k6t-eth0` with the VM's tap; the guest takes the pod's IP and MAC by DHCP.
//! - **masquerade**: the bridge `k6t-eth0` holds 10.0.2.1/24, the guest gets 10.0.2.2 by DHCP,
//!   and NAT in the pod's namespace forwards the listed ports (all when none are listed) from
//!   the pod's IP to the guest and masquerades the guest's traffic.
//!
//! Planning (reading `eth0`) happens at Create and changes nothing; [`apply`] changes the
//! namespace at Start. The namespace dies with the pod, so nothing needs undoing.

pub mod dhcp;

use crate::command::run;
use crate::error::{Error, Result};
use std::net::Ipv4Addr;
use std::path::Path;
use virtshim_api::config::{Binding, InterfaceConfig, MacAddress, NicModel, PortConfig, Protocol};

/// The pod's interface, as CNI names it.
pub const POD_INTERFACE: &str = "eth0";
/// The bridge the VM's tap joins (KubeVirt's name).
pub const BRIDGE: &str = "k6t-eth0";
/// The bridge's address with bridge binding: only the DHCP server speaks from it.
const BRIDGE_LINK_LOCAL: Ipv4Addr = Ipv4Addr::new(169, 254, 75, 10);

/// The pod interface as CNI left it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodInterface {
    pub mac: [u8; 6],
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Option<Ipv4Addr>,
    pub mtu: u16,
}

/// What the VM's NIC will be, decided at Create.
#[derive(Clone, Debug)]
pub struct NicPlan {
    pub name: String,
    pub model: NicModel,
    pub binding: Binding,
    pub guest_mac: [u8; 6],
    pub pod: PodInterface,
    pub lease: dhcp::Lease,
}

fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for octet in mac.iter_mut() {
        *octet = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// Reads `eth0`'s address, MAC, MTU and the default gateway.
pub fn read_pod_interface() -> Result<PodInterface> {
    let bad = |message: String| Error::Command {
        program: "ip",
        message,
    };
    let addr: serde_json::Value =
        serde_json::from_str(&run("ip", &["-j", "addr", "show", "dev", POD_INTERFACE])?)
            .map_err(|e| bad(format!("reading {POD_INTERFACE}: {e}")))?;
    let link = &addr[0];
    let mac = link["address"]
        .as_str()
        .and_then(parse_mac)
        .ok_or_else(|| bad(format!("{POD_INTERFACE} has no MAC")))?;
    let inet = link["addr_info"]
        .as_array()
        .and_then(|a| a.iter().find(|i| i["family"] == "inet"))
        .ok_or_else(|| {
            bad(format!(
                "{POD_INTERFACE} has no IPv4 address: the pod network gave none"
            ))
        })?;
    let address: Ipv4Addr = inet["local"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("unreadable address".into()))?;
    let prefix = inet["prefixlen"].as_u64().unwrap_or(32) as u8;
    let mtu = link["mtu"].as_u64().unwrap_or(1500).min(65535) as u16;
    let routes: serde_json::Value =
        serde_json::from_str(&run("ip", &["-j", "-4", "route", "show", "default"])?)
            .unwrap_or_default();
    let gateway = routes
        .as_array()
        .and_then(|r| r.first())
        .and_then(|r| r["gateway"].as_str())
        .and_then(|g| g.parse().ok());
    Ok(PodInterface {
        mac,
        address,
        prefix,
        gateway,
        mtu,
    })
}

/// A stable locally administered MAC for a guest that names none (KubeVirt lets libvirt pick
/// one; a stable one keeps the guest's idea of its NIC across restarts of the same VMI).
fn generated_mac(seed: &str) -> [u8; 6] {
    let digest = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, seed.as_bytes());
    let b = digest.as_bytes();
    [0x02, b[0], b[1], b[2], b[3], b[4]]
}

/// DNS servers and search domains from the pod's resolv.conf.
pub fn read_resolv_conf(path: Option<&Path>) -> (Vec<Ipv4Addr>, Vec<String>) {
    let text = path
        .and_then(|p| std::fs::read_to_string(p).ok())
        .unwrap_or_default();
    let mut dns = Vec::new();
    let mut search = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => dns.extend(words.next().and_then(|w| w.parse::<Ipv4Addr>().ok())),
            Some("search") => search = words.map(str::to_owned).collect(),
            _ => {}
        }
    }
    (dns, search)
}

/// Masquerade's guest side: `vmNetworkCIDR` or 10.0.2.0/24; the bridge is .1, the guest .2.
fn masquerade_addresses(cidr: Option<&str>) -> (Ipv4Addr, Ipv4Addr, u8) {
    let (net, prefix) = cidr
        .and_then(|c| c.split_once('/'))
        .and_then(|(a, p)| Some((a.parse::<Ipv4Addr>().ok()?, p.parse::<u8>().ok()?)))
        .unwrap_or((Ipv4Addr::new(10, 0, 2, 0), 24));
    let base = u32::from(net) & (u32::MAX << (32 - u32::from(prefix.min(30))));
    (Ipv4Addr::from(base + 1), Ipv4Addr::from(base + 2), prefix)
}

/// The network namespace the shim started in (containerd's: the node's), as (device, inode).
static NODE_NAMESPACE: std::sync::OnceLock<(u64, u64)> = std::sync::OnceLock::new();

fn thread_namespace() -> Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let path = "/proc/thread-self/ns/net";
    std::fs::metadata(path)
        .map(|m| (m.dev(), m.ino()))
        .map_err(|e| Error::path("reading the network namespace", path, e))
}

/// Notes the namespace the shim runs in now, before it enters the pod's: the node's.
pub fn remember_node_namespace() -> Result<()> {
    let own = thread_namespace()?;
    let _ = NODE_NAMESPACE.set(own);
    Ok(())
}

/// The last guard before links, routes and firewall rules change: the calling thread (whose
/// namespace the `ip`/`iptables` children inherit) must not be in the node's network namespace,
/// whatever the bundle said.
fn ensure_pod_namespace() -> Result<()> {
    let node = NODE_NAMESPACE.get().ok_or_else(|| {
        Error::FailedPrecondition("the node's network namespace was never noted".into())
    })?;
    if thread_namespace()? == *node {
        return Err(Error::FailedPrecondition(
            "the shim is in the node's network namespace, not the pod's: it will not wire a VM \
             into the node's network"
                .into(),
        ));
    }
    Ok(())
}

/// What DHCP tells the guest about its name.
#[derive(Debug)]
pub struct GuestName<'a> {
    pub hostname: &'a str,
    pub subdomain: Option<&'a str>,
    pub namespace: &'a str,
}

/// The pod's DNS search list as the guest gets it: with a subdomain, KubeVirt puts
/// `<subdomain>.<namespace>.svc.<cluster domain>` first (it is also the DHCP domain name), so
/// that `hostname -f` in the guest gives the name a headless Service resolves.
fn guest_search(search: Vec<String>, name: &GuestName<'_>) -> Vec<String> {
    let Some(subdomain) = name.subdomain else {
        return search;
    };
    let service_domain = format!("{}.svc.", name.namespace);
    match search.iter().find(|d| d.starts_with(&service_domain)) {
        Some(domain) => {
            let mut out = vec![format!("{subdomain}.{domain}")];
            out.extend(search);
            out
        }
        None => search,
    }
}

/// Plans the NIC for the VM's one pod-network interface (validation allows no more).
pub fn plan(
    iface: &InterfaceConfig,
    vm_network_cidr: Option<&str>,
    name: &GuestName<'_>,
    resolv_conf: Option<&Path>,
    seed: &str,
) -> Result<NicPlan> {
    let pod = read_pod_interface()?;
    let (dns, search) = read_resolv_conf(resolv_conf);
    let search = guest_search(search, name);
    let hostname = name.hostname;
    let (guest_mac, lease_address, prefix, router, server) = match &iface.binding {
        Binding::Bridge => (
            iface.mac.map(|m| m.0).unwrap_or(pod.mac),
            pod.address,
            pod.prefix,
            pod.gateway,
            BRIDGE_LINK_LOCAL,
        ),
        Binding::Masquerade { .. } => {
            let (gateway, guest, prefix) = masquerade_addresses(vm_network_cidr);
            (
                iface
                    .mac
                    .map(|m| m.0)
                    .unwrap_or_else(|| generated_mac(seed)),
                guest,
                prefix,
                Some(gateway),
                gateway,
            )
        }
    };
    let lease = dhcp::Lease {
        mac: guest_mac,
        address: lease_address,
        prefix,
        router,
        dns,
        search,
        hostname: hostname.to_owned(),
        mtu: Some(pod.mtu),
        server,
    };
    Ok(NicPlan {
        name: iface.name.clone(),
        model: iface.model,
        binding: iface.binding.clone(),
        guest_mac,
        pod,
        lease,
    })
}

fn mac_text(mac: [u8; 6]) -> String {
    MacAddress(mac).to_string()
}

/// Changes the pod's namespace for the NIC and starts its DHCP server.
pub fn apply(nic: &NicPlan) -> Result<()> {
    ensure_pod_namespace()?;
    let mtu = nic.pod.mtu.to_string();
    run("ip", &["link", "add", BRIDGE, "type", "bridge"])?;
    run("ip", &["link", "set", BRIDGE, "mtu", &mtu])?;
    match &nic.binding {
        Binding::Bridge => {
            let cidr = format!("{}/{}", nic.pod.address, nic.pod.prefix);
            // eth0 hands its MAC to the guest, so it takes a new one; its IP goes to the guest.
            let new_mac = mac_text(generated_mac(&format!("eth0-{}", mac_text(nic.pod.mac))));
            run("ip", &["addr", "del", &cidr, "dev", POD_INTERFACE])?;
            run("ip", &["link", "set", POD_INTERFACE, "down"])?;
            run("ip", &["link", "set", POD_INTERFACE, "address", &new_mac])?;
            run("ip", &["link", "set", POD_INTERFACE, "master", BRIDGE])?;
            run("ip", &["link", "set", POD_INTERFACE, "up"])?;
            run(
                "ip",
                &[
                    "addr",
                    "add",
                    &format!("{BRIDGE_LINK_LOCAL}/32"),
                    "dev",
                    BRIDGE,
                ],
            )?;
            run("ip", &["link", "set", BRIDGE, "up"])?;
        }
        Binding::Masquerade { ports } => {
            let gateway = nic.lease.router.unwrap_or(nic.lease.server);
            run(
                "ip",
                &[
                    "addr",
                    "add",
                    &format!("{gateway}/{}", nic.lease.prefix),
                    "dev",
                    BRIDGE,
                ],
            )?;
            run("ip", &["link", "set", BRIDGE, "up"])?;
            std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
                .map_err(|e| Error::io("enabling IP forwarding in the pod's namespace", e))?;
            let guest = nic.lease.address.to_string();
            run(
                "iptables",
                &[
                    "-t",
                    "nat",
                    "-A",
                    "POSTROUTING",
                    "-s",
                    &format!("{guest}/32"),
                    "-o",
                    POD_INTERFACE,
                    "-j",
                    "MASQUERADE",
                ],
            )?;
            // What arrives at the pod's IP on a forwarded port goes to the guest.
            dnat_to_guest(ports, &["PREROUTING", "-i", POD_INTERFACE], &guest)?;
            forward_localhost(ports, &guest, &gateway.to_string())?;
        }
    }
    dhcp::serve(BRIDGE, nic.lease.clone()).map_err(|e| Error::io("starting the DHCP server", e))
}

/// Appends to the nat table one DNAT rule to `guest` per forwarded (protocol, port), in the
/// chain and with the match that `chain_and_match` starts with.
fn dnat_to_guest(ports: &[PortConfig], chain_and_match: &[&str], guest: &str) -> Result<()> {
    for (protocol, port) in forwarded(ports) {
        let mut args = vec!["-t", "nat", "-A"];
        args.extend_from_slice(chain_and_match);
        args.extend(["-p", protocol]);
        let port_text = port.map(|p| p.to_string());
        if let Some(p) = &port_text {
            args.extend(["--dport", p.as_str()]);
        }
        args.extend(["-j", "DNAT", "--to-destination", guest]);
        run("iptables", &args)?;
    }
    Ok(())
}

/// Sends the forwarded ports of the pod's localhost to the guest, as KubeVirt's masquerade does:
/// the CRI's PortForward (`kubectl port-forward`) dials `localhost:<port>` inside the pod's
/// network namespace, and the VM is what listens there. The connection leaves from the gateway's
/// address (a 127.0.0.1 source may not go out on the bridge); `route_localnet` lets the kernel
/// route the rewritten packets and their replies between the loopback and the bridge.
fn forward_localhost(ports: &[PortConfig], guest: &str, gateway: &str) -> Result<()> {
    std::fs::write(
        format!("/proc/sys/net/ipv4/conf/{BRIDGE}/route_localnet"),
        "1",
    )
    .map_err(|e| Error::io("letting localhost be routed to the guest", e))?;
    dnat_to_guest(ports, &["OUTPUT", "-d", "127.0.0.1/32"], guest)?;
    let guest_net = format!("{guest}/32");
    run(
        "iptables",
        &[
            "-t",
            "nat",
            "-A",
            "POSTROUTING",
            "-s",
            "127.0.0.1/32",
            "-d",
            &guest_net,
            "-o",
            BRIDGE,
            "-j",
            "SNAT",
            "--to-source",
            gateway,
        ],
    )
    .map(|_| ())
}

/// The (protocol, port) pairs to forward: each listed port, or every TCP and UDP port.
fn forwarded(ports: &[PortConfig]) -> Vec<(&'static str, Option<u16>)> {
    if ports.is_empty() {
        return vec![("tcp", None), ("udp", None)];
    }
    ports
        .iter()
        .map(|p| {
            (
                if p.protocol == Protocol::Udp {
                    "udp"
                } else {
                    "tcp"
                },
                Some(p.port),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subdomain_leads_the_search_list() {
        let search: Vec<String> = ["ns.svc.cluster.local", "svc.cluster.local", "cluster.local"]
            .map(String::from)
            .to_vec();
        let name = |subdomain| GuestName {
            hostname: "vm",
            subdomain,
            namespace: "ns",
        };
        assert_eq!(guest_search(search.clone(), &name(None)), search);
        assert_eq!(
            guest_search(search.clone(), &name(Some("db")))[..2],
            ["db.ns.svc.cluster.local", "ns.svc.cluster.local"]
        );
        // Outside a cluster's DNS (no `<namespace>.svc.` domain) nothing is made up.
        let plain = vec!["example.com".to_owned()];
        assert_eq!(guest_search(plain.clone(), &name(Some("db"))), plain);
    }

    #[test]
    fn masquerade_addresses_follow_the_cidr() {
        assert_eq!(
            masquerade_addresses(None),
            (Ipv4Addr::new(10, 0, 2, 1), Ipv4Addr::new(10, 0, 2, 2), 24)
        );
        assert_eq!(
            masquerade_addresses(Some("192.168.7.0/28")),
            (
                Ipv4Addr::new(192, 168, 7, 1),
                Ipv4Addr::new(192, 168, 7, 2),
                28
            )
        );
    }

    #[test]
    fn resolv_conf_and_ports() {
        let dir = std::env::temp_dir().join(format!("resolv-{}", std::process::id()));
        std::fs::write(&dir, "search ns.svc.cluster.local svc.cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n").unwrap();
        let (dns, search) = read_resolv_conf(Some(&dir));
        let _ = std::fs::remove_file(&dir);
        assert_eq!(dns, [Ipv4Addr::new(10, 96, 0, 10)]);
        assert_eq!(search, ["ns.svc.cluster.local", "svc.cluster.local"]);
        assert_eq!(forwarded(&[]), [("tcp", None), ("udp", None)]);
        let ports = [
            PortConfig {
                protocol: Protocol::Udp,
                port: 53,
            },
            PortConfig {
                protocol: Protocol::Tcp,
                port: 80,
            },
        ];
        assert_eq!(forwarded(&ports), [("udp", Some(53)), ("tcp", Some(80))]);
        assert_eq!(generated_mac("a")[0], 0x02);
        assert_eq!(
            parse_mac("aa:bb:cc:dd:ee:ff"),
            Some([0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff])
        );
        assert_eq!(parse_mac("aa:bb"), None);
    }
}
