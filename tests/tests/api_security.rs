//! The outbound call's security through the whole service (gRPC registration, the outbox, the
//! dispatcher, the HTTP caller) against real HTTP servers on 127.0.0.1 that must receive nothing
//! when a call is refused: the allowlist compared after normalisation and after templating,
//! every non-public address range, headers the client owns, a hostile upstream's body
//! sanitized in the wait's reason, and a secret header sent with its value while the database
//! and `GetWait` only ever hold its name.

use std::time::Duration;

use anyhow::Result;
use rendezvous_grpc_api::v1;
use rendezvous_tests::{Backend, FakeApi, Reply, TestApp, TestDatabase, seed};
use serde_json::{Value, json};
use tonic::Code;

const WAIT: Duration = Duration::from_secs(15);

/// An instance with calls on, fast retries, and `env` on top.
async fn app(env: &[(&str, &str)]) -> Result<(TestDatabase, TestApp)> {
    let db = TestDatabase::create(Backend::Sqlite).await?;
    let mut all = vec![
        ("RENDEZVOUS__API__ENABLED", "true"),
        ("RENDEZVOUS__API__BACKOFF", "50ms"),
        ("RENDEZVOUS__API__MAX_ATTEMPTS", "2"),
        ("RENDEZVOUS__API__TIMEOUT", "1s"),
        ("RENDEZVOUS__API__POLL_INTERVAL", "100ms"),
    ];
    all.extend_from_slice(env);
    let app = TestApp::start(&db.url, &all).await?;
    Ok((db, app))
}

/// An API-only node config calling `url` with `headers`.
fn call_to(url: &str, headers: Value) -> Value {
    json!({"type": "wait_events", "data": {"apiCall": {"url": url, "headers": headers}}})
}

async fn register(
    app: &mut TestApp,
    execution_id: &str,
    config: &Value,
    vars: &[(&str, &str)],
) -> Result<v1::RegisterWaitResponse, tonic::Status> {
    let request = v1::RegisterWaitRequest {
        execution_id: execution_id.into(),
        node_id: "node-1".into(),
        node_config_json: config.to_string(),
        input_variables: vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    };
    Ok(app.waits.register_wait(request).await?.into_inner())
}

/// Registers and expects `INVALID_ARGUMENT` with a message holding every one of `expected`.
async fn refused(
    app: &mut TestApp,
    execution_id: &str,
    config: &Value,
    vars: &[(&str, &str)],
    expected: &[&str],
) -> Result<()> {
    let status = register(app, execution_id, config, vars)
        .await
        .expect_err(&format!("{config} with {vars:?} was accepted"));
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    for part in expected {
        assert!(
            status.message().contains(part),
            "{config} with {vars:?}: {:?} lacks {part:?}",
            status.message()
        );
    }
    Ok(())
}

/// A node config, its input variables, and what the refusal's message must hold.
type Case<'a> = (Value, Vec<(&'a str, &'a str)>, &'a [&'a str]);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_allowlist_is_compared_after_templating_and_normalisation() -> Result<()> {
    let listed = FakeApi::start(vec![Reply::Json(200, json!({}))], None).await?;
    let other = FakeApi::start(vec![Reply::Json(200, json!({}))], None).await?;
    let other_port = other.url.rsplit(':').next().unwrap_or_default().to_owned();
    // `listed` under /api; `localhost`, a bare host, which means https on port 443 only; and a
    // port nothing listens on, whose entry a string prefix would let `@` abuse.
    let allowed = format!("{}/api,localhost,http://127.0.0.1:1", listed.url);
    let (_db, mut app) = app(&[
        ("RENDEZVOUS__API__ALLOW_PRIVATE_NETWORKS", "true"),
        ("RENDEZVOUS__API__ALLOWED", &allowed),
    ])
    .await?;
    let not_listed = ["data.apiCall.url", "not in the allowed destinations"];
    let other_host = format!("127.0.0.1:{other_port}");
    let other_behind_credentials = format!("127.0.0.1:1@127.0.0.1:{other_port}");
    let cases: Vec<Case<'_>> = vec![
        // Path traversal, written and from a variable.
        (
            call_to(&format!("{}/api/../admin", listed.url), json!({})),
            vec![],
            &not_listed,
        ),
        (
            call_to(&format!("{}/api/{{{{p}}}}", listed.url), json!({})),
            vec![("p", "../admin")],
            &not_listed,
        ),
        (
            call_to(&format!("{}/api/{{{{p}}}}", listed.url), json!({})),
            vec![("p", "%2e%2e/admin")],
            &not_listed,
        ),
        // Not a whole path segment.
        (
            call_to(&format!("{}/apix", listed.url), json!({})),
            vec![],
            &not_listed,
        ),
        // A host entry does not open every scheme and port.
        (
            call_to(&format!("http://localhost:{other_port}/x"), json!({})),
            vec![],
            &not_listed,
        ),
        // A variable cannot choose the host: another port, or credentials before it.
        (
            call_to("http://{{h}}/api/x", json!({})),
            vec![("h", &other_host)],
            &not_listed,
        ),
        (
            call_to("http://{{h}}/x", json!({})),
            vec![("h", &other_behind_credentials)],
            &["data.apiCall.url", "credentials"],
        ),
    ];
    for (i, (config, vars, expected)) in cases.iter().enumerate() {
        refused(&mut app, &format!("exec-{i}"), config, vars, expected).await?;
    }
    // What the list allows still works, from a variable too.
    register(
        &mut app,
        "exec-ok",
        &call_to(&format!("{}/api/{{{{p}}}}", listed.url), json!({})),
        &[("p", "orders/7")],
    )
    .await?;
    let request = listed.wait_for(1, WAIT).await?.remove(0);
    assert_eq!(request.uri, "/api/orders/7");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(listed.requests().len(), 1, "only the allowed call was made");
    assert!(
        other.requests().is_empty(),
        "a refused destination was called"
    );
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_non_public_address_is_refused_and_reaches_nothing() -> Result<()> {
    let fake = FakeApi::start(vec![Reply::Json(200, json!({}))], None).await?;
    let port = fake.url.rsplit(':').next().unwrap_or_default().to_owned();
    // SSRF protection is the default: no allow_private_networks.
    let (_db, mut app) = app(&[]).await?;
    let hosts = [
        "127.0.0.1",
        "0.0.0.0",
        "10.0.0.1",
        "169.254.169.254",
        "100.64.0.1",
        "192.0.0.1",
        "198.18.0.1",
        "240.0.0.1",
        "255.255.255.255",
        "224.0.0.1",
        "192.0.2.1",
        "0x7f.1",
        "[::1]",
        "[::]",
        "[::ffff:127.0.0.1]",
        "[::127.0.0.1]",
        "[64:ff9b::7f00:1]",
        "[64:ff9b:1::7f00:1]",
        "[2002:7f00:1::]",
        "[2001:0:7f00:1::]",
        "[fd00::1]",
        "[fe80::1]",
        "[ff02::1]",
        "localhost",
    ];
    for (i, host) in hosts.iter().enumerate() {
        // Written in the config, and chosen by a variable.
        let url = format!("http://{host}:{port}/api/action");
        refused(
            &mut app,
            &format!("exec-lit-{i}"),
            &call_to(&url, json!({})),
            &[],
            &["data.apiCall.url", "private"],
        )
        .await?;
        refused(
            &mut app,
            &format!("exec-var-{i}"),
            &call_to("http://{{host}}/api/action", json!({})),
            &[("host", &format!("{host}:{port}"))],
            &["data.apiCall.url", "private"],
        )
        .await?;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(fake.requests().is_empty(), "a refused call was made");
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_the_client_owns_are_refused_naming_them() -> Result<()> {
    let fake = FakeApi::start(vec![Reply::Json(200, json!({}))], None).await?;
    let (_db, mut app) = app(&[("RENDEZVOUS__API__ALLOW_PRIVATE_NETWORKS", "true")]).await?;
    for (i, (name, at)) in [
        ("Host", "data.apiCall.headers.Host"),
        ("Content-Length", "data.apiCall.headers.\"Content-Length\""),
        (
            "Transfer-Encoding",
            "data.apiCall.headers.\"Transfer-Encoding\"",
        ),
        ("Connection", "data.apiCall.headers.Connection"),
        ("Keep-Alive", "data.apiCall.headers.\"Keep-Alive\""),
        (
            "Proxy-Authorization",
            "data.apiCall.headers.\"Proxy-Authorization\"",
        ),
        ("TE", "data.apiCall.headers.TE"),
        ("Trailer", "data.apiCall.headers.Trailer"),
        ("Upgrade", "data.apiCall.headers.Upgrade"),
    ]
    .into_iter()
    .enumerate()
    {
        refused(
            &mut app,
            &format!("exec-{i}"),
            &call_to(&format!("{}/x", fake.url), json!({name: "evil.test"})),
            &[],
            &[at, "may not be set by a node config"],
        )
        .await?;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(fake.requests().is_empty());
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_upstream_body_is_sanitized_in_the_reason() -> Result<()> {
    let hostile = "no such order\n2030-01-01T00:00:00Z  INFO rendezvous: wait completed \
                   wait_id=forged\r\n\x1b[31mred\x1b[0m\x1b]0;pwned\x07\u{202e}end"
        .to_owned()
        + &"x".repeat(2000);
    let fake = FakeApi::start(vec![Reply::Text(400, hostile)], None).await?;
    let (_db, mut app) = app(&[("RENDEZVOUS__API__ALLOW_PRIVATE_NETWORKS", "true")]).await?;
    let mut engine = app.subscribe(0).await?;
    let url = format!("{}/api/orders?token=s3cr3t-query", fake.url);
    let r = register(&mut app, "exec-hostile", &call_to(&url, json!({})), &[]).await?;
    let resume = engine.next(WAIT).await?;
    assert_eq!(resume.outcome(), v1::Outcome::Failed);
    engine.ack(&resume).await?;
    let wait = app.get(&r.wait_id).await?;
    for reason in [&resume.reason, &wait.reason] {
        assert!(
            reason.contains(&format!(
                "{}/api/orders answered 400: no such order 2030-01-01T00:00:00Z INFO rendezvous: \
                 wait completed wait_id=forged red end",
                fake.url
            )),
            "{reason:?}"
        );
        assert!(
            !reason
                .chars()
                .any(|c| c.is_control() || ('\u{2028}'..='\u{202e}').contains(&c)),
            "{reason:?}"
        );
        assert!(
            !reason.contains("s3cr3t-query"),
            "the query is not shown: {reason}"
        );
        assert!(
            reason.len() < 600,
            "the body is cut: {} bytes",
            reason.len()
        );
    }
    app.stop().await
}

/// The files of the SQLite database at `url` (the database, its journal and WAL).
fn database_bytes(url: &str) -> Vec<u8> {
    let path = url
        .trim_start_matches("sqlite://")
        .split('?')
        .next()
        .unwrap_or_default();
    let dir = std::path::Path::new(path).parent().expect("a directory");
    let mut bytes = Vec::new();
    for entry in std::fs::read_dir(dir).expect("the database directory") {
        bytes.extend(std::fs::read(entry.expect("an entry").path()).unwrap_or_default());
    }
    bytes
}

fn holds(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_header_is_sent_but_only_its_name_is_stored() -> Result<()> {
    const VALUE: &str = "Bearer s3cr3t-value-42";
    let fake = FakeApi::start(vec![Reply::Json(200, json!({"ok": true}))], None).await?;
    let dir = std::env::temp_dir().join(format!("rdv-api-secret-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("partner_token");
    std::fs::write(&file, format!("{VALUE}\n"))?;
    let file = file.to_string_lossy().into_owned();
    let (db, mut app) = app(&[
        ("RENDEZVOUS__API__ALLOW_PRIVATE_NETWORKS", "true"),
        ("RENDEZVOUS__SECRETS__PARTNER_TOKEN__FILE", &file),
    ])
    .await?;
    let mut config = seed("01-wait-for-both.json");
    config["data"]["apiCall"]["url"] = json!(format!("{}/api/action", fake.url));
    config["data"]["apiCall"]["headers"] =
        json!({"Authorization": {"secret": "partner_token"}, "X-Tenant": "{{tenant}}"});
    let vars = [("input_data", "x"), ("tenant", "acme")];
    let r = register(&mut app, "exec-secret", &config, &vars).await?;
    let request = fake.wait_for(1, WAIT).await?.remove(0);
    assert_eq!(request.headers["authorization"], VALUE);
    assert_eq!(request.headers["x-tenant"], "acme");
    // GetWait shows no value (nor does the registration's answer).
    let wait = app.get(&r.wait_id).await?;
    assert!(!format!("{wait:?}").contains("s3cr3t"), "{wait:?}");
    assert!(!format!("{r:?}").contains("s3cr3t"), "{r:?}");
    // A secret the service does not have is refused at registration, naming it and the header.
    config["data"]["apiCall"]["headers"] = json!({"X-Key": {"secret": "partner_tokn"}});
    refused(
        &mut app,
        "exec-unknown",
        &config,
        &vars,
        &[
            "data.apiCall.headers.\"x-key\"",
            "the secret \"partner_tokn\" is not configured in [secrets] (configured: partner_token)",
        ],
    )
    .await?;
    app.stop().await?;
    // The database holds the reference, never the value.
    let stored = database_bytes(&db.url);
    assert!(holds(&stored, "partner_token"), "the reference is stored");
    assert!(
        !holds(&stored, "s3cr3t"),
        "the secret's value reached the database"
    );
    assert_eq!(fake.requests().len(), 1);
    Ok(())
}
