//! Health that tells the truth: gRPC health, `/readyz` and `rendezvous_ready` flip to
//! NOT_SERVING while the database is unreachable and back when it returns; `/livez` stays up.
//!
//! `rendezvous_ready` is per process: this file holds one test.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rendezvous_tests::proxy::TcpProxy;
use rendezvous_tests::{Backend, TestApp, TestDatabase, http_get, prometheus_samples};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const WAIT: Duration = Duration::from_secs(30);

/// The database goes away (its connections cut, new ones refused): gRPC health says
/// NOT_SERVING for the server and both services, `/readyz` 503 with the reason, the
/// `rendezvous_ready` gauge 0, while `/livez` stays 200. The database comes back: all three
/// return to serving. (Draining is covered by `admin.rs`'s unit test: here the window
/// between the signal and the end of the server is too short to observe.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_follows_the_database_and_draining() -> Result<()> {
    let db = TestDatabase::create(Backend::Postgres).await?;
    let proxy = TcpProxy::start("127.0.0.1:5432".parse()?).await?;
    let url = db.url.replace("127.0.0.1:5432", &proxy.addr.to_string());
    anyhow::ensure!(
        url != db.url,
        "the test database is not at 127.0.0.1:5432: {}",
        db.url
    );
    let app = TestApp::start(
        &url,
        &[
            ("RENDEZVOUS__ADMIN__HEALTH_INTERVAL", "200ms"),
            ("RENDEZVOUS__DATABASE__CONNECT_TIMEOUT", "1s"),
            ("RENDEZVOUS__SERVER__SHUTDOWN_GRACE", "1s"),
        ],
    )
    .await?;
    let admin = app.admin.context("admin listener")?;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", app.addr))?
        .connect()
        .await?;
    let health = HealthClient::new(channel);
    let services = [
        "",
        "rendezvous.v1.WaitService",
        "rendezvous.v1.CallbackService",
    ];
    let statuses = |mut health: HealthClient<tonic::transport::Channel>| async move {
        let mut out = Vec::new();
        for service in services {
            let answer = health
                .check(HealthCheckRequest {
                    service: service.into(),
                })
                .await?
                .into_inner();
            out.push(answer.status());
        }
        Ok::<_, anyhow::Error>(out)
    };
    let until = |want: ServingStatus, health: HealthClient<tonic::transport::Channel>| async move {
        let deadline = Instant::now() + WAIT;
        loop {
            let got = statuses(health.clone()).await?;
            if got.iter().all(|s| *s == want) {
                return Ok::<_, anyhow::Error>(());
            }
            if Instant::now() > deadline {
                bail!("health is {got:?}, not {want:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    until(ServingStatus::Serving, health.clone()).await?;
    assert_eq!(http_get(admin, "/readyz").await?.0, 200);

    proxy.cut();
    until(ServingStatus::NotServing, health.clone()).await?;
    let (status, body) = http_get(admin, "/readyz").await?;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("database unreachable"), "{body}");
    assert_eq!(http_get(admin, "/livez").await?.0, 200);
    let samples = prometheus_samples(&http_get(admin, "/metrics").await?.1);
    assert_eq!(samples.get("rendezvous_ready"), Some(&0.0));

    proxy.restore();
    until(ServingStatus::Serving, health.clone()).await?;
    assert_eq!(http_get(admin, "/readyz").await?.0, 200);
    let samples = prometheus_samples(&http_get(admin, "/metrics").await?.1);
    assert_eq!(samples.get("rendezvous_ready"), Some(&1.0));
    drop(health);
    app.stop().await
}
