use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Orders {
    Table,
    Id,
    UserId,
    Status,
    Currency,
    TotalMinor,
    IdempotencyKey,
    RequestFingerprint,
    CreateTime,
    UpdateTime,
    Version,
}

#[derive(DeriveIden)]
enum OrderItems {
    Table,
    OrderId,
    Position,
    Sku,
    Quantity,
    UnitPriceMinor,
    LineTotalMinor,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Orders::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(Orders::Id).uuid().not_null().primary_key())
                    .col(ColumnDef::new(Orders::UserId).uuid().not_null())
                    .col(ColumnDef::new(Orders::Status).string_len(16).not_null())
                    .col(ColumnDef::new(Orders::Currency).string_len(3).not_null())
                    .col(ColumnDef::new(Orders::TotalMinor).big_integer().not_null())
                    .col(ColumnDef::new(Orders::IdempotencyKey).string_len(128).not_null())
                    .col(ColumnDef::new(Orders::RequestFingerprint).string_len(64).not_null())
                    .col(ColumnDef::new(Orders::CreateTime).timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new(Orders::UpdateTime).timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new(Orders::Version).big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("orders_idempotency_key_unique")
                    .table(Orders::Table)
                    .col(Orders::IdempotencyKey)
                    .unique()
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        // ListOrders: one user's orders in id order.
        manager
            .create_index(
                Index::create()
                    .name("orders_user_id_id")
                    .table(Orders::Table)
                    .col(Orders::UserId)
                    .col(Orders::Id)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(OrderItems::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(OrderItems::OrderId).uuid().not_null())
                    .col(ColumnDef::new(OrderItems::Position).integer().not_null())
                    .col(ColumnDef::new(OrderItems::Sku).string_len(64).not_null())
                    .col(ColumnDef::new(OrderItems::Quantity).integer().not_null())
                    .col(ColumnDef::new(OrderItems::UnitPriceMinor).big_integer().not_null())
                    .col(ColumnDef::new(OrderItems::LineTotalMinor).big_integer().not_null())
                    .primary_key(Index::create().col(OrderItems::OrderId).col(OrderItems::Position))
                    .foreign_key(
                        ForeignKey::create()
                            .name("order_items_order_id")
                            .from(OrderItems::Table, OrderItems::OrderId)
                            .to(Orders::Table, Orders::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(OrderItems::Table).to_owned()).await?;
        manager.drop_table(Table::drop().table(Orders::Table).to_owned()).await
    }
}
