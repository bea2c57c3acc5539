//! The wait state machine: apply an event, expire, cancel or fail, and get back a verdict the
//! caller can act on. Pure: time is a parameter, and nothing here performs I/O.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::event::{Channel, IncomingEvent, ReceivedEvent};
use crate::filter::FilterMiss;
use crate::ids::{
    CorrelationId, EventKey, ExecutionId, NodeId, SourceName, TenantId, Timestamp, WaitId,
};
use crate::limits::{MAX_WAIT_PAYLOAD_BYTES, encoded_len};
use crate::spec::{SourceKind, SourceSpec, TimeoutPolicy, WaitSpec};
use crate::trace::TraceContext;

/// How many ignored events a wait keeps for inspection (the oldest are dropped first; the
/// total count is kept).
pub const MAX_IGNORED_RECORDED: usize = 32;

/// What a wait is doing, as shown to users and stored for queries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WaitStatus {
    /// Open, waiting for sources (see [`WaitState::waiting_for`]).
    WaitingForEvents,
    /// Open; the only enabled source still missing is `api` (the seed's intermediate state).
    WaitingForApi,
    /// Open; the only enabled source still missing is `kafka` (the seed's intermediate state).
    WaitingForKafka,
    /// Decided: the condition was met.
    Completed,
    /// Decided: the timeout fired first.
    TimedOut,
    /// Decided: cancelled by a caller.
    Cancelled,
    /// Decided: failed (for example the API call failed for good).
    Failed,
}

impl WaitStatus {
    /// The status name as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::WaitingForEvents => "waiting_for_events",
            Self::WaitingForApi => "waiting_for_api",
            Self::WaitingForKafka => "waiting_for_kafka",
            Self::Completed => "completed",
            Self::TimedOut => "timed_out",
            Self::Cancelled => "cancelled",
            Self::Failed => "failed",
        }
    }

    /// Parses a stored status name.
    pub fn parse(raw: &str) -> Option<Self> {
        Some(match raw {
            "waiting_for_events" => Self::WaitingForEvents,
            "waiting_for_api" => Self::WaitingForApi,
            "waiting_for_kafka" => Self::WaitingForKafka,
            "completed" => Self::Completed,
            "timed_out" => Self::TimedOut,
            "cancelled" => Self::Cancelled,
            "failed" => Self::Failed,
            _ => return None,
        })
    }

    /// Whether the wait is still open.
    pub fn is_open(self) -> bool {
        matches!(
            self,
            Self::WaitingForEvents | Self::WaitingForApi | Self::WaitingForKafka
        )
    }
}

impl fmt::Display for WaitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a wait was decided; what the engine is told in the resume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The condition was met; continue with the events.
    Completed,
    /// The timeout fired and the policy is `resume_with_partial`: continue with what arrived.
    Partial,
    /// The timeout fired and the policy is `fail`.
    TimedOut,
    /// Cancelled.
    Cancelled,
    /// Failed, with a reason.
    Failed,
}

impl Outcome {
    /// The status a wait decided this way has.
    pub fn status(self) -> WaitStatus {
        match self {
            Self::Completed => WaitStatus::Completed,
            Self::Partial | Self::TimedOut => WaitStatus::TimedOut,
            Self::Cancelled => WaitStatus::Cancelled,
            Self::Failed => WaitStatus::Failed,
        }
    }

    /// The outcome name as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Partial => "partial",
            Self::TimedOut => "timed_out",
            Self::Cancelled => "cancelled",
            Self::Failed => "failed",
        }
    }
}

/// The one decision of a wait. Set exactly once, never changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolution {
    /// How it was decided.
    pub outcome: Outcome,
    /// When.
    pub decided_at: Timestamp,
    /// Enabled sources without an accepted event at that moment.
    pub missing: Vec<SourceName>,
    /// Why, for cancellations and failures.
    pub reason: Option<String>,
}

/// Why an event did not count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum IgnoreReason {
    /// The event belongs to another execution, or names none. Never applied.
    ExecutionMismatch {
        /// The wait's execution id.
        expected: ExecutionId,
        /// What the event carried.
        found: Option<ExecutionId>,
    },
    /// No enabled source of the wait takes events from this channel.
    NoMatchingSource {
        /// Where the event came from.
        channel: Channel,
    },
    /// A matching source's filter refused it.
    FilteredOut {
        /// The source whose filter refused it.
        source: SourceName,
        /// The first failing clause.
        path: String,
        /// What the clause wanted and what the event had.
        reason: String,
    },
    /// Its source already has an event; the first one counts.
    AlreadySatisfied {
        /// The source.
        source: SourceName,
    },
    /// The wait was already decided.
    Late {
        /// The wait's status when the event arrived.
        status: WaitStatus,
    },
    /// Accepting it would make the wait's events, and so its resume, larger than
    /// [`MAX_WAIT_PAYLOAD_BYTES`]. Never applied.
    OverWaitLimit {
        /// The source it would have counted for.
        source: SourceName,
        /// The wait's event bytes had it been accepted.
        size: usize,
        /// The limit.
        limit: usize,
    },
}

impl fmt::Display for IgnoreReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ExecutionMismatch {
                expected,
                found: Some(found),
            } => {
                write!(
                    f,
                    "execution id mismatch: the wait belongs to \"{expected}\", the event to \"{found}\""
                )
            }
            Self::ExecutionMismatch {
                expected,
                found: None,
            } => {
                write!(
                    f,
                    "execution id missing: the wait belongs to \"{expected}\", the event names none"
                )
            }
            Self::NoMatchingSource { channel } => write!(
                f,
                "no enabled source of this wait takes events from {channel}"
            ),
            Self::FilteredOut {
                source,
                path,
                reason,
            } => write!(f, "filtered out by source {source}: {path}: {reason}"),
            Self::AlreadySatisfied { source } => write!(f, "source {source} already has an event"),
            Self::Late { status } => write!(f, "late: the wait is already {status}"),
            Self::OverWaitLimit {
                source,
                size,
                limit,
            } => write!(
                f,
                "too large for source {source}: the wait's events would total {size} bytes, over the limit of {limit} bytes per wait"
            ),
        }
    }
}

/// An event that did not count, kept for the "why is this still waiting" view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IgnoredEvent {
    /// Its identity.
    pub key: EventKey,
    /// When it arrived.
    pub at: Timestamp,
    /// Why it did not count.
    pub reason: IgnoreReason,
}

/// What applying an event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Accepted for `source`; the wait is still open.
    Accepted {
        /// The source it satisfied.
        source: SourceName,
    },
    /// Accepted for `source`, and that met the condition: the wait is now completed.
    Completed {
        /// The source it satisfied.
        source: SourceName,
    },
    /// An event with this key was already accepted. Nothing changed.
    Duplicate,
    /// It did not count, for this reason (recorded on the wait).
    Ignored(IgnoreReason),
}

/// The result of one state-machine step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// What happened to the event.
    pub verdict: Verdict,
    /// `Some` when this step decided the wait (the caller writes the resume in the same
    /// transaction). An event arriving after the deadline first times the wait out.
    pub decided: Option<Outcome>,
    /// Whether the state changed and must be stored.
    pub changed: bool,
}

/// Identity of a new wait, chosen by the caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitKey {
    /// Primary key.
    pub id: WaitId,
    /// Tenant namespace.
    pub tenant: TenantId,
    /// Correlation id.
    pub correlation_id: CorrelationId,
    /// Execution the wait belongs to.
    pub execution_id: ExecutionId,
    /// Node that registered it.
    pub node_id: NodeId,
}

/// The full state of one wait.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WaitState {
    /// Who it is.
    pub key: WaitKey,
    /// What it waits for.
    pub spec: WaitSpec,
    /// When it was registered.
    pub created_at: Timestamp,
    /// When it times out.
    pub deadline: Timestamp,
    /// Accepted events, one per source at most, in arrival order.
    pub received: Vec<ReceivedEvent>,
    /// The last [`MAX_IGNORED_RECORDED`] events that did not count.
    pub ignored: Vec<IgnoredEvent>,
    /// How many events did not count, in all.
    pub ignored_total: u64,
    /// The decision, once made.
    pub resolution: Option<Resolution>,
    /// The registering caller's trace context: the outbound call, the decision and the
    /// resume continue its trace.
    #[serde(default)]
    pub trace: Option<TraceContext>,
}

impl WaitState {
    /// A new wait. A wait whose condition holds with no event (no enabled source) is
    /// completed at once; check [`WaitState::resolution`].
    pub fn register(key: WaitKey, spec: WaitSpec, now: Timestamp) -> Self {
        let deadline = now.plus(spec.timeout);
        let mut state = Self {
            key,
            spec,
            created_at: now,
            deadline,
            received: Vec::new(),
            ignored: Vec::new(),
            ignored_total: 0,
            resolution: None,
            trace: None,
        };
        if state.spec.condition.holds(&BTreeSet::new()) {
            state.decide(Outcome::Completed, now, None);
        }
        state
    }

    /// The current status.
    pub fn status(&self) -> WaitStatus {
        if let Some(resolution) = &self.resolution {
            return resolution.outcome.status();
        }
        if self.received.is_empty() {
            return WaitStatus::WaitingForEvents;
        }
        let missing = self.missing();
        match missing.as_slice() {
            [only] if only.as_str() == SourceName::API => WaitStatus::WaitingForApi,
            [only] if only.as_str() == SourceName::KAFKA => WaitStatus::WaitingForKafka,
            _ => WaitStatus::WaitingForEvents,
        }
    }

    /// Whether the wait is still open.
    pub fn is_open(&self) -> bool {
        self.resolution.is_none()
    }

    /// Sources with an accepted event.
    pub fn satisfied(&self) -> BTreeSet<SourceName> {
        self.received.iter().map(|e| e.source.clone()).collect()
    }

    /// Enabled sources without an accepted event, in declaration order.
    pub fn missing(&self) -> Vec<SourceName> {
        let satisfied = self.satisfied();
        self.spec
            .sources
            .iter()
            .filter(|s| !satisfied.contains(&s.name))
            .map(|s| s.name.clone())
            .collect()
    }

    /// Sources the condition mentions that have no event yet: what the wait is waiting for.
    pub fn waiting_for(&self) -> Vec<SourceName> {
        if !self.is_open() {
            return Vec::new();
        }
        let satisfied = self.satisfied();
        self.spec
            .condition
            .sources()
            .into_iter()
            .filter(|s| !satisfied.contains(s))
            .collect()
    }

    /// Applies one event at time `now`.
    pub fn apply(&mut self, event: IncomingEvent, now: Timestamp) -> Step {
        let timed_out = self.expire(now);
        if self.received.iter().any(|r| r.key == event.key) {
            return Step {
                verdict: Verdict::Duplicate,
                decided: timed_out,
                changed: timed_out.is_some(),
            };
        }
        match self
            .evaluate(&event)
            .and_then(|source| self.check_size(source, &event.payload))
        {
            Ok(source) => {
                self.received.push(ReceivedEvent {
                    source: source.clone(),
                    key: event.key,
                    payload: event.payload,
                    received_at: event.received_at,
                });
                if self.spec.condition.holds(&self.satisfied()) {
                    self.decide(Outcome::Completed, now, None);
                    Step {
                        verdict: Verdict::Completed { source },
                        decided: Some(Outcome::Completed),
                        changed: true,
                    }
                } else {
                    Step {
                        verdict: Verdict::Accepted { source },
                        decided: None,
                        changed: true,
                    }
                }
            }
            Err(reason) => {
                let recorded = self.record_ignored(event.key, event.received_at, reason.clone());
                Step {
                    verdict: Verdict::Ignored(reason),
                    decided: timed_out,
                    changed: recorded || timed_out.is_some(),
                }
            }
        }
    }

    /// Decides which source the event counts for, or why it does not count.
    fn evaluate(&self, event: &IncomingEvent) -> Result<SourceName, IgnoreReason> {
        let candidates: Vec<&SourceSpec> = match &event.channel {
            Channel::Source(name) => self.spec.source(name).into_iter().collect(),
            Channel::Topic(topic) => self
                .spec
                .sources
                .iter()
                .filter(|s| matches!(&s.kind, SourceKind::Kafka(k) if &k.topic == topic))
                .collect(),
        };
        let Some(first) = candidates.first() else {
            return Err(IgnoreReason::NoMatchingSource {
                channel: event.channel.clone(),
            });
        };
        let found = event.execution_id.clone().or_else(|| match &first.kind {
            SourceKind::Kafka(k) => k
                .execution_id_field
                .lookup_id(&event.payload)
                .and_then(|raw| ExecutionId::parse(raw).ok()),
            _ => None,
        });
        if found.as_ref() != Some(&self.key.execution_id) {
            return Err(IgnoreReason::ExecutionMismatch {
                expected: self.key.execution_id.clone(),
                found,
            });
        }
        if let Some(resolution) = &self.resolution {
            return Err(IgnoreReason::Late {
                status: resolution.outcome.status(),
            });
        }
        let satisfied = self.satisfied();
        let mut first_miss: Option<(&SourceName, FilterMiss)> = None;
        let mut already = None;
        for source in candidates {
            match source.filter.check(&event.payload) {
                Err(miss) => {
                    first_miss.get_or_insert((&source.name, miss));
                }
                Ok(()) if satisfied.contains(&source.name) => {
                    already.get_or_insert(&source.name);
                }
                Ok(()) => return Ok(source.name.clone()),
            }
        }
        if let Some(source) = already {
            return Err(IgnoreReason::AlreadySatisfied {
                source: source.clone(),
            });
        }
        let (source, miss) = first_miss.ok_or_else(|| IgnoreReason::NoMatchingSource {
            channel: event.channel.clone(),
        })?;
        Err(IgnoreReason::FilteredOut {
            source: source.clone(),
            path: miss.path,
            reason: miss.reason,
        })
    }

    /// Refuses an event that would make the wait's events larger than
    /// [`MAX_WAIT_PAYLOAD_BYTES`] (measured as encoded JSON).
    fn check_size(&self, source: SourceName, payload: &Value) -> Result<SourceName, IgnoreReason> {
        let size = self
            .received
            .iter()
            .map(|r| encoded_len(&r.payload))
            .sum::<usize>()
            + encoded_len(payload);
        if size > MAX_WAIT_PAYLOAD_BYTES {
            return Err(IgnoreReason::OverWaitLimit {
                source,
                size,
                limit: MAX_WAIT_PAYLOAD_BYTES,
            });
        }
        Ok(source)
    }

    /// Records an ignored event unless the same event was already recorded for the same
    /// reason (a redelivery). Returns whether anything changed.
    fn record_ignored(&mut self, key: EventKey, at: Timestamp, reason: IgnoreReason) -> bool {
        if self
            .ignored
            .iter()
            .any(|i| i.key == key && i.reason == reason)
        {
            return false;
        }
        if self.ignored.len() == MAX_IGNORED_RECORDED {
            self.ignored.remove(0);
        }
        self.ignored.push(IgnoredEvent { key, at, reason });
        self.ignored_total += 1;
        true
    }

    /// Times the wait out if it is open and `now` has reached the deadline. Returns the
    /// outcome when this call decided the wait.
    pub fn expire(&mut self, now: Timestamp) -> Option<Outcome> {
        if !self.is_open() || now < self.deadline {
            return None;
        }
        let outcome = match self.spec.on_timeout {
            TimeoutPolicy::Fail => Outcome::TimedOut,
            TimeoutPolicy::ResumeWithPartial => Outcome::Partial,
        };
        self.decide(outcome, now, None);
        Some(outcome)
    }

    /// Cancels an open wait. On a decided wait nothing changes and `Err` carries the
    /// existing resolution (cancelling is idempotent for callers).
    pub fn cancel(&mut self, reason: Option<String>, now: Timestamp) -> Result<(), Resolution> {
        self.close(Outcome::Cancelled, reason, now)
    }

    /// Fails an open wait (for example: the API call failed for good). On a decided wait
    /// nothing changes and `Err` carries the existing resolution.
    pub fn fail(&mut self, reason: String, now: Timestamp) -> Result<(), Resolution> {
        self.close(Outcome::Failed, Some(reason), now)
    }

    fn close(
        &mut self,
        outcome: Outcome,
        reason: Option<String>,
        now: Timestamp,
    ) -> Result<(), Resolution> {
        if let Some(existing) = &self.resolution {
            return Err(existing.clone());
        }
        self.decide(outcome, now, reason);
        Ok(())
    }

    fn decide(&mut self, outcome: Outcome, now: Timestamp, reason: Option<String>) {
        debug_assert!(self.resolution.is_none(), "a wait is decided once");
        self.resolution = Some(Resolution {
            outcome,
            decided_at: now,
            missing: self.missing(),
            reason,
        });
    }
}
