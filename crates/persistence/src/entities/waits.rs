//! Entity `waits`: one row per wait; `spec` is immutable, `progress` changes under `version`.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "waits")]
pub(crate) struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub(crate) id: Uuid,
    pub(crate) tenant_id: String,
    pub(crate) correlation_id: String,
    pub(crate) execution_id: String,
    pub(crate) node_id: String,
    pub(crate) idempotency_key: String,
    pub(crate) workflow_id: Option<String>,
    pub(crate) status: String,
    #[sea_orm(column_type = "Text")]
    pub(crate) spec: String,
    #[sea_orm(column_type = "Text")]
    pub(crate) progress: String,
    pub(crate) deadline: i64,
    pub(crate) created_at: i64,
    pub(crate) updated_at: i64,
    pub(crate) decided_at: Option<i64>,
    pub(crate) version: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub(crate) enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
