//! The use cases over the ports: register, deliver (ingest), expire, cancel, inspect, and the
//! resume feed's claim/ack/release.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rendezvous_domain::{
    Channel, CorrelationId, EventKey, ExecutionId, IgnoreReason, IncomingEvent, NodeId, Outcome,
    ResponseMode, SourceKind, SourceName, TenantId, Timestamp, Verdict, WaitId, WaitKey, WaitSpec,
    WaitState,
};
use rendezvous_ports::{
    ApiCallRecord, CallFailure, ChangeOutcome, Clock, FreshWait, HttpCaller, Page, Quarantined,
    ResumeRecord, ResumeSignal, Store, StoreError, StoreTx, StoredWait, TopicFields, WaitChange,
    WaitQuery, retry_after,
};
use serde_json::Value;
use tokio::sync::Notify;

use crate::error::ServiceError;

/// Limits and timings of the use cases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceConfig {
    /// How long an event for an unknown correlation id is kept for a wait to register.
    pub buffer_ttl: Duration,
    /// How many optimistic-lock conflicts one request may meet before giving up.
    pub max_conflict_retries: u32,
    /// The largest event payload accepted, in bytes.
    pub max_payload_bytes: usize,
    /// The largest node config accepted, in bytes.
    pub max_config_bytes: usize,
    /// Outbound API calls.
    pub api: ApiPolicy,
}

/// Where outbound API calls may go, and how they are retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiPolicy {
    /// URL prefixes (`https://api.partner.example/v1/`) or host names (`api.partner.example`)
    /// calls may go to. Empty: any host (private networks still need `allow_private_networks`).
    pub allowed: Vec<String>,
    /// Whether loopback and private addresses may be called (off: SSRF protection).
    pub allow_private_networks: bool,
    /// Attempts before the wait fails (transient errors: connect, timeout, 5xx, 429).
    pub max_attempts: u32,
    /// First retry delay; doubles per attempt up to `max_backoff` (`Retry-After` wins if longer).
    pub backoff: Duration,
    /// Longest retry delay.
    pub max_backoff: Duration,
    /// How long one attempt is leased to an instance (longer than the HTTP timeout).
    pub lease: Duration,
}

impl Default for ApiPolicy {
    fn default() -> Self {
        Self {
            allowed: Vec::new(),
            allow_private_networks: false,
            max_attempts: 8,
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            lease: Duration::from_secs(60),
        }
    }
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            buffer_ttl: Duration::from_secs(3600),
            max_conflict_retries: 32,
            max_payload_bytes: 1024 * 1024,
            max_config_bytes: 256 * 1024,
            api: ApiPolicy::default(),
        }
    }
}

/// A registration request, fields as the caller sent them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegisterWait {
    /// Tenant; empty for the default tenant.
    pub tenant_id: String,
    /// Required.
    pub execution_id: String,
    /// Required.
    pub node_id: String,
    /// The node config JSON text.
    pub node_config_json: String,
    /// Distinguishes several waits of one node in one execution; may be empty.
    pub idempotency_key: String,
    /// For listing only; may be empty.
    pub workflow_id: String,
    /// Caller-chosen correlation id; empty to generate one.
    pub correlation_id: String,
    /// Values for `{{name}}` placeholders of the API call.
    pub input_variables: BTreeMap<String, String>,
    /// The caller's W3C `traceparent`, propagated on the API call.
    pub traceparent: Option<String>,
}

/// The wait a registration produced or found.
#[derive(Debug, Clone, PartialEq)]
pub struct Registered {
    /// The wait.
    pub wait: StoredWait,
    /// Whether this call created it.
    pub created: bool,
}

/// An event delivered for a correlation id, fields as the caller sent them.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// Tenant; empty for the default tenant.
    pub tenant_id: String,
    /// Required.
    pub correlation_id: String,
    /// The execution id the event carries, if any.
    pub execution_id: Option<String>,
    /// Where it came from.
    pub channel: Channel,
    /// The event body.
    pub payload: Value,
    /// The event's size as received, in bytes: `service.max_payload_bytes` applies to it
    /// (measured by the adapter, which has the raw bytes, so the JSON is never re-encoded).
    pub size: usize,
    /// The event's identity. Required.
    pub event_key: String,
}

impl Delivery {
    /// The `api` event of an HTTP response: `{"status", "headers", "body"}` where a JSON body
    /// stays JSON and any other body becomes a string.
    pub fn api_payload(status: u32, headers: BTreeMap<String, String>, body: &[u8]) -> Value {
        let body = serde_json::from_slice::<Value>(body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()));
        serde_json::json!({"status": status, "headers": headers, "body": body})
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
        verdict: Verdict,
    },
}

/// How a caller names a wait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitLookup {
    /// By wait id (a UUID); when a tenant is given, a wait of another tenant is not found.
    Id {
        /// The wait id.
        wait_id: String,
        /// Tenant the caller acts for; empty: any.
        tenant_id: String,
    },
    /// By correlation id within a tenant (empty tenant: the default).
    Correlation {
        /// Tenant.
        tenant_id: String,
        /// Correlation id.
        correlation_id: String,
    },
}

/// The use cases, generic over the store, the resume signal and the clock.
#[derive(Debug, Clone)]
pub struct WaitService<S, G, C> {
    store: S,
    signal: G,
    clock: C,
    config: ServiceConfig,
    /// Topic/field combinations already recorded in the store (so registration writes them
    /// once per instance, not once per wait).
    known_topics: Arc<Mutex<HashSet<TopicFields>>>,
    /// Wakes the Kafka ingress when a wait introduced a topic.
    topics_changed: Arc<Notify>,
    /// Wakes the API-call dispatcher when a registration wrote a call.
    calls_pending: Arc<Notify>,
}

fn tenant(raw: &str) -> Result<TenantId, ServiceError> {
    if raw.is_empty() {
        Ok(TenantId::default_tenant())
    } else {
        TenantId::parse(raw).map_err(|e| ServiceError::invalid("tenant_id", e))
    }
}

fn required<T>(
    field: &str,
    raw: &str,
    parse: impl FnOnce(String) -> Result<T, rendezvous_domain::IdError>,
) -> Result<T, ServiceError> {
    if raw.is_empty() {
        return Err(ServiceError::invalid(field, "required"));
    }
    parse(raw.to_owned()).map_err(|e| ServiceError::invalid(field, e.reason))
}

/// Random back-off before retrying a conflict: up to 1, 2, 4 ... 64 ms.
async fn backoff(attempt: u32) {
    let cap = 1u64 << attempt.min(6);
    tokio::time::sleep(Duration::from_micros(fastrand::u64(0..=cap * 1000))).await;
}

impl<S: Store, G: ResumeSignal, C: Clock> WaitService<S, G, C> {
    /// The service over its ports.
    pub fn new(store: S, signal: G, clock: C, config: ServiceConfig) -> Self {
        Self {
            store,
            signal,
            clock,
            config,
            known_topics: Arc::default(),
            topics_changed: Arc::default(),
            calls_pending: Arc::default(),
        }
    }

    /// Notified when a registration wrote an API call (the dispatcher then runs at once).
    pub fn calls_pending(&self) -> &Notify {
        &self.calls_pending
    }

    /// Refuses API-call destinations outside the allowlist, and private or loopback addresses
    /// unless allowed (the HTTP adapter checks resolved addresses again).
    fn check_destination(&self, raw: &str) -> Result<(), ServiceError> {
        const FIELD: &str = "node_config.data.apiCall.url";
        let policy = &self.config.api;
        let url = url::Url::parse(raw).map_err(|e| {
            ServiceError::invalid(FIELD, format!("{raw:?} is not a URL after templating: {e}"))
        })?;
        let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
        if !policy.allowed.is_empty()
            && !policy.allowed.iter().any(|entry| {
                if entry.contains("://") {
                    raw.starts_with(entry.as_str())
                } else {
                    host == entry.to_ascii_lowercase()
                }
            })
        {
            return Err(ServiceError::invalid(
                FIELD,
                format!("{raw:?} is not in the allowed destinations (api.allowed)"),
            ));
        }
        let private = match url.host() {
            Some(url::Host::Ipv4(ip)) => is_private(std::net::IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => is_private(std::net::IpAddr::V6(ip)),
            Some(url::Host::Domain(d)) => {
                d.eq_ignore_ascii_case("localhost")
                    || d.to_ascii_lowercase().ends_with(".localhost")
            }
            None => true,
        };
        if private && !policy.allow_private_networks {
            return Err(ServiceError::invalid(
                FIELD,
                format!(
                    "{raw:?} points at a loopback or private address, refused (api.allow_private_networks)"
                ),
            ));
        }
        Ok(())
    }

    /// Makes due API calls (at most `limit`) through `caller`, leased to `owner`. A 2xx ends the
    /// call (in `sync` mode its reply is delivered as the `api` event); connect errors,
    /// timeouts, 5xx and 429 are retried with backoff (`Retry-After` respected) up to the
    /// attempt limit; other failures, or the limit, fail the wait with the reason. Returns how
    /// many calls were attempted.
    pub async fn dispatch_api_calls<H: HttpCaller>(
        &self,
        caller: &H,
        owner: &str,
        limit: u32,
    ) -> Result<usize, ServiceError> {
        let calls = self
            .store
            .claim_api_calls(owner, self.clock.now(), self.config.api.lease, limit)
            .await?;
        let n = calls.len();
        let results = futures_util::future::join_all(
            calls.into_iter().map(|call| self.perform(caller, call)),
        )
        .await;
        for result in results {
            if let Err(e) = result {
                tracing::warn!(error = %e, "api call bookkeeping failed; the call is retried after its lease");
            }
        }
        Ok(n)
    }

    async fn perform<H: HttpCaller>(
        &self,
        caller: &H,
        call: ApiCallRecord,
    ) -> Result<(), ServiceError> {
        let wait_id = call.wait_id;
        let span = tracing::info_span!("api_call", %wait_id, correlation_id = %call.correlation_id, execution_id = %call.execution_id, attempt = call.attempts);
        let outcome = tracing::Instrument::instrument(caller.call(&call.request), span).await;
        let now = self.clock.now();
        let failure = match outcome {
            Ok(reply) if (200..300).contains(&reply.status) => {
                tracing::info!(%wait_id, correlation_id = %call.correlation_id, execution_id = %call.execution_id, status = reply.status, url = %call.request.url, "api call succeeded");
                if call.request.response_mode == ResponseMode::Sync {
                    let headers = reply.headers.clone();
                    let size = Delivery::api_size(&headers, &reply.body);
                    let delivery = Delivery {
                        size,
                        tenant_id: call.tenant.to_string(),
                        correlation_id: call.correlation_id.to_string(),
                        execution_id: Some(call.execution_id.to_string()),
                        channel: Channel::Source(SourceName::api()),
                        payload: Delivery::api_payload(
                            u32::from(reply.status),
                            headers,
                            &reply.body,
                        ),
                        event_key: format!("api-call:{wait_id}"),
                    };
                    match self.deliver(delivery).await {
                        Ok(_) | Err(ServiceError::ExecutionMismatch(_)) => {}
                        Err(e) => return Err(e),
                    }
                }
                self.store.finish_api_call(wait_id, now).await?;
                return Ok(());
            }
            Ok(reply) if reply.status == 429 || reply.status >= 500 => {
                let reason = format!(
                    "{} answered {}{}",
                    call.request.url,
                    reply.status,
                    snippet(&reply.body)
                );
                Err((reason, retry_after(&reply)))
            }
            Ok(reply) => Ok(format!(
                "{} answered {}{}",
                call.request.url,
                reply.status,
                snippet(&reply.body)
            )),
            Err(CallFailure::Transient(reason)) => Err((reason, None)),
            Err(CallFailure::Permanent(reason)) => Ok(reason),
        };
        // Ok(reason): permanent. Err((reason, retry_after)): transient.
        let permanent = match failure {
            Err((reason, retry_after)) if call.attempts < self.config.api.max_attempts => {
                let exp = self
                    .config
                    .api
                    .backoff
                    .saturating_mul(1 << call.attempts.saturating_sub(1).min(16));
                let delay = exp
                    .min(self.config.api.max_backoff)
                    .max(retry_after.unwrap_or_default());
                tracing::warn!(%wait_id, correlation_id = %call.correlation_id, execution_id = %call.execution_id, %reason, retry_in_ms = delay.as_millis() as u64, "api call failed; retrying");
                self.store
                    .retry_api_call(wait_id, now.plus(delay), &reason, now)
                    .await?;
                return Ok(());
            }
            Err((reason, _)) => {
                format!("api call failed after {} attempts: {reason}", call.attempts)
            }
            Ok(reason) => format!("api call failed: {reason}"),
        };
        tracing::warn!(%wait_id, correlation_id = %call.correlation_id, execution_id = %call.execution_id, reason = %permanent, "api call failed for good; failing the wait");
        self.store.fail_api_call(wait_id, &permanent, now).await?;
        self.fail(wait_id, permanent).await
    }

    /// Fails an open wait with a reason (its resume carries outcome `failed`).
    async fn fail(&self, wait_id: WaitId, reason: String) -> Result<(), ServiceError> {
        let lookup = WaitLookup::Id {
            wait_id: wait_id.to_string(),
            tenant_id: String::new(),
        };
        match self
            .close(lookup, |state, now| state.fail(reason.clone(), now))
            .await
        {
            Ok(_) | Err(ServiceError::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Closes an open wait with `decide` (cancel or fail) by compare-and-set, writing its resume
    /// in the same transaction. Returns the wait and whether this call closed it (a wait
    /// already decided is returned unchanged).
    async fn close(
        &self,
        lookup: WaitLookup,
        decide: impl Fn(&mut WaitState, Timestamp) -> Result<(), rendezvous_domain::Resolution>,
    ) -> Result<(StoredWait, bool), ServiceError> {
        for attempt in 0..=self.config.max_conflict_retries {
            let stored = self.get(lookup.clone()).await?;
            let now = self.clock.now();
            let mut wait = stored.clone();
            if decide(&mut wait.state, now).is_err() {
                return Ok((stored, false));
            }
            wait.version += 1;
            wait.updated_at = now;
            let mut tx = self.store.begin().await?;
            if !tx.update_wait(&wait, stored.version).await? {
                drop(tx);
                backoff(attempt).await;
                continue;
            }
            if let Some(resume) = ResumeRecord::of(&wait.state, uuid::Uuid::new_v4()) {
                tx.insert_resume(&resume).await?;
            }
            tx.commit().await?;
            let k = &wait.state.key;
            tracing::info!(wait_id = %k.id, correlation_id = %k.correlation_id, execution_id = %k.execution_id, status = %wait.state.status(), "wait closed");
            return Ok((wait, true));
        }
        Err(ServiceError::Contended(format!("{lookup:?}")))
    }

    /// Notified when a registration introduced a Kafka topic (or id fields) this instance had
    /// not seen; the ingress then refreshes its subscription at once.
    pub fn topics_changed(&self) -> &Notify {
        &self.topics_changed
    }

    /// Every topic registered waits listen on, with its id fields.
    pub async fn kafka_topics(&self) -> Result<Vec<TopicFields>, ServiceError> {
        Ok(self.store.kafka_topics().await?)
    }

    /// Sets an event aside with a reason (poison, missing ids, mismatch).
    pub async fn quarantine(&self, event: Quarantined) -> Result<(), ServiceError> {
        tracing::warn!(origin = %event.origin, event_key = ?event.event_key, correlation_id = ?event.correlation_id, reason = %event.reason, "event quarantined");
        Ok(self.store.quarantine(&event).await?)
    }

    /// The most recently quarantined events, newest first.
    pub async fn quarantined(&self, limit: u32) -> Result<Vec<Quarantined>, ServiceError> {
        Ok(self.store.quarantined(limit).await?)
    }

    /// The resume signal (for resume streams).
    pub fn signal(&self) -> &G {
        &self.signal
    }

    /// The current time of the service's clock.
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// Registers a wait, or returns the one registered earlier under the same idempotency
    /// identity. Early events buffered for its correlation id are applied in the same
    /// transaction; a wait decided at once (no enabled source, or the buffered events met the
    /// condition) gets its resume in that transaction too.
    pub async fn register(&self, request: RegisterWait) -> Result<Registered, ServiceError> {
        let tenant = tenant(&request.tenant_id)?;
        let execution_id = required("execution_id", &request.execution_id, ExecutionId::parse)?;
        let node_id = required("node_id", &request.node_id, NodeId::parse)?;
        if request.node_config_json.len() > self.config.max_config_bytes {
            return Err(ServiceError::TooLarge {
                what: "node_config_json".into(),
                size: request.node_config_json.len(),
                limit: self.config.max_config_bytes,
            });
        }
        if request.node_config_json.is_empty() {
            return Err(ServiceError::invalid("node_config_json", "required"));
        }
        if request.idempotency_key.len() > rendezvous_domain::ids::MAX_ID_LEN {
            return Err(ServiceError::invalid(
                "idempotency_key",
                "longer than 256 bytes",
            ));
        }
        let spec = WaitSpec::from_json_str(&request.node_config_json)
            .map_err(ServiceError::InvalidConfig)?;
        let chosen = if request.correlation_id.is_empty() {
            None
        } else {
            Some(
                CorrelationId::parse(request.correlation_id.as_str())
                    .map_err(|e| ServiceError::invalid("correlation_id", e.reason))?,
            )
        };
        let workflow_id = (!request.workflow_id.is_empty()).then(|| request.workflow_id.clone());
        for attempt in 0..=self.config.max_conflict_retries {
            let mut calls_added = false;
            let now = self.clock.now();
            let correlation_id = chosen.clone().unwrap_or_else(|| {
                CorrelationId::parse(uuid::Uuid::new_v4().to_string())
                    .expect("a UUID is a valid correlation id")
            });
            let key = WaitKey {
                id: WaitId::from_uuid(uuid::Uuid::new_v4()),
                tenant: tenant.clone(),
                correlation_id: correlation_id.clone(),
                execution_id: execution_id.clone(),
                node_id: node_id.clone(),
            };
            if attempt == 0
                && let Some(registered) = self
                    .register_fresh(key.clone(), &spec, &request, &workflow_id, now)
                    .await?
            {
                return Ok(registered);
            }
            let mut tx = self.store.begin().await?;
            tx.lock_correlation(&tenant, &correlation_id).await?;
            if let Some(existing) = tx
                .find_by_idempotency(&tenant, &execution_id, &node_id, &request.idempotency_key)
                .await?
            {
                if existing.state.spec != spec {
                    return Err(ServiceError::AlreadyExists(format!(
                        "execution {execution_id} node {node_id} already has wait {} under idempotency key {:?} with a different node config",
                        existing.state.key.id, request.idempotency_key
                    )));
                }
                if let Some(chosen) = &chosen
                    && chosen != &existing.state.key.correlation_id
                {
                    return Err(ServiceError::AlreadyExists(format!(
                        "execution {execution_id} node {node_id} already has wait {} under idempotency key {:?} with correlation id {}, not {chosen}",
                        existing.state.key.id,
                        request.idempotency_key,
                        existing.state.key.correlation_id
                    )));
                }
                return Ok(Registered {
                    wait: existing,
                    created: false,
                });
            }
            let mut state = WaitState::register(key, spec.clone(), now);
            let buffered = tx.pending_buffered(&tenant, &correlation_id, now).await?;
            let mut accepted = Vec::new();
            for b in &buffered {
                let step = state.apply(b.event.clone(), now);
                if let Verdict::Accepted { source } | Verdict::Completed { source } = step.verdict {
                    accepted.push((b.event.key.clone(), source));
                }
            }
            let wait = new_wait(state, &request, &workflow_id, now);
            match tx.insert_wait(&wait).await {
                Ok(()) => {}
                Err(StoreError::Conflict(_)) if chosen.is_some() && attempt == 0 => {
                    drop(tx);
                    // Either a concurrent retry with the same idempotency identity won (the
                    // next attempt returns its wait), or the correlation id is taken.
                    continue;
                }
                Err(StoreError::Conflict(detail)) if chosen.is_some() => {
                    return Err(ServiceError::AlreadyExists(format!(
                        "correlation id {correlation_id} is already used in tenant {tenant} ({detail})"
                    )));
                }
                Err(StoreError::Conflict(_)) => {
                    drop(tx);
                    backoff(attempt).await;
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
            for (event_key, source) in &accepted {
                tx.record_processed(wait.state.key.id, event_key, source, now)
                    .await?;
            }
            let new_topics = self.new_topics(&spec);
            for topic in &new_topics {
                tx.remember_topic(topic, now).await?;
            }
            // The API call goes out only after this transaction commits, and only if the wait
            // still needs it.
            if let Some(call) = self.outbound_call(&wait.state, &request)? {
                tx.insert_api_call(&call, now).await?;
                calls_added = true;
            }
            let ids: Vec<i64> = buffered.iter().map(|b| b.id).collect();
            tx.mark_buffered_applied(&ids, wait.state.key.id, now)
                .await?;
            if let Some(resume) = ResumeRecord::of(&wait.state, uuid::Uuid::new_v4()) {
                tx.insert_resume(&resume).await?;
            }
            tx.commit().await?;
            if calls_added {
                self.calls_pending.notify_one();
            }
            if !new_topics.is_empty() {
                self.known_topics
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .extend(new_topics);
                self.topics_changed.notify_waiters();
            }
            log_registered(&wait.state, buffered.len());
            return Ok(Registered {
                wait,
                created: true,
            });
        }
        Err(ServiceError::Contended(format!(
            "registration of execution {execution_id} node {node_id}"
        )))
    }

    /// The common registration in one store write: nothing came before it (no wait under its
    /// idempotency identity or correlation id, no early events, no topic this instance has not
    /// recorded yet). `None` when something did, or when the call cannot be rendered or is not
    /// allowed: the full path then decides what the caller gets.
    async fn register_fresh(
        &self,
        key: WaitKey,
        spec: &WaitSpec,
        request: &RegisterWait,
        workflow_id: &Option<String>,
        now: Timestamp,
    ) -> Result<Option<Registered>, ServiceError> {
        if !self.new_topics(spec).is_empty() {
            return Ok(None);
        }
        let state = WaitState::register(key, spec.clone(), now);
        let Ok(call) = self.outbound_call(&state, request) else {
            return Ok(None);
        };
        let wait = new_wait(state, request, workflow_id, now);
        let resume = ResumeRecord::of(&wait.state, uuid::Uuid::new_v4());
        let fresh = FreshWait {
            wait: &wait,
            call: call.as_ref(),
            resume: resume.as_ref(),
        };
        if !self.store.insert_fresh_wait(fresh).await? {
            return Ok(None);
        }
        if call.is_some() {
            self.calls_pending.notify_one();
        }
        log_registered(&wait.state, 0);
        Ok(Some(Registered {
            wait,
            created: true,
        }))
    }

    /// The topics of `spec` this instance has not recorded yet.
    fn new_topics(&self, spec: &WaitSpec) -> Vec<TopicFields> {
        let known = self
            .known_topics
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        topic_fields(spec)
            .into_iter()
            .filter(|t| !known.contains(t))
            .collect()
    }

    /// The outbound API call a newly registered wait puts in the outbox: none when its spec
    /// has none or the wait no longer needs it (decided, or the `api` source already
    /// satisfied); the rendered request, carrying the caller's `traceparent`, otherwise. An
    /// error when it cannot be rendered or its destination is not allowed.
    fn outbound_call(
        &self,
        state: &WaitState,
        request: &RegisterWait,
    ) -> Result<Option<ApiCallRecord>, ServiceError> {
        let Some(call) = state.spec.api_call() else {
            return Ok(None);
        };
        if !state.is_open() || state.satisfied().contains(&SourceName::api()) {
            return Ok(None);
        }
        let k = &state.key;
        let mut rendered = call
            .render(
                &request.input_variables,
                k.id,
                &k.correlation_id,
                &k.execution_id,
            )
            .map_err(ServiceError::InvalidConfig)?;
        self.check_destination(&rendered.url)?;
        if let Some(traceparent) = &request.traceparent {
            rendered
                .headers
                .insert("traceparent".into(), traceparent.clone());
        }
        Ok(Some(ApiCallRecord {
            wait_id: k.id,
            tenant: k.tenant.clone(),
            correlation_id: k.correlation_id.clone(),
            execution_id: k.execution_id.clone(),
            request: rendered,
            attempts: 0,
        }))
    }

    /// Delivers one event for a correlation id: applied to the wait if it exists, otherwise
    /// buffered until one registers. An execution-id mismatch is recorded on the wait and
    /// returned as [`ServiceError::ExecutionMismatch`].
    pub async fn deliver(&self, delivery: Delivery) -> Result<Delivered, ServiceError> {
        let tenant = tenant(&delivery.tenant_id)?;
        let correlation_id = required(
            "correlation_id",
            &delivery.correlation_id,
            CorrelationId::parse,
        )?;
        let key = required("event_key", &delivery.event_key, EventKey::parse)?;
        let execution_id = match delivery.execution_id.as_deref() {
            None | Some("") => None,
            Some(raw) => Some(
                ExecutionId::parse(raw)
                    .map_err(|e| ServiceError::invalid("execution_id", e.reason))?,
            ),
        };
        let size = delivery.size;
        if size > self.config.max_payload_bytes {
            return Err(ServiceError::TooLarge {
                what: "event payload".into(),
                size,
                limit: self.config.max_payload_bytes,
            });
        }
        let event = IncomingEvent {
            key,
            channel: delivery.channel,
            execution_id,
            payload: delivery.payload,
            received_at: self.clock.now(),
        };
        for attempt in 0..=self.config.max_conflict_retries {
            let Some(stored) = self.store.find_wait(&tenant, &correlation_id).await? else {
                match self.buffer(&tenant, &correlation_id, &event).await? {
                    Some(result) => return Ok(result),
                    None => continue, // a wait registered meanwhile: apply to it
                }
            };
            let now = self.clock.now();
            let mut wait = stored.clone();
            let step = wait.state.apply(event.clone(), now);
            if step.changed {
                wait.version += 1;
                wait.updated_at = now;
                let resume = step
                    .decided
                    .and_then(|_| ResumeRecord::of(&wait.state, uuid::Uuid::new_v4()));
                let processed = match &step.verdict {
                    Verdict::Accepted { source } | Verdict::Completed { source } => {
                        Some((&event.key, source))
                    }
                    _ => None,
                };
                let change = WaitChange {
                    wait: &wait,
                    expected_version: stored.version,
                    processed,
                    resume: resume.as_ref(),
                };
                match self.store.apply_change(change).await? {
                    ChangeOutcome::Applied => {}
                    ChangeOutcome::VersionMoved => {
                        backoff(attempt).await;
                        continue;
                    }
                    // The inbox already has it although the state did not: a replay.
                    ChangeOutcome::AlreadyProcessed => {
                        return Ok(Delivered::Applied {
                            wait: Box::new(stored),
                            verdict: Verdict::Duplicate,
                        });
                    }
                }
            }
            self.log_verdict(&wait.state, &event, &step.verdict, step.decided);
            if let Verdict::Ignored(reason @ IgnoreReason::ExecutionMismatch { .. }) = &step.verdict
            {
                return Err(ServiceError::ExecutionMismatch(format!(
                    "wait {}: {reason}; the event was recorded and not applied",
                    wait.state.key.id
                )));
            }
            return Ok(Delivered::Applied {
                wait: Box::new(wait),
                verdict: step.verdict,
            });
        }
        Err(ServiceError::Contended(format!(
            "correlation id {correlation_id}"
        )))
    }

    /// Buffers an early event under the correlation lock. `None` when a wait appeared.
    async fn buffer(
        &self,
        tenant: &TenantId,
        correlation_id: &CorrelationId,
        event: &IncomingEvent,
    ) -> Result<Option<Delivered>, ServiceError> {
        let mut tx = self.store.begin().await?;
        tx.lock_correlation(tenant, correlation_id).await?;
        if tx.find_wait(tenant, correlation_id).await?.is_some() {
            return Ok(None);
        }
        let expires_at = event.received_at.plus(self.config.buffer_ttl);
        let inserted = tx
            .buffer_event(tenant, correlation_id, event, expires_at)
            .await?;
        tx.commit().await?;
        tracing::info!(correlation_id = %correlation_id, event_key = %event.key, duplicate = !inserted, "event buffered before its wait");
        Ok(Some(if inserted {
            Delivered::Buffered
        } else {
            Delivered::BufferedDuplicate
        }))
    }

    fn log_verdict(
        &self,
        state: &WaitState,
        event: &IncomingEvent,
        verdict: &Verdict,
        decided: Option<Outcome>,
    ) {
        let k = &state.key;
        match verdict {
            Verdict::Ignored(reason) => tracing::info!(
                wait_id = %k.id, correlation_id = %k.correlation_id, execution_id = %k.execution_id,
                event_key = %event.key, reason = %reason, "event ignored"
            ),
            other => tracing::info!(
                wait_id = %k.id, correlation_id = %k.correlation_id, execution_id = %k.execution_id,
                event_key = %event.key, verdict = ?other, decided = ?decided.map(Outcome::as_str), "event applied"
            ),
        }
    }

    /// Times out due waits (at most `limit`), each once across every instance. Returns how
    /// many were decided.
    pub async fn expire_due(&self, limit: u32) -> Result<usize, ServiceError> {
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        let due = tx.claim_due_waits(now, limit).await?;
        let mut decided = 0;
        for stored in due {
            let mut wait = stored.clone();
            let Some(outcome) = wait.state.expire(now) else {
                continue;
            };
            wait.version += 1;
            wait.updated_at = now;
            // The rows are locked by this transaction, so the compare-and-set holds.
            if tx.update_wait(&wait, stored.version).await? {
                if let Some(resume) = ResumeRecord::of(&wait.state, uuid::Uuid::new_v4()) {
                    tx.insert_resume(&resume).await?;
                }
                decided += 1;
                let k = &wait.state.key;
                tracing::info!(wait_id = %k.id, correlation_id = %k.correlation_id, execution_id = %k.execution_id, outcome = outcome.as_str(), "wait timed out");
            }
        }
        tx.commit().await?;
        Ok(decided)
    }

    /// Marks buffered events past their TTL as expired. Returns how many.
    pub async fn expire_buffered(&self) -> Result<u64, ServiceError> {
        let expired = self.store.expire_buffered(self.clock.now()).await?;
        if expired > 0 {
            tracing::info!(expired, "buffered events expired unclaimed");
        }
        Ok(expired)
    }

    /// Cancels an open wait; a decided wait is returned unchanged with `false`.
    pub async fn cancel(
        &self,
        lookup: WaitLookup,
        reason: String,
    ) -> Result<(StoredWait, bool), ServiceError> {
        let reason = (!reason.is_empty()).then_some(reason);
        self.close(lookup, |state, now| state.cancel(reason.clone(), now))
            .await
    }

    /// One wait.
    pub async fn get(&self, lookup: WaitLookup) -> Result<StoredWait, ServiceError> {
        match lookup {
            WaitLookup::Id { wait_id, tenant_id } => {
                let id = WaitId::parse(&wait_id)
                    .map_err(|e| ServiceError::invalid("wait_id", e.reason))?;
                let only = (!tenant_id.is_empty())
                    .then(|| tenant(&tenant_id))
                    .transpose()?;
                self.store
                    .get_wait(id)
                    .await?
                    .filter(|w| only.as_ref().is_none_or(|t| t == &w.state.key.tenant))
                    .ok_or_else(|| ServiceError::NotFound(format!("no wait with id {id}")))
            }
            WaitLookup::Correlation {
                tenant_id,
                correlation_id,
            } => {
                let tenant = tenant(&tenant_id)?;
                let correlation_id =
                    required("correlation_id", &correlation_id, CorrelationId::parse)?;
                self.store
                    .find_wait(&tenant, &correlation_id)
                    .await?
                    .ok_or_else(|| {
                        ServiceError::NotFound(format!(
                            "no wait with correlation id {correlation_id} in tenant {tenant}"
                        ))
                    })
            }
        }
    }

    /// Waits matching a query, newest first.
    pub async fn list(&self, query: WaitQuery) -> Result<Page<StoredWait>, ServiceError> {
        Ok(self.store.list_waits(&query).await?)
    }

    /// Leases resumes to a stream (`owner`) until acked or the lease runs out.
    pub async fn claim_resumes(
        &self,
        owner: &str,
        tenant: Option<&TenantId>,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<ResumeRecord>, ServiceError> {
        Ok(self
            .store
            .claim_resumes(owner, tenant, self.clock.now(), lease, limit)
            .await?)
    }

    /// Acknowledges resumes in one write. Returns how many were still unacknowledged.
    pub async fn ack_resumes(&self, resume_ids: &[String]) -> Result<u64, ServiceError> {
        let ids = resume_ids
            .iter()
            .map(|raw| {
                uuid::Uuid::parse_str(raw)
                    .map_err(|e| ServiceError::invalid("ack.resume_id", format!("{raw:?}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(self.store.ack_resumes(&ids, self.clock.now()).await?)
    }

    /// Frees the leases a finished stream held, so its unacknowledged resumes go out again.
    pub async fn release_resumes(&self, owner: &str) -> Result<u64, ServiceError> {
        Ok(self.store.release_resumes(owner).await?)
    }
}

/// Whether an address is loopback, private, link-local or otherwise not a public destination.
pub fn is_private(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_documentation()
                || (a == 100 && (64..128).contains(&b)) // carrier-grade NAT
                || a == 0
        }
        std::net::IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private(std::net::IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
        }
    }
}

/// The log line of a registration.
fn log_registered(state: &WaitState, buffered: usize) {
    let k = &state.key;
    tracing::info!(
        wait_id = %k.id,
        correlation_id = %k.correlation_id,
        execution_id = %k.execution_id,
        node_id = %k.node_id,
        status = %state.status(),
        buffered,
        "wait registered"
    );
}

/// A wait as registration stores it: version 1, last changed when registered.
fn new_wait(
    state: WaitState,
    request: &RegisterWait,
    workflow_id: &Option<String>,
    now: Timestamp,
) -> StoredWait {
    StoredWait {
        state,
        version: 1,
        idempotency_key: request.idempotency_key.clone(),
        workflow_id: workflow_id.clone(),
        updated_at: now,
    }
}

fn snippet(body: &[u8]) -> String {
    if body.is_empty() {
        return String::new();
    }
    let text = String::from_utf8_lossy(body);
    let cut: String = text.chars().take(200).collect();
    format!(": {cut}")
}

/// The Kafka topics of a spec with their id fields.
fn topic_fields(spec: &WaitSpec) -> Vec<TopicFields> {
    spec.sources
        .iter()
        .filter_map(|s| match &s.kind {
            SourceKind::Kafka(k) => Some(TopicFields {
                topic: k.topic.clone(),
                correlation_field: k.correlation_id_field.clone(),
                execution_field: k.execution_id_field.clone(),
            }),
            _ => None,
        })
        .collect()
}

/// Parses a source name given by a caller.
pub fn source_name(field: &str, raw: &str) -> Result<SourceName, ServiceError> {
    required(field, raw, SourceName::parse)
}
