//! Idempotency keys become unique per user instead of across every user.
//!
//! With one global index, a key another user had already used made a create
//! fail with ALREADY_EXISTS naming that user's order. A key is the client's
//! name for one of its own orders, so it only has to be unique within the
//! orders of one user.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Orders {
    Table,
    UserId,
    IdempotencyKey,
}

/// The index `m20260201_000001_create_orders` made: one order per key, whoever its user.
const GLOBAL_INDEX: &str = "orders_idempotency_key_unique";
/// One order per user and key.
const PER_USER_INDEX: &str = "orders_user_id_idempotency_key_unique";

fn per_user_index() -> IndexCreateStatement {
    Index::create()
        .name(PER_USER_INDEX)
        .table(Orders::Table)
        .col(Orders::UserId)
        .col(Orders::IdempotencyKey)
        .unique()
        .if_not_exists()
        .to_owned()
}

fn global_index() -> IndexCreateStatement {
    Index::create()
        .name(GLOBAL_INDEX)
        .table(Orders::Table)
        .col(Orders::IdempotencyKey)
        .unique()
        .if_not_exists()
        .to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Existing rows always satisfy the new index: keys unique overall are
        // unique per user. It is created before the old one is dropped because
        // SQLite migrations run outside a transaction; this way no moment
        // exists in which a duplicate could slip in.
        manager.create_index(per_user_index()).await?;
        manager
            .drop_index(Index::drop().name(GLOBAL_INDEX).table(Orders::Table).if_exists().to_owned())
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Fails, changing nothing, once two users share a key: which of their
        // orders would keep it is not something a migration can decide.
        manager.create_index(global_index()).await?;
        manager
            .drop_index(Index::drop().name(PER_USER_INDEX).table(Orders::Table).if_exists().to_owned())
            .await
    }
}
