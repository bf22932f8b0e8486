//! How a server's gRPC port is secured: mutual TLS with a per-method
//! authorization policy, or (only when explicitly asked for) plaintext.

use std::path::PathBuf;

use suite_tls::{Credentials, MaterialError, ServerTls, TlsArgs, TlsConfigError, TransportMode};

use crate::authz::{AuthorizationPolicy, PolicyError};

#[derive(Debug, Clone, Default, clap::Args)]
pub struct SecurityArgs {
    #[command(flatten)]
    pub tls: TlsArgs,

    /// TOML file saying which caller identities may call which methods; anything
    /// not allowed there is denied (health excepted). Without it, only health is open.
    #[arg(long, env = "AUTHZ_POLICY")]
    pub authz_policy: Option<PathBuf>,
}

/// The gRPC port's security, ready to serve.
#[derive(Debug)]
pub enum Transport {
    Mtls {
        tls: ServerTls,
        policy: AuthorizationPolicy,
    },
    /// TLS without client certificates: a public listener whose callers
    /// authenticate at the application layer (the edge gateway's bearer tokens).
    ServerOnlyTls {
        tls: ServerTls,
    },
    InsecurePlaintext,
}

#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    #[error(transparent)]
    Config(#[from] TlsConfigError),
    #[error("cannot load the TLS certificate: {0}")]
    Material(#[from] MaterialError),
    #[error("cannot build the TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error(transparent)]
    Policy(#[from] PolicyError),
}

impl SecurityArgs {
    /// Plaintext with no authentication, for tests and local experiments.
    pub fn insecure_plaintext() -> Self {
        Self {
            tls: TlsArgs {
                insecure_plaintext: true,
                ..TlsArgs::default()
            },
            authz_policy: None,
        }
    }

    /// Loads the certificate files (and starts watching them for rotation) and the policy.
    pub fn load(&self) -> Result<Transport, SecurityError> {
        let paths = match self.tls.mode()? {
            TransportMode::InsecurePlaintext => return Ok(Transport::InsecurePlaintext),
            TransportMode::Mtls(paths) => paths,
        };
        let credentials = Credentials::load(paths)?;
        credentials.watch(self.tls.reload_interval());
        let tls = ServerTls::new(credentials, self.tls.options())?;
        let policy = match &self.authz_policy {
            Some(path) => AuthorizationPolicy::from_file(path)?,
            None => {
                tracing::warn!("no AUTHZ_POLICY configured: every method except health is denied to every caller");
                AuthorizationPolicy::deny_all()
            }
        };
        Ok(Transport::Mtls { tls, policy })
    }
}
