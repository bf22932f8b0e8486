//! OTLP/gRPC span export: finished spans are written straight into the
//! protobuf bytes of `opentelemetry.proto.trace.v1.Span` messages as they end
//! ([`encode_span`]), queued as bytes, and framed as an
//! `ExportTraceServiceRequest` per batch ([`frame_request`]) that goes out as it is.
//!
//! opentelemetry-otlp's exporter first copies every span into the generated
//! protobuf structs (an allocation per attribute key, value and id), then has
//! prost measure and write them; measured in the gateway benchmark, that was
//! most of the CPU the export threads took. Here a span is written once, the
//! resource and scope once per process, and the request goes out from the
//! buffer the spans were written into, on a lazy tonic channel.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::BodyExt as _;
use opentelemetry::trace::{Event, Link, SpanContext, SpanId, SpanKind, Status};
use opentelemetry::{Array, InstrumentationScope, KeyValue, Value};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SpanData;
use tonic::transport::Channel;
use tower::{Service as _, ServiceExt as _};

const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// Sends framed requests to a collector's TraceService.
///
/// The request is one buffer already in gRPC framing ([`frame_request`]), so
/// it goes to the channel as an HTTP body of that one buffer: tonic's codec
/// would copy it once more into a buffer of its own.
#[derive(Debug, Clone)]
pub(crate) struct OtlpExporter {
    channel: Channel,
}

impl OtlpExporter {
    pub(crate) fn new(channel: Channel) -> Self {
        Self { channel }
    }

    /// Sends one request framed by [`frame_request`]; the (empty) response is not read.
    pub(crate) async fn send(&self, message: Bytes) -> Result<(), String> {
        let mut channel = self.channel.clone();
        let mut request = http::Request::new(tonic::body::Body::new(http_body_util::Full::new(message)));
        *request.method_mut() = http::Method::POST;
        *request.uri_mut() = http::Uri::from_static(EXPORT_PATH);
        let headers = request.headers_mut();
        headers.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/grpc"));
        headers.insert(http::header::TE, http::HeaderValue::from_static("trailers"));
        let unreachable = |error: tonic::transport::Error| format!("collector unreachable: {error}");
        channel.ready().await.map_err(unreachable)?;
        let response = channel.call(request).await.map_err(unreachable)?;
        if response.status() != http::StatusCode::OK {
            return Err(format!("export refused: HTTP status {}", response.status()));
        }
        // A refusal usually comes trailers-only, its status in the headers.
        if let Some(status) = tonic::Status::from_header_map(response.headers()) {
            return export_outcome(&status);
        }
        let trailers = response
            .into_body()
            .collect()
            .await
            .map_err(|status| format!("export refused: {status}"))?
            .trailers()
            .and_then(tonic::Status::from_header_map);
        match trailers {
            Some(status) => export_outcome(&status),
            None => Err("export refused: the collector's answer had no gRPC status".to_owned()),
        }
    }
}

/// What the collector's gRPC status says of an export: OK, or why it was refused.
fn export_outcome(status: &tonic::Status) -> Result<(), String> {
    if status.code() == tonic::Code::Ok {
        Ok(())
    } else {
        Err(format!("export refused: {:?} {:?}", status.code(), status.message()))
    }
}

/// The parts of every request that never change in a process: the `Resource`
/// and `InstrumentationScope` messages (and their schema URLs), encoded once.
#[derive(Debug, Clone, Default)]
pub(crate) struct Envelope {
    resource: Vec<u8>,
    resource_schema_url: String,
    scope: Vec<u8>,
    scope_schema_url: String,
}

impl Envelope {
    pub(crate) fn new(resource: &Resource, scope: &InstrumentationScope) -> Self {
        let mut encoded_resource = Vec::new();
        for (key, value) in resource.iter() {
            key_value_field(&mut encoded_resource, 1, key.as_str(), value);
        }
        let mut encoded_scope = Vec::new();
        string(&mut encoded_scope, 1, scope.name());
        string(&mut encoded_scope, 2, scope.version().unwrap_or_default());
        for attribute in scope.attributes() {
            key_value_field(&mut encoded_scope, 3, attribute.key.as_str(), &attribute.value);
        }
        Self {
            resource: encoded_resource,
            resource_schema_url: resource.schema_url().unwrap_or_default().to_owned(),
            scope: encoded_scope,
            scope_schema_url: scope.schema_url().unwrap_or_default().to_owned(),
        }
    }
}

/// Bytes to keep in front of a batch's spans for [`frame_request`]: the gRPC
/// message prefix, and the envelope with the two lengths around the spans
/// (at most ten bytes of varint each).
pub(crate) fn request_room(envelope: &Envelope) -> usize {
    GRPC_PREFIX_LEN + 2 * (1 + MAX_VARINT_LEN) + field_len(1, envelope.resource.len()) + field_len(1, envelope.scope.len())
}

/// The gRPC message of one `ExportTraceServiceRequest` (one `ResourceSpans`
/// holding one `ScopeSpans`) around the spans of `batch`, each written by
/// [`encode_span`] after the first `room` bytes ([`request_room`]). The
/// framing is written into that room, just in front of the spans, so the
/// spans are never copied: the message goes out from where they were encoded.
pub(crate) fn frame_request(envelope: &Envelope, mut batch: Vec<u8>, room: usize) -> Bytes {
    let spans_len = batch.len() - room;
    let scope_spans_len = field_len(1, envelope.scope.len()) + spans_len + string_len(3, &envelope.scope_schema_url);
    let resource_spans_len =
        field_len(1, envelope.resource.len()) + field_len(2, scope_spans_len) + string_len(3, &envelope.resource_schema_url);
    let request_len = field_len(1, resource_spans_len);

    let mut prefix = Vec::with_capacity(room);
    // Not compressed, then the message's length: the gRPC message prefix.
    prefix.push(0);
    prefix.extend_from_slice(&u32::try_from(request_len).unwrap_or(u32::MAX).to_be_bytes());
    length_prefix(&mut prefix, 1, resource_spans_len);
    bytes(&mut prefix, 1, &envelope.resource);
    length_prefix(&mut prefix, 2, scope_spans_len);
    bytes(&mut prefix, 1, &envelope.scope);
    let start = room - prefix.len();
    batch[start..room].copy_from_slice(&prefix);
    string(&mut batch, 3, &envelope.scope_schema_url);
    string(&mut batch, 3, &envelope.resource_schema_url);
    Bytes::from(batch).slice(start..)
}

const GRPC_PREFIX_LEN: usize = 5;
const MAX_VARINT_LEN: usize = 10;

/// One finished span, whoever recorded it: the fields of an OTLP `Span`.
#[derive(Debug)]
pub(crate) struct FinishedSpan<'a> {
    pub(crate) context: &'a SpanContext,
    pub(crate) parent_span_id: SpanId,
    pub(crate) parent_is_remote: bool,
    pub(crate) name: &'a str,
    pub(crate) kind: &'a SpanKind,
    pub(crate) start_time: SystemTime,
    pub(crate) end_time: SystemTime,
    pub(crate) attributes: &'a [KeyValue],
    pub(crate) dropped_attributes_count: u32,
    pub(crate) events: &'a [Event],
    pub(crate) dropped_events_count: u32,
    pub(crate) links: &'a [Link],
    pub(crate) dropped_links_count: u32,
    pub(crate) status: &'a Status,
}

impl<'a> From<&'a SpanData> for FinishedSpan<'a> {
    fn from(span: &'a SpanData) -> Self {
        Self {
            context: &span.span_context,
            parent_span_id: span.parent_span_id,
            parent_is_remote: span.parent_span_is_remote,
            name: &span.name,
            kind: &span.span_kind,
            start_time: span.start_time,
            end_time: span.end_time,
            attributes: &span.attributes,
            dropped_attributes_count: span.dropped_attributes_count,
            events: &span.events.events,
            dropped_events_count: span.events.dropped_count,
            links: &span.links.links,
            dropped_links_count: span.links.dropped_count,
            status: &span.status,
        }
    }
}

/// Appends `span` as a `ScopeSpans.spans` entry (field 2, tag and length included).
pub(crate) fn encode_span(buf: &mut Vec<u8>, span: &FinishedSpan<'_>) {
    nested_with_room(buf, 2, 2, |buf| span_message(buf, span));
}

/// `opentelemetry.proto.trace.v1.Span`.
fn span_message(buf: &mut Vec<u8>, span: &FinishedSpan<'_>) {
    let context = span.context;
    bytes(buf, 1, &context.trace_id().to_bytes());
    bytes(buf, 2, &context.span_id().to_bytes());
    string(buf, 3, &context.trace_state().header());
    if span.parent_span_id != SpanId::INVALID {
        bytes(buf, 4, &span.parent_span_id.to_bytes());
    }
    string(buf, 5, span.name);
    uint(buf, 6, span_kind(span.kind));
    fixed64(buf, 7, unix_nanos(span.start_time));
    fixed64(buf, 8, unix_nanos(span.end_time));
    for attribute in span.attributes {
        key_value_field(buf, 9, attribute.key.as_str(), &attribute.value);
    }
    uint(buf, 10, u64::from(span.dropped_attributes_count));
    for event in span.events {
        nested(buf, 11, |buf| {
            fixed64(buf, 1, unix_nanos(event.timestamp));
            string(buf, 2, &event.name);
            for attribute in &event.attributes {
                key_value_field(buf, 3, attribute.key.as_str(), &attribute.value);
            }
            uint(buf, 4, u64::from(event.dropped_attributes_count));
        });
    }
    uint(buf, 12, u64::from(span.dropped_events_count));
    for link in span.links {
        nested(buf, 13, |buf| {
            bytes(buf, 1, &link.span_context.trace_id().to_bytes());
            bytes(buf, 2, &link.span_context.span_id().to_bytes());
            string(buf, 3, &link.span_context.trace_state().header());
            for attribute in &link.attributes {
                key_value_field(buf, 4, attribute.key.as_str(), &attribute.value);
            }
            uint(buf, 5, u64::from(link.dropped_attributes_count));
            fixed32(buf, 6, span_flags(&link.span_context, link.span_context.is_remote()));
        });
    }
    uint(buf, 14, u64::from(span.dropped_links_count));
    nested(buf, 15, |buf| match span.status {
        Status::Unset => {}
        Status::Ok => uint(buf, 3, 1),
        Status::Error { description } => {
            string(buf, 2, description);
            uint(buf, 3, 2);
        }
    });
    fixed32(buf, 16, span_flags(context, span.parent_is_remote));
}

/// The W3C trace flags, and whether the parent (or linked) context is remote, as OTLP's `SpanFlags`.
fn span_flags(context: &SpanContext, remote: bool) -> u32 {
    const HAS_IS_REMOTE: u32 = 0x100;
    const IS_REMOTE: u32 = 0x200;
    u32::from(context.trace_flags().to_u8()) | HAS_IS_REMOTE | if remote { IS_REMOTE } else { 0 }
}

fn span_kind(kind: &SpanKind) -> u64 {
    match kind {
        SpanKind::Internal => 1,
        SpanKind::Server => 2,
        SpanKind::Client => 3,
        SpanKind::Producer => 4,
        SpanKind::Consumer => 5,
    }
}

fn unix_nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |since| u64::try_from(since.as_nanos()).unwrap_or(u64::MAX))
}

/// An attribute as a `KeyValue` message in field `field`. A scalar value
/// (nearly every attribute) has a length known up front, so tag, lengths and
/// content are written in one pass with no room kept; arrays take the general path.
fn key_value_field(buf: &mut Vec<u8>, field: u32, key: &str, value: &Value) {
    let Some(value_len) = scalar_value_len(value) else {
        nested(buf, field, |buf| key_value(buf, key, value));
        return;
    };
    let content_len = string_len(1, key) + field_len(2, value_len);
    buf.reserve(field_len(field, content_len));
    length_prefix(buf, field, content_len);
    string(buf, 1, key);
    length_prefix(buf, 2, value_len);
    any_value(buf, value);
}

/// What [`any_value`] writes for a scalar; `None` for arrays and kinds written as text.
fn scalar_value_len(value: &Value) -> Option<usize> {
    Some(match value {
        Value::String(text) => field_len(1, text.as_str().len()),
        Value::Bool(_) => 2,
        Value::I64(number) => 1 + varint_len(u64::from_ne_bytes(number.to_ne_bytes())),
        Value::F64(_) => 9,
        _ => return None,
    })
}

fn key_value(buf: &mut Vec<u8>, key: &str, value: &Value) {
    string(buf, 1, key);
    nested(buf, 2, |buf| any_value(buf, value));
}

/// `AnyValue`: one of string (1), bool (2), int (3), double (4), array (5).
fn any_value(buf: &mut Vec<u8>, value: &Value) {
    match value {
        Value::String(text) => always_string(buf, 1, text.as_str()),
        Value::Bool(flag) => {
            tag(buf, 2, VARINT);
            varint(buf, u64::from(*flag));
        }
        Value::I64(number) => {
            tag(buf, 3, VARINT);
            // int64: two's complement, as protobuf writes negative numbers.
            varint(buf, u64::from_ne_bytes(number.to_ne_bytes()));
        }
        Value::F64(number) => {
            tag(buf, 4, FIXED64);
            buf.extend_from_slice(&number.to_le_bytes());
        }
        Value::Array(array) => nested(buf, 5, |buf| match array {
            Array::Bool(values) => values
                .iter()
                .for_each(|value| nested(buf, 1, |buf| any_value(buf, &Value::Bool(*value)))),
            Array::I64(values) => values
                .iter()
                .for_each(|value| nested(buf, 1, |buf| any_value(buf, &Value::I64(*value)))),
            Array::F64(values) => values
                .iter()
                .for_each(|value| nested(buf, 1, |buf| any_value(buf, &Value::F64(*value)))),
            Array::String(values) => values
                .iter()
                .for_each(|value| nested(buf, 1, |buf| always_string(buf, 1, value.as_str()))),
            // Kinds added to the API later travel as text rather than being lost.
            other => nested(buf, 1, |buf| always_string(buf, 1, &other.to_string())),
        }),
        other => always_string(buf, 1, &other.to_string()),
    }
}

const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LENGTH_DELIMITED: u8 = 2;
const FIXED32: u8 = 5;

#[inline(always)]
fn tag(buf: &mut Vec<u8>, field: u32, wire_type: u8) {
    varint(buf, u64::from(field) << 3 | u64::from(wire_type));
}

/// Nearly every tag and length of a span fits in one byte: that one is pushed
/// as it is, inline, with no copy of a variable number of bytes.
#[inline(always)]
fn varint(buf: &mut Vec<u8>, value: u64) {
    if value < 0x80 {
        buf.push(value as u8);
    } else {
        long_varint(buf, value);
    }
}

#[inline(never)]
fn long_varint(buf: &mut Vec<u8>, value: u64) {
    let (bytes, len) = varint_bytes(value);
    buf.extend_from_slice(&bytes[..len]);
}

/// `value` as a protobuf varint: its bytes and how many of them there are.
fn varint_bytes(mut value: u64) -> ([u8; 10], usize) {
    let mut bytes = [0_u8; 10];
    let mut len = 0;
    while value >= 0x80 {
        bytes[len] = (value as u8) | 0x80;
        value >>= 7;
        len += 1;
    }
    bytes[len] = value as u8;
    (bytes, len + 1)
}

/// A length-delimited field whose content `encode` writes in place, with one
/// byte kept for its length: enough for content under 128 bytes (most
/// attributes and values).
fn nested(buf: &mut Vec<u8>, field: u32, encode: impl FnOnce(&mut Vec<u8>)) {
    nested_with_room(buf, field, 1, encode);
}

/// [`nested`] keeping `room` bytes for the length. When the length needs a
/// different number of bytes, the content is moved within the buffer (no
/// allocation); sized right, nothing moves. A span takes 128 bytes to 16 KiB,
/// two bytes of length.
fn nested_with_room(buf: &mut Vec<u8>, field: u32, room: usize, encode: impl FnOnce(&mut Vec<u8>)) {
    tag(buf, field, LENGTH_DELIMITED);
    let length_at = buf.len();
    buf.resize(length_at + room, 0);
    encode(buf);
    let content_at = length_at + room;
    let length = buf.len() - content_at;
    let (prefix, prefix_len) = varint_bytes(length as u64);
    if prefix_len != room {
        let end = buf.len();
        if prefix_len > room {
            buf.resize(end + prefix_len - room, 0);
        }
        buf.copy_within(content_at..end, length_at + prefix_len);
        buf.truncate(length_at + prefix_len + length);
    }
    buf[length_at..length_at + prefix_len].copy_from_slice(&prefix[..prefix_len]);
}

/// Tag and length of a length-delimited field whose content follows.
fn length_prefix(buf: &mut Vec<u8>, field: u32, length: usize) {
    tag(buf, field, LENGTH_DELIMITED);
    varint(buf, length as u64);
}

/// Bytes a length-delimited field of `length` content bytes takes, tag included.
fn field_len(field: u32, length: usize) -> usize {
    varint_len(u64::from(field) << 3) + varint_len(length as u64) + length
}

/// What [`string`] writes for `text`.
fn string_len(field: u32, text: &str) -> usize {
    if text.is_empty() { 0 } else { field_len(field, text.len()) }
}

/// Seven bits a byte, one byte at least.
fn varint_len(value: u64) -> usize {
    (64 - (value | 1).leading_zeros() as usize).div_ceil(7)
}

/// Proto3 leaves empty strings and zero numbers out.
fn string(buf: &mut Vec<u8>, field: u32, text: &str) {
    if !text.is_empty() {
        always_string(buf, field, text);
    }
}

/// A string field even when empty: `AnyValue`'s `oneof` must say which member it holds.
fn always_string(buf: &mut Vec<u8>, field: u32, text: &str) {
    bytes(buf, field, text.as_bytes());
}

fn bytes(buf: &mut Vec<u8>, field: u32, value: &[u8]) {
    tag(buf, field, LENGTH_DELIMITED);
    varint(buf, value.len() as u64);
    buf.extend_from_slice(value);
}

fn uint(buf: &mut Vec<u8>, field: u32, value: u64) {
    if value != 0 {
        tag(buf, field, VARINT);
        varint(buf, value);
    }
}

fn fixed64(buf: &mut Vec<u8>, field: u32, value: u64) {
    if value != 0 {
        tag(buf, field, FIXED64);
        buf.extend_from_slice(&value.to_le_bytes());
    }
}

fn fixed32(buf: &mut Vec<u8>, field: u32, value: u32) {
    if value != 0 {
        tag(buf, field, FIXED32);
        buf.extend_from_slice(&value.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::borrow::Cow;
    use std::time::Duration;

    use opentelemetry::KeyValue;
    use opentelemetry::trace::{Event, Link, SpanId, TraceFlags, TraceId, TraceState};
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
    use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
    use opentelemetry_sdk::trace::{SpanEvents, SpanLinks};
    use prost::Message as _;

    use super::*;

    fn span(name: &'static str, scope: &InstrumentationScope, status: Status, parent: Option<u64>) -> SpanData {
        let start = UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789);
        let context = SpanContext::new(
            TraceId::from(0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736),
            SpanId::from(0x00f0_67aa_0ba9_02b7),
            TraceFlags::SAMPLED,
            false,
            TraceState::from_key_value([("vendor", "abc")]).unwrap(),
        );
        let mut events = SpanEvents::default();
        events.events.push(Event::new(
            "retry",
            start + Duration::from_micros(5),
            vec![KeyValue::new("attempt", 2)],
            1,
        ));
        events.dropped_count = 3;
        let mut links = SpanLinks::default();
        links.links.push(Link::new(context.clone(), vec![KeyValue::new("why", "batch")], 0));
        SpanData {
            span_context: context,
            parent_span_id: parent.map_or(SpanId::INVALID, SpanId::from),
            parent_span_is_remote: parent.is_some(),
            span_kind: SpanKind::Server,
            name: Cow::Borrowed(name),
            start_time: start,
            end_time: start + Duration::from_millis(3),
            attributes: vec![
                KeyValue::new("rpc.service", "suite.user.v1.UserService"),
                KeyValue::new("empty", ""),
                KeyValue::new("long", "a value over one hundred and twenty-seven bytes long, ".repeat(3)),
                KeyValue::new("rpc.grpc.status_code", -1_i64),
                KeyValue::new("ok", true),
                KeyValue::new("ratio", 0.25),
                KeyValue::new("ids", Value::Array(Array::I64(vec![1, -2, 300]))),
                KeyValue::new("names", Value::Array(Array::String(vec!["a".into(), "".into()]))),
                KeyValue::new("flags", Value::Array(Array::Bool(vec![true, false]))),
                KeyValue::new("weights", Value::Array(Array::F64(vec![1.5]))),
            ],
            dropped_attributes_count: 4,
            events,
            links,
            status,
            instrumentation_scope: scope.clone(),
        }
    }

    #[test]
    fn varint_lengths_are_what_the_encoder_writes() {
        for shift in 0..64 {
            for value in [1_u64 << shift, (1_u64 << shift) - 1, (1_u64 << shift) + 1, u64::MAX >> shift] {
                assert_eq!(varint_len(value), varint_bytes(value).1, "{value}");
            }
        }
    }

    /// A length-delimited field is tag, minimal varint length, content, whatever room was kept.
    #[test]
    fn nested_fields_get_minimal_lengths_whatever_the_room() {
        for room in [1, 2] {
            for length in [0_usize, 5, 127, 128, 300, 16_383, 16_384, 70_000] {
                let content: Vec<u8> = (0..length).map(|index| index as u8).collect();
                let mut buf = vec![0xAA];
                nested_with_room(&mut buf, 9, room, |buf| buf.extend_from_slice(&content));
                let mut expected = vec![0xAA];
                tag(&mut expected, 9, LENGTH_DELIMITED);
                varint(&mut expected, length as u64);
                expected.extend_from_slice(&content);
                assert_eq!(buf, expected, "room {room}, length {length}");
                assert_eq!(field_len(9, length), expected.len() - 1);
            }
        }
    }

    /// What this module writes decodes to what opentelemetry-proto's own conversion builds.
    #[test]
    fn encodes_what_the_reference_conversion_builds() {
        let scope = InstrumentationScope::builder("suite")
            .with_version("1.2")
            .with_schema_url("https://opentelemetry.io/schemas/1.30.0")
            .with_attributes([KeyValue::new("scope.attr", 7)])
            .build();
        let long_name: &'static str =
            "a span name well over one hundred and twenty-seven bytes long, so that its length needs two bytes of varint in front of it";
        let batch = vec![
            span("GetUser", &scope, Status::Unset, None),
            span("cache GET", &scope, Status::Ok, Some(0x1234)),
            span("SELECT users", &scope, Status::error("database unavailable"), Some(0x5678)),
            span(long_name, &scope, Status::Unset, None),
        ];
        let resource = Resource::builder_empty()
            .with_service_name("user-service")
            .with_attributes([KeyValue::new("deployment.environment", "test")])
            .with_schema_url([], "https://opentelemetry.io/schemas/1.30.0")
            .build();
        let envelope = Envelope::new(&resource, &scope);
        let mut spans = vec![0; request_room(&envelope)];
        for span in &batch {
            encode_span(&mut spans, &FinishedSpan::from(span));
        }

        let ours = decode_message(&frame_request(&envelope, spans, request_room(&envelope)));
        let reference = ExportTraceServiceRequest {
            resource_spans: group_spans_by_resource_and_scope(batch, &ResourceAttributesWithSchema::from(&resource)),
        };
        let sorted = |mut request: ExportTraceServiceRequest| {
            for resource_spans in &mut request.resource_spans {
                if let Some(resource) = resource_spans.resource.as_mut() {
                    // A resource is a set: its attributes come out in hash order.
                    resource.attributes.sort_by(|a, b| a.key.cmp(&b.key));
                }
            }
            request
        };
        assert_eq!(sorted(ours), sorted(reference));
    }

    /// A gRPC message: not compressed, its length, then an `ExportTraceServiceRequest`.
    fn decode_message(message: &[u8]) -> ExportTraceServiceRequest {
        assert_eq!(message[0], 0, "not compressed");
        let length = u32::from_be_bytes(message[1..5].try_into().unwrap());
        assert_eq!(usize::try_from(length).unwrap(), message.len() - 5);
        ExportTraceServiceRequest::decode(&message[5..]).unwrap()
    }

    /// The room kept in front of a batch holds the framing whatever the batch's size,
    /// up to lengths that take four bytes of varint.
    #[test]
    fn batches_of_any_size_are_framed_in_their_room() {
        let scope = InstrumentationScope::builder("suite").build();
        let resource = Resource::builder_empty().with_service_name("user-service").build();
        let envelope = Envelope::new(&resource, &scope);
        let room = request_room(&envelope);
        let span = span("GetUser", &scope, Status::Unset, None);
        for count in [0, 1, 60, 8_000] {
            let mut spans = vec![0; room];
            for _ in 0..count {
                encode_span(&mut spans, &FinishedSpan::from(&span));
            }
            let request = decode_message(&frame_request(&envelope, spans, room));
            let scope_spans = &request.resource_spans[0].scope_spans[0];
            assert_eq!(scope_spans.spans.len(), count);
            assert_eq!(scope_spans.scope.as_ref().unwrap().name, "suite");
        }
    }

    /// How a collector answered an export, for [`a_collectors_answer_decides_whether_an_export_succeeded`].
    #[derive(Debug, Clone, Copy)]
    enum Answer {
        Accepted,
        RefusedTrailersOnly,
        RefusedAfterTheMessage,
        NoStatus,
        HttpError,
    }

    /// A collector that answers every call the same way.
    #[derive(Debug, Clone, Copy)]
    struct Collector(Answer);

    impl tonic::server::NamedService for Collector {
        const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
    }

    impl tower::Service<http::Request<tonic::body::Body>> for Collector {
        type Response = http::Response<tonic::body::Body>;
        type Error = std::convert::Infallible;
        type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

        fn poll_ready(&mut self, _cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
            std::task::Poll::Ready(Ok(()))
        }

        fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
            assert_eq!(request.uri().path(), EXPORT_PATH);
            assert_eq!(request.headers()["content-type"], "application/grpc");
            let trailers = |code: &'static str| {
                let mut trailers = http::HeaderMap::new();
                trailers.insert("grpc-status", http::HeaderValue::from_static(code));
                trailers
            };
            let frames = |trailers: Option<http::HeaderMap>| {
                let mut frames = vec![Ok::<_, std::convert::Infallible>(http_body::Frame::data(Bytes::from_static(&[
                    0, 0, 0, 0, 0,
                ])))];
                frames.extend(trailers.map(|trailers| Ok(http_body::Frame::trailers(trailers))));
                tonic::body::Body::new(http_body_util::StreamBody::new(futures::stream::iter(frames)))
            };
            let grpc = http::Response::builder().header("content-type", "application/grpc");
            let response = match self.0 {
                Answer::Accepted => grpc.body(frames(Some(trailers("0")))),
                Answer::RefusedTrailersOnly => grpc.header("grpc-status", "14").body(tonic::body::Body::empty()),
                Answer::RefusedAfterTheMessage => grpc.body(frames(Some(trailers("8")))),
                Answer::NoStatus => grpc.body(frames(None)),
                Answer::HttpError => http::Response::builder().status(503).body(tonic::body::Body::empty()),
            };
            std::future::ready(Ok(response.unwrap()))
        }
    }

    #[tokio::test]
    async fn a_collectors_answer_decides_whether_an_export_succeeded() {
        let envelope = Envelope::new(&Resource::builder_empty().build(), &InstrumentationScope::builder("suite").build());
        let room = request_room(&envelope);
        for (answer, expected) in [
            (Answer::Accepted, None),
            (Answer::RefusedTrailersOnly, Some("Unavailable")),
            (Answer::RefusedAfterTheMessage, Some("ResourceExhausted")),
            (Answer::NoStatus, Some("no gRPC status")),
            (Answer::HttpError, Some("HTTP status 503")),
        ] {
            let incoming = tonic::transport::server::TcpIncoming::bind("127.0.0.1:0".parse().unwrap()).unwrap();
            let address = incoming.local_addr().unwrap();
            let server = tokio::spawn(
                tonic::transport::Server::builder()
                    .add_service(Collector(answer))
                    .serve_with_incoming(incoming),
            );
            let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
                .unwrap()
                .connect_lazy();
            let result = OtlpExporter::new(channel).send(frame_request(&envelope, vec![0; room], room)).await;
            match expected {
                None => assert_eq!(result, Ok(()), "{answer:?}"),
                Some(reason) => assert!(result.as_ref().is_err_and(|error| error.contains(reason)), "{answer:?}: {result:?}"),
            }
            server.abort();
        }
    }
}
