//! Server side: the rustls configuration (ALPN h2, no session resumption;
//! client certificate required between services, not asked for on a public
//! listener) and a bounded handshake for each accepted socket.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use rustls::server::NoServerSessionStorage;
use suite_telemetry::RateLimitedLog;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::config::TlsOptions;
use crate::credentials::Credentials;
use crate::identity::{CertificateSummary, SpiffeId};
use crate::listener::ListenerCredentials;
use crate::metrics::{HandshakeOutcome, TlsMetrics};
use crate::verify::{ClientIdentityVerifier, CurrentCertificate};
use crate::{ALPN_H2, protocol_versions};

/// The verified identity of the peer on one connection, and who we were to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The caller's SPIFFE identity, from its verified certificate.
    pub caller: SpiffeId,
    /// Serial of the caller's certificate, to tell issuances apart in logs.
    pub caller_serial: String,
    /// The identity this server presented on the connection.
    pub server: SpiffeId,
}

/// Terminates TLS for a server, with the current (reloading) material.
#[derive(Clone)]
pub struct ServerTls {
    acceptor: TlsAcceptor,
    certificate: Presented,
    handshake_timeout: Duration,
    failure_log: Arc<RateLimitedLog>,
}

/// What the server presents, which also decides whether clients must present a certificate.
#[derive(Debug, Clone)]
enum Presented {
    /// The service's SPIFFE identity; mutual TLS.
    Identity(Credentials),
    /// A public listener's certificate; clients stay anonymous at the TLS layer.
    Listener(ListenerCredentials),
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("certificate", &self.certificate)
            .field("handshake_timeout", &self.handshake_timeout)
            .finish_non_exhaustive()
    }
}

/// Why a connection never became usable.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("TLS handshake failed: {0}")]
    Failed(std::io::Error),
    #[error("TLS handshake not finished within {0:?}")]
    TimedOut(Duration),
}

impl ServerTls {
    /// Mutual TLS: clients must present a certificate naming a SPIFFE identity in our trust domain.
    pub fn new(credentials: Credentials, options: TlsOptions) -> Result<Self, rustls::Error> {
        let config = ServerConfig::builder_with_provider(credentials.provider().clone())
            .with_protocol_versions(protocol_versions(options.allow_tls12))?
            .with_client_cert_verifier(Arc::new(ClientIdentityVerifier {
                credentials: credentials.clone(),
            }))
            .with_cert_resolver(Arc::new(CurrentCertificate::Identity(credentials.clone())));
        Ok(Self::with_config(config, Presented::Identity(credentials), options))
    }

    /// TLS for clients outside the suite: no client certificate is asked for;
    /// they authenticate at the application layer (a bearer token, say).
    pub fn server_only(credentials: ListenerCredentials, options: TlsOptions) -> Result<Self, rustls::Error> {
        let config = ServerConfig::builder_with_provider(credentials.provider().clone())
            .with_protocol_versions(protocol_versions(options.allow_tls12))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(CurrentCertificate::Listener(credentials.clone())));
        Ok(Self::with_config(config, Presented::Listener(credentials), options))
    }

    fn with_config(mut config: ServerConfig, certificate: Presented, options: TlsOptions) -> Self {
        config.alpn_protocols = vec![ALPN_H2.to_vec()];
        // Our suite order, whatever a client (grpcurl) prefers.
        config.ignore_client_order = true;
        // No resumption: every connection proves its certificate against the
        // current CA bundle, and no ticket key exists to leak or persist.
        config.session_storage = Arc::new(NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
        Self {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            certificate,
            handshake_timeout: options.handshake_timeout,
            failure_log: Arc::new(RateLimitedLog::new(Duration::from_secs(10))),
        }
    }

    /// The service's identity credentials, when clients must present certificates.
    pub fn credentials(&self) -> Option<&Credentials> {
        match &self.certificate {
            Presented::Identity(credentials) => Some(credentials),
            Presented::Listener(_) => None,
        }
    }

    /// Whether clients must present a certificate.
    pub fn is_mutual(&self) -> bool {
        matches!(self.certificate, Presented::Identity(_))
    }

    /// Handshake, reload and expiry metrics of this server's certificate.
    pub fn metrics(&self) -> &TlsMetrics {
        match &self.certificate {
            Presented::Identity(credentials) => credentials.metrics(),
            Presented::Listener(credentials) => credentials.metrics(),
        }
    }

    /// What this server presents, for the start-up log line.
    pub fn describe(&self) -> String {
        match &self.certificate {
            Presented::Identity(credentials) => format!("mtls as {}", credentials.identity()),
            Presented::Listener(credentials) => format!("tls as {} (no client certificates)", credentials.current().subject),
        }
    }

    /// Runs the handshake on an accepted socket; a peer that is silent or
    /// slow past the handshake timeout is dropped so it cannot hold a slot.
    /// With mutual TLS the caller's verified identity comes back too.
    pub async fn handshake(
        &self,
        tcp: TcpStream,
        remote: SocketAddr,
    ) -> Result<(TlsStream<TcpStream>, Option<PeerIdentity>), HandshakeError> {
        let metrics = self.metrics();
        let result = match tokio::time::timeout(self.handshake_timeout, self.acceptor.accept(tcp)).await {
            Err(_) => Err(HandshakeError::TimedOut(self.handshake_timeout)),
            Ok(Err(error)) => Err(HandshakeError::Failed(error)),
            Ok(Ok(stream)) => Ok(stream),
        };
        let stream = match result {
            Ok(stream) => stream,
            Err(error) => {
                metrics.handshake(match error {
                    HandshakeError::TimedOut(_) => HandshakeOutcome::TimedOut,
                    HandshakeError::Failed(_) => HandshakeOutcome::Rejected,
                });
                if let Some(suppressed) = self.failure_log.should_log() {
                    tracing::warn!(%remote, %error, suppressed, "connection refused at the TLS handshake");
                }
                return Err(error);
            }
        };
        let Presented::Identity(credentials) = &self.certificate else {
            metrics.handshake(HandshakeOutcome::Accepted);
            return Ok((stream, None));
        };
        let (_, connection) = stream.get_ref();
        let leaf = connection.peer_certificates().and_then(|chain| chain.first());
        // The verifier has already required a certificate with a valid identity.
        let summary = leaf.map(|leaf| CertificateSummary::of(leaf));
        let Some(Ok(summary)) = summary else {
            metrics.handshake(HandshakeOutcome::Rejected);
            let error = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "peer identity unavailable after handshake");
            return Err(HandshakeError::Failed(error));
        };
        metrics.handshake(HandshakeOutcome::Accepted);
        let peer = PeerIdentity {
            caller: summary.identity,
            caller_serial: summary.serial,
            server: credentials.identity(),
        };
        Ok((stream, Some(peer)))
    }
}
