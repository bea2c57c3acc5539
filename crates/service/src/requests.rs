//! The use cases' commands and answers, in validated domain types: adapters parse what their
//! callers sent into these at their edge (`crate::parse`), so the use cases never see raw text
//! where an id belongs.

use std::collections::BTreeMap;
use std::fmt;

use rendezvous_domain::limits::MAX_JSON_DEPTH;
use rendezvous_domain::{
    Channel, CorrelationId, EventKey, ExecutionId, IdempotencyKey, IgnoreReason, NodeId, TenantId,
    TraceContext, Verdict, WaitId,
};
use rendezvous_domain::{JsonError, parse_json_slice};
use rendezvous_ports::{StoredWait, TenantScope};

use crate::ServiceError;
use serde_json::Value;

/// A registration request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterWait {
    /// The tenant the wait belongs to.
    pub tenant: TenantId,
    /// The workflow execution.
    pub execution_id: ExecutionId,
    /// The workflow node.
    pub node_id: NodeId,
    /// The node config JSON text (its size is checked against `max_config_bytes` before it is
    /// parsed).
    pub node_config_json: String,
    /// Distinguishes several waits of one node in one execution; may be empty.
    pub idempotency_key: IdempotencyKey,
    /// For listing only.
    pub workflow_id: Option<String>,
    /// Caller-chosen correlation id; `None` to generate one.
    pub correlation_id: Option<CorrelationId>,
    /// Values for `{{name}}` placeholders of the API call.
    pub input_variables: BTreeMap<String, String>,
    /// The caller's W3C trace context: the API call, the decision and the resume continue it.
    pub trace: Option<TraceContext>,
}

impl RegisterWait {
    /// A registration in the default tenant, with no idempotency key, chosen correlation id,
    /// input variables, workflow id or trace context (set the fields to add them).
    pub fn new(
        execution_id: ExecutionId,
        node_id: NodeId,
        node_config_json: impl Into<String>,
    ) -> Self {
        Self {
            tenant: TenantId::default_tenant(),
            execution_id,
            node_id,
            node_config_json: node_config_json.into(),
            idempotency_key: IdempotencyKey::default(),
            workflow_id: None,
            correlation_id: None,
            input_variables: BTreeMap::new(),
            trace: None,
        }
    }
}

/// The wait a registration produced or found.
#[derive(Debug, Clone, PartialEq)]
pub struct Registered {
    /// The wait.
    pub wait: StoredWait,
    /// Whether this call created it.
    pub created: bool,
}

/// An event delivered for a correlation id.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// The tenant of the wait it is for.
    pub tenant: TenantId,
    /// The wait's correlation id.
    pub correlation_id: CorrelationId,
    /// The execution id the event carries, if any.
    pub execution_id: Option<ExecutionId>,
    /// Where it came from.
    pub channel: Channel,
    /// The event body.
    pub payload: Value,
    /// The event's size as received, in bytes: `service.max_payload_bytes` applies to it
    /// (measured by the adapter, which has the raw bytes, so the JSON is never re-encoded).
    pub size: usize,
    /// The event's identity.
    pub event_key: EventKey,
}

impl Delivery {
    /// The `api` event of an HTTP response: `{"status", "headers", "body"}` where a JSON body
    /// stays JSON and any other body becomes a string: so does a body nested deeper than
    /// [`MAX_JSON_DEPTH`] or with a key given twice, which the store could not read back.
    pub fn api_payload(status: u32, headers: BTreeMap<String, String>, body: &[u8]) -> Value {
        let body = parse_json_slice(body, MAX_JSON_DEPTH)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()));
        serde_json::json!({"status": status, "headers": headers, "body": body})
    }

    /// [`Delivery::api_payload`] for a body a caller sent: a JSON body nested deeper than
    /// [`MAX_JSON_DEPTH`] is refused (`body: ...`) rather than kept as text.
    pub fn api_payload_checked(
        status: u32,
        headers: BTreeMap<String, String>,
        body: &[u8],
    ) -> Result<Value, ServiceError> {
        if let Err(e @ JsonError::TooDeep { .. }) = parse_json_slice(body, MAX_JSON_DEPTH) {
            return Err(ServiceError::invalid("body", e));
        }
        Ok(Self::api_payload(status, headers, body))
    }

    /// The received size of an HTTP response: its body plus its header names and values.
    pub fn api_size(headers: &BTreeMap<String, String>, body: &[u8]) -> usize {
        body.len()
            + headers
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>()
    }
}

/// What a delivery did.
#[derive(Debug, Clone, PartialEq)]
pub enum Delivered {
    /// No wait has the correlation id yet; kept in the early-event buffer.
    Buffered,
    /// Already in the early-event buffer.
    BufferedDuplicate,
    /// Applied to a wait.
    Applied {
        /// The wait after the event.
        wait: Box<StoredWait>,
        /// What the event did.
        effect: Effect,
    },
}

/// What an event did to the wait it was applied to. An execution-id mismatch and an event
/// over the wait's size limit are not among them: they are refused
/// ([`crate::ServiceError::ExecutionMismatch`], [`crate::ServiceError::TooLarge`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Counted for a source; the wait is still open.
    Accepted,
    /// Counted for a source and met the condition: the wait is completed.
    Completed,
    /// An event with its key was already counted; nothing changed.
    Duplicate,
    /// It did not count (recorded on the wait): `why` says which rule, `detail` the reason.
    Ignored {
        /// Which rule set it aside.
        why: Ignored,
        /// The reason in words, e.g. what the filter expected.
        detail: String,
    },
}

/// Why an applied event did not count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ignored {
    /// The source's filter refused it.
    FilteredOut,
    /// The wait has no enabled source for where it came from.
    NoMatchingSource,
    /// Its source already had an event.
    AlreadySatisfied,
    /// The wait was already decided.
    Late,
}

impl Effect {
    /// The effect of a verdict; `Err` with the reason when the event is refused rather than
    /// applied: it belongs to another execution, or would make the wait too large.
    pub(crate) fn of(verdict: Verdict) -> Result<Self, IgnoreReason> {
        let ignored = |why, reason: &IgnoreReason| Self::Ignored {
            why,
            detail: reason.to_string(),
        };
        Ok(match verdict {
            Verdict::Accepted { .. } => Self::Accepted,
            Verdict::Completed { .. } => Self::Completed,
            Verdict::Duplicate => Self::Duplicate,
            Verdict::Ignored(reason) => match &reason {
                IgnoreReason::ExecutionMismatch { .. } | IgnoreReason::OverWaitLimit { .. } => {
                    return Err(reason);
                }
                IgnoreReason::FilteredOut { .. } => ignored(Ignored::FilteredOut, &reason),
                IgnoreReason::NoMatchingSource { .. } => {
                    ignored(Ignored::NoMatchingSource, &reason)
                }
                IgnoreReason::AlreadySatisfied { .. } => {
                    ignored(Ignored::AlreadySatisfied, &reason)
                }
                IgnoreReason::Late { .. } => ignored(Ignored::Late, &reason),
            },
        })
    }
}

/// How a caller names a wait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitLookup {
    /// By wait id; a wait of a tenant out of scope is not found.
    Id {
        /// The wait id.
        wait_id: WaitId,
        /// The tenants the caller acts for.
        tenants: TenantScope,
    },
    /// By correlation id within a tenant.
    Correlation {
        /// The tenant.
        tenant: TenantId,
        /// The correlation id.
        correlation_id: CorrelationId,
    },
}

impl fmt::Display for WaitLookup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Id { wait_id, .. } => write!(f, "wait {wait_id}"),
            Self::Correlation {
                tenant,
                correlation_id,
            } => write!(
                f,
                "the wait with correlation id {correlation_id} in tenant {tenant}"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use rendezvous_domain::{SourceName, WaitStatus};

    use super::*;

    #[test]
    fn a_mismatch_is_refused_and_every_other_verdict_has_an_effect() {
        let mismatch = IgnoreReason::ExecutionMismatch {
            expected: ExecutionId::parse("e-1").unwrap(),
            found: None,
        };
        assert_eq!(
            Effect::of(Verdict::Ignored(mismatch.clone())),
            Err(mismatch)
        );
        let late = IgnoreReason::Late {
            status: WaitStatus::Completed,
        };
        assert_eq!(
            Effect::of(Verdict::Ignored(late.clone())),
            Ok(Effect::Ignored {
                why: Ignored::Late,
                detail: late.to_string(),
            })
        );
        let source = SourceName::api();
        assert_eq!(
            Effect::of(Verdict::Completed { source }),
            Ok(Effect::Completed)
        );
        assert_eq!(Effect::of(Verdict::Duplicate), Ok(Effect::Duplicate));
    }
}
