//! Trace context in gRPC metadata, read and written by OpenTelemetry's global
//! `TextMapPropagator`: W3C trace context and baggage by default, as
//! `OTEL_PROPAGATORS` chooses, nothing at all with `none`. [`install`] sets it once
//! per process; a process that never calls it (an in-process test server) has
//! OpenTelemetry's no-op propagator and carries nothing.

use std::sync::OnceLock;

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::Context;
use opentelemetry::propagation::Injector;
use opentelemetry::propagation::{TextMapCompositePropagator, TextMapPropagator};
use opentelemetry_http::HeaderExtractor;
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};

use crate::tracing_config::Propagator;

/// Makes `propagators` the process's global propagator.
pub fn install(propagators: &[Propagator]) {
    let propagator = composite(propagators);
    let mut names = w3c_fields();
    for name in fields_of(&propagator) {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    let _ = CONTEXT_HEADERS.set(names);
    opentelemetry::global::set_text_map_propagator(propagator);
}

/// The headers that carry trace context: the W3C ones whichever propagators this
/// process uses (a hop behind it may read them), and those of the propagators it
/// uses. Parsed once: parsing a name that is not a standard HTTP header allocates,
/// and every traced call writes or strips them.
static CONTEXT_HEADERS: OnceLock<Vec<HeaderName>> = OnceLock::new();

fn context_headers() -> &'static [HeaderName] {
    CONTEXT_HEADERS.get_or_init(w3c_fields)
}

fn w3c_fields() -> Vec<HeaderName> {
    let mut names = fields_of(&TraceContextPropagator::new());
    names.extend(fields_of(&BaggagePropagator::new()));
    names
}

fn fields_of(propagator: &dyn TextMapPropagator) -> Vec<HeaderName> {
    propagator
        .fields()
        .filter_map(|field| HeaderName::from_bytes(field.as_bytes()).ok())
        .collect()
}

fn composite(propagators: &[Propagator]) -> TextMapCompositePropagator {
    let chosen: Vec<Box<dyn TextMapPropagator + Send + Sync>> = propagators
        .iter()
        .map(|propagator| -> Box<dyn TextMapPropagator + Send + Sync> {
            match propagator {
                Propagator::TraceContext => Box::new(TraceContextPropagator::new()),
                Propagator::Baggage => Box::new(BaggagePropagator::new()),
            }
        })
        .collect();
    TextMapCompositePropagator::new(chosen)
}

/// The remote context (parent span, baggage) a request carries, if any. An
/// invalid `traceparent` gives no parent: the request starts a new trace.
pub fn extract(headers: &HeaderMap) -> Context {
    opentelemetry::global::get_text_map_propagator(|propagator| extract_with(propagator, headers))
}

fn extract_with(propagator: &dyn TextMapPropagator, headers: &HeaderMap) -> Context {
    propagator.extract(&HeaderExtractor(headers))
}

/// Writes `context` into `headers`, which carry no trace context of their own: a
/// server removes its caller's ([`strip`]) before a request can be forwarded.
pub fn inject(context: &Context, headers: &mut HeaderMap) {
    opentelemetry::global::get_text_map_propagator(|propagator| inject_with(propagator, context, headers));
}

fn inject_with(propagator: &dyn TextMapPropagator, context: &Context, headers: &mut HeaderMap) {
    propagator.inject_context(context, &mut MetadataInjector(headers));
}

/// Sets what the propagators write, leaving out empty values: the W3C propagator
/// writes `tracestate` even when there is none, and an empty header would only cost
/// every hop a header to encode and decode.
struct MetadataInjector<'a>(&'a mut HeaderMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if value.is_empty() {
            return;
        }
        let known = context_headers().iter().find(|name| name.as_str() == key).cloned();
        let Some(name) = known.or_else(|| HeaderName::from_bytes(key.as_bytes()).ok()) else {
            return;
        };
        // The value's own buffer becomes the header's: no copy.
        if let Ok(value) = HeaderValue::try_from(value) {
            self.0.insert(name, value);
        }
    }
}

/// Removes any trace context from `headers` ([`CONTEXT_HEADERS`]): every server does
/// once it has read (or, from clients it does not trust, ignored) its caller's.
pub fn strip(headers: &mut HeaderMap) {
    for name in context_headers() {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use opentelemetry::baggage::BaggageExt as _;
    use opentelemetry::trace::TraceContextExt as _;

    use super::*;

    const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(name, value)| (HeaderName::from_static(name), HeaderValue::from_static(value)))
            .collect()
    }

    #[test]
    fn the_chosen_propagators_read_and_write_context_and_none_carries_nothing() {
        let incoming = headers(&[
            ("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            ("tracestate", "vendor=abc"),
            ("baggage", "tenant=acme"),
        ]);

        let w3c = composite(&[Propagator::TraceContext, Propagator::Baggage]);
        let context = extract_with(&w3c, &incoming);
        let span = context.span();
        assert!(span.span_context().is_remote() && span.span_context().is_sampled());
        assert_eq!(span.span_context().trace_id().to_string(), TRACE_ID);
        assert_eq!(context.baggage().get("tenant").map(ToString::to_string).as_deref(), Some("acme"));
        let mut outgoing = HeaderMap::new();
        inject_with(&w3c, &context, &mut outgoing);
        assert_eq!(outgoing, incoming);
        // No empty tracestate goes out with a context that has none.
        let mut without_state = incoming.clone();
        without_state.remove("tracestate");
        let mut outgoing = HeaderMap::new();
        inject_with(&w3c, &extract_with(&w3c, &without_state), &mut outgoing);
        assert_eq!(outgoing, without_state);

        // W3C: lowercase hex, version 00 has exactly four fields, ids are never all zeros,
        // version ff is invalid.
        for invalid in [
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "garbage",
        ] {
            let mut bad = HeaderMap::new();
            bad.insert("traceparent", HeaderValue::from_static(invalid));
            assert!(!extract_with(&w3c, &bad).span().span_context().is_valid(), "{invalid}");
        }

        let trace_context_only = composite(&[Propagator::TraceContext]);
        let context = extract_with(&trace_context_only, &incoming);
        assert!(context.span().span_context().is_valid());
        assert!(context.baggage().is_empty(), "baggage is not read without its propagator");

        let none = composite(&[]);
        assert!(!extract_with(&none, &incoming).span().span_context().is_valid());
        let mut outgoing = HeaderMap::new();
        inject_with(&none, &context, &mut outgoing);
        assert!(outgoing.is_empty(), "none writes nothing: {outgoing:?}");
    }

    #[test]
    fn strip_removes_w3c_context_whatever_is_installed() {
        let mut incoming = headers(&[
            ("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            ("tracestate", "vendor=abc"),
            ("baggage", "tenant=acme"),
            ("x-request-id", "kept"),
        ]);
        strip(&mut incoming);
        assert_eq!(incoming, headers(&[("x-request-id", "kept")]));
    }
}
