//! Schema upgrades of a database that already holds orders, on SQLite and
//! on PostgreSQL: each migration is run on the schema and rows the previous
//! ones left, the way a deployed database meets it.

#![allow(clippy::unwrap_used)]

mod common;

use common::{Suite, TestDb, item, order_request};
use order_service::domain::NewOrder;
use order_service::error::OrderError;
use order_service::migration::{MIGRATION_LOCK, Migrator};
use order_service::store::{Created, OrderRecord, OrderStore};
use sea_orm::{ConnectionTrait, Database, DatabaseConnection};
use sea_orm_migration::{MigratorTrait, SchemaManager};
use suite_proto::suite::order::v1 as pb;
use suite_testkit::database_suite;
use uuid::Uuid;

database_suite!(
    keys_per_user_upgrade_a_database_with_the_global_key_index_and_its_orders,
    keys_per_user_revert_only_while_no_two_users_share_a_key,
);

/// The index of the first migration: one order per key, whoever its user.
const GLOBAL_INDEX: &str = "orders_idempotency_key_unique";
/// The index keys are unique in from the second migration on.
const PER_USER_INDEX: &str = "orders_user_id_idempotency_key_unique";

fn request(user: Uuid, key: &str, quantity: i32) -> pb::CreateOrderRequest {
    order_request(&user.to_string(), key, vec![item("SKU-1", quantity, 250), item("SKU-2", 1, 1_000)])
}

/// Creates through the store, as the service does, so the rows and items are real ones.
async fn create(store: &OrderStore, request: &pb::CreateOrderRequest) -> Result<Created, OrderError> {
    let new = NewOrder::parse(request).unwrap();
    store.create(&new, &new.fingerprint()).await
}

async fn created(store: &OrderStore, request: &pb::CreateOrderRequest) -> OrderRecord {
    match create(store, request).await.unwrap() {
        Created::New(record) => record,
        Created::Replayed(record) => panic!("expected a new order, got a replay of {}", record.order.id),
    }
}

async fn indexes(connection: &DatabaseConnection) -> (bool, bool) {
    let manager = SchemaManager::new(connection);
    (
        manager.has_index("orders", GLOBAL_INDEX).await.unwrap(),
        manager.has_index("orders", PER_USER_INDEX).await.unwrap(),
    )
}

async fn count_orders(connection: &DatabaseConnection) -> i64 {
    let backend = connection.get_database_backend();
    let row = connection
        .query_one(sea_orm::Statement::from_string(backend, "SELECT COUNT(*) AS n FROM orders"))
        .await
        .unwrap()
        .unwrap();
    row.try_get::<i64>("", "n").unwrap()
}

async fn keys_per_user_upgrade_a_database_with_the_global_key_index_and_its_orders(db: TestDb) {
    let connection = Database::connect(db.url("order")).await.unwrap();
    Migrator::up(&connection, Some(1)).await.unwrap();
    assert_eq!(indexes(&connection).await, (true, false), "the schema before the upgrade");
    let store = OrderStore::new(suite_db::DbGate::new(connection.clone(), std::time::Duration::from_secs(5)));
    let (alice, bob) = (Uuid::now_v7(), Uuid::now_v7());
    let alices = created(&store, &request(alice, "shared", 3)).await;
    let bobs_own = created(&store, &request(bob, "bob-1", 1)).await;
    assert!(
        create(&store, &request(bob, "shared", 1)).await.is_err(),
        "under the global index, alice's key is closed to bob"
    );

    suite_db::migrate::<Migrator>(&connection, MIGRATION_LOCK).await.unwrap();
    assert_eq!(indexes(&connection).await, (false, true), "the schema after the upgrade");
    assert_eq!(
        store.get(alices.order.id).await.unwrap().unwrap(),
        alices,
        "rows survive as they were"
    );
    assert_eq!(store.get(bobs_own.order.id).await.unwrap().unwrap(), bobs_own);

    let bobs_shared = created(&store, &request(bob, "shared", 1)).await;
    assert_ne!(bobs_shared.order.id, alices.order.id);
    // Through the insert (the path a concurrent duplicate takes), then through the lookup.
    match create(&store, &request(alice, "shared", 3)).await.unwrap() {
        Created::Replayed(record) => assert_eq!(record, alices),
        Created::New(record) => panic!("alice's retry made a second order {}", record.order.id),
    }
    let new = NewOrder::parse(&request(alice, "shared", 3)).unwrap();
    assert_eq!(
        store.find_by_key(alice, "shared", &new.fingerprint()).await.unwrap(),
        Some(alices.clone())
    );
    match create(&store, &request(alice, "shared", 4)).await {
        Err(OrderError::IdempotencyConflict { order_id }) => assert_eq!(order_id, alices.order.id),
        other => panic!("expected a conflict on alice's own order, got {other:?}"),
    }
    assert_eq!(count_orders(&connection).await, 3);
    connection.close().await.unwrap();

    // The service starts on the upgraded database (nothing left to migrate)
    // and replays the order created before the upgrade; a replay needs no
    // user check, so alice need not exist in this suite's user service.
    let suite = Suite::start(&db).await;
    let replayed = suite.create(request(alice, "shared", 3)).await.unwrap();
    assert_eq!(replayed.id, alices.order.id.to_string());
    assert_eq!(suite.get(&replayed.id).await.unwrap(), replayed);
}

async fn keys_per_user_revert_only_while_no_two_users_share_a_key(db: TestDb) {
    let connection = Database::connect(db.url("order")).await.unwrap();
    suite_db::migrate::<Migrator>(&connection, MIGRATION_LOCK).await.unwrap();
    let store = OrderStore::new(suite_db::DbGate::new(connection.clone(), std::time::Duration::from_secs(5)));
    let (alice, bob) = (Uuid::now_v7(), Uuid::now_v7());
    created(&store, &request(alice, "shared", 1)).await;

    Migrator::down(&connection, Some(1)).await.unwrap();
    assert_eq!(indexes(&connection).await, (true, false));
    Migrator::up(&connection, None).await.unwrap();
    assert_eq!(indexes(&connection).await, (false, true));

    // Once two users share a key, reverting would have to take it from one
    // of them: it fails and leaves the schema as it was.
    created(&store, &request(bob, "shared", 1)).await;
    assert!(Migrator::down(&connection, Some(1)).await.is_err());
    assert_eq!(indexes(&connection).await, (false, true));
    assert_eq!(count_orders(&connection).await, 2);
}
