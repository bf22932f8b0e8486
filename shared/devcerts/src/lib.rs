//! Development PKI: a local CA and certificates carrying SPIFFE identities.
//!
//! `dev-certs` (the binary) keeps a ready-to-use set under `.dev/certs` so the
//! suite runs with mutual TLS on a fresh machine; tests use the same code to
//! mint good and deliberately bad certificates. Keys are ECDSA P-256.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use time::OffsetDateTime;

#[derive(Debug, thiserror::Error)]
pub enum DevCertError {
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{0:?} is not a valid URI or DNS name for a certificate: {1}")]
    Name(String, rcgen::Error),
}

/// A CA that signs leaf certificates.
pub struct CertificateAuthority {
    issuer: Issuer<'static, KeyPair>,
    certificate_pem: String,
    key_pem: String,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority").finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// A new self-signed CA, valid from an hour ago for `validity`.
    pub fn generate(common_name: &str, validity: Duration) -> Result<Self, DevCertError> {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + validity;
        params.serial_number = Some(random_serial());
        let key = KeyPair::generate()?;
        let certificate = params.self_signed(&key)?;
        let key_pem = key.serialize_pem();
        Ok(Self {
            certificate_pem: certificate.pem(),
            key_pem,
            issuer: Issuer::new(params, key),
        })
    }

    /// A CA saved earlier (by [`Self::certificate_pem`] and [`Self::key_pem`]).
    pub fn load(certificate_pem: &str, key_pem: &str) -> Result<Self, DevCertError> {
        let key = KeyPair::from_pem(key_pem)?;
        Ok(Self {
            issuer: Issuer::from_ca_cert_pem(certificate_pem, key)?,
            certificate_pem: certificate_pem.to_owned(),
            key_pem: key_pem.to_owned(),
        })
    }

    pub fn certificate_pem(&self) -> &str {
        &self.certificate_pem
    }

    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// Signs a new key pair's certificate as `spec` describes.
    pub fn issue(&self, spec: &LeafSpec) -> Result<IssuedCertificate, DevCertError> {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, spec.common_name.as_str());
        for uri in &spec.uris {
            let name = uri.as_str().try_into().map_err(|error| DevCertError::Name(uri.clone(), error))?;
            params.subject_alt_names.push(SanType::URI(name));
        }
        for dns in &spec.dns_names {
            let name = dns.as_str().try_into().map_err(|error| DevCertError::Name(dns.clone(), error))?;
            params.subject_alt_names.push(SanType::DnsName(name));
        }
        params
            .subject_alt_names
            .extend(spec.ip_addresses.iter().copied().map(SanType::IpAddress));
        params.not_before = spec.not_before;
        params.not_after = spec.not_after;
        let serial = random_serial();
        let serial_hex = serial.to_bytes().iter().map(|byte| format!("{byte:02x}")).collect();
        params.serial_number = Some(serial);
        params.use_authority_key_identifier_extension = true;
        if spec.is_ca {
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        } else {
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            if spec.server_auth {
                params.extended_key_usages.push(ExtendedKeyUsagePurpose::ServerAuth);
            }
            if spec.client_auth {
                params.extended_key_usages.push(ExtendedKeyUsagePurpose::ClientAuth);
            }
        }
        let key = KeyPair::generate()?;
        let certificate = params.signed_by(&key, &self.issuer)?;
        Ok(IssuedCertificate {
            certificate_pem: certificate.pem(),
            key_pem: key.serialize_pem(),
            serial: serial_hex,
        })
    }
}

/// What a leaf certificate should say.
#[derive(Debug, Clone)]
pub struct LeafSpec {
    pub common_name: String,
    pub uris: Vec<String>,
    pub dns_names: Vec<String>,
    pub ip_addresses: Vec<IpAddr>,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    pub server_auth: bool,
    pub client_auth: bool,
    /// Marks the certificate as a CA (basicConstraints CA:TRUE), which peers must refuse as a leaf.
    pub is_ca: bool,
}

impl LeafSpec {
    /// A service certificate: the SPIFFE URI SAN, usable as server and client,
    /// plus `localhost` and loopback SANs so tools that check host names
    /// (grpcurl) accept it locally. Valid from an hour ago for `validity`.
    pub fn service(name: &str, spiffe_id: &str, validity: Duration) -> Self {
        let now = OffsetDateTime::now_utc();
        Self {
            common_name: name.to_owned(),
            uris: vec![spiffe_id.to_owned()],
            dns_names: vec!["localhost".to_owned(), name.to_owned()],
            ip_addresses: vec![IpAddr::V4(Ipv4Addr::LOCALHOST), IpAddr::V6(Ipv6Addr::LOCALHOST)],
            not_before: now - time::Duration::hours(1),
            not_after: now + validity,
            server_auth: true,
            client_auth: true,
            is_ca: false,
        }
    }

    /// A client-only certificate (an operator's, for grpcurl).
    pub fn client(name: &str, spiffe_id: &str, validity: Duration) -> Self {
        Self {
            dns_names: Vec::new(),
            ip_addresses: Vec::new(),
            server_auth: false,
            ..Self::service(name, spiffe_id, validity)
        }
    }
}

/// A signed certificate and its private key, PEM encoded.
#[derive(Debug, Clone)]
pub struct IssuedCertificate {
    pub certificate_pem: String,
    pub key_pem: String,
    /// Serial number, lowercase hex.
    pub serial: String,
}

/// 16 random bytes, high bit clear so the DER integer stays positive and 16 bytes long.
fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    SerialNumber::from_slice(&bytes)
}

pub mod dev_set;
pub mod token_key;
