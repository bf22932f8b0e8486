use std::process::ExitCode;

use edge_gateway::config::Cli;
use suite_grpc::process::{exit_code, parse_cli};

fn main() -> ExitCode {
    let cli: Cli = match parse_cli() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    suite_telemetry::init_logging("edge-gateway", cli.logging.log_format, &cli.logging.log_filter);
    let outcome = cli
        .runtime()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(edge_gateway::app::run(cli.command)));
    exit_code("edge-gateway", outcome)
}
