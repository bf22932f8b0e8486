//! Command line and environment of `edge-gateway`. Every flag has an
//! environment fallback (12-factor); `--help` lists both.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use suite_grpc::{SecurityArgs, ServerConfig};
use suite_telemetry::LoggingArgs;

#[derive(Debug, Parser)]
#[command(
    name = "edge-gateway",
    version,
    about = "The suite's edge gateway: TLS for clients, JWT authentication, rate limiting, gRPC proxy."
)]
pub struct Cli {
    #[command(flatten)]
    pub logging: LoggingArgs,

    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// The runtime the command runs on: `serve` with its worker threads, anything else on one.
    /// One worker is tokio's current-thread scheduler: the same single thread as a one-worker
    /// pool, without the pool's cross-thread bookkeeping on every wake-up (measured: about 10%
    /// less CPU per proxied call).
    pub fn runtime(&self) -> std::io::Result<tokio::runtime::Runtime> {
        let workers = match &self.command {
            Command::Serve(config) => config.worker_threads,
            Command::DevToken(_) | Command::Healthcheck(_) => 1,
        };
        let mut builder = match workers {
            1 => tokio::runtime::Builder::new_current_thread(),
            0 => tokio::runtime::Builder::new_multi_thread(),
            workers => {
                let mut builder = tokio::runtime::Builder::new_multi_thread();
                builder.worker_threads(workers);
                builder
            }
        };
        builder.enable_all().build()
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve clients and proxy to the services until SIGTERM or SIGINT.
    Serve(Box<ServeConfig>),
    /// Print a token signed with the development key (local use only).
    DevToken(crate::dev_token::DevTokenArgs),
    /// Ask a running gateway's admin port for gRPC health; exit 0 only if it is SERVING.
    Healthcheck(suite_grpc::HealthCheckArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct ServeConfig {
    /// Address clients connect to.
    #[arg(long, env = "GRPC_ADDR", default_value = "127.0.0.1:8443")]
    pub grpc_addr: SocketAddr,

    /// Address of the plaintext admin port (/metrics, probe health).
    #[arg(long, env = "ADMIN_ADDR", default_value = "127.0.0.1:9103")]
    pub admin_addr: SocketAddr,

    /// Threads serving requests; 0 means one per CPU. With one, every task of a
    /// request (client connection, stream, upstream connection) runs on the
    /// same thread, which saves the cross-thread wake-ups that otherwise
    /// dominate a proxied call's latency and CPU. Scale out with replicas, or
    /// raise this on a large host.
    #[arg(long, env = "WORKER_THREADS", default_value_t = 1)]
    pub worker_threads: usize,

    /// Routes file (TOML, see config/dev/edge-gateway.routes.toml). Without it:
    /// the user service at 127.0.0.1:50051 and the order service at 127.0.0.1:50052.
    #[arg(long, env = "GATEWAY_ROUTES")]
    pub routes: Option<PathBuf>,

    /// A request body that sends nothing for this long is cut off: the call
    /// ends DEADLINE_EXCEEDED and the upstream stream is reset, so a client
    /// cannot hold upstream streams with bodies that never finish. Each frame
    /// that arrives starts the wait again (0: never).
    #[arg(long, env = "REQUEST_BODY_IDLE_TIMEOUT_MS", default_value_t = 10_000)]
    pub request_body_idle_timeout_ms: u64,

    /// How often each upstream's DNS name is resolved again (and soon after a
    /// connection to one of its addresses fails).
    #[arg(long, env = "RESOLVE_INTERVAL_MS", default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub resolve_interval_ms: u64,

    /// Continue the trace of a client that sends W3C `traceparent` / `tracestate` /
    /// `baggage`. Off by default: a client's context is dropped and every call starts
    /// a new trace, so outsiders cannot join, force the sampling of, or pollute our traces.
    /// Turn it on when the clients are your own (a trusted front proxy or app).
    #[arg(long, env = "TRUST_CLIENT_TRACE_CONTEXT", default_value_t = false, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub trust_client_trace_context: bool,

    #[command(flatten)]
    pub listener: ListenerArgs,

    #[command(flatten)]
    pub auth: AuthArgs,

    #[command(flatten)]
    pub rate_limit: RateLimitArgs,

    #[command(flatten)]
    pub server: ServerConfig,

    /// The gateway's own identity (TLS_CERT, TLS_KEY, TLS_CA) towards the
    /// services; `--insecure-plaintext` makes both sides plaintext.
    #[command(flatten)]
    pub security: SecurityArgs,
}

/// The certificate clients see.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ListenerArgs {
    /// PEM certificate chain for clients (a DNS-name certificate). Default: TLS_CERT.
    #[arg(long, env = "LISTENER_TLS_CERT")]
    pub listener_tls_cert: Option<PathBuf>,

    /// PEM private key of the listener certificate. Default: TLS_KEY.
    #[arg(long, env = "LISTENER_TLS_KEY")]
    pub listener_tls_key: Option<PathBuf>,
}

/// Bearer-token authentication.
#[derive(Debug, Clone, clap::Args)]
pub struct AuthArgs {
    /// JWKS document on disk (re-read every JWKS_REFRESH_MS).
    #[arg(long, env = "JWKS_FILE", conflicts_with = "jwks_url")]
    pub jwks_file: Option<PathBuf>,

    /// JWKS URL (http or https), fetched in the background and on an unknown key id.
    #[arg(long, env = "JWKS_URL")]
    pub jwks_url: Option<String>,

    /// Extra CA bundle (PEM) for an https JWKS URL; the Mozilla roots are always trusted.
    #[arg(long, env = "JWKS_CA_FILE")]
    pub jwks_ca_file: Option<PathBuf>,

    /// How often the key set is refreshed.
    #[arg(long, env = "JWKS_REFRESH_MS", default_value_t = 300_000)]
    pub jwks_refresh_ms: u64,

    /// An unknown key id triggers a refresh at most this often.
    #[arg(long, env = "JWKS_MIN_REFRESH_MS", default_value_t = 30_000)]
    pub jwks_min_refresh_ms: u64,

    /// Required `iss` of every token.
    #[arg(long, env = "JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// Required `aud` of every token (one of its audiences).
    #[arg(long, env = "JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// Accepted signature algorithms (RS256, ES256, EdDSA; HS256 needs JWT_HS256_SECRET).
    #[arg(long, env = "JWT_ALGORITHMS", value_delimiter = ',', default_value = "RS256,ES256,EdDSA")]
    pub jwt_algorithms: Vec<String>,

    /// Shared secret for HS256 tokens; HS256 is refused without it.
    #[arg(long, env = "JWT_HS256_SECRET", hide_env_values = true)]
    pub jwt_hs256_secret: Option<String>,

    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    #[arg(long, env = "JWT_LEEWAY_SECONDS", default_value_t = 30)]
    pub jwt_leeway_seconds: u64,

    /// Longer tokens are refused before any parsing.
    #[arg(long, env = "JWT_MAX_TOKEN_BYTES", default_value_t = 8 * 1024)]
    pub jwt_max_token_bytes: usize,

    /// Claim holding the subject's roles (a list, or a space-separated string).
    #[arg(long, env = "JWT_ROLES_CLAIM", default_value = "roles")]
    pub jwt_roles_claim: String,

    /// Verified tokens remembered until they expire (0 turns the cache off).
    #[arg(long, env = "JWT_CACHE_ENTRIES", default_value_t = 10_000)]
    pub jwt_cache_entries: u64,

    /// Methods reachable without a token: `package.Service/Method` or `package.Service/*`.
    #[arg(
        long,
        env = "PUBLIC_METHODS",
        value_delimiter = ',',
        default_value = "grpc.health.v1.Health/*,grpc.reflection.v1.ServerReflection/*,grpc.reflection.v1alpha.ServerReflection/*"
    )]
    pub public_methods: Vec<String>,
}

impl AuthArgs {
    pub fn refresh_interval(&self) -> Duration {
        Duration::from_millis(self.jwks_refresh_ms)
    }

    pub fn min_refresh_interval(&self) -> Duration {
        Duration::from_millis(self.jwks_min_refresh_ms)
    }

    pub fn leeway(&self) -> Duration {
        Duration::from_secs(self.jwt_leeway_seconds)
    }
}

/// Token buckets per subject (per client address before authentication).
#[derive(Debug, Clone, clap::Args)]
pub struct RateLimitArgs {
    /// Sustained requests per second per subject.
    #[arg(long, env = "RATE_LIMIT_PER_SECOND", default_value_t = 100.0)]
    pub rate_limit_per_second: f64,

    /// Requests a subject may send at once after being idle.
    #[arg(long, env = "RATE_LIMIT_BURST", default_value_t = 200.0)]
    pub rate_limit_burst: f64,

    /// Buckets kept at most; the least recently used go first.
    #[arg(long, env = "RATE_LIMIT_MAX_KEYS", default_value_t = 100_000)]
    pub rate_limit_max_keys: u64,

    /// A bucket unused this long is forgotten (it would be full again anyway).
    #[arg(long, env = "RATE_LIMIT_IDLE_MS", default_value_t = 60_000)]
    pub rate_limit_idle_ms: u64,

    /// Token signatures checked per second per client address. A valid token is
    /// checked once and then served from the token cache, so this only binds a
    /// client sending new (typically forged) tokens; the rest are refused
    /// RESOURCE_EXHAUSTED before any signature work.
    #[arg(long, env = "TOKEN_VERIFICATIONS_PER_SECOND", default_value_t = 20.0)]
    pub token_verifications_per_second: f64,

    /// Calls one subject (one client address without a token) may have in flight
    /// at once; more are refused RESOURCE_EXHAUSTED. Bounds what one client can
    /// hold of the gateway and of the upstream connections' streams, for example
    /// with request bodies that never finish.
    #[arg(long, env = "MAX_IN_FLIGHT_PER_SUBJECT", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_in_flight_per_subject: u32,

    /// Token signatures a client address may have checked at once after being idle.
    #[arg(long, env = "TOKEN_VERIFICATION_BURST", default_value_t = 100.0)]
    pub token_verification_burst: f64,
}

impl Default for RateLimitArgs {
    fn default() -> Self {
        Self {
            rate_limit_per_second: 100.0,
            rate_limit_burst: 200.0,
            rate_limit_max_keys: 100_000,
            rate_limit_idle_ms: 60_000,
            token_verifications_per_second: 20.0,
            token_verification_burst: 100.0,
            max_in_flight_per_subject: 64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_with_defaults() {
        let cli = Cli::try_parse_from(["edge-gateway", "serve"]).unwrap_or_else(|error| panic!("{error}"));
        let Command::Serve(config) = cli.command else { panic!("not serve") };
        assert_eq!(config.auth.jwt_algorithms, ["RS256", "ES256", "EdDSA"]);
        assert_eq!(config.auth.public_methods.len(), 3);
        assert!(config.routes.is_none());
        assert_eq!(config.worker_threads, 1);
    }

    #[test]
    fn serve_runs_on_its_worker_threads_and_zero_means_one_per_cpu() {
        use tokio::runtime::RuntimeFlavor;
        let runtime = |args: &[&str]| {
            let cli = Cli::try_parse_from(args).unwrap_or_else(|error| panic!("{error}"));
            let runtime = cli.runtime().unwrap_or_else(|error| panic!("{error}"));
            (runtime.handle().runtime_flavor(), runtime.metrics().num_workers())
        };
        assert_eq!(runtime(&["edge-gateway", "serve"]), (RuntimeFlavor::CurrentThread, 1));
        assert_eq!(
            runtime(&["edge-gateway", "serve", "--worker-threads", "3"]),
            (RuntimeFlavor::MultiThread, 3)
        );
        let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        assert_eq!(
            runtime(&["edge-gateway", "serve", "--worker-threads", "0"]),
            (RuntimeFlavor::MultiThread, cpus)
        );
    }
}
