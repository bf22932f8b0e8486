use std::process::ExitCode;

use edge_gateway::config::Cli;
use suite_grpc::process::{exit_code, parse_cli};

#[tokio::main]
async fn main() -> ExitCode {
    let cli: Cli = match parse_cli() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    suite_telemetry::init_logging("edge-gateway", cli.logging.log_format, &cli.logging.log_filter);
    exit_code("edge-gateway", edge_gateway::app::run(cli.command).await)
}
