//! Persistence of users through sea-orm; the same code runs on PostgreSQL and SQLite.

pub mod entity;

use chrono::{DateTime, SubsecRound, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set, TransactionTrait};
use suite_db::DbGate;
use uuid::Uuid;

use crate::domain::{NewUser, UserChanges};
use crate::error::UserError;
use entity::{ActiveModel, Column, Entity as Users, Model as User};

#[derive(Debug, Clone)]
pub struct UserStore {
    gate: DbGate,
}

impl UserStore {
    pub fn new(gate: DbGate) -> Self {
        Self { gate }
    }

    #[tracing::instrument(name = "db", skip_all, fields(otel.name = "INSERT users", otel.kind = "client", db.system = suite_db::system_name(self.gate.db()), db.operation.name = "INSERT", db.collection.name = "users", otel.status_code = tracing::field::Empty, error.type = tracing::field::Empty))]
    pub async fn create(&self, new: NewUser) -> Result<User, UserError> {
        self.gate
            .run(async {
                let now = now();
                let user = ActiveModel {
                    id: Set(Uuid::now_v7()),
                    email_key: Set(new.email.key()),
                    email: Set(new.email.as_str().to_owned()),
                    display_name: Set(new.display_name.as_str().to_owned()),
                    create_time: Set(now),
                    update_time: Set(now),
                    version: Set(1),
                };
                Ok(user.insert(self.gate.db()).await?)
            })
            .await
    }

    #[tracing::instrument(name = "db", skip_all, fields(otel.name = "SELECT users", otel.kind = "client", db.system = suite_db::system_name(self.gate.db()), db.operation.name = "SELECT", db.collection.name = "users", otel.status_code = tracing::field::Empty, error.type = tracing::field::Empty))]
    pub async fn get(&self, id: Uuid) -> Result<Option<User>, UserError> {
        self.gate.run(async { Ok(Users::find_by_id(id).one(self.gate.db()).await?) }).await
    }

    /// Applies `changes` only if the stored version is still `expected_version`;
    /// the check and the write are one statement, so concurrent updates cannot
    /// both win.
    #[tracing::instrument(name = "db", skip_all, fields(otel.name = "UPDATE users", otel.kind = "client", db.system = suite_db::system_name(self.gate.db()), db.operation.name = "UPDATE", db.collection.name = "users", otel.status_code = tracing::field::Empty, error.type = tracing::field::Empty))]
    pub async fn update(&self, id: Uuid, expected_version: i64, changes: UserChanges) -> Result<User, UserError> {
        self.gate
            .run(async {
                let transaction = self.gate.db().begin().await?;
                let mut update = Users::update_many()
                    .col_expr(Column::Version, Expr::col(Column::Version).add(1))
                    .col_expr(Column::UpdateTime, Expr::value(now()))
                    .filter(Column::Id.eq(id))
                    .filter(Column::Version.eq(expected_version));
                if let Some(email) = &changes.email {
                    update = update
                        .col_expr(Column::Email, Expr::value(email.as_str()))
                        .col_expr(Column::EmailKey, Expr::value(email.key()));
                }
                if let Some(display_name) = &changes.display_name {
                    update = update.col_expr(Column::DisplayName, Expr::value(display_name.as_str()));
                }
                let updated = update.exec(&transaction).await?.rows_affected;
                let current = Users::find_by_id(id).one(&transaction).await?;
                transaction.commit().await?;
                match current {
                    Some(user) if updated == 1 => Ok(user),
                    Some(user) => Err(UserError::VersionMismatch {
                        current: user.version,
                        requested: expected_version,
                    }),
                    None => Err(UserError::NotFound(id)),
                }
            })
            .await
    }

    /// Deletes the user; with `expected_version`, only if it is still current.
    #[tracing::instrument(name = "db", skip_all, fields(otel.name = "DELETE users", otel.kind = "client", db.system = suite_db::system_name(self.gate.db()), db.operation.name = "DELETE", db.collection.name = "users", otel.status_code = tracing::field::Empty, error.type = tracing::field::Empty))]
    pub async fn delete(&self, id: Uuid, expected_version: Option<i64>) -> Result<(), UserError> {
        self.gate
            .run(async {
                let mut delete = Users::delete_many().filter(Column::Id.eq(id));
                if let Some(version) = expected_version {
                    delete = delete.filter(Column::Version.eq(version));
                }
                if delete.exec(self.gate.db()).await?.rows_affected == 1 {
                    return Ok(());
                }
                // Not `self.get`: this read belongs to the operation the gate already counts.
                match (Users::find_by_id(id).one(self.gate.db()).await?, expected_version) {
                    (Some(user), Some(requested)) => Err(UserError::VersionMismatch {
                        current: user.version,
                        requested,
                    }),
                    _ => Err(UserError::NotFound(id)),
                }
            })
            .await
    }

    /// Up to `limit` users after `after`, oldest first (ids are UUIDv7).
    #[tracing::instrument(name = "db", skip_all, fields(otel.name = "SELECT users", otel.kind = "client", db.system = suite_db::system_name(self.gate.db()), db.operation.name = "SELECT", db.collection.name = "users", otel.status_code = tracing::field::Empty, error.type = tracing::field::Empty))]
    pub async fn list(&self, after: Option<Uuid>, limit: u64) -> Result<Vec<User>, UserError> {
        self.gate
            .run(async {
                let mut query = Users::find().order_by_asc(Column::Id).limit(limit);
                if let Some(after) = after {
                    query = query.filter(Column::Id.gt(after));
                }
                Ok(query.all(self.gate.db()).await?)
            })
            .await
    }
}

/// Timestamps are kept to the microsecond, PostgreSQL's precision, so what a
/// write returns equals what a later read returns on every backend.
fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}
