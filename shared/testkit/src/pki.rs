//! A throwaway PKI for one test: a CA, service certificates with SPIFFE
//! identities, deliberately broken certificates, and a raw TLS client that
//! can present any of them (the suite's own client refuses to load bad ones).

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use suite_devcerts::{CertificateAuthority, LeafSpec};
use suite_tls::{CertificateSummary, CredentialPaths, Credentials, MtlsConnector, SpiffeId, TlsOptions};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

pub const TRUST_DOMAIN: &str = "suite.test";
pub const NAMESPACE: &str = "test";
const VALIDITY: Duration = Duration::from_secs(24 * 3600);

/// A CA and the files it issued, in a temporary directory.
#[derive(Debug)]
pub struct TestPki {
    pub dir: tempfile::TempDir,
    pub ca: CertificateAuthority,
    ca_path: PathBuf,
}

/// A certificate and key written to disk.
#[derive(Debug, Clone)]
pub struct TestCert {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub serial: String,
}

impl TestPki {
    #[allow(clippy::unwrap_used)]
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = CertificateAuthority::generate("suite test CA", VALIDITY * 30).unwrap();
        let ca_path = dir.path().join("ca.pem");
        std::fs::write(&ca_path, ca.certificate_pem()).unwrap();
        Self { dir, ca, ca_path }
    }

    /// `spiffe://suite.test/ns/test/sa/<name>`.
    #[allow(clippy::unwrap_used)]
    pub fn id(name: &str) -> SpiffeId {
        SpiffeId::new(TRUST_DOMAIN, NAMESPACE, name).unwrap()
    }

    pub fn ca_path(&self) -> PathBuf {
        self.ca_path.clone()
    }

    /// A good service certificate for `name`, valid for a day.
    pub fn service(&self, name: &str) -> TestCert {
        self.issue(name, &LeafSpec::service(name, &Self::id(name).to_string(), VALIDITY))
    }

    /// A service certificate for `name`, changed by `adjust` first (to break it).
    pub fn service_with(&self, name: &str, adjust: impl FnOnce(&mut LeafSpec)) -> TestCert {
        let mut spec = LeafSpec::service(name, &Self::id(name).to_string(), VALIDITY);
        adjust(&mut spec);
        self.issue(name, &spec)
    }

    /// Issues `spec` with this CA and writes `<file_stem>.pem` and `<file_stem>-key.pem`.
    #[allow(clippy::unwrap_used)]
    pub fn issue(&self, file_stem: &str, spec: &LeafSpec) -> TestCert {
        let issued = self.ca.issue(spec).unwrap();
        let cert = self.dir.path().join(format!("{file_stem}.pem"));
        let key = self.dir.path().join(format!("{file_stem}-key.pem"));
        std::fs::write(&cert, &issued.certificate_pem).unwrap();
        std::fs::write(&key, &issued.key_pem).unwrap();
        TestCert {
            cert,
            key,
            serial: issued.serial,
        }
    }

    pub fn paths(&self, cert: &TestCert) -> CredentialPaths {
        CredentialPaths {
            cert: cert.cert.clone(),
            key: cert.key.clone(),
            ca: self.ca_path(),
        }
    }

    /// The suite's own mTLS client, presenting `cert` and expecting the server `expected`.
    #[allow(clippy::unwrap_used)]
    pub fn connector(&self, cert: &TestCert, expected: &str) -> MtlsConnector {
        let credentials = Credentials::load(self.paths(cert)).unwrap();
        MtlsConnector::new(&credentials, Self::id(expected), TlsOptions::default()).unwrap()
    }

    /// A plain rustls client presenting `cert` (which may be invalid) or no certificate,
    /// verifying the server against this CA by DNS name `localhost`.
    pub fn raw_client(&self, cert: Option<&TestCert>) -> RawTlsConnector {
        RawTlsConnector::new(&self.ca_path, cert, rustls::DEFAULT_VERSIONS)
    }

    /// Like [`Self::raw_client`], speaking only TLS 1.2.
    pub fn raw_tls12_client(&self, cert: &TestCert) -> RawTlsConnector {
        RawTlsConnector::new(&self.ca_path, Some(cert), &[&rustls::version::TLS12])
    }
}

impl Default for TestPki {
    fn default() -> Self {
        Self::new()
    }
}

/// A TLS client built from rustls directly, recording the serial of the
/// certificate each server presented.
#[derive(Clone)]
pub struct RawTlsConnector {
    connector: TlsConnector,
    last_server_serial: Arc<Mutex<Option<String>>>,
}

impl std::fmt::Debug for RawTlsConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawTlsConnector").finish_non_exhaustive()
    }
}

impl RawTlsConnector {
    #[allow(clippy::unwrap_used)]
    pub fn new(ca: &std::path::Path, cert: Option<&TestCert>, versions: &[&'static rustls::SupportedProtocolVersion]) -> Self {
        let mut roots = rustls::RootCertStore::empty();
        for ca in CertificateDer::pem_file_iter(ca).unwrap() {
            roots.add(ca.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots);
        let mut config = match cert {
            None => builder.with_no_client_auth(),
            Some(cert) => {
                let chain = CertificateDer::pem_file_iter(&cert.cert).unwrap().map(Result::unwrap).collect();
                let key = PrivateKeyDer::from_pem_file(&cert.key).unwrap();
                builder.with_client_auth_cert(chain, key).unwrap()
            }
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        Self {
            connector: TlsConnector::from(Arc::new(config)),
            last_server_serial: Arc::new(Mutex::new(None)),
        }
    }

    /// Connects to a server on loopback (its certificate must name `localhost`).
    pub async fn connect(&self, port: u16) -> std::io::Result<TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
        // As every gRPC client does: a call's HEADERS and DATA go out at once,
        // not 40 ms apart behind Nagle's algorithm and a delayed ACK.
        tcp.set_nodelay(true)?;
        let name = ServerName::try_from("localhost").map_err(std::io::Error::other)?;
        let stream = self.connector.connect(name, tcp).await?;
        let serial = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|leaf| CertificateSummary::of(leaf).ok())
            .map(|summary| summary.serial);
        *self.last_server_serial.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = serial;
        Ok(stream)
    }

    /// Serial of the certificate the server presented on the latest connection.
    pub fn last_server_serial(&self) -> Option<String> {
        self.last_server_serial
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

impl tower::Service<http::Uri> for RawTlsConnector {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let connector = self.clone();
        Box::pin(async move {
            let port = uri.port_u16().ok_or_else(|| std::io::Error::other("no port"))?;
            connector.connect(port).await.map(TokioIo::new)
        })
    }
}

/// Overwrites a file in place (not atomically), as a careless rotation would.
#[allow(clippy::unwrap_used)]
pub fn overwrite(path: &std::path::Path, contents: &[u8]) {
    std::fs::write(path, contents).unwrap();
}

/// Offsets from now for validity windows.
pub fn hours_from_now(hours: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc() + time::Duration::hours(hours)
}
