//! The OTLP receivers driven by real clients over 127.0.0.1: tonic's generated
//! `TraceServiceClient` for gRPC, a raw hyper client for HTTP/1.1 and h2c.
#![allow(clippy::unwrap_used)]

use std::future::Future;
use std::io::Write as _;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_ENCODING, CONTENT_TYPE, HOST};
use http::{HeaderMap, Request, StatusCode, Version};
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message as _;
use suite_testkit::OtlpReceiver;
use suite_testkit::otlp::{Attribute, kind, status};
use tokio::net::TcpStream;
use tonic::codec::CompressionEncoding;
use tonic::transport::Channel;

/// Bound on every network step, far above what a loopback round trip takes.
const LIMIT: Duration = Duration::from_secs(10);

const PROTOBUF: &str = "application/x-protobuf";

/// Sampled, with a remote parent: OTLP's `SpanFlags` as an exporter sets them.
const SAMPLED_REMOTE_PARENT: u32 = 0x301;

async fn bounded<F: Future>(what: &str, future: F) -> F::Output {
    tokio::time::timeout(LIMIT, future)
        .await
        .unwrap_or_else(|_| panic!("{what} took longer than {LIMIT:?}"))
}

fn string(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_owned())),
        }),
        ..Default::default()
    }
}

fn int(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(value)),
        }),
        ..Default::default()
    }
}

/// One resource (service `checkout`) with one scope holding a server span per name.
fn export_request(span_names: &[&str]) -> ExportTraceServiceRequest {
    let spans = span_names
        .iter()
        .zip(1_u8..)
        .map(|(name, id)| Span {
            trace_id: vec![0xab; 16],
            span_id: vec![id; 8],
            parent_span_id: vec![0xcd; 8],
            trace_state: "vendor=value".to_owned(),
            flags: SAMPLED_REMOTE_PARENT,
            name: (*name).to_owned(),
            kind: kind::SERVER,
            attributes: vec![string("rpc.method", "GetUser"), int("rpc.grpc.status_code", 13)],
            status: Some(Status {
                message: "database unreachable".to_owned(),
                code: status::ERROR,
            }),
            ..Default::default()
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    string("service.name", "checkout"),
                    string("service.version", "1.2.3"),
                    string("service.instance.id", "checkout-1"),
                    string("deployment.environment", "test"),
                ],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "suite-telemetry".to_owned(),
                    ..Default::default()
                }),
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

fn assert_span_is_flattened_whole(receiver: &OtlpReceiver) {
    let spans = receiver.spans();
    let span = spans.first().expect("a span was kept");
    assert_eq!(span.service, "checkout");
    assert_eq!(span.resource.get("service.version"), Some(&Attribute::Str("1.2.3".to_owned())));
    assert_eq!(span.resource_str("service.instance.id"), Some("checkout-1"));
    assert_eq!(span.resource_str("deployment.environment"), Some("test"));
    assert_eq!(span.scope, "suite-telemetry");
    assert_eq!(span.trace_id, "ab".repeat(16));
    assert_eq!(span.span_id, "01".repeat(8));
    assert_eq!(span.parent_span_id, "cd".repeat(8));
    assert_eq!(span.trace_state, "vendor=value");
    assert_eq!(span.flags, SAMPLED_REMOTE_PARENT);
    assert_eq!(span.kind, kind::SERVER);
    assert_eq!(span.status_code, status::ERROR);
    assert_eq!(span.status_message, "database unreachable");
    assert_eq!(span.str("rpc.method"), Some("GetUser"));
    assert_eq!(span.int("rpc.grpc.status_code"), Some(13));
}

async fn grpc_client(receiver: &OtlpReceiver) -> TraceServiceClient<Channel> {
    let endpoint = Channel::from_shared(receiver.endpoint())
        .unwrap()
        .connect_timeout(LIMIT)
        .timeout(LIMIT);
    TraceServiceClient::new(bounded("connecting to the gRPC receiver", endpoint.connect()).await.unwrap())
}

fn with_api_key(export: ExportTraceServiceRequest) -> tonic::Request<ExportTraceServiceRequest> {
    let mut request = tonic::Request::new(export);
    request.metadata_mut().insert("x-api-key", "secret".parse().unwrap());
    request
}

#[tokio::test]
async fn grpc_receiver_records_each_calls_metadata_compression_and_spans() {
    let receiver = OtlpReceiver::start().await.unwrap();
    assert_eq!(receiver.protocol(), "grpc");
    assert_eq!(receiver.endpoint(), format!("http://{}", receiver.addr()));
    assert_eq!(receiver.traces_url(), receiver.endpoint());

    let mut gzipping = grpc_client(&receiver).await.send_compressed(CompressionEncoding::Gzip);
    let request = with_api_key(export_request(&["GetUser", "SELECT users"]));
    bounded("a gzipped export", gzipping.export(request)).await.unwrap();
    let mut plain = grpc_client(&receiver).await;
    bounded("a plain export", plain.export(export_request(&["ListUsers"])))
        .await
        .unwrap();

    let exports = receiver.exports();
    assert_eq!(exports.len(), 2, "{exports:#?}");
    let (gzipped, uncompressed) = (&exports[0], &exports[1]);
    assert!(gzipped.compressed && gzipped.accepted, "{gzipped:#?}");
    assert_eq!(gzipped.spans, 2);
    assert_eq!(gzipped.headers.get("x-api-key").unwrap(), "secret");
    assert_eq!(gzipped.headers.get("grpc-encoding").unwrap(), "gzip");
    assert!(
        gzipped.headers.get("user-agent").unwrap().to_str().unwrap().contains("tonic"),
        "{gzipped:#?}"
    );
    assert!(!uncompressed.compressed && uncompressed.accepted, "{uncompressed:#?}");
    assert_eq!(uncompressed.spans, 1);
    assert!(uncompressed.headers.get("x-api-key").is_none(), "{uncompressed:#?}");
    assert!(uncompressed.headers.get("grpc-encoding").is_none(), "{uncompressed:#?}");

    assert_eq!(
        (receiver.export_calls(), receiver.refused_calls(), receiver.span_count()),
        (2, 0, 3)
    );
    assert_span_is_flattened_whole(&receiver);
    receiver.stop().await;
}

#[tokio::test]
async fn grpc_refusal_answers_unavailable_then_the_retry_is_accepted() {
    let receiver = OtlpReceiver::start().await.unwrap();
    let mut client = grpc_client(&receiver).await;
    receiver.refuse_next(1);

    let refused = bounded("the refused export", client.export(export_request(&["GetUser"])))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    assert!(receiver.spans().is_empty(), "a refused call's spans are not kept");
    bounded("the retried export", client.export(export_request(&["GetUser"])))
        .await
        .unwrap();

    let exports = receiver
        .wait_for_exports(LIMIT, |exports| exports.iter().any(|export| export.accepted))
        .await;
    let accepted: Vec<_> = exports.iter().map(|export| (export.accepted, export.spans)).collect();
    assert_eq!(accepted, [(false, 1), (true, 1)]);
    assert_eq!(
        (receiver.export_calls(), receiver.refused_calls(), receiver.span_count()),
        (2, 1, 2)
    );
    assert_eq!(receiver.spans().len(), 1);
    receiver.stop().await;
}

struct HttpReply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

async fn read_reply(response: http::Response<hyper::body::Incoming>) -> HttpReply {
    let (parts, body) = response.into_parts();
    let body = bounded("reading the reply", body.collect()).await.unwrap().to_bytes();
    HttpReply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// POSTs `body` to `path` over a fresh HTTP/1.1 connection.
async fn post(receiver: &OtlpReceiver, path: &str, headers: &[(&str, &str)], body: Vec<u8>) -> HttpReply {
    let stream = bounded("connecting to the HTTP receiver", TcpStream::connect(receiver.addr()))
        .await
        .unwrap();
    let (mut sender, connection) = bounded(
        "the HTTP/1.1 handshake",
        hyper::client::conn::http1::handshake(TokioIo::new(stream)),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    let mut request = Request::post(path).header(HOST, receiver.addr().to_string());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = bounded("the POST", sender.send_request(request.body(Full::new(Bytes::from(body))).unwrap()))
        .await
        .unwrap();
    read_reply(response).await
}

fn assert_export_accepted(reply: &HttpReply) {
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.headers.get(CONTENT_TYPE).unwrap(), PROTOBUF);
    ExportTraceServiceResponse::decode(reply.body.clone()).unwrap();
}

#[tokio::test]
async fn http_receiver_accepts_plain_and_gzipped_protobuf() {
    let receiver = OtlpReceiver::start_http().await.unwrap();
    assert_eq!(receiver.protocol(), "http/protobuf");
    assert_eq!(receiver.endpoint(), format!("http://{}", receiver.addr()));
    assert_eq!(receiver.traces_url(), format!("http://{}/v1/traces", receiver.addr()));

    let body = export_request(&["GetUser", "SELECT users"]).encode_to_vec();
    let plain = post(
        &receiver,
        "/v1/traces",
        &[("content-type", PROTOBUF), ("x-api-key", "secret")],
        body,
    )
    .await;
    assert_export_accepted(&plain);
    let body = gzip(&export_request(&["ListUsers"]).encode_to_vec());
    let gzipped = post(
        &receiver,
        "/v1/traces",
        &[("content-type", PROTOBUF), ("content-encoding", "gzip")],
        body,
    )
    .await;
    assert_export_accepted(&gzipped);

    let exports = receiver.exports();
    assert_eq!(exports.len(), 2, "{exports:#?}");
    assert!(!exports[0].compressed && exports[0].accepted, "{:#?}", exports[0]);
    assert_eq!(exports[0].spans, 2);
    assert_eq!(exports[0].headers.get("x-api-key").unwrap(), "secret");
    assert!(exports[1].compressed && exports[1].accepted, "{:#?}", exports[1]);
    assert_eq!(exports[1].spans, 1);
    assert_eq!(exports[1].headers.get(CONTENT_ENCODING).unwrap(), "gzip");
    assert_eq!(
        (receiver.export_calls(), receiver.refused_calls(), receiver.span_count()),
        (2, 0, 3)
    );
    assert_span_is_flattened_whole(&receiver);
    receiver.stop().await;
}

#[tokio::test]
async fn http_refusal_answers_503_then_the_retry_is_accepted() {
    let receiver = OtlpReceiver::start_http().await.unwrap();
    receiver.refuse_next(2);
    for _ in 0..2 {
        let refused = post(
            &receiver,
            "/v1/traces",
            &[("content-type", PROTOBUF)],
            export_request(&["GetUser"]).encode_to_vec(),
        )
        .await;
        assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
        let status = tonic_types::Status::decode(refused.body).unwrap();
        assert_eq!(status.code, tonic::Code::Unavailable as i32);
    }
    assert!(receiver.spans().is_empty(), "a refused call's spans are not kept");
    let retried = post(
        &receiver,
        "/v1/traces",
        &[("content-type", PROTOBUF)],
        export_request(&["GetUser"]).encode_to_vec(),
    )
    .await;
    assert_export_accepted(&retried);

    let accepted: Vec<_> = receiver.exports().iter().map(|export| export.accepted).collect();
    assert_eq!(accepted, [false, false, true]);
    assert_eq!(
        (receiver.export_calls(), receiver.refused_calls(), receiver.span_count()),
        (3, 2, 3)
    );
    assert_eq!(receiver.spans().len(), 1);
    receiver.stop().await;
}

#[tokio::test]
async fn http_receiver_turns_away_what_is_not_an_otlp_protobuf_export() {
    let receiver = OtlpReceiver::start_http().await.unwrap();
    let export = export_request(&["GetUser"]).encode_to_vec();

    let wrong_path = post(&receiver, "/v1/traces/v1/traces", &[("content-type", PROTOBUF)], export.clone()).await;
    assert_eq!(wrong_path.status, StatusCode::NOT_FOUND);
    let json = post(&receiver, "/v1/traces", &[("content-type", "application/json")], b"{}".to_vec()).await;
    assert_eq!(json.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let zstd = post(
        &receiver,
        "/v1/traces",
        &[("content-type", PROTOBUF), ("content-encoding", "zstd")],
        export.clone(),
    )
    .await;
    assert_eq!(zstd.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let garbage = post(&receiver, "/v1/traces", &[("content-type", PROTOBUF)], vec![0xff; 32]).await;
    assert_eq!(garbage.status, StatusCode::BAD_REQUEST);
    let not_gzip = post(
        &receiver,
        "/v1/traces",
        &[("content-type", PROTOBUF), ("content-encoding", "gzip")],
        export,
    )
    .await;
    assert_eq!(not_gzip.status, StatusCode::BAD_REQUEST);

    // The wrong path is no export call; the other four are, none accepted.
    let exports = receiver.exports();
    assert_eq!(exports.len(), 4, "{exports:#?}");
    assert!(exports.iter().all(|export| !export.accepted && export.spans == 0), "{exports:#?}");
    assert_eq!(
        (receiver.export_calls(), receiver.refused_calls(), receiver.span_count()),
        (4, 0, 0)
    );
    assert!(receiver.spans().is_empty());
    receiver.stop().await;
}

#[tokio::test]
async fn http_receiver_speaks_h2c() {
    let receiver = OtlpReceiver::start_http().await.unwrap();
    let stream = bounded("connecting to the HTTP receiver", TcpStream::connect(receiver.addr()))
        .await
        .unwrap();
    let (mut sender, connection) = bounded(
        "the h2c handshake",
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    let request = Request::post(receiver.traces_url())
        .header(CONTENT_TYPE, PROTOBUF)
        .body(Full::new(Bytes::from(export_request(&["GetUser"]).encode_to_vec())))
        .unwrap();
    let response = bounded("the h2c POST", sender.send_request(request)).await.unwrap();
    assert_eq!(response.version(), Version::HTTP_2);
    assert_export_accepted(&read_reply(response).await);
    assert_eq!(receiver.spans().len(), 1);
    receiver.stop().await;
}

#[tokio::test]
async fn http_stop_closes_open_connections_and_frees_the_address() {
    let receiver = OtlpReceiver::start_http().await.unwrap();
    let addr = receiver.addr();
    let stream = bounded("connecting to the HTTP receiver", TcpStream::connect(addr)).await.unwrap();
    let (mut sender, connection) = bounded(
        "the HTTP/1.1 handshake",
        hyper::client::conn::http1::handshake(TokioIo::new(stream)),
    )
    .await
    .unwrap();
    let connection = tokio::spawn(connection);
    let request = Request::post("/v1/traces")
        .header(HOST, addr.to_string())
        .header(CONTENT_TYPE, PROTOBUF)
        .body(Full::new(Bytes::from(export_request(&["GetUser"]).encode_to_vec())))
        .unwrap();
    let response = bounded("the POST", sender.send_request(request)).await.unwrap();
    assert_export_accepted(&read_reply(response).await);

    receiver.stop().await;
    // The kept-alive connection ends as soon as the receiver is gone, without waiting for the client.
    let _ = bounded("the connection closing", connection).await.unwrap();

    let restarted = OtlpReceiver::start_http_on(addr).await.unwrap();
    assert_eq!(restarted.addr(), addr);
    let reply = post(
        &restarted,
        "/v1/traces",
        &[("content-type", PROTOBUF)],
        export_request(&["GetUser"]).encode_to_vec(),
    )
    .await;
    assert_export_accepted(&reply);
    assert_eq!(restarted.export_calls(), 1, "a restarted receiver starts empty");
    restarted.stop().await;
}
