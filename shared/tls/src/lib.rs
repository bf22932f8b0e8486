//! Mutual TLS for every server and client of the suite.
//!
//! - [`SpiffeId`]: a service's identity, the one URI SAN of its certificate.
//! - [`Credentials`]: certificate, key and CA bundle from disk, validated as a
//!   set and reloaded on rotation; the last good set stays in use otherwise.
//! - [`ServerTls`]: terminates TLS (client certificate required) and yields the
//!   caller's verified [`PeerIdentity`].
//! - [`MtlsConnector`]: the client side, accepting only an expected server identity.
//! - [`ListenerCredentials`]: a public listener's certificate (DNS names, no
//!   client certificates), for [`ServerTls::server_only`].

mod client;
mod config;
mod credentials;
mod identity;
mod listener;
mod material;
mod metrics;
mod reloading;
mod server;
mod verify;

use rustls::crypto::CryptoProvider;
use rustls::version::{TLS12, TLS13};
use rustls::{CipherSuite, SupportedProtocolVersion};

pub use client::MtlsConnector;
pub use config::{TlsArgs, TlsConfigError, TlsOptions, TransportMode};
pub use credentials::Credentials;
pub use identity::{CertificateSummary, IdentityError, SpiffeId};
pub use listener::{ListenerCredentials, ListenerPaths};
pub use material::{CredentialPaths, Material, MaterialError};
pub use metrics::{HandshakeOutcome, TlsMetrics};
pub use reloading::{AppliedCertificate, ReloadOutcome};
pub use server::{HandshakeError, PeerIdentity, ServerTls};
pub use verify::PeerIdentityError;

/// gRPC runs over HTTP/2 only.
const ALPN_H2: &[u8] = b"h2";

static TLS13_ONLY: [&SupportedProtocolVersion; 1] = [&TLS13];
static TLS13_AND_12: [&SupportedProtocolVersion; 2] = [&TLS13, &TLS12];

fn protocol_versions(allow_tls12: bool) -> &'static [&'static SupportedProtocolVersion] {
    if allow_tls12 { &TLS13_AND_12 } else { &TLS13_ONLY }
}

/// ring's suites with AES-128-GCM first: for service-to-service traffic it is
/// as strong as needed, and cheaper per record and per handshake (SHA-256 runs
/// on the CPU's SHA extensions, SHA-384 does not) than ring's default AES-256.
fn crypto_provider() -> CryptoProvider {
    let mut provider = rustls::crypto::ring::default_provider();
    provider
        .cipher_suites
        .sort_by_key(|suite| suite.suite() != CipherSuite::TLS13_AES_128_GCM_SHA256);
    provider
}
