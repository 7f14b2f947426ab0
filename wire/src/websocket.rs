//! KubeVirt's console and VNC WebSocket: the one subprotocol, `plain.kubevirt.io` (binary frames
//! of raw bytes, no channel byte), and the check of an upgrade request that both the
//! controller's subresource API and the node's handler make before answering 101.

/// The only subprotocol KubeVirt's console and VNC speak.
pub const PLAIN_PROTOCOL: &str = "plain.kubevirt.io";

/// Why an upgrade request is refused (an HTTP 400 wherever it is answered).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpgradeError {
    #[error("this is a WebSocket endpoint: an Upgrade: websocket request is required")]
    NotAnUpgrade,
    #[error("unsupported WebSocket version (13 expected)")]
    Version,
    #[error("the WebSocket subprotocol must be {PLAIN_PROTOCOL} (offered: {offered:?})")]
    Protocol { offered: Vec<String> },
    #[error("Sec-WebSocket-Key is missing")]
    NoKey,
}

/// Checks a WebSocket upgrade request (RFC 6455, version 13, offering `plain.kubevirt.io`) and
/// computes its `Sec-WebSocket-Accept`. `header(name)` gives every value of the request header
/// `name` (given in lower case).
pub fn accept_plain_upgrade<'a>(
    header: impl Fn(&str) -> Vec<&'a str>,
) -> Result<String, UpgradeError> {
    let first = |name: &str| header(name).first().copied().unwrap_or("");
    if !first("upgrade").eq_ignore_ascii_case("websocket") {
        return Err(UpgradeError::NotAnUpgrade);
    }
    if first("sec-websocket-version") != "13" {
        return Err(UpgradeError::Version);
    }
    let offered: Vec<String> = header("sec-websocket-protocol")
        .iter()
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_owned())
        .collect();
    if !offered.iter().any(|p| p == PLAIN_PROTOCOL) {
        return Err(UpgradeError::Protocol { offered });
    }
    let key = first("sec-websocket-key");
    if key.is_empty() {
        return Err(UpgradeError::NoKey);
    }
    Ok(accept_key(key))
}

/// RFC 6455's `Sec-WebSocket-Accept`: base64(SHA-1(key + the protocol's GUID)).
fn accept_key(key: &str) -> String {
    tungstenite::handshake::derive_accept_key(key.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upgrades() {
        let good = [
            ("upgrade", "websocket"),
            ("sec-websocket-version", "13"),
            (
                "sec-websocket-protocol",
                "base64.binary.k8s.io, plain.kubevirt.io",
            ),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ];
        let check = |headers: &[(&'static str, &'static str)]| {
            accept_plain_upgrade(|name| {
                headers
                    .iter()
                    .filter(|(n, _)| *n == name)
                    .map(|(_, v)| *v)
                    .collect()
            })
        };
        // RFC 6455's example key and answer.
        assert_eq!(check(&good), Ok("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=".to_owned()));
        let without = |i: usize| -> Vec<_> {
            good.iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, h)| *h)
                .collect()
        };
        assert_eq!(check(&without(0)), Err(UpgradeError::NotAnUpgrade));
        assert_eq!(check(&without(1)), Err(UpgradeError::Version));
        assert_eq!(
            check(&without(2)),
            Err(UpgradeError::Protocol { offered: vec![] })
        );
        assert_eq!(check(&without(3)), Err(UpgradeError::NoKey));
        let mut wrong = good;
        wrong[2].1 = "v4.channel.k8s.io";
        assert_eq!(
            check(&wrong),
            Err(UpgradeError::Protocol {
                offered: vec!["v4.channel.k8s.io".into()]
            })
        );
    }
}
