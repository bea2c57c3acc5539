//! The Rust client's `ResumeFeed` against the real binary: every resume reaches the handler
//! exactly once although the instance is SIGKILLed and restarted mid-way (the feed moves
//! between endpoints, acks what finished while it was away, skips redeliveries), a failing
//! handler's resume comes again, and a stop is graceful.

use std::collections::HashMap;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rendezvous_client::{Client, ResumeFeed, v1};
use tonic::transport::Endpoint;

/// The service process; killed when the test ends.
struct Service {
    child: Child,
    port: u16,
    database_url: String,
}

impl Service {
    fn start(port: u16, database_url: &str) -> Self {
        let child = Command::new(env!("CARGO_BIN_EXE_rendezvous"))
            .args(["--database-url", database_url])
            .env("RENDEZVOUS__SERVER__LISTEN", format!("127.0.0.1:{port}"))
            .env("RENDEZVOUS__ADMIN__LISTEN", "127.0.0.1:0")
            .env("RENDEZVOUS__KAFKA__ENABLED", "false")
            .env("RENDEZVOUS__API__ENABLED", "false")
            .env("RENDEZVOUS__RESUME__ACK_TIMEOUT", "1s")
            .env("RENDEZVOUS__RESUME__POLL_INTERVAL", "200ms")
            .env("RENDEZVOUS__SWEEPER__INTERVAL", "50ms")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the binary starts");
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "the service did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            child,
            port,
            database_url: database_url.to_owned(),
        }
    }

    /// SIGKILL: no lease is freed, nothing is flushed.
    fn kill(&mut self) {
        self.child.kill().expect("kill");
        self.child.wait().expect("reap");
    }

    fn restart(&mut self) {
        *self = Self::start(self.port, &self.database_url.clone());
    }

    fn endpoint(&self) -> Endpoint {
        Endpoint::from_shared(format!("http://127.0.0.1:{}", self.port)).expect("endpoint")
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An empty directory of the test's own and the URL of a SQLite file in it.
fn fresh_sqlite(name: &str) -> (std::path::PathBuf, String) {
    let dir = std::env::temp_dir().join(format!("rendezvous-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.join("rv.sqlite").display());
    (dir, url)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn api_only() -> String {
    serde_json::json!({
        "type": "wait_events",
        "data": {
            "apiCall": {"enabled": true, "url": "https://external.invalid/act", "required": true},
            "aggregationStrategy": "all"
        }
    })
    .to_string()
}

async fn until(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_resume_reaches_the_handler_once_across_a_kill_and_restart() {
    let (dir, database_url) = fresh_sqlite("feed");
    let mut service = Service::start(free_port(), &database_url);
    // The feed's first endpoint never answers: it must move on to the live one.
    let dead = Endpoint::from_shared(format!("http://127.0.0.1:{}", free_port())).unwrap();
    let client = Client::new(service.endpoint().connect_lazy());

    // Handler: counts per wait; the first call for `failing` fails once.
    let calls: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let failing: Arc<Mutex<Option<String>>> = Arc::default();
    let feed = ResumeFeed::new([dead, service.endpoint()])
        .max_in_flight(16)
        .backoff(Duration::from_millis(50), Duration::from_millis(500));
    let stats = feed.stats();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let handler = {
        let calls = calls.clone();
        let failing = failing.clone();
        move |resume: v1::Resume| {
            let calls = calls.clone();
            let failing = failing.clone();
            async move {
                // Slow enough that handlers are running when the instance dies.
                tokio::time::sleep(Duration::from_millis(fastrand::u64(1..20))).await;
                let mut failing = failing.lock().unwrap();
                if failing.as_deref() == Some(resume.wait_id.as_str()) {
                    *failing = None;
                    return Err("the engine is briefly unable to resume it");
                }
                *calls.lock().unwrap().entry(resume.wait_id).or_default() += 1;
                Ok(())
            }
        }
    };
    let running = tokio::spawn(feed.run(handler, stopped));

    const WAITS: usize = 120;
    let mut waits = Vec::new();
    for i in 0..WAITS {
        let registered = client
            .register_wait(v1::RegisterWaitRequest {
                execution_id: format!("exec-{i}"),
                node_id: "wait-1".into(),
                node_config_json: api_only(),
                ..Default::default()
            })
            .await
            .expect("registered");
        waits.push((
            registered.wait_id,
            registered.correlation_id,
            format!("exec-{i}"),
        ));
    }
    *failing.lock().unwrap() = Some(waits[0].0.clone());
    let deliver = |(_, correlation_id, execution_id): &(String, String, String)| {
        let client = client.clone();
        let request = v1::DeliverApiResponseRequest {
            correlation_id: correlation_id.clone(),
            execution_id: execution_id.clone(),
            http_status: 200,
            body: br#"{"ok":true}"#.to_vec(),
            idempotency_key: format!("response-{correlation_id}"),
            ..Default::default()
        };
        async move {
            client
                .deliver_api_response(request)
                .await
                .expect("delivered")
        }
    };
    for wait in &waits[..WAITS / 2] {
        deliver(wait).await;
    }
    // Kill while resumes of the first half are in flight, then restart on the same port and
    // file; the client retries the deliveries made while it is down.
    until("the first resumes", Duration::from_secs(30), || {
        stats.handled() >= 10
    })
    .await;
    service.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    service.restart();
    for wait in &waits[WAITS / 2..] {
        deliver(wait).await;
    }
    until("every resume handled", Duration::from_secs(60), || {
        calls.lock().unwrap().len() == WAITS
    })
    .await;

    // Redelivered resumes (an operator's RedeliverResume, or an ack lost with a stream) are
    // acked without calling the handler again.
    let duplicates_before = stats.duplicates();
    for (wait_id, _, _) in &waits[..5] {
        client
            .admin()
            .redeliver_resume(v1::RedeliverResumeRequest {
                wait_id: wait_id.clone(),
            })
            .await
            .expect("redelivered");
    }
    until("the redeliveries", Duration::from_secs(30), || {
        stats.duplicates() >= duplicates_before + 5
    })
    .await;
    // Let any further redelivery of the window arrive before counting.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let calls = calls.lock().unwrap().clone();
    let twice: Vec<_> = calls.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "handled more than once: {twice:?}");
    assert_eq!(calls.len(), WAITS);
    assert!(stats.reconnects() >= 2, "the dead endpoint and the kill");
    assert_eq!(stats.handler_errors(), 1, "the one failure");
    assert!(
        failing.lock().unwrap().is_none(),
        "the failed resume came again"
    );

    // A graceful stop returns, having acked everything it handled: a new feed gets nothing.
    stop.send(()).unwrap();
    running.await.unwrap().expect("the feed stops cleanly");
    let mut subscription = client.subscribe(v1::Subscribe::default()).await.unwrap();
    let nothing = tokio::time::timeout(Duration::from_millis(1500), subscription.next()).await;
    assert!(nothing.is_err(), "everything was acked: {nothing:?}");
    service.kill();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_subscription_stops_the_feed_with_the_reason() {
    let (dir, database_url) = fresh_sqlite("feed-refused");
    let service = Service::start(free_port(), &database_url);
    // A tenant id over the 256-byte limit: INVALID_ARGUMENT, which no retry fixes.
    let feed = ResumeFeed::new([service.endpoint()]).tenant("t".repeat(300));
    let result = tokio::time::timeout(
        Duration::from_secs(30),
        feed.run(
            |_: v1::Resume| async { Ok::<(), String>(()) },
            std::future::pending::<()>(),
        ),
    )
    .await
    .expect("the feed gives up instead of retrying");
    let error = result.expect_err("refused").to_string();
    assert!(error.contains("tenant_id"), "{error}");
    drop(service);
    let _ = std::fs::remove_dir_all(&dir);
}
