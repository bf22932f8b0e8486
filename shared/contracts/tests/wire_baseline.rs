//! The committed wire baseline (`proto/wire-baseline.txt`) against the API this build
//! compiled: a wire break fails with the list of breaks, and so does a baseline that
//! lacks compatible additions, so every API change is committed with its baseline.

use suite_contracts::{BASELINE_FILE, compare_with_baseline, current_api, workspace_root};

#[test]
fn the_api_matches_the_committed_wire_baseline() {
    let path = workspace_root().join(BASELINE_FILE);
    let baseline = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}; create it with `just contracts-update`", path.display()));
    let current = current_api().expect("suite_proto::FILE_DESCRIPTOR_SET decodes").suite_api();
    let verdict = compare_with_baseline(&baseline, &current)
        .unwrap_or_else(|error| panic!("{BASELINE_FILE} does not parse ({error}); rewrite it with `just contracts-update`"));
    assert!(verdict.is_up_to_date(), "{verdict}");
}
