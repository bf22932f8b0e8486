//! The order service and a real user service, both in this process on
//! ephemeral ports, with real gRPC clients.

#![allow(dead_code, clippy::unwrap_used)]

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use order_service::config::{ServeConfig, UserServiceArgs};
use suite_db::DatabaseConfig;
use suite_grpc::{Listeners, SecurityArgs, ServerConfig};
use suite_proto::suite::order::v1 as pb;
use suite_proto::suite::order::v1::order_service_client::OrderServiceClient;
use suite_proto::suite::user::v1 as user_pb;
use suite_proto::suite::user::v1::user_service_client::UserServiceClient;
pub use suite_testkit::TestDb;
use suite_testkit::TestPki;
use suite_tls::TlsArgs;
use tokio::sync::oneshot;
use tonic::transport::Channel;

/// A server running in a task, stopped like SIGTERM when dropped or told to.
pub struct Running {
    pub grpc_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Running {
    async fn start<F, Fut>(grpc_addr: SocketAddr, serve: F) -> Self
    where
        F: FnOnce(Listeners, oneshot::Receiver<()>) -> Fut,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        suite_testkit::init_logging();
        let listeners = Listeners::bind(grpc_addr, "127.0.0.1:0".parse().unwrap()).await.unwrap();
        let grpc_addr = listeners.grpc.local_addr().unwrap();
        let admin_addr = listeners.admin.local_addr().unwrap();
        let (shutdown, stop) = oneshot::channel();
        let task = tokio::spawn(serve(listeners, stop));
        let running = Self {
            grpc_addr,
            admin_addr,
            shutdown: Some(shutdown),
            task: Some(task),
        };
        running.wait_until_serving().await;
        running
    }

    async fn wait_until_serving(&self) {
        // Start-up is not what these tests measure: with the rest of the suite running on the
        // same two cores, migrations and the first connections can take seconds.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while std::time::Instant::now() < deadline {
            if let Ok(channel) = suite_grpc::client::connect_insecure(self.admin_addr).await {
                let reply = tonic_health::pb::health_client::HealthClient::new(channel)
                    .check(tonic_health::pb::HealthCheckRequest { service: String::new() })
                    .await;
                if reply.is_ok_and(|reply| reply.into_inner().status == 1) {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("server on {} never became ready", self.grpc_addr);
    }

    pub async fn metrics(&self) -> String {
        suite_testkit::scrape_metrics(self.admin_addr).await
    }

    pub async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

fn test_server_config() -> ServerConfig {
    ServerConfig {
        readiness_interval_ms: 100,
        shutdown_grace_ms: 2_000,
        ..ServerConfig::default()
    }
}

/// The real user service on `grpc_addr` (port 0 for any), storing in `database`.
pub async fn start_user_service(database: DatabaseConfig, grpc_addr: SocketAddr, security: SecurityArgs) -> Running {
    let config = user_service::config::ServeConfig {
        grpc_addr,
        admin_addr: "127.0.0.1:0".parse().unwrap(),
        migrate_on_start: true,
        page_token_secret: Some("test-secret".into()),
        database,
        cache: suite_cache::CacheConfig::default(),
        server: test_server_config(),
        security,
    };
    Running::start(grpc_addr, move |listeners, stop| {
        user_service::app::serve(config, listeners, async {
            let _ = stop.await;
        })
    })
    .await
}

/// Client stack settings for tests: quick to open and to recover.
pub fn fast_user_service_args(addr: SocketAddr) -> UserServiceArgs {
    UserServiceArgs {
        user_service_addr: addr.into(),
        resolve_interval_ms: 30_000,
        user_service_identity: None,
        user_service_default_deadline_ms: 2_000,
        user_service_deadline_margin_ms: 20,
        user_service_max_attempts: 2,
        user_service_backoff_base_ms: 5,
        user_service_backoff_max_ms: 20,
        user_service_retry_budget_ratio: 0.1,
        user_service_retry_budget_floor: 10,
        user_service_retry_budget_window_ms: 10_000,
        user_service_breaker_window_ms: 10_000,
        user_service_breaker_min_requests: 5,
        user_service_breaker_failure_ratio: 0.5,
        user_service_breaker_slow_call_ratio: 0.5,
        user_service_breaker_slow_call_ms: 1_000,
        user_service_breaker_consecutive_failures: 5,
        user_service_breaker_open_ms: 500,
        user_service_breaker_open_max_ms: 4_000,
        user_service_breaker_half_open_probes: 1,
        user_service_max_concurrent_calls: 64,
    }
}

pub async fn start_order_service(database: DatabaseConfig, user_service: UserServiceArgs, security: SecurityArgs) -> Running {
    start_order_service_with_prices(database, user_service, security, None).await
}

/// The order service config the tests start, with `price_list` as `PRICE_LIST`.
pub fn order_service_config(
    database: DatabaseConfig,
    user_service: UserServiceArgs,
    security: SecurityArgs,
    price_list: Option<PathBuf>,
) -> ServeConfig {
    ServeConfig {
        grpc_addr: "127.0.0.1:0".parse().unwrap(),
        admin_addr: "127.0.0.1:0".parse().unwrap(),
        migrate_on_start: true,
        page_token_secret: Some("test-secret".into()),
        price_list,
        user_service,
        database,
        server: test_server_config(),
        security,
    }
}

pub async fn start_order_service_with_prices(
    database: DatabaseConfig,
    user_service: UserServiceArgs,
    security: SecurityArgs,
    price_list: Option<PathBuf>,
) -> Running {
    let config = order_service_config(database, user_service, security, price_list);
    Running::start(config.grpc_addr, move |listeners, stop| {
        order_service::app::serve(config, listeners, async {
            let _ = stop.await;
        })
    })
    .await
}

/// Both services in plaintext, each with its own database, and clients of both.
pub struct Suite {
    pub orders: OrderServiceClient<Channel>,
    pub users: UserServiceClient<Channel>,
    pub order_service: Running,
    pub user_service: Option<Running>,
    pub user_db: TestDb,
}

impl Suite {
    pub async fn start(order_db: &TestDb) -> Self {
        let user_db = TestDb::sqlite();
        let user_service = start_user_service(user_db.config(), "127.0.0.1:0".parse().unwrap(), SecurityArgs::insecure_plaintext()).await;
        let order_service = start_order_service(
            order_db.config(),
            fast_user_service_args(user_service.grpc_addr),
            SecurityArgs::insecure_plaintext(),
        )
        .await;
        Self {
            orders: OrderServiceClient::new(suite_grpc::client::connect_insecure(order_service.grpc_addr).await.unwrap()),
            users: UserServiceClient::new(suite_grpc::client::connect_insecure(user_service.grpc_addr).await.unwrap()),
            order_service,
            user_service: Some(user_service),
            user_db,
        }
    }

    pub async fn create_user(&self, email: &str) -> String {
        let request = user_pb::CreateUserRequest {
            email: email.into(),
            display_name: "Buyer".into(),
        };
        self.users.clone().create_user(request).await.unwrap().into_inner().user.unwrap().id
    }

    pub async fn create(&self, request: pb::CreateOrderRequest) -> Result<pb::Order, tonic::Status> {
        Ok(self.orders.clone().create_order(request).await?.into_inner().order.unwrap())
    }

    pub async fn get(&self, id: &str) -> Result<pb::Order, tonic::Status> {
        Ok(self
            .orders
            .clone()
            .get_order(pb::GetOrderRequest { id: id.into() })
            .await?
            .into_inner()
            .order
            .unwrap())
    }
}

pub fn item(sku: &str, quantity: i32, amount_minor: i64) -> pb::LineItem {
    pb::LineItem {
        sku: sku.into(),
        quantity,
        unit_price: Some(pb::Money {
            currency_code: "EUR".into(),
            amount_minor,
        }),
        line_total: None,
    }
}

pub fn order_request(user_id: &str, key: &str, items: Vec<pb::LineItem>) -> pb::CreateOrderRequest {
    pb::CreateOrderRequest {
        user_id: user_id.into(),
        items,
        idempotency_key: key.into(),
    }
}

/// Mutual TLS as `name`, authorized by `policy` (TOML).
pub fn mtls(pki: &TestPki, name: &str, policy: &str) -> SecurityArgs {
    let cert = pki.service(name);
    let policy_path = pki.dir.path().join(format!("{name}.authz.toml"));
    std::fs::write(&policy_path, policy).unwrap();
    SecurityArgs {
        tls: TlsArgs {
            tls_cert: Some(cert.cert),
            tls_key: Some(cert.key),
            tls_ca: Some(pki.ca_path()),
            ..TlsArgs::default()
        },
        authz_policy: Some(policy_path),
    }
}

/// Both services over mutual TLS, with the order service trusting
/// `edge-gateway` to vouch for end users. The test holds the gateway's
/// certificate, so it stands in for the gateway: it sends the end-user
/// metadata the real gateway sends once it has verified a token. Calls made
/// as `operator` are a service's own (`Principal::Service`).
pub struct EndUserSuite {
    pub order_service: Running,
    pub user_service: Running,
    /// The order service as the gateway sees it: every call acts for the end
    /// user its metadata names (see [`as_end_user`]), or for nobody.
    pub gateway: OrderServiceClient<Channel>,
    /// The order service as another service (an operator) sees it.
    pub service: OrderServiceClient<Channel>,
    users: UserServiceClient<Channel>,
    _user_db: TestDb,
    _pki: TestPki,
}

/// The price list [`EndUserSuite::start`] gives the order service.
pub const TEST_PRICES: &str = r#"
[prices]
A = { currency_code = "EUR", amount_minor = 100 }
B = { currency_code = "EUR", amount_minor = 500 }
DOLLAR-1 = { currency_code = "USD", amount_minor = 7 }
"#;

impl EndUserSuite {
    /// With [`TEST_PRICES`] as the price list.
    pub async fn start(order_db: &TestDb) -> Self {
        Self::start_with_prices(order_db, Some(TEST_PRICES)).await
    }

    /// With `prices` (TOML) as the price list, or none.
    pub async fn start_with_prices(order_db: &TestDb, prices: Option<&str>) -> Self {
        let pki = TestPki::new();
        let price_list = prices.map(|prices| {
            let path = pki.dir.path().join("prices.toml");
            std::fs::write(&path, prices).unwrap();
            path
        });
        let gateway = TestPki::id("edge-gateway");
        let operator = TestPki::id("operator");
        let user_policy = format!(
            "[[allow]]\ncallers = [\"{operator}\"]\nmethods = [\"*\"]\n\
             [[allow]]\ncallers = [\"{}\"]\nmethods = [\"suite.user.v1.UserService/GetUser\"]\n",
            TestPki::id("order-service")
        );
        let order_policy = format!(
            "end_user_gateways = [\"{gateway}\"]\n\
             [[allow]]\ncallers = [\"{gateway}\", \"{operator}\"]\nmethods = [\"suite.order.v1.OrderService/*\"]\n"
        );
        let user_db = TestDb::sqlite();
        let user_service = start_user_service(
            user_db.config(),
            "127.0.0.1:0".parse().unwrap(),
            mtls(&pki, "user-service", &user_policy),
        )
        .await;
        let order_service = start_order_service_with_prices(
            order_db.config(),
            fast_user_service_args(user_service.grpc_addr),
            mtls(&pki, "order-service", &order_policy),
            price_list,
        )
        .await;
        let operator_cert = pki.service("operator");
        let gateway_cert = pki.service("edge-gateway");
        let channel = |addr: SocketAddr, cert: &suite_testkit::TestCert, server: &str| {
            suite_grpc::client::connect_mtls(addr, pki.connector(cert, server))
        };
        Self {
            gateway: OrderServiceClient::new(channel(order_service.grpc_addr, &gateway_cert, "order-service").await.unwrap()),
            service: OrderServiceClient::new(channel(order_service.grpc_addr, &operator_cert, "order-service").await.unwrap()),
            users: UserServiceClient::new(channel(user_service.grpc_addr, &operator_cert, "user-service").await.unwrap()),
            order_service,
            user_service,
            _user_db: user_db,
            _pki: pki,
        }
    }

    pub async fn create_user(&self, email: &str) -> String {
        let request = user_pb::CreateUserRequest {
            email: email.into(),
            display_name: "Buyer".into(),
        };
        self.users.clone().create_user(request).await.unwrap().into_inner().user.unwrap().id
    }
}

/// `message` as the gateway forwards it for the end user `subject` with `roles`.
pub fn as_end_user<T>(message: T, subject: &str, roles: &[&str]) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let metadata = request.metadata_mut();
    metadata.insert(suite_grpc::end_user::SUBJECT_HEADER, subject.parse().unwrap());
    if !roles.is_empty() {
        metadata.insert(suite_grpc::end_user::ROLES_HEADER, roles.join(",").parse().unwrap());
    }
    request
}
