//! Accepted connections on the gRPC port, plaintext or mutual TLS, and the
//! [`PeerInfo`] tonic attaches to every request arriving on them.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::stream::{BoxStream, Stream, StreamExt};
use suite_tls::{PeerIdentity, ServerTls};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::server::TlsStream;
use tonic::transport::server::Connected;

/// Handshakes in progress at once; beyond it the accept loop waits, so a flood
/// of silent sockets queues in the kernel backlog rather than in memory.
const MAX_PENDING_HANDSHAKES: usize = 512;
const ACCEPT_RETRY_PAUSE: Duration = Duration::from_millis(50);

/// Who is on the other end of the connection a request arrived on.
/// Handlers read it from the request extensions (see [`peer_identity`]).
#[derive(Debug, Clone)]
pub struct PeerInfo {
    pub remote_addr: SocketAddr,
    /// The verified certificate identity; `None` on an insecure plaintext port.
    /// Shared, because tonic clones the connection's info into every request.
    pub identity: Option<Arc<PeerIdentity>>,
}

/// The verified identity of the caller of `request`, if the port is mutual TLS.
pub fn peer_identity<T>(request: &tonic::Request<T>) -> Option<&PeerIdentity> {
    request.extensions().get::<PeerInfo>()?.identity.as_deref()
}

pub(crate) enum Transport {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// One accepted connection, ready for HTTP/2.
pub(crate) struct Connection {
    stream: Transport,
    info: PeerInfo,
}

impl Connected for Connection {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.info.clone()
    }
}

impl AsyncRead for Connection {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().stream {
            Transport::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            Transport::Tls(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Connection {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().stream {
            Transport::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            Transport::Tls(stream) => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().stream {
            Transport::Plain(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            Transport::Tls(stream) => Pin::new(stream.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.stream {
            Transport::Plain(stream) => stream.is_write_vectored(),
            Transport::Tls(stream) => stream.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().stream {
            Transport::Plain(stream) => Pin::new(stream).poll_flush(cx),
            Transport::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().stream {
            Transport::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            Transport::Tls(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Connections accepted on `listener`: plaintext as they come, or after a TLS
/// handshake that runs beside the accept loop (bounded in time and number) so
/// a slow or silent peer delays nobody else.
pub(crate) fn incoming(listener: TcpListener, tls: Option<ServerTls>) -> BoxStream<'static, io::Result<Connection>> {
    match tls {
        None => futures::stream::unfold(listener, |listener| async move {
            let (tcp, remote_addr) = accept(&listener).await;
            let connection = Connection {
                stream: Transport::Plain(tcp),
                info: PeerInfo {
                    remote_addr,
                    identity: None,
                },
            };
            Some((Ok(connection), listener))
        })
        .boxed(),
        Some(tls) => {
            let (sender, receiver) = mpsc::channel(64);
            let accept_task = tokio::spawn(accept_tls(listener, tls, sender));
            TlsIncoming {
                receiver,
                _accept_task: AbortOnDrop(accept_task),
            }
            .boxed()
        }
    }
}

/// Accepts the next connection with Nagle off (small gRPC frames must not
/// wait). An accept error (out of file descriptors, say) is logged and retried
/// after a pause rather than ending the server.
async fn accept(listener: &TcpListener) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok((tcp, remote_addr)) => {
                let _ = tcp.set_nodelay(true);
                return (tcp, remote_addr);
            }
            Err(error) => {
                tracing::warn!(%error, "accept failed; retrying");
                tokio::time::sleep(ACCEPT_RETRY_PAUSE).await;
            }
        }
    }
}

async fn accept_tls(listener: TcpListener, tls: ServerTls, sender: mpsc::Sender<io::Result<Connection>>) {
    let pending = Arc::new(Semaphore::new(MAX_PENDING_HANDSHAKES));
    loop {
        let Ok(permit) = pending.clone().acquire_owned().await else {
            return;
        };
        let (tcp, remote_addr) = accept(&listener).await;
        if sender.is_closed() {
            return;
        }
        let tls = tls.clone();
        let sender = sender.clone();
        tokio::spawn(async move {
            let _permit = permit;
            // Failures are counted and logged by the handshake itself.
            if let Ok((stream, identity)) = tls.handshake(tcp, remote_addr).await {
                let connection = Connection {
                    stream: Transport::Tls(Box::new(stream)),
                    info: PeerInfo {
                        remote_addr,
                        identity: identity.map(Arc::new),
                    },
                };
                let _ = sender.send(Ok(connection)).await;
            }
        });
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        // Closes the listener once the server stops taking connections.
        self.0.abort();
    }
}

struct TlsIncoming {
    receiver: mpsc::Receiver<io::Result<Connection>>,
    _accept_task: AbortOnDrop,
}

impl Stream for TlsIncoming {
    type Item = io::Result<Connection>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().receiver.poll_recv(cx)
    }
}
