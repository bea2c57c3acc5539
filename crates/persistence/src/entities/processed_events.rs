//! Entity `processed_events`: the inbox; one row per event key a wait accepted.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "processed_events")]
pub(crate) struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub(crate) wait_id: Uuid,
    #[sea_orm(primary_key, auto_increment = false)]
    pub(crate) event_key: String,
    pub(crate) source: String,
    pub(crate) processed_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub(crate) enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
