//! W3C trace context (`traceparent`, `tracestate`) and `baggage` in HTTP/2
//! (gRPC metadata) headers, read on the way in and written on the way out.
//!
//! A fixed propagator rather than OpenTelemetry's global one: the suite always
//! speaks W3C, and in-process test servers propagate without any set-up.

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState};
use opentelemetry_sdk::propagation::BaggagePropagator;

/// The headers that carry trace context; the gateway removes them from calls
/// of clients it does not trust.
pub const CONTEXT_HEADERS: [HeaderName; 3] = [TRACEPARENT, TRACESTATE, BAGGAGE];

const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
const BAGGAGE: HeaderName = HeaderName::from_static("baggage");

/// The remote context (parent span, baggage) a request carries, if any.
///
/// `traceparent` is parsed here, strictly as W3C Trace Context defines it,
/// rather than by the SDK's propagator, which splits the header into a
/// `Vec` and looks each header up by a name it parses again: this runs for
/// every call a traced process serves. `tracestate` and `baggage` are rare
/// and read by the SDK, and only when present.
pub fn extract(headers: &HeaderMap) -> Context {
    Context::map_current(|current| {
        let mut context = match headers.get(TRACEPARENT).and_then(|value| parse_traceparent(value.as_bytes())) {
            Some((trace_id, span_id, flags)) => {
                let state = headers
                    .get(TRACESTATE)
                    .and_then(|value| value.to_str().ok())
                    .and_then(|text| text.parse::<TraceState>().ok())
                    .unwrap_or_default();
                current.with_remote_span_context(SpanContext::new(trace_id, span_id, flags, true, state))
            }
            None => current.clone(),
        };
        if headers.contains_key(BAGGAGE) {
            context = BaggagePropagator::new().extract_with_context(&context, &HeaderReader(headers));
        }
        context
    })
}

/// `<version>-<trace id>-<span id>-<flags>` in lowercase hex: version `00` is
/// exactly that; a later one (up to `fe`) may add fields after another `-`.
/// Ids of all zeros are invalid; of the flags only `sampled` is kept.
fn parse_traceparent(value: &[u8]) -> Option<(TraceId, SpanId, TraceFlags)> {
    const LEN: usize = 55;
    let value = value.trim_ascii();
    let [version_high, version_low, b'-', rest @ ..] = value else {
        return None;
    };
    let [version] = hex_bytes::<1>(&[*version_high, *version_low])?;
    let well_sized = match version {
        0 => value.len() == LEN,
        0xff => false,
        _ => value.len() == LEN || value.get(LEN) == Some(&b'-'),
    };
    if !well_sized || rest[32] != b'-' || rest[49] != b'-' {
        return None;
    }
    let (Some(trace_id), Some(span_id), Some([flags])) = (
        hex_bytes::<16>(&rest[..32]),
        hex_bytes::<8>(&rest[33..49]),
        hex_bytes::<1>(&rest[50..52]),
    ) else {
        return None;
    };
    let (trace_id, span_id) = (TraceId::from_bytes(trace_id), SpanId::from_bytes(span_id));
    if trace_id == TraceId::INVALID || span_id == SpanId::INVALID {
        return None;
    }
    Some((trace_id, span_id, TraceFlags::new(flags) & TraceFlags::SAMPLED))
}

/// `2 * N` lowercase hex digits as `N` bytes. Ids are random, so whether a digit
/// is a number or a letter cannot be predicted: the digits are looked up in a
/// table and checked once at the end, without a branch per digit.
fn hex_bytes<const N: usize>(hex: &[u8]) -> Option<[u8; N]> {
    let mut bytes = [0_u8; N];
    let mut invalid = 0;
    for (byte, pair) in bytes.iter_mut().zip(hex.chunks_exact(2)) {
        let (high, low) = (HEX_VALUES[usize::from(pair[0])], HEX_VALUES[usize::from(pair[1])]);
        invalid |= (high | low) & NOT_HEX;
        *byte = high << 4 | low;
    }
    (invalid == 0 && hex.len() == 2 * N).then_some(bytes)
}

/// Marks a byte that is not a lowercase hex digit in [`HEX_VALUES`].
const NOT_HEX: u8 = 0x10;

/// The value of each lowercase hex digit; [`NOT_HEX`] for every other byte.
const HEX_VALUES: [u8; 256] = {
    let mut values = [NOT_HEX; 256];
    let mut digit = 0;
    while digit < 16 {
        values[b"0123456789abcdef"[digit] as usize] = digit as u8;
        digit += 1;
    }
    values
};

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
    use opentelemetry_sdk::propagation::TraceContextPropagator;

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

    /// Where the SDK's propagator and W3C agree, `extract` finds what the SDK
    /// finds; where the SDK is laxer than W3C, `extract` follows W3C.
    #[test]
    fn traceparent_is_read_as_w3c_defines_it() {
        const ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
        const SPAN: &str = "00f067aa0ba902b7";
        let read = |traceparent: &str, tracestate: Option<&str>| {
            let mut headers = HeaderMap::new();
            headers.insert("traceparent", HeaderValue::from_str(traceparent).unwrap());
            if let Some(state) = tracestate {
                headers.insert("tracestate", HeaderValue::from_str(state).unwrap());
            }
            let ours = extract(&headers).span().span_context().clone();
            let sdk = TraceContextPropagator::new()
                .extract(&HeaderReader(&headers))
                .span()
                .span_context()
                .clone();
            (ours, sdk)
        };
        let both = [
            (format!("00-{ID}-{SPAN}-01"), Some("vendor=abc,other=1")),
            (format!("00-{ID}-{SPAN}-00"), None),
            (format!("00-{ID}-{SPAN}-ff"), None),
            (format!(" 00-{ID}-{SPAN}-01 "), None),
            (format!("00-{ID}-{SPAN}-01"), Some("not a trace state")),
            (format!("01-{ID}-{SPAN}-01-later-fields"), None),
            (format!("fe-{ID}-{SPAN}-01"), None),
            (format!("ff-{ID}-{SPAN}-01"), None),
            (format!("00-{ID}-{SPAN}-01-extra"), None),
            (format!("00-{}-{SPAN}-01", ID.to_uppercase()), None),
            (format!("00-{ID}-{}-01", SPAN.to_uppercase()), None),
            (format!("00-{ID}-{SPAN}-0A"), None),
            (format!("00-{}-{SPAN}-01", "0".repeat(32)), None),
            (format!("00-{ID}-{}-01", "0".repeat(16)), None),
            (format!("0x-{ID}-{SPAN}-01"), None),
            (format!("00-{ID}-{SPAN}"), None),
            ("garbage".to_owned(), None),
            (String::new(), None),
        ];
        for (traceparent, tracestate) in both {
            let (ours, sdk) = read(&traceparent, tracestate);
            assert_eq!(ours, sdk, "{traceparent:?} {tracestate:?}");
        }
        // The SDK accepts ids of any length and a leading `+`; W3C does not.
        for traceparent in [
            format!("00-1-{SPAN}-01"),
            format!("00-{ID}-+0f067aa0ba902b7-01"),
            format!("00-{ID}-{SPAN}-1"),
            format!("01-{ID}-{SPAN}-01x"),
        ] {
            let (ours, _) = read(&traceparent, None);
            assert!(!ours.is_valid(), "{traceparent:?}");
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
