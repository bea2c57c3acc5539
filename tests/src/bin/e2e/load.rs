//! The load phase: many waits through random instances while one is SIGKILLed and restarted.

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use rendezvous_grpc_api::v1;
use rendezvous_tests::procs::Instance;

use crate::world::*;

/// The load phase: `n` waits through random instances (at most 128 registrations in flight),
/// events in random order; one instance is SIGKILLed half-way and restarted. Every wait must
/// be decided exactly once. Reports throughput and last-event-to-resume latency.
pub(crate) async fn load(world: &World, instances: &mut [Instance], n: usize) -> Result<String> {
    use futures_util::StreamExt as _;
    let started = Instant::now();
    let done = std::sync::atomic::AtomicUsize::new(0);
    let register = async {
        futures_util::stream::iter(0..n)
            .map(|i| {
                let done = &done;
                async move {
                    let order = if fastrand::bool() {
                        "api-then-kafka"
                    } else {
                        "kafka-then-api"
                    };
                    let r = world
                        .register(&format!("load-{i}"), &world.seed_1(order), "")
                        .await;
                    done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    r
                }
            })
            .buffer_unordered(128)
            .collect::<Vec<_>>()
            .await
    };
    let kill = async {
        while done.load(std::sync::atomic::Ordering::Relaxed) < n / 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        instances[1].proc.kill();
        tokio::time::sleep(Duration::from_millis(500)).await;
        instances[1].restart().await
    };
    let (registered, killed) = tokio::join!(register, kill);
    killed?;
    let registered: Vec<v1::RegisterWaitResponse> =
        registered.into_iter().collect::<Result<_>>()?;
    let registered_in = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let resumed = {
            let seen = world.seen.lock().expect("lock");
            registered
                .iter()
                .filter(|r| seen.contains_key(&r.wait_id))
                .count()
        };
        if resumed == n {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "only {resumed} of {n} waits resumed within 600 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let elapsed = started.elapsed();
    let decided = operator_view(instances).await?;
    let seen = world.seen.lock().expect("lock");
    let mut resume_ids = std::collections::HashSet::new();
    for r in &registered {
        let resumes = &seen[&r.wait_id];
        let first = &resumes[0].0;
        ensure!(
            resumes
                .iter()
                .all(|(id, outcome, _)| id == first && *outcome == v1::Outcome::Completed as i32),
            "wait {} decided twice or not completed: {resumes:?}",
            r.wait_id
        );
        // The engine's ResumeFeed was subscribed on the killed instance: redeliveries after
        // the kill are its to skip, so its handler saw each resume once.
        ensure!(
            resumes.len() == 1,
            "wait {}: the feed's handler got its resume {} times: {resumes:?}",
            r.wait_id,
            resumes.len()
        );
        resume_ids.insert(first.clone());
    }
    ensure!(
        resume_ids.len() == n,
        "{} distinct resumes for {n} waits",
        resume_ids.len()
    );
    // From the moment the external service began sending a wait's last event to the resume
    // reaching the engine (redeliveries after the SIGKILL included).
    let last_event = world.external.last_event.lock().expect("lock");
    let mut latencies: Vec<Duration> = registered
        .iter()
        .filter_map(|r| {
            Some(
                seen[&r.wait_id][0]
                    .2
                    .saturating_duration_since(*last_event.get(&r.correlation_id)?),
            )
        })
        .collect();
    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * p) as usize)
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    Ok(format!(
        "{n} waits, exactly {n} resumes; {decided} decisions counted on /metrics; {:.0} joins/s ({:.1} s, registered in {:.1} s); last event to resume p50 {:.0} ms p95 {:.0} ms p99 {:.0} ms max {:.0} ms ({} measured); one instance SIGKILLed and restarted",
        n as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64(),
        registered_in.as_secs_f64(),
        pct(0.50),
        pct(0.95),
        pct(0.99),
        pct(1.0),
        latencies.len()
    ))
}

/// What an operator sees after the load, on each instance's admin listener: ready on
/// `/readyz`, `rendezvous_ready 1` on `/metrics`, and the decisions it counted (a restarted
/// instance counts from its restart). Returns the decisions of every instance together.
async fn operator_view(instances: &[Instance]) -> Result<f64> {
    let mut decided = 0.0;
    for instance in instances {
        let admin = std::net::SocketAddr::from(([127, 0, 0, 1], instance.admin_port()));
        let (status, body) = rendezvous_tests::http_get(admin, "/readyz").await?;
        ensure!(
            status == 200,
            "instance on port {}: /readyz {status} {body}",
            instance.port()
        );
        let samples = rendezvous_tests::prometheus_samples(
            &rendezvous_tests::http_get(admin, "/metrics").await?.1,
        );
        ensure!(
            samples.get("rendezvous_ready") == Some(&1.0),
            "instance on port {}: not ready on /metrics",
            instance.port()
        );
        decided += samples
            .iter()
            .filter(|(series, _)| series.starts_with("rendezvous_decisions_total{"))
            .map(|(_, v)| v)
            .sum::<f64>();
    }
    ensure!(decided > 0.0, "no decision counted on any instance");
    Ok(decided)
}
