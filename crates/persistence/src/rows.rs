//! Conversions between table rows and domain types, the status values of the buffer and the
//! call outbox, and database errors to store errors.

use rendezvous_domain::{
    ApiRequest, CorrelationId, ExecutionId, IgnoredEvent, NodeId, ReceivedEvent, Resolution,
    TenantId, Timestamp, WaitId, WaitKey, WaitState,
};
use rendezvous_ports::{ApiCallRecord, ResumeRecord, StoreError, StoredWait};
use sea_orm::{ActiveValue::Set, DbErr, SqlErr};
use serde::{Deserialize, Serialize};

use crate::entities::{api_calls, resume_outbox, waits};

/// `early_events.status`: `pending` until a registration applies the event or its TTL passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BufferStatus {
    /// Waiting for its wait.
    Pending,
    /// Applied to a newly registered wait.
    Applied,
    /// Nobody claimed it within the TTL (kept, and quarantined).
    Expired,
}

impl BufferStatus {
    /// As stored.
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Applied => "applied",
            Self::Expired => "expired",
        }
    }
}

/// `api_calls.status`: `pending` (due at `next_attempt_at`) until it is `done` or `failed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CallStatus {
    /// To be made (again).
    Pending,
    /// Made; nothing more to do.
    Done,
    /// Given up on; the wait was failed.
    Failed,
}

impl CallStatus {
    /// As stored.
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Done => "done",
            Self::Failed => "failed",
        }
    }
}

/// The mutable part of a wait, stored as JSON in `waits.progress`.
#[derive(Serialize, Deserialize)]
struct Progress {
    received: Vec<ReceivedEvent>,
    ignored: Vec<IgnoredEvent>,
    ignored_total: u64,
    resolution: Option<Resolution>,
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Other(format!("corrupt {what} in the database: {e}"))
}

pub(crate) fn json<T: Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Other(format!("encoding json: {e}")))
}

pub(crate) fn wait_from_row(row: waits::Model) -> Result<StoredWait, StoreError> {
    let progress: Progress =
        serde_json::from_str(&row.progress).map_err(|e| corrupt("wait progress", e))?;
    let key = WaitKey {
        id: WaitId::from_uuid(row.id),
        tenant: TenantId::parse(row.tenant_id).map_err(|e| corrupt("tenant id", e))?,
        correlation_id: CorrelationId::parse(row.correlation_id)
            .map_err(|e| corrupt("correlation id", e))?,
        execution_id: ExecutionId::parse(row.execution_id)
            .map_err(|e| corrupt("execution id", e))?,
        node_id: NodeId::parse(row.node_id).map_err(|e| corrupt("node id", e))?,
    };
    let state = WaitState {
        key,
        spec: serde_json::from_str(&row.spec).map_err(|e| corrupt("wait spec", e))?,
        created_at: Timestamp::from_millis(row.created_at),
        deadline: Timestamp::from_millis(row.deadline),
        received: progress.received,
        ignored: progress.ignored,
        ignored_total: progress.ignored_total,
        resolution: progress.resolution,
    };
    Ok(StoredWait {
        state,
        version: row.version,
        idempotency_key: row.idempotency_key,
        workflow_id: row.workflow_id,
        updated_at: Timestamp::from_millis(row.updated_at),
    })
}

pub(crate) fn progress_json(state: &WaitState) -> Result<String, StoreError> {
    json(&Progress {
        received: state.received.clone(),
        ignored: state.ignored.clone(),
        ignored_total: state.ignored_total,
        resolution: state.resolution.clone(),
    })
}

pub(crate) fn wait_to_row(wait: &StoredWait) -> Result<waits::ActiveModel, StoreError> {
    let s = &wait.state;
    Ok(waits::ActiveModel {
        id: Set(s.key.id.as_uuid()),
        tenant_id: Set(s.key.tenant.to_string()),
        correlation_id: Set(s.key.correlation_id.to_string()),
        execution_id: Set(s.key.execution_id.to_string()),
        node_id: Set(s.key.node_id.to_string()),
        idempotency_key: Set(wait.idempotency_key.clone()),
        workflow_id: Set(wait.workflow_id.clone()),
        status: Set(s.status().as_str().to_owned()),
        spec: Set(json(&s.spec)?),
        progress: Set(progress_json(s)?),
        deadline: Set(s.deadline.as_millis()),
        created_at: Set(s.created_at.as_millis()),
        updated_at: Set(wait.updated_at.as_millis()),
        decided_at: Set(s.resolution.as_ref().map(|r| r.decided_at.as_millis())),
        version: Set(wait.version),
    })
}

pub(crate) fn resume_from_row(row: resume_outbox::Model) -> Result<ResumeRecord, StoreError> {
    let mut resume: ResumeRecord =
        serde_json::from_str(&row.resume).map_err(|e| corrupt("resume", e))?;
    resume.attempts = u32::try_from(row.attempts).unwrap_or(0);
    Ok(resume)
}

/// What `api_calls.request` holds: the rendered request with the ids the dispatcher needs.
#[derive(Serialize, Deserialize)]
struct StoredCall {
    tenant: TenantId,
    correlation_id: CorrelationId,
    execution_id: ExecutionId,
    request: ApiRequest,
}

/// `api_calls.request` of a call.
pub(crate) fn call_json(call: &ApiCallRecord) -> Result<String, StoreError> {
    json(&StoredCall {
        tenant: call.tenant.clone(),
        correlation_id: call.correlation_id.clone(),
        execution_id: call.execution_id.clone(),
        request: call.request.clone(),
    })
}

/// The call an `api_calls` row holds.
pub(crate) fn call_from_row(row: api_calls::Model) -> Result<ApiCallRecord, StoreError> {
    let stored: StoredCall =
        serde_json::from_str(&row.request).map_err(|e| corrupt("api call", e))?;
    Ok(ApiCallRecord {
        wait_id: WaitId::from_uuid(row.wait_id),
        tenant: stored.tenant,
        correlation_id: stored.correlation_id,
        execution_id: stored.execution_id,
        request: stored.request,
        attempts: u32::try_from(row.attempts).unwrap_or(u32::MAX),
    })
}

/// Maps a database error: unique violations are conflicts, connection trouble is
/// unavailability, the rest is opaque.
pub(crate) fn db_err(e: DbErr) -> StoreError {
    if let Some(SqlErr::UniqueConstraintViolation(detail)) = e.sql_err() {
        return StoreError::Conflict(detail);
    }
    match e {
        DbErr::Conn(_) | DbErr::ConnectionAcquire(_) => StoreError::Unavailable(e.to_string()),
        other => StoreError::Other(other.to_string()),
    }
}
