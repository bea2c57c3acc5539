//! Entity `early_events`: events that arrived before their wait; `status` is `pending`,
//! `applied` or `expired` (expired rows are kept, not deleted).

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "early_events")]
pub(crate) struct Model {
    #[sea_orm(primary_key)]
    pub(crate) id: i64,
    pub(crate) tenant_id: String,
    pub(crate) correlation_id: String,
    pub(crate) event_key: String,
    #[sea_orm(column_type = "Text")]
    pub(crate) event: String,
    pub(crate) received_at: i64,
    pub(crate) expires_at: i64,
    pub(crate) status: String,
    pub(crate) wait_id: Option<Uuid>,
    pub(crate) resolved_at: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub(crate) enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
