//! End users, as the edge gateway vouches for them, on SQLite and on
//! PostgreSQL: each reaches only its own orders, someone else's order is
//! indistinguishable from one that does not exist, and idempotency keys
//! belong to the user who chose them. Services and admins keep their reach.

#![allow(clippy::unwrap_used)]

mod common;

use common::{EndUserSuite, TestDb, as_end_user, item, order_request};
use suite_proto::suite::order::v1 as pb;
use suite_testkit::database_suite;
use tonic::{Code, Status};

database_suite!(
    another_users_order_answers_exactly_like_a_missing_one,
    status_changes_on_another_users_order_answer_like_a_missing_one_and_change_nothing,
    a_gateway_call_naming_no_end_user_is_refused_whatever_the_id,
    end_users_list_and_create_only_for_themselves,
    end_users_each_keep_their_own_idempotency_keys,
);

const MISSING: &str = "0190d7a4-0000-7000-8000-000000000000";

/// Everything an error tells the caller except the id it asked about.
#[derive(Debug, PartialEq)]
struct Answer {
    code: Code,
    message: String,
    details: Vec<u8>,
    metadata_keys: Vec<String>,
}

fn answer(status: &Status, asked: &str) -> Answer {
    assert!(status.message().contains(asked), "the message names the id asked about: {status:?}");
    let mut metadata_keys: Vec<String> = status
        .metadata()
        .keys()
        .map(|key| match key {
            tonic::metadata::KeyRef::Ascii(key) => key.as_str().to_owned(),
            tonic::metadata::KeyRef::Binary(key) => key.as_str().to_owned(),
        })
        .collect();
    metadata_keys.sort();
    Answer {
        code: status.code(),
        message: status.message().replace(asked, "<id>"),
        details: status.details().to_vec(),
        metadata_keys,
    }
}

/// Alice and Bob, and one pending order of Bob's.
async fn alice_bob_and_bobs_order(suite: &EndUserSuite) -> (String, String, pb::Order) {
    let alice = suite.create_user("alice@example.com").await;
    let bob = suite.create_user("bob@example.com").await;
    let order = suite
        .gateway
        .clone()
        .create_order(as_end_user(order_request(&bob, "bob-1", vec![item("B", 2, 500)]), &bob, &[]))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    (alice, bob, order)
}

async fn get(suite: &EndUserSuite, id: &str, subject: &str, roles: &[&str]) -> Result<pb::Order, Status> {
    let request = as_end_user(pb::GetOrderRequest { id: id.into() }, subject, roles);
    Ok(suite.gateway.clone().get_order(request).await?.into_inner().order.unwrap())
}

async fn another_users_order_answers_exactly_like_a_missing_one(db: TestDb) {
    let suite = EndUserSuite::start(&db).await;
    let (alice, bob, bobs) = alice_bob_and_bobs_order(&suite).await;

    let not_hers = get(&suite, &bobs.id, &alice, &[]).await.unwrap_err();
    let missing = get(&suite, MISSING, &alice, &[]).await.unwrap_err();
    assert_eq!(not_hers.code(), Code::NotFound, "{not_hers:?}");
    assert_eq!(answer(&not_hers, &bobs.id), answer(&missing, MISSING));
    assert_eq!(not_hers.message(), format!("order {} not found", bobs.id));
    assert!(!not_hers.message().contains(&bob), "{not_hers:?}");

    // Its owner, an admin and a service still read it.
    assert_eq!(get(&suite, &bobs.id, &bob, &[]).await.unwrap(), bobs);
    assert_eq!(get(&suite, &bobs.id, &alice, &["admin"]).await.unwrap(), bobs);
    let as_service = suite
        .service
        .clone()
        .get_order(pb::GetOrderRequest { id: bobs.id.clone() })
        .await
        .unwrap();
    assert_eq!(as_service.into_inner().order.unwrap(), bobs);
    // An admin asking for a missing order is told the usual NOT_FOUND.
    let admin_missing = get(&suite, MISSING, &alice, &["admin"]).await.unwrap_err();
    assert_eq!(answer(&admin_missing, MISSING), answer(&missing, MISSING));
}

/// Confirm, ship and cancel `id` as `subject`, with and without a version.
async fn change_status(suite: &EndUserSuite, id: &str, subject: &str, roles: &[&str]) -> Vec<Result<pb::Order, Status>> {
    let mut orders = suite.gateway.clone();
    let mut results = Vec::new();
    for version in [None, Some(1)] {
        let id = id.to_owned();
        results.push(
            orders
                .confirm_order(as_end_user(pb::ConfirmOrderRequest { id: id.clone(), version }, subject, roles))
                .await
                .map(|response| response.into_inner().order.unwrap()),
        );
        results.push(
            orders
                .ship_order(as_end_user(pb::ShipOrderRequest { id: id.clone(), version }, subject, roles))
                .await
                .map(|response| response.into_inner().order.unwrap()),
        );
        results.push(
            orders
                .cancel_order(as_end_user(pb::CancelOrderRequest { id, version }, subject, roles))
                .await
                .map(|response| response.into_inner().order.unwrap()),
        );
    }
    results
}

async fn status_changes_on_another_users_order_answer_like_a_missing_one_and_change_nothing(db: TestDb) {
    let suite = EndUserSuite::start(&db).await;
    let (alice, bob, bobs) = alice_bob_and_bobs_order(&suite).await;

    let not_hers = change_status(&suite, &bobs.id, &alice, &[]).await;
    let missing = change_status(&suite, MISSING, &alice, &[]).await;
    for (index, (not_hers, missing)) in not_hers.into_iter().zip(missing).enumerate() {
        let (not_hers, missing) = (not_hers.unwrap_err(), missing.unwrap_err());
        assert_eq!(not_hers.code(), Code::NotFound, "call {index}: {not_hers:?}");
        assert_eq!(answer(&not_hers, &bobs.id), answer(&missing, MISSING), "call {index}");
    }
    assert_eq!(
        get(&suite, &bobs.id, &bob, &[]).await.unwrap(),
        bobs,
        "the refused changes changed nothing"
    );

    // Its owner may change it, and so may an admin.
    let confirmed = suite
        .gateway
        .clone()
        .confirm_order(as_end_user(
            pb::ConfirmOrderRequest {
                id: bobs.id.clone(),
                version: Some(1),
            },
            &bob,
            &[],
        ))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    assert_eq!((confirmed.status(), confirmed.version), (pb::OrderStatus::Confirmed, 2));
    let shipped = suite
        .gateway
        .clone()
        .ship_order(as_end_user(
            pb::ShipOrderRequest {
                id: bobs.id.clone(),
                version: Some(2),
            },
            &alice,
            &["admin"],
        ))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    assert_eq!(shipped.status(), pb::OrderStatus::Shipped);
}

async fn a_gateway_call_naming_no_end_user_is_refused_whatever_the_id(db: TestDb) {
    let suite = EndUserSuite::start(&db).await;
    let (_, _, bobs) = alice_bob_and_bobs_order(&suite).await;
    let mut gateway = suite.gateway.clone();
    let mut refusals = Vec::new();
    for id in [bobs.id.as_str(), MISSING] {
        let read = gateway.get_order(pb::GetOrderRequest { id: id.into() }).await.unwrap_err();
        let cancel = gateway
            .cancel_order(pb::CancelOrderRequest {
                id: id.into(),
                version: None,
            })
            .await
            .unwrap_err();
        for status in [read, cancel] {
            assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
            refusals.push((status.code(), status.message().to_owned(), status.details().to_vec()));
        }
    }
    assert_eq!(refusals[..2], refusals[2..], "the answer does not depend on the id");
    let unchanged = suite
        .service
        .clone()
        .get_order(pb::GetOrderRequest { id: bobs.id.clone() })
        .await
        .unwrap();
    assert_eq!(unchanged.into_inner().order.unwrap(), bobs);
}

async fn end_users_list_and_create_only_for_themselves(db: TestDb) {
    let suite = EndUserSuite::start(&db).await;
    let (alice, bob, bobs) = alice_bob_and_bobs_order(&suite).await;
    let mut gateway = suite.gateway.clone();
    let list = |user_id: &str, subject: &str| {
        as_end_user(
            pb::ListOrdersRequest {
                user_id: user_id.into(),
                page_size: 10,
                page_token: String::new(),
            },
            subject,
            &[],
        )
    };
    // Listing someone else's orders is refused before anything is read, so
    // the answer is the same whether that user exists or has orders.
    let bobs_list = gateway.list_orders(list(&bob, &alice)).await.unwrap_err();
    let nobodys_list = gateway.list_orders(list(MISSING, &alice)).await.unwrap_err();
    assert_eq!(bobs_list.code(), Code::PermissionDenied, "{bobs_list:?}");
    assert_eq!(
        (bobs_list.code(), bobs_list.message()),
        (nobodys_list.code(), nobodys_list.message())
    );
    let own = gateway.list_orders(list(&bob, &bob)).await.unwrap().into_inner();
    assert_eq!(own.orders, vec![bobs.clone()]);

    let for_bob = gateway
        .create_order(as_end_user(
            order_request(&bob, "alice-for-bob", vec![item("A", 1, 1)]),
            &alice,
            &[],
        ))
        .await
        .unwrap_err();
    assert_eq!(for_bob.code(), Code::PermissionDenied, "{for_bob:?}");
    // Not even with the key of an order bob already has.
    let bobs_key = gateway
        .create_order(as_end_user(order_request(&bob, "bob-1", vec![item("B", 2, 500)]), &alice, &[]))
        .await
        .unwrap_err();
    assert_eq!(
        (bobs_key.code(), bobs_key.message()),
        (for_bob.code(), for_bob.message()),
        "{bobs_key:?}"
    );
}

async fn end_users_each_keep_their_own_idempotency_keys(db: TestDb) {
    let suite = EndUserSuite::start(&db).await;
    let (alice, bob, bobs) = alice_bob_and_bobs_order(&suite).await;
    let mut gateway = suite.gateway.clone();
    let create = |user: &str, key: &str, quantity: i32| as_end_user(order_request(user, key, vec![item("A", quantity, 100)]), user, &[]);
    // Alice happens to choose the key bob used: she gets an order of her own.
    let alices = gateway
        .create_order(create(&alice, "bob-1", 1))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    assert_ne!(alices.id, bobs.id);
    assert_eq!(alices.user_id, alice);
    let replay = gateway.create_order(create(&alice, "bob-1", 1)).await.unwrap();
    assert_eq!(replay.into_inner().order.unwrap(), alices);

    let conflict = gateway.create_order(create(&alice, "bob-1", 2)).await.unwrap_err();
    assert_eq!(conflict.code(), Code::AlreadyExists, "{conflict:?}");
    assert!(conflict.message().contains(&alices.id), "{conflict:?}");
    for other in [&bobs.id, &bob] {
        assert!(!conflict.message().contains(other.as_str()), "{conflict:?}");
    }
    assert!(conflict.details().is_empty(), "{conflict:?}");
    assert_eq!(get(&suite, &bobs.id, &bob, &[]).await.unwrap(), bobs, "bob's order is untouched");
}
