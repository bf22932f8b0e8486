//! Says, before the tests run, which real backends they will use: with
//! CI=true a missing backend fails the run; elsewhere its suites are skipped
//! and this banner says so loudly.

#![allow(clippy::print_stdout)] // a report on the terminal is this binary's purpose

use std::process::ExitCode;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let postgres = suite_testkit::postgres_reachable().await;
    let redis = suite_testkit::redis_reachable().await;
    let grpcurl = suite_testkit::grpcurl_path();
    let line = |name: &str, found: Result<String, String>| match found {
        Ok(detail) => println!("  {name:<11} available ({detail})"),
        Err(detail) => println!("  {name:<11} *** UNAVAILABLE: its tests will be SKIPPED *** ({detail})"),
    };
    println!("Backends for this test run:");
    line("PostgreSQL", postgres.clone());
    line("Redis", redis.clone());
    line(
        "grpcurl",
        grpcurl
            .clone()
            .map(|path| path.display().to_string())
            .ok_or_else(|| "run `just tools`".to_owned()),
    );
    let missing = postgres.is_err() || redis.is_err() || grpcurl.is_none();
    if missing && suite_testkit::in_ci() {
        println!("CI=true requires every backend; failing.");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
