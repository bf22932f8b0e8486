//! Properties of the suite's trace context handling around OpenTelemetry's
//! propagators (`propagation::{extract, inject, strip}`, `context::untraced_request`):
//! whatever `traceparent`, `tracestate` and `baggage` a caller sends, nothing
//! panics, a context that was read goes on to the next hop unchanged, one that
//! was not is never made up, and stripping leaves no context header behind.
//!
//! Cases per property: `PROPTEST_CASES` (10,000, set in `.cargo/config.toml`).

use std::collections::BTreeMap;
use std::sync::Once;

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::Context;
use opentelemetry::baggage::BaggageExt as _;
use opentelemetry::trace::{TraceContextExt as _, TraceFlags};
use proptest::prelude::*;
use suite_telemetry::context::{current_ids, inject_untraced, untraced_request};
use suite_telemetry::{Propagator, propagation};

const CONTEXT_HEADERS: [&str; 3] = ["traceparent", "tracestate", "baggage"];

fn install() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| propagation::install(&[Propagator::TraceContext, Propagator::Baggage]));
}

/// Any bytes a header value may carry (anything but controls other than tab).
fn header_bytes(max: usize) -> impl Strategy<Value = HeaderValue> {
    prop::collection::vec(prop_oneof![4 => 0x20_u8..0x7f, 1 => 0x80_u8..=0xff, 1 => Just(b'\t')], 0..max)
        .prop_filter_map("not a header value", |bytes| HeaderValue::from_bytes(&bytes).ok())
}

fn text_value(text: String) -> Option<HeaderValue> {
    HeaderValue::from_str(&text).ok()
}

fn hex(length: usize) -> impl Strategy<Value = String> {
    prop_oneof![
        8 => prop::collection::vec(prop::sample::select(b"0123456789abcdef".to_vec()), length),
        1 => prop::collection::vec(prop::sample::select(b"0123456789ABCDEFxyz- ".to_vec()), length.saturating_sub(1)..=length + 1),
        1 => Just(vec![b'0'; length]),
        1 => Just(vec![b'f'; length]),
    ]
    .prop_map(|bytes| String::from_utf8(bytes).unwrap_or_default())
}

/// `traceparent`: W3C-shaped (every part sometimes bent), or any bytes.
fn traceparent() -> impl Strategy<Value = Option<HeaderValue>> {
    let shaped = (
        hex(2),
        hex(32),
        hex(16),
        hex(2),
        prop_oneof![6 => Just(String::new()), 1 => "-[0-9a-z]{0,4}|-|[ \t]"],
    )
        .prop_map(|(version, trace, span, flags, tail)| format!("{version}-{trace}-{span}-{flags}{tail}"));
    prop::option::weighted(
        0.9,
        prop_oneof![5 => shaped.prop_filter_map("not a header value", text_value), 1 => header_bytes(70)],
    )
}

/// `tracestate`: key=value members (sometimes malformed), or any bytes.
fn tracestate() -> impl Strategy<Value = Option<HeaderValue>> {
    let member = prop_oneof![
        4 => ("[a-z][a-z0-9_*/-]{0,6}(@[a-z][a-z0-9_*/-]{0,4})?", "[!-+--<>-~]{1,10}").prop_map(|(key, value)| format!("{key}={value}")),
        1 => "[ -~]{0,12}",
    ];
    prop::option::of(prop_oneof![
        4 => prop::collection::vec(member, 0..6).prop_filter_map("not a header value", |members| text_value(members.join(","))),
        1 => header_bytes(70),
    ])
}

/// `baggage`: key=value;property lists, percent-encoded or not (sometimes malformed), or any bytes.
fn baggage() -> impl Strategy<Value = Option<HeaderValue>> {
    let member = prop_oneof![
        4 => ("[A-Za-z0-9!#$&'*+.^_`|~-]{1,8}", "([A-Za-z0-9!#$&'()*+./:<>?@^_`{|}~-]|%[0-9A-Fa-f]{2}|%){0,8}", "(;[a-z]{1,4}(=[a-z0-9]{0,4})?){0,2}")
            .prop_map(|(key, value, properties)| format!(" {key} = {value}{properties} ")),
        1 => "[ -~]{0,12}",
    ];
    prop::option::of(prop_oneof![
        4 => prop::collection::vec(member, 0..6).prop_filter_map("not a header value", |members| text_value(members.join(","))),
        1 => header_bytes(70),
    ])
}

/// Headers that are not trace context, which must pass untouched.
fn other_headers() -> impl Strategy<Value = Vec<(HeaderName, HeaderValue)>> {
    prop::collection::vec(
        (
            "x-[a-z0-9-]{1,10}|content-type|te|authorization|trace-parent|baggages",
            header_bytes(16),
        )
            .prop_filter_map("not a header name", |(name, value)| {
                Some((HeaderName::from_bytes(name.as_bytes()).ok()?, value))
            }),
        0..3,
    )
}

fn request_headers(
    traceparent: &Option<HeaderValue>,
    tracestate: &Option<HeaderValue>,
    baggage: &Option<HeaderValue>,
    others: &[(HeaderName, HeaderValue)],
) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in others {
        headers.append(name.clone(), value.clone());
    }
    for (name, value) in CONTEXT_HEADERS.into_iter().zip([traceparent, tracestate, baggage]) {
        if let Some(value) = value {
            headers.insert(name, value.clone());
        }
    }
    headers
}

/// A context's baggage, comparable.
fn baggage_of(context: &Context) -> BTreeMap<String, (String, String)> {
    context
        .baggage()
        .iter()
        .map(|(key, (value, metadata))| (key.to_string(), (value.to_string(), metadata.as_str().to_owned())))
        .collect()
}

proptest! {
    #[test]
    fn what_is_read_goes_on_unchanged_and_nothing_is_made_up(
        traceparent in traceparent(),
        tracestate in tracestate(),
        baggage in baggage(),
        others in other_headers(),
    ) {
        install();
        let incoming = request_headers(&traceparent, &tracestate, &baggage, &others);
        let context = propagation::extract(&incoming);
        let span = context.span();
        let read = span.span_context();

        let mut outgoing = HeaderMap::new();
        propagation::inject(&context, &mut outgoing);
        for (name, value) in &outgoing {
            prop_assert!(CONTEXT_HEADERS.contains(&name.as_str()), "injected {:?}", name);
            prop_assert!(!value.is_empty(), "injected an empty {:?}", name);
        }
        prop_assert_eq!(outgoing.contains_key("traceparent"), read.is_valid(), "{:?} -> {:?}", incoming, outgoing);
        if read.is_valid() {
            prop_assert!(read.is_remote());
            // How strictly a traceparent is read is OpenTelemetry's (it takes ids shorter than
            // W3C's 32 and 16 hex digits); that one was sent is the suite's.
            prop_assert!(traceparent.is_some(), "a trace context read from no traceparent");
        }

        let again = propagation::extract(&outgoing);
        let again_span = again.span();
        let passed = again_span.span_context();
        prop_assert_eq!(passed.is_valid(), read.is_valid());
        if read.is_valid() {
            prop_assert_eq!(passed.trace_id(), read.trace_id());
            prop_assert_eq!(passed.span_id(), read.span_id());
            prop_assert_eq!(passed.trace_flags() & TraceFlags::SAMPLED, read.trace_flags() & TraceFlags::SAMPLED);
            prop_assert_eq!(passed.trace_state().header(), read.trace_state().header());
        }
        // OpenTelemetry's baggage propagator writes a value's '%' as it is rather than as "%25"
        // (W3C: it must be encoded), so the next hop decodes such a value again
        // (or drops it, when it no longer decodes to UTF-8): such entries are left out of the
        // comparison. Every other entry goes on unchanged, and none is made up.
        let (read_baggage, passed_baggage) = (baggage_of(&context), baggage_of(&again));
        for key in passed_baggage.keys() {
            prop_assert!(read_baggage.contains_key(key), "baggage {:?} made up", key);
        }
        for (key, read_entry) in &read_baggage {
            if !read_entry.0.contains('%') {
                prop_assert_eq!(Some(read_entry), passed_baggage.get(key), "baggage {:?} -> {:?}", baggage, outgoing.get("baggage"));
            }
        }
    }

    #[test]
    fn strip_removes_every_context_header_and_nothing_else(
        traceparent in traceparent(),
        tracestate in tracestate(),
        baggage in baggage(),
        others in other_headers(),
    ) {
        install();
        let mut headers = request_headers(&traceparent, &tracestate, &baggage, &others);
        let mut expected = headers.clone();
        for name in CONTEXT_HEADERS {
            expected.remove(name);
        }
        propagation::strip(&mut headers);
        prop_assert_eq!(headers, expected);
    }

    #[test]
    fn an_untraced_request_continues_a_valid_caller_trace_and_otherwise_starts_its_own(
        traceparent in traceparent(),
        tracestate in tracestate(),
        baggage in baggage(),
        trusted in any::<bool>(),
    ) {
        install();
        let caller = propagation::extract(&request_headers(&traceparent, &tracestate, &baggage, &[]));
        let caller_span = caller.span();
        let parent = caller_span.span_context().clone();
        let continues = trusted && parent.is_valid();

        let context = untraced_request(trusted.then(|| caller.clone()));
        let own_span = context.span();
        let own = own_span.span_context().clone();
        prop_assert!(own.is_valid());
        let _attached = context.clone().attach();
        prop_assert_eq!(current_ids(), Some((own.trace_id(), own.span_id())));
        let mut outgoing = HeaderMap::new();
        inject_untraced(&mut outgoing);
        if continues {
            prop_assert_eq!(own.trace_id(), parent.trace_id());
            prop_assert_ne!(own.span_id(), parent.span_id());
            prop_assert_eq!(own.trace_flags(), parent.trace_flags());
            prop_assert_eq!(own.trace_state().header(), parent.trace_state().header());
            prop_assert_eq!(baggage_of(&context), baggage_of(&caller));
            let sent = outgoing.get("traceparent").and_then(|value| value.to_str().ok()).unwrap_or_default();
            prop_assert!(sent.contains(&format!("-{}-{}-", own.trace_id(), own.span_id())), "sent {:?}", sent);
        } else {
            prop_assert_ne!(own.trace_id(), parent.trace_id());
            prop_assert!(!own.trace_flags().is_sampled());
            prop_assert!(context.baggage().is_empty(), "baggage without a trusted trace was kept");
            prop_assert!(outgoing.is_empty(), "a log-only trace was passed on: {:?}", outgoing);
        }
    }
}
