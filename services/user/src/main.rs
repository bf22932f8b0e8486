use std::process::ExitCode;

use clap::Parser;
use suite_grpc::SecurityError;
use user_service::config::Cli;

/// Exit status for a bad command line or configuration (EX_USAGE).
const EXIT_USAGE: u8 = 64;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return if error.use_stderr() {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    suite_telemetry::init_logging("user-service", cli.logging.log_format, &cli.logging.log_filter);
    match user_service::app::run(cli.command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "user-service failed");
            if matches!(error.downcast_ref(), Some(SecurityError::Config(_))) {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
