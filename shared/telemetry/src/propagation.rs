//! W3C trace context (`traceparent`, `tracestate`) and `baggage` in HTTP/2
//! (gRPC metadata) headers, read on the way in and written on the way out.
//!
//! A fixed propagator rather than OpenTelemetry's global one: the suite always
//! speaks W3C, and in-process test servers propagate without any set-up.

use std::sync::LazyLock;

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector, TextMapCompositePropagator, TextMapPropagator};
use opentelemetry::trace::{SpanContext, TraceContextExt as _, TraceFlags};
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
///
/// `traceparent` is written here rather than by the SDK's propagator, which
/// formats a `String`, parses the header name and copies both again: this runs
/// for every call a traced process makes. `tracestate` and `baggage` are rare
/// and left to the propagators.
pub fn inject(context: &Context, headers: &mut HeaderMap) {
    strip(headers);
    let span = context.span();
    let span_context = span.span_context();
    if span_context.is_valid() {
        if let Ok(value) = HeaderValue::from_bytes(&traceparent(span_context)) {
            insert_literal(headers, TRACEPARENT, value);
        }
        let state = span_context.trace_state().header();
        if !state.is_empty() {
            HeaderWriter(headers).set("tracestate", state);
        }
    }
    BaggagePropagator::new().inject_context(context, &mut HeaderWriter(headers));
}

const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// `00-<trace id>-<span id>-<flags>`, in lowercase hex.
fn traceparent(span_context: &SpanContext) -> [u8; 55] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    fn hex(out: &mut [u8], bytes: &[u8]) {
        for (pair, byte) in out.chunks_exact_mut(2).zip(bytes) {
            pair[0] = HEX[usize::from(byte >> 4)];
            pair[1] = HEX[usize::from(byte & 0x0f)];
        }
    }
    let mut text = *b"00-00000000000000000000000000000000-0000000000000000-00";
    hex(&mut text[3..35], &span_context.trace_id().to_bytes());
    hex(&mut text[36..52], &span_context.span_id().to_bytes());
    // Version 00 defines the sampled flag only; others are not passed on (as the SDK does).
    hex(&mut text[53..55], &[(span_context.trace_flags() & TraceFlags::SAMPLED).to_u8()]);
    text
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
        if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(key.as_bytes()), HeaderValue::from_str(&value)) {
            insert_literal(self.0, name, value);
        }
    }
}

/// Context headers are new on every call: HPACK should send them as literals, not
/// add them to the connection's header table, where they would only push out
/// headers that repeat.
fn insert_literal(headers: &mut HeaderMap, name: HeaderName, mut value: HeaderValue) {
    value.set_sensitive(true);
    headers.insert(name, value);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::HashMap;

    use opentelemetry::baggage::BaggageExt as _;

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

    /// The hand-written `traceparent` is the one the SDK's propagator writes.
    #[test]
    fn traceparent_is_written_as_the_sdk_writes_it() {
        use opentelemetry::trace::{SpanId, TraceId, TraceState};
        for (trace_id, span_id, flags) in [
            (
                0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736_u128,
                0x00f0_67aa_0ba9_02b7_u64,
                TraceFlags::SAMPLED,
            ),
            (1, u64::MAX, TraceFlags::NOT_SAMPLED),
            (u128::MAX, 1, TraceFlags::new(0xff)),
        ] {
            let span_context = SpanContext::new(TraceId::from(trace_id), SpanId::from(span_id), flags, false, TraceState::NONE);
            let context = Context::new().with_remote_span_context(span_context);
            let mut ours = HeaderMap::new();
            inject(&context, &mut ours);
            let mut sdk = HashMap::new();
            TraceContextPropagator::new().inject_context(&context, &mut sdk);
            assert_eq!(ours.get("traceparent").unwrap().to_str().unwrap(), sdk["traceparent"]);
            assert!(ours.get("tracestate").is_none(), "no empty tracestate on the wire: {ours:?}");
        }
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
