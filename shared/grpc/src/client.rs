//! Channels from one service of the suite to another.

use std::net::SocketAddr;

use suite_tls::MtlsConnector;
use tonic::transport::{Channel, Endpoint};

/// Connects over mutual TLS to `addr`, which must present the connector's expected identity.
pub async fn connect_mtls(addr: SocketAddr, connector: MtlsConnector) -> Result<Channel, tonic::transport::Error> {
    endpoint(addr)?.connect_with_connector(connector).await
}

/// Connects in plaintext; only for servers started with `--insecure-plaintext`.
pub async fn connect_insecure(addr: SocketAddr) -> Result<Channel, tonic::transport::Error> {
    endpoint(addr)?.connect().await
}

fn endpoint(addr: SocketAddr) -> Result<Endpoint, tonic::transport::Error> {
    // The scheme is only a label here: the connector decides whether TLS runs.
    Ok(Endpoint::from_shared(format!("http://{addr}"))?.tcp_nodelay(true))
}
