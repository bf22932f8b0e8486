//! The client half of trace propagation: a channel that opens a client span
//! per outgoing call (OpenTelemetry RPC conventions, kind client), writes its
//! context (through OpenTelemetry's global propagator) and the incoming call's
//! `x-request-id` into the request, and
//! ends the span with the call's gRPC status; it also times every call into
//! `rpc_client_call_duration_seconds`.

use std::task::{Context, Poll};
use std::time::Instant;

use futures::future::{BoxFuture, FutureExt};
use http::HeaderMap;
use opentelemetry::KeyValue;
use opentelemetry::trace::SpanKind;
use suite_telemetry::spans::CallSpan;
use tonic::Code;
use tonic::body::Body;
use tonic::transport::Channel;
use tower::Service;

use super::dependency::{ClientCallLabels, ClientMetrics};
use crate::layers::body::{GuardedBody, ResponseGuard};
use crate::layers::trace::{REQUEST_ID_HEADER, current_request_id};
use crate::methods::MethodNames;

/// A tonic [`Channel`] whose calls carry trace context; use it where a
/// generated client takes a channel.
#[derive(Debug, Clone)]
pub struct TracedChannel {
    inner: Channel,
    /// The dependency's name (`user-service`), the span's `server.address`.
    peer: &'static str,
    metrics: ClientMetrics,
}

impl TracedChannel {
    pub fn new(inner: Channel, peer: &'static str, metrics: &ClientMetrics) -> Self {
        Self {
            inner,
            peer,
            metrics: metrics.clone(),
        }
    }

    /// The channel without the tracing and metrics, for the pool's health probes.
    pub(crate) fn untraced(&self) -> Channel {
        self.inner.clone()
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
        // Generated clients call only the methods of their own service: the path is a known one.
        let mut record = ClientCall::start(self.peer, MethodNames::of_client_path(request.uri().path()), &self.metrics);
        record.inject(request.headers_mut());
        let call = self.inner.call(request);
        async move {
            match call.await {
                Ok(response) => {
                    record.on_trailers(response.headers());
                    Ok(response.map(|body| GuardedBody::wrap(body, record)))
                }
                Err(error) => {
                    record.finish(Code::Unavailable);
                    Err(error)
                }
            }
        }
        .boxed()
    }
}

/// One outgoing call until its status is known: its duration goes into
/// `rpc_client_call_duration_seconds` and, when this process exports traces,
/// it has a client span (a child of the current span) that the callee
/// continues. Ends with the status given to [`ClientCall::finish`], or
/// CANCELLED when dropped without one. Used by [`TracedChannel`] and by
/// callers that drive their own connections (the gateway's proxy).
#[derive(Debug)]
pub struct ClientCall {
    started: Instant,
    metrics: ClientMetrics,
    dependency: &'static str,
    names: MethodNames,
    span: Option<CallSpan>,
    finished: bool,
}

impl ClientCall {
    /// A call of `service`/`method` to `dependency`. The names label a metric
    /// and name a span: pass names from the descriptors (or `unknown`), never
    /// unchecked input, or made-up methods would add series without bound.
    pub fn start(dependency: &'static str, names: MethodNames, metrics: &ClientMetrics) -> Self {
        let span = CallSpan::start_in_current(SpanKind::Client, names.span_name, || {
            // Room for the status code when the call ends.
            let mut attributes = Vec::with_capacity(5);
            attributes.extend([
                KeyValue::new("rpc.system", "grpc"),
                KeyValue::new("rpc.service", names.service),
                KeyValue::new("rpc.method", names.method),
                KeyValue::new("server.address", dependency),
            ]);
            attributes
        });
        Self::with_span(dependency, names, metrics, span)
    }

    /// A call a proxy forwards (the gateway's): timed like any, but without a client
    /// span of its own. The server span of the call it forwards covers it, and is the
    /// parent the upstream continues: one span per hop, as proxies trace.
    pub fn forwarded(dependency: &'static str, names: MethodNames, metrics: &ClientMetrics) -> Self {
        Self::with_span(dependency, names, metrics, None)
    }

    fn with_span(dependency: &'static str, names: MethodNames, metrics: &ClientMetrics, span: Option<CallSpan>) -> Self {
        Self {
            started: Instant::now(),
            metrics: metrics.clone(),
            dependency,
            span,
            names,
            finished: false,
        }
    }

    /// Writes this call's trace context into its outgoing headers: its client span's;
    /// a forwarded call's, the current one (the server span's); without export, the
    /// caller's trace this process continues.
    pub fn inject(&self, headers: &mut HeaderMap) {
        match &self.span {
            Some(span) => suite_telemetry::propagation::inject(span.context(), headers),
            None if suite_telemetry::tracing_enabled() => {
                suite_telemetry::propagation::inject(&opentelemetry::Context::current(), headers);
            }
            None => suite_telemetry::context::inject_untraced(headers),
        }
    }

    pub fn finish(&mut self, code: Code) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        let labels = ClientCallLabels {
            dependency: self.dependency,
            rpc_service: self.names.service,
            rpc_method: self.names.method,
            rpc_grpc_status_code: code as i32,
        };
        self.metrics
            .call_duration
            .get_or_create(&labels)
            .observe(self.started.elapsed().as_secs_f64());
        // Any code but OK marks a client span failed; it ends here, when the status is known.
        if let Some(mut span) = self.span.take() {
            span.set_attribute(KeyValue::new("rpc.grpc.status_code", code as i64));
            if code != Code::Ok {
                span.fail();
            }
        }
    }
}

impl ResponseGuard for ClientCall {
    fn on_trailers(&mut self, trailers: &HeaderMap) {
        if let Some(code) = grpc_status(trailers) {
            self.finish(code);
        }
    }
}

impl Drop for ClientCall {
    fn drop(&mut self) {
        self.finish(Code::Cancelled);
    }
}

fn grpc_status(headers: &HeaderMap) -> Option<Code> {
    let value = headers.get("grpc-status")?;
    Some(
        value
            .to_str()
            .ok()
            .and_then(|code| code.parse::<i32>().ok())
            .map_or(Code::Unknown, Code::from_i32),
    )
}
