//! Trace settings from the OpenTelemetry SDK's standard environment variables
//! (<https://opentelemetry.io/docs/specs/otel/configuration/sdk-environment-variables/>
//! and the OTLP exporter's,
//! <https://opentelemetry.io/docs/specs/otel/protocol/exporter/>), read from a map so
//! tests never touch the process environment.
//!
//! Every variable is checked here, at start-up: the SDK and the exporter fall back to a
//! default on a value they cannot use, which would leave an operator's typo silently
//! ignored; here it stops the process with a message naming the variable (exit 64).
//! What is read is then handed to the SDK and `opentelemetry-otlp` explicitly.

use std::collections::HashMap;
use std::time::Duration;

pub use crate::collector_tls::{ClientIdentity, CollectorTls};

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

/// The OTLP transport (`OTEL_EXPORTER_OTLP_PROTOCOL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// OTLP/gRPC, a collector's port 4317.
    Grpc,
    /// OTLP/HTTP with protobuf bodies, port 4318, `/v1/traces`.
    HttpProtobuf,
}

/// A context propagator named in `OTEL_PROPAGATORS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagator {
    /// W3C `traceparent` / `tracestate`.
    TraceContext,
    /// W3C `baggage`.
    Baggage,
}

/// Where and how spans are sent.
#[derive(Debug, Clone, PartialEq)]
pub struct OtlpExport {
    pub protocol: OtlpProtocol,
    /// gRPC: the collector's base URL; HTTP: the full URL spans are POSTed to.
    pub endpoint: String,
    /// Sent with every export (`OTEL_EXPORTER_OTLP_HEADERS`): an API key, a tenant.
    pub headers: Vec<(String, String)>,
    pub gzip: bool,
    /// One export's bound, retries included (the smaller of `OTEL_EXPORTER_OTLP_TIMEOUT`
    /// and `OTEL_BSP_EXPORT_TIMEOUT`); connecting and the TLS handshake have the same bound.
    pub timeout: Duration,
    /// Certificates for an `https://` endpoint, read at start-up.
    pub tls: CollectorTls,
}

/// The batch span processor's settings (`OTEL_BSP_*`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchSettings {
    /// Finished spans waiting for export; past it new spans are dropped, never waited for.
    pub max_queue_size: usize,
    pub max_export_batch_size: usize,
    pub schedule_delay: Duration,
    pub export_timeout: Duration,
}

/// Span limits (`OTEL_SPAN_*_LIMIT`, `OTEL_ATTRIBUTE_*_LIMIT`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanLimitSettings {
    pub attribute_count: u32,
    /// Longest string attribute value, in characters; `None`: no limit.
    pub attribute_value_length: Option<usize>,
    pub event_count: u32,
    pub link_count: u32,
    pub event_attribute_count: u32,
    pub link_attribute_count: u32,
}

/// Everything tracing needs.
#[derive(Debug, Clone, PartialEq)]
pub struct TracingConfig {
    /// `service.name` when neither `OTEL_SERVICE_NAME` nor `OTEL_RESOURCE_ATTRIBUTES` names one.
    pub default_service_name: String,
    /// Whether the environment names the service itself (the SDK's resource detectors read it).
    pub service_name_from_env: bool,
    /// Whether `OTEL_RESOURCE_ATTRIBUTES` sets `service.version` / `service.instance.id`.
    pub version_from_env: bool,
    pub instance_id_from_env: bool,
    /// `None`: no exporter, no span is built for export.
    pub export: Option<OtlpExport>,
    /// Empty: no context is read or written (`OTEL_PROPAGATORS=none`).
    pub propagators: Vec<Propagator>,
    pub sampler: SamplerConfig,
    pub batch: BatchSettings,
    pub limits: SpanLimitSettings,
    /// How long shutdown waits for the last spans to leave (`TELEMETRY_SHUTDOWN_TIMEOUT_MS`).
    pub shutdown_timeout: Duration,
}

const DEFAULT_LIMIT: u32 = 128;

impl TracingConfig {
    /// Tracing off: what a binary gets with no collector configured. Context still
    /// propagates (W3C trace context and baggage), so the logs of one call join up.
    pub fn disabled(service_name: &str) -> Self {
        Self {
            default_service_name: service_name.to_owned(),
            service_name_from_env: false,
            version_from_env: false,
            instance_id_from_env: false,
            export: None,
            propagators: vec![Propagator::TraceContext, Propagator::Baggage],
            sampler: SamplerConfig::ParentBasedAlwaysOn,
            batch: BatchSettings {
                max_queue_size: 2048,
                max_export_batch_size: 512,
                schedule_delay: Duration::from_millis(5000),
                export_timeout: Duration::from_millis(30_000),
            },
            limits: SpanLimitSettings {
                attribute_count: DEFAULT_LIMIT,
                attribute_value_length: None,
                event_count: DEFAULT_LIMIT,
                link_count: DEFAULT_LIMIT,
                event_attribute_count: DEFAULT_LIMIT,
                link_attribute_count: DEFAULT_LIMIT,
            },
            shutdown_timeout: Duration::from_millis(3000),
        }
    }

    /// Spans exported to an OTLP/gRPC collector at `endpoint` with the other settings at
    /// their defaults: what a test process that is itself a service needs.
    pub fn exporting_to(service_name: &str, endpoint: &str) -> Self {
        let mut config = Self::disabled(service_name);
        config.export = Some(OtlpExport {
            protocol: OtlpProtocol::Grpc,
            endpoint: endpoint.to_owned(),
            headers: Vec::new(),
            gzip: false,
            timeout: Duration::from_millis(10_000),
            tls: CollectorTls::default(),
        });
        config
    }

    /// Reads the `OTEL_*` variables (plus `TELEMETRY_SHUTDOWN_TIMEOUT_MS`) from `env`.
    ///
    /// Export is on when an endpoint is named (`OTEL_EXPORTER_OTLP_ENDPOINT` or
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) or `OTEL_TRACES_EXPORTER=otlp` asks for the
    /// default one, and off with `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`.
    /// With none of them set the suite exports nothing rather than to a collector on
    /// localhost that is usually not there.
    pub fn from_env(env: &HashMap<String, String>, default_service_name: &str) -> Result<Self, String> {
        let vars = Vars(env);
        let mut config = Self::disabled(default_service_name);

        let resource = vars.key_values("OTEL_RESOURCE_ATTRIBUTES")?;
        let in_resource = |key: &str| resource.iter().any(|(name, _)| name == key);
        config.service_name_from_env = vars.get("OTEL_SERVICE_NAME").is_some() || in_resource("service.name");
        config.version_from_env = in_resource("service.version");
        config.instance_id_from_env = in_resource("service.instance.id");

        config.propagators = propagators(&vars)?;
        config.sampler = sampler(&vars)?;
        config.batch = BatchSettings {
            max_queue_size: vars.positive("OTEL_BSP_MAX_QUEUE_SIZE", config.batch.max_queue_size)?,
            max_export_batch_size: vars.positive("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", config.batch.max_export_batch_size)?,
            schedule_delay: vars.millis("OTEL_BSP_SCHEDULE_DELAY", config.batch.schedule_delay)?,
            export_timeout: vars.millis("OTEL_BSP_EXPORT_TIMEOUT", config.batch.export_timeout)?,
        };
        // A batch larger than the queue could never fill.
        config.batch.max_export_batch_size = config.batch.max_export_batch_size.min(config.batch.max_queue_size);
        config.limits = limits(&vars)?;
        config.shutdown_timeout = vars.millis("TELEMETRY_SHUTDOWN_TIMEOUT_MS", config.shutdown_timeout)?;

        let sdk_disabled = vars.boolean("OTEL_SDK_DISABLED")?.unwrap_or(false);
        let exporter = match vars.get("OTEL_TRACES_EXPORTER") {
            None => None,
            Some("otlp") => Some(true),
            Some("none") => Some(false),
            Some(other) => {
                return Err(format!(
                    "OTEL_TRACES_EXPORTER {other:?} is not supported; the suite exports with otlp, or none"
                ));
            }
        };
        let endpoint_named = vars.otlp("ENDPOINT").is_some();
        if !sdk_disabled && exporter.unwrap_or(endpoint_named) {
            config.export = Some(otlp_export(&vars, config.batch.export_timeout)?);
        }
        Ok(config)
    }

    /// [`Self::from_env`] over the process environment, for a binary's `main`.
    pub fn from_process_env(default_service_name: &str) -> Result<Self, String> {
        Self::from_env(&std::env::vars().collect(), default_service_name)
    }

    pub fn enabled(&self) -> bool {
        self.export.is_some()
    }
}

/// The OTLP exporter's settings: each `OTEL_EXPORTER_OTLP_TRACES_*` variable wins over
/// its `OTEL_EXPORTER_OTLP_*` form.
fn otlp_export(vars: &Vars<'_>, bsp_export_timeout: Duration) -> Result<OtlpExport, String> {
    let protocol = match vars.otlp("PROTOCOL") {
        None | Some((_, "grpc")) => OtlpProtocol::Grpc,
        Some((_, "http/protobuf")) => OtlpProtocol::HttpProtobuf,
        Some((name, other)) => {
            return Err(format!("{name} {other:?} is not supported; use grpc or http/protobuf"));
        }
    };
    let endpoint = endpoint(vars, protocol)?;
    let headers = match vars.otlp("HEADERS") {
        Some((name, _)) => vars.key_values(&name)?,
        None => Vec::new(),
    };
    for (key, value) in &headers {
        let valid = http::HeaderName::from_bytes(key.as_bytes()).is_ok() && http::HeaderValue::from_str(value).is_ok();
        if !valid {
            let name = vars.otlp("HEADERS").map(|(name, _)| name).unwrap_or_default();
            return Err(format!("{name} entry {key:?} is not a valid header name and value"));
        }
    }
    let gzip = match vars.otlp("COMPRESSION") {
        None | Some((_, "none")) => false,
        Some((_, "gzip")) => true,
        Some((name, other)) => return Err(format!("{name} {other:?} is not supported; use gzip or none")),
    };
    let timeout = match vars.otlp("TIMEOUT") {
        Some((name, _)) => vars.millis(&name, Duration::ZERO)?,
        None => Duration::from_millis(10_000),
    };
    if timeout.is_zero() {
        return Err("the OTLP export timeout must be at least one millisecond".to_owned());
    }
    let tls = CollectorTls::from_env(|general| vars.otlp_var(general), &endpoint)?;
    Ok(OtlpExport {
        protocol,
        endpoint,
        headers,
        gzip,
        // Both bound one batch's export; the thread-based batch processor leaves it to the exporter.
        timeout: timeout.min(bsp_export_timeout),
        tls,
    })
}

/// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` as it is; `OTEL_EXPORTER_OTLP_ENDPOINT` as the base
/// (HTTP appends `v1/traces`); else the protocol's default on localhost. A gRPC endpoint
/// without a scheme is `https://` unless `OTEL_EXPORTER_OTLP_INSECURE` is true.
fn endpoint(vars: &Vars<'_>, protocol: OtlpProtocol) -> Result<String, String> {
    let (name, url) = match (
        vars.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
        vars.get("OTEL_EXPORTER_OTLP_ENDPOINT"),
    ) {
        (Some(url), _) => ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", url.to_owned()),
        (None, Some(base)) => (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            match protocol {
                OtlpProtocol::Grpc => base.to_owned(),
                OtlpProtocol::HttpProtobuf => format!("{}/v1/traces", base.trim_end_matches('/')),
            },
        ),
        (None, None) => (
            "the default endpoint",
            match protocol {
                OtlpProtocol::Grpc => "http://localhost:4317".to_owned(),
                OtlpProtocol::HttpProtobuf => "http://localhost:4318/v1/traces".to_owned(),
            },
        ),
    };
    let has_scheme = url.starts_with("http://") || url.starts_with("https://");
    let url = match (has_scheme, protocol) {
        (true, _) => url,
        (false, OtlpProtocol::Grpc) if !url.contains("://") => {
            let insecure = match vars.otlp("INSECURE") {
                Some((name, _)) => vars.boolean(&name)?.unwrap_or(false),
                None => false,
            };
            format!("{}://{url}", if insecure { "http" } else { "https" })
        }
        _ => return Err(format!("{name} {url:?} must start with http:// or https://")),
    };
    match url.parse::<http::Uri>() {
        Ok(uri) if uri.host().is_some() => Ok(url),
        _ => Err(format!("{name} {url:?} is not a URL with a host")),
    }
}

fn propagators(vars: &Vars<'_>) -> Result<Vec<Propagator>, String> {
    let Some(text) = vars.get("OTEL_PROPAGATORS") else {
        return Ok(vec![Propagator::TraceContext, Propagator::Baggage]);
    };
    let mut chosen = Vec::new();
    for name in text.split(',').map(str::trim).filter(|name| !name.is_empty()) {
        let propagator = match name {
            "tracecontext" => Propagator::TraceContext,
            "baggage" => Propagator::Baggage,
            "none" => continue,
            other => {
                return Err(format!(
                    "OTEL_PROPAGATORS entry {other:?} is not supported; use tracecontext, baggage or none"
                ));
            }
        };
        if !chosen.contains(&propagator) {
            chosen.push(propagator);
        }
    }
    Ok(chosen)
}

fn sampler(vars: &Vars<'_>) -> Result<SamplerConfig, String> {
    let ratio = || -> Result<f64, String> {
        match vars.get("OTEL_TRACES_SAMPLER_ARG") {
            None => Ok(1.0),
            Some(text) => text
                .parse::<f64>()
                .ok()
                .filter(|ratio| (0.0..=1.0).contains(ratio))
                .ok_or_else(|| format!("OTEL_TRACES_SAMPLER_ARG {text:?} is not a ratio between 0 and 1")),
        }
    };
    Ok(match vars.get("OTEL_TRACES_SAMPLER") {
        None | Some("parentbased_always_on") => SamplerConfig::ParentBasedAlwaysOn,
        Some("always_on") => SamplerConfig::AlwaysOn,
        Some("always_off") => SamplerConfig::AlwaysOff,
        Some("traceidratio") => SamplerConfig::TraceIdRatio(ratio()?),
        Some("parentbased_always_off") => SamplerConfig::ParentBasedAlwaysOff,
        Some("parentbased_traceidratio") => SamplerConfig::ParentBasedTraceIdRatio(ratio()?),
        Some(other) => {
            return Err(format!(
                "OTEL_TRACES_SAMPLER {other:?} is not supported; use always_on, always_off, traceidratio, \
                 parentbased_always_on, parentbased_always_off or parentbased_traceidratio"
            ));
        }
    })
}

/// The span-specific limits win over the general attribute ones.
fn limits(vars: &Vars<'_>) -> Result<SpanLimitSettings, String> {
    let count = |name: &str, default: u32| -> Result<u32, String> {
        vars.get(name).map_or(Ok(default), |text| {
            text.parse::<u32>().map_err(|_| format!("{name} {text:?} is not a whole number"))
        })
    };
    let attribute_count = count("OTEL_ATTRIBUTE_COUNT_LIMIT", DEFAULT_LIMIT)?;
    let value_length = |name: &str, default: Option<usize>| -> Result<Option<usize>, String> {
        vars.get(name).map_or(Ok(default), |text| {
            text.parse::<usize>()
                .map(Some)
                .map_err(|_| format!("{name} {text:?} is not a whole number"))
        })
    };
    let attribute_value_length = value_length("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", None)?;
    Ok(SpanLimitSettings {
        attribute_count: count("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", attribute_count)?,
        attribute_value_length: value_length("OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", attribute_value_length)?,
        event_count: count("OTEL_SPAN_EVENT_COUNT_LIMIT", DEFAULT_LIMIT)?,
        link_count: count("OTEL_SPAN_LINK_COUNT_LIMIT", DEFAULT_LIMIT)?,
        event_attribute_count: count("OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT", attribute_count)?,
        link_attribute_count: count("OTEL_LINK_ATTRIBUTE_COUNT_LIMIT", attribute_count)?,
    })
}

/// The environment, as the specification reads it: an empty value is an unset one.
struct Vars<'env>(&'env HashMap<String, String>);

impl<'env> Vars<'env> {
    fn get(&self, name: &str) -> Option<&'env str> {
        self.0.get(name).map(|value| value.trim()).filter(|value| !value.is_empty())
    }

    /// `OTEL_EXPORTER_OTLP_TRACES_<setting>`, else `OTEL_EXPORTER_OTLP_<setting>`, with the name read.
    fn otlp(&self, setting: &str) -> Option<(String, &'env str)> {
        self.otlp_var(&format!("OTEL_EXPORTER_OTLP_{setting}"))
    }

    /// [`Self::otlp`] from the general variable's name.
    fn otlp_var(&self, general: &str) -> Option<(String, &'env str)> {
        let traces = general.replacen("OTEL_EXPORTER_OTLP_", "OTEL_EXPORTER_OTLP_TRACES_", 1);
        self.get(&traces)
            .map(|value| (traces, value))
            .or_else(|| self.get(general).map(|value| (general.to_owned(), value)))
    }

    fn boolean(&self, name: &str) -> Result<Option<bool>, String> {
        match self.get(name) {
            None => Ok(None),
            Some(text) if text.eq_ignore_ascii_case("true") => Ok(Some(true)),
            Some(text) if text.eq_ignore_ascii_case("false") => Ok(Some(false)),
            Some(text) => Err(format!("{name} {text:?} is neither true nor false")),
        }
    }

    fn millis(&self, name: &str, default: Duration) -> Result<Duration, String> {
        self.get(name).map_or(Ok(default), |text| {
            text.parse::<u64>()
                .map(Duration::from_millis)
                .map_err(|_| format!("{name} {text:?} is not a number of milliseconds"))
        })
    }

    fn positive(&self, name: &str, default: usize) -> Result<usize, String> {
        self.get(name).map_or(Ok(default), |text| {
            text.parse::<usize>()
                .ok()
                .filter(|count| *count > 0)
                .ok_or_else(|| format!("{name} {text:?} is not a positive number"))
        })
    }

    /// A `key=value,...` list with percent-encoded values (W3C baggage octets), as
    /// `OTEL_RESOURCE_ATTRIBUTES` and `OTEL_EXPORTER_OTLP_HEADERS` are written.
    fn key_values(&self, name: &str) -> Result<Vec<(String, String)>, String> {
        let Some(text) = self.get(name) else {
            return Ok(Vec::new());
        };
        let mut pairs = Vec::new();
        for pair in text.split(',').map(str::trim).filter(|pair| !pair.is_empty()) {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| format!("{name} entry {pair:?} is not key=value"))?;
            let key = key.trim();
            if key.is_empty() {
                return Err(format!("{name} entry {pair:?} has no key"));
            }
            let value = percent_encoding::percent_decode_str(value.trim())
                .decode_utf8()
                .map_err(|_| format!("{name} entry {key:?} is not UTF-8 once percent-decoded"))?;
            pairs.push((key.to_owned(), value.into_owned()));
        }
        Ok(pairs)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(key, value)| ((*key).to_owned(), (*value).to_owned())).collect()
    }

    fn config(pairs: &[(&str, &str)]) -> TracingConfig {
        TracingConfig::from_env(&env(pairs), "user-service").unwrap()
    }

    fn export(pairs: &[(&str, &str)]) -> OtlpExport {
        config(pairs).export.unwrap()
    }

    fn error(pairs: &[(&str, &str)]) -> String {
        TracingConfig::from_env(&env(pairs), "x").unwrap_err()
    }

    #[test]
    fn nothing_set_means_no_exporter_and_w3c_propagation() {
        let config = config(&[]);
        assert!(!config.enabled());
        assert_eq!(config.default_service_name, "user-service");
        assert!(!config.service_name_from_env);
        assert_eq!(config.sampler, SamplerConfig::ParentBasedAlwaysOn);
        assert_eq!(config.propagators, [Propagator::TraceContext, Propagator::Baggage]);
        assert_eq!(config.batch, TracingConfig::disabled("x").batch);
        assert_eq!(config.limits.attribute_count, 128);
        assert_eq!(config.limits.attribute_value_length, None);
    }

    #[test]
    fn reads_the_standard_variables() {
        let config = config(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
            ("OTEL_SERVICE_NAME", "users-eu"),
            ("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=prod,service.version=9"),
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "100"),
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "500"),
            ("OTEL_BSP_SCHEDULE_DELAY", "200"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "1500"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "x-api-key=secret,x-tenant=core%20platform"),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
            ("OTEL_PROPAGATORS", "baggage,tracecontext,baggage"),
        ]);
        let export = config.export.as_ref().unwrap();
        assert_eq!(export.protocol, OtlpProtocol::Grpc);
        assert_eq!(export.endpoint, "http://collector:4317");
        assert_eq!(
            export.headers,
            [("x-api-key".into(), "secret".into()), ("x-tenant".into(), "core platform".into())]
        );
        assert!(export.gzip);
        assert_eq!(export.timeout, Duration::from_millis(1500));
        assert!(config.service_name_from_env && config.version_from_env && !config.instance_id_from_env);
        assert_eq!(config.sampler, SamplerConfig::ParentBasedTraceIdRatio(0.25));
        assert_eq!(config.batch.max_queue_size, 100);
        assert_eq!(
            config.batch.max_export_batch_size, 100,
            "a batch larger than the queue could never fill"
        );
        assert_eq!(config.batch.schedule_delay, Duration::from_millis(200));
        assert_eq!(config.propagators, [Propagator::Baggage, Propagator::TraceContext]);
    }

    #[test]
    fn the_traces_variables_win_over_the_general_ones() {
        let export = export(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://a:4317"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://b:4317"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "x-api-key=general"),
            ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "x-api-key=traces"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "1000"),
            ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "2000"),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
            ("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "none"),
        ]);
        assert_eq!(export.endpoint, "http://b:4317");
        assert_eq!(export.headers, [("x-api-key".into(), "traces".into())]);
        assert_eq!(export.timeout, Duration::from_millis(2000));
        assert!(!export.gzip);
    }

    #[test]
    fn http_protobuf_posts_to_v1_traces_under_the_general_endpoint() {
        let http = ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf");
        assert_eq!(
            export(&[http, ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/")]).endpoint,
            "http://collector:4318/v1/traces"
        );
        assert_eq!(
            export(&[http, ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "https://ingest.example/otlp/spans")]).endpoint,
            "https://ingest.example/otlp/spans",
            "the traces endpoint is used as it is"
        );
        let export = export(&[
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf"),
            ("OTEL_TRACES_EXPORTER", "otlp"),
        ]);
        assert_eq!(export.protocol, OtlpProtocol::HttpProtobuf);
        assert_eq!(export.endpoint, "http://localhost:4318/v1/traces", "the specified default");
    }

    #[test]
    fn export_is_on_with_an_endpoint_or_otlp_named_and_off_when_disabled() {
        assert_eq!(export(&[("OTEL_TRACES_EXPORTER", "otlp")]).endpoint, "http://localhost:4317");
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://a:4317");
        for off in [
            ("OTEL_SDK_DISABLED", "true"),
            ("OTEL_SDK_DISABLED", "TRUE"),
            ("OTEL_TRACES_EXPORTER", "none"),
        ] {
            assert!(!config(&[endpoint, off]).enabled(), "{off:?}");
        }
        assert!(config(&[endpoint, ("OTEL_SDK_DISABLED", "false")]).enabled());
        // Propagation goes on without export, so the logs of one call still join up.
        assert_eq!(config(&[("OTEL_SDK_DISABLED", "true")]).propagators.len(), 2);
    }

    #[test]
    fn a_grpc_endpoint_without_a_scheme_is_tls_unless_insecure() {
        let bare = ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317");
        assert_eq!(export(&[bare]).endpoint, "https://collector:4317");
        assert_eq!(
            export(&[bare, ("OTEL_EXPORTER_OTLP_TRACES_INSECURE", "true")]).endpoint,
            "http://collector:4317"
        );
    }

    #[test]
    fn propagators_none_turns_propagation_off() {
        assert!(config(&[("OTEL_PROPAGATORS", "none")]).propagators.is_empty());
        assert_eq!(
            config(&[("OTEL_PROPAGATORS", "tracecontext")]).propagators,
            [Propagator::TraceContext]
        );
    }

    #[test]
    fn limits_take_the_span_variables_over_the_general_ones() {
        let limits = config(&[
            ("OTEL_ATTRIBUTE_COUNT_LIMIT", "10"),
            ("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "64"),
            ("OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", "32"),
            ("OTEL_SPAN_EVENT_COUNT_LIMIT", "5"),
            ("OTEL_LINK_ATTRIBUTE_COUNT_LIMIT", "3"),
        ])
        .limits;
        assert_eq!(limits.attribute_count, 10);
        assert_eq!(limits.attribute_value_length, Some(32));
        assert_eq!(limits.event_count, 5);
        assert_eq!(limits.link_count, 128);
        assert_eq!(limits.event_attribute_count, 10);
        assert_eq!(limits.link_attribute_count, 3);
    }

    #[test]
    fn refuses_what_it_cannot_honour_naming_the_variable() {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317");
        for (bad, named) in [
            (&[("OTEL_TRACES_SAMPLER", "sometimes")][..], "OTEL_TRACES_SAMPLER"),
            (&[("OTEL_TRACES_SAMPLER", "parentbased_jaeger_remote")], "OTEL_TRACES_SAMPLER"),
            (
                &[("OTEL_TRACES_SAMPLER", "traceidratio"), ("OTEL_TRACES_SAMPLER_ARG", "2")],
                "OTEL_TRACES_SAMPLER_ARG",
            ),
            (
                &[endpoint, ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")],
                "OTEL_EXPORTER_OTLP_PROTOCOL",
            ),
            (
                &[endpoint, ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "udp")],
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            ),
            (
                &[endpoint, ("OTEL_EXPORTER_OTLP_COMPRESSION", "zstd")],
                "OTEL_EXPORTER_OTLP_COMPRESSION",
            ),
            (&[endpoint, ("OTEL_EXPORTER_OTLP_HEADERS", "novalue")], "OTEL_EXPORTER_OTLP_HEADERS"),
            (
                &[endpoint, ("OTEL_EXPORTER_OTLP_HEADERS", "bad key=1")],
                "OTEL_EXPORTER_OTLP_HEADERS",
            ),
            (&[endpoint, ("OTEL_EXPORTER_OTLP_TIMEOUT", "soon")], "OTEL_EXPORTER_OTLP_TIMEOUT"),
            (&[endpoint, ("OTEL_EXPORTER_OTLP_TIMEOUT", "0")], "timeout"),
            (
                &[("OTEL_EXPORTER_OTLP_ENDPOINT", "ftp://collector:4317")],
                "OTEL_EXPORTER_OTLP_ENDPOINT",
            ),
            (
                &[
                    ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318"),
                ],
                "OTEL_EXPORTER_OTLP_ENDPOINT",
            ),
            (&[("OTEL_BSP_MAX_QUEUE_SIZE", "0")], "OTEL_BSP_MAX_QUEUE_SIZE"),
            (&[("OTEL_BSP_EXPORT_TIMEOUT", "-1")], "OTEL_BSP_EXPORT_TIMEOUT"),
            (&[("OTEL_RESOURCE_ATTRIBUTES", "novalue")], "OTEL_RESOURCE_ATTRIBUTES"),
            (&[("OTEL_RESOURCE_ATTRIBUTES", "team=%FF")], "OTEL_RESOURCE_ATTRIBUTES"),
            (&[("OTEL_TRACES_EXPORTER", "zipkin")], "OTEL_TRACES_EXPORTER"),
            (&[("OTEL_SDK_DISABLED", "yes")], "OTEL_SDK_DISABLED"),
            (&[("OTEL_PROPAGATORS", "b3")], "OTEL_PROPAGATORS"),
            (&[("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "-3")], "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT"),
            (
                &[("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "long")],
                "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT",
            ),
            (&[("TELEMETRY_SHUTDOWN_TIMEOUT_MS", "later")], "TELEMETRY_SHUTDOWN_TIMEOUT_MS"),
        ] {
            let message = error(bad);
            assert!(message.contains(named), "{bad:?}: {message}");
        }
    }

    #[test]
    fn settings_of_an_exporter_that_is_off_are_not_read() {
        // No endpoint: the protocol and the collector's files are never looked at.
        let off = env(&[
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "udp"),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/no/such/ca.pem"),
        ]);
        assert!(TracingConfig::from_env(&off, "x").is_ok());
    }
}
