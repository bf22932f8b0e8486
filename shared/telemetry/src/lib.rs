//! Logs and traces shared by every binary of the suite.
//!
//! JSON lines by default (what log pipelines ingest), human-readable text for a
//! developer's terminal. Every line carries the service name so logs from all
//! binaries can be mixed in one stream, and, inside a call, the `trace_id` and
//! `span_id` of the span it was written in, with export on or off.
//!
//! Traces go through the OpenTelemetry SDK and are exported by `opentelemetry-otlp`
//! (OTLP/gRPC or OTLP/HTTP, [`TracingConfig`] from the standard `OTEL_*` variables).
//! Two ways into the one tracer provider: the spans every call makes (server,
//! client, cache) are made with the OpenTelemetry API ([`spans::CallSpan`]); every
//! other span is a `tracing` span, which tracing-opentelemetry exports when it is at
//! INFO or above and not aimed at [`LOG_FIELDS`]. Context crosses processes through
//! OpenTelemetry's global propagator ([`propagation`]).

mod accounting;
mod collector_tls;
pub mod context;
mod export;
pub mod propagation;
pub mod spans;
mod tracing_config;

use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, Writer};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;

pub use accounting::{SpanExportStats, span_export_stats};
pub use tracing_config::{
    BatchSettings, ClientIdentity, CollectorTls, OtlpExport, OtlpProtocol, Propagator, SamplerConfig, SpanLimitSettings, TracingConfig,
};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// One JSON object per line: timestamp, level, message, fields, span context.
    #[default]
    Json,
    /// Coloured, aligned text for reading in a terminal.
    Human,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value.to_ascii_lowercase().as_str() {
            "json" => Ok(Self::Json),
            "human" | "text" | "pretty" => Ok(Self::Human),
            other => Err(format!("unknown log format {other:?}; expected json or human")),
        }
    }
}

/// Logging flags every binary accepts.
#[derive(Debug, Clone, clap::Args)]
pub struct LoggingArgs {
    /// `json` (one object per line, the default) or `human`.
    #[arg(long, env = "LOG_FORMAT", default_value = "json", global = true)]
    pub log_format: LogFormat,

    /// Which lines to keep, in `RUST_LOG` syntax.
    #[arg(long, env = "RUST_LOG", default_value = "info", global = true)]
    pub log_filter: String,
}

/// The `tracing` target of spans that only add fields to the log lines written
/// inside them and are never exported: the request's log span (its call has an
/// OpenTelemetry server span already) and the handlers' spans, in
/// `#[tracing::instrument(target = "log_fields", ...)]`.
pub const LOG_FIELDS: &str = "log_fields";

/// Installs logging and, when a collector is configured, trace export, as the
/// global subscriber of a binary, and the propagators `OTEL_PROPAGATORS` names.
/// Keep the returned [`Telemetry`] until the end of `main` and call
/// [`Telemetry::shutdown`] there, so the last spans leave.
///
/// `filter` uses the `RUST_LOG` syntax (for example `info,sqlx=warn`) and
/// chooses log lines only: spans at INFO and above are exported whatever it says.
pub fn init(service: &'static str, logging: &LoggingArgs, tracing_config: &TracingConfig) -> Result<Telemetry, TelemetryError> {
    propagation::install(&tracing_config.propagators);
    let exporter = match &tracing_config.export {
        Some(export) => Some(export::TraceExport::start(tracing_config, export)?),
        None => None,
    };
    let otel_layer = exporter.as_ref().map(|export| {
        tracing_opentelemetry::layer()
            .with_tracer(export.tracer())
            // Per-span bookkeeping the suite does not read; off to keep spans cheap.
            .with_tracked_inactivity(false)
            .with_threads(false)
            .with_location(false)
            .with_filter(
                tracing_subscriber::filter::filter_fn(|metadata| {
                    if metadata.is_span() {
                        *metadata.level() <= tracing::Level::INFO && metadata.target() != LOG_FIELDS
                    } else {
                        // Warnings and errors inside an exported span become its events.
                        *metadata.level() <= tracing::Level::WARN
                    }
                })
                // Nothing below INFO ever passes: saying so keeps the process's maximum level at the
                // log filter's, so `debug!` and `trace!` call sites (h2's, hyper's) stop at the macro's
                // level check instead of reading their call site's cached interest.
                .with_max_level_hint(tracing_subscriber::filter::LevelFilter::INFO),
            )
    });
    let filter = EnvFilter::try_new(&logging.log_filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt_layer = match logging.log_format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .event_format(WithService {
                service,
                inner: tracing_subscriber::fmt::format()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false),
            })
            .with_filter(filter)
            .boxed(),
        LogFormat::Human => tracing_subscriber::fmt::layer().with_filter(filter).boxed(),
    };
    let installed = tracing_subscriber::registry().with(fmt_layer).with(otel_layer).try_init().is_ok();
    if installed {
        if let Some(export) = &exporter {
            export.install_globally();
            TRACING_ENABLED.store(true, Ordering::Relaxed);
        }
        tracing::debug!(tracing = exporter.is_some(), "telemetry initialised");
    }
    Ok(Telemetry {
        export: exporter.filter(|_| installed),
    })
}

/// The name of the `tracing` span a server opens per call (target [`LOG_FIELDS`])
/// so that log lines carry the call's fields (its request id).
pub const REQUEST_LOG_SPAN: &str = "request";

/// Whether spans are being exported by this process. Hot paths (the gateway's
/// proxy) skip building spans when they are not.
pub fn tracing_enabled() -> bool {
    TRACING_ENABLED.load(Ordering::Relaxed)
}

static TRACING_ENABLED: AtomicBool = AtomicBool::new(false);

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("cannot start trace export: {0}")]
    Export(String),
}

/// The running telemetry of a process.
#[derive(Debug)]
pub struct Telemetry {
    export: Option<export::TraceExport>,
}

impl Telemetry {
    /// Sends the spans still queued, waiting at most the configured shutdown
    /// timeout (`TELEMETRY_SHUTDOWN_TIMEOUT_MS`): a collector that is down must
    /// not hold up a pod's exit.
    pub fn shutdown(self) {
        TRACING_ENABLED.store(false, Ordering::Relaxed);
        if let Some(export) = self.export {
            export.shutdown();
        }
    }
}

/// Puts `"service":"<name>"` first in every JSON line, then the current trace
/// and span ids when the line is written while serving a request. Spans cannot
/// carry the service name: tonic serves each connection on its own task,
/// outside any span a binary enters at start-up.
struct WithService<F> {
    service: &'static str,
    inner: F,
}

impl<S, N, F> FormatEvent<S, N> for WithService<F>
where
    F: FormatEvent<S, N>,
    S: Subscriber + for<'lookup> LookupSpan<'lookup>,
    N: for<'writer> FormatFields<'writer> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let mut line = String::with_capacity(256);
        self.inner.format_event(ctx, Writer::new(&mut line), event)?;
        let Some(rest) = line.strip_prefix('{') else {
            return writer.write_str(&line);
        };
        // The span entered around this event activated its OpenTelemetry context
        // (with export off, the request's context made by `context::untraced_request`).
        match context::current_ids() {
            Some((trace_id, span_id)) => write!(
                writer,
                "{{\"service\":\"{}\",\"trace_id\":\"{trace_id}\",\"span_id\":\"{span_id}\",{rest}",
                self.service
            ),
            None => write!(writer, "{{\"service\":\"{}\",{rest}", self.service),
        }
    }
}

/// Lets a repeated warning through at most once per interval and counts what it
/// held back, so a dependency that fails on every request (Redis down) does not
/// flood the logs while still saying how often it happened.
#[derive(Debug)]
pub struct RateLimitedLog {
    interval: Duration,
    state: Mutex<RateState>,
}

#[derive(Debug)]
struct RateState {
    last_emitted: Option<Instant>,
    suppressed: u64,
}

impl RateLimitedLog {
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            state: Mutex::new(RateState {
                last_emitted: None,
                suppressed: 0,
            }),
        }
    }

    /// Returns `Some(suppressed_since_last)` when the caller should log now.
    pub fn should_log(&self) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = Instant::now();
        match state.last_emitted {
            Some(last) if now.duration_since(last) < self.interval => {
                state.suppressed += 1;
                None
            }
            _ => {
                state.last_emitted = Some(now);
                Some(std::mem::take(&mut state.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limited_log_lets_the_first_through_and_counts_the_rest() {
        let log = RateLimitedLog::new(Duration::from_secs(3600));
        assert_eq!(log.should_log(), Some(0));
        assert_eq!(log.should_log(), None);
        assert_eq!(log.should_log(), None);
    }

    #[test]
    fn rate_limited_log_reports_suppressed_count_after_the_interval() {
        let log = RateLimitedLog::new(Duration::ZERO);
        assert_eq!(log.should_log(), Some(0));
        assert_eq!(log.should_log(), Some(0));
    }

    #[test]
    fn log_format_parses_known_names_only() {
        assert_eq!("JSON".parse::<LogFormat>(), Ok(LogFormat::Json));
        assert_eq!("human".parse::<LogFormat>(), Ok(LogFormat::Human));
        assert!("xml".parse::<LogFormat>().is_err());
    }
}
