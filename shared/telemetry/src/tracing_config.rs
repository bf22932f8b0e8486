//! Trace export settings from the standard `OTEL_*` environment variables
//! (<https://opentelemetry.io/docs/specs/otel/configuration/sdk-environment-variables/>),
//! read from a map so tests never touch the process environment.

use std::collections::HashMap;
use std::time::Duration;

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

/// Everything the exporter and batch processor need. `endpoint: None` means no
/// exporter at all: no spans are built, nothing is sent.
#[derive(Debug, Clone, PartialEq)]
pub struct TracingConfig {
    /// OTLP/gRPC collector address, for example `http://otel-collector:4317`.
    pub endpoint: Option<String>,
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
}
