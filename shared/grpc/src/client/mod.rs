//! Calling other services of the suite: channels (mutual TLS, or plaintext for
//! local experiments) and the resilience stack every such call goes through.

mod breaker;
mod budget;
mod deadline;
mod dependency;
mod traced;
mod window;

use std::fmt::Display;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use suite_balance::Pool;
pub use suite_balance::never_processed;
use suite_discovery::Endpoints;
pub use suite_discovery::{HostPort, UpstreamAddress};
use suite_tls::MtlsConnector;
use tonic::transport::{Channel, Endpoint};

pub use breaker::{BreakerConfig, BreakerState, Verdict};
pub use deadline::Deadline;
pub use dependency::{AdmittedCall, Attempt, ClientMetrics, Dependency, DependencyConfig, Idempotency, Resilience};
pub use traced::{ClientCall, TracedChannel};

/// How the suite's services reach each other.
#[derive(Debug, Clone)]
pub enum Dial {
    /// Mutual TLS, the server presenting the connector's expected identity.
    Mtls(MtlsConnector),
    /// Only when the whole suite runs with `--insecure-plaintext`.
    Plaintext,
}

/// Every replica of the dependency `name` at `address` (re-resolved every
/// `resolve_interval`), one lazy channel to each, traced and timed into `metrics`:
/// what [`Dependency`] balances its calls over. A replica set aside for failing
/// calls in a row takes calls again once a gRPC health check of it passes.
pub fn channel_pool(
    name: &'static str,
    address: &UpstreamAddress,
    resolve_interval: Duration,
    dial: Dial,
    metrics: &ClientMetrics,
) -> Result<Pool<TracedChannel>, suite_discovery::DiscoveryError> {
    let endpoints = Endpoints::watch(name, address, resolve_interval)?;
    let traced = metrics.clone();
    let counted = metrics.clone();
    Ok(Pool::probed(
        endpoints,
        move |addr: SocketAddr| {
            let endpoint = endpoint(addr);
            let channel = match &dial {
                Dial::Mtls(connector) => endpoint.connect_with_connector_lazy(connector.clone()),
                Dial::Plaintext => endpoint.connect_lazy(),
            };
            TracedChannel::new(channel, name, &traced)
        },
        move |count| counted.set_endpoints(name, count),
        Arc::new(|channel: &TracedChannel| Box::pin(is_serving(channel.untraced()))),
    ))
}

/// Whether the replica behind `channel` says, by gRPC health, that it is ready
/// ("" SERVING): the probe an endpoint set aside for failing calls must pass.
async fn is_serving(channel: Channel) -> bool {
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    health
        .check(tonic_health::pb::HealthCheckRequest { service: String::new() })
        .await
        .is_ok_and(|reply| reply.into_inner().status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32)
}

/// A pool of one: `channel`, already made, to the replica at `addr`.
pub fn single_channel_pool(name: &'static str, addr: SocketAddr, channel: Channel, metrics: &ClientMetrics) -> Pool<TracedChannel> {
    let traced = TracedChannel::new(channel, name, metrics);
    Pool::new(Endpoints::fixed([addr]), move |_| traced.clone(), |_| {})
}

/// Connects over mutual TLS to `addr` (`host:port`), which must present the connector's expected identity.
pub async fn connect_mtls(addr: impl Display, connector: MtlsConnector) -> Result<Channel, tonic::transport::Error> {
    endpoint_of(addr)?.connect_with_connector(connector).await
}

/// Connects in plaintext; only for servers started with `--insecure-plaintext`.
pub async fn connect_insecure(addr: impl Display) -> Result<Channel, tonic::transport::Error> {
    endpoint_of(addr)?.connect().await
}

fn endpoint_of(addr: impl Display) -> Result<Endpoint, tonic::transport::Error> {
    // The scheme is only a label here: the connector decides whether TLS runs.
    Ok(Endpoint::from_shared(format!("http://{addr}"))?
        .tcp_nodelay(true)
        .connect_timeout(CONNECT_TIMEOUT))
}

/// A socket address is always a valid URI authority.
fn endpoint(addr: SocketAddr) -> Endpoint {
    Endpoint::from(
        http::uri::Builder::new()
            .scheme("http")
            .authority(addr.to_string())
            .path_and_query("/")
            .build()
            .unwrap_or_default(),
    )
    .tcp_nodelay(true)
    .connect_timeout(CONNECT_TIMEOUT)
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
