use std::process::ExitCode;

use edge_gateway::config::Cli;
use suite_grpc::process::{exit_code, parse_cli, start_telemetry};

fn main() -> ExitCode {
    let cli: Cli = match parse_cli() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    let telemetry = match start_telemetry("edge-gateway", &cli.logging) {
        Ok(telemetry) => telemetry,
        Err(code) => return code,
    };
    let outcome = cli
        .runtime()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(edge_gateway::app::run(cli.command)));
    telemetry.shutdown();
    exit_code("edge-gateway", outcome)
}
