//! One server span per call, following the OpenTelemetry RPC conventions
//! (`rpc.system`, `rpc.service`, `rpc.method`, `rpc.grpc.status_code`, kind
//! server, `network.peer.*`), continued from the caller's trace context (read by
//! OpenTelemetry's global propagator) when the server trusts it, and an `x-request-id` accepted or generated,
//! passed on to the handler and returned to the caller. With span export off,
//! the call still gets a trace context (without a span) so its log lines carry
//! a trace id and span id.
//!
//! The span lives in the response body, so it ends when the last byte of the
//! response (and its status) has been sent, not when the handler returns.

use std::task::{Context, Poll};

use futures::future::{BoxFuture, FutureExt};
use http::{HeaderMap, HeaderValue};
use opentelemetry::KeyValue;
use opentelemetry::context::FutureExt as _;
use opentelemetry::trace::SpanKind;
use suite_telemetry::spans::CallSpan;
use tonic::Code;
use tower::{Layer, Service};
use tracing::Instrument as _;

use super::body::{GuardedBody, ResponseGuard};
use crate::connection::PeerInfo;
use crate::methods::KnownMethods;

/// Header a call's request id travels in, in both directions.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Longest request id accepted from a caller; longer ones are replaced.
const MAX_REQUEST_ID_LEN: usize = 128;

tokio::task_local! {
    static REQUEST_ID: HeaderValue;
}

/// The `x-request-id` of the call being handled, for outgoing calls made on its behalf.
pub fn current_request_id() -> Option<HeaderValue> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

/// Whether a caller's `traceparent` / `tracestate` / `baggage` are believed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteTraceContext {
    /// Continue the caller's trace (service to service, behind mutual TLS).
    Trust,
    /// Start a new trace and drop the caller's context headers (an edge facing the internet).
    Ignore,
}

#[derive(Debug, Clone)]
pub struct TraceLayer {
    remote: RemoteTraceContext,
    known_methods: KnownMethods,
}

impl TraceLayer {
    /// `known_paths` (`/package.Service/Method`) keep their names in spans;
    /// any other path is named `unknown`, so made-up methods cannot flood a trace backend with names.
    pub fn new(remote: RemoteTraceContext, known_paths: impl IntoIterator<Item = String>) -> Self {
        Self {
            remote,
            known_methods: KnownMethods::new(known_paths),
        }
    }
}

impl<S> Layer<S> for TraceLayer {
    type Service = TraceService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TraceService {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct TraceService<S> {
    inner: S,
    layer: TraceLayer,
}

impl<S, ReqBody> Service<http::Request<ReqBody>> for TraceService<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<tonic::body::Body>> + Send,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<ReqBody>) -> Self::Future {
        let (request_id, accepted) = accept_or_generate_request_id(request.headers_mut());
        // A service of the suite that sent the id (mutual TLS identity) has it already; echoing
        // it would cost every internal hop a header to encode and decode. End clients get it back.
        let from_workload = request.extensions().get::<PeerInfo>().is_some_and(|peer| peer.identity.is_some());
        let echo = !(accepted && from_workload);
        let caller_context = match self.layer.remote {
            RemoteTraceContext::Trust => Some(suite_telemetry::propagation::extract(request.headers())),
            RemoteTraceContext::Ignore => None,
        };
        // Read (or ignored), the caller's context leaves the request: a call made on its behalf
        // (the gateway forwards this very request) carries this hop's context, or none.
        suite_telemetry::propagation::strip(request.headers_mut());
        let path = request.uri().path();
        let names = *self.layer.known_methods.names(path);
        let (service, method) = (names.service, names.method);
        // Fields for the call's log lines only; its OpenTelemetry span is made below.
        let log_span = tracing::info_span!(
            target: suite_telemetry::LOG_FIELDS,
            suite_telemetry::REQUEST_LOG_SPAN,
            rpc.service = service,
            rpc.method = method,
            request_id = request_id.to_str().unwrap_or_default(),
        );
        let (context, server_span) = if suite_telemetry::tracing_enabled() {
            let span = CallSpan::start(SpanKind::Server, &caller_context.unwrap_or_default(), names.span_name, || {
                // Room for the peer's address and port, and for the status code when the call ends.
                // The request id is not among them: every log line of the call carries it beside the
                // trace id, and each attribute costs every exported span allocations and encoding.
                let mut attributes = Vec::with_capacity(6);
                attributes.extend([
                    KeyValue::new("rpc.system", "grpc"),
                    KeyValue::new("rpc.service", names.service),
                    KeyValue::new("rpc.method", names.method),
                ]);
                if let Some(peer) = request.extensions().get::<PeerInfo>() {
                    attributes.push(KeyValue::new("network.peer.address", peer.remote_ip.clone()));
                    attributes.push(KeyValue::new("network.peer.port", i64::from(peer.remote_addr.port())));
                }
                attributes
            });
            (span.as_ref().map(|span| span.context().clone()), span)
        } else {
            // Without export no span carries a context: one is made for the logs and the next hop.
            (Some(suite_telemetry::context::untraced_request(caller_context)), None)
        };
        let future = {
            let _attached = context.clone().map(opentelemetry::Context::attach);
            let _entered = log_span.enter();
            self.inner.call(request)
        };
        // Nothing to record (no export, logs above INFO): the response body goes out
        // unwrapped; the request id and the trace context are all the call pays for.
        let guard = (server_span.is_some() || !log_span.is_disabled()).then(|| SpanGuard {
            server_span,
            log_span: log_span.clone(),
            context: context.clone(),
            finished: false,
        });
        let future = REQUEST_ID.scope(request_id.clone(), future.instrument(log_span));
        let future = match context {
            Some(context) => future.with_context(context).left_future(),
            None => future.right_future(),
        };
        future
            .map(move |result| {
                let mut response = result?;
                if echo {
                    response.headers_mut().insert(REQUEST_ID_HEADER, request_id);
                }
                let Some(mut guard) = guard else {
                    return Ok(response);
                };
                // A trailers-only reply (errors, shed load) has its status in the headers.
                guard.on_trailers(response.headers());
                Ok(response.map(|body| GuardedBody::wrap(body, guard)))
            })
            .boxed()
    }
}

/// The caller's request id if it is a sane one (and `true`), else a new UUID (and `false`);
/// written back into the request so the handler and the gateway's proxy pass it on.
fn accept_or_generate_request_id(headers: &mut HeaderMap) -> (HeaderValue, bool) {
    if let Some(value) = headers.get(REQUEST_ID_HEADER)
        && is_acceptable_request_id(value.as_bytes())
    {
        return (value.clone(), true);
    }
    let mut text = [0_u8; uuid::fmt::Hyphenated::LENGTH];
    let id = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut text);
    let mut generated = HeaderValue::from_str(id).unwrap_or_else(|_| HeaderValue::from_static("invalid"));
    // Unique per call: sent as a literal rather than added to the upstream connection's
    // header table, where it would only push out the headers that repeat. Without it the
    // untraced gateway ran about 7,000 more instructions per proxied call (callgrind).
    generated.set_sensitive(true);
    headers.insert(REQUEST_ID_HEADER, generated.clone());
    (generated, false)
}

/// Printable ASCII without spaces or quotes, so it can go into logs and JSON as it is.
fn is_acceptable_request_id(bytes: &[u8]) -> bool {
    !bytes.is_empty()
        && bytes.len() <= MAX_REQUEST_ID_LEN
        && bytes
            .iter()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b':' | b'/' | b'+' | b'='))
}

/// Holds the server span open until the response's status is known.
struct SpanGuard {
    server_span: Option<CallSpan>,
    log_span: tracing::Span,
    /// The call's trace context, for the last log line.
    context: Option<opentelemetry::Context>,
    finished: bool,
}

impl SpanGuard {
    fn finish(&mut self, code: Code) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        if let Some(span) = &mut self.server_span {
            span.set_attribute(KeyValue::new("rpc.grpc.status_code", code as i64));
            if is_server_error(code) {
                span.fail();
            }
        }
        // An access line for operators who turn on debug logs; it carries the trace and request ids.
        // It is written as the body ends, outside the call's future and the context attached there,
        // which is attached again only when the line is written.
        if tracing::enabled!(tracing::Level::DEBUG) {
            let _attached = self.context.clone().map(opentelemetry::Context::attach);
            self.log_span
                .in_scope(|| tracing::debug!(grpc_status = code as i32, "call finished"));
        }
        // Ends the span now, not when the body is dropped.
        self.server_span = None;
    }
}

impl ResponseGuard for SpanGuard {
    fn on_trailers(&mut self, trailers: &HeaderMap) {
        if let Some(value) = trailers.get("grpc-status") {
            let code = value
                .to_str()
                .ok()
                .and_then(|code| code.parse::<i32>().ok())
                .map_or(Code::Unknown, Code::from_i32);
            self.finish(code);
        }
    }
}

impl Drop for SpanGuard {
    fn drop(&mut self) {
        // Dropped before any status: the client cancelled or the connection broke.
        self.finish(Code::Cancelled);
    }
}

/// The codes that mark a server span as failed, per the OpenTelemetry gRPC
/// conventions: the server's own faults, not the caller's mistakes.
pub fn is_server_error(code: Code) -> bool {
    matches!(
        code,
        Code::Unknown | Code::DeadlineExceeded | Code::Unimplemented | Code::Internal | Code::Unavailable | Code::DataLoss
    )
}

#[cfg(test)]
mod tests {
    use suite_tls::PeerIdentity;

    use super::*;

    #[test]
    fn request_ids_are_kept_when_sane_and_replaced_otherwise() {
        let mut headers = HeaderMap::new();
        headers.insert(REQUEST_ID_HEADER, HeaderValue::from_static("req-42.a:b"));
        assert_eq!(
            accept_or_generate_request_id(&mut headers),
            (HeaderValue::from_static("req-42.a:b"), true)
        );

        for bad in ["", "has space", "quote\"", &"x".repeat(MAX_REQUEST_ID_LEN + 1)] {
            let mut headers = HeaderMap::new();
            if let Ok(value) = HeaderValue::from_str(bad) {
                headers.insert(REQUEST_ID_HEADER, value);
            }
            let (generated, accepted) = accept_or_generate_request_id(&mut headers);
            assert!(!accepted);
            assert_ne!(generated, bad);
            assert_eq!(generated.len(), 36, "a UUID");
            assert_eq!(headers.get(REQUEST_ID_HEADER), Some(&generated));
        }
    }

    /// The id comes back to end clients (and whenever the server made it up), not to a
    /// service of the suite that sent it.
    #[tokio::test]
    async fn request_ids_are_echoed_except_to_workloads_that_sent_them() {
        let workload = PeerIdentity {
            caller: "spiffe://suite.local/ns/dev/sa/edge-gateway"
                .parse()
                .unwrap_or_else(|error| panic!("{error}")),
            caller_serial: "01".into(),
            server: "spiffe://suite.local/ns/dev/sa/user-service"
                .parse()
                .unwrap_or_else(|error| panic!("{error}")),
        };
        let echoed = |identity: Option<PeerIdentity>, sent: Option<&'static str>| async move {
            let inner = tower::service_fn(|_request: http::Request<()>| async {
                Ok::<_, std::convert::Infallible>(http::Response::new(tonic::body::Body::empty()))
            });
            let mut service = TraceLayer::new(RemoteTraceContext::Trust, []).layer(inner);
            let mut request = http::Request::new(());
            request.extensions_mut().insert(PeerInfo::new(
                "127.0.0.1:5000".parse().unwrap_or_else(|error| panic!("{error}")),
                identity,
            ));
            if let Some(id) = sent {
                request.headers_mut().insert(REQUEST_ID_HEADER, HeaderValue::from_static(id));
            }
            let response = service.call(request).await.unwrap_or_else(|never| match never {});
            response.headers().get(REQUEST_ID_HEADER).cloned()
        };
        assert_eq!(
            echoed(None, Some("from-client")).await,
            Some(HeaderValue::from_static("from-client"))
        );
        assert_eq!(echoed(Some(workload.clone()), Some("from-gateway")).await, None);
        assert_eq!(
            echoed(Some(workload), None).await.map(|id| id.len()),
            Some(36),
            "made up here: returned"
        );
    }
}
