//! The operator commands against a running instance, as an operator types them: `waits
//! list|get|cancel`, `buffered list`, `quarantine list|replay` and `resumes redeliver` over gRPC with
//! an admin API key (refused without one), `migrate` and `migrate status` on a fresh database,
//! `config check` and `config print` (secrets hidden).

use std::process::{Command, Output};

use rendezvous_app::{Application, Command as Cli, Config};
use rendezvous_grpc_api::v1;
use rendezvous_grpc_api::v1::wait_service_client::WaitServiceClient;
use serde_json::Value;

const KEY: &str = "rdv_operator_test_key_0123456789abcdef";

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn rendezvous(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rendezvous"))
        .args(args)
        .env_remove("RENDEZVOUS_TOKEN")
        .env_remove("RENDEZVOUS_SERVER")
        .env_remove("RENDEZVOUS_CONFIG")
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_list_get_and_cancel_against_a_running_instance() {
    let dir = std::env::temp_dir().join(format!("rendezvous-operator-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config_file = dir.join("rendezvous.toml");
    std::fs::write(
        &config_file,
        format!(
            "data_dir = {data:?}\n[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[service]\nbuffer_ttl = \"3s\"\n[kafka]\nenabled = false\n[api]\nenabled = false\n\
             [[auth.api_keys]]\nname = \"ops\"\nsha256 = \"{hash}\"\nroles = [\"admin\"]\ntenants = [\"*\"]\n",
            data = dir.join("data").display().to_string(),
            hash = rendezvous_grpc_api::auth::api_key_sha256(KEY),
        ),
    )
    .unwrap();
    let config_path = config_file.display().to_string();
    let Cli::Run(config) =
        Config::load(["--config", config_path.as_str()], std::iter::empty()).unwrap()
    else {
        panic!("serve expected")
    };
    let running = Application::build(*config).await.unwrap().spawn().unwrap();
    let server = format!("http://{}", running.addr);

    // Two waits, registered as an admin would on behalf of engines.
    let channel = tonic::transport::Channel::from_shared(server.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = WaitServiceClient::with_interceptor(channel, |mut r: tonic::Request<()>| {
        r.metadata_mut()
            .insert("authorization", format!("Bearer {KEY}").parse().unwrap());
        Ok(r)
    });
    let seed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../domain/tests/fixtures/01-wait-for-both.json"
    ))
    .unwrap();
    let mut ids = Vec::new();
    for n in 0..2 {
        let r = client
            .register_wait(v1::RegisterWaitRequest {
                execution_id: format!("exec-op-{n}"),
                node_id: "node-1".into(),
                node_config_json: seed.clone(),
                input_variables: [("input_data".to_owned(), "x".to_owned())].into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        ids.push(r.wait_id);
    }
    let token = [("RENDEZVOUS_TOKEN", KEY)];

    // Without a credential: refused, exit 1, the code in words.
    let refused = rendezvous(&["waits", "list", "--server", &server], &[]);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused.stderr));
    assert!(
        text(&refused.stderr).contains("Unauthenticated"),
        "{}",
        text(&refused.stderr)
    );

    let table = ok(&rendezvous(&["waits", "list", "--server", &server], &token));
    assert!(table.starts_with("WAIT"), "{table}");
    for id in &ids {
        assert!(table.contains(id.as_str()), "{table}");
    }
    let lines = ok(&rendezvous(
        &[
            "waits", "list", "--server", &server, "--status", "open", "--json",
        ],
        &token,
    ));
    let listed: Vec<Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(listed.len(), 2, "{lines}");
    assert_eq!(listed[0]["status"], "waiting_for_events");
    let none = ok(&rendezvous(
        &[
            "waits",
            "list",
            "--server",
            &server,
            "--status",
            "completed",
            "--json",
        ],
        &token,
    ));
    assert_eq!(none, "");

    let details = ok(&rendezvous(
        &["waits", "get", &ids[0], "--server", &server],
        &token,
    ));
    assert!(details.contains("waiting for   api, kafka"), "{details}");
    let got: Value = serde_json::from_str(&ok(&rendezvous(
        &["waits", "get", &ids[0], "--server", &server, "--json"],
        &token,
    )))
    .unwrap();
    assert_eq!(got["wait_id"], ids[0].as_str());
    assert_eq!(got["execution_id"], "exec-op-0");

    let cancelled = ok(&rendezvous(
        &[
            "waits", "cancel", &ids[0], "--server", &server, "--reason", "stuck",
        ],
        &token,
    ));
    assert!(cancelled.contains("cancelled"), "{cancelled}");
    let again = ok(&rendezvous(
        &["waits", "cancel", &ids[0], "--server", &server],
        &token,
    ));
    assert!(again.contains("already decided (cancelled)"), "{again}");
    let got: Value = serde_json::from_str(&ok(&rendezvous(
        &["waits", "get", &ids[0], "--server", &server, "--json"],
        &token,
    )))
    .unwrap();
    assert_eq!(
        (got["status"].as_str(), got["reason"].as_str()),
        (Some("cancelled"), Some("stuck"))
    );
    let missing = rendezvous(
        &[
            "waits",
            "get",
            "00000000-0000-4000-8000-000000000000",
            "--server",
            &server,
        ],
        &token,
    );
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        text(&missing.stderr).contains("NotFound"),
        "{}",
        text(&missing.stderr)
    );

    // The cancelled wait's resume goes out again; an open wait has none yet.
    let redelivered = ok(&rendezvous(
        &["resumes", "redeliver", &ids[0], "--server", &server],
        &token,
    ));
    assert!(
        redelivered.contains("goes out again (it was not acknowledged yet)"),
        "{redelivered}"
    );
    let open = rendezvous(
        &["resumes", "redeliver", &ids[1], "--server", &server],
        &token,
    );
    assert_eq!(open.status.code(), Some(1));
    assert!(
        text(&open.stderr).contains("FailedPrecondition"),
        "{}",
        text(&open.stderr)
    );

    // An event for a correlation id no wait has: buffered, listed, then (after the 3 s TTL)
    // expired into the quarantine, listed there with its reason.
    let mut callbacks =
        rendezvous_grpc_api::v1::callback_service_client::CallbackServiceClient::with_interceptor(
            tonic::transport::Channel::from_shared(server.clone())
                .unwrap()
                .connect()
                .await
                .unwrap(),
            |mut r: tonic::Request<()>| {
                r.metadata_mut()
                    .insert("authorization", format!("Bearer {KEY}").parse().unwrap());
                Ok(r)
            },
        );
    callbacks
        .deliver_api_response(v1::DeliverApiResponseRequest {
            correlation_id: "nobody-waits".into(),
            execution_id: "exec-early".into(),
            http_status: 200,
            body: b"{}".to_vec(),
            idempotency_key: "early-1".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let buffered = ok(&rendezvous(
        &["buffered", "list", "--server", &server],
        &token,
    ));
    assert!(
        buffered.starts_with("TENANT") && buffered.contains("nobody-waits"),
        "{buffered}"
    );
    assert!(buffered.contains("source api"), "{buffered}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let quarantined = loop {
        let lines = ok(&rendezvous(
            &["quarantine", "list", "--json", "--server", &server],
            &token,
        ));
        if let Some(line) = lines.lines().find(|l| l.contains("nobody-waits")) {
            break serde_json::from_str::<Value>(line).unwrap();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never quarantined: {lines}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert_eq!(quarantined["origin"], "buffer");
    assert!(!quarantined["reason"].as_str().unwrap().is_empty());
    assert_eq!(quarantined["replayable"], true);
    let empty = ok(&rendezvous(
        &["buffered", "list", "--json", "--server", &server],
        &token,
    ));
    assert_eq!(empty, "");

    // Replayed while still no wait has its correlation id: buffered again, out of the
    // quarantine; a second replay of the same id finds nothing.
    let id = quarantined["id"].as_i64().unwrap().to_string();
    let replayed = ok(&rendezvous(
        &["quarantine", "replay", &id, "--server", &server],
        &token,
    ));
    assert!(replayed.starts_with("ID"), "{replayed}");
    assert_eq!(
        replayed
            .lines()
            .nth(1)
            .map(|l| l.split_whitespace().collect::<Vec<_>>()),
        Some(vec![id.as_str(), "buffered"]),
        "{replayed}"
    );
    let again = ok(&rendezvous(
        &["quarantine", "replay", &id, "--json", "--server", &server],
        &token,
    ));
    assert_eq!(
        serde_json::from_str::<Value>(again.trim()).unwrap()["outcome"],
        "not_found"
    );
    let buffered = ok(&rendezvous(
        &["buffered", "list", "--server", &server],
        &token,
    ));
    assert!(buffered.contains("nobody-waits"), "{buffered}");
    let none = rendezvous(&["quarantine", "replay", "--server", &server], &token);
    assert_eq!(none.status.code(), Some(2), "at least one id is required");

    running.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn migrate_applies_and_status_lists() {
    let dir = std::env::temp_dir().join(format!("rendezvous-migrate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite:{}?mode=rwc", dir.join("fresh.sqlite").display());
    let status = ok(&rendezvous(
        &["migrate", "status", "--database-url", &url],
        &[],
    ));
    assert!(status.lines().count() >= 4, "{status}");
    assert!(status.lines().all(|l| l.starts_with("pending")), "{status}");
    let applied = ok(&rendezvous(&["migrate", "--database-url", &url], &[]));
    assert!(
        applied.contains(&format!("{} migration(s) applied", status.lines().count())),
        "{applied}"
    );
    let status = ok(&rendezvous(
        &["migrate", "status", "--database-url", &url],
        &[],
    ));
    assert!(status.lines().all(|l| l.starts_with("applied")), "{status}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn config_check_and_print() {
    let url = "postgres://rendezvous:hunter2@127.0.0.1:5432/rendezvous";
    let checked = ok(&rendezvous(
        &["config", "check", "--database-url", url],
        &[],
    ));
    assert!(checked.starts_with("configuration OK"), "{checked}");
    assert!(!checked.contains("hunter2"), "{checked}");
    let printed: Value = serde_json::from_str(&ok(&rendezvous(
        &["config", "print", "--database-url", url],
        &[],
    )))
    .unwrap();
    let shown = printed["database"]["url"].as_str().unwrap();
    assert!(
        !shown.contains("hunter2") && shown.contains("127.0.0.1:5432"),
        "{shown}"
    );
    assert_eq!(printed["admin"]["listen"], "127.0.0.1:50152");
    let bad = rendezvous(
        &["config", "check"],
        &[
            (
                "RENDEZVOUS__SERVER__TLS__CERT_FILE",
                "/nonexistent/cert.pem",
            ),
            ("RENDEZVOUS__SERVER__TLS__KEY_FILE", "/nonexistent/key.pem"),
        ],
    );
    assert_ne!(bad.status.code(), Some(0));
    assert!(
        text(&bad.stderr).contains("/nonexistent/cert.pem"),
        "{}",
        text(&bad.stderr)
    );
}
