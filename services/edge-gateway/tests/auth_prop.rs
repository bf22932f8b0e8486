//! Properties of bearer-token authentication (`Authenticator::authenticate`),
//! driven as a client would: any `authorization` header, any base64/JSON in a
//! token's three parts, and validly signed tokens whose claims are any JSON
//! (`exp`, `nbf` and `iat` of every JSON type, huge numbers included). The
//! gateway answers an `AuthFailure`, never panics, and accepts a token exactly
//! when its claims are valid. The JWKS parser (`KeySet::from_jwks`) takes any
//! document without panicking too.
//!
//! Cases per property: `PROPTEST_CASES` (10,000, set in `.cargo/config.toml`).

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{AUDIENCE, ISSUER, TokenKeys, auth_args};
use edge_gateway::auth::{AuthFailure, Authenticator, KeySet};
use edge_gateway::metrics::GatewayMetrics;
use http::{HeaderMap, HeaderValue};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

const HS256_SECRET: &str = "a shared secret of 32 bytes or more, for the property tests";
const LEEWAY: u64 = 30;
const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Seconds either side of an `exp` or `nbf` limit where either answer is right:
/// the clock moves while a case runs, and the verified-token cache compares
/// `exp + leeway > now` where jsonwebtoken compares `exp >= now - leeway`.
const CLOCK_SLACK: u64 = 5;

/// The authenticator under test (test JWKS with ES256, RS256 and EdDSA keys,
/// and an HS256 secret), its keys, and the runtime it runs on.
struct Fixture {
    runtime: tokio::runtime::Runtime,
    authenticator: Arc<Authenticator>,
    keys: TokenKeys,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let keys = TokenKeys::generate();
        let mut args = auth_args(&keys);
        args.jwt_hs256_secret = Some(HS256_SECRET.into());
        args.jwt_leeway_seconds = LEEWAY;
        args.jwt_max_token_bytes = MAX_TOKEN_BYTES;
        let authenticator = runtime
            .block_on(Authenticator::from_config(&args, GatewayMetrics::default()))
            .unwrap();
        Fixture {
            runtime,
            authenticator,
            keys,
        }
    })
}

fn authenticate(authorization: Option<HeaderValue>) -> Result<Arc<edge_gateway::auth::VerifiedToken>, AuthFailure> {
    let fixture = fixture();
    let mut headers = HeaderMap::new();
    if let Some(value) = authorization {
        headers.insert(http::header::AUTHORIZATION, value);
    }
    fixture.runtime.block_on(fixture.authenticator.authenticate(&headers, || Ok(())))
}

fn bearer(token: &str) -> Option<HeaderValue> {
    Some(HeaderValue::from_str(&format!("Bearer {token}")).unwrap())
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A failure a request can get from its token alone (the verification budget,
/// and keys that never loaded, are not the token's).
fn a_token_failure(failure: AuthFailure) -> bool {
    !matches!(failure, AuthFailure::Throttled(_) | AuthFailure::KeysUnavailable)
}

// --- strategies --------------------------------------------------------------

/// One of the words that mean something, or any text like `pattern`.
fn word(fixed: &'static [&'static str], pattern: &'static str) -> BoxedStrategy<String> {
    prop_oneof![4 => prop::sample::select(fixed).prop_map(str::to_owned), 1 => pattern].boxed()
}

/// Any JSON value, small.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("JSON has no NaN or infinity", |float| serde_json::Number::from_f64(float)
            .map(Value::Number)),
        "\\PC{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(2, 8, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z]{1,4}", inner, 0..4).prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// A time claim relative to `now`, present with probability `present`: usually an
/// integer near `usual` seconds from now, else the integers around every limit that
/// matters, values far beyond any clock, and every other JSON type.
fn time_claim(now: u64, present: f64, usual: i64) -> impl Strategy<Value = Option<Value>> {
    let around = move |offset: i64| (offset - 120..=offset + 120).prop_map(move |delta| Value::from(now.saturating_add_signed(delta)));
    prop::option::weighted(
        present,
        prop_oneof![
            12 => around(usual),
            2 => around(-(LEEWAY as i64)),
            2 => around(LEEWAY as i64),
            2 => around(-7200),
            1 => (0..=u64::MAX).prop_map(Value::from),
            1 => (u64::MAX - 2..=u64::MAX).prop_map(Value::from),
            1 => (i64::MAX as u64 - 2..=i64::MAX as u64 + 2).prop_map(Value::from),
            1 => any::<i64>().prop_map(|value| Value::from(value.min(-1))),
            1 => prop_oneof![Just(now as f64 + 3600.0), Just(1e300), Just(-0.0), Just(0.5), Just(1.8446744073709552e19)]
                .prop_map(Value::from),
            1 => prop_oneof![Just((now + 3600).to_string()), "\\PC{0,6}"].prop_map(Value::String),
            1 => json_value(),
        ],
    )
}

/// `iss` or `aud`: the right one, a wrong one, in a list, or not a string.
fn name_claim(right: &'static str) -> impl Strategy<Value = Option<Value>> {
    prop::option::weighted(
        0.95,
        prop_oneof![
            8 => Just(Value::from(right)),
            1 => "\\PC{0,12}".prop_map(Value::from),
            1 => prop::collection::vec(prop_oneof![Just(right.to_owned()), "[a-z:/.]{0,8}"], 0..3).prop_map(Value::from),
            1 => prop::collection::vec(json_value(), 1..3).prop_map(Value::from),
            1 => json_value(),
        ],
    )
}

fn subject() -> impl Strategy<Value = Option<Value>> {
    prop::option::weighted(
        0.95,
        prop_oneof![
            8 => "[a-zA-Z0-9_.@:-]{1,24}".prop_map(Value::from),
            1 => "\\PC{0,24}".prop_map(Value::from),
            1 => "[a-z]{250,260}".prop_map(Value::from),
            1 => json_value(),
        ],
    )
}

fn roles() -> impl Strategy<Value = Option<Value>> {
    let role = prop_oneof![4 => "[a-z:._/-]{1,10}", 1 => "\\PC{0,10}", 1 => "[a-z]{60,70}"];
    prop::option::of(prop_oneof![
        3 => prop::collection::vec(role.clone().prop_map(Value::from), 0..5).prop_map(Value::from),
        1 => prop::collection::vec(role, 0..5).prop_map(|roles| Value::from(roles.join(" "))),
        1 => prop::collection::vec(Just(Value::from("r")), 30..40).prop_map(Value::from),
        1 => json_value(),
    ])
}

/// Claims, each sometimes missing, of any type, or beside extra claims.
fn claims(now: u64) -> impl Strategy<Value = Map<String, Value>> {
    (
        subject(),
        name_claim(ISSUER),
        name_claim(AUDIENCE),
        time_claim(now, 0.97, 3600),
        time_claim(now, 0.5, -60),
        time_claim(now, 0.5, -60),
        roles(),
        prop::collection::btree_map("[a-z]{1,6}", json_value(), 0..3),
    )
        .prop_map(|(sub, iss, aud, exp, nbf, iat, roles, extra)| {
            let mut claims: Map<String, Value> = extra.into_iter().collect();
            for (name, value) in [
                ("sub", sub),
                ("iss", iss),
                ("aud", aud),
                ("exp", exp),
                ("nbf", nbf),
                ("iat", iat),
                ("roles", roles),
            ] {
                match value {
                    Some(value) => claims.insert(name.to_owned(), value),
                    None => claims.remove(name),
                };
            }
            claims
        })
}

// --- the rules ---------------------------------------------------------------

#[derive(Debug, PartialEq)]
enum Verdict {
    Accept {
        subject: String,
        expires_at: u64,
        roles: String,
    },
    Refuse,
    /// At a time limit, within `CLOCK_SLACK`: either answer is right.
    Either,
}

fn names(value: Option<&Value>, right: &str) -> bool {
    match value {
        Some(Value::String(name)) => name == right,
        Some(Value::Array(names)) => names.iter().all(Value::is_string) && names.iter().any(|name| name == right),
        _ => false,
    }
}

/// Whether the gateway must accept a validly signed token with `claims`, as of `now`.
fn verdict(claims: &Map<String, Value>, now: u64) -> Verdict {
    let time = |name: &str| claims.get(name).map(Value::as_u64);
    let (Some(Some(exp)), nbf, iat) = (time("exp"), time("nbf"), time("iat")) else {
        return Verdict::Refuse;
    };
    if matches!(nbf, Some(None)) || matches!(iat, Some(None)) {
        return Verdict::Refuse;
    }
    let Some(Value::String(subject)) = claims.get("sub") else {
        return Verdict::Refuse;
    };
    // What the services can read from the forwarded header (`to_str`): visible ASCII and tabs.
    let header_safe = |text: &str| text.bytes().all(|byte| byte == b'\t' || (0x20..0x7f).contains(&byte));
    if subject.is_empty() || subject.len() > 256 || !header_safe(subject) {
        return Verdict::Refuse;
    }
    if !names(claims.get("iss"), ISSUER) || !names(claims.get("aud"), AUDIENCE) {
        return Verdict::Refuse;
    }
    let valid_role = |role: &str| {
        !role.is_empty()
            && role.len() <= 64
            && role
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'-' | b'.' | b':' | b'/'))
    };
    let roles: Vec<&str> = match claims.get("roles") {
        Some(Value::Array(values)) => values.iter().filter_map(Value::as_str).collect(),
        Some(Value::String(text)) => text.split_whitespace().collect(),
        _ => Vec::new(),
    };
    let roles = roles
        .into_iter()
        .filter(|role| valid_role(role))
        .take(32)
        .collect::<Vec<_>>()
        .join(",");
    let earliest = now.saturating_sub(LEEWAY);
    let latest = now + LEEWAY;
    let nbf = nbf.flatten();
    if exp.abs_diff(earliest) <= CLOCK_SLACK || nbf.is_some_and(|nbf| nbf.abs_diff(latest) <= CLOCK_SLACK) {
        return Verdict::Either;
    }
    if exp < earliest || nbf.is_some_and(|nbf| nbf > latest) {
        return Verdict::Refuse;
    }
    Verdict::Accept {
        subject: subject.clone(),
        expires_at: exp,
        roles,
    }
}

fn check(outcome: Result<Arc<edge_gateway::auth::VerifiedToken>, AuthFailure>, verdict: &Verdict) -> Result<(), TestCaseError> {
    match (outcome, verdict) {
        (
            Ok(token),
            Verdict::Accept {
                subject,
                expires_at,
                roles,
            },
        ) => {
            prop_assert_eq!(token.subject.as_bytes(), subject.as_bytes());
            prop_assert_eq!(token.expires_at, *expires_at);
            prop_assert_eq!(token.roles.to_str().ok(), Some(roles.as_str()));
        }
        (Err(failure), Verdict::Refuse) => prop_assert!(a_token_failure(failure), "{:?}", failure),
        (Ok(_), Verdict::Either) => {}
        (Err(failure), Verdict::Either) => prop_assert!(a_token_failure(failure), "{:?}", failure),
        (outcome, verdict) => prop_assert!(
            false,
            "got {:?}, the rules say {:?}",
            outcome.map(|token| token.subject.clone()),
            verdict
        ),
    }
    Ok(())
}

/// A signed token for `claims` with `algorithm`'s test key.
fn sign(algorithm: Algorithm, claims: &Map<String, Value>) -> String {
    let keys = &fixture().keys;
    let (key, kid) = match algorithm {
        Algorithm::HS256 => (&EncodingKey::from_secret(HS256_SECRET.as_bytes()), None),
        Algorithm::ES256 => (&keys.es256.0, Some(keys.es256.1.clone())),
        Algorithm::EdDSA => (&keys.ed25519.0, Some(keys.ed25519.1.clone())),
        other => panic!("no test key for {other:?}"),
    };
    let mut header = Header::new(algorithm);
    header.kid = kid;
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

/// `header.payload` signed with HS256 (the payload any bytes at all).
fn sign_raw(payload: &[u8]) -> String {
    let message = format!("{}.{}", b64(r#"{"alg":"HS256","typ":"JWT"}"#), b64(payload));
    let signature = jsonwebtoken::crypto::sign(
        message.as_bytes(),
        &EncodingKey::from_secret(HS256_SECRET.as_bytes()),
        Algorithm::HS256,
    )
    .unwrap();
    format!("{message}.{signature}")
}

/// A JSON number as a client may write it, and the u64 it is when it is one.
fn number_literal(now: u64) -> impl Strategy<Value = (String, Option<u64>)> {
    prop_oneof![
        (now + 600..now + 100_000).prop_map(|value| (value.to_string(), Some(value))),
        Just((u64::MAX.to_string(), Some(u64::MAX))),
        Just(("18446744073709551616".to_owned(), None)),
        "[1-9][0-9]{20,400}".prop_map(|digits| (digits, None)),
        "[1-9][0-9]{0,3}(\\.[0-9]{1,3}|[eE][+-]?[0-9]{1,3})".prop_map(|text| (text, None)),
        prop_oneof![
            Just("1e400"),
            Just("-0"),
            Just("-1"),
            Just("0x10"),
            Just("01"),
            Just("NaN"),
            Just("Infinity"),
            Just("null"),
            Just("\"1\""),
            Just("[]"),
            Just("{}")
        ]
        .prop_map(|text| (text.to_owned(), None)),
    ]
}

// --- properties --------------------------------------------------------------

proptest! {
    #[test]
    fn any_authorization_header_is_refused_for_the_right_reason(
        value in prop::option::weighted(0.95, prop_oneof![
            prop::collection::vec(prop_oneof![6 => 0x20_u8..0x7f, 1 => 0x80_u8..=0xff, 1 => Just(b'\t')], 0..120),
            ("(Bearer|bearer|BEARER|Basic|Bearer:|)", "( |  |\t|)", "[ -~]{0,80}").prop_map(|(scheme, space, rest)| format!("{scheme}{space}{rest}").into_bytes()),
            ("(Bearer |bearer )", "[A-Za-z0-9_=-]{0,30}(\\.[A-Za-z0-9_=-]{0,30}){0,4}").prop_map(|(scheme, token)| format!("{scheme}{token}").into_bytes()),
            (MAX_TOKEN_BYTES - 4..MAX_TOKEN_BYTES + 12).prop_map(|length| format!("Bearer {}", "a".repeat(length)).into_bytes()),
        ].prop_filter_map("not a header value", |bytes| HeaderValue::from_bytes(&bytes).ok()))
    ) {
        let outcome = authenticate(value.clone());
        prop_assert!(outcome.is_err(), "{:?} authenticated", value);
        let failure = outcome.err().unwrap();
        prop_assert!(a_token_failure(failure), "{:?}", failure);
        let Some(value) = value else {
            prop_assert_eq!(failure, AuthFailure::Missing);
            return Ok(());
        };
        if value.len() > MAX_TOKEN_BYTES + "Bearer ".len() {
            prop_assert_eq!(failure, AuthFailure::Oversized);
            return Ok(());
        }
        let bearer = value.to_str().ok().and_then(|text| text.split_once(' ')).is_some_and(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"));
        if !bearer {
            prop_assert_eq!(failure, AuthFailure::Malformed, "{:?}", value);
        }
        prop_assert!(!matches!(failure, AuthFailure::Missing | AuthFailure::Oversized), "{:?}: {:?}", value, failure);
    }

    #[test]
    fn forged_tokens_of_any_base64_and_json_are_refused(
        header in prop_oneof![
            4 => (
                word(&["HS256", "ES256", "RS256", "EdDSA", "none", "HS512", "PS256"], "[A-Za-z0-9]{0,6}"),
                prop::option::of(word(&["es-1", "rsa-test", "ed-1"], "\\PC{0,6}")),
                prop::collection::btree_map("[a-z]{1,4}", json_value(), 0..2),
            ).prop_map(|(alg, kid, extra)| {
                let mut header: Map<String, Value> = extra.into_iter().collect();
                header.insert("alg".into(), alg.into());
                if let Some(kid) = kid {
                    header.insert("kid".into(), kid.into());
                }
                b64(Value::Object(header).to_string())
            }),
            1 => json_value().prop_map(|value| b64(value.to_string())),
            1 => prop::collection::vec(any::<u8>(), 0..40).prop_map(b64),
            1 => "[ -~]{0,20}",
        ],
        payload in prop_oneof![
            3 => claims(now()).prop_map(|claims| b64(Value::Object(claims).to_string())),
            1 => json_value().prop_map(|value| b64(value.to_string())),
            1 => prop::collection::vec(any::<u8>(), 0..60).prop_map(b64),
            1 => "[ -~]{0,20}",
        ],
        signature in prop_oneof![
            3 => prop::collection::vec(any::<u8>(), 0..300).prop_map(b64),
            1 => "[ -~]{0,20}",
        ],
        parts in prop_oneof![6 => Just(3_usize), 1 => 1..=5_usize],
    ) {
        let mut token = [header, payload, signature].join(".");
        match parts {
            1 | 2 => token = token.splitn(parts + 1, '.').take(parts).collect::<Vec<_>>().join("."),
            4 | 5 => token.push_str(&".x".repeat(parts - 3)),
            _ => {}
        }
        let Ok(value) = HeaderValue::from_str(&format!("Bearer {token}")) else {
            return Ok(());
        };
        let outcome = authenticate(Some(value));
        prop_assert!(outcome.is_err(), "forged {:?} authenticated", token);
        let failure = outcome.err().unwrap();
        prop_assert!(a_token_failure(failure) && !matches!(failure, AuthFailure::Missing | AuthFailure::Oversized), "{:?}", failure);
    }

    #[test]
    fn signed_tokens_are_accepted_exactly_when_their_claims_are_valid(
        claims in claims(now()),
        algorithm in prop_oneof![8 => Just(Algorithm::HS256), 1 => Just(Algorithm::ES256), 1 => Just(Algorithm::EdDSA)],
    ) {
        let token = sign(algorithm, &claims);
        let expected = verdict(&claims, now());
        check(authenticate(bearer(&token)), &expected)?;
    }

    #[test]
    fn time_claims_written_as_any_json_number_are_read_only_as_integers_of_seconds(
        exp in number_literal(now()),
        nbf in prop::option::of(number_literal(now())),
        iat in prop::option::of(number_literal(now())),
    ) {
        let mut text = format!(r#"{{"sub":"alice","iss":"{ISSUER}","aud":"{AUDIENCE}","exp":{}"#, exp.0);
        for (name, literal) in [("nbf", &nbf), ("iat", &iat)] {
            if let Some((literal, _)) = literal {
                text.push_str(&format!(r#","{name}":{literal}"#));
            }
        }
        text.push('}');
        let outcome = authenticate(bearer(&sign_raw(text.as_bytes())));
        // A time claim is good only as an integer that fits in u64; an nbf of a good number
        // here is in the future, too far for the leeway.
        let good = |literal: &Option<(String, Option<u64>)>| literal.as_ref().is_none_or(|(_, value)| value.is_some());
        let accepted = exp.1.is_some() && nbf.is_none() && good(&iat);
        match outcome {
            Ok(token) => {
                prop_assert!(accepted, "{} accepted", text);
                prop_assert_eq!(Some(token.expires_at), exp.1);
            }
            Err(failure) => {
                prop_assert!(!accepted, "{} refused: {:?}", text, failure);
                prop_assert!(a_token_failure(failure), "{:?}", failure);
            }
        }
    }

    #[test]
    fn signed_payloads_that_are_not_claims_are_refused(
        payload in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..80),
            json_value().prop_map(|value| value.to_string().into_bytes()),
            claims(now()).prop_map(|claims| {
                // Cut short, or with a byte that is not UTF-8.
                let mut text = Value::Object(claims).to_string().into_bytes();
                text.pop();
                text.push(0xff);
                text
            }),
        ]
    ) {
        let outcome = authenticate(bearer(&sign_raw(&payload)));
        let claims = serde_json::from_slice::<Value>(&payload).ok().and_then(|value| value.as_object().cloned());
        let expected = claims.map_or(Verdict::Refuse, |claims| verdict(&claims, now()));
        check(outcome, &expected)?;
    }

    #[test]
    fn any_jwks_document_parses_without_panicking(
        document in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..80),
            json_value().prop_map(|value| value.to_string().into_bytes()),
            prop::collection::vec(
                (
                    word(&["EC", "RSA", "OKP", "oct"], "[A-Za-z]{0,4}"),
                    word(&["P-256", "P-384", "Ed25519", "X25519"], "[A-Za-z0-9-]{0,6}"),
                    prop::option::of(word(&["ES256", "RS256", "EdDSA", "HS256"], "[A-Za-z0-9]{0,6}")),
                    prop::option::of(word(&["sig", "enc"], "[a-z]{0,4}")),
                    prop::option::of("\\PC{0,6}"),
                    prop::collection::vec(prop::option::of(prop::collection::vec(any::<u8>(), 0..70).prop_map(b64)), 5),
                    prop::collection::btree_map("[a-z]{1,4}", json_value(), 0..2),
                )
                    .prop_map(|(kty, crv, alg, usage, kid, values, extra)| {
                        let mut key: Map<String, Value> = extra.into_iter().collect();
                        key.insert("kty".into(), kty.into());
                        key.insert("crv".into(), crv.into());
                        for (name, value) in [("alg", alg), ("use", usage), ("kid", kid)] {
                            if let Some(value) = value {
                                key.insert(name.into(), value.into());
                            }
                        }
                        for (name, value) in ["x", "y", "n", "e", "k"].into_iter().zip(values) {
                            if let Some(value) = value {
                                key.insert(name.into(), value.into());
                            }
                        }
                        Value::Object(key)
                    }),
                0..4,
            )
            .prop_map(|keys| json!({ "keys": keys }).to_string().into_bytes()),
        ]
    ) {
        if let Ok(set) = KeySet::from_jwks(&document) {
            let listed = serde_json::from_slice::<Value>(&document)
                .ok()
                .and_then(|document| document.get("keys")?.as_array().map(Vec::len));
            prop_assert!(!set.is_empty());
            prop_assert!(listed.is_some_and(|listed| set.len() <= listed), "{} keys from a document listing {:?}", set.len(), listed);
        }
    }
}
