//! Authentication and authorization on a real server over TLS: every RPC against every kind
//! of caller (none, a bad token, an expired token, an engine and a gateway of tenant A, an
//! engine of tenant B, an admin) gets the documented code; mutual TLS maps a client
//! certificate to a principal and refuses one from another CA; resume streams carry only
//! their principal's tenants' resumes under load. Certificates (rcgen) and tokens
//! (jsonwebtoken) are made in the test; nothing of the security layer is mocked.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{Result, bail};
use rendezvous_app::{
    ApiKeyEntry, Application, CertificateEntry, ClientCertificates, Config, JwtSection, Running,
    TlsSection,
};
use rendezvous_grpc_api::v1;
use rendezvous_grpc_api::v1::admin_service_client::AdminServiceClient;
use rendezvous_grpc_api::v1::callback_service_client::CallbackServiceClient;
use rendezvous_grpc_api::v1::wait_service_client::WaitServiceClient;
use rendezvous_tests::security::{
    AUDIENCE, Authority, ISSUER, Pem, Scratch, TokenIssuer, api_key, tls_channel, write_pem,
};
use rendezvous_tests::{Backend, TestDatabase, test_config};
use serde_json::json;
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic::{Code, Request};

const WAIT: Duration = Duration::from_secs(15);
const ENGINE_A_SAN: &str = "spiffe://test/engine-a";

fn fixture(name: &str) -> String {
    format!("{}/fixtures/jwt/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn fixture_token(name: &str) -> Result<String> {
    Ok(std::fs::read_to_string(fixture(name))?.trim().to_owned())
}

fn node_config() -> String {
    json!({"type": "wait_events", "data": {"sources": {"cb": {"type": "callback"}}, "timeout": 60}})
        .to_string()
}

/// A TLS server with API keys, JWT keys and a client-certificate rule, and every credential
/// the tests present.
struct Secured {
    _db: TestDatabase,
    _dir: Scratch,
    running: Option<Running>,
    port: u16,
    ca: Authority,
    es: TokenIssuer,
    ed: TokenIssuer,
    gateway_a: String,
    gateway_b: String,
    admin: String,
}

impl Secured {
    async fn start(client_certificates: ClientCertificates) -> Result<Self> {
        let db = TestDatabase::create(Backend::Sqlite).await?;
        let dir = Scratch::new("auth")?;
        let ca = Authority::new("test CA")?;
        let (cert_file, key_file) = write_pem(&dir, "server", &ca.server()?)?;
        let client_ca_file = dir.write("clients-ca.crt", &ca.cert)?;
        let (es, ed) = (TokenIssuer::es256()?, TokenIssuer::ed25519()?);
        let (gateway_a, gateway_a_sha) = api_key();
        let (gateway_b, gateway_b_sha) = api_key();
        let (admin, admin_sha) = api_key();
        let key = |name: &str, sha: String, role: &str, tenant: &str| ApiKeyEntry {
            name: name.into(),
            sha256: sha,
            roles: vec![role.into()],
            tenants: vec![tenant.into()],
        };
        let mut config: Config = test_config(&db.url, &[])?;
        config.server.tls = TlsSection {
            cert_file,
            key_file,
            client_ca_file,
            client_certificates,
        };
        config.auth.api_keys = vec![
            key("gateway-a", gateway_a_sha, "gateway", "a"),
            key("gateway-b", gateway_b_sha, "gateway", "b"),
            key("admin", admin_sha, "admin", "*"),
        ];
        config.auth.certificates = vec![CertificateEntry {
            san: ENGINE_A_SAN.into(),
            roles: vec!["engine".into()],
            tenants: vec!["a".into()],
        }];
        config.auth.jwt = JwtSection {
            // RS256 keys from a JWKS document (tests/fixtures/jwt), the others inline.
            jwks_file: fixture("rs256.jwks.json").into(),
            public_keys: vec![es.public_pem.clone(), ed.public_pem.clone()],
            issuer: ISSUER.into(),
            audience: AUDIENCE.into(),
            ..JwtSection::default()
        };
        let running = Application::build(config).await?.spawn()?;
        Ok(Self {
            _db: db,
            _dir: dir,
            port: running.addr.port(),
            running: Some(running),
            ca,
            es,
            ed,
            gateway_a,
            gateway_b,
            admin,
        })
    }

    async fn channel(&self, client: Option<&Pem>) -> Result<Channel> {
        tls_channel(self.port, &self.ca.cert, client).await
    }

    fn engine_a(&self) -> String {
        self.es.token("engine-a", &["engine"], &["a"], 300)
    }

    fn engine_b(&self) -> String {
        self.ed.token("engine-b", &["engine"], &["b"], 300)
    }

    async fn stop(mut self) -> Result<()> {
        match self.running.take() {
            Some(r) => r.stop().await,
            None => Ok(()),
        }
    }
}

/// `message` with `authorization: Bearer <token>` when a token is given.
fn with<T>(message: T, token: Option<&str>) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(token) = token {
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("ascii token"),
        );
    }
    request
}

struct Clients {
    waits: WaitServiceClient<Channel>,
    callbacks: CallbackServiceClient<Channel>,
    admin: AdminServiceClient<Channel>,
}

impl Clients {
    fn new(channel: Channel) -> Self {
        Self {
            waits: WaitServiceClient::new(channel.clone()),
            callbacks: CallbackServiceClient::new(channel.clone()),
            admin: AdminServiceClient::new(channel),
        }
    }

    async fn register(
        &mut self,
        token: Option<&str>,
        execution_id: &str,
        tenant_id: &str,
        correlation_id: &str,
    ) -> Result<v1::RegisterWaitResponse, tonic::Status> {
        self.waits
            .register_wait(with(
                v1::RegisterWaitRequest {
                    execution_id: execution_id.into(),
                    node_id: "node-1".into(),
                    node_config_json: node_config(),
                    tenant_id: tenant_id.into(),
                    correlation_id: correlation_id.into(),
                    ..Default::default()
                },
                token,
            ))
            .await
            .map(|r| r.into_inner())
    }

    async fn event(
        &mut self,
        token: Option<&str>,
        (correlation_id, execution_id): (&str, &str),
        tenant_id: &str,
        key: &str,
    ) -> Result<v1::DeliverEventResponse, tonic::Status> {
        self.callbacks
            .deliver_event(with(
                v1::DeliverEventRequest {
                    correlation_id: correlation_id.into(),
                    execution_id: execution_id.into(),
                    source: "cb".into(),
                    payload_json: r#"{"ok":true}"#.into(),
                    event_key: key.into(),
                    tenant_id: tenant_id.into(),
                },
                token,
            ))
            .await
            .map(|r| r.into_inner())
    }

    /// Opens a resume stream; the error is the status of the call itself.
    async fn stream(
        &mut self,
        token: Option<&str>,
        tenant_id: &str,
    ) -> Result<tonic::Streaming<v1::ResumeStreamResponse>, tonic::Status> {
        let subscribe = v1::ResumeStreamRequest {
            message: Some(v1::resume_stream_request::Message::Subscribe(
                v1::Subscribe {
                    tenant_id: tenant_id.into(),
                    max_in_flight: 1024,
                },
            )),
        };
        // The request side stays open (the stream ends with it).
        let requests = tokio_stream::iter([subscribe]).chain(tokio_stream::pending());
        let mut stream = self
            .waits
            .resume_stream(with(requests, token))
            .await?
            .into_inner();
        // A refused subscription ends the stream with its status; a good one stays open.
        match tokio::time::timeout(Duration::from_millis(300), stream.message()).await {
            Ok(Err(status)) => Err(status),
            _ => Ok(stream),
        }
    }
}

fn code<T>(r: &Result<T, tonic::Status>) -> Code {
    match r {
        Ok(_) => Code::Ok,
        Err(s) => s.code(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_against_every_caller() -> Result<()> {
    let app = Secured::start(ClientCertificates::Optional).await?;
    let mut c = Clients::new(app.channel(None).await?);
    let admin = app.admin.clone();
    let engine_a = app.engine_a();

    // The waits the callers act on: one of tenant A per RPC that changes it.
    let a_wait = c.register(Some(&engine_a), "e-a", "", "corr-a").await?;
    let mut victims = Vec::new();
    for i in 0..8 {
        victims.push(
            c.register(
                Some(&admin),
                &format!("e-v{i}"),
                "a",
                &format!("victim-{i}"),
            )
            .await?,
        );
    }

    let credentials: Vec<(&str, Option<String>)> = vec![
        ("none", None),
        ("bad token", Some("not-a-token".into())),
        (
            "expired token",
            Some(app.es.token("engine-a", &["engine"], &["a"], -120)),
        ),
        (
            "wrong issuer",
            Some(app.es.token_with(
                "engine-a",
                &["engine"],
                &["a"],
                300,
                "https://evil",
                AUDIENCE,
            )),
        ),
        ("engine A", Some(engine_a.clone())),
        ("gateway A", Some(app.gateway_a.clone())),
        ("engine B", Some(app.engine_b())),
        ("admin", Some(admin.clone())),
    ];
    use Code::{NotFound, Ok as Yes, PermissionDenied as Denied, Unauthenticated as Unauth};
    // Per caller: RegisterWait, ResumeStream, GetWait (A's wait by id), ListWaits,
    // CancelWait (A's wait by id), DeliverEvent and DeliverApiResponse (to A's wait), then the
    // operators' ListQuarantined, ListBuffered, RedeliverResume (of the cancelled wait) and
    // ReplayQuarantined.
    let expected: BTreeMap<&str, [Code; 11]> = BTreeMap::from([
        ("none", [Unauth; 11]),
        ("bad token", [Unauth; 11]),
        ("expired token", [Unauth; 11]),
        ("wrong issuer", [Unauth; 11]),
        (
            "engine A",
            [
                Yes, Yes, Yes, Yes, Yes, Denied, Denied, Denied, Denied, Denied, Denied,
            ],
        ),
        (
            "gateway A",
            [
                Denied, Denied, Denied, Denied, Denied, Yes, Yes, Denied, Denied, Denied, Denied,
            ],
        ),
        (
            "engine B",
            [
                Yes, Yes, NotFound, Yes, NotFound, Denied, Denied, Denied, Denied, Denied, Denied,
            ],
        ),
        ("admin", [Yes; 11]),
    ]);
    let mut mismatches = Vec::new();
    for (i, (name, token)) in credentials.iter().enumerate() {
        let token = token.as_deref();
        let victim = &victims[i];
        let mut got = [Code::Ok; 11];
        got[0] = code(&c.register(token, &format!("e-new-{i}"), "", "").await);
        got[1] = code(&c.stream(token, "").await);
        got[2] = code(
            &c.waits
                .get_wait(with(
                    v1::GetWaitRequest {
                        key: Some(v1::get_wait_request::Key::WaitId(a_wait.wait_id.clone())),
                        tenant_id: String::new(),
                    },
                    token,
                ))
                .await,
        );
        let listed = c
            .waits
            .list_waits(with(
                v1::ListWaitsRequest {
                    page_size: 1000,
                    ..Default::default()
                },
                token,
            ))
            .await;
        got[3] = code(&listed);
        if let Ok(page) = &listed {
            let tenants: BTreeSet<String> = page
                .get_ref()
                .waits
                .iter()
                .map(|w| w.tenant_id.clone())
                .collect();
            let allowed: &[&str] = match *name {
                "engine A" => &["a"],
                "engine B" => &["b"],
                _ => &["a", "b", "default"],
            };
            if !tenants.iter().all(|t| allowed.contains(&t.as_str())) {
                mismatches.push(format!("{name}: ListWaits showed tenants {tenants:?}"));
            }
        }
        got[4] = code(
            &c.waits
                .cancel_wait(with(
                    v1::CancelWaitRequest {
                        key: Some(v1::cancel_wait_request::Key::WaitId(victim.wait_id.clone())),
                        reason: "test".into(),
                        ..Default::default()
                    },
                    token,
                ))
                .await,
        );
        got[5] = code(
            &c.event(token, ("corr-a", "e-a"), "a", &format!("k-{i}"))
                .await,
        );
        got[6] = code(
            &c.callbacks
                .deliver_api_response(with(
                    v1::DeliverApiResponseRequest {
                        correlation_id: format!("victim-{i}"),
                        execution_id: format!("e-v{i}"),
                        http_status: 200,
                        body: b"{}".to_vec(),
                        idempotency_key: format!("r-{i}"),
                        tenant_id: "a".into(),
                        ..Default::default()
                    },
                    token,
                ))
                .await,
        );
        got[7] = code(
            &c.admin
                .list_quarantined(with(v1::ListQuarantinedRequest::default(), token))
                .await,
        );
        got[8] = code(
            &c.admin
                .list_buffered(with(v1::ListBufferedRequest::default(), token))
                .await,
        );
        got[9] = code(
            &c.admin
                .redeliver_resume(with(
                    v1::RedeliverResumeRequest {
                        wait_id: victim.wait_id.clone(),
                    },
                    token,
                ))
                .await,
        );
        got[10] = code(
            &c.admin
                .replay_quarantined(with(
                    v1::ReplayQuarantinedRequest {
                        ids: vec![i64::MAX],
                    },
                    token,
                ))
                .await,
        );
        if got != expected[name] {
            mismatches.push(format!(
                "{name}: expected {:?}, got {got:?}",
                expected[name]
            ));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));

    // A credential can narrow its tenant, never widen it; errors name no other wait's data.
    let engine_b = app.engine_b();
    let e = c
        .register(Some(&engine_b), "e-x", "a", "")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let e = c.stream(Some(&engine_b), "a").await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let e = c
        .event(Some(&app.gateway_b), ("corr-a", "e-a"), "a", "forged")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_are_principals_and_strangers_are_refused() -> Result<()> {
    let app = Secured::start(ClientCertificates::Optional).await?;
    // A certificate of our CA whose SAN is mapped: an engine of tenant A, no token needed.
    let engine_cert = app.ca.client(ENGINE_A_SAN)?;
    let mut c = Clients::new(app.channel(Some(&engine_cert)).await?);
    let w = c.register(None, "e-1", "", "").await?;
    let wait = c
        .waits
        .get_wait(with(
            v1::GetWaitRequest {
                key: Some(v1::get_wait_request::Key::WaitId(w.wait_id.clone())),
                tenant_id: String::new(),
            },
            None,
        ))
        .await?
        .into_inner()
        .wait
        .expect("a wait");
    assert_eq!(wait.tenant_id, "a");
    let e = c
        .event(None, (&w.correlation_id, "e-1"), "", "k")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");

    // Of our CA but not mapped: not a principal.
    let unmapped = app.ca.client("spiffe://test/somebody")?;
    let mut c = Clients::new(app.channel(Some(&unmapped)).await?);
    let e = c.register(None, "e-2", "", "").await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");

    // From another CA: the handshake fails, nothing is served.
    let stranger = Authority::new("other CA")?.client(ENGINE_A_SAN)?;
    let refused = match app.channel(Some(&stranger)).await {
        Err(_) => true,
        Ok(channel) => Clients::new(channel)
            .register(None, "e-3", "", "")
            .await
            .is_err(),
    };
    assert!(refused, "a certificate of another CA was accepted");

    // Plaintext to a TLS port is not served.
    let plain = Channel::from_shared(format!("http://127.0.0.1:{}", app.port))?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await;
    if let Ok(plain) = plain {
        let e = Clients::new(plain)
            .register(Some(&app.admin), "e-4", "", "")
            .await
            .unwrap_err();
        assert_ne!(e.code(), Code::Ok);
    }
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_client_certificates_refuse_connections_without_one() -> Result<()> {
    let app = Secured::start(ClientCertificates::Required).await?;
    let refused = match app.channel(None).await {
        Err(_) => true,
        Ok(channel) => Clients::new(channel)
            .register(Some(&app.admin), "e-1", "", "")
            .await
            .is_err(),
    };
    assert!(refused, "served a connection without a client certificate");
    let cert = app.ca.client(ENGINE_A_SAN)?;
    let mut c = Clients::new(app.channel(Some(&cert)).await?);
    c.register(None, "e-2", "", "").await?;
    app.stop().await
}

/// Takes resumes from `stream` until `n` arrived or nothing came for a while; acks each.
async fn drain(
    stream: &mut tonic::Streaming<v1::ResumeStreamResponse>,
    n: usize,
) -> Vec<v1::Resume> {
    let mut got = Vec::new();
    while got.len() < n {
        match tokio::time::timeout(WAIT, stream.message()).await {
            Ok(Ok(Some(v1::ResumeStreamResponse {
                message: Some(v1::resume_stream_response::Message::Resume(r)),
            }))) => got.push(r),
            _ => break,
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_streams_carry_only_their_tenants_resumes_under_load() -> Result<()> {
    const N: usize = 60;
    let app = Secured::start(ClientCertificates::Optional).await?;
    let channel = app.channel(None).await?;
    let (engine_a, engine_b) = (app.engine_a(), app.engine_b());
    let mut streams = Vec::new();
    for token in [&engine_a, &engine_b] {
        streams.push(
            Clients::new(channel.clone())
                .stream(Some(token), "")
                .await?,
        );
    }
    // The same correlation ids in both tenants; B's gateway also plants early events for A's
    // ids in its own tenant first: none of it may touch A.
    let mut tasks = Vec::new();
    for (engine, gateway, tenant) in [
        (engine_a.clone(), app.gateway_a.clone(), "a"),
        (engine_b.clone(), app.gateway_b.clone(), "b"),
    ] {
        let mut c = Clients::new(channel.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..N {
                let corr = format!("shared-{i}");
                let execution = format!("e-{tenant}-{i}");
                if tenant == "b" {
                    c.event(
                        Some(&gateway),
                        (&corr, &execution),
                        "",
                        &format!("early-{i}"),
                    )
                    .await?;
                }
                c.register(Some(&engine), &execution, "", &corr).await?;
                if tenant == "a" {
                    c.event(Some(&gateway), (&corr, &execution), "", &format!("k-{i}"))
                        .await?;
                }
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let mut stream_b = streams.pop().expect("b");
    let mut stream_a = streams.pop().expect("a");
    let (a, b) = tokio::join!(drain(&mut stream_a, N), drain(&mut stream_b, N));
    if a.len() != N || b.len() != N {
        bail!(
            "expected {N} resumes each, got {} for A and {} for B",
            a.len(),
            b.len()
        );
    }
    assert!(
        a.iter()
            .all(|r| r.tenant_id == "a" && r.execution_id.starts_with("e-a-"))
    );
    assert!(
        b.iter()
            .all(|r| r.tenant_id == "b" && r.execution_id.starts_with("e-b-"))
    );
    // B's waits completed from their early events, A's from A's gateway: each its own data.
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_checked_against_the_right_key() -> Result<()> {
    let app = Secured::start(ClientCertificates::Optional).await?;
    let mut c = Clients::new(app.channel(None).await?);
    // RS256 from the JWKS document, its kid picking the key: an engine of tenant A.
    let rsa = fixture_token("rs256-engine-a.jwt")?;
    let w = c.register(Some(&rsa), "e-rsa", "", "").await?;
    let listed = c
        .waits
        .list_waits(with(v1::ListWaitsRequest::default(), Some(&rsa)))
        .await?
        .into_inner();
    assert!(listed.waits.iter().any(|x| x.wait_id == w.wait_id));
    assert!(listed.waits.iter().all(|x| x.tenant_id == "a"));
    let refused = [
        // A kid no configured key has.
        fixture_token("rs256-unknown-kid.jwt")?,
        // Signed by a key nobody configured.
        TokenIssuer::es256()?.token("engine-a", &["engine"], &["a"], 300),
        // The right key, the wrong audience.
        app.ed
            .token_with("engine-b", &["engine"], &["b"], 300, ISSUER, "someone-else"),
    ];
    for token in refused {
        let e = c.register(Some(&token), "e-x", "", "").await.unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    }
    app.stop().await
}
