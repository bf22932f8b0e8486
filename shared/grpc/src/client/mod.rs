//! Calling other services of the suite: channels (mutual TLS, or plaintext for
//! local experiments) and the resilience stack every such call goes through.

mod breaker;
mod budget;
mod deadline;
mod dependency;
mod traced;
mod window;

use std::fmt::{self, Display};
use std::str::FromStr;

use suite_tls::MtlsConnector;
use tonic::transport::{Channel, Endpoint};

pub use breaker::{BreakerConfig, BreakerState};
pub use deadline::Deadline;
pub use dependency::{AdmittedCall, Attempt, ClientMetrics, Dependency, DependencyConfig, Idempotency, Resilience};
pub use traced::{ClientCall, TracedChannel};

/// Where a dependency listens: `host:port`, the host a DNS name (resolved at each
/// connection, so a Kubernetes Service name follows the Service) or an IP literal
/// (IPv6 in brackets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort(String);

impl FromStr for HostPort {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || format!("{text:?} is not host:port (a DNS name or IP address, IPv6 in brackets, and a port)");
        let authority: http::uri::Authority = text.parse().map_err(|_| invalid())?;
        let host = authority.host();
        // An authority may carry credentials; an address may not.
        if host.is_empty() || authority.as_str().contains('@') || authority.port_u16().is_none_or(|port| port == 0) {
            return Err(invalid());
        }
        if host.starts_with('[') && host.trim_matches(['[', ']']).parse::<std::net::Ipv6Addr>().is_err() {
            return Err(invalid());
        }
        Ok(Self(authority.as_str().to_owned()))
    }
}

impl Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<std::net::SocketAddr> for HostPort {
    fn from(addr: std::net::SocketAddr) -> Self {
        Self(addr.to_string())
    }
}

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

#[cfg(test)]
mod tests {
    use super::HostPort;

    #[test]
    fn host_port_takes_names_and_ip_literals_and_requires_a_port() {
        for good in [
            "user-service:50051",
            "user-service.suite.svc.cluster.local:50051",
            "127.0.0.1:50051",
            "[::1]:50051",
        ] {
            assert_eq!(good.parse::<HostPort>().map(|addr| addr.to_string()), Ok(good.to_owned()), "{good}");
        }
        for bad in [
            "",
            "user-service",
            "user-service:",
            ":50051",
            "user-service:0",
            "user-service:70000",
            "user@host:1",
            "::1:50051",
            "[nonsense]:1",
            "host/path:1",
        ] {
            assert!(bad.parse::<HostPort>().is_err(), "{bad:?} was accepted");
        }
    }
}
