//! The whole suite in this process: user and order services over mutual TLS
//! (a throwaway CA), the gateway in front with TLS for clients and a JWKS of
//! test keys, and helpers to mint tokens and call through the gateway.

#![allow(dead_code, clippy::unwrap_used)]

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use edge_gateway::config::{AuthArgs, ListenerArgs, RateLimitArgs, ServeConfig};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use suite_devcerts::LeafSpec;
use suite_grpc::{Listeners, SecurityArgs, ServerConfig};
use suite_proto::suite::order::v1 as order_pb;
use suite_proto::suite::order::v1::order_service_client::OrderServiceClient;
use suite_proto::suite::user::v1 as user_pb;
use suite_proto::suite::user::v1::user_service_client::UserServiceClient;
use suite_testkit::{TestDb, TestPki};
use suite_tls::TlsArgs;
use tokio::sync::oneshot;
use tonic::transport::{Channel, Endpoint};

pub const ISSUER: &str = "https://issuer.test";
pub const AUDIENCE: &str = "suite-test";

/// A server running in a task, stopped like SIGTERM when dropped or told to.
pub struct Running {
    pub grpc_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Running {
    /// Starts a server and waits until it is ready (health "" SERVING).
    pub async fn start<F, Fut>(serve: F) -> Self
    where
        F: FnOnce(Listeners, oneshot::Receiver<()>) -> Fut,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        Self::start_waiting_for("", serve).await
    }

    /// Starts a server and waits until health `name` answers SERVING ("liveness": it runs, ready or not).
    pub async fn start_waiting_for<F, Fut>(name: &str, serve: F) -> Self
    where
        F: FnOnce(Listeners, oneshot::Receiver<()>) -> Fut,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        suite_testkit::init_logging();
        let any = "127.0.0.1:0".parse().unwrap();
        let listeners = Listeners::bind(any, any).await.unwrap();
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
        running.wait_until_serving(name).await;
        running
    }

    async fn wait_until_serving(&self, name: &str) {
        // Start-up is not what these tests measure: with the rest of the suite running on the
        // same two cores, migrations and the first connections can take seconds.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while std::time::Instant::now() < deadline {
            if let Ok(channel) = suite_grpc::client::connect_insecure(self.admin_addr).await {
                let reply = tonic_health::pb::health_client::HealthClient::new(channel)
                    .check(tonic_health::pb::HealthCheckRequest { service: name.to_owned() })
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

pub fn test_server_config() -> ServerConfig {
    ServerConfig {
        readiness_interval_ms: 100,
        shutdown_grace_ms: 2_000,
        ..ServerConfig::default()
    }
}

/// Signing keys the test JWKS publishes, and tokens made with them.
pub struct TokenKeys {
    pub dir: tempfile::TempDir,
    pub jwks_path: PathBuf,
    pub es256: (EncodingKey, String),
    pub rs256: (EncodingKey, String),
    pub ed25519: (EncodingKey, String),
    /// The ES256 public key's JWK, for attacks that misuse it.
    pub es256_public_x: String,
}

impl TokenKeys {
    pub fn generate() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let es = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let point = es.public_key_raw();
        let es_jwk = format!(
            r#"{{"kty":"EC","crv":"P-256","kid":"es-1","alg":"ES256","use":"sig","x":"{}","y":"{}"}}"#,
            URL_SAFE_NO_PAD.encode(&point[1..33]),
            URL_SAFE_NO_PAD.encode(&point[33..65])
        );
        let ed = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let ed_jwk = format!(
            r#"{{"kty":"OKP","crv":"Ed25519","kid":"ed-1","alg":"EdDSA","use":"sig","x":"{}"}}"#,
            URL_SAFE_NO_PAD.encode(ed.public_key_raw())
        );
        let data = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data");
        let rsa_pem = std::fs::read(format!("{data}/rsa-test-key.pem")).unwrap();
        let rsa_jwk = std::fs::read_to_string(format!("{data}/rsa-test-jwk.json")).unwrap();
        let jwks_path = dir.path().join("jwks.json");
        std::fs::write(&jwks_path, format!(r#"{{"keys":[{es_jwk},{},{ed_jwk}]}}"#, rsa_jwk.trim())).unwrap();
        Self {
            es256: (EncodingKey::from_ec_pem(es.serialize_pem().as_bytes()).unwrap(), "es-1".into()),
            rs256: (EncodingKey::from_rsa_pem(&rsa_pem).unwrap(), "rsa-test".into()),
            ed25519: (EncodingKey::from_ed_pem(ed.serialize_pem().as_bytes()).unwrap(), "ed-1".into()),
            es256_public_x: URL_SAFE_NO_PAD.encode(&point[1..33]),
            jwks_path,
            dir,
        }
    }

    /// A valid ES256 token for `subject` with `roles`, good for an hour.
    pub fn token(&self, subject: &str, roles: &[&str]) -> String {
        self.sign(Algorithm::ES256, claims(subject, roles))
    }

    pub fn sign(&self, algorithm: Algorithm, claims: serde_json::Value) -> String {
        let (key, kid) = match algorithm {
            Algorithm::ES256 => &self.es256,
            Algorithm::RS256 => &self.rs256,
            Algorithm::EdDSA => &self.ed25519,
            other => panic!("no test key for {other:?}"),
        };
        sign_with(algorithm, key, Some(kid), &claims)
    }
}

pub fn sign_with(algorithm: Algorithm, key: &EncodingKey, kid: Option<&str>, claims: &serde_json::Value) -> String {
    let mut header = Header::new(algorithm);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

pub fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// Valid claims for the test issuer and audience.
pub fn claims(subject: &str, roles: &[&str]) -> serde_json::Value {
    serde_json::json!({
        "sub": subject,
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now(),
        "exp": now() + 3600,
        "roles": roles,
    })
}

pub fn auth_args(jwks: &TokenKeys) -> AuthArgs {
    AuthArgs {
        jwks_file: Some(jwks.jwks_path.clone()),
        jwks_url: None,
        jwks_ca_file: None,
        jwks_refresh_ms: 300_000,
        jwks_min_refresh_ms: 30_000,
        jwt_issuer: Some(ISSUER.into()),
        jwt_audience: Some(AUDIENCE.into()),
        jwt_algorithms: vec!["RS256".into(), "ES256".into(), "EdDSA".into()],
        jwt_hs256_secret: None,
        jwt_leeway_seconds: 30,
        jwt_max_token_bytes: 8 * 1024,
        jwt_roles_claim: "roles".into(),
        jwt_cache_entries: 10_000,
        public_methods: vec![
            "grpc.health.v1.Health/*".into(),
            "grpc.reflection.v1.ServerReflection/*".into(),
            "grpc.reflection.v1alpha.ServerReflection/*".into(),
        ],
    }
}

/// Policies of the two services: the gateway may call their whole API and vouch for end users.
fn policy(service: &str, extra: &str) -> String {
    format!(
        r#"
        end_user_gateways = ["{gateway}"]
        [[allow]]
        callers = ["{gateway}"]
        methods = ["{service}/*"]
        {extra}
        "#,
        gateway = TestPki::id("edge-gateway"),
    )
}

/// User and order services over mutual TLS, each with its own SQLite database.
pub struct Services {
    pub pki: TestPki,
    pub user_service: Running,
    pub order_service: Running,
    _user_db: TestDb,
    _order_db: TestDb,
    _dir: tempfile::TempDir,
}

impl Services {
    pub async fn start() -> Self {
        let pki = TestPki::new();
        let dir = tempfile::tempdir().unwrap();
        let security = |name: &str, policy: String| {
            let cert = pki.service(name);
            let path = dir.path().join(format!("{name}.authz.toml"));
            std::fs::write(&path, policy).unwrap();
            SecurityArgs {
                tls: TlsArgs {
                    tls_cert: Some(cert.cert),
                    tls_key: Some(cert.key),
                    tls_ca: Some(pki.ca_path()),
                    ..TlsArgs::default()
                },
                authz_policy: Some(path),
            }
        };
        let user_db = TestDb::sqlite();
        let user_security = security(
            "user-service",
            policy(
                "suite.user.v1.UserService",
                &format!(
                    r#"[[allow]]
                    callers = ["{}"]
                    methods = ["suite.user.v1.UserService/GetUser"]"#,
                    TestPki::id("order-service")
                ),
            ),
        );
        let user_config = user_service::config::ServeConfig {
            grpc_addr: "127.0.0.1:0".parse().unwrap(),
            admin_addr: "127.0.0.1:0".parse().unwrap(),
            migrate_on_start: true,
            page_token_secret: Some("test-secret".into()),
            database: user_db.config(),
            cache: suite_cache::CacheConfig::default(),
            server: test_server_config(),
            security: user_security,
        };
        let user_service = Running::start(move |listeners, stop| {
            user_service::app::serve(user_config, listeners, async {
                let _ = stop.await;
            })
        })
        .await;

        let order_db = TestDb::sqlite();
        let mut user_args = order_service::config::UserServiceArgs {
            user_service_addr: user_service.grpc_addr.into(),
            ..default_user_service_args()
        };
        user_args.user_service_identity = Some(TestPki::id("user-service"));
        let order_config = order_service::config::ServeConfig {
            grpc_addr: "127.0.0.1:0".parse().unwrap(),
            admin_addr: "127.0.0.1:0".parse().unwrap(),
            migrate_on_start: true,
            page_token_secret: Some("test-secret".into()),
            price_list: Some(suite_testkit::workspace_root().join("config/dev/order-service.prices.toml")),
            user_service: user_args,
            database: order_db.config(),
            server: test_server_config(),
            security: security("order-service", policy("suite.order.v1.OrderService", "")),
        };
        let order_service = Running::start(move |listeners, stop| {
            order_service::app::serve(order_config, listeners, async {
                let _ = stop.await;
            })
        })
        .await;
        Self {
            pki,
            user_service,
            order_service,
            _user_db: user_db,
            _order_db: order_db,
            _dir: dir,
        }
    }

    /// A routes file pointing at these services.
    pub fn routes_file(&self, dir: &std::path::Path, order_address: Option<&str>) -> PathBuf {
        let path = dir.join("routes.toml");
        let order_address = order_address.map_or_else(|| self.order_service.grpc_addr.to_string(), str::to_owned);
        std::fs::write(
            &path,
            format!(
                r#"
                [[upstreams]]
                name = "user-service"
                address = "{}"
                services = ["suite.user.v1.UserService"]

                [[upstreams]]
                name = "order-service"
                address = "{order_address}"
                services = ["suite.order.v1.OrderService"]
                breaker_min_requests = 3
                breaker_open_ms = 60000
                "#,
                self.user_service.grpc_addr
            ),
        )
        .unwrap();
        path
    }
}

fn default_user_service_args() -> order_service::config::UserServiceArgs {
    use clap::Parser as _;
    let cli = order_service::config::Cli::try_parse_from(["order-service", "serve"]).unwrap();
    let order_service::config::Command::Serve(config) = cli.command else {
        unreachable!()
    };
    config.user_service
}

/// The gateway in front of `services`, with its TLS material and keys.
pub struct Gateway {
    pub running: Running,
    pub keys: TokenKeys,
    pub channel: Channel,
    dir: tempfile::TempDir,
}

pub struct GatewayOptions {
    pub rate_limit: RateLimitArgs,
    pub order_address: Option<String>,
    pub adjust_auth: Box<dyn FnOnce(&mut AuthArgs) + Send>,
    pub server: ServerConfig,
    /// Return once the gateway is ready (the default), or as soon as it runs.
    pub wait_until_ready: bool,
    pub request_body_idle_timeout_ms: u64,
}

impl Default for GatewayOptions {
    fn default() -> Self {
        Self {
            rate_limit: RateLimitArgs {
                rate_limit_per_second: 10_000.0,
                rate_limit_burst: 10_000.0,
                ..RateLimitArgs::default()
            },
            order_address: None,
            adjust_auth: Box::new(|_| {}),
            server: test_server_config(),
            wait_until_ready: true,
            request_body_idle_timeout_ms: 10_000,
        }
    }
}

impl Gateway {
    pub async fn start(services: &Services) -> Self {
        Self::start_with(services, GatewayOptions::default()).await
    }

    pub async fn start_with(services: &Services, options: GatewayOptions) -> Self {
        let keys = TokenKeys::generate();
        let dir = tempfile::tempdir().unwrap();
        let pki = &services.pki;
        let identity = pki.service("edge-gateway");
        // What clients see: a DNS-name certificate with no SPIFFE identity, server auth only.
        let mut listener_spec = LeafSpec::service("gateway-listener", "spiffe://unused/ns/x/sa/y", Duration::from_secs(3600));
        listener_spec.uris.clear();
        listener_spec.client_auth = false;
        let listener = pki.issue("gateway-listener", &listener_spec);
        let mut auth = auth_args(&keys);
        (options.adjust_auth)(&mut auth);
        let config = ServeConfig {
            grpc_addr: "127.0.0.1:0".parse().unwrap(),
            admin_addr: "127.0.0.1:0".parse().unwrap(),
            worker_threads: 1,
            trust_client_trace_context: false,
            routes: Some(services.routes_file(dir.path(), options.order_address.as_deref())),
            resolve_interval_ms: 30_000,
            request_body_idle_timeout_ms: options.request_body_idle_timeout_ms,
            listener: ListenerArgs {
                listener_tls_cert: Some(listener.cert),
                listener_tls_key: Some(listener.key),
            },
            auth,
            rate_limit: options.rate_limit,
            server: options.server,
            security: SecurityArgs {
                tls: TlsArgs {
                    tls_cert: Some(identity.cert),
                    tls_key: Some(identity.key),
                    tls_ca: Some(pki.ca_path()),
                    ..TlsArgs::default()
                },
                authz_policy: None,
            },
        };
        let wait_for = if options.wait_until_ready {
            ""
        } else {
            suite_grpc::LIVENESS_SERVICE
        };
        let running = Running::start_waiting_for(wait_for, move |listeners, stop| {
            edge_gateway::app::serve(config, listeners, async {
                let _ = stop.await;
            })
        })
        .await;
        let channel = client_channel(pki, running.grpc_addr).await;
        Self {
            running,
            keys,
            channel,
            dir,
        }
    }

    pub fn users(&self) -> UserServiceClient<Channel> {
        UserServiceClient::new(self.channel.clone())
    }

    pub fn orders(&self) -> OrderServiceClient<Channel> {
        OrderServiceClient::new(self.channel.clone())
    }
}

/// A TLS channel to the gateway, trusting the test CA, presenting no certificate.
pub async fn client_channel(pki: &TestPki, addr: SocketAddr) -> Channel {
    Endpoint::from_shared(format!("http://127.0.0.1:{}", addr.port()))
        .unwrap()
        .connect_with_connector(pki.raw_client(None))
        .await
        .unwrap()
}

/// `message` with `authorization: Bearer <token>`.
pub fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

pub fn create_user_request(email: &str) -> user_pb::CreateUserRequest {
    user_pb::CreateUserRequest {
        email: email.into(),
        display_name: "Gateway User".into(),
    }
}

pub fn order_request(user_id: &str, key: &str) -> order_pb::CreateOrderRequest {
    order_pb::CreateOrderRequest {
        user_id: user_id.into(),
        items: vec![order_pb::LineItem {
            sku: "SKU-1".into(),
            quantity: 2,
            unit_price: Some(order_pb::Money {
                currency_code: "EUR".into(),
                amount_minor: 1250,
            }),
            line_total: None,
        }],
        idempotency_key: key.into(),
    }
}

/// A user created by an admin through the gateway; its id.
pub async fn admin_creates_user(gateway: &Gateway, email: &str) -> String {
    let admin = gateway.keys.token("admin-1", &["admin"]);
    gateway
        .users()
        .create_user(with_token(create_user_request(email), &admin))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap()
        .id
}
