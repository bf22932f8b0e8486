//! TLS to an `https://` collector: the files `OTEL_EXPORTER_OTLP_CERTIFICATE`,
//! `OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE` and `OTEL_EXPORTER_OTLP_CLIENT_KEY` name, read
//! and checked at start-up, and the client configurations both transports are built
//! from: tonic's for OTLP/gRPC, a rustls one (on ring) for the HTTP client.

use std::sync::Arc;

use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// TLS to an `https://` collector. With neither field set the collector is
/// verified against the public web roots and no client certificate is sent.
#[derive(Clone, Default, PartialEq)]
pub struct CollectorTls {
    /// PEM bundle of the CAs that verify the collector, replacing the web roots
    /// (`OTEL_EXPORTER_OTLP_CERTIFICATE`).
    pub ca_pem: Option<Vec<u8>>,
    /// Certificate chain and key for mutual TLS (`OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE`
    /// and `OTEL_EXPORTER_OTLP_CLIENT_KEY`).
    pub client_identity: Option<ClientIdentity>,
}

/// A PEM certificate chain and its private key.
#[derive(Clone, PartialEq)]
pub struct ClientIdentity {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

// Configuration is logged and printed in test failures: the key must not be.
impl std::fmt::Debug for CollectorTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CollectorTls")
            .field("ca_pem_bytes", &self.ca_pem.as_ref().map(Vec::len))
            .field("client_identity", &self.client_identity.is_some())
            .finish()
    }
}

impl std::fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientIdentity").finish_non_exhaustive()
    }
}

const CA_VAR: &str = "OTEL_EXPORTER_OTLP_CERTIFICATE";
const CLIENT_CERT_VAR: &str = "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE";
const CLIENT_KEY_VAR: &str = "OTEL_EXPORTER_OTLP_CLIENT_KEY";

impl CollectorTls {
    /// Reads and checks the files the variables name, so a wrong path or file
    /// stops the process at start-up instead of failing every export later.
    /// `setting` gives a general variable's value, or its `OTEL_EXPORTER_OTLP_TRACES_*`
    /// form's, which wins, with the name of the one read.
    pub(crate) fn from_env<'env>(setting: impl Fn(&str) -> Option<(String, &'env str)>, endpoint: &str) -> Result<Self, String> {
        let (ca, cert, key) = (setting(CA_VAR), setting(CLIENT_CERT_VAR), setting(CLIENT_KEY_VAR));
        if !endpoint.starts_with("https://") {
            return match ca.iter().chain(&cert).chain(&key).next() {
                Some((name, _)) => Err(format!(
                    "{name} is set but the OTLP endpoint {endpoint:?} is not https://; certificates need a TLS endpoint"
                )),
                None => Ok(Self::default()),
            };
        }
        let client = match (cert, key) {
            (None, None) => None,
            (Some((name, _)), None) => return Err(format!("{name} is set without {CLIENT_KEY_VAR}; mutual TLS needs both")),
            (None, Some((name, _))) => return Err(format!("{name} is set without {CLIENT_CERT_VAR}; mutual TLS needs both")),
            (Some(cert), Some(key)) => Some((cert, key)),
        };

        let ca_pem = match ca {
            Some((name, path)) => {
                let pem = read(&name, path)?;
                check_ca_bundle(&pem).map_err(|problem| format!("{name} {path:?} {problem}"))?;
                Some(pem)
            }
            None => None,
        };
        let client_identity = match client {
            Some(((cert_name, cert_path), (key_name, key_path))) => {
                let identity = ClientIdentity {
                    cert_pem: read(&cert_name, cert_path)?,
                    key_pem: read(&key_name, key_path)?,
                };
                check_identity(&identity).map_err(|problem| match problem {
                    IdentityProblem::Certificate(problem) => format!("{cert_name} {cert_path:?} {problem}"),
                    IdentityProblem::Key(problem) => format!("{key_name} {key_path:?} {problem}"),
                    IdentityProblem::Mismatch => {
                        format!("{key_name} {key_path:?} is not the private key of {cert_name} {cert_path:?}")
                    }
                })?;
                Some(identity)
            }
            None => None,
        };
        Ok(Self { ca_pem, client_identity })
    }
}

fn read(name: &str, path: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|error| format!("{name} {path:?} cannot be read: {error}"))
}

/// Every certificate in the bundle must be usable as a trust anchor, and there must be one.
fn check_ca_bundle(pem: &[u8]) -> Result<(), String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|error| format!("is not valid PEM: {error}"))?;
        roots
            .add(cert)
            .map_err(|error| format!("holds a certificate that cannot be used as a CA: {error}"))?;
    }
    if roots.is_empty() {
        return Err("holds no PEM certificate".to_owned());
    }
    Ok(())
}

#[derive(Debug, PartialEq)]
enum IdentityProblem {
    Certificate(String),
    Key(String),
    Mismatch,
}

/// The chain and key must parse, and the key must be the leaf certificate's.
fn check_identity(identity: &ClientIdentity) -> Result<(), IdentityProblem> {
    let chain = CertificateDer::pem_slice_iter(&identity.cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| IdentityProblem::Certificate(format!("is not valid PEM: {error}")))?;
    if chain.is_empty() {
        return Err(IdentityProblem::Certificate("holds no PEM certificate".to_owned()));
    }
    let key = PrivateKeyDer::from_pem_slice(&identity.key_pem)
        .map_err(|error| IdentityProblem::Key(format!("holds no usable PEM private key: {error}")))?;
    match rustls::sign::CertifiedKey::from_der(chain, key, &rustls::crypto::ring::default_provider()) {
        Ok(_) => Ok(()),
        Err(rustls::Error::InconsistentKeys(_)) => Err(IdentityProblem::Mismatch),
        Err(error) => Err(IdentityProblem::Key(format!("holds a key that cannot sign: {error}"))),
    }
}

impl CollectorTls {
    /// The tonic channel's TLS: the configured CA bundle, else the public web roots.
    pub(crate) fn tonic_config(&self) -> tonic::transport::ClientTlsConfig {
        use tonic::transport::{Certificate, ClientTlsConfig, Identity};
        // A configured CA bundle replaces the web roots: a private collector's CA
        // is all that should vouch for it.
        let config = match &self.ca_pem {
            Some(pem) => ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)),
            None => ClientTlsConfig::new().with_webpki_roots(),
        };
        match &self.client_identity {
            Some(identity) => config.identity(Identity::from_pem(&identity.cert_pem, &identity.key_pem)),
            None => config,
        }
    }

    /// The HTTP client's TLS, on ring like the rest of the suite, with the same trust as
    /// [`Self::tonic_config`]. The files were checked by `from_env`, so nothing here fails on them.
    pub(crate) fn rustls_config(&self) -> Result<rustls::ClientConfig, String> {
        let mut roots = rustls::RootCertStore::empty();
        match &self.ca_pem {
            Some(pem) => {
                for cert in CertificateDer::pem_slice_iter(pem).flatten() {
                    roots.add(cert).map_err(|error| error.to_string())?;
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|error| error.to_string())?
            .with_root_certificates(roots);
        match &self.client_identity {
            Some(identity) => {
                let chain = CertificateDer::pem_slice_iter(&identity.cert_pem)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|error| error.to_string())?;
                let key = PrivateKeyDer::from_pem_slice(&identity.key_pem).map_err(|error| error.to_string())?;
                builder.with_client_auth_cert(chain, key).map_err(|error| error.to_string())
            }
            None => Ok(builder.with_no_client_auth()),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::HashMap;

    use super::*;
    use crate::TracingConfig;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(key, value)| ((*key).to_owned(), (*value).to_owned())).collect()
    }

    fn self_signed() -> (Vec<u8>, Vec<u8>) {
        let certified = rcgen::generate_simple_self_signed(vec!["collector".to_owned()]).unwrap();
        (
            certified.cert.pem().into_bytes(),
            certified.signing_key.serialize_pem().into_bytes(),
        )
    }

    fn tls_error(pairs: &[(&str, &str)]) -> String {
        TracingConfig::from_env(&env(pairs), "x").unwrap_err()
    }

    #[test]
    fn https_without_files_verifies_against_the_web_roots() {
        let config = TracingConfig::from_env(&env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4317")]), "x").unwrap();
        assert_eq!(config.export.unwrap().tls, CollectorTls::default());
    }

    #[test]
    fn certificates_need_an_https_endpoint() {
        for name in [
            "OTEL_EXPORTER_OTLP_CERTIFICATE",
            "OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE",
            "OTEL_EXPORTER_OTLP_CLIENT_KEY",
        ] {
            let error = tls_error(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"), (name, "/etc/ca.pem")]);
            assert!(error.starts_with(name) && error.contains("not https://"), "{error}");
        }
        // Tracing off: the variables are not looked at.
        let off = env(&[("OTEL_EXPORTER_OTLP_CERTIFICATE", "/no/such/ca.pem")]);
        assert!(TracingConfig::from_env(&off, "x").is_ok());
    }

    #[test]
    fn a_client_certificate_needs_its_key_and_the_other_way_round() {
        let https = ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4317");
        let error = tls_error(&[https, ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", "/etc/client.pem")]);
        assert!(error.contains("without OTEL_EXPORTER_OTLP_CLIENT_KEY"), "{error}");
        let error = tls_error(&[https, ("OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY", "/etc/client-key.pem")]);
        assert!(
            error.starts_with("OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY") && error.contains("without OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE"),
            "{error}"
        );
    }

    #[test]
    fn a_missing_file_is_named_with_its_variable_and_the_traces_variable_wins() {
        let error = tls_error(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4317"),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/no/such/general.pem"),
            ("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", "/no/such/traces.pem"),
        ]);
        assert!(
            error.starts_with(r#"OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE "/no/such/traces.pem" cannot be read"#),
            "{error}"
        );
    }

    #[test]
    fn reads_the_ca_and_the_client_identity_from_their_files() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, _) = self_signed();
        let (cert, key) = self_signed();
        let path = |name: &str, contents: &[u8]| {
            let path = dir.path().join(name);
            std::fs::write(&path, contents).unwrap();
            path.to_str().unwrap().to_owned()
        };
        let (ca_path, cert_path, key_path) = (path("ca.pem", &ca), path("client.pem", &cert), path("client-key.pem", &key));
        let config = TracingConfig::from_env(
            &env(&[
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "https://collector:4317"),
                ("OTEL_EXPORTER_OTLP_CERTIFICATE", &ca_path),
                ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", &cert_path),
                ("OTEL_EXPORTER_OTLP_CLIENT_KEY", &key_path),
            ]),
            "x",
        )
        .unwrap();
        let tls = &config.export.as_ref().unwrap().tls;
        assert_eq!(tls.ca_pem, Some(ca));
        assert_eq!(
            tls.client_identity,
            Some(ClientIdentity {
                cert_pem: cert,
                key_pem: key
            })
        );
        let printed = format!("{config:?}");
        assert!(!printed.contains("PRIVATE KEY"), "{printed}");

        // A file of the wrong kind is refused at start-up, naming the variable and the file.
        let error = tls_error(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4317"),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", &key_path),
        ]);
        assert!(
            error.starts_with(&format!("OTEL_EXPORTER_OTLP_CERTIFICATE {key_path:?} holds no PEM certificate")),
            "{error}"
        );
    }

    #[test]
    fn a_ca_bundle_must_hold_usable_certificates() {
        let (ca, key) = self_signed();
        assert_eq!(check_ca_bundle(&ca), Ok(()));
        let (other, _) = self_signed();
        assert_eq!(check_ca_bundle(&[ca.as_slice(), other.as_slice()].concat()), Ok(()));
        assert!(check_ca_bundle(b"").is_err());
        assert!(check_ca_bundle(&key).is_err());
        let broken = b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n";
        assert!(check_ca_bundle(broken).is_err());
    }

    #[test]
    fn a_client_identity_is_a_certificate_with_its_own_key() {
        let (cert_pem, key_pem) = self_signed();
        let (_, other_key) = self_signed();
        let identity = |cert_pem: &[u8], key_pem: &[u8]| ClientIdentity {
            cert_pem: cert_pem.to_vec(),
            key_pem: key_pem.to_vec(),
        };
        assert_eq!(check_identity(&identity(&cert_pem, &key_pem)), Ok(()));
        assert_eq!(check_identity(&identity(&cert_pem, &other_key)), Err(IdentityProblem::Mismatch));
        assert!(matches!(
            check_identity(&identity(&key_pem, &key_pem)),
            Err(IdentityProblem::Certificate(_))
        ));
        assert!(matches!(
            check_identity(&identity(&cert_pem, &cert_pem)),
            Err(IdentityProblem::Key(_))
        ));
    }
}
