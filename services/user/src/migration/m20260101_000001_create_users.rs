use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
    Email,
    EmailKey,
    DisplayName,
    CreateTime,
    UpdateTime,
    Version,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Users::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(Users::Id).uuid().not_null().primary_key())
                    .col(ColumnDef::new(Users::Email).string_len(254).not_null())
                    .col(ColumnDef::new(Users::EmailKey).string_len(254).not_null())
                    .col(ColumnDef::new(Users::DisplayName).string_len(400).not_null())
                    .col(ColumnDef::new(Users::CreateTime).timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new(Users::UpdateTime).timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new(Users::Version).big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("users_email_key_unique")
                    .table(Users::Table)
                    .col(Users::EmailKey)
                    .unique()
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(Users::Table).to_owned()).await
    }
}
