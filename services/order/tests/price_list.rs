//! The price list is checked whole at start-up: with a file that cannot be
//! read, does not parse, or prices something no order could carry, the
//! service serves nothing and touches no database, and the binary exits 64
//! like for any unusable configuration.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

use common::{TestDb, fast_user_service_args, order_service_config};
use suite_grpc::process::UsageError;
use suite_grpc::{Listeners, SecurityArgs};

const BAD_LISTS: &[(&str, Option<&str>)] = &[
    ("missing.toml", None),
    ("not-toml.toml", Some("[prices\n")),
    ("empty.toml", Some("[prices]\n")),
    (
        "negative.toml",
        Some("[prices]\nA = { currency_code = \"EUR\", amount_minor = -1 }\n"),
    ),
    (
        "lower-case.toml",
        Some("[prices]\nA = { currency_code = \"eur\", amount_minor = 1 }\n"),
    ),
    (
        "bad-sku.toml",
        Some("[prices]\n\"A B\" = { currency_code = \"EUR\", amount_minor = 1 }\n"),
    ),
    ("typo.toml", Some("[prices]\nA = { currency = \"EUR\", amount_minor = 1 }\n")),
];

fn write_bad_lists(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    BAD_LISTS
        .iter()
        .map(|(name, content)| {
            let path = dir.join(name);
            if let Some(content) = content {
                std::fs::write(&path, content).unwrap();
            }
            path
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_price_list_stops_the_start_up_before_the_database() {
    suite_testkit::init_logging();
    let dir = tempfile::tempdir().unwrap();
    for path in write_bad_lists(dir.path()) {
        let db = TestDb::sqlite();
        let TestDb::Sqlite(data_dir) = &db else { unreachable!() };
        let config = order_service_config(
            db.config(),
            fast_user_service_args("127.0.0.1:1".parse().unwrap()),
            SecurityArgs::insecure_plaintext(),
            Some(path.clone()),
        );
        let listeners = Listeners::bind("127.0.0.1:0".parse().unwrap(), "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let error = order_service::app::serve(config, listeners, std::future::pending())
            .await
            .expect_err("a bad price list must stop the start-up");
        assert!(error.downcast_ref::<UsageError>().is_some(), "{}: {error:#}", path.display());
        assert!(
            format!("{error:#}").contains(&path.display().to_string()),
            "names the file: {error:#}"
        );
        assert_eq!(
            std::fs::read_dir(data_dir.path()).unwrap().count(),
            0,
            "{}: no database was opened",
            path.display()
        );
    }
}

#[test]
fn the_binary_exits_64_on_a_bad_price_list() {
    let dir = tempfile::tempdir().unwrap();
    for path in write_bad_lists(dir.path()) {
        let output = Command::new(env!("CARGO_BIN_EXE_order-service"))
            .args([
                "serve",
                "--insecure-plaintext",
                "--grpc-addr",
                "127.0.0.1:0",
                "--admin-addr",
                "127.0.0.1:0",
            ])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--price-list")
            .arg(&path)
            .env_remove("DATABASE_URL")
            .env_remove("TLS_CERT")
            .env_remove("AUTHZ_POLICY")
            .output()
            .unwrap();
        let logs = String::from_utf8_lossy(&output.stdout);
        assert_eq!(output.status.code(), Some(64), "{}: {logs}", path.display());
        assert!(logs.contains("PRICE_LIST"), "says why: {logs}");
        assert!(!dir.path().join("data").exists(), "no database was opened");
    }
}
