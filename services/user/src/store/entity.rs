//! The `users` table as sea-orm sees it.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "users")]
pub struct Model {
    /// UUIDv7: ordering by id is ordering by creation, which makes listing stable.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// The address as the user gave it.
    pub email: String,
    /// Lower-cased address; its unique index makes email unique case-insensitively.
    #[sea_orm(unique)]
    pub email_key: String,
    pub display_name: String,
    pub create_time: DateTimeUtc,
    pub update_time: DateTimeUtc,
    pub version: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
