use std::process::ExitCode;

use order_service::config::Cli;
use suite_grpc::process::{exit_code, parse_cli};

#[tokio::main]
async fn main() -> ExitCode {
    let cli: Cli = match parse_cli() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    suite_telemetry::init_logging("order-service", cli.logging.log_format, &cli.logging.log_filter);
    exit_code("order-service", order_service::app::run(cli.command).await)
}
