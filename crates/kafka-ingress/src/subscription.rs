//! What the consumer subscribes to: the configured topics and those of registered waits, but
//! only those the service's topic policy allows (the ingress filters them; the others are
//! logged here once) and those the cluster has. A topic that does not exist (yet) is left out
//! and looked for again at every refresh, so it never makes the group rejoin over and over;
//! once it exists it is added, and under the cooperative protocol adding it moves no
//! partition that is already flowing.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::metadata::Metadata;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::ingress::IngressContext;

/// How long one look at the cluster's topics may take.
const METADATA_TIMEOUT: Duration = Duration::from_secs(5);
/// How often topics known to be missing are looked for again. A topic no one has looked for
/// yet is looked up at once.
pub(crate) const MISSING_LOOKUP_INTERVAL: Duration = Duration::from_secs(5);

/// A look at the cluster's topics, running on a blocking thread while the consumer goes on.
pub(crate) type Lookup = JoinHandle<Result<BTreeSet<String>, String>>;

/// The subscription and the topics still missing from the cluster.
#[derive(Debug, Default)]
pub(crate) struct Subscription {
    /// Subscribed topics (all existed when subscribed).
    subscribed: BTreeSet<String>,
    /// Wanted topics the cluster did not have at the last look.
    missing: BTreeSet<String>,
    /// The topics wanted at the last update.
    wanted: BTreeSet<String>,
    /// When the cluster's topics were last looked up.
    looked_at: Option<Instant>,
    /// Topics registered waits name that the topic policy does not allow (logged when they
    /// change).
    refused: BTreeSet<String>,
}

impl Subscription {
    /// Whether anything is subscribed.
    pub(crate) fn is_empty(&self) -> bool {
        self.subscribed.is_empty()
    }

    /// The topics subscribed now.
    pub(crate) fn subscribed(&self) -> &BTreeSet<String> {
        &self.subscribed
    }

    /// Notes the topics left out because the topic policy does not allow them, and logs them
    /// (with `why`, the policy's reason) when they change: registration refuses such topics,
    /// so they come from waits registered before the policy changed or by another instance
    /// configured otherwise.
    pub(crate) fn refuse(
        &mut self,
        refused: BTreeSet<String>,
        why: impl Fn(&str) -> Option<String>,
    ) {
        if refused == self.refused {
            return;
        }
        for topic in refused.difference(&self.refused) {
            tracing::warn!(
                topic,
                reason = why(topic).unwrap_or_default(),
                "not consuming a topic registered waits name: the topic configuration does not allow it"
            );
        }
        self.refused = refused;
    }

    /// Takes the `wanted` topics. Topics already subscribed stay (a deleted one is
    /// librdkafka's to drop); a topic no longer wanted is dropped at once. New topics must be
    /// looked up in the cluster's metadata first: returns a lookup to run when one is due
    /// (`looking`: one is already running), and [`Subscription::looked_up`] finishes the
    /// update with its answer. Topics known to be missing are looked for again at most every
    /// [`MISSING_LOOKUP_INTERVAL`], so registrations naming them cost the consumer nothing.
    pub(crate) fn update(
        &mut self,
        consumer: &Arc<StreamConsumer<IngressContext>>,
        wanted: BTreeSet<String>,
        looking: bool,
    ) -> Option<Lookup> {
        self.wanted = wanted;
        if self.subscribed.difference(&self.wanted).next().is_some() {
            let next: BTreeSet<String> = self
                .subscribed
                .intersection(&self.wanted)
                .cloned()
                .collect();
            self.subscribe(consumer, next);
        }
        let mut new = self.wanted.difference(&self.subscribed).peekable();
        if new.peek().is_none() {
            self.missing.clear();
            return None;
        }
        let only_known_missing = new.all(|t| self.missing.contains(t));
        let recently = self
            .looked_at
            .is_some_and(|at| at.elapsed() < MISSING_LOOKUP_INTERVAL);
        if looking || (only_known_missing && recently) {
            return None;
        }
        self.looked_at = Some(Instant::now());
        Some(existing_topics(consumer))
    }

    /// Finishes an update with the topics the cluster has: subscribes to the wanted ones
    /// that exist, and remembers the others as missing.
    pub(crate) fn looked_up(
        &mut self,
        consumer: &Arc<StreamConsumer<IngressContext>>,
        existing: Result<BTreeSet<String>, String>,
    ) {
        let existing = match existing {
            Ok(existing) => existing,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the cluster's topics; keeping the subscription");
                return;
            }
        };
        let (present, missing): (BTreeSet<String>, BTreeSet<String>) = self
            .wanted
            .difference(&self.subscribed)
            .cloned()
            .partition(|t| existing.contains(t));
        if missing != self.missing && !missing.is_empty() {
            tracing::info!(
                topics = %join(&missing),
                "topics named by waits or kafka.topics do not exist yet; consuming the others and looking again every few seconds"
            );
        }
        self.missing = missing;
        if present.is_empty() {
            return;
        }
        let next: BTreeSet<String> = self.subscribed.iter().cloned().chain(present).collect();
        self.subscribe(consumer, next);
    }

    fn subscribe(
        &mut self,
        consumer: &Arc<StreamConsumer<IngressContext>>,
        next: BTreeSet<String>,
    ) {
        if next.is_empty() {
            // Nothing left to read: leave the group's assignment alone rather than
            // subscribing to nothing (the topics list only grows in practice).
            return;
        }
        let names: Vec<&str> = next.iter().map(String::as_str).collect();
        match consumer.subscribe(&names) {
            Ok(()) => {
                tracing::info!(topics = %names.join(","), "kafka subscription updated");
                self.subscribed = next;
            }
            Err(e) => {
                tracing::warn!(error = %e, "kafka subscribe failed; retrying at the next refresh")
            }
        }
    }
}

fn join(topics: &BTreeSet<String>) -> String {
    topics
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(",")
}

/// The topics the cluster has (with at least one partition and no error), read from its
/// metadata on a blocking thread (librdkafka's metadata call blocks).
fn existing_topics(consumer: &Arc<StreamConsumer<IngressContext>>) -> Lookup {
    let consumer = consumer.clone();
    tokio::task::spawn_blocking(move || {
        let metadata: Metadata = consumer
            .fetch_metadata(None, METADATA_TIMEOUT)
            .map_err(|e| e.to_string())?;
        Ok(metadata
            .topics()
            .iter()
            .filter(|t| t.error().is_none() && !t.partitions().is_empty())
            .map(|t| t.name().to_owned())
            .collect())
    })
}
