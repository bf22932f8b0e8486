//! Every RPC and error path of `suite.order.v1.OrderService` through a real
//! gRPC client, on SQLite and on PostgreSQL, with the real user service behind it.

#![allow(clippy::unwrap_used)]

mod common;

use common::{Suite, TestDb, item, order_request};
use sea_orm::{ConnectionTrait, Database};
use suite_proto::suite::order::v1 as pb;
use suite_testkit::{assert_field_status, assert_violation, database_suite};
use tonic::Code;

database_suite!(
    create_then_get_returns_the_order_with_server_computed_totals,
    an_unknown_user_is_a_failed_precondition_on_user_id,
    invalid_requests_are_rejected_with_field_violations_and_store_nothing,
    the_same_key_and_request_returns_the_original_order,
    the_same_key_with_a_different_request_is_already_exists,
    fifty_concurrent_creates_with_one_key_make_one_order,
    two_users_using_one_key_get_an_order_each,
    a_key_reused_by_one_user_replays_or_conflicts_naming_only_that_users_order,
    status_changes_follow_the_state_machine,
    list_pages_through_one_users_orders_only,
);

async fn count_orders(db: &TestDb) -> i64 {
    let connection = Database::connect(db.url("order")).await.unwrap();
    let backend = connection.get_database_backend();
    let row = connection
        .query_one(sea_orm::Statement::from_string(backend, "SELECT COUNT(*) AS n FROM orders"))
        .await
        .unwrap()
        .unwrap();
    row.try_get::<i64>("", "n").unwrap()
}

async fn create_then_get_returns_the_order_with_server_computed_totals(db: TestDb) {
    let suite = Suite::start(&db).await;
    let user = suite.create_user("buyer@example.com").await;
    let order = suite
        .create(order_request(&user, "k1", vec![item("SKU-1", 3, 250), item("SKU-2", 1, 1_000)]))
        .await
        .unwrap();
    assert_eq!(order.status(), pb::OrderStatus::Pending);
    assert_eq!(order.version, 1);
    assert_eq!(order.total.as_ref().unwrap().amount_minor, 1_750);
    assert_eq!(order.items[0].line_total.as_ref().unwrap().amount_minor, 750);
    assert_eq!(order.items[1].sku, "SKU-2");
    assert_eq!(suite.get(&order.id).await.unwrap(), order);

    let missing = suite.get("0190d7a4-0000-7000-8000-000000000000").await.unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    assert_violation(suite.get("not-a-uuid").await, "id");
}

async fn an_unknown_user_is_a_failed_precondition_on_user_id(db: TestDb) {
    let suite = Suite::start(&db).await;
    let result = suite
        .create(order_request("0190d7a4-0000-7000-8000-000000000000", "k1", vec![item("A", 1, 1)]))
        .await;
    assert_field_status(result, Code::FailedPrecondition, "user_id");
    assert_eq!(count_orders(&db).await, 0);
}

async fn invalid_requests_are_rejected_with_field_violations_and_store_nothing(db: TestDb) {
    let suite = Suite::start(&db).await;
    let user = suite.create_user("bad@example.com").await;
    let cases = [
        (order_request("nope", "k", vec![item("A", 1, 1)]), "user_id"),
        (order_request(&user, "", vec![item("A", 1, 1)]), "idempotency_key"),
        (order_request(&user, &"k".repeat(129), vec![item("A", 1, 1)]), "idempotency_key"),
        (order_request(&user, "k", vec![]), "items"),
        (order_request(&user, "k", vec![item("A", 1, 1); 101]), "items"),
        (order_request(&user, "k", vec![item("bad sku", 1, 1)]), "items[0].sku"),
        (order_request(&user, "k", vec![item("A", 0, 1)]), "items[0].quantity"),
        (order_request(&user, "k", vec![item("A", 10_001, 1)]), "items[0].quantity"),
        (
            order_request(&user, "k", vec![item("A", 1, -5)]),
            "items[0].unit_price.amount_minor",
        ),
        (
            order_request(&user, "k", vec![item("A", 2, i64::MAX)]),
            "items[0].unit_price.amount_minor",
        ),
        (order_request(&user, "k", vec![item("A", 1, i64::MAX), item("B", 1, 1)]), "items"),
    ];
    for (request, field) in cases {
        assert_violation(suite.create(request).await, field);
    }
    let mut no_price = order_request(&user, "k", vec![item("A", 1, 1)]);
    no_price.items[0].unit_price = None;
    // A service may leave a price out only for a SKU on the price list, and this service has none.
    assert_violation(suite.create(no_price).await, "items[0].unit_price");
    let mut dollars = order_request(&user, "k", vec![item("A", 1, 1), item("B", 1, 1)]);
    dollars.items[1].unit_price.as_mut().unwrap().currency_code = "USD".into();
    assert_violation(suite.create(dollars).await, "items[1].unit_price.currency_code");
    assert_eq!(count_orders(&db).await, 0);
}

async fn the_same_key_and_request_returns_the_original_order(db: TestDb) {
    let suite = Suite::start(&db).await;
    let user = suite.create_user("retry@example.com").await;
    let request = order_request(&user, "retry-1", vec![item("A", 2, 100)]);
    let first = suite.create(request.clone()).await.unwrap();
    let again = suite.create(request).await.unwrap();
    assert_eq!(again, first);
    assert_eq!(count_orders(&db).await, 1);
}

async fn the_same_key_with_a_different_request_is_already_exists(db: TestDb) {
    let suite = Suite::start(&db).await;
    let user = suite.create_user("reuse@example.com").await;
    let first = suite.create(order_request(&user, "reused", vec![item("A", 1, 100)])).await.unwrap();
    let status = suite
        .create(order_request(&user, "reused", vec![item("A", 2, 100)]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");
    assert!(
        status.message().contains(&first.id),
        "the message names the order: {}",
        status.message()
    );
    assert_eq!(count_orders(&db).await, 1);
}

async fn fifty_concurrent_creates_with_one_key_make_one_order(db: TestDb) {
    let suite = Suite::start(&db).await;
    let user = suite.create_user("race@example.com").await;
    let request = order_request(&user, "one-key", vec![item("A", 1, 999)]);
    let calls: Vec<_> = (0..50)
        .map(|_| {
            let mut client = suite.orders.clone();
            let request = request.clone();
            tokio::spawn(async move { client.create_order(request).await })
        })
        .collect();
    let mut ids = std::collections::HashSet::new();
    for call in calls {
        let order = call.await.unwrap().unwrap().into_inner().order.unwrap();
        ids.insert(order.id);
    }
    assert_eq!(ids.len(), 1, "callers got different orders: {ids:?}");
    assert_eq!(count_orders(&db).await, 1);
}

async fn two_users_using_one_key_get_an_order_each(db: TestDb) {
    let suite = Suite::start(&db).await;
    let alice = suite.create_user("alice-key@example.com").await;
    let bob = suite.create_user("bob-key@example.com").await;
    let alices = suite
        .create(order_request(&alice, "shared", vec![item("A", 1, 100)]))
        .await
        .unwrap();
    let bobs = suite.create(order_request(&bob, "shared", vec![item("A", 1, 100)])).await.unwrap();
    assert_ne!(alices.id, bobs.id);
    assert_eq!((alices.user_id.as_str(), bobs.user_id.as_str()), (alice.as_str(), bob.as_str()));

    // Racing creates: the unique index on (user, key) lets one order per user
    // through, and every loser is answered with its own user's winner.
    let calls: Vec<_> = (0..20)
        .map(|index| {
            let user = if index % 2 == 0 { &alice } else { &bob };
            let request = order_request(user, "raced", vec![item("R", 1, 7)]);
            let mut client = suite.orders.clone();
            tokio::spawn(async move { client.create_order(request).await })
        })
        .collect();
    let mut winners = std::collections::HashMap::new();
    for call in calls {
        let order = call.await.unwrap().unwrap().into_inner().order.unwrap();
        let previous = winners.insert(order.user_id.clone(), order.id.clone());
        assert!(previous.is_none_or(|id| id == order.id), "one user got two orders");
    }
    assert_eq!(winners.len(), 2, "{winners:?}");
    assert_ne!(winners[&alice], winners[&bob]);
    assert_eq!(count_orders(&db).await, 4);
}

async fn a_key_reused_by_one_user_replays_or_conflicts_naming_only_that_users_order(db: TestDb) {
    let suite = Suite::start(&db).await;
    let alice = suite.create_user("alice-reuse@example.com").await;
    let bob = suite.create_user("bob-reuse@example.com").await;
    // Bob's order comes first, so a lookup by key alone would find it.
    let bobs = suite.create(order_request(&bob, "k", vec![item("B", 1, 100)])).await.unwrap();
    let request = order_request(&alice, "k", vec![item("A", 1, 100)]);
    let alices = suite.create(request.clone()).await.unwrap();
    assert_ne!(alices.id, bobs.id);

    assert_eq!(suite.create(request).await.unwrap(), alices, "a retry replays alice's own order");
    let status = suite.create(order_request(&alice, "k", vec![item("A", 2, 100)])).await.unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");
    assert_eq!(
        status.message(),
        format!(
            "this user already used this idempotency key for order {} with a different request; use a new key for a new order",
            alices.id
        )
    );
    for other in [&bobs.id, &bob] {
        assert!(!status.message().contains(other.as_str()), "{status:?}");
    }
    assert!(status.details().is_empty(), "{status:?}");
    assert_eq!(suite.get(&bobs.id).await.unwrap(), bobs, "bob's order is untouched");
    assert_eq!(count_orders(&db).await, 2);
}

async fn status_changes_follow_the_state_machine(db: TestDb) {
    let suite = Suite::start(&db).await;
    let user = suite.create_user("states@example.com").await;
    let mut orders = suite.orders.clone();
    let new_order = |key: &str| suite.create(order_request(&user, key, vec![item("A", 1, 1)]));
    let id = |order: &pb::Order| order.id.clone();

    // PENDING -> CONFIRMED -> SHIPPED, then nothing more.
    let order = new_order("happy").await.unwrap();
    let ship_early = orders
        .ship_order(pb::ShipOrderRequest {
            id: id(&order),
            version: None,
        })
        .await
        .unwrap_err();
    assert_eq!(ship_early.code(), Code::FailedPrecondition, "{ship_early:?}");
    assert!(ship_early.message().contains("pending"), "{}", ship_early.message());
    let confirmed = orders
        .confirm_order(pb::ConfirmOrderRequest {
            id: id(&order),
            version: Some(1),
        })
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    assert_eq!((confirmed.status(), confirmed.version), (pb::OrderStatus::Confirmed, 2));
    let stale = orders
        .ship_order(pb::ShipOrderRequest {
            id: id(&order),
            version: Some(1),
        })
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::Aborted, "{stale:?}");
    let shipped = orders
        .ship_order(pb::ShipOrderRequest {
            id: id(&order),
            version: Some(2),
        })
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    assert_eq!(shipped.status(), pb::OrderStatus::Shipped);
    let cancel_shipped = orders
        .cancel_order(pb::CancelOrderRequest {
            id: id(&order),
            version: None,
        })
        .await
        .unwrap_err();
    assert_eq!(cancel_shipped.code(), Code::FailedPrecondition);
    assert_eq!(suite.get(&order.id).await.unwrap().version, 3, "refused changes change nothing");

    // CANCELLED from PENDING and from CONFIRMED, and final.
    let pending = new_order("cancel-pending").await.unwrap();
    let cancelled = orders
        .cancel_order(pb::CancelOrderRequest {
            id: id(&pending),
            version: None,
        })
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    assert_eq!(cancelled.status(), pb::OrderStatus::Cancelled);
    let confirm_cancelled = orders
        .confirm_order(pb::ConfirmOrderRequest {
            id: id(&pending),
            version: None,
        })
        .await
        .unwrap_err();
    assert_eq!(confirm_cancelled.code(), Code::FailedPrecondition);
    let other = new_order("cancel-confirmed").await.unwrap();
    orders
        .confirm_order(pb::ConfirmOrderRequest {
            id: id(&other),
            version: None,
        })
        .await
        .unwrap();
    let cancelled = orders
        .cancel_order(pb::CancelOrderRequest {
            id: id(&other),
            version: None,
        })
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    assert_eq!(cancelled.status(), pb::OrderStatus::Cancelled);

    let unknown = orders
        .confirm_order(pb::ConfirmOrderRequest {
            id: "0190d7a4-0000-7000-8000-000000000000".into(),
            version: None,
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    assert_violation(
        orders
            .cancel_order(pb::CancelOrderRequest {
                id: id(&other),
                version: Some(0),
            })
            .await,
        "version",
    );
}

async fn list_pages_through_one_users_orders_only(db: TestDb) {
    let suite = Suite::start(&db).await;
    let alice = suite.create_user("alice@example.com").await;
    let bob = suite.create_user("bob@example.com").await;
    let mut created = Vec::new();
    for index in 0..7 {
        created.push(
            suite
                .create(order_request(&alice, &format!("a{index}"), vec![item("A", 1, index)]))
                .await
                .unwrap()
                .id,
        );
    }
    suite.create(order_request(&bob, "b0", vec![item("B", 1, 1)])).await.unwrap();

    let mut orders = suite.orders.clone();
    let mut seen = Vec::new();
    let mut page_token = String::new();
    let mut first_token = None;
    loop {
        let page = orders
            .list_orders(pb::ListOrdersRequest {
                user_id: alice.clone(),
                page_size: 3,
                page_token,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.orders.len() <= 3);
        seen.extend(page.orders.into_iter().map(|order| order.id));
        if page.next_page_token.is_empty() {
            break;
        }
        first_token.get_or_insert(page.next_page_token.clone());
        page_token = page.next_page_token;
    }
    assert_eq!(seen, created, "every order of alice once, oldest first, none of bob's");

    let stolen = orders
        .list_orders(pb::ListOrdersRequest {
            user_id: bob.clone(),
            page_size: 3,
            page_token: first_token.unwrap(),
        })
        .await;
    assert_violation(stolen, "page_token");
    assert_violation(
        orders
            .list_orders(pb::ListOrdersRequest {
                user_id: bob,
                page_size: -1,
                page_token: String::new(),
            })
            .await,
        "page_size",
    );
}
