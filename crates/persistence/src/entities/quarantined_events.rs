//! Entity `quarantined_events`: events set aside with a reason (unparsable, missing ids,
//! execution-id mismatch, unclaimed past the buffer TTL) so that nothing stalls or vanishes.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "quarantined_events")]
pub(crate) struct Model {
    #[sea_orm(primary_key)]
    pub(crate) id: i64,
    pub(crate) origin: String,
    pub(crate) event_key: Option<String>,
    pub(crate) correlation_id: Option<String>,
    #[sea_orm(column_type = "Text")]
    pub(crate) payload: String,
    #[sea_orm(column_type = "Text")]
    pub(crate) reason: String,
    pub(crate) quarantined_at: i64,
    pub(crate) tenant_id: Option<String>,
    /// A Kafka record's UTF-8 headers, as a JSON object; NULL when it cannot be replayed.
    #[sea_orm(column_type = "Text", nullable)]
    pub(crate) headers: Option<String>,
    pub(crate) replays: i32,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub(crate) enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
