//! A store that fails on purpose: the SQLite store, except that reading the wait of chosen
//! correlation ids, or quarantining chosen payloads, fails with a chosen error a chosen number
//! of times. Each faulty call is counted.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rendezvous_domain::{CorrelationId, LeaseOwner, ResumeId, TenantId, Timestamp, WaitId};
use rendezvous_persistence::{SqlStore, SqlTx};
use rendezvous_ports::TenantScope;
use rendezvous_ports::{
    ApiCallRecord, BufferedSummary, ChangeOutcome, FreshWait, Page, PurgeCounts, Quarantined,
    QuarantinedRow, Redelivered, ResumeRecord, Store, StoreError, StoredWait, TopicFields,
    WaitChange, WaitQuery,
};

/// One injected failure: the error, how many more times it fires (`None`: always), and how
/// many times it fired.
#[derive(Debug, Clone)]
pub(crate) struct Fault {
    pub(crate) error: StoreError,
    pub(crate) remaining: Option<u32>,
    pub(crate) fired: u32,
}

impl Fault {
    /// Fails every time.
    pub(crate) fn always(error: StoreError) -> Self {
        Self {
            error,
            remaining: None,
            fired: 0,
        }
    }

    /// Fails `times` times, then lets calls through.
    pub(crate) fn times(error: StoreError, times: u32) -> Self {
        Self {
            error,
            remaining: Some(times),
            fired: 0,
        }
    }

    fn fire(&mut self) -> Option<StoreError> {
        match &mut self.remaining {
            Some(0) => return None,
            Some(n) => *n -= 1,
            None => {}
        }
        self.fired += 1;
        Some(self.error.clone())
    }
}

/// The faults in force, keyed by correlation id (`find_wait`) or by a marker the payload
/// contains (`quarantine`).
#[derive(Debug, Default)]
pub(crate) struct Faults {
    pub(crate) find_wait: Mutex<BTreeMap<String, Fault>>,
    pub(crate) quarantine: Mutex<BTreeMap<String, Fault>>,
}

impl Faults {
    /// How many times the `find_wait` fault of a correlation id fired.
    pub(crate) fn find_fired(&self, correlation: &str) -> u32 {
        self.find_wait.lock().unwrap()[correlation].fired
    }

    /// How many times the `quarantine` fault of a marker fired.
    pub(crate) fn quarantine_fired(&self, marker: &str) -> u32 {
        self.quarantine.lock().unwrap()[marker].fired
    }
}

/// The SQLite store with [`Faults`].
#[derive(Clone)]
pub(crate) struct FaultyStore {
    pub(crate) inner: SqlStore,
    pub(crate) faults: Arc<Faults>,
}

#[async_trait]
impl Store for FaultyStore {
    type Tx = SqlTx;

    async fn begin(&self) -> Result<SqlTx, StoreError> {
        self.inner.begin().await
    }

    async fn apply_change(&self, change: WaitChange<'_>) -> Result<ChangeOutcome, StoreError> {
        self.inner.apply_change(change).await
    }

    async fn insert_fresh_wait(&self, fresh: FreshWait<'_>) -> Result<bool, StoreError> {
        self.inner.insert_fresh_wait(fresh).await
    }

    async fn get_wait(&self, id: WaitId) -> Result<Option<StoredWait>, StoreError> {
        self.inner.get_wait(id).await
    }

    async fn find_wait(
        &self,
        tenant: &TenantId,
        correlation_id: &CorrelationId,
    ) -> Result<Option<StoredWait>, StoreError> {
        let fault = self
            .faults
            .find_wait
            .lock()
            .unwrap()
            .get_mut(correlation_id.as_str())
            .and_then(Fault::fire);
        match fault {
            Some(e) => Err(e),
            None => self.inner.find_wait(tenant, correlation_id).await,
        }
    }

    async fn list_waits(&self, query: &WaitQuery) -> Result<Page<StoredWait>, StoreError> {
        self.inner.list_waits(query).await
    }

    async fn expire_buffered(&self, now: Timestamp) -> Result<u64, StoreError> {
        self.inner.expire_buffered(now).await
    }

    async fn kafka_topics(&self) -> Result<Vec<TopicFields>, StoreError> {
        self.inner.kafka_topics().await
    }

    async fn quarantine(&self, event: &Quarantined) -> Result<(), StoreError> {
        let fault = self
            .faults
            .quarantine
            .lock()
            .unwrap()
            .iter_mut()
            .find(|(marker, _)| event.payload.contains(marker.as_str()))
            .and_then(|(_, fault)| fault.fire());
        match fault {
            Some(e) => Err(e),
            None => self.inner.quarantine(event).await,
        }
    }

    async fn quarantined(&self, limit: u32) -> Result<Vec<QuarantinedRow>, StoreError> {
        self.inner.quarantined(limit).await
    }

    async fn quarantined_event(&self, id: i64) -> Result<Option<QuarantinedRow>, StoreError> {
        self.inner.quarantined_event(id).await
    }

    async fn settle_replay(&self, id: i64, refused: Option<&str>) -> Result<bool, StoreError> {
        self.inner.settle_replay(id, refused).await
    }

    async fn list_buffered(
        &self,
        tenants: &TenantScope,
        limit: u32,
    ) -> Result<Vec<BufferedSummary>, StoreError> {
        self.inner.list_buffered(tenants, limit).await
    }

    async fn redeliver_resume(&self, wait_id: WaitId) -> Result<Option<Redelivered>, StoreError> {
        self.inner.redeliver_resume(wait_id).await
    }

    async fn claim_api_calls(
        &self,
        owner: &LeaseOwner,
        now: Timestamp,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<ApiCallRecord>, StoreError> {
        self.inner.claim_api_calls(owner, now, lease, limit).await
    }

    async fn finish_api_call(&self, wait_id: WaitId, now: Timestamp) -> Result<(), StoreError> {
        self.inner.finish_api_call(wait_id, now).await
    }

    async fn defer_api_calls(
        &self,
        owner: &LeaseOwner,
        wait_ids: &[WaitId],
        next_attempt_at: Timestamp,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        self.inner
            .defer_api_calls(owner, wait_ids, next_attempt_at, now)
            .await
    }

    async fn retry_api_call(
        &self,
        wait_id: WaitId,
        next_attempt_at: Timestamp,
        error: &str,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        self.inner
            .retry_api_call(wait_id, next_attempt_at, error, now)
            .await
    }

    async fn fail_api_call(
        &self,
        wait_id: WaitId,
        error: &str,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        self.inner.fail_api_call(wait_id, error, now).await
    }

    async fn claim_resumes(
        &self,
        owner: &LeaseOwner,
        tenants: &TenantScope,
        now: Timestamp,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<ResumeRecord>, StoreError> {
        self.inner
            .claim_resumes(owner, tenants, now, lease, limit)
            .await
    }

    async fn ack_resumes(
        &self,
        resume_ids: &[ResumeId],
        now: Timestamp,
    ) -> Result<u64, StoreError> {
        self.inner.ack_resumes(resume_ids, now).await
    }

    async fn release_resumes(&self, owner: &LeaseOwner) -> Result<u64, StoreError> {
        self.inner.release_resumes(owner).await
    }

    async fn purge(&self, before: Timestamp, batch: u32) -> Result<PurgeCounts, StoreError> {
        self.inner.purge(before, batch).await
    }
}
