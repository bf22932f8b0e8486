//! Connection-level defences: a client flooding the HTTP/2 rapid-reset pattern
//! is cut off without harming others, and idle connections are closed while
//! connections with a stream in progress are not.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use suite_proto::suite::user::v1 as user_pb;

/// A client calling ListUsers for two seconds; every call must succeed. Yields the number of calls.
fn steady_client(gateway: &Gateway, token: &str) -> tokio::task::JoinHandle<u32> {
    let mut users = gateway.users();
    let token = token.to_owned();
    tokio::spawn(async move {
        let until = Instant::now() + Duration::from_secs(2);
        let mut calls = 0;
        while Instant::now() < until {
            users
                .list_users(with_token(user_pb::ListUsersRequest::default(), &token))
                .await
                .unwrap();
            calls += 1;
        }
        calls
    })
}

/// A raw HTTP/2 client over TLS to the gateway, and its connection's task.
async fn raw_connection(
    services: &Services,
    gateway: &Gateway,
) -> (
    h2::client::SendRequest<bytes::Bytes>,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
) {
    let tls = services
        .pki
        .raw_client(None)
        .connect(gateway.running.grpc_addr.port())
        .await
        .unwrap();
    let (client, connection) = h2::client::handshake(tls).await.unwrap();
    (client, tokio::spawn(connection))
}

/// The head of a ListUsers call, as a raw client sends it.
fn list_users_request(token: &str) -> http::Request<()> {
    http::Request::post("https://localhost/suite.user.v1.UserService/ListUsers")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("authorization", format!("Bearer {token}"))
        .body(())
        .unwrap()
}

/// An empty ListUsersRequest as a gRPC message: a complete call body.
const EMPTY_MESSAGE: &[u8] = &[0, 0, 0, 0, 0];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_resetting_streams_in_a_flood_is_cut_off_and_others_carry_on() {
    let services = Services::start().await;
    let gateway = Gateway::start(&services).await;
    let token = gateway.keys.token("ops", &["admin"]);

    // A well-behaved client keeps calling throughout.
    let steady = steady_client(&gateway, &token);

    let (mut client, connection) = raw_connection(&services, &gateway).await;
    let mut opened = 0;
    let cut_off = loop {
        // An outside attacker: no valid token, so nothing it sends is forwarded upstream.
        let request = list_users_request("not-a-token");
        let ready = match tokio::time::timeout(Duration::from_secs(5), client.ready()).await {
            Ok(Ok(ready)) => ready,
            Ok(Err(error)) => break error,
            Err(_) => panic!("the connection neither served nor closed"),
        };
        client = ready;
        match client.send_request(request, false) {
            Ok((_, mut stream)) => stream.send_reset(h2::Reason::CANCEL),
            Err(error) => break error,
        }
        opened += 1;
        assert!(opened < 100_000, "the gateway never cut the flooding connection off");
    };
    let closed = tokio::time::timeout(Duration::from_secs(5), connection).await.unwrap().unwrap();
    assert!(closed.is_err(), "the connection ended with an error: {closed:?}");
    assert!(
        cut_off.is_go_away() || cut_off.is_io() || cut_off.is_remote(),
        "cut off after {opened} streams: {cut_off:?}"
    );

    eprintln!("cut off after {opened} streams: {cut_off}");
    let calls = steady.await.unwrap();
    assert!(calls > 0, "the other client was starved");
    // And new clients are served.
    gateway
        .users()
        .list_users(with_token(user_pb::ListUsersRequest::default(), &token))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authenticated_clients_resetting_forwarded_calls_do_not_break_the_shared_upstream_connection() {
    let services = Services::start().await;
    let gateway = Gateway::start(&services).await;
    let token = gateway.keys.token("ops", &["admin"]);

    // Every call of the well-behaved client must succeed while the flood runs:
    // they share the gateway's one connection to the user service with it.
    let steady = steady_client(&gateway, &token);

    // Insiders with a valid token: each call is complete, so the gateway
    // forwards it upstream, and then reset at once.
    let mut attackers = Vec::new();
    for _ in 0..4 {
        let (mut client, _connection) = raw_connection(&services, &gateway).await;
        let token = token.clone();
        attackers.push(tokio::spawn(async move {
            let until = Instant::now() + Duration::from_millis(1_500);
            let mut reset = 0_u32;
            while Instant::now() < until {
                let Ok(Ok(ready)) = tokio::time::timeout(Duration::from_secs(5), client.ready()).await else {
                    break;
                };
                client = ready;
                let Ok((_, mut stream)) = client.send_request(list_users_request(&token), false) else {
                    break;
                };
                let _ = stream.send_data(bytes::Bytes::from_static(EMPTY_MESSAGE), true);
                tokio::task::yield_now().await;
                stream.send_reset(h2::Reason::CANCEL);
                reset += 1;
            }
            reset
        }));
    }
    let mut reset = 0;
    for attacker in attackers {
        reset += attacker.await.unwrap();
    }
    let calls = steady.await.unwrap();
    eprintln!("{reset} forwarded calls reset by their clients; {calls} steady calls, all answered");
    assert!(reset > 100, "the flood hardly ran: {reset} resets");
    assert!(calls > 0, "the other client was starved");
    gateway
        .users()
        .list_users(with_token(user_pb::ListUsersRequest::default(), &token))
        .await
        .unwrap();
    // The gateway's connection to the user service lived through it all: the
    // service accepted one TLS handshake from it, not one per reconnection.
    let metrics = services.user_service.metrics().await;
    let accepted = suite_testkit::metric_value(&metrics, "tls_server_handshakes_total{outcome=\"accepted\"}");
    assert_eq!(accepted, Some(1.0), "the user service's accepted handshakes");
}

#[tokio::test]
async fn idle_connections_are_closed_and_busy_ones_are_not() {
    let services = Services::start().await;
    let gateway = Gateway::start_with(
        &services,
        GatewayOptions {
            server: suite_grpc::ServerConfig {
                idle_timeout_ms: 300,
                ..test_server_config()
            },
            ..GatewayOptions::default()
        },
    )
    .await;
    let token = gateway.keys.token("ops", &["admin"]);

    // Nothing sent after the handshake: closed after the idle timeout.
    let (_idle_client, idle) = raw_connection(&services, &gateway).await;
    let closed_at = Instant::now();
    tokio::time::timeout(Duration::from_secs(3), idle)
        .await
        .expect("an idle connection must be closed")
        .unwrap()
        .ok();
    assert!(closed_at.elapsed() >= Duration::from_millis(250), "{:?}", closed_at.elapsed());

    // A stream held open (a request whose body never ends) keeps its connection well past the timeout.
    let (client, busy) = raw_connection(&services, &gateway).await;
    let mut client = client.ready().await.unwrap();
    let (response, mut body) = client.send_request(list_users_request(&token), false).unwrap();
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert!(!busy.is_finished(), "a connection with an open stream was closed as idle");
    // The call completes normally once its message arrives.
    body.send_data(bytes::Bytes::from_static(EMPTY_MESSAGE), true).unwrap();
    let response = tokio::time::timeout(Duration::from_secs(5), response).await.unwrap().unwrap();
    assert_eq!(response.status(), 200);
    let mut response_body = response.into_body();
    while let Some(chunk) = response_body.data().await {
        chunk.unwrap();
    }
    let trailers = response_body.trailers().await.unwrap().unwrap();
    assert_eq!(trailers.get("grpc-status").unwrap(), "0");
    // Then idle again: closed.
    tokio::time::timeout(Duration::from_secs(3), busy)
        .await
        .expect("the connection must be closed once idle")
        .unwrap()
        .ok();
}
