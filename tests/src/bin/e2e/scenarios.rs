//! The named scenarios: each drives the instances the way an engine, a callback gateway and
//! the external service would, and checks what the engine receives.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use rendezvous_client::Client;
use rendezvous_grpc_api::v1;
use rendezvous_tests::procs::{Broker, Instance, psql};
use rendezvous_tests::{Engine, seed};
use serde_json::json;
use tonic::transport::Channel;

use crate::world::*;

pub(crate) async fn scenario_seed_1(world: &World, order: &str) -> Result<()> {
    let exec = format!("exec-{}", uuid::Uuid::new_v4());
    let r = world.register(&exec, &world.seed_1(order), "").await?;
    world
        .expect_outcome(&r.wait_id, v1::Outcome::Completed)
        .await
}

pub(crate) async fn scenario_duplicates_and_wrong_execution(world: &World) -> Result<()> {
    let exec = format!("exec-{}", uuid::Uuid::new_v4());
    let r = world.register(&exec, &world.seed_1("none"), "").await?;
    // Wrong execution id: refused, recorded, never applied.
    let wrong = world.callbacks[0]
        .deliver_api_response(v1::DeliverApiResponseRequest {
            correlation_id: r.correlation_id.clone(),
            execution_id: "someone-else".into(),
            http_status: 200,
            idempotency_key: "wrong".into(),
            ..Default::default()
        })
        .await;
    ensure!(
        wrong.is_err_and(|s| s.code() == tonic::Code::FailedPrecondition),
        "a wrong execution id is refused"
    );
    // Duplicates on both channels, through different instances.
    for _ in 0..3 {
        world.external.callback(&r.correlation_id, &exec).await?;
        world.external.publish(&r.correlation_id, &exec).await?;
    }
    world
        .expect_outcome(&r.wait_id, v1::Outcome::Completed)
        .await?;
    let w = world
        .client()
        .get_wait(v1::GetWaitRequest {
            key: Some(v1::get_wait_request::Key::WaitId(r.wait_id.clone())),
            tenant_id: String::new(),
        })
        .await?
        .into_inner()
        .wait
        .context("GetWait answered without a wait")?;
    ensure!(
        w.ignored.iter().any(|i| i.kind == "execution_mismatch"),
        "the mismatch is recorded on the wait"
    );
    Ok(())
}

pub(crate) async fn scenario_events_before_registration(world: &World) -> Result<()> {
    let exec = format!("exec-{}", uuid::Uuid::new_v4());
    let correlation_id = format!("order-{}", uuid::Uuid::new_v4());
    world.external.publish(&correlation_id, &exec).await?;
    world.external.callback(&correlation_id, &exec).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let r = world
        .register(&exec, &world.seed_1("none"), &correlation_id)
        .await?;
    world
        .expect_outcome(&r.wait_id, v1::Outcome::Completed)
        .await
}

pub(crate) async fn scenario_timeout_and_cancel(world: &World) -> Result<()> {
    let mut config = world.seed_1("none");
    config["data"]["timeout"] = json!(2);
    let timed = world
        .register(&format!("exec-{}", uuid::Uuid::new_v4()), &config, "")
        .await?;
    config["data"]["onTimeout"] = json!("resume_with_partial");
    let partial = world
        .register(&format!("exec-{}", uuid::Uuid::new_v4()), &config, "")
        .await?;
    let cancelled = world
        .register(
            &format!("exec-{}", uuid::Uuid::new_v4()),
            &world.seed_1("none"),
            "",
        )
        .await?;
    world
        .client()
        .cancel_wait(v1::CancelWaitRequest {
            key: Some(v1::cancel_wait_request::Key::WaitId(
                cancelled.wait_id.clone(),
            )),
            ..Default::default()
        })
        .await?;
    world
        .expect_outcome(&timed.wait_id, v1::Outcome::TimedOut)
        .await?;
    world
        .expect_outcome(&partial.wait_id, v1::Outcome::Partial)
        .await?;
    world
        .expect_outcome(&cancelled.wait_id, v1::Outcome::Cancelled)
        .await
}

pub(crate) async fn scenario_seed_configs_and_strategies(world: &World) -> Result<()> {
    // Seed 2 (any): the Kafka event alone completes it.
    let mut any = seed("02-wait-for-any.json");
    any["data"]["apiCall"]["url"] = json!(format!("{}/call/none", world.external_url));
    let exec = format!("exec-{}", uuid::Uuid::new_v4());
    let r = world.register(&exec, &any, "").await?;
    world.external.publish(&r.correlation_id, &exec).await?;
    world
        .expect_outcome(&r.wait_id, v1::Outcome::Completed)
        .await?;
    // Seed 3 (api only): the callback alone completes it.
    let mut api_only = seed("03-api-only.json");
    api_only["data"]["apiCall"]["url"] =
        json!(format!("{}/call/api-then-kafka", world.external_url));
    let r = world
        .register(&format!("exec-{}", uuid::Uuid::new_v4()), &api_only, "")
        .await?;
    world
        .expect_outcome(&r.wait_id, v1::Outcome::Completed)
        .await?;
    // required_only and custom over the seed's two sources: the API response suffices.
    for strategy in [
        json!("required_only"),
        json!({"type": "custom", "sources": ["api"]}),
    ] {
        let mut config = world.seed_1("none");
        config["data"]["kafkaEvent"]["required"] = json!(false);
        config["data"]["aggregationStrategy"] = strategy;
        let exec = format!("exec-{}", uuid::Uuid::new_v4());
        let r = world.register(&exec, &config, "").await?;
        world.external.callback(&r.correlation_id, &exec).await?;
        world
            .expect_outcome(&r.wait_id, v1::Outcome::Completed)
            .await?;
    }
    Ok(())
}

/// The broker is SIGKILLed and restarted (durable storage: it keeps its log and the group's
/// offsets): a wait whose Kafka event was published just before the kill, one whose event is
/// published after the restart, and one registered after it, all complete.
pub(crate) async fn scenario_broker_restart(world: &World, broker: &mut Broker) -> Result<()> {
    let new_exec = || format!("exec-{}", uuid::Uuid::new_v4());
    let (exec_a, exec_b) = (new_exec(), new_exec());
    let published = world.register(&exec_a, &world.seed_1("none"), "").await?;
    let before = world.register(&exec_b, &world.seed_1("none"), "").await?;
    world
        .external
        .publish(&published.correlation_id, &exec_a)
        .await?;
    broker.restart().await?;
    world
        .external
        .callback(&published.correlation_id, &exec_a)
        .await?;
    world
        .external
        .callback(&before.correlation_id, &exec_b)
        .await?;
    world
        .external
        .publish(&before.correlation_id, &exec_b)
        .await?;
    let after = world
        .register(&new_exec(), &world.seed_1("kafka-then-api"), "")
        .await?;
    for wait in [&published, &before, &after] {
        world
            .expect_outcome_within(
                &wait.wait_id,
                v1::Outcome::Completed,
                Duration::from_secs(120),
            )
            .await
            .context("after the broker restart")?;
    }
    Ok(())
}

/// Every database connection of every instance is cut (`pg_terminate_backend`, as a failover
/// or a proxy restart does): the pools and the LISTEN connection reconnect, a wait registered
/// before the cut and one registered after it complete.
pub(crate) async fn scenario_database_drop(world: &World, database_url: &str) -> Result<()> {
    let exec = format!("exec-{}", uuid::Uuid::new_v4());
    let before = world.register(&exec, &world.seed_1("none"), "").await?;
    let cut = psql(
        database_url,
        &[
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
           WHERE datname = current_database() AND pid <> pg_backend_pid()",
        ],
    )?;
    let terminated: u32 = cut.trim().parse()?;
    ensure!(terminated > 0, "no connection to cut");
    world
        .external
        .callback(&before.correlation_id, &exec)
        .await?;
    world
        .external
        .publish(&before.correlation_id, &exec)
        .await?;
    let after = world
        .register(
            &format!("exec-{}", uuid::Uuid::new_v4()),
            &world.seed_1("api-then-kafka"),
            "",
        )
        .await?;
    for wait in [&before, &after] {
        world
            .expect_outcome(&wait.wait_id, v1::Outcome::Completed)
            .await
            .context("after the connections were cut")?;
    }
    Ok(())
}

/// An engine that disconnects without acking gets the resume again on reconnect (to another
/// instance); once acknowledged it never comes back.
pub(crate) async fn scenario_engine_reconnects(
    world: &World,
    instances: &[Instance],
) -> Result<()> {
    // A tenant of its own, so the always-on engine does not take these resumes.
    let tenant = format!("t-{}", fastrand::u32(..));
    let exec = format!("exec-{}", uuid::Uuid::new_v4());
    let r = world
        .client()
        .register_wait(v1::RegisterWaitRequest {
            execution_id: exec.clone(),
            node_id: "wait-1".into(),
            node_config_json:
                json!({"type": "wait_events", "data": {"sources": {"done": {"type": "callback"}}}})
                    .to_string(),
            tenant_id: tenant.clone(),
            ..Default::default()
        })
        .await?
        .into_inner();
    world.callbacks[0]
        .deliver_event(v1::DeliverEventRequest {
            correlation_id: r.correlation_id.clone(),
            execution_id: exec,
            source: "done".into(),
            payload_json: "{}".into(),
            event_key: "e".into(),
            tenant_id: tenant.clone(),
        })
        .await?;
    let connect = |channel: Channel| {
        let tenant = tenant.clone();
        async move { Engine::connect_tenant(&Client::new(channel), &tenant, 8).await }
    };
    let within = Duration::from_secs(20);
    let mut engine = connect(instances[0].channel().await?).await?;
    let first = engine.next(within).await?;
    ensure!(first.wait_id == r.wait_id);
    drop(engine);
    let mut engine = connect(instances[1].channel().await?).await?;
    let again = engine.next(within).await?;
    ensure!(
        again.resume_id == first.resume_id && again.delivery_attempt >= 2,
        "redelivered after the reconnect"
    );
    engine.ack(&again).await?;
    engine.close().await?;
    let mut engine = connect(instances[2].channel().await?).await?;
    engine.expect_nothing(Duration::from_secs(3)).await?;
    Ok(())
}
