//! Two instances on one PostgreSQL database receive the same events concurrently for a
//! thousand waits: exactly one resume per wait, none lost, none twice. Also: instances starting
//! at once migrate safely, a timeout racing the last event decides each wait once, and events
//! racing their own registration are never lost.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use anyhow::{Result, ensure};
use futures_util::StreamExt;
use rendezvous_grpc_api::v1;
use rendezvous_tests::{Backend, Engine, TestApp, TestDatabase, seed};
use serde_json::json;

const WAITS: usize = 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_one_resume_per_wait() -> Result<()> {
    let db = TestDatabase::create(Backend::Postgres).await?;
    // Both start (and migrate) at once.
    let (a, b) = tokio::join!(TestApp::start(&db.url, &[]), TestApp::start(&db.url, &[]));
    let (a, b) = (a?, b?);
    let mut engine_a = Engine::connect(&a.client, 256).await?;
    let mut engine_b = Engine::connect(&b.client, 256).await?;
    let apps = [a, b];

    let config = seed("01-wait-for-both.json");
    let registered: Vec<v1::RegisterWaitResponse> = futures_util::stream::iter(0..WAITS)
        .map(|i| {
            let mut app = TestApp::clone_clients(&apps[i % 2]);
            let config = config.clone();
            async move { app.register(&format!("exec-{i}"), &config).await }
        })
        .buffered(32) // in order: registered[i] is exec-i
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_>>()?;

    // Every event goes to both instances at once: each is a duplicate on one of them.
    let deliveries = registered.iter().enumerate().flat_map(|(i, r)| {
        let exec = format!("exec-{i}");
        [0usize, 1].into_iter().flat_map(move |instance| {
            let (exec, correlation) = (exec.clone(), r.correlation_id.clone());
            [
                ("api", exec.clone(), correlation.clone(), instance),
                ("kafka", exec, correlation, instance),
            ]
        })
    });
    let results: Vec<Result<v1::DeliveryResult>> = futures_util::stream::iter(deliveries)
        .map(|(source, exec, correlation, instance)| {
            let mut app = TestApp::clone_clients(&apps[instance]);
            async move {
                Ok(if source == "api" {
                    app.api_response(&correlation, &exec, "api-1")
                        .await?
                        .result()
                } else {
                    app.event(
                        &correlation,
                        &exec,
                        "kafka",
                        "kafka-1",
                        json!({"execution_id": exec, "event_type": "action.completed"}),
                    )
                    .await?
                    .result()
                })
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let mut counts: HashMap<v1::DeliveryResult, usize> = HashMap::new();
    for r in results {
        *counts.entry(r?).or_default() += 1;
    }
    ensure!(
        counts.get(&v1::DeliveryResult::Completed) == Some(&WAITS),
        "one completing delivery per wait: {counts:?}"
    );
    ensure!(
        counts.get(&v1::DeliveryResult::Duplicate) == Some(&(2 * WAITS)),
        "every second copy is a duplicate: {counts:?}"
    );

    // Both engines together see every wait's resume exactly once (each acks what it gets).
    let mut resume_of: HashMap<String, String> = HashMap::new();
    let mut deliveries_seen = 0;
    while resume_of.len() < WAITS {
        let resume = tokio::select! {
            r = engine_a.next(Duration::from_secs(20)) => r?,
            r = engine_b.next(Duration::from_secs(20)) => r?,
        };
        deliveries_seen += 1;
        engine_a.ack(&resume).await?;
        engine_b.ack(&resume).await?;
        let previous = resume_of.insert(resume.wait_id.clone(), resume.resume_id.clone());
        ensure!(
            previous.is_none_or(|p| p == resume.resume_id),
            "wait {} decided twice",
            resume.wait_id
        );
        ensure!(resume.outcome() == v1::Outcome::Completed);
        ensure!(resume.events.len() == 2);
    }
    let expected: HashSet<&str> = registered.iter().map(|r| r.wait_id.as_str()).collect();
    let got: HashSet<&str> = resume_of.keys().map(String::as_str).collect();
    ensure!(expected == got, "resumes for exactly the registered waits");
    // Delivery is at least once: a resume whose ack was slower than the ack timeout may come
    // again, but always as the same decision (same resume id), never a new one.
    let drain_until = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < drain_until {
        let resume = tokio::select! {
            r = engine_a.next(Duration::from_secs(3)) => r,
            r = engine_b.next(Duration::from_secs(3)) => r,
        };
        let Ok(resume) = resume else { break };
        deliveries_seen += 1;
        ensure!(
            resume_of.get(&resume.wait_id) == Some(&resume.resume_id),
            "wait {} decided twice",
            resume.wait_id
        );
        engine_a.ack(&resume).await?;
    }
    ensure!(deliveries_seen >= WAITS);
    let [a, b] = apps;
    a.stop().await?;
    b.stop().await
}

/// Registrations on one instance racing both of their events on the other (same correlation
/// ids, sent at the same moment): whichever order the database sees — events buffered first,
/// registration first, or a registration batch and a buffering transaction at once — every
/// wait completes with both events. An early event stranded in the buffer would leave its wait
/// open and this test waiting for a resume.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_racing_their_registration_are_never_lost() -> Result<()> {
    const RACES: usize = 300;
    let db = TestDatabase::create(Backend::Postgres).await?;
    let (a, b) = tokio::join!(TestApp::start(&db.url, &[]), TestApp::start(&db.url, &[]));
    let (a, b) = (a?, b?);
    let mut engine = Engine::connect(&a.client, 256).await?;
    let config = seed("01-wait-for-both.json");
    let registered: Vec<String> = futures_util::stream::iter(0..RACES)
        .map(|i| {
            let (mut on_a, mut on_b) = (TestApp::clone_clients(&a), TestApp::clone_clients(&b));
            let config = config.to_string();
            async move {
                let (exec, correlation) = (format!("racer-{i}"), format!("racing-{i}"));
                let register = on_a.waits.register_wait(v1::RegisterWaitRequest {
                    execution_id: exec.clone(),
                    node_id: "node-1".into(),
                    node_config_json: config,
                    input_variables: rendezvous_tests::seed_variables(),
                    correlation_id: correlation.clone(),
                    ..Default::default()
                });
                let mut on_b2 = TestApp::clone_clients(&on_b);
                let api = on_b.api_response(&correlation, &exec, "api-1");
                let kafka = on_b2.event(
                    &correlation,
                    &exec,
                    "kafka",
                    "kafka-1",
                    json!({"execution_id": exec, "event_type": "action.completed"}),
                );
                let (registered, api, kafka) = tokio::join!(register, api, kafka);
                api?;
                kafka?;
                Ok::<_, anyhow::Error>(registered?.into_inner().wait_id)
            }
        })
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_>>()?;
    let mut completed: HashSet<String> = HashSet::new();
    while completed.len() < RACES {
        let resume = engine.next(Duration::from_secs(20)).await?;
        engine.ack(&resume).await?;
        ensure!(resume.outcome() == v1::Outcome::Completed, "{resume:?}");
        ensure!(resume.events.len() == 2, "{resume:?}");
        completed.insert(resume.wait_id.clone());
    }
    ensure!(completed == registered.into_iter().collect::<HashSet<_>>());
    a.stop().await?;
    b.stop().await
}

/// Records the decision a resume carries; a wait's later resumes must carry the same one.
fn decided_once(
    decisions: &mut HashMap<String, (String, v1::Outcome)>,
    resume: &v1::Resume,
) -> Result<()> {
    let decision = (resume.resume_id.clone(), resume.outcome());
    let first = decisions
        .entry(resume.wait_id.clone())
        .or_insert_with(|| decision.clone());
    ensure!(
        *first == decision,
        "a second decision: {first:?}, then {resume:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_racing_the_last_event_decides_once() -> Result<()> {
    let db = TestDatabase::create(Backend::Postgres).await?;
    let (a, b) = tokio::join!(TestApp::start(&db.url, &[]), TestApp::start(&db.url, &[]));
    let (mut a, mut b) = (a?, b?);
    let mut engine = Engine::connect(&a.client, 256).await?;
    let mut config = seed("01-wait-for-both.json");
    config["data"]["timeout"] = json!(1);
    let mut waits = Vec::new();
    for i in 0..40 {
        let r = a.register(&format!("race-{i}"), &config).await?;
        a.api_response(&r.correlation_id, &format!("race-{i}"), "api")
            .await?;
        waits.push(r);
    }
    // The last events land around the deadline, on the other instance, while both sweep.
    tokio::time::sleep(Duration::from_millis(950)).await;
    for (i, r) in waits.iter().enumerate() {
        let exec = format!("race-{i}");
        let _ = b
            .event(
                &r.correlation_id,
                &exec,
                "kafka",
                "k",
                json!({"execution_id": exec, "event_type": "action.completed"}),
            )
            .await?;
    }
    // Wait id -> its one decision: the resume id and the outcome. Delivery is at least once,
    // so a resume may come again (an ack that lands after the lease), but always the same one.
    let mut decisions: HashMap<String, (String, v1::Outcome)> = HashMap::new();
    while decisions.len() < waits.len() {
        let resume = engine.next(Duration::from_secs(10)).await?;
        engine.ack(&resume).await?;
        decided_once(&mut decisions, &resume)?;
    }
    let outcomes: HashMap<String, v1::Outcome> = decisions
        .iter()
        .map(|(wait, (_, outcome))| (wait.clone(), *outcome))
        .collect();
    for r in &waits {
        let w = a.get(&r.wait_id).await?;
        let outcome = outcomes[&r.wait_id];
        match outcome {
            v1::Outcome::Completed => {
                ensure!(w.received.len() == 2 && w.status() == v1::WaitStatus::Completed)
            }
            v1::Outcome::TimedOut => {
                ensure!(w.received.len() == 1 && w.status() == v1::WaitStatus::TimedOut);
                ensure!(
                    w.ignored.iter().any(|i| i.kind == "late"),
                    "the losing event is recorded as late"
                );
            }
            other => anyhow::bail!("unexpected outcome {other:?}"),
        }
    }
    // Nothing new comes: at most a redelivery of a decision already seen.
    while let Ok(resume) = engine.next(Duration::from_millis(500)).await {
        engine.ack(&resume).await?;
        decided_once(&mut decisions, &resume)?;
    }
    a.stop().await?;
    b.stop().await
}
