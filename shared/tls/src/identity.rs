//! Service identity: one SPIFFE-style URI SAN per certificate,
//! `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`.
//!
//! Identity never comes from DNS names: a certificate may carry DNS or IP SANs
//! for tools that insist on them (grpcurl), but only the URI SAN is trusted.

use std::fmt;
use std::str::FromStr;

use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

const SCHEME: &str = "spiffe://";
/// The SPIFFE specification's upper bound on an ID's length.
const MAX_LENGTH: usize = 2048;

/// A workload identity within a trust domain.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    trust_domain: String,
    namespace: String,
    service_account: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("identity {0:?} is not a spiffe:// URI")]
    NotSpiffe(String),
    #[error("identity {0:?} is longer than {MAX_LENGTH} bytes")]
    TooLong(String),
    #[error("identity {0:?} has an invalid trust domain (lowercase letters, digits, '.', '-', '_')")]
    TrustDomain(String),
    #[error("identity {0:?} must have the path /ns/<namespace>/sa/<service-account>")]
    Path(String),
    #[error("certificate cannot be parsed: {0}")]
    Certificate(String),
    #[error("certificate has no URI SAN; a service certificate carries exactly one spiffe:// URI SAN")]
    MissingUri,
    #[error("certificate has {0} URI SANs; a service certificate carries exactly one")]
    SeveralUris(usize),
}

impl SpiffeId {
    pub fn new(trust_domain: &str, namespace: &str, service_account: &str) -> Result<Self, IdentityError> {
        format!("{SCHEME}{trust_domain}/ns/{namespace}/sa/{service_account}").parse()
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn service_account(&self) -> &str {
        &self.service_account
    }
}

impl FromStr for SpiffeId {
    type Err = IdentityError;

    fn from_str(uri: &str) -> Result<Self, Self::Err> {
        if uri.len() > MAX_LENGTH {
            return Err(IdentityError::TooLong(uri.to_owned()));
        }
        let rest = uri.strip_prefix(SCHEME).ok_or_else(|| IdentityError::NotSpiffe(uri.to_owned()))?;
        let (trust_domain, path) = rest.split_once('/').ok_or_else(|| IdentityError::Path(uri.to_owned()))?;
        let domain_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_');
        if trust_domain.is_empty() || !trust_domain.chars().all(domain_char) {
            return Err(IdentityError::TrustDomain(uri.to_owned()));
        }
        let segment_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_');
        let valid_segment = |segment: &str| !segment.is_empty() && segment != "." && segment != ".." && segment.chars().all(segment_char);
        match path.split('/').collect::<Vec<_>>().as_slice() {
            ["ns", namespace, "sa", service_account] if valid_segment(namespace) && valid_segment(service_account) => Ok(Self {
                trust_domain: trust_domain.to_owned(),
                namespace: (*namespace).to_owned(),
                service_account: (*service_account).to_owned(),
            }),
            _ => Err(IdentityError::Path(uri.to_owned())),
        }
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME}{}/ns/{}/sa/{}", self.trust_domain, self.namespace, self.service_account)
    }
}

/// What the suite reads from a (leaf) certificate: who it names, and the
/// facts an operator needs to tell one issuance from the next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateSummary {
    pub identity: SpiffeId,
    /// Serial number, lowercase hex without separators.
    pub serial: String,
    /// End of validity, seconds since the Unix epoch.
    pub not_after: i64,
}

impl CertificateSummary {
    /// Reads the identity (exactly one valid SPIFFE URI SAN), serial and expiry of a DER certificate.
    pub fn of(der: &[u8]) -> Result<Self, IdentityError> {
        let (_, certificate) = X509Certificate::from_der(der).map_err(|error| IdentityError::Certificate(error.to_string()))?;
        let names = certificate
            .subject_alternative_name()
            .map_err(|error| IdentityError::Certificate(error.to_string()))?
            .map(|extension| extension.value.general_names.clone())
            .unwrap_or_default();
        let uris: Vec<&str> = names
            .iter()
            .filter_map(|name| match name {
                GeneralName::URI(uri) => Some(*uri),
                _ => None,
            })
            .collect();
        let identity = match uris.as_slice() {
            [] => return Err(IdentityError::MissingUri),
            [uri] => uri.parse()?,
            several => return Err(IdentityError::SeveralUris(several.len())),
        };
        let serial = certificate.raw_serial().iter().map(|byte| format!("{byte:02x}")).collect();
        Ok(Self {
            identity,
            serial,
            not_after: certificate.validity().not_after.timestamp(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_a_service_identity() {
        let id: SpiffeId = "spiffe://suite.local/ns/prod/sa/user-service"
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(id.trust_domain(), "suite.local");
        assert_eq!(id.namespace(), "prod");
        assert_eq!(id.service_account(), "user-service");
        assert_eq!(id.to_string(), "spiffe://suite.local/ns/prod/sa/user-service");
    }

    #[test]
    fn rejects_malformed_identities() {
        for bad in [
            "https://suite.local/ns/prod/sa/user-service",
            "spiffe://",
            "spiffe://suite.local",
            "spiffe://suite.local/",
            "spiffe://Suite.Local/ns/prod/sa/user",
            "spiffe://suite.local/ns/prod",
            "spiffe://suite.local/ns/prod/sa/",
            "spiffe://suite.local/ns/prod/sa/user/extra",
            "spiffe://suite.local/ns/../sa/user",
            "spiffe://suite.local/sa/user/ns/prod",
            "spiffe://user@suite.local/ns/prod/sa/user",
            "spiffe://suite.local:8443/ns/prod/sa/user",
            "spiffe://suite.local/ns/prod/sa/user?x=1",
            "spiffe://suite.local/ns/prod/sa/user#frag",
        ] {
            assert!(bad.parse::<SpiffeId>().is_err(), "{bad} should be rejected");
        }
    }
}
