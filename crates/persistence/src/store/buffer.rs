//! The early-event buffer (`early_events`): events that arrived before their wait, pending
//! until a registration applies them or their TTL passes (then expired and quarantined, never
//! deleted silently).

use rendezvous_domain::{CorrelationId, IncomingEvent, TenantId, Timestamp, WaitId};
use rendezvous_ports::{BufferedEvent, BufferedSummary, Quarantined, StoreError, TenantScope};
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, TransactionTrait,
};

use super::{events, unreadable};
use crate::entities::{early_events, quarantined_events};
use crate::rows::{BufferStatus, db_err, json};
use crate::text;

/// Most buffered events one [`expire`] call handles.
const EXPIRE_BATCH: u64 = 1000;

/// Buffers an early event; `false` when the same event is already pending. A redelivery of an
/// event that expired (or is past its TTL) buffers it again, so it is not lost.
pub(super) async fn buffer_event(
    conn: &impl ConnectionTrait,
    tenant: &TenantId,
    correlation_id: &CorrelationId,
    event: &IncomingEvent,
    expires_at: Timestamp,
) -> Result<bool, StoreError> {
    let row = early_events::ActiveModel {
        tenant_id: Set(tenant.to_string()),
        correlation_id: Set(correlation_id.to_string()),
        event_key: Set(event.key.to_string()),
        event: Set(json(event)?),
        received_at: Set(event.received_at.as_millis()),
        expires_at: Set(expires_at.as_millis()),
        status: Set(BufferStatus::Pending.as_str().to_owned()),
        wait_id: Set(None),
        resolved_at: Set(None),
        ..Default::default()
    };
    let now = event.received_at.as_millis();
    let revive = {
        // In a block: `ExprTrait`'s `eq` would be ambiguous with `ColumnTrait`'s elsewhere.
        use sea_orm::sea_query::ExprTrait;
        Expr::col((early_events::Entity, early_events::Column::Status))
            .eq(BufferStatus::Expired.as_str())
            .or(Expr::col((early_events::Entity, early_events::Column::ExpiresAt)).lte(now))
    };
    let inserted = early_events::Entity::insert(row)
        .on_conflict(
            OnConflict::columns([
                early_events::Column::TenantId,
                early_events::Column::CorrelationId,
                early_events::Column::EventKey,
            ])
            .update_columns([
                early_events::Column::Event,
                early_events::Column::ReceivedAt,
                early_events::Column::ExpiresAt,
                early_events::Column::Status,
                early_events::Column::ResolvedAt,
            ])
            .action_and_where(revive)
            .to_owned(),
        )
        .exec_without_returning(conn)
        .await
        .map_err(db_err)?;
    Ok(inserted == 1)
}

/// The pending events of a correlation id whose TTL has not passed, oldest first. An event
/// that cannot be read is quarantined and expired (`unreadable.rs`) and left out.
pub(super) async fn pending(
    conn: &impl ConnectionTrait,
    tenant: &TenantId,
    correlation_id: &CorrelationId,
    now: Timestamp,
) -> Result<Vec<BufferedEvent>, StoreError> {
    let rows = early_events::Entity::find()
        .filter(early_events::Column::TenantId.eq(tenant.as_str()))
        .filter(early_events::Column::CorrelationId.eq(correlation_id.as_str()))
        .filter(early_events::Column::Status.eq(BufferStatus::Pending.as_str()))
        .filter(early_events::Column::ExpiresAt.gt(now.as_millis()))
        .order_by_asc(early_events::Column::Id)
        .all(conn)
        .await
        .map_err(db_err)?;
    let mut pending = Vec::with_capacity(rows.len());
    for row in &rows {
        match serde_json::from_str::<IncomingEvent>(&row.event) {
            Ok(event) => pending.push(BufferedEvent {
                id: row.id,
                event,
                expires_at: Timestamp::from_millis(row.expires_at),
            }),
            // Set aside, so that the registration goes on without it.
            Err(e) => {
                let error = StoreError::Other(format!("buffered event {}: {e}", row.id));
                unreadable::expire_buffered(conn, row, &error, now).await?;
            }
        }
    }
    Ok(pending)
}

/// Pending early events of the tenants in scope, newest first (for operators). The channel
/// is read from the stored event; one that cannot be read shows as `unreadable`.
pub(super) async fn list(
    conn: &impl ConnectionTrait,
    tenants: &TenantScope,
    limit: u32,
) -> Result<Vec<BufferedSummary>, StoreError> {
    let mut query = early_events::Entity::find()
        .filter(early_events::Column::Status.eq(BufferStatus::Pending.as_str()));
    if let Some(tenants) = tenants.tenants() {
        query = query
            .filter(early_events::Column::TenantId.is_in(tenants.iter().map(TenantId::as_str)));
    }
    let rows = query
        .order_by_desc(early_events::Column::Id)
        .limit(u64::from(limit))
        .all(conn)
        .await
        .map_err(db_err)?;
    Ok(rows
        .into_iter()
        .map(|row| BufferedSummary {
            channel: serde_json::from_str::<IncomingEvent>(&row.event)
                .map_or_else(|_| "unreadable".to_owned(), |e| e.channel.to_string()),
            tenant: row.tenant_id,
            correlation_id: row.correlation_id,
            event_key: row.event_key,
            received_at: Timestamp::from_millis(row.received_at),
            expires_at: Timestamp::from_millis(row.expires_at),
        })
        .collect())
}

/// Marks buffered events as applied to a wait.
pub(super) async fn mark_applied(
    conn: &impl ConnectionTrait,
    ids: &[i64],
    wait_id: WaitId,
    now: Timestamp,
) -> Result<(), StoreError> {
    if ids.is_empty() {
        return Ok(());
    }
    early_events::Entity::update_many()
        .col_expr(
            early_events::Column::Status,
            Expr::value(BufferStatus::Applied.as_str()),
        )
        .col_expr(early_events::Column::WaitId, Expr::value(wait_id.as_uuid()))
        .col_expr(
            early_events::Column::ResolvedAt,
            Expr::value(now.as_millis()),
        )
        .filter(early_events::Column::Id.is_in(ids.iter().copied()))
        .exec(conn)
        .await
        .map_err(db_err)?;
    Ok(())
}

/// Expires up to [`EXPIRE_BATCH`] pending events whose TTL passed, quarantining each with the
/// reason, in one transaction. Returns how many.
pub(super) async fn expire(conn: &DatabaseConnection, now: Timestamp) -> Result<u64, StoreError> {
    let tx = conn.begin().await.map_err(db_err)?;
    let expired = early_events::Entity::find()
        .filter(early_events::Column::Status.eq(BufferStatus::Pending.as_str()))
        .filter(early_events::Column::ExpiresAt.lte(now.as_millis()))
        .order_by_asc(early_events::Column::Id)
        .limit(EXPIRE_BATCH)
        .all(&tx)
        .await
        .map_err(db_err)?;
    if expired.is_empty() {
        return Ok(0);
    }
    let rows = expired
        .iter()
        .map(|e| {
            events::row(&Quarantined {
                event_key: Some(text::read(e.event_key.clone())),
                correlation_id: Some(text::read(e.correlation_id.clone())),
                tenant: Some(text::read(e.tenant_id.clone())),
                ..Quarantined::new(
                    Quarantined::BUFFER_ORIGIN,
                    text::read(e.event.clone()),
                    format!(
                        "no wait registered for correlation id {} within the buffer TTL (received at {} ms, expired at {} ms)",
                        e.correlation_id, e.received_at, e.expires_at
                    ),
                    now,
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    quarantined_events::Entity::insert_many(rows)
        .exec_without_returning(&tx)
        .await
        .map_err(db_err)?;
    let result = early_events::Entity::update_many()
        .col_expr(
            early_events::Column::Status,
            Expr::value(BufferStatus::Expired.as_str()),
        )
        .col_expr(
            early_events::Column::ResolvedAt,
            Expr::value(now.as_millis()),
        )
        .filter(early_events::Column::Id.is_in(expired.iter().map(|e| e.id)))
        .exec(&tx)
        .await
        .map_err(db_err)?;
    tx.commit().await.map_err(db_err)?;
    Ok(result.rows_affected)
}
