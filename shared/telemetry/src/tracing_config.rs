//! Trace export settings from the standard `OTEL_*` environment variables
//! (<https://opentelemetry.io/docs/specs/otel/configuration/sdk-environment-variables/>),
//! read from a map so tests never touch the process environment.

use std::collections::HashMap;
use std::time::Duration;

use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// How spans are sampled (`OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SamplerConfig {
    AlwaysOn,
    AlwaysOff,
    TraceIdRatio(f64),
    ParentBasedAlwaysOn,
    ParentBasedAlwaysOff,
    ParentBasedTraceIdRatio(f64),
}

/// Everything span export needs. `endpoint: None` means no
/// exporter at all: no spans are built, nothing is sent.
#[derive(Debug, Clone, PartialEq)]
pub struct TracingConfig {
    /// OTLP/gRPC collector address, for example `http://otel-collector:4317`.
    pub endpoint: Option<String>,
    /// Certificates for an `https://` endpoint, read at start-up.
    pub collector_tls: CollectorTls,
    pub service_name: String,
    /// `OTEL_RESOURCE_ATTRIBUTES` as key/value pairs, `service.name` excluded.
    pub resource_attributes: Vec<(String, String)>,
    pub sampler: SamplerConfig,
    /// Time one export may take before it is abandoned.
    pub export_timeout: Duration,
    /// Finished spans waiting for export; past it new spans are dropped, never waited for.
    pub max_queue_size: usize,
    pub max_export_batch_size: usize,
    pub schedule_delay: Duration,
    /// How long shutdown waits for the last spans to leave.
    pub shutdown_timeout: Duration,
}

impl TracingConfig {
    /// Tracing off: what a binary gets with no collector configured.
    pub fn disabled(service_name: &str) -> Self {
        Self {
            endpoint: None,
            collector_tls: CollectorTls::default(),
            service_name: service_name.to_owned(),
            resource_attributes: Vec::new(),
            sampler: SamplerConfig::ParentBasedAlwaysOn,
            export_timeout: Duration::from_secs(10),
            max_queue_size: 2048,
            max_export_batch_size: 512,
            schedule_delay: Duration::from_millis(5000),
            shutdown_timeout: Duration::from_millis(3000),
        }
    }

    /// Reads the `OTEL_*` variables (plus `TELEMETRY_SHUTDOWN_TIMEOUT_MS`) from `env`.
    /// `default_service_name` names the service when neither `OTEL_SERVICE_NAME`
    /// nor a `service.name` resource attribute does.
    pub fn from_env(env: &HashMap<String, String>, default_service_name: &str) -> Result<Self, String> {
        let get = |name: &str| env.get(name).map(|value| value.trim()).filter(|value| !value.is_empty());
        let mut config = Self::disabled(default_service_name);

        let mut attributes = Vec::new();
        if let Some(text) = get("OTEL_RESOURCE_ATTRIBUTES") {
            for pair in text.split(',').filter(|pair| !pair.trim().is_empty()) {
                let (key, value) = pair
                    .split_once('=')
                    .ok_or_else(|| format!("OTEL_RESOURCE_ATTRIBUTES entry {pair:?} is not key=value"))?;
                let key = key.trim();
                if key.is_empty() {
                    return Err(format!("OTEL_RESOURCE_ATTRIBUTES entry {pair:?} has no key"));
                }
                attributes.push((key.to_owned(), percent_decode(value.trim())));
            }
        }
        if let Some((_, name)) = attributes.iter().find(|(key, _)| key == "service.name") {
            config.service_name = name.clone();
        }
        attributes.retain(|(key, _)| key != "service.name");
        config.resource_attributes = attributes;
        if let Some(name) = get("OTEL_SERVICE_NAME") {
            config.service_name = name.to_owned();
        }

        let ratio = || -> Result<f64, String> {
            match get("OTEL_TRACES_SAMPLER_ARG") {
                None => Ok(1.0),
                Some(text) => text
                    .parse::<f64>()
                    .ok()
                    .filter(|ratio| (0.0..=1.0).contains(ratio))
                    .ok_or_else(|| format!("OTEL_TRACES_SAMPLER_ARG {text:?} is not a ratio between 0 and 1")),
            }
        };
        if let Some(sampler) = get("OTEL_TRACES_SAMPLER") {
            config.sampler = match sampler {
                "always_on" => SamplerConfig::AlwaysOn,
                "always_off" => SamplerConfig::AlwaysOff,
                "traceidratio" => SamplerConfig::TraceIdRatio(ratio()?),
                "parentbased_always_on" => SamplerConfig::ParentBasedAlwaysOn,
                "parentbased_always_off" => SamplerConfig::ParentBasedAlwaysOff,
                "parentbased_traceidratio" => SamplerConfig::ParentBasedTraceIdRatio(ratio()?),
                other => {
                    return Err(format!(
                        "OTEL_TRACES_SAMPLER {other:?} is not one of always_on, always_off, traceidratio, \
                         parentbased_always_on, parentbased_always_off, parentbased_traceidratio"
                    ));
                }
            };
        }

        let millis = |name: &str, default: Duration| -> Result<Duration, String> {
            get(name).map_or(Ok(default), |text| {
                text.parse::<u64>()
                    .map(Duration::from_millis)
                    .map_err(|_| format!("{name} {text:?} is not a number of milliseconds"))
            })
        };
        let count = |name: &str, default: usize| -> Result<usize, String> {
            get(name).map_or(Ok(default), |text| {
                text.parse::<usize>()
                    .ok()
                    .filter(|count| *count > 0)
                    .ok_or_else(|| format!("{name} {text:?} is not a positive number"))
            })
        };
        let otlp_timeout = millis("OTEL_EXPORTER_OTLP_TIMEOUT", config.export_timeout)?;
        config.export_timeout = millis("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", otlp_timeout)?;
        config.max_queue_size = count("OTEL_BSP_MAX_QUEUE_SIZE", config.max_queue_size)?;
        config.max_export_batch_size = count("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", config.max_export_batch_size)?.min(config.max_queue_size);
        config.schedule_delay = millis("OTEL_BSP_SCHEDULE_DELAY", config.schedule_delay)?;
        config.shutdown_timeout = millis("TELEMETRY_SHUTDOWN_TIMEOUT_MS", config.shutdown_timeout)?;

        let disabled = get("OTEL_SDK_DISABLED").is_some_and(|value| value.eq_ignore_ascii_case("true"))
            || get("OTEL_TRACES_EXPORTER").is_some_and(|value| value == "none");
        if let Some(exporter) = get("OTEL_TRACES_EXPORTER").filter(|value| *value != "none" && *value != "otlp") {
            return Err(format!("OTEL_TRACES_EXPORTER {exporter:?} is not supported; use otlp or none"));
        }
        if let Some(protocol) = get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL").or_else(|| get("OTEL_EXPORTER_OTLP_PROTOCOL"))
            && protocol != "grpc"
        {
            return Err(format!("OTLP protocol {protocol:?} is not supported; the suite exports over grpc"));
        }
        let endpoint = get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or_else(|| get("OTEL_EXPORTER_OTLP_ENDPOINT"));
        if let Some(endpoint) = endpoint
            && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        {
            return Err(format!("OTLP endpoint {endpoint:?} must start with http:// or https://"));
        }
        config.endpoint = endpoint.filter(|_| !disabled).map(str::to_owned);
        // Only a collector that will be used has its files read (and must have them right).
        if let Some(endpoint) = &config.endpoint {
            config.collector_tls = CollectorTls::from_env(get, endpoint)?;
        }
        Ok(config)
    }

    /// [`Self::from_env`] over the process environment, for a binary's `main`.
    pub fn from_process_env(default_service_name: &str) -> Result<Self, String> {
        Self::from_env(&std::env::vars().collect(), default_service_name)
    }

    pub fn enabled(&self) -> bool {
        self.endpoint.is_some()
    }
}

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
    /// Each `OTEL_EXPORTER_OTLP_TRACES_*` variable wins over its general form.
    fn from_env<'env>(get: impl Fn(&str) -> Option<&'env str>, endpoint: &str) -> Result<Self, String> {
        let setting = |general: &str| {
            let traces = general.replace("OTEL_EXPORTER_OTLP_", "OTEL_EXPORTER_OTLP_TRACES_");
            get(&traces)
                .map(|path| (traces, path))
                .or_else(|| get(general).map(|path| (general.to_owned(), path)))
        };
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

/// `OTEL_RESOURCE_ATTRIBUTES` values are percent-encoded (W3C baggage octets).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%'
            && let Some(byte) = text.get(index + 1..index + 3).and_then(|hex| u8::from_str_radix(hex, 16).ok())
        {
            decoded.push(byte);
            index += 3;
            continue;
        }
        decoded.push(bytes[index]);
        index += 1;
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(key, value)| ((*key).to_owned(), (*value).to_owned())).collect()
    }

    #[test]
    fn no_endpoint_means_no_exporter() {
        let config = TracingConfig::from_env(&env(&[]), "user-service").unwrap();
        assert!(!config.enabled());
        assert_eq!(config.service_name, "user-service");
        assert_eq!(config.sampler, SamplerConfig::ParentBasedAlwaysOn);
    }

    #[test]
    fn reads_the_standard_variables() {
        let config = TracingConfig::from_env(
            &env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
                ("OTEL_SERVICE_NAME", "users-eu"),
                (
                    "OTEL_RESOURCE_ATTRIBUTES",
                    "deployment.environment=prod,team=core%20platform,service.name=ignored",
                ),
                ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
                ("OTEL_BSP_MAX_QUEUE_SIZE", "100"),
                ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "500"),
                ("OTEL_BSP_SCHEDULE_DELAY", "200"),
                ("OTEL_EXPORTER_OTLP_TIMEOUT", "1500"),
            ]),
            "user-service",
        )
        .unwrap();
        assert_eq!(config.endpoint.as_deref(), Some("http://collector:4317"));
        assert_eq!(config.service_name, "users-eu");
        assert_eq!(
            config.resource_attributes,
            vec![
                ("deployment.environment".to_owned(), "prod".to_owned()),
                ("team".to_owned(), "core platform".to_owned())
            ]
        );
        assert_eq!(config.sampler, SamplerConfig::ParentBasedTraceIdRatio(0.25));
        assert_eq!(config.max_queue_size, 100);
        // A batch larger than the queue could never fill.
        assert_eq!(config.max_export_batch_size, 100);
        assert_eq!(config.schedule_delay, Duration::from_millis(200));
        assert_eq!(config.export_timeout, Duration::from_millis(1500));
    }

    #[test]
    fn traces_endpoint_wins_and_sdk_disabled_turns_it_off() {
        let both = env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://a:4317"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://b:4317"),
        ]);
        assert_eq!(
            TracingConfig::from_env(&both, "x").unwrap().endpoint.as_deref(),
            Some("http://b:4317")
        );
        let mut disabled = both.clone();
        disabled.insert("OTEL_SDK_DISABLED".into(), "true".into());
        assert!(!TracingConfig::from_env(&disabled, "x").unwrap().enabled());
        let mut none = both;
        none.insert("OTEL_TRACES_EXPORTER".into(), "none".into());
        assert!(!TracingConfig::from_env(&none, "x").unwrap().enabled());
    }

    #[test]
    fn refuses_what_it_cannot_honour() {
        for bad in [
            ("OTEL_TRACES_SAMPLER", "sometimes"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "0"),
            ("OTEL_RESOURCE_ATTRIBUTES", "novalue"),
            ("OTEL_TRACES_EXPORTER", "zipkin"),
        ] {
            assert!(TracingConfig::from_env(&env(&[bad]), "x").is_err(), "{bad:?}");
        }
        let bad_ratio = env(&[("OTEL_TRACES_SAMPLER", "traceidratio"), ("OTEL_TRACES_SAMPLER_ARG", "2")]);
        assert!(TracingConfig::from_env(&bad_ratio, "x").is_err());
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
        assert_eq!(config.collector_tls, CollectorTls::default());
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
        assert_eq!(config.collector_tls.ca_pem, Some(ca));
        assert_eq!(
            config.collector_tls.client_identity,
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
