//! The trace context a request is served in, and keeping it across tasks.
//!
//! With export on, each request's server span ([`crate::spans::CallSpan`])
//! carries the context, which the server attaches to the request's future.
//! With export off no span is built, yet every log line written while serving
//! a request still needs a `trace_id` and `span_id`, and a trusted caller's
//! trace must go on to the next hop, so logs of every hop can be joined:
//! [`untraced_request`] makes that context without building a span.

use std::future::Future;

use http::HeaderMap;
use opentelemetry::Context;
use opentelemetry::context::{FutureExt as _, WithContext};
use opentelemetry::trace::{SpanContext, TraceContextExt as _, TraceState};
use opentelemetry_sdk::trace::{IdGenerator as _, RandomIdGenerator};
use tracing::Instrument as _;
use tracing::instrument::Instrumented;

use crate::propagation;

/// Marks a trace started here for this process's logs only. It is not passed
/// on: the next hop decides for itself whether to trace, exactly as if this
/// hop were not there (a made-up "sampled" parent would leave a hole in its
/// trace; an "unsampled" one would stop it from tracing at all).
#[derive(Debug)]
struct LogOnly;

/// The context of a request served without span export. When a trusted
/// caller's context (see [`propagation::extract`]) carries a trace, that trace
/// continues under a new span id (and its flags, trace state and baggage go on
/// to the next hop); otherwise a new trace id names the request in this
/// process's logs.
pub fn untraced_request(trusted_caller: Option<Context>) -> Context {
    let ids = RandomIdGenerator::default();
    if let Some(caller) = trusted_caller {
        let parent = caller.span().span_context().clone();
        if parent.is_valid() {
            let own = SpanContext::new(
                parent.trace_id(),
                ids.new_span_id(),
                parent.trace_flags(),
                false,
                parent.trace_state().clone(),
            );
            return caller.with_remote_span_context(own);
        }
    }
    let own = SpanContext::new(
        ids.new_trace_id(),
        ids.new_span_id(),
        opentelemetry::trace::TraceFlags::NOT_SAMPLED,
        false,
        TraceState::NONE,
    );
    Context::new().with_remote_span_context(own).with_value(LogOnly)
}

/// Writes the current context into outgoing `headers` when it is a caller's
/// trace this process continues without exporting; a log-only trace is not
/// passed on. With export on, client spans inject their own context instead.
pub fn inject_untraced(headers: &mut HeaderMap) {
    let current = Context::current();
    if current.span().span_context().is_valid() && current.get::<LogOnly>().is_none() {
        propagation::inject(&current, headers);
    }
}

/// The trace id and span id log lines written now should carry, if any.
pub fn current_ids() -> Option<(opentelemetry::TraceId, opentelemetry::SpanId)> {
    Context::map_current(|context| {
        let span = context.span();
        let ids = span.span_context();
        ids.is_valid().then(|| (ids.trace_id(), ids.span_id()))
    })
}

/// `future` bound to the current span and trace context, wherever it is
/// polled: for work a request hands to another task, so that task's log lines
/// and spans stay in the request's trace. A plain `tokio::spawn` starts with
/// neither.
pub fn in_current_context<F: Future>(future: F) -> WithContext<Instrumented<F>> {
    future.in_current_span().with_current_context()
}

/// `tokio::spawn` of `future` in the current span and trace context.
pub fn spawn_in_current_context<F>(future: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(in_current_context(future))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use http::HeaderValue;
    use opentelemetry::baggage::BaggageExt as _;
    use opentelemetry::trace::TracerProvider as _;
    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;

    const CALLER: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    /// The request's headers, read by the default propagators (W3C trace context and
    /// baggage), which every test of this crate that installs any installs.
    fn caller_headers() -> HeaderMap {
        propagation::install(&[crate::Propagator::TraceContext, crate::Propagator::Baggage]);
        let mut headers = HeaderMap::new();
        headers.insert("traceparent", HeaderValue::from_static(CALLER));
        headers.insert("baggage", HeaderValue::from_static("tenant=acme"));
        headers
    }

    #[test]
    fn a_trusted_callers_trace_continues_under_a_new_span_and_goes_on() {
        let context = untraced_request(Some(propagation::extract(&caller_headers())));
        let _attached = context.attach();
        let (trace_id, span_id) = current_ids().unwrap();
        assert_eq!(trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_ne!(span_id.to_string(), "00f067aa0ba902b7", "this hop has its own span id");

        let mut outgoing = HeaderMap::new();
        inject_untraced(&mut outgoing);
        let sent = outgoing.get("traceparent").unwrap().to_str().unwrap();
        assert_eq!(sent, format!("00-4bf92f3577b34da6a3ce929d0e0e4736-{span_id}-01"));
        assert_eq!(outgoing.get("baggage").unwrap(), "tenant=acme");
    }

    #[test]
    fn without_a_caller_trace_the_logs_get_one_that_is_not_passed_on() {
        for caller in [None, Some(propagation::extract(&HeaderMap::new()))] {
            let context = untraced_request(caller);
            let _attached = context.attach();
            let (trace_id, span_id) = current_ids().unwrap();
            assert_ne!(trace_id, opentelemetry::TraceId::INVALID);
            assert_ne!(span_id, opentelemetry::SpanId::INVALID);
            let mut outgoing = HeaderMap::new();
            inject_untraced(&mut outgoing);
            assert!(outgoing.is_empty(), "{outgoing:?}");
        }
        // Untrusted callers' headers are never read: the gateway passes None.
        let context = untraced_request(None);
        assert!(context.baggage().is_empty());
        assert_ne!(
            context.span().span_context().trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
    }

    /// Spawned work keeps the request's context, with export off and on; a plain spawn does not.
    #[test]
    fn spawned_work_stays_in_the_request_context() {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();

        // Export off: the context made for the logs.
        runtime.block_on(async {
            let request = untraced_request(Some(propagation::extract(&caller_headers())));
            let expected = request.span().span_context().trace_id();
            async {
                let kept = spawn_in_current_context(async { current_ids() }).await.unwrap();
                assert_eq!(kept.map(|(trace_id, _)| trace_id), Some(expected));
                let lost = tokio::spawn(async { current_ids() }).await.unwrap();
                assert_eq!(lost, None);
            }
            .with_context(request)
            .await;
        });

        // Export on: the server span's context, through the tracing-opentelemetry layer.
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, || {
            runtime.block_on(async {
                let span = tracing::info_span!("grpc.server");
                async {
                    let expected = current_ids().unwrap();
                    let kept = spawn_in_current_context(async { current_ids() }).await.unwrap();
                    assert_eq!(kept.map(|(trace_id, _)| trace_id), Some(expected.0));
                    let lost = tokio::spawn(async { current_ids() }).await.unwrap();
                    assert_ne!(lost.map(|(trace_id, _)| trace_id), Some(expected.0));
                }
                .instrument(span)
                .await;
            });
        });
    }
}
