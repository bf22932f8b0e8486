//! The client half of trace propagation: a channel that opens a client span
//! per outgoing call (OpenTelemetry RPC conventions, kind client), writes its
//! W3C context and the incoming call's `x-request-id` into the request, and
//! ends the span with the call's gRPC status.

use std::task::{Context, Poll};

use futures::future::{BoxFuture, FutureExt};
use http::HeaderMap;
use tonic::Code;
use tonic::body::Body;
use tonic::transport::Channel;
use tower::Service;
use tracing::Instrument as _;
use tracing::field::Empty;

use crate::layers::body::{GuardedBody, ResponseGuard};
use crate::layers::trace::{REQUEST_ID_HEADER, current_request_id};

/// A tonic [`Channel`] whose calls carry trace context; use it where a
/// generated client takes a channel.
#[derive(Debug, Clone)]
pub struct TracedChannel {
    inner: Channel,
    /// The dependency's name (`user-service`), the span's `server.address`.
    peer: &'static str,
}

impl TracedChannel {
    pub fn new(inner: Channel, peer: &'static str) -> Self {
        Self { inner, peer }
    }
}

impl Service<http::Request<Body>> for TracedChannel {
    type Response = http::Response<Body>;
    type Error = tonic::transport::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Service::<http::Request<Body>>::poll_ready(&mut self.inner, cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        if let Some(request_id) = current_request_id() {
            request.headers_mut().insert(REQUEST_ID_HEADER, request_id);
        }
        let Some(mut span) = ClientCallSpan::start(request.uri().path(), self.peer) else {
            return self.inner.call(request).boxed();
        };
        span.inject(request.headers_mut());
        let instrumented = span.span.clone();
        let call = self.inner.call(request);
        async move {
            match call.await {
                Ok(response) => {
                    span.on_trailers(response.headers());
                    Ok(response.map(|body| GuardedBody::wrap(body, span)))
                }
                Err(error) => {
                    span.finish(Code::Unavailable);
                    Err(error)
                }
            }
        }
        .instrument(instrumented)
        .boxed()
    }
}

/// The client span of one outgoing call, for callers that drive their own
/// connections (the gateway's proxy); ends with the status given to
/// [`ClientCallSpan::finish`], or CANCELLED when dropped without one.
/// Any code but OK marks a client span as failed.
#[derive(Debug)]
pub struct ClientCallSpan {
    span: tracing::Span,
    finished: bool,
}

impl ClientCallSpan {
    /// A child of the current span for a call of `path` (`/package.Service/Method`)
    /// to `peer`; `None` when this process exports no traces, so an untraced
    /// process pays nothing per call.
    pub fn start(path: &str, peer: &str) -> Option<Self> {
        if !suite_telemetry::tracing_enabled() {
            return None;
        }
        let (service, method) = path
            .strip_prefix('/')
            .and_then(|rest| rest.split_once('/'))
            .unwrap_or(("unknown", "unknown"));
        let span = tracing::info_span!(
            "grpc.client",
            otel.name = %format_args!("{service}/{method}"),
            otel.kind = "client",
            otel.status_code = Empty,
            rpc.system = "grpc",
            rpc.service = service,
            rpc.method = method,
            rpc.grpc.status_code = Empty,
            server.address = peer,
        );
        Some(Self { span, finished: false })
    }

    /// Writes this span's context into the outgoing call's headers.
    pub fn inject(&self, headers: &mut HeaderMap) {
        suite_telemetry::propagation::inject_span(&self.span, headers);
    }

    pub fn finish(&mut self, code: Code) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        self.span.record("rpc.grpc.status_code", code as i32);
        if code != Code::Ok {
            self.span.record("otel.status_code", "error");
        }
    }
}

impl ResponseGuard for ClientCallSpan {
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

impl Drop for ClientCallSpan {
    fn drop(&mut self) {
        self.finish(Code::Cancelled);
    }
}
