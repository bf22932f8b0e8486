//! The HTTP/2 rapid-reset pattern: a client that opens streams and cancels
//! them at once, as fast as it can, is cut off; other clients do not notice.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use suite_proto::suite::user::v1 as user_pb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_resetting_streams_in_a_flood_is_cut_off_and_others_carry_on() {
    let services = Services::start().await;
    let gateway = Gateway::start(&services).await;
    let token = gateway.keys.token("ops", &["admin"]);

    // A well-behaved client keeps calling throughout.
    let steady = {
        let mut users = gateway.users();
        let token = token.clone();
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
    };

    let tls = services
        .pki
        .raw_client(None)
        .connect(gateway.running.grpc_addr.port())
        .await
        .unwrap();
    let (mut client, connection) = h2::client::handshake(tls).await.unwrap();
    let connection = tokio::spawn(connection);
    let mut opened = 0;
    let cut_off = loop {
        let request = http::Request::post(format!("https://localhost/{}", "suite.user.v1.UserService/ListUsers"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header("authorization", format!("Bearer {token}"))
            .body(())
            .unwrap();
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
