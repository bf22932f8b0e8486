//! Database plumbing shared by the suite's services.
//!
//! A service owns one database. With `DATABASE_URL` it is PostgreSQL (production,
//! Helm); without it, SQLite in a local data directory (the embedded default, so
//! `just up` needs nothing installed). Migrations are applied under a PostgreSQL
//! advisory lock so replicas that start at the same moment do not race.

use std::path::PathBuf;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;
use sea_orm::sqlx;
use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{
    ConnAcquireErr, ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, DbErr, RuntimeErr, SqlErr, Statement,
    TransactionTrait,
};
use sea_orm_migration::MigratorTrait;

mod gate;

pub use gate::{DbGate, DbOutcome, FAILURES_TO_CLOSE};
pub use sea_orm;

/// Where and how a service connects to its database.
#[derive(Debug, Clone, clap::Args)]
pub struct DatabaseConfig {
    /// PostgreSQL URL (postgres://user:pass@host/db). Without it the service
    /// keeps its data in SQLite under --data-dir.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// Directory for the embedded SQLite database when no DATABASE_URL is set.
    #[arg(long, env = "DATA_DIR", default_value = ".data")]
    pub data_dir: PathBuf,

    /// Upper bound on pooled database connections.
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = 10)]
    pub max_connections: u32,

    /// How long a request waits for a pooled connection before failing with UNAVAILABLE.
    #[arg(long, env = "DATABASE_ACQUIRE_TIMEOUT_MS", default_value_t = 2_000)]
    pub acquire_timeout_ms: u64,

    /// How long opening one connection may take.
    #[arg(long, env = "DATABASE_CONNECT_TIMEOUT_MS", default_value_t = 3_000)]
    pub connect_timeout_ms: u64,

    /// The longest one store operation (its statements, waiting for a connection
    /// included) may take, whatever the call's deadline; a call's own deadline
    /// ends it sooner.
    #[arg(long, env = "DATABASE_STATEMENT_TIMEOUT_MS", default_value_t = 5_000)]
    pub statement_timeout_ms: u64,
}

impl DatabaseConfig {
    /// The embedded default: SQLite under `data_dir`.
    pub fn sqlite(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            database_url: None,
            data_dir: data_dir.into(),
            ..Self::postgres(String::new())
        }
    }

    /// A PostgreSQL database at `url`, with default pool settings.
    pub fn postgres(url: impl Into<String>) -> Self {
        Self {
            database_url: Some(url.into()).filter(|url: &String| !url.is_empty()),
            data_dir: PathBuf::from(".data"),
            max_connections: 10,
            acquire_timeout_ms: 2_000,
            connect_timeout_ms: 3_000,
            statement_timeout_ms: 5_000,
        }
    }

    pub fn statement_timeout(&self) -> Duration {
        Duration::from_millis(self.statement_timeout_ms)
    }

    /// A name for logs that never contains credentials.
    pub fn backend_name(&self) -> &'static str {
        if self.database_url.is_some() { "postgresql" } else { "sqlite" }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot create data directory {path}: {source}")]
    DataDir { path: PathBuf, source: std::io::Error },
    #[error("cannot connect to the {backend} database: {source}")]
    Connect { backend: &'static str, source: DbErr },
}

/// Opens the connection pool. `database_name` names the SQLite file
/// (`<data_dir>/<database_name>.sqlite`) so each service keeps its own data.
pub async fn connect(config: &DatabaseConfig, database_name: &str) -> Result<DatabaseConnection, ConnectError> {
    let url = match &config.database_url {
        Some(url) => url.clone(),
        None => {
            std::fs::create_dir_all(&config.data_dir).map_err(|source| ConnectError::DataDir {
                path: config.data_dir.clone(),
                source,
            })?;
            let file = config.data_dir.join(format!("{database_name}.sqlite"));
            format!("sqlite://{}?mode=rwc", file.display())
        }
    };
    let mut options = ConnectOptions::new(url);
    options
        .max_connections(config.max_connections)
        .min_connections(0)
        .acquire_timeout(Duration::from_millis(config.acquire_timeout_ms))
        .connect_timeout(Duration::from_millis(config.connect_timeout_ms))
        .idle_timeout(Duration::from_secs(300))
        .sqlx_logging(false)
        // WAL lets readers run beside the single writer; the busy timeout turns
        // a brief write lock into a wait instead of an error.
        .map_sqlx_sqlite_opts(|sqlite| {
            sqlite
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(5))
                .foreign_keys(true)
        });
    Database::connect(options).await.map_err(|source| ConnectError::Connect {
        backend: config.backend_name(),
        source,
    })
}

/// Applies every pending migration of `M`; a no-op when all are applied.
///
/// On PostgreSQL the whole run is one transaction holding an advisory lock
/// derived from `lock_name`, so two replicas migrating at once serialise: the
/// second waits, then finds nothing left to do.
pub async fn migrate<M: MigratorTrait>(db: &DatabaseConnection, lock_name: &str) -> Result<(), DbErr> {
    match db.get_database_backend() {
        DbBackend::Postgres => {
            let transaction = db.begin().await?;
            transaction
                .execute(Statement::from_sql_and_values(
                    DbBackend::Postgres,
                    "SELECT pg_advisory_xact_lock($1)",
                    [advisory_lock_key(lock_name).into()],
                ))
                .await?;
            M::up(&transaction, None).await?;
            transaction.commit().await
        }
        _ => M::up(db, None).await,
    }
}

/// A stable 64-bit key for `pg_advisory_xact_lock` (FNV-1a of the name).
fn advisory_lock_key(name: &str) -> i64 {
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    i64::from_ne_bytes(hash.to_ne_bytes())
}

/// What a database error means for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbFailure {
    /// The database cannot be reached or is overloaded: retryable (UNAVAILABLE).
    Unavailable,
    /// A unique constraint rejected the write.
    UniqueViolation,
    /// Anything else: a bug or a schema problem (INTERNAL).
    Other,
}

impl DbFailure {
    /// The span attribute `error.type` for this kind of failure.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unavailable => "unavailable",
            Self::UniqueViolation => "unique_violation",
            Self::Other => "other",
        }
    }
}

/// Classifies `error` and, when the current span is a database span (named
/// `db`, with `otel.status_code` and `error.type` fields), marks it failed with
/// the error's kind. Services call it where a database error becomes one of
/// theirs, which every failed statement passes through, so a trace shows which
/// query failed; other spans are left alone, since a unique violation is a
/// caller's mistake (ALREADY_EXISTS), not a failed call.
pub fn classify_and_record(error: &DbErr) -> DbFailure {
    let failure = classify(error);
    let span = tracing::Span::current();
    if span.metadata().is_some_and(|metadata| metadata.name() == "db") {
        span.record("otel.status_code", "error");
        span.record("error.type", failure.as_str());
    }
    failure
}

/// Classifies a sea-orm error without looking at the database's message text
/// (only at the gate's own two errors).
pub fn classify(error: &DbErr) -> DbFailure {
    if matches!(error.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) {
        return DbFailure::UniqueViolation;
    }
    match error {
        DbErr::Custom(message) if message == gate::DATABASE_DOWN || message == gate::STATEMENT_TIMED_OUT => DbFailure::Unavailable,
        DbErr::ConnectionAcquire(ConnAcquireErr::Timeout | ConnAcquireErr::ConnectionClosed) => DbFailure::Unavailable,
        DbErr::Conn(runtime) | DbErr::Exec(runtime) | DbErr::Query(runtime) => classify_runtime(runtime),
        _ => DbFailure::Other,
    }
}

fn classify_runtime(error: &RuntimeErr) -> DbFailure {
    let RuntimeErr::SqlxError(error) = error else {
        return DbFailure::Other;
    };
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => DbFailure::Unavailable,
        sqlx::Error::Database(database) => match database.code().as_deref() {
            // PostgreSQL classes 08 (connection), 53 (insufficient resources),
            // 57 (operator intervention: shutdown, statement timeout).
            Some(code) if code.starts_with("08") || code.starts_with("53") || code.starts_with("57") => DbFailure::Unavailable,
            // SQLite BUSY and LOCKED: another writer held the file past the busy timeout.
            Some("5" | "6" | "517" | "262") => DbFailure::Unavailable,
            _ => DbFailure::Other,
        },
        _ => DbFailure::Other,
    }
}

/// Exposes the connection pool's size and idle count at scrape time.
#[derive(Debug)]
pub struct PoolMetrics {
    db: DatabaseConnection,
    max_connections: u32,
}

impl PoolMetrics {
    pub fn new(db: DatabaseConnection, max_connections: u32) -> Self {
        Self { db, max_connections }
    }

    fn sizes(&self) -> Option<(u32, usize)> {
        match self.db.get_database_backend() {
            DbBackend::Postgres => {
                let pool = self.db.get_postgres_connection_pool();
                Some((pool.size(), pool.num_idle()))
            }
            DbBackend::Sqlite => {
                let pool = self.db.get_sqlite_connection_pool();
                Some((pool.size(), pool.num_idle()))
            }
            DbBackend::MySql => None,
        }
    }
}

impl Collector for PoolMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some((open, idle)) = self.sizes() else { return Ok(()) };
        let idle = i64::try_from(idle).unwrap_or(i64::MAX);
        let open = i64::from(open);
        for (name, help, value) in [
            ("db_pool_connections_open", "Connections currently open in the pool.", open),
            ("db_pool_connections_idle", "Open connections not serving a query.", idle),
            ("db_pool_connections_in_use", "Connections serving a query right now.", open - idle),
            (
                "db_pool_connections_max",
                "Configured upper bound of the pool.",
                i64::from(self.max_connections),
            ),
        ] {
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        Ok(())
    }
}

/// The OpenTelemetry `db.system` of a connection, for database spans.
/// Spans name the operation and table only, never a statement's bound values.
pub fn system_name(db: &DatabaseConnection) -> &'static str {
    match db.get_database_backend() {
        sea_orm::DatabaseBackend::Postgres => "postgresql",
        sea_orm::DatabaseBackend::Sqlite => "sqlite",
        sea_orm::DatabaseBackend::MySql => "mysql",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advisory_lock_key_is_stable_and_distinct_per_name() {
        assert_eq!(advisory_lock_key("user-service"), advisory_lock_key("user-service"));
        assert_ne!(advisory_lock_key("user-service"), advisory_lock_key("order-service"));
    }

    #[test]
    fn pool_timeout_is_unavailable() {
        assert_eq!(classify(&DbErr::ConnectionAcquire(ConnAcquireErr::Timeout)), DbFailure::Unavailable);
    }

    #[test]
    fn record_not_found_is_other() {
        assert_eq!(classify(&DbErr::RecordNotFound("x".into())), DbFailure::Other);
    }

    #[test]
    fn config_without_url_is_sqlite() {
        assert_eq!(DatabaseConfig::sqlite("/tmp/x").backend_name(), "sqlite");
        assert_eq!(DatabaseConfig::postgres("postgres://h/db").backend_name(), "postgresql");
        assert_eq!(DatabaseConfig::postgres("").backend_name(), "sqlite");
    }
}
