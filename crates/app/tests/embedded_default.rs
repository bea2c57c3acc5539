//! The README's run command: the `rendezvous` binary with no configuration at all starts on
//! SQLite under ./data, prints its address, serves a wait from registration to resume, and
//! stops gracefully on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use rendezvous_grpc_api::v1;
use rendezvous_grpc_api::v1::callback_service_client::CallbackServiceClient;
use rendezvous_grpc_api::v1::wait_service_client::WaitServiceClient;
use tokio_stream::StreamExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_with_no_configuration_and_stops_on_sigterm() {
    let cwd = std::env::temp_dir().join(format!("rendezvous-embedded-{}", std::process::id()));
    std::fs::create_dir_all(&cwd).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_rendezvous"))
        .current_dir(&cwd)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let mut log = Vec::new();
    let addr = loop {
        let line = lines
            .recv_timeout(Duration::from_secs(30))
            .expect("the service prints its address");
        log.push(line.clone());
        if let Some(addr) = line.split("listening on ").nth(1) {
            break addr.trim().to_owned();
        }
    };
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
    acks.send(v1::ResumeStreamRequest {
        message: Some(v1::resume_stream_request::Message::Subscribe(
            v1::Subscribe::default(),
        )),
    })
    .await
    .unwrap();
    let mut resumes = waits
        .resume_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let config = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../domain/tests/fixtures/03-api-only.json"
    ))
    .unwrap();
    let wait = waits
        .register_wait(v1::RegisterWaitRequest {
            execution_id: "exec-1".into(),
            node_id: "node-1".into(),
            node_config_json: config,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
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
    let resume = tokio::time::timeout(Duration::from_secs(10), resumes.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let Some(v1::resume_stream_response::Message::Resume(resume)) = resume.message else {
        panic!("resume expected")
    };
    assert_eq!(resume.wait_id, wait.wait_id);
    acks.send(v1::ResumeStreamRequest {
        message: Some(v1::resume_stream_request::Message::Ack(v1::Ack {
            resume_id: resume.resume_id,
        })),
    })
    .await
    .unwrap();

    // SIGTERM: the open resume stream is ended, the process exits cleanly.
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || child.wait())
        .await
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
