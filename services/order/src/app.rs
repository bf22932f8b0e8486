//! Wires configuration to running parts: database, user-service client, API and server harness.

use std::future::Future;
use std::time::Duration;

use anyhow::Context as _;
use suite_db::PoolMetrics;
use suite_grpc::client::{ClientMetrics, Dependency, Dial};
use suite_grpc::process::UsageError;
use suite_grpc::{GrpcServer, Listeners, PageTokens, Transport};
use suite_proto::suite::order::v1::order_service_server::OrderServiceServer;
use suite_tls::{MtlsConnector, SpiffeId};

use crate::config::{Command, MigrateConfig, ServeConfig};
use crate::grpc::OrderApi;
use crate::migration::{MIGRATION_LOCK, Migrator};
use crate::prices::PriceList;
use crate::store::OrderStore;
use crate::users::UserDirectory;

/// The SQLite file name under the data directory.
const DATABASE_NAME: &str = "order";
const USER_SERVICE: &str = "user-service";
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
    let prices = load_price_list(&config)?;
    let user_dial = user_service_dial(&config, &transport)?;
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
    let dependency_config = config.user_service.dependency_config();
    let default_deadline = dependency_config.default_deadline;
    let client_metrics = ClientMetrics::register(registry);
    let user_service = &config.user_service;
    let replicas = suite_grpc::client::channel_pool(
        USER_SERVICE,
        &user_service.user_service_addr,
        Duration::from_millis(user_service.resolve_interval_ms),
        user_dial,
        &client_metrics,
    )?;
    let users = UserDirectory::new(Dependency::new(USER_SERVICE, replicas, dependency_config, &client_metrics));
    tracing::info!(
        database = config.database.backend_name(),
        user_service = %config.user_service.user_service_addr,
        "order service starting"
    );

    let api = OrderApi::new(
        OrderStore::new(gate.clone()),
        users,
        PageTokens::new(config.page_token_secret.as_deref()),
        default_deadline,
        prices,
    );
    let max_message = config.server.max_message_bytes;
    let service = OrderServiceServer::new(api)
        .max_decoding_message_size(max_message)
        .max_encoding_message_size(max_message);
    // Readiness is the database only: with the user service down, orders can
    // still be read and CreateOrder fails fast, which beats no order service.
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

/// `PRICE_LIST`, checked whole: a file that does not read or parse, or
/// prices something no order could carry, is a configuration error (exit 64),
/// never a replica serving with part of a list.
fn load_price_list(config: &ServeConfig) -> anyhow::Result<Option<PriceList>> {
    let Some(path) = &config.price_list else {
        tracing::warn!("no PRICE_LIST configured: end users cannot create orders, and the back office must set every unit price");
        return Ok(None);
    };
    let prices = PriceList::from_file(path).map_err(|error| UsageError(format!("PRICE_LIST {}: {error}", path.display())))?;
    tracing::info!(path = %path.display(), skus = prices.len(), "price list loaded");
    Ok(Some(prices))
}

/// How to reach the user service's replicas: over mutual TLS with this service's own
/// certificate when the gRPC port has one (so it reloads on rotation too), each
/// replica required to present the user service's identity.
fn user_service_dial(config: &ServeConfig, transport: &Transport) -> anyhow::Result<Dial> {
    let addr = &config.user_service.user_service_addr;
    Ok(match transport {
        Transport::Mtls { tls, .. } | Transport::ServerOnlyTls { tls } => {
            let credentials = tls
                .credentials()
                .context("calling the user service needs this service's own SPIFFE certificate")?;
            let expected = match &config.user_service.user_service_identity {
                Some(identity) => identity.clone(),
                None => {
                    let own = credentials.identity();
                    SpiffeId::new(own.trust_domain(), own.namespace(), USER_SERVICE)?
                }
            };
            tracing::info!(%addr, %expected, "calling the user service over mutual TLS");
            Dial::Mtls(MtlsConnector::new(credentials, expected, config.security.tls.options())?)
        }
        Transport::InsecurePlaintext => Dial::Plaintext,
    })
}
