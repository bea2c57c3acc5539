//! Registering a wait: the common one-write path when nothing came before it, else the full
//! transaction (idempotency match, correlation lock, buffered early events, new topics, the
//! outbound call, an immediate decision). A wait naming a Kafka topic its tenant may not use
//! is refused before anything is stored (`topics.rs`).

use rendezvous_domain::request::RenderedCall;
use rendezvous_domain::{
    ConfigErrors, CorrelationId, ExecutionId, SourceKind, SourceName, TenantId, Timestamp, WaitId,
    WaitKey, WaitSpec, WaitState,
};
use rendezvous_ports::{
    ApiCallRecord, Clock, FreshWait, ResumeSignal, Store, StoreError, StoreTx, StoredWait,
    TopicFields,
};

use crate::service::{Attempt, counted, new_resume};
use crate::{RegisterWait, Registered, ServiceError, TopicPolicy, WaitService};

/// Where a rendered API call's URL is reported from, in errors.
const CALL_URL_FIELD: &str = "node_config.data.apiCall.url";

/// How many API calls are rendered at once (on the blocking pool): a flood of heavy templates
/// waits for a permit instead of taking every thread.
const RENDER_PERMITS: usize = 8;
static RENDERING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(RENDER_PERMITS);

/// A call's templates rendered before the wait exists (`None`: the spec has no call). An
/// error is only reported if the wait turns out to need the call.
type Prepared = Option<Result<RenderedCall, ConfigErrors>>;

impl<S: Store, G: ResumeSignal, C: Clock> WaitService<S, G, C> {
    /// Registers a wait, or returns the one registered earlier under the same idempotency
    /// identity. Early events buffered for its correlation id are applied in the same
    /// transaction; a wait decided at once (no enabled source, or the buffered events met the
    /// condition) gets its resume in that transaction too.
    pub async fn register(&self, request: RegisterWait) -> Result<Registered, ServiceError> {
        let result = self.register_checked(request).await;
        crate::metrics::registered(result.as_ref().map(|r| r.created));
        result
    }

    async fn register_checked(&self, request: RegisterWait) -> Result<Registered, ServiceError> {
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
        let spec = WaitSpec::from_json_str(&request.node_config_json)
            .map_err(ServiceError::InvalidConfig)?;
        check_topics(&self.config.topics, &request.tenant, &spec)?;
        // Chosen once, before rendering: the call's templates may name it (through
        // `{{ callback_url }}`), and every attempt registers under the same id.
        let correlation_id = request.correlation_id.clone().unwrap_or_else(|| {
            CorrelationId::parse(uuid::Uuid::new_v4().to_string())
                .expect("a UUID is a valid correlation id")
        });
        // Made (and the variables copied to hold it) only for a call whose templates use it.
        let callback_url = match (self.config.callback_url.as_deref(), spec.api_call()) {
            (Some(base), Some(call)) if uses_variable(call, CALLBACK_URL_VARIABLE) => {
                Some(callback_url(
                    base,
                    &request.tenant,
                    &correlation_id,
                    &request.execution_id,
                ))
            }
            _ => None,
        };
        let prepared = prepare_call(&spec, &request, callback_url).await?;
        let what = || {
            format!(
                "registration of execution {} node {}",
                request.execution_id, request.node_id
            )
        };
        self.retry_on_conflict(what, |attempt| {
            self.register_once(&request, &correlation_id, &spec, &prepared, attempt)
        })
        .await
    }

    async fn register_once(
        &self,
        request: &RegisterWait,
        correlation_id: &CorrelationId,
        spec: &WaitSpec,
        prepared: &Prepared,
        attempt: u32,
    ) -> Result<Attempt<Registered>, ServiceError> {
        let now = self.clock.now();
        let tenant = &request.tenant;
        let chosen = request.correlation_id.as_ref();
        let correlation_id = correlation_id.clone();
        let key = WaitKey {
            id: WaitId::from_uuid(uuid::Uuid::new_v4()),
            tenant: tenant.clone(),
            correlation_id: correlation_id.clone(),
            execution_id: request.execution_id.clone(),
            node_id: request.node_id.clone(),
        };
        if attempt == 0
            && let Some(registered) = self
                .register_fresh(key.clone(), spec, request, prepared, now)
                .await?
        {
            return Ok(Attempt::Done(registered));
        }
        let mut tx = self.store.begin().await?;
        tx.lock_correlation(tenant, &correlation_id).await?;
        if let Some(existing) = tx
            .find_by_idempotency(
                tenant,
                &request.execution_id,
                &request.node_id,
                request.idempotency_key.as_str(),
            )
            .await?
        {
            return check_same_registration(existing, spec, request).map(Attempt::Done);
        }
        let mut state = WaitState::register(key, spec.clone(), now);
        state.trace = request.trace.clone();
        let buffered = tx.pending_buffered(tenant, &correlation_id, now).await?;
        let mut accepted = Vec::new();
        for b in &buffered {
            let step = state.apply(b.event.clone(), now);
            if let Some((event_key, source)) = counted(&b.event.key, &step.verdict) {
                accepted.push((event_key.clone(), source.clone()));
            }
        }
        let wait = new_wait(state, request, now);
        match tx.insert_wait(&wait).await {
            Ok(()) => {}
            // Either a concurrent retry with the same idempotency identity won (the next
            // attempt returns its wait), or the correlation id is taken.
            Err(StoreError::Conflict(_)) if chosen.is_some() && attempt == 0 => {
                return Ok(Attempt::Again);
            }
            Err(StoreError::Conflict(detail)) if chosen.is_some() => {
                return Err(ServiceError::AlreadyExists(format!(
                    "correlation id {correlation_id} is already used in tenant {tenant} ({detail})"
                )));
            }
            Err(StoreError::Conflict(_)) => return Ok(Attempt::Conflict),
            Err(e) => return Err(e.into()),
        }
        for (event_key, source) in &accepted {
            tx.record_processed(wait.state.key.id, event_key, source, now)
                .await?;
        }
        let new_topics = self.new_topics(spec);
        for topic in &new_topics {
            tx.remember_topic(topic, now).await?;
        }
        // The API call goes out only after this transaction commits, and only if the wait
        // still needs it.
        let call = self.outbound_call(&wait.state, request, prepared)?;
        if let Some(call) = &call {
            tx.insert_api_call(call, now).await?;
        }
        let ids: Vec<i64> = buffered.iter().map(|b| b.id).collect();
        tx.mark_buffered_applied(&ids, wait.state.key.id, now)
            .await?;
        let resume = new_resume(&wait.state);
        if let Some(resume) = &resume {
            tx.insert_resume(resume).await?;
        }
        tx.commit().await?;
        crate::metrics::decided(resume.as_ref());
        if call.is_some() {
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
        Ok(Attempt::Done(Registered {
            wait,
            created: true,
        }))
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
        prepared: &Prepared,
        now: Timestamp,
    ) -> Result<Option<Registered>, ServiceError> {
        if !self.new_topics(spec).is_empty() {
            return Ok(None);
        }
        let mut state = WaitState::register(key, spec.clone(), now);
        state.trace = request.trace.clone();
        let Ok(call) = self.outbound_call(&state, request, prepared) else {
            return Ok(None);
        };
        let wait = new_wait(state, request, now);
        let resume = new_resume(&wait.state);
        let fresh = FreshWait {
            wait: &wait,
            call: call.as_ref(),
            resume: resume.as_ref(),
        };
        if !self.store.insert_fresh_wait(fresh).await? {
            return Ok(None);
        }
        crate::metrics::decided(resume.as_ref());
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
    /// satisfied); the rendered request (`prepared`, with the wait's ids), carrying the
    /// caller's `traceparent`, otherwise. An error when it could not be rendered or its
    /// destination is not allowed.
    fn outbound_call(
        &self,
        state: &WaitState,
        request: &RegisterWait,
        prepared: &Prepared,
    ) -> Result<Option<ApiCallRecord>, ServiceError> {
        if state.spec.api_call().is_none() {
            return Ok(None);
        }
        if !state.is_open() || state.satisfied().contains(&SourceName::api()) {
            return Ok(None);
        }
        let k = &state.key;
        let rendered = match prepared {
            Some(Ok(rendered)) => rendered,
            Some(Err(errors)) => return Err(ServiceError::InvalidConfig(errors.clone())),
            None => {
                return Err(ServiceError::Internal(
                    "the api call was not rendered before registration".into(),
                ));
            }
        };
        let mut rendered = rendered.for_wait(k.id, &k.correlation_id, &k.execution_id);
        self.config
            .api
            .destinations
            .check(&rendered.url)
            .map_err(|e| ServiceError::invalid(CALL_URL_FIELD, e))?;
        self.config.api.check_secrets(&rendered)?;
        // The call is a child of the registration: the caller's context is stored with it and
        // the caller adapter sends a child context of its own (or this one, when no tracer
        // is installed).
        if let Some(trace) = &request.trace {
            rendered
                .headers
                .insert("traceparent".into(), trace.traceparent.clone());
            if !trace.tracestate.is_empty() {
                rendered
                    .headers
                    .insert("tracestate".into(), trace.tracestate.clone());
            }
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
}

/// Renders the spec's call templates from the request's variables. Bounded by the domain's
/// template limits (fuel, output size, no loops); up to [`INLINE_TEMPLATE_BYTES`] of template
/// text is rendered in place, more on the blocking pool (at most [`RENDER_PERMITS`] at once),
/// off the request threads.
async fn prepare_call(
    spec: &WaitSpec,
    request: &RegisterWait,
    callback_url: Option<String>,
) -> Result<Prepared, ServiceError> {
    let Some(call) = spec.api_call() else {
        return Ok(None);
    };
    // The service's own variable wins over an input variable of the same name.
    let with_callback;
    let vars = match callback_url {
        None => &request.input_variables,
        Some(url) => {
            let mut vars = request.input_variables.clone();
            vars.insert(CALLBACK_URL_VARIABLE.to_owned(), url);
            with_callback = vars;
            &with_callback
        }
    };
    if template_bytes(call) <= INLINE_TEMPLATE_BYTES {
        return Ok(Some(call.render_templates(vars)));
    }
    let _permit = RENDERING
        .acquire()
        .await
        .map_err(|e| ServiceError::Internal(format!("the render pool is closed: {e}")))?;
    let (call, vars) = (call.clone(), vars.clone());
    let rendered = tokio::task::spawn_blocking(move || call.render_templates(&vars))
        .await
        .map_err(|e| ServiceError::Internal(format!("rendering the api call failed: {e}")))?;
    Ok(Some(rendered))
}

/// The template variable holding the wait's API-response callback URL.
pub const CALLBACK_URL_VARIABLE: &str = "callback_url";

/// `base?correlation_id=…&execution_id=…&tenant_id=…`, each value form-encoded.
fn callback_url(
    base: &str,
    tenant: &TenantId,
    correlation_id: &CorrelationId,
    execution_id: &ExecutionId,
) -> String {
    let query = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("correlation_id", correlation_id.as_str())
        .append_pair("execution_id", execution_id.as_str())
        .append_pair("tenant_id", tenant.as_str())
        .finish();
    format!("{base}?{query}")
}

/// Templates up to this much source text (all of a call's together) are rendered in place:
/// with no loops and a fuel budget their cost is bounded by their size, and a hop to the
/// blocking pool cost more than rendering them (measured: a third more CPU per join).
const INLINE_TEMPLATE_BYTES: usize = 4096;

/// The source text of a call's templates (its strings holding `{{` or `{%`), in bytes: zero
/// for a call without any.
fn template_bytes(call: &rendezvous_domain::ApiCall) -> usize {
    let mut bytes = 0;
    each_template(call, &mut |template| bytes += template.len());
    bytes
}

/// Whether any of a call's templates names `variable` (a plain text search: at worst the
/// variable is supplied and not used).
fn uses_variable(call: &rendezvous_domain::ApiCall, variable: &str) -> bool {
    let mut used = false;
    each_template(call, &mut |template| used |= template.contains(variable));
    used
}

/// Calls `visit` with each of a call's templates: its URL, header values and body strings
/// that hold `{{` or `{%`.
fn each_template(call: &rendezvous_domain::ApiCall, visit: &mut dyn FnMut(&str)) {
    fn text(s: &str, visit: &mut dyn FnMut(&str)) {
        if s.contains("{{") || s.contains("{%") {
            visit(s);
        }
    }
    fn json(value: &serde_json::Value, visit: &mut dyn FnMut(&str)) {
        match value {
            serde_json::Value::String(s) => text(s, visit),
            serde_json::Value::Array(items) => items.iter().for_each(|v| json(v, visit)),
            serde_json::Value::Object(map) => map.values().for_each(|v| json(v, visit)),
            _ => {}
        }
    }
    text(&call.url, visit);
    call.headers.values().for_each(|v| text(v, visit));
    if let Some(body) = &call.body {
        json(body, visit);
    }
}

/// A registration that found a wait under its idempotency identity: the same wait when the
/// request is the same, `AlreadyExists` naming the difference otherwise.
fn check_same_registration(
    existing: StoredWait,
    spec: &WaitSpec,
    request: &RegisterWait,
) -> Result<Registered, ServiceError> {
    let (execution_id, node_id) = (&request.execution_id, &request.node_id);
    if existing.state.spec != *spec {
        return Err(ServiceError::AlreadyExists(format!(
            "execution {execution_id} node {node_id} already has wait {} under idempotency key {:?} with a different node config",
            existing.state.key.id,
            request.idempotency_key.as_str()
        )));
    }
    if let Some(chosen) = &request.correlation_id
        && chosen != &existing.state.key.correlation_id
    {
        return Err(ServiceError::AlreadyExists(format!(
            "execution {execution_id} node {node_id} already has wait {} under idempotency key {:?} with correlation id {}, not {chosen}",
            existing.state.key.id,
            request.idempotency_key.as_str(),
            existing.state.key.correlation_id
        )));
    }
    Ok(Registered {
        wait: existing,
        created: false,
    })
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
fn new_wait(state: WaitState, request: &RegisterWait, now: Timestamp) -> StoredWait {
    StoredWait {
        state,
        version: 1,
        idempotency_key: request.idempotency_key.as_str().to_owned(),
        workflow_id: request.workflow_id.clone(),
        updated_at: now,
    }
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

/// Refuses a spec naming a Kafka topic its wait's tenant may not use (see `topics.rs`): the
/// error names the source's `topic` field and the topic.
fn check_topics(
    policy: &TopicPolicy,
    tenant: &TenantId,
    spec: &WaitSpec,
) -> Result<(), ServiceError> {
    for source in &spec.sources {
        if let SourceKind::Kafka(kafka) = &source.kind {
            policy
                .may_name(tenant, &kafka.topic)
                .map_err(|reason| ServiceError::invalid(&topic_field(&source.name), reason))?;
        }
    }
    Ok(())
}

/// Where a Kafka source's topic is in the node config, in errors.
fn topic_field(source: &SourceName) -> String {
    if source.as_str() == SourceName::KAFKA {
        "node_config.data.kafkaEvent.topic".to_owned()
    } else {
        format!("node_config.data.sources.{source}.topic")
    }
}
