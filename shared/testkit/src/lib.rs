//! Test support for the suite: real backends or a loud skip.
//!
//! PostgreSQL and Redis suites run against the servers on this machine
//! (`TEST_POSTGRES_URL`, `TEST_REDIS_URL`, defaulting to the standard local
//! ports). With `CI=true` an unreachable backend fails the test; elsewhere the
//! test says loudly which backend it skipped and passes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use sea_orm::{ConnectionTrait, Database};

mod db;
pub mod dns;
pub mod otlp;
pub mod pki;
mod proxy;
mod redis_server;
mod service_proxy;

pub use db::{TestDb, assert_field_status, assert_violation};
pub use dns::{DnsMode, DnsServer};
pub use otlp::{OtlpReceiver, ReceivedExport, ReceivedSpan};
pub use pki::{RawTlsConnector, TestCert, TestPki};
pub use proxy::{FaultProxy, ProxyMode};
pub use redis_server::RedisServer;
pub use service_proxy::ServiceProxy;

const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
const DEFAULT_REDIS_ADDR: &str = "127.0.0.1:6379";
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// True when running in CI, where every backend is required.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|value| value == "true" || value == "1")
}

/// Fails in CI, otherwise prints a banner saying what was skipped.
fn unavailable<T>(backend: &str, detail: &str) -> Option<T> {
    assert!(!in_ci(), "{backend} is required when CI=true but is unreachable: {detail}");
    eprintln!("\n*** SKIPPED: {backend} unreachable ({detail}); this test ran nothing against it ***\n");
    None
}

/// Installs a test log subscriber once (output captured per test by the runner).
pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(std::env::var("TEST_LOG").unwrap_or_else(|_| "warn".into()))
        .try_init();
}

/// Admin URL of the PostgreSQL server tests create their databases on.
pub fn postgres_admin_url() -> String {
    std::env::var("TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_owned())
}

/// Whether the PostgreSQL server answers (for the pre-test banner).
pub async fn postgres_reachable() -> Result<String, String> {
    let url = postgres_admin_url();
    let authority = url.split('@').next_back().unwrap_or(&url).to_owned();
    match tokio::time::timeout(PROBE_TIMEOUT, Database::connect(&url)).await {
        Ok(Ok(connection)) => {
            connection.close().await.ok();
            Ok(authority)
        }
        Ok(Err(error)) => Err(format!("{authority}: {error}")),
        Err(_) => Err(format!("{authority}: connect timed out")),
    }
}

/// Whether Redis answers PING (for the pre-test banner).
pub async fn redis_reachable() -> Result<String, String> {
    let addr = std::env::var("TEST_REDIS_ADDR").unwrap_or_else(|_| DEFAULT_REDIS_ADDR.to_owned());
    match tokio::time::timeout(PROBE_TIMEOUT, ping_redis(&addr)).await {
        Ok(Ok(())) => Ok(addr),
        Ok(Err(error)) => Err(format!("{addr}: {error}")),
        Err(_) => Err(format!("{addr}: PING timed out")),
    }
}

/// A PostgreSQL database created for one test and dropped when this is dropped.
#[derive(Debug)]
pub struct TestDatabase {
    pub url: String,
    name: String,
    admin_url: String,
}

impl TestDatabase {
    /// A fresh, empty database, or `None` (after a loud skip) when PostgreSQL is
    /// unreachable outside CI.
    pub async fn create() -> Option<Self> {
        let admin_url = postgres_admin_url();
        let admin = match tokio::time::timeout(PROBE_TIMEOUT, Database::connect(&admin_url)).await {
            Ok(Ok(admin)) => admin,
            Ok(Err(error)) => return unavailable("PostgreSQL", &error.to_string()),
            Err(_) => return unavailable("PostgreSQL", "connect timed out"),
        };
        let name = format!("suite_test_{}", uuid::Uuid::new_v4().simple());
        admin
            .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
            .await
            .expect("create test database");
        admin.close().await.ok();
        let url = match admin_url.rsplit_once('/') {
            Some((server, _)) => format!("{server}/{name}"),
            None => panic!("TEST_POSTGRES_URL must end in /<database>: {admin_url}"),
        };
        Some(Self { url, name, admin_url })
    }

    /// Address of the PostgreSQL server, for putting a [`FaultProxy`] in front of it.
    pub fn server_addr(&self) -> SocketAddr {
        let authority = self
            .url
            .split('@')
            .next_back()
            .and_then(|rest| rest.split('/').next())
            .unwrap_or("127.0.0.1:5432");
        authority.parse().unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 5432)))
    }

    /// This database's URL with the server address replaced by `addr`.
    pub fn url_via(&self, addr: SocketAddr) -> String {
        self.url.replace(&self.server_addr().to_string(), &addr.to_string())
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        // Drop runs inside the test's runtime, which cannot be blocked on; a
        // separate thread with its own runtime removes the database.
        let dropper = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return;
            };
            runtime.block_on(async {
                if let Ok(admin) = Database::connect(&admin_url).await {
                    let _ = admin
                        .execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                        .await;
                    admin.close().await.ok();
                }
            });
        });
        let _ = dropper.join();
    }
}

/// The Redis URL tests use, or `None` (after a loud skip) when Redis does not
/// answer PING outside CI.
pub async fn redis_url() -> Option<String> {
    match redis_reachable().await {
        Ok(addr) => Some(format!("redis://{addr}")),
        Err(detail) => unavailable("Redis", &detail),
    }
}

async fn ping_redis(addr: &str) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream.write_all(b"PING\r\n").await?;
    let mut reply = [0_u8; 7];
    stream.read_exact(&mut reply).await?;
    if &reply == b"+PONG\r\n" {
        Ok(())
    } else {
        Err(std::io::Error::other("unexpected reply to PING"))
    }
}

/// The workspace root (where `Cargo.toml` and `.tools/` live).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root exists")
}

/// Path of one of the workspace's binaries in the profile the tests were built
/// with, building it first if it is not there yet.
pub fn workspace_binary(name: &str) -> PathBuf {
    let test_executable = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let profile_dir = test_executable
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test executable lives in target/<profile>/deps");
    let binary = profile_dir.join(name);
    if !binary.exists() {
        let status = std::process::Command::new(env!("CARGO"))
            .args(["build", "--bin", name])
            .current_dir(workspace_root())
            .status()
            .expect("run cargo build");
        assert!(status.success(), "cargo build --bin {name} failed");
    }
    binary
}

/// The grpcurl binary installed by `scripts/install-tools`, `$GRPCURL`, or on
/// `PATH`; `None` (after a loud skip) outside CI when there is none.
pub fn grpcurl() -> Option<PathBuf> {
    grpcurl_path().or_else(|| unavailable("grpcurl", "not installed; run `just tools`"))
}

/// Where grpcurl is, if anywhere.
pub fn grpcurl_path() -> Option<PathBuf> {
    let candidates = std::env::var_os("GRPCURL")
        .map(PathBuf::from)
        .into_iter()
        .chain([workspace_root().join(".tools/bin/grpcurl")])
        .chain(
            std::env::var_os("PATH")
                .into_iter()
                .flat_map(|path| std::env::split_paths(&path).map(|dir| dir.join("grpcurl")).collect::<Vec<_>>()),
        );
    candidates.into_iter().find(|candidate| candidate.is_file())
}

/// promtool, installed by `scripts/install-prometheus-tools` (from `just tools`),
/// `$PROMTOOL`, or on `PATH`; `None` (after a loud skip) outside CI when there is none.
pub fn promtool() -> Option<PathBuf> {
    let candidates = std::env::var_os("PROMTOOL")
        .map(PathBuf::from)
        .into_iter()
        .chain([workspace_root().join(".tools/bin/promtool")])
        .chain(
            std::env::var_os("PATH")
                .into_iter()
                .flat_map(|path| std::env::split_paths(&path).map(|dir| dir.join("promtool")).collect::<Vec<_>>()),
        );
    candidates
        .into_iter()
        .find(|candidate| candidate.is_file())
        .or_else(|| unavailable("promtool", "not installed; run `just tools`"))
}

/// `promtool <args>` with `input` on its standard input: Ok(output) if it
/// accepted, Err(output) with what it objected to.
pub fn run_promtool(promtool: &std::path::Path, args: &[&str], input: &str) -> Result<String, String> {
    use std::io::Write as _;
    let mut child = std::process::Command::new(promtool)
        .args(args)
        .current_dir(workspace_root())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run promtool");
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input.as_bytes()).expect("write to promtool");
    }
    let output = child.wait_with_output().expect("promtool output");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if output.status.success() { Ok(text) } else { Err(text) }
}

/// The body of a [`scrape_metrics`] response.
pub fn metrics_body(response: &str) -> &str {
    response.split_once("\r\n\r\n").map_or(response, |(_, body)| body)
}

/// The Prometheus text an admin port serves at `/metrics` (plain HTTP/1.1, so
/// the test reads exactly what a scraper reads).
pub async fn scrape_metrics(admin: SocketAddr) -> String {
    scrape(admin, "").await
}

/// What Prometheus itself gets at `/metrics`: OpenMetrics, exemplars included.
pub async fn scrape_openmetrics(admin: SocketAddr) -> String {
    scrape(
        admin,
        "Accept: application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5\r\n",
    )
    .await
}

async fn scrape(admin: SocketAddr, extra_headers: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(admin).await.expect("connect to admin port");
    stream
        .write_all(format!("GET /metrics HTTP/1.1\r\nHost: localhost\r\n{extra_headers}Connection: close\r\n\r\n").as_bytes())
        .await
        .expect("send scrape");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read scrape");
    assert!(response.starts_with("HTTP/1.1 200"), "scrape failed: {response}");
    response
}

/// The value of the first sample whose line starts with `series` (name and labels).
pub fn metric_value(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        line.strip_prefix(series)
            .and_then(|rest| rest.trim().split(' ').next()?.parse().ok())
    })
}
