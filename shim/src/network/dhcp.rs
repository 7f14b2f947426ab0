//! A DHCP server for exactly one guest NIC, as KubeVirt's launcher runs one: it answers only
//! the guest's MAC, always with the same lease (the pod's IP for bridge binding, 10.0.2.2 for
//! masquerade). Packets are parsed and built here; [`serve`] runs it on the pod's bridge.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};

const MAGIC: [u8; 4] = [99, 130, 83, 99];
const BOOTREQUEST: u8 = 1;
const BOOTREPLY: u8 = 2;
/// A day: the lease never changes while the VM lives, renewals just confirm it.
const LEASE_SECONDS: u32 = 86_400;

/// What the guest is told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub mac: [u8; 6],
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub router: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub search: Vec<String>,
    pub hostname: String,
    pub mtu: Option<u16>,
    /// The address the server speaks from (its server identifier).
    pub server: Ipv4Addr,
}

/// DHCP message types (option 53).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageType {
    Discover,
    Offer,
    Request,
    Decline,
    Ack,
    Nak,
    Release,
    Inform,
}

impl MessageType {
    fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            1 => Self::Discover,
            2 => Self::Offer,
            3 => Self::Request,
            4 => Self::Decline,
            5 => Self::Ack,
            6 => Self::Nak,
            7 => Self::Release,
            8 => Self::Inform,
            _ => return None,
        })
    }
    fn code(self) -> u8 {
        match self {
            Self::Discover => 1,
            Self::Offer => 2,
            Self::Request => 3,
            Self::Decline => 4,
            Self::Ack => 5,
            Self::Nak => 6,
            Self::Release => 7,
            Self::Inform => 8,
        }
    }
}

/// The parts of a client's request the server needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub kind: MessageType,
    pub xid: [u8; 4],
    pub flags: [u8; 2],
    pub chaddr: [u8; 6],
    pub ciaddr: Ipv4Addr,
    pub requested: Option<Ipv4Addr>,
}

/// Parses a BOOTREQUEST; `None` for anything else or anything malformed.
pub fn parse(packet: &[u8]) -> Option<Request> {
    if packet.len() < 240
        || packet[0] != BOOTREQUEST
        || packet[1] != 1
        || packet[2] != 6
        || packet[236..240] != MAGIC
    {
        return None;
    }
    let mut kind = None;
    let mut requested = None;
    let mut i = 240;
    while i < packet.len() {
        let code = packet[i];
        if code == 0 {
            i += 1;
            continue;
        }
        if code == 255 {
            break;
        }
        let len = *packet.get(i + 1)? as usize;
        let value = packet.get(i + 2..i + 2 + len)?;
        match (code, value) {
            (53, [t]) => kind = MessageType::from_code(*t),
            (50, [a, b, c, d]) => requested = Some(Ipv4Addr::new(*a, *b, *c, *d)),
            _ => {}
        }
        i += 2 + len;
    }
    let mut chaddr = [0u8; 6];
    chaddr.copy_from_slice(&packet[28..34]);
    Some(Request {
        kind: kind?,
        xid: packet[4..8].try_into().ok()?,
        flags: packet[10..12].try_into().ok()?,
        chaddr,
        ciaddr: Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]),
        requested,
    })
}

fn option(out: &mut Vec<u8>, code: u8, value: &[u8]) {
    // Options longer than 255 bytes would need splitting; nothing here is that long.
    let value = &value[..value.len().min(255)];
    out.push(code);
    out.push(value.len() as u8);
    out.extend_from_slice(value);
}

/// RFC 1035 names, uncompressed, for the domain search option (119): whole names only, as
/// many as fit in one option's 255 bytes (a name cut in the middle would corrupt the list).
fn encode_search(domains: &[String]) -> Vec<u8> {
    let mut out = Vec::new();
    for domain in domains {
        let mut name = Vec::new();
        for label in domain.split('.').filter(|l| !l.is_empty() && l.len() < 64) {
            name.push(label.len() as u8);
            name.extend_from_slice(label.as_bytes());
        }
        name.push(0);
        if out.len() + name.len() > 255 {
            break;
        }
        out.extend_from_slice(&name);
    }
    out
}

fn mask(prefix: u8) -> Ipv4Addr {
    Ipv4Addr::from(if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix.min(32)))
    })
}

/// The reply to a request from the guest, or `None` when none is due (other MACs, releases).
pub fn reply(request: &Request, lease: &Lease) -> Option<Vec<u8>> {
    if request.chaddr != lease.mac {
        return None;
    }
    let kind = match request.kind {
        MessageType::Discover => MessageType::Offer,
        MessageType::Request => {
            let wanted = request.requested.unwrap_or(request.ciaddr);
            if wanted == lease.address || wanted.is_unspecified() {
                MessageType::Ack
            } else {
                MessageType::Nak
            }
        }
        MessageType::Inform => MessageType::Ack,
        _ => return None,
    };
    let mut out = vec![0u8; 240];
    out[0] = BOOTREPLY;
    out[1] = 1;
    out[2] = 6;
    out[4..8].copy_from_slice(&request.xid);
    out[10..12].copy_from_slice(&request.flags);
    out[12..16].copy_from_slice(&request.ciaddr.octets());
    if kind != MessageType::Nak && request.kind != MessageType::Inform {
        out[16..20].copy_from_slice(&lease.address.octets());
    }
    out[20..24].copy_from_slice(&lease.server.octets());
    out[28..34].copy_from_slice(&lease.mac);
    out[236..240].copy_from_slice(&MAGIC);
    option(&mut out, 53, &[kind.code()]);
    option(&mut out, 54, &lease.server.octets());
    if kind != MessageType::Nak {
        if request.kind != MessageType::Inform {
            option(&mut out, 51, &LEASE_SECONDS.to_be_bytes());
            option(&mut out, 58, &(LEASE_SECONDS / 2).to_be_bytes());
            option(&mut out, 59, &(LEASE_SECONDS / 8 * 7).to_be_bytes());
        }
        option(&mut out, 1, &mask(lease.prefix).octets());
        if let Some(router) = lease.router {
            option(&mut out, 3, &router.octets());
        }
        if !lease.dns.is_empty() {
            let dns: Vec<u8> = lease.dns.iter().take(8).flat_map(|d| d.octets()).collect();
            option(&mut out, 6, &dns);
        }
        if !lease.hostname.is_empty() {
            option(&mut out, 12, lease.hostname.as_bytes());
        }
        if let Some(domain) = lease.search.first() {
            option(&mut out, 15, domain.as_bytes());
        }
        if !lease.search.is_empty() {
            option(&mut out, 119, &encode_search(&lease.search));
        }
        if let Some(mtu) = lease.mtu {
            option(&mut out, 26, &mtu.to_be_bytes());
        }
    }
    out.push(255);
    // Some clients ignore replies shorter than a BOOTP packet (300 bytes).
    if out.len() < 300 {
        out.resize(300, 0);
    }
    Some(out)
}

/// Serves the lease on `device` (the pod's bridge) until the process ends.
pub fn serve(device: &str, lease: Lease) -> std::io::Result<()> {
    let socket = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 67))?;
    nix::sys::socket::setsockopt(
        &socket,
        nix::sys::socket::sockopt::BindToDevice,
        &std::ffi::OsString::from(device),
    )
    .map_err(std::io::Error::from)?;
    socket.set_broadcast(true)?;
    let device = device.to_owned();
    std::thread::Builder::new().name("dhcp".into()).spawn(move || {
        let mut buf = [0u8; 1500];
        loop {
            let Ok((n, _)) = socket.recv_from(&mut buf) else { continue };
            let Some(request) = parse(&buf[..n]) else { continue };
            let Some(answer) = reply(&request, &lease) else { continue };
            // The guest has no address yet: answer by broadcast, as RFC 2131 allows.
            let to = SocketAddrV4::new(Ipv4Addr::BROADCAST, 68);
            if let Err(e) = socket.send_to(&answer, to) {
                tracing::warn!(%device, error = %e, "DHCP reply not sent");
            } else {
                tracing::debug!(%device, kind = ?request.kind, address = %lease.address, "DHCP answered");
            }
        }
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_search_option_holds_whole_names_only() {
        let long = format!("{}.{}.svc.cluster.local", "s".repeat(63), "n".repeat(63));
        let domains = vec![long.clone(), long.clone(), "cluster.local".to_owned()];
        let encoded = encode_search(&domains);
        // One long name (~150 bytes) fits, a second would not; the short one then does not
        // jump the queue either.
        assert_eq!(encoded.len(), long.len() + 2);
        assert_eq!(encoded.last(), Some(&0));
        assert!(encode_search(&["a.b".to_owned()]) == [1, b'a', 1, b'b', 0]);
    }

    fn request(kind: u8, mac: [u8; 6], requested: Option<Ipv4Addr>) -> Vec<u8> {
        let mut p = vec![0u8; 240];
        p[0] = BOOTREQUEST;
        p[1] = 1;
        p[2] = 6;
        p[4..8].copy_from_slice(&[1, 2, 3, 4]);
        p[28..34].copy_from_slice(&mac);
        p[236..240].copy_from_slice(&MAGIC);
        p.extend_from_slice(&[53, 1, kind]);
        if let Some(r) = requested {
            p.extend_from_slice(&[50, 4]);
            p.extend_from_slice(&r.octets());
        }
        p.push(255);
        p
    }

    fn lease() -> Lease {
        Lease {
            mac: [2, 0, 0, 0, 0, 1],
            address: Ipv4Addr::new(10, 0, 2, 2),
            prefix: 24,
            router: Some(Ipv4Addr::new(10, 0, 2, 1)),
            dns: vec![Ipv4Addr::new(10, 96, 0, 10)],
            search: vec![
                "default.svc.cluster.local".into(),
                "svc.cluster.local".into(),
            ],
            hostname: "guest".into(),
            mtu: Some(1450),
            server: Ipv4Addr::new(10, 0, 2, 1),
        }
    }

    fn options(packet: &[u8]) -> std::collections::HashMap<u8, Vec<u8>> {
        let mut out = std::collections::HashMap::new();
        let mut i = 240;
        while i < packet.len() && packet[i] != 255 {
            let (code, len) = (packet[i], packet[i + 1] as usize);
            out.insert(code, packet[i + 2..i + 2 + len].to_vec());
            i += 2 + len;
        }
        out
    }

    #[test]
    fn discover_gets_an_offer_with_everything() {
        let r = parse(&request(1, [2, 0, 0, 0, 0, 1], None)).unwrap();
        assert_eq!(r.kind, MessageType::Discover);
        let answer = reply(&r, &lease()).unwrap();
        assert_eq!(answer[0], BOOTREPLY);
        assert_eq!(&answer[4..8], &[1, 2, 3, 4]);
        assert_eq!(&answer[16..20], &[10, 0, 2, 2]);
        let o = options(&answer);
        assert_eq!(o[&53], vec![2]);
        assert_eq!(o[&1], vec![255, 255, 255, 0]);
        assert_eq!(o[&3], vec![10, 0, 2, 1]);
        assert_eq!(o[&6], vec![10, 96, 0, 10]);
        assert_eq!(o[&12], b"guest".to_vec());
        assert_eq!(o[&26], 1450u16.to_be_bytes().to_vec());
        assert_eq!(o[&119][..8], [7, b'd', b'e', b'f', b'a', b'u', b'l', b't']);
        assert!(answer.len() >= 300);
    }

    #[test]
    fn request_for_the_lease_is_acked_and_anything_else_naked() {
        let ok = parse(&request(
            3,
            [2, 0, 0, 0, 0, 1],
            Some(Ipv4Addr::new(10, 0, 2, 2)),
        ))
        .unwrap();
        assert_eq!(options(&reply(&ok, &lease()).unwrap())[&53], vec![5]);
        let wrong = parse(&request(
            3,
            [2, 0, 0, 0, 0, 1],
            Some(Ipv4Addr::new(10, 0, 2, 9)),
        ))
        .unwrap();
        assert_eq!(options(&reply(&wrong, &lease()).unwrap())[&53], vec![6]);
    }

    #[test]
    fn other_macs_and_garbage_get_nothing() {
        let other = parse(&request(1, [2, 0, 0, 0, 0, 9], None)).unwrap();
        assert_eq!(reply(&other, &lease()), None);
        assert_eq!(parse(&[0u8; 10]), None);
        let mut truncated = request(1, [2, 0, 0, 0, 0, 1], None);
        truncated.truncate(243);
        truncated[241] = 200;
        assert_eq!(parse(&truncated), None);
        assert_eq!(mask(0), Ipv4Addr::new(0, 0, 0, 0));
        assert_eq!(mask(32), Ipv4Addr::new(255, 255, 255, 255));
    }
}
