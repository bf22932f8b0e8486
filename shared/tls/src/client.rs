//! Client side: a connector for tonic's `Endpoint::connect_with_connector`
//! that presents this service's certificate and accepts only the server
//! identity it was told to expect.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Uri;
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls::client::Resumption;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::config::TlsOptions;
use crate::credentials::Credentials;
use crate::identity::SpiffeId;
use crate::verify::{CurrentCertificate, ServerIdentityVerifier};
use crate::{ALPN_H2, protocol_versions};

/// Connects to servers of one identity over mutual TLS.
#[derive(Clone)]
pub struct MtlsConnector {
    connector: TlsConnector,
    expected: SpiffeId,
}

impl std::fmt::Debug for MtlsConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MtlsConnector")
            .field("expected", &self.expected)
            .finish_non_exhaustive()
    }
}

impl MtlsConnector {
    /// A connector presenting `credentials` (current at each connection) to a server that must be `expected`.
    pub fn new(credentials: &Credentials, expected: SpiffeId, options: TlsOptions) -> Result<Self, rustls::Error> {
        let mut config = ClientConfig::builder_with_provider(credentials.provider().clone())
            .with_protocol_versions(protocol_versions(options.allow_tls12))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(ServerIdentityVerifier {
                credentials: credentials.clone(),
                expected: expected.clone(),
            }))
            .with_client_cert_resolver(Arc::new(CurrentCertificate::Identity(credentials.clone())));
        config.alpn_protocols = vec![ALPN_H2.to_vec()];
        config.resumption = Resumption::disabled();
        Ok(Self {
            connector: TlsConnector::from(Arc::new(config)),
            expected,
        })
    }

    pub fn expected(&self) -> &SpiffeId {
        &self.expected
    }

    /// Opens a TCP connection to `host:port` and completes the handshake.
    pub async fn connect(&self, host: &str, port: u16) -> std::io::Result<TlsStream<TcpStream>> {
        let tcp = TcpStream::connect((host, port)).await?;
        tcp.set_nodelay(true)?;
        // The name only feeds SNI; the verifier checks the SPIFFE identity, not DNS.
        let server_name = ServerName::try_from(host.trim_start_matches('[').trim_end_matches(']').to_owned())
            .map_err(|error| std::io::Error::new(std::io::ErrorKind::InvalidInput, error))?;
        self.connector.connect(server_name, tcp).await
    }
}

type ConnectFuture = Pin<Box<dyn Future<Output = std::io::Result<TokioIo<TlsStream<TcpStream>>>> + Send>>;

impl tower::Service<Uri> for MtlsConnector {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = std::io::Error;
    type Future = ConnectFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connector = self.clone();
        Box::pin(async move {
            let host = uri
                .host()
                .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("no host in {uri}")))?;
            let port = uri.port_u16().unwrap_or(443);
            connector.connect(host, port).await.map(TokioIo::new)
        })
    }
}
