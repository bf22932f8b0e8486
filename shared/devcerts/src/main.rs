use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use suite_devcerts::dev_set::{self, DevSetOptions};

/// Creates (or refreshes) a development CA and SPIFFE certificates for every
/// service of the suite and for an operator running grpcurl, and a key that
/// signs development tokens for the edge gateway. Never for production.
#[derive(Debug, Parser)]
#[command(name = "dev-certs", version)]
struct Cli {
    /// Directory the PEM files go to.
    #[arg(long, env = "DEV_CERTS_DIR", default_value = ".dev/certs")]
    dir: PathBuf,
    /// Trust domain of every identity.
    #[arg(long, default_value = "suite.local")]
    trust_domain: String,
    /// Namespace part of every identity.
    #[arg(long, default_value = "dev")]
    namespace: String,
    /// Re-issue every leaf certificate now (running services pick them up without a restart).
    #[arg(long)]
    renew: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let options = DevSetOptions {
        dir: cli.dir,
        trust_domain: cli.trust_domain,
        namespace: cli.namespace,
        renew: cli.renew,
    };
    match dev_set::ensure(&options) {
        Ok(report) => {
            let dir = options.dir.display();
            if report.created_ca {
                eprintln!("dev-certs: created a new CA in {dir}/ca.pem");
            }
            for (name, serial) in &report.issued {
                eprintln!("dev-certs: issued {dir}/{name}.pem (serial {serial})");
            }
            if report.created_token_key {
                eprintln!("dev-certs: created the token-signing key {dir}/token-signing-key.pem and {dir}/jwks.json");
            }
            if !report.kept.is_empty() {
                eprintln!("dev-certs: still valid, kept: {}", report.kept.join(", "));
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("dev-certs: {error:#}");
            ExitCode::FAILURE
        }
    }
}
