//! The README's run command: the `rendezvous` binary with no configuration at all starts on
//! SQLite under ./data with an embedded Kafka, prints both addresses, completes seed wait 1 from
//! a gRPC API response and a Kafka event produced by an ordinary Kafka client, and stops
//! gracefully on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rdkafka::producer::{FutureProducer, FutureRecord};
use rendezvous_grpc_api::v1;
use rendezvous_grpc_api::v1::callback_service_client::CallbackServiceClient;
use rendezvous_grpc_api::v1::wait_service_client::WaitServiceClient;
use tokio_stream::StreamExt;

/// Kills the service if the test fails half-way, so no process outlives the test.
struct Service(Option<Child>);

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_with_no_configuration_and_stops_on_sigterm() {
    let cwd = std::env::temp_dir().join(format!("rendezvous-embedded-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&cwd);
    std::fs::create_dir_all(&cwd).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_rendezvous"))
        .current_dir(&cwd)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut service = Service(Some(child));
    let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let mut log = Vec::new();
    let (mut addr, mut bootstrap) = (None, None);
    while addr.is_none() || bootstrap.is_none() {
        let line = lines
            .recv_timeout(Duration::from_secs(30))
            .expect("the service prints its addresses");
        log.push(line.clone());
        if let Some(a) = line.split("listening on ").nth(1) {
            addr = Some(a.trim().to_owned());
        }
        if let Some(b) = line.split("bootstrap servers ").nth(1) {
            bootstrap = Some(b.trim().to_owned());
        }
    }
    let (addr, bootstrap) = (addr.unwrap(), bootstrap.unwrap());
    assert_eq!(addr, "127.0.0.1:50151", "the documented default address");
    assert!(
        cwd.join("data/rendezvous.sqlite").exists(),
        "state lives in SQLite under ./data"
    );

    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut waits = WaitServiceClient::new(channel.clone());
    let mut callbacks = CallbackServiceClient::new(channel);
    let (acks, rx) = tokio::sync::mpsc::channel(8);
    let subscribe = v1::resume_stream_request::Message::Subscribe(v1::Subscribe::default());
    acks.send(v1::ResumeStreamRequest {
        message: Some(subscribe),
    })
    .await
    .unwrap();
    let mut resumes = waits
        .resume_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let config = include_str!("../../domain/tests/fixtures/01-wait-for-both.json");
    let wait = waits
        .register_wait(v1::RegisterWaitRequest {
            execution_id: "exec-1".into(),
            node_id: "node-1".into(),
            node_config_json: config.into(),
            input_variables: [("input_data".to_owned(), "x".to_owned())].into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    // The callback gateway forwards the API's answer.
    callbacks
        .deliver_api_response(v1::DeliverApiResponseRequest {
            correlation_id: wait.correlation_id.clone(),
            execution_id: "exec-1".into(),
            http_status: 200,
            body: b"{}".to_vec(),
            idempotency_key: "a".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    // The external service publishes its event, with an ordinary Kafka client.
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .unwrap();
    let event = serde_json::json!({
        "correlation_id": wait.correlation_id,
        "execution_id": "exec-1",
        "event_type": "action.completed"
    })
    .to_string();
    producer
        .send(
            FutureRecord::<str, str>::to("external-service.events").payload(&event),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    let resume = tokio::time::timeout(Duration::from_secs(30), resumes.next())
        .await
        .expect("a resume within 30 s")
        .unwrap()
        .unwrap();
    let Some(v1::resume_stream_response::Message::Resume(resume)) = resume.message else {
        panic!("resume expected")
    };
    assert_eq!(resume.wait_id, wait.wait_id);
    assert_eq!(resume.outcome(), v1::Outcome::Completed);
    let sources: Vec<&str> = resume.events.iter().map(|e| e.source.as_str()).collect();
    assert_eq!(sources, ["api", "kafka"]);
    let ack = v1::resume_stream_request::Message::Ack(v1::Ack {
        resume_id: resume.resume_id,
    });
    acks.send(v1::ResumeStreamRequest { message: Some(ack) })
        .await
        .unwrap();

    // SIGTERM: the open resume stream is ended, the process exits cleanly.
    let mut child = service.0.take().unwrap();
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::task::spawn_blocking(move || child.wait()),
    )
    .await
    .expect("the service stops within 30 s of SIGTERM")
    .unwrap()
    .unwrap();
    while let Ok(line) = lines.recv_timeout(Duration::from_secs(5)) {
        log.push(line);
    }
    assert!(
        exit.success(),
        "exit status {exit:?}; log:\n{}",
        log.join("\n")
    );
    assert!(
        log.iter().any(|l| l.contains("rendezvous stopped")),
        "log:\n{}",
        log.join("\n")
    );
    let _ = std::fs::remove_dir_all(&cwd);
}
