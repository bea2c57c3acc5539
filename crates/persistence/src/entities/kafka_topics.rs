//! Entity `kafka_topics`: a topic some wait listens on, with the fields carrying its ids.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "kafka_topics")]
pub(crate) struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub(crate) topic: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub(crate) correlation_field: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub(crate) execution_field: String,
    pub(crate) first_seen_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub(crate) enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
