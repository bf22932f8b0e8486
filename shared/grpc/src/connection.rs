//! Accepted connections on the gRPC port, plaintext or mutual TLS, and the
//! [`PeerInfo`] tonic attaches to every request arriving on them.

use std::future::Future as _;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::stream::{BoxStream, Stream, StreamExt};
use futures::task::AtomicWaker;
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
    /// Streams open on the connection, for its idle timeout.
    pub(crate) activity: Arc<ConnectionActivity>,
    /// The verified certificate identity; `None` on an insecure plaintext port.
    /// Shared, because tonic clones the connection's info into every request.
    pub identity: Option<Arc<PeerIdentity>>,
    /// `remote_addr`'s IP as text, written once per connection rather than for
    /// the span of every call on it.
    pub(crate) remote_ip: Arc<str>,
}

impl PeerInfo {
    pub(crate) fn new(remote_addr: SocketAddr, identity: Option<PeerIdentity>) -> Self {
        Self {
            remote_addr,
            activity: Arc::default(),
            identity: identity.map(Arc::new),
            remote_ip: remote_addr.ip().to_string().into(),
        }
    }
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
    idle: IdleTimer,
    /// When the connection is closed whatever it is doing: its maximum age plus the
    /// grace its calls get. (tonic sends GOAWAY at the age; its own forced close skips
    /// that GOAWAY, so the forced close is done here.)
    end_of_life: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// How long an accepted connection may live.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ConnectionLimits {
    /// Closed after this long with no open stream.
    pub(crate) idle_timeout: Option<Duration>,
    /// Closed after this long in any case.
    pub(crate) lifetime: Option<Duration>,
}

/// Streams open on one connection, so the connection can tell when it is idle.
#[derive(Debug, Default)]
pub(crate) struct ConnectionActivity {
    open: AtomicUsize,
    /// Bumped when a stream opens or closes: an idle period starts at the last change.
    changes: AtomicU64,
    /// The connection's reader, woken when the last stream closes so its idle timer starts.
    reader: AtomicWaker,
}

impl ConnectionActivity {
    /// Counts a stream as open until the returned guard is dropped.
    pub(crate) fn stream_opened(self: &Arc<Self>) -> OpenStream {
        self.open.fetch_add(1, Ordering::AcqRel);
        self.changes.fetch_add(1, Ordering::AcqRel);
        OpenStream(self.clone())
    }
}

/// One open stream (a request whose response has not been fully sent).
pub(crate) struct OpenStream(Arc<ConnectionActivity>);

impl Drop for OpenStream {
    fn drop(&mut self) {
        let activity = &self.0;
        activity.changes.fetch_add(1, Ordering::AcqRel);
        if activity.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            activity.reader.wake();
        }
    }
}

/// Closes a connection that has had no open stream for the idle timeout.
/// Keepalive pings do not count as activity; only requests do.
struct IdleTimer {
    timeout: Option<Duration>,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    seen_changes: u64,
}

impl IdleTimer {
    fn new(timeout: Option<Duration>) -> Self {
        Self {
            timeout,
            sleep: None,
            seen_changes: 0,
        }
    }

    /// Whether the connection has been idle for the whole timeout; registers for a wake-up otherwise.
    fn expired(&mut self, activity: &ConnectionActivity, cx: &mut Context<'_>) -> bool {
        let Some(timeout) = self.timeout else { return false };
        activity.reader.register(cx.waker());
        if activity.open.load(Ordering::Acquire) > 0 {
            self.sleep = None;
            return false;
        }
        let changes = activity.changes.load(Ordering::Acquire);
        if self.sleep.is_none() || changes != self.seen_changes {
            self.seen_changes = changes;
            self.sleep = Some(Box::pin(tokio::time::sleep(timeout)));
        }
        self.sleep.as_mut().is_some_and(|sleep| sleep.as_mut().poll(cx).is_ready())
    }
}

impl Connection {
    fn new(stream: Transport, remote_addr: SocketAddr, identity: Option<PeerIdentity>, limits: ConnectionLimits) -> Self {
        Self {
            stream,
            info: PeerInfo::new(remote_addr, identity),
            idle: IdleTimer::new(limits.idle_timeout),
            end_of_life: limits.lifetime.map(|lifetime| Box::pin(tokio::time::sleep(lifetime))),
        }
    }

    /// Whether the connection has lived its whole life; registers for a wake-up otherwise.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        self.end_of_life.as_mut().is_some_and(|end| end.as_mut().poll(cx).is_ready())
    }
}

impl Connected for Connection {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.info.clone()
    }
}

impl AsyncRead for Connection {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.idle.expired(&this.info.activity, cx) {
            // End of input: the HTTP/2 server closes the connection.
            tracing::debug!(remote = %this.info.remote_addr, "closing an idle connection");
            return Poll::Ready(Ok(()));
        }
        if this.expired(cx) {
            tracing::debug!(remote = %this.info.remote_addr, "closing a connection past its age and grace");
            return Poll::Ready(Ok(()));
        }
        match &mut this.stream {
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
/// A connection is closed as `limits` say.
pub(crate) fn incoming(
    listener: TcpListener,
    tls: Option<ServerTls>,
    limits: ConnectionLimits,
) -> BoxStream<'static, io::Result<Connection>> {
    match tls {
        None => futures::stream::unfold(listener, move |listener| async move {
            let (tcp, remote_addr) = accept(&listener).await;
            let connection = Connection::new(Transport::Plain(tcp), remote_addr, None, limits);
            Some((Ok(connection), listener))
        })
        .boxed(),
        Some(tls) => {
            let (sender, receiver) = mpsc::channel(64);
            let accept_task = tokio::spawn(accept_tls(listener, tls, sender, limits));
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

async fn accept_tls(listener: TcpListener, tls: ServerTls, sender: mpsc::Sender<io::Result<Connection>>, limits: ConnectionLimits) {
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
                let connection = Connection::new(Transport::Tls(Box::new(stream)), remote_addr, identity, limits);
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
