//! The user service verifies what its consumers rely on. Every consumer contract with
//! it (`services/*/contracts/user-service.toml`) must name methods and fields the
//! service has, with the same numbers and types, and its interactions must play out as
//! written against the real service (in process, SQLite, plaintext).

#![allow(clippy::unwrap_used)]

mod common;

use anyhow::Context as _;
use common::{TestDb, spawn_app};
use suite_contracts::{Contract, Variables, consumer_contracts_of, current_api, play_interactions};
use suite_proto::suite::user::v1 as pb;
use suite_proto::suite::user::v1::user_service_client::UserServiceClient;
use tonic::transport::Channel;

const PROVIDER: &str = "user-service";

fn contracts() -> Vec<Contract> {
    let contracts = consumer_contracts_of(PROVIDER).unwrap();
    assert!(
        contracts.iter().any(|contract| contract.consumer == "order-service"),
        "the order service's contract (services/order/contracts/user-service.toml) was not found"
    );
    contracts
}

/// The provider states consumers may ask for, and the variables each supplies.
async fn provider_state(users: &UserServiceClient<Channel>, state: &str) -> anyhow::Result<Variables> {
    match state {
        "a user exists" => {
            let request = pb::CreateUserRequest {
                email: format!("contract-{}@example.com", uuid::Uuid::now_v7().simple()),
                display_name: "Contract Consumer".into(),
            };
            let user = users
                .clone()
                .create_user(request)
                .await?
                .into_inner()
                .user
                .context("CreateUser answered without a user")?;
            Ok(Variables::from([("user_id".to_owned(), user.id)]))
        }
        other => anyhow::bail!("the user service defines no provider state {other:?}"),
    }
}

#[test]
fn every_consumer_contract_names_methods_and_fields_the_user_service_has() {
    let provider = current_api().unwrap();
    for contract in contracts() {
        let violations = contract.check_structure(&provider);
        assert!(
            violations.is_empty(),
            "{}'s contract ({}) no longer matches the user service:\n{}",
            contract.consumer,
            contract.source_name,
            violations.iter().map(|violation| format!("  - {violation}\n")).collect::<String>()
        );
    }
}

#[tokio::test]
async fn every_consumer_contract_plays_out_against_the_running_user_service() {
    let db = TestDb::sqlite();
    let app = spawn_app(&db).await;
    for contract in contracts() {
        assert!(
            !contract.interactions.is_empty(),
            "{} records no interaction to verify",
            contract.source_name
        );
        let report = play_interactions(&contract, app.channel.clone(), async |state: &str| {
            provider_state(&app.client, state).await
        })
        .await;
        assert!(report.passed(), "{report}");
    }
}

/// The player is only worth running if it fails a contract the service does not honour.
#[tokio::test]
async fn a_contract_the_user_service_does_not_honour_fails_each_interaction() {
    let broken = Contract::from_toml(
        r#"
consumer = "test"
provider = "user-service"
service = "suite.user.v1.UserService"

[[methods]]
name = "GetUser"
# user_id stands for a consumer built when the id was field 2.
request_fields = [
    { path = "id", number = 1, type = "string" },
    { path = "user_id", number = 2, type = "string" },
]
response_fields = [
    { path = "user", number = 1, type = "suite.user.v1.User" },
    { path = "user.id", number = 1, type = "string" },
    { path = "user.version", number = 6, type = "int64" },
]

[[interactions]]
description = "wrong status"
method = "GetUser"
request = { id = "0190f3a2-7c41-7b1e-9d2a-5e8f4c6b3a10" }
status = "OK"

[[interactions]]
description = "wrong value"
method = "GetUser"
given = "a user exists"
request = { id = "${user_id}" }
status = "OK"
response = { "user.version" = 2 }

[[interactions]]
description = "consumer with a stale field number"
method = "GetUser"
given = "a user exists"
request = { user_id = "${user_id}" }
status = "OK"

[[interactions]]
description = "unknown state"
method = "GetUser"
given = "the moon is full"
request = { id = "x" }
status = "INVALID_ARGUMENT"
"#,
        "inline",
    )
    .unwrap();
    let db = TestDb::sqlite();
    let app = spawn_app(&db).await;
    let report = play_interactions(&broken, app.channel.clone(), async |state: &str| {
        provider_state(&app.client, state).await
    })
    .await;

    let problems: Vec<(&str, &str)> = report
        .failures
        .iter()
        .map(|failure| (failure.interaction.as_str(), failure.problem.as_str()))
        .collect();
    assert_eq!(report.played, 4);
    assert_eq!(problems.len(), 4, "{report}");
    let expected = [
        ("wrong status", "answered NOT_FOUND"),
        ("wrong value", "user.version is 1, the consumer relies on 2"),
        // Sent as field 2, the id is an unknown field to the service, which sees no id at all.
        ("consumer with a stale field number", "answered INVALID_ARGUMENT"),
        ("unknown state", "defines no provider state \"the moon is full\""),
    ];
    for ((interaction, problem), (expected_interaction, expected_problem)) in problems.iter().zip(expected) {
        assert_eq!(*interaction, expected_interaction);
        assert!(problem.contains(expected_problem), "{interaction}: {problem}");
    }
}
