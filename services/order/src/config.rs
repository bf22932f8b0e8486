//! Command line and environment of `order-service`. Every flag has an
//! environment fallback (12-factor); `--help` lists both.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use suite_db::DatabaseConfig;
use suite_grpc::client::{BreakerConfig, DependencyConfig, UpstreamAddress};
use suite_grpc::{HealthCheckArgs, SecurityArgs, ServerConfig};
use suite_telemetry::LoggingArgs;
use suite_tls::SpiffeId;

#[derive(Debug, Parser)]
#[command(name = "order-service", version, about = "The suite's order service: orders over gRPC.")]
pub struct Cli {
    #[command(flatten)]
    pub logging: LoggingArgs,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the gRPC API and the admin port until SIGTERM or SIGINT.
    Serve(Box<ServeConfig>),
    /// Apply pending database migrations and exit (safe to run from several replicas at once).
    Migrate(MigrateConfig),
    /// Ask a running server's admin port for gRPC health; exit 0 only if it is SERVING.
    Healthcheck(HealthCheckArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct ServeConfig {
    /// Address of the gRPC API.
    #[arg(long, env = "GRPC_ADDR", default_value = "127.0.0.1:50052")]
    pub grpc_addr: SocketAddr,

    /// Address of the plaintext admin port (/metrics, probe health).
    #[arg(long, env = "ADMIN_ADDR", default_value = "127.0.0.1:9102")]
    pub admin_addr: SocketAddr,

    /// Apply migrations before serving. Production runs `migrate` as a Job and sets this to false.
    #[arg(long, env = "MIGRATE_ON_START", default_value_t = true, action = clap::ArgAction::Set)]
    pub migrate_on_start: bool,

    /// Secret that signs ListOrders page tokens; every replica needs the same one.
    #[arg(long, env = "PAGE_TOKEN_SECRET", hide_env_values = true)]
    pub page_token_secret: Option<String>,

    /// TOML price list (`[prices]`, SKU = { currency_code, amount_minor }), read
    /// at start-up; a bad file stops it (exit 64). End users order at these
    /// prices only; admins and services may set their own, and get these for
    /// any they leave out. Without it end users cannot create orders.
    #[arg(long, env = "PRICE_LIST")]
    pub price_list: Option<PathBuf>,

    #[command(flatten)]
    pub user_service: UserServiceArgs,

    #[command(flatten)]
    pub database: DatabaseConfig,

    #[command(flatten)]
    pub server: ServerConfig,

    #[command(flatten)]
    pub security: SecurityArgs,
}

#[derive(Debug, Clone, clap::Args)]
pub struct MigrateConfig {
    #[command(flatten)]
    pub database: DatabaseConfig,
}

/// Where the user service is and how calls to it behave.
#[derive(Debug, Clone, clap::Args)]
pub struct UserServiceArgs {
    /// The user service's gRPC port: `host:port`, or several separated by commas.
    /// A DNS name stands for every address it resolves to (a headless Service: one
    /// per ready pod), re-resolved every `RESOLVE_INTERVAL_MS` and soon after a
    /// connection fails; each call goes to the less busy of two replicas.
    #[arg(long, env = "USER_SERVICE_ADDR", default_value = "127.0.0.1:50051")]
    pub user_service_addr: UpstreamAddress,

    /// How often the user service's DNS name is resolved again.
    #[arg(long, env = "RESOLVE_INTERVAL_MS", default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub resolve_interval_ms: u64,

    /// Identity the user service must present. Default: this service's trust
    /// domain and namespace, service account `user-service`.
    #[arg(long, env = "USER_SERVICE_IDENTITY")]
    pub user_service_identity: Option<SpiffeId>,

    /// Deadline of a call to the user service when the incoming request carried none.
    #[arg(long, env = "USER_SERVICE_DEFAULT_DEADLINE_MS", default_value_t = 2_000)]
    pub user_service_default_deadline_ms: u64,

    /// Kept back from the caller's remaining deadline for the work after the call.
    #[arg(long, env = "USER_SERVICE_DEADLINE_MARGIN_MS", default_value_t = 20)]
    pub user_service_deadline_margin_ms: u64,

    /// Attempts per idempotent call (UNAVAILABLE and RESOURCE_EXHAUSTED are retried).
    #[arg(long, env = "USER_SERVICE_MAX_ATTEMPTS", default_value_t = 3)]
    pub user_service_max_attempts: u32,

    /// First retry backoff; it doubles per attempt up to the maximum, with full jitter.
    #[arg(long, env = "USER_SERVICE_BACKOFF_BASE_MS", default_value_t = 20)]
    pub user_service_backoff_base_ms: u64,

    #[arg(long, env = "USER_SERVICE_BACKOFF_MAX_MS", default_value_t = 200)]
    pub user_service_backoff_max_ms: u64,

    /// Retries may add this fraction of the calls made in the budget window ...
    #[arg(long, env = "USER_SERVICE_RETRY_BUDGET_RATIO", default_value_t = 0.1)]
    pub user_service_retry_budget_ratio: f64,

    /// ... plus this many retries per window.
    #[arg(long, env = "USER_SERVICE_RETRY_BUDGET_FLOOR", default_value_t = 10)]
    pub user_service_retry_budget_floor: u64,

    #[arg(long, env = "USER_SERVICE_RETRY_BUDGET_WINDOW_MS", default_value_t = 10_000)]
    pub user_service_retry_budget_window_ms: u64,

    /// The breaker looks at outcomes over this window ...
    #[arg(long, env = "USER_SERVICE_BREAKER_WINDOW_MS", default_value_t = 10_000)]
    pub user_service_breaker_window_ms: u64,

    /// ... and opens once at least this many calls in it ...
    #[arg(long, env = "USER_SERVICE_BREAKER_MIN_REQUESTS", default_value_t = 20)]
    pub user_service_breaker_min_requests: u64,

    /// ... failed at this ratio or more (UNAVAILABLE, a transport failure, RESOURCE_EXHAUSTED,
    /// DEADLINE_EXCEEDED under a deadline of at least the slow-call threshold) ...
    #[arg(long, env = "USER_SERVICE_BREAKER_FAILURE_RATIO", default_value_t = 0.5)]
    pub user_service_breaker_failure_ratio: f64,

    /// ... or took the slow-call threshold or longer at this ratio or more;
    #[arg(long, env = "USER_SERVICE_BREAKER_SLOW_CALL_RATIO", default_value_t = 0.5)]
    pub user_service_breaker_slow_call_ratio: f64,

    #[arg(long, env = "USER_SERVICE_BREAKER_SLOW_CALL_MS", default_value_t = 1_000)]
    pub user_service_breaker_slow_call_ms: u64,

    /// or at once when this many calls in a row failed.
    #[arg(long, env = "USER_SERVICE_BREAKER_CONSECUTIVE_FAILURES", default_value_t = 5)]
    pub user_service_breaker_consecutive_failures: u32,

    /// Open this long before a probe goes through; doubled each time a probe fails ...
    #[arg(long, env = "USER_SERVICE_BREAKER_OPEN_MS", default_value_t = 1_000)]
    pub user_service_breaker_open_ms: u64,

    /// ... up to this.
    #[arg(long, env = "USER_SERVICE_BREAKER_OPEN_MAX_MS", default_value_t = 10_000)]
    pub user_service_breaker_open_max_ms: u64,

    /// Probes let through at once half-open; the first answered closes the breaker.
    #[arg(long, env = "USER_SERVICE_BREAKER_HALF_OPEN_PROBES", default_value_t = 1)]
    pub user_service_breaker_half_open_probes: u32,

    /// Calls to the user service in flight at once; more fail at once with RESOURCE_EXHAUSTED.
    #[arg(long, env = "USER_SERVICE_MAX_CONCURRENT_CALLS", default_value_t = 64)]
    pub user_service_max_concurrent_calls: usize,
}

impl UserServiceArgs {
    pub fn dependency_config(&self) -> DependencyConfig {
        let ms = Duration::from_millis;
        DependencyConfig {
            default_deadline: ms(self.user_service_default_deadline_ms),
            deadline_margin: ms(self.user_service_deadline_margin_ms),
            max_attempts: self.user_service_max_attempts.max(1),
            backoff_base: ms(self.user_service_backoff_base_ms),
            backoff_max: ms(self.user_service_backoff_max_ms),
            retry_budget_ratio: self.user_service_retry_budget_ratio,
            retry_budget_floor: self.user_service_retry_budget_floor,
            retry_budget_window: ms(self.user_service_retry_budget_window_ms),
            breaker: BreakerConfig {
                window: ms(self.user_service_breaker_window_ms),
                min_requests: self.user_service_breaker_min_requests,
                failure_ratio: self.user_service_breaker_failure_ratio,
                consecutive_failures: self.user_service_breaker_consecutive_failures.max(1),
                slow_call: ms(self.user_service_breaker_slow_call_ms),
                slow_call_ratio: self.user_service_breaker_slow_call_ratio,
                open_for: ms(self.user_service_breaker_open_ms),
                open_for_max: ms(self.user_service_breaker_open_max_ms),
                half_open_probes: self.user_service_breaker_half_open_probes.max(1),
            },
            max_concurrent_calls: self.user_service_max_concurrent_calls.max(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_defaults_are_the_client_stack_defaults() {
        let cli = Cli::try_parse_from(["order-service", "serve"]).unwrap_or_else(|error| panic!("{error}"));
        let Command::Serve(config) = cli.command else { panic!("not serve") };
        assert_eq!(config.user_service.dependency_config(), DependencyConfig::default());
    }
}
