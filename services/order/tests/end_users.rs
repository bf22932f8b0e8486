//! End users, as the edge gateway vouches for them, on SQLite and on
//! PostgreSQL: each reaches only its own orders, someone else's order is
//! indistinguishable from one that does not exist, and idempotency keys
//! belong to the user who chose them. An end user cancels its own orders but
//! never confirms or ships them, and pays the price list's prices. Services
//! and admins keep their reach: they confirm, ship and set prices.

#![allow(clippy::unwrap_used)]

mod common;

use common::{EndUserSuite, TestDb, as_end_user, item, order_request};
use suite_proto::suite::order::v1 as pb;
use suite_testkit::{assert_field_status, assert_violation, database_suite};
use tonic::{Code, Status};

database_suite!(
    another_users_order_answers_exactly_like_a_missing_one,
    status_changes_on_another_users_order_answer_like_a_missing_one_and_change_nothing,
    a_gateway_call_naming_no_end_user_is_refused_whatever_the_id,
    end_users_list_and_create_only_for_themselves,
    end_users_each_keep_their_own_idempotency_keys,
    end_users_cancel_their_own_orders_but_never_confirm_or_ship_them,
    the_back_office_confirms_and_ships,
    end_users_order_at_list_prices,
    end_users_cannot_order_off_the_list_or_at_another_price_and_nothing_is_stored,
    the_back_office_sets_prices_and_the_list_fills_in_the_rest,
    without_a_price_list_only_the_back_office_creates_orders,
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

    // An admin may change it, whoever owns it.
    let confirmed = suite
        .gateway
        .clone()
        .confirm_order(as_end_user(
            pb::ConfirmOrderRequest {
                id: bobs.id.clone(),
                version: Some(1),
            },
            &alice,
            &["admin"],
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

/// `item` without a unit price: the price list's applies.
fn unpriced(sku: &str, quantity: i32) -> pb::LineItem {
    pb::LineItem {
        unit_price: None,
        ..item(sku, quantity, 0)
    }
}

/// CreateOrder through the gateway as `subject` with `roles`.
async fn create(suite: &EndUserSuite, request: pb::CreateOrderRequest, subject: &str, roles: &[&str]) -> Result<pb::Order, Status> {
    let response = suite.gateway.clone().create_order(as_end_user(request, subject, roles)).await?;
    Ok(response.into_inner().order.unwrap())
}

async fn confirm(suite: &EndUserSuite, id: &str, version: Option<i64>, subject: &str, roles: &[&str]) -> Result<pb::Order, Status> {
    let request = as_end_user(pb::ConfirmOrderRequest { id: id.into(), version }, subject, roles);
    Ok(suite.gateway.clone().confirm_order(request).await?.into_inner().order.unwrap())
}

async fn ship(suite: &EndUserSuite, id: &str, version: Option<i64>, subject: &str, roles: &[&str]) -> Result<pb::Order, Status> {
    let request = as_end_user(pb::ShipOrderRequest { id: id.into(), version }, subject, roles);
    Ok(suite.gateway.clone().ship_order(request).await?.into_inner().order.unwrap())
}

async fn cancel(suite: &EndUserSuite, id: &str, version: Option<i64>, subject: &str, roles: &[&str]) -> Result<pb::Order, Status> {
    let request = as_end_user(pb::CancelOrderRequest { id: id.into(), version }, subject, roles);
    Ok(suite.gateway.clone().cancel_order(request).await?.into_inner().order.unwrap())
}

/// Every order of `user`, as a service reads them.
async fn orders_of(suite: &EndUserSuite, user: &str) -> Vec<pb::Order> {
    let request = pb::ListOrdersRequest {
        user_id: user.into(),
        page_size: 100,
        page_token: String::new(),
    };
    suite.service.clone().list_orders(request).await.unwrap().into_inner().orders
}

fn unit_prices(order: &pb::Order) -> Vec<(String, i64)> {
    order
        .items
        .iter()
        .map(|item| {
            let price = item.unit_price.as_ref().unwrap();
            (price.currency_code.clone(), price.amount_minor)
        })
        .collect()
}

fn total(order: &pb::Order) -> (String, i64) {
    let total = order.total.as_ref().unwrap();
    (total.currency_code.clone(), total.amount_minor)
}

fn eur(amounts: &[i64]) -> Vec<(String, i64)> {
    amounts.iter().map(|amount| ("EUR".to_owned(), *amount)).collect()
}

async fn end_users_cancel_their_own_orders_but_never_confirm_or_ship_them(db: TestDb) {
    let suite = EndUserSuite::start(&db).await;
    let (_, bob, bobs) = alice_bob_and_bobs_order(&suite).await;

    for version in [None, Some(1)] {
        let confirmed = confirm(&suite, &bobs.id, version, &bob, &[]).await.unwrap_err();
        let shipped = ship(&suite, &bobs.id, version, &bob, &[]).await.unwrap_err();
        for refused in [confirmed, shipped] {
            assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
            assert!(refused.message().contains("back office"), "{refused:?}");
        }
    }
    // Roles other than admin do not make the back office.
    let with_roles = confirm(&suite, &bobs.id, None, &bob, &["support", "reader"]).await.unwrap_err();
    assert_eq!(with_roles.code(), Code::PermissionDenied, "{with_roles:?}");
    assert_eq!(
        get(&suite, &bobs.id, &bob, &[]).await.unwrap(),
        bobs,
        "the refused changes changed nothing"
    );

    // Once the back office confirmed it, shipping is still not his to say.
    let confirmed = confirm(&suite, &bobs.id, Some(1), "ops", &["admin"]).await.unwrap();
    let shipped = ship(&suite, &bobs.id, Some(2), &bob, &[]).await.unwrap_err();
    assert_eq!(shipped.code(), Code::PermissionDenied, "{shipped:?}");
    assert_eq!(get(&suite, &bobs.id, &bob, &[]).await.unwrap(), confirmed);

    // He cancels it while the status machine allows (CONFIRMED does), and not after.
    let cancelled = cancel(&suite, &bobs.id, Some(2), &bob, &[]).await.unwrap();
    assert_eq!((cancelled.status(), cancelled.version), (pb::OrderStatus::Cancelled, 3));
    let again = cancel(&suite, &bobs.id, None, &bob, &[]).await.unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition, "{again:?}");
    // A pending order of his, too.
    let pending = create(&suite, order_request(&bob, "bob-2", vec![unpriced("A", 1)]), &bob, &[])
        .await
        .unwrap();
    let cancelled = cancel(&suite, &pending.id, None, &bob, &[]).await.unwrap();
    assert_eq!(cancelled.status(), pb::OrderStatus::Cancelled);
}

async fn the_back_office_confirms_and_ships(db: TestDb) {
    let suite = EndUserSuite::start(&db).await;
    let (alice, bob, bobs) = alice_bob_and_bobs_order(&suite).await;

    // An end user with the admin role, on another user's order.
    let confirmed = confirm(&suite, &bobs.id, Some(1), &alice, &["admin"]).await.unwrap();
    assert_eq!((confirmed.status(), confirmed.version), (pb::OrderStatus::Confirmed, 2));
    let shipped = ship(&suite, &bobs.id, Some(2), &alice, &["admin"]).await.unwrap();
    assert_eq!((shipped.status(), shipped.version), (pb::OrderStatus::Shipped, 3));

    // A service identity (a fulfilment service, say) the policy admits.
    let second = create(&suite, order_request(&bob, "bob-2", vec![unpriced("B", 1)]), &bob, &[])
        .await
        .unwrap();
    let mut service = suite.service.clone();
    let confirmed = service
        .confirm_order(pb::ConfirmOrderRequest {
            id: second.id.clone(),
            version: Some(1),
        })
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    assert_eq!(confirmed.status(), pb::OrderStatus::Confirmed);
    let shipped = service
        .ship_order(pb::ShipOrderRequest {
            id: second.id.clone(),
            version: None,
        })
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    assert_eq!((shipped.status(), shipped.version), (pb::OrderStatus::Shipped, 3));
    assert_eq!(get(&suite, &second.id, &bob, &[]).await.unwrap(), shipped);
}

async fn end_users_order_at_list_prices(db: TestDb) {
    let suite = EndUserSuite::start(&db).await;
    let bob = suite.create_user("bob@example.com").await;

    let order = create(
        &suite,
        order_request(&bob, "list-1", vec![unpriced("A", 3), item("B", 1, 500)]),
        &bob,
        &[],
    )
    .await
    .unwrap();
    assert_eq!(
        unit_prices(&order),
        eur(&[100, 500]),
        "left out or sent as listed: the list's price"
    );
    assert_eq!(
        order
            .items
            .iter()
            .map(|item| item.line_total.as_ref().unwrap().amount_minor)
            .collect::<Vec<_>>(),
        [300, 500]
    );
    assert_eq!(total(&order), ("EUR".to_owned(), 800));
    assert_eq!(get(&suite, &order.id, &bob, &[]).await.unwrap(), order);

    // The idempotency fingerprint covers the prices the order gets, not the
    // ones sent: the same order with the list's prices written out is a retry.
    let written_out = create(
        &suite,
        order_request(&bob, "list-1", vec![item("A", 3, 100), item("B", 1, 500)]),
        &bob,
        &[],
    )
    .await
    .unwrap();
    assert_eq!(written_out, order);

    let dollars = create(&suite, order_request(&bob, "list-2", vec![unpriced("DOLLAR-1", 2)]), &bob, &[])
        .await
        .unwrap();
    assert_eq!(total(&dollars), ("USD".to_owned(), 14));
    assert_eq!(orders_of(&suite, &bob).await.len(), 2);
}

async fn end_users_cannot_order_off_the_list_or_at_another_price_and_nothing_is_stored(db: TestDb) {
    use tonic_types::StatusExt as _;

    let suite = EndUserSuite::start(&db).await;
    let bob = suite.create_user("bob@example.com").await;
    let mut in_dollars = item("B", 1, 500);
    in_dollars.unit_price.as_mut().unwrap().currency_code = "USD".into();
    let cases = [
        (vec![unpriced("NOT-LISTED", 1)], "items[0].sku"),
        (vec![item("NOT-LISTED", 1, 1)], "items[0].sku"),
        (vec![unpriced("A", 1), item("B", 1, 1)], "items[1].unit_price"),
        (vec![item("B", 1, 501)], "items[0].unit_price"),
        (vec![in_dollars], "items[0].unit_price"),
        (vec![unpriced("A", 1), unpriced("DOLLAR-1", 1)], "items[1].sku"),
    ];
    for (items, field) in cases {
        assert_violation(create(&suite, order_request(&bob, "cheap", items), &bob, &[]).await, field);
    }
    let cheap = create(&suite, order_request(&bob, "cheap", vec![item("B", 2, 1)]), &bob, &[])
        .await
        .unwrap_err();
    let violation = cheap.get_details_bad_request().unwrap().field_violations.remove(0);
    assert_eq!(violation.field, "items[0].unit_price");
    assert!(violation.description.contains("EUR 500"), "names the list price: {violation:?}");
    assert!(orders_of(&suite, &bob).await.is_empty(), "nothing was stored");

    // The key is still free: no refused request took it.
    let order = create(&suite, order_request(&bob, "cheap", vec![item("B", 2, 500)]), &bob, &[])
        .await
        .unwrap();
    assert_eq!((order.version, total(&order)), (1, ("EUR".to_owned(), 1_000)));
    assert_eq!(orders_of(&suite, &bob).await, vec![order]);
}

async fn the_back_office_sets_prices_and_the_list_fills_in_the_rest(db: TestDb) {
    let suite = EndUserSuite::start(&db).await;
    let bob = suite.create_user("bob@example.com").await;

    // An admin, for bob: its own price for a listed SKU, the list's for one
    // it leaves out, and its price for a SKU the list does not have.
    let by_admin = create(
        &suite,
        order_request(
            &bob,
            "back-office-1",
            vec![item("A", 2, 1), unpriced("B", 1), item("GIFT-WRAP", 1, 0)],
        ),
        "ops",
        &["admin"],
    )
    .await
    .unwrap();
    assert_eq!(unit_prices(&by_admin), eur(&[1, 500, 0]));
    assert_eq!(total(&by_admin), ("EUR".to_owned(), 502));
    assert_eq!(get(&suite, &by_admin.id, &bob, &[]).await.unwrap(), by_admin, "stored as set");

    // A service, likewise.
    let by_service = suite
        .service
        .clone()
        .create_order(order_request(&bob, "back-office-2", vec![item("B", 1, 42), unpriced("A", 1)]))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    assert_eq!(unit_prices(&by_service), eur(&[42, 100]));

    // A SKU the list lacks needs a price.
    assert_field_status(
        create(
            &suite,
            order_request(&bob, "back-office-3", vec![unpriced("GIFT-WRAP", 1)]),
            "ops",
            &["admin"],
        )
        .await,
        Code::InvalidArgument,
        "items[0].unit_price",
    );

    // Bob sending the admin's key and items without prices asks for a
    // different order (list prices), so he does not get the discounted one.
    let conflict = create(
        &suite,
        order_request(&bob, "back-office-1", vec![unpriced("A", 2), unpriced("B", 1)]),
        &bob,
        &[],
    )
    .await
    .unwrap_err();
    assert_eq!(conflict.code(), Code::AlreadyExists, "{conflict:?}");
    assert_eq!(orders_of(&suite, &bob).await.len(), 2);
}

async fn without_a_price_list_only_the_back_office_creates_orders(db: TestDb) {
    let suite = EndUserSuite::start_with_prices(&db, None).await;
    let bob = suite.create_user("bob@example.com").await;

    for items in [vec![item("A", 1, 100)], vec![unpriced("A", 1)]] {
        let refused = create(&suite, order_request(&bob, "k", items), &bob, &[]).await.unwrap_err();
        assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
        assert!(refused.message().contains("price list"), "{refused:?}");
    }
    // Malformed requests are still told what is wrong with them.
    assert_violation(
        create(&suite, order_request(&bob, "k", vec![item("A", 0, 100)]), &bob, &[]).await,
        "items[0].quantity",
    );
    assert!(orders_of(&suite, &bob).await.is_empty());

    // The back office sets every price itself.
    let by_admin = create(&suite, order_request(&bob, "k", vec![item("A", 1, 100)]), "ops", &["admin"])
        .await
        .unwrap();
    assert_eq!(unit_prices(&by_admin), eur(&[100]));
    assert_violation(
        create(&suite, order_request(&bob, "k2", vec![unpriced("A", 1)]), "ops", &["admin"]).await,
        "items[0].unit_price",
    );
    // Bob still reads and cancels his order.
    let cancelled = cancel(&suite, &by_admin.id, None, &bob, &[]).await.unwrap();
    assert_eq!(cancelled.status(), pb::OrderStatus::Cancelled);
}
