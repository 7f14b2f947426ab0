//! The webhook server's certificate, made and rotated by the controller itself (no cert-manager).
//!
//! A self-signed CA (valid ~1 year) signs a serving certificate for `<service>.<namespace>.svc`
//! and `….svc.cluster.local` (valid ~30 days). Both live in one Secret, which is the source of
//! truth for every replica: each one reads it, renews what has less than a third of its life
//! left (writes race through the Secret's resourceVersion: the loser re-reads), injects the CA
//! bundle into the webhook configurations, and swaps the serving certificate into the running
//! server through [`CertResolver`] — no restart. When the CA itself is renewed the previous one
//! stays in the bundle while it is valid, so a replica still serving the old chain keeps working.
//!
//! The same CA also issues the certificates between the controller and the handlers
//! ([`renew_leaves`]): the controller's client certificate (`virtshim-controller.<ns>.svc`,
//! clientAuth) and the handlers' serving certificate (`virtshim-handler.<ns>.svc`), renewed by
//! the same one-third rule and dropped with the CA that issued them. The handlers get theirs in
//! a Secret of their own (`tls.crt`, `tls.key`, and `ca.crt`: the bundle that issues the client
//! certificate); the serving certificate also answers for the subresource API's Service, whose
//! APIServices get the CA bundle like the webhooks.
//!
//! The decisions ([`plan`], [`leaf_ok`], [`CertSet::ca_bundle`], [`ca_bundle_patch`]) are pure
//! and tested here; [`CertManager`] is the thin part that talks to the apiserver.

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use kube::api::{Api, Patch, PatchParams, PostParams};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

/// How long a new CA is valid.
pub const CA_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// How long a new serving certificate is valid.
pub const SERVING_VALIDITY: Duration = Duration::from_secs(30 * 24 * 3600);
/// New certificates start this much in the past, for clocks a little behind ours.
pub const BACKDATE: Duration = Duration::from_secs(5 * 60);
/// How often a replica re-reads the Secret (and renews, re-injects) when all is well.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(10 * 60);
/// How soon a failed check is retried.
pub const RETRY_INTERVAL: Duration = Duration::from_secs(30);

/// Secret keys. `tls.crt` / `tls.key` make it a valid `kubernetes.io/tls` Secret.
pub const KEY_CA_CERT: &str = "ca.crt";
pub const KEY_CA_KEY: &str = "ca.key";
pub const KEY_PREVIOUS_CA_CERT: &str = "ca-previous.crt";
pub const KEY_CERT: &str = "tls.crt";
pub const KEY_KEY: &str = "tls.key";
/// The controller's client certificate for the handler (and its key).
pub const KEY_CLIENT_CERT: &str = "client.crt";
pub const KEY_CLIENT_KEY: &str = "client.key";
/// The handler's serving certificate (and its key), copied into the handler's own Secret.
pub const KEY_HANDLER_CERT: &str = "handler.crt";
pub const KEY_HANDLER_KEY: &str = "handler.key";

/// Why certificates could not be made, read or stored.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("making a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{what} is not a PEM certificate")]
    NotPem { what: &'static str },
    #[error("{what} is not a valid X.509 certificate: {reason}")]
    NotX509 { what: &'static str, reason: String },
    #[error("the serving key is not a PEM private key usable by TLS: {0}")]
    ServingKey(String),
    #[error("certificate validity out of range")]
    Validity,
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("Secret {namespace}/{name} kept changing under us; giving up for now")]
    Contended { namespace: String, name: String },
}

/// The Service the apiserver calls, whose DNS names the serving certificate carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceIdentity {
    pub service: String,
    pub namespace: String,
}

impl ServiceIdentity {
    /// `<service>.<namespace>.svc` (the name the apiserver checks) and its cluster.local form.
    pub fn dns_names(&self) -> Vec<String> {
        let short = format!("{}.{}.svc", self.service, self.namespace);
        vec![format!("{short}.cluster.local"), short]
    }
}

/// A CA and a serving certificate with their keys, all PEM, as the Secret holds them; also,
/// once [`renew_leaves`] has made them, the certificates between the controller and the
/// handlers.
#[derive(Clone, PartialEq, Eq)]
pub struct CertSet {
    pub ca_cert: String,
    pub ca_key: String,
    /// The CA this one replaced, kept in the bundle while it is valid.
    pub previous_ca_cert: Option<String>,
    pub cert: String,
    pub key: String,
    /// The controller's client certificate, presented to every handler.
    pub client: Option<Leaf>,
    /// The handlers' serving certificate.
    pub handler: Option<Leaf>,
}

/// A certificate the CA issued and its key, PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct Leaf {
    pub cert: String,
    pub key: String,
}

impl std::fmt::Debug for Leaf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("Leaf")
            .field("cert", &self.cert)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for CertSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the keys.
        f.debug_struct("CertSet")
            .field("ca_cert", &self.ca_cert)
            .field("previous_ca_cert", &self.previous_ca_cert)
            .field("cert", &self.cert)
            .field("client", &self.client)
            .field("handler", &self.handler)
            .finish_non_exhaustive()
    }
}

/// The facts about one certificate that the renewal rules read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertInfo {
    pub serial: Vec<u8>,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    pub dns_names: Vec<String>,
    pub is_ca: bool,
    /// The extended key usage allows TLS client authentication.
    pub client_auth: bool,
    /// The extended key usage allows TLS server authentication.
    pub server_auth: bool,
}

impl CertInfo {
    /// True when less than a third of the certificate's life is left (or it has expired).
    pub fn needs_renewal(&self, now: OffsetDateTime) -> bool {
        let life = self.not_after - self.not_before;
        now >= self.not_after - life / 3
    }
}

fn der_of(pem: &str, what: &'static str) -> Result<CertificateDer<'static>, CertError> {
    CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|_| CertError::NotPem { what })
}

fn parse<'a>(der: &'a [u8], what: &'static str) -> Result<X509Certificate<'a>, CertError> {
    x509_parser::parse_x509_certificate(der)
        .map(|(_, cert)| cert)
        .map_err(|e| CertError::NotX509 {
            what,
            reason: e.to_string(),
        })
}

fn info_of(cert: &X509Certificate<'_>) -> Result<CertInfo, CertError> {
    let time = |t: &x509_parser::time::ASN1Time| {
        OffsetDateTime::from_unix_timestamp(t.timestamp()).map_err(|_| CertError::Validity)
    };
    let mut dns_names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::DNSName(name) = name {
                dns_names.push((*name).to_owned());
            }
        }
    }
    let (client_auth, server_auth) = match cert.extended_key_usage() {
        Ok(Some(eku)) => (
            eku.value.any || eku.value.client_auth,
            eku.value.any || eku.value.server_auth,
        ),
        // No extension: any use.
        Ok(None) => (true, true),
        Err(_) => (false, false),
    };
    Ok(CertInfo {
        client_auth,
        server_auth,
        serial: cert.raw_serial().to_vec(),
        not_before: time(&cert.validity().not_before)?,
        not_after: time(&cert.validity().not_after)?,
        dns_names,
        is_ca: cert.is_ca(),
    })
}

/// Reads the facts of a PEM certificate.
pub fn cert_info(pem: &str) -> Result<CertInfo, CertError> {
    let der = der_of(pem, "the certificate")?;
    info_of(&parse(&der, "the certificate")?)
}

/// What a Secret's certificates need.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Renewal {
    /// Serve what is there.
    Keep,
    /// Keep the CA, make a new serving certificate.
    Serving,
    /// Make a new CA and a new serving certificate.
    All,
}

/// Decides what `stored` needs at `now` for a server answering to `dns_names`.
///
/// A missing or unreadable set, or a CA with less than a third of its life left, means a new
/// CA. A serving certificate with less than a third of its life left, one not covering every
/// name, one not signed by the current CA, or one whose key does not match, means a new one.
pub fn plan(stored: Option<&CertSet>, dns_names: &[String], now: OffsetDateTime) -> Renewal {
    let Some(set) = stored else {
        return Renewal::All;
    };
    let Ok(ca_der) = der_of(&set.ca_cert, "the CA certificate") else {
        return Renewal::All;
    };
    let (Ok(ca), Ok(ca_key)) = (parse(&ca_der, "the CA"), KeyPair::from_pem(&set.ca_key)) else {
        return Renewal::All;
    };
    let Ok(ca_info) = info_of(&ca) else {
        return Renewal::All;
    };
    if !ca_info.is_ca
        || ca_info.needs_renewal(now)
        || ca.public_key().subject_public_key.data.as_ref() != ca_key.public_key_raw()
    {
        return Renewal::All;
    }
    let serving_ok = || -> Option<bool> {
        let der = der_of(&set.cert, "the serving certificate").ok()?;
        let cert = parse(&der, "the serving certificate").ok()?;
        let info = info_of(&cert).ok()?;
        let key = KeyPair::from_pem(&set.key).ok()?;
        Some(
            !info.needs_renewal(now)
                && now >= info.not_before
                && dns_names.iter().all(|n| info.dns_names.contains(n))
                && cert.verify_signature(Some(ca.public_key())).is_ok()
                && cert.public_key().subject_public_key.data.as_ref() == key.public_key_raw(),
        )
    };
    if serving_ok().unwrap_or(false) {
        Renewal::Keep
    } else {
        Renewal::Serving
    }
}

fn validity(
    params: &mut CertificateParams,
    now: OffsetDateTime,
    life: Duration,
) -> Result<(), CertError> {
    let backdate = time::Duration::try_from(BACKDATE).map_err(|_| CertError::Validity)?;
    let life = time::Duration::try_from(life).map_err(|_| CertError::Validity)?;
    params.not_before = now - backdate;
    params.not_after = now + life;
    Ok(())
}

/// A new self-signed CA: (certificate PEM, key PEM).
fn new_ca(now: OffsetDateTime) -> Result<(String, String), CertError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, "virtshim-controller webhook CA");
    name.push(DnType::OrganizationName, "virtshim");
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut params, now, CA_VALIDITY)?;
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// A new serving certificate for `dns_names` signed by the CA: (certificate PEM, key PEM).
fn new_serving(
    ca_cert: &str,
    ca_key: &str,
    dns_names: &[String],
    now: OffsetDateTime,
) -> Result<(String, String), CertError> {
    new_leaf(ca_cert, ca_key, dns_names, Usage::Server, now)
}

/// What a leaf certificate is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Usage {
    /// TLS server authentication (extended key usage serverAuth).
    Server,
    /// TLS client authentication (extended key usage clientAuth).
    Client,
}

/// A new certificate for `dns_names` and `usage`, signed by the CA: (certificate PEM, key PEM).
fn new_leaf(
    ca_cert: &str,
    ca_key: &str,
    dns_names: &[String],
    usage: Usage,
    now: OffsetDateTime,
) -> Result<(String, String), CertError> {
    let issuer = Issuer::from_ca_cert_pem(ca_cert, KeyPair::from_pem(ca_key)?)?;
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(dns_names.to_vec())?;
    let mut name = DistinguishedName::new();
    if let Some(first) = dns_names.last() {
        name.push(DnType::CommonName, first.as_str());
    }
    params.distinguished_name = name;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![match usage {
        Usage::Server => ExtendedKeyUsagePurpose::ServerAuth,
        Usage::Client => ExtendedKeyUsagePurpose::ClientAuth,
    }];
    params.use_authority_key_identifier_extension = true;
    validity(&mut params, now, SERVING_VALIDITY)?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Carries out `renewal` on `stored` (which [`plan`] judged), returning the set to store.
pub fn renew(
    stored: Option<&CertSet>,
    renewal: Renewal,
    dns_names: &[String],
    now: OffsetDateTime,
) -> Result<CertSet, CertError> {
    match (renewal, stored) {
        (Renewal::Keep, Some(set)) => Ok(set.clone()),
        (Renewal::Serving, Some(set)) => {
            let (cert, key) = new_serving(&set.ca_cert, &set.ca_key, dns_names, now)?;
            Ok(CertSet {
                cert,
                key,
                ..set.clone()
            })
        }
        _ => {
            let (ca_cert, ca_key) = new_ca(now)?;
            let (cert, key) = new_serving(&ca_cert, &ca_key, dns_names, now)?;
            // The replaced CA stays trusted while it is valid and well-formed.
            let previous_ca_cert = stored
                .map(|s| s.ca_cert.clone())
                .filter(|pem| cert_info(pem).is_ok_and(|i| i.is_ca && now < i.not_after));
            // Leaves of the replaced CA go with it; [`renew_leaves`] makes new ones.
            Ok(CertSet {
                ca_cert,
                ca_key,
                previous_ca_cert,
                cert,
                key,
                client: None,
                handler: None,
            })
        }
    }
}

/// The names of the certificates between the controller and the handlers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeafNames {
    /// The controller's client certificate, e.g. `virtshim-controller.virtshim-system.svc`
    /// (what the handlers' `--client-name` expects).
    pub client: String,
    /// The handlers' serving certificate, e.g. `virtshim-handler.virtshim-system.svc` (the
    /// server name the controller verifies).
    pub handler: String,
}

impl LeafNames {
    /// The names for a controller and handlers installed in `namespace`.
    pub fn for_namespace(namespace: &str) -> Self {
        Self {
            client: format!("virtshim-controller.{namespace}.svc"),
            handler: format!("virtshim-handler.{namespace}.svc"),
        }
    }
}

/// Whether `leaf` is usable at `now`: readable, signed by the CA `ca_cert`, its key matching,
/// issued for `name` and `usage`, with more than a third of its life left.
pub fn leaf_ok(
    ca_cert: &str,
    leaf: Option<&Leaf>,
    name: &str,
    usage: Usage,
    now: OffsetDateTime,
) -> bool {
    let check = || -> Option<bool> {
        let leaf = leaf?;
        let ca_der = der_of(ca_cert, "the CA certificate").ok()?;
        let ca = parse(&ca_der, "the CA").ok()?;
        let der = der_of(&leaf.cert, "the certificate").ok()?;
        let cert = parse(&der, "the certificate").ok()?;
        let info = info_of(&cert).ok()?;
        let key = KeyPair::from_pem(&leaf.key).ok()?;
        let usage_ok = match usage {
            Usage::Server => info.server_auth,
            Usage::Client => info.client_auth,
        };
        Some(
            usage_ok
                && !info.is_ca
                && !info.needs_renewal(now)
                && now >= info.not_before
                && info.dns_names.iter().any(|n| n == name)
                && cert.verify_signature(Some(ca.public_key())).is_ok()
                && cert.public_key().subject_public_key.data.as_ref() == key.public_key_raw(),
        )
    };
    check().unwrap_or(false)
}

/// Makes whichever of the client and handler certificates [`leaf_ok`] rejects, with the CA of
/// `set`; the set to store, and whether anything changed.
pub fn renew_leaves(
    mut set: CertSet,
    names: &LeafNames,
    now: OffsetDateTime,
) -> Result<(CertSet, bool), CertError> {
    let mut changed = false;
    for (slot, name, usage) in [
        (&mut set.client, &names.client, Usage::Client),
        (&mut set.handler, &names.handler, Usage::Server),
    ] {
        if !leaf_ok(&set.ca_cert, slot.as_ref(), name, usage, now) {
            let (cert, key) = new_leaf(
                &set.ca_cert,
                &set.ca_key,
                std::slice::from_ref(name),
                usage,
                now,
            )?;
            *slot = Some(Leaf { cert, key });
            changed = true;
        }
    }
    Ok((set, changed))
}

impl CertSet {
    /// A brand-new CA and serving certificate.
    pub fn generate(dns_names: &[String], now: OffsetDateTime) -> Result<Self, CertError> {
        renew(None, Renewal::All, dns_names, now)
    }

    /// The PEM bundle the apiserver must trust: the current CA, then the previous one while it
    /// is still valid.
    pub fn ca_bundle(&self, now: OffsetDateTime) -> String {
        let mut bundle = self.ca_cert.trim_end().to_owned();
        bundle.push('\n');
        if let Some(previous) = &self.previous_ca_cert {
            if cert_info(previous).is_ok_and(|i| now < i.not_after) {
                bundle.push_str(previous.trim_end());
                bundle.push('\n');
            }
        }
        bundle
    }

    /// Reads a set from a Secret's data; `None` when a key is missing or not UTF-8.
    pub fn from_secret(secret: &Secret) -> Option<Self> {
        let data = secret.data.as_ref()?;
        let text = |key: &str| {
            data.get(key)
                .and_then(|b| String::from_utf8(b.0.clone()).ok())
        };
        let leaf = |cert: &str, key: &str| {
            Some(Leaf {
                cert: text(cert)?,
                key: text(key)?,
            })
        };
        Some(Self {
            ca_cert: text(KEY_CA_CERT)?,
            ca_key: text(KEY_CA_KEY)?,
            previous_ca_cert: text(KEY_PREVIOUS_CA_CERT),
            cert: text(KEY_CERT)?,
            key: text(KEY_KEY)?,
            client: leaf(KEY_CLIENT_CERT, KEY_CLIENT_KEY),
            handler: leaf(KEY_HANDLER_CERT, KEY_HANDLER_KEY),
        })
    }

    /// The Secret data holding this set.
    pub fn to_secret_data(&self) -> BTreeMap<String, ByteString> {
        let mut data = BTreeMap::new();
        let mut put = |key: &str, value: &str| {
            data.insert(key.to_owned(), ByteString(value.as_bytes().to_vec()));
        };
        put(KEY_CA_CERT, &self.ca_cert);
        put(KEY_CA_KEY, &self.ca_key);
        put(KEY_CERT, &self.cert);
        put(KEY_KEY, &self.key);
        if let Some(previous) = &self.previous_ca_cert {
            put(KEY_PREVIOUS_CA_CERT, previous);
        }
        if let Some(client) = &self.client {
            put(KEY_CLIENT_CERT, &client.cert);
            put(KEY_CLIENT_KEY, &client.key);
        }
        if let Some(handler) = &self.handler {
            put(KEY_HANDLER_CERT, &handler.cert);
            put(KEY_HANDLER_KEY, &handler.key);
        }
        data
    }

    /// The data of the handlers' Secret: their serving certificate and key, and the CA bundle
    /// that issues the controller's client certificate. `None` before [`renew_leaves`] made
    /// the handler certificate.
    pub fn handler_secret_data(&self, now: OffsetDateTime) -> Option<BTreeMap<String, ByteString>> {
        let handler = self.handler.as_ref()?;
        let mut data = BTreeMap::new();
        let mut put = |key: &str, value: &str| {
            data.insert(key.to_owned(), ByteString(value.as_bytes().to_vec()));
        };
        put(KEY_CERT, &handler.cert);
        put(KEY_KEY, &handler.key);
        put(KEY_CA_CERT, &self.ca_bundle(now));
        Some(data)
    }

    /// The serving certificate and key, ready for rustls (signing with ring).
    pub fn certified_key(&self) -> Result<CertifiedKey, CertError> {
        let cert = der_of(&self.cert, "the serving certificate")?;
        let key = PrivateKeyDer::from_pem_slice(self.key.as_bytes())
            .map_err(|e| CertError::ServingKey(e.to_string()))?;
        let signing_key = rustls::crypto::ring::sign::any_supported_type(&key)
            .map_err(|e| CertError::ServingKey(e.to_string()))?;
        Ok(CertifiedKey::new(vec![cert], signing_key))
    }
}

/// The serving certificate of a running server, swappable while it runs: every new TLS
/// handshake gets whatever was installed last.
#[derive(Debug)]
pub struct CertResolver {
    current: RwLock<Arc<CertifiedKey>>,
}

impl CertResolver {
    pub fn new(set: &CertSet) -> Result<Arc<Self>, CertError> {
        Ok(Arc::new(Self {
            current: RwLock::new(Arc::new(set.certified_key()?)),
        }))
    }

    /// Serves `set` from the next handshake on.
    pub fn install(&self, set: &CertSet) -> Result<(), CertError> {
        let key = Arc::new(set.certified_key()?);
        // A poisoned lock still holds a whole Arc: replacing it is safe.
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = key;
        Ok(())
    }

    /// The certificate being served now (DER).
    pub fn current_cert(&self) -> Option<CertificateDer<'static>> {
        let key = self.current.read().unwrap_or_else(|e| e.into_inner());
        key.cert.first().cloned()
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self.current.read().unwrap_or_else(|e| e.into_inner()),
        ))
    }
}

/// The JSON Patch that sets `bundle` as the CA bundle of every webhook in a configuration,
/// given each webhook's name and current bundle; `None` when all already carry it. Each change
/// is guarded by a `test` of the webhook's name, so a concurrent reordering fails the patch
/// instead of touching the wrong webhook.
pub fn ca_bundle_patch(
    webhooks: &[(String, Option<Vec<u8>>)],
    bundle: &[u8],
) -> Option<json_patch::Patch> {
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(bundle);
    let mut ops = Vec::new();
    for (i, (name, current)) in webhooks.iter().enumerate() {
        if current.as_deref() == Some(bundle) {
            continue;
        }
        ops.push(
            serde_json::json!({"op": "test", "path": format!("/webhooks/{i}/name"), "value": name}),
        );
        ops.push(serde_json::json!({"op": "add", "path": format!("/webhooks/{i}/clientConfig/caBundle"), "value": encoded}));
    }
    if ops.is_empty() {
        return None;
    }
    serde_json::from_value(serde_json::Value::Array(ops)).ok()
}

/// Where the certificates live and which webhook configurations trust them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertSettings {
    pub identity: ServiceIdentity,
    /// The Secret (in the Service's namespace) holding the [`CertSet`].
    pub secret: String,
    pub mutating_configuration: String,
    pub validating_configuration: String,
    /// Further Services the same serving certificate answers for (the subresource API's).
    pub also_serves: Vec<ServiceIdentity>,
    /// The APIService objects whose `caBundle` is kept equal to the CA bundle.
    pub api_services: Vec<String>,
    /// The controller ↔ handler certificates, when the handlers are served.
    pub handler: Option<HandlerCertSettings>,
}

impl CertSettings {
    /// Every DNS name the serving certificate must carry.
    pub fn dns_names(&self) -> Vec<String> {
        let mut names = self.identity.dns_names();
        for other in &self.also_serves {
            names.extend(other.dns_names());
        }
        names
    }
}

/// The certificates between the controller and the handlers, and the handlers' Secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandlerCertSettings {
    pub names: LeafNames,
    /// The Secret (in the controller's namespace) the handler DaemonSet mounts: `tls.crt`,
    /// `tls.key` (the handlers' serving certificate) and `ca.crt` (the CA bundle that issues
    /// the controller's client certificate).
    pub secret: String,
}

/// Reads, renews and stores the certificates, and injects the CA bundle.
#[derive(Clone)]
pub struct CertManager {
    client: kube::Client,
    settings: CertSettings,
}

impl std::fmt::Debug for CertManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertManager")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

const FIELD_MANAGER: &str = "virtshim-controller";

impl CertManager {
    pub fn new(client: kube::Client, settings: CertSettings) -> Self {
        Self { client, settings }
    }

    /// Makes sure the Secret holds a current set (creating or renewing it) and returns it.
    pub async fn ensure_secret(&self) -> Result<CertSet, CertError> {
        let namespace = &self.settings.identity.namespace;
        let name = &self.settings.secret;
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        let names = self.settings.dns_names();
        for _ in 0..5 {
            let now = OffsetDateTime::now_utc();
            let existing = api.get_opt(name).await?;
            let stored = existing.as_ref().and_then(CertSet::from_secret);
            let renewal = plan(stored.as_ref(), &names, now);
            let mut set = renew(stored.as_ref(), renewal, &names, now)?;
            let mut leaves_changed = false;
            if let Some(handler) = &self.settings.handler {
                (set, leaves_changed) = renew_leaves(set, &handler.names, now)?;
            }
            let Some(stored_set) = stored
                .as_ref()
                .filter(|_| renewal == Renewal::Keep && !leaves_changed)
            else {
                let written = match existing {
                    None => {
                        let secret = Secret {
                            metadata: ObjectMeta {
                                name: Some(name.clone()),
                                namespace: Some(namespace.clone()),
                                labels: Some(BTreeMap::from([(
                                    "app.kubernetes.io/managed-by".to_owned(),
                                    FIELD_MANAGER.to_owned(),
                                )])),
                                ..ObjectMeta::default()
                            },
                            type_: Some("kubernetes.io/tls".to_owned()),
                            data: Some(set.to_secret_data()),
                            ..Secret::default()
                        };
                        api.create(&post_params(), &secret).await.map(|_| ())
                    }
                    Some(mut secret) => {
                        // resourceVersion from the read: a concurrent writer makes this a 409.
                        secret.data = Some(set.to_secret_data());
                        secret.string_data = None;
                        api.replace(name, &post_params(), &secret).await.map(|_| ())
                    }
                };
                match written {
                    Ok(()) => {
                        tracing::info!(namespace = %namespace, secret = %name, ?renewal, leaves_changed, "certificates renewed");
                        return Ok(set);
                    }
                    // Another replica wrote first: read what it wrote.
                    Err(kube::Error::Api(status))
                        if status.is_conflict() || status.is_already_exists() =>
                    {
                        continue
                    }
                    Err(e) => return Err(e.into()),
                }
            };
            return Ok(stored_set.clone());
        }
        Err(CertError::Contended {
            namespace: namespace.clone(),
            name: name.clone(),
        })
    }

    /// Sets `bundle` as the CA bundle of every webhook in both configurations.
    pub async fn inject_ca_bundle(&self, bundle: &[u8]) -> Result<(), CertError> {
        self.inject_into::<MutatingWebhookConfiguration>(
            &self.settings.mutating_configuration,
            bundle,
            |c| {
                let hooks = c.webhooks.unwrap_or_default().into_iter();
                hooks
                    .map(|w| (w.name, w.client_config.ca_bundle.map(|b| b.0)))
                    .collect()
            },
        )
        .await?;
        self.inject_into::<ValidatingWebhookConfiguration>(
            &self.settings.validating_configuration,
            bundle,
            |c| {
                let hooks = c.webhooks.unwrap_or_default().into_iter();
                hooks
                    .map(|w| (w.name, w.client_config.ca_bundle.map(|b| b.0)))
                    .collect()
            },
        )
        .await
    }

    async fn inject_into<K>(
        &self,
        name: &str,
        bundle: &[u8],
        hooks_of: impl Fn(K) -> Vec<(String, Option<Vec<u8>>)>,
    ) -> Result<(), CertError>
    where
        K: kube::Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned,
    {
        let api: Api<K> = Api::all(self.client.clone());
        let Some(config) = api.get_opt(name).await? else {
            tracing::warn!(
                kind = %K::kind(&()),
                name = %name,
                "webhook configuration not found: no CA bundle injected"
            );
            return Ok(());
        };
        if let Some(patch) = ca_bundle_patch(&hooks_of(config), bundle) {
            let params = PatchParams {
                field_manager: Some(FIELD_MANAGER.to_owned()),
                ..PatchParams::default()
            };
            api.patch(name, &params, &Patch::Json::<()>(patch)).await?;
        }
        Ok(())
    }

    /// Sets `bundle` as the `caBundle` of every APIService in the settings (skipping those
    /// not installed).
    pub async fn inject_api_service_bundle(&self, bundle: &[u8]) -> Result<(), CertError> {
        use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService;
        let api: Api<APIService> = Api::all(self.client.clone());
        for name in &self.settings.api_services {
            let Some(service) = api.get_opt(name).await? else {
                tracing::warn!(apiservice = %name, "APIService not found: no CA bundle injected");
                continue;
            };
            let current = service
                .spec
                .as_ref()
                .and_then(|s| s.ca_bundle.as_ref())
                .map(|b| b.0.as_slice());
            if current == Some(bundle) {
                continue;
            }
            let params = PatchParams {
                field_manager: Some(FIELD_MANAGER.to_owned()),
                ..PatchParams::default()
            };
            let patch = serde_json::json!({"spec": {"caBundle": ByteString(bundle.to_vec())}});
            api.patch(name, &params, &Patch::Merge(&patch)).await?;
        }
        Ok(())
    }

    /// Writes the handlers' Secret (see [`HandlerCertSettings::secret`]) when it differs.
    pub async fn write_handler_secret(&self, set: &CertSet) -> Result<(), CertError> {
        let Some(settings) = &self.settings.handler else {
            return Ok(());
        };
        let Some(data) = set.handler_secret_data(OffsetDateTime::now_utc()) else {
            return Ok(());
        };
        let namespace = &self.settings.identity.namespace;
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        match api.get_opt(&settings.secret).await? {
            Some(existing) if existing.data.as_ref() == Some(&data) => Ok(()),
            Some(mut existing) => {
                existing.data = Some(data);
                existing.string_data = None;
                match api
                    .replace(&settings.secret, &post_params(), &existing)
                    .await
                {
                    // Another replica wrote it first; the next round compares again.
                    Err(kube::Error::Api(status)) if status.is_conflict() => Ok(()),
                    other => other.map(|_| ()).map_err(CertError::from),
                }
            }
            None => {
                let secret = Secret {
                    metadata: ObjectMeta {
                        name: Some(settings.secret.clone()),
                        namespace: Some(namespace.clone()),
                        labels: Some(BTreeMap::from([(
                            "app.kubernetes.io/managed-by".to_owned(),
                            FIELD_MANAGER.to_owned(),
                        )])),
                        ..ObjectMeta::default()
                    },
                    type_: Some("kubernetes.io/tls".to_owned()),
                    data: Some(data),
                    ..Secret::default()
                };
                match api.create(&post_params(), &secret).await {
                    Err(kube::Error::Api(status)) if status.is_already_exists() => Ok(()),
                    other => other.map(|_| ()).map_err(CertError::from),
                }
            }
        }
    }

    /// One round: the Secret made current, the bundle injected (webhooks, APIServices), the
    /// handlers' Secret written; the set to serve. The bundle goes in before the caller serves
    /// a certificate from a new CA.
    pub async fn refresh(&self) -> Result<CertSet, CertError> {
        let set = self.ensure_secret().await?;
        let bundle = set.ca_bundle(OffsetDateTime::now_utc());
        self.inject_ca_bundle(bundle.as_bytes()).await?;
        self.inject_api_service_bundle(bundle.as_bytes()).await?;
        self.write_handler_secret(&set).await?;
        Ok(set)
    }

    /// The first round, at startup: a resolver serving the current certificate, and the set.
    pub async fn bootstrap(&self) -> Result<(Arc<CertResolver>, CertSet), CertError> {
        let set = self.refresh().await?;
        Ok((CertResolver::new(&set)?, set))
    }

    /// Keeps `resolver` serving the Secret's current certificate, renewing as needed; runs until
    /// dropped. Failures are logged and retried sooner: the served certificate stays valid for
    /// a third of its life after renewal was due.
    /// Every set that gets served is also published on `published`, for the parts that use
    /// the controller's client certificate.
    pub async fn keep_fresh(
        &self,
        resolver: Arc<CertResolver>,
        published: tokio::sync::watch::Sender<CertSet>,
    ) {
        let mut serving = None;
        loop {
            let wait = match self.refresh().await {
                Ok(set) => {
                    if serving.as_ref() != Some(&set) {
                        match resolver.install(&set) {
                            Ok(()) => {
                                published.send_replace(set.clone());
                                serving = Some(set);
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "cannot serve the stored certificate")
                            }
                        }
                    }
                    CHECK_INTERVAL
                }
                Err(e) => {
                    tracing::warn!(error = %e, "webhook certificate check failed");
                    RETRY_INTERVAL
                }
            };
            tokio::time::sleep(wait).await;
        }
    }
}

fn post_params() -> PostParams {
    PostParams {
        dry_run: false,
        field_manager: Some(FIELD_MANAGER.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        ServiceIdentity {
            service: "virtshim-controller".to_owned(),
            namespace: "virtshim-system".to_owned(),
        }
        .dns_names()
    }

    fn day(n: i64) -> time::Duration {
        time::Duration::days(n)
    }

    fn t0() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_780_000_000).expect("a time")
    }

    #[test]
    fn admission_certs_generated_set_is_kept() {
        let set = CertSet::generate(&names(), t0()).expect("generate");
        assert_eq!(plan(Some(&set), &names(), t0()), Renewal::Keep);
        let serving = cert_info(&set.cert).expect("serving cert");
        assert_eq!(
            serving.dns_names,
            vec![
                "virtshim-controller.virtshim-system.svc.cluster.local".to_owned(),
                "virtshim-controller.virtshim-system.svc".to_owned(),
            ]
        );
        assert!(!serving.is_ca);
        assert_eq!(serving.not_after - t0(), day(30));
        let ca = cert_info(&set.ca_cert).expect("ca cert");
        assert!(ca.is_ca);
        assert_eq!(ca.not_after - t0(), day(365));
        assert!(set.certified_key().is_ok());
        assert_eq!(
            CertSet::from_secret(&Secret {
                data: Some(set.to_secret_data()),
                ..Secret::default()
            }),
            Some(set)
        );
    }

    #[test]
    fn admission_certs_renewal_table() {
        let set = CertSet::generate(&names(), t0()).expect("generate");
        let other = CertSet::generate(&names(), t0()).expect("generate");
        let mixed_ca = CertSet {
            cert: other.cert.clone(),
            key: other.key.clone(),
            ..set.clone()
        };
        let wrong_key = CertSet {
            key: other.key.clone(),
            ..set.clone()
        };
        let garbage = CertSet {
            ca_cert: "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".to_owned(),
            ..set.clone()
        };
        let serving_only_garbage = CertSet {
            cert: "not a cert".to_owned(),
            ..set.clone()
        };
        let renamed = ["other.virtshim-system.svc".to_owned()];
        let ours = names();
        // Serving: 30 days, renewed with less than 10 days left (day 20 + backdate slack).
        // CA: 365 days, renewed with less than ~121.7 days left (day 243.3).
        // (what, stored, names, now, expected)
        type Case<'a> = (
            &'a str,
            Option<&'a CertSet>,
            &'a [String],
            OffsetDateTime,
            Renewal,
        );
        let cases: Vec<Case> = vec![
            ("nothing stored", None, &ours[..], t0(), Renewal::All),
            ("fresh", Some(&set), &ours[..], t0(), Renewal::Keep),
            (
                "day 19",
                Some(&set),
                &ours[..],
                t0() + day(19),
                Renewal::Keep,
            ),
            (
                "day 20",
                Some(&set),
                &ours[..],
                t0() + day(20),
                Renewal::Serving,
            ),
            (
                "expired",
                Some(&set),
                &ours[..],
                t0() + day(31),
                Renewal::Serving,
            ),
            (
                "CA day 243",
                Some(&set),
                &ours[..],
                t0() + day(243),
                Renewal::Serving,
            ),
            (
                "CA day 244",
                Some(&set),
                &ours[..],
                t0() + day(244),
                Renewal::All,
            ),
            (
                "CA expired",
                Some(&set),
                &ours[..],
                t0() + day(400),
                Renewal::All,
            ),
            (
                "other service",
                Some(&set),
                &renamed[..],
                t0(),
                Renewal::Serving,
            ),
            (
                "signed by another CA",
                Some(&mixed_ca),
                &ours[..],
                t0(),
                Renewal::Serving,
            ),
            (
                "key does not match",
                Some(&wrong_key),
                &ours[..],
                t0(),
                Renewal::Serving,
            ),
            (
                "CA unreadable",
                Some(&garbage),
                &ours[..],
                t0(),
                Renewal::All,
            ),
            (
                "serving unreadable",
                Some(&serving_only_garbage),
                &ours[..],
                t0(),
                Renewal::Serving,
            ),
        ];
        for (what, stored, names, now, expected) in cases {
            assert_eq!(plan(stored, names, now), expected, "{what}");
            // Carrying out the plan leaves nothing to do.
            let renewed = renew(stored, expected, names, now).expect(what);
            assert_eq!(
                plan(Some(&renewed), names, now),
                Renewal::Keep,
                "{what}: after renewal"
            );
        }
    }

    #[test]
    fn admission_certs_serving_renewal_keeps_the_ca() {
        let set = CertSet::generate(&names(), t0()).expect("generate");
        let now = t0() + day(21);
        let renewed = renew(Some(&set), Renewal::Serving, &names(), now).expect("renew");
        assert_eq!(renewed.ca_cert, set.ca_cert);
        assert_ne!(renewed.cert, set.cert);
        let (old, new) = (
            cert_info(&set.cert).expect("old"),
            cert_info(&renewed.cert).expect("new"),
        );
        assert_ne!(old.serial, new.serial);
        assert_eq!(new.not_after - now, day(30));
        assert_eq!(renewed.ca_bundle(now), set.ca_bundle(now));
    }

    #[test]
    fn admission_certs_ca_renewal_keeps_the_old_ca_in_the_bundle_while_valid() {
        let set = CertSet::generate(&names(), t0()).expect("generate");
        let now = t0() + day(250);
        let renewed = renew(Some(&set), Renewal::All, &names(), now).expect("renew");
        assert_ne!(renewed.ca_cert, set.ca_cert);
        assert_eq!(
            renewed.previous_ca_cert.as_deref(),
            Some(set.ca_cert.as_str())
        );
        let bundle = renewed.ca_bundle(now);
        assert!(
            bundle.contains(renewed.ca_cert.trim_end()) && bundle.contains(set.ca_cert.trim_end())
        );
        assert_eq!(CertificateDer::pem_slice_iter(bundle.as_bytes()).count(), 2);
        // Once the old CA has expired it leaves the bundle.
        let later = t0() + day(366);
        assert_eq!(
            CertificateDer::pem_slice_iter(renewed.ca_bundle(later).as_bytes()).count(),
            1
        );
        // A second CA renewal forgets the first CA.
        let again = renew(Some(&renewed), Renewal::All, &names(), later).expect("renew");
        assert_eq!(
            again.previous_ca_cert.as_deref(),
            Some(renewed.ca_cert.as_str())
        );
    }

    #[test]
    fn admission_certs_bundle_patch() {
        let bundle = b"PEM".to_vec();
        let hooks = vec![
            ("a.kubevirt.io".to_owned(), None),
            ("b.kubevirt.io".to_owned(), Some(bundle.clone())),
            ("c.kubevirt.io".to_owned(), Some(b"old".to_vec())),
        ];
        let patch = ca_bundle_patch(&hooks, &bundle).expect("a patch");
        assert_eq!(
            serde_json::to_value(&patch).expect("json"),
            serde_json::json!([
                {"op": "test", "path": "/webhooks/0/name", "value": "a.kubevirt.io"},
                {"op": "add", "path": "/webhooks/0/clientConfig/caBundle", "value": "UEVN"},
                {"op": "test", "path": "/webhooks/2/name", "value": "c.kubevirt.io"},
                {"op": "add", "path": "/webhooks/2/clientConfig/caBundle", "value": "UEVN"},
            ])
        );
        // It applies to the configuration the webhooks module builds.
        let service = super::super::webhooks::WebhookService {
            namespace: "virtshim-system".to_owned(),
            name: "virtshim-controller".to_owned(),
            port: None,
        };
        let config = super::super::webhooks::validating_configuration("v", &service);
        let hooks: Vec<_> = config
            .webhooks
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|w| (w.name, w.client_config.ca_bundle.map(|b| b.0)))
            .collect();
        let patch = ca_bundle_patch(&hooks, &bundle).expect("a patch");
        let mut value = serde_json::to_value(&config).expect("json");
        json_patch::patch(&mut value, &patch.0).expect("applies");
        let patched: ValidatingWebhookConfiguration =
            serde_json::from_value(value).expect("decodes");
        let hooks: Vec<_> = patched
            .webhooks
            .unwrap_or_default()
            .into_iter()
            .map(|w| (w.name, w.client_config.ca_bundle.map(|b| b.0)))
            .collect();
        assert!(hooks.iter().all(|(_, b)| b.as_deref() == Some(&bundle[..])));
        assert!(ca_bundle_patch(&hooks, &bundle).is_none());
    }

    #[test]
    fn admission_certs_handler_leaves() {
        let leaves = LeafNames::for_namespace("virtshim-system");
        assert_eq!(leaves.client, "virtshim-controller.virtshim-system.svc");
        assert_eq!(leaves.handler, "virtshim-handler.virtshim-system.svc");
        let set = CertSet::generate(&names(), t0()).expect("generate");
        let (set, changed) = renew_leaves(set, &leaves, t0()).expect("leaves");
        assert!(changed);
        let client = set.client.clone().expect("client");
        let handler = set.handler.clone().expect("handler");
        let client_info = cert_info(&client.cert).expect("client cert");
        assert!(client_info.client_auth && !client_info.server_auth);
        assert_eq!(client_info.dns_names, vec![leaves.client.clone()]);
        let handler_info = cert_info(&handler.cert).expect("handler cert");
        assert!(handler_info.server_auth && !handler_info.client_auth);
        assert_eq!(handler_info.dns_names, vec![leaves.handler.clone()]);
        // The webhook serving certificate stays a server certificate.
        let serving = cert_info(&set.cert).expect("serving");
        assert!(serving.server_auth && !serving.client_auth);

        // (what, set, now, client ok, handler ok)
        let other = renew_leaves(
            CertSet::generate(&names(), t0()).expect("generate"),
            &leaves,
            t0(),
        )
        .expect("other")
        .0;
        let swapped = CertSet {
            client: set.handler.clone(),
            handler: set.client.clone(),
            ..set.clone()
        };
        let foreign = CertSet {
            client: other.client.clone(),
            ..set.clone()
        };
        let wrong_key = CertSet {
            handler: Some(Leaf {
                cert: handler.cert.clone(),
                key: client.key.clone(),
            }),
            ..set.clone()
        };
        let missing = CertSet {
            client: None,
            ..set.clone()
        };
        let cases: Vec<(&str, &CertSet, OffsetDateTime, bool, bool)> = vec![
            ("fresh", &set, t0(), true, true),
            ("day 19", &set, t0() + day(19), true, true),
            ("day 20", &set, t0() + day(20), false, false),
            ("usages swapped", &swapped, t0(), false, false),
            ("client from another CA", &foreign, t0(), false, true),
            ("handler key mismatch", &wrong_key, t0(), true, false),
            ("client missing", &missing, t0(), false, true),
        ];
        for (what, set, now, client_ok, handler_ok) in cases {
            assert_eq!(
                leaf_ok(
                    &set.ca_cert,
                    set.client.as_ref(),
                    &leaves.client,
                    Usage::Client,
                    now
                ),
                client_ok,
                "{what}: client"
            );
            assert_eq!(
                leaf_ok(
                    &set.ca_cert,
                    set.handler.as_ref(),
                    &leaves.handler,
                    Usage::Server,
                    now
                ),
                handler_ok,
                "{what}: handler"
            );
            // Renewing leaves them all usable, and touches only what was not.
            let (renewed, changed) = renew_leaves(set.clone(), &leaves, now).expect(what);
            assert_eq!(changed, !(client_ok && handler_ok), "{what}");
            assert!(
                !renew_leaves(renewed.clone(), &leaves, now).expect(what).1,
                "{what}"
            );
            if client_ok {
                assert_eq!(renewed.client, set.client, "{what}");
            }
            if handler_ok {
                assert_eq!(renewed.handler, set.handler, "{what}");
            }
        }

        // A new CA drops the leaves of the old one; the serving-only renewal keeps them.
        let serving_only =
            renew(Some(&set), Renewal::Serving, &names(), t0() + day(21)).expect("renew");
        assert_eq!(serving_only.client, set.client);
        let new_ca = renew(Some(&set), Renewal::All, &names(), t0() + day(250)).expect("renew");
        assert!(new_ca.client.is_none() && new_ca.handler.is_none());

        // Round trip through the Secret, and the handlers' Secret.
        assert_eq!(
            CertSet::from_secret(&Secret {
                data: Some(set.to_secret_data()),
                ..Secret::default()
            }),
            Some(set.clone())
        );
        let data = set.handler_secret_data(t0()).expect("handler data");
        let text = |k: &str| String::from_utf8(data[k].0.clone()).expect("utf-8");
        assert_eq!(
            data.keys().map(String::as_str).collect::<Vec<_>>(),
            vec!["ca.crt", "tls.crt", "tls.key"]
        );
        assert_eq!(text("tls.crt"), handler.cert);
        assert_eq!(text("tls.key"), handler.key);
        assert_eq!(text("ca.crt"), set.ca_bundle(t0()));
        assert!(missing.handler_secret_data(t0()).is_some());
        assert!(CertSet::generate(&names(), t0())
            .expect("generate")
            .handler_secret_data(t0())
            .is_none());
    }

    #[test]
    fn admission_certs_settings_names() {
        let settings = CertSettings {
            identity: ServiceIdentity {
                service: "virtshim-controller".into(),
                namespace: "ns".into(),
            },
            secret: "s".into(),
            mutating_configuration: "m".into(),
            validating_configuration: "v".into(),
            also_serves: vec![ServiceIdentity {
                service: "virtshim-api".into(),
                namespace: "ns".into(),
            }],
            api_services: Vec::new(),
            handler: None,
        };
        assert_eq!(
            settings.dns_names(),
            vec![
                "virtshim-controller.ns.svc.cluster.local".to_owned(),
                "virtshim-controller.ns.svc".to_owned(),
                "virtshim-api.ns.svc.cluster.local".to_owned(),
                "virtshim-api.ns.svc".to_owned(),
            ]
        );
    }

    #[test]
    fn admission_certs_debug_hides_keys() {
        let set = CertSet::generate(&names(), t0()).expect("generate");
        let shown = format!("{set:?}");
        assert!(!shown.contains("PRIVATE KEY"), "{shown}");
    }
}
