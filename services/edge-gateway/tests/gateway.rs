//! The gateway end to end: a real TLS client, tokens signed with real keys,
//! the real user and order services behind it over mutual TLS.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use jsonwebtoken::{Algorithm, EncodingKey};
use suite_proto::suite::order::v1 as order_pb;
use suite_proto::suite::user::v1 as user_pb;
use tonic::Code;

#[tokio::test]
async fn a_user_creates_and_reads_an_order_through_the_gateway() {
    let services = Services::start().await;
    let gateway = Gateway::start(&services).await;
    let user_id = admin_creates_user(&gateway, "buyer@example.com").await;
    let token = gateway.keys.token(&user_id, &[]);

    let me = gateway
        .users()
        .get_user(with_token(user_pb::GetUserRequest { id: user_id.clone() }, &token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(me.user.unwrap().email, "buyer@example.com");

    let created = gateway
        .orders()
        .create_order(with_token(order_request(&user_id, "key-1"), &token))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    assert_eq!(created.total.as_ref().unwrap().amount_minor, 2500);
    let read = gateway
        .orders()
        .get_order(with_token(order_pb::GetOrderRequest { id: created.id.clone() }, &token))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    assert_eq!(read, created);
    let listed = gateway
        .orders()
        .list_orders(with_token(
            order_pb::ListOrdersRequest {
                user_id: user_id.clone(),
                page_size: 10,
                page_token: String::new(),
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.orders, vec![created]);

    // Every token algorithm the gateway allows works.
    for algorithm in [Algorithm::RS256, Algorithm::EdDSA] {
        let token = gateway.keys.sign(algorithm, claims(&user_id, &[]));
        let reply = gateway
            .users()
            .get_user(with_token(user_pb::GetUserRequest { id: user_id.clone() }, &token))
            .await;
        assert!(reply.is_ok(), "{algorithm:?}: {reply:?}");
    }

    // Every upstream call was timed, per upstream, method and status (GetUser: the reads above).
    let metrics = gateway.running.metrics().await;
    for (series, calls) in [
        (
            r#"dependency="user-service",rpc_service="suite.user.v1.UserService",rpc_method="GetUser",rpc_grpc_status_code="0""#,
            3,
        ),
        (
            r#"dependency="order-service",rpc_service="suite.order.v1.OrderService",rpc_method="CreateOrder",rpc_grpc_status_code="0""#,
            1,
        ),
    ] {
        assert!(
            metrics.contains(&format!("rpc_client_call_duration_seconds_count{{{series}}} {calls}\n")),
            "{series} {calls}:\n{metrics}"
        );
    }
}

#[tokio::test]
async fn bad_tokens_are_unauthenticated_and_reach_no_upstream() {
    let services = Services::start().await;
    let gateway = Gateway::start(&services).await;
    let keys = &gateway.keys;
    let user_id = admin_creates_user(&gateway, "victim@example.com").await;
    let calls_before = rpc_count(&services.user_service.metrics().await);

    let other_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let other_key = EncodingKey::from_ec_pem(other_key.serialize_pem().as_bytes()).unwrap();
    let with_claims = |change: &dyn Fn(&mut serde_json::Value)| {
        let mut claims = claims(&user_id, &["admin"]);
        change(&mut claims);
        keys.sign(Algorithm::ES256, claims)
    };
    let unsigned = {
        let header = base64_json(&serde_json::json!({"alg": "none", "typ": "JWT"}));
        let payload = base64_json(&claims(&user_id, &["admin"]));
        format!("{header}.{payload}.")
    };
    // HS256 "signed" with the bytes of a public key the JWKS publishes.
    let confused = sign_with(
        Algorithm::HS256,
        &EncodingKey::from_secret(keys.es256_public_x.as_bytes()),
        Some("es-1"),
        &claims(&user_id, &["admin"]),
    );
    let oversized = with_claims(&|claims| claims["padding"] = serde_json::json!("x".repeat(9 * 1024)));
    let cases: Vec<(&str, Option<String>)> = vec![
        ("missing", None),
        ("malformed", Some("not-a-jwt".into())),
        (
            "bad signature",
            Some(sign_with(Algorithm::ES256, &other_key, Some("es-1"), &claims(&user_id, &["admin"]))),
        ),
        ("alg none", Some(unsigned)),
        ("HS256 with a public key", Some(confused)),
        (
            "unknown kid",
            Some(sign_with(
                Algorithm::ES256,
                &other_key,
                Some("nobody"),
                &claims(&user_id, &["admin"]),
            )),
        ),
        (
            "expired",
            Some(with_claims(&|claims| claims["exp"] = serde_json::json!(now() - 120))),
        ),
        (
            "not yet valid",
            Some(with_claims(&|claims| claims["nbf"] = serde_json::json!(now() + 120))),
        ),
        (
            "wrong issuer",
            Some(with_claims(&|claims| claims["iss"] = serde_json::json!("https://evil.test"))),
        ),
        (
            "wrong audience",
            Some(with_claims(&|claims| claims["aud"] = serde_json::json!("another-api"))),
        ),
        (
            "no exp",
            Some(with_claims(&|claims| drop(claims.as_object_mut().unwrap().remove("exp")))),
        ),
        ("oversized", Some(oversized)),
        // Time claims that are not integers of seconds: refused, never read as absent.
        (
            "nbf a string",
            Some(with_claims(&|claims| claims["nbf"] = serde_json::json!((now() + 3600).to_string()))),
        ),
        ("nbf null", Some(with_claims(&|claims| claims["nbf"] = serde_json::Value::Null))),
        (
            "exp a string",
            Some(with_claims(&|claims| claims["exp"] = serde_json::json!((now() + 3600).to_string()))),
        ),
        (
            "exp a fraction",
            Some(with_claims(&|claims| claims["exp"] = serde_json::json!(now() as f64 + 3600.5))),
        ),
        ("exp negative", Some(with_claims(&|claims| claims["exp"] = serde_json::json!(-1)))),
        (
            "iat a string",
            Some(with_claims(&|claims| claims["iat"] = serde_json::json!("yesterday"))),
        ),
    ];
    for (name, token) in cases {
        let mut request = tonic::Request::new(user_pb::GetUserRequest { id: user_id.clone() });
        if let Some(token) = token {
            request
                .metadata_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
        }
        let status = gateway.users().get_user(request).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{name}: {status:?}");
        assert_eq!(
            status.message(),
            "missing or invalid bearer token",
            "{name}: details stay in the logs"
        );
        // And a write: nothing changes.
        let mut request = tonic::Request::new(create_user_request(&format!("{}@example.com", name.replace(' ', "-"))));
        request.metadata_mut().insert("authorization", "Bearer x".parse().unwrap());
        assert_eq!(
            gateway.users().create_user(request).await.unwrap_err().code(),
            Code::Unauthenticated
        );
    }
    assert_eq!(
        rpc_count(&services.user_service.metrics().await),
        calls_before,
        "no bad token reached the user service"
    );

    let metrics = gateway.running.metrics().await;
    for reason in [
        "missing",
        "malformed",
        "signature",
        "unknown_key",
        "expired",
        "not_yet_valid",
        "issuer",
        "audience",
        "oversized",
        "algorithm",
        "claims",
    ] {
        assert!(
            metrics.contains(&format!("gateway_auth_failures_total{{reason=\"{reason}\"}}")),
            "no {reason} failures counted:\n{metrics}"
        );
    }
}

/// A token whose `exp` is the largest integer a claim can hold is valid until
/// then: verified once and then served from the token cache, whose expiry check
/// adds the leeway without overflowing.
#[tokio::test]
async fn a_token_expiring_at_the_end_of_time_is_accepted_every_time() {
    let services = Services::start().await;
    let gateway = Gateway::start(&services).await;
    let user_id = admin_creates_user(&gateway, "forever@example.com").await;
    let mut forever = claims(&user_id, &[]);
    forever["exp"] = serde_json::json!(u64::MAX);
    let token = gateway.keys.sign(Algorithm::ES256, forever);
    for attempt in 0..3 {
        let reply = gateway
            .users()
            .get_user(with_token(user_pb::GetUserRequest { id: user_id.clone() }, &token))
            .await
            .unwrap_or_else(|status| panic!("attempt {attempt}: {status:?}"));
        assert_eq!(reply.into_inner().user.unwrap().id, user_id);
    }
}

/// One end user sending 1,000 requests the user service cannot decode (a string
/// that is not UTF-8) gets INVALID_ARGUMENT each time, and the gateway's breaker
/// for the user service does not count them: every other user is served as before.
#[tokio::test]
async fn one_users_undecodable_requests_never_open_the_breaker_for_others() {
    let services = Services::start().await;
    let gateway = Gateway::start(&services).await;
    let mallory = admin_creates_user(&gateway, "mallory@example.com").await;
    let alice = admin_creates_user(&gateway, "alice@example.com").await;
    let mallory_token = gateway.keys.token(&mallory, &[]);
    let alice_token = gateway.keys.token(&alice, &[]);

    let mut grpc = tonic::client::Grpc::new(gateway.channel.clone());
    // GetUserRequest.id (field 1) holding two bytes that are not UTF-8: far past
    // the breaker's minimum volume, every one a failure if it were counted.
    for _ in 0..1_000 {
        grpc.ready().await.unwrap();
        let status = grpc
            .unary(
                with_token(vec![0x0a, 0x02, 0xc3, 0x28], &mallory_token),
                http::uri::PathAndQuery::from_static("/suite.user.v1.UserService/GetUser"),
                suite_grpc::codec::EncodedBytes,
            )
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    }
    let reply = gateway
        .users()
        .get_user(with_token(user_pb::GetUserRequest { id: alice.clone() }, &alice_token))
        .await
        .unwrap();
    assert_eq!(reply.into_inner().user.unwrap().id, alice);
    let metrics = gateway.running.metrics().await;
    assert!(
        metrics.contains("client_circuit_state{dependency=\"user-service\"} 0"),
        "the breaker stayed closed:\n{metrics}"
    );
}

/// A flood of forged tokens from one address costs a bounded number of
/// signature checks: past the address's verification budget they are refused
/// RESOURCE_EXHAUSTED before any verification, the same bad token sent again is
/// refused from memory, and a user whose token is already verified, from the same
/// address, is served throughout.
#[tokio::test]
async fn forged_tokens_cost_a_bounded_number_of_verifications() {
    let services = Services::start().await;
    let gateway = Gateway::start_with(
        &services,
        GatewayOptions {
            rate_limit: edge_gateway::config::RateLimitArgs {
                rate_limit_per_second: 10_000.0,
                rate_limit_burst: 10_000.0,
                token_verifications_per_second: 1.0,
                token_verification_burst: 10.0,
                ..Default::default()
            },
            ..GatewayOptions::default()
        },
    )
    .await;
    let alice = admin_creates_user(&gateway, "alice@example.com").await;
    let alice_token = gateway.keys.token(&alice, &[]);
    let get_alice = || {
        let mut users = gateway.users();
        let request = with_token(user_pb::GetUserRequest { id: alice.clone() }, &alice_token);
        async move { users.get_user(request).await }
    };
    get_alice().await.unwrap();
    let verifications = |metrics: &str| -> u64 {
        metrics
            .lines()
            .find_map(|line| line.strip_prefix("gateway_token_verifications_total "))
            .and_then(|count| count.trim().parse().ok())
            .unwrap_or(0)
    };
    let before = verifications(&gateway.running.metrics().await);

    let forger = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let forger = EncodingKey::from_ec_pem(forger.serialize_pem().as_bytes()).unwrap();
    let (mut unauthenticated, mut throttled) = (0, 0);
    for index in 0..60 {
        let forged = sign_with(
            Algorithm::ES256,
            &forger,
            Some("es-1"),
            &claims(&format!("forged-{index}"), &["admin"]),
        );
        let mut users = gateway.users();
        let status = users
            .get_user(with_token(user_pb::GetUserRequest { id: alice.clone() }, &forged))
            .await
            .unwrap_err();
        match status.code() {
            Code::Unauthenticated => unauthenticated += 1,
            Code::ResourceExhausted => {
                assert!(status.metadata().get("retry-after").is_some(), "{status:?}");
                throttled += 1;
            }
            other => panic!("forged token {index}: {other:?} {status:?}"),
        }
        // Alice's token was verified before the flood: she is served all along.
        get_alice().await.unwrap();
    }
    assert!(
        throttled >= 45,
        "{unauthenticated} refused after verification, {throttled} before any"
    );
    // The same forged token over and over: remembered as refused, verified at most once more.
    let forged = sign_with(Algorithm::ES256, &forger, Some("es-1"), &claims("again", &["admin"]));
    tokio::time::sleep(Duration::from_secs(2)).await;
    for _ in 0..20 {
        let status = gateway
            .users()
            .get_user(with_token(user_pb::GetUserRequest { id: alice.clone() }, &forged))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    }
    let spent = verifications(&gateway.running.metrics().await) - before;
    assert!(spent <= 15, "{spent} signature checks for 80 forged calls");
}

/// Two end users holding calls whose request bodies never finish get as many as
/// their cap and then RESOURCE_EXHAUSTED at once; every other user is served
/// meanwhile, and a place is free again once a held call lets go.
#[tokio::test]
async fn calls_held_open_count_against_their_own_subject_only() {
    const CAP: usize = 4;
    let services = Services::start().await;
    let gateway = Gateway::start_with(
        &services,
        GatewayOptions {
            rate_limit: edge_gateway::config::RateLimitArgs {
                rate_limit_per_second: 10_000.0,
                rate_limit_burst: 10_000.0,
                max_in_flight_per_subject: CAP as u32,
                ..Default::default()
            },
            ..GatewayOptions::default()
        },
    )
    .await;
    let alice = admin_creates_user(&gateway, "alice@example.com").await;
    let alice_token = gateway.keys.token(&alice, &[]);
    let holders: Vec<String> = ["mallory", "trudy"].iter().map(|name| gateway.keys.token(name, &[])).collect();

    // A GetUser whose request body never comes: HEADERS, and then nothing.
    let held_call = |token: String| {
        let channel = gateway.channel.clone();
        async move {
            let mut grpc = tonic::client::Grpc::new(channel);
            grpc.ready().await.unwrap();
            let body = futures::stream::pending::<Vec<u8>>();
            grpc.streaming(
                with_token(body, &token),
                http::uri::PathAndQuery::from_static("/suite.user.v1.UserService/GetUser"),
                suite_grpc::codec::EncodedBytes,
            )
            .await
            .map(drop)
        }
    };
    let mut held = Vec::new();
    for token in &holders {
        for _ in 0..CAP {
            held.push(tokio::spawn(held_call(token.clone())));
        }
    }
    let in_flight = |metrics: String| -> u64 {
        metrics
            .lines()
            .filter(|line| line.starts_with("rpc_server_active_calls{") || line.starts_with("rpc_server_calls_in_flight{"))
            .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum::<f64>() as u64
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while in_flight(gateway.running.metrics().await) < (CAP * holders.len()) as u64 {
        assert!(
            Instant::now() < deadline,
            "the held calls never got in flight:\n{}",
            gateway.running.metrics().await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    for token in &holders {
        let status = tokio::time::timeout(Duration::from_secs(5), held_call(token.clone()))
            .await
            .expect("refused at once, not held")
            .unwrap_err();
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    }
    for _ in 0..20 {
        let started = Instant::now();
        gateway
            .users()
            .get_user(with_token(user_pb::GetUserRequest { id: alice.clone() }, &alice_token))
            .await
            .unwrap();
        assert!(started.elapsed() < Duration::from_secs(2), "alice waited {:?}", started.elapsed());
    }

    // One of mallory's held calls lets go: she may start another.
    held.remove(0).abort();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut users = gateway.users();
        let outcome = users
            .get_user(with_token(user_pb::GetUserRequest { id: alice.clone() }, &holders[0]))
            .await;
        match outcome {
            // Mallory is not Alice: once admitted, the user service refuses her.
            Err(status) if status.code() == Code::PermissionDenied => break,
            Err(status) if status.code() == Code::ResourceExhausted => {
                assert!(Instant::now() < deadline, "the place was never freed");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => panic!("{other:?}"),
        }
    }
    held.into_iter().for_each(|call| call.abort());
}

/// A request body that stops sending is cut off after the idle timeout:
/// DEADLINE_EXCEEDED for that caller, its upstream stream released, and the
/// breaker does not count it, however many there are.
#[tokio::test]
async fn a_stalled_request_body_is_cut_off_and_never_counted_against_the_upstream() {
    let services = Services::start().await;
    let gateway = Gateway::start_with(
        &services,
        GatewayOptions {
            request_body_idle_timeout_ms: 200,
            ..GatewayOptions::default()
        },
    )
    .await;
    let alice = admin_creates_user(&gateway, "alice@example.com").await;
    let alice_token = gateway.keys.token(&alice, &[]);
    let mallory = gateway.keys.token("mallory", &[]);

    let stalled = (0..30).map(|_| {
        let channel = gateway.channel.clone();
        let token = mallory.clone();
        async move {
            let mut grpc = tonic::client::Grpc::new(channel);
            grpc.ready().await.unwrap();
            let started = Instant::now();
            let status = grpc
                .streaming(
                    with_token(futures::stream::pending::<Vec<u8>>(), &token),
                    http::uri::PathAndQuery::from_static("/suite.user.v1.UserService/GetUser"),
                    suite_grpc::codec::EncodedBytes,
                )
                .await
                .map(drop)
                .unwrap_err();
            (status, started.elapsed())
        }
    });
    let outcomes = tokio::time::timeout(Duration::from_secs(10), futures::future::join_all(stalled))
        .await
        .expect("every stalled call is cut off");
    for (status, waited) in outcomes {
        assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
        assert!(waited >= Duration::from_millis(200), "cut off after {waited:?}");
    }
    let metrics = gateway.running.metrics().await;
    assert!(
        metrics.contains("client_circuit_state{dependency=\"user-service\"} 0"),
        "the breaker stayed closed:\n{metrics}"
    );
    assert!(
        metrics.contains("gateway_upstream_errors_total{upstream=\"user-service\",kind=\"body_stalled\"} 30"),
        "{metrics}"
    );
    // A call whose body arrives whole is not affected.
    gateway
        .users()
        .get_user(with_token(user_pb::GetUserRequest { id: alice.clone() }, &alice_token))
        .await
        .unwrap();
}

/// Calls the user service's API has finished, from its RPC metrics.
fn rpc_count(metrics: &str) -> u64 {
    metrics
        .lines()
        .filter(|line| line.starts_with("rpc_server_call_duration_seconds_count{rpc_service=\"suite.user.v1.UserService\""))
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<u64>().ok())
        .sum()
}

fn base64_json(value: &serde_json::Value) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap())
}

#[tokio::test]
async fn end_users_reach_only_their_own_records_and_cannot_forge_identity() {
    let services = Services::start().await;
    let gateway = Gateway::start(&services).await;
    let alice = admin_creates_user(&gateway, "alice@example.com").await;
    let bob = admin_creates_user(&gateway, "bob@example.com").await;
    let alice_token = gateway.keys.token(&alice, &[]);
    let bob_token = gateway.keys.token(&bob, &[]);
    let bobs_order = gateway
        .orders()
        .create_order(with_token(order_request(&bob, "bob-1"), &bob_token))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();

    // Alice claims to be Bob, and an admin, in the headers the gateway owns.
    let mut forged = with_token(user_pb::GetUserRequest { id: bob.clone() }, &alice_token);
    forged.metadata_mut().insert("x-suite-subject", bob.parse().unwrap());
    forged.metadata_mut().insert("x-suite-roles", "admin".parse().unwrap());
    let status = gateway.users().get_user(forged).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");

    // Bob's order is hidden from Alice: the same answer as an order that does not exist.
    let missing = "01900000-0000-7000-8000-000000000000".to_owned();
    for id in [&bobs_order.id, &missing] {
        let read = gateway
            .orders()
            .get_order(with_token(order_pb::GetOrderRequest { id: id.clone() }, &alice_token))
            .await
            .unwrap_err();
        let cancel = gateway
            .orders()
            .cancel_order(with_token(
                order_pb::CancelOrderRequest {
                    id: id.clone(),
                    version: None,
                },
                &alice_token,
            ))
            .await
            .unwrap_err();
        for status in [read, cancel] {
            assert_eq!(status.code(), Code::NotFound, "{status:?}");
            assert_eq!(status.message(), format!("order {id} not found"), "{status:?}");
        }
    }

    let denied = [
        gateway
            .orders()
            .create_order(with_token(order_request(&bob, "alice-for-bob"), &alice_token))
            .await
            .map(drop),
        gateway
            .users()
            .list_users(with_token(user_pb::ListUsersRequest::default(), &alice_token))
            .await
            .map(drop),
        gateway
            .users()
            .create_user(with_token(create_user_request("mallory@example.com"), &alice_token))
            .await
            .map(drop),
    ];
    for (index, result) in denied.into_iter().enumerate() {
        assert_eq!(result.unwrap_err().code(), Code::PermissionDenied, "call {index}");
    }
    // Nothing changed: Bob's order is still pending.
    let still = gateway
        .orders()
        .get_order(with_token(order_pb::GetOrderRequest { id: bobs_order.id.clone() }, &bob_token))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    assert_eq!(still, bobs_order);

    // An admin may read anyone's records.
    let admin = gateway.keys.token("ops", &["admin"]);
    gateway
        .users()
        .get_user(with_token(user_pb::GetUserRequest { id: bob.clone() }, &admin))
        .await
        .unwrap();
    gateway
        .orders()
        .get_order(with_token(order_pb::GetOrderRequest { id: bobs_order.id }, &admin))
        .await
        .unwrap();
}

#[tokio::test]
async fn rate_limits_per_subject_with_retry_information() {
    let services = Services::start().await;
    let gateway = Gateway::start_with(
        &services,
        GatewayOptions {
            rate_limit: edge_gateway::config::RateLimitArgs {
                rate_limit_per_second: 10.0,
                rate_limit_burst: 20.0,
                ..Default::default()
            },
            ..GatewayOptions::default()
        },
    )
    .await;
    let busy = gateway.keys.token("busy", &["admin"]);
    let calm = gateway.keys.token("calm", &["admin"]);
    let get = |token: String| {
        let mut users = gateway.users();
        async move {
            users
                .get_user(with_token(
                    user_pb::GetUserRequest {
                        id: "0190b2a4-9f6c-7cc3-a3a5-3d1b0f7b6b6b".into(),
                    },
                    &token,
                ))
                .await
        }
    };
    // The burst: 20 pass (to NOT_FOUND, the user does not exist), then refusals.
    let started = Instant::now();
    let mut passed = 0;
    let mut refused = None;
    let mut dry_at = started;
    for _ in 0..40 {
        match get(busy.clone()).await {
            Err(status) if status.code() == Code::ResourceExhausted => {
                refused = Some(status);
                dry_at = Instant::now();
            }
            Err(status) if status.code() == Code::NotFound => passed += 1,
            other => panic!("{other:?}"),
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    // The bucket refills at 10/s while the loop runs.
    let allowed = 20.0 + 10.0 * elapsed;
    assert!(
        passed >= 20 && f64::from(passed) <= allowed + 1.0,
        "{passed} passed in {elapsed:.2}s"
    );
    let refused = refused.expect("the burst must run out");
    let pushback: u64 = refused
        .metadata()
        .get("grpc-retry-pushback-ms")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(pushback > 0 && pushback <= 100, "{pushback} ms");
    assert_eq!(refused.metadata().get("retry-after").unwrap(), "1");

    // Another subject has its own bucket.
    assert_eq!(get(calm.clone()).await.unwrap_err().code(), Code::NotFound);

    // The steady rate: 10 per second from the moment the bucket was last found dry.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let mut steady = 0;
    for _ in 0..30 {
        if get(busy.clone()).await.is_err_and(|status| status.code() == Code::NotFound) {
            steady += 1;
        }
    }
    let refilled = 10.0 * dry_at.elapsed().as_secs_f64();
    assert!(
        // Less than a token may be left over at each end of the interval.
        f64::from(steady) >= refilled - 3.0 && f64::from(steady) <= refilled + 2.0,
        "{steady} passed, {refilled:.1} tokens refilled"
    );
    assert!(
        gateway
            .running
            .metrics()
            .await
            .contains("gateway_rate_limited_total{key=\"subject\"}")
    );
}

#[tokio::test]
async fn unknown_services_and_oversized_messages_are_refused() {
    let services = Services::start().await;
    let gateway = Gateway::start(&services).await;
    let token = gateway.keys.token("ops", &["admin"]);

    // Unknown service.
    let mut grpc = tonic::client::Grpc::new(gateway.channel.clone());
    grpc.ready().await.unwrap();
    let status = grpc
        .unary(
            with_token(Vec::<u8>::new(), &token),
            http::uri::PathAndQuery::from_static("/acme.v1.Nothing/Do"),
            suite_grpc::codec::EncodedBytes,
        )
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");

    // Methods a routed service does not have, however spelt, are refused at the
    // gateway: nothing reaches the user service, and the answer repeats nothing.
    // Every call the user service answered, whatever its path (unknown ones are labelled `unknown`).
    let all_calls = |metrics: String| -> u64 {
        metrics
            .lines()
            .filter(|line| line.starts_with("rpc_server_call_duration_seconds_count{") && !line.contains("grpc.health.v1.Health"))
            .filter_map(|line| line.rsplit_once(' ')?.1.parse::<u64>().ok())
            .sum()
    };
    let calls_before = all_calls(services.user_service.metrics().await);
    for path in [
        "/suite.user.v1.UserService/NoSuchMethod",
        "/suite.user.v1.UserService/../x",
        "/suite.user.v1.UserService/Get%55ser",
        "/suite.user.v1.UserService/GetUser/x",
    ] {
        grpc.ready().await.unwrap();
        let status = grpc
            .unary(
                with_token(Vec::<u8>::new(), &token),
                http::uri::PathAndQuery::from_static(path),
                suite_grpc::codec::EncodedBytes,
            )
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unimplemented, "{path}: {status:?}");
        assert_eq!(status.message(), "unknown method", "{path}");
    }
    assert_eq!(
        all_calls(services.user_service.metrics().await),
        calls_before,
        "no unknown method reached the user service"
    );

    // A message over the 256 KiB limit never reaches the user service.
    let huge = user_pb::CreateUserRequest {
        email: "huge@example.com".into(),
        display_name: "x".repeat(300 * 1024),
    };
    let status = gateway
        .users()
        .max_encoding_message_size(usize::MAX)
        .create_user(with_token(huge, &token))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let listed = gateway
        .users()
        .list_users(with_token(user_pb::ListUsersRequest::default(), &token))
        .await
        .unwrap()
        .into_inner();
    assert!(listed.users.is_empty());
}

#[tokio::test]
async fn an_upstream_that_is_down_fails_fast_and_the_others_keep_working() {
    let services = Services::start().await;
    // Nothing listens there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let gateway = Gateway::start_with(
        &services,
        GatewayOptions {
            order_address: Some(closed.to_string()),
            ..GatewayOptions::default()
        },
    )
    .await;
    let token = gateway.keys.token("ops", &["admin"]);
    for _ in 0..5 {
        let started = Instant::now();
        let status = gateway
            .orders()
            .get_order(with_token(
                order_pb::GetOrderRequest {
                    id: "0190b2a4-9f6c-7cc3-a3a5-3d1b0f7b6b6b".into(),
                },
                &token,
            ))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    }
    // After three failures the breaker is open: refusals are immediate.
    let started = Instant::now();
    let status = gateway
        .orders()
        .get_order(with_token(order_pb::GetOrderRequest { id: String::new() }, &token))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert!(started.elapsed() < Duration::from_millis(200), "{:?}", started.elapsed());
    assert!(
        gateway
            .running
            .metrics()
            .await
            .contains("client_circuit_state{dependency=\"order-service\"} 1")
    );
    // The user service is unaffected.
    gateway
        .users()
        .list_users(with_token(user_pb::ListUsersRequest::default(), &token))
        .await
        .unwrap();
}

#[tokio::test]
async fn health_and_reflection_need_no_token_and_list_every_routed_service() {
    let services = Services::start().await;
    let gateway = Gateway::start(&services).await;
    let health = tonic_health::pb::health_client::HealthClient::new(gateway.channel.clone())
        .check(tonic_health::pb::HealthCheckRequest { service: String::new() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(health.status, 1);

    use tokio_stream::StreamExt as _;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::{ServerReflectionRequest, ServerReflectionResponse};
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut replies = ServerReflectionClient::new(gateway.channel.clone())
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let reply: ServerReflectionResponse = replies.next().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
        panic!("{reply:?}")
    };
    let names: Vec<String> = list.service.into_iter().map(|service| service.name).collect();
    for expected in ["suite.user.v1.UserService", "suite.order.v1.OrderService", "grpc.health.v1.Health"] {
        assert!(names.iter().any(|name| name == expected), "{expected} missing from {names:?}");
    }
}
