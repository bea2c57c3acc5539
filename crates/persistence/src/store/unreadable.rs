//! Rows that cannot be read back — corrupt text, or JSON nested deeper than the decoder reads —
//! never stop anything else: each reader hands such a row here instead of failing, and it is
//! marked (so it is reported once), its raw text kept in the quarantine, and the reader goes on.
//!
//! - A wait is decided: an open one `failed` with the reason (and its engine gets a `failed`
//!   resume), a decided one keeps the outcome its `status` column records; its spec is replaced
//!   by one without sources when the spec is what cannot be read. A wait whose very identity
//!   cannot be read is closed (`failed`) without a resume and reported as an error.
//! - A resume is replaced by a `failed` one built from its wait's columns (without events).
//! - A buffered early event is expired; an API call is failed; a Kafka topic row is removed.

use rendezvous_domain::Timestamp;
use rendezvous_domain::limits::{MAX_RECORDED_REASON_BYTES, truncate_reason};
use rendezvous_ports::{Quarantined, ResumeRecord, StoreError, StoredWait};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, TransactionSession, TransactionTrait,
};

use super::{calls, events, resumes};
use crate::entities::{api_calls, early_events, kafka_topics, resume_outbox, waits};
use crate::rows::{
    BufferStatus, db_err, json, progress_json, repair_wait, replacement_resume, wait_from_row,
};
use crate::signal::SqlResumeSignal;

/// The time a row is marked at by readers that are given none (lookups and listings): this
/// instance's clock. Only rows that cannot be read are stamped with it.
pub(crate) fn wall_clock() -> Timestamp {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    Timestamp::from_millis(millis)
}

/// The reason recorded for a row that could not be read.
fn reason(what: &str, error: &StoreError) -> String {
    truncate_reason(
        &format!("stored {what} could not be read: {error}"),
        MAX_RECORDED_REASON_BYTES,
    )
}

/// Whether a reader that skips unreadable rows must fail instead: when the database itself is
/// unavailable, nothing was learned about the row.
pub(crate) fn must_fail(error: &StoreError) -> bool {
    matches!(error, StoreError::Unavailable(_))
}

/// The wait a row holds, or — when it cannot be read — the row marked and made readable (see
/// the module documentation). `Err` when the row could not be made readable (its identity
/// cannot be read, or it changed meanwhile) or the database failed.
pub(crate) async fn read_wait<C>(
    conn: &C,
    signal: &SqlResumeSignal,
    row: &waits::Model,
    now: Timestamp,
) -> Result<StoredWait, StoreError>
where
    C: ConnectionTrait + TransactionTrait,
{
    match wait_from_row(row) {
        Ok(wait) => Ok(wait),
        Err(error) => mark_wait(conn, signal, row, &error, now).await,
    }
}

/// The waits rows hold, in order, leaving out those that cannot be read even after marking
/// (each reported once by [`read_wait`]). Fails only when the database does.
pub(crate) async fn read_waits<C>(
    conn: &C,
    signal: &SqlResumeSignal,
    rows: Vec<waits::Model>,
    now: Timestamp,
) -> Result<Vec<StoredWait>, StoreError>
where
    C: ConnectionTrait + TransactionTrait,
{
    let mut waits = Vec::with_capacity(rows.len());
    for row in &rows {
        match read_wait(conn, signal, row, now).await {
            Ok(wait) => waits.push(wait),
            Err(e) if must_fail(&e) => return Err(e),
            Err(_) => {}
        }
    }
    Ok(waits)
}

async fn mark_wait<C>(
    conn: &C,
    signal: &SqlResumeSignal,
    row: &waits::Model,
    error: &StoreError,
    now: Timestamp,
) -> Result<StoredWait, StoreError>
where
    C: ConnectionTrait + TransactionTrait,
{
    let reason = reason("wait", error);
    tracing::error!(wait_id = %row.id, correlation_id = %row.correlation_id, execution_id = %row.execution_id, %error, "a stored wait cannot be read; marking it decided and setting its raw row aside");
    let raw = serde_json::json!({"spec": row.spec, "progress": row.progress}).to_string();
    let tx = conn.begin().await.map_err(db_err)?;
    events::quarantine(
        &tx,
        &Quarantined {
            origin: format!("wait:{}", row.id),
            event_key: None,
            correlation_id: Some(row.correlation_id.clone()),
            payload: raw,
            reason: reason.clone(),
            at: now,
            tenant: None,
            headers: None,
        },
    )
    .await?;
    let unchanged = waits::Column::Version.eq(row.version);
    let repaired = match repair_wait(row, &reason, now) {
        Ok(repaired) => repaired,
        Err(identity) => {
            // Not even its identity can be read: close it so that no sweep claims it again.
            waits::Entity::update_many()
                .col_expr(waits::Column::Status, Expr::value("failed"))
                .col_expr(
                    waits::Column::DecidedAt,
                    Expr::value(row.decided_at.unwrap_or(now.as_millis())),
                )
                .col_expr(waits::Column::UpdatedAt, Expr::value(now.as_millis()))
                .col_expr(waits::Column::Version, Expr::value(row.version + 1))
                .filter(waits::Column::Id.eq(row.id))
                .filter(unchanged)
                .exec(&tx)
                .await
                .map_err(db_err)?;
            tx.commit().await.map_err(db_err)?;
            return Err(StoreError::Other(format!(
                "wait {}: {reason}; its identity cannot be read either ({identity}), so it was closed without a resume",
                row.id
            )));
        }
    };
    let s = &repaired.wait.state;
    let written = waits::Entity::update_many()
        .col_expr(waits::Column::Status, Expr::value(s.status().as_str()))
        .col_expr(waits::Column::Spec, Expr::value(json(&s.spec)?))
        .col_expr(waits::Column::Progress, Expr::value(progress_json(s)?))
        .col_expr(
            waits::Column::DecidedAt,
            Expr::value(s.resolution.as_ref().map(|r| r.decided_at.as_millis())),
        )
        .col_expr(waits::Column::UpdatedAt, Expr::value(now.as_millis()))
        .col_expr(waits::Column::Version, Expr::value(repaired.wait.version))
        .filter(waits::Column::Id.eq(row.id))
        .filter(unchanged)
        .exec(&tx)
        .await
        .map_err(db_err)?
        .rows_affected
        == 1;
    if !written {
        return Err(StoreError::Other(format!(
            "wait {}: {reason}; it changed while it was being marked",
            row.id
        )));
    }
    if let Some(resume) = &repaired.resume {
        resumes::insert(&tx, resume).await?;
    }
    tx.commit().await.map_err(db_err)?;
    if let Some(resume) = &repaired.resume {
        signal.committed([resume.tenant.as_str()]);
    }
    Ok(repaired.wait)
}

/// Sets aside a buffered early event that cannot be read: quarantined with the reason and
/// expired, so that registrations for its correlation id go on without it.
pub(crate) async fn expire_buffered(
    conn: &impl ConnectionTrait,
    row: &early_events::Model,
    error: &StoreError,
    now: Timestamp,
) -> Result<(), StoreError> {
    let reason = reason("early event", error);
    tracing::error!(buffer_id = row.id, correlation_id = %row.correlation_id, event_key = %row.event_key, %error, "a buffered event cannot be read; setting it aside");
    events::quarantine(
        conn,
        &Quarantined {
            origin: Quarantined::BUFFER_ORIGIN.to_owned(),
            event_key: Some(row.event_key.clone()),
            correlation_id: Some(row.correlation_id.clone()),
            payload: row.event.clone(),
            reason,
            at: now,
            tenant: None,
            headers: None,
        },
    )
    .await?;
    early_events::Entity::update_many()
        .col_expr(
            early_events::Column::Status,
            Expr::value(BufferStatus::Expired.as_str()),
        )
        .col_expr(
            early_events::Column::ResolvedAt,
            Expr::value(now.as_millis()),
        )
        .filter(early_events::Column::Id.eq(row.id))
        .exec(conn)
        .await
        .map_err(db_err)?;
    Ok(())
}

/// Replaces a resume that cannot be read by a `failed` one built from its wait's columns, so
/// that the engine hears of the wait; the raw resume is quarantined. A resume whose wait cannot
/// be read either is acknowledged (never delivered) after being quarantined. Returns the
/// replacement to deliver, if any.
pub(crate) async fn replace_resume(
    conn: &impl ConnectionTrait,
    row: &resume_outbox::Model,
    error: &StoreError,
    now: Timestamp,
) -> Result<Option<ResumeRecord>, StoreError> {
    let reason = reason("resume", error);
    tracing::error!(resume_id = %row.resume_id, wait_id = %row.wait_id, %error, "a stored resume cannot be read; replacing it by a failed one");
    let wait = waits::Entity::find_by_id(row.wait_id)
        .one(conn)
        .await
        .map_err(db_err)?;
    let replacement = wait
        .as_ref()
        .map(|wait| replacement_resume(row, wait, &reason));
    events::quarantine(
        conn,
        &Quarantined {
            origin: format!("resume:{}", row.resume_id),
            event_key: None,
            correlation_id: wait.as_ref().map(|w| w.correlation_id.clone()),
            payload: row.resume.clone(),
            reason: reason.clone(),
            at: now,
            tenant: None,
            headers: None,
        },
    )
    .await?;
    let update = resume_outbox::Entity::update_many()
        .filter(resume_outbox::Column::ResumeId.eq(row.resume_id));
    match replacement {
        Some(Ok(resume)) => {
            update
                .col_expr(resume_outbox::Column::Resume, Expr::value(json(&resume)?))
                .exec(conn)
                .await
                .map_err(db_err)?;
            Ok(Some(resume))
        }
        _ => {
            tracing::error!(resume_id = %row.resume_id, wait_id = %row.wait_id, "the wait of an unreadable resume cannot be read either; the resume is set aside undelivered");
            update
                .col_expr(resume_outbox::Column::AckedAt, Expr::value(now.as_millis()))
                .exec(conn)
                .await
                .map_err(db_err)?;
            Ok(None)
        }
    }
}

/// Fails an API call that cannot be read (it can never be made), quarantining its raw row.
pub(crate) async fn fail_call(
    conn: &impl ConnectionTrait,
    row: &api_calls::Model,
    error: &StoreError,
    now: Timestamp,
) -> Result<(), StoreError> {
    let reason = reason("api call", error);
    tracing::error!(wait_id = %row.wait_id, %error, "a stored api call cannot be read; failing it");
    events::quarantine(
        conn,
        &Quarantined {
            origin: format!("api_call:{}", row.wait_id),
            event_key: None,
            correlation_id: None,
            payload: row.request.clone(),
            reason: reason.clone(),
            at: now,
            tenant: None,
            headers: None,
        },
    )
    .await?;
    calls::fail(
        conn,
        rendezvous_domain::WaitId::from_uuid(row.wait_id),
        &reason,
        now,
    )
    .await?;
    Ok(())
}

/// Removes a Kafka topic row whose id fields cannot be read, quarantining it.
pub(crate) async fn drop_topic(
    conn: &impl ConnectionTrait,
    row: &kafka_topics::Model,
    error: &StoreError,
    now: Timestamp,
) -> Result<(), StoreError> {
    let reason = reason("kafka topic", error);
    tracing::error!(topic = %row.topic, %error, "a stored kafka topic row cannot be read; removing it");
    events::quarantine(
        conn,
        &Quarantined {
            origin: format!("kafka_topic:{}", row.topic),
            event_key: None,
            correlation_id: None,
            payload: serde_json::json!({
                "correlation_field": row.correlation_field,
                "execution_field": row.execution_field,
            })
            .to_string(),
            reason,
            at: now,
            tenant: None,
            headers: None,
        },
    )
    .await?;
    kafka_topics::Entity::delete_many()
        .filter(kafka_topics::Column::Topic.eq(row.topic.as_str()))
        .filter(kafka_topics::Column::CorrelationField.eq(row.correlation_field.as_str()))
        .filter(kafka_topics::Column::ExecutionField.eq(row.execution_field.as_str()))
        .exec(conn)
        .await
        .map_err(db_err)?;
    Ok(())
}
