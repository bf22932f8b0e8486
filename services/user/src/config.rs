//! Command line and environment of `user-service`. Every flag has an
//! environment fallback (12-factor); `--help` lists both.

use std::net::SocketAddr;

use clap::{Parser, Subcommand};
use suite_cache::CacheConfig;
use suite_db::DatabaseConfig;
use suite_grpc::{HealthCheckArgs, SecurityArgs, ServerConfig};
use suite_telemetry::LoggingArgs;

#[derive(Debug, Parser)]
#[command(name = "user-service", version, about = "The suite's user service: accounts over gRPC.")]
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
    #[arg(long, env = "GRPC_ADDR", default_value = "127.0.0.1:50051")]
    pub grpc_addr: SocketAddr,

    /// Address of the plaintext admin port (/metrics, probe health).
    #[arg(long, env = "ADMIN_ADDR", default_value = "127.0.0.1:9101")]
    pub admin_addr: SocketAddr,

    /// Apply migrations before serving. Production runs `migrate` as a Job and sets this to false.
    #[arg(long, env = "MIGRATE_ON_START", default_value_t = true, action = clap::ArgAction::Set)]
    pub migrate_on_start: bool,

    /// Secret that signs ListUsers page tokens; every replica needs the same one.
    #[arg(long, env = "PAGE_TOKEN_SECRET", hide_env_values = true)]
    pub page_token_secret: Option<String>,

    #[command(flatten)]
    pub database: DatabaseConfig,

    #[command(flatten)]
    pub cache: CacheConfig,

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
