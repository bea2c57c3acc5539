//! Compressed topics: records produced with each codec Kafka has (gzip, snappy, lz4, zstd) to
//! the embedded broker are read and applied by the ingress.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::json;

use crate::support::{config, eventually, harness, kafka_only, register, start, status};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_of_every_codec_are_read() {
    let h = harness().await;
    let topic = "compressed.events";
    let codecs = ["gzip", "snappy", "lz4", "zstd"];
    let mut waits = Vec::new();
    for (i, codec) in codecs.iter().enumerate() {
        let execution = format!("exec-{codec}");
        let corr = register(&h, &execution, &kafka_only(topic)).await;
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", h.kafka.bootstrap_servers())
            .set("compression.type", *codec)
            .create()
            .unwrap_or_else(|e| panic!("a {codec} producer: {e}"));
        // Several records per batch, so that the batch is compressed as a whole.
        for n in 0..3 {
            let value = json!({
                "correlation_id": corr,
                "execution_id": execution,
                "codec": codec,
                "padding": "x".repeat(200 * (i + 1)),
            });
            producer
                .send(
                    FutureRecord::to(topic)
                        .key(&format!("{codec}-{n}"))
                        .payload(&value.to_string()),
                    Duration::from_secs(10),
                )
                .await
                .map_err(|(e, _)| e)
                .unwrap_or_else(|e| panic!("producing with {codec}: {e}"));
        }
        waits.push((codec, corr));
    }
    let mut c = config(&h, "g-codecs");
    c.topics = vec![topic.into()];
    let ingress = start(&h, c);
    eventually("every record read", async || {
        let (received, applied, buffered, duplicates, quarantined) = ingress.stats.snapshot();
        received == 12 && applied + buffered + duplicates + quarantined == 12
    })
    .await;
    let (_, _, _, _, quarantined) = ingress.stats.snapshot();
    assert_eq!(quarantined, 0, "{:?}", ingress.stats.last_client_error());
    for (codec, corr) in waits {
        assert_eq!(status(&h, &corr).await, "completed", "{codec}");
    }
    ingress.stop().await;
}
