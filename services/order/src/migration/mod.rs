//! Schema migrations of the order database (its own, separate from the user
//! service's), applied by `order-service migrate` or by `serve` on start.

use sea_orm_migration::prelude::*;

mod m20260201_000001_create_orders;
mod m20261205_000001_idempotency_key_per_user;

/// Name of the advisory lock that serialises replicas migrating at once.
pub const MIGRATION_LOCK: &str = "suite.order.migrations";

#[derive(Debug)]
pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20260201_000001_create_orders::Migration),
            Box::new(m20261205_000001_idempotency_key_per_user::Migration),
        ]
    }
}
