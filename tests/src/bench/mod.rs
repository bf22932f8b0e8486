//! What the load generators in `src/bin/` share: driving a fixed number of
//! requests in flight and measuring a window (`load`), CPU time from `/proc`
//! (`cpu`), the servers under test as child processes (`process`), the
//! development PKI and connections to the servers (`pki`), counters read from
//! an admin port (`metrics`), command counts and CPU time read from Redis
//! (`redis`) and number formatting for the Markdown reports (`format`).

pub mod cpu;
pub mod format;
pub mod load;
pub mod metrics;
pub mod pki;
pub mod process;
pub mod redis;

use std::process::ExitCode;
use std::time::Duration;

/// Timeout of every request that is not part of a measured phase, and of scrapes.
pub const RPC_TIMEOUT: Duration = Duration::from_secs(5);

/// A request carrying [`RPC_TIMEOUT`] as its deadline.
pub fn with_timeout<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(RPC_TIMEOUT);
    request
}

/// The shape of the load every generator applies and how its targets count, as command-line options.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadShape {
    /// Requests in flight at every moment of a phase.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    pub concurrency: u32,

    /// HTTP/2 connections the in-flight requests are spread over.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    pub connections: u32,

    /// Length of each phase's measured window, in seconds.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub seconds: u64,

    /// Warm-up before each measured window, in seconds (not measured).
    #[arg(long, default_value_t = 2)]
    pub warmup_seconds: u64,

    /// Worker threads of the load generator's runtime (default: tokio's, one per CPU).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub client_threads: Option<u16>,

    /// Exit with status 2 when a target is missed (by default targets are only reported).
    #[arg(long)]
    pub enforce: bool,
}

impl LoadShape {
    pub fn warmup(&self) -> Duration {
        Duration::from_secs(self.warmup_seconds)
    }

    pub fn window(&self) -> Duration {
        Duration::from_secs(self.seconds)
    }

    /// Checks the options against each other and builds the load generator's runtime.
    pub fn runtime(&self) -> anyhow::Result<tokio::runtime::Runtime> {
        anyhow::ensure!(
            self.connections <= self.concurrency,
            "--connections ({}) cannot exceed --concurrency ({})",
            self.connections,
            self.concurrency
        );
        let mut runtime = tokio::runtime::Builder::new_multi_thread();
        if let Some(threads) = self.client_threads {
            runtime.worker_threads(threads.into());
        }
        anyhow::Context::context(runtime.enable_all().build(), "cannot start the load generator's runtime")
    }
}

/// Exit status when `--enforce` is set and a target was missed.
pub const EXIT_TARGET_MISSED: u8 = 2;

/// Prints the report and turns the run's outcome into the exit status: an
/// error when `failures` make the figures invalid, [`EXIT_TARGET_MISSED`]
/// when `--enforce` is set and a target was missed.
// Printing the report on stdout is what every load generator is for.
#[allow(clippy::print_stdout)]
pub fn conclude(report: &str, failures: &[String], targets_met: bool, load: &LoadShape) -> anyhow::Result<ExitCode> {
    print!("{report}");
    if !failures.is_empty() {
        anyhow::bail!("{}; the figures above are not valid", failures.join("; "));
    }
    if load.enforce && !targets_met {
        eprintln!("a target was missed (--enforce)");
        return Ok(ExitCode::from(EXIT_TARGET_MISSED));
    }
    Ok(ExitCode::SUCCESS)
}

/// A fresh temporary directory for a run's certificates and servers' data,
/// removed when dropped (after the servers have stopped).
pub fn run_dir(prefix: &str) -> anyhow::Result<tempfile::TempDir> {
    anyhow::Context::context(
        tempfile::Builder::new().prefix(prefix).tempdir(),
        "cannot create the run's temporary directory",
    )
}
