//! Events around the waits rather than in them: the quarantine (`quarantined_events`, events
//! set aside with a reason) and the Kafka topics registered waits listen on (`kafka_topics`).

use std::collections::BTreeMap;

use rendezvous_domain::{FieldPath, Timestamp};
use rendezvous_ports::{Quarantined, QuarantinedRow, StoreError, TopicFields};
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect,
};

use super::unreadable;
use crate::entities::{kafka_topics, quarantined_events};
use crate::rows::{db_err, json};
use crate::text;

/// Sets an event aside with its reason.
pub(super) async fn quarantine(
    conn: &impl ConnectionTrait,
    event: &Quarantined,
) -> Result<(), StoreError> {
    quarantined_events::Entity::insert(row(event)?)
        .exec_without_returning(conn)
        .await
        .map_err(db_err)?;
    Ok(())
}

/// The row that sets `event` aside.
pub(super) fn row(event: &Quarantined) -> Result<quarantined_events::ActiveModel, StoreError> {
    Ok(quarantined_events::ActiveModel {
        origin: Set(text::stored_owned(&event.origin)),
        event_key: Set(text::stored_opt(event.event_key.as_deref())),
        correlation_id: Set(text::stored_opt(event.correlation_id.as_deref())),
        payload: Set(text::stored_owned(&event.payload)),
        reason: Set(text::stored_owned(&event.reason)),
        quarantined_at: Set(event.at.as_millis()),
        tenant_id: Set(text::stored_opt(event.tenant.as_deref())),
        // JSON escapes NUL, so the text needs no further encoding.
        headers: Set(event.headers.as_ref().map(json).transpose()?),
        replays: Set(0),
        ..Default::default()
    })
}

/// The most recently quarantined events, newest first.
pub(super) async fn quarantined(
    conn: &impl ConnectionTrait,
    limit: u32,
) -> Result<Vec<QuarantinedRow>, StoreError> {
    let rows = quarantined_events::Entity::find()
        .order_by_desc(quarantined_events::Column::Id)
        .limit(u64::from(limit))
        .all(conn)
        .await
        .map_err(db_err)?;
    Ok(rows.into_iter().map(listed).collect())
}

/// One quarantined event, by row id.
pub(super) async fn quarantined_event(
    conn: &impl ConnectionTrait,
    id: i64,
) -> Result<Option<QuarantinedRow>, StoreError> {
    let row = quarantined_events::Entity::find_by_id(id)
        .one(conn)
        .await
        .map_err(db_err)?;
    Ok(row.map(listed))
}

/// Settles a replay: the row goes when the event was taken; otherwise it keeps the new reason
/// and counts the replay. False when no row has that id.
pub(super) async fn settle_replay(
    conn: &impl ConnectionTrait,
    id: i64,
    refused: Option<&str>,
) -> Result<bool, StoreError> {
    let by_id = quarantined_events::Column::Id.eq(id);
    let result = match refused {
        None => {
            quarantined_events::Entity::delete_many()
                .filter(by_id)
                .exec(conn)
                .await
                .map_err(db_err)?
                .rows_affected
        }
        Some(reason) => {
            quarantined_events::Entity::update_many()
                .col_expr(
                    quarantined_events::Column::Reason,
                    Expr::value(text::stored_owned(reason)),
                )
                .col_expr(
                    quarantined_events::Column::Replays,
                    Expr::col(quarantined_events::Column::Replays).add(1),
                )
                .filter(by_id)
                .exec(conn)
                .await
                .map_err(db_err)?
                .rows_affected
        }
    };
    Ok(result > 0)
}

/// A stored row as listed. Headers that cannot be read leave the event without them (it is
/// then not replayable), rather than failing the listing.
fn listed(row: quarantined_events::Model) -> QuarantinedRow {
    QuarantinedRow {
        id: row.id,
        replays: u32::try_from(row.replays).unwrap_or(0),
        event: Quarantined {
            origin: text::read(row.origin),
            event_key: text::read_opt(row.event_key),
            correlation_id: text::read_opt(row.correlation_id),
            payload: text::read(row.payload),
            reason: text::read(row.reason),
            at: Timestamp::from_millis(row.quarantined_at),
            tenant: text::read_opt(row.tenant_id),
            headers: row
                .headers
                .and_then(|h| serde_json::from_str::<BTreeMap<String, String>>(&h).ok()),
        },
    }
}

/// Records a topic a wait listens on, with its id fields (once).
pub(super) async fn remember_topic(
    conn: &impl ConnectionTrait,
    topic: &TopicFields,
    now: Timestamp,
) -> Result<(), StoreError> {
    kafka_topics::Entity::insert(kafka_topics::ActiveModel {
        topic: Set(text::stored_owned(&topic.topic)),
        correlation_field: Set(text::stored_owned(topic.correlation_field.as_str())),
        execution_field: Set(text::stored_owned(topic.execution_field.as_str())),
        first_seen_at: Set(now.as_millis()),
    })
    .on_conflict(
        OnConflict::columns([
            kafka_topics::Column::Topic,
            kafka_topics::Column::CorrelationField,
            kafka_topics::Column::ExecutionField,
        ])
        .do_nothing()
        .to_owned(),
    )
    .exec_without_returning(conn)
    .await
    .map_err(db_err)?;
    Ok(())
}

/// Every topic registered waits listen on, with its id fields. A row whose fields cannot be
/// read is removed and quarantined (`unreadable.rs`), stamped `now`.
pub(super) async fn kafka_topics(
    conn: &impl ConnectionTrait,
    now: Timestamp,
) -> Result<Vec<TopicFields>, StoreError> {
    let rows = kafka_topics::Entity::find()
        .order_by_asc(kafka_topics::Column::Topic)
        .all(conn)
        .await
        .map_err(db_err)?;
    let mut topics = Vec::with_capacity(rows.len());
    for row in &rows {
        let path = |raw: &str| {
            FieldPath::parse(text::read(raw.to_owned()))
                .map_err(|e| StoreError::Other(format!("field path of topic {}: {e}", row.topic)))
        };
        match path(&row.correlation_field).and_then(|c| Ok((c, path(&row.execution_field)?))) {
            Ok((correlation_field, execution_field)) => topics.push(TopicFields {
                topic: text::read(row.topic.clone()),
                correlation_field,
                execution_field,
            }),
            Err(error) => unreadable::drop_topic(conn, row, &error, now).await?,
        }
    }
    Ok(topics)
}
