//! Maximum connection age (`MAX_CONNECTION_AGE_MS`): a server tells each
//! connection to go away once it is old enough, its calls in flight finish, and
//! the client's next call opens a new connection. Behind one address (a
//! ClusterIP Service, here `ServiceProxy`) that new connection may land on
//! another replica, so even a client that knows one address spreads its calls.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{AppSettings, TestApp, TestDb, spawn_app_with};
use suite_proto::suite::user::v1 as pb;
use suite_testkit::ServiceProxy;
use tonic::Code;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::{ServerReflectionRequest, server_reflection_response::MessageResponse};

async fn app_with_connection_age(age_ms: u64) -> (TestApp, TestDb) {
    let db = TestDb::sqlite();
    let mut settings = AppSettings::new(db.config());
    settings.server.max_connection_age_ms = age_ms;
    settings.server.max_connection_age_grace_ms = 10_000;
    (spawn_app_with(settings).await, db)
}

fn list_services() -> ServerReflectionRequest {
    ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    }
}

/// GetUser of a user nobody created: NOT_FOUND, and one call counted by the server.
/// A call that met its connection going away before the server took it (tonic's
/// client reports it CANCELLED, or INTERNAL naming the GOAWAY) is sent once
/// more, as a gRPC client's transparent retry would; returns whether that was needed.
async fn get_missing_user(client: &mut pb::user_service_client::UserServiceClient<tonic::transport::Channel>) -> bool {
    for attempt in 0..2 {
        let status = client
            .get_user(pb::GetUserRequest {
                id: uuid::Uuid::now_v7().to_string(),
            })
            .await
            .unwrap_err();
        if suite_grpc::client::never_processed(&status) && attempt == 0 {
            continue;
        }
        assert_eq!(status.code(), Code::NotFound, "{status:?}");
        return attempt > 0;
    }
    unreachable!("the loop returns or panics")
}

/// GetUser calls `app` has answered, from its own metrics.
async fn get_user_calls(app: &TestApp) -> u64 {
    app.metrics()
        .await
        .lines()
        .filter(|line| line.starts_with("rpc_server_call_duration_seconds_count{") && line.contains(r#"rpc_method="GetUser""#))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|count| count as u64)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aged_connection_finishes_its_streaming_call_and_the_next_call_opens_a_new_one() {
    let (app, _db) = app_with_connection_age(400).await;
    let proxy = ServiceProxy::start(vec![app.grpc_addr]).await.unwrap();
    let channel = suite_grpc::client::connect_insecure(proxy.addr()).await.unwrap();

    // A bidirectional stream (server reflection), open across the connection's age.
    let (requests, queued) = tokio::sync::mpsc::channel(4);
    requests.send(list_services()).await.unwrap();
    let mut responses = ServerReflectionClient::new(channel.clone())
        .server_reflection_info(tokio_stream::wrappers::ReceiverStream::new(queued))
        .await
        .unwrap()
        .into_inner();
    let answered = |response: Option<tonic_reflection::pb::v1::ServerReflectionResponse>| {
        matches!(
            response.and_then(|response| response.message_response),
            Some(MessageResponse::ListServicesResponse(_))
        )
    };
    assert!(answered(responses.message().await.unwrap()));
    tokio::time::sleep(Duration::from_millis(1_000)).await;

    // Past its age the connection has been told to go away, yet the call in flight goes on.
    requests.send(list_services()).await.unwrap();
    assert!(answered(responses.message().await.unwrap()), "the streaming call survives GOAWAY");
    drop(requests);
    assert!(responses.message().await.unwrap().is_none(), "the stream ends normally");
    assert_eq!(proxy.connections(), 1, "no new connection while the old one was busy");
    // With its last call done the server closes the aged connection; once the
    // client has closed its end too, it knows to open a new one (a call sent in
    // between meets the closing connection, which `get_missing_user` resends).
    assert!(proxy.until_idle(Duration::from_secs(5)).await, "the aged connection closes");

    // The next call succeeds, on a new connection.
    assert!(
        !get_missing_user(&mut pb::user_service_client::UserServiceClient::new(channel)).await,
        "sent at once"
    );
    assert_eq!(proxy.connections(), 2, "the next call opened a new connection");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_through_one_address_spread_over_the_replicas_once_connections_age() {
    let mut apps = Vec::new();
    for _ in 0..3 {
        apps.push(app_with_connection_age(300).await);
    }
    let proxy = ServiceProxy::start(apps.iter().map(|(app, _)| app.grpc_addr).collect())
        .await
        .unwrap();
    let channel = suite_grpc::client::connect_insecure(proxy.addr()).await.unwrap();
    let mut client = pb::user_service_client::UserServiceClient::new(channel);
    let started = std::time::Instant::now();
    let (mut calls, mut resent) = (0_u64, 0_u64);
    while started.elapsed() < Duration::from_secs(3) {
        resent += u64::from(get_missing_user(&mut client).await);
        calls += 1;
    }
    // Only a call caught by a connection going away is sent twice.
    assert!(
        resent <= proxy.connections() as u64,
        "{resent} resent over {} connections",
        proxy.connections()
    );
    let mut served = Vec::new();
    for (app, _) in &apps {
        served.push(get_user_calls(app).await);
    }
    assert_eq!(served.iter().sum::<u64>(), calls, "{served:?}");
    assert!(proxy.connections() >= 4, "connections were renewed: {}", proxy.connections());
    for count in &served {
        assert!(
            *count * 10 >= calls,
            "every replica gets calls once connections age: {served:?} of {calls}"
        );
    }
    for (app, _) in apps {
        app.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_still_running_after_the_grace_is_cut_with_its_connection() {
    let db = TestDb::sqlite();
    let mut settings = AppSettings::new(db.config());
    settings.server.max_connection_age_ms = 300;
    settings.server.max_connection_age_grace_ms = 300;
    let app = spawn_app_with(settings).await;
    let channel = suite_grpc::client::connect_insecure(app.grpc_addr).await.unwrap();
    let (requests, queued) = tokio::sync::mpsc::channel(4);
    requests.send(list_services()).await.unwrap();
    let mut responses = ServerReflectionClient::new(channel.clone())
        .server_reflection_info(tokio_stream::wrappers::ReceiverStream::new(queued))
        .await
        .unwrap()
        .into_inner();
    assert!(responses.message().await.unwrap().is_some());
    // Age (at most 330 ms) plus grace (300 ms) later the connection is closed under the call.
    let cut = tokio::time::timeout(Duration::from_secs(5), responses.message()).await;
    assert!(matches!(cut, Ok(Err(_))), "the stream ends in an error: {cut:?}");
    drop(requests);
    // The channel reconnects for the next call.
    get_missing_user(&mut pb::user_service_client::UserServiceClient::new(channel)).await;
    app.stop().await;
}
