//! The certificate a public listener (the edge gateway's client-facing port)
//! presents: a certificate chain and key, typically issued for DNS names by a
//! public or corporate CA. Clients are not asked for certificates there, so
//! no CA bundle is needed and no SPIFFE identity is required.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::material::{MaterialError, certified_key};
use crate::metrics::TlsMetrics;
use crate::reloading::{AppliedCertificate, Loadable, ReloadOutcome, Reloading};

/// Where a listener's certificate and key live on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerPaths {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, SEC1 or PKCS#1).
    pub key: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerFiles {
    cert: Vec<u8>,
    key: Vec<u8>,
}

/// A validated listener certificate: key matches, valid now.
pub struct ListenerMaterial {
    certified_key: Arc<CertifiedKey>,
    applied: AppliedCertificate,
}

impl std::fmt::Debug for ListenerMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenerMaterial")
            .field("certificate", &self.applied)
            .finish_non_exhaustive()
    }
}

impl Loadable for ListenerMaterial {
    type Paths = ListenerPaths;
    type Files = ListenerFiles;

    fn read(paths: &ListenerPaths) -> Result<ListenerFiles, MaterialError> {
        let read = |path: &PathBuf| std::fs::read(path).map_err(|error| MaterialError::Read(path.clone(), error.to_string()));
        Ok(ListenerFiles {
            cert: read(&paths.cert)?,
            key: read(&paths.key)?,
        })
    }

    fn parse(files: &ListenerFiles, provider: &Arc<CryptoProvider>) -> Result<Self, MaterialError> {
        let certified_key = certified_key(&files.cert, &files.key, provider)?;
        let leaf = certified_key
            .end_entity_cert()
            .map_err(|error| MaterialError::Certificate(error.to_string()))?;
        let (_, certificate) = X509Certificate::from_der(leaf).map_err(|error| MaterialError::Certificate(error.to_string()))?;
        let validity = certificate.validity();
        if !validity.is_valid() {
            return Err(MaterialError::OutsideValidity(format!(
                "valid from {} to {}",
                validity.not_before, validity.not_after
            )));
        }
        let names: Vec<String> = certificate
            .subject_alternative_name()
            .ok()
            .flatten()
            .map(|extension| {
                extension
                    .value
                    .general_names
                    .iter()
                    .filter_map(|name| match name {
                        GeneralName::DNSName(name) => Some((*name).to_owned()),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let subject = if names.is_empty() {
            certificate.subject().to_string()
        } else {
            names.join(",")
        };
        Ok(Self {
            applied: AppliedCertificate {
                subject,
                serial: certificate.raw_serial().iter().map(|byte| format!("{byte:02x}")).collect(),
                not_after: validity.not_after.timestamp(),
            },
            certified_key: Arc::new(certified_key),
        })
    }

    fn certified_key(&self) -> &Arc<CertifiedKey> {
        &self.certified_key
    }

    fn applied(&self) -> AppliedCertificate {
        self.applied.clone()
    }
}

/// Shared handle to a listener's current certificate; clones share it.
#[derive(Clone)]
pub struct ListenerCredentials {
    material: Reloading<ListenerMaterial>,
}

impl std::fmt::Debug for ListenerCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenerCredentials")
            .field("paths", self.material.paths())
            .field("current", &self.material.current())
            .finish_non_exhaustive()
    }
}

impl ListenerCredentials {
    /// Loads the certificate once; it must be valid, since there is nothing to fall back on.
    pub fn load(paths: ListenerPaths) -> Result<Self, MaterialError> {
        Ok(Self {
            material: Reloading::load(paths)?,
        })
    }

    /// Polls the files every `interval` for as long as any clone lives.
    pub fn watch(&self, interval: Duration) {
        self.material.watch(interval);
    }

    /// Reads the files and applies them if they changed and form a valid certificate.
    pub fn reload(&self) -> ReloadOutcome {
        self.material.reload()
    }

    /// The certificate new handshakes present.
    pub fn current(&self) -> AppliedCertificate {
        self.material.current().applied()
    }

    pub fn metrics(&self) -> &TlsMetrics {
        self.material.metrics()
    }

    pub(crate) fn certified_key(&self) -> Arc<CertifiedKey> {
        self.material.certified_key()
    }

    pub(crate) fn provider(&self) -> &Arc<CryptoProvider> {
        self.material.provider()
    }
}
