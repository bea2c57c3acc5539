//! Black-box tests of Rendezvous: they start the real application on loopback (port 0) on a
//! fresh SQLite file or a fresh PostgreSQL database, and drive it over gRPC the way a workflow
//! engine and a callback gateway do. This file holds the helpers; tests live in `tests/`.

pub mod http;
pub mod procs;
pub mod proxy;
pub mod security;

use std::time::Duration;

use anyhow::{Context, Result, bail};
use rendezvous_app::{Application, Command, Config, Running};
use rendezvous_client::v1;
use rendezvous_client::v1::callback_service_client::CallbackServiceClient;
use rendezvous_client::v1::wait_service_client::WaitServiceClient;
use rendezvous_client::{Client, RetryPolicy, Subscription};

pub use http::Door;
use tonic::transport::Channel;

pub use rendezvous_persistence::testing::{Backend, POSTGRES_ADMIN_URL, TestDatabase};

/// Test settings: fast sweeps, short ack timeouts, quiet logs.
pub fn test_config(database_url: &str, extra_env: &[(&str, &str)]) -> Result<Config> {
    let args: Vec<String> = ["--listen", "127.0.0.1:0", "--database-url", database_url]
        .iter()
        .map(ToString::to_string)
        .collect();
    let mut env: Vec<(String, String)> = [
        ("RENDEZVOUS__SWEEPER__INTERVAL", "50ms"),
        ("RENDEZVOUS__RESUME__ACK_TIMEOUT", "1500ms"),
        ("RENDEZVOUS__RESUME__POLL_INTERVAL", "200ms"),
        ("RENDEZVOUS__SERVER__SHUTDOWN_GRACE", "2s"),
        ("RENDEZVOUS__DATABASE__MAX_CONNECTIONS", "8"),
        ("RENDEZVOUS__KAFKA__ENABLED", "false"),
        ("RENDEZVOUS__ADMIN__LISTEN", "127.0.0.1:0"),
        // The seed configs call https://external-service.com, unreachable here: calls are
        // recorded but not made. The API-call tests turn them on against a fake service.
        ("RENDEZVOUS__API__ENABLED", "false"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    env.extend(
        extra_env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    match Config::load(&args, env)? {
        Command::Run(config) => Ok(*config),
        Command::Print(text) => bail!("unexpected output: {text}"),
        Command::Operate(operation) => bail!("unexpected operator command: {operation:?}"),
    }
}

/// One running instance and clients for it.
pub struct TestApp {
    /// Where it listens.
    pub addr: std::net::SocketAddr,
    /// Where its admin listener listens (`/metrics`, `/livez`, `/readyz`), when enabled.
    pub admin: Option<std::net::SocketAddr>,
    /// The engine's client.
    pub waits: WaitServiceClient<Channel>,
    /// The callback gateway's client.
    pub callbacks: CallbackServiceClient<Channel>,
    /// The client crate's client of it (no credential).
    pub client: Client,
    /// Where [`Self::api_response`] and [`Self::event`] deliver: gRPC or HTTP.
    pub door: Door,
    running: Option<Running>,
}

impl TestApp {
    /// Starts an instance on `database_url`.
    pub async fn start(database_url: &str, extra_env: &[(&str, &str)]) -> Result<Self> {
        let app = Application::build(test_config(database_url, extra_env)?).await?;
        Self::from_running(app.spawn()?).await
    }

    /// Starts an instance on `database_url` that takes callbacks signed with a fresh webhook
    /// secret (of every tenant), and delivers events through the HTTP door
    /// ([`http::Door::Http`]) with it.
    pub async fn start_http(database_url: &str, extra_env: &[(&str, &str)]) -> Result<Self> {
        let signer = http::Signer::random();
        let mut config = test_config(database_url, extra_env)?;
        let file = std::env::temp_dir().join(format!(
            "rendezvous-webhook-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::write(&file, &signer.text)?;
        config.auth.webhooks = vec![rendezvous_app::config::WebhookEntry {
            name: "tests".into(),
            secret: rendezvous_app::config::SecretEntry {
                file: Some(file.clone()),
                env: None,
            },
            tenants: vec!["*".into()],
        }];
        // Read once at start-up: the file is not needed afterwards.
        let app = Application::build(config).await;
        let _ = std::fs::remove_file(&file);
        let mut app = Self::from_running(app?.spawn()?).await?;
        app.door = Door::Http(signer);
        Ok(app)
    }

    /// Clients for an instance already running.
    pub async fn from_running(running: Running) -> Result<Self> {
        let addr = running.addr;
        let admin = running.admin_addr;
        let channel = Channel::from_shared(format!("http://{addr}"))?
            .connect()
            .await?;
        Ok(Self {
            addr,
            admin,
            waits: WaitServiceClient::new(channel.clone()),
            callbacks: CallbackServiceClient::new(channel.clone()),
            // No retries: a test sees every status the service answers with.
            client: Client::new(channel).with_retry(RetryPolicy::never()),
            door: Door::Grpc,
            running: Some(running),
        })
    }

    /// Another handle on the same instance's clients (not owning the instance).
    pub fn clone_clients(&self) -> Self {
        Self {
            addr: self.addr,
            admin: self.admin,
            waits: self.waits.clone(),
            callbacks: self.callbacks.clone(),
            client: self.client.clone(),
            door: self.door.clone(),
            running: None,
        }
    }

    /// Stops it gracefully.
    pub async fn stop(mut self) -> Result<()> {
        match self.running.take() {
            Some(running) => running.stop().await,
            None => Ok(()),
        }
    }

    /// Registers a wait with a node config.
    pub async fn register(
        &mut self,
        execution_id: &str,
        config: &serde_json::Value,
    ) -> Result<v1::RegisterWaitResponse> {
        Ok(self
            .client
            .register_wait(v1::RegisterWaitRequest {
                execution_id: execution_id.into(),
                node_id: "node-1".into(),
                node_config_json: config.to_string(),
                input_variables: seed_variables(),
                ..Default::default()
            })
            .await?)
    }

    /// Delivers an API response through the callback gateway RPC.
    pub async fn api_response(
        &mut self,
        correlation_id: &str,
        execution_id: &str,
        key: &str,
    ) -> Result<v1::DeliverApiResponseResponse, tonic::Status> {
        let body = br#"{"result":"ok"}"#;
        match &self.door {
            Door::Grpc => {
                self.client
                    .deliver_api_response(v1::DeliverApiResponseRequest {
                        correlation_id: correlation_id.into(),
                        execution_id: execution_id.into(),
                        http_status: 200,
                        body: body.to_vec(),
                        idempotency_key: key.into(),
                        ..Default::default()
                    })
                    .await
            }
            Door::Http(signer) => {
                let path = format!(
                    "/v1/callbacks/api-response?{}",
                    http::query(&[
                        ("correlation_id", correlation_id),
                        ("execution_id", execution_id)
                    ])
                );
                self.http_delivery(signer, &path, key, body)
                    .await
                    .map(Into::into)
            }
        }
    }

    /// Posts a signed callback and reads its answer as the gRPC door would give it.
    async fn http_delivery(
        &self,
        signer: &http::Signer,
        path: &str,
        key: &str,
        body: &[u8],
    ) -> Result<http::Delivered, tonic::Status> {
        let mut headers = signer.headers(key, http::now(), body);
        headers.push(("content-type".into(), "application/json".into()));
        http::post(self.addr, path, &headers, body)
            .await
            .and_then(|a| a.delivery())
            .map_err(|e| tonic::Status::internal(format!("the HTTP door: {e:#}")))?
    }

    /// Delivers an event for a named source (the service's ingest use case, as the Kafka
    /// ingress will).
    pub async fn event(
        &mut self,
        correlation_id: &str,
        execution_id: &str,
        source: &str,
        key: &str,
        payload: serde_json::Value,
    ) -> Result<v1::DeliverEventResponse, tonic::Status> {
        match &self.door {
            Door::Grpc => {
                self.client
                    .deliver_event(v1::DeliverEventRequest {
                        correlation_id: correlation_id.into(),
                        execution_id: execution_id.into(),
                        source: source.into(),
                        payload_json: payload.to_string(),
                        event_key: key.into(),
                        ..Default::default()
                    })
                    .await
            }
            Door::Http(signer) => {
                let path = format!(
                    "/v1/callbacks/events/{source}?{}",
                    http::query(&[
                        ("correlation_id", correlation_id),
                        ("execution_id", execution_id)
                    ])
                );
                self.http_delivery(signer, &path, key, payload.to_string().as_bytes())
                    .await
                    .map(Into::into)
            }
        }
    }

    /// A wait by id.
    pub async fn get(&mut self, wait_id: &str) -> Result<v1::Wait> {
        Ok(self.client.get_wait_by_id(wait_id).await?)
    }

    /// Opens a resume stream.
    pub async fn subscribe(&mut self, max_in_flight: u32) -> Result<Engine> {
        Engine::connect(&self.client, max_in_flight).await
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            // Best effort when a test fails before stop().
            tokio::spawn(async move {
                let _ = running.stop().await;
            });
        }
    }
}

/// A fake workflow engine: one resume stream with explicit acks (the client crate's
/// [`Subscription`]), with the timeouts a test wants.
pub struct Engine {
    subscription: Subscription,
}

impl Engine {
    /// Subscribes through a client.
    pub async fn connect(client: &Client, max_in_flight: u32) -> Result<Self> {
        Self::connect_tenant(client, "", max_in_flight).await
    }

    /// Subscribes for one tenant's resumes only (empty: every tenant).
    pub async fn connect_tenant(
        client: &Client,
        tenant_id: &str,
        max_in_flight: u32,
    ) -> Result<Self> {
        let subscription = client
            .subscribe(v1::Subscribe {
                tenant_id: tenant_id.to_owned(),
                max_in_flight,
            })
            .await?;
        Ok(Self { subscription })
    }

    /// The next resume, or an error after `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> Result<v1::Resume> {
        match tokio::time::timeout(timeout, self.subscription.next()).await {
            Err(_) => bail!("no resume within {timeout:?}"),
            Ok(Ok(Some(resume))) => Ok(resume),
            Ok(Ok(None)) => bail!("the resume stream ended"),
            Ok(Err(status)) => bail!("the resume stream failed: {status}"),
        }
    }

    /// Asserts that nothing arrives within `within`.
    pub async fn expect_nothing(&mut self, within: Duration) -> Result<()> {
        match tokio::time::timeout(within, self.subscription.next()).await {
            Err(_) => Ok(()),
            Ok(other) => bail!("expected no resume, got {other:?}"),
        }
    }

    /// Closes gracefully: every ack sent is processed, then the server ends the stream.
    pub async fn close(self) -> Result<()> {
        tokio::time::timeout(Duration::from_secs(10), self.subscription.close())
            .await
            .context("the server did not end the resume stream")??;
        Ok(())
    }

    /// Acknowledges a resume.
    pub async fn ack(&self, resume: &v1::Resume) -> Result<()> {
        Ok(self.subscription.ack(&resume.resume_id).await?)
    }
}

/// Reads a seed node config from the domain's fixtures.
pub fn seed(name: &str) -> serde_json::Value {
    let path = format!(
        "{}/../crates/domain/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(&path).expect("fixture exists"))
        .expect("fixture is JSON")
}

/// What the fake external service does with one request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// Answer with this status and JSON body.
    Json(u16, serde_json::Value),
    /// Answer with this status and a `Retry-After` header (seconds).
    RetryAfter(u16, u64),
    /// Answer with this status and this body as it is (`text/plain`; a hostile upstream).
    Text(u16, String),
    /// Wait this long, then answer 200 (to make the caller time out).
    Slow(Duration),
    /// First deliver the API response through the callback gateway RPC, then answer 200.
    CallbackFirst,
}

/// One request the fake external service received.
#[derive(Debug, Clone)]
pub struct Received {
    /// Method and path with query.
    pub method: String,
    /// Path and query.
    pub uri: String,
    /// Headers (lowercase names).
    pub headers: std::collections::BTreeMap<String, String>,
    /// The JSON body, if any.
    pub body: Option<serde_json::Value>,
    /// When it arrived.
    pub at: std::time::Instant,
}

/// A fake external service: a real HTTP server on 127.0.0.1 answering scripted replies (the
/// last one repeats) and recording every request.
pub struct FakeApi {
    /// Its base URL.
    pub url: String,
    /// What it received.
    pub received: std::sync::Arc<std::sync::Mutex<Vec<Received>>>,
}

impl FakeApi {
    /// Starts one. `callbacks` is used for [`Reply::CallbackFirst`].
    pub async fn start(
        replies: Vec<Reply>,
        callbacks: Option<CallbackServiceClient<Channel>>,
    ) -> Result<Self> {
        use axum::body::Bytes;
        use axum::http::{HeaderMap, Method, StatusCode, Uri};
        use axum::response::IntoResponse;
        let received: std::sync::Arc<std::sync::Mutex<Vec<Received>>> = Default::default();
        let log = received.clone();
        let replies = std::sync::Arc::new(replies);
        let handler = move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let log = log.clone();
            let replies = replies.clone();
            let callbacks = callbacks.clone();
            async move {
                let headers: std::collections::BTreeMap<String, String> = headers
                    .iter()
                    .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
                    .collect();
                let body: Option<serde_json::Value> = serde_json::from_slice(&body).ok();
                let n = {
                    let mut log = log.lock().expect("lock");
                    log.push(Received {
                        method: method.to_string(),
                        uri: uri.to_string(),
                        headers: headers.clone(),
                        body: body.clone(),
                        at: std::time::Instant::now(),
                    });
                    log.len() - 1
                };
                let reply = replies
                    .get(n)
                    .or(replies.last())
                    .cloned()
                    .unwrap_or(Reply::Json(200, serde_json::json!({})));
                match reply {
                    Reply::Json(status, json) => (
                        StatusCode::from_u16(status).expect("status"),
                        axum::Json(json),
                    )
                        .into_response(),
                    Reply::RetryAfter(status, secs) => (
                        StatusCode::from_u16(status).expect("status"),
                        [("retry-after", secs.to_string())],
                        "busy",
                    )
                        .into_response(),
                    Reply::Text(status, text) => {
                        (StatusCode::from_u16(status).expect("status"), text).into_response()
                    }
                    Reply::Slow(delay) => {
                        tokio::time::sleep(delay).await;
                        (StatusCode::OK, "late").into_response()
                    }
                    Reply::CallbackFirst => {
                        let mut callbacks =
                            callbacks.expect("CallbackFirst needs a callback client");
                        let correlation_id =
                            headers.get("x-correlation-id").cloned().unwrap_or_default();
                        let execution_id =
                            headers.get("x-execution-id").cloned().unwrap_or_default();
                        callbacks
                            .deliver_api_response(v1::DeliverApiResponseRequest {
                                correlation_id,
                                execution_id,
                                http_status: 200,
                                body: br#"{"via":"callback"}"#.to_vec(),
                                idempotency_key: "callback-1".into(),
                                ..Default::default()
                            })
                            .await
                            .expect("the callback is accepted");
                        (
                            StatusCode::ACCEPTED,
                            axum::Json(serde_json::json!({"accepted": true})),
                        )
                            .into_response()
                    }
                }
            }
        };
        let app = axum::Router::new().fallback(handler);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { url, received })
    }

    /// The requests so far.
    pub fn requests(&self) -> Vec<Received> {
        self.received.lock().expect("lock").clone()
    }

    /// Waits until at least `n` requests arrived.
    pub async fn wait_for(&self, n: usize, within: Duration) -> Result<Vec<Received>> {
        let deadline = std::time::Instant::now() + within;
        loop {
            let got = self.requests();
            if got.len() >= n {
                return Ok(got);
            }
            if std::time::Instant::now() > deadline {
                bail!(
                    "only {} of {n} requests arrived within {within:?}",
                    got.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Input variables for the seed configs' templates (`{{input_data}}`).
pub fn seed_variables() -> std::collections::HashMap<String, String> {
    [("input_data".to_owned(), "test-input".to_owned())].into()
}

/// `GET http://{addr}{path}` over HTTP/1.0: the status code and the body.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let response = String::from_utf8(response)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .context("no end of the response head")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .context("no status code")?
        .parse()?;
    Ok((status, body.to_owned()))
}

/// The samples of a Prometheus text page: `name{labels}` (labels as written) → value.
pub fn prometheus_samples(text: &str) -> std::collections::BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let value = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v.parse().ok()?,
            };
            Some((series.to_owned(), value))
        })
        .collect()
}
