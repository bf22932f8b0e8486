//! `spawn_app`: the user service on ephemeral ports, in this process, against a
//! real database and cache, with a real gRPC client.

#![allow(dead_code, clippy::unwrap_used)]

use std::net::SocketAddr;

use suite_cache::CacheConfig;
use suite_db::DatabaseConfig;
use suite_grpc::{Listeners, SecurityArgs, ServerConfig};
use suite_proto::suite::user::v1 as pb;
use suite_proto::suite::user::v1::user_service_client::UserServiceClient;
pub use suite_testkit::TestDb;
use suite_tls::MtlsConnector;
use tokio::sync::oneshot;
use tonic::transport::Channel;
use user_service::config::ServeConfig;

/// Knobs a test may turn; everything else is the binary's default.
#[derive(Debug, Clone)]
pub struct AppSettings {
    pub database: DatabaseConfig,
    pub cache: CacheConfig,
    pub server: ServerConfig,
    /// Plaintext unless a test sets up certificates.
    pub security: SecurityArgs,
    /// How the test's client connects: `None` for plaintext.
    pub client_tls: Option<MtlsConnector>,
}

impl AppSettings {
    pub fn new(database: DatabaseConfig) -> Self {
        let server = ServerConfig {
            readiness_interval_ms: 100,
            shutdown_grace_ms: 5_000,
            ..ServerConfig::default()
        };
        Self {
            database,
            cache: CacheConfig::default(),
            server,
            security: SecurityArgs::insecure_plaintext(),
            client_tls: None,
        }
    }
}

pub struct TestApp {
    pub client: UserServiceClient<Channel>,
    pub channel: Channel,
    pub grpc_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

pub async fn spawn_app(db: &TestDb) -> TestApp {
    spawn_app_with(AppSettings::new(db.config())).await
}

/// The service's configuration for `settings` (listen addresses are the caller's business).
pub fn serve_config(settings: AppSettings) -> ServeConfig {
    ServeConfig {
        grpc_addr: "127.0.0.1:0".parse().unwrap(),
        admin_addr: "127.0.0.1:0".parse().unwrap(),
        migrate_on_start: true,
        page_token_secret: Some("test-secret".into()),
        database: settings.database,
        cache: settings.cache,
        server: settings.server,
        security: settings.security,
    }
}

pub async fn spawn_app_with(settings: AppSettings) -> TestApp {
    suite_testkit::init_logging();
    let listeners = Listeners::bind("127.0.0.1:0".parse().unwrap(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let grpc_addr = listeners.grpc.local_addr().unwrap();
    let admin_addr = listeners.admin.local_addr().unwrap();
    let client_tls = settings.client_tls.clone();
    let config = ServeConfig {
        grpc_addr,
        admin_addr,
        ..serve_config(settings)
    };
    let (shutdown, stop) = oneshot::channel::<()>();
    let task = tokio::spawn(user_service::app::serve(config, listeners, async {
        let _ = stop.await;
    }));
    let channel = match client_tls {
        Some(connector) => suite_grpc::client::connect_mtls(grpc_addr, connector).await,
        None => suite_grpc::client::connect_insecure(grpc_addr).await,
    }
    .unwrap();
    let app = TestApp {
        client: UserServiceClient::new(channel.clone()),
        channel,
        grpc_addr,
        admin_addr,
        shutdown: Some(shutdown),
        task: Some(task),
    };
    app.wait_until_serving().await;
    app
}

impl TestApp {
    /// Health of `service` ("" for the whole server) on the admin port.
    pub async fn health(&self, service: &str) -> tonic_health::ServingStatus {
        let channel = Channel::from_shared(format!("http://{}", self.admin_addr))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
        let response = health
            .check(tonic_health::pb::HealthCheckRequest { service: service.into() })
            .await
            .unwrap();
        match response.into_inner().status {
            1 => tonic_health::ServingStatus::Serving,
            2 => tonic_health::ServingStatus::NotServing,
            _ => tonic_health::ServingStatus::Unknown,
        }
    }

    /// Waits (bounded) until readiness reports SERVING.
    pub async fn wait_until_serving(&self) {
        self.wait_for_health(tonic_health::ServingStatus::Serving).await;
    }

    pub async fn wait_for_health(&self, wanted: tonic_health::ServingStatus) {
        for _ in 0..100 {
            if self.health("").await == wanted {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("health never became {wanted:?}");
    }

    pub async fn metrics(&self) -> String {
        suite_testkit::scrape_metrics(self.admin_addr).await
    }

    pub async fn create(&self, email: &str, display_name: &str) -> pb::User {
        let request = pb::CreateUserRequest {
            email: email.into(),
            display_name: display_name.into(),
        };
        self.client.clone().create_user(request).await.unwrap().into_inner().user.unwrap()
    }

    pub async fn get(&self, id: &str) -> Result<pb::User, tonic::Status> {
        Ok(self
            .client
            .clone()
            .get_user(pb::GetUserRequest { id: id.into() })
            .await?
            .into_inner()
            .user
            .unwrap())
    }

    pub async fn list_all(&self, page_size: i32) -> Vec<pb::User> {
        let mut users = Vec::new();
        let mut page_token = String::new();
        loop {
            let page = self
                .client
                .clone()
                .list_users(pb::ListUsersRequest { page_size, page_token })
                .await
                .unwrap()
                .into_inner();
            users.extend(page.users);
            if page.next_page_token.is_empty() {
                return users;
            }
            page_token = page.next_page_token;
        }
    }

    /// Stops the server the way SIGTERM does and waits for it to finish.
    pub async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}
