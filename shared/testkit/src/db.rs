//! A database per test, on either backend, and the macro that runs a suite on both.

use suite_db::DatabaseConfig;

use crate::TestDatabase;

/// Generates one test per backend from `async fn name(db: TestDb)` functions:
/// the same suite runs on SQLite and on a fresh PostgreSQL database.
#[macro_export]
macro_rules! database_suite {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::TestDb::sqlite()).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(db) = $crate::TestDb::postgres().await else { return };
                    super::$name(db).await;
                }
            )*
        }
    };
}

/// A database for one test, removed when dropped.
#[derive(Debug)]
pub enum TestDb {
    Sqlite(tempfile::TempDir),
    Postgres(TestDatabase),
}

impl TestDb {
    /// A fresh data directory for SQLite files.
    #[allow(clippy::unwrap_used)]
    pub fn sqlite() -> Self {
        Self::Sqlite(tempfile::tempdir().unwrap())
    }

    /// A fresh PostgreSQL database, or `None` after a loud skip.
    pub async fn postgres() -> Option<Self> {
        TestDatabase::create().await.map(Self::Postgres)
    }

    pub fn config(&self) -> DatabaseConfig {
        match self {
            Self::Sqlite(dir) => DatabaseConfig::sqlite(dir.path()),
            Self::Postgres(database) => DatabaseConfig::postgres(&database.url),
        }
    }

    /// The URL a test uses to look at (or tamper with) the rows of the
    /// service whose SQLite file is `<name>.sqlite`.
    pub fn url(&self, name: &str) -> String {
        match self {
            Self::Sqlite(dir) => format!("sqlite://{}/{name}.sqlite?mode=rwc", dir.path().display()),
            Self::Postgres(database) => database.url.clone(),
        }
    }
}

/// Asserts INVALID_ARGUMENT with a BadRequest violation on `field`.
pub fn assert_violation<T: std::fmt::Debug>(result: Result<T, tonic::Status>, field: &str) {
    assert_field_status(result, tonic::Code::InvalidArgument, field);
}

/// Asserts `code` with a BadRequest violation on `field` in the details.
pub fn assert_field_status<T: std::fmt::Debug>(result: Result<T, tonic::Status>, code: tonic::Code, field: &str) {
    use tonic_types::StatusExt;
    let status = result.expect_err("request should have been rejected");
    assert_eq!(status.code(), code, "{status:?}");
    let details = status.get_error_details();
    let fields: Vec<String> = details
        .bad_request()
        .map(|bad| bad.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default();
    assert!(
        fields.iter().any(|f| f == field),
        "expected a violation on {field}, got {fields:?} ({status:?})"
    );
}
