//! The HTTP callbacks beyond what they share with the RPCs (`waits/events.rs` runs those
//! through both doors): Standard Webhooks signatures (a bad, tampered or replayed one is
//! refused; a redelivery within the window is a duplicate), a gateway credential instead of a
//! signature, errors as JSON with their codes, and `{{ callback_url }}` letting the external
//! API answer with no gateway in between.

use std::time::Duration;

use anyhow::Result;
use rendezvous_app::Application;
use rendezvous_app::config::ApiKeyEntry;
use rendezvous_grpc_api::auth::api_key_sha256;
use rendezvous_grpc_api::v1;
use rendezvous_tests::http::{self, Door, Signer, now, post, query};
use rendezvous_tests::{Backend, FakeApi, Reply, TestApp, TestDatabase, seed, test_config};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(15);

fn signer(app: &TestApp) -> Signer {
    match &app.door {
        Door::Http(signer) => signer.clone(),
        Door::Grpc => panic!("started without a webhook secret"),
    }
}

fn api_path(correlation_id: &str, execution_id: &str) -> String {
    format!(
        "/v1/callbacks/api-response?{}",
        query(&[
            ("correlation_id", correlation_id),
            ("execution_id", execution_id)
        ])
    )
}

/// The error status name and message of an answer.
fn error(answer: &http::Answer) -> (String, String) {
    let json = answer.json().expect("a JSON error body");
    assert_eq!(
        json["error"]["code"].as_u64(),
        Some(u64::from(answer.status)),
        "{json}"
    );
    (
        json["error"]["status"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        json["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_tampered_or_replayed_signature_is_refused() -> Result<()> {
    let db = TestDatabase::create(Backend::Sqlite).await?;
    let mut app = TestApp::start_http(&db.url, &[]).await?;
    let mut engine = app.subscribe(0).await?;
    let r = app.register("exec-s", &seed("03-api-only.json")).await?;
    let path = api_path(&r.correlation_id, "exec-s");
    let body = br#"{"paid": true}"#;
    let good = signer(&app);
    let refused = |answer: &http::Answer, needle: &str| {
        assert_eq!(answer.status, 401, "{answer:?}");
        let (status, message) = error(answer);
        assert_eq!(status, "UNAUTHENTICATED");
        assert!(message.contains(needle), "{message}");
    };
    // Signed with another secret.
    let stranger = Signer::random().headers("msg-1", now(), body);
    refused(
        &post(app.addr, &path, &stranger, body).await?,
        "no signature matches",
    );
    // Signed, then the body changed on the way.
    let signed = good.headers("msg-1", now(), body);
    refused(
        &post(app.addr, &path, &signed, br#"{"paid": false}"#).await?,
        "no signature matches",
    );
    // Captured and replayed after the tolerance (5 minutes), or dated in the future.
    for at in [now() - 301, now() + 301] {
        let old = good.headers("msg-1", at, body);
        refused(&post(app.addr, &path, &old, body).await?, "tolerance");
    }
    // A signature without its timestamp.
    let partial: Vec<_> = signed
        .iter()
        .filter(|(k, _)| k != "webhook-timestamp")
        .cloned()
        .collect();
    refused(
        &post(app.addr, &path, &partial, body).await?,
        "webhook-timestamp",
    );
    assert!(
        app.get(&r.wait_id).await?.received.is_empty(),
        "nothing refused was applied"
    );
    // The real one completes the wait; the same message again (a sender's retry within the
    // window) is a duplicate: its webhook-id is the idempotency key.
    let answer = post(app.addr, &path, &signed, body).await?;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.json()?["result"], "DELIVERY_RESULT_COMPLETED");
    let again = post(app.addr, &path, &signed, body).await?;
    assert_eq!(again.json()?["result"], "DELIVERY_RESULT_DUPLICATE");
    let resume = engine.next(WAIT).await?;
    assert_eq!(resume.outcome(), v1::Outcome::Completed);
    let api: serde_json::Value = serde_json::from_str(&resume.events[0].payload_json)?;
    assert_eq!(api["status"], 200);
    assert_eq!(
        api["body"],
        json!({"paid": true}),
        "the JSON body is kept as JSON"
    );
    assert_eq!(resume.events[0].event_key, "msg-1");
    engine.ack(&resume).await?;
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_credential_may_call_back_without_a_signature() -> Result<()> {
    let db = TestDatabase::create(Backend::Sqlite).await?;
    let (gateway, engine) = ("rdv_gateway_key_a", "rdv_engine_key_a");
    let key = |name: &str, secret: &str, role: &str| ApiKeyEntry {
        name: name.into(),
        sha256: api_key_sha256(secret),
        roles: vec![role.into()],
        tenants: vec!["a".into()],
    };
    let mut config = test_config(&db.url, &[])?;
    config.auth.api_keys = vec![
        key("gateway-a", gateway, "gateway"),
        key("engine-a", engine, "engine"),
    ];
    let mut app = TestApp::from_running(Application::build(config).await?.spawn()?).await?;
    app.client = app
        .client
        .clone()
        .with_credentials(rendezvous_client::Credentials::bearer(engine)?);
    let r = app
        .client
        .register_wait(v1::RegisterWaitRequest {
            execution_id: "exec-g".into(),
            node_id: "node-1".into(),
            node_config_json: seed("03-api-only.json").to_string(),
            ..Default::default()
        })
        .await?;
    let path = api_path(&r.correlation_id, "exec-g");
    let body = br#"{"ok": 1}"#;
    let bearer = |token: &str| ("authorization".to_owned(), format!("Bearer {token}"));
    let keyed = ("idempotency-key".to_owned(), "response-1".to_owned());
    // No credential at all; a signature when no webhook secret is configured.
    let none = post(app.addr, &path, std::slice::from_ref(&keyed), body).await?;
    assert_eq!(
        (none.status, error(&none).0.as_str()),
        (401, "UNAUTHENTICATED")
    );
    let signed = Signer::random().headers("m", now(), body);
    let unsigned_server = post(app.addr, &path, &signed, body).await?;
    assert!(
        error(&unsigned_server)
            .1
            .contains("no webhook secret is configured")
    );
    // The engine's key lacks the gateway role.
    let wrong_role = post(app.addr, &path, &[bearer(engine), keyed.clone()], body).await?;
    assert_eq!(wrong_role.status, 403, "{wrong_role:?}");
    assert!(error(&wrong_role).1.contains("gateway"));
    // A tenant that is not the key's.
    let other_tenant = format!("{path}&tenant_id=b");
    let foreign = post(
        app.addr,
        &other_tenant,
        &[bearer(gateway), keyed.clone()],
        body,
    )
    .await?;
    assert_eq!(foreign.status, 403, "{foreign:?}");
    // Without an idempotency key the delivery has no identity.
    let keyless = post(app.addr, &path, &[bearer(gateway)], body).await?;
    assert_eq!(keyless.status, 400);
    assert!(error(&keyless).1.contains("idempotency-key"));
    // The gateway's key with a key: accepted, in its tenant.
    let accepted = post(app.addr, &path, &[bearer(gateway), keyed.clone()], body).await?;
    assert_eq!(accepted.status, 200, "{accepted:?}");
    assert_eq!(accepted.json()?["result"], "DELIVERY_RESULT_COMPLETED");
    assert_eq!(accepted.json()?["status"], "WAIT_STATUS_COMPLETED");
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_callbacks_get_json_errors_naming_the_problem() -> Result<()> {
    let db = TestDatabase::create(Backend::Sqlite).await?;
    let mut app = TestApp::start_http(&db.url, &[]).await?;
    let r = app
        .register("exec-m", &seed("01-wait-for-both.json"))
        .await?;
    let good = signer(&app);
    let send = |path: String, body: Vec<u8>| {
        let headers = good.headers(&format!("m-{}", fastrand::u64(..)), now(), &body);
        let addr = app.addr;
        async move { post(addr, &path, &headers, &body).await }
    };
    // A misspelt parameter.
    let typo = send(
        format!(
            "/v1/callbacks/api-response?corelation_id={}",
            r.correlation_id
        ),
        b"{}".to_vec(),
    )
    .await?;
    assert_eq!(typo.status, 400);
    assert!(error(&typo).1.contains("corelation_id"), "{typo:?}");
    // Not a status code.
    let status = send(
        format!("{}&http_status=ok", api_path(&r.correlation_id, "exec-m")),
        b"{}".to_vec(),
    )
    .await?;
    assert!(error(&status).1.contains("http_status"), "{status:?}");
    // An event body that is not JSON.
    let events = format!(
        "/v1/callbacks/events/kafka?{}",
        query(&[
            ("correlation_id", &r.correlation_id),
            ("execution_id", "exec-m")
        ])
    );
    let not_json = send(events.clone(), b"{not json".to_vec()).await?;
    assert_eq!(not_json.status, 400);
    assert!(error(&not_json).1.contains("payload_json"), "{not_json:?}");
    // Over the HTTP body limit (4 MiB): 413, naming it.
    let huge = vec![b' '; rendezvous_grpc_api::MAX_BODY_BYTES + 1];
    let too_big = send(events, huge).await?;
    assert_eq!(too_big.status, 413, "{too_big:?}");
    let (code, message) = error(&too_big);
    assert_eq!(code, "RESOURCE_EXHAUSTED");
    assert!(message.contains("4194304"), "{message}");
    // A misspelt path, and another method than POST, are answered in JSON too.
    let nowhere = send("/v1/callbacks/api-respons".into(), b"{}".to_vec()).await?;
    assert_eq!(nowhere.status, 404, "{nowhere:?}");
    assert!(error(&nowhere).1.contains("/v1/callbacks/api-respons"));
    let get = http::request(
        app.addr,
        "GET",
        &api_path(&r.correlation_id, "exec-m"),
        &[],
        b"",
    )
    .await?;
    assert_eq!(get.status, 405, "{get:?}");
    assert_eq!(get.headers.get("allow").map(String::as_str), Some("POST"));
    assert!(error(&get).1.contains("POST"));
    assert!(app.get(&r.wait_id).await?.received.is_empty());
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_callback_url_lets_the_external_api_answer_directly() -> Result<()> {
    let db = TestDatabase::create(Backend::Sqlite).await?;
    let env = [
        ("RENDEZVOUS__API__ENABLED", "true"),
        ("RENDEZVOUS__API__ALLOW_PRIVATE_NETWORKS", "true"),
        ("RENDEZVOUS__API__POLL_INTERVAL", "100ms"),
    ];
    let mut app = TestApp::start_http(&db.url, &env).await?;
    let mut engine = app.subscribe(0).await?;
    let external = FakeApi::start(vec![Reply::Json(202, json!({"queued": true}))], None).await?;
    let mut config = seed("03-api-only.json");
    config["data"]["apiCall"]["url"] = json!(format!("{}/jobs", external.url));
    config["data"]["apiCall"]["body"] = json!({"reply_to": "{{ callback_url }}"});
    let r = app.register("exec-u", &config).await?;
    let call = external.wait_for(1, WAIT).await?.remove(0);
    let reply_to = call.body.as_ref().expect("a JSON body")["reply_to"]
        .as_str()
        .expect("the rendered callback URL")
        .to_owned();
    let expected = format!(
        "http://{}/v1/callbacks/api-response?correlation_id={}&execution_id=exec-u&tenant_id=default",
        app.addr, r.correlation_id
    );
    assert_eq!(reply_to, expected);
    // The external API posts its answer there, signed with the secret it shares with us.
    let path = reply_to
        .split_once(&app.addr.to_string())
        .expect("our address")
        .1;
    let body = br#"{"job": "done"}"#;
    let headers = signer(&app).headers("job-7", now(), body);
    let answer = post(app.addr, path, &headers, body).await?;
    assert_eq!(
        answer.json()?["result"],
        "DELIVERY_RESULT_COMPLETED",
        "{answer:?}"
    );
    let resume = engine.next(WAIT).await?;
    assert_eq!(resume.wait_id, r.wait_id);
    assert_eq!(resume.outcome(), v1::Outcome::Completed);
    engine.ack(&resume).await?;
    // An answer for a wait that does not exist yet is buffered, as over gRPC.
    let early = post(
        app.addr,
        &api_path("not-yet-registered", "exec-x"),
        &signer(&app).headers("job-8", now(), body),
        body,
    )
    .await?;
    assert_eq!(early.json()?["result"], "DELIVERY_RESULT_BUFFERED");
    app.stop().await
}
