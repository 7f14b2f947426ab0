//! Who is asking: front-proxy (request-header) authentication, as every aggregated API server
//! does it.
//!
//! The kube-apiserver proxies a user's request with its front-proxy client certificate and the
//! user in `X-Remote-User`, `X-Remote-Group` and `X-Remote-Extra-<key>` headers. Those headers
//! are believed only when the connection presented a certificate that chains to the
//! request-header CA and, if `requestheader-allowed-names` lists any, whose common name is one
//! of them. All of it comes from the ConfigMap `kube-system/extension-apiserver-authentication`.
//!
//! Everything here is pure except [`client_verifier`], which builds the rustls verifier the
//! TLS server asks for a client certificate with (optional: discovery and health need none).

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The ConfigMap holding the request-header settings.
pub const CONFIGMAP_NAMESPACE: &str = "kube-system";
pub const CONFIGMAP_NAME: &str = "extension-apiserver-authentication";

/// Header names used when the ConfigMap names none (KubeVirt always adds these).
pub const DEFAULT_USER_HEADER: &str = "X-Remote-User";
pub const DEFAULT_GROUP_HEADER: &str = "X-Remote-Group";
pub const DEFAULT_EXTRA_PREFIX: &str = "X-Remote-Extra-";

/// Why the settings could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{key} is not a JSON list of strings: {reason}")]
    NotAList { key: &'static str, reason: String },
    #[error("requestheader-client-ca-file holds no PEM certificate")]
    NoCa,
    #[error("requestheader-client-ca-file: {0}")]
    BadCa(String),
}

/// The request-header settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestHeaderConfig {
    /// The CA bundle front-proxy client certificates chain to (DER); empty when the cluster has
    /// none, which makes every authenticated request fail.
    pub client_cas: Vec<CertificateDer<'static>>,
    /// Common names a front-proxy certificate may have; empty means any.
    pub allowed_names: Vec<String>,
    pub username_headers: Vec<String>,
    pub group_headers: Vec<String>,
    pub extra_prefixes: Vec<String>,
}

fn list(data: &BTreeMap<String, String>, key: &'static str) -> Result<Vec<String>, ConfigError> {
    match data.get(key).map(String::as_str) {
        None | Some("") => Ok(Vec::new()),
        Some(text) => serde_json::from_str::<Option<Vec<String>>>(text)
            .map(Option::unwrap_or_default)
            .map_err(|e| ConfigError::NotAList {
                key,
                reason: e.to_string(),
            }),
    }
}

fn with_default(default: &str, mut configured: Vec<String>) -> Vec<String> {
    configured.retain(|h| !h.eq_ignore_ascii_case(default));
    configured.insert(0, default.to_owned());
    configured
}

impl RequestHeaderConfig {
    /// Reads the ConfigMap's data. Header lists are JSON arrays; the defaults
    /// ([`DEFAULT_USER_HEADER`], …) come first, then whatever else the cluster names.
    pub fn from_configmap(data: &BTreeMap<String, String>) -> Result<Self, ConfigError> {
        let client_cas = match data.get("requestheader-client-ca-file") {
            None => Vec::new(),
            Some(pem) => {
                let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| ConfigError::BadCa(e.to_string()))?;
                if certs.is_empty() {
                    return Err(ConfigError::NoCa);
                }
                certs
            }
        };
        Ok(Self {
            client_cas,
            allowed_names: list(data, "requestheader-allowed-names")?,
            username_headers: with_default(
                DEFAULT_USER_HEADER,
                list(data, "requestheader-username-headers")?,
            ),
            group_headers: with_default(
                DEFAULT_GROUP_HEADER,
                list(data, "requestheader-group-headers")?,
            ),
            extra_prefixes: with_default(
                DEFAULT_EXTRA_PREFIX,
                list(data, "requestheader-extra-headers-prefix")?,
            ),
        })
    }

    /// No request-header CA: nobody is authenticated.
    pub fn none() -> Self {
        Self {
            client_cas: Vec::new(),
            allowed_names: Vec::new(),
            username_headers: vec![DEFAULT_USER_HEADER.to_owned()],
            group_headers: vec![DEFAULT_GROUP_HEADER.to_owned()],
            extra_prefixes: vec![DEFAULT_EXTRA_PREFIX.to_owned()],
        }
    }
}

/// An authenticated user, as a SubjectAccessReview names them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserInfo {
    pub user: String,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

/// Why a request is not authenticated (answered 401).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthnError {
    #[error("request is not authenticated: no front-proxy client certificate")]
    NoCertificate,
    #[error("request is not authenticated: client certificate name {0:?} is not allowed")]
    NameNotAllowed(String),
    #[error("request is not authenticated: a valid user header is required")]
    NoUser,
}

/// Whether a front-proxy certificate with `common_name` may assert users.
pub fn name_allowed(allowed: &[String], common_name: Option<&str>) -> bool {
    allowed.is_empty() || common_name.is_some_and(|cn| allowed.iter().any(|a| a == cn))
}

/// The subject common name of a DER certificate.
pub fn common_name(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let cn = parsed
        .subject()
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_owned();
    Some(cn)
}

/// Decodes `%XX` in an extra key, as the apiserver encodes them; malformed input stays as is.
fn unescape(key: &str) -> String {
    let bytes = key.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            let Some(b) = hex else {
                return key.to_owned();
            };
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| key.to_owned())
}

/// The user the headers assert: the first user header present (its first value), the first
/// group header present (all its values), and every header under an extra prefix (key
/// lower-cased and unescaped).
pub fn user_from_headers(
    config: &RequestHeaderConfig,
    headers: &hyper::HeaderMap,
) -> Result<UserInfo, AuthnError> {
    let user = config
        .username_headers
        .iter()
        .find_map(|h| headers.get(h.as_str()))
        .and_then(|v| v.to_str().ok())
        .filter(|u| !u.is_empty())
        .ok_or(AuthnError::NoUser)?
        .to_owned();
    let groups = config
        .group_headers
        .iter()
        .find(|h| headers.contains_key(h.as_str()))
        .map(|h| {
            headers
                .get_all(h.as_str())
                .iter()
                .filter_map(|v| v.to_str().ok())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let mut extra: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for prefix in &config.extra_prefixes {
        let prefix = prefix.to_ascii_lowercase();
        for (name, value) in headers {
            // Header names are lower case here.
            if let Some(key) = name.as_str().strip_prefix(prefix.as_str()) {
                if let Ok(value) = value.to_str() {
                    extra
                        .entry(unescape(key))
                        .or_default()
                        .push(value.to_owned());
                }
            }
        }
    }
    Ok(UserInfo {
        user,
        groups,
        extra,
    })
}

/// Authenticates a request from the verified client chain the connection presented (rustls
/// has already checked it against the request-header CA) and its headers.
pub fn authenticate(
    config: &RequestHeaderConfig,
    peer: Option<&[CertificateDer<'static>]>,
    headers: &hyper::HeaderMap,
) -> Result<UserInfo, AuthnError> {
    let leaf = peer
        .and_then(|chain| chain.first())
        .ok_or(AuthnError::NoCertificate)?;
    let cn = common_name(leaf);
    if !name_allowed(&config.allowed_names, cn.as_deref()) {
        return Err(AuthnError::NameNotAllowed(cn.unwrap_or_default()));
    }
    user_from_headers(config, headers)
}

/// The TLS client-certificate policy: optional, but when given it must chain to the
/// request-header CA. `None` when there is no CA (no client certificate is asked for).
pub fn client_verifier(
    config: &RequestHeaderConfig,
) -> Result<Option<Arc<dyn ClientCertVerifier>>, ConfigError> {
    if config.client_cas.is_empty() {
        return Ok(None);
    }
    let mut roots = rustls::RootCertStore::empty();
    for ca in &config.client_cas {
        roots
            .add(ca.clone())
            .map_err(|e| ConfigError::BadCa(e.to_string()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .allow_unauthenticated()
        .build()
        .map_err(|e| ConfigError::BadCa(e.to_string()))?;
    Ok(Some(verifier))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::{HeaderName, HeaderValue};

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn ca_pem() -> String {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.self_signed(&key).expect("ca").pem()
    }

    #[test]
    fn configmap_table() {
        let ca = ca_pem();
        let full = RequestHeaderConfig::from_configmap(&data(&[
            ("requestheader-client-ca-file", &ca),
            ("requestheader-allowed-names", r#"["front-proxy-client"]"#),
            ("requestheader-username-headers", r#"["X-Remote-User"]"#),
            (
                "requestheader-group-headers",
                r#"["X-Remote-Group","X-Other-Group"]"#,
            ),
            (
                "requestheader-extra-headers-prefix",
                r#"["X-Remote-Extra-"]"#,
            ),
        ]))
        .expect("valid");
        assert_eq!(full.client_cas.len(), 1);
        assert_eq!(full.allowed_names, vec!["front-proxy-client".to_owned()]);
        assert_eq!(full.username_headers, vec!["X-Remote-User".to_owned()]);
        assert_eq!(
            full.group_headers,
            vec!["X-Remote-Group".to_owned(), "X-Other-Group".to_owned()]
        );
        assert_eq!(full.extra_prefixes, vec!["X-Remote-Extra-".to_owned()]);

        let bare = RequestHeaderConfig::from_configmap(&data(&[])).expect("valid");
        assert_eq!(bare, RequestHeaderConfig::none());

        let null_names = RequestHeaderConfig::from_configmap(&data(&[
            ("requestheader-allowed-names", "null"),
            ("requestheader-username-headers", ""),
        ]))
        .expect("valid");
        assert!(null_names.allowed_names.is_empty());

        let cases = [
            (
                data(&[("requestheader-allowed-names", "front-proxy-client")]),
                "NotAList",
            ),
            (
                data(&[("requestheader-client-ca-file", "no pem here")]),
                "NoCa",
            ),
        ];
        for (input, what) in cases {
            let e = RequestHeaderConfig::from_configmap(&input).expect_err(what);
            assert!(format!("{e:?}").starts_with(what), "{e:?}");
        }
    }

    #[test]
    fn allowed_names_table() {
        let allowed = ["front-proxy-client".to_owned(), "aggregator".to_owned()];
        let cases = [
            (&[][..], None, true),
            (&[][..], Some("anyone"), true),
            (&allowed[..], Some("front-proxy-client"), true),
            (&allowed[..], Some("aggregator"), true),
            (&allowed[..], Some("Front-Proxy-Client"), false),
            (&allowed[..], Some("mallory"), false),
            (&allowed[..], None, false),
        ];
        for (allowed, cn, ok) in cases {
            assert_eq!(name_allowed(allowed, cn), ok, "{allowed:?} {cn:?}");
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> hyper::HeaderMap {
        let mut map = hyper::HeaderMap::new();
        for (k, v) in pairs {
            map.append(
                HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        map
    }

    #[test]
    fn headers_table() {
        let config = RequestHeaderConfig {
            group_headers: vec!["X-Remote-Group".into(), "X-Other-Group".into()],
            ..RequestHeaderConfig::none()
        };
        let alice = headers(&[
            ("X-Remote-User", "alice"),
            ("X-Remote-Group", "devs"),
            ("X-Remote-Group", "system:authenticated"),
            ("X-Remote-Extra-Scopes", "a"),
            ("X-Remote-Extra-Scopes", "b"),
            (
                "x-remote-extra-authentication.kubernetes.io%2fpod-name",
                "p",
            ),
            ("X-Other-Group", "ignored"),
        ]);
        let got = user_from_headers(&config, &alice).expect("alice");
        assert_eq!(got.user, "alice");
        assert_eq!(got.groups, vec!["devs", "system:authenticated"]);
        assert_eq!(
            got.extra,
            BTreeMap::from([
                (
                    "authentication.kubernetes.io/pod-name".to_owned(),
                    vec!["p".to_owned()]
                ),
                ("scopes".to_owned(), vec!["a".to_owned(), "b".to_owned()]),
            ])
        );
        // The second group header counts when the first is absent.
        let other = headers(&[("X-Remote-User", "bob"), ("X-Other-Group", "ops")]);
        assert_eq!(
            user_from_headers(&config, &other).expect("bob").groups,
            vec!["ops"]
        );
        let cases = [
            (headers(&[]), Err(AuthnError::NoUser)),
            (headers(&[("X-Remote-User", "")]), Err(AuthnError::NoUser)),
            (
                headers(&[("X-Remote-User", "carol")]),
                Ok(UserInfo {
                    user: "carol".into(),
                    ..UserInfo::default()
                }),
            ),
        ];
        for (h, expected) in cases {
            assert_eq!(user_from_headers(&config, &h), expected, "{h:?}");
        }
    }

    #[test]
    fn unescape_table() {
        for (input, expected) in [
            ("scopes", "scopes"),
            ("a%2fb", "a/b"),
            ("a%2Fb%2f", "a/b/"),
            ("bad%zz", "bad%zz"),
            ("trailing%2", "trailing%2"),
            ("%", "%"),
        ] {
            assert_eq!(unescape(input), expected, "{input}");
        }
    }

    #[test]
    fn authenticate_needs_a_certificate_and_an_allowed_name() {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "front-proxy-client");
        let cert = params.self_signed(&key).expect("cert");
        let chain = vec![cert.der().clone()];
        assert_eq!(
            common_name(&chain[0]).as_deref(),
            Some("front-proxy-client")
        );
        let h = headers(&[("X-Remote-User", "alice")]);
        let mut config = RequestHeaderConfig::none();
        assert_eq!(
            authenticate(&config, None, &h),
            Err(AuthnError::NoCertificate)
        );
        assert!(authenticate(&config, Some(&chain), &h).is_ok());
        config.allowed_names = vec!["aggregator".into()];
        assert_eq!(
            authenticate(&config, Some(&chain), &h),
            Err(AuthnError::NameNotAllowed("front-proxy-client".into()))
        );
        config.allowed_names.push("front-proxy-client".into());
        assert_eq!(
            authenticate(&config, Some(&chain), &h).map(|u| u.user),
            Ok("alice".into())
        );
    }
}
