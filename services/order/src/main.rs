use std::process::ExitCode;

use order_service::config::Cli;
use suite_grpc::process::{exit_code, parse_cli, start_telemetry};

#[tokio::main]
async fn main() -> ExitCode {
    let cli: Cli = match parse_cli() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    let telemetry = match start_telemetry("order-service", &cli.logging) {
        Ok(telemetry) => telemetry,
        Err(code) => return code,
    };
    let outcome = order_service::app::run(cli.command).await;
    telemetry.shutdown();
    exit_code("order-service", outcome)
}
