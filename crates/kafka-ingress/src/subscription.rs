//! What the consumer subscribes to: the configured topics and those of registered waits, but
//! only those the cluster has. A topic that does not exist (yet) is left out and looked for
//! again at every refresh, so it never makes the group rejoin over and over; once it exists
//! it is added, and under the cooperative protocol adding it moves no partition that is
//! already flowing.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::metadata::Metadata;

use crate::ingress::IngressContext;

/// How long one look at the cluster's topics may take.
const METADATA_TIMEOUT: Duration = Duration::from_secs(5);

/// The subscription and the topics still missing from the cluster.
#[derive(Debug, Default)]
pub(crate) struct Subscription {
    /// Subscribed topics (all existed when subscribed).
    subscribed: BTreeSet<String>,
    /// Wanted topics the cluster did not have at the last look.
    missing: BTreeSet<String>,
}

impl Subscription {
    /// Whether anything is subscribed.
    pub(crate) fn is_empty(&self) -> bool {
        self.subscribed.is_empty()
    }

    /// Brings the subscription to the `wanted` topics that exist. Topics already subscribed
    /// stay (a deleted one is librdkafka's to drop); new ones are looked up in the cluster's
    /// metadata first and subscribed only once they exist. Never unsubscribes from a topic
    /// still wanted, never subscribes again when nothing changed.
    pub(crate) async fn update(
        &mut self,
        consumer: &Arc<StreamConsumer<IngressContext>>,
        wanted: BTreeSet<String>,
    ) {
        let new: BTreeSet<String> = wanted.difference(&self.subscribed).cloned().collect();
        let gone = self.subscribed.difference(&wanted).next().is_some();
        if new.is_empty() && !gone {
            self.missing.clear();
            return;
        }
        let existing = if new.is_empty() {
            BTreeSet::new()
        } else {
            match existing_topics(consumer).await {
                Ok(existing) => existing,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the cluster's topics; keeping the subscription");
                    return;
                }
            }
        };
        let (present, missing): (BTreeSet<String>, BTreeSet<String>) =
            new.into_iter().partition(|t| existing.contains(t));
        if missing != self.missing && !missing.is_empty() {
            tracing::info!(
                topics = %join(&missing),
                "topics named by waits or kafka.topics do not exist yet; consuming the others and looking again at every refresh"
            );
        }
        self.missing = missing;
        if present.is_empty() && !gone {
            return;
        }
        let next: BTreeSet<String> = self
            .subscribed
            .intersection(&wanted)
            .cloned()
            .chain(present)
            .collect();
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
async fn existing_topics(
    consumer: &Arc<StreamConsumer<IngressContext>>,
) -> Result<BTreeSet<String>, String> {
    let consumer = consumer.clone();
    let metadata: Metadata =
        tokio::task::spawn_blocking(move || consumer.fetch_metadata(None, METADATA_TIMEOUT))
            .await
            .map_err(|e| format!("metadata task: {e}"))?
            .map_err(|e| e.to_string())?;
    Ok(metadata
        .topics()
        .iter()
        .filter(|t| t.error().is_none() && !t.partitions().is_empty())
        .map(|t| t.name().to_owned())
        .collect())
}
