//! A breaker in front of the connection pool, so that a database outage costs
//! callers microseconds instead of the pool's acquire timeout each.
//!
//! Every operation a store runs goes through [`DbGate::run`]: bounded by the
//! statement timeout, and counted. After [`FAILURES_TO_CLOSE`] operations in a
//! row fail because the database is unreachable (refused or broken connections,
//! the pool's acquire timeout, a statement that ran out of time), the gate
//! closes: operations fail at once with an unavailable error, readiness reports
//! NOT_SERVING, and a probe pings the database every [`PROBE_INTERVAL`] until it
//! answers, which opens the gate again. A caller's own error (a unique
//! violation) and every success count as the database answering.
//!
//! A statement also ends with the call it serves: the server drops a call's
//! future at its deadline (`grpc-timeout`), and sqlx closes a connection whose
//! statement was dropped mid-way rather than reuse it.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use sea_orm::{DatabaseConnection, DbErr};

use crate::{DbFailure, classify};

/// Unreachable-database failures in a row that close the gate.
pub const FAILURES_TO_CLOSE: u32 = 3;
/// How often a closed gate pings the database.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(200);
/// The longest a ping may take to count as the database answering.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// The message of the error a closed gate answers with.
pub(crate) const DATABASE_DOWN: &str = "the database is unreachable; not trying until a probe reaches it";
/// The message of the error for a statement that ran past the statement timeout.
pub(crate) const STATEMENT_TIMED_OUT: &str = "the statement ran past the statement timeout";

/// An error of the service's own kind that may carry a database error, for
/// [`DbGate::run`] to tell a database failure from the caller's.
pub trait DbOutcome: From<DbErr> {
    fn database_error(&self) -> Option<&DbErr>;
}

/// The pool behind its gate. Cheap to clone; clones share state.
#[derive(Debug, Clone)]
pub struct DbGate {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    db: DatabaseConnection,
    statement_timeout: Duration,
    failures: AtomicU32,
    closed: AtomicBool,
}

impl DbGate {
    pub fn new(db: DatabaseConnection, statement_timeout: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                db,
                statement_timeout,
                failures: AtomicU32::new(0),
                closed: AtomicBool::new(false),
            }),
        }
    }

    /// The pool, for the statements of an operation run through [`DbGate::run`].
    pub fn db(&self) -> &DatabaseConnection {
        &self.inner.db
    }

    /// Whether the gate lets operations through: false while the database is known down.
    pub fn is_open(&self) -> bool {
        !self.inner.closed.load(Ordering::Acquire)
    }

    /// Runs one store operation: refused at once while the gate is closed,
    /// otherwise cut off at the statement timeout, and its outcome counted.
    pub async fn run<T, E: DbOutcome>(&self, operation: impl Future<Output = Result<T, E>>) -> Result<T, E> {
        if !self.is_open() {
            return Err(E::from(DbErr::Custom(DATABASE_DOWN.to_owned())));
        }
        let result = match tokio::time::timeout(self.inner.statement_timeout, operation).await {
            Ok(result) => result,
            Err(_) => Err(E::from(DbErr::Custom(STATEMENT_TIMED_OUT.to_owned()))),
        };
        let unreachable = result
            .as_ref()
            .err()
            .and_then(DbOutcome::database_error)
            .is_some_and(|error| classify(error) == DbFailure::Unavailable);
        self.count(unreachable);
        result
    }

    /// Whether the database answers a ping within `timeout`; counted like an
    /// operation, so that readiness checks close the gate on a database that
    /// hangs while no call is made.
    pub async fn ping(&self, timeout: Duration) -> bool {
        if !self.is_open() {
            return false;
        }
        let answered = answers(&self.inner.db, timeout).await;
        self.count(!answered);
        answered
    }

    fn count(&self, unreachable: bool) {
        let inner = &self.inner;
        if !unreachable {
            inner.failures.store(0, Ordering::Relaxed);
            return;
        }
        let failures = inner.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures >= FAILURES_TO_CLOSE && !inner.closed.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                failures,
                "the database is unreachable; failing database calls at once until a probe reaches it"
            );
            tokio::spawn(probe_until_reachable(Arc::downgrade(&self.inner)));
        }
    }
}

async fn probe_until_reachable(gate: std::sync::Weak<Inner>) {
    loop {
        tokio::time::sleep(PROBE_INTERVAL).await;
        let Some(inner) = gate.upgrade() else { return };
        if answers(&inner.db, PROBE_TIMEOUT).await {
            inner.failures.store(0, Ordering::Relaxed);
            inner.closed.store(false, Ordering::Release);
            tracing::info!("the database answers again; database calls go through");
            return;
        }
    }
}

/// Whether `db` answers a ping within `timeout`.
async fn answers(db: &DatabaseConnection, timeout: Duration) -> bool {
    matches!(tokio::time::timeout(timeout, db.ping()).await, Ok(Ok(())))
}
