//! The run's development certificates (`suite-devcerts`, trust domain
//! `suite.local`, namespace `dev`) and how a load generator connects to a
//! server: in plaintext, or over mutual TLS as one of the dev identities.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use suite_devcerts::dev_set::{self, DevSetOptions};
use suite_tls::{CredentialPaths, Credentials, MtlsConnector, SpiffeId, TlsOptions};
use tonic::transport::{Channel, Endpoint};

/// The identities `suite-devcerts` issues: `spiffe://suite.local/ns/dev/sa/<name>`.
pub const TRUST_DOMAIN: &str = "suite.local";
pub const NAMESPACE: &str = "dev";

/// `spiffe://suite.local/ns/dev/sa/<name>`.
pub fn spiffe_id(name: &str) -> anyhow::Result<SpiffeId> {
    Ok(SpiffeId::new(TRUST_DOMAIN, NAMESPACE, name)?)
}

/// A development CA and a certificate for every suite identity, in one directory.
pub struct DevPki {
    dir: PathBuf,
}

impl DevPki {
    pub fn generate(dir: PathBuf) -> anyhow::Result<Self> {
        dev_set::ensure(&DevSetOptions {
            dir: dir.clone(),
            trust_domain: TRUST_DOMAIN.into(),
            namespace: NAMESPACE.into(),
            renew: false,
        })
        .context("cannot generate the development certificates")?;
        Ok(Self { dir })
    }

    /// A TLS client presenting `client`'s certificate that accepts only `server`'s identity.
    pub fn connector(&self, client: &str, server: &str) -> anyhow::Result<MtlsConnector> {
        let credentials = Credentials::load(CredentialPaths {
            cert: self.cert(client),
            key: self.key(client),
            ca: self.ca(),
        })
        .with_context(|| format!("cannot load the {client} certificate"))?;
        MtlsConnector::new(&credentials, spiffe_id(server)?, TlsOptions::default())
            .with_context(|| format!("cannot build the {client} TLS client"))
    }

    /// The environment that makes a service binary serve mutual TLS as `name`
    /// with the authorization policy at `authz_policy`.
    pub fn server_env(&self, name: &str, authz_policy: &Path) -> [(&'static str, PathBuf); 4] {
        [
            ("TLS_CERT", self.cert(name)),
            ("TLS_KEY", self.key(name)),
            ("TLS_CA", self.ca()),
            ("AUTHZ_POLICY", authz_policy.to_path_buf()),
        ]
    }

    fn cert(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.pem"))
    }

    fn key(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}-key.pem"))
    }

    fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
}

/// Opens HTTP/2 connections to one server: in plaintext, or over mutual TLS with `tls`.
#[derive(Clone)]
pub struct Dialer {
    endpoint: Endpoint,
    pub tls: Option<MtlsConnector>,
}

impl Dialer {
    pub fn new(addr: SocketAddr, tls: Option<MtlsConnector>) -> anyhow::Result<Self> {
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true);
        Ok(Self { endpoint, tls })
    }

    pub async fn connect(&self) -> Result<Channel, tonic::transport::Error> {
        match &self.tls {
            None => self.endpoint.connect().await,
            Some(connector) => self.endpoint.connect_with_connector(connector.clone()).await,
        }
    }

    /// `count` separate connections.
    pub async fn connect_many(&self, count: u32) -> anyhow::Result<Vec<Channel>> {
        let mut channels = Vec::new();
        for _ in 0..count {
            channels.push(self.connect().await.context("cannot open a benchmark connection")?);
        }
        Ok(channels)
    }
}
