use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use suite_contracts::{BASELINE_FILE, BaselineVerdict, compare_with_baseline, current_api};

/// The wire baseline of the suite's protobuf API (`proto/wire-baseline.txt`), from the
/// protos this binary was built with.
#[derive(Debug, Parser)]
#[command(name = "contracts", version)]
struct Cli {
    /// The baseline file (the workspace's by default).
    #[arg(long, global = true)]
    baseline: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Compare the API with the baseline: exit 1 on a wire break or a baseline that is out of date.
    Check,
    /// Rewrite the baseline from the current API, naming every break it accepts.
    UpdateBaseline,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let path = cli
        .baseline
        .unwrap_or_else(|| suite_contracts::workspace_root().join(BASELINE_FILE));
    let current = match current_api() {
        Ok(api) => api.suite_api(),
        Err(error) => {
            eprintln!("contracts: the built-in descriptor set does not decode: {error}");
            return ExitCode::FAILURE;
        }
    };
    // A missing baseline is the first run: everything is an addition.
    let baseline_text = match std::fs::read_to_string(&path) {
        Ok(text) => Some(text),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
        Err(error) => {
            eprintln!("contracts: cannot read {}: {error}", path.display());
            return ExitCode::FAILURE;
        }
    };
    let verdict = baseline_text.as_deref().map(|text| compare_with_baseline(text, &current));
    match cli.command {
        Command::Check => match verdict {
            Some(Ok(BaselineVerdict::UpToDate)) => {
                eprintln!("contracts: the API matches {}", path.display());
                ExitCode::SUCCESS
            }
            Some(Ok(verdict)) => {
                eprintln!("{verdict}");
                ExitCode::FAILURE
            }
            Some(Err(error)) => {
                eprintln!("contracts: {} does not parse: {error}", path.display());
                ExitCode::FAILURE
            }
            None => {
                eprintln!(
                    "contracts: {} does not exist; create it with `just contracts-update`",
                    path.display()
                );
                ExitCode::FAILURE
            }
        },
        Command::UpdateBaseline => {
            match verdict {
                Some(Ok(BaselineVerdict::UpToDate)) => {
                    eprintln!("contracts: {} already matches the API", path.display());
                    return ExitCode::SUCCESS;
                }
                Some(Ok(BaselineVerdict::Breaking { breaks, .. })) => {
                    eprintln!("contracts: the new baseline accepts these wire-breaking changes:");
                    for wire_break in breaks {
                        eprintln!("  - {wire_break}");
                    }
                }
                Some(Ok(BaselineVerdict::OutOfDate { .. })) => eprintln!("contracts: recording compatible changes"),
                Some(Err(error)) => eprintln!("contracts: replacing a baseline that does not parse ({error})"),
                None => eprintln!("contracts: creating {}", path.display()),
            }
            if let Err(error) = std::fs::write(&path, current.render()) {
                eprintln!("contracts: cannot write {}: {error}", path.display());
                return ExitCode::FAILURE;
            }
            eprintln!(
                "contracts: wrote {}; review the diff and commit it with the API change",
                path.display()
            );
            ExitCode::SUCCESS
        }
    }
}
