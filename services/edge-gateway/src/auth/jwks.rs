//! Where the key set comes from (a file or a URL) and keeping it current.
//!
//! The set is refreshed in the background every `JWKS_REFRESH_MS`, and on a
//! token naming an unknown `kid` (a rotation the gateway has not seen yet), at
//! most once per `JWKS_MIN_REFRESH_MS`, so a flood of made-up key ids cannot
//! turn into a flood of fetches. A failed fetch keeps the last good set.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;
use tokio::net::TcpStream;

use super::keys::KeySet;
use crate::metrics::GatewayMetrics;

/// A JWKS document larger than this is refused.
const MAX_JWKS_BYTES: usize = 1024 * 1024;
/// A fetch (connect, TLS, request, body) that takes longer is abandoned.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum JwksSourceError {
    #[error("JWKS URL {0:?} must be http://host[:port]/path or https://...")]
    Url(String),
    #[error("cannot read JWKS CA file {0}: {1}")]
    CaFile(String, String),
}

/// Where keys are read from.
#[derive(Clone)]
pub enum JwksSource {
    File(PathBuf),
    Url(Arc<UrlSource>),
}

impl std::fmt::Debug for JwksSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(path) => write!(f, "file {}", path.display()),
            Self::Url(source) => write!(f, "{}", source.uri),
        }
    }
}

pub struct UrlSource {
    uri: http::Uri,
    host: String,
    port: u16,
    /// Set for https.
    tls: Option<tokio_rustls::TlsConnector>,
}

impl JwksSource {
    pub fn url(url: &str, extra_ca: Option<&std::path::Path>) -> Result<Self, JwksSourceError> {
        let invalid = || JwksSourceError::Url(url.to_owned());
        let uri: http::Uri = url.parse().map_err(|_| invalid())?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(invalid()),
        };
        let host = uri.host().ok_or_else(invalid)?.to_owned();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tls = if https {
            let mut roots = rustls::RootCertStore::empty();
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            if let Some(path) = extra_ca {
                let ca_error = |error: String| JwksSourceError::CaFile(path.display().to_string(), error);
                for certificate in CertificateDer::pem_file_iter(path).map_err(|error| ca_error(error.to_string()))? {
                    roots
                        .add(certificate.map_err(|error| ca_error(error.to_string()))?)
                        .map_err(|error| ca_error(error.to_string()))?;
                }
            }
            let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|error| JwksSourceError::CaFile("(TLS setup)".into(), error.to_string()))?
                .with_root_certificates(roots)
                .with_no_client_auth();
            Some(tokio_rustls::TlsConnector::from(Arc::new(config)))
        } else {
            None
        };
        Ok(Self::Url(Arc::new(UrlSource { uri, host, port, tls })))
    }

    /// Reads the current document.
    pub async fn read(&self) -> Result<Vec<u8>, String> {
        Ok(match self {
            Self::File(path) => tokio::fs::read(path)
                .await
                .map_err(|error| format!("cannot read {}: {error}", path.display()))?,
            Self::Url(source) => tokio::time::timeout(FETCH_TIMEOUT, source.fetch())
                .await
                .map_err(|_| format!("no answer from {} within {FETCH_TIMEOUT:?}", source.uri))??
                .to_vec(),
        })
    }

    /// The document's digest (so an unchanged one changes nothing) and the keys it holds.
    async fn read_key_set(&self) -> Result<([u8; 32], KeySet), String> {
        let document = self.read().await?;
        let set = KeySet::from_jwks(&document).map_err(|error| error.to_string())?;
        Ok((digest(&document), set))
    }
}

impl UrlSource {
    /// One HTTP/1.1 GET on a fresh connection.
    async fn fetch(&self) -> Result<Bytes, String> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|error| format!("cannot connect to {}: {error}", self.uri))?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            None => self.get(TokioIo::new(tcp)).await,
            Some(connector) => {
                let name = ServerName::try_from(self.host.clone()).map_err(|error| format!("{}: {error}", self.uri))?;
                let tls = connector
                    .connect(name, tcp)
                    .await
                    .map_err(|error| format!("TLS with {} failed: {error}", self.uri))?;
                self.get(TokioIo::new(tls)).await
            }
        }
    }

    async fn get<IO>(&self, io: IO) -> Result<Bytes, String>
    where
        IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|error| format!("HTTP handshake with {} failed: {error}", self.uri))?;
        tokio::spawn(connection);
        let path = self.uri.path_and_query().map_or("/", |path| path.as_str());
        let authority = self.uri.authority().map_or(self.host.as_str(), |authority| authority.as_str());
        let request = http::Request::get(path)
            .header(http::header::HOST, authority)
            .header(http::header::ACCEPT, "application/json")
            .body(Empty::<Bytes>::new())
            .map_err(|error| error.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|error| format!("GET {} failed: {error}", self.uri))?;
        if !response.status().is_success() {
            return Err(format!("GET {} answered {}", self.uri, response.status()));
        }
        let body = Limited::new(response.into_body(), MAX_JWKS_BYTES)
            .collect()
            .await
            .map_err(|error| format!("reading {} failed (larger than {MAX_JWKS_BYTES} bytes?): {error}", self.uri))?;
        Ok(body.to_bytes())
    }
}

/// Where fetching stands: when the last one started, and the one under way, if any.
struct Refresh {
    started: Instant,
    /// Set while a fetch runs; its receivers see `true` when it has finished.
    under_way: Option<tokio::sync::watch::Receiver<bool>>,
}

fn digest(document: &[u8]) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(document).into()
}

/// The current key set and the rules for refreshing it.
pub struct KeyStore {
    current: ArcSwap<KeySet>,
    /// A set has loaded (at start-up or since); until then readiness reports NOT_SERVING.
    loaded: AtomicBool,
    source: JwksSource,
    min_refresh: Duration,
    /// One fetch at a time; an unknown kid asks for one at most every `min_refresh`.
    /// A plain mutex held for a few instructions, never across a fetch: callers
    /// that find a fetch under way wait for its outcome together, and callers
    /// within `min_refresh` of the last one return at once.
    refresh: std::sync::Mutex<Refresh>,
    /// Digest of the document in use, so an unchanged document changes nothing.
    digest: std::sync::Mutex<[u8; 32]>,
    metrics: GatewayMetrics,
    /// Called after a new set is installed (to forget tokens verified with the old one).
    on_change: Box<dyn Fn() + Send + Sync>,
}

impl std::fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyStore").field("source", &self.source).finish_non_exhaustive()
    }
}

impl KeyStore {
    /// Loads the first set. A file that does not load stops the start-up (it is
    /// configuration). A URL that does not answer yet does not: an issuer that is down
    /// while the gateway rolls out must not crash-loop it. The store then starts
    /// empty, refuses every token, reports itself not loaded (readiness follows it)
    /// and retries every `min_refresh` until a set loads.
    pub async fn load(
        source: JwksSource,
        min_refresh: Duration,
        metrics: GatewayMetrics,
        on_change: Box<dyn Fn() + Send + Sync>,
    ) -> Result<Arc<Self>, String> {
        let failed = |error: String| format!("cannot load the JWKS ({source:?}): {error}");
        let loaded = source.read_key_set().await;
        let (digest, first) = match loaded {
            Ok((digest, set)) => {
                tracing::info!(source = ?source, keys = set.len(), "JWKS loaded");
                metrics.jwks_refresh(true);
                (Some(digest), set)
            }
            Err(error) if matches!(source, JwksSource::File(_)) => return Err(failed(error)),
            Err(error) => {
                metrics.jwks_refresh(false);
                tracing::warn!(
                    source = ?source,
                    %error,
                    retry_ms = min_refresh.as_millis(),
                    "JWKS unavailable at start-up; refusing every token and reporting NOT_SERVING until it loads"
                );
                (None, KeySet::default())
            }
        };
        Ok(Arc::new(Self {
            current: ArcSwap::from_pointee(first),
            loaded: AtomicBool::new(digest.is_some()),
            refresh: std::sync::Mutex::new(Refresh {
                started: Instant::now(),
                under_way: None,
            }),
            digest: std::sync::Mutex::new(digest.unwrap_or_default()),
            source,
            min_refresh,
            metrics,
            on_change,
        }))
    }

    /// Whether a key set has loaded since start-up (it stays loaded: later failures keep it).
    pub fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    pub fn current(&self) -> arc_swap::Guard<Arc<KeySet>> {
        self.current.load()
    }

    /// Refreshes every `interval` while the store lives; every `min_refresh` until a first set loads.
    pub fn refresh_every(self: &Arc<Self>, interval: Duration) {
        let weak = Arc::downgrade(self);
        let next = move |store: &Self| if store.is_loaded() { interval } else { store.min_refresh };
        let mut wait = next(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(wait).await;
                let Some(store) = weak.upgrade() else { return };
                if let Some(outcome) = store.start_fetch(Duration::ZERO) {
                    wait_for(outcome).await;
                }
                wait = next(&store);
            }
        });
    }

    /// A token named a key id we do not have: fetch again, unless a fetch
    /// started less than `min_refresh` ago (then return at once). Callers that
    /// arrive while a fetch is under way wait for that one; a caller that gives
    /// up (its client went away) does not cancel it for the others.
    pub async fn refresh_for_unknown_kid(self: &Arc<Self>) {
        if let Some(outcome) = self.start_fetch(self.min_refresh) {
            wait_for(outcome).await;
        }
    }

    /// The fetch under way, or a new one if the last started at least `spacing`
    /// ago; `None` when there is nothing to wait for.
    fn start_fetch(self: &Arc<Self>, spacing: Duration) -> Option<tokio::sync::watch::Receiver<bool>> {
        let mut refresh = self.refresh.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(under_way) = &refresh.under_way {
            return Some(under_way.clone());
        }
        if refresh.started.elapsed() < spacing {
            return None;
        }
        let (finished, outcome) = tokio::sync::watch::channel(false);
        refresh.started = Instant::now();
        refresh.under_way = Some(outcome.clone());
        let store = self.clone();
        tokio::spawn(async move {
            store.fetch().await;
            store.refresh.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).under_way = None;
            finished.send_replace(true);
        });
        Some(outcome)
    }

    async fn fetch(&self) {
        let parsed = self.source.read_key_set().await;
        match parsed {
            Ok((digest, set)) => {
                self.metrics.jwks_refresh(true);
                let mut in_use = self.digest.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                if *in_use == digest {
                    return;
                }
                *in_use = digest;
                drop(in_use);
                tracing::info!(keys = set.len(), "JWKS changed; new keys in use");
                self.current.store(Arc::new(set));
                self.loaded.store(true, Ordering::Release);
                (self.on_change)();
            }
            Err(error) => {
                self.metrics.jwks_refresh(false);
                tracing::warn!(source = ?self.source, %error, "JWKS refresh failed; keeping the last good key set");
            }
        }
    }
}

/// Waits until a fetch has finished (or its task is gone, as at shutdown).
async fn wait_for(mut outcome: tokio::sync::watch::Receiver<bool>) {
    let _ = outcome.wait_for(|finished| *finished).await;
}
