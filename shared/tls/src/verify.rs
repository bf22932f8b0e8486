//! rustls verifiers and certificate resolvers that read the current material
//! at each handshake, so a rotation takes effect without rebuilding configs.
//!
//! Both directions check the chain and validity period against the CA bundle
//! (webpki, which also refuses a CA certificate presented as a leaf), then the
//! SPIFFE identity: a client must belong to our trust domain, a server must be
//! exactly the identity the client expects. DNS names play no part.

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, verify_server_cert_signed_by_trust_anchor};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ParsedCertificate, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, Error, OtherError, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::credentials::Credentials;
use crate::identity::{CertificateSummary, IdentityError, SpiffeId};
use crate::listener::ListenerCredentials;

/// Why a peer's otherwise valid certificate was refused on identity grounds.
#[derive(thiserror::Error)]
pub enum PeerIdentityError {
    #[error("peer certificate identity: {0}")]
    Malformed(#[from] IdentityError),
    #[error("peer {peer} is outside trust domain {trust_domain}")]
    ForeignTrustDomain { peer: SpiffeId, trust_domain: String },
    #[error("server presented identity {presented}, expected {expected}")]
    UnexpectedServer { presented: SpiffeId, expected: SpiffeId },
}

/// rustls prints the reason of a refused certificate with `Debug`; make that
/// the sentence an operator reads in the log and the client's error.
impl fmt::Debug for PeerIdentityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

fn refuse(error: PeerIdentityError) -> Error {
    Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(error))))
}

fn supported_schemes(provider: &CryptoProvider) -> Vec<SignatureScheme> {
    provider.signature_verification_algorithms.supported_schemes()
}

/// Server side: requires a client certificate from the CA bundle whose identity is in our trust domain.
pub(crate) struct ClientIdentityVerifier {
    pub credentials: Credentials,
}

impl fmt::Debug for ClientIdentityVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientIdentityVerifier")
    }
}

impl ClientCertVerifier for ClientIdentityVerifier {
    fn client_auth_mandatory(&self) -> bool {
        true
    }

    /// No CA hints: the bundle changes on rotation and clients of the suite
    /// present their one certificate regardless.
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let material = self.credentials.current();
        material.client_verifier.verify_client_cert(end_entity, intermediates, now)?;
        let peer = CertificateSummary::of(end_entity).map_err(|error| refuse(error.into()))?.identity;
        let trust_domain = material.identity().trust_domain();
        if peer.trust_domain() != trust_domain {
            return Err(refuse(PeerIdentityError::ForeignTrustDomain {
                peer,
                trust_domain: trust_domain.to_owned(),
            }));
        }
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(message, cert, dss, &self.credentials.provider().signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(message, cert, dss, &self.credentials.provider().signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        supported_schemes(self.credentials.provider())
    }
}

/// Client side: the server must chain to the CA bundle and be exactly `expected`.
pub(crate) struct ServerIdentityVerifier {
    pub credentials: Credentials,
    pub expected: SpiffeId,
}

impl fmt::Debug for ServerIdentityVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerIdentityVerifier").field("expected", &self.expected).finish()
    }
}

impl ServerCertVerifier for ServerIdentityVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let material = self.credentials.current();
        let parsed = ParsedCertificate::try_from(end_entity)?;
        let algorithms = self.credentials.provider().signature_verification_algorithms.all;
        verify_server_cert_signed_by_trust_anchor(&parsed, &material.roots, intermediates, now, algorithms)?;
        let presented = CertificateSummary::of(end_entity).map_err(|error| refuse(error.into()))?.identity;
        if presented != self.expected {
            return Err(refuse(PeerIdentityError::UnexpectedServer {
                presented,
                expected: self.expected.clone(),
            }));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(message, cert, dss, &self.credentials.provider().signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(message, cert, dss, &self.credentials.provider().signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        supported_schemes(self.credentials.provider())
    }
}

/// Presents the current certificate, on either side of a handshake.
pub(crate) enum CurrentCertificate {
    /// The service's own identity (mutual TLS, both directions).
    Identity(Credentials),
    /// A public listener's certificate.
    Listener(ListenerCredentials),
}

impl CurrentCertificate {
    fn certified_key(&self) -> Arc<CertifiedKey> {
        match self {
            Self::Identity(credentials) => credentials.certified_key(),
            Self::Listener(credentials) => credentials.certified_key(),
        }
    }
}

impl fmt::Debug for CurrentCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CurrentCertificate")
    }
}

impl ResolvesServerCert for CurrentCertificate {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.certified_key())
    }
}

impl ResolvesClientCert for CurrentCertificate {
    fn resolve(&self, _root_hint_subjects: &[&[u8]], _sigschemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.certified_key())
    }

    fn has_certs(&self) -> bool {
        true
    }
}
