//! Properties of SPIFFE id parsing (`SpiffeId` from a string, from its parts,
//! and from a peer certificate's URI SAN): no input panics, and an id that
//! parses prints as the very string it came from, with a trust domain,
//! namespace and service account that follow the rules:
//! `spiffe://<trust domain>/ns/<namespace>/sa/<service account>`, at most 2048
//! bytes, the trust domain of lowercase letters, digits, '.', '-' and '_', each
//! of the other two non-empty, not "." or "..", of letters, digits, '.', '-' and '_'.
//!
//! Cases per property: `PROPTEST_CASES` (10,000, set in `.cargo/config.toml`).

use std::time::Duration;

use proptest::prelude::*;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;
use suite_devcerts::{CertificateAuthority, LeafSpec};
use suite_tls::{CertificateSummary, IdentityError, SpiffeId};

const MAX_LENGTH: usize = 2048;

fn valid_trust_domain(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || matches!(byte, b'.' | b'-' | b'_'))
}

fn valid_segment(text: &str) -> bool {
    !text.is_empty()
        && text != "."
        && text != ".."
        && text
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'-' | b'_'))
}

/// One part of an id: mostly the allowed characters, sometimes ones that are not.
fn part() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z0-9._-]{0,12}",
        2 => "[A-Za-z0-9._-]{0,12}",
        1 => Just(".".to_owned()),
        1 => Just("..".to_owned()),
        1 => "[a-z0-9/:@?#%. \\[\\]]{0,8}",
        1 => "\\PC{0,6}",
    ]
}

/// Text shaped like an id, bent in every place that matters.
fn id_like() -> impl Strategy<Value = String> {
    let scheme = prop_oneof![
        6 => Just("spiffe://"),
        1 => Just("SPIFFE://"),
        1 => Just("spiffe:/"),
        1 => Just("https://"),
        1 => Just(""),
    ];
    let ns = prop_oneof![6 => Just("/ns/".to_owned()), 1 => "(/sa/|/|//|/ns|/NS/|)"];
    let sa = prop_oneof![6 => Just("/sa/".to_owned()), 1 => "(/ns/|/|/sa|/sa//|)"];
    let tail = prop_oneof![6 => Just(String::new()), 1 => "(/|/x|\\?a=1|#f|/sa/y)"];
    let shaped = (scheme, part(), part(), part(), ns, sa, tail)
        .prop_map(|(scheme, domain, namespace, account, ns, sa, tail)| format!("{scheme}{domain}{ns}{namespace}{sa}{account}{tail}"));
    let valid = (
        "[a-z0-9._-]{1,12}",
        "[A-Za-z0-9_-][A-Za-z0-9._-]{0,11}",
        "[A-Za-z0-9_-][A-Za-z0-9._-]{0,11}",
    )
        .prop_map(|(domain, namespace, account)| format!("spiffe://{domain}/ns/{namespace}/sa/{account}"));
    prop_oneof![
        6 => shaped,
        2 => valid,
        1 => any::<String>(),
        // Around the length limit.
        1 => (part(), MAX_LENGTH - 40..MAX_LENGTH + 8).prop_map(|(domain, length)| {
            let head = format!("spiffe://{domain}/ns/prod/sa/");
            let account = "a".repeat(length.saturating_sub(head.len()).max(1));
            format!("{head}{account}")
        }),
    ]
}

fn short_id_like() -> impl Strategy<Value = String> {
    id_like().prop_filter("short enough for a test certificate", |uri| uri.len() < 200)
}

/// What the rules say of `text`: its parts when it is an id.
fn expected(text: &str) -> Option<(&str, &str, &str)> {
    if text.len() > MAX_LENGTH {
        return None;
    }
    let rest = text.strip_prefix("spiffe://")?;
    let (domain, path) = rest.split_once('/')?;
    let mut segments = path.split('/');
    let (Some("ns"), Some(namespace), Some("sa"), Some(account), None) =
        (segments.next(), segments.next(), segments.next(), segments.next(), segments.next())
    else {
        return None;
    };
    (valid_trust_domain(domain) && valid_segment(namespace) && valid_segment(account)).then_some((domain, namespace, account))
}

/// A certificate authority that signs test leaves, made once.
fn authority() -> &'static CertificateAuthority {
    static AUTHORITY: std::sync::OnceLock<CertificateAuthority> = std::sync::OnceLock::new();
    AUTHORITY.get_or_init(|| {
        CertificateAuthority::generate("spiffe property tests", Duration::from_secs(3600))
            .unwrap_or_else(|error| panic!("test CA: {error}"))
    })
}

fn der_of(uris: &[String]) -> Option<Vec<u8>> {
    let mut spec = LeafSpec::client("leaf", "spiffe://x/ns/y/sa/z", Duration::from_secs(3600));
    spec.uris = uris.to_vec();
    // A URI that is not IA5 text cannot go into a certificate at all.
    let issued = authority().issue(&spec).ok()?;
    let der = CertificateDer::from_pem_slice(issued.certificate_pem.as_bytes()).unwrap_or_else(|error| panic!("{error}"));
    Some(der.to_vec())
}

/// A valid leaf's DER, made once, for mutation.
fn leaf_der() -> &'static [u8] {
    static DER: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    DER.get_or_init(|| der_of(&["spiffe://suite.local/ns/prod/sa/user-service".to_owned()]).unwrap_or_else(|| panic!("test leaf")))
}

proptest! {
    #[test]
    fn parsing_never_panics_and_follows_the_rules(text in id_like()) {
        let parsed = text.parse::<SpiffeId>();
        match (&parsed, expected(&text)) {
            (Ok(id), Some((domain, namespace, account))) => {
                prop_assert_eq!(id.to_string(), text.as_str());
                prop_assert_eq!((id.trust_domain(), id.namespace(), id.service_account()), (domain, namespace, account));
                prop_assert_eq!(SpiffeId::new(domain, namespace, account), Ok(id.clone()));
                prop_assert_eq!(id.to_string().parse::<SpiffeId>(), Ok(id.clone()));
            }
            (Err(error), None) => {
                let kind_fits = match error {
                    IdentityError::TooLong(_) => text.len() > MAX_LENGTH,
                    IdentityError::NotSpiffe(_) => !text.starts_with("spiffe://"),
                    IdentityError::TrustDomain(_) | IdentityError::Path(_) => text.starts_with("spiffe://"),
                    _ => false,
                };
                prop_assert!(kind_fits, "{:?} refused as {:?}", text, error);
            }
            (outcome, rules) => prop_assert!(false, "{:?}: parsed {:?}, the rules say {:?}", text, outcome, rules),
        }
    }

    #[test]
    fn an_id_from_parts_has_exactly_those_parts(domain in part(), namespace in part(), account in part()) {
        match SpiffeId::new(&domain, &namespace, &account) {
            Ok(id) => {
                prop_assert_eq!((id.trust_domain(), id.namespace(), id.service_account()), (domain.as_str(), namespace.as_str(), account.as_str()));
                prop_assert_eq!(id.to_string(), format!("spiffe://{domain}/ns/{namespace}/sa/{account}"));
            }
            Err(_) => prop_assert!(
                !(valid_trust_domain(&domain) && valid_segment(&namespace) && valid_segment(&account)),
                "valid parts {:?} refused", (domain, namespace, account)
            ),
        }
    }

    #[test]
    fn any_bytes_as_a_certificate_never_panic(
        bytes in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..64),
            // The start of a DER SEQUENCE, with arbitrary (often huge) lengths.
            (prop::collection::vec(any::<u8>(), 0..8), prop::collection::vec(any::<u8>(), 0..64))
                .prop_map(|(length, rest)| [vec![0x30], length, rest].concat()),
        ]
    ) {
        prop_assert!(CertificateSummary::of(&bytes).is_err());
    }

    #[test]
    fn a_damaged_certificate_never_panics(edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4), cut in any::<prop::sample::Index>(), truncate in any::<bool>()) {
        let mut der = leaf_der().to_vec();
        for (at, byte) in edits {
            let at = at.index(der.len());
            der[at] = byte;
        }
        if truncate {
            der.truncate(cut.index(der.len()));
        }
        if let Ok(summary) = CertificateSummary::of(&der) {
            prop_assert_eq!(summary.identity.to_string().parse::<SpiffeId>(), Ok(summary.identity.clone()));
        }
    }
}

proptest! {
    // Each case signs a certificate: the most expensive property here, kept to its own block.
    #[test]
    fn a_certificate_names_its_one_valid_uri_san(uris in prop_oneof![
        3 => short_id_like().prop_map(|uri| vec![uri]),
        1 => prop::collection::vec(short_id_like(), 0..4),
    ]) {
        let Some(der) = der_of(&uris) else {
            // Not IA5 text: no certificate can carry it.
            prop_assert!(uris.iter().any(|uri| !uri.is_ascii()));
            return Ok(());
        };
        let summary = CertificateSummary::of(&der);
        match uris.as_slice() {
            [] => prop_assert_eq!(summary, Err(IdentityError::MissingUri)),
            [uri] => prop_assert_eq!(summary.map(|summary| summary.identity), uri.parse::<SpiffeId>()),
            several => prop_assert_eq!(summary, Err(IdentityError::SeveralUris(several.len()))),
        }
    }
}
