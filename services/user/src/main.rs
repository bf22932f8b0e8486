use std::process::ExitCode;

use suite_grpc::process::{exit_code, parse_cli};
use user_service::config::Cli;

#[tokio::main]
async fn main() -> ExitCode {
    let cli: Cli = match parse_cli() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    suite_telemetry::init_logging("user-service", cli.logging.log_format, &cli.logging.log_filter);
    exit_code("user-service", user_service::app::run(cli.command).await)
}
