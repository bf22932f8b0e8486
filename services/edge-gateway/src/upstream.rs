//! One connection to one upstream endpoint (a replica: [`crate::routes`] keeps
//! a pool of them per upstream), driven by the `h2` crate directly: the
//! proxy's task opens the stream and hands over the request body itself, so a
//! unary call's HEADERS and DATA leave in one write with no task in between.
//! (A general-purpose client, hyper's included, forwards the body from a task
//! of its own once the new stream has flow-control capacity, which costs a
//! second write, a second wake-up of the upstream and a task hop per request.)
//! The connection is opened on first use and again after it fails or goes
//! away (the endpoint's maximum connection age, a drain); concurrent callers
//! wait for one connection attempt. A request whose body was handed over whole
//! (a unary call) keeps its head and body chunks (shared, not copied) until the
//! response's headers arrive, so that one the endpoint turns away unprocessed
//! can be sent to another ([`SendError::WentAway`]).

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
    /// The endpoint turned the request away unprocessed: its graceful GOAWAY
    /// left the request's stream out (a drain, or the connection's maximum age:
    /// h2 may write a stream's HEADERS after the PONG that lets the server fix
    /// the GOAWAY's last stream id), or it refused the stream. The whole request
    /// had been handed over (a unary call), so it comes back rebuilt from what
    /// was kept, to be sent to another endpoint. The endpoint did answer, so it
    /// is not to be set aside for it: if it is draining, the next connection to
    /// it is refused, and that sets it aside.
    WentAway(Box<http::Request<Body>>, String),
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
        // Kept until the response's headers arrive, so that a request the endpoint
        // turns away unprocessed can go to another (h2 takes the request itself).
        let head = RequestHead::of(&parts);
        let (response, send_stream) = match sender.send_request(http::Request::from_parts(parts, ()), end_of_stream) {
            Ok(sent) => sent,
            // Refused before a stream was opened (the connection failed or went
            // away since it was ready): the body is still here, untouched.
            Err(error) => {
                self.forget();
                let error = format!("connection to {} refused the call: {error}", self.addr);
                return Err(SendError::NotSent(Box::new(head.with_body(body)), error));
            }
        };
        let sent = if end_of_stream {
            Sent::Whole(SentBody::default())
        } else {
            forward_body(body, send_stream)
        };
        let error = match UnansweredCall(Some(response)).await {
            Ok(answered) => return Ok(answered.map(|recv| Body::new(ResponseBody::new(recv)))),
            Err(error) => error,
        };
        if !suite_balance::never_processed(&error) {
            return Err(SendError::Failed(error.to_string()));
        }
        let body = match sent {
            Sent::Whole(sent) => Some(sent.into_body(None)),
            // The body was still arriving from the client: the task forwarding it
            // ends now that the stream is gone, and hands back what it kept and
            // what the client has yet to send.
            Sent::Streaming(handback) => match tokio::time::timeout(HANDBACK_PATIENCE, handback).await {
                Ok(Ok(Leftover { sent: Some(sent), rest })) => Some(sent.into_body(rest)),
                _ => None,
            },
            Sent::Lost => None,
        };
        match body {
            Some(body) => Err(SendError::WentAway(
                Box::new(head.with_body(body)),
                format!("{} turned the call away unprocessed: {error}", self.addr),
            )),
            None => Err(SendError::Failed(error.to_string())),
        }
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

/// What a request to be sent again needs of its head: h2 clears the
/// extensions of every request it sends, so they are not kept.
struct RequestHead {
    method: http::Method,
    uri: http::Uri,
    version: http::Version,
    headers: http::HeaderMap,
}

impl RequestHead {
    fn of(parts: &http::request::Parts) -> Self {
        Self {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            version: parts.version,
            headers: parts.headers.clone(),
        }
    }

    fn with_body(self, body: Body) -> http::Request<Body> {
        let mut request = http::Request::new(body);
        *request.method_mut() = self.method;
        *request.uri_mut() = self.uri;
        *request.version_mut() = self.version;
        *request.headers_mut() = self.headers;
        request
    }
}

/// How much of a request body is kept to send it again: a unary call's
/// message at the suite's default size limit. A longer stream is not resent.
const MAX_KEPT_BYTES: usize = 256 * 1024;
/// How long a call turned away waits for the task forwarding its body to end.
const HANDBACK_PATIENCE: Duration = Duration::from_secs(1);

/// The request body as it was handed over to the stream.
enum Sent {
    /// All of it, at once (a unary call whose message had arrived).
    Whole(SentBody),
    /// Forwarded by a task (the body was still arriving), which hands back
    /// what it kept when it ends.
    Streaming(tokio::sync::oneshot::Receiver<Leftover>),
    /// Not to be sent again (the client's side failed, or trailers).
    Lost,
}

/// What the task forwarding a body hands back when it ends: the chunks it
/// queued, unless too many to keep, and the rest of the body if it had not ended.
struct Leftover {
    sent: Option<SentBody>,
    rest: Option<Body>,
}

/// The chunks of a request body queued on a stream, shared with those queued,
/// to send the request again if the endpoint turns it away.
#[derive(Default)]
struct SentBody {
    first: Option<Bytes>,
    /// Further chunks, when a message spans several DATA frames.
    more: Vec<Bytes>,
    bytes: usize,
}

impl SentBody {
    /// Keeps `chunk`; false once more than [`MAX_KEPT_BYTES`] would be kept.
    fn push(&mut self, chunk: &Bytes) -> bool {
        self.bytes += chunk.len();
        if self.bytes > MAX_KEPT_BYTES {
            return false;
        }
        if self.first.is_none() {
            self.first = Some(chunk.clone());
        } else {
            self.more.push(chunk.clone());
        }
        true
    }

    /// The body again: the chunks kept, then `rest` (what the client had yet to send).
    fn into_body(self, rest: Option<Body>) -> Body {
        let kept = match (self.first, self.more.is_empty()) {
            (None, _) => None,
            (Some(only), true) => Some(only),
            (Some(first), false) => {
                let mut whole = bytes::BytesMut::from(first.as_ref());
                for chunk in &self.more {
                    whole.extend_from_slice(chunk);
                }
                Some(whole.freeze())
            }
        };
        match (kept, rest) {
            (None, None) => Body::empty(),
            (None, Some(rest)) => rest,
            (kept, rest) => Body::new(ResentBody { kept, rest }),
        }
    }
}

/// A request body sent again: what was kept of it, then the rest from the client.
struct ResentBody {
    kept: Option<Bytes>,
    rest: Option<Body>,
}

impl http_body::Body for ResentBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        if let Some(kept) = self.kept.take() {
            return Poll::Ready(Some(Ok(Frame::data(kept))));
        }
        match self.rest.as_mut() {
            Some(rest) => Pin::new(rest).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.kept.is_none() && self.rest.as_ref().is_none_or(http_body::Body::is_end_stream)
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
/// Returns what was kept of the body, to send it again should the endpoint turn it away.
fn forward_body(body: Body, stream: SendStream<Bytes>) -> Sent {
    let mut pipe = RequestPipe {
        body,
        stream,
        waiting: None,
        queued_any: false,
        sent: Some(SentBody::default()),
        ended: false,
        body_done: false,
        handback: None,
    };
    let waker = std::task::Waker::noop();
    match Pin::new(&mut pipe).poll(&mut Context::from_waker(waker)) {
        Poll::Ready(()) => match pipe.sent.take() {
            Some(sent) if pipe.ended => Sent::Whole(sent),
            _ => Sent::Lost,
        },
        Poll::Pending => {
            let (handback, handed_back) = tokio::sync::oneshot::channel();
            pipe.handback = Some(handback);
            // Still the request's work: its logs belong to the request's trace.
            suite_telemetry::context::spawn_in_current_context(pipe);
            Sent::Streaming(handed_back)
        }
    }
}

struct RequestPipe {
    body: Body,
    stream: SendStream<Bytes>,
    /// A chunk taken from the client that waits for capacity before it is queued.
    waiting: Option<(Bytes, bool)>,
    queued_any: bool,
    /// The chunks queued so far, while the body may still be sent again.
    sent: Option<SentBody>,
    /// The whole body, to its end, was queued.
    ended: bool,
    /// The client's body has nothing more (its end, or an error, was read).
    body_done: bool,
    /// Where a task forwarding the body hands back what it kept when it ends.
    handback: Option<tokio::sync::oneshot::Sender<Leftover>>,
}

impl Drop for RequestPipe {
    fn drop(&mut self) {
        let Some(handback) = self.handback.take() else { return };
        let mut sent = self.sent.take();
        if let (Some(kept), Some((chunk, _))) = (sent.as_mut(), self.waiting.take())
            && !kept.push(&chunk)
        {
            sent = None;
        }
        let rest = (!self.body_done).then(|| std::mem::replace(&mut self.body, Body::empty()));
        // Nobody waits when the call was answered.
        let _ = handback.send(Leftover { sent, rest });
    }
}

impl RequestPipe {
    /// Ends the request early when the client's side failed (a reset, an
    /// oversized message). The request is closed rather than reset, for the
    /// reason [`UnansweredCall`] gives: the service fails the truncated call
    /// and answers, and the answer is dropped.
    fn abandon(&mut self) {
        self.sent = None;
        let _ = self.stream.send_data(Bytes::new(), true);
    }

    /// Queues `chunk` on the stream (kept too, while the body may be sent again);
    /// whether more of the request is to follow.
    fn queue(&mut self, chunk: Bytes, end_of_stream: bool) -> bool {
        if let Some(sent) = &mut self.sent
            && !sent.push(&chunk)
        {
            self.sent = None;
        }
        if self.stream.send_data(chunk, end_of_stream).is_err() {
            return false;
        }
        self.ended = end_of_stream;
        !end_of_stream
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
                        Poll::Ready(Some(Err(_)) | None) => {
                            // Kept for the handback: it never left.
                            pipe.waiting = Some((chunk, end_of_stream));
                            return Poll::Ready(());
                        }
                    }
                }
                if !pipe.queue(chunk, end_of_stream) {
                    return Poll::Ready(());
                }
                continue;
            }
            let frame = match ready!(Pin::new(&mut pipe.body).poll_frame(cx)) {
                Some(Ok(frame)) => frame,
                Some(Err(_)) => {
                    pipe.body_done = true;
                    pipe.abandon();
                    return Poll::Ready(());
                }
                None => {
                    pipe.body_done = true;
                    pipe.queue(Bytes::new(), true);
                    return Poll::Ready(());
                }
            };
            let frame = match frame.into_data() {
                Ok(chunk) => {
                    let end_of_stream = pipe.body.is_end_stream();
                    pipe.body_done = end_of_stream;
                    // Queued without waiting for capacity: h2 holds it until the
                    // window allows. Later chunks wait, so a client cannot make
                    // the gateway buffer more than one chunk ahead of the upstream.
                    if pipe.stream.capacity() >= chunk.len() || !pipe.queued_any {
                        pipe.queued_any = true;
                        if !pipe.queue(chunk, end_of_stream) {
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
                // Rare in gRPC requests; such a request is not sent again.
                pipe.sent = None;
                pipe.body_done = true;
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use http_body_util::BodyExt as _;

    use super::*;

    /// A unary call's body: one gRPC message.
    const MESSAGE: &[u8] = b"\0\0\0\0\x05hello";

    /// A plaintext HTTP/2 endpoint that resets every stream with `reason`.
    async fn resetting_endpoint(reason: h2::Reason) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut connection = h2::server::handshake(tcp).await.unwrap();
            while let Some(Ok((_request, mut respond))) = connection.accept().await {
                respond.send_reset(reason);
            }
        });
        addr
    }

    fn unary_call() -> http::Request<Body> {
        http::Request::post("http://gateway.local/suite.user.v1.UserService/GetUser")
            .header("content-type", "application/grpc")
            .header("x-request-id", "went-away-1")
            .body(Body::new(http_body_util::Full::new(Bytes::from_static(MESSAGE))))
            .unwrap()
    }

    fn connection(addr: SocketAddr) -> UpstreamConnection {
        UpstreamConnection::new(addr, "user-service:50051".parse().unwrap(), Dial::Plaintext)
    }

    #[tokio::test]
    async fn a_unary_call_the_endpoint_refused_comes_back_whole_for_another() {
        let addr = resetting_endpoint(h2::Reason::REFUSED_STREAM).await;
        let Err(SendError::WentAway(request, error)) = connection(addr).send(unary_call()).await else {
            panic!("a refused stream was never processed: the call is to go elsewhere");
        };
        assert!(error.contains(&addr.to_string()), "{error}");
        assert_eq!(request.method(), http::Method::POST);
        assert_eq!(request.uri().path(), "/suite.user.v1.UserService/GetUser");
        assert_eq!(request.headers()["x-request-id"], "went-away-1");
        assert_eq!(request.headers()["content-type"], "application/grpc");
        let body = request.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], MESSAGE, "the same message, whole");
    }

    /// A body whose one message arrives when the test sends it.
    struct Later(tokio::sync::oneshot::Receiver<Bytes>, bool);

    impl http_body::Body for Later {
        type Data = Bytes;
        type Error = tonic::Status;

        fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
            if self.1 {
                return Poll::Ready(None);
            }
            let message = ready!(Pin::new(&mut self.0).poll(cx));
            self.1 = true;
            Poll::Ready(message.ok().map(|message| Ok(Frame::data(message))))
        }

        fn is_end_stream(&self) -> bool {
            self.1
        }
    }

    #[tokio::test]
    async fn a_call_refused_before_its_body_arrived_comes_back_with_the_body_to_come() {
        let addr = resetting_endpoint(h2::Reason::REFUSED_STREAM).await;
        let (message, later) = tokio::sync::oneshot::channel();
        let (parts, _) = unary_call().into_parts();
        let request = http::Request::from_parts(parts, Body::new(Later(later, false)));
        let Err(SendError::WentAway(request, _)) = connection(addr).send(request).await else {
            panic!("a refused stream was never processed: the call is to go elsewhere");
        };
        message.send(Bytes::from_static(MESSAGE)).unwrap();
        let body = request.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], MESSAGE);
    }

    #[tokio::test]
    async fn a_call_the_endpoint_may_have_processed_is_not_sent_again() {
        let addr = resetting_endpoint(h2::Reason::INTERNAL_ERROR).await;
        let outcome = connection(addr).send(unary_call()).await;
        assert!(matches!(outcome, Err(SendError::Failed(_))), "{outcome:?}");
    }

    #[test]
    fn a_body_kept_in_several_chunks_is_sent_again_whole_with_what_had_yet_to_come() {
        let mut sent = SentBody::default();
        for chunk in [&MESSAGE[..3], &MESSAGE[3..7]] {
            assert!(sent.push(&Bytes::copy_from_slice(chunk)));
        }
        // The rest had not arrived from the client yet.
        let rest = Body::new(http_body_util::Full::new(Bytes::copy_from_slice(&MESSAGE[7..])));
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let body = runtime.block_on(sent.into_body(Some(rest)).collect()).unwrap().to_bytes();
        assert_eq!(&body[..], MESSAGE);
        let empty = runtime.block_on(SentBody::default().into_body(None).collect()).unwrap().to_bytes();
        assert!(empty.is_empty());
        let mut long = SentBody::default();
        assert!(!long.push(&Bytes::from(vec![0; MAX_KEPT_BYTES + 1])), "too long to keep");
    }
}
