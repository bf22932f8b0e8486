//! One consistent set of TLS material: this service's certificate chain and
//! key, and the CA bundle peers are verified against. It is validated as a
//! whole before use, so a half-finished rotation is never served.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::client::verify_server_cert_signed_by_trust_anchor;
use rustls::crypto::CryptoProvider;
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};

use crate::identity::{CertificateSummary, IdentityError, SpiffeId};
use crate::reloading::{AppliedCertificate, Loadable};

/// Where a service's TLS material lives on disk (a mounted Kubernetes secret, say).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialPaths {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, SEC1 or PKCS#1).
    pub key: PathBuf,
    /// PEM bundle of the CA certificates peers must chain to.
    pub ca: PathBuf,
}

/// The raw bytes of the three files, read together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PemFiles {
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
    pub ca: Vec<u8>,
}

impl PemFiles {
    pub fn read(paths: &CredentialPaths) -> Result<Self, MaterialError> {
        let read = |path: &PathBuf| std::fs::read(path).map_err(|error| MaterialError::Read(path.clone(), error.to_string()));
        Ok(Self {
            cert: read(&paths.cert)?,
            key: read(&paths.key)?,
            ca: read(&paths.ca)?,
        })
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum MaterialError {
    #[error("cannot read {0}: {1}")]
    Read(PathBuf, String),
    #[error("certificate file holds no usable PEM certificate: {0}")]
    Certificate(String),
    #[error("key file holds no usable PEM private key: {0}")]
    Key(String),
    #[error("CA bundle holds no usable PEM CA certificate: {0}")]
    CaBundle(String),
    #[error("private key does not belong to the certificate: {0}")]
    KeyMismatch(String),
    #[error("own certificate: {0}")]
    Identity(#[from] IdentityError),
    #[error("own certificate does not verify against the CA bundle (expired, not yet valid, or another CA): {0}")]
    Untrusted(String),
    #[error("certificate is not valid now (expired or not yet valid): {0}")]
    OutsideValidity(String),
}

/// Validated material, shared by every handshake until the next rotation.
pub struct Material {
    pub(crate) certified_key: Arc<CertifiedKey>,
    pub(crate) roots: Arc<RootCertStore>,
    pub(crate) client_verifier: Arc<dyn ClientCertVerifier>,
    summary: CertificateSummary,
}

impl std::fmt::Debug for Material {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Material")
            .field("certificate", &self.summary)
            .finish_non_exhaustive()
    }
}

impl Material {
    /// Parses and checks the files: certificate and key belong together, the
    /// certificate names one SPIFFE identity and verifies against the bundle now.
    pub(crate) fn from_pem(files: &PemFiles, provider: &Arc<CryptoProvider>) -> Result<Self, MaterialError> {
        let certified_key = certified_key(&files.cert, &files.key, provider)?;
        let chain = certified_key.cert.clone();
        let leaf = &chain[0];
        let summary = CertificateSummary::of(leaf)?;

        let mut roots = RootCertStore::empty();
        for ca in CertificateDer::pem_slice_iter(&files.ca) {
            let ca = ca.map_err(|error| MaterialError::CaBundle(describe(&error)))?;
            roots.add(ca).map_err(|error| MaterialError::CaBundle(error.to_string()))?;
        }
        if roots.is_empty() {
            return Err(MaterialError::CaBundle("no CERTIFICATE block".into()));
        }
        let roots = Arc::new(roots);
        let client_verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|error| MaterialError::CaBundle(error.to_string()))?;

        // A certificate our own peers would reject must not replace one they accept.
        let intermediates = &chain[1..];
        let now = UnixTime::now();
        let as_client = client_verifier.verify_client_cert(leaf, intermediates, now).map(|_| ());
        let as_server = ParsedCertificate::try_from(leaf).and_then(|parsed| {
            verify_server_cert_signed_by_trust_anchor(&parsed, &roots, intermediates, now, provider.signature_verification_algorithms.all)
        });
        if let (Err(error), Err(_)) = (as_client, as_server) {
            return Err(MaterialError::Untrusted(error.to_string()));
        }

        Ok(Self {
            certified_key: Arc::new(certified_key),
            roots,
            client_verifier,
            summary,
        })
    }

    pub fn identity(&self) -> &SpiffeId {
        &self.summary.identity
    }

    pub fn summary(&self) -> &CertificateSummary {
        &self.summary
    }
}

impl Loadable for Material {
    type Paths = CredentialPaths;
    type Files = PemFiles;

    fn read(paths: &CredentialPaths) -> Result<PemFiles, MaterialError> {
        PemFiles::read(paths)
    }

    fn parse(files: &PemFiles, provider: &Arc<CryptoProvider>) -> Result<Self, MaterialError> {
        Self::from_pem(files, provider)
    }

    fn certified_key(&self) -> &Arc<CertifiedKey> {
        &self.certified_key
    }

    fn applied(&self) -> AppliedCertificate {
        AppliedCertificate {
            subject: self.summary.identity.to_string(),
            serial: self.summary.serial.clone(),
            not_after: self.summary.not_after,
        }
    }
}

/// Reads a certificate chain and its private key from PEM, checking that they belong together.
pub(crate) fn certified_key(cert: &[u8], key: &[u8], provider: &CryptoProvider) -> Result<CertifiedKey, MaterialError> {
    let chain = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| MaterialError::Certificate(describe(&error)))?;
    if chain.is_empty() {
        return Err(MaterialError::Certificate("no CERTIFICATE block".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|error| MaterialError::Key(describe(&error)))?;
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|error| MaterialError::Key(error.to_string()))?;
    let certified_key = CertifiedKey::new(chain, signing_key);
    certified_key
        .keys_match()
        .map_err(|error| MaterialError::KeyMismatch(error.to_string()))?;
    Ok(certified_key)
}

/// PEM errors in words an operator can act on (the library prints raw bytes).
fn describe(error: &pem::Error) -> String {
    match error {
        pem::Error::MissingSectionEnd { .. } => "a PEM block has no END line (truncated, or still being written)".into(),
        pem::Error::IllegalSectionStart { .. } => "a PEM BEGIN line is malformed".into(),
        pem::Error::NoItemsFound => "no PEM block of the expected type".into(),
        other => other.to_string(),
    }
}
