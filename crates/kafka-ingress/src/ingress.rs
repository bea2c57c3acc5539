//! The consumer loop: subscribe to the configured topics and those of registered waits, read
//! records in batches, process partitions concurrently (in order within each), store offsets
//! only after the effects are durable, quarantine what cannot be processed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::FutureExt;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::{Headers, Message, OwnedMessage};
use rdkafka::{ClientContext, TopicPartitionList};
use rendezvous_domain::{Channel, CorrelationId, EventKey, ExecutionId};
use rendezvous_ports::{Clock, Quarantined, ResumeSignal, Store};
use rendezvous_service::parse::{optional, required, tenant};
use rendezvous_service::{Delivered, Delivery, Effect, ServiceError, WaitService};
use tokio::sync::watch;

use crate::extract::{Extracted, Naming, Record, TopicIndex, extract};

/// How the ingress connects and what it reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngressConfig {
    /// Bootstrap servers.
    pub brokers: String,
    /// The consumer group: explicit and stable, shared by every instance.
    pub group_id: String,
    /// Topics always consumed.
    pub topics: Vec<String>,
    /// Also consume every topic a registered wait listens on (new ones within
    /// `refresh_interval`, at once on the instance that registered the wait).
    pub follow_waits: bool,
    /// How often the topic list is re-read from the database.
    pub refresh_interval: Duration,
    /// Header or JSON field giving an event's identity (else topic/partition/offset).
    pub event_id_field: String,
    /// Header giving an event's tenant (else the default tenant).
    pub tenant_header: String,
    /// Most records processed per batch.
    pub max_batch: usize,
    /// Where a new group starts on a topic: `earliest` (nothing published before the
    /// subscription is missed) or `latest`.
    pub auto_offset_reset: String,
    /// Extra librdkafka properties (security settings, tuning).
    pub properties: BTreeMap<String, String>,
}

impl IngressConfig {
    /// Defaults for a broker list and group.
    pub fn new(brokers: impl Into<String>, group_id: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            group_id: group_id.into(),
            topics: Vec::new(),
            follow_waits: true,
            refresh_interval: Duration::from_secs(1),
            event_id_field: "event_id".into(),
            tenant_header: "tenant_id".into(),
            max_batch: 500,
            auto_offset_reset: "earliest".into(),
            properties: BTreeMap::new(),
        }
    }
}

/// Why the ingress could not run.
#[derive(Debug, thiserror::Error)]
pub enum IngressError {
    /// The consumer could not be created or subscribed.
    #[error("kafka: {0}")]
    Kafka(String),
}

/// Counters of what the ingress did, for logs and tests.
#[derive(Debug, Default)]
pub struct IngressStats {
    /// Records read.
    pub received: AtomicU64,
    /// Records applied to a wait (accepted, completing, or recorded as ignored).
    pub applied: AtomicU64,
    /// Records kept in the early-event buffer.
    pub buffered: AtomicU64,
    /// Records already processed before (redeliveries).
    pub duplicates: AtomicU64,
    /// Records quarantined.
    pub quarantined: AtomicU64,
    /// Partitions currently assigned to this consumer.
    pub assigned_partitions: AtomicU64,
}

impl IngressStats {
    /// (received, applied, buffered, duplicates, quarantined)
    pub fn snapshot(&self) -> (u64, u64, u64, u64, u64) {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        (
            get(&self.received),
            get(&self.applied),
            get(&self.buffered),
            get(&self.duplicates),
            get(&self.quarantined),
        )
    }
}

/// Logs rebalances. Processing never overlaps a rebalance: callbacks run inside `recv`, which
/// is only called between batches, after their offsets are stored.
struct IngressContext {
    stats: Arc<IngressStats>,
}

impl ClientContext for IngressContext {}

impl ConsumerContext for IngressContext {
    fn pre_rebalance(&self, _: &rdkafka::consumer::BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => {
                tracing::info!(partitions = %describe(tpl), "kafka partitions revoked");
                self.stats.assigned_partitions.store(0, Ordering::Relaxed);
            }
            Rebalance::Assign(tpl) => {
                tracing::info!(partitions = %describe(tpl), "kafka partitions assigned");
                self.stats
                    .assigned_partitions
                    .store(tpl.count() as u64, Ordering::Relaxed);
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "kafka rebalance error"),
        }
    }
}

fn describe(tpl: &TopicPartitionList) -> String {
    tpl.elements()
        .iter()
        .map(|e| format!("{}/{}", e.topic(), e.partition()))
        .collect::<Vec<_>>()
        .join(",")
}

/// The ingress over the service.
pub struct KafkaIngress<S, G, C> {
    service: Arc<WaitService<S, G, C>>,
    config: IngressConfig,
    stats: Arc<IngressStats>,
}

/// What to do with a record after trying it.
enum Handled {
    /// Done (applied, buffered, duplicate or quarantined): its offset may be stored.
    Done,
    /// The database is unavailable: retry, do not store the offset.
    Retry(ServiceError),
}

impl<S: Store, G: ResumeSignal, C: Clock> KafkaIngress<S, G, C> {
    /// An ingress feeding `service`.
    pub fn new(service: Arc<WaitService<S, G, C>>, config: IngressConfig) -> Self {
        Self {
            service,
            config,
            stats: Arc::default(),
        }
    }

    /// Its counters.
    pub fn stats(&self) -> Arc<IngressStats> {
        self.stats.clone()
    }

    fn consumer(&self) -> Result<StreamConsumer<IngressContext>, IngressError> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.config.brokers)
            .set("group.id", &self.config.group_id)
            .set("enable.auto.commit", "true")
            .set("enable.auto.offset.store", "false")
            .set("auto.commit.interval.ms", "1000")
            .set("auto.offset.reset", &self.config.auto_offset_reset)
            .set("topic.metadata.refresh.interval.ms", "5000")
            .set("enable.partition.eof", "false");
        for (key, value) in &self.config.properties {
            config.set(key, value);
        }
        config
            .create_with_context(IngressContext {
                stats: self.stats.clone(),
            })
            .map_err(|e| {
                IngressError::Kafka(format!(
                    "creating the consumer for {}: {e}",
                    self.config.brokers
                ))
            })
    }

    /// Consumes until `shutdown` turns true, then commits what was stored and leaves the group.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) -> Result<(), IngressError> {
        let consumer = self.consumer()?;
        let mut subscribed: BTreeSet<String> = BTreeSet::new();
        let mut index = TopicIndex::default();
        let mut refresh = tokio::time::interval(self.config.refresh_interval);
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tracing::info!(brokers = %self.config.brokers, group_id = %self.config.group_id, "kafka ingress started");
        loop {
            if *shutdown.borrow() {
                break;
            }
            tokio::select! {
                first = consumer.recv(), if !subscribed.is_empty() => match first {
                    Ok(first) => {
                        let mut batch = vec![first.detach()];
                        while batch.len() < self.config.max_batch {
                            match consumer.recv().now_or_never() {
                                Some(Ok(m)) => batch.push(m.detach()),
                                Some(Err(e)) => {
                                    tracing::warn!(error = %e, "kafka consumer error");
                                    break;
                                }
                                None => break,
                            }
                        }
                        if !self.process(&consumer, &index, batch, &mut shutdown).await {
                            break;
                        }
                    }
                    Err(e) => {
                        if e.rdkafka_error_code() == Some(RDKafkaErrorCode::UnknownTopicOrPartition) {
                            // A wait named a topic that does not exist yet. Subscribe again at
                            // the next refresh, so the topic is picked up once it is created.
                            tracing::info!(error = %e, "a subscribed topic does not exist yet; will subscribe again");
                            subscribed.clear();
                        } else {
                            tracing::warn!(error = %e, "kafka consumer error");
                        }
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                },
                _ = refresh.tick() => self.refresh(&consumer, &mut subscribed, &mut index).await,
                () = self.service.topics_changed().notified() => self.refresh(&consumer, &mut subscribed, &mut index).await,
                _ = shutdown.changed() => {}
            }
        }
        if !subscribed.is_empty()
            && let Err(e) = consumer.commit_consumer_state(CommitMode::Sync)
        {
            tracing::debug!(error = %e, "final offset commit");
        }
        consumer.unsubscribe();
        let (received, applied, buffered, duplicates, quarantined) = self.stats.snapshot();
        tracing::info!(
            received,
            applied,
            buffered,
            duplicates,
            quarantined,
            "kafka ingress stopped"
        );
        Ok(())
    }

    /// Re-reads the topics of registered waits and re-subscribes when they changed.
    async fn refresh(
        &self,
        consumer: &StreamConsumer<IngressContext>,
        subscribed: &mut BTreeSet<String>,
        index: &mut TopicIndex,
    ) {
        let topics = if self.config.follow_waits {
            match self.service.kafka_topics().await {
                Ok(topics) => topics,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the topics of registered waits; keeping the subscription");
                    return;
                }
            }
        } else {
            Vec::new()
        };
        *index = TopicIndex::new(&topics);
        let wanted: BTreeSet<String> = self
            .config
            .topics
            .iter()
            .cloned()
            .chain(index.topics().map(str::to_owned))
            .collect();
        if wanted == *subscribed || wanted.is_empty() {
            return;
        }
        let names: Vec<&str> = wanted.iter().map(String::as_str).collect();
        match consumer.subscribe(&names) {
            Ok(()) => {
                tracing::info!(topics = %names.join(","), "kafka subscription updated");
                *subscribed = wanted;
            }
            Err(e) => tracing::warn!(error = %e, "kafka subscribe failed; retrying"),
        }
    }

    /// Processes a batch: partitions concurrently, records in order within each; stores each
    /// partition's offset after its records are done. Returns false on shutdown mid-batch.
    async fn process(
        &self,
        consumer: &StreamConsumer<IngressContext>,
        index: &TopicIndex,
        batch: Vec<OwnedMessage>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> bool {
        let mut partitions: BTreeMap<(String, i32), Vec<OwnedMessage>> = BTreeMap::new();
        for message in batch {
            self.stats.received.fetch_add(1, Ordering::Relaxed);
            partitions
                .entry((message.topic().to_owned(), message.partition()))
                .or_default()
                .push(message);
        }
        let work = partitions
            .into_iter()
            .map(|((topic, partition), messages)| {
                let mut shutdown = shutdown.clone();
                async move {
                    let mut last_done = None;
                    for message in &messages {
                        if !self.handle_until_done(index, message, &mut shutdown).await {
                            break;
                        }
                        last_done = Some(message.offset());
                    }
                    (topic, partition, last_done)
                }
            });
        let mut complete = true;
        for (topic, partition, last_done) in futures_util::future::join_all(work).await {
            if let Some(offset) = last_done
                && let Err(e) = consumer.store_offset(&topic, partition, offset)
            {
                // The partition was revoked meanwhile: its new owner reprocesses; the inbox
                // makes that a no-op.
                tracing::warn!(topic, partition, offset, error = %e, "cannot store offset");
            }
            complete &= last_done.is_some();
        }
        complete || !*shutdown.borrow()
    }

    /// Handles one record, retrying while the database is unavailable. False on shutdown.
    async fn handle_until_done(
        &self,
        index: &TopicIndex,
        message: &OwnedMessage,
        shutdown: &mut watch::Receiver<bool>,
    ) -> bool {
        let mut delay = Duration::from_millis(50);
        loop {
            match self.handle(index, message).await {
                Handled::Done => return true,
                Handled::Retry(e) => {
                    tracing::warn!(topic = message.topic(), partition = message.partition(), offset = message.offset(), error = %e, "cannot process record; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        _ = shutdown.wait_for(|s| *s) => return false,
                    }
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    async fn handle(&self, index: &TopicIndex, message: &OwnedMessage) -> Handled {
        let origin = format!(
            "kafka:{}/{}/{}",
            message.topic(),
            message.partition(),
            message.offset()
        );
        let headers: BTreeMap<String, String> = message
            .headers()
            .map(|h| {
                h.iter()
                    .filter_map(|h| {
                        Some((h.key.to_owned(), String::from_utf8(h.value?.to_vec()).ok()?))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let record = Record {
            topic: message.topic(),
            partition: message.partition(),
            offset: message.offset(),
            value: message.payload(),
            headers: &headers,
        };
        let naming = Naming {
            event_id_field: &self.config.event_id_field,
            tenant_header: &self.config.tenant_header,
        };
        let extracted = extract(index, record, naming);
        let (ids, reason) = match extracted {
            Ok(x) => {
                let ids = (x.event_key.clone(), x.correlation_id.clone());
                let delivery =
                    delivery(x, message.topic(), message.payload().map_or(0, <[u8]>::len));
                let result = match delivery {
                    Ok(delivery) => self.service.deliver(delivery).await,
                    Err(e) => Err(e),
                };
                match result {
                    Ok(Delivered::Buffered) => {
                        self.stats.buffered.fetch_add(1, Ordering::Relaxed);
                        return Handled::Done;
                    }
                    Ok(Delivered::BufferedDuplicate) => {
                        self.stats.duplicates.fetch_add(1, Ordering::Relaxed);
                        return Handled::Done;
                    }
                    Ok(Delivered::Applied { effect, .. }) => {
                        let counter = if effect == Effect::Duplicate {
                            &self.stats.duplicates
                        } else {
                            &self.stats.applied
                        };
                        counter.fetch_add(1, Ordering::Relaxed);
                        return Handled::Done;
                    }
                    // Not the record's fault: hold the partition and try again.
                    Err(e) if e.is_retryable() => return Handled::Retry(e),
                    Err(e) => (Some(ids), e.to_string()),
                }
            }
            Err(reason) => (None, reason),
        };
        let quarantined = Quarantined {
            origin,
            event_key: ids.as_ref().map(|ids| ids.0.clone()),
            correlation_id: ids.map(|ids| ids.1),
            payload: message
                .payload()
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .unwrap_or_default(),
            reason,
            at: self.service.now(),
        };
        match self.service.quarantine(quarantined).await {
            Ok(()) => {
                self.stats.quarantined.fetch_add(1, Ordering::Relaxed);
                Handled::Done
            }
            Err(e) => Handled::Retry(e),
        }
    }
}

/// A record's ids, parsed into the service's delivery command (a bad id is refused naming
/// the field, and the record quarantined with that reason).
fn delivery(x: Extracted, topic: &str, size: usize) -> Result<Delivery, ServiceError> {
    Ok(Delivery {
        tenant: tenant(&x.tenant_id)?,
        correlation_id: required("correlation_id", &x.correlation_id, CorrelationId::parse)?,
        execution_id: optional(
            "execution_id",
            x.execution_id.as_deref().unwrap_or_default(),
            ExecutionId::parse,
        )?,
        channel: Channel::Topic(topic.to_owned()),
        payload: x.payload,
        size,
        event_key: required("event_key", &x.event_key, EventKey::parse)?,
    })
}
