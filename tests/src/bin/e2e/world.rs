//! The world the scenarios run in: the fake external service (a real HTTP server that
//! answers through the callback RPC and publishes to Kafka), the fake engine, and the clients
//! of every instance.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Result, bail, ensure};
use rdkafka::producer::FutureProducer;
use rendezvous_client::v1::wait_service_client::WaitServiceClient;
use rendezvous_client::{Client, ResumeFeed, Transport, v1};
use rendezvous_tests::procs::{api_response, publish, retryable};
use rendezvous_tests::{seed, seed_variables};
use serde_json::{Value, json};
use tonic::transport::Endpoint;
/// The fake external service: gets the API call, then (per the URL path) answers through the
/// callback RPC and publishes the Kafka event in the scenario's order.
#[derive(Clone)]
pub(crate) struct External {
    pub(crate) callbacks: Vec<Client>,
    pub(crate) producer: FutureProducer,
    pub(crate) calls: Arc<Mutex<HashMap<String, usize>>>,
    /// Correlation id → when the external service began sending the wait's last event.
    pub(crate) last_event: Arc<Mutex<HashMap<String, Instant>>>,
}

impl External {
    /// Publishes the service's Kafka event, as a producer does: retried while the broker is
    /// away (a restart), for up to a minute.
    pub(crate) async fn publish(&self, correlation_id: &str, execution_id: &str) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match publish(&self.producer, correlation_id, execution_id).await {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() > deadline => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
    }

    /// Answers through the callback gateway RPC of a random instance, as a gateway does:
    /// `UNAVAILABLE` (an instance down, the database away) is retried, on any instance, for
    /// up to a minute.
    pub(crate) async fn callback(&self, correlation_id: &str, execution_id: &str) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let client = &self.callbacks[fastrand::usize(..self.callbacks.len())];
            let answered = client
                .deliver_api_response(api_response(correlation_id, execution_id))
                .await;
            match answered {
                Ok(_) => return Ok(()),
                Err(s) if retryable(&s) && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(s) => bail!("DeliverApiResponse: {s}"),
            }
        }
    }

    pub(crate) fn last_event_now(&self, correlation_id: &str) {
        self.last_event
            .lock()
            .expect("lock")
            .insert(correlation_id.to_owned(), Instant::now());
    }

    /// `order`: "api-then-kafka", "kafka-then-api" (both sent before the HTTP call returns),
    /// "reply-first" (the call returns, then both events follow), "none" (the scenario sends
    /// the events itself).
    pub(crate) async fn handle(
        &self,
        order: &str,
        correlation_id: String,
        execution_id: String,
    ) -> Result<()> {
        *self
            .calls
            .lock()
            .expect("lock")
            .entry(correlation_id.clone())
            .or_default() += 1;
        match order {
            "api-then-kafka" => {
                self.callback(&correlation_id, &execution_id).await?;
                self.last_event_now(&correlation_id);
                self.publish(&correlation_id, &execution_id).await
            }
            "kafka-then-api" => {
                self.publish(&correlation_id, &execution_id).await?;
                tokio::time::sleep(Duration::from_millis(50)).await;
                self.last_event_now(&correlation_id);
                self.callback(&correlation_id, &execution_id).await
            }
            "reply-first" => {
                let me = self.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    let sent = async {
                        me.callback(&correlation_id, &execution_id).await?;
                        me.last_event_now(&correlation_id);
                        me.publish(&correlation_id, &execution_id).await
                    };
                    if let Err(e) = sent.await {
                        eprintln!("e2e: external service: {e:#}");
                    }
                });
                Ok(())
            }
            _ => Ok(()),
        }
    }

    pub(crate) async fn serve(self) -> Result<String> {
        use axum::extract::Path as UrlPath;
        use axum::http::HeaderMap;
        let handler = move |UrlPath(order): UrlPath<String>, headers: HeaderMap| {
            let me = self.clone();
            async move {
                let get = |k: &str| {
                    headers
                        .get(k)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned()
                };
                let (c, e) = (get("x-correlation-id"), get("x-execution-id"));
                // Both events before the HTTP call returns: they are sent before answering.
                // On a task of their own, as a real service would: a caller that goes away
                // (an instance SIGKILLed mid-call) must not cancel events half sent — the
                // API event delivered and the Kafka one never published, while the call,
                // its `api` source satisfied, is rightly not made again.
                let sent = tokio::spawn(async move { me.handle(&order, c, e).await })
                    .await
                    .unwrap_or_else(|e| Err(anyhow::anyhow!("handler task: {e}")));
                if let Err(err) = sent {
                    eprintln!("e2e: external service: {err:#}");
                    return (axum::http::StatusCode::SERVICE_UNAVAILABLE, "retry").into_response();
                }
                (axum::http::StatusCode::ACCEPTED, "accepted").into_response()
            }
        };
        use axum::response::IntoResponse;
        let app = axum::Router::new().route("/call/{order}", axum::routing::post(handler));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(url)
    }
}

/// Resumes seen by the fake engine over the whole run: wait id → resume ids and outcomes.
pub(crate) type Seen = Arc<Mutex<HashMap<String, Vec<(String, i32, Instant)>>>>;

/// The fake engine: the client crate's [`ResumeFeed`] over these endpoints (the first
/// first; the others when it goes away), recording every resume its handler gets. The feed
/// deduplicates redeliveries, so each wait's resume is recorded once.
pub(crate) fn engine(endpoints: Vec<Endpoint>, seen: Seen) {
    // The default tenant only: scenarios with a tenant of their own run their own engine.
    let feed = ResumeFeed::new(endpoints)
        .tenant("default")
        .max_in_flight(256)
        .dedupe_window(1_000_000)
        .backoff(Duration::from_millis(100), Duration::from_millis(500));
    let handler = move |resume: v1::Resume| {
        seen.lock()
            .expect("lock")
            .entry(resume.wait_id.clone())
            .or_default()
            .push((resume.resume_id.clone(), resume.outcome, Instant::now()));
        std::future::ready(Ok::<(), std::convert::Infallible>(()))
    };
    tokio::spawn(async move {
        if let Err(e) = feed.run(handler, std::future::pending::<()>()).await {
            eprintln!("e2e: the engine's resume feed stopped: {e}");
        }
    });
}

pub(crate) struct World {
    pub(crate) clients: Vec<Client>,
    pub(crate) callbacks: Vec<Client>,
    pub(crate) external_url: String,
    pub(crate) external: External,
    pub(crate) seen: Seen,
}

impl World {
    pub(crate) fn client(&self) -> WaitServiceClient<Transport> {
        self.clients[fastrand::usize(..self.clients.len())].waits()
    }

    pub(crate) async fn register(
        &self,
        execution_id: &str,
        config: &Value,
        correlation_id: &str,
    ) -> Result<v1::RegisterWaitResponse> {
        // An instance that is down (or loses its database) answers UNAVAILABLE: the engine
        // retries on any instance. Registration is idempotent per execution and node, so a
        // retry after a lost reply gets the same wait.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let registered = self
                .client()
                .register_wait(v1::RegisterWaitRequest {
                    execution_id: execution_id.into(),
                    node_id: "wait-1".into(),
                    node_config_json: config.to_string(),
                    input_variables: seed_variables(),
                    correlation_id: correlation_id.into(),
                    ..Default::default()
                })
                .await;
            match registered {
                Ok(r) => return Ok(r.into_inner()),
                Err(s) if retryable(&s) && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(s) => bail!("RegisterWait: {s}"),
            }
        }
    }

    pub(crate) fn seed_1(&self, order: &str) -> Value {
        let mut config = seed("01-wait-for-both.json");
        config["data"]["apiCall"]["url"] = json!(format!("{}/call/{order}", self.external_url));
        config
    }

    pub(crate) async fn resume_of(&self, wait_id: &str, within: Duration) -> Result<(String, i32)> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(first) = self
                .seen
                .lock()
                .expect("lock")
                .get(wait_id)
                .and_then(|v| v.first().cloned())
            {
                return Ok((first.0, first.1));
            }
            ensure!(
                Instant::now() < deadline,
                "no resume for wait {wait_id} within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub(crate) async fn expect_outcome(&self, wait_id: &str, outcome: v1::Outcome) -> Result<()> {
        self.expect_outcome_within(wait_id, outcome, Duration::from_secs(60))
            .await
    }

    pub(crate) async fn expect_outcome_within(
        &self,
        wait_id: &str,
        outcome: v1::Outcome,
        within: Duration,
    ) -> Result<()> {
        let (_, got) = self.resume_of(wait_id, within).await?;
        ensure!(
            got == outcome as i32,
            "wait {wait_id}: outcome {got}, expected {outcome:?}"
        );
        Ok(())
    }
}
