//! Forwards a gRPC call to its upstream without decoding it: request and
//! response bodies stream through frame by frame (unary and streaming alike),
//! headers, status and trailers pass unchanged. On the way it shrinks
//! `grpc-timeout` by the time already spent, refuses request messages over the
//! size limit (read from each message's 5-byte gRPC prefix as it passes), and
//! reports each call's final status to the upstream's circuit breaker, to the
//! client call latency histogram and, when tracing, to the call's client span.
//! The breaker hears only what the upstream did: not a call the client cut off
//! or sent too much for, nor a DEADLINE_EXCEEDED under a `grpc-timeout` shorter
//! than a healthy call may take. An upstream that sends no response headers
//! within the call's `grpc-timeout` is answered DEADLINE_EXCEEDED by the gateway,
//! so a frozen upstream is seen. Each call goes to one of the upstream's
//! endpoints, chosen by its pool; one that cannot be reached before anything was
//! sent is set aside and the call goes to another, and one failing calls in a
//! row is set aside as well. A unary call that an endpoint turned away unprocessed (its
//! graceful GOAWAY left the call's stream out, as a draining server's can, or it
//! refused the stream) goes to another as well, the endpoint not set aside.

use std::future::Future as _;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use http::{HeaderMap, HeaderValue};
use http_body::Frame;
use suite_balance::Lease;
use suite_grpc::KnownMethods;
use suite_grpc::client::{AdmittedCall, ClientCall};
use tonic::Code;
use tonic::body::Body;

use crate::error::GatewayError;
use crate::metrics::GatewayMetrics;
use crate::routes::Upstream;
use crate::upstream::{SendError, UpstreamConnection};

const GRPC_TIMEOUT: &str = "grpc-timeout";
const GRPC_STATUS: &str = "grpc-status";
/// Endpoints a call may try before anything of it was sent.
const MAX_ENDPOINTS_TRIED: usize = 3;
/// How long a call waits for an upstream's first endpoints (its name not yet resolved).
const DISCOVERY_PATIENCE: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct Proxy {
    max_message_bytes: u64,
    /// Longest wait for the next frame of a request body; zero: no limit.
    body_idle_timeout: Duration,
    metrics: GatewayMetrics,
    /// The routed services' methods: the only method names the upstream call
    /// metrics and spans carry.
    known_methods: KnownMethods,
}

impl Proxy {
    pub fn new(
        max_message_bytes: usize,
        body_idle_timeout: Duration,
        metrics: GatewayMetrics,
        known_paths: impl IntoIterator<Item = String>,
    ) -> Self {
        Self {
            max_message_bytes: max_message_bytes as u64,
            body_idle_timeout,
            metrics,
            known_methods: KnownMethods::new(known_paths),
        }
    }

    /// Sends `request` (received at `received_at`) to `upstream` and returns its streaming response.
    pub async fn forward(
        &self,
        upstream: &Upstream,
        request: http::Request<Body>,
        received_at: Instant,
    ) -> Result<http::Response<Body>, GatewayError> {
        let (mut parts, body) = request.into_parts();
        let mut allowed = None;
        if let Some(timeout) = parts.headers.get(GRPC_TIMEOUT).and_then(parse_grpc_timeout) {
            let remaining = timeout.saturating_sub(received_at.elapsed());
            if remaining.is_zero() {
                return Err(GatewayError::DeadlineExceeded);
            }
            parts.headers.insert(GRPC_TIMEOUT, encode_grpc_timeout(remaining));
            allowed = Some(remaining);
        }
        let admitted = upstream.resilience.admit(allowed).map_err(|status| {
            let kind = if status.code() == Code::Unavailable {
                "circuit_open"
            } else {
                "bulkhead_full"
            };
            self.metrics.upstream_error(upstream.name, kind);
            GatewayError::UpstreamRefused {
                upstream: upstream.name,
                status,
            }
        })?;
        // Timed from here to its trailers; the upstream continues the call's server span.
        let names = *self.known_methods.names(parts.uri.path());
        let mut call = ClientCall::forwarded(upstream.name, names, upstream.resilience.metrics());
        call.inject(&mut parts.headers);
        let fault = Arc::new(ClientFault::default());
        let body = Body::new(MessageLimit {
            inner: body,
            limit: self.max_message_bytes,
            scanner: FrameScanner::default(),
            idle_timeout: self.body_idle_timeout,
            idle: None,
            fault: fault.clone(),
        });
        let request = http::Request::from_parts(parts, body);
        let mut lease = None;
        let sent = send_to_an_endpoint(upstream, request, &mut lease);
        let outcome = match allowed {
            None => sent.await,
            Some(allowed) => match tokio::time::timeout(allowed, sent).await {
                Ok(sent) => sent,
                Err(_) => {
                    // The endpoint sent no response headers within the call's deadline.
                    admitted.finish(lease.as_ref(), Code::DeadlineExceeded, false);
                    call.finish(Code::DeadlineExceeded);
                    self.metrics.upstream_error(upstream.name, "deadline");
                    return Err(GatewayError::DeadlineExceeded);
                }
            },
        };
        match outcome {
            Err(error) => {
                // We cut the request off; the upstream is not to blame.
                if let Some(refusal) = fault.refusal(self) {
                    drop(admitted);
                    return Err(self.client_fault(upstream, refusal, &mut call));
                }
                // The connection to the endpoint failed under the call.
                admitted.finish(lease.as_ref(), Code::Unavailable, true);
                call.finish(Code::Unavailable);
                self.metrics.upstream_error(upstream.name, "unavailable");
                tracing::warn!(upstream = upstream.name, %error, "upstream call failed");
                Err(GatewayError::UpstreamUnavailable {
                    upstream: upstream.name,
                    detail: error,
                })
            }
            Ok(response) => {
                if let Some(refusal) = fault.refusal(self) {
                    drop(admitted);
                    return Err(self.client_fault(upstream, refusal, &mut call));
                }
                // A trailers-only response (most errors) carries its status in the headers.
                if let Some(code) = grpc_status(response.headers()) {
                    admitted.finish(lease.as_ref(), code, false);
                    call.finish(code);
                    return Ok(response);
                }
                let (parts, body) = response.into_parts();
                let body = Body::new(ReportOutcome {
                    inner: body,
                    admitted: Some(admitted),
                    call: Some(call),
                    fault,
                    lease,
                });
                Ok(http::Response::from_parts(parts, body))
            }
        }
    }

    /// Ends `call` for what the client did wrong, and says so to the client.
    fn client_fault(&self, upstream: &Upstream, refusal: GatewayError, call: &mut ClientCall) -> GatewayError {
        match &refusal {
            GatewayError::MessageTooLarge { .. } => {
                self.metrics.upstream_error(upstream.name, "too_large");
                call.finish(Code::ResourceExhausted);
            }
            _ => {
                self.metrics.upstream_error(upstream.name, "body_stalled");
                call.finish(Code::DeadlineExceeded);
            }
        }
        refusal
    }
}

/// What the client did wrong while its request streamed upstream; a call cut
/// off for it is not the upstream's failure, so the breaker does not hear of it.
#[derive(Debug, Default)]
struct ClientFault {
    /// The size of the first message over the limit (0: none).
    oversized: AtomicU64,
    /// The body sent nothing for the idle timeout.
    stalled: AtomicBool,
}

impl ClientFault {
    fn is_set(&self) -> bool {
        self.oversized.load(Ordering::Relaxed) > 0 || self.stalled.load(Ordering::Relaxed)
    }

    /// The error the client gets, if it was at fault.
    fn refusal(&self, proxy: &Proxy) -> Option<GatewayError> {
        let size = self.oversized.load(Ordering::Relaxed);
        if size > 0 {
            return Some(GatewayError::MessageTooLarge {
                size,
                limit: proxy.max_message_bytes,
            });
        }
        self.stalled
            .load(Ordering::Relaxed)
            .then_some(GatewayError::RequestBodyStalled(proxy.body_idle_timeout))
    }
}

/// Sends `request` to one of `upstream`'s endpoints, and to another when one
/// cannot be reached; `sent_to` holds the lease of the endpoint that has the
/// request (the call counted in flight there), from the moment it is sent, so
/// that it can be judged however the call ends.
async fn send_to_an_endpoint(
    upstream: &Upstream,
    mut request: http::Request<Body>,
    sent_to: &mut Option<Lease<UpstreamConnection>>,
) -> Result<http::Response<Body>, String> {
    let mut previous = None;
    let mut failure = String::from("no endpoint is known");
    for _ in 0..MAX_ENDPOINTS_TRIED {
        let lease = match upstream.pool.pick(previous) {
            Some(lease) => lease,
            None if upstream.pool.wait_for_endpoints(DISCOVERY_PATIENCE).await => match upstream.pool.pick(previous) {
                Some(lease) => lease,
                None => break,
            },
            None => break,
        };
        let lease = sent_to.insert(lease);
        match lease.connection().send(request).await {
            // Whether the endpoint is trusted again depends on the call's status.
            Ok(response) => return Ok(response),
            Err(SendError::Failed(error)) => return Err(error),
            Err(SendError::WentAway(unsent, error)) => {
                // Not set aside: the endpoint answered. If it is draining, the next
                // call's connection to it is refused, and that sets it aside.
                tracing::debug!(upstream = upstream.name, endpoint = %lease.addr(), %error, "endpoint turned the call away unprocessed; trying another");
                previous = Some(lease.addr());
                request = *unsent;
                failure = error;
            }
            Err(SendError::NotSent(unsent, error)) => {
                let _ = lease.unreachable();
                tracing::debug!(upstream = upstream.name, endpoint = %lease.addr(), %error, "endpoint unreachable; trying another");
                previous = Some(lease.addr());
                request = *unsent;
                failure = error;
            }
        }
        // Nothing of the call is at that endpoint.
        *sent_to = None;
    }
    Err(failure)
}

fn grpc_status(headers: &HeaderMap) -> Option<Code> {
    let value = headers.get(GRPC_STATUS)?.to_str().ok()?.parse::<i32>().ok()?;
    Some(Code::from_i32(value))
}

/// `grpc-timeout`: at most 8 digits and a unit (H, M, S, m, u, n).
fn parse_grpc_timeout(value: &HeaderValue) -> Option<Duration> {
    let text = value.to_str().ok()?;
    if text.len() < 2 || text.len() > 9 {
        return None;
    }
    let (digits, unit) = text.split_at(text.len() - 1);
    // Digits only: `u64`'s parser would also take a leading '+'.
    if !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.saturating_mul(3600)),
        "M" => Duration::from_secs(amount.saturating_mul(60)),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// The finest unit that fits in 8 digits.
fn encode_grpc_timeout(timeout: Duration) -> HeaderValue {
    const MAX: u128 = 99_999_999;
    let micros = timeout.as_micros().max(1);
    let text = if micros <= MAX {
        format!("{micros}u")
    } else if timeout.as_millis() <= MAX {
        format!("{}m", timeout.as_millis())
    } else {
        format!("{}S", u128::from(timeout.as_secs()).min(MAX))
    };
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("99999999S"))
}

/// Follows the gRPC message framing (1 byte flags, 4 bytes big-endian length,
/// payload) across arbitrary chunk boundaries.
#[derive(Debug, Default)]
struct FrameScanner {
    prefix: [u8; 5],
    prefix_filled: usize,
    payload_left: u64,
}

impl FrameScanner {
    /// Err(length) as soon as a message announces more than `limit` bytes.
    fn scan(&mut self, mut data: &[u8], limit: u64) -> Result<(), u64> {
        while !data.is_empty() {
            if self.payload_left > 0 {
                let skip = self.payload_left.min(data.len() as u64);
                data = &data[skip as usize..];
                self.payload_left -= skip;
                continue;
            }
            let take = (5 - self.prefix_filled).min(data.len());
            self.prefix[self.prefix_filled..self.prefix_filled + take].copy_from_slice(&data[..take]);
            self.prefix_filled += take;
            data = &data[take..];
            if self.prefix_filled == 5 {
                let length = u64::from(u32::from_be_bytes([self.prefix[1], self.prefix[2], self.prefix[3], self.prefix[4]]));
                if length > limit {
                    return Err(length);
                }
                self.payload_left = length;
                self.prefix_filled = 0;
            }
        }
        Ok(())
    }
}

/// The request body on its way upstream, cut off at the first oversized
/// message, or when the client sends nothing for `idle_timeout`.
struct MessageLimit {
    inner: Body,
    limit: u64,
    scanner: FrameScanner,
    idle_timeout: Duration,
    /// Armed only while the client keeps the body waiting, so a body that is
    /// already whole (every unary call that arrives at once) sets no timer.
    idle: Option<Pin<Box<tokio::time::Sleep>>>,
    fault: Arc<ClientFault>,
}

impl http_body::Body for MessageLimit {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Pending if !this.idle_timeout.is_zero() => {
                let timeout = this.idle_timeout;
                let idle = this.idle.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                if idle.as_mut().poll(cx).is_ready() {
                    this.fault.stalled.store(true, Ordering::Relaxed);
                    return Poll::Ready(Some(Err(tonic::Status::deadline_exceeded("request body stalled"))));
                }
            }
            Poll::Pending => {}
            Poll::Ready(frame) => {
                this.idle = None;
                if let Some(Ok(frame)) = frame
                    && let Some(data) = frame.data_ref()
                    && let Err(size) = this.scanner.scan(data.chunk(), this.limit)
                {
                    this.fault.oversized.store(size, Ordering::Relaxed);
                    return Poll::Ready(Some(Err(tonic::Status::resource_exhausted("request message too large"))));
                }
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The response body on its way to the client; its trailers' `grpc-status`
/// is the call's outcome for the upstream's circuit breaker and ends the
/// upstream call (its latency and span). Dropped before the end (the client
/// went away), it reports nothing to the breaker and ends the call as CANCELLED.
struct ReportOutcome {
    inner: Body,
    admitted: Option<AdmittedCall>,
    call: Option<ClientCall>,
    /// A call the gateway cut off for the client's fault is not reported to the breaker.
    fault: Arc<ClientFault>,
    /// The call counts as in flight at its endpoint until its response ends.
    lease: Option<Lease<UpstreamConnection>>,
}

impl ReportOutcome {
    fn finish(&mut self, code: Code) {
        if let Some(admitted) = self.admitted.take()
            && !self.fault.is_set()
        {
            admitted.finish(self.lease.as_ref(), code, false);
        }
        if let Some(mut call) = self.call.take() {
            call.finish(code);
        }
    }
}

impl http_body::Body for ReportOutcome {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    this.finish(grpc_status(trailers).unwrap_or(Code::Unknown));
                }
            }
            // A stream that ends without trailers is a broken gRPC response.
            Poll::Ready(None) => this.finish(Code::Unknown),
            Poll::Ready(Some(Err(_))) => this.finish(Code::Unavailable),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn message(length: u32) -> Vec<u8> {
        let mut bytes = vec![0];
        bytes.extend_from_slice(&length.to_be_bytes());
        bytes.extend(std::iter::repeat_n(7, length as usize));
        bytes
    }

    #[test]
    fn scans_messages_across_chunk_boundaries() {
        let mut stream = message(10);
        stream.extend(message(3));
        stream.extend(message(100));
        let mut scanner = FrameScanner::default();
        // Small and odd chunks, splitting prefixes and payloads.
        let mut result = Ok(());
        for chunk in stream.chunks(3) {
            result = scanner.scan(chunk, 50);
            if result.is_err() {
                break;
            }
        }
        assert_eq!(result, Err(100));

        let mut scanner = FrameScanner::default();
        let mut stream = message(50);
        stream.extend(message(0));
        for chunk in stream.chunks(7) {
            assert_eq!(scanner.scan(chunk, 50), Ok(()));
        }
    }

    #[test]
    fn grpc_timeout_round_trip() {
        for (text, duration) in [
            ("100m", Duration::from_millis(100)),
            ("2S", Duration::from_secs(2)),
            ("1H", Duration::from_secs(3600)),
            ("5u", Duration::from_micros(5)),
        ] {
            assert_eq!(parse_grpc_timeout(&HeaderValue::from_static(text)), Some(duration));
        }
        for bad in ["", "m", "123456789m", "10x", "-1S"] {
            assert_eq!(parse_grpc_timeout(&HeaderValue::from_static(bad)), None, "{bad}");
        }
        for duration in [
            Duration::from_micros(1),
            Duration::from_millis(1500),
            Duration::from_secs(200),
            Duration::from_secs(1 << 40),
        ] {
            let encoded = encode_grpc_timeout(duration);
            let parsed = parse_grpc_timeout(&encoded).unwrap();
            assert!(
                parsed <= duration && duration - parsed < Duration::from_secs(1) || duration.as_secs() > 99_999_999,
                "{encoded:?}"
            );
        }
    }
}
