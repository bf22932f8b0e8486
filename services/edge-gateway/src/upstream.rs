//! One connection to one upstream endpoint (a replica: [`crate::routes`] keeps
//! a pool of them per upstream), driven by the `h2` crate directly: the
//! proxy's task opens the stream and hands over the request body itself, so a
//! unary call's HEADERS and DATA leave in one write with no task in between.
//! (A general-purpose client, hyper's included, forwards the body from a task
//! of its own once the new stream has flow-control capacity, which costs a
//! second write, a second wake-up of the upstream and a task hop per request.)
//! The connection is opened on first use and again after it fails or goes
//! away (the endpoint's maximum connection age, a drain); concurrent callers
//! wait for one connection attempt.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use h2::client::SendRequest;
use h2::{RecvStream, SendStream};
use http_body::{Body as _, Frame};
use suite_grpc::client::Dial;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tonic::body::Body;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// An idle connection is pinged this often, and closed when a ping goes unanswered for `KEEPALIVE_TIMEOUT`.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Receive windows as hyper's client sets them, so a streaming response is not throttled by the 64 KiB default.
const STREAM_WINDOW_BYTES: u32 = 2 * 1024 * 1024;
const CONNECTION_WINDOW_BYTES: u32 = 5 * 1024 * 1024;

/// Why a call to an endpoint failed.
#[derive(Debug)]
pub enum SendError {
    /// Nothing reached the endpoint (no connection could be opened, or the one
    /// there was had closed or gone away): the request comes back untouched,
    /// to be sent to another endpoint.
    NotSent(Box<http::Request<Body>>, String),
    /// The request was handed over and then failed; it cannot be sent again,
    /// since its body has streamed away.
    Failed(String),
}

#[derive(Debug)]
pub struct UpstreamConnection {
    addr: SocketAddr,
    /// The `:authority` every request carries: the upstream's configured address.
    authority: http::uri::Authority,
    dial: Dial,
    current: Mutex<Option<Handle>>,
    connecting: tokio::sync::Mutex<()>,
}

/// A live connection: its request handle and whether its task has ended.
#[derive(Debug, Clone)]
struct Handle {
    sender: SendRequest<Bytes>,
    closed: Arc<AtomicBool>,
}

impl UpstreamConnection {
    /// A connection to the endpoint `addr`, opened on first use.
    pub fn new(addr: SocketAddr, authority: http::uri::Authority, dial: Dial) -> Self {
        Self {
            addr,
            authority,
            dial,
            current: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
        }
    }

    /// Sends `request` (its path kept, scheme and authority set to the upstream's)
    /// and streams its body up while the response comes back.
    pub async fn send(&self, request: http::Request<Body>) -> Result<http::Response<Body>, SendError> {
        let mut sender = match self.ready_sender().await {
            Ok(sender) => sender,
            // The connection had just closed (an idle timeout upstream, a
            // restart, its age) and nothing was sent: once more on a fresh one.
            Err(_) => match self.ready_sender().await {
                Ok(sender) => sender,
                Err(error) => return Err(SendError::NotSent(Box::new(request), error)),
            },
        };
        let (mut parts, body) = request.into_parts();
        let mut uri = http::uri::Parts::default();
        uri.scheme = Some(http::uri::Scheme::HTTP);
        uri.authority = Some(self.authority.clone());
        uri.path_and_query = parts.uri.path_and_query().cloned();
        parts.uri = http::Uri::from_parts(uri).map_err(|error| SendError::Failed(error.to_string()))?;
        let end_of_stream = body.is_end_stream();
        let (response, send_stream) = match sender.send_request(http::Request::from_parts(parts, ()), end_of_stream) {
            Ok(sent) => sent,
            Err(error) => {
                self.forget();
                return Err(SendError::Failed(error.to_string()));
            }
        };
        if !end_of_stream {
            forward_body(body, send_stream);
        }
        let answered = UnansweredCall(Some(response))
            .await
            .map_err(|error| SendError::Failed(error.to_string()))?;
        Ok(answered.map(|recv| Body::new(ResponseBody::new(recv))))
    }

    /// A handle with room for one more stream, on the current connection or a new one.
    async fn ready_sender(&self) -> Result<SendRequest<Bytes>, String> {
        let handle = self.handle().await?;
        handle.sender.ready().await.map_err(|error| {
            handle.closed.store(true, Ordering::Relaxed);
            self.forget();
            format!("connection to {} is gone: {error}", self.addr)
        })
    }

    async fn handle(&self) -> Result<Handle, String> {
        if let Some(handle) = self.usable() {
            return Ok(handle);
        }
        let _single_flight = self.connecting.lock().await;
        if let Some(handle) = self.usable() {
            return Ok(handle);
        }
        // Boxed: the dial and TLS handshake's state is large, and without the
        // box every call's future would carry room for it.
        let handle = Box::pin(tokio::time::timeout(CONNECT_TIMEOUT, self.connect()))
            .await
            .map_err(|_| format!("no connection to {} within {CONNECT_TIMEOUT:?}", self.addr))??;
        *self.current.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(handle.clone());
        Ok(handle)
    }

    fn usable(&self) -> Option<Handle> {
        let current = self.current.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        current.as_ref().filter(|handle| !handle.closed.load(Ordering::Relaxed)).cloned()
    }

    /// Drops the connection if it has closed, so the next call opens a new one.
    fn forget(&self) {
        let mut current = self.current.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if current.as_ref().is_some_and(|handle| handle.closed.load(Ordering::Relaxed)) {
            *current = None;
        }
    }

    async fn connect(&self) -> Result<Handle, String> {
        let failed = |error: &dyn std::fmt::Display| format!("cannot connect to {}: {error}", self.addr);
        match &self.dial {
            Dial::Mtls(connector) => {
                let stream = connector
                    .connect(&self.addr.ip().to_string(), self.addr.port())
                    .await
                    .map_err(|error| failed(&error))?;
                self.handshake(stream).await.map_err(|error| failed(&error))
            }
            Dial::Plaintext => {
                let stream = TcpStream::connect(self.addr).await.map_err(|error| failed(&error))?;
                let _ = stream.set_nodelay(true);
                self.handshake(stream).await.map_err(|error| failed(&error))
            }
        }
    }

    async fn handshake<T>(&self, io: T) -> Result<Handle, h2::Error>
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, mut connection) = h2::client::Builder::new()
            .initial_window_size(STREAM_WINDOW_BYTES)
            .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
            .handshake::<_, Bytes>(io)
            .await?;
        let closed = Arc::new(AtomicBool::new(false));
        let ping_pong = connection.ping_pong();
        let (endpoint, ended) = (self.addr, closed.clone());
        // Runs the connection until it ends or stops answering pings; the next call then opens a new one.
        tokio::spawn(async move {
            let keepalive = async move {
                let Some(mut ping_pong) = ping_pong else {
                    return std::future::pending().await;
                };
                loop {
                    tokio::time::sleep(KEEPALIVE_INTERVAL).await;
                    match tokio::time::timeout(KEEPALIVE_TIMEOUT, ping_pong.ping(h2::Ping::opaque())).await {
                        Ok(Ok(_pong)) => {}
                        Ok(Err(error)) => return format!("keepalive ping failed: {error}"),
                        Err(_) => return format!("no answer to a keepalive ping within {KEEPALIVE_TIMEOUT:?}"),
                    }
                }
            };
            let ending = tokio::select! {
                result = connection => result.err().map(|error| error.to_string()),
                reason = keepalive => Some(reason),
            };
            ended.store(true, Ordering::Relaxed);
            if let Some(reason) = ending {
                tracing::debug!(%endpoint, %reason, "upstream connection ended");
            }
        });
        Ok(Handle { sender, closed })
    }
}

/// A call whose response headers have not arrived yet. If the caller goes
/// away first (the client reset its stream), the upstream stream is not reset
/// at once: a service counts streams reset before it accepted them and, past a
/// small number per connection (the HTTP/2 rapid-reset defence), closes the
/// connection, which here is every client's. So the call is left to be
/// answered, within [`ABANDONED_CALL_GRACE`], and only then released.
struct UnansweredCall(Option<h2::client::ResponseFuture>);

/// How long an abandoned call may take to be answered before its stream is reset anyway.
const ABANDONED_CALL_GRACE: Duration = Duration::from_secs(5);

impl Future for UnansweredCall {
    type Output = Result<http::Response<RecvStream>, h2::Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let response = self.0.as_mut().expect("an UnansweredCall is not polled after it is answered");
        let answered = ready!(Pin::new(response).poll(cx));
        // Answered: nothing is left for the drop to wait for.
        self.0 = None;
        Poll::Ready(answered)
    }
}

impl Drop for UnansweredCall {
    fn drop(&mut self) {
        if let Some(response) = self.0.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move {
                let _ = tokio::time::timeout(ABANDONED_CALL_GRACE, response).await;
            });
        }
    }
}

/// Hands the request body to the upstream stream. Whatever the body already
/// holds (all of a unary call) is queued at once, before the connection's task
/// next writes, so it leaves with the HEADERS; the rest follows from a task
/// that waits for flow-control capacity before taking more from the client.
fn forward_body(body: Body, stream: SendStream<Bytes>) {
    let mut pipe = RequestPipe {
        body,
        stream,
        waiting: None,
        queued_any: false,
    };
    let waker = std::task::Waker::noop();
    match Pin::new(&mut pipe).poll(&mut Context::from_waker(waker)) {
        Poll::Ready(()) => {}
        Poll::Pending => {
            // Still the request's work: its logs belong to the request's trace.
            suite_telemetry::context::spawn_in_current_context(pipe);
        }
    }
}

struct RequestPipe {
    body: Body,
    stream: SendStream<Bytes>,
    /// A chunk taken from the client that waits for capacity before it is queued.
    waiting: Option<(Bytes, bool)>,
    queued_any: bool,
}

impl RequestPipe {
    /// Ends the request early when the client's side failed (a reset, an
    /// oversized message). The request is closed rather than reset, for the
    /// reason [`UnansweredCall`] gives: the service fails the truncated call
    /// and answers, and the answer is dropped.
    fn abandon(&mut self) {
        let _ = self.stream.send_data(Bytes::new(), true);
    }
}

impl Future for RequestPipe {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let pipe = &mut *self;
        loop {
            // The upstream gave up on the request (it answered early, or reset it).
            if pipe.stream.poll_reset(cx).is_ready() {
                return Poll::Ready(());
            }
            if let Some((chunk, end_of_stream)) = pipe.waiting.take() {
                if pipe.stream.capacity() == 0 {
                    match pipe.stream.poll_capacity(cx) {
                        Poll::Pending => {
                            pipe.waiting = Some((chunk, end_of_stream));
                            return Poll::Pending;
                        }
                        Poll::Ready(Some(Ok(_))) => {}
                        Poll::Ready(Some(Err(_)) | None) => return Poll::Ready(()),
                    }
                }
                if pipe.stream.send_data(chunk, end_of_stream).is_err() || end_of_stream {
                    return Poll::Ready(());
                }
                continue;
            }
            let frame = match ready!(Pin::new(&mut pipe.body).poll_frame(cx)) {
                Some(Ok(frame)) => frame,
                Some(Err(_)) => {
                    pipe.abandon();
                    return Poll::Ready(());
                }
                None => {
                    let _ = pipe.stream.send_data(Bytes::new(), true);
                    return Poll::Ready(());
                }
            };
            let frame = match frame.into_data() {
                Ok(chunk) => {
                    let end_of_stream = pipe.body.is_end_stream();
                    // Queued without waiting for capacity: h2 holds it until the
                    // window allows. Later chunks wait, so a client cannot make
                    // the gateway buffer more than one chunk ahead of the upstream.
                    if pipe.stream.capacity() >= chunk.len() || !pipe.queued_any {
                        pipe.queued_any = true;
                        if pipe.stream.send_data(chunk, end_of_stream).is_err() || end_of_stream {
                            return Poll::Ready(());
                        }
                    } else {
                        pipe.stream.reserve_capacity(chunk.len());
                        pipe.waiting = Some((chunk, end_of_stream));
                    }
                    continue;
                }
                Err(frame) => frame,
            };
            if let Ok(trailers) = frame.into_trailers() {
                let _ = pipe.stream.send_trailers(trailers);
                return Poll::Ready(());
            }
        }
    }
}

/// The response body: DATA frames as they arrive (their flow-control credit
/// returned at once, since the gateway holds nothing), then the trailers.
struct ResponseBody {
    recv: RecvStream,
    data_done: bool,
}

impl ResponseBody {
    fn new(recv: RecvStream) -> Self {
        Self { recv, data_done: false }
    }
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        let body = &mut *self;
        if !body.data_done {
            match ready!(body.recv.poll_data(cx)) {
                Some(Ok(chunk)) => {
                    let _ = body.recv.flow_control().release_capacity(chunk.len());
                    return Poll::Ready(Some(Ok(Frame::data(chunk))));
                }
                Some(Err(error)) => return Poll::Ready(Some(Err(error))),
                None => body.data_done = true,
            }
        }
        match ready!(body.recv.poll_trailers(cx)) {
            Ok(Some(trailers)) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Ok(None) => Poll::Ready(None),
            Err(error) => Poll::Ready(Some(Err(error))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }
}
