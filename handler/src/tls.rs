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
use std::sync::Arc;

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
