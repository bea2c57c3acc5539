//! The store port: waits, the inbox of processed events, the early-event buffer and the resume
//! outbox, with transactions so that a state change and its effects commit together.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use rendezvous_domain::{
    CorrelationId, EventKey, ExecutionId, FieldPath, IncomingEvent, LeaseOwner, NodeId, ResumeId,
    SourceName, TenantId, Timestamp, WaitId, WaitState, WaitStatus,
};

use crate::api_call::ApiCallRecord;
use crate::resume::ResumeRecord;
use crate::scope::TenantScope;

/// What can go wrong in a store, as the service needs to tell it apart.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// A uniqueness rule was violated (e.g. a correlation id already taken); names the rule.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The database cannot be reached or refused service; retrying later may work.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Anything else (a bug, corrupt data).
    #[error("store error: {0}")]
    Other(String),
}

/// A wait as stored: its state plus what only the store tracks.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredWait {
    /// The domain state.
    pub state: WaitState,
    /// Optimistic-lock version: 1 at registration, +1 per change.
    pub version: i64,
    /// The idempotency key of the registration (empty when none was given).
    pub idempotency_key: String,
    /// The workflow definition, for listing.
    pub workflow_id: Option<String>,
    /// When the wait last changed.
    pub updated_at: Timestamp,
}

/// An event kept because no wait had its correlation id yet.
#[derive(Debug, Clone, PartialEq)]
pub struct BufferedEvent {
    /// The buffer row.
    pub id: i64,
    /// The event.
    pub event: IncomingEvent,
    /// When it stops being applied to a newly registered wait.
    pub expires_at: Timestamp,
}

/// A pending early event as operators list it: who it is for and when it stops waiting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BufferedSummary {
    /// The tenant of the wait it is for.
    pub tenant: String,
    /// The correlation id no wait has yet.
    pub correlation_id: String,
    /// Its identity.
    pub event_key: String,
    /// Where it came from: `source <name>` or `topic <name>`.
    pub channel: String,
    /// When it arrived.
    pub received_at: Timestamp,
    /// When it is expired (and quarantined) unless a wait registers first.
    pub expires_at: Timestamp,
}

/// A resume sent again by [`Store::redeliver_resume`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Redelivered {
    /// The resume (the same id: the engine deduplicates by it).
    pub resume_id: ResumeId,
    /// Whether an engine had acknowledged it.
    pub was_acked: bool,
}

/// A Kafka topic some wait listens on, with the fields that carry its ids.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicFields {
    /// The topic.
    pub topic: String,
    /// Where events on it carry the correlation id (a header of that name too).
    pub correlation_field: FieldPath,
    /// Where events on it carry the execution id (a header of that name too).
    pub execution_field: FieldPath,
}

/// An event set aside with a reason, so that it neither stalls a consumer nor vanishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quarantined {
    /// Where it came from: `kafka:<topic>/<partition>/<offset>`, or `buffer` for early events
    /// nobody claimed within the TTL.
    pub origin: String,
    /// Its identity, when it had one.
    pub event_key: Option<String>,
    /// Its correlation id, when one was found.
    pub correlation_id: Option<String>,
    /// Its body as received (lossy UTF-8 for binary values).
    pub payload: String,
    /// Why it was set aside.
    pub reason: String,
    /// When.
    pub at: Timestamp,
    /// Its tenant, when one was known (an early event's).
    pub tenant: Option<String>,
    /// A Kafka record's headers with UTF-8 values: what a replay reads besides the value.
    /// `None` where the event cannot be replayed as received (a value that was not UTF-8, a
    /// row set aside by a reader, a record quarantined before headers were kept).
    pub headers: Option<BTreeMap<String, String>>,
}

impl Quarantined {
    /// The origin of an early event nobody claimed within the buffer TTL.
    pub const BUFFER_ORIGIN: &str = "buffer";

    /// The prefix of a Kafka record's origin: `kafka:<topic>/<partition>/<offset>`.
    pub const KAFKA_ORIGIN: &str = "kafka:";

    /// Whether a replay can send it again: a Kafka record kept with its headers, or an early
    /// event kept with its tenant. Rows that stored state could not be read from are kept for
    /// inspection only.
    pub fn replayable(&self) -> bool {
        (self.origin.starts_with(Self::KAFKA_ORIGIN) && self.headers.is_some())
            || (self.origin == Self::BUFFER_ORIGIN && self.tenant.is_some())
    }

    /// An event set aside with no tenant or headers kept (see the fields).
    pub fn new(
        origin: impl Into<String>,
        payload: impl Into<String>,
        reason: impl Into<String>,
        at: Timestamp,
    ) -> Self {
        Self {
            origin: origin.into(),
            event_key: None,
            correlation_id: None,
            payload: payload.into(),
            reason: reason.into(),
            at,
            tenant: None,
            headers: None,
        }
    }
}

/// A quarantined event as listed: its row id (what a replay names) and how many replays
/// failed so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuarantinedRow {
    /// The row's id.
    pub id: i64,
    /// How many times an operator replayed it and it was set aside again.
    pub replays: u32,
    /// The event.
    pub event: Quarantined,
}

/// What one [`Store::purge`] round deleted, per kind of row.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PurgeCounts {
    /// Decided waits.
    pub waits: u64,
    /// Their inbox rows (processed event keys).
    pub processed_events: u64,
    /// Their acknowledged resumes.
    pub resumes: u64,
    /// Their settled API calls.
    pub api_calls: u64,
    /// Early events applied to a wait or expired.
    pub early_events: u64,
    /// Quarantined events.
    pub quarantined: u64,
}

impl PurgeCounts {
    /// Whether a round with this `batch` may have left more to purge: it deleted a full batch
    /// of waits, early events or quarantined events.
    pub fn full(&self, batch: u32) -> bool {
        let batch = u64::from(batch);
        self.waits >= batch || self.early_events >= batch || self.quarantined >= batch
    }

    /// Adds another round's counts.
    pub fn add(&mut self, other: Self) {
        self.waits += other.waits;
        self.processed_events += other.processed_events;
        self.resumes += other.resumes;
        self.api_calls += other.api_calls;
        self.early_events += other.early_events;
        self.quarantined += other.quarantined;
    }

    /// Every row deleted.
    pub fn total(&self) -> u64 {
        self.waits
            + self.processed_events
            + self.resumes
            + self.api_calls
            + self.early_events
            + self.quarantined
    }
}

/// Filters of `ListWaits`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WaitQuery {
    /// Only these tenants.
    pub tenants: TenantScope,
    /// Only these statuses (empty: all).
    pub statuses: Vec<WaitStatus>,
    /// Only this execution.
    pub execution_id: Option<ExecutionId>,
    /// Only waits created before this time.
    pub created_before: Option<Timestamp>,
    /// Page size.
    pub limit: u32,
    /// Continue after this (created_at, id) position, from a previous page.
    pub after: Option<(Timestamp, WaitId)>,
}

/// A page of results.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Where the next page starts, if there is one.
    pub next: Option<(Timestamp, WaitId)>,
}

/// One change of a wait caused by one event: the new state (its `version` already
/// incremented, its `updated_at` the time of the change, which also stamps the inbox row),
/// the inbox row when the event was accepted, and the resume when it decided the wait.
/// Written atomically by [`Store::apply_change`].
#[derive(Debug, Clone, Copy)]
pub struct WaitChange<'a> {
    /// The wait as it is to be stored.
    pub wait: &'a StoredWait,
    /// The version it must still have (compare-and-set).
    pub expected_version: i64,
    /// The accepted event's key and the source it counted for.
    pub processed: Option<(&'a EventKey, &'a SourceName)>,
    /// The resume, when the change decided the wait.
    pub resume: Option<&'a ResumeRecord>,
}

/// What [`Store::apply_change`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeOutcome {
    /// Written.
    Applied,
    /// The wait's version moved meanwhile: nothing was written; reload and retry.
    VersionMoved,
    /// The inbox already has the event although the state did not: nothing was written.
    AlreadyProcessed,
}

/// [`Store::apply_change`] as a transaction of [`StoreTx`] steps (the default).
pub async fn apply_change_in_tx<S: Store>(
    store: &S,
    change: WaitChange<'_>,
) -> Result<ChangeOutcome, StoreError> {
    let mut tx = store.begin().await?;
    let outcome = apply_change_steps(&mut tx, change).await?;
    if outcome == ChangeOutcome::Applied {
        tx.commit().await?;
    }
    Ok(outcome)
}

/// The steps of [`apply_change_in_tx`] in a transaction that is already open. The caller
/// commits when they answer [`ChangeOutcome::Applied`] and rolls back otherwise (the update may
/// be written before the inbox turns out to hold the event); a store that writes several
/// changes in one transaction runs each in a savepoint of its own.
pub async fn apply_change_steps<T: StoreTx>(
    tx: &mut T,
    change: WaitChange<'_>,
) -> Result<ChangeOutcome, StoreError> {
    if !tx.update_wait(change.wait, change.expected_version).await? {
        return Ok(ChangeOutcome::VersionMoved);
    }
    if let Some((key, source)) = change.processed
        && !tx
            .record_processed(
                change.wait.state.key.id,
                key,
                source,
                change.wait.updated_at,
            )
            .await?
    {
        return Ok(ChangeOutcome::AlreadyProcessed);
    }
    if let Some(resume) = change.resume {
        tx.insert_resume(resume).await?;
    }
    Ok(ChangeOutcome::Applied)
}

/// A registration with nothing before it, written by [`Store::insert_fresh_wait`]: the new
/// wait (version 1, its `updated_at` the registration time), its outbound call and, when it is
/// decided at once, its resume.
#[derive(Debug, Clone, Copy)]
pub struct FreshWait<'a> {
    /// The wait.
    pub wait: &'a StoredWait,
    /// The outbound API call to put in the outbox.
    pub call: Option<&'a ApiCallRecord>,
    /// The resume, when the wait is decided at registration.
    pub resume: Option<&'a ResumeRecord>,
}

/// [`Store::insert_fresh_wait`] as a transaction of [`StoreTx`] steps (the default).
pub async fn insert_fresh_wait_in_tx<S: Store>(
    store: &S,
    fresh: FreshWait<'_>,
) -> Result<bool, StoreError> {
    let mut tx = store.begin().await?;
    let inserted = insert_fresh_wait_steps(&mut tx, fresh).await?;
    if inserted {
        tx.commit().await?;
    }
    Ok(inserted)
}

/// The steps of [`insert_fresh_wait_in_tx`] in a transaction that is already open. The caller
/// commits when they answer true and rolls back otherwise (a failed insert may have been
/// attempted); a store that writes several registrations in one transaction runs each in a
/// savepoint of its own.
pub async fn insert_fresh_wait_steps<T: StoreTx>(
    tx: &mut T,
    fresh: FreshWait<'_>,
) -> Result<bool, StoreError> {
    let key = &fresh.wait.state.key;
    let now = fresh.wait.updated_at;
    tx.lock_correlation(&key.tenant, &key.correlation_id)
        .await?;
    if tx
        .find_by_idempotency(
            &key.tenant,
            &key.execution_id,
            &key.node_id,
            &fresh.wait.idempotency_key,
        )
        .await?
        .is_some()
        || !tx
            .pending_buffered(&key.tenant, &key.correlation_id, now)
            .await?
            .is_empty()
    {
        return Ok(false);
    }
    match tx.insert_wait(fresh.wait).await {
        Ok(()) => {}
        Err(StoreError::Conflict(_)) => return Ok(false),
        Err(e) => return Err(e),
    }
    if let Some(call) = fresh.call {
        tx.insert_api_call(call, now).await?;
    }
    if let Some(resume) = fresh.resume {
        tx.insert_resume(resume).await?;
    }
    Ok(true)
}

/// The database. Reads outside transactions; writes through [`StoreTx`].
#[async_trait]
pub trait Store: Clone + Send + Sync + 'static {
    /// A transaction.
    type Tx: StoreTx;

    /// Starts a transaction.
    async fn begin(&self) -> Result<Self::Tx, StoreError>;

    /// Writes one change of a wait atomically: the compare-and-set update, the inbox row and
    /// the resume (with its wake-up). The default runs a transaction of the [`StoreTx`]
    /// steps; a store may do it in one round trip.
    async fn apply_change(&self, change: WaitChange<'_>) -> Result<ChangeOutcome, StoreError> {
        apply_change_in_tx(self, change).await
    }

    /// Inserts a registration atomically under its correlation lock, but only if nothing
    /// came before it: no wait has its idempotency identity or its correlation id, and no
    /// early event is pending for its correlation id. `false` (nothing written) otherwise, and
    /// the caller takes the full registration path, which deals with each of those. The
    /// default runs a transaction of the [`StoreTx`] steps; a store may share one transaction
    /// among concurrent registrations.
    async fn insert_fresh_wait(&self, fresh: FreshWait<'_>) -> Result<bool, StoreError> {
        insert_fresh_wait_in_tx(self, fresh).await
    }

    /// A wait by id.
    async fn get_wait(&self, id: WaitId) -> Result<Option<StoredWait>, StoreError>;

    /// A wait by correlation id.
    async fn find_wait(
        &self,
        tenant: &TenantId,
        correlation_id: &CorrelationId,
    ) -> Result<Option<StoredWait>, StoreError>;

    /// Waits matching a query, newest first.
    async fn list_waits(&self, query: &WaitQuery) -> Result<Page<StoredWait>, StoreError>;

    /// Marks buffered events whose TTL passed as expired (kept, not deleted) and quarantines
    /// them with the reason. Returns how many.
    async fn expire_buffered(&self, now: Timestamp) -> Result<u64, StoreError>;

    /// Every topic registered waits listen on, with its id fields.
    async fn kafka_topics(&self) -> Result<Vec<TopicFields>, StoreError>;

    /// Sets an event aside with its reason.
    async fn quarantine(&self, event: &Quarantined) -> Result<(), StoreError>;

    /// The most recently quarantined events, newest first.
    async fn quarantined(&self, limit: u32) -> Result<Vec<QuarantinedRow>, StoreError>;

    /// One quarantined event, by row id.
    async fn quarantined_event(&self, id: i64) -> Result<Option<QuarantinedRow>, StoreError>;

    /// Settles a replay of a quarantined event: `None` (the event was taken) removes the row;
    /// `Some(reason)` (set aside again) records the new reason and counts the replay. False
    /// when the row is gone (another replay settled it).
    async fn settle_replay(&self, id: i64, refused: Option<&str>) -> Result<bool, StoreError>;

    /// Pending early events of the tenants in scope, newest first.
    async fn list_buffered(
        &self,
        tenants: &TenantScope,
        limit: u32,
    ) -> Result<Vec<BufferedSummary>, StoreError>;

    /// Makes a decided wait's resume go out again, with the same resume id: its
    /// acknowledgement and lease are cleared and every instance's streams are woken. `None`
    /// when the wait has no resume (still open, or purged by retention).
    async fn redeliver_resume(&self, wait_id: WaitId) -> Result<Option<Redelivered>, StoreError>;

    /// Leases up to `limit` pending API calls that are due (and not leased, or whose lease ran
    /// out) to `owner` until `now + lease`, counting the attempt. Competing owners never get the
    /// same call at once.
    async fn claim_api_calls(
        &self,
        owner: &LeaseOwner,
        now: Timestamp,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<ApiCallRecord>, StoreError>;

    /// Marks a call done.
    async fn finish_api_call(&self, wait_id: WaitId, now: Timestamp) -> Result<(), StoreError>;

    /// Puts calls `owner` claimed but did not attempt (their destination was busy) back in the
    /// outbox, due at `next_attempt_at`, without counting the claim as an attempt.
    async fn defer_api_calls(
        &self,
        owner: &LeaseOwner,
        wait_ids: &[WaitId],
        next_attempt_at: Timestamp,
        now: Timestamp,
    ) -> Result<(), StoreError>;

    /// Puts a call back for another attempt at `next_attempt_at`, recording the error.
    async fn retry_api_call(
        &self,
        wait_id: WaitId,
        next_attempt_at: Timestamp,
        error: &str,
        now: Timestamp,
    ) -> Result<(), StoreError>;

    /// Marks a call failed for good, recording the error.
    async fn fail_api_call(
        &self,
        wait_id: WaitId,
        error: &str,
        now: Timestamp,
    ) -> Result<(), StoreError>;

    /// Leases up to `limit` unacknowledged resumes whose lease is free or ran out to `owner`
    /// until `now + lease`, oldest first, counting the attempt. Competing owners never get the
    /// same resume at once.
    async fn claim_resumes(
        &self,
        owner: &LeaseOwner,
        tenants: &TenantScope,
        now: Timestamp,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<ResumeRecord>, StoreError>;

    /// Acknowledges resumes (one statement for many): they are never delivered again. Returns
    /// how many were still unacknowledged.
    async fn ack_resumes(&self, resume_ids: &[ResumeId], now: Timestamp)
    -> Result<u64, StoreError>;

    /// Frees the leases `owner` holds on unacknowledged resumes (its stream ended), so they are
    /// delivered again at once.
    async fn release_resumes(&self, owner: &LeaseOwner) -> Result<u64, StoreError>;

    /// Retention: deletes, in one bounded round (one transaction), what was finished before
    /// `before` — up to `batch` waits decided before it whose resume is acknowledged (or that
    /// have none) and whose API call is not pending, with their inbox rows, resume and call;
    /// up to `batch` early events applied or expired before it; up to `batch` events
    /// quarantined before it. Never an open wait, an unacknowledged resume or a pending
    /// early event. [`PurgeCounts::full`] tells whether another round may find more.
    async fn purge(&self, before: Timestamp, batch: u32) -> Result<PurgeCounts, StoreError>;
}

/// One transaction. Dropped without [`StoreTx::commit`], it rolls back.
#[async_trait]
pub trait StoreTx: Send {
    /// Serializes transactions about one correlation id (registration against buffering an
    /// early event), until commit or rollback.
    async fn lock_correlation(
        &mut self,
        tenant: &TenantId,
        correlation_id: &CorrelationId,
    ) -> Result<(), StoreError>;

    /// The wait registered under this idempotency identity, if any.
    async fn find_by_idempotency(
        &mut self,
        tenant: &TenantId,
        execution_id: &ExecutionId,
        node_id: &NodeId,
        idempotency_key: &str,
    ) -> Result<Option<StoredWait>, StoreError>;

    /// A wait by correlation id, as this transaction sees it.
    async fn find_wait(
        &mut self,
        tenant: &TenantId,
        correlation_id: &CorrelationId,
    ) -> Result<Option<StoredWait>, StoreError>;

    /// Inserts a new wait. [`StoreError::Conflict`] when its correlation id or idempotency
    /// identity is taken.
    async fn insert_wait(&mut self, wait: &StoredWait) -> Result<(), StoreError>;

    /// Replaces a wait's state if its stored version is still `expected_version`, storing
    /// `wait.version` (compare-and-set). Returns false, changing nothing, on a conflict.
    async fn update_wait(
        &mut self,
        wait: &StoredWait,
        expected_version: i64,
    ) -> Result<bool, StoreError>;

    /// Waits past their deadline and still open, up to `limit`, locked for this transaction
    /// and skipped by other instances' sweepers while locked.
    async fn claim_due_waits(
        &mut self,
        now: Timestamp,
        limit: u32,
    ) -> Result<Vec<StoredWait>, StoreError>;

    /// Records that a wait processed an event key (the inbox). Returns false if it already had.
    async fn record_processed(
        &mut self,
        wait_id: WaitId,
        key: &EventKey,
        source: &SourceName,
        now: Timestamp,
    ) -> Result<bool, StoreError>;

    /// Buffered events for a correlation id that have not expired, oldest first.
    async fn pending_buffered(
        &mut self,
        tenant: &TenantId,
        correlation_id: &CorrelationId,
        now: Timestamp,
    ) -> Result<Vec<BufferedEvent>, StoreError>;

    /// Marks buffered events as applied to a wait.
    async fn mark_buffered_applied(
        &mut self,
        ids: &[i64],
        wait_id: WaitId,
        now: Timestamp,
    ) -> Result<(), StoreError>;

    /// Buffers an early event. Returns false if the same event key is already buffered.
    async fn buffer_event(
        &mut self,
        tenant: &TenantId,
        correlation_id: &CorrelationId,
        event: &IncomingEvent,
        expires_at: Timestamp,
    ) -> Result<bool, StoreError>;

    /// Records that waits listen on a topic with these id fields (idempotent).
    async fn remember_topic(
        &mut self,
        topic: &TopicFields,
        now: Timestamp,
    ) -> Result<(), StoreError>;

    /// Writes the wait's API call to the call outbox, due at once.
    async fn insert_api_call(
        &mut self,
        call: &ApiCallRecord,
        now: Timestamp,
    ) -> Result<(), StoreError>;

    /// Writes a resume to the outbox (one per wait) and wakes resume streams on every instance
    /// once committed. Returns false if the wait already has one.
    async fn insert_resume(&mut self, resume: &ResumeRecord) -> Result<bool, StoreError>;

    /// Commits.
    async fn commit(self) -> Result<(), StoreError>;
}

/// Wakes resume streams when resumes may be available, on every instance.
///
/// Local first: a resume committed on an instance where a [ready](ResumeWaiter::ready) stream
/// of its tenant waits is offered to the streams of that instance alone; the other instances
/// are told only when none is (and whenever leases are freed). So each resume costs one
/// stream's claim rather than one per instance, and nothing is lost either way: what no woken
/// stream takes, every stream finds at its poll interval.
pub trait ResumeSignal: Clone + Send + Sync + 'static {
    /// One stream's view of the signal.
    type Waiter: ResumeWaiter;

    /// A waiter that sees every wake-up from now on, for a stream of the tenants in `scope`.
    fn waiter(&self, scope: &TenantScope) -> Self::Waiter;

    /// Wakes local waiters now (after a local commit of a resume or a freed lease).
    fn notify_local(&self);
}

/// One stream's view of the [`ResumeSignal`].
#[async_trait]
pub trait ResumeWaiter: Send {
    /// Returns when a resume may have been written since the last call, or after `fallback`
    /// at the latest (polling only as a fallback).
    async fn wait(&mut self, fallback: Duration);

    /// Whether the stream would take a resume now: it has room and is not held by a client
    /// that stops reading. Resumes of its tenants committed on this instance while it is ready
    /// are not announced to the other instances. A new waiter is not ready.
    fn ready(&mut self, ready: bool);
}
