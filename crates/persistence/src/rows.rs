//! Conversions between table rows and domain types, the status values of the buffer and the
//! call outbox (database errors to store errors are in `errors.rs`).

use rendezvous_domain::{
    ApiRequest, Condition, CorrelationId, ExecutionId, IgnoredEvent, NodeId, Outcome,
    ReceivedEvent, Resolution, ResumeId, Strategy, TenantId, TimeoutPolicy, Timestamp,
    TraceContext, WaitId, WaitKey, WaitSpec, WaitState,
};
use rendezvous_ports::{ApiCallRecord, ResumeRecord, StoreError, StoredWait};
use sea_orm::ActiveValue::Set;
use serde::{Deserialize, Serialize};

use crate::entities::{api_calls, resume_outbox, waits};
pub(crate) use crate::errors::db_err;
use crate::text;

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
    /// The registration's trace context (never changes; kept here rather than in a column
    /// of its own: rows written before it existed read as none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    trace: Option<TraceContext>,
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Other(format!("corrupt {what} in the database: {e}"))
}

pub(crate) fn json<T: Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Other(format!("encoding json: {e}")))
}

/// The wait a row holds. A row that cannot be read (corrupt text, JSON nested deeper than the
/// decoder reads) is an error naming what could not be read; readers hand it to
/// `store::unreadable` rather than fail.
pub(crate) fn wait_from_row(row: &waits::Model) -> Result<StoredWait, StoreError> {
    let progress: Progress =
        serde_json::from_str(&row.progress).map_err(|e| corrupt("wait progress", e))?;
    let state = WaitState {
        key: wait_key(row)?,
        spec: serde_json::from_str(&row.spec).map_err(|e| corrupt("wait spec", e))?,
        created_at: Timestamp::from_millis(row.created_at),
        deadline: Timestamp::from_millis(row.deadline),
        received: progress.received,
        ignored: progress.ignored,
        ignored_total: progress.ignored_total,
        resolution: progress.resolution,
        trace: progress.trace,
    };
    Ok(stored(row, state))
}

/// The identity of the wait a row holds (plain columns).
fn wait_key(row: &waits::Model) -> Result<WaitKey, StoreError> {
    Ok(WaitKey {
        id: WaitId::from_uuid(row.id),
        tenant: TenantId::parse(row.tenant_id.clone()).map_err(|e| corrupt("tenant id", e))?,
        correlation_id: CorrelationId::parse(row.correlation_id.clone())
            .map_err(|e| corrupt("correlation id", e))?,
        execution_id: ExecutionId::parse(row.execution_id.clone())
            .map_err(|e| corrupt("execution id", e))?,
        node_id: NodeId::parse(row.node_id.clone()).map_err(|e| corrupt("node id", e))?,
    })
}

fn stored(row: &waits::Model, state: WaitState) -> StoredWait {
    StoredWait {
        state,
        version: row.version,
        idempotency_key: text::read(row.idempotency_key.clone()),
        workflow_id: text::read_opt(row.workflow_id.clone()),
        updated_at: Timestamp::from_millis(row.updated_at),
    }
}

/// A wait row that could not be read, made readable again by [`repair_wait`].
pub(crate) struct RepairedWait {
    /// The wait as it is to be stored (its version one more than the row's).
    pub(crate) wait: StoredWait,
    /// Its resume, when the repair decided it (it was open): outcome `failed`.
    pub(crate) resume: Option<ResumeRecord>,
}

/// What an unreadable wait row becomes: its identity from its columns; its spec when that can
/// be read, else one without sources whose timeout is the row's; what it received when its
/// progress can be read; and decided — as it was, or `failed` with `reason` at `now` when it
/// was open. `Err` when even its identity cannot be read.
pub(crate) fn repair_wait(
    row: &waits::Model,
    reason: &str,
    now: Timestamp,
) -> Result<RepairedWait, StoreError> {
    let key = wait_key(row)?;
    let spec = serde_json::from_str::<WaitSpec>(&row.spec).unwrap_or_else(|_| WaitSpec {
        sources: Vec::new(),
        disabled: Vec::new(),
        strategy: Strategy::All,
        condition: Condition::All(Vec::new()),
        timeout: std::time::Duration::from_millis(
            u64::try_from(row.deadline.saturating_sub(row.created_at)).unwrap_or(0),
        ),
        on_timeout: TimeoutPolicy::Fail,
    });
    let progress = serde_json::from_str::<Progress>(&row.progress).ok();
    let mut state = WaitState {
        key,
        spec,
        created_at: Timestamp::from_millis(row.created_at),
        deadline: Timestamp::from_millis(row.deadline),
        received: Vec::new(),
        ignored: Vec::new(),
        ignored_total: 0,
        resolution: None,
        trace: None,
    };
    if let Some(progress) = progress {
        state.received = progress.received;
        state.ignored = progress.ignored;
        state.ignored_total = progress.ignored_total;
        state.resolution = progress.resolution;
        state.trace = progress.trace;
    }
    let mut resume = None;
    if state.resolution.is_none() {
        match row.decided_at {
            // Decided (and announced) already: keep the outcome its status column records.
            Some(decided_at) => {
                state.resolution = Some(Resolution {
                    outcome: outcome_of_status(&row.status).unwrap_or(Outcome::Failed),
                    decided_at: Timestamp::from_millis(decided_at),
                    missing: Vec::new(),
                    reason: Some(reason.to_owned()),
                })
            }
            None => {
                // Open: it can no longer be decided by its events; the engine hears of it.
                let _ = state.fail(reason.to_owned(), now);
                resume = ResumeRecord::of(&state, ResumeId::from_uuid(uuid::Uuid::new_v4()));
            }
        }
    }
    let mut wait = stored(row, state);
    wait.version = row.version + 1;
    wait.updated_at = now;
    Ok(RepairedWait { wait, resume })
}

/// The outcome a decided wait's `status` column records.
fn outcome_of_status(status: &str) -> Option<Outcome> {
    [
        Outcome::Completed,
        Outcome::Partial,
        Outcome::TimedOut,
        Outcome::Cancelled,
        Outcome::Failed,
    ]
    .into_iter()
    .find(|o| o.status().as_str() == status)
}

pub(crate) fn progress_json(state: &WaitState) -> Result<String, StoreError> {
    json(&Progress {
        received: state.received.clone(),
        ignored: state.ignored.clone(),
        ignored_total: state.ignored_total,
        resolution: state.resolution.clone(),
        trace: state.trace.clone(),
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
        idempotency_key: Set(text::stored_owned(&wait.idempotency_key)),
        workflow_id: Set(text::stored_opt(wait.workflow_id.as_deref())),
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

pub(crate) fn resume_from_row(row: &resume_outbox::Model) -> Result<ResumeRecord, StoreError> {
    let mut resume: ResumeRecord =
        serde_json::from_str(&row.resume).map_err(|e| corrupt("resume", e))?;
    resume.attempts = u32::try_from(row.attempts).unwrap_or(0);
    Ok(resume)
}

/// The resume that replaces an unreadable one: outcome `failed` with `reason`, built from the
/// outbox row and its wait's columns (without events: they could not be read). `Err` when the
/// wait's identity cannot be read either.
pub(crate) fn replacement_resume(
    row: &resume_outbox::Model,
    wait: &waits::Model,
    reason: &str,
) -> Result<ResumeRecord, StoreError> {
    let key = wait_key(wait)?;
    Ok(ResumeRecord {
        resume_id: ResumeId::from_uuid(row.resume_id),
        wait_id: key.id,
        tenant: key.tenant,
        correlation_id: key.correlation_id,
        execution_id: key.execution_id,
        node_id: key.node_id,
        outcome: Outcome::Failed,
        events: Vec::new(),
        missing: Vec::new(),
        reason: Some(reason.to_owned()),
        registered_at: Timestamp::from_millis(wait.created_at),
        decided_at: Timestamp::from_millis(row.created_at),
        attempts: u32::try_from(row.attempts).unwrap_or(0),
        trace: None,
    })
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
pub(crate) fn call_from_row(row: &api_calls::Model) -> Result<ApiCallRecord, StoreError> {
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
