//! `suite-bench`: GetUser on a cache hit against the real release binary,
//! beside a trivial endpoint (gRPC health `Check`) served by the same process,
//! port and tonic stack, as the ceiling for this machine in this run.
//!
//! The machine is shared and the load generator runs on the same box, so the
//! absolute figures move from run to run; the ratio to the trivial endpoint,
//! measured a few seconds apart in the same run, is the steadier figure.
//!
//! What a run does:
//! 1. starts `user-service serve` on embedded defaults (SQLite in a fresh
//!    temporary directory, in-process cache unless `--redis-url`), on free
//!    loopback ports, with a cleared environment so nothing from the caller's
//!    shell (`DATABASE_URL`, tuning variables) leaks in. Only this binary's own
//!    `--redis-url` reaches the server, and it falls back to `REDIS_URL`;
//! 2. waits for gRPC health to answer SERVING, idles, and reads the idle RSS;
//! 3. creates one user and reads it once so the cache holds it;
//! 4. for each endpoint: a warm-up, then a measured window, with exactly
//!    `--concurrency` requests in flight over `--connections` HTTP/2
//!    connections (one task per in-flight slot, each looping on its own client);
//! 5. checks on `/metrics` that every GetUser of the run was a cache hit, reads
//!    the RSS after load, stops the server with SIGTERM and prints a Markdown
//!    report.
//!
//! Exit status: 0 when every request succeeded (targets are reported, not
//! asserted, unless `--enforce`), 1 when a request failed or the run broke,
//! 2 when `--enforce` is set and a target was missed.

// Printing a report on stdout is this binary's whole purpose.
#![allow(clippy::print_stdout)]

use std::fmt::Write as _;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail, ensure};
use clap::Parser;
use hdrhistogram::Histogram;
use suite_proto::suite::user::v1 as pb;
use suite_proto::suite::user::v1::user_service_client::UserServiceClient;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

/// Targets from the issue; they apply to the embedded default (in-process cache).
const TARGET_MIN_RPS: f64 = 20_000.0;
const TARGET_MAX_P99_MS: f64 = 5.0;
const TARGET_MIN_RATIO_PERCENT: f64 = 40.0;
const TARGET_MAX_IDLE_RSS_MB: f64 = 15.0;

const TRIVIAL_ENDPOINT: &str = "grpc.health.v1.Health/Check";
const GET_USER_ENDPOINT: &str = "suite.user.v1.UserService/GetUser";

const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
const RPC_TIMEOUT: Duration = Duration::from_secs(5);
/// Exit status when `--enforce` is set and a target was missed.
const EXIT_TARGET_MISSED: u8 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "suite-bench",
    about = "GetUser cache-hit benchmark against the real user-service binary, beside a trivial endpoint as the ceiling."
)]
struct Args {
    /// The `user-service` binary to start; defaults to the one beside this executable.
    #[arg(long)]
    server_bin: Option<PathBuf>,

    /// Requests in flight at every moment of a phase.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    concurrency: u32,

    /// HTTP/2 connections the in-flight requests are spread over.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    connections: u32,

    /// Length of each measured window, in seconds.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    seconds: u64,

    /// Warm-up before each measured window, in seconds (not measured).
    #[arg(long, default_value_t = 2)]
    warmup_seconds: u64,

    /// Pause between the server answering SERVING and reading its idle RSS, in milliseconds.
    #[arg(long, default_value_t = 2_000)]
    idle_ms: u64,

    /// Run the server with this Redis cache (passed on as its `--redis-url`)
    /// instead of the in-process one. The targets are set for the in-process cache.
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    redis_url: Option<String>,

    /// The server's `--log-filter`.
    #[arg(long, default_value = "warn")]
    server_log_filter: String,

    /// Worker threads of the load generator's runtime (default: tokio's, one per CPU).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    client_threads: Option<u16>,

    /// Worker threads of the server's runtime, passed as TOKIO_WORKER_THREADS (default: tokio's, one per CPU).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    server_threads: Option<u16>,

    /// Exit with status 2 when a target is missed (by default they are only reported).
    #[arg(long)]
    enforce: bool,
}

fn main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    ensure!(
        args.connections <= args.concurrency,
        "--connections ({}) cannot exceed --concurrency ({})",
        args.connections,
        args.concurrency
    );
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = args.client_threads {
        runtime.worker_threads(threads.into());
    }
    let runtime = runtime.enable_all().build().context("cannot start the load generator's runtime")?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let server_bin = match &args.server_bin {
        Some(path) => path.clone(),
        None => std::env::current_exe()
            .context("cannot locate this executable")?
            .with_file_name("user-service"),
    };
    ensure!(
        server_bin.is_file(),
        "no server binary at {} (build it with `cargo build --release -p user-service`, or pass --server-bin)",
        server_bin.display()
    );

    let mut server = Server::start(&server_bin, &args)?;
    eprintln!(
        "suite-bench: started {} (pid {}) on {}, admin {}",
        server_bin.display(),
        server.pid(),
        server.grpc_addr,
        server.admin_addr
    );
    let endpoint = Endpoint::from_shared(format!("http://{}", server.grpc_addr))?
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true);
    server.wait_until_serving(&endpoint).await?;

    tokio::time::sleep(Duration::from_millis(args.idle_ms)).await;
    let idle_rss_kib = server.rss_kib()?;

    let user_id = create_and_warm_user(&endpoint).await?;
    let before = scrape_cache_lookups(server.admin_addr).await?;

    let warmup = Duration::from_secs(args.warmup_seconds);
    let window = Duration::from_secs(args.seconds);
    eprintln!(
        "suite-bench: {TRIVIAL_ENDPOINT}: {}s warm-up + {}s measured",
        args.warmup_seconds, args.seconds
    );
    let cpu = CpuClock::new(server.pid());
    let trivial = run_phase(&endpoint, &args, cpu, warmup, window, |channel| HealthCall {
        client: HealthClient::new(channel),
    })
    .await?;
    server.ensure_running(&[&trivial])?;
    let after_trivial = scrape_cache_lookups(server.admin_addr).await?;
    eprintln!(
        "suite-bench: {GET_USER_ENDPOINT}: {}s warm-up + {}s measured",
        args.warmup_seconds, args.seconds
    );
    let get_user = run_phase(&endpoint, &args, cpu, warmup, window, |channel| GetUserCall {
        client: UserServiceClient::new(channel),
        id: user_id.clone(),
    })
    .await?;
    server.ensure_running(&[&trivial, &get_user])?;
    let after = scrape_cache_lookups(server.admin_addr).await?;

    let loaded_rss_kib = server.rss_kib()?;
    let exit = server.stop()?;

    let report = Report {
        args: &args,
        backend: after.backend.clone().unwrap_or_else(|| "unknown".to_owned()),
        server_pid: server.pid(),
        client_workers: tokio::runtime::Handle::current().metrics().num_workers(),
        idle_rss_kib,
        loaded_rss_kib,
        trivial,
        get_user,
        // Lookups between the two scrapes around the GetUser phase; the trivial
        // phase must not have touched the cache at all.
        lookups_during_trivial: after_trivial.minus(&before),
        lookups_during_get_user: after.minus(&after_trivial),
        server_exit: exit,
    };
    print!("{}", report.render());

    let failed = report.trivial.errors + report.get_user.errors;
    if failed > 0 {
        bail!("{failed} requests failed; the figures above are not valid");
    }
    if report.get_user.requests == 0 || report.trivial.requests == 0 {
        bail!("a phase completed no requests");
    }
    if args.enforce && !report.all_targets_met() {
        eprintln!("suite-bench: a target was missed (--enforce)");
        return Ok(ExitCode::from(EXIT_TARGET_MISSED));
    }
    Ok(ExitCode::SUCCESS)
}

/// Creates the benchmark's user and reads it once so the cache holds it.
async fn create_and_warm_user(endpoint: &Endpoint) -> anyhow::Result<String> {
    let mut client = UserServiceClient::new(endpoint.connect().await.context("cannot connect to the gRPC port")?);
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos())
        .unwrap_or(0);
    let created = client
        .create_user(with_timeout(pb::CreateUserRequest {
            email: format!("bench-{stamp}@example.com"),
            display_name: "Bench User".to_owned(),
        }))
        .await
        .context("CreateUser failed")?
        .into_inner();
    let user = created.user.context("CreateUser answered without a user")?;
    let read = client
        .get_user(with_timeout(pb::GetUserRequest { id: user.id.clone() }))
        .await
        .context("warming GetUser failed")?
        .into_inner();
    ensure!(
        read.user.as_ref().is_some_and(|read| read.id == user.id),
        "warming GetUser returned a different user"
    );
    Ok(user.id)
}

fn with_timeout<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(RPC_TIMEOUT);
    request
}

// ---------------------------------------------------------------------------
// Load generation

/// One kind of request, issued over and over by one in-flight slot.
trait Call: Send + 'static {
    fn call(&mut self) -> impl Future<Output = Result<(), tonic::Status>> + Send + '_;
}

struct HealthCall {
    client: HealthClient<Channel>,
}

impl Call for HealthCall {
    async fn call(&mut self) -> Result<(), tonic::Status> {
        let response: HealthCheckResponse = self.client.check(HealthCheckRequest { service: String::new() }).await?.into_inner();
        if response.status == ServingStatus::Serving as i32 {
            Ok(())
        } else {
            Err(tonic::Status::unavailable(format!("health status {}", response.status)))
        }
    }
}

struct GetUserCall {
    client: UserServiceClient<Channel>,
    id: String,
}

impl Call for GetUserCall {
    async fn call(&mut self) -> Result<(), tonic::Status> {
        let response = self.client.get_user(pb::GetUserRequest { id: self.id.clone() }).await?.into_inner();
        match response.user {
            Some(user) if user.id == self.id => Ok(()),
            _ => Err(tonic::Status::internal("GetUser answered without the requested user")),
        }
    }
}

/// Figures of one phase's measured window (errors count warm-up too).
#[derive(Debug)]
struct PhaseResult {
    requests: u64,
    errors: u64,
    first_error: Option<String>,
    window: Duration,
    latency_us: Histogram<u64>,
    /// CPU time (user + system) over the measured window: the server's and this process's.
    server_cpu: Duration,
    client_cpu: Duration,
}

impl PhaseResult {
    /// CPU time per request; steadier than throughput on a shared machine.
    fn cpu_us_per_request(&self, cpu: Duration) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            cpu.as_secs_f64() * 1e6 / self.requests as f64
        }
    }

    fn requests_per_second(&self) -> f64 {
        self.requests as f64 / self.window.as_secs_f64()
    }

    fn quantile_ms(&self, quantile: f64) -> f64 {
        self.latency_us.value_at_quantile(quantile) as f64 / 1_000.0
    }

    fn max_ms(&self) -> f64 {
        self.latency_us.max() as f64 / 1_000.0
    }
}

#[derive(Debug, Clone, Copy)]
struct Window {
    measure_from: Instant,
    measure_until: Instant,
}

/// Runs `concurrency` looping tasks over `connections` fresh connections: a
/// warm-up, then the measured window. A request counts in the window when it
/// started inside it.
async fn run_phase<C: Call>(
    endpoint: &Endpoint,
    args: &Args,
    cpu: CpuClock,
    warmup: Duration,
    window: Duration,
    make_call: impl Fn(Channel) -> C,
) -> anyhow::Result<PhaseResult> {
    let mut channels = Vec::new();
    for _ in 0..args.connections {
        channels.push(endpoint.connect().await.context("cannot open a benchmark connection")?);
    }
    let start = Instant::now();
    let timing = Window {
        measure_from: start + warmup,
        measure_until: start + warmup + window,
    };
    let mut tasks = tokio::task::JoinSet::new();
    for slot in 0..args.concurrency as usize {
        let channel = channels[slot % channels.len()].clone();
        tasks.spawn(drive(make_call(channel), timing));
    }
    drop(channels);
    let cpu_sampler = tokio::spawn(async move {
        tokio::time::sleep_until(timing.measure_from.into()).await;
        let (server_before, client_before) = (cpu.server()?, cpu.own()?);
        tokio::time::sleep_until(timing.measure_until.into()).await;
        let (server_after, client_after) = (cpu.server()?, cpu.own()?);
        Ok::<_, anyhow::Error>((
            server_after.saturating_sub(server_before),
            client_after.saturating_sub(client_before),
        ))
    });

    let mut result = PhaseResult {
        requests: 0,
        errors: 0,
        first_error: None,
        window,
        latency_us: new_histogram()?,
        server_cpu: Duration::ZERO,
        client_cpu: Duration::ZERO,
    };
    while let Some(joined) = tasks.join_next().await {
        let slot = joined.context("a load task panicked")??;
        result.requests += slot.requests;
        result.errors += slot.errors;
        if result.first_error.is_none() {
            result.first_error = slot.first_error;
        }
        result.latency_us.add(&slot.latency_us).context("cannot merge latency histograms")?;
    }
    (result.server_cpu, result.client_cpu) = cpu_sampler.await.context("the CPU sampler panicked")??;
    Ok(result)
}

/// CPU time of the server and of this process, from /proc/<pid>/stat.
#[derive(Debug, Clone, Copy)]
struct CpuClock {
    server_pid: u32,
    ticks_per_second: u64,
}

impl CpuClock {
    fn new(server_pid: u32) -> Self {
        // USER_HZ, the unit of utime and stime; 100 on every mainstream Linux.
        let ticks_per_second = Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|output| String::from_utf8(output.stdout).ok())
            .and_then(|text| text.trim().parse().ok())
            .filter(|&ticks| ticks > 0)
            .unwrap_or(100);
        Self {
            server_pid,
            ticks_per_second,
        }
    }

    fn server(&self) -> anyhow::Result<Duration> {
        self.read(&format!("/proc/{}/stat", self.server_pid))
    }

    fn own(&self) -> anyhow::Result<Duration> {
        self.read("/proc/self/stat")
    }

    /// utime + stime of every thread of the process.
    fn read(&self, path: &str) -> anyhow::Result<Duration> {
        let stat = std::fs::read_to_string(path).with_context(|| format!("cannot read {path}"))?;
        // Fields after the parenthesised command name, which may contain spaces: state is field 3,
        // utime and stime are fields 14 and 15.
        let (_, rest) = stat.rsplit_once(')').with_context(|| format!("unexpected {path}: {stat:?}"))?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |index: usize| -> anyhow::Result<u64> {
            fields
                .get(index)
                .with_context(|| format!("short {path}"))?
                .parse()
                .with_context(|| format!("unexpected {path}: {stat:?}"))
        };
        let total = ticks(11)? + ticks(12)?;
        Ok(Duration::from_secs_f64(total as f64 / self.ticks_per_second as f64))
    }
}

struct SlotResult {
    requests: u64,
    errors: u64,
    first_error: Option<String>,
    latency_us: Histogram<u64>,
}

async fn drive<C: Call>(mut call: C, timing: Window) -> anyhow::Result<SlotResult> {
    let mut slot = SlotResult {
        requests: 0,
        errors: 0,
        first_error: None,
        latency_us: new_histogram()?,
    };
    loop {
        let started = Instant::now();
        if started >= timing.measure_until {
            return Ok(slot);
        }
        let outcome = call.call().await;
        let elapsed = started.elapsed();
        match outcome {
            Ok(()) if started >= timing.measure_from => {
                slot.requests += 1;
                slot.latency_us
                    .saturating_record(u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX).max(1));
            }
            Ok(()) => {}
            Err(status) => {
                slot.errors += 1;
                if slot.first_error.is_none() {
                    slot.first_error = Some(format!("{:?}: {}", status.code(), status.message()));
                }
            }
        }
    }
}

fn new_histogram() -> anyhow::Result<Histogram<u64>> {
    // 1 µs to 60 s at three significant figures.
    Histogram::new_with_bounds(1, 60_000_000, 3).context("cannot create a latency histogram")
}

// ---------------------------------------------------------------------------
// The server under test

struct Server {
    child: Child,
    stopped: Option<ExitStatus>,
    data_dir: PathBuf,
    grpc_addr: SocketAddr,
    admin_addr: SocketAddr,
}

impl Server {
    fn start(binary: &Path, args: &Args) -> anyhow::Result<Self> {
        let data_dir = std::env::temp_dir().join(format!(
            "suite-bench-{}-{}",
            std::process::id(),
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|elapsed| elapsed.as_nanos())
                .unwrap_or(0)
        ));
        std::fs::create_dir_all(&data_dir).with_context(|| format!("cannot create {}", data_dir.display()))?;
        let (grpc_addr, admin_addr) = match free_ports() {
            Ok(ports) => ports,
            Err(error) => {
                let _ = std::fs::remove_dir_all(&data_dir);
                return Err(error);
            }
        };
        let mut command = Command::new(binary);
        command
            // Embedded defaults whatever the caller's shell exports.
            .env_clear()
            .arg("serve")
            .arg("--grpc-addr")
            .arg(grpc_addr.to_string())
            .arg("--admin-addr")
            .arg(admin_addr.to_string())
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--log-filter")
            .arg(&args.server_log_filter)
            .stdin(Stdio::null())
            // The server's log lines go to stderr so stdout stays the report.
            .stdout(Stdio::from(std::io::stderr()))
            .stderr(Stdio::inherit());
        if let Some(url) = &args.redis_url {
            command.arg("--redis-url").arg(url);
        }
        if let Some(threads) = args.server_threads {
            command.env("TOKIO_WORKER_THREADS", threads.to_string());
        }
        let child = match command.spawn() {
            Ok(child) => child,
            Err(error) => {
                let _ = std::fs::remove_dir_all(&data_dir);
                return Err(error).with_context(|| format!("cannot start {}", binary.display()));
            }
        };
        Ok(Self {
            child,
            stopped: None,
            data_dir,
            grpc_addr,
            admin_addr,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Polls gRPC health (overall status) until it answers SERVING.
    async fn wait_until_serving(&mut self, endpoint: &Endpoint) -> anyhow::Result<()> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let mut last_problem = String::from("no answer yet");
        loop {
            if let Some(status) = self.child.try_wait().context("cannot poll the server process")? {
                self.stopped = Some(status);
                bail!("the server exited during start-up ({status}); its log is above");
            }
            if Instant::now() >= deadline {
                bail!("the server did not report SERVING within {STARTUP_TIMEOUT:?}: {last_problem}");
            }
            match endpoint.connect().await {
                Ok(channel) => match HealthClient::new(channel)
                    .check(with_timeout(HealthCheckRequest { service: String::new() }))
                    .await
                {
                    Ok(response) if response.get_ref().status == ServingStatus::Serving as i32 => return Ok(()),
                    Ok(response) => last_problem = format!("health status {}", response.get_ref().status),
                    Err(status) => last_problem = format!("health check failed: {status}"),
                },
                Err(error) => last_problem = format!("cannot connect: {error}"),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Resident set size of the server process, from /proc, in KiB.
    fn rss_kib(&self) -> anyhow::Result<u64> {
        let path = format!("/proc/{}/status", self.pid());
        let status = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
        let line = status
            .lines()
            .find(|line| line.starts_with("VmRSS:"))
            .with_context(|| format!("no VmRSS in {path}"))?;
        let kib = line.trim_start_matches("VmRSS:").trim().trim_end_matches("kB").trim();
        kib.parse().with_context(|| format!("cannot parse {line:?}"))
    }

    /// Fails with the failed-request counts when the server died during the load.
    fn ensure_running(&mut self, phases: &[&PhaseResult]) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait().context("cannot poll the server process")? {
            self.stopped = Some(status);
            let failed: u64 = phases.iter().map(|phase| phase.errors).sum();
            let first = phases.iter().find_map(|phase| phase.first_error.as_deref()).unwrap_or("none");
            bail!("the server exited during the run ({status}); {failed} requests failed (first: {first})");
        }
        Ok(())
    }

    /// SIGTERM, then waits for the graceful drain; SIGKILL if it overruns.
    fn stop(&mut self) -> anyhow::Result<ExitStatus> {
        if let Some(status) = self.stopped {
            return Ok(status);
        }
        if let Some(status) = self.child.try_wait().context("cannot poll the server process")? {
            self.stopped = Some(status);
            return Ok(status);
        }
        let signalled = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status()
            .context("cannot run kill")?;
        ensure!(signalled.success(), "kill -TERM {} failed: {signalled}", self.pid());
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().context("cannot poll the server process")? {
                self.stopped = Some(status);
                return Ok(status);
            }
            if Instant::now() >= deadline {
                self.child.kill().context("cannot kill the server")?;
                let status = self.child.wait().context("cannot reap the server")?;
                self.stopped = Some(status);
                bail!("the server did not stop within {STOP_TIMEOUT:?} of SIGTERM; killed it");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.stopped.is_none()
            && let Err(error) = self.stop()
        {
            eprintln!("suite-bench: {error:#}");
        }
        if let Err(error) = std::fs::remove_dir_all(&self.data_dir) {
            eprintln!("suite-bench: cannot remove {}: {error}", self.data_dir.display());
        }
    }
}

/// Two distinct free loopback ports: bound to port 0 together, then released.
fn free_ports() -> anyhow::Result<(SocketAddr, SocketAddr)> {
    let first = std::net::TcpListener::bind("127.0.0.1:0").context("cannot find a free port")?;
    let second = std::net::TcpListener::bind("127.0.0.1:0").context("cannot find a free port")?;
    Ok((first.local_addr()?, second.local_addr()?))
}

// ---------------------------------------------------------------------------
// Cache counters from the admin port

#[derive(Debug, Default, Clone)]
struct CacheLookups {
    backend: Option<String>,
    hits: u64,
    misses: u64,
}

impl CacheLookups {
    fn minus(&self, earlier: &Self) -> Self {
        Self {
            backend: self.backend.clone(),
            hits: self.hits.saturating_sub(earlier.hits),
            misses: self.misses.saturating_sub(earlier.misses),
        }
    }
}

/// Sums `cache_lookups_total` by result from `/metrics` (HTTP/1.0, so the body
/// is neither chunked nor kept alive).
async fn scrape_cache_lookups(admin_addr: SocketAddr) -> anyhow::Result<CacheLookups> {
    let text = tokio::time::timeout(RPC_TIMEOUT, async {
        let mut stream = tokio::net::TcpStream::connect(admin_addr).await?;
        stream
            .write_all(format!("GET /metrics HTTP/1.0\r\nHost: {admin_addr}\r\n\r\n").as_bytes())
            .await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&response).into_owned())
    })
    .await
    .context("timed out reading /metrics")?
    .context("cannot read /metrics")?;
    ensure!(
        text.starts_with("HTTP/1.") && text.split(' ').nth(1) == Some("200"),
        "/metrics answered {:?}",
        text.lines().next()
    );

    let mut lookups = CacheLookups::default();
    for line in text.lines().filter(|line| line.starts_with("cache_lookups_total{")) {
        let Some((labels, value)) = line.rsplit_once(' ') else { continue };
        let value: u64 = value.trim().parse().with_context(|| format!("cannot parse {line:?}"))?;
        if lookups.backend.is_none() {
            lookups.backend = label(labels, "backend").map(str::to_owned);
        }
        match label(labels, "result") {
            Some("hit") => lookups.hits += value,
            Some("miss") => lookups.misses += value,
            _ => {}
        }
    }
    Ok(lookups)
}

fn label<'a>(labels: &'a str, name: &str) -> Option<&'a str> {
    let start = labels.find(&format!("{name}=\""))? + name.len() + 2;
    let rest = &labels[start..];
    Some(&rest[..rest.find('"')?])
}

// ---------------------------------------------------------------------------
// The report

struct Report<'a> {
    args: &'a Args,
    backend: String,
    server_pid: u32,
    client_workers: usize,
    idle_rss_kib: u64,
    loaded_rss_kib: u64,
    trivial: PhaseResult,
    get_user: PhaseResult,
    lookups_during_trivial: CacheLookups,
    lookups_during_get_user: CacheLookups,
    server_exit: ExitStatus,
}

struct Target {
    name: String,
    measured: String,
    met: bool,
}

impl Report<'_> {
    fn ratio_percent(&self) -> f64 {
        100.0 * self.get_user.requests_per_second() / self.trivial.requests_per_second()
    }

    fn idle_rss_mb(&self) -> f64 {
        kib_to_mb(self.idle_rss_kib)
    }

    fn targets(&self) -> Vec<Target> {
        let rps = self.get_user.requests_per_second();
        let p99 = self.get_user.quantile_ms(0.99);
        let ratio = self.ratio_percent();
        let rss = self.idle_rss_mb();
        vec![
            Target {
                name: format!("GetUser throughput >= {} req/s", thousands(TARGET_MIN_RPS)),
                measured: format!("{} req/s", thousands(rps)),
                met: rps >= TARGET_MIN_RPS,
            },
            Target {
                name: format!("GetUser p99 <= {TARGET_MAX_P99_MS} ms"),
                measured: format!("{p99:.2} ms"),
                met: p99 <= TARGET_MAX_P99_MS,
            },
            Target {
                name: format!("GetUser >= {TARGET_MIN_RATIO_PERCENT}% of trivial throughput"),
                measured: format!("{ratio:.1}%"),
                met: ratio >= TARGET_MIN_RATIO_PERCENT,
            },
            Target {
                name: format!("idle RSS < {TARGET_MAX_IDLE_RSS_MB} MB"),
                measured: format!("{rss:.1} MB"),
                met: rss < TARGET_MAX_IDLE_RSS_MB,
            },
        ]
    }

    fn all_targets_met(&self) -> bool {
        self.targets().iter().all(|target| target.met)
    }

    fn render(&self) -> String {
        let args = self.args;
        let mut out = String::new();
        let cpus = std::thread::available_parallelism().map(|cpus| cpus.get()).unwrap_or(1);
        let server_threads = args
            .server_threads
            .map_or_else(|| format!("{cpus} (one per CPU)"), |threads| threads.to_string());
        let _ = writeln!(out, "## GetUser on a cache hit\n");
        let _ = writeln!(
            out,
            "{} in flight over {} HTTP/2 connections; {} s warm-up + {} s measured per endpoint; cache backend: {}; \
             server log filter: {}; server runtime workers: {server_threads}; load generator: tokio multi-thread, {} workers, \
             same machine ({cpus} CPUs).\n",
            args.concurrency,
            args.connections,
            args.warmup_seconds,
            args.seconds,
            self.backend,
            args.server_log_filter,
            self.client_workers
        );
        let _ = writeln!(
            out,
            "| endpoint | requests/s | p50 ms | p99 ms | max ms | errors | server CPU µs/req | load-generator CPU µs/req |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|");
        for (name, phase) in [
            (format!("`{TRIVIAL_ENDPOINT}` (trivial, ceiling)"), &self.trivial),
            (format!("`{GET_USER_ENDPOINT}` (cache hit)"), &self.get_user),
        ] {
            let _ = writeln!(
                out,
                "| {name} | {} | {:.2} | {:.2} | {:.2} | {} | {:.1} | {:.1} |",
                thousands(phase.requests_per_second()),
                phase.quantile_ms(0.5),
                phase.quantile_ms(0.99),
                phase.max_ms(),
                phase.errors,
                phase.cpu_us_per_request(phase.server_cpu),
                phase.cpu_us_per_request(phase.client_cpu)
            );
        }
        let _ = writeln!(out);
        let _ = writeln!(out, "- GetUser / trivial throughput: **{:.1}%**", self.ratio_percent());
        let _ = writeln!(
            out,
            "- server CPU per request, GetUser / trivial: {:.0}% (CPU time per request is steadier than throughput on a shared machine)",
            100.0 * self.get_user.cpu_us_per_request(self.get_user.server_cpu) / self.trivial.cpu_us_per_request(self.trivial.server_cpu)
        );
        let _ = writeln!(
            out,
            "- idle RSS (after start-up and {} ms idle, before load): **{:.1} MB** ({} KiB)",
            args.idle_ms,
            self.idle_rss_mb(),
            self.idle_rss_kib
        );
        let _ = writeln!(
            out,
            "- RSS after load: {:.1} MB ({} KiB)",
            kib_to_mb(self.loaded_rss_kib),
            self.loaded_rss_kib
        );
        let lookups = &self.lookups_during_get_user;
        let _ = writeln!(
            out,
            "- cache lookups during the GetUser phase: {} hits, {} misses",
            lookups.hits, lookups.misses
        );
        let _ = writeln!(out, "- server (pid {}) after SIGTERM: {}", self.server_pid, self.server_exit);
        for (name, phase) in [("trivial", &self.trivial), ("GetUser", &self.get_user)] {
            if let Some(error) = &phase.first_error {
                let _ = writeln!(out, "- **{} {name} requests failed**; first: {error}", phase.errors);
            }
        }
        if lookups.misses > 0 || lookups.hits == 0 {
            let _ = writeln!(
                out,
                "- **warning**: not every GetUser was a cache hit; these are not cache-hit figures"
            );
        }
        if self.lookups_during_trivial.hits + self.lookups_during_trivial.misses > 0 {
            let _ = writeln!(out, "- **warning**: the cache was used during the trivial phase");
        }
        let _ = writeln!(out);
        let note = if self.backend == "memory" {
            String::new()
        } else {
            format!(" (set for the in-process cache; this run used {})", self.backend)
        };
        let _ = writeln!(out, "| target{note} | measured | result |");
        let _ = writeln!(out, "|---|---:|---|");
        for target in self.targets() {
            let _ = writeln!(
                out,
                "| {} | {} | {} |",
                target.name,
                target.measured,
                if target.met { "PASS" } else { "FAIL" }
            );
        }
        out
    }
}

/// VmRSS is in KiB; targets are in MB (10^6 bytes).
fn kib_to_mb(kib: u64) -> f64 {
    kib as f64 * 1024.0 / 1_000_000.0
}

/// A whole number with thousands separators: 23456.7 -> "23,457".
fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}
