//! Wires configuration to running parts: database, cache, API and server harness.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use suite_cache::{Cache, CacheMetrics};
use suite_db::PoolMetrics;
use suite_grpc::{GrpcServer, Listeners};
use suite_proto::suite::user::v1::user_service_server::UserServiceServer;

use crate::config::{Command, MigrateConfig, ServeConfig};
use crate::grpc::UserApi;
use crate::migration::{MIGRATION_LOCK, Migrator};
use crate::store::UserStore;
use suite_grpc::PageTokens;

/// The SQLite file name under the data directory, and the cache namespace.
const DATABASE_NAME: &str = "user";
const CACHE_NAMESPACE: &str = "suite:user:v1";
/// A ping slower than this is a database in trouble: readiness says so, and three in a row close the database gate.
const READINESS_PING_TIMEOUT: Duration = Duration::from_millis(500);

/// Runs one subcommand to completion.
pub async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(config) => {
            let listeners = Listeners::bind(config.grpc_addr, config.admin_addr)
                .await
                .with_context(|| format!("cannot bind {} and {}", config.grpc_addr, config.admin_addr))?;
            serve(*config, listeners, suite_grpc::shutdown_signal()).await
        }
        Command::Migrate(config) => migrate(&config).await,
        Command::Healthcheck(args) => Ok(suite_grpc::health_check(&args).await?),
    }
}

/// Applies pending migrations and returns.
pub async fn migrate(config: &MigrateConfig) -> anyhow::Result<()> {
    let db = suite_db::connect(&config.database, DATABASE_NAME).await?;
    suite_db::migrate::<Migrator>(&db, MIGRATION_LOCK)
        .await
        .context("migration failed")?;
    tracing::info!(backend = config.database.backend_name(), "migrations applied");
    db.close().await.ok();
    Ok(())
}

/// Serves on `listeners` until `shutdown` completes, then drains.
pub async fn serve(config: ServeConfig, listeners: Listeners, shutdown: impl Future<Output = ()> + Send) -> anyhow::Result<()> {
    // Security first: a service that cannot secure its port must not touch the database.
    let transport = config.security.load()?;
    let db = suite_db::connect(&config.database, DATABASE_NAME).await?;
    if config.migrate_on_start {
        suite_db::migrate::<Migrator>(&db, MIGRATION_LOCK)
            .await
            .context("migration on start failed")?;
    }

    let mut server = GrpcServer::new(config.server.clone(), transport);
    let registry = server.metrics_registry();
    registry.register_collector(Box::new(PoolMetrics::new(db.clone(), config.database.max_connections)));
    let gate = suite_db::DbGate::new(db.clone(), config.database.statement_timeout());
    let cache = Cache::new(&config.cache, CACHE_NAMESPACE, CacheMetrics::register(registry)).context("cannot set up the cache")?;
    tracing::info!(
        database = config.database.backend_name(),
        cache = cache.backend_name(),
        "user service starting"
    );

    let api = UserApi::new(
        UserStore::new(gate.clone()),
        Arc::new(cache),
        PageTokens::new(config.page_token_secret.as_deref()),
    );
    let max_message = config.server.max_message_bytes;
    let service = UserServiceServer::new(api)
        .max_decoding_message_size(max_message)
        .max_encoding_message_size(max_message);
    server
        .add_service(service)
        .with_descriptor_set(suite_proto::FILE_DESCRIPTOR_SET)
        .with_readiness(move || {
            let gate = gate.clone();
            async move { gate.ping(READINESS_PING_TIMEOUT).await }
        })
        .serve(listeners, shutdown)
        .await?;
    Ok(())
}
