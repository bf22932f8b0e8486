//! What every service binary's `main` does around its `app::run`: parse the
//! command line, and turn the outcome into the process's exit status.

use std::process::ExitCode;

use crate::SecurityError;

/// Exit status for a bad command line or configuration (EX_USAGE).
pub const EXIT_USAGE: u8 = 64;

/// The parsed command line, or the exit status after clap printed help,
/// the version, or what is wrong with the arguments.
pub fn parse_cli<C: clap::Parser>() -> Result<C, ExitCode> {
    C::try_parse().map_err(|error| {
        let _ = error.print();
        if error.use_stderr() {
            ExitCode::from(EXIT_USAGE)
        } else {
            ExitCode::SUCCESS
        }
    })
}

/// Installs logs and trace export for `service` from its logging flags and the
/// `OTEL_*` environment; a bad setting prints why and gives exit status 64.
pub fn start_telemetry(service: &'static str, logging: &suite_telemetry::LoggingArgs) -> Result<suite_telemetry::Telemetry, ExitCode> {
    let config = suite_telemetry::TracingConfig::from_process_env(service).map_err(|error| {
        eprintln!("{service}: {error}");
        ExitCode::from(EXIT_USAGE)
    })?;
    suite_telemetry::init(service, logging, &config).map_err(|error| {
        eprintln!("{service}: {error}");
        ExitCode::FAILURE
    })
}

/// Configuration that parsed but cannot work (a routes file naming one
/// service twice, say); the process exits 64 as for a bad flag.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Logs a failure and picks the exit status: 64 for unusable configuration, 1 otherwise.
pub fn exit_code(service: &str, outcome: anyhow::Result<()>) -> ExitCode {
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "{service} failed");
            if matches!(error.downcast_ref(), Some(SecurityError::Config(_))) || error.downcast_ref::<UsageError>().is_some() {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
