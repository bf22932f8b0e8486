//! Key rotation at a JWKS URL: the gateway picks up a new key when a token
//! names it, a flood of unknown key ids costs at most one fetch per interval,
//! and a slow issuer keeps waiting only the callers whose key it must supply.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::*;
use jsonwebtoken::{Algorithm, EncodingKey};
use suite_proto::suite::user::v1 as user_pb;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tonic::Code;

/// A loopback HTTP server answering every GET with the current document
/// (after `delay`, to play a slow issuer), counting requests.
struct JwksServer {
    url: String,
    document: Arc<Mutex<String>>,
    delay: Arc<Mutex<Duration>>,
    fetches: Arc<AtomicUsize>,
}

impl JwksServer {
    async fn start(document: String) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/.well-known/jwks.json", listener.local_addr().unwrap());
        let document = Arc::new(Mutex::new(document));
        let fetches = Arc::new(AtomicUsize::new(0));
        let delay = Arc::new(Mutex::new(Duration::ZERO));
        let (served, counted, delayed) = (document.clone(), fetches.clone(), delay.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else { return };
                let (served, counted, delayed) = (served.clone(), counted.clone(), delayed.clone());
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buffer = [0_u8; 1024];
                    while !request.windows(4).any(|window| window == b"\r\n\r\n") {
                        match stream.read(&mut buffer).await {
                            Ok(0) | Err(_) => return,
                            Ok(read) => request.extend_from_slice(&buffer[..read]),
                        }
                    }
                    counted.fetch_add(1, Ordering::SeqCst);
                    let delay = *delayed.lock().unwrap();
                    tokio::time::sleep(delay).await;
                    let body = served.lock().unwrap().clone();
                    let response = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(response.as_bytes()).await;
                });
            }
        });
        Self {
            url,
            document,
            delay,
            fetches,
        }
    }

    /// A gateway taking its keys from this server, fetching at most once per `min_refresh_ms`.
    fn gateway_options(&self, min_refresh_ms: u64) -> GatewayOptions {
        let url = self.url.clone();
        GatewayOptions {
            adjust_auth: Box::new(move |auth| {
                auth.jwks_file = None;
                auth.jwks_url = Some(url);
                auth.jwks_min_refresh_ms = min_refresh_ms;
            }),
            ..GatewayOptions::default()
        }
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

fn es256_jwk(kid: &str, key: &rcgen::KeyPair) -> String {
    let point = key.public_key_raw();
    format!(
        r#"{{"kty":"EC","crv":"P-256","kid":"{kid}","alg":"ES256","use":"sig","x":"{}","y":"{}"}}"#,
        URL_SAFE_NO_PAD.encode(&point[1..33]),
        URL_SAFE_NO_PAD.encode(&point[33..65])
    )
}

/// An admin's token signed with `key`, naming `kid`.
fn es256_token(key: &rcgen::KeyPair, kid: &str) -> String {
    let encoding = EncodingKey::from_ec_pem(key.serialize_pem().as_bytes()).unwrap();
    sign_with(Algorithm::ES256, &encoding, Some(kid), &claims("ops", &["admin"]))
}

/// ListUsers through `gateway` with `token`.
async fn list_users(gateway: &Gateway, token: String) -> Result<tonic::Response<user_pb::ListUsersResponse>, tonic::Status> {
    gateway
        .users()
        .list_users(with_token(user_pb::ListUsersRequest::default(), &token))
        .await
}

#[tokio::test]
async fn a_rotated_key_is_fetched_once_and_unknown_kids_cannot_flood_the_issuer() {
    let services = Services::start().await;
    let first = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let second = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let jwks = JwksServer::start(format!(r#"{{"keys":[{}]}}"#, es256_jwk("k1", &first))).await;
    let gateway = Gateway::start_with(&services, jwks.gateway_options(1_000)).await;
    assert_eq!(jwks.fetches(), 1, "loaded once at start-up");
    let list = |token: String| list_users(&gateway, token);
    list(es256_token(&first, "k1")).await.unwrap();

    // The issuer rotates: k2 appears. The first token naming it triggers a fetch.
    *jwks.document.lock().unwrap() = format!(r#"{{"keys":[{},{}]}}"#, es256_jwk("k1", &first), es256_jwk("k2", &second));
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    list(es256_token(&second, "k2")).await.unwrap();
    assert_eq!(jwks.fetches(), 2);

    // Made-up key ids, right after a fetch: refused without fetching.
    let attacker = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let flood: Vec<_> = (0..50)
        .map(|index| list(es256_token(&attacker, &format!("bogus-{index}"))))
        .collect();
    for result in futures::future::join_all(flood).await {
        assert_eq!(result.unwrap_err().code(), Code::Unauthenticated);
    }
    assert_eq!(jwks.fetches(), 2, "no fetch within the minimum interval");

    // Once the interval has passed, a second flood costs exactly one fetch.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let flood: Vec<_> = (0..50)
        .map(|index| list(es256_token(&attacker, &format!("again-{index}"))))
        .collect();
    for result in futures::future::join_all(flood).await {
        assert_eq!(result.unwrap_err().code(), Code::Unauthenticated);
    }
    assert_eq!(jwks.fetches(), 3, "one fetch for the whole flood");

    // The issuer goes away: the last good keys stay in use.
    *jwks.document.lock().unwrap() = "not json".into();
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let _ = list(es256_token(&attacker, "bogus-again")).await;
    list(es256_token(&second, "k2")).await.unwrap();
    list(es256_token(&first, "k1")).await.unwrap();
}

/// The issuer takes 1.5 s to answer. The caller whose new key started the
/// fetch gives up; the fetch goes on, and everyone who arrives meanwhile with an
/// unknown key id waits for that one fetch together (no queue, no second fetch).
#[tokio::test]
async fn a_slow_issuer_is_fetched_once_for_everyone_and_a_caller_giving_up_cancels_nothing() {
    let services = Services::start().await;
    let first = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let second = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let jwks = JwksServer::start(format!(r#"{{"keys":[{}]}}"#, es256_jwk("k1", &first))).await;
    let gateway = Gateway::start_with(&services, jwks.gateway_options(1_000)).await;
    let list = |token: String| list_users(&gateway, token);
    list(es256_token(&first, "k1")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1_100)).await;

    *jwks.delay.lock().unwrap() = Duration::from_millis(1_500);
    *jwks.document.lock().unwrap() = format!(r#"{{"keys":[{},{}]}}"#, es256_jwk("k1", &first), es256_jwk("k2", &second));
    let impatient = tokio::time::timeout(Duration::from_millis(300), list(es256_token(&second, "k2"))).await;
    assert!(impatient.is_err(), "the issuer answers after 1.5 s");

    let started = std::time::Instant::now();
    let attacker = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let flood: Vec<_> = (0..30)
        .map(|index| list(es256_token(&attacker, &format!("bogus-{index}"))))
        .collect();
    let known = async {
        let started = std::time::Instant::now();
        list(es256_token(&first, "k1")).await.unwrap();
        started.elapsed()
    };
    let (rotated, flood, known) = tokio::join!(list(es256_token(&second, "k2")), futures::future::join_all(flood), known);
    rotated.unwrap();
    assert!(known < Duration::from_millis(1_000), "a known key waited {known:?} on the issuer");
    for result in flood {
        assert_eq!(result.unwrap_err().code(), Code::Unauthenticated);
    }
    assert!(
        started.elapsed() < Duration::from_millis(2_500),
        "callers waited {:?} for a fetch under way for 0.3 s and taking 1.5 s",
        started.elapsed()
    );
    assert_eq!(jwks.fetches(), 2, "one fetch at start-up, one for the rotation");
}

/// The issuer is down while the gateway starts: the gateway runs, refuses every
/// token and reports NOT_SERVING, then serves as soon as the JWKS answers.
#[tokio::test]
async fn a_gateway_started_while_the_jwks_url_is_down_waits_unready_and_recovers() {
    let services = Services::start().await;
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let jwks = JwksServer::start("<html>503 Service Unavailable</html>".into()).await;
    let gateway = Gateway::start_with(
        &services,
        GatewayOptions {
            wait_until_ready: false,
            ..jwks.gateway_options(200)
        },
    )
    .await;
    let health = |name: &'static str| {
        let admin = gateway.running.admin_addr;
        async move {
            let channel = suite_grpc::client::connect_insecure(admin).await.unwrap();
            let reply = tonic_health::pb::health_client::HealthClient::new(channel)
                .check(tonic_health::pb::HealthCheckRequest { service: name.to_owned() })
                .await
                .unwrap();
            reply.into_inner().status
        }
    };
    const SERVING: i32 = 1;
    const NOT_SERVING: i32 = 2;
    let token = es256_token(&key, "k1");
    let list = || list_users(&gateway, token.clone());

    assert_eq!(health("").await, NOT_SERVING, "ready without keys");
    assert_eq!(health(suite_grpc::LIVENESS_SERVICE).await, SERVING);
    assert_eq!(list().await.unwrap_err().code(), Code::Unauthenticated);
    let metrics = gateway.running.metrics().await;
    assert!(
        metrics.contains(r#"gateway_auth_failures_total{reason="keys_unavailable"} 1"#),
        "{metrics}"
    );
    let fetches_while_down = jwks.fetches();
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(jwks.fetches() > fetches_while_down, "no retry while the issuer was down");

    *jwks.document.lock().unwrap() = format!(r#"{{"keys":[{}]}}"#, es256_jwk("k1", &key));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while health("").await != SERVING {
        assert!(std::time::Instant::now() < deadline, "never ready after the JWKS came back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    list().await.unwrap();
}
