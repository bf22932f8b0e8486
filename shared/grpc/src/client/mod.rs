//! Calling other services of the suite: channels (mutual TLS, or plaintext for
//! local experiments) and the resilience stack every such call goes through.

mod breaker;
mod budget;
mod deadline;
mod dependency;
mod traced;
mod window;

use std::fmt::Display;

use suite_tls::MtlsConnector;
use tonic::transport::{Channel, Endpoint};

pub use breaker::{BreakerConfig, BreakerState};
pub use deadline::Deadline;
pub use dependency::{AdmittedCall, Attempt, ClientMetrics, Dependency, DependencyConfig, Idempotency, Resilience};
pub use traced::{ClientCallSpan, TracedChannel};

/// Connects over mutual TLS to `addr` (`host:port`), which must present the connector's expected identity.
pub async fn connect_mtls(addr: impl Display, connector: MtlsConnector) -> Result<Channel, tonic::transport::Error> {
    endpoint(addr)?.connect_with_connector(connector).await
}

/// A channel over mutual TLS that connects on first use and reconnects after
/// failures, so a service can start before its dependency does.
pub fn lazy_mtls(addr: impl Display, connector: MtlsConnector) -> Result<Channel, tonic::transport::Error> {
    Ok(endpoint(addr)?.connect_with_connector_lazy(connector))
}

/// Connects in plaintext; only for servers started with `--insecure-plaintext`.
pub async fn connect_insecure(addr: impl Display) -> Result<Channel, tonic::transport::Error> {
    endpoint(addr)?.connect().await
}

/// A lazy plaintext channel; only for servers started with `--insecure-plaintext`.
pub fn lazy_insecure(addr: impl Display) -> Result<Channel, tonic::transport::Error> {
    Ok(endpoint(addr)?.connect_lazy())
}

fn endpoint(addr: impl Display) -> Result<Endpoint, tonic::transport::Error> {
    // The scheme is only a label here: the connector decides whether TLS runs.
    Ok(Endpoint::from_shared(format!("http://{addr}"))?
        .tcp_nodelay(true)
        .connect_timeout(std::time::Duration::from_secs(2)))
}
