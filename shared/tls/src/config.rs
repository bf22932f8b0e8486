//! Command-line and environment configuration of a service's transport security.

use std::path::PathBuf;
use std::time::Duration;

use crate::material::CredentialPaths;

#[derive(Debug, Clone, clap::Args)]
pub struct TlsArgs {
    /// PEM certificate chain this service presents (leaf first); enables mutual TLS on the gRPC port.
    #[arg(long, env = "TLS_CERT")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of the certificate.
    #[arg(long, env = "TLS_KEY")]
    pub tls_key: Option<PathBuf>,

    /// PEM bundle of the CA certificates every peer (client or server) must chain to.
    #[arg(long, env = "TLS_CA")]
    pub tls_ca: Option<PathBuf>,

    /// How often the three files are checked for a rotation.
    #[arg(long, env = "TLS_RELOAD_INTERVAL_MS", default_value_t = 10_000)]
    pub tls_reload_interval_ms: u64,

    /// A connection that has not finished its TLS handshake by then is closed.
    #[arg(long, env = "TLS_HANDSHAKE_TIMEOUT_MS", default_value_t = 5_000)]
    pub tls_handshake_timeout_ms: u64,

    /// Also accept TLS 1.2 (TLS 1.3 only by default).
    #[arg(long, env = "TLS_ALLOW_TLS12", default_value_t = false, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub tls_allow_tls12: bool,

    /// Serve gRPC in plaintext, with no authentication or authorization. For local development only.
    #[arg(long, env = "INSECURE_PLAINTEXT", default_value_t = false, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub insecure_plaintext: bool,
}

impl Default for TlsArgs {
    fn default() -> Self {
        Self {
            tls_cert: None,
            tls_key: None,
            tls_ca: None,
            tls_reload_interval_ms: 10_000,
            tls_handshake_timeout_ms: 5_000,
            tls_allow_tls12: false,
            insecure_plaintext: false,
        }
    }
}

/// A transport configuration that cannot work; the process refuses to start.
#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    #[error(
        "no TLS certificate configured: set TLS_CERT, TLS_KEY and TLS_CA (--tls-cert, --tls-key, --tls-ca), \
         or pass --insecure-plaintext (INSECURE_PLAINTEXT=true) for local development"
    )]
    NoTransport,
    #[error("TLS is half configured: {missing} missing (TLS_CERT, TLS_KEY and TLS_CA go together)")]
    Incomplete { missing: String },
    #[error("--insecure-plaintext conflicts with the configured TLS certificate; choose one")]
    Conflicting,
}

/// What the service will serve with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransportMode {
    Mtls(CredentialPaths),
    InsecurePlaintext,
}

/// Handshake settings that do not come from the certificate files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlsOptions {
    pub handshake_timeout: Duration,
    pub allow_tls12: bool,
}

impl Default for TlsOptions {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(5),
            allow_tls12: false,
        }
    }
}

impl TlsArgs {
    /// Mutual TLS when all three paths are set; plaintext only when explicitly asked for.
    pub fn mode(&self) -> Result<TransportMode, TlsConfigError> {
        let paths = [("TLS_CERT", &self.tls_cert), ("TLS_KEY", &self.tls_key), ("TLS_CA", &self.tls_ca)];
        let missing: Vec<&str> = paths.iter().filter(|(_, path)| path.is_none()).map(|(name, _)| *name).collect();
        match (missing.len(), self.insecure_plaintext) {
            (3, true) => Ok(TransportMode::InsecurePlaintext),
            (3, false) => Err(TlsConfigError::NoTransport),
            (_, true) => Err(TlsConfigError::Conflicting),
            (0, false) => Ok(TransportMode::Mtls(CredentialPaths {
                cert: self.tls_cert.clone().unwrap_or_default(),
                key: self.tls_key.clone().unwrap_or_default(),
                ca: self.tls_ca.clone().unwrap_or_default(),
            })),
            (_, false) => Err(TlsConfigError::Incomplete {
                missing: missing.join(", "),
            }),
        }
    }

    pub fn reload_interval(&self) -> Duration {
        Duration::from_millis(self.tls_reload_interval_ms)
    }

    pub fn options(&self) -> TlsOptions {
        TlsOptions {
            handshake_timeout: Duration::from_millis(self.tls_handshake_timeout_ms),
            allow_tls12: self.tls_allow_tls12,
        }
    }
}
