//! The outbound API call as a use case, on the real SQLite store: a call never outlives its
//! wait (cancelled or decided: no further attempt; a satisfied `api` source is never undone by
//! the call's failure), templates are bounded and checked at registration, and the dispatcher
//! runs calls independently with a per-destination limit (against real loopback servers).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use rendezvous_domain::{
    ApiRequest, Channel, CorrelationId, Destinations, EventKey, ExecutionId, LeaseOwner, NodeId,
    SourceName, TenantId, Timestamp, WaitId, WaitStatus,
};
use rendezvous_http_caller::{CallerConfig, ReqwestCaller};
use rendezvous_persistence::testing::{Backend, TestDatabase};
use rendezvous_persistence::{Database, DatabaseConfig, SqlResumeSignal, SqlStore};
use rendezvous_ports::TenantScope;
use rendezvous_ports::fakes::ManualClock;
use rendezvous_ports::{CallFailure, Clock, HttpCaller, HttpReply, SystemClock};
use rendezvous_service::{
    ApiPolicy, Delivery, RegisterWait, ServiceConfig, ServiceError, WaitLookup, WaitService,
};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

type Service<C> = WaitService<SqlStore, SqlResumeSignal, C>;

/// Calls allowed to loopback, two attempts, one second of backoff.
fn config() -> ServiceConfig {
    ServiceConfig {
        api: ApiPolicy {
            destinations: Destinations {
                allowed: vec![],
                allow_private_networks: true,
            },
            max_attempts: 2,
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(1),
            max_in_flight: 8,
            max_per_destination: 2,
            ..ApiPolicy::default()
        },
        ..ServiceConfig::default()
    }
}

async fn service<C: Clock>(clock: C) -> (Arc<Service<C>>, Database, TestDatabase) {
    service_on(Backend::Sqlite, clock).await
}

async fn service_on<C: Clock>(
    backend: Backend,
    clock: C,
) -> (Arc<Service<C>>, Database, TestDatabase) {
    let db = TestDatabase::create(backend).await.unwrap();
    let database = Database::connect(&DatabaseConfig::new(&db.url))
        .await
        .unwrap();
    let service = WaitService::new(database.store(), database.signal(), clock, config());
    (Arc::new(service), database, db)
}

/// A node config with an API call to `url` and, when `kafka`, a Kafka source too (`all`).
fn node(url: &str, mode: &str, kafka: bool) -> String {
    let mut data = json!({"apiCall": {"url": url, "responseMode": mode}, "timeout": 300});
    if kafka {
        data["kafkaEvent"] = json!({"topic": "t"});
    }
    json!({"type": "wait_events", "data": data}).to_string()
}

async fn register<C: Clock>(service: &Service<C>, execution: &str, config: String) -> WaitId {
    service
        .register(RegisterWait::new(
            ExecutionId::parse(execution).unwrap(),
            NodeId::parse("node").unwrap(),
            config,
        ))
        .await
        .unwrap()
        .wait
        .state
        .key
        .id
}

async fn status<C: Clock>(service: &Service<C>, wait_id: WaitId) -> WaitStatus {
    service
        .get(WaitLookup::Id {
            wait_id,
            tenants: TenantScope::All,
        })
        .await
        .unwrap()
        .state
        .status()
}

async fn correlation<C: Clock>(service: &Service<C>, wait_id: WaitId) -> CorrelationId {
    service
        .get(WaitLookup::Id {
            wait_id,
            tenants: TenantScope::All,
        })
        .await
        .unwrap()
        .state
        .key
        .correlation_id
}

/// The `api` event as the callback gateway delivers it, or a Kafka event on `t`.
fn event(correlation_id: &CorrelationId, execution: &str, channel: Channel, key: &str) -> Delivery {
    let payload = json!({"ok": true, "execution_id": execution});
    Delivery {
        tenant: TenantId::default_tenant(),
        correlation_id: correlation_id.clone(),
        execution_id: Some(ExecutionId::parse(execution).unwrap()),
        channel,
        size: payload.to_string().len(),
        payload,
        event_key: EventKey::parse(key).unwrap(),
    }
}

fn owner() -> LeaseOwner {
    LeaseOwner::parse("test-dispatcher").unwrap()
}

/// A caller that answers every call with one status and counts the calls.
struct Answers {
    status: u16,
    calls: AtomicUsize,
}

impl Answers {
    fn new(status: u16) -> Arc<Self> {
        Arc::new(Self {
            status,
            calls: AtomicUsize::new(0),
        })
    }
}

#[async_trait]
impl HttpCaller for Answers {
    async fn call(&self, _: &ApiRequest) -> Result<HttpReply, CallFailure> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Ok(HttpReply {
            status: self.status,
            headers: BTreeMap::new(),
            body: b"no".to_vec(),
        })
    }
}

#[tokio::test]
async fn a_cancelled_wait_gets_no_further_attempt() {
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(1_000_000)));
    let (service, _database, _db) = service(clock.clone()).await;
    let caller = Answers::new(503);
    let wait = register(
        &service,
        "exec-1",
        node("https://partner.example/a", "callback", false),
    )
    .await;
    assert_eq!(
        service
            .dispatch_api_calls(caller.as_ref(), &owner(), 10)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        caller.calls.load(Ordering::SeqCst),
        1,
        "the first attempt, retried later"
    );
    service
        .cancel(
            WaitLookup::Id {
                wait_id: wait,
                tenants: TenantScope::All,
            },
            Some("the workflow was cancelled".into()),
        )
        .await
        .unwrap();
    clock.advance(5_000);
    service
        .dispatch_api_calls(caller.as_ref(), &owner(), 10)
        .await
        .unwrap();
    clock.advance(60_000);
    service
        .dispatch_api_calls(caller.as_ref(), &owner(), 10)
        .await
        .unwrap();
    assert_eq!(
        caller.calls.load(Ordering::SeqCst),
        1,
        "no attempt after the cancellation committed"
    );
    assert_eq!(
        service
            .dispatch_api_calls(caller.as_ref(), &owner(), 10)
            .await
            .unwrap(),
        0,
        "the call is finished, not pending"
    );
    assert_eq!(status(&service, wait).await, WaitStatus::Cancelled);
}

#[tokio::test]
async fn a_completed_wait_is_not_called_again_nor_failed() {
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(1_000_000)));
    let (service, _database, _db) = service(clock.clone()).await;
    let caller = Answers::new(503);
    let wait = register(
        &service,
        "exec-1",
        node("https://partner.example/a", "callback", true),
    )
    .await;
    service
        .dispatch_api_calls(caller.as_ref(), &owner(), 10)
        .await
        .unwrap();
    let correlation_id = correlation(&service, wait).await;
    let api = Channel::Source(SourceName::api());
    service
        .deliver(event(&correlation_id, "exec-1", api, "cb-1"))
        .await
        .unwrap();
    service
        .deliver(event(
            &correlation_id,
            "exec-1",
            Channel::Topic("t".into()),
            "k-1",
        ))
        .await
        .unwrap();
    assert_eq!(status(&service, wait).await, WaitStatus::Completed);
    // The retry is due, and would be the last attempt: it is dropped instead.
    clock.advance(5_000);
    service
        .dispatch_api_calls(caller.as_ref(), &owner(), 10)
        .await
        .unwrap();
    assert_eq!(
        caller.calls.load(Ordering::SeqCst),
        1,
        "no attempt after completion"
    );
    assert_eq!(status(&service, wait).await, WaitStatus::Completed);
}

/// A caller whose partner's callback arrives while the call is in flight, and whose HTTP
/// answer is then a permanent failure.
struct CallbackFirst {
    service: Arc<Service<Arc<ManualClock>>>,
    correlation_id: std::sync::Mutex<Option<CorrelationId>>,
}

#[async_trait]
impl HttpCaller for CallbackFirst {
    async fn call(&self, _: &ApiRequest) -> Result<HttpReply, CallFailure> {
        let correlation_id = self.correlation_id.lock().unwrap().clone().unwrap();
        let api = Channel::Source(SourceName::api());
        self.service
            .deliver(event(&correlation_id, "exec-1", api, "cb-1"))
            .await
            .unwrap();
        Ok(HttpReply {
            status: 400,
            headers: BTreeMap::new(),
            body: b"bad request".to_vec(),
        })
    }
}

#[tokio::test]
async fn a_satisfied_api_source_is_not_undone_by_the_call_failing() {
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(1_000_000)));
    let (service, _database, _db) = service(clock.clone()).await;
    let wait = register(
        &service,
        "exec-1",
        node("https://partner.example/a", "callback", true),
    )
    .await;
    let caller = CallbackFirst {
        service: service.clone(),
        correlation_id: std::sync::Mutex::new(Some(correlation(&service, wait).await)),
    };
    service
        .dispatch_api_calls(&caller, &owner(), 10)
        .await
        .unwrap();
    assert_eq!(
        status(&service, wait).await,
        WaitStatus::WaitingForKafka,
        "the api source keeps its event; the wait still waits for Kafka"
    );
    let correlation_id = correlation(&service, wait).await;
    service
        .deliver(event(
            &correlation_id,
            "exec-1",
            Channel::Topic("t".into()),
            "k-1",
        ))
        .await
        .unwrap();
    assert_eq!(status(&service, wait).await, WaitStatus::Completed);
}

#[tokio::test]
async fn a_call_failing_for_good_still_fails_a_wait_that_needs_it() {
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(1_000_000)));
    let (service, _database, _db) = service(clock.clone()).await;
    let caller = Answers::new(400);
    let wait = register(
        &service,
        "exec-1",
        node("https://partner.example/a", "callback", true),
    )
    .await;
    service
        .dispatch_api_calls(caller.as_ref(), &owner(), 10)
        .await
        .unwrap();
    assert_eq!(status(&service, wait).await, WaitStatus::Failed);
}

#[tokio::test]
async fn templates_and_header_values_are_checked_at_registration() {
    let (service, _database, _db) = service(SystemClock).await;
    let config =
        |call: Value| json!({"type": "wait_events", "data": {"apiCall": call}}).to_string();
    let refused = |config: String, vars: &[(&str, &str)]| {
        let mut request = RegisterWait::new(
            ExecutionId::parse("exec-1").unwrap(),
            NodeId::parse("node").unwrap(),
            config,
        );
        request.input_variables = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let service = service.clone();
        async move {
            match service.register(request).await {
                Err(ServiceError::InvalidConfig(errors)) => errors.to_string(),
                other => panic!("expected INVALID_ARGUMENT, got {other:?}"),
            }
        }
    };
    let huge = refused(
        config(json!({"url": "https://p.example/", "body": {"x": "{{ 'x' * 99999999 }}"}})),
        &[],
    )
    .await;
    assert!(
        huge.starts_with("data.apiCall.body.x: template: "),
        "{huge}"
    );
    let big = "y".repeat(700 * 1024);
    let over = refused(
        config(json!({"url": "https://p.example/", "body": {"x": "{{ v }}{{ v }}"}})),
        &[("v", &big)],
    )
    .await;
    assert_eq!(
        over,
        "data.apiCall.body.x: template: output is over the limit of 1048576 bytes"
    );
    let crlf = refused(
        config(json!({"url": "https://p.example/", "headers": {"X-Tenant": "{{ t }}"}})),
        &[("t", "a\r\nX-Injected: 1")],
    )
    .await;
    assert!(
        crlf.starts_with(
            "data.apiCall.headers.\"X-Tenant\": the rendered value is not a valid HTTP header value"
        ),
        "{crlf}"
    );
}

/// A loopback HTTP/1.1 server answering `{}` with 200; a stalling one holds every request
/// until released.
struct Server {
    url: String,
    received: Arc<AtomicUsize>,
    answered: Arc<AtomicUsize>,
    release: watch::Sender<bool>,
}

async fn server(stall: bool) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/call", listener.local_addr().unwrap());
    let (received, answered) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (release, released) = watch::channel(!stall);
    let (r, a) = (received.clone(), answered.clone());
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let (r, a, mut released) = (r.clone(), a.clone(), released.clone());
            tokio::spawn(async move {
                while read_request(&mut stream).await {
                    r.fetch_add(1, Ordering::SeqCst);
                    let _ = released.wait_for(|go| *go).await;
                    let reply = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
                    if stream.write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                    a.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
    });
    Server {
        url,
        received,
        answered,
        release,
    }
}

/// Reads one request (headers, then a `content-length` body); false at the end.
async fn read_request(stream: &mut tokio::net::TcpStream) -> bool {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte).await {
            Ok(1) => buf.push(byte[0]),
            _ => return false,
        }
    }
    let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await.is_ok()
}

/// Polls `done` until it holds (the deadline only bounds a failing test).
async fn eventually<F, Fut>(what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !done().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never happened: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_destination_holds_neither_other_calls_nor_more_than_its_slots() {
    stalled_destination(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_destination_holds_neither_other_calls_nor_more_than_its_slots_on_postgres() {
    stalled_destination(Backend::Postgres).await;
}

/// Five calls to a server that stalls, then four to one that answers at once.
async fn stalled_destination(backend: Backend) {
    let (service, _database, _db) = service_on(backend, SystemClock).await;
    let (slow, fast) = (server(true).await, server(false).await);
    let caller = ReqwestCaller::new(CallerConfig {
        timeout: Duration::from_secs(120),
        max_response_bytes: 1024,
        allow_private_networks: true,
        ..CallerConfig::default()
    })
    .unwrap();
    let (stop_sender, mut stopped) = watch::channel(false);
    let stop = async move {
        let _ = stopped.wait_for(|s| *s).await;
    };
    let dispatcher = tokio::spawn(service.clone().run_api_calls(
        Arc::new(caller),
        owner(),
        Duration::from_millis(50),
        stop,
    ));
    let mut slow_waits = Vec::new();
    for i in 0..5 {
        slow_waits.push(
            register(
                &service,
                &format!("slow-{i}"),
                node(&slow.url, "sync", false),
            )
            .await,
        );
    }
    eventually("the slow destination has its two calls", || async {
        slow.received.load(Ordering::SeqCst) == 2
    })
    .await;
    // Registered while the slow calls are in flight: made at once, not after them.
    let mut fast_waits = Vec::new();
    for i in 0..4 {
        fast_waits.push(
            register(
                &service,
                &format!("fast-{i}"),
                node(&fast.url, "sync", false),
            )
            .await,
        );
    }
    for &wait in &fast_waits {
        eventually("a fast wait completes", || async {
            status(&service, wait).await == WaitStatus::Completed
        })
        .await;
    }
    assert_eq!(fast.answered.load(Ordering::SeqCst), 4);
    assert_eq!(
        (
            slow.received.load(Ordering::SeqCst),
            slow.answered.load(Ordering::SeqCst)
        ),
        (2, 0),
        "the slow destination still holds its calls, and never got more than its two slots"
    );
    for &wait in &slow_waits {
        assert!(status(&service, wait).await.is_open());
    }
    // Released, the slow destination gets every call, two at a time.
    slow.release.send(true).unwrap();
    for &wait in &slow_waits {
        eventually("a slow wait completes", || async {
            status(&service, wait).await == WaitStatus::Completed
        })
        .await;
    }
    assert_eq!(
        slow.answered.load(Ordering::SeqCst),
        5,
        "each call made once"
    );
    stop_sender.send(true).unwrap();
    dispatcher.await.unwrap();
}
