//! The service's own identity material (certificate, key, CA bundle) for
//! mutual TLS, reloaded from disk on rotation (see [`crate::reloading`]).

use std::sync::Arc;
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;

use crate::identity::SpiffeId;
use crate::material::{CredentialPaths, Material, MaterialError};
use crate::metrics::TlsMetrics;
use crate::reloading::{ReloadOutcome, Reloading};

/// Shared handle to the current identity material; clones share it.
#[derive(Clone)]
pub struct Credentials {
    material: Reloading<Material>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("paths", self.material.paths())
            .field("current", &self.material.current())
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// Loads the material once; it must be valid, since there is nothing to fall back on.
    pub fn load(paths: CredentialPaths) -> Result<Self, MaterialError> {
        Ok(Self {
            material: Reloading::load(paths)?,
        })
    }

    /// Polls the files every `interval` for as long as any clone of these credentials lives.
    pub fn watch(&self, interval: Duration) {
        self.material.watch(interval);
    }

    /// Reads the files and applies them if they changed and form valid material.
    pub fn reload(&self) -> ReloadOutcome {
        self.material.reload()
    }

    /// The material new handshakes use.
    pub fn current(&self) -> Arc<Material> {
        self.material.current()
    }

    /// The identity this service presents.
    pub fn identity(&self) -> SpiffeId {
        self.material.current().identity().clone()
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
