//! OTLP/HTTP's trace endpoint as a collector serves it: `POST /v1/traces` with
//! a binary protobuf `ExportTraceServiceRequest` body, gzipped or not, answered
//! with a protobuf `ExportTraceServiceResponse`, or with a protobuf
//! `google.rpc.Status` when the export is refused.

use std::convert::Infallible;
use std::io::Read as _;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use flate2::read::MultiGzDecoder;
use http::header::{ALLOW, CONTENT_ENCODING, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use prost::Message as _;
use tokio::net::TcpListener;

use super::Collected;

pub(super) const TRACES_PATH: &str = "/v1/traces";

const PROTOBUF: &str = "application/x-protobuf";

/// Far above any batch the exporters send (gzipped or not): a runaway body is
/// refused with 413 instead of being held in memory.
const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// Accepts connections until the receiver's runtime is dropped, which ends
/// this loop and every connection task with it.
pub(super) async fn serve(listener: TcpListener, collected: Arc<Collected>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _peer)) => stream,
            // Out of file descriptors and the like: pausing keeps the loop from spinning
            // until the condition passes.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let collected = collected.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| answer(collected.clone(), request));
            // HTTP/1.1, or HTTP/2 with prior knowledge (h2c), whichever the client speaks.
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            // A connection ending badly (the client reset it) concerns that client only.
            let _ = builder.serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

async fn answer(collected: Arc<Collected>, request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    if request.uri().path() != TRACES_PATH {
        // Worth a log line: an exporter given the traces URL as its base endpoint
        // posts to /v1/traces/v1/traces, and the test only sees no spans arrive.
        tracing::warn!(method = %request.method(), path = request.uri().path(), "OTLP/HTTP receiver: not the traces endpoint");
        return Ok(text(StatusCode::NOT_FOUND, "OTLP/HTTP traces are POSTed to /v1/traces"));
    }
    if request.method() != Method::POST {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "OTLP/HTTP traces are POSTed");
        response.headers_mut().insert(ALLOW, HeaderValue::from_static("POST"));
        return Ok(response);
    }
    let (parts, body) = request.into_parts();
    let headers = parts.headers;
    let compressed = match content_encoding(&headers) {
        Ok(gzipped) => gzipped,
        Err(encoding) => {
            collected.unreadable(headers, false);
            return Ok(text(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                &format!("unsupported Content-Encoding {encoding:?}: send gzip or nothing"),
            ));
        }
    };
    if !is_protobuf(&headers) {
        let content_type = headers.get(CONTENT_TYPE).map_or_else(
            || "(none)".to_owned(),
            |value| String::from_utf8_lossy(value.as_bytes()).into_owned(),
        );
        collected.unreadable(headers, compressed);
        return Ok(text(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            &format!("Content-Type {content_type} is not {PROTOBUF}"),
        ));
    }
    let body = match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected_body) => collected_body.to_bytes(),
        Err(error) => {
            collected.unreadable(headers, compressed);
            let (http_status, rpc_code) = if error.is::<LengthLimitError>() {
                (StatusCode::PAYLOAD_TOO_LARGE, tonic::Code::ResourceExhausted)
            } else {
                (StatusCode::BAD_REQUEST, tonic::Code::InvalidArgument)
            };
            return Ok(rpc_status(http_status, rpc_code, &format!("reading the body: {error}")));
        }
    };
    let payload = if compressed {
        match gunzip(&body) {
            Ok(payload) => Bytes::from(payload),
            Err(error) => {
                collected.unreadable(headers, compressed);
                return Ok(rpc_status(
                    StatusCode::BAD_REQUEST,
                    tonic::Code::InvalidArgument,
                    &format!("gunzipping the body: {error}"),
                ));
            }
        }
    } else {
        body
    };
    let export = match ExportTraceServiceRequest::decode(payload) {
        Ok(export) => export,
        Err(error) => {
            collected.unreadable(headers, compressed);
            return Ok(rpc_status(
                StatusCode::BAD_REQUEST,
                tonic::Code::InvalidArgument,
                &format!("not an ExportTraceServiceRequest: {error}"),
            ));
        }
    };
    if collected.export(headers, compressed, export) {
        Ok(protobuf(
            StatusCode::OK,
            ExportTraceServiceResponse { partial_success: None }.encode_to_vec(),
        ))
    } else {
        Ok(rpc_status(
            StatusCode::SERVICE_UNAVAILABLE,
            tonic::Code::Unavailable,
            "the test receiver refused this export",
        ))
    }
}

/// Whether the body is gzipped; the unsupported encoding as the error.
fn content_encoding(headers: &HeaderMap) -> Result<bool, String> {
    let Some(encoding) = headers.get(CONTENT_ENCODING) else {
        return Ok(false);
    };
    let encoding = String::from_utf8_lossy(encoding.as_bytes()).trim().to_ascii_lowercase();
    match encoding.as_str() {
        "gzip" | "x-gzip" => Ok(true),
        "identity" => Ok(false),
        _ => Err(encoding),
    }
}

/// Whether the media type, parameters aside, is binary protobuf.
fn is_protobuf(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|media_type| media_type.trim().eq_ignore_ascii_case(PROTOBUF))
}

/// The gunzipped body, refused past [`MAX_BODY_BYTES`] so a small bomb cannot
/// inflate without bound.
fn gunzip(body: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut payload = Vec::new();
    MultiGzDecoder::new(body)
        .take(MAX_BODY_BYTES as u64 + 1)
        .read_to_end(&mut payload)?;
    if payload.len() > MAX_BODY_BYTES {
        return Err(std::io::Error::other(format!("more than {MAX_BODY_BYTES} bytes once gunzipped")));
    }
    Ok(payload)
}

fn protobuf(http_status: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = http_status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(PROTOBUF));
    response
}

/// A failure as OTLP/HTTP says to answer one: a protobuf `google.rpc.Status` body.
fn rpc_status(http_status: StatusCode, rpc_code: tonic::Code, message: &str) -> Response<Full<Bytes>> {
    let body = tonic_types::Status {
        code: rpc_code as i32,
        message: message.to_owned(),
        details: Vec::new(),
    };
    protobuf(http_status, body.encode_to_vec())
}

fn text(http_status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(message.to_owned())));
    *response.status_mut() = http_status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}
