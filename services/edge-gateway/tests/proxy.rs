//! The proxy itself, against an upstream that echoes: bodies stream through
//! message by message, metadata and trailers pass both ways, the upstream
//! sees the caller's deadline minus the time spent at the gateway, and an
//! upstream that never answers opens the breaker only for callers whose
//! deadlines a healthy upstream could have met.

#![allow(clippy::unwrap_used)]

mod common;

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use edge_gateway::config::{ListenerArgs, RateLimitArgs, ServeConfig};
use http_body::Frame;
use suite_grpc::codec::EncodedBytes;
use suite_grpc::{GrpcServer, RouteService, SecurityArgs, Transport};
use tonic::body::Body;

const ECHO_PATH: &str = "/test.echo.v1.Echo/Chat";

/// Echoes the request body back as it arrives, then `grpc-status: 0` and a
/// trailer of its own. Reports the `grpc-timeout` and `x-custom` it received as
/// response headers. A call with `x-echo-hang` is never answered: a frozen upstream.
#[derive(Clone)]
struct Echo;

impl tower::Service<http::Request<Body>> for Echo {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let (parts, body) = request.into_parts();
        if parts.headers.contains_key("x-echo-hang") {
            return Box::pin(std::future::pending());
        }
        let mut response = http::Response::builder().header("content-type", "application/grpc");
        for name in ["grpc-timeout", "x-custom", "x-suite-subject"] {
            if let Some(value) = parts.headers.get(name) {
                response = response.header(format!("x-received-{name}"), value);
            }
        }
        let body = Body::new(EchoBody { inner: body, ended: false });
        Box::pin(std::future::ready(Ok(response.body(body).unwrap())))
    }
}

struct EchoBody {
    inner: Body,
    ended: bool,
}

impl http_body::Body for EchoBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => Poll::Ready(Some(Ok(Frame::data(data)))),
                // Request trailers: ignore, keep reading.
                Err(_) => {
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
            },
            Poll::Ready(Some(Err(status))) => Poll::Ready(Some(Err(status))),
            Poll::Ready(None) => {
                self.ended = true;
                let mut trailers = http::HeaderMap::new();
                trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                trailers.insert("x-echo-trailer", http::HeaderValue::from_static("done"));
                Poll::Ready(Some(Ok(Frame::trailers(trailers))))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

struct EchoSetup {
    _echo: Running,
    gateway: Running,
    keys: TokenKeys,
    _dir: tempfile::TempDir,
}

async fn start() -> EchoSetup {
    let echo = Running::start(|listeners, stop| async move {
        GrpcServer::new(test_server_config(), Transport::InsecurePlaintext)
            .wrap_routes(|_own_routes| RouteService::new(Echo))
            .serve(listeners, async {
                let _ = stop.await;
            })
            .await?;
        Ok(())
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let routes = dir.path().join("routes.toml");
    std::fs::write(
        &routes,
        format!(
            r#"
            [[upstreams]]
            name = "echo"
            address = "{}"
            services = ["test.echo.v1.Echo"]
            "#,
            echo.grpc_addr
        ),
    )
    .unwrap();
    let keys = TokenKeys::generate();
    let config = ServeConfig {
        grpc_addr: "127.0.0.1:0".parse().unwrap(),
        admin_addr: "127.0.0.1:0".parse().unwrap(),
        worker_threads: 1,
        trust_client_trace_context: false,
        routes: Some(routes),
        resolve_interval_ms: 30_000,
        request_body_idle_timeout_ms: 10_000,
        listener: ListenerArgs::default(),
        auth: auth_args(&keys),
        // The proxy is under test here, not the limits: high enough never to bind.
        rate_limit: RateLimitArgs {
            rate_limit_per_second: 100_000.0,
            rate_limit_burst: 100_000.0,
            ..RateLimitArgs::default()
        },
        server: test_server_config(),
        security: SecurityArgs::insecure_plaintext(),
    };
    let gateway = Running::start(move |listeners, stop| {
        edge_gateway::app::serve(config, listeners, async {
            let _ = stop.await;
        })
    })
    .await;
    EchoSetup {
        _echo: echo,
        gateway,
        keys,
        _dir: dir,
    }
}

async fn echo_client(setup: &EchoSetup) -> tonic::client::Grpc<tonic::transport::Channel> {
    let channel = suite_grpc::client::connect_insecure(setup.gateway.grpc_addr).await.unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    grpc
}

#[tokio::test]
async fn a_bidirectional_stream_flows_message_by_message() {
    let setup = start().await;
    let mut grpc = echo_client(&setup).await;
    let (sender, receiver) = tokio::sync::mpsc::channel::<Vec<u8>>(1);
    let mut request = with_token(
        tokio_stream::wrappers::ReceiverStream::new(receiver),
        &setup.keys.token("alice", &[]),
    );
    request.metadata_mut().insert("x-custom", "kept".parse().unwrap());
    // The first message goes before the call is even answered.
    sender.send(b"message 0".to_vec()).await.unwrap();
    let response = grpc
        .streaming(request, http::uri::PathAndQuery::from_static(ECHO_PATH), EncodedBytes)
        .await
        .unwrap();
    assert_eq!(response.metadata().get("x-received-x-custom").unwrap(), "kept");
    assert_eq!(response.metadata().get("x-received-x-suite-subject").unwrap(), "alice");
    let mut replies = response.into_inner();
    assert_eq!(replies.message().await.unwrap().unwrap(), b"message 0");
    // Each reply arrives before the next message is sent: nothing is buffered to the end.
    for index in 1..50 {
        let message = format!("message {index}").into_bytes();
        sender.send(message.clone()).await.unwrap();
        let reply = tokio::time::timeout(Duration::from_secs(5), replies.message())
            .await
            .expect("the echo of one message must arrive while the stream is open")
            .unwrap()
            .unwrap();
        assert_eq!(reply, message);
    }
    drop(sender);
    assert!(replies.message().await.unwrap().is_none());
    let trailers = replies.trailers().await.unwrap().unwrap();
    assert_eq!(trailers.get("x-echo-trailer").unwrap(), "done");
}

/// `count` calls at once to the frozen echo with `grpc-timeout: timeout`, over a
/// raw HTTP/2 connection (a tonic client would cancel each call at its own
/// deadline, racing the gateway's timer); each call's `grpc-status`.
async fn calls_to_a_frozen_upstream(setup: &EchoSetup, token: &str, count: usize, timeout: &str) -> Vec<String> {
    let tcp = tokio::net::TcpStream::connect(setup.gateway.grpc_addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    let _connection = AbortOnDrop(tokio::spawn(connection));
    let calls = (0..count).map(|_| {
        let client = client.clone();
        let request = http::Request::post(format!("http://localhost{ECHO_PATH}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header("authorization", format!("Bearer {token}"))
            .header("grpc-timeout", timeout)
            .header("x-echo-hang", "1")
            .body(())
            .unwrap();
        async move {
            let (response, mut body) = client.ready().await.unwrap().send_request(request, false).unwrap();
            body.send_data(Bytes::from_static(&[0, 0, 0, 0, 0]), true).unwrap();
            let response = tokio::time::timeout(Duration::from_secs(10), response).await.unwrap().unwrap();
            // The gateway answers trailers-only: the status is in the headers.
            response.headers().get("grpc-status").unwrap().to_str().unwrap().to_owned()
        }
    });
    futures::future::join_all(calls).await
}

struct AbortOnDrop(tokio::task::JoinHandle<Result<(), h2::Error>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// An upstream that never answers runs out of the caller's time (its own timer
/// says CANCELLED, the gateway's DEADLINE_EXCEEDED). 1,000 such calls from one user with 20 ms
/// deadlines, shorter than a healthy call may take (the breaker's slow-call
/// threshold, 1 s), do not open the breaker: a caller cannot open it for
/// everyone by timing out on purpose. Five with deadlines a healthy upstream
/// would meet do: that is the upstream failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_upstream_opens_the_breaker_only_for_deadlines_it_should_have_met() {
    /// CANCELLED (the upstream's timer) or DEADLINE_EXCEEDED (the gateway's).
    const OUT_OF_TIME: [&str; 2] = ["1", "4"];
    let setup = start().await;
    let token = setup.keys.token("mallory", &[]);
    let state = |metrics: &str| {
        metrics
            .lines()
            .find(|line| line.starts_with("client_circuit_state{dependency=\"echo\"}"))
            .unwrap()
            .rsplit(' ')
            .next()
            .unwrap()
            .to_owned()
    };
    for _ in 0..50 {
        for status in calls_to_a_frozen_upstream(&setup, &token, 20, "20m").await {
            assert!(OUT_OF_TIME.contains(&status.as_str()), "{status}");
        }
    }
    let metrics = setup.gateway.metrics().await;
    assert_eq!(state(&metrics), "0", "closed after 1,000 hurried calls:\n{metrics}");

    for status in calls_to_a_frozen_upstream(&setup, &token, 5, "1100m").await {
        assert!(OUT_OF_TIME.contains(&status.as_str()), "{status}");
    }
    let metrics = setup.gateway.metrics().await;
    assert_eq!(state(&metrics), "1", "open after five patient calls failed:\n{metrics}");
}

#[tokio::test]
async fn the_upstream_sees_the_remaining_deadline() {
    let setup = start().await;
    let mut grpc = echo_client(&setup).await;
    let mut request = with_token(b"ping".to_vec(), &setup.keys.token("alice", &[]));
    request.set_timeout(Duration::from_secs(2));
    let response = grpc
        .unary(request, http::uri::PathAndQuery::from_static(ECHO_PATH), EncodedBytes)
        .await
        .unwrap();
    let forwarded = response
        .metadata()
        .get("x-received-grpc-timeout")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let micros: u64 = forwarded.strip_suffix('u').unwrap().parse().unwrap();
    assert!(micros < 2_000_000 && micros > 1_000_000, "forwarded grpc-timeout {forwarded}");
    assert_eq!(response.into_inner(), b"ping");
    // A method no descriptor names is timed under `unknown`: clients cannot mint metric series.
    let metrics = setup.gateway.metrics().await;
    assert!(
        metrics.contains(
            "rpc_client_call_duration_seconds_count{dependency=\"echo\",rpc_service=\"unknown\",rpc_method=\"unknown\",rpc_grpc_status_code=\"0\"} 1\n"
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn an_unauthenticated_stream_never_opens_upstream() {
    let setup = start().await;
    let mut grpc = echo_client(&setup).await;
    let status = grpc
        .unary(
            tonic::Request::new(b"ping".to_vec()),
            http::uri::PathAndQuery::from_static(ECHO_PATH),
            EncodedBytes,
        )
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    assert!(!setup.gateway.metrics().await.contains("client_attempts_total{dependency=\"echo\"}"));
}
