//! Mutual TLS: the handler accepts only the controller.
//!
//! A client must present a certificate that chains to the controller's CA (`--client-ca`) *and*
//! is issued for the controller's name (`--client-name`, a DNS name in its SANs). Checking the
//! name as well as the chain means another certificate from the same CA (a webhook's serving
//! certificate, say) does not open consoles. A refused client fails the TLS handshake: no HTTP
//! request of its is ever read.

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme,
};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// The PEM files the server needs.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// The handler's certificate chain.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The CA that issues the controller's client certificate.
    pub client_ca: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("{0} is not a DNS name")]
    ClientName(String),
    #[error("TLS configuration: {0}")]
    Config(String),
}

fn file_error(path: &Path, message: impl ToString) -> TlsError {
    TlsError::File {
        path: path.to_path_buf(),
        message: message.to_string(),
    }
}

/// The server configuration: our certificate, client certificates required and checked.
pub fn server_config(files: &TlsFiles, client_name: &str) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| file_error(&files.cert, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_error(&files.cert, e))?;
    if chain.is_empty() {
        return Err(file_error(&files.cert, "no certificate in the file"));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| file_error(&files.key, e))?;
    let mut roots = RootCertStore::empty();
    let mut any = false;
    for cert in CertificateDer::pem_file_iter(&files.client_ca)
        .map_err(|e| file_error(&files.client_ca, e))?
    {
        let cert = cert.map_err(|e| file_error(&files.client_ca, e))?;
        roots
            .add(cert)
            .map_err(|e| file_error(&files.client_ca, e))?;
        any = true;
    }
    if !any {
        return Err(file_error(
            &files.client_ca,
            "no CA certificate in the file",
        ));
    }
    let chain_verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| TlsError::Config(e.to_string()))?;
    let name = ServerName::try_from(client_name.to_owned())
        .ok()
        .filter(|n| matches!(n, ServerName::DnsName(_)))
        .ok_or_else(|| TlsError::ClientName(client_name.to_owned()))?;
    let verifier = Arc::new(NamedClientVerifier {
        chain: chain_verifier,
        name,
    });
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The chain check of webpki, then the name check.
#[derive(Debug)]
struct NamedClientVerifier {
    chain: Arc<dyn ClientCertVerifier>,
    name: ServerName<'static>,
}

impl ClientCertVerifier for NamedClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.chain.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .chain
            .verify_client_cert(end_entity, intermediates, now)?;
        let cert = webpki::EndEntityCert::try_from(end_entity)
            .map_err(|e| rustls::Error::General(format!("client certificate: {e}")))?;
        cert.verify_is_valid_for_subject_name(&self.name)
            .map_err(|_| {
                rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName)
            })?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.chain.supported_verify_schemes()
    }
}

/// A server configuration that follows its files: the controller renews the handler's serving
/// certificate (and, with a new CA, the client CA) in a Secret, and the kubelet updates the
/// mounted files in place. Each new connection gets the configuration of the files as they are
/// now; one that fails to load (a half-updated Secret) leaves the previous one in use.
#[derive(Debug)]
pub struct ReloadingConfig {
    files: TlsFiles,
    client_name: String,
    current: Mutex<(Vec<Option<SystemTime>>, Arc<ServerConfig>)>,
}

impl ReloadingConfig {
    /// Loads the files once; an error here is an error (the handler cannot serve without them).
    pub fn new(files: TlsFiles, client_name: &str) -> Result<Self, TlsError> {
        let stamps = stamps(&files);
        let config = server_config(&files, client_name)?;
        Ok(Self {
            files,
            client_name: client_name.to_owned(),
            current: Mutex::new((stamps, config)),
        })
    }

    /// The configuration for a new connection, reloaded when a file changed.
    pub fn config(&self) -> Arc<ServerConfig> {
        let Ok(mut current) = self.current.lock() else {
            // A poisoned lock only means another connection panicked mid-reload.
            return self.fallback();
        };
        let now = stamps(&self.files);
        if now != current.0 {
            match server_config(&self.files, &self.client_name) {
                Ok(config) => {
                    tracing::info!("TLS files changed: new certificates in use");
                    *current = (now, config);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "TLS files changed but do not load; keeping the previous ones");
                }
            }
        }
        current.1.clone()
    }

    fn fallback(&self) -> Arc<ServerConfig> {
        match self.current.lock() {
            Ok(c) => c.1.clone(),
            Err(poisoned) => poisoned.into_inner().1.clone(),
        }
    }
}

impl virtshim_http::TlsConfigSource for ReloadingConfig {
    fn server_config(&self) -> Arc<ServerConfig> {
        self.config()
    }
}

/// When each file last changed (following symlinks: Secret volumes swap a `..data` link).
fn stamps(files: &TlsFiles) -> Vec<Option<SystemTime>> {
    [&files.cert, &files.key, &files.client_ca]
        .iter()
        .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::time::Duration;

    fn write_pki(dir: &Path, when: SystemTime) -> TlsFiles {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let files = TlsFiles {
            cert: dir.join("tls.crt"),
            key: dir.join("tls.key"),
            client_ca: dir.join("ca.crt"),
        };
        for (path, text) in [
            (&files.cert, cert.pem()),
            (&files.key, key.serialize_pem()),
            (&files.client_ca, ca_pem),
        ] {
            std::fs::write(path, text).unwrap();
            std::fs::File::options()
                .write(true)
                .open(path)
                .unwrap()
                .set_modified(when)
                .unwrap();
        }
        files
    }

    #[test]
    fn new_files_are_used_and_broken_ones_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let files = write_pki(dir.path(), t0);
        let reloading = ReloadingConfig::new(files.clone(), "controller.example").unwrap();
        let first = reloading.config();
        assert!(
            Arc::ptr_eq(&first, &reloading.config()),
            "unchanged files: same config"
        );
        write_pki(dir.path(), t0 + Duration::from_secs(60));
        let second = reloading.config();
        assert!(!Arc::ptr_eq(&first, &second), "renewed files: a new config");
        std::fs::write(&files.cert, "not a certificate").unwrap();
        assert!(
            Arc::ptr_eq(&second, &reloading.config()),
            "a broken file keeps the last good config"
        );
    }
}
