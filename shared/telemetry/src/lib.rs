//! Logging shared by every binary of the suite.
//!
//! JSON lines by default (what log pipelines ingest), human-readable text for a
//! developer's terminal. Every line carries the service name so logs from all
//! binaries can be mixed in one stream.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use std::fmt;

use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, Writer};
use tracing_subscriber::registry::LookupSpan;

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

/// Installs the global subscriber for a binary.
///
/// `filter` uses the `RUST_LOG` syntax (for example `info,sqlx=warn`). Calling it
/// twice is harmless: the second call keeps the first subscriber, which is what
/// test binaries that start several servers need.
pub fn init_logging(service: &'static str, format: LogFormat, filter: &str) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let result = match format {
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .event_format(WithService {
                service,
                inner: tracing_subscriber::fmt::format()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false),
            })
            .try_init(),
        LogFormat::Human => tracing_subscriber::fmt().with_env_filter(filter).try_init(),
    };
    if result.is_ok() {
        tracing::debug!("logging initialised");
    }
}

/// Puts `"service":"<name>"` first in every JSON line. Spans cannot carry it:
/// tonic serves each connection on its own task, outside any span a binary
/// enters at start-up.
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
        match line.strip_prefix('{') {
            Some(rest) => write!(writer, "{{\"service\":\"{}\",{rest}", self.service),
            None => writer.write_str(&line),
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
