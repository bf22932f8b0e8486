//! What counts as usable TLS material, and what a reload does with changed files.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use suite_devcerts::LeafSpec;
use suite_testkit::pki::hours_from_now;
use suite_testkit::{TestCert, TestPki};
use suite_tls::{CredentialPaths, Credentials, MaterialError, ReloadOutcome};

fn load(pki: &TestPki, cert: &TestCert) -> Result<Credentials, MaterialError> {
    Credentials::load(pki.paths(cert))
}

#[test]
fn loads_a_matching_certificate_key_and_bundle() {
    let pki = TestPki::new();
    let cert = pki.service("user-service");
    let credentials = load(&pki, &cert).unwrap();
    assert_eq!(credentials.identity(), TestPki::id("user-service"));
    assert_eq!(credentials.current().summary().serial, cert.serial);
}

#[test]
fn refuses_material_that_does_not_hold_together() {
    let pki = TestPki::new();
    let good = pki.service("user-service");
    let other = pki.service("order-service");

    let mismatched = load(
        &pki,
        &TestCert {
            key: other.key.clone(),
            ..good.clone()
        },
    );
    assert!(matches!(mismatched, Err(MaterialError::KeyMismatch(_))), "{mismatched:?}");

    let foreign_ca = TestPki::new();
    let foreign = Credentials::load(CredentialPaths {
        ca: foreign_ca.ca_path(),
        ..pki.paths(&good)
    });
    assert!(matches!(foreign, Err(MaterialError::Untrusted(_))), "{foreign:?}");

    let expired = pki.service_with("expired", |spec| {
        spec.not_before = hours_from_now(-48);
        spec.not_after = hours_from_now(-1);
    });
    assert!(matches!(load(&pki, &expired), Err(MaterialError::Untrusted(_))));

    let anonymous = pki.service_with("anonymous", |spec| spec.uris.clear());
    assert!(matches!(load(&pki, &anonymous), Err(MaterialError::Identity(_))));

    let garbage_ca = pki.dir.path().join("garbage-ca.pem");
    std::fs::write(&garbage_ca, "not a certificate").unwrap();
    let no_ca = Credentials::load(CredentialPaths {
        ca: garbage_ca,
        ..pki.paths(&good)
    });
    assert!(matches!(no_ca, Err(MaterialError::CaBundle(_))), "{no_ca:?}");

    let missing = Credentials::load(CredentialPaths {
        key: pki.dir.path().join("nowhere.pem"),
        ..pki.paths(&good)
    });
    assert!(matches!(missing, Err(MaterialError::Read(..))), "{missing:?}");
}

#[test]
fn reload_applies_complete_material_and_keeps_the_last_good_otherwise() {
    let pki = TestPki::new();
    let cert = pki.service("user-service");
    let credentials = load(&pki, &cert).unwrap();
    assert!(matches!(credentials.reload(), ReloadOutcome::Unchanged));

    let spec = LeafSpec::service("user-service", &TestPki::id("user-service").to_string(), Duration::from_secs(3600));
    let renewed = pki.ca.issue(&spec).unwrap();

    // Half a certificate: refused with a reason, old material kept, and not re-tried until it changes.
    let half = &renewed.certificate_pem[..renewed.certificate_pem.len() / 2];
    std::fs::write(&cert.cert, half).unwrap();
    match credentials.reload() {
        ReloadOutcome::Rejected(error) => assert!(error.to_string().contains("truncated"), "{error}"),
        other => panic!("a truncated certificate was not refused: {other:?}"),
    }
    assert_eq!(credentials.current().summary().serial, cert.serial);
    assert!(matches!(credentials.reload(), ReloadOutcome::Unchanged));

    // The new certificate without its key yet: refused.
    std::fs::write(&cert.cert, &renewed.certificate_pem).unwrap();
    assert!(matches!(
        credentials.reload(),
        ReloadOutcome::Rejected(MaterialError::KeyMismatch(_))
    ));

    // Both in place: applied.
    std::fs::write(&cert.key, &renewed.key_pem).unwrap();
    match credentials.reload() {
        ReloadOutcome::Applied(summary) => assert_eq!(summary.serial, renewed.serial),
        other => panic!("complete material was not applied: {other:?}"),
    }
    assert_eq!(credentials.current().summary().serial, renewed.serial);
}
