//! Schema migrations of the user database, applied by `user-service migrate`
//! (a Helm pre-install/pre-upgrade Job) or by `serve` when it migrates on start.

use sea_orm_migration::prelude::*;

mod m20260101_000001_create_users;

/// Name of the advisory lock that serialises replicas migrating at once.
pub const MIGRATION_LOCK: &str = "suite.user.migrations";

#[derive(Debug)]
pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(m20260101_000001_create_users::Migration)]
    }
}
