//! Properties of what suite-grpc reads from callers: page tokens, the request
//! fields every API parses alike, method paths, the `grpc-timeout` header and the
//! `x-request-id` header (with whatever trace context headers come beside it).
//! No input panics, and each keeps its contract.
//!
//! Cases per property: `PROPTEST_CASES` (10,000, set in `.cargo/config.toml`).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, Once, OnceLock};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderMap, HeaderValue};
use opentelemetry::trace::TraceContextExt as _;
use proptest::prelude::*;
use suite_grpc::client::Deadline;
use suite_grpc::layers::trace::{REQUEST_ID_HEADER, RemoteTraceContext, TraceLayer, current_request_id};
use suite_grpc::{KnownMethods, PageTokens, method_paths, split_method_path};
use tonic::metadata::MetadataMap;
use tower::{Layer as _, Service as _};
use uuid::Uuid;

/// A header value made of any bytes a header may carry (anything but controls other than tab).
fn header_bytes(max: usize) -> impl Strategy<Value = HeaderValue> {
    prop::collection::vec(prop_oneof![4 => 0x20_u8..0x7f, 1 => 0x80_u8..=0xff, 1 => Just(b'\t')], 0..max)
        .prop_filter_map("not a header value", |bytes| HeaderValue::from_bytes(&bytes).ok())
}

fn header_text(text: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(text).ok()
}

// --- page tokens -------------------------------------------------------------

fn scope() -> impl Strategy<Value = String> {
    prop_oneof![Just("users".to_owned()), Just("orders".to_owned()), "\\PC{0,12}"]
}

/// Text a client might send as a page token: anything, base64url of anything,
/// and tokens of the right length and format byte with a made-up tag.
fn token_like() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC{0,60}",
        "[A-Za-z0-9_=+/-]{0,60}",
        prop::collection::vec(any::<u8>(), 0..48).prop_map(|bytes| URL_SAFE_NO_PAD.encode(bytes)),
        prop::collection::vec(any::<u8>(), 32).prop_map(|rest| URL_SAFE_NO_PAD.encode([&[1_u8][..], &rest].concat())),
    ]
}

/// One change to a token's text.
#[derive(Debug, Clone)]
enum Edit {
    Replace(prop::sample::Index, char),
    Remove(prop::sample::Index),
    Insert(prop::sample::Index, char),
    Truncate(prop::sample::Index),
    Pad(String),
}

fn edit() -> impl Strategy<Value = Edit> {
    let base64_char = prop::sample::select(
        ('A'..='Z')
            .chain('a'..='z')
            .chain('0'..='9')
            .chain(['-', '_', '=', '+', '/'])
            .collect::<Vec<_>>(),
    );
    prop_oneof![
        (any::<prop::sample::Index>(), base64_char.clone()).prop_map(|(at, with)| Edit::Replace(at, with)),
        any::<prop::sample::Index>().prop_map(Edit::Remove),
        (any::<prop::sample::Index>(), base64_char).prop_map(|(at, with)| Edit::Insert(at, with)),
        any::<prop::sample::Index>().prop_map(Edit::Truncate),
        "(=|==|[A-Za-z0-9_-]{1,4}| )".prop_map(Edit::Pad),
    ]
}

fn apply(token: &str, edit: &Edit) -> String {
    // Tokens are ASCII: byte indexes are char indexes.
    let mut text = token.to_owned();
    match edit {
        Edit::Replace(..) | Edit::Remove(_) | Edit::Truncate(_) if text.is_empty() => {}
        Edit::Replace(at, with) => {
            let at = at.index(text.len());
            text.replace_range(at..=at, &with.to_string());
        }
        Edit::Remove(at) => {
            text.remove(at.index(text.len()));
        }
        Edit::Insert(at, with) => text.insert(at.index(text.len() + 1), *with),
        Edit::Truncate(at) => text.truncate(at.index(text.len())),
        Edit::Pad(tail) => text.push_str(tail),
    }
    text
}

fn uuid() -> impl Strategy<Value = Uuid> {
    any::<u128>().prop_map(Uuid::from_u128)
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
    prop_oneof![
        4 => "[0-9]{1,8}[HMSmun]",
        1 => "[0-9]{9,30}[HMSmun]",
        1 => "[+ -]?[0-9]{0,8}[HMSmunhsx ]?",
        1 => "[ -~]{0,12}",
    ]
    .prop_filter_map("not a header value", |text| header_text(&text))
    .boxed()
    .prop_union(header_bytes(12).boxed())
}

// --- request ids and trace context -------------------------------------------

fn acceptable_request_id(bytes: &[u8]) -> bool {
    !bytes.is_empty()
        && bytes.len() <= 128
        && bytes
            .iter()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b':' | b'/' | b'+' | b'='))
}

fn request_id_like() -> impl Strategy<Value = Option<HeaderValue>> {
    let text = prop_oneof![
        3 => "[A-Za-z0-9._:/+=-]{1,20}",
        1 => "[A-Za-z0-9._:/+=-]{120,135}",
        1 => "[ -~]{0,20}",
    ]
    .prop_filter_map("not a header value", |text| header_text(&text));
    prop::option::weighted(0.9, prop_oneof![3 => text, 1 => header_bytes(40)])
}

fn hex(length: usize) -> impl Strategy<Value = String> {
    prop_oneof![
        6 => prop::collection::vec(prop::sample::select(b"0123456789abcdef".to_vec()), length),
        1 => prop::collection::vec(prop::sample::select(b"0123456789ABCDEFxyz-".to_vec()), length.saturating_sub(1)..=length + 1),
        1 => Just(vec![b'0'; length]),
    ]
    .prop_map(|bytes| String::from_utf8(bytes).unwrap_or_default())
}

/// `traceparent`-shaped text, valid or bent, and arbitrary header bytes.
fn traceparent_like() -> impl Strategy<Value = Option<HeaderValue>> {
    let shaped = (hex(2), hex(32), hex(16), hex(2), "(|-|-[0-9a-f]{1,4})")
        .prop_map(|(version, trace, span, flags, tail)| format!("{version}-{trace}-{span}-{flags}{tail}"));
    prop::option::of(prop_oneof![
        4 => shaped.prop_filter_map("not a header value", |text| header_text(&text)),
        1 => header_bytes(60),
    ])
}

fn list_like() -> impl Strategy<Value = Option<HeaderValue>> {
    let member = "[a-z0-9%*_/@-]{0,8}=[ -~]{0,8}";
    prop::option::of(prop_oneof![
        3 => prop::collection::vec(member, 0..5).prop_filter_map("not a header value", |members| header_text(&members.join(","))),
        1 => header_bytes(60),
    ])
}

/// The suite's method paths, and the `KnownMethods` made of them.
fn known_methods() -> &'static (BTreeSet<String>, KnownMethods) {
    static KNOWN: OnceLock<(BTreeSet<String>, KnownMethods)> = OnceLock::new();
    KNOWN.get_or_init(|| {
        let paths: BTreeSet<String> = method_paths(suite_proto::FILE_DESCRIPTOR_SET).into_iter().collect();
        let known = KnownMethods::new(paths.iter().cloned());
        (paths, known)
    })
}

/// What the handler behind a `TraceLayer` saw.
#[derive(Debug, Default)]
struct Seen {
    request_id: Option<HeaderValue>,
    current_request_id: Option<HeaderValue>,
    context_headers: Vec<String>,
    trace_id: Option<opentelemetry::TraceId>,
}

fn install_propagators() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        suite_telemetry::propagation::install(&[suite_telemetry::Propagator::TraceContext, suite_telemetry::Propagator::Baggage])
    });
}

proptest! {
    #[test]
    fn a_page_token_is_accepted_only_as_issued(secret in "\\PC{0,8}", scope in scope(), token in token_like()) {
        let tokens = PageTokens::new(Some(&secret));
        if let Ok(id) = tokens.decode(&scope, &token) {
            prop_assert_eq!(tokens.encode(&scope, id), token);
        }
    }

    #[test]
    fn issued_page_tokens_round_trip_within_their_scope_and_secret(
        secret in "\\PC{0,8}",
        other_secret in "\\PC{0,8}",
        scope in scope(),
        other_scope in scope(),
        id in uuid(),
        edits in prop::collection::vec(edit(), 1..3),
    ) {
        let tokens = PageTokens::new(Some(&secret));
        let token = tokens.encode(&scope, id);
        prop_assert_eq!(tokens.decode(&scope, &token), Ok(id));
        prop_assert!(token.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_'));
        if other_scope != scope {
            prop_assert!(tokens.decode(&other_scope, &token).is_err(), "a token of {:?} works for {:?}", scope, other_scope);
        }
        if other_secret != secret {
            prop_assert!(PageTokens::new(Some(&other_secret)).decode(&scope, &token).is_err());
        }
        let edited = edits.iter().fold(token.clone(), |text, edit| apply(&text, edit));
        if edited != token {
            prop_assert!(tokens.decode(&scope, &edited).is_err(), "{:?} edited to {:?} still decodes", token, edited);
        }
    }

    #[test]
    fn request_fields_parse_as_documented(
        id in prop_oneof![any::<u128>().prop_map(|id| Uuid::from_u128(id).to_string()), "[0-9a-fA-F{}urn:-]{0,45}", "\\PC{0,12}"],
        page_size in any::<i32>(),
        version in any::<i64>(),
    ) {
        match suite_grpc::fields::parse_uuid(&id) {
            Ok(parsed) => prop_assert_eq!(Uuid::try_parse(&id).ok(), Some(parsed)),
            Err(_) => prop_assert!(id.is_empty() || Uuid::try_parse(&id).is_err()),
        }
        let expected_size = match page_size {
            ..0 => None,
            0 => Some(suite_grpc::fields::DEFAULT_PAGE_SIZE),
            size => Some(u64::from(size.unsigned_abs()).min(suite_grpc::fields::MAX_PAGE_SIZE)),
        };
        prop_assert_eq!(suite_grpc::fields::parse_page_size(page_size).ok(), expected_size);
        prop_assert_eq!(suite_grpc::fields::parse_version(version).ok(), (version >= 1).then_some(version));
    }

    #[test]
    fn split_method_path_never_panics_and_splits_at_the_first_slash(
        path in prop_oneof![
            "\\PC{0,40}",
            "/{0,2}[a-zA-Z0-9._%]{0,16}/{0,2}[a-zA-Z0-9._/%]{0,16}",
        ]
    ) {
        match split_method_path(&path) {
            Some((service, method)) => {
                prop_assert_eq!(format!("/{service}/{method}"), path.as_str());
                prop_assert!(!service.contains('/'));
            }
            None => prop_assert!(path.strip_prefix('/').is_none_or(|rest| !rest.contains('/'))),
        }
    }

    #[test]
    fn only_known_method_paths_keep_their_names(
        path in prop_oneof![
            prop::sample::select(method_paths(suite_proto::FILE_DESCRIPTOR_SET)),
            (prop::sample::select(method_paths(suite_proto::FILE_DESCRIPTOR_SET)), "[a-zA-Z/%.]{1,3}", any::<prop::sample::Index>())
                .prop_map(|(mut path, extra, at)| { path.insert_str(at.index(path.len() + 1), &extra); path }),
            "\\PC{0,40}",
        ]
    ) {
        let (known_paths, known) = known_methods();
        let names = known.names(&path);
        if known_paths.contains(&path) {
            let (service, method) = split_method_path(&path).unwrap_or_default();
            prop_assert_eq!((names.service, names.method), (service, method));
            prop_assert_eq!(names.span_name, &path[1..]);
        } else {
            prop_assert_eq!((names.service, names.method, names.span_name), ("unknown", "unknown", "unknown/unknown"));
        }
    }

    #[test]
    fn grpc_timeout_of_a_request_is_the_callers_or_the_default(value in timeout_like()) {
        // Larger than any grpc-timeout can say (99999999H), so never mistaken for one.
        let default = Duration::from_secs(400_000_000_000);
        let mut headers = HeaderMap::new();
        headers.insert("grpc-timeout", value.clone());
        let metadata = MetadataMap::from_headers(headers);
        let expected = value.to_str().ok().and_then(spec_timeout).unwrap_or(default);
        let remaining = Deadline::of_request(&metadata, default).remaining();
        prop_assert!(remaining <= expected, "{:?}: {:?} left of {:?}", value, remaining, expected);
        prop_assert!(expected - remaining < Duration::from_secs(5), "{:?}: {:?} left of {:?}", value, remaining, expected);
    }

    #[test]
    fn request_ids_are_kept_when_acceptable_and_replaced_otherwise(
        request_id in request_id_like(),
        traceparent in traceparent_like(),
        tracestate in list_like(),
        baggage in list_like(),
        trust in any::<bool>(),
    ) {
        install_propagators();
        let mut headers = HeaderMap::new();
        for (name, value) in [(REQUEST_ID_HEADER, &request_id), ("traceparent", &traceparent), ("tracestate", &tracestate), ("baggage", &baggage)] {
            if let Some(value) = value {
                headers.insert(name, value.clone());
            }
        }
        let caller = suite_telemetry::propagation::extract(&headers).span().span_context().clone();

        let seen = Arc::new(Mutex::new(Seen::default()));
        let inner = {
            let seen = seen.clone();
            tower::service_fn(move |request: http::Request<()>| {
                let seen = seen.clone();
                async move {
                    let mut seen = seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    seen.request_id = request.headers().get(REQUEST_ID_HEADER).cloned();
                    seen.current_request_id = current_request_id();
                    seen.context_headers = ["traceparent", "tracestate", "baggage"]
                        .into_iter()
                        .filter(|name| request.headers().contains_key(*name))
                        .map(str::to_owned)
                        .collect();
                    seen.trace_id = suite_telemetry::context::current_ids().map(|(trace_id, _)| trace_id);
                    Ok::<_, std::convert::Infallible>(http::Response::new(tonic::body::Body::empty()))
                }
            })
        };
        let remote = if trust { RemoteTraceContext::Trust } else { RemoteTraceContext::Ignore };
        let mut service = TraceLayer::new(remote, []).layer(inner);
        let mut request = http::Request::new(());
        *request.headers_mut() = headers;
        let response = futures::executor::block_on(service.call(request)).unwrap_or_else(|never| match never {});

        let seen = seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let handled = seen.request_id.clone();
        prop_assert!(handled.is_some(), "the handler got no request id");
        let handled = handled.unwrap_or_else(|| unreachable!());
        match request_id.as_ref().filter(|sent| acceptable_request_id(sent.as_bytes())) {
            Some(sent) => prop_assert_eq!(&handled, sent),
            None => {
                let made = handled.to_str().ok().and_then(|text| Uuid::try_parse(text).ok().filter(|id| id.hyphenated().to_string() == text));
                prop_assert!(made.is_some(), "{:?} replaced by {:?}, not a UUID", request_id, handled);
            }
        }
        prop_assert_eq!(seen.current_request_id.as_ref(), Some(&handled));
        prop_assert_eq!(response.headers().get(REQUEST_ID_HEADER), Some(&handled), "end clients get the id back");
        prop_assert!(seen.context_headers.is_empty(), "the caller's {:?} reached the handler", seen.context_headers);
        prop_assert!(seen.trace_id.is_some(), "the call has no trace id for its logs");
        if trust && caller.is_valid() {
            prop_assert_eq!(seen.trace_id, Some(caller.trace_id()), "a trusted caller's trace goes on");
        } else if caller.is_valid() {
            prop_assert_ne!(seen.trace_id, Some(caller.trace_id()), "an untrusted caller's trace was continued");
        }
    }
}
