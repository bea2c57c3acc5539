//! Logs as a collector reads them: with `telemetry.log_format = "json"` every line the binary
//! writes is one JSON object (the start-up lines too), a request's lines carry the caller's
//! trace id, and enum values read as words; human logs written to a pipe carry no colour codes.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use rendezvous_grpc_api::v1;
use rendezvous_grpc_api::v1::wait_service_client::WaitServiceClient;
use serde_json::Value;

const TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";

fn start(name: &str, format: &str) -> (Child, std::path::PathBuf) {
    let cwd = std::env::temp_dir().join(format!("rendezvous-logs-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&cwd).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_rendezvous"))
        .current_dir(&cwd)
        .env("RENDEZVOUS__SERVER__LISTEN", "127.0.0.1:0")
        .env("RENDEZVOUS__ADMIN__LISTEN", "127.0.0.1:0")
        .env("RENDEZVOUS__KAFKA__ENABLED", "false")
        .env("RENDEZVOUS__API__ENABLED", "false")
        .env("RENDEZVOUS__TELEMETRY__LOG_FORMAT", format)
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    (child, cwd)
}

/// Registers a wait with a `traceparent`, then stops the service; returns every stderr line.
async fn exercise(mut child: Child, addr_of: impl Fn(&str) -> Option<String>) -> Vec<String> {
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut lines = Vec::new();
    let addr = loop {
        let line = stderr
            .next()
            .expect("the service logs its address")
            .unwrap();
        lines.push(line.clone());
        if let Some(addr) = addr_of(&line) {
            break addr;
        }
    };
    let rest = std::thread::spawn(move || stderr.map_while(Result::ok).collect::<Vec<_>>());
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let config = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../domain/tests/fixtures/01-wait-for-both.json"
    ))
    .unwrap();
    let mut request = tonic::Request::new(v1::RegisterWaitRequest {
        execution_id: "exec-logs".into(),
        node_id: "node-1".into(),
        node_config_json: config,
        input_variables: [("input_data".to_owned(), "x".to_owned())].into(),
        ..Default::default()
    });
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{TRACE_ID}-b7ad6b7169203331-01")
            .parse()
            .unwrap(),
    );
    WaitServiceClient::new(channel)
        .register_wait(request)
        .await
        .unwrap();
    assert!(
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    assert!(child.wait().unwrap().success());
    lines.extend(rest.join().unwrap());
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_json_on_every_line_and_carry_the_trace_id() {
    let (child, cwd) = start("json", "json");
    let lines = exercise(child, |line| {
        let v: Value = serde_json::from_str(line).ok()?;
        (v["message"] == "rendezvous starting").then(|| v["addr"].as_str().unwrap().to_owned())
    })
    .await;
    let parsed: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}")))
        .collect();
    let registered = parsed
        .iter()
        .find(|v| {
            v["message"]
                .as_str()
                .is_some_and(|m| m.contains("registered"))
        })
        .unwrap_or_else(|| panic!("no registration line in {lines:#?}"));
    assert_eq!(registered["span"]["trace_id"], TRACE_ID, "{registered}");
    assert_eq!(
        registered["span"]["rpc.method"], "RegisterWait",
        "{registered}"
    );
    for line in &lines {
        assert!(!line.contains('\u{1b}'), "an escape code: {line:?}");
        assert!(
            !line.contains("Some("),
            "Debug text instead of words: {line:?}"
        );
    }
    let _ = std::fs::remove_dir_all(cwd);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn human_logs_to_a_pipe_have_no_colour_codes() {
    let (child, cwd) = start("human", "human");
    let lines = exercise(child, |line| {
        line.split("listening on ")
            .nth(1)
            .map(|a| a.trim().to_owned())
    })
    .await;
    assert!(
        lines.iter().any(|l| l.contains("admin: http://127.0.0.1:")),
        "{lines:#?}"
    );
    for line in &lines {
        assert!(!line.contains('\u{1b}'), "an escape code: {line:?}");
    }
    let _ = std::fs::remove_dir_all(cwd);
}
