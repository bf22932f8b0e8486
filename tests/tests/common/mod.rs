//! The suite's real binaries started as operators start them: over mutual TLS
//! with the certificates `dev-certs` issues and the shipped development
//! policies, driven by grpcurl and by tonic clients presenting the operator's
//! certificate.

#![allow(dead_code, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use suite_testkit::{workspace_binary, workspace_root};
use suite_tls::{CredentialPaths, Credentials, MtlsConnector, SpiffeId, TlsOptions};

pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// The identity `dev-certs` gives a service.
pub fn dev_identity(name: &str) -> SpiffeId {
    format!("spiffe://suite.local/ns/dev/sa/{name}").parse().unwrap()
}

/// A fresh set of development certificates from the `dev-certs` binary.
pub struct DevCerts {
    dir: tempfile::TempDir,
}

impl DevCerts {
    pub fn issue() -> Arc<Self> {
        let dir = tempfile::tempdir().unwrap();
        let output = Command::new(workspace_binary("dev-certs"))
            .arg("--dir")
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "dev-certs failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Arc::new(Self { dir })
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    pub fn path_str(&self, file: &str) -> String {
        self.path(file).to_str().unwrap().to_owned()
    }

    /// `edge-gateway dev-token`: a token for `subject` with `roles`, signed with these certificates' dev key.
    pub fn dev_token(&self, subject: &str, roles: &str) -> String {
        let output = Command::new(workspace_binary("edge-gateway"))
            .args([
                "dev-token",
                "--certs-dir",
                &self.path_str(""),
                "--subject",
                subject,
                "--roles",
                roles,
            ])
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).unwrap().trim().to_owned()
    }

    /// The TLS, policy and (for the order service) price list environment `just up` gives the service `name`.
    fn server_env(&self, command: &mut Command, name: &str) {
        command
            .env("TLS_CERT", self.path(&format!("{name}.pem")))
            .env("TLS_KEY", self.path(&format!("{name}-key.pem")))
            .env("TLS_CA", self.path("ca.pem"))
            .env("AUTHZ_POLICY", workspace_root().join(format!("config/dev/{name}.authz.toml")));
        if name == "order-service" {
            command.env("PRICE_LIST", workspace_root().join("config/dev/order-service.prices.toml"));
        }
    }

    /// grpcurl's flags for calling as the operator.
    pub fn operator_flags(&self) -> Vec<String> {
        vec![
            "-cacert".into(),
            self.path_str("ca.pem"),
            "-cert".into(),
            self.path_str("operator.pem"),
            "-key".into(),
            self.path_str("operator-key.pem"),
        ]
    }

    /// The operator's mTLS client for a server that must be `expected`.
    pub fn operator_connector(&self, expected: SpiffeId) -> MtlsConnector {
        let credentials = Credentials::load(CredentialPaths {
            cert: self.path("operator.pem"),
            key: self.path("operator-key.pem"),
            ca: self.path("ca.pem"),
        })
        .unwrap();
        MtlsConnector::new(&credentials, expected, TlsOptions::default()).unwrap()
    }
}

/// A running `<binary> serve`, killed on drop if a test fails before stopping it.
pub struct Server {
    pub child: Child,
    pub grpc: SocketAddr,
    pub admin: SocketAddr,
    pub certs: Arc<DevCerts>,
    name: &'static str,
    /// Where its log lines go, when they are kept: shown if it dies during start-up.
    log: Option<PathBuf>,
}

impl Server {
    /// The user service with fresh certificates.
    pub async fn start(data_dir: &Path, database_url: Option<&str>) -> Self {
        Self::start_service("user-service", DevCerts::issue(), data_dir, database_url, &[]).await
    }

    /// `name` (`user-service`, `order-service`) with its dev certificate and policy,
    /// its SQLite file under `data_dir` unless `database_url` is given.
    pub async fn start_service(
        name: &'static str,
        certs: Arc<DevCerts>,
        data_dir: &Path,
        database_url: Option<&str>,
        extra: &[&str],
    ) -> Self {
        Self::start_service_on(free_addr(), name, certs, data_dir, database_url, extra).await
    }

    /// Like [`Self::start_service`], with the gRPC port on `grpc`.
    pub async fn start_service_on(
        grpc: SocketAddr,
        name: &'static str,
        certs: Arc<DevCerts>,
        data_dir: &Path,
        database_url: Option<&str>,
        extra: &[&str],
    ) -> Self {
        let admin = free_addr();
        let mut command = Self::service_command(grpc, admin, name, &certs, data_dir, database_url);
        // Kept so that a failed start-up can say why.
        let log = data_dir.join(format!("{name}-{}.log", grpc.port()));
        command
            .args(["--log-filter", "warn"])
            .args(extra)
            .stdout(std::fs::File::create(&log).unwrap());
        Self::spawn_logging_to(name, command, grpc, admin, certs, Some(log)).await
    }

    /// The edge gateway binary in front of `users` and `orders`, with the dev listener
    /// certificate, JWKS and routes (written under `dir`), serving on `grpc` and `admin`
    /// with `log_filter`; stdout and extra settings are the caller's.
    pub fn gateway_command(
        grpc: SocketAddr,
        admin: SocketAddr,
        certs: &DevCerts,
        dir: &Path,
        (users, orders): (SocketAddr, SocketAddr),
        log_filter: &str,
    ) -> Command {
        let routes = dir.join("routes.toml");
        std::fs::write(
            &routes,
            format!(
                "[[upstreams]]\nname = \"user-service\"\naddress = \"{users}\"\nservices = [\"suite.user.v1.UserService\"]\n\n\
                 [[upstreams]]\nname = \"order-service\"\naddress = \"{orders}\"\nservices = [\"suite.order.v1.OrderService\"]\n"
            ),
        )
        .unwrap();
        let mut command = Command::new(workspace_binary("edge-gateway"));
        command
            .env("TLS_CERT", certs.path("edge-gateway.pem"))
            .env("TLS_KEY", certs.path("edge-gateway-key.pem"))
            .env("TLS_CA", certs.path("ca.pem"))
            .env("JWKS_FILE", certs.path("jwks.json"))
            .env("JWT_ISSUER", "suite-dev")
            .env("JWT_AUDIENCE", "suite")
            .env("GATEWAY_ROUTES", &routes)
            .args([
                "serve",
                "--grpc-addr",
                &grpc.to_string(),
                "--admin-addr",
                &admin.to_string(),
                "--log-filter",
                log_filter,
            ])
            .stderr(Stdio::inherit());
        command
    }

    /// `name serve` on `grpc` and `admin` with its dev certificate and policy, its
    /// SQLite file under `data_dir` unless `database_url` is given; the caller adds
    /// the log filter, further flags and where stdout goes.
    pub fn service_command(
        grpc: SocketAddr,
        admin: SocketAddr,
        name: &'static str,
        certs: &DevCerts,
        data_dir: &Path,
        database_url: Option<&str>,
    ) -> Command {
        let mut command = Command::new(workspace_binary(name));
        certs.server_env(&mut command, name);
        command
            .args(["serve", "--grpc-addr", &grpc.to_string(), "--admin-addr", &admin.to_string()])
            .arg("--data-dir")
            .arg(data_dir)
            .env_remove("DATABASE_URL")
            .env_remove("REDIS_URL")
            .stderr(Stdio::inherit());
        if let Some(url) = database_url {
            command.env("DATABASE_URL", url);
        }
        command
    }

    /// Spawns `command` (which must serve on `grpc` and `admin`) and waits for its health.
    pub async fn spawn(name: &'static str, command: Command, grpc: SocketAddr, admin: SocketAddr, certs: Arc<DevCerts>) -> Self {
        Self::spawn_logging_to(name, command, grpc, admin, certs, None).await
    }

    /// [`Self::spawn`] for a `command` whose stdout goes to the file `log`, which a failed start-up shows.
    pub async fn spawn_logging_to(
        name: &'static str,
        mut command: Command,
        grpc: SocketAddr,
        admin: SocketAddr,
        certs: Arc<DevCerts>,
        log: Option<PathBuf>,
    ) -> Self {
        let mut server = Self {
            child: command.spawn().unwrap(),
            grpc,
            admin,
            certs,
            name,
            log,
        };
        server.wait_until_serving().await;
        server
    }

    /// Start-up is not what these tests measure: a debug build migrating its database on a
    /// machine busy with the rest of the suite can take seconds, so the wait is generous,
    /// and a process that exits says so at once instead of timing out.
    async fn wait_until_serving(&mut self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while std::time::Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                let log = self
                    .log
                    .as_ref()
                    .and_then(|path| std::fs::read_to_string(path).ok())
                    .unwrap_or_default();
                panic!("{} exited during start-up with {status}; it wrote:\n{log}", self.name);
            }
            if let Ok(channel) = suite_grpc::client::connect_insecure(self.admin).await {
                let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
                if let Ok(reply) = health.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await
                    && reply.into_inner().status == 1
                {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{} never became ready", self.name);
    }

    /// A channel to the gRPC port as the operator, verifying the server's identity.
    pub async fn channel(&self) -> tonic::transport::Channel {
        suite_grpc::client::connect_mtls(self.grpc, self.certs.operator_connector(dev_identity(self.name)))
            .await
            .unwrap()
    }

    /// grpcurl as the operator, over mutual TLS.
    pub fn grpcurl(&self, grpcurl_bin: &Path, args: &[&str]) -> String {
        let mut all: Vec<String> = self.certs.operator_flags();
        all.extend(args.iter().map(|arg| (*arg).to_owned()));
        grpcurl(grpcurl_bin, &all.iter().map(String::as_str).collect::<Vec<_>>())
    }

    pub fn terminate(&self) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).unwrap());
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn grpcurl(grpcurl: &Path, args: &[&str]) -> String {
    let Output { status, stdout, stderr } = Command::new(grpcurl).args(args).output().unwrap();
    assert!(status.success(), "grpcurl {args:?} failed: {}", String::from_utf8_lossy(&stderr));
    String::from_utf8(stdout).unwrap()
}

/// grpcurl's stderr, asserting that the call failed.
pub fn grpcurl_fails(grpcurl: &Path, args: &[&str]) -> String {
    let Output { status, stdout, stderr } = Command::new(grpcurl).args(args).output().unwrap();
    assert!(
        !status.success(),
        "grpcurl {args:?} succeeded: {}",
        String::from_utf8_lossy(&stdout)
    );
    String::from_utf8_lossy(&stderr).into_owned()
}

/// A port free on every one of `ips` (each a loopback address): replicas of one
/// service behind a DNS name listen on the same port at different addresses.
pub fn free_port_on(ips: &[std::net::Ipv4Addr]) -> u16 {
    for _ in 0..100 {
        let port = free_addr().port();
        let free = ips
            .iter()
            .all(|ip| std::net::TcpListener::bind(SocketAddr::from((*ip, port))).is_ok());
        if free {
            return port;
        }
    }
    panic!("no port is free on all of {ips:?}");
}

/// `command` run in a mount namespace of its own in which `/etc/resolv.conf` is
/// `resolv_conf` (a bind mount), so that the process's system resolver asks the
/// test's DNS server while the rest of the machine is untouched. Needs `unshare`
/// (util-linux) and CAP_SYS_ADMIN; `exec` keeps the process id, so signals reach
/// the program itself. The environment, arguments and directory are carried
/// over; stdio is the caller's to set on the result.
pub fn in_mount_namespace(command: &Command, resolv_conf: &Path) -> Command {
    let mut wrapped = Command::new("unshare");
    wrapped
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(r#"mount --bind "$0" /etc/resolv.conf && exec "$@""#)
        .arg(resolv_conf)
        .arg(command.get_program())
        .args(command.get_args());
    for (key, value) in command.get_envs() {
        match value {
            Some(value) => wrapped.env(key, value),
            None => wrapped.env_remove(key),
        };
    }
    if let Some(dir) = command.get_current_dir() {
        wrapped.current_dir(dir);
    }
    wrapped
}

/// Whether [`in_mount_namespace`] can work here (root, `unshare` present and permitted).
pub fn mount_namespaces_work() -> Result<(), String> {
    let output = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg("mount --bind /dev/null /etc/resolv.conf")
        .output()
        .map_err(|error| format!("cannot run unshare: {error}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "unshare --mount with a bind mount failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// 127.0.0.`last`: a loopback address of its own for each replica.
pub fn loopback(last: u8) -> std::net::Ipv4Addr {
    std::net::Ipv4Addr::new(127, 0, 0, last)
}

/// Polls `condition` every 50 ms until it holds; panics with `what` after `within`.
pub async fn eventually<F, Fut>(what: &str, within: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + within;
    loop {
        if condition().await {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A CreateOrder of one item at one cent.
pub fn one_item_order(user_id: &str, key: &str) -> suite_proto::suite::order::v1::CreateOrderRequest {
    use suite_proto::suite::order::v1 as pb;
    pb::CreateOrderRequest {
        user_id: user_id.into(),
        idempotency_key: key.into(),
        items: vec![pb::LineItem {
            sku: "A".into(),
            quantity: 1,
            unit_price: Some(pb::Money {
                currency_code: "EUR".into(),
                amount_minor: 1,
            }),
            line_total: None,
        }],
    }
}

/// Distinct per test run, so that idempotency keys never meet an earlier run's.
pub fn run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("run-{}-{nanos}", std::process::id())
}

/// GetUser calls a user-service replica has answered, by its own `/metrics`.
pub async fn get_user_calls(admin: SocketAddr) -> u64 {
    let text = suite_tests::bench::metrics::scrape(admin).await.unwrap();
    suite_tests::bench::metrics::sum(&text, "rpc_server_call_duration_seconds_count", &[("rpc_method", "GetUser")]).unwrap()
}

/// One CreateOrder as a [`Load`] saw it, times from the start of the load.
#[derive(Debug, Clone)]
pub struct Call {
    pub started: Duration,
    pub ended: Duration,
    /// The order's id, or the code and message.
    pub outcome: Result<String, (tonic::Code, String)>,
}

impl Call {
    pub fn took(&self) -> Duration {
        self.ended - self.started
    }

    pub fn failed(&self) -> bool {
        self.outcome.is_err()
    }
}

/// The longest a [`Load`] waits for one CreateOrder before recording it failed.
pub const LOAD_CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// CreateOrder calls from `concurrency` tasks over one connection to the order
/// service, round-robin over the users, each with a new idempotency key, every
/// one recorded; until `limit` calls were made, or until stopped.
pub struct Load {
    epoch: std::time::Instant,
    stop: Arc<std::sync::atomic::AtomicBool>,
    calls: Arc<std::sync::Mutex<Vec<Call>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    pub fn start(channel: tonic::transport::Channel, users: &[String], concurrency: usize, limit: Option<u64>) -> Self {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        let epoch = std::time::Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let next = Arc::new(AtomicU64::new(0));
        let calls = Arc::new(std::sync::Mutex::new(Vec::new()));
        let users: Arc<[String]> = users.into();
        let run = run_id();
        let tasks = (0..concurrency)
            .map(|_| {
                let mut client = suite_proto::suite::order::v1::order_service_client::OrderServiceClient::new(channel.clone());
                let (stop, next, calls, users, run) = (stop.clone(), next.clone(), calls.clone(), users.clone(), run.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let n = next.fetch_add(1, Ordering::Relaxed);
                        if limit.is_some_and(|limit| n >= limit) {
                            break;
                        }
                        let user = &users[usize::try_from(n).unwrap() % users.len()];
                        let request = one_item_order(user, &format!("{run}-{n}"));
                        let started = epoch.elapsed();
                        let outcome = match tokio::time::timeout(LOAD_CALL_TIMEOUT, client.create_order(request)).await {
                            Ok(Ok(reply)) => Ok(reply.into_inner().order.unwrap().id),
                            Ok(Err(status)) => Err((status.code(), status.message().to_owned())),
                            Err(_) => Err((tonic::Code::DeadlineExceeded, format!("no answer within {LOAD_CALL_TIMEOUT:?}"))),
                        };
                        let ended = epoch.elapsed();
                        // A refusal is immediate: pace the loop so a refusing breaker is not a busy loop.
                        if outcome.is_err() {
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                        calls.lock().unwrap().push(Call { started, ended, outcome });
                    }
                })
            })
            .collect();
        Self { epoch, stop, calls, tasks }
    }

    /// Time since the load started: the clock every [`Call`] is on.
    pub fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    pub fn succeeded(&self) -> u64 {
        self.calls.lock().unwrap().iter().filter(|call| !call.failed()).count() as u64
    }

    /// Fails the test at once if any call has failed so far.
    pub fn assert_no_failure(&self, when: &str) {
        let calls = self.calls.lock().unwrap();
        let failures: Vec<&Call> = calls.iter().filter(|call| call.failed()).collect();
        assert!(
            failures.is_empty(),
            "{} CreateOrder calls failed {when} (of {} that succeeded); the first: {:?}",
            failures.len(),
            calls.len() - failures.len(),
            &failures[..failures.len().min(5)]
        );
    }

    /// Waits for the calls under way (all of them, for a load with a limit, unless
    /// `stop`) and returns every call, in the order they ended.
    pub async fn finish(mut self, stop: bool) -> Vec<Call> {
        if stop {
            self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        for task in self.tasks.drain(..) {
            task.await.unwrap();
        }
        let mut calls = self.calls.lock().unwrap().clone();
        calls.sort_by_key(|call| call.ended);
        calls
    }

    /// [`Load::finish`] for a load that must not fail: fails the test if any call
    /// failed, and returns how many succeeded.
    pub async fn finish_without_failure(self, stop: bool) -> u64 {
        let calls = self.finish(stop).await;
        let failures: Vec<&Call> = calls.iter().filter(|call| call.failed()).collect();
        assert!(
            failures.is_empty(),
            "{} CreateOrder calls failed under load (of {}); the first: {:?}",
            failures.len(),
            calls.len(),
            &failures[..failures.len().min(5)]
        );
        calls.len() as u64
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}
