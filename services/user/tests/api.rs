//! Every RPC and error path of `suite.user.v1.UserService`, through a real gRPC
//! client, on SQLite and on PostgreSQL.

#![allow(clippy::unwrap_used)]

mod common;

use common::{TestDb, spawn_app};
use suite_proto::suite::user::v1 as pb;
use suite_testkit::{assert_violation, database_suite};
use tonic::Code;

database_suite!(
    create_then_get_returns_the_same_user,
    email_is_unique_ignoring_case,
    get_unknown_user_is_not_found,
    update_changes_only_the_fields_set_and_bumps_the_version,
    update_with_a_stale_version_is_aborted_and_changes_nothing,
    update_to_a_taken_email_is_already_exists,
    update_or_delete_unknown_user_is_not_found,
    delete_removes_the_user_and_checks_the_version,
    list_pages_through_every_user_once_in_creation_order,
    list_uses_default_and_maximum_page_sizes,
    invalid_requests_are_rejected_with_field_violations_and_store_nothing,
    oversized_messages_are_rejected,
    undecodable_requests_are_invalid_argument_and_store_nothing,
    reflection_v1_and_v1alpha_list_the_service,
    metrics_count_calls_by_method_and_code,
);

async fn create_then_get_returns_the_same_user(db: TestDb) {
    let app = spawn_app(&db).await;
    let created = app.create("Ann@Example.com", "  Ann Lee ").await;
    assert_eq!(created.email, "Ann@Example.com");
    assert_eq!(created.display_name, "Ann Lee", "display name is trimmed");
    assert_eq!(created.version, 1);
    assert_eq!(created.create_time, created.update_time);
    assert!(uuid::Uuid::parse_str(&created.id).is_ok());
    assert_eq!(app.get(&created.id).await.unwrap(), created);
}

async fn email_is_unique_ignoring_case(db: TestDb) {
    let app = spawn_app(&db).await;
    app.create("ann@example.com", "Ann").await;
    let duplicate = app
        .client
        .clone()
        .create_user(pb::CreateUserRequest {
            email: "ANN@example.COM".into(),
            display_name: "Other".into(),
        })
        .await;
    assert_eq!(duplicate.unwrap_err().code(), Code::AlreadyExists);
    assert_eq!(app.list_all(10).await.len(), 1, "the duplicate was not stored");
}

async fn get_unknown_user_is_not_found(db: TestDb) {
    let app = spawn_app(&db).await;
    let status = app.get(&uuid::Uuid::now_v7().to_string()).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
}

async fn update_changes_only_the_fields_set_and_bumps_the_version(db: TestDb) {
    let app = spawn_app(&db).await;
    let user = app.create("bo@example.com", "Bo").await;
    let request = pb::UpdateUserRequest {
        id: user.id.clone(),
        version: 1,
        display_name: Some("Bo Diddley".into()),
        email: None,
    };
    let updated = app.client.clone().update_user(request).await.unwrap().into_inner().user.unwrap();
    assert_eq!(updated.display_name, "Bo Diddley");
    assert_eq!(updated.email, "bo@example.com", "email untouched");
    assert_eq!(updated.version, 2);
    assert_eq!(updated.create_time, user.create_time);
    let seconds = |t: &Option<suite_proto::Timestamp>| t.as_ref().map(|t| (t.seconds, t.nanos));
    assert!(seconds(&updated.update_time) >= seconds(&user.update_time));
    assert_eq!(app.get(&user.id).await.unwrap(), updated, "a read after the write sees the write");

    let request = pb::UpdateUserRequest {
        id: user.id.clone(),
        version: 2,
        email: Some("BO@example.org".into()),
        display_name: None,
    };
    let updated = app.client.clone().update_user(request).await.unwrap().into_inner().user.unwrap();
    assert_eq!(
        (updated.email.as_str(), updated.display_name.as_str(), updated.version),
        ("BO@example.org", "Bo Diddley", 3)
    );
}

async fn update_with_a_stale_version_is_aborted_and_changes_nothing(db: TestDb) {
    let app = spawn_app(&db).await;
    let user = app.create("cy@example.com", "Cy").await;
    let first = pb::UpdateUserRequest {
        id: user.id.clone(),
        version: 1,
        display_name: Some("Cy One".into()),
        email: None,
    };
    app.client.clone().update_user(first).await.unwrap();
    let stale = pb::UpdateUserRequest {
        id: user.id.clone(),
        version: 1,
        display_name: Some("Cy Two".into()),
        email: None,
    };
    let status = app.client.clone().update_user(stale).await.unwrap_err();
    assert_eq!(status.code(), Code::Aborted);
    assert!(status.message().contains("current version is 2"), "{status:?}");
    let current = app.get(&user.id).await.unwrap();
    assert_eq!((current.display_name.as_str(), current.version), ("Cy One", 2));
}

async fn update_to_a_taken_email_is_already_exists(db: TestDb) {
    let app = spawn_app(&db).await;
    app.create("taken@example.com", "First").await;
    let second = app.create("free@example.com", "Second").await;
    let request = pb::UpdateUserRequest {
        id: second.id.clone(),
        version: 1,
        email: Some("TAKEN@example.com".into()),
        display_name: None,
    };
    assert_eq!(
        app.client.clone().update_user(request).await.unwrap_err().code(),
        Code::AlreadyExists
    );
    assert_eq!(app.get(&second.id).await.unwrap(), second, "the failed update changed nothing");
}

async fn update_or_delete_unknown_user_is_not_found(db: TestDb) {
    let app = spawn_app(&db).await;
    let id = uuid::Uuid::now_v7().to_string();
    let update = pb::UpdateUserRequest {
        id: id.clone(),
        version: 1,
        display_name: Some("X".into()),
        email: None,
    };
    assert_eq!(app.client.clone().update_user(update).await.unwrap_err().code(), Code::NotFound);
    let delete = pb::DeleteUserRequest { id, version: None };
    assert_eq!(app.client.clone().delete_user(delete).await.unwrap_err().code(), Code::NotFound);
}

async fn delete_removes_the_user_and_checks_the_version(db: TestDb) {
    let app = spawn_app(&db).await;
    let user = app.create("di@example.com", "Di").await;
    app.get(&user.id).await.unwrap(); // warm the cache: delete must invalidate it
    let stale = pb::DeleteUserRequest {
        id: user.id.clone(),
        version: Some(7),
    };
    assert_eq!(app.client.clone().delete_user(stale).await.unwrap_err().code(), Code::Aborted);
    assert_eq!(app.get(&user.id).await.unwrap(), user, "an aborted delete keeps the user");

    app.client
        .clone()
        .delete_user(pb::DeleteUserRequest {
            id: user.id.clone(),
            version: Some(1),
        })
        .await
        .unwrap();
    assert_eq!(app.get(&user.id).await.unwrap_err().code(), Code::NotFound);
    let again = app
        .client
        .clone()
        .delete_user(pb::DeleteUserRequest {
            id: user.id.clone(),
            version: None,
        })
        .await;
    assert_eq!(again.unwrap_err().code(), Code::NotFound);
    // The email is free again.
    app.create("di@example.com", "Di again").await;
}

async fn list_pages_through_every_user_once_in_creation_order(db: TestDb) {
    let app = spawn_app(&db).await;
    let mut created = Vec::new();
    for index in 0..7 {
        created.push(app.create(&format!("user{index}@example.com"), &format!("User {index}")).await);
    }
    let first = app
        .client
        .clone()
        .list_users(pb::ListUsersRequest {
            page_size: 3,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.users.len(), 3);
    assert!(!first.next_page_token.is_empty());
    assert_eq!(app.list_all(3).await, created, "every user exactly once, oldest first");
    assert_eq!(app.list_all(7).await, created, "an exactly full page ends the listing");
}

async fn list_uses_default_and_maximum_page_sizes(db: TestDb) {
    let app = spawn_app(&db).await;
    for index in 0..3 {
        app.create(&format!("p{index}@example.com"), "P").await;
    }
    for page_size in [0, 5000] {
        let page = app
            .client
            .clone()
            .list_users(pb::ListUsersRequest {
                page_size,
                page_token: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(page.users.len(), 3);
        assert!(page.next_page_token.is_empty());
    }
}

async fn invalid_requests_are_rejected_with_field_violations_and_store_nothing(db: TestDb) {
    let app = spawn_app(&db).await;
    let mut client = app.client.clone();
    let long_email = format!("{}@example.com", "a".repeat(250));
    let create_cases = [
        ("not-an-email", "Name", "email"),
        ("", "Name", "email"),
        (long_email.as_str(), "Name", "email"),
        ("a b@example.com", "Name", "email"),
        ("ok@example.com", "", "display_name"),
        ("ok@example.com", "   ", "display_name"),
        ("ok@example.com", "Bell\u{7}", "display_name"),
        ("ok@example.com", "Line\nbreak", "display_name"),
    ];
    let too_long_name = "x".repeat(101);
    for (email, display_name, field) in create_cases
        .iter()
        .copied()
        .chain([("ok@example.com", too_long_name.as_str(), "display_name")])
    {
        let result = client
            .create_user(pb::CreateUserRequest {
                email: email.into(),
                display_name: display_name.into(),
            })
            .await;
        assert_violation(result, field);
    }
    assert!(app.list_all(100).await.is_empty(), "no rejected create stored anything");

    let user = app.create("valid@example.com", "Valid").await;
    let bad_ids = ["", "42", "not-a-uuid", "0190f3c4-7a2b-7cde-8f00-0123456789abX"];
    for id in bad_ids {
        assert_violation(client.get_user(pb::GetUserRequest { id: id.into() }).await, "id");
        assert_violation(
            client
                .delete_user(pb::DeleteUserRequest {
                    id: id.into(),
                    version: None,
                })
                .await,
            "id",
        );
        let update = pb::UpdateUserRequest {
            id: id.into(),
            version: 1,
            display_name: Some("X".into()),
            email: None,
        };
        assert_violation(client.update_user(update).await, "id");
    }
    let update_cases = [
        (
            pb::UpdateUserRequest {
                id: user.id.clone(),
                version: 0,
                display_name: Some("X".into()),
                email: None,
            },
            "version",
        ),
        (
            pb::UpdateUserRequest {
                id: user.id.clone(),
                version: 1,
                display_name: None,
                email: None,
            },
            "email",
        ),
        (
            pb::UpdateUserRequest {
                id: user.id.clone(),
                version: 1,
                display_name: None,
                email: Some("nope".into()),
            },
            "email",
        ),
        (
            pb::UpdateUserRequest {
                id: user.id.clone(),
                version: 1,
                display_name: Some("\u{0}".into()),
                email: None,
            },
            "display_name",
        ),
    ];
    for (request, field) in update_cases {
        assert_violation(client.update_user(request).await, field);
    }
    assert_violation(
        client
            .delete_user(pb::DeleteUserRequest {
                id: user.id.clone(),
                version: Some(0),
            })
            .await,
        "version",
    );
    assert_eq!(
        app.get(&user.id).await.unwrap(),
        user,
        "no rejected update or delete changed the user"
    );

    assert_violation(
        client
            .list_users(pb::ListUsersRequest {
                page_size: -1,
                page_token: String::new(),
            })
            .await,
        "page_size",
    );
    let token = {
        app.create("second@example.com", "Second").await;
        client
            .list_users(pb::ListUsersRequest {
                page_size: 1,
                page_token: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .next_page_token
    };
    let mut tampered = token.clone().into_bytes();
    let last = tampered.len() - 3;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    for bad_token in [String::from_utf8(tampered).unwrap(), "garbage".into(), format!("{token}AA")] {
        assert_violation(
            client
                .list_users(pb::ListUsersRequest {
                    page_size: 1,
                    page_token: bad_token,
                })
                .await,
            "page_token",
        );
    }
}

async fn oversized_messages_are_rejected(db: TestDb) {
    let app = spawn_app(&db).await;
    let huge = "x".repeat(300 * 1024);
    let status = app
        .client
        .clone()
        .create_user(pb::CreateUserRequest {
            email: "big@example.com".into(),
            display_name: huge,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert!(app.list_all(10).await.is_empty());
}

/// A request that is not a valid message (here an email that is not UTF-8, and
/// a truncated field) is the caller's fault: INVALID_ARGUMENT, nothing stored.
async fn undecodable_requests_are_invalid_argument_and_store_nothing(db: TestDb) {
    let app = spawn_app(&db).await;
    // Field 1 (email), length-delimited, 2 bytes that are not UTF-8; then a length that runs past the end.
    for bytes in [vec![0x0a, 0x02, 0xc3, 0x28], vec![0x0a, 0x10, b'a']] {
        let mut grpc = tonic::client::Grpc::new(app.channel.clone());
        grpc.ready().await.unwrap();
        let status = grpc
            .unary(
                tonic::Request::new(bytes),
                tonic::codegen::http::uri::PathAndQuery::from_static("/suite.user.v1.UserService/CreateUser"),
                suite_grpc::codec::EncodedBytes,
            )
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    }
    assert!(app.list_all(10).await.is_empty());
}

async fn reflection_v1_and_v1alpha_list_the_service(db: TestDb) {
    use tokio_stream::StreamExt;
    let app = spawn_app(&db).await;
    let mut v1 = tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient::new(app.channel.clone());
    let request = tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(tonic_reflection::pb::v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut replies = v1.server_reflection_info(tokio_stream::iter([request])).await.unwrap().into_inner();
    let reply = format!("{:?}", replies.next().await.unwrap().unwrap());
    assert!(reply.contains("suite.user.v1.UserService"), "{reply}");

    let mut v1alpha = tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient::new(app.channel.clone());
    let request = tonic_reflection::pb::v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest::ListServices(String::new())),
    };
    let mut replies = v1alpha
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let reply = format!("{:?}", replies.next().await.unwrap().unwrap());
    assert!(reply.contains("suite.user.v1.UserService"), "{reply}");
}

async fn metrics_count_calls_by_method_and_code(db: TestDb) {
    let app = spawn_app(&db).await;
    let user = app.create("m@example.com", "M").await;
    app.get(&user.id).await.unwrap();
    app.get(&user.id).await.unwrap();
    let _ = app.get("bad").await;
    let metrics = app.metrics().await;
    let count = |method: &str, code: i32| {
        let series = format!(
            r#"rpc_server_call_duration_seconds_count{{rpc_service="suite.user.v1.UserService",rpc_method="{method}",rpc_grpc_status_code="{code}"}}"#
        );
        suite_testkit::metric_value(&metrics, &series)
    };
    assert_eq!(count("GetUser", 0), Some(2.0), "{metrics}");
    assert_eq!(count("GetUser", 3), Some(1.0), "{metrics}");
    assert_eq!(count("CreateUser", 0), Some(1.0), "{metrics}");
    assert!(metrics.contains("cache_lookups_total{"), "{metrics}");
    assert!(metrics.contains("db_pool_connections_open "), "{metrics}");
    assert!(metrics.contains("rpc_server_active_calls{"), "{metrics}");
}
