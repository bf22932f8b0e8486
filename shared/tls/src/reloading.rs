//! Certificate material that reloads itself from disk when the files change.
//!
//! Files are polled rather than watched: Kubernetes updates a mounted secret by
//! swapping a symlink, which file watches on the old target miss, and rotation
//! every few hours does not need sub-second reaction. A change is applied only
//! when the files together form valid material; otherwise the previous
//! material stays in use and the rejection is logged once per distinct content.

use std::fmt;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;

use crate::material::MaterialError;
use crate::metrics::TlsMetrics;

/// A kind of material: which files it is read from and what makes them valid.
pub(crate) trait Loadable: Sized + Send + Sync + 'static {
    type Paths: fmt::Debug + Send + Sync + 'static;
    type Files: Clone + PartialEq + Send + Sync + 'static;

    fn read(paths: &Self::Paths) -> Result<Self::Files, MaterialError>;
    fn parse(files: &Self::Files, provider: &Arc<CryptoProvider>) -> Result<Self, MaterialError>;
    fn certified_key(&self) -> &Arc<CertifiedKey>;
    fn applied(&self) -> AppliedCertificate;
}

/// The certificate a reload put in use, as an operator tells issuances apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedCertificate {
    /// Who the certificate names: its SPIFFE identity, or its DNS names.
    pub subject: String,
    /// Serial number, lowercase hex without separators.
    pub serial: String,
    /// End of validity, seconds since the Unix epoch.
    pub not_after: i64,
}

/// What a reload attempt did.
#[derive(Debug)]
pub enum ReloadOutcome {
    /// The files are as they were at the last attempt.
    Unchanged,
    /// New material is in use for new handshakes.
    Applied(AppliedCertificate),
    /// The files changed but do not form valid material; the previous material stays.
    Rejected(MaterialError),
}

/// Shared handle to the current material of one kind; clones share it.
pub(crate) struct Reloading<M: Loadable> {
    inner: Arc<Inner<M>>,
}

impl<M: Loadable> Clone for Reloading<M> {
    fn clone(&self) -> Self {
        Self { inner: self.inner.clone() }
    }
}

struct Inner<M: Loadable> {
    paths: M::Paths,
    provider: Arc<CryptoProvider>,
    current: ArcSwap<M>,
    /// The file contents last tried, so unchanged or already-rejected files are not re-parsed and re-logged.
    last_seen: Mutex<M::Files>,
    metrics: TlsMetrics,
}

impl<M: Loadable> Reloading<M> {
    /// Loads the material once; it must be valid, since there is nothing to fall back on.
    pub fn load(paths: M::Paths) -> Result<Self, MaterialError> {
        let provider = Arc::new(crate::crypto_provider());
        let files = M::read(&paths)?;
        let material = M::parse(&files, &provider)?;
        let metrics = TlsMetrics::default();
        metrics.certificate_expires_at(material.applied().not_after);
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

    /// Polls the files every `interval` for as long as any clone of this handle lives.
    pub fn watch(&self, interval: Duration) {
        let weak: Weak<Inner<M>> = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticker.tick().await;
            loop {
                ticker.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                // File reads and key parsing block; keep them off the async workers.
                let reloading = Self { inner };
                let _ = tokio::task::spawn_blocking(move || reloading.reload()).await;
            }
        });
    }

    /// Reads the files and applies them if they changed and form valid material.
    pub fn reload(&self) -> ReloadOutcome {
        let inner = &self.inner;
        let files = match M::read(&inner.paths) {
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
        match M::parse(&files, &inner.provider) {
            Ok(material) => {
                let applied = material.applied();
                let previous = inner.current.swap(Arc::new(material)).applied();
                inner.metrics.reload(true);
                inner.metrics.certificate_expires_at(applied.not_after);
                if previous.subject != applied.subject {
                    tracing::warn!(previous = %previous.subject, now = %applied.subject, "the reloaded certificate names a different subject");
                }
                tracing::info!(
                    subject = %applied.subject,
                    serial = %applied.serial,
                    previous_serial = %previous.serial,
                    not_after = applied.not_after,
                    "TLS certificate reloaded; new handshakes use it"
                );
                ReloadOutcome::Applied(applied)
            }
            Err(error) => {
                inner.metrics.reload(false);
                tracing::warn!(
                    %error,
                    files = ?inner.paths,
                    serial_in_use = %inner.current.load().applied().serial,
                    "rejected changed TLS files; keeping the current certificate"
                );
                ReloadOutcome::Rejected(error)
            }
        }
    }

    /// The material new handshakes use.
    pub fn current(&self) -> Arc<M> {
        self.inner.current.load_full()
    }

    /// The certificate and key new handshakes present.
    pub fn certified_key(&self) -> Arc<CertifiedKey> {
        self.inner.current.load().certified_key().clone()
    }

    pub fn paths(&self) -> &M::Paths {
        &self.inner.paths
    }

    pub fn metrics(&self) -> &TlsMetrics {
        &self.inner.metrics
    }

    pub fn provider(&self) -> &Arc<CryptoProvider> {
        &self.inner.provider
    }
}
