//! `dev-certs` leaves a set the suite's own TLS code accepts, keeps what is
//! still good on a re-run, and re-issues on `--renew`.

#![allow(clippy::unwrap_used)]

use std::process::Command;

use suite_tls::{CredentialPaths, Credentials};

fn run(dir: &std::path::Path, extra: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_dev-certs"))
        .arg("--dir")
        .arg(dir)
        .args(extra)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stderr).unwrap()
}

fn credentials(dir: &std::path::Path, name: &str) -> Credentials {
    Credentials::load(CredentialPaths {
        cert: dir.join(format!("{name}.pem")),
        key: dir.join(format!("{name}-key.pem")),
        ca: dir.join("ca.pem"),
    })
    .unwrap_or_else(|error| panic!("{name}: {error}"))
}

#[test]
fn issues_a_usable_set_then_keeps_it_until_renewal() {
    let dir = tempfile::tempdir().unwrap();
    let first = run(dir.path(), &[]);
    assert!(first.contains("created a new CA"), "{first}");
    for name in ["user-service", "order-service", "edge-gateway", "operator"] {
        let identity = credentials(dir.path(), name).identity();
        assert_eq!(identity.to_string(), format!("spiffe://suite.local/ns/dev/sa/{name}"));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.path().join("ca-key.pem")).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "private keys are readable by the owner only");
    }

    let serial = |name: &str| credentials(dir.path(), name).current().summary().serial.clone();
    let before = serial("user-service");
    let again = run(dir.path(), &[]);
    assert!(again.contains("still valid, kept"), "{again}");
    assert_eq!(serial("user-service"), before);

    let renewed = run(dir.path(), &["--renew"]);
    assert!(!renewed.contains("created a new CA"), "renewal keeps the CA: {renewed}");
    assert_ne!(serial("user-service"), before);
}

#[test]
fn identities_follow_the_trust_domain_and_namespace_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    run(dir.path(), &["--trust-domain", "example.org", "--namespace", "staging"]);
    let identity = credentials(dir.path(), "order-service").identity();
    assert_eq!(identity.to_string(), "spiffe://example.org/ns/staging/sa/order-service");
    // A different trust domain on a re-run re-issues the leaves.
    run(dir.path(), &[]);
    let identity = credentials(dir.path(), "order-service").identity();
    assert_eq!(identity.to_string(), "spiffe://suite.local/ns/dev/sa/order-service");
}
