//! W3C trace context (`traceparent`, `tracestate`) and `baggage` in HTTP/2
//! (gRPC metadata) headers, read on the way in and written on the way out.
//!
//! A fixed propagator rather than OpenTelemetry's global one: the suite always
//! speaks W3C, and in-process test servers propagate without any set-up.

use std::sync::LazyLock;

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector, TextMapCompositePropagator, TextMapPropagator};
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};

/// The headers that carry trace context; the gateway removes them from calls
/// of clients it does not trust.
pub const CONTEXT_HEADERS: [&str; 3] = ["traceparent", "tracestate", "baggage"];

static PROPAGATOR: LazyLock<TextMapCompositePropagator> =
    LazyLock::new(|| TextMapCompositePropagator::new(vec![Box::new(TraceContextPropagator::new()), Box::new(BaggagePropagator::new())]));

/// The remote context (parent span, baggage) a request carries, if any.
pub fn extract(headers: &HeaderMap) -> Context {
    PROPAGATOR.extract(&HeaderReader(headers))
}

/// Writes `context` into `headers`, replacing whatever trace context they held.
pub fn inject(context: &Context, headers: &mut HeaderMap) {
    for name in CONTEXT_HEADERS {
        headers.remove(name);
    }
    PROPAGATOR.inject_context(context, &mut HeaderWriter(headers));
}

/// Removes any trace context from `headers`.
pub fn strip(headers: &mut HeaderMap) {
    for name in CONTEXT_HEADERS {
        headers.remove(name);
    }
}

struct HeaderReader<'a>(&'a HeaderMap);

impl Extractor for HeaderReader<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

struct HeaderWriter<'a>(&'a mut HeaderMap);

impl Injector for HeaderWriter<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(mut value)) = (HeaderName::from_bytes(key.as_bytes()), HeaderValue::from_str(&value)) {
            // New on every call: HPACK should send it as a literal, not add it to the
            // connection's header table, where it would only push out headers that repeat.
            value.set_sensitive(true);
            self.0.insert(name, value);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use opentelemetry::baggage::BaggageExt as _;
    use opentelemetry::trace::TraceContextExt as _;

    use super::*;

    #[test]
    fn context_round_trips_through_headers() {
        let mut incoming = HeaderMap::new();
        incoming.insert(
            "traceparent",
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        );
        incoming.insert("tracestate", HeaderValue::from_static("vendor=abc"));
        incoming.insert("baggage", HeaderValue::from_static("tenant=acme"));
        let context = extract(&incoming);
        let span = context.span();
        let ids = span.span_context();
        assert!(ids.is_remote() && ids.is_sampled());
        assert_eq!(ids.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(context.baggage().get("tenant").map(ToString::to_string).as_deref(), Some("acme"));

        let mut outgoing = HeaderMap::new();
        outgoing.insert("traceparent", HeaderValue::from_static("00-stale"));
        inject(&context, &mut outgoing);
        assert_eq!(outgoing.get("traceparent"), incoming.get("traceparent"));
        assert_eq!(outgoing.get("tracestate"), incoming.get("tracestate"));
        assert_eq!(outgoing.get("baggage").unwrap(), "tenant=acme");
    }

    #[test]
    fn malformed_traceparent_gives_no_parent() {
        let mut incoming = HeaderMap::new();
        incoming.insert(
            "traceparent",
            HeaderValue::from_static("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
        );
        assert!(!extract(&incoming).has_active_span());
        let mut outgoing = incoming.clone();
        strip(&mut outgoing);
        assert!(outgoing.is_empty());
    }
}
