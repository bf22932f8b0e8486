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
//!    plaintext server's RSS after load and stops it with SIGTERM. With
//!    `--redis-url`, Redis's own `INFO commandstats` and `INFO cpu` are also
//!    read at both edges of every measured window, so the report shows the
//!    Redis commands each GetUser cost (one GET, and no PING or UNWATCH, is
//!    the target) and Redis's CPU time per request;
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
use std::path::{Path, PathBuf};
use std::process::{ExitCode, ExitStatus};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, ensure};
use clap::Parser;
use suite_devcerts::dev_set::{self, OPERATOR_NAME};
use suite_proto::suite::user::v1 as pb;
use suite_proto::suite::user::v1::user_service_client::UserServiceClient;
use suite_tests::bench::cpu::CpuClock;
use suite_tests::bench::format::{Target, describe, kib_to_mb, percent, targets_table, thousands};
use suite_tests::bench::load::{Call, PhaseResult, WindowProbe, cpu_us_per, run_load, run_load_probed};
use suite_tests::bench::metrics::ServerCounters;
use suite_tests::bench::pki::{DevPki, Dialer, NAMESPACE, TRUST_DOMAIN};
use suite_tests::bench::process::{ServerProcess, sibling_binary};
use suite_tests::bench::redis::{RedisCounters, RedisProbe};
use suite_tests::bench::{LoadShape, RPC_TIMEOUT, conclude, run_dir, with_timeout};
use suite_tls::MtlsConnector;
use tokio::io::AsyncReadExt as _;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

/// Targets for the plaintext server; the first three apply to the embedded default (in-process cache).
const TARGET_MIN_RPS: f64 = 20_000.0;
const TARGET_MAX_P99_MS: f64 = 5.0;
const TARGET_MIN_RATIO_PERCENT: f64 = 40.0;
/// With `--redis-url`: GetUser cache hits served from Redis, as a share of the trivial endpoint's throughput.
const TARGET_MIN_REDIS_RATIO_PERCENT: f64 = 60.0;
/// With `--redis-url`: Redis commands per GetUser cache hit may stray this far
/// from one GET and no PING or UNWATCH (the windows' edges, other clients of a shared Redis).
const TARGET_REDIS_COMMANDS_TOLERANCE: f64 = 0.01;
const TARGET_MAX_IDLE_RSS_MB: f64 = 15.0;
/// Mutual TLS GetUser throughput as a share of plaintext GetUser throughput.
const TARGET_MIN_MTLS_RATIO_PERCENT: f64 = 85.0;

const TRIVIAL_ENDPOINT: &str = "grpc.health.v1.Health/Check";
const GET_USER_ENDPOINT: &str = "suite.user.v1.UserService/GetUser";

const SERVER_NAME: &str = "user-service";
const DEFAULT_AUTHZ_POLICY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/dev/user-service.authz.toml");

#[derive(Debug, Parser)]
#[command(
    name = "suite-bench",
    about = "GetUser cache-hit benchmark against the real user-service binary, beside a trivial endpoint as the ceiling, \
             in plaintext and over mutual TLS, and TLS handshakes per second."
)]
struct Args {
    #[command(flatten)]
    load: LoadShape,

    /// The `user-service` binary to start; defaults to the one beside this executable.
    #[arg(long)]
    server_bin: Option<PathBuf>,

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
    /// instead of the in-process one, and read its `INFO commandstats` and `INFO cpu`
    /// at the edges of every measured window (a `redis://` URL; any other only
    /// reaches the servers). The Redis targets then replace the in-process ones.
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    redis_url: Option<String>,

    /// The servers' `--log-filter`.
    #[arg(long, default_value = "warn")]
    server_log_filter: String,

    /// Worker threads of each server's runtime, passed as TOKIO_WORKER_THREADS (default: tokio's, one per CPU).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    server_threads: Option<u16>,
}

fn main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    args.load.runtime()?.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let server_bin = sibling_binary(args.server_bin.as_deref(), SERVER_NAME)?;
    // Certificates and both servers' data; removed when the run ends, after the servers have stopped.
    let run_dir = run_dir("suite-bench-")?;
    let pki = MtlsSetup::generate(run_dir.path().join("certs"), &args.authz_policy)?;

    let redis = RedisWindow::new(args.redis_url.as_deref());
    let mut plaintext = Subject::start(&server_bin, &args, run_dir.path().join("plaintext"), None, &redis).await?;
    let mut mtls = Subject::start(&server_bin, &args, run_dir.path().join("mtls"), Some(&pki), &redis).await?;

    let plaintext_trivial = plaintext.measure(Rpc::Health, &args).await?;
    let mtls_trivial = mtls.measure(Rpc::Health, &args).await?;
    let plaintext_get_user = plaintext.measure(Rpc::GetUser, &args).await?;
    let mtls_get_user = mtls.measure(Rpc::GetUser, &args).await?;
    let plaintext = plaintext.finish(plaintext_trivial, plaintext_get_user).await?;

    let handshakes = mtls.measure_handshakes(&args).await?;
    let mtls = mtls.finish(mtls_trivial, mtls_get_user).await?;

    let report = Report {
        args: &args,
        redis_probe: redis
            .probe
            .as_ref()
            .map(|probe| probe.as_ref().map(|probe| probe.addr().to_owned()).map_err(Clone::clone)),
        client_workers: tokio::runtime::Handle::current().metrics().num_workers(),
        plaintext,
        mtls,
        handshakes,
    };
    conclude(&report.render(), &report.failures(), report.all_targets_met(), &args.load)
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

// ---------------------------------------------------------------------------
// Transport: the development PKI and how the load generator connects

/// What the mutual TLS server and the load generator need: the run's
/// development certificates, the server's policy and the operator's connector.
struct MtlsSetup {
    pki: DevPki,
    authz_policy: PathBuf,
    operator: MtlsConnector,
}

impl MtlsSetup {
    fn generate(dir: PathBuf, authz_policy: &Path) -> anyhow::Result<Self> {
        let authz_policy = authz_policy
            .canonicalize()
            .with_context(|| format!("no authorization policy at {} (--authz-policy)", authz_policy.display()))?;
        let pki = DevPki::generate(dir)?;
        let operator = pki.connector(OPERATOR_NAME, SERVER_NAME)?;
        Ok(Self {
            pki,
            authz_policy,
            operator,
        })
    }
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

// ---------------------------------------------------------------------------
// One server under test and its phases

/// A running server, the way to reach it, and what was prepared on it.
struct Subject {
    transport: Transport,
    server: ServerProcess,
    dialer: Dialer,
    cpu: CpuClock,
    idle_rss_kib: u64,
    user_id: String,
    redis: RedisWindow,
}

/// One RPC phase and the server's counters across it (warm-up included).
struct RpcPhase {
    result: PhaseResult,
    counters: ServerCounters,
    /// What Redis counted over the measured window: `None` without `--redis-url`.
    redis: Option<Result<RedisCounters, String>>,
}

/// Redis's own counters at the edges of a measured window, when the servers use Redis.
#[derive(Clone)]
struct RedisWindow {
    /// `None` without `--redis-url`; an error when its URL cannot be probed.
    probe: Option<Result<RedisProbe, String>>,
}

impl RedisWindow {
    fn new(redis_url: Option<&str>) -> Self {
        Self {
            probe: redis_url.map(|url| RedisProbe::from_url(url).map_err(|error| format!("{error:#}"))),
        }
    }

    /// The growth between two readings.
    fn delta(before: &<Self as WindowProbe>::Reading, after: &<Self as WindowProbe>::Reading) -> Option<Result<RedisCounters, String>> {
        match (before, after) {
            (Some(Ok(before)), Some(Ok(after))) => Some(Ok(after.minus(before))),
            (Some(Err(error)), _) | (_, Some(Err(error))) => Some(Err(error.clone())),
            _ => None,
        }
    }
}

impl WindowProbe for RedisWindow {
    type Reading = Option<Result<RedisCounters, String>>;

    async fn read(&self) -> Self::Reading {
        match self.probe.as_ref()? {
            Ok(probe) => Some(probe.read().await.map_err(|error| format!("{error:#}"))),
            Err(error) => Some(Err(error.clone())),
        }
    }
}

impl Subject {
    /// Starts the server (mutual TLS with `pki`, plaintext without), waits for
    /// SERVING, idles, reads the idle RSS and puts the benchmark's user in the cache.
    async fn start(binary: &Path, args: &Args, data_dir: PathBuf, pki: Option<&MtlsSetup>, redis: &RedisWindow) -> anyhow::Result<Self> {
        let transport = if pki.is_some() { Transport::Mtls } else { Transport::Plaintext };
        let mut server = start_server(binary, args, data_dir, pki)?;
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
            cpu: CpuClock::new(vec![server.pid()]),
            server,
            dialer,
            idle_rss_kib,
            user_id,
            redis: redis.clone(),
        })
    }

    /// One RPC phase over `--connections` fresh long-lived connections.
    async fn measure(&mut self, rpc: Rpc, args: &Args) -> anyhow::Result<RpcPhase> {
        eprintln!(
            "suite-bench: {} {}: {}s warm-up + {}s measured",
            self.transport.label(),
            rpc.method(),
            args.load.warmup_seconds,
            args.load.seconds
        );
        let before = ServerCounters::scrape(self.server.admin_addr).await?;
        let mut channels = Vec::new();
        for _ in 0..args.load.connections {
            channels.push(self.dialer.connect().await.context("cannot open a benchmark connection")?);
        }
        let calls = (0..args.load.concurrency as usize)
            .map(|slot| rpc.call(channels[slot % channels.len()].clone(), &self.user_id))
            .collect();
        drop(channels);
        let (result, redis_before, redis_after) = run_load_probed(
            calls,
            self.cpu.clone(),
            args.load.warmup(),
            args.load.window(),
            None,
            self.redis.clone(),
        )
        .await?;
        self.server.ensure_running(&result)?;
        let after = ServerCounters::scrape(self.server.admin_addr).await?;
        Ok(RpcPhase {
            result,
            counters: after.minus(&before),
            redis: RedisWindow::delta(&redis_before, &redis_after),
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
            self.cpu.clone(),
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
        let totals = ServerCounters::scrape(self.server.admin_addr).await?;
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

/// Starts `user-service serve` with its data in `data_dir`: over mutual TLS
/// with `pki`, with `--insecure-plaintext` without.
fn start_server(binary: &Path, args: &Args, data_dir: PathBuf, pki: Option<&MtlsSetup>) -> anyhow::Result<ServerProcess> {
    std::fs::create_dir_all(&data_dir).with_context(|| format!("cannot create {}", data_dir.display()))?;
    ServerProcess::start(binary, |command| {
        command
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--log-filter")
            .arg(&args.server_log_filter);
        match pki {
            Some(pki) => {
                command.envs(pki.pki.server_env(SERVER_NAME, &pki.authz_policy));
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
    })
}

// ---------------------------------------------------------------------------
// What the load generator calls

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

impl Call for RpcCall {
    async fn call(&mut self) -> Result<(), String> {
        match self {
            Self::Health(client) => {
                let response: HealthCheckResponse = client
                    .check(HealthCheckRequest { service: String::new() })
                    .await
                    .map_err(|status| describe(&status))?
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
                    .map_err(|status| describe(&status))?
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
    /// The Redis address whose counters were read, or why they could not be; `None` without `--redis-url`.
    redis_probe: Option<Result<String, String>>,
    client_workers: usize,
    plaintext: ServerRun,
    mtls: ServerRun,
    handshakes: PhaseResult,
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

    /// Whether the servers used Redis (as their `/metrics` say).
    fn on_redis(&self) -> bool {
        self.plaintext.backend() == "redis"
    }

    /// The targets `--enforce` holds the run to: with Redis, its own throughput
    /// share and commands per call in place of the in-process cache's.
    fn targets(&self) -> Vec<Target> {
        let ratio = self.plaintext.ratio_percent();
        let rss = self.idle_rss_mb();
        let mtls_ratio = self.mtls_ratio_percent();
        let mut targets = if self.on_redis() {
            vec![
                Target {
                    name: format!("GetUser cache hit on Redis >= {TARGET_MIN_REDIS_RATIO_PERCENT}% of trivial throughput (plaintext)"),
                    measured: format!("{ratio:.1}%"),
                    met: ratio >= TARGET_MIN_REDIS_RATIO_PERCENT,
                },
                self.redis_commands_target(),
            ]
        } else {
            self.in_process_targets()
        };
        targets.extend([
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
        ]);
        targets
    }

    /// Throughput, p99 and ratio targets set for the in-process cache.
    fn in_process_targets(&self) -> Vec<Target> {
        let get_user = &self.plaintext.get_user.result;
        let rps = get_user.requests_per_second();
        let p99 = get_user.quantile_ms(0.99);
        let ratio = self.plaintext.ratio_percent();
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
        ]
    }

    /// One GET per GetUser, and no PING or UNWATCH, in both GetUser windows.
    fn redis_commands_target(&self) -> Target {
        let name = "Redis commands per GetUser cache hit: one GET, no PING or UNWATCH (plaintext, mutual TLS)".to_owned();
        let mut measured = Vec::new();
        let mut met = true;
        for run in [&self.plaintext, &self.mtls] {
            match &run.get_user.redis {
                Some(Ok(counters)) => {
                    let per_call = |command: &str| per_request(counters.calls_of(command), &run.get_user.result);
                    let (get, ping, unwatch) = (per_call("get"), per_call("ping"), per_call("unwatch"));
                    met &= (get - 1.0).abs() <= TARGET_REDIS_COMMANDS_TOLERANCE && ping + unwatch <= TARGET_REDIS_COMMANDS_TOLERANCE;
                    measured.push(format!("GET {get:.3}, PING {ping:.3}, UNWATCH {unwatch:.3}"));
                }
                Some(Err(error)) => {
                    met = false;
                    measured.push(format!("unreadable: {error}"));
                }
                None => {
                    met = false;
                    measured.push("not read".to_owned());
                }
            }
        }
        Target {
            name,
            measured: measured.join(" / "),
            met,
        }
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
        self.render_redis(&mut out);
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
            args.load.concurrency,
            args.load.connections,
            args.load.warmup_seconds,
            args.load.seconds,
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
        let expected = u64::from(args.load.connections);
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

    /// Redis's own count of the commands each phase sent it, per request, and its CPU time.
    fn render_redis(&self, out: &mut String) {
        let Some(probe) = &self.redis_probe else { return };
        let _ = writeln!(out, "## Redis commands per call\n");
        let addr = match probe {
            Ok(addr) => addr,
            Err(error) => {
                let _ = writeln!(out, "Redis's counters were not read: {error}\n");
                return;
            }
        };
        let _ = writeln!(
            out,
            "`INFO commandstats` and `INFO cpu` of the Redis at `{addr}`, read at both edges of each measured window. Every \
             command any client sent that Redis in the window counts, so on a Redis shared with other work the trivial rows \
             (where this run sent none) show the background.\n"
        );
        let _ = writeln!(
            out,
            "| transport | endpoint | requests | Redis commands | per request | GET | PING | UNWATCH | other commands | Redis CPU µs/req |"
        );
        let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|---:|---|---:|");
        for run in [&self.plaintext, &self.mtls] {
            for (name, phase) in run.phases() {
                let requests = &phase.result;
                match &phase.redis {
                    Some(Ok(counters)) => {
                        let others: Vec<String> = counters
                            .calls
                            .iter()
                            .filter(|(command, _)| !["get", "ping", "unwatch"].contains(&command.as_str()))
                            .map(|(command, calls)| format!("{command} {calls}"))
                            .collect();
                        let per_call = |command: &str| per_request(counters.calls_of(command), requests);
                        let _ = writeln!(
                            out,
                            "| {} | {name} | {} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {} | {:.1} |",
                            run.label(),
                            thousands(requests.requests as f64),
                            thousands(counters.total_calls() as f64),
                            per_request(counters.total_calls(), requests),
                            per_call("get"),
                            per_call("ping"),
                            per_call("unwatch"),
                            if others.is_empty() { "none".to_owned() } else { others.join(", ") },
                            requests.cpu_us_per_request(counters.cpu)
                        );
                    }
                    Some(Err(error)) => {
                        let _ = writeln!(
                            out,
                            "| {} | {name} | {} | unreadable: {error} | | | | | | |",
                            run.label(),
                            requests.requests
                        );
                    }
                    None => {}
                }
            }
        }
        let _ = writeln!(out);
    }

    fn render_targets(&self, out: &mut String) {
        if self.on_redis() {
            targets_table(out, " (Redis cache)", &self.targets());
            let _ = writeln!(out);
            targets_table(
                out,
                " (set for the in-process cache; this run used redis: for information, not enforced)",
                &self.in_process_targets(),
            );
        } else {
            let backend = self.plaintext.backend();
            let note = if backend == "memory" {
                String::new()
            } else {
                format!(" (this run used the {backend} cache)")
            };
            targets_table(out, &note, &self.targets());
        }
    }
}

/// `count` per request of the phase's measured window.
fn per_request(count: u64, phase: &PhaseResult) -> f64 {
    if phase.requests == 0 {
        0.0
    } else {
        count as f64 / phase.requests as f64
    }
}
