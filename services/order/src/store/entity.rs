//! The `orders` and `order_items` tables as sea-orm sees them.

pub mod order {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "orders")]
    pub struct Model {
        /// UUIDv7: ordering by id is ordering by creation, which makes listing stable.
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub user_id: Uuid,
        /// `pending`, `confirmed`, `shipped` or `cancelled`.
        pub status: String,
        pub currency: String,
        pub total_minor: i64,
        /// Unique together with `user_id`: the database, not the service,
        /// guarantees one order per user and key. Keys are not unique across
        /// users, so one user's key neither blocks nor reveals another's order.
        pub idempotency_key: String,
        /// SHA-256 of the request that created the order, to recognise its retries.
        pub request_fingerprint: String,
        pub create_time: DateTimeUtc,
        pub update_time: DateTimeUtc,
        pub version: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {
        #[sea_orm(has_many = "super::order_item::Entity")]
        Items,
    }

    impl Related<super::order_item::Entity> for Entity {
        fn to() -> RelationDef {
            Relation::Items.def()
        }
    }

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod order_item {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "order_items")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub order_id: Uuid,
        /// The item's place in the order as the client sent it, from 0.
        #[sea_orm(primary_key, auto_increment = false)]
        pub position: i32,
        pub sku: String,
        pub quantity: i32,
        pub unit_price_minor: i64,
        pub line_total_minor: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {
        #[sea_orm(
            belongs_to = "super::order::Entity",
            from = "Column::OrderId",
            to = "super::order::Column::Id",
            on_delete = "Cascade"
        )]
        Order,
    }

    impl Related<super::order::Entity> for Entity {
        fn to() -> RelationDef {
            Relation::Order.def()
        }
    }

    impl ActiveModelBehavior for ActiveModel {}
}
