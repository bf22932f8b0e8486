//! `order-bench`: CreateOrder and GetOrder end to end over mutual TLS against
//! the real release binaries, and what the shared client stack
//! (`suite_grpc::client::Dependency`: deadline, retries, breaker, bulkhead)
//! costs beside a bare tonic client making the same call in the same run.
//!
//! What a run does:
//! 1. generates a development CA and certificates with `suite-devcerts` in a
//!    fresh temporary directory, which also holds both services' data and is
//!    removed at the end;
//! 2. starts `user-service serve` and `order-service serve` (pointed at the
//!    user service) on free loopback ports with a cleared environment, each over
//!    mutual TLS with its own certificate and the repository's
//!    `config/dev/<service>.authz.toml`, on embedded defaults (SQLite files,
//!    in-process cache) unless `--user-database-url`, `--order-database-url`
//!    or `--redis-url` say otherwise;
//! 3. waits for both to answer SERVING, then, as the `operator` identity,
//!    creates one user and one order per in-flight slot;
//! 4. **client stack overhead**: GetUser against the user service as the
//!    `order-service` identity (the call the order service makes for every
//!    CreateOrder), over one long-lived mutual TLS connection shared by both
//!    variants, as the order service's own channel is: a bare tonic
//!    `UserServiceClient` call carrying the same `grpc-timeout`, and the very
//!    call `order-service` makes through `Dependency::call` with the shipped
//!    `DependencyConfig::default()`. `--stack-rounds` short rounds of each, bare
//!    first in odd rounds and stack first in even ones (bare, stack, stack,
//!    bare, ...), so slow drift on the shared machine and the order within a
//!    round fall on both alike; figures are summed per variant. The stack's
//!    own metrics must count one attempt per call, no retry and no local
//!    rejection. Before that, the stack's own work per call is timed without a
//!    network (an attempt that returns at once, through `Dependency::call` and
//!    directly), a figure the machine's noise does not drown;
//! 5. **end to end**: `--concurrency` requests in flight over `--connections`
//!    connections to the order service as the operator: CreateOrder (a fresh
//!    idempotency key per call, so every call inserts an order after asking
//!    the user service whether the user exists), then GetOrder of the prepared
//!    orders. The order service's `/metrics` must show one attempt to the user
//!    service per CreateOrder, no retry, no rejection, and a closed breaker;
//! 6. **balancing**: starts `--replicas - 1` more user-service replicas (the
//!    same database) and a second order service pointed at all of them (a
//!    comma-separated `--user-service-addr`), then measures CreateOrder through
//!    the order service pointed at one replica and through the one balancing
//!    over all, alternating `--balance-rounds` rounds (one, all; all, one; ...).
//!    Reports the spread of GetUser calls over the replicas (max/min), the
//!    order services' CPU per call, and the balancer's own work per call
//!    (`suite_balance::Pool::pick` and the lease's release, timed without a
//!    network) as a share of the balancing order service's CPU per call;
//! 7. reads the services' RSS, stops them with SIGTERM and prints a Markdown report.
//!
//! Every phase reports CPU time per request of the services and of the load
//! generator over its window, and the CPU time the rest of the machine used.
//!
//! Exit status: 0 when every request succeeded and the counters agree (the
//! target is reported, not asserted, unless `--enforce`), 1 when a request
//! failed, a counter disagreed or the run broke, 2 when `--enforce` is set and
//! the target was missed.

// Printing a report on stdout is this binary's whole purpose.
#![allow(clippy::print_stdout)]

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, ExitStatus};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use clap::Parser;
use prometheus_client::registry::Registry;
use suite_devcerts::dev_set::OPERATOR_NAME;
use suite_grpc::client::{Attempt, ClientMetrics, Deadline, Dependency, DependencyConfig, Idempotency, TracedChannel};
use suite_proto::suite::order::v1 as order_pb;
use suite_proto::suite::order::v1::order_service_client::OrderServiceClient;
use suite_proto::suite::user::v1 as user_pb;
use suite_proto::suite::user::v1::user_service_client::UserServiceClient;
use suite_tests::bench::cpu::CpuClock;
use suite_tests::bench::format::{Target, describe, kib_to_mb, percent, targets_table, thousands};
use suite_tests::bench::load::{Call, PhaseResult, cpu_us_per, run_load};
use suite_tests::bench::metrics::{self, scrape};
use suite_tests::bench::pki::{DevPki, Dialer};
use suite_tests::bench::process::{ServerProcess, sibling_binary};
use suite_tests::bench::{LoadShape, conclude, run_dir, with_timeout};
use tonic::transport::{Channel, Endpoint};

/// The client stack may cost at most this share of a bare client's GetUser throughput.
const TARGET_MAX_STACK_OVERHEAD_PERCENT: f64 = 5.0;
/// The balancer's own work per call, as a share of the calling service's CPU per call.
const TARGET_MAX_BALANCER_CPU_PERCENT: f64 = 2.0;
/// GetUser calls served by the busiest replica over those served by the idlest.
const TARGET_MAX_SPREAD: f64 = 1.3;

const USER_SERVICE: &str = "user-service";
const ORDER_SERVICE: &str = "order-service";
const GET_USER_ENDPOINT: &str = "suite.user.v1.UserService/GetUser";
const CREATE_ORDER_ENDPOINT: &str = "suite.order.v1.OrderService/CreateOrder";
const GET_ORDER_ENDPOINT: &str = "suite.order.v1.OrderService/GetOrder";
const CONFIG_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/dev");

#[derive(Debug, Parser)]
#[command(
    name = "order-bench",
    about = "CreateOrder and GetOrder end to end over mutual TLS against the real user-service and order-service \
             binaries, and the client stack's overhead beside a bare tonic client."
)]
struct Args {
    #[command(flatten)]
    load: LoadShape,

    /// The `user-service` binary; defaults to the one beside this executable.
    #[arg(long)]
    user_service_bin: Option<PathBuf>,

    /// The `order-service` binary; defaults to the one beside this executable.
    #[arg(long)]
    order_service_bin: Option<PathBuf>,

    /// Rounds of each client-stack variant (bare, stack; stack, bare; bare, stack; ...).
    /// Many short rounds cancel the machine's drift better than a few long ones.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    stack_rounds: u32,

    /// Length of each client-stack variant's measured window, in seconds.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..))]
    stack_seconds: u64,

    /// Warm-up before each client-stack variant's window, in milliseconds (the connection stays open and warm).
    #[arg(long, default_value_t = 500)]
    stack_warmup_ms: u64,

    /// The user service's database (passed on as its DATABASE_URL); default: its SQLite file.
    #[arg(long)]
    user_database_url: Option<String>,

    /// The order service's database (passed on as its DATABASE_URL); default: its SQLite file.
    #[arg(long)]
    order_database_url: Option<String>,

    /// Run the user service with this Redis cache instead of the in-process one.
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    redis_url: Option<String>,

    /// The services' `--log-filter`.
    #[arg(long, default_value = "warn")]
    server_log_filter: String,

    /// User-service replicas the balancing order service spreads its calls over.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(2..=16))]
    replicas: u32,

    /// Rounds of each balancing variant (one replica, all replicas; all, one; ...),
    /// each `--stack-seconds` long after `--stack-warmup-ms`.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    balance_rounds: u32,
}

fn main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    args.load.runtime()?.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let user_bin = sibling_binary(args.user_service_bin.as_deref(), USER_SERVICE)?;
    let order_bin = sibling_binary(args.order_service_bin.as_deref(), ORDER_SERVICE)?;
    // Certificates and both services' data; removed when the run ends, after the services have stopped.
    let run_dir = run_dir("order-bench-")?;
    let pki = DevPki::generate(run_dir.path().join("certs"))?;

    let mut user = start_service(USER_SERVICE, &user_bin, &args, &pki, run_dir.path(), |command| {
        if let Some(url) = &args.user_database_url {
            command.env("DATABASE_URL", url);
        }
        if let Some(url) = &args.redis_url {
            command.arg("--redis-url").arg(url);
        }
    })?;
    let user_addr = user.grpc_addr;
    let mut order = start_service(ORDER_SERVICE, &order_bin, &args, &pki, run_dir.path(), |command| {
        command.arg("--user-service-addr").arg(user_addr.to_string());
        if let Some(url) = &args.order_database_url {
            command.env("DATABASE_URL", url);
        }
    })?;
    let to_user = Dialer::new(user.grpc_addr, Some(pki.connector(OPERATOR_NAME, USER_SERVICE)?))?;
    let to_order = Dialer::new(order.grpc_addr, Some(pki.connector(OPERATOR_NAME, ORDER_SERVICE)?))?;
    user.wait_until_serving(&to_user).await?;
    order.wait_until_serving(&to_order).await?;

    let user_id = create_user(&to_user).await?;
    let order_ids = create_orders(&to_order, &user_id, args.load.concurrency).await?;

    let as_order_service = Dialer::new(user.grpc_addr, Some(pki.connector(ORDER_SERVICE, USER_SERVICE)?))?;
    let stack = measure_stack_overhead(
        &args,
        (user.grpc_addr, &as_order_service),
        CpuClock::new(vec![user.pid()]),
        &user_id,
    )
    .await?;
    user.ensure_running(&stack.stack)?;

    let both = CpuClock::new(vec![order.pid(), user.pid()]);
    let channels = to_order.connect_many(args.load.connections).await?;
    let before = UserServiceCalls::scrape(order.admin_addr).await?;
    let issued = Arc::new(AtomicU64::new(0));
    let create_calls = (0..args.load.concurrency as usize)
        .map(|slot| CreateOrderCall {
            client: OrderServiceClient::new(channels[slot % channels.len()].clone()),
            user_id: user_id.clone(),
            key_prefix: format!("bench-{}-{slot}", unix_nanos()),
            issued: issued.clone(),
        })
        .collect();
    eprintln!(
        "order-bench: {CREATE_ORDER_ENDPOINT}: {}s warm-up + {}s measured",
        args.load.warmup_seconds, args.load.seconds
    );
    let create = run_load(create_calls, both.clone(), args.load.warmup(), args.load.window(), None).await?;
    order.ensure_running(&create)?;
    user.ensure_running(&create)?;
    let during_create = UserServiceCalls::scrape(order.admin_addr).await?.minus(&before);

    let get_calls = (0..args.load.concurrency as usize)
        .map(|slot| GetOrderCall {
            client: OrderServiceClient::new(channels[slot % channels.len()].clone()),
            id: order_ids[slot % order_ids.len()].clone(),
        })
        .collect();
    eprintln!(
        "order-bench: {GET_ORDER_ENDPOINT}: {}s warm-up + {}s measured",
        args.load.warmup_seconds, args.load.seconds
    );
    let get = run_load(get_calls, both, args.load.warmup(), args.load.window(), None).await?;
    order.ensure_running(&get)?;
    drop(channels);

    let balancing = measure_balancing(&args, &pki, run_dir.path(), (&mut user, &mut order), &user_id).await?;

    let end_to_end = EndToEnd {
        create,
        create_calls_issued: issued.load(Ordering::Relaxed),
        user_service_calls: during_create,
        breaker_closed: UserServiceCalls::breaker_closed(order.admin_addr).await?,
        get,
        order: Service::finish(order)?,
        user: Service::finish(user)?,
    };
    let report = Report {
        args: &args,
        client_workers: tokio::runtime::Handle::current().metrics().num_workers(),
        stack,
        end_to_end,
        balancing: balancing.finish()?,
    };
    conclude(&report.render(), &report.failures(), report.targets_met(), &args.load)
}

/// Starts `binary serve` over mutual TLS as `identity`, with its data under
/// `run_dir` and the repository's dev policy for that service.
fn start_service(
    identity: &str,
    binary: &Path,
    args: &Args,
    pki: &DevPki,
    run_dir: &Path,
    configure: impl FnOnce(&mut std::process::Command),
) -> anyhow::Result<ServerProcess> {
    let policy = Path::new(CONFIG_DIR).join(format!("{identity}.authz.toml"));
    let policy = policy
        .canonicalize()
        .with_context(|| format!("no authorization policy at {}", policy.display()))?;
    let data_dir = run_dir.join(identity);
    std::fs::create_dir_all(&data_dir).with_context(|| format!("cannot create {}", data_dir.display()))?;
    let server = ServerProcess::start(binary, |command| {
        command
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--log-filter")
            .arg(&args.server_log_filter)
            .envs(pki.server_env(identity, &policy));
        configure(command);
    })?;
    eprintln!(
        "order-bench: started {} (pid {}) as {identity} on {}, admin {}",
        binary.display(),
        server.pid(),
        server.grpc_addr,
        server.admin_addr
    );
    Ok(server)
}

fn unix_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos())
        .unwrap_or(0)
}

async fn create_user(to_user: &Dialer) -> anyhow::Result<String> {
    let mut client = UserServiceClient::new(to_user.connect().await.context("cannot connect to the user service")?);
    let created = client
        .create_user(with_timeout(user_pb::CreateUserRequest {
            email: format!("order-bench-{}@example.com", unix_nanos()),
            display_name: "Order Bench".to_owned(),
        }))
        .await
        .context("CreateUser failed")?
        .into_inner();
    Ok(created.user.context("CreateUser answered without a user")?.id)
}

/// `count` orders of `user_id`, for the GetOrder phase.
async fn create_orders(to_order: &Dialer, user_id: &str, count: u32) -> anyhow::Result<Vec<String>> {
    let mut client = OrderServiceClient::new(to_order.connect().await.context("cannot connect to the order service")?);
    let prefix = format!("bench-read-{}", unix_nanos());
    let mut ids = Vec::new();
    for index in 0..count {
        let order = client
            .create_order(with_timeout(order_request(user_id, format!("{prefix}-{index}"))))
            .await
            .context("preparing an order: CreateOrder failed")?
            .into_inner()
            .order
            .context("CreateOrder answered without an order")?;
        ids.push(order.id);
    }
    Ok(ids)
}

/// Two line items: 2 x 12.50 EUR and 1 x 3.99 EUR.
fn order_request(user_id: &str, idempotency_key: String) -> order_pb::CreateOrderRequest {
    let item = |sku: &str, quantity, amount_minor| order_pb::LineItem {
        sku: sku.to_owned(),
        quantity,
        unit_price: Some(order_pb::Money {
            currency_code: "EUR".to_owned(),
            amount_minor,
        }),
        line_total: None,
    };
    order_pb::CreateOrderRequest {
        user_id: user_id.to_owned(),
        items: vec![item("BENCH-MUG", 2, 1_250), item("BENCH-TEA", 1, 399)],
        idempotency_key,
    }
}

const ORDER_TOTAL_MINOR: i64 = 2 * 1_250 + 399;

// ---------------------------------------------------------------------------
// The client stack beside a bare tonic client

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    Bare,
    Stack,
}

impl Variant {
    fn label(self) -> &'static str {
        match self {
            Self::Bare => "bare tonic client",
            Self::Stack => "client stack (`Dependency::call`)",
        }
    }
}

/// GetUser as a bare tonic call, with the `grpc-timeout` the stack would send.
struct BareGetUser {
    client: UserServiceClient<Channel>,
    id: String,
    timeout: Duration,
}

impl Call for BareGetUser {
    async fn call(&mut self) -> Result<(), String> {
        let mut request = tonic::Request::new(user_pb::GetUserRequest { id: self.id.clone() });
        request.set_timeout(self.timeout);
        let response = self.client.get_user(request).await.map_err(|status| describe(&status))?;
        expect_user(response.into_inner(), &self.id)
    }
}

/// GetUser exactly as the order service makes it: through `Dependency::call`,
/// idempotent, within the default deadline.
struct StackGetUser {
    dependency: Dependency,
    id: String,
    issued: Arc<AtomicU64>,
}

impl Call for StackGetUser {
    async fn call(&mut self) -> Result<(), String> {
        self.issued.fetch_add(1, Ordering::Relaxed);
        let id = &self.id;
        let deadline = Deadline::after(self.dependency.config().default_deadline);
        let response = self
            .dependency
            .call(deadline, Idempotency::Idempotent, |attempt| {
                let request = attempt.request(user_pb::GetUserRequest { id: id.clone() });
                async move { UserServiceClient::new(attempt.channel).get_user(request).await }
            })
            .await
            .map_err(|status| describe(&status))?;
        expect_user(response.into_inner(), id)
    }
}

fn expect_user(response: user_pb::GetUserResponse, id: &str) -> Result<(), String> {
    match response.user {
        Some(user) if user.id == id => Ok(()),
        _ => Err("GetUser answered without the requested user".to_owned()),
    }
}

struct StackOverhead {
    config: DependencyConfig,
    isolated: IsolatedCost,
    /// Every round in the order it ran.
    rounds: Vec<(Variant, PhaseResult)>,
    bare: PhaseResult,
    stack: PhaseResult,
    /// Calls the stack variant started, warm-up included, and what the stack's metrics counted.
    stack_calls_issued: u64,
    attempts: u64,
    retries: u64,
    rejected: u64,
}

impl StackOverhead {
    fn throughput_ratio_percent(&self) -> f64 {
        percent(self.stack.requests_per_second(), self.bare.requests_per_second())
    }

    fn overhead_percent(&self) -> f64 {
        100.0 - self.throughput_ratio_percent()
    }

    /// Stack throughput as a percentage of bare throughput within each round.
    fn per_round_ratios(&self) -> Vec<f64> {
        self.rounds
            .chunks(2)
            .filter_map(|pair| match pair {
                [(first_variant, first), (_, second)] => {
                    let (bare, with_stack) = if *first_variant == Variant::Bare {
                        (first, second)
                    } else {
                        (second, first)
                    };
                    Some(percent(with_stack.requests_per_second(), bare.requests_per_second()))
                }
                _ => None,
            })
            .collect()
    }
}

/// The stack's own work per call, without a network: an attempt that returns
/// at once, called through `Dependency::call` and directly, alternating rounds.
struct IsolatedCost {
    /// Medians over the rounds.
    direct: Duration,
    stack: Duration,
}

impl IsolatedCost {
    const ROUNDS: usize = 9;
    const CALLS_PER_ROUND: u32 = 200_000;

    fn added(&self) -> Duration {
        self.stack.saturating_sub(self.direct)
    }
}

async fn isolated_cost(config: &DependencyConfig) -> anyhow::Result<IsolatedCost> {
    eprintln!(
        "order-bench: the client stack without a network: {} rounds of {} calls",
        IsolatedCost::ROUNDS,
        IsolatedCost::CALLS_PER_ROUND
    );
    // Never dialled: the attempt below does not use its channel.
    let channel = Endpoint::from_static("http://127.0.0.1:9").connect_lazy();
    let metrics = ClientMetrics::default();
    let pool = suite_grpc::client::single_channel_pool(USER_SERVICE, ([127, 0, 0, 1], 9).into(), channel.clone(), &metrics);
    let dependency = Dependency::new(USER_SERVICE, pool, config.clone(), &metrics);
    let attempt = |attempt: Attempt| async move { Ok::<_, tonic::Status>(std::hint::black_box(attempt.timeout)) };
    let (mut direct, mut stack) = (Vec::new(), Vec::new());
    for _ in 0..IsolatedCost::ROUNDS {
        let started = Instant::now();
        for _ in 0..IsolatedCost::CALLS_PER_ROUND {
            let deadline = Deadline::after(config.default_deadline);
            let timeout = deadline.remaining();
            std::hint::black_box(
                attempt(Attempt {
                    channel: TracedChannel::new(channel.clone(), USER_SERVICE, &metrics),
                    timeout,
                })
                .await?,
            );
        }
        direct.push(started.elapsed() / IsolatedCost::CALLS_PER_ROUND);
        let started = Instant::now();
        for _ in 0..IsolatedCost::CALLS_PER_ROUND {
            let deadline = Deadline::after(config.default_deadline);
            std::hint::black_box(dependency.call(deadline, Idempotency::Idempotent, attempt).await?);
        }
        stack.push(started.elapsed() / IsolatedCost::CALLS_PER_ROUND);
    }
    let median = |mut values: Vec<Duration>| {
        values.sort();
        values[values.len() / 2]
    };
    Ok(IsolatedCost {
        direct: median(direct),
        stack: median(stack),
    })
}

/// The mean and its standard error (sample standard deviation / sqrt(n)); None below two values.
fn mean_and_standard_error(values: &[f64]) -> Option<(f64, f64)> {
    if values.len() < 2 {
        return None;
    }
    let count = values.len() as f64;
    let mean = values.iter().sum::<f64>() / count;
    let variance = values.iter().map(|value| (value - mean).powi(2)).sum::<f64>() / (count - 1.0);
    Some((mean, (variance / count).sqrt()))
}

async fn measure_stack_overhead(
    args: &Args,
    (user_addr, as_order_service): (std::net::SocketAddr, &Dialer),
    user_cpu: CpuClock,
    user_id: &str,
) -> anyhow::Result<StackOverhead> {
    let defaults = DependencyConfig::default();
    // The shipped bulkhead; raised only if the run keeps more calls in flight than it admits.
    let config = DependencyConfig {
        max_concurrent_calls: defaults.max_concurrent_calls.max(args.load.concurrency as usize),
        ..defaults
    };
    let isolated = isolated_cost(&config).await?;
    let mut registry = Registry::default();
    let metrics = ClientMetrics::register(&mut registry);
    // One connection for both variants, as the order service has one channel to the user service.
    let channel = as_order_service
        .connect()
        .await
        .context("cannot connect to the user service as order-service")?;
    let pool = suite_grpc::client::single_channel_pool(USER_SERVICE, user_addr, channel.clone(), &metrics);
    let dependency = Dependency::new(USER_SERVICE, pool, config.clone(), &metrics);
    let bare_timeout = config.default_deadline.saturating_sub(config.deadline_margin);
    let issued = Arc::new(AtomicU64::new(0));

    let mut rounds = Vec::new();
    for round in 1..=args.stack_rounds {
        // Bare first in odd rounds, stack first in even ones, so neither always
        // runs on a connection and machine just warmed by the other.
        let order = if round % 2 == 1 {
            [Variant::Bare, Variant::Stack]
        } else {
            [Variant::Stack, Variant::Bare]
        };
        for variant in order {
            eprintln!(
                "order-bench: {GET_USER_ENDPOINT}, {} (round {round} of {}): {}ms warm-up + {}s measured",
                variant.label(),
                args.stack_rounds,
                args.stack_warmup_ms,
                args.stack_seconds
            );
            let window = Duration::from_secs(args.stack_seconds);
            let warmup = Duration::from_millis(args.stack_warmup_ms);
            let slots = 0..args.load.concurrency;
            let result = match variant {
                Variant::Bare => {
                    let calls = slots
                        .map(|_| BareGetUser {
                            client: UserServiceClient::new(channel.clone()),
                            id: user_id.to_owned(),
                            timeout: bare_timeout,
                        })
                        .collect();
                    run_load(calls, user_cpu.clone(), warmup, window, None).await?
                }
                Variant::Stack => {
                    let calls = slots
                        .map(|_| StackGetUser {
                            dependency: dependency.clone(),
                            id: user_id.to_owned(),
                            issued: issued.clone(),
                        })
                        .collect();
                    run_load(calls, user_cpu.clone(), warmup, window, None).await?
                }
            };
            rounds.push((variant, result));
        }
    }

    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).context("cannot encode the client metrics")?;
    let dependency_label = [("dependency", USER_SERVICE)];
    let total = |wanted: Variant| -> anyhow::Result<PhaseResult> {
        let mut results = rounds
            .iter()
            .filter(|(variant, _)| *variant == wanted)
            .map(|(_, result)| result.clone());
        let mut total = results.next().context("a variant ran no round")?;
        for result in results {
            total.absorb(result)?;
        }
        Ok(total)
    };
    let (bare, stack) = (total(Variant::Bare)?, total(Variant::Stack)?);
    Ok(StackOverhead {
        attempts: metrics::sum(&text, "client_attempts_total", &dependency_label)?,
        retries: metrics::sum(&text, "client_retries_total", &dependency_label)?,
        rejected: metrics::sum(&text, "client_rejected_calls_total", &dependency_label)?,
        config,
        isolated,
        rounds,
        bare,
        stack,
        stack_calls_issued: issued.load(Ordering::Relaxed),
    })
}

// ---------------------------------------------------------------------------
// End to end through the order service

/// CreateOrder with a fresh idempotency key every call: a new order each time.
struct CreateOrderCall {
    client: OrderServiceClient<Channel>,
    user_id: String,
    key_prefix: String,
    issued: Arc<AtomicU64>,
}

impl Call for CreateOrderCall {
    async fn call(&mut self) -> Result<(), String> {
        let sequence = self.issued.fetch_add(1, Ordering::Relaxed);
        let request = order_request(&self.user_id, format!("{}-{sequence}", self.key_prefix));
        let order = self
            .client
            .create_order(request)
            .await
            .map_err(|status| describe(&status))?
            .into_inner()
            .order
            .ok_or("CreateOrder answered without an order")?;
        let total = order.total.map(|total| total.amount_minor);
        if order.user_id != self.user_id || total != Some(ORDER_TOTAL_MINOR) {
            return Err(format!("CreateOrder answered user {} and total {total:?}", order.user_id));
        }
        if order.status != order_pb::OrderStatus::Pending as i32 {
            return Err(format!("a new order has status {}", order.status));
        }
        Ok(())
    }
}

struct GetOrderCall {
    client: OrderServiceClient<Channel>,
    id: String,
}

impl Call for GetOrderCall {
    async fn call(&mut self) -> Result<(), String> {
        let response = self
            .client
            .get_order(order_pb::GetOrderRequest { id: self.id.clone() })
            .await
            .map_err(|status| describe(&status))?
            .into_inner();
        match response.order {
            Some(order) if order.id == self.id => Ok(()),
            _ => Err("GetOrder answered without the requested order".to_owned()),
        }
    }
}

/// The order service's calls to the user service, from its `/metrics`.
#[derive(Debug, Default, Clone, Copy)]
struct UserServiceCalls {
    attempts: u64,
    retries: u64,
    rejected: u64,
}

impl UserServiceCalls {
    async fn scrape(admin_addr: SocketAddr) -> anyhow::Result<Self> {
        let text = scrape(admin_addr).await?;
        let dependency = [("dependency", USER_SERVICE)];
        Ok(Self {
            attempts: metrics::sum(&text, "client_attempts_total", &dependency)?,
            retries: metrics::sum(&text, "client_retries_total", &dependency)?,
            rejected: metrics::sum(&text, "client_rejected_calls_total", &dependency)?,
        })
    }

    /// `client_circuit_state{dependency="user-service"}` is 0 (closed).
    async fn breaker_closed(admin_addr: SocketAddr) -> anyhow::Result<bool> {
        let text = scrape(admin_addr).await?;
        for sample in metrics::samples(&text, "client_circuit_state") {
            let (labels, state) = sample?;
            if metrics::label(labels, "dependency") == Some(USER_SERVICE) {
                return Ok(state == 0);
            }
        }
        anyhow::bail!("the order service exports no client_circuit_state for the user service")
    }

    fn minus(self, earlier: &Self) -> Self {
        Self {
            attempts: self.attempts.saturating_sub(earlier.attempts),
            retries: self.retries.saturating_sub(earlier.retries),
            rejected: self.rejected.saturating_sub(earlier.rejected),
        }
    }
}

// ---------------------------------------------------------------------------
// Balancing over user-service replicas

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BalanceVariant {
    /// The end-to-end order service, pointed at the first replica only.
    One,
    /// A second order service pointed at every replica.
    All,
}

impl BalanceVariant {
    fn label(self, replicas: u32) -> String {
        match self {
            Self::One => "1".to_owned(),
            Self::All => format!("{replicas}, balanced"),
        }
    }
}

/// The balancer's own work per call, without a network: a pick among the
/// replicas' endpoints and the lease's release.
struct IsolatedPick;

impl IsolatedPick {
    const ROUNDS: usize = 9;
    const PICKS_PER_ROUND: u32 = 1_000_000;

    fn measure(replicas: u32) -> Duration {
        let endpoints = (0..replicas).map(|index| SocketAddr::from(([127, 0, 0, 2], 50_000 + index as u16)));
        let pool = suite_balance::Pool::new(suite_discovery::Endpoints::fixed(endpoints), |addr| addr, |_| {});
        let mut rounds: Vec<Duration> = (0..Self::ROUNDS)
            .map(|_| {
                let started = Instant::now();
                for _ in 0..Self::PICKS_PER_ROUND {
                    std::hint::black_box(pool.pick(None));
                }
                started.elapsed() / Self::PICKS_PER_ROUND
            })
            .collect();
        rounds.sort();
        rounds[rounds.len() / 2]
    }
}

struct Balancing {
    rounds: Vec<(BalanceVariant, PhaseResult)>,
    /// GetUser calls each replica served during the balanced rounds.
    served: Vec<u64>,
    pick: Duration,
    services: Vec<Service>,
}

/// While measuring: the extra processes, stopped by [`BalancingRun::finish`].
struct BalancingRun {
    rounds: Vec<(BalanceVariant, PhaseResult)>,
    served: Vec<u64>,
    pick: Duration,
    processes: Vec<ServerProcess>,
}

impl BalancingRun {
    fn finish(self) -> anyhow::Result<Balancing> {
        Ok(Balancing {
            rounds: self.rounds,
            served: self.served,
            pick: self.pick,
            services: self.processes.into_iter().map(Service::finish).collect::<anyhow::Result<_>>()?,
        })
    }
}

impl Balancing {
    fn spread(&self) -> f64 {
        let max = self.served.iter().copied().max().unwrap_or(0) as f64;
        let min = self.served.iter().copied().min().unwrap_or(0) as f64;
        if min > 0.0 { max / min } else { f64::INFINITY }
    }

    /// The called order service's CPU per CreateOrder over every round of `variant`.
    fn order_cpu_us(&self, variant: BalanceVariant) -> f64 {
        let (cpu, requests) = self
            .rounds
            .iter()
            .filter(|(measured, _)| *measured == variant)
            .fold((Duration::ZERO, 0_u64), |(cpu, requests), (_, result)| {
                (cpu + result.server_cpu, requests + result.requests)
            });
        cpu_us_per(cpu, requests)
    }

    fn balancer_cpu_percent(&self) -> f64 {
        percent(self.pick.as_secs_f64() * 1e6, self.order_cpu_us(BalanceVariant::All))
    }
}

/// GetUser calls a user replica has answered, from its `/metrics`.
async fn get_user_served(admin_addr: SocketAddr) -> anyhow::Result<u64> {
    let text = scrape(admin_addr).await?;
    metrics::sum(&text, "rpc_server_call_duration_seconds_count", &[("rpc_method", "GetUser")])
}

async fn measure_balancing(
    args: &Args,
    pki: &DevPki,
    run_dir: &Path,
    (first_user, one_replica_order): (&mut ServerProcess, &mut ServerProcess),
    user_id: &str,
) -> anyhow::Result<BalancingRun> {
    let user_bin = sibling_binary(args.user_service_bin.as_deref(), USER_SERVICE)?;
    let order_bin = sibling_binary(args.order_service_bin.as_deref(), ORDER_SERVICE)?;
    let to_user = |addr| Dialer::new(addr, Some(pki.connector(OPERATOR_NAME, USER_SERVICE)?));
    let mut processes = Vec::new();
    let mut user_addrs = vec![(first_user.grpc_addr, first_user.admin_addr)];
    // The same data directory or database as the first replica: every replica knows the user.
    for _ in 1..args.replicas {
        let mut replica = start_service(USER_SERVICE, &user_bin, args, pki, run_dir, |command| {
            if let Some(url) = &args.user_database_url {
                command.env("DATABASE_URL", url);
            }
            if let Some(url) = &args.redis_url {
                command.arg("--redis-url").arg(url);
            }
        })?;
        replica.wait_until_serving(&to_user(replica.grpc_addr)?).await?;
        user_addrs.push((replica.grpc_addr, replica.admin_addr));
        processes.push(replica);
    }
    let all_replicas = user_addrs.iter().map(|(grpc, _)| grpc.to_string()).collect::<Vec<_>>().join(",");
    let balanced_dir = run_dir.join("balanced");
    std::fs::create_dir_all(&balanced_dir)?;
    let mut balanced = start_service(ORDER_SERVICE, &order_bin, args, pki, &balanced_dir, |command| {
        command.arg("--user-service-addr").arg(&all_replicas);
        if let Some(url) = &args.order_database_url {
            command.env("DATABASE_URL", url);
        }
    })?;
    let to_balanced = Dialer::new(balanced.grpc_addr, Some(pki.connector(OPERATOR_NAME, ORDER_SERVICE)?))?;
    balanced.wait_until_serving(&to_balanced).await?;
    let to_one = Dialer::new(one_replica_order.grpc_addr, Some(pki.connector(OPERATOR_NAME, ORDER_SERVICE)?))?;

    eprintln!(
        "order-bench: balancing: {} rounds of CreateOrder through an order service calling 1 and {} user replicas",
        args.balance_rounds, args.replicas
    );
    let pick = IsolatedPick::measure(args.replicas);
    let issued = Arc::new(AtomicU64::new(0));
    let mut rounds = Vec::new();
    let mut served = vec![0_u64; user_addrs.len()];
    for round in 0..args.balance_rounds {
        let order = if round % 2 == 0 {
            [BalanceVariant::One, BalanceVariant::All]
        } else {
            [BalanceVariant::All, BalanceVariant::One]
        };
        for variant in order {
            let (dialer, process) = match variant {
                BalanceVariant::One => (&to_one, &mut *one_replica_order),
                BalanceVariant::All => (&to_balanced, &mut balanced),
            };
            let channels = dialer.connect_many(args.load.connections).await?;
            let calls = (0..args.load.concurrency as usize)
                .map(|slot| CreateOrderCall {
                    client: OrderServiceClient::new(channels[slot % channels.len()].clone()),
                    user_id: user_id.to_owned(),
                    key_prefix: format!("balance-{}-{slot}", unix_nanos()),
                    issued: issued.clone(),
                })
                .collect();
            let mut before = Vec::new();
            for (_, admin) in &user_addrs {
                before.push(get_user_served(*admin).await?);
            }
            let result = run_load(
                calls,
                CpuClock::new(vec![process.pid()]),
                Duration::from_millis(args.stack_warmup_ms),
                Duration::from_secs(args.stack_seconds),
                None,
            )
            .await?;
            process.ensure_running(&result)?;
            if variant == BalanceVariant::All {
                for (index, (_, admin)) in user_addrs.iter().enumerate() {
                    served[index] += get_user_served(*admin).await?.saturating_sub(before[index]);
                }
            }
            rounds.push((variant, result));
        }
    }
    processes.push(balanced);
    Ok(BalancingRun {
        rounds,
        served,
        pick,
        processes,
    })
}

/// A service's RSS after load and how it stopped.
struct Service {
    name: String,
    pid: u32,
    loaded_rss_kib: u64,
    exit: ExitStatus,
}

impl Service {
    fn finish(mut server: ServerProcess) -> anyhow::Result<Self> {
        let loaded_rss_kib = server.rss_kib()?;
        let exit = server.stop()?;
        Ok(Self {
            name: server.name().to_owned(),
            pid: server.pid(),
            loaded_rss_kib,
            exit,
        })
    }
}

struct EndToEnd {
    create: PhaseResult,
    /// CreateOrder calls started, warm-up included, and the order service's
    /// calls to the user service over the same span.
    create_calls_issued: u64,
    user_service_calls: UserServiceCalls,
    breaker_closed: bool,
    get: PhaseResult,
    order: Service,
    user: Service,
}

// ---------------------------------------------------------------------------
// The report

struct Report<'a> {
    args: &'a Args,
    client_workers: usize,
    stack: StackOverhead,
    end_to_end: EndToEnd,
    balancing: Balancing,
}

impl Report<'_> {
    fn targets(&self) -> Vec<Target> {
        let overhead = self.stack.overhead_percent();
        let (balancer, spread) = (self.balancing.balancer_cpu_percent(), self.balancing.spread());
        vec![
            Target {
                name: format!("client stack costs < {TARGET_MAX_STACK_OVERHEAD_PERCENT}% of a bare tonic client's GetUser throughput"),
                measured: format!("{overhead:.1}%"),
                met: overhead < TARGET_MAX_STACK_OVERHEAD_PERCENT,
            },
            Target {
                name: format!("the balancer's own CPU per call < {TARGET_MAX_BALANCER_CPU_PERCENT}% of the order service's"),
                measured: format!("{balancer:.3}%"),
                met: balancer < TARGET_MAX_BALANCER_CPU_PERCENT,
            },
            Target {
                name: format!("GetUser calls per replica, busiest / idlest < {TARGET_MAX_SPREAD}"),
                measured: format!("{spread:.2}"),
                met: spread < TARGET_MAX_SPREAD,
            },
        ]
    }

    fn targets_met(&self) -> bool {
        self.targets().iter().all(|target| target.met)
    }

    /// Whatever makes the figures invalid.
    fn failures(&self) -> Vec<String> {
        let (stack, e2e) = (&self.stack, &self.end_to_end);
        let phases = stack
            .rounds
            .iter()
            .map(|(_, result)| result)
            .chain([&e2e.create, &e2e.get])
            .chain(self.balancing.rounds.iter().map(|(_, result)| result));
        let mut failures = Vec::new();
        let failed: u64 = phases.clone().map(|phase| phase.errors).sum();
        if failed > 0 {
            failures.push(format!("{failed} requests failed"));
        }
        if phases.clone().any(|phase| phase.requests == 0) {
            failures.push("a phase completed no requests".to_owned());
        }
        if stack.attempts != stack.stack_calls_issued || stack.retries + stack.rejected > 0 {
            failures.push(format!(
                "the client stack counted {} attempts, {} retries and {} rejections for {} calls",
                stack.attempts, stack.retries, stack.rejected, stack.stack_calls_issued
            ));
        }
        let calls = e2e.user_service_calls;
        if calls.attempts != e2e.create_calls_issued || calls.retries + calls.rejected > 0 {
            failures.push(format!(
                "the order service counted {} attempts, {} retries and {} rejections to the user service for {} CreateOrder calls",
                calls.attempts, calls.retries, calls.rejected, e2e.create_calls_issued
            ));
        }
        if !e2e.breaker_closed {
            failures.push("the order service's breaker for the user service is not closed".to_owned());
        }
        if self.balancing.served.contains(&0) {
            failures.push(format!("a user replica served no GetUser call: {:?}", self.balancing.served));
        }
        failures
    }

    fn render(&self) -> String {
        let mut out = String::new();
        self.render_stack(&mut out);
        self.render_end_to_end(&mut out);
        self.render_balancing(&mut out);
        self.render_target(&mut out);
        out
    }

    fn setting(&self) -> String {
        let cpus = std::thread::available_parallelism().map(|cpus| cpus.get()).unwrap_or(1);
        let database = |url: &Option<String>| match url.as_deref() {
            None => "SQLite (embedded default)",
            Some(url) if url.starts_with("postgres") => "PostgreSQL",
            Some(_) => "DATABASE_URL given",
        };
        format!(
            "user-service database: {}, cache: {}; order-service database: {}; services' log filter: {}; load generator: \
             tokio multi-thread, {} workers, same machine ({cpus} CPUs)",
            database(&self.args.user_database_url),
            if self.args.redis_url.is_some() { "Redis" } else { "in-process" },
            database(&self.args.order_database_url),
            self.args.server_log_filter,
            self.client_workers
        )
    }

    fn render_stack(&self, out: &mut String) {
        let (args, stack) = (self.args, &self.stack);
        let config = &stack.config;
        let _ = writeln!(
            out,
            "## Client stack overhead: GetUser through `Dependency::call` beside a bare tonic client\n"
        );
        let _ = writeln!(
            out,
            "`{GET_USER_ENDPOINT}` (cache hit) against the user service as `order-service`, {} in flight over one long-lived \
             mutual TLS connection shared by both variants (the order service has one channel to the user service); {} rounds \
             of each variant (bare first in odd rounds, stack first in even ones), {} ms warm-up + {} s measured per variant and round. Both send `grpc-timeout` {} ms. Stack \
             settings: `DependencyConfig::default()` (deadline {} ms, margin {} ms, {} attempts, bulkhead {}, breaker minimum \
             {} requests at {:.0}% failures). {}. Server CPU is the user service's.\n",
            args.load.concurrency,
            args.stack_rounds,
            args.stack_warmup_ms,
            args.stack_seconds,
            config.default_deadline.saturating_sub(config.deadline_margin).as_millis(),
            config.default_deadline.as_millis(),
            config.deadline_margin.as_millis(),
            config.max_attempts,
            config.max_concurrent_calls,
            config.breaker.min_requests,
            config.breaker.failure_ratio * 100.0,
            self.setting()
        );
        phase_table_header(out, "round | variant");
        for (index, (variant, result)) in stack.rounds.iter().enumerate() {
            phase_row(out, &format!("{} | {}", index / 2 + 1, variant.label()), result);
        }
        for (variant, result) in [(Variant::Bare, &stack.bare), (Variant::Stack, &stack.stack)] {
            phase_row(out, &format!("**all** | **{}**", variant.label()), result);
        }
        let _ = writeln!(out);
        let client_cpu = |result: &PhaseResult| result.cpu_us_per_request(result.client_cpu);
        let _ = writeln!(
            out,
            "- client stack / bare throughput: **{:.1}%**, overhead **{:.1}%** (target < {TARGET_MAX_STACK_OVERHEAD_PERCENT}%)",
            stack.throughput_ratio_percent(),
            stack.overhead_percent()
        );
        let per_round = stack.per_round_ratios();
        let listed: Vec<String> = per_round.iter().map(|ratio| format!("{ratio:.1}%")).collect();
        let _ = writeln!(out, "- the same ratio round by round: {}", listed.join(", "));
        if let Some((mean, standard_error)) = mean_and_standard_error(&per_round) {
            let _ = writeln!(
                out,
                "- mean of the round ratios {mean:.1}%, standard error {standard_error:.1} points (the machine's noise from \
                 round to round, shrinking with more rounds)"
            );
        }
        let _ = writeln!(
            out,
            "- p50 {:.2} ms against {:.2} ms, p99 {:.2} ms against {:.2} ms; load-generator CPU per call {:.1} µs against {:.1} µs \
             ({:+.1} µs for the stack)",
            stack.stack.quantile_ms(0.5),
            stack.bare.quantile_ms(0.5),
            stack.stack.quantile_ms(0.99),
            stack.bare.quantile_ms(0.99),
            client_cpu(&stack.stack),
            client_cpu(&stack.bare),
            client_cpu(&stack.stack) - client_cpu(&stack.bare)
        );
        let _ = writeln!(
            out,
            "- the stack's own metrics: {} attempts for {} calls (warm-up included), {} retries, {} local rejections",
            thousands(stack.attempts as f64),
            thousands(stack.stack_calls_issued as f64),
            stack.retries,
            stack.rejected
        );
        let isolated = &stack.isolated;
        let bare_client_cpu = client_cpu(&stack.bare);
        let _ = writeln!(
            out,
            "- the stack's own work without a network (an attempt that returns at once; median of {} rounds of {} calls): \
             {} ns per call through `Dependency::call` against {} ns calling the attempt directly, **+{} ns**, {:.2}% of the \
             load generator's {bare_client_cpu:.1} µs of CPU per bare GetUser call",
            IsolatedCost::ROUNDS,
            thousands(f64::from(IsolatedCost::CALLS_PER_ROUND)),
            isolated.stack.as_nanos(),
            isolated.direct.as_nanos(),
            isolated.added().as_nanos(),
            percent(isolated.added().as_secs_f64() * 1e6, bare_client_cpu)
        );
        for (variant, result) in &stack.rounds {
            if let Some(error) = &result.first_error {
                let _ = writeln!(out, "- **{} {} calls failed**; first: {error}", result.errors, variant.label());
            }
        }
        let _ = writeln!(out);
    }

    fn render_end_to_end(&self, out: &mut String) {
        let (args, e2e) = (self.args, &self.end_to_end);
        let _ = writeln!(out, "## CreateOrder and GetOrder end to end over mutual TLS\n");
        let _ = writeln!(
            out,
            "The load generator calls the order service as `operator`, {} in flight over {} long-lived mutual TLS connections, \
             {} s warm-up + {} s measured per phase. CreateOrder (two line items, a fresh idempotency key per call) makes the \
             order service call GetUser on the user service over its own mutual TLS connection through the client stack, \
             then insert the order; GetOrder reads one of {} prepared orders from the order database. {}. Server CPU is both \
             services'.\n",
            args.load.concurrency,
            args.load.connections,
            args.load.warmup_seconds,
            args.load.seconds,
            args.load.concurrency,
            self.setting()
        );
        phase_table_header(out, "endpoint");
        phase_row(out, &format!("`{CREATE_ORDER_ENDPOINT}`"), &e2e.create);
        phase_row(out, &format!("`{GET_ORDER_ENDPOINT}`"), &e2e.get);
        let _ = writeln!(out);
        let calls = e2e.user_service_calls;
        let _ = writeln!(
            out,
            "- the order service's calls to the user service during the CreateOrder phase (warm-up included): {} attempts for {} \
             CreateOrder calls, {} retries, {} local rejections; breaker {}",
            thousands(calls.attempts as f64),
            thousands(e2e.create_calls_issued as f64),
            calls.retries,
            calls.rejected,
            if e2e.breaker_closed { "closed" } else { "**not closed**" }
        );
        for service in [&e2e.order, &e2e.user] {
            let _ = writeln!(
                out,
                "- {} (pid {}): RSS after load {:.1} MB ({} KiB); after SIGTERM {}",
                service.name,
                service.pid,
                kib_to_mb(service.loaded_rss_kib),
                service.loaded_rss_kib,
                service.exit
            );
        }
        for (endpoint, result) in [(CREATE_ORDER_ENDPOINT, &e2e.create), (GET_ORDER_ENDPOINT, &e2e.get)] {
            if let Some(error) = &result.first_error {
                let _ = writeln!(out, "- **{} {endpoint} calls failed**; first: {error}", result.errors);
            }
        }
        let _ = writeln!(out);
    }

    fn render_balancing(&self, out: &mut String) {
        let (args, balancing) = (self.args, &self.balancing);
        let _ = writeln!(
            out,
            "## Balancing: CreateOrder through an order service pointed at one user replica or at {}\n",
            args.replicas
        );
        let _ = writeln!(
            out,
            "Two order services side by side, one with `--user-service-addr` naming one user replica, one naming all {} \
             (comma-separated: each GetUser goes to the less busy of two replicas). The load generator calls them in turn as in \
             the end-to-end phase, {} rounds of each ({} ms warm-up + {} s measured), one first in odd rounds and all first in \
             even ones. {}. Server CPU is the called order service's alone.\n",
            args.replicas,
            args.balance_rounds,
            args.stack_warmup_ms,
            args.stack_seconds,
            self.setting()
        );
        phase_table_header(out, "round | user replicas");
        for (index, (variant, result)) in balancing.rounds.iter().enumerate() {
            phase_row(out, &format!("{} | {}", index / 2 + 1, variant.label(args.replicas)), result);
        }
        let _ = writeln!(out);
        let served: Vec<String> = balancing.served.iter().map(|count| thousands(*count as f64)).collect();
        let _ = writeln!(
            out,
            "- GetUser calls each replica served while the balancing order service was under load (warm-up included): {}; \
             busiest / idlest **{:.2}** (target < {TARGET_MAX_SPREAD})",
            served.join(", "),
            balancing.spread()
        );
        let (one, all) = (
            balancing.order_cpu_us(BalanceVariant::One),
            balancing.order_cpu_us(BalanceVariant::All),
        );
        let _ = writeln!(
            out,
            "- order service CPU per CreateOrder: {one:.1} µs calling one replica, {all:.1} µs balancing over {} ({:+.1}%, \
             10 ms CPU clock ticks and the machine's noise included)",
            args.replicas,
            percent(all - one, one)
        );
        let _ = writeln!(
            out,
            "- the balancer's own work without a network (pick of {} endpoints and the lease's release; median of {} rounds of \
             {} picks): **{} ns** per call, **{:.3}%** of the balancing order service's {all:.1} µs of CPU per CreateOrder \
             (target < {TARGET_MAX_BALANCER_CPU_PERCENT}%)",
            args.replicas,
            IsolatedPick::ROUNDS,
            thousands(f64::from(IsolatedPick::PICKS_PER_ROUND)),
            balancing.pick.as_nanos(),
            balancing.balancer_cpu_percent()
        );
        for service in &balancing.services {
            let _ = writeln!(
                out,
                "- {} (pid {}): RSS after load {:.1} MB; after SIGTERM {}",
                service.name,
                service.pid,
                kib_to_mb(service.loaded_rss_kib),
                service.exit
            );
        }
        for (variant, result) in &balancing.rounds {
            if let Some(error) = &result.first_error {
                let _ = writeln!(
                    out,
                    "- **{} calls failed ({})**; first: {error}",
                    result.errors,
                    variant.label(args.replicas)
                );
            }
        }
        let _ = writeln!(out);
    }

    fn render_target(&self, out: &mut String) {
        targets_table(out, "", &self.targets());
    }
}

fn phase_table_header(out: &mut String, first_columns: &str) {
    let separators = "|---".repeat(first_columns.matches('|').count() + 1);
    let _ = writeln!(
        out,
        "| {first_columns} | requests/s | p50 ms | p99 ms | max ms | errors | server CPU µs/req | load-generator CPU µs/req \
         | other CPU use, CPUs |"
    );
    let _ = writeln!(out, "{separators}|---:|---:|---:|---:|---:|---:|---:|---:|");
}

fn phase_row(out: &mut String, first_columns: &str, phase: &PhaseResult) {
    let _ = writeln!(
        out,
        "| {first_columns} | {} | {:.2} | {:.2} | {:.2} | {} | {:.1} | {:.1} | {:.2} |",
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
