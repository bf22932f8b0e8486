//! One upstream's HTTP/2 connection, driven by hyper's client directly: a
//! request goes from the proxy straight to the connection's task, with no
//! channel buffer task in between. The connection is opened on first use and
//! again after it fails; concurrent callers wait for one connection attempt.

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use suite_tls::MtlsConnector;
use tokio::net::TcpStream;
use tonic::body::Body;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How the gateway reaches an upstream.
#[derive(Debug, Clone)]
pub enum Dial {
    Mtls(MtlsConnector),
    /// Only when the whole suite runs with `--insecure-plaintext`.
    Plaintext,
}

#[derive(Debug)]
pub struct UpstreamConnection {
    host: String,
    port: u16,
    authority: http::uri::Authority,
    dial: Dial,
    current: Mutex<Option<SendRequest<Body>>>,
    connecting: tokio::sync::Mutex<()>,
}

impl UpstreamConnection {
    /// `address` is `host:port`.
    pub fn new(address: &str, dial: Dial) -> Result<Self, String> {
        let authority: http::uri::Authority = address.parse().map_err(|error| format!("address {address:?}: {error}"))?;
        let port = authority.port_u16().ok_or_else(|| format!("address {address:?} has no port"))?;
        Ok(Self {
            host: authority.host().to_owned(),
            port,
            authority,
            dial,
            current: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
        })
    }

    /// Sends `request` (its path kept, scheme and authority set to the upstream's).
    pub async fn send(&self, mut request: http::Request<Body>) -> Result<http::Response<Body>, String> {
        let path = request.uri().path_and_query().cloned();
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(http::uri::Scheme::HTTP);
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = path;
        *request.uri_mut() = http::Uri::from_parts(parts).map_err(|error| error.to_string())?;
        let mut sender = self.sender().await?;
        let response = match sender.try_send_request(request).await {
            Ok(response) => response,
            Err(mut error) => match error.take_message() {
                // Never sent: the connection had just closed (an idle timeout
                // upstream, a restart). Once more on a fresh connection.
                Some(request) => {
                    self.forget();
                    let mut sender = self.sender().await?;
                    sender.send_request(request).await.map_err(|error| {
                        self.forget();
                        error.to_string()
                    })?
                }
                None => {
                    self.forget();
                    return Err(error.into_error().to_string());
                }
            },
        };
        Ok(response.map(Body::new))
    }

    async fn sender(&self) -> Result<SendRequest<Body>, String> {
        if let Some(sender) = self.usable() {
            return Ok(sender);
        }
        let _single_flight = self.connecting.lock().await;
        if let Some(sender) = self.usable() {
            return Ok(sender);
        }
        let sender = tokio::time::timeout(CONNECT_TIMEOUT, self.connect())
            .await
            .map_err(|_| format!("no connection within {CONNECT_TIMEOUT:?}"))??;
        *self.current.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(sender.clone());
        Ok(sender)
    }

    fn usable(&self) -> Option<SendRequest<Body>> {
        let current = self.current.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        current.as_ref().filter(|sender| !sender.is_closed()).cloned()
    }

    /// Drops the connection if it has closed, so the next call opens a new one.
    fn forget(&self) {
        let mut current = self.current.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if current.as_ref().is_some_and(SendRequest::is_closed) {
            *current = None;
        }
    }

    async fn connect(&self) -> Result<SendRequest<Body>, String> {
        let mut builder = hyper::client::conn::http2::Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10))
            .keep_alive_while_idle(true);
        let failed = |error: &dyn std::fmt::Display| format!("cannot connect to {}:{}: {error}", self.host, self.port);
        match &self.dial {
            Dial::Mtls(connector) => {
                let stream = connector.connect(&self.host, self.port).await.map_err(|error| failed(&error))?;
                let (sender, connection) = builder.handshake(TokioIo::new(stream)).await.map_err(|error| failed(&error))?;
                self.drive(connection);
                Ok(sender)
            }
            Dial::Plaintext => {
                let stream = TcpStream::connect((self.host.as_str(), self.port))
                    .await
                    .map_err(|error| failed(&error))?;
                let _ = stream.set_nodelay(true);
                let (sender, connection) = builder.handshake(TokioIo::new(stream)).await.map_err(|error| failed(&error))?;
                self.drive(connection);
                Ok(sender)
            }
        }
    }

    /// Runs the connection's task until it ends; the next call then opens a new one.
    fn drive(&self, connection: impl Future<Output = Result<(), hyper::Error>> + Send + 'static) {
        let (host, port) = (self.host.clone(), self.port);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%host, port, %error, "upstream connection ended");
            }
        });
    }
}
