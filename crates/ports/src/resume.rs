//! The resume: one row of the resume outbox, the decision of one wait as the engine sees it.

use rendezvous_domain::{
    CorrelationId, ExecutionId, NodeId, Outcome, ReceivedEvent, ResumeId, SourceName, TenantId,
    Timestamp, TraceContext, WaitId, WaitState,
};
use serde::{Deserialize, Serialize};

/// An accepted event as carried by a resume.
pub type ResumeEvent = ReceivedEvent;

/// The decision of one wait, written to the outbox in the transaction that decided it and
/// delivered to the engine at least once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResumeRecord {
    /// Stable across redeliveries: the engine deduplicates by it.
    pub resume_id: ResumeId,
    /// The wait.
    pub wait_id: WaitId,
    /// Its tenant.
    pub tenant: TenantId,
    /// Its correlation id.
    pub correlation_id: CorrelationId,
    /// Its execution.
    pub execution_id: ExecutionId,
    /// Its node.
    pub node_id: NodeId,
    /// How it was decided.
    pub outcome: Outcome,
    /// Accepted events, in arrival order.
    pub events: Vec<ResumeEvent>,
    /// Enabled sources without an event at the decision.
    pub missing: Vec<SourceName>,
    /// Why, for cancellations and failures.
    pub reason: Option<String>,
    /// When the wait was registered.
    pub registered_at: Timestamp,
    /// When it was decided.
    pub decided_at: Timestamp,
    /// How many times it was handed to an engine stream (1 on first delivery).
    pub attempts: u32,
    /// The registration's trace context, so the engine can continue that trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<TraceContext>,
}

impl ResumeRecord {
    /// The resume of a decided wait; `None` while it is open.
    pub fn of(state: &WaitState, resume_id: ResumeId) -> Option<Self> {
        let resolution = state.resolution.as_ref()?;
        Some(Self {
            resume_id,
            wait_id: state.key.id,
            tenant: state.key.tenant.clone(),
            correlation_id: state.key.correlation_id.clone(),
            execution_id: state.key.execution_id.clone(),
            node_id: state.key.node_id.clone(),
            outcome: resolution.outcome,
            events: state.received.clone(),
            missing: resolution.missing.clone(),
            reason: resolution.reason.clone(),
            registered_at: state.created_at,
            decided_at: resolution.decided_at,
            attempts: 0,
            trace: state.trace.clone(),
        })
    }
}
