//! The ingress's metrics: consumer lag per assigned partition, read from librdkafka's
//! statistics (every `statistics.interval.ms`, 5 s unless `[kafka.properties]` says otherwise)
//! and observed at each collection, so a partition that moved to another instance disappears
//! from this one's metrics instead of keeping its last value.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use opentelemetry::KeyValue;
use opentelemetry::metrics::ObservableGauge;
use rdkafka::Statistics;

/// How often librdkafka reports its statistics, unless the configuration sets it.
pub(crate) const STATISTICS_INTERVAL_MS: &str = "5000";

/// Lag by (topic, partition), as last reported. Shared by every consumer of the process.
type Lags = Arc<Mutex<BTreeMap<(String, i32), i64>>>;

static LAGS: OnceLock<(Lags, ObservableGauge<i64>)> = OnceLock::new();

fn lags() -> &'static Lags {
    &LAGS
        .get_or_init(|| {
            let lags = Lags::default();
            let observed = lags.clone();
            let gauge = opentelemetry::global::meter("rendezvous")
                .i64_observable_gauge("rendezvous.kafka.consumer_lag")
                .with_description("Records behind the partition's high watermark, per partition this instance consumes.")
                .with_callback(move |observer| {
                    for ((topic, partition), lag) in
                        observed.lock().unwrap_or_else(PoisonError::into_inner).iter()
                    {
                        observer.observe(
                            *lag,
                            &[
                                KeyValue::new("topic", topic.clone()),
                                KeyValue::new("partition", i64::from(*partition)),
                            ],
                        );
                    }
                })
                .build();
            (lags, gauge)
        })
        .0
}

/// Replaces the lags with those of `statistics`: partitions this consumer fetches from.
pub(crate) fn record(statistics: &Statistics) {
    let mut current = BTreeMap::new();
    for (name, topic) in &statistics.topics {
        for partition in topic.partitions.values() {
            if partition.partition >= 0
                && partition.fetch_state == "active"
                && partition.consumer_lag >= 0
            {
                current.insert((name.clone(), partition.partition), partition.consumer_lag);
            }
        }
    }
    *lags().lock().unwrap_or_else(PoisonError::into_inner) = current;
}

/// Forgets every lag (the consumer stopped).
pub(crate) fn clear() {
    lags()
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clear();
}
