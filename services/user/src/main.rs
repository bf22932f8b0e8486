use std::process::ExitCode;

use suite_grpc::process::{exit_code, parse_cli, start_telemetry};
use user_service::config::Cli;

#[tokio::main]
async fn main() -> ExitCode {
    let cli: Cli = match parse_cli() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    let telemetry = match start_telemetry("user-service", &cli.logging) {
        Ok(telemetry) => telemetry,
        Err(code) => return code,
    };
    let outcome = user_service::app::run(cli.command).await;
    telemetry.shutdown();
    exit_code("user-service", outcome)
}
