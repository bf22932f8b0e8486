//! Persistence of orders through sea-orm; the same code runs on PostgreSQL and SQLite.

pub mod entity;

use std::collections::HashMap;

use chrono::{DateTime, SubsecRound, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set, TransactionTrait};
use suite_db::DbFailure;
use suite_db::DbGate;
use uuid::Uuid;

use crate::domain::{NewOrder, Status, Transition};
use crate::error::OrderError;
use entity::{order, order_item};

/// An order with its items, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderRecord {
    pub order: order::Model,
    pub items: Vec<order_item::Model>,
}

impl OrderRecord {
    pub fn status(&self) -> Result<Status, OrderError> {
        Status::from_db(&self.order.status).ok_or(OrderError::Corrupt(self.order.id))
    }
}

/// What an idempotent create did.
#[derive(Debug)]
pub enum Created {
    New(OrderRecord),
    /// The key had already created this order for the same request.
    Replayed(OrderRecord),
}

#[derive(Debug, Clone)]
pub struct OrderStore {
    gate: DbGate,
}

impl OrderStore {
    pub fn new(gate: DbGate) -> Self {
        Self { gate }
    }

    /// The order `user_id`'s idempotency key created, if it was the same
    /// request; `IdempotencyConflict` if the key was used for a different one.
    /// Keys are scoped to their user: another user's order with the same key
    /// is never looked at, so it can neither be replayed nor named.
    #[tracing::instrument(name = "db", skip_all, fields(otel.name = "SELECT orders", otel.kind = "client", db.system = suite_db::system_name(self.gate.db()), db.operation.name = "SELECT", db.collection.name = "orders", otel.status_code = tracing::field::Empty, error.type = tracing::field::Empty))]
    pub async fn find_by_key(&self, user_id: Uuid, key: &str, fingerprint: &str) -> Result<Option<OrderRecord>, OrderError> {
        self.gate.run(self.lookup_key(user_id, key, fingerprint)).await
    }

    /// Inserts the order and its items in one transaction. When a concurrent
    /// request of the same user with the same key won the race, the unique
    /// index on (user, key) refuses this insert and the winner's order is
    /// returned (or a conflict reported).
    #[tracing::instrument(name = "db", skip_all, fields(otel.name = "INSERT orders", otel.kind = "client", db.system = suite_db::system_name(self.gate.db()), db.operation.name = "INSERT", db.collection.name = "orders", otel.status_code = tracing::field::Empty, error.type = tracing::field::Empty))]
    pub async fn create(&self, new: &NewOrder, fingerprint: &str) -> Result<Created, OrderError> {
        self.gate
            .run(async {
                let now = now();
                let id = Uuid::now_v7();
                let order = order::ActiveModel {
                    id: Set(id),
                    user_id: Set(new.user_id),
                    status: Set(Status::Pending.as_db().to_owned()),
                    currency: Set(new.currency.as_str().to_owned()),
                    total_minor: Set(new.total_minor),
                    idempotency_key: Set(new.idempotency_key.clone()),
                    request_fingerprint: Set(fingerprint.to_owned()),
                    create_time: Set(now),
                    update_time: Set(now),
                    version: Set(1),
                };
                let items: Vec<order_item::ActiveModel> = new
                    .lines
                    .iter()
                    .enumerate()
                    .map(|(position, line)| order_item::ActiveModel {
                        order_id: Set(id),
                        position: Set(i32::try_from(position).unwrap_or(i32::MAX)),
                        sku: Set(line.sku.clone()),
                        quantity: Set(line.quantity),
                        unit_price_minor: Set(line.unit_price_minor),
                        line_total_minor: Set(line.line_total_minor),
                    })
                    .collect();
                let insert = async {
                    let transaction = self.gate.db().begin().await?;
                    let order = order.insert(&transaction).await?;
                    order_item::Entity::insert_many(items).exec(&transaction).await?;
                    transaction.commit().await?;
                    Ok::<_, sea_orm::DbErr>(order)
                };
                match insert.await {
                    Ok(order) => Ok(Created::New(self.items_of(order).await?)),
                    Err(error) if suite_db::classify(&error) == DbFailure::UniqueViolation => {
                        match self.lookup_key(new.user_id, &new.idempotency_key, fingerprint).await? {
                            Some(existing) => Ok(Created::Replayed(existing)),
                            None => Err(OrderError::Database(error)),
                        }
                    }
                    Err(error) => Err(error.into()),
                }
            })
            .await
    }

    #[tracing::instrument(name = "db", skip_all, fields(otel.name = "SELECT orders", otel.kind = "client", db.system = suite_db::system_name(self.gate.db()), db.operation.name = "SELECT", db.collection.name = "orders", otel.status_code = tracing::field::Empty, error.type = tracing::field::Empty))]
    pub async fn get(&self, id: Uuid) -> Result<Option<OrderRecord>, OrderError> {
        self.gate.run(self.load(id)).await
    }

    /// The order row alone, without its items: enough to decide whether the
    /// caller may see it before reading more.
    #[tracing::instrument(name = "db", skip_all, fields(otel.name = "SELECT orders", otel.kind = "client", db.system = suite_db::system_name(self.gate.db()), db.operation.name = "SELECT", db.collection.name = "orders", otel.status_code = tracing::field::Empty, error.type = tracing::field::Empty))]
    pub async fn find(&self, id: Uuid) -> Result<Option<order::Model>, OrderError> {
        self.gate
            .run(async { Ok(order::Entity::find_by_id(id).one(self.gate.db()).await?) })
            .await
    }

    /// Up to `limit` of a user's orders after `after`, oldest first (ids are UUIDv7).
    #[tracing::instrument(name = "db", skip_all, fields(otel.name = "SELECT orders", otel.kind = "client", db.system = suite_db::system_name(self.gate.db()), db.operation.name = "SELECT", db.collection.name = "orders", otel.status_code = tracing::field::Empty, error.type = tracing::field::Empty))]
    pub async fn list(&self, user_id: Uuid, after: Option<Uuid>, limit: u64) -> Result<Vec<OrderRecord>, OrderError> {
        self.gate
            .run(async {
                let mut query = order::Entity::find()
                    .filter(order::Column::UserId.eq(user_id))
                    .order_by_asc(order::Column::Id)
                    .limit(limit);
                if let Some(after) = after {
                    query = query.filter(order::Column::Id.gt(after));
                }
                let orders = query.all(self.gate.db()).await?;
                let ids: Vec<Uuid> = orders.iter().map(|order| order.id).collect();
                let mut items: HashMap<Uuid, Vec<order_item::Model>> = HashMap::new();
                if !ids.is_empty() {
                    let rows = order_item::Entity::find()
                        .filter(order_item::Column::OrderId.is_in(ids))
                        .order_by_asc(order_item::Column::OrderId)
                        .order_by_asc(order_item::Column::Position)
                        .all(self.gate.db())
                        .await?;
                    for row in rows {
                        items.entry(row.order_id).or_default().push(row);
                    }
                }
                Ok(orders
                    .into_iter()
                    .map(|order| OrderRecord {
                        items: items.remove(&order.id).unwrap_or_default(),
                        order,
                    })
                    .collect())
            })
            .await
    }

    /// Applies `transition` if the order's status allows it (and, with
    /// `expected_version`, if that is still current). The check and the write
    /// are one statement, so two concurrent changes cannot both win.
    #[tracing::instrument(name = "db", skip_all, fields(otel.name = "UPDATE orders", otel.kind = "client", db.system = suite_db::system_name(self.gate.db()), db.operation.name = "UPDATE", db.collection.name = "orders", otel.status_code = tracing::field::Empty, error.type = tracing::field::Empty))]
    pub async fn transition(&self, id: Uuid, transition: Transition, expected_version: Option<i64>) -> Result<OrderRecord, OrderError> {
        self.gate
            .run(async {
                let Some(target) = Status::sources(transition).first().and_then(|source| source.after(transition)) else {
                    return Err(OrderError::Corrupt(id));
                };
                let sources: Vec<&str> = Status::sources(transition).iter().map(|status| status.as_db()).collect();
                let mut update = order::Entity::update_many()
                    .col_expr(order::Column::Status, Expr::value(target.as_db()))
                    .col_expr(order::Column::Version, Expr::col(order::Column::Version).add(1))
                    .col_expr(order::Column::UpdateTime, Expr::value(now()))
                    .filter(order::Column::Id.eq(id))
                    .filter(order::Column::Status.is_in(sources));
                if let Some(version) = expected_version {
                    update = update.filter(order::Column::Version.eq(version));
                }
                let updated = update.exec(self.gate.db()).await?.rows_affected;
                let current = self.load(id).await?.ok_or(OrderError::NotFound(id))?;
                if updated == 1 {
                    return Ok(current);
                }
                match expected_version {
                    Some(requested) if requested != current.order.version => Err(OrderError::VersionMismatch {
                        current: current.order.version,
                        requested,
                    }),
                    _ => Err(OrderError::IllegalTransition {
                        id,
                        from: current.status()?,
                        transition,
                    }),
                }
            })
            .await
    }

    /// Completes an order row (from [`Self::find`]) with its items.
    pub async fn with_items(&self, order: order::Model) -> Result<OrderRecord, OrderError> {
        self.gate.run(self.items_of(order)).await
    }

    // The reads below run inside an operation the gate already counts (the
    // public methods above wrap them), so they do not go through it again.

    /// [`Self::find_by_key`]'s read.
    async fn lookup_key(&self, user_id: Uuid, key: &str, fingerprint: &str) -> Result<Option<OrderRecord>, OrderError> {
        let Some(order) = order::Entity::find()
            .filter(order::Column::UserId.eq(user_id))
            .filter(order::Column::IdempotencyKey.eq(key))
            .one(self.gate.db())
            .await?
        else {
            return Ok(None);
        };
        if order.request_fingerprint != fingerprint {
            return Err(OrderError::IdempotencyConflict { order_id: order.id });
        }
        Ok(Some(self.items_of(order).await?))
    }

    /// [`Self::get`]'s read.
    async fn load(&self, id: Uuid) -> Result<Option<OrderRecord>, OrderError> {
        match order::Entity::find_by_id(id).one(self.gate.db()).await? {
            Some(order) => Ok(Some(self.items_of(order).await?)),
            None => Ok(None),
        }
    }

    /// [`Self::with_items`]'s read.
    async fn items_of(&self, order: order::Model) -> Result<OrderRecord, OrderError> {
        let items = order_item::Entity::find()
            .filter(order_item::Column::OrderId.eq(order.id))
            .order_by_asc(order_item::Column::Position)
            .all(self.gate.db())
            .await?;
        Ok(OrderRecord { order, items })
    }
}

/// Timestamps are kept to the microsecond, PostgreSQL's precision, so what a
/// write returns equals what a later read returns on every backend.
fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}
