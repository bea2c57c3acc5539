//! Entity `resume_outbox`: one row per decided wait, leased to engine streams until acked.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "resume_outbox")]
pub(crate) struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub(crate) resume_id: Uuid,
    #[sea_orm(unique)]
    pub(crate) wait_id: Uuid,
    pub(crate) tenant_id: String,
    #[sea_orm(column_type = "Text")]
    pub(crate) resume: String,
    pub(crate) created_at: i64,
    pub(crate) lease_owner: Option<String>,
    pub(crate) lease_until: Option<i64>,
    pub(crate) attempts: i32,
    pub(crate) acked_at: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub(crate) enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
