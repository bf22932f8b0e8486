//! An OTLP/gRPC trace receiver that counts the spans it is sent and keeps
//! nothing: the collector the gateway benchmark exports to. A real collector
//! runs on other machines; this one shares the benchmark's cores with what is
//! measured, so it counts spans by walking each request's protobuf framing
//! instead of decoding every span. Prints `listening <addr>`, then, on SIGTERM
//! or SIGINT, `received <spans> spans in <exports> exports`.

#![allow(clippy::print_stdout)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Buf as _;
use suite_grpc::codec::EncodedBytes;
use tonic::body::Body;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic::codegen::{BoxFuture, Context, Poll, Service, http};
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
const STREAM_WINDOW_BYTES: u32 = 4 * 1024 * 1024;
const CONNECTION_WINDOW_BYTES: u32 = 8 * 1024 * 1024;

#[derive(Debug, Default)]
struct Counts {
    spans: AtomicU64,
    exports: AtomicU64,
}

/// The collector's TraceService, `Export` only.
#[derive(Debug, Clone, Default)]
struct Sink {
    counts: Arc<Counts>,
}

impl tonic::server::NamedService for Sink {
    const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
}

impl Service<http::Request<Body>> for Sink {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let counts = self.counts.clone();
        Box::pin(async move {
            if request.uri().path() != EXPORT_PATH {
                return Ok(Status::unimplemented("only TraceService/Export").into_http());
            }
            Ok(tonic::server::Grpc::new(SpanCounting).unary(CountSpans(counts), request).await)
        })
    }
}

struct CountSpans(Arc<Counts>);

impl tonic::server::UnaryService<u64> for CountSpans {
    type Response = Vec<u8>;
    type Future = std::future::Ready<Result<Response<Vec<u8>>, Status>>;

    fn call(&mut self, request: Request<u64>) -> Self::Future {
        self.0.spans.fetch_add(*request.get_ref(), Ordering::Relaxed);
        self.0.exports.fetch_add(1, Ordering::Relaxed);
        // An empty ExportTraceServiceResponse: everything accepted.
        std::future::ready(Ok(Response::new(Vec::new())))
    }
}

/// Reads each request as the number of spans it holds, counted where tonic
/// buffered it (no copy), and writes the (empty) response as it is.
#[derive(Debug, Clone, Copy)]
struct SpanCounting;

/// A decode buffer a typical export fits in, so it is not grown (and copied) step by step.
const DECODE_BUFFER_BYTES: usize = 256 * 1024;
/// tonic's default.
const YIELD_THRESHOLD_BYTES: usize = 32 * 1024;

impl Codec for SpanCounting {
    type Encode = Vec<u8>;
    type Decode = u64;
    type Encoder = EncodedBytes;
    type Decoder = Self;

    fn encoder(&mut self) -> EncodedBytes {
        EncodedBytes
    }

    fn decoder(&mut self) -> Self {
        *self
    }
}

impl Decoder for SpanCounting {
    type Item = u64;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<u64>, Status> {
        // The buffer holds exactly one message, contiguous.
        let length = src.remaining();
        let spans = (src.chunk().len() == length)
            .then(|| count_spans(src.chunk()))
            .flatten()
            .ok_or_else(|| Status::invalid_argument("not an ExportTraceServiceRequest"))?;
        src.advance(length);
        Ok(Some(spans))
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::new(DECODE_BUFFER_BYTES, YIELD_THRESHOLD_BYTES)
    }
}

/// Spans in an encoded `ExportTraceServiceRequest`: its `resource_spans` (1),
/// their `scope_spans` (2), and theirs `spans` (2); `None` if it is not protobuf.
fn count_spans(request: &[u8]) -> Option<u64> {
    let mut spans = 0;
    for resource in length_delimited(request, 1)? {
        for scope in length_delimited(resource, 2)? {
            spans += length_delimited(scope, 2)?.len() as u64;
        }
    }
    Some(spans)
}

/// The length-delimited fields numbered `wanted` in `message`, every other field skipped.
fn length_delimited(mut message: &[u8], wanted: u64) -> Option<Vec<&[u8]>> {
    let mut found = Vec::new();
    while !message.is_empty() {
        let key = varint(&mut message)?;
        match key & 7 {
            0 => {
                varint(&mut message)?;
            }
            1 => message = message.get(8..)?,
            2 => {
                let length = usize::try_from(varint(&mut message)?).ok()?;
                if key >> 3 == wanted {
                    found.push(message.get(..length)?);
                }
                message = message.get(length..)?;
            }
            5 => message = message.get(4..)?,
            _ => return None,
        }
    }
    Some(found)
}

fn varint(bytes: &mut &[u8]) -> Option<u64> {
    let mut value = 0_u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = bytes.split_first()?;
        *bytes = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".to_owned())
        .parse()
        .map_err(std::io::Error::other)?;
    let incoming = TcpIncoming::bind(addr)?.with_nodelay(Some(true));
    println!("listening {}", incoming.local_addr()?);
    let sink = Sink::default();
    let counts = sink.counts.clone();
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tonic::transport::Server::builder()
        // Receive windows a collector's gRPC server grows to on a busy connection (Go's
        // grows with the measured bandwidth-delay product), so a 100+ KiB batch is not
        // sent in 64 KiB steps each waiting for a window update.
        .initial_stream_window_size(Some(STREAM_WINDOW_BYTES))
        .initial_connection_window_size(Some(CONNECTION_WINDOW_BYTES))
        .add_service(sink)
        .serve_with_incoming_shutdown(incoming, async {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        })
        .await
        .map_err(std::io::Error::other)?;
    println!(
        "received {} spans in {} exports",
        counts.spans.load(Ordering::Relaxed),
        counts.exports.load(Ordering::Relaxed)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(number: u64, payload: &[u8]) -> Vec<u8> {
        let mut bytes = vec![u8::try_from(number << 3 | 2).unwrap_or(0), u8::try_from(payload.len()).unwrap_or(0)];
        bytes.extend_from_slice(payload);
        bytes
    }

    #[test]
    fn counts_spans_across_resources_and_scopes_and_skips_other_fields() {
        let span = [0x0a, 0x02, 0xab, 0xcd, 0x38, 0x96, 0x01, 0x39, 1, 2, 3, 4, 5, 6, 7, 8];
        let mut scope = field(1, b"scope");
        scope.extend(field(2, &span));
        scope.extend(field(2, &span));
        scope.extend(field(3, b"https://schema"));
        let mut resource = field(1, b"resource");
        resource.extend(field(2, &scope));
        resource.extend(field(2, &field(2, &span)));
        let mut request = field(1, &resource);
        request.extend(field(1, &field(2, &field(2, &span))));
        assert_eq!(count_spans(&request), Some(4));
        assert_eq!(count_spans(&[]), Some(0));
        assert_eq!(count_spans(&request[..request.len() - 1]), None, "truncated");
    }
}
