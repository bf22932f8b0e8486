//! The service's current TLS material, reloaded from disk when the files change.
//!
//! Files are polled rather than watched: Kubernetes updates a mounted secret by
//! swapping a symlink, which file watches on the old target miss, and rotation
//! every few hours does not need sub-second reaction. A change is applied only
//! when the three files together form valid material; otherwise the previous
//! material stays in use and the rejection is logged once per distinct content.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;

use crate::identity::{CertificateSummary, SpiffeId};
use crate::material::{CredentialPaths, Material, MaterialError, PemFiles};
use crate::metrics::TlsMetrics;

/// What a reload attempt did.
#[derive(Debug)]
pub enum ReloadOutcome {
    /// The files are as they were at the last attempt.
    Unchanged,
    /// New material is in use for new handshakes.
    Applied(CertificateSummary),
    /// The files changed but do not form valid material; the previous material stays.
    Rejected(MaterialError),
}

/// Shared handle to the current material; clones share it.
#[derive(Clone)]
pub struct Credentials {
    inner: Arc<Inner>,
}

struct Inner {
    paths: CredentialPaths,
    provider: Arc<CryptoProvider>,
    current: ArcSwap<Material>,
    /// The file contents last tried, so unchanged or already-rejected files are not re-parsed and re-logged.
    last_seen: Mutex<PemFiles>,
    metrics: TlsMetrics,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("paths", &self.inner.paths)
            .field("current", &self.inner.current.load())
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// Loads the material once; it must be valid, since there is nothing to fall back on.
    pub fn load(paths: CredentialPaths) -> Result<Self, MaterialError> {
        let provider = Arc::new(crate::crypto_provider());
        let files = PemFiles::read(&paths)?;
        let material = Material::from_pem(&files, &provider)?;
        let metrics = TlsMetrics::default();
        metrics.certificate_expires_at(material.summary().not_after);
        Ok(Self {
            inner: Arc::new(Inner {
                paths,
                provider,
                current: ArcSwap::from_pointee(material),
                last_seen: Mutex::new(files),
                metrics,
            }),
        })
    }

    /// Polls the files every `interval` for as long as any clone of these credentials lives.
    pub fn watch(&self, interval: Duration) {
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticker.tick().await;
            loop {
                ticker.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                // File reads and key parsing block; keep them off the async workers.
                let credentials = Self { inner };
                let _ = tokio::task::spawn_blocking(move || credentials.reload()).await;
            }
        });
    }

    /// Reads the files and applies them if they changed and form valid material.
    pub fn reload(&self) -> ReloadOutcome {
        let inner = &self.inner;
        let files = match PemFiles::read(&inner.paths) {
            Ok(files) => files,
            Err(error) => {
                // A file briefly missing mid-rotation; try again next time.
                tracing::warn!(%error, "cannot read TLS files; keeping the current certificate");
                return ReloadOutcome::Rejected(error);
            }
        };
        {
            let mut last_seen = inner.last_seen.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if *last_seen == files {
                return ReloadOutcome::Unchanged;
            }
            *last_seen = files.clone();
        }
        match Material::from_pem(&files, &inner.provider) {
            Ok(material) => {
                let summary = material.summary().clone();
                let previous = inner.current.swap(Arc::new(material));
                inner.metrics.reload(true);
                inner.metrics.certificate_expires_at(summary.not_after);
                if previous.identity() != &summary.identity {
                    tracing::warn!(previous = %previous.identity(), now = %summary.identity, "the reloaded certificate names a different identity");
                }
                tracing::info!(
                    identity = %summary.identity,
                    serial = %summary.serial,
                    previous_serial = %previous.summary().serial,
                    not_after = summary.not_after,
                    "TLS certificate reloaded; new handshakes use it"
                );
                ReloadOutcome::Applied(summary)
            }
            Err(error) => {
                inner.metrics.reload(false);
                tracing::warn!(
                    %error,
                    cert = %inner.paths.cert.display(),
                    key = %inner.paths.key.display(),
                    ca = %inner.paths.ca.display(),
                    serial_in_use = %inner.current.load().summary().serial,
                    "rejected changed TLS files; keeping the current certificate"
                );
                ReloadOutcome::Rejected(error)
            }
        }
    }

    /// The material new handshakes use.
    pub fn current(&self) -> Arc<Material> {
        self.inner.current.load_full()
    }

    /// The identity this service presents.
    pub fn identity(&self) -> SpiffeId {
        self.inner.current.load().identity().clone()
    }

    pub fn metrics(&self) -> &TlsMetrics {
        &self.inner.metrics
    }

    pub(crate) fn provider(&self) -> &Arc<CryptoProvider> {
        &self.inner.provider
    }
}
