//! "Abuse next to normal traffic": hostile requests and records through two instances while
//! ordinary joins and timeouts run beside them. Every ordinary wait must be decided as it
//! should be, every hostile request refused with a clear code (never INTERNAL), no process may
//! die, and each instance's RSS stays under 128 MiB.

use std::time::Duration;

use anyhow::{Result, bail, ensure};
use futures_util::future::join_all;
use rendezvous_grpc_api::v1;
use rendezvous_tests::procs::{Instance, SERVICE_TOPIC};
use serde_json::json;
use tonic::Code;

use crate::world::*;

/// The RSS ceiling of one instance under abuse.
const MAX_RSS_KIB: u64 = 128 * 1024;

pub(crate) async fn scenario_abuse(world: &World, instances: &[Instance]) -> Result<String> {
    let hostile = async {
        let rounds = join_all((0..10).map(|i| hostile_round(world, i))).await;
        rounds
            .into_iter()
            .collect::<Result<Vec<_>>>()
            .map(|r| r.iter().sum::<usize>())
    };
    let ordinary = async {
        let joins = join_all((0..40).map(|i| async move {
            let order = if i % 2 == 0 {
                "api-then-kafka"
            } else {
                "kafka-then-api"
            };
            let exec = format!("abuse-join-{}", uuid::Uuid::new_v4());
            let r = world.register(&exec, &world.seed_1(order), "").await?;
            world
                .expect_outcome(&r.wait_id, v1::Outcome::Completed)
                .await
        }));
        let timeouts = join_all((0..10).map(|_| async {
            let mut config = world.seed_1("none");
            config["data"]["timeout"] = json!(3);
            let exec = format!("abuse-timeout-{}", uuid::Uuid::new_v4());
            let r = world.register(&exec, &config, "").await?;
            world
                .expect_outcome_within(&r.wait_id, v1::Outcome::TimedOut, Duration::from_secs(30))
                .await
        }));
        let (joins, timeouts) = tokio::join!(joins, timeouts);
        joins
            .into_iter()
            .chain(timeouts)
            .collect::<Result<Vec<()>>>()
    };
    let (refused, decided) = tokio::join!(hostile, ordinary);
    let refused = refused?;
    decided?;
    let mut rss = Vec::new();
    for (i, instance) in instances.iter().enumerate() {
        let name = format!("instance-{}", i + 1);
        let pid = instance
            .proc
            .pid()
            .ok_or_else(|| anyhow::anyhow!("{name} is not running"))?;
        // A process that died has no resident set (a zombie has no VmRSS line).
        let kib = rss_kib(pid).map_err(|e| anyhow::anyhow!("{name} died: {e}"))?;
        ensure!(
            kib < MAX_RSS_KIB,
            "{name}: RSS {kib} KiB, over {MAX_RSS_KIB} KiB"
        );
        rss.push(kib / 1024);
    }
    Ok(format!(
        "{refused} hostile requests refused; 50 ordinary waits decided; RSS MiB {rss:?}"
    ))
}

/// One round of every hostile request, through instances 1 and 2; returns how many were
/// refused as they should be.
async fn hostile_round(world: &World, round: usize) -> Result<usize> {
    let mut waits = world.clients[round % 2].waits();
    let mut callbacks = world.callbacks[round % 2].callbacks();
    let mut refused = 0;
    let mut expect =
        |what: &str, answer: Result<(), tonic::Status>, codes: &[Code]| -> Result<()> {
            match answer {
                Err(s) if codes.contains(&s.code()) => {
                    refused += 1;
                    Ok(())
                }
                Err(s) => bail!("{what}: unexpected {:?}: {}", s.code(), s.message()),
                Ok(()) => bail!("{what}: accepted"),
            }
        };
    let register = |config: String| v1::RegisterWaitRequest {
        execution_id: format!("abuse-{}", uuid::Uuid::new_v4()),
        node_id: "hostile".into(),
        node_config_json: config,
        ..Default::default()
    };
    let deep_expression = json!({"type": "wait_events", "data": {
        "sources": {"cb": {"type": "callback"}},
        "aggregationStrategy": {"type": "expression",
            "expression": format!("{}cb{}", "(".repeat(3000), ")".repeat(3000))}
    }});
    let answer = waits
        .register_wait(register(deep_expression.to_string()))
        .await;
    expect(
        "deep expression",
        answer.map(drop),
        &[Code::InvalidArgument],
    )?;
    let duplicated = r#"{"type": "wait_events", "data": {"timeout": 5, "timeout": 60}}"#;
    let answer = waits.register_wait(register(duplicated.into())).await;
    expect("duplicated key", answer.map(drop), &[Code::InvalidArgument])?;
    let template = json!({"type": "wait_events", "data": {"apiCall": {
        "url": "https://x.example/a",
        "body": {"x": "{% for i in range(100000) %}{% for j in range(100000) %}xxxxxxxx{% endfor %}{% endfor %}"}
    }}});
    let answer = waits.register_wait(register(template.to_string())).await;
    expect(
        "runaway template",
        answer.map(drop),
        &[Code::InvalidArgument],
    )?;
    let deep = format!("{}1{}", "[".repeat(127), "]".repeat(127));
    let answer = callbacks
        .deliver_event(v1::DeliverEventRequest {
            correlation_id: format!("abuse-early-{round}"),
            execution_id: "x".into(),
            source: "cb".into(),
            payload_json: deep.clone(),
            event_key: "k".into(),
            ..Default::default()
        })
        .await;
    expect("deep payload", answer.map(drop), &[Code::InvalidArgument])?;
    let answer = callbacks
        .deliver_api_response(v1::DeliverApiResponseRequest {
            correlation_id: format!("abuse-early-{round}"),
            execution_id: "x".into(),
            http_status: 200,
            body: deep.into_bytes(),
            idempotency_key: "k".into(),
            ..Default::default()
        })
        .await;
    expect("deep API body", answer.map(drop), &[Code::InvalidArgument])?;
    let answer = callbacks
        .deliver_event(v1::DeliverEventRequest {
            correlation_id: "abuse-huge".into(),
            execution_id: "x".into(),
            source: "cb".into(),
            payload_json: format!(r#"{{"x":"{}"}}"#, "x".repeat(5 * 1024 * 1024)),
            event_key: "k".into(),
            ..Default::default()
        })
        .await;
    expect(
        "oversized message",
        answer.map(drop),
        &[Code::ResourceExhausted],
    )?;
    // A wait on a topic that does not exist must not disturb the topics that do.
    let missing = json!({"type": "wait_events", "data": {
        "kafkaEvent": {"topic": format!("abuse-missing-{}", uuid::Uuid::new_v4())}, "timeout": 60
    }});
    let victim = waits
        .register_wait(register(missing.to_string()))
        .await?
        .into_inner();
    let answer = waits
        .cancel_wait(v1::CancelWaitRequest {
            key: Some(v1::cancel_wait_request::Key::WaitId(victim.wait_id)),
            reason: "r".repeat(3 * 1024 * 1024),
            ..Default::default()
        })
        .await;
    expect("3 MB reason", answer.map(drop), &[Code::ResourceExhausted])?;
    // Records no wait can use, on the topic the ordinary joins read: NUL bytes, deep JSON,
    // not JSON at all.
    for payload in [
        b"abc\x00def".to_vec(),
        format!("{}1{}", "[".repeat(200), "]".repeat(200)).into_bytes(),
        format!(r#"{{"correlation_id": "abuse-nul-{round}\u0000", "execution_id": "x"}}"#)
            .into_bytes(),
    ] {
        world
            .external
            .producer
            .send(
                rdkafka::producer::FutureRecord::<str, [u8]>::to(SERVICE_TOPIC)
                    .key("abuse")
                    .payload(&payload),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| anyhow::anyhow!("publishing: {e}"))?;
    }
    Ok(refused)
}

/// The resident set of process `pid`, in KiB.
fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmRSS for pid {pid}"))
}
