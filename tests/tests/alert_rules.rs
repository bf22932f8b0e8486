//! The canonical alert rules (helm/alerts/, which the charts install through
//! byte-for-byte copies) pass Prometheus's own checks: `promtool check rules`
//! on every file, and `promtool test rules` on the fixture, which feeds them
//! series and expects each alert to fire, or stay quiet, when it should.

#![allow(clippy::unwrap_used)]

use suite_testkit::{run_promtool, workspace_root};

const RULE_FILES: [&str; 3] = [
    "helm/alerts/user-service.rules.yaml",
    "helm/alerts/order-service.rules.yaml",
    "helm/alerts/edge-gateway.rules.yaml",
];

#[test]
fn every_rules_file_passes_promtool_check_rules() {
    let Some(promtool) = suite_testkit::promtool() else { return };
    for file in RULE_FILES {
        let checked = run_promtool(&promtool, &["check", "rules", file], "");
        assert!(checked.is_ok(), "{file}: {checked:?}");
        assert!(checked.unwrap().contains("SUCCESS"), "{file}");
    }
}

#[test]
fn the_alerts_fire_on_the_fixture_traffic_and_only_there() {
    let Some(promtool) = suite_testkit::promtool() else { return };
    let tested = run_promtool(&promtool, &["test", "rules", "helm/alerts/alerts.test.yaml"], "");
    assert!(tested.is_ok(), "{tested:?}");
}

#[test]
fn a_rule_that_does_not_fire_as_expected_fails_promtool_test_rules() {
    let Some(promtool) = suite_testkit::promtool() else { return };
    // The same fixture against a copy of the rules whose error threshold was raised past the traffic.
    let dir = tempfile::tempdir().unwrap();
    for file in RULE_FILES {
        let text = std::fs::read_to_string(workspace_root().join(file)).unwrap();
        let name = std::path::Path::new(file).file_name().unwrap();
        std::fs::write(dir.path().join(name), text.replace("> 0.05", "> 0.5")).unwrap();
    }
    std::fs::copy(
        workspace_root().join("helm/alerts/alerts.test.yaml"),
        dir.path().join("alerts.test.yaml"),
    )
    .unwrap();
    let fixture = dir.path().join("alerts.test.yaml");
    let tested = run_promtool(&promtool, &["test", "rules", fixture.to_str().unwrap()], "");
    let failure = tested.unwrap_err();
    assert!(failure.contains("UserServiceHighErrorRatio"), "{failure}");
}
