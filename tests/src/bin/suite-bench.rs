//! `suite-bench`: GetUser on a cache hit against the real release binary,
//! beside a trivial endpoint (gRPC health `Check`) served by the same process,
//! port and tonic stack, as the ceiling for this machine in this run; both in
//! plaintext and over mutual TLS; then the TLS handshakes per second the
//! server sustains.
//!
//! The machine is shared and the load generator runs on the same box, so the
//! absolute figures move from run to run; ratios between figures measured a
//! few seconds apart in the same run (GetUser to the trivial endpoint, mutual
//! TLS to plaintext) are the steadier figures.
//!
//! What a run does:
//! 1. generates a development CA and certificates with `suite-devcerts` (trust
//!    domain `suite.local`, namespace `dev`) in a fresh temporary directory,
//!    which also holds both servers' data and is removed at the end;
//! 2. starts two `user-service serve` processes on embedded defaults (SQLite in
//!    their own directory, in-process cache unless `--redis-url`), on free
//!    loopback ports, with a cleared environment so nothing from the caller's
//!    shell (`DATABASE_URL`, tuning variables) leaks in: one with
//!    `--insecure-plaintext`, one over mutual TLS with `TLS_CERT`, `TLS_KEY`,
//!    `TLS_CA` (the `user-service` certificate) and `AUTHZ_POLICY`
//!    (`--authz-policy`, by default the repository's
//!    `config/dev/user-service.authz.toml`). Only this binary's own
//!    `--redis-url` reaches the servers, and it falls back to `REDIS_URL`.
//!    Over mutual TLS the load generator presents the `operator` certificate
//!    through `suite_tls::MtlsConnector` and accepts only
//!    `spiffe://suite.local/ns/dev/sa/user-service`;
//! 3. for each server in turn: waits for gRPC health to answer SERVING, idles,
//!    reads the idle RSS, creates one user and reads it once so the cache holds it;
//! 4. runs four RPC phases, each a warm-up and then a measured window with
//!    exactly `--concurrency` requests in flight over `--connections` long-lived
//!    HTTP/2 connections (one task per in-flight slot, each looping on its own
//!    client), in this order: the trivial endpoint in plaintext, then over
//!    mutual TLS; GetUser in plaintext, then over mutual TLS. So each pair that
//!    is compared is measured back to back;
//! 5. checks on `/metrics` that every GetUser was a cache hit and that each
//!    mutual TLS phase cost exactly one handshake per connection, reads the
//!    plaintext server's RSS after load and stops it with SIGTERM;
//! 6. measures handshakes: `--handshake-tasks` tasks each loop on a fresh
//!    connection to the mutual TLS server (TCP connect, a full TLS 1.3
//!    handshake, as neither side resumes sessions; then a wait for the
//!    server's first HTTP/2 bytes; then close), a warm-up and then a measured
//!    window. A TLS 1.3 client is done once it has the server's `Finished`,
//!    before the server has verified the client certificate; the server sends
//!    its HTTP/2 settings only after that, so the wait keeps every task's loop
//!    closed on the server's side of the handshake. The figure is the server's
//!    own `tls_server_handshakes_total{outcome="accepted"}`, scraped at both
//!    edges of the window, divided by the time between the scrapes; CPU per
//!    handshake is the server's CPU time over the window divided by the same count;
//! 7. checks that the server counted no rejected or timed-out handshake, reads
//!    its RSS after load, stops it with SIGTERM and prints a Markdown report.
//!
//! Every phase reports CPU time per request (or per handshake) of the server
//! and of the load generator over its window, from `/proc/<pid>/stat`, and the
//! CPU time the rest of the machine used meanwhile, from `/proc/stat`, so a
//! phase that other work competed with stands out.
//!
//! Exit status: 0 when every request and handshake succeeded (targets are
//! reported, not asserted, unless `--enforce`), 1 when one failed, the server
//! counted a rejected or timed-out handshake, or the run broke, 2 when
//! `--enforce` is set and a target was missed.

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
use suite_devcerts::dev_set::{self, DevSetOptions, OPERATOR_NAME};
use suite_proto::suite::user::v1 as pb;
use suite_proto::suite::user::v1::user_service_client::UserServiceClient;
use suite_tls::{CredentialPaths, Credentials, MtlsConnector, SpiffeId, TlsOptions};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

/// Targets for the plaintext server; they apply to the embedded default (in-process cache).
const TARGET_MIN_RPS: f64 = 20_000.0;
const TARGET_MAX_P99_MS: f64 = 5.0;
const TARGET_MIN_RATIO_PERCENT: f64 = 40.0;
const TARGET_MAX_IDLE_RSS_MB: f64 = 15.0;
/// Mutual TLS GetUser throughput as a share of plaintext GetUser throughput.
const TARGET_MIN_MTLS_RATIO_PERCENT: f64 = 85.0;

const TRIVIAL_ENDPOINT: &str = "grpc.health.v1.Health/Check";
const GET_USER_ENDPOINT: &str = "suite.user.v1.UserService/GetUser";

/// The identities `suite-devcerts` issues: `spiffe://suite.local/ns/dev/sa/<name>`.
const TRUST_DOMAIN: &str = "suite.local";
const NAMESPACE: &str = "dev";
const SERVER_NAME: &str = "user-service";
const DEFAULT_AUTHZ_POLICY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/dev/user-service.authz.toml");

const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
const RPC_TIMEOUT: Duration = Duration::from_secs(5);
/// Exit status when `--enforce` is set and a target was missed.
const EXIT_TARGET_MISSED: u8 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "suite-bench",
    about = "GetUser cache-hit benchmark against the real user-service binary, beside a trivial endpoint as the ceiling, \
             in plaintext and over mutual TLS, and TLS handshakes per second."
)]
struct Args {
    /// The `user-service` binary to start; defaults to the one beside this executable.
    #[arg(long)]
    server_bin: Option<PathBuf>,

    /// Requests in flight at every moment of an RPC phase.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    concurrency: u32,

    /// HTTP/2 connections the in-flight requests are spread over.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    connections: u32,

    /// Length of each RPC phase's measured window, in seconds.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    seconds: u64,

    /// Warm-up before each RPC phase's measured window, in seconds (not measured).
    #[arg(long, default_value_t = 2)]
    warmup_seconds: u64,

    /// Client tasks of the handshake phase, each looping on fresh connections.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..))]
    handshake_tasks: u32,

    /// Length of the handshake phase's measured window, in seconds.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    handshake_seconds: u64,

    /// Warm-up before the handshake phase's measured window, in seconds (not measured).
    #[arg(long, default_value_t = 1)]
    handshake_warmup_seconds: u64,

    /// Pause between a server answering SERVING and reading its idle RSS, in milliseconds.
    #[arg(long, default_value_t = 2_000)]
    idle_ms: u64,

    /// The mutual TLS server's authorization policy (its `AUTHZ_POLICY`); it must let
    /// `spiffe://suite.local/ns/dev/sa/operator` call health and GetUser.
    #[arg(long, default_value = DEFAULT_AUTHZ_POLICY)]
    authz_policy: PathBuf,

    /// Run the servers with this Redis cache (passed on as their `--redis-url`)
    /// instead of the in-process one. The targets are set for the in-process cache.
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    redis_url: Option<String>,

    /// The servers' `--log-filter`.
    #[arg(long, default_value = "warn")]
    server_log_filter: String,

    /// Worker threads of the load generator's runtime (default: tokio's, one per CPU).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    client_threads: Option<u16>,

    /// Worker threads of each server's runtime, passed as TOKIO_WORKER_THREADS (default: tokio's, one per CPU).
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
    let server_bin = server_binary(&args)?;
    // Certificates and both servers' data; removed when the run ends, after the servers have stopped.
    let run_dir = tempfile::Builder::new()
        .prefix("suite-bench-")
        .tempdir()
        .context("cannot create the run's temporary directory")?;
    let pki = DevPki::generate(run_dir.path().join("certs"), &args.authz_policy)?;

    let mut plaintext = Subject::start(&server_bin, &args, run_dir.path().join("plaintext"), None).await?;
    let mut mtls = Subject::start(&server_bin, &args, run_dir.path().join("mtls"), Some(&pki)).await?;

    let plaintext_trivial = plaintext.measure(Rpc::Health, &args).await?;
    let mtls_trivial = mtls.measure(Rpc::Health, &args).await?;
    let plaintext_get_user = plaintext.measure(Rpc::GetUser, &args).await?;
    let mtls_get_user = mtls.measure(Rpc::GetUser, &args).await?;
    let plaintext = plaintext.finish(plaintext_trivial, plaintext_get_user).await?;

    let handshakes = mtls.measure_handshakes(&args).await?;
    let mtls = mtls.finish(mtls_trivial, mtls_get_user).await?;

    let report = Report {
        args: &args,
        client_workers: tokio::runtime::Handle::current().metrics().num_workers(),
        plaintext,
        mtls,
        handshakes,
    };
    print!("{}", report.render());

    let failures = report.failures();
    if !failures.is_empty() {
        bail!("{}; the figures above are not valid", failures.join("; "));
    }
    if args.enforce && !report.all_targets_met() {
        eprintln!("suite-bench: a target was missed (--enforce)");
        return Ok(ExitCode::from(EXIT_TARGET_MISSED));
    }
    Ok(ExitCode::SUCCESS)
}

fn server_binary(args: &Args) -> anyhow::Result<PathBuf> {
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
    Ok(server_bin)
}

/// Creates the benchmark's user and reads it once so the cache holds it.
async fn create_and_warm_user(dialer: &Dialer) -> anyhow::Result<String> {
    let mut client = UserServiceClient::new(dialer.connect().await.context("cannot connect to the gRPC port")?);
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
// Transport: the development PKI and how the load generator connects

/// The run's development certificates: files for the mutual TLS server, and
/// the operator's connector for the load generator.
struct DevPki {
    dir: PathBuf,
    authz_policy: PathBuf,
    operator: MtlsConnector,
}

impl DevPki {
    fn generate(dir: PathBuf, authz_policy: &Path) -> anyhow::Result<Self> {
        let authz_policy = authz_policy
            .canonicalize()
            .with_context(|| format!("no authorization policy at {} (--authz-policy)", authz_policy.display()))?;
        dev_set::ensure(&DevSetOptions {
            dir: dir.clone(),
            trust_domain: TRUST_DOMAIN.into(),
            namespace: NAMESPACE.into(),
            renew: false,
        })
        .context("cannot generate the development certificates")?;
        let credentials = Credentials::load(CredentialPaths {
            cert: dir.join(format!("{OPERATOR_NAME}.pem")),
            key: dir.join(format!("{OPERATOR_NAME}-key.pem")),
            ca: dir.join("ca.pem"),
        })
        .context("cannot load the operator's certificate")?;
        let operator = MtlsConnector::new(&credentials, server_identity()?, TlsOptions::default())
            .context("cannot build the operator's TLS client")?;
        Ok(Self {
            dir,
            authz_policy,
            operator,
        })
    }

    /// The environment that makes `user-service serve` serve mutual TLS with this PKI.
    fn server_env(&self) -> [(&'static str, PathBuf); 4] {
        [
            ("TLS_CERT", self.dir.join(format!("{SERVER_NAME}.pem"))),
            ("TLS_KEY", self.dir.join(format!("{SERVER_NAME}-key.pem"))),
            ("TLS_CA", self.dir.join("ca.pem")),
            ("AUTHZ_POLICY", self.authz_policy.clone()),
        ]
    }
}

fn server_identity() -> anyhow::Result<SpiffeId> {
    Ok(SpiffeId::new(TRUST_DOMAIN, NAMESPACE, SERVER_NAME)?)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    Plaintext,
    Mtls,
}

impl Transport {
    fn label(self) -> &'static str {
        match self {
            Self::Plaintext => "plaintext",
            Self::Mtls => "mutual TLS",
        }
    }
}

/// Opens HTTP/2 connections to one server: in plaintext, or over mutual TLS as the operator.
#[derive(Clone)]
struct Dialer {
    endpoint: Endpoint,
    tls: Option<MtlsConnector>,
}

impl Dialer {
    fn new(addr: SocketAddr, tls: Option<MtlsConnector>) -> anyhow::Result<Self> {
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true);
        Ok(Self { endpoint, tls })
    }

    async fn connect(&self) -> Result<Channel, tonic::transport::Error> {
        match &self.tls {
            None => self.endpoint.connect().await,
            Some(connector) => self.endpoint.connect_with_connector(connector.clone()).await,
        }
    }
}

// ---------------------------------------------------------------------------
// One server under test and its phases

/// A running server, the way to reach it, and what was prepared on it.
struct Subject {
    transport: Transport,
    server: Server,
    dialer: Dialer,
    cpu: CpuClock,
    idle_rss_kib: u64,
    user_id: String,
}

/// One RPC phase and the server's counters across it (warm-up included).
struct RpcPhase {
    result: PhaseResult,
    counters: ServerCounters,
}

impl Subject {
    /// Starts the server (mutual TLS with `pki`, plaintext without), waits for
    /// SERVING, idles, reads the idle RSS and puts the benchmark's user in the cache.
    async fn start(binary: &Path, args: &Args, data_dir: PathBuf, pki: Option<&DevPki>) -> anyhow::Result<Self> {
        let transport = if pki.is_some() { Transport::Mtls } else { Transport::Plaintext };
        let mut server = Server::start(binary, args, data_dir, pki)?;
        eprintln!(
            "suite-bench: started {} ({}, pid {}) on {}, admin {}",
            binary.display(),
            transport.label(),
            server.pid(),
            server.grpc_addr,
            server.admin_addr
        );
        let dialer = Dialer::new(server.grpc_addr, pki.map(|pki| pki.operator.clone()))?;
        server.wait_until_serving(&dialer).await?;
        tokio::time::sleep(Duration::from_millis(args.idle_ms)).await;
        let idle_rss_kib = server.rss_kib()?;
        let user_id = create_and_warm_user(&dialer).await?;
        Ok(Self {
            transport,
            cpu: CpuClock::new(server.pid()),
            server,
            dialer,
            idle_rss_kib,
            user_id,
        })
    }

    /// One RPC phase over `--connections` fresh long-lived connections.
    async fn measure(&mut self, rpc: Rpc, args: &Args) -> anyhow::Result<RpcPhase> {
        eprintln!(
            "suite-bench: {} {}: {}s warm-up + {}s measured",
            self.transport.label(),
            rpc.method(),
            args.warmup_seconds,
            args.seconds
        );
        let before = scrape_counters(self.server.admin_addr).await?;
        let mut channels = Vec::new();
        for _ in 0..args.connections {
            channels.push(self.dialer.connect().await.context("cannot open a benchmark connection")?);
        }
        let calls = (0..args.concurrency as usize)
            .map(|slot| rpc.call(channels[slot % channels.len()].clone(), &self.user_id))
            .collect();
        drop(channels);
        let result = run_load(
            calls,
            self.cpu,
            Duration::from_secs(args.warmup_seconds),
            Duration::from_secs(args.seconds),
            None,
        )
        .await?;
        self.server.ensure_running(&result)?;
        let after = scrape_counters(self.server.admin_addr).await?;
        Ok(RpcPhase {
            result,
            counters: after.minus(&before),
        })
    }

    /// The handshake phase: `--handshake-tasks` tasks looping on fresh connections,
    /// with the server's counters scraped at both edges of the window.
    async fn measure_handshakes(&mut self, args: &Args) -> anyhow::Result<PhaseResult> {
        let connector = self
            .dialer
            .tls
            .clone()
            .context("handshakes are measured on the mutual TLS server")?;
        eprintln!(
            "suite-bench: {} handshakes, {} tasks: {}s warm-up + {}s measured",
            self.transport.label(),
            args.handshake_tasks,
            args.handshake_warmup_seconds,
            args.handshake_seconds
        );
        let addr = self.server.grpc_addr;
        let calls = (0..args.handshake_tasks)
            .map(|_| HandshakeCall {
                connector: connector.clone(),
                host: addr.ip().to_string(),
                port: addr.port(),
            })
            .collect();
        let result = run_load(
            calls,
            self.cpu,
            Duration::from_secs(args.handshake_warmup_seconds),
            Duration::from_secs(args.handshake_seconds),
            Some(self.server.admin_addr),
        )
        .await?;
        self.server.ensure_running(&result)?;
        Ok(result)
    }

    /// Reads the server's final counters and RSS, then stops it with SIGTERM.
    async fn finish(mut self, trivial: RpcPhase, get_user: RpcPhase) -> anyhow::Result<ServerRun> {
        let totals = scrape_counters(self.server.admin_addr).await?;
        let loaded_rss_kib = self.server.rss_kib()?;
        let exit = self.server.stop()?;
        Ok(ServerRun {
            transport: self.transport,
            pid: self.server.pid(),
            idle_rss_kib: self.idle_rss_kib,
            loaded_rss_kib,
            exit,
            totals,
            trivial,
            get_user,
        })
    }
}

// ---------------------------------------------------------------------------
// Load generation

/// One kind of request, issued over and over by one in-flight slot; an error
/// is described in one line.
trait Call: Send + 'static {
    fn call(&mut self) -> impl Future<Output = Result<(), String>> + Send + '_;
}

#[derive(Debug, Clone, Copy)]
enum Rpc {
    Health,
    GetUser,
}

impl Rpc {
    fn method(self) -> &'static str {
        match self {
            Self::Health => TRIVIAL_ENDPOINT,
            Self::GetUser => GET_USER_ENDPOINT,
        }
    }

    fn call(self, channel: Channel, user_id: &str) -> RpcCall {
        match self {
            Self::Health => RpcCall::Health(HealthClient::new(channel)),
            Self::GetUser => RpcCall::GetUser {
                client: UserServiceClient::new(channel),
                id: user_id.to_owned(),
            },
        }
    }
}

enum RpcCall {
    Health(HealthClient<Channel>),
    GetUser { client: UserServiceClient<Channel>, id: String },
}

fn describe(status: tonic::Status) -> String {
    format!("{:?}: {}", status.code(), status.message())
}

impl Call for RpcCall {
    async fn call(&mut self) -> Result<(), String> {
        match self {
            Self::Health(client) => {
                let response: HealthCheckResponse = client
                    .check(HealthCheckRequest { service: String::new() })
                    .await
                    .map_err(describe)?
                    .into_inner();
                if response.status == ServingStatus::Serving as i32 {
                    Ok(())
                } else {
                    Err(format!("health status {}", response.status))
                }
            }
            Self::GetUser { client, id } => {
                let response = client
                    .get_user(pb::GetUserRequest { id: id.clone() })
                    .await
                    .map_err(describe)?
                    .into_inner();
                match response.user {
                    Some(user) if user.id == *id => Ok(()),
                    _ => Err("GetUser answered without the requested user".to_owned()),
                }
            }
        }
    }
}

/// A fresh connection per call: TCP connect, a full TLS 1.3 handshake, the
/// server's first bytes, close.
struct HandshakeCall {
    connector: MtlsConnector,
    host: String,
    port: u16,
}

impl Call for HandshakeCall {
    async fn call(&mut self) -> Result<(), String> {
        let mut stream = self
            .connector
            .connect(&self.host, self.port)
            .await
            .map_err(|error| format!("connect and handshake: {error}"))?;
        // The server sends its HTTP/2 settings only once it has verified our
        // certificate and counted the handshake as accepted.
        let mut first = [0_u8; 1];
        match tokio::time::timeout(RPC_TIMEOUT, stream.read(&mut first)).await {
            Ok(Ok(0)) => Err("the server closed the connection after the handshake".to_owned()),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(format!("reading the server's first bytes: {error}")),
            Err(_) => Err(format!("no byte from the server within {RPC_TIMEOUT:?} of the handshake")),
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
    /// CPU time (user + system) over the measured window: the server's, this
    /// process's, and every CPU's busy time (all processes and the kernel).
    server_cpu: Duration,
    client_cpu: Duration,
    machine_cpu: Duration,
    /// The server's counters over the measured window, when they were scraped at its edges.
    counters: Option<WindowCounters>,
}

/// Counter deltas between scrapes at the two edges of a window, and the time between the scrapes.
#[derive(Debug)]
struct WindowCounters {
    delta: ServerCounters,
    elapsed: Duration,
}

impl PhaseResult {
    /// CPU time per request; steadier than throughput on a shared machine.
    fn cpu_us_per_request(&self, cpu: Duration) -> f64 {
        cpu_us_per(cpu, self.requests)
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

    /// CPUs kept busy by everything but the server and the load generator over
    /// the window (other work on a shared machine, the kernel's own threads).
    fn other_cpus(&self) -> f64 {
        let ours = self.server_cpu + self.client_cpu;
        self.machine_cpu.saturating_sub(ours).as_secs_f64() / self.window.as_secs_f64()
    }

    /// Handshakes the server accepted in the window (0 when not scraped).
    fn accepted_handshakes(&self) -> u64 {
        self.counters.as_ref().map_or(0, |counters| counters.delta.handshakes.accepted)
    }

    /// The server's accepted handshakes per second over the window.
    fn handshakes_per_second(&self) -> f64 {
        self.counters.as_ref().map_or(0.0, |counters| {
            counters.delta.handshakes.accepted as f64 / counters.elapsed.as_secs_f64()
        })
    }
}

fn cpu_us_per(cpu: Duration, count: u64) -> f64 {
    if count == 0 { 0.0 } else { cpu.as_secs_f64() * 1e6 / count as f64 }
}

#[derive(Debug, Clone, Copy)]
struct Window {
    measure_from: Instant,
    measure_until: Instant,
}

/// What is read at each edge of a measured window.
struct Sample {
    at: Instant,
    server_cpu: Duration,
    client_cpu: Duration,
    machine_cpu: Duration,
    counters: Option<ServerCounters>,
}

impl Sample {
    async fn take(cpu: CpuClock, admin_addr: Option<SocketAddr>) -> anyhow::Result<Self> {
        let counters = match admin_addr {
            Some(addr) => Some(scrape_counters(addr).await?),
            None => None,
        };
        Ok(Self {
            at: Instant::now(),
            server_cpu: cpu.server()?,
            client_cpu: cpu.own()?,
            machine_cpu: cpu.machine()?,
            counters,
        })
    }
}

/// Runs one looping task per call: a warm-up, then the measured window. A
/// call counts in the window when it started inside it. With `admin_addr`, the
/// server's counters are also scraped at both edges of the window.
async fn run_load<C: Call>(
    calls: Vec<C>,
    cpu: CpuClock,
    warmup: Duration,
    window: Duration,
    admin_addr: Option<SocketAddr>,
) -> anyhow::Result<PhaseResult> {
    let start = Instant::now();
    let timing = Window {
        measure_from: start + warmup,
        measure_until: start + warmup + window,
    };
    let mut tasks = tokio::task::JoinSet::new();
    for call in calls {
        tasks.spawn(drive(call, timing));
    }
    let sampler = tokio::spawn(async move {
        tokio::time::sleep_until(timing.measure_from.into()).await;
        let before = Sample::take(cpu, admin_addr).await?;
        tokio::time::sleep_until(timing.measure_until.into()).await;
        let after = Sample::take(cpu, admin_addr).await?;
        Ok::<_, anyhow::Error>((before, after))
    });

    let mut result = PhaseResult {
        requests: 0,
        errors: 0,
        first_error: None,
        window,
        latency_us: new_histogram()?,
        server_cpu: Duration::ZERO,
        client_cpu: Duration::ZERO,
        machine_cpu: Duration::ZERO,
        counters: None,
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
    let (before, after) = sampler.await.context("the window sampler panicked")??;
    result.server_cpu = after.server_cpu.saturating_sub(before.server_cpu);
    result.client_cpu = after.client_cpu.saturating_sub(before.client_cpu);
    result.machine_cpu = after.machine_cpu.saturating_sub(before.machine_cpu);
    if let (Some(first), Some(last)) = (&before.counters, &after.counters) {
        result.counters = Some(WindowCounters {
            delta: last.minus(first),
            elapsed: after.at.saturating_duration_since(before.at),
        });
    }
    Ok(result)
}

/// CPU time of the server and of this process, from /proc/<pid>/stat, and of
/// the whole machine, from /proc/stat.
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

    /// Busy time summed over every CPU: user, nice, system, irq, softirq and steal (not idle or iowait).
    fn machine(&self) -> anyhow::Result<Duration> {
        let path = "/proc/stat";
        let stat = std::fs::read_to_string(path).with_context(|| format!("cannot read {path}"))?;
        let line = stat
            .lines()
            .find(|line| line.starts_with("cpu "))
            .with_context(|| format!("no aggregate cpu line in {path}"))?;
        let fields = line
            .split_whitespace()
            .skip(1)
            .map(str::parse)
            .collect::<Result<Vec<u64>, _>>()
            .with_context(|| format!("unexpected {path}: {line:?}"))?;
        ensure!(fields.len() >= 8, "short cpu line in {path}: {line:?}");
        let busy: u64 = [0, 1, 2, 5, 6, 7].iter().map(|&index| fields[index]).sum();
        Ok(self.ticks(busy))
    }

    fn ticks(&self, ticks: u64) -> Duration {
        Duration::from_secs_f64(ticks as f64 / self.ticks_per_second as f64)
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
        Ok(self.ticks(ticks(11)? + ticks(12)?))
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
            Err(error) => {
                slot.errors += 1;
                if slot.first_error.is_none() {
                    slot.first_error = Some(error);
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
    grpc_addr: SocketAddr,
    admin_addr: SocketAddr,
}

impl Server {
    /// Starts `binary serve` with its data in `data_dir`: over mutual TLS with
    /// `pki`, with `--insecure-plaintext` without.
    fn start(binary: &Path, args: &Args, data_dir: PathBuf, pki: Option<&DevPki>) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&data_dir).with_context(|| format!("cannot create {}", data_dir.display()))?;
        let (grpc_addr, admin_addr) = free_ports()?;
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
        match pki {
            Some(pki) => {
                command.envs(pki.server_env());
            }
            None => {
                command.arg("--insecure-plaintext");
            }
        }
        if let Some(url) = &args.redis_url {
            command.arg("--redis-url").arg(url);
        }
        if let Some(threads) = args.server_threads {
            command.env("TOKIO_WORKER_THREADS", threads.to_string());
        }
        let child = command.spawn().with_context(|| format!("cannot start {}", binary.display()))?;
        Ok(Self {
            child,
            stopped: None,
            grpc_addr,
            admin_addr,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Polls gRPC health (overall status) until it answers SERVING.
    async fn wait_until_serving(&mut self, dialer: &Dialer) -> anyhow::Result<()> {
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
            match dialer.connect().await {
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

    /// Fails with the phase's failed-request count when the server died during it.
    fn ensure_running(&mut self, phase: &PhaseResult) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait().context("cannot poll the server process")? {
            self.stopped = Some(status);
            let first = phase.first_error.as_deref().unwrap_or("none");
            bail!(
                "the server exited during the run ({status}); {} requests failed (first: {first})",
                phase.errors
            );
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
    }
}

/// Two distinct free loopback ports: bound to port 0 together, then released.
fn free_ports() -> anyhow::Result<(SocketAddr, SocketAddr)> {
    let first = std::net::TcpListener::bind("127.0.0.1:0").context("cannot find a free port")?;
    let second = std::net::TcpListener::bind("127.0.0.1:0").context("cannot find a free port")?;
    Ok((first.local_addr()?, second.local_addr()?))
}

// ---------------------------------------------------------------------------
// Counters from the admin port

/// The server's cache and TLS handshake counters (or their growth between two scrapes).
#[derive(Debug, Default, Clone)]
struct ServerCounters {
    backend: Option<String>,
    hits: u64,
    misses: u64,
    handshakes: Handshakes,
}

/// `tls_server_handshakes_total` by outcome.
#[derive(Debug, Default, Clone, Copy)]
struct Handshakes {
    accepted: u64,
    rejected: u64,
    timed_out: u64,
}

impl ServerCounters {
    fn minus(&self, earlier: &Self) -> Self {
        Self {
            backend: self.backend.clone(),
            hits: self.hits.saturating_sub(earlier.hits),
            misses: self.misses.saturating_sub(earlier.misses),
            handshakes: Handshakes {
                accepted: self.handshakes.accepted.saturating_sub(earlier.handshakes.accepted),
                rejected: self.handshakes.rejected.saturating_sub(earlier.handshakes.rejected),
                timed_out: self.handshakes.timed_out.saturating_sub(earlier.handshakes.timed_out),
            },
        }
    }

    fn lookups(&self) -> u64 {
        self.hits + self.misses
    }
}

/// Sums `cache_lookups_total` by result and reads `tls_server_handshakes_total`
/// by outcome from `/metrics` (HTTP/1.0, so the body is neither chunked nor kept alive).
async fn scrape_counters(admin_addr: SocketAddr) -> anyhow::Result<ServerCounters> {
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

    let mut counters = ServerCounters::default();
    for line in text.lines() {
        let cache = line.starts_with("cache_lookups_total{");
        if !cache && !line.starts_with("tls_server_handshakes_total{") {
            continue;
        }
        let Some((labels, value)) = line.rsplit_once(' ') else { continue };
        let value: u64 = value.trim().parse().with_context(|| format!("cannot parse {line:?}"))?;
        if cache {
            if counters.backend.is_none() {
                counters.backend = label(labels, "backend").map(str::to_owned);
            }
            match label(labels, "result") {
                Some("hit") => counters.hits += value,
                Some("miss") => counters.misses += value,
                _ => {}
            }
        } else {
            match label(labels, "outcome") {
                Some("accepted") => counters.handshakes.accepted += value,
                Some("rejected") => counters.handshakes.rejected += value,
                Some("timeout") => counters.handshakes.timed_out += value,
                _ => {}
            }
        }
    }
    Ok(counters)
}

fn label<'a>(labels: &'a str, name: &str) -> Option<&'a str> {
    let start = labels.find(&format!("{name}=\""))? + name.len() + 2;
    let rest = &labels[start..];
    Some(&rest[..rest.find('"')?])
}

// ---------------------------------------------------------------------------
// The report

/// Everything measured on one server.
struct ServerRun {
    transport: Transport,
    pid: u32,
    idle_rss_kib: u64,
    loaded_rss_kib: u64,
    exit: ExitStatus,
    /// Counters over the server's whole life, read just before SIGTERM.
    totals: ServerCounters,
    trivial: RpcPhase,
    get_user: RpcPhase,
}

impl ServerRun {
    fn label(&self) -> &'static str {
        self.transport.label()
    }

    fn phases(&self) -> [(&'static str, &RpcPhase); 2] {
        [("trivial", &self.trivial), ("GetUser", &self.get_user)]
    }

    fn ratio_percent(&self) -> f64 {
        percent(
            self.get_user.result.requests_per_second(),
            self.trivial.result.requests_per_second(),
        )
    }

    fn server_cpu_ratio_percent(&self) -> f64 {
        let per_request = |phase: &RpcPhase| phase.result.cpu_us_per_request(phase.result.server_cpu);
        percent(per_request(&self.get_user), per_request(&self.trivial))
    }

    fn backend(&self) -> &str {
        self.totals.backend.as_deref().unwrap_or("unknown")
    }
}

struct Report<'a> {
    args: &'a Args,
    client_workers: usize,
    plaintext: ServerRun,
    mtls: ServerRun,
    handshakes: PhaseResult,
}

struct Target {
    name: String,
    measured: String,
    met: bool,
}

impl Report<'_> {
    /// Mutual TLS GetUser throughput as a share of plaintext GetUser throughput.
    fn mtls_ratio_percent(&self) -> f64 {
        percent(
            self.mtls.get_user.result.requests_per_second(),
            self.plaintext.get_user.result.requests_per_second(),
        )
    }

    fn idle_rss_mb(&self) -> f64 {
        kib_to_mb(self.plaintext.idle_rss_kib)
    }

    fn targets(&self) -> Vec<Target> {
        let get_user = &self.plaintext.get_user.result;
        let rps = get_user.requests_per_second();
        let p99 = get_user.quantile_ms(0.99);
        let ratio = self.plaintext.ratio_percent();
        let rss = self.idle_rss_mb();
        let mtls_ratio = self.mtls_ratio_percent();
        vec![
            Target {
                name: format!("GetUser throughput >= {} req/s (plaintext)", thousands(TARGET_MIN_RPS)),
                measured: format!("{} req/s", thousands(rps)),
                met: rps >= TARGET_MIN_RPS,
            },
            Target {
                name: format!("GetUser p99 <= {TARGET_MAX_P99_MS} ms (plaintext)"),
                measured: format!("{p99:.2} ms"),
                met: p99 <= TARGET_MAX_P99_MS,
            },
            Target {
                name: format!("GetUser >= {TARGET_MIN_RATIO_PERCENT}% of trivial throughput (plaintext)"),
                measured: format!("{ratio:.1}%"),
                met: ratio >= TARGET_MIN_RATIO_PERCENT,
            },
            Target {
                name: format!("idle RSS < {TARGET_MAX_IDLE_RSS_MB} MB (plaintext)"),
                measured: format!("{rss:.1} MB"),
                met: rss < TARGET_MAX_IDLE_RSS_MB,
            },
            Target {
                name: format!("mutual TLS GetUser >= {TARGET_MIN_MTLS_RATIO_PERCENT}% of plaintext GetUser throughput"),
                measured: format!("{mtls_ratio:.1}%"),
                met: mtls_ratio >= TARGET_MIN_MTLS_RATIO_PERCENT,
            },
        ]
    }

    fn all_targets_met(&self) -> bool {
        self.targets().iter().all(|target| target.met)
    }

    /// Whatever makes the figures invalid: failed requests or handshakes, an
    /// empty phase, a handshake the server rejected or timed out.
    fn failures(&self) -> Vec<String> {
        let rpc_phases = [&self.plaintext, &self.mtls]
            .into_iter()
            .flat_map(|run| run.phases().map(|(_, phase)| &phase.result));
        let failed: u64 = rpc_phases.clone().map(|phase| phase.errors).sum();
        let mut failures = Vec::new();
        if failed > 0 {
            failures.push(format!("{failed} requests failed"));
        }
        if self.handshakes.errors > 0 {
            failures.push(format!("{} handshake-phase connections failed", self.handshakes.errors));
        }
        if rpc_phases.clone().any(|phase| phase.requests == 0) || self.handshakes.requests == 0 {
            failures.push("a phase completed no requests".to_owned());
        }
        if self.handshakes.accepted_handshakes() == 0 {
            failures.push("the server counted no accepted handshake in the handshake window".to_owned());
        }
        let refused = self.mtls.totals.handshakes;
        if refused.rejected + refused.timed_out > 0 {
            failures.push(format!(
                "the mutual TLS server rejected {} and timed out {} handshakes",
                refused.rejected, refused.timed_out
            ));
        }
        failures
    }

    fn render(&self) -> String {
        let mut out = String::new();
        self.render_rpc_phases(&mut out);
        self.render_handshakes(&mut out);
        self.render_targets(&mut out);
        out
    }

    fn render_rpc_phases(&self, out: &mut String) {
        let args = self.args;
        let cpus = std::thread::available_parallelism().map(|cpus| cpus.get()).unwrap_or(1);
        let server_threads = args
            .server_threads
            .map_or_else(|| format!("{cpus} (one per CPU)"), |threads| threads.to_string());
        let (plaintext, mtls) = (&self.plaintext, &self.mtls);
        let _ = writeln!(out, "## GetUser on a cache hit, plaintext and mutual TLS\n");
        let _ = writeln!(
            out,
            "{} in flight over {} long-lived HTTP/2 connections; {} s warm-up + {} s measured per phase; phases in this order: \
             trivial plaintext, trivial mutual TLS, GetUser plaintext, GetUser mutual TLS; cache backend: {}; server log filter: {}; \
             server runtime workers: {server_threads}; load generator: tokio multi-thread, {} workers, same machine ({cpus} CPUs). \
             Mutual TLS: TLS 1.3, the load generator presents `{}` and accepts only `{}`. The last column is the busy time of \
             every CPU (`/proc/stat`) minus the server's and the load generator's, over the window: how much other work on the \
             machine competed with the phase.\n",
            args.concurrency,
            args.connections,
            args.warmup_seconds,
            args.seconds,
            plaintext.backend(),
            args.server_log_filter,
            self.client_workers,
            dev_set::spiffe_id(TRUST_DOMAIN, NAMESPACE, OPERATOR_NAME),
            dev_set::spiffe_id(TRUST_DOMAIN, NAMESPACE, SERVER_NAME),
        );
        let _ = writeln!(
            out,
            "| transport | endpoint | requests/s | p50 ms | p99 ms | max ms | errors | server CPU µs/req | load-generator CPU µs/req \
             | other CPU use, CPUs |"
        );
        let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
        for run in [plaintext, mtls] {
            for (name, phase) in [
                (format!("`{TRIVIAL_ENDPOINT}` (trivial, ceiling)"), &run.trivial.result),
                (format!("`{GET_USER_ENDPOINT}` (cache hit)"), &run.get_user.result),
            ] {
                let _ = writeln!(
                    out,
                    "| {} | {name} | {} | {:.2} | {:.2} | {:.2} | {} | {:.1} | {:.1} | {:.2} |",
                    run.label(),
                    thousands(phase.requests_per_second()),
                    phase.quantile_ms(0.5),
                    phase.quantile_ms(0.99),
                    phase.max_ms(),
                    phase.errors,
                    phase.cpu_us_per_request(phase.server_cpu),
                    phase.cpu_us_per_request(phase.client_cpu),
                    phase.other_cpus()
                );
            }
        }
        let _ = writeln!(out);
        for (name, bold, base, tls) in [
            ("GetUser", true, &plaintext.get_user.result, &mtls.get_user.result),
            ("trivial", false, &plaintext.trivial.result, &mtls.trivial.result),
        ] {
            let ratio = format!("{:.1}%", percent(tls.requests_per_second(), base.requests_per_second()));
            let (base_p99, tls_p99) = (base.quantile_ms(0.99), tls.quantile_ms(0.99));
            let (base_cpu, tls_cpu) = (base.cpu_us_per_request(base.server_cpu), tls.cpu_us_per_request(tls.server_cpu));
            let _ = writeln!(
                out,
                "- mutual TLS / plaintext, {name}: throughput {}; p99 {tls_p99:.2} ms against {base_p99:.2} ms ({:+.2} ms, {:.0}%); \
                 server CPU per request {tls_cpu:.1} µs against {base_cpu:.1} µs ({:.0}%)",
                if bold { format!("**{ratio}**") } else { ratio },
                tls_p99 - base_p99,
                percent(tls_p99, base_p99),
                percent(tls_cpu, base_cpu)
            );
        }
        let _ = writeln!(
            out,
            "- GetUser / trivial throughput: plaintext **{:.1}%**, mutual TLS {:.1}%",
            plaintext.ratio_percent(),
            mtls.ratio_percent()
        );
        let _ = writeln!(
            out,
            "- server CPU per request, GetUser / trivial: plaintext {:.0}%, mutual TLS {:.0}% (CPU time per request is steadier \
             than throughput on a shared machine)",
            plaintext.server_cpu_ratio_percent(),
            mtls.server_cpu_ratio_percent()
        );
        let _ = writeln!(
            out,
            "- idle RSS (after start-up and {} ms idle, before load): plaintext **{:.1} MB** ({} KiB), mutual TLS {:.1} MB ({} KiB)",
            args.idle_ms,
            kib_to_mb(plaintext.idle_rss_kib),
            plaintext.idle_rss_kib,
            kib_to_mb(mtls.idle_rss_kib),
            mtls.idle_rss_kib
        );
        let _ = writeln!(
            out,
            "- RSS after load: plaintext {:.1} MB ({} KiB), mutual TLS {:.1} MB ({} KiB, after the handshake phase too)",
            kib_to_mb(plaintext.loaded_rss_kib),
            plaintext.loaded_rss_kib,
            kib_to_mb(mtls.loaded_rss_kib),
            mtls.loaded_rss_kib
        );
        let _ = writeln!(
            out,
            "- cache lookups during the GetUser phase: plaintext {} hits, {} misses; mutual TLS {} hits, {} misses",
            plaintext.get_user.counters.hits,
            plaintext.get_user.counters.misses,
            mtls.get_user.counters.hits,
            mtls.get_user.counters.misses
        );
        let _ = writeln!(
            out,
            "- TLS handshakes accepted by the mutual TLS server during its trivial and GetUser phases: {} and {} (one per connection)",
            mtls.trivial.counters.handshakes.accepted, mtls.get_user.counters.handshakes.accepted
        );
        let _ = writeln!(
            out,
            "- servers after SIGTERM: plaintext (pid {}) {}; mutual TLS (pid {}) {}",
            plaintext.pid, plaintext.exit, mtls.pid, mtls.exit
        );
        for run in [plaintext, mtls] {
            for (name, phase) in run.phases() {
                if let Some(error) = &phase.result.first_error {
                    let _ = writeln!(
                        out,
                        "- **{} {} {name} requests failed**; first: {error}",
                        phase.result.errors,
                        run.label()
                    );
                }
            }
            let lookups = &run.get_user.counters;
            if lookups.misses > 0 || lookups.hits == 0 {
                let _ = writeln!(
                    out,
                    "- **warning**: not every {} GetUser was a cache hit; these are not cache-hit figures",
                    run.label()
                );
            }
            if run.trivial.counters.lookups() > 0 {
                let _ = writeln!(out, "- **warning**: the cache was used during the {} trivial phase", run.label());
            }
            if run.backend() != plaintext.backend() {
                let _ = writeln!(out, "- **warning**: the {} server used the {} cache", run.label(), run.backend());
            }
        }
        let expected = u64::from(args.connections);
        if [&mtls.trivial, &mtls.get_user]
            .iter()
            .any(|phase| phase.counters.handshakes.accepted != expected)
        {
            let _ = writeln!(
                out,
                "- **warning**: a mutual TLS phase did not cost exactly {expected} handshakes; its connections were not all long-lived"
            );
        }
        let _ = writeln!(out);
    }

    fn render_handshakes(&self, out: &mut String) {
        let args = self.args;
        let phase = &self.handshakes;
        let _ = writeln!(out, "## TLS handshakes per second\n");
        let _ = writeln!(
            out,
            "{} client tasks against the mutual TLS server, each looping: TCP connect, a full TLS 1.3 handshake presenting the \
             operator certificate (neither side resumes sessions), a wait for the server's first HTTP/2 bytes (sent once it has \
             verified the client certificate), close. {} s warm-up + {} s measured. The rate is the server's own \
             `tls_server_handshakes_total{{outcome=\"accepted\"}}` over the window, scraped from `/metrics` at both edges; the \
             client column counts connections started in the window that got the server's bytes.\n",
            args.handshake_tasks, args.handshake_warmup_seconds, args.handshake_seconds
        );
        let _ = writeln!(
            out,
            "| handshakes/s (server) | accepted in window (server) | completed in window (client) | connection set-up p50 ms | \
             p99 ms | max ms | errors | server CPU µs/handshake | load-generator CPU µs/handshake | other CPU use, CPUs |"
        );
        let _ = writeln!(out, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        let accepted = phase.accepted_handshakes();
        let _ = writeln!(
            out,
            "| **{}** | {} | {} | {:.2} | {:.2} | {:.2} | {} | {:.1} | {:.1} | {:.2} |\n",
            thousands(phase.handshakes_per_second()),
            thousands(accepted as f64),
            thousands(phase.requests as f64),
            phase.quantile_ms(0.5),
            phase.quantile_ms(0.99),
            phase.max_ms(),
            phase.errors,
            cpu_us_per(phase.server_cpu, accepted),
            cpu_us_per(phase.client_cpu, accepted),
            phase.other_cpus()
        );
        let in_window = phase
            .counters
            .as_ref()
            .map(|counters| counters.delta.handshakes)
            .unwrap_or_default();
        let total = self.mtls.totals.handshakes;
        let _ = writeln!(
            out,
            "- handshakes rejected / timed out: {} / {} in the window, {} / {} over the mutual TLS server's whole run \
             ({} accepted in all)",
            in_window.rejected,
            in_window.timed_out,
            total.rejected,
            total.timed_out,
            thousands(total.accepted as f64)
        );
        if let Some(counters) = &phase.counters {
            let _ = writeln!(out, "- time between the two scrapes: {:.3} s", counters.elapsed.as_secs_f64());
        }
        if let Some(error) = &phase.first_error {
            let _ = writeln!(out, "- **{} connections failed**; first: {error}", phase.errors);
        }
        let _ = writeln!(out);
    }

    fn render_targets(&self, out: &mut String) {
        let backend = self.plaintext.backend();
        let note = if backend == "memory" {
            String::new()
        } else {
            format!(" (set for the in-process cache; this run used {backend})")
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
    }
}

fn percent(part: f64, whole: f64) -> f64 {
    100.0 * part / whole
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
