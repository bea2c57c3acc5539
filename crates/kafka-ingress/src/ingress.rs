//! The consumer loop: subscribe to the configured topics and those of registered waits that
//! exist and that the service's topic policy allows (a wait can never widen the subscription
//! beyond what is configured; cooperative rebalancing, so a new topic never pauses the
//! others), read records in batches, process partitions concurrently (in order within each),
//! store offsets only after the effects are durable, quarantine what cannot be processed
//! (`record.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use rdkafka::config::ClientConfig;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{ClientContext, TopicPartitionList};
use rendezvous_ports::{Clock, ResumeSignal, Store, TopicFields};
use rendezvous_service::{TopicPolicy, WaitService};
use tokio::sync::watch;

use crate::extract::{Extracted, Naming, Record, TopicIndex, extract};
use crate::record::MAX_RECORD_ATTEMPTS;
use crate::subscription::{Lookup, Subscription};

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
    /// Header that may name an event's tenant, on the topics whose configuration honours it
    /// (the service's [`TopicPolicy`](rendezvous_service::TopicPolicy)); elsewhere a record's
    /// tenant is its topic's.
    pub tenant_header: String,
    /// Most records processed per batch.
    pub max_batch: usize,
    /// Where a new group starts on a topic: `earliest` (nothing published before the
    /// subscription is missed) or `latest`.
    pub auto_offset_reset: String,
    /// How many times a record failing for another reason than database unavailability is
    /// tried before it is quarantined (and its quarantine insert before it is passed over).
    pub max_record_attempts: u32,
    /// Most waits whose records are handled at once (records of one wait are handled in
    /// order).
    pub max_in_flight: usize,
    /// librdkafka's `fetch.wait.max.ms`: how long a fetch may wait at the broker for records.
    /// A broker that answers a waiting fetch as soon as a record arrives (Apache Kafka) makes
    /// this only the idle poll interval; one that holds it to the end (the embedded mock
    /// cluster, Tansu) adds up to this much to every event's latency.
    pub fetch_wait: Duration,
    /// Extra librdkafka properties (security settings, tuning; they win over the ingress's
    /// own defaults such as `partition.assignment.strategy`). Security: `security.protocol`
    /// `SSL` or `SASL_SSL` (librdkafka is built with OpenSSL), `sasl.mechanism` `PLAIN`,
    /// `SCRAM-SHA-256` or `SCRAM-SHA-512`; every codec (gzip, snappy, lz4, zstd) is read.
    pub properties: BTreeMap<String, String>,
}

/// librdkafka properties that name a file or directory librdkafka reads when the consumer is
/// created (`ssl.ca.location` may also be `probe`).
const FILE_PROPERTIES: &[&str] = &[
    "ssl.ca.location",
    "ssl.certificate.location",
    "ssl.key.location",
    "ssl.keystore.location",
    "ssl.crl.location",
    "sasl.kerberos.keytab",
];

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
            max_record_attempts: MAX_RECORD_ATTEMPTS,
            max_in_flight: 64,
            fetch_wait: Duration::from_millis(10),
            properties: BTreeMap::new(),
        }
    }

    /// Checks the properties without connecting, so that a mistake stops the start rather
    /// than the ingress later: librdkafka must know each name and accept each value (a
    /// protocol, mechanism or codec it was built without is refused here), and the files the
    /// `*.location` properties name must exist. The message names the property, never a
    /// value.
    pub fn check(&self) -> Result<(), IngressError> {
        for name in FILE_PROPERTIES {
            if let Some(path) = self.properties.get(*name)
                && !(*name == "ssl.ca.location" && path == "probe")
                && let Err(e) = std::fs::metadata(path)
            {
                return Err(IngressError::Kafka(format!(
                    "{name}: cannot read {path}: {e}"
                )));
            }
        }
        self.client_config()
            .create_native_config()
            .map(drop)
            .map_err(|e| IngressError::Kafka(describe_error(&e)))
    }

    /// A record's ids, tenant and event, read where this configuration says records carry
    /// their identity and tenant: the one reading of the consumer and of a replay.
    pub(crate) fn extract(
        &self,
        index: &TopicIndex,
        record: Record<'_>,
        topics: &TopicPolicy,
    ) -> Result<Extracted, String> {
        extract(
            index,
            record,
            Naming {
                event_id_field: &self.event_id_field,
                tenant_header: &self.tenant_header,
                topics,
            },
        )
    }

    /// The consumer's librdkafka configuration: the ingress's own settings, then
    /// [`IngressConfig::properties`].
    fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            .set("group.id", &self.group_id)
            .set("enable.auto.commit", "true")
            .set("enable.auto.offset.store", "false")
            .set("auto.commit.interval.ms", "1000")
            .set("auto.offset.reset", &self.auto_offset_reset)
            .set("topic.metadata.refresh.interval.ms", "5000")
            // Incremental rebalancing: a topic added to the subscription (or a member joining)
            // moves only the partitions that change owner; the others keep flowing. Every
            // member of a group must use the same protocol.
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set("enable.partition.eof", "false")
            .set(
                "fetch.wait.max.ms",
                self.fetch_wait.as_millis().clamp(1, 300_000).to_string(),
            )
            .set(
                "statistics.interval.ms",
                crate::metrics::STATISTICS_INTERVAL_MS,
            );
        for (key, value) in &self.properties {
            config.set(key, value);
        }
        config
    }
}

/// A librdkafka error without the value of a property (which may be a secret).
fn describe_error(e: &KafkaError) -> String {
    match e {
        KafkaError::ClientConfig(_, description, name, _) => format!("{name}: {description}"),
        other => other.to_string(),
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
    /// Records passed over because even quarantining them kept failing (each one logged
    /// with its topic, partition, offset and reason).
    pub skipped: AtomicU64,
    /// Partitions currently assigned to this consumer.
    pub assigned_partitions: AtomicU64,
    /// Partitions revoked from this consumer so far (under the cooperative protocol only those
    /// that moved to another member, or whose topic left the subscription).
    pub revoked_partitions: AtomicU64,
    /// Looks at the cluster's topics (for topics named by waits but not subscribed yet).
    pub metadata_lookups: AtomicU64,
    /// The topics subscribed now.
    subscribed: Mutex<BTreeSet<String>>,
    /// Errors librdkafka reported or logged about the connection to the cluster (brokers down,
    /// a failed TLS handshake or SASL authentication, ...); each is logged.
    pub client_errors: AtomicU64,
    /// The last of them.
    last_client_error: Mutex<Option<String>>,
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

    /// The last error librdkafka reported or logged about the connection, if any.
    pub fn last_client_error(&self) -> Option<String> {
        self.last_client_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The topics subscribed now (only topics the service's topic policy allows).
    pub fn subscribed_topics(&self) -> BTreeSet<String> {
        self.subscribed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set_subscribed(&self, topics: &BTreeSet<String>) {
        let mut subscribed = self
            .subscribed
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if *subscribed != *topics {
            subscribed.clone_from(topics);
        }
    }
}

/// Logs rebalances and counts the assigned partitions. Processing never overlaps a rebalance:
/// callbacks run inside `recv`, which is only called between batches, after their offsets are
/// stored. Under the cooperative protocol a callback lists only the partitions that move.
pub(crate) struct IngressContext {
    stats: Arc<IngressStats>,
}

impl IngressContext {
    /// Counts an error librdkafka reported or logged, and keeps it as the last one.
    fn record(&self, error: String) {
        self.stats.client_errors.fetch_add(1, Ordering::Relaxed);
        *self
            .stats
            .last_client_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(error);
    }
}

/// librdkafka's errors and logs go to `tracing` (rdkafka's defaults write to the `log` crate,
/// which nothing here reads): a broker that cannot be reached, a TLS handshake that fails or
/// SASL credentials that are refused show in the service's log, with a hint for the last two.
impl ClientContext for IngressContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                self.record(message.to_owned());
                tracing::warn!(target: "librdkafka", facility, "{message}");
            }
            RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", facility, "{message}"),
            RDKafkaLogLevel::Notice => tracing::info!(target: "librdkafka", facility, "{message}"),
            RDKafkaLogLevel::Info | RDKafkaLogLevel::Debug => {
                tracing::debug!(target: "librdkafka", facility, "{message}");
            }
        }
    }

    fn stats(&self, statistics: rdkafka::Statistics) {
        crate::metrics::record(&statistics);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let text = format!("{error}: {reason}");
        self.record(text.clone());
        match error.rdkafka_error_code() {
            Some(RDKafkaErrorCode::SSL) => tracing::error!(
                error = %text,
                "kafka: TLS with the broker failed (check ssl.ca.location, the broker's certificate and security.protocol)"
            ),
            Some(RDKafkaErrorCode::Authentication) => tracing::error!(
                error = %text,
                "kafka: SASL authentication failed (check sasl.mechanism, sasl.username and sasl.password)"
            ),
            _ => tracing::warn!(error = %text, "kafka client error"),
        }
    }
}

impl ConsumerContext for IngressContext {
    fn pre_rebalance(&self, _: &rdkafka::consumer::BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => {
                tracing::info!(partitions = %describe(tpl), "kafka partitions revoked");
                let revoked = tpl.count() as u64;
                self.stats
                    .revoked_partitions
                    .fetch_add(revoked, Ordering::Relaxed);
                let _ = self.stats.assigned_partitions.fetch_update(
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                    |n| Some(n.saturating_sub(revoked)),
                );
            }
            Rebalance::Assign(tpl) => {
                tracing::info!(partitions = %describe(tpl), "kafka partitions assigned");
                self.stats
                    .assigned_partitions
                    .fetch_add(tpl.count() as u64, Ordering::Relaxed);
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
    pub(crate) service: Arc<WaitService<S, G, C>>,
    pub(crate) config: IngressConfig,
    pub(crate) stats: Arc<IngressStats>,
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
        self.config
            .client_config()
            .create_with_context(IngressContext {
                stats: self.stats.clone(),
            })
            .map_err(|e| {
                IngressError::Kafka(format!(
                    "creating the consumer for {}: {}",
                    self.config.brokers,
                    describe_error(&e)
                ))
            })
    }

    /// Consumes until `shutdown` turns true, then commits what was stored and leaves the group.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) -> Result<(), IngressError> {
        let consumer = Arc::new(self.consumer()?);
        let mut subscription = Subscription::default();
        // A look at the cluster's topics in flight: the consumer goes on meanwhile.
        let mut lookup: Option<Lookup> = None;
        let mut index = TopicIndex::default();
        let mut refresh = tokio::time::interval(self.config.refresh_interval);
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tracing::info!(brokers = %self.config.brokers, group_id = %self.config.group_id, "kafka ingress started");
        loop {
            if *shutdown.borrow() {
                break;
            }
            tokio::select! {
                first = consumer.recv(), if !subscription.is_empty() => match first {
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
                            // A subscribed topic was deleted. librdkafka drops its partitions
                            // and picks it up again if it comes back; subscribing again here
                            // would only make the group rejoin and pause every topic.
                            tracing::info!(error = %e, "a subscribed topic does not exist (any more)");
                        } else {
                            tracing::warn!(error = %e, "kafka consumer error");
                        }
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                },
                _ = refresh.tick() => {
                    if subscription.is_empty() {
                        // librdkafka's logs and errors (an unreachable broker, a failed TLS
                        // handshake or SASL authentication) are served by polling the
                        // consumer, which nothing else does before a topic is subscribed.
                        let _ = consumer.recv().now_or_never();
                    }
                    self.refresh(&consumer, &mut subscription, &mut index, &mut lookup).await
                }
                () = self.service.topics_changed().notified() => self.refresh(&consumer, &mut subscription, &mut index, &mut lookup).await,
                existing = async { lookup.as_mut().expect("guarded").await }, if lookup.is_some() => {
                    lookup = None;
                    let existing = existing.unwrap_or_else(|e| Err(format!("metadata task: {e}")));
                    subscription.looked_up(&consumer, existing);
                    self.stats.set_subscribed(subscription.subscribed());
                }
                _ = shutdown.changed() => {}
            }
        }
        if !subscription.is_empty()
            && let Err(e) = consumer.commit_consumer_state(CommitMode::Sync)
        {
            tracing::debug!(error = %e, "final offset commit");
        }
        consumer.unsubscribe();
        crate::metrics::clear();
        let (received, applied, buffered, duplicates, quarantined) = self.stats.snapshot();
        let skipped = self.stats.skipped.load(Ordering::Relaxed);
        tracing::info!(
            received,
            applied,
            buffered,
            duplicates,
            quarantined,
            skipped,
            "kafka ingress stopped"
        );
        Ok(())
    }

    /// Re-reads the topics of registered waits and subscribes to those that are new, exist and
    /// are allowed by the service's topic policy (the others are left out and logged once).
    async fn refresh(
        &self,
        consumer: &Arc<StreamConsumer<IngressContext>>,
        subscription: &mut Subscription,
        index: &mut TopicIndex,
        lookup: &mut Option<Lookup>,
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
        let policy = self.service.topic_policy();
        let (allowed, refused): (Vec<TopicFields>, Vec<TopicFields>) = topics
            .into_iter()
            .partition(|t| policy.may_subscribe(&t.topic));
        *index = TopicIndex::new(&allowed);
        let (wanted, refused_configured): (BTreeSet<String>, BTreeSet<String>) = self
            .config
            .topics
            .iter()
            .cloned()
            .chain(index.topics().map(str::to_owned))
            .partition(|t| policy.may_subscribe(t));
        let refused: BTreeSet<String> = refused
            .into_iter()
            .map(|t| t.topic)
            .chain(refused_configured)
            .collect();
        subscription.refuse(refused, |topic| policy.tenancy(topic).err());
        let started = subscription.update(consumer, wanted, lookup.is_some());
        self.stats.set_subscribed(subscription.subscribed());
        if let Some(started) = started {
            self.stats.metadata_lookups.fetch_add(1, Ordering::Relaxed);
            *lookup = Some(started);
        }
    }

    /// Processes a batch. Records of one wait (one tenant and correlation id) are handled in
    /// order, in a lane of their own; lanes run concurrently, at most
    /// [`IngressConfig::max_in_flight`] at once, whatever their partitions: a wait's decision
    /// does not depend on the order its events arrive in, and concurrent changes share the
    /// store's group commit. Records that cannot be read share one lane (they are only
    /// quarantined). Each partition's offset is stored once its records are done; on shutdown
    /// mid-batch, up to the record before its first one not done. Returns false on shutdown
    /// mid-batch.
    async fn process(
        &self,
        consumer: &StreamConsumer<IngressContext>,
        index: &TopicIndex,
        batch: Vec<OwnedMessage>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> bool {
        let records: Vec<(OwnedMessage, Result<Extracted, String>)> = batch
            .into_iter()
            .map(|message| {
                self.stats.received.fetch_add(1, Ordering::Relaxed);
                let read = self.read(index, &message);
                (message, read)
            })
            .collect();
        let mut lanes: BTreeMap<Option<(&str, &str)>, Vec<usize>> = BTreeMap::new();
        for (i, (_, read)) in records.iter().enumerate() {
            let wait = read
                .as_ref()
                .ok()
                .map(|x| (x.tenant_id.as_str(), x.correlation_id.as_str()));
            lanes.entry(wait).or_default().push(i);
        }
        let done: Vec<AtomicBool> = records.iter().map(|_| AtomicBool::new(false)).collect();
        futures_util::stream::iter(lanes.into_values())
            .for_each_concurrent(self.config.max_in_flight.max(1), |lane| {
                let (records, done) = (&records, &done);
                let mut shutdown = shutdown.clone();
                async move {
                    for i in lane {
                        let (message, read) = &records[i];
                        if !self.handle_until_done(read, message, &mut shutdown).await {
                            return;
                        }
                        done[i].store(true, Ordering::Relaxed);
                    }
                }
            })
            .await;
        // Per partition: the offset of its last record before the first one not done, and
        // whether one was not done.
        let mut partitions: BTreeMap<(&str, i32), (Option<i64>, bool)> = BTreeMap::new();
        for ((message, _), done) in records.iter().zip(&done) {
            let (last_done, stopped) = partitions
                .entry((message.topic(), message.partition()))
                .or_default();
            if done.load(Ordering::Relaxed) && !*stopped {
                *last_done = Some(message.offset());
            } else {
                *stopped = true;
            }
        }
        let mut complete = true;
        for ((topic, partition), (last_done, stopped)) in partitions {
            if let Some(offset) = last_done
                && let Err(e) = consumer.store_offset(topic, partition, offset)
            {
                // The partition was revoked meanwhile: its new owner reprocesses; the inbox
                // makes that a no-op.
                tracing::warn!(topic, partition, offset, error = %e, "cannot store offset");
            }
            complete &= !stopped;
        }
        complete || !*shutdown.borrow()
    }
}
