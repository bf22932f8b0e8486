//! Properties of what the gateway reads from a request before forwarding it:
//! the method path (`RouteTable::route`) and the `grpc-timeout` header (read
//! and re-encoded by `Proxy::forward`). Any path or header value, never a panic;
//! only `/package.Service/Method` of a known method routes, and the upstream
//! gets the caller's deadline less the time spent, in at most 8 digits.
//!
//! Cases per property: `PROPTEST_CASES` (10,000, set in `.cargo/config.toml`).

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use edge_gateway::error::GatewayError;
use edge_gateway::metrics::GatewayMetrics;
use edge_gateway::proxy::Proxy;
use edge_gateway::routes::{RouteTable, RoutesConfig};
use http::HeaderValue;
use prometheus_client::registry::Registry;
use proptest::prelude::*;
use suite_grpc::client::Dial;
use suite_grpc::method_paths;

/// A routed service no descriptor set describes: any identifier is a method of it.
const UNDESCRIBED: &str = "acme.v1.Undescribed";
/// The service the proxy's calls go to.
const ECHO: &str = "test.echo.v1.Echo";

/// An upstream that answers every call at once (trailers only, OK) and reports
/// the `grpc-timeout` it received in `x-received-grpc-timeout`.
async fn echo_upstream() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut connection) = h2::server::handshake(stream).await else {
                    return;
                };
                while let Some(Ok((request, mut respond))) = connection.accept().await {
                    let mut response = http::Response::builder()
                        .header("content-type", "application/grpc")
                        .header("grpc-status", "0");
                    if let Some(timeout) = request.headers().get("grpc-timeout") {
                        response = response.header("x-received-grpc-timeout", timeout);
                    }
                    let _ = respond.send_response(response.body(()).unwrap(), true);
                }
            });
        }
    });
    addr
}

/// The route table (user and order services as described by the suite's
/// descriptors, an undescribed service, and the echo upstream), the proxy, and
/// the runtime they run on.
struct Fixture {
    runtime: tokio::runtime::Runtime,
    table: RouteTable,
    proxy: Proxy,
    /// `/package.Service/Method` of every method the table routes by descriptor.
    described: BTreeSet<String>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let table = runtime.block_on(async {
            let echo = echo_upstream().await;
            let config = RoutesConfig::from_toml(&format!(
                r#"
                [[upstreams]]
                name = "user-service"
                address = "127.0.0.1:1"
                services = ["suite.user.v1.UserService", "{UNDESCRIBED}"]

                [[upstreams]]
                name = "order-service"
                address = "127.0.0.1:1"
                services = ["suite.order.v1.OrderService"]

                [[upstreams]]
                name = "echo"
                address = "{echo}"
                services = ["{ECHO}"]
                "#
            ))
            .unwrap();
            RouteTable::build(&config, &mut Registry::default(), Duration::from_secs(3600), |_| {
                Ok(Dial::Plaintext)
            })
            .unwrap()
            .with_known_methods(method_paths(suite_proto::FILE_DESCRIPTOR_SET))
        });
        let routed = ["suite.user.v1.UserService", "suite.order.v1.OrderService"];
        let described = method_paths(suite_proto::FILE_DESCRIPTOR_SET)
            .into_iter()
            .filter(|path| {
                routed.iter().any(|service| {
                    path.strip_prefix('/')
                        .and_then(|rest| rest.strip_prefix(service))
                        .is_some_and(|rest| rest.starts_with('/'))
                })
            })
            .collect();
        Fixture {
            runtime,
            table,
            proxy: Proxy::new(
                4 * 1024 * 1024,
                Duration::ZERO,
                GatewayMetrics::default(),
                method_paths(suite_proto::FILE_DESCRIPTOR_SET),
            ),
            described,
        }
    })
}

/// The upstream a path must route to, by the rules.
fn route_by_the_rules(fixture: &Fixture, path: &str) -> Option<&'static str> {
    if fixture.described.contains(path) {
        return Some(if path.starts_with("/suite.user.") {
            "user-service"
        } else {
            "order-service"
        });
    }
    let identifier = |name: &str| {
        let mut bytes = name.bytes();
        bytes.next().is_some_and(|first| first.is_ascii_alphabetic() || first == b'_')
            && bytes.all(|byte| byte.is_ascii_alphanumeric() || byte == b'_')
    };
    let rest = path.strip_prefix('/')?;
    let (service, method) = rest.split_once('/')?;
    match service {
        UNDESCRIBED if identifier(method) => Some("user-service"),
        ECHO if identifier(method) => Some("echo"),
        _ => None,
    }
}

fn path_like() -> impl Strategy<Value = String> {
    let known = method_paths(suite_proto::FILE_DESCRIPTOR_SET);
    let service = prop_oneof![
        Just("suite.user.v1.UserService".to_owned()),
        Just("suite.order.v1.OrderService".to_owned()),
        Just(UNDESCRIBED.to_owned()),
        Just("suite.user.v1.userservice".to_owned()),
        "[a-zA-Z0-9._]{0,12}",
    ];
    let method = prop_oneof![
        Just("GetUser".to_owned()),
        "[A-Za-z_][A-Za-z0-9_]{0,10}",
        "[A-Za-z0-9_%./ -]{0,10}",
        "\\PC{0,6}",
    ];
    prop_oneof![
        3 => prop::sample::select(known.clone()),
        // A known path bent in one place.
        3 => (prop::sample::select(known), "[a-zA-Z/%. _]{1,3}", any::<prop::sample::Index>(), any::<bool>())
            .prop_map(|(path, extra, at, replace)| {
                let mut path = path;
                let at = at.index(path.len() + 1);
                if replace && at < path.len() {
                    path.replace_range(at..=at, &extra);
                } else {
                    path.insert_str(at, &extra);
                }
                path
            }),
        3 => (service, method, "(/|//|)", "(|/|/x|\\?a=1)").prop_map(|(service, method, slash, tail)| format!("{slash}{service}/{method}{tail}")),
        1 => "\\PC{0,40}",
    ]
}

// --- grpc-timeout ------------------------------------------------------------

/// `grpc-timeout` as the gRPC spec defines it: 1 to 8 ASCII digits and a unit.
fn spec_timeout(text: &str) -> Option<Duration> {
    let (digits, unit) = text.split_at_checked(text.len().checked_sub(1)?)?;
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount * 3600),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

fn timeout_like() -> impl Strategy<Value = HeaderValue> {
    let text = prop_oneof![
        4 => "[0-9]{1,8}[HMSmun]",
        1 => "[0-9]{9,30}[HMSmun]",
        1 => "[+ -]?[0-9]{0,8}[HMSmunhsx ]?",
        1 => "[ -~]{0,12}",
    ]
    .prop_filter_map("not a header value", |text| HeaderValue::from_str(&text).ok());
    let bytes = prop::collection::vec(prop_oneof![4 => 0x20_u8..0x7f, 1 => 0x80_u8..=0xff, 1 => Just(b'\t')], 0..12)
        .prop_filter_map("not a header value", |bytes| HeaderValue::from_bytes(&bytes).ok());
    prop_oneof![6 => text, 1 => bytes]
}

/// The most a forwarded `grpc-timeout` can say: 99999999 seconds.
const LONGEST: Duration = Duration::from_secs(99_999_999);

proptest! {
    #[test]
    fn only_paths_of_known_methods_route(path in path_like()) {
        let fixture = fixture();
        let routed = fixture.table.route(&path).map(|upstream| upstream.name);
        prop_assert_eq!(routed, route_by_the_rules(fixture, &path), "{:?}", path);
    }

    #[test]
    fn the_upstream_gets_the_callers_deadline_less_the_time_spent(value in timeout_like()) {
        let fixture = fixture();
        let upstream = fixture.table.route(&format!("/{ECHO}/Chat")).unwrap();
        let request = http::Request::builder()
            .method(http::Method::POST)
            .uri(format!("/{ECHO}/Chat"))
            .header("content-type", "application/grpc")
            .header("grpc-timeout", value.clone())
            .body(tonic::body::Body::empty())
            .unwrap();
        let outcome = fixture.runtime.block_on(fixture.proxy.forward(upstream, request, Instant::now()));
        let caller = value.to_str().ok().and_then(spec_timeout);
        let response = match (outcome, caller) {
            (Err(GatewayError::DeadlineExceeded), Some(timeout)) => {
                // Spent already: only a deadline shorter than the gateway's own work.
                prop_assert!(timeout < Duration::from_millis(100), "{:?} expired at the gateway", value);
                return Ok(());
            }
            (Err(error), _) => {
                prop_assert!(false, "{:?}: {}", value, error);
                unreachable!()
            }
            (Ok(response), _) => response,
        };
        let forwarded = response.headers().get("x-received-grpc-timeout");
        match caller {
            None => prop_assert_eq!(forwarded, Some(&value), "an unread grpc-timeout is passed on as it came"),
            Some(timeout) => {
                let text = forwarded.and_then(|forwarded| forwarded.to_str().ok()).unwrap_or_default();
                let sent = spec_timeout(text);
                prop_assert!(sent.is_some(), "{:?} forwarded as {:?}", value, forwarded);
                let sent = sent.unwrap();
                // Less the time spent, rounded down to the unit, at least 1 µs, at most 99999999 S.
                let bound = timeout.min(LONGEST).max(Duration::from_micros(1));
                prop_assert!(sent <= bound, "{:?} forwarded as {:?}", value, text);
                prop_assert!(bound - sent < Duration::from_secs(5), "{:?} forwarded as {:?}", value, text);
                if timeout > LONGEST + Duration::from_secs(5) {
                    prop_assert_eq!(text, "99999999S", "a deadline past 8 digits of seconds saturates");
                }
            }
        }
    }
}
