//! The Rust client's unary calls against a real instance: a registration made while the
//! instance is still starting succeeds through the client's retries, the same keys give the
//! same wait, and list, get and cancel behave as the contract says (a cancellation is not
//! retried, and a second one reports `already_decided`).

use std::time::Duration;

use anyhow::Result;
use rendezvous_app::{Application, Config};
use rendezvous_client::{Client, RetryPolicy, v1};
use rendezvous_tests::{Backend, TestDatabase, seed, seed_variables, test_config};
use tonic::Code;
use tonic::transport::Endpoint;

fn config_on(database_url: &str, port: u16) -> Result<Config> {
    let mut config = test_config(database_url, &[])?;
    config.server.listen = ([127, 0, 0, 1], port).into();
    Ok(config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_are_retried_until_the_instance_answers() -> Result<()> {
    let db = TestDatabase::create(Backend::Sqlite).await?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let channel = Endpoint::from_shared(format!("http://127.0.0.1:{port}"))?.connect_lazy();
    let client = Client::new(channel).with_retry(RetryPolicy {
        attempts: 20,
        initial_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(200),
    });
    // Nothing listens yet: the first attempts are UNAVAILABLE.
    let url = db.url.clone();
    let starting = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(400)).await;
        Application::build(config_on(&url, port)?).await?.spawn()
    });
    let request = v1::RegisterWaitRequest {
        execution_id: "exec-r".into(),
        node_id: "node-1".into(),
        node_config_json: seed("01-wait-for-both.json").to_string(),
        input_variables: seed_variables(),
        ..Default::default()
    };
    let first = client.register_wait(request.clone()).await?;
    assert!(first.created);
    let running = starting.await??;
    // The same keys: the same wait, not created again.
    let again = client.register_wait(request).await?;
    assert_eq!(
        (again.wait_id.as_str(), again.created),
        (first.wait_id.as_str(), false)
    );

    // Without retries, a refusal is the service's answer as it is.
    let refused = client
        .clone()
        .with_retry(RetryPolicy::never())
        .register_wait(v1::RegisterWaitRequest::default())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);

    let page = client
        .list_waits(v1::ListWaitsRequest {
            execution_id: "exec-r".into(),
            ..Default::default()
        })
        .await?;
    assert_eq!(page.waits.len(), 1);
    let cancel = v1::CancelWaitRequest {
        key: Some(v1::cancel_wait_request::Key::WaitId(first.wait_id.clone())),
        reason: "withdrawn".into(),
        ..Default::default()
    };
    let cancelled = client.cancel_wait(cancel.clone()).await?;
    assert!(!cancelled.already_decided);
    let twice = client.cancel_wait(cancel).await?;
    assert!(
        twice.already_decided,
        "a second cancellation changes nothing"
    );
    let wait = client.get_wait_by_id(&first.wait_id).await?;
    assert_eq!(wait.status(), v1::WaitStatus::Cancelled);
    assert_eq!(wait.reason, "withdrawn");
    running.stop().await
}
