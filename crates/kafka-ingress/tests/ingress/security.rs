//! Kafka over TLS and SASL. librdkafka's mock cluster speaks neither, and Tansu (the e2e's
//! broker) speaks SASL (PLAIN, SCRAM-SHA-256/512) but not TLS (its `--cert`/`--key` are
//! accepted and unused), so: a TLS endpoint made here with certificates from a CA made here
//! shows the ingress's TLS handshake (verified with the right CA, refused with another), and,
//! when Tansu is installed, the ingress reads records over SASL_SSL from Tansu behind a TLS
//! terminator made here (SCRAM-SHA-512; a wrong password and a wrong CA are refused).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rendezvous_kafka_ingress::IngressConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;

use crate::support::{config, eventually, harness, start};

/// A CA made for one test, and where its certificate is written.
struct Ca {
    pem_file: PathBuf,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    fn new(dir: &Path, name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let pem_file = dir.join(format!("{name}.pem"));
        std::fs::write(&pem_file, params.self_signed(&key).unwrap().pem()).unwrap();
        Self {
            pem_file,
            issuer: Issuer::new(params, key),
        }
    }

    /// A TLS acceptor whose certificate names 127.0.0.1 and localhost.
    fn acceptor(&self) -> TlsAcceptor {
        let params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(cert.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .unwrap();
        TlsAcceptor::from(Arc::new(config))
    }
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "rendezvous-kafka-{name}-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// What a TLS endpoint saw of one connection: the API key of the first Kafka request read
/// over TLS, or why the handshake failed.
type Seen = Result<i16, String>;

/// A TLS endpoint on 127.0.0.1 that reports, per connection, the first Kafka request it read
/// after the handshake (and answers nothing).
async fn tls_endpoint(acceptor: TlsAcceptor) -> (u16, mpsc::UnboundedReceiver<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (seen, report) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, seen) = (acceptor.clone(), seen.clone());
            tokio::spawn(async move {
                match acceptor.accept(tcp).await {
                    Ok(mut tls) => {
                        // A request: size (i32), then api_key (i16), api_version, ...
                        let mut head = [0u8; 6];
                        let read = tls.read_exact(&mut head).await;
                        let _ = seen.send(
                            read.map(|_| i16::from_be_bytes([head[4], head[5]]))
                                .map_err(|e| format!("reading over TLS: {e}")),
                        );
                        // Keep the connection open a while: the client waits for an answer.
                        tokio::time::sleep(Duration::from_secs(2)).await;
                    }
                    Err(e) => {
                        let _ = seen.send(Err(e.to_string()));
                    }
                }
            });
        }
    });
    (port, report)
}

async fn next(report: &mut mpsc::UnboundedReceiver<Seen>) -> Seen {
    tokio::time::timeout(Duration::from_secs(60), report.recv())
        .await
        .expect("a connection within 60 s")
        .expect("the endpoint runs")
}

/// Kafka's ApiVersions request: the first thing a client sends on a connection.
const API_VERSIONS: i16 = 18;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_the_broker_is_verified_against_the_configured_ca() {
    let dir = temp_dir("tls");
    let ca = Ca::new(&dir, "broker-ca");
    let other = Ca::new(&dir, "other-ca");
    let (port, mut report) = tls_endpoint(ca.acceptor()).await;
    let h = harness().await;
    let ssl = |ca_file: &Path| {
        let mut c = config(&h, "g-tls");
        c.brokers = format!("127.0.0.1:{port}");
        c.topics = vec!["tls-topic".into()];
        c.properties
            .insert("security.protocol".into(), "SSL".into());
        c.properties.insert(
            "ssl.ca.location".into(),
            ca_file.to_string_lossy().into_owned(),
        );
        c
    };

    // The CA that signed the endpoint's certificate: the handshake completes and the Kafka
    // protocol runs over it.
    let good = ssl(&ca.pem_file);
    good.check().unwrap();
    let ingress = start(&h, good);
    assert_eq!(next(&mut report).await, Ok(API_VERSIONS));
    ingress.stop().await;
    while report.try_recv().is_ok() {}

    // Another CA: librdkafka refuses the certificate (the endpoint sees the alert), and says
    // why in the error it reports.
    let ingress = start(&h, ssl(&other.pem_file));
    let seen = next(&mut report).await;
    assert!(
        matches!(&seen, Err(e) if e.contains("UnknownCA") || e.contains("BadCertificate")),
        "{seen:?}"
    );
    eventually("the verification failure reported", async || {
        ingress
            .stats
            .last_client_error()
            .is_some_and(|e| e.contains("certificate verify failed"))
    })
    .await;
    assert!(ingress.stats.client_errors.load(Ordering::Relaxed) > 0);
    ingress.stop().await;

    // A CA file that does not exist is refused before connecting, naming the property.
    let err = ssl(&dir.join("missing.pem"))
        .check()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("ssl.ca.location") && err.contains("missing.pem"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// SASL over TLS, each mechanism, and every codec, are compiled into librdkafka: the check
/// refuses what it was built without.
#[test]
fn sasl_ssl_mechanisms_and_codecs_are_built_in() {
    for (protocol, mechanism) in [
        ("SSL", None),
        ("SASL_SSL", Some("PLAIN")),
        ("SASL_SSL", Some("SCRAM-SHA-256")),
        ("SASL_SSL", Some("SCRAM-SHA-512")),
        ("SASL_PLAINTEXT", Some("SCRAM-SHA-512")),
    ] {
        let mut c = IngressConfig::new("127.0.0.1:9093", "g");
        c.properties
            .insert("security.protocol".into(), protocol.into());
        if let Some(mechanism) = mechanism {
            c.properties
                .insert("sasl.mechanism".into(), mechanism.into());
            c.properties.insert("sasl.username".into(), "u".into());
            c.properties.insert("sasl.password".into(), "p".into());
        }
        c.check()
            .unwrap_or_else(|e| panic!("{protocol} {mechanism:?}: {e}"));
    }
    for codec in ["gzip", "snappy", "lz4", "zstd"] {
        let mut c = IngressConfig::new("127.0.0.1:9093", "g");
        c.properties
            .insert("compression.codec".into(), codec.into());
        c.check().unwrap_or_else(|e| panic!("{codec}: {e}"));
    }
    let mut c = IngressConfig::new("127.0.0.1:9093", "g");
    c.properties
        .insert("sasl.password".into(), "hunter2-secret".into());
    c.properties.insert("no.such.property".into(), "x".into());
    let err = c.check().unwrap_err().to_string();
    assert!(err.contains("no.such.property"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}

/// The Tansu binary: `RENDEZVOUS_TEST_TANSU`, else where `cargo xtask tools` installs it.
fn tansu() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("RENDEZVOUS_TEST_TANSU").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        assert!(path.is_file(), "RENDEZVOUS_TEST_TANSU={}", path.display());
        return Some(path);
    }
    let tools = std::env::var_os("RENDEZVOUS_TOOLS_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/rendezvous-tools"))
        })?;
    let path = tools.join("tansu-0.6.0-libsql/bin/tansu");
    path.is_file().then_some(path)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn wait_for_port(port: u16) {
    for _ in 0..300 {
        if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("nothing listens on {port}");
}

/// Tansu, killed on drop.
struct Tansu {
    _child: tokio::process::Child,
}

impl Tansu {
    async fn start(binary: &Path, dir: &Path, port: u16, advertised: u16, auth: bool) -> Self {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("tansu.log"))
            .unwrap();
        let mut command = tokio::process::Command::new(binary);
        command
            .args(["broker", "--listener-url"])
            .arg(format!("tcp://127.0.0.1:{port}"))
            .arg("--advertised-listener-url")
            .arg(format!("tcp://127.0.0.1:{advertised}"))
            .args(["--storage-engine", "sqlite://tansu.db", "--silent"]);
        if auth {
            command.arg("--authentication");
        }
        let child = command
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        wait_for_port(port).await;
        Self { _child: child }
    }
}

/// A TLS terminator on 127.0.0.1: each connection's TLS is ended here and its bytes go to
/// `upstream` in plain TCP. Counts handshakes that completed and that failed.
#[derive(Default)]
struct Terminated {
    ok: Mutex<u32>,
    failed: Mutex<Vec<String>>,
}

async fn tls_terminator(port: u16, acceptor: TlsAcceptor, upstream: u16) -> Arc<Terminated> {
    let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let seen = Arc::new(Terminated::default());
    let counts = seen.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, counts) = (acceptor.clone(), counts.clone());
            tokio::spawn(async move {
                match acceptor.accept(tcp).await {
                    Ok(mut tls) => {
                        *counts.ok.lock().unwrap() += 1;
                        if let Ok(mut plain) = TcpStream::connect(("127.0.0.1", upstream)).await {
                            let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                        }
                    }
                    Err(e) => counts.failed.lock().unwrap().push(e.to_string()),
                }
            });
        }
    });
    seen
}

fn sasl_ssl(
    properties: &mut std::collections::BTreeMap<String, String>,
    ca: &Path,
    password: &str,
) {
    for (k, v) in [
        ("security.protocol", "SASL_SSL"),
        ("sasl.mechanism", "SCRAM-SHA-512"),
        ("sasl.username", "rendezvous"),
        ("sasl.password", password),
        ("ssl.ca.location", &ca.to_string_lossy()),
    ] {
        properties.insert(k.into(), v.into());
    }
}

/// SASL_SSL against a real broker: Tansu with SCRAM-SHA-512 users (it has no TLS of its own,
/// so a TLS terminator made here stands in front of it and is what it advertises). Skipped,
/// saying so, when Tansu is not installed (`cargo xtask tools`; `cargo xtask ci` installs it
/// first and sets `RENDEZVOUS_TEST_TANSU`, so it never skips there).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sasl_ssl_scram_against_tansu() {
    let Some(binary) = tansu() else {
        eprintln!(
            "SKIPPED sasl_ssl_scram_against_tansu: Tansu is not installed (cargo xtask tools)"
        );
        return;
    };
    let dir = temp_dir("tansu");
    let ca = Ca::new(&dir, "kafka-ca");
    let other = Ca::new(&dir, "other-ca");
    let (broker_port, tls_port) = (free_port(), free_port());
    let terminated = tls_terminator(tls_port, ca.acceptor(), broker_port).await;

    // The user is created before authentication is switched on (Tansu refuses everything but
    // the SASL handshake to unauthenticated clients, user management included).
    let open = Tansu::start(&binary, &dir, broker_port, tls_port, false).await;
    let created = tokio::process::Command::new(&binary)
        .args(["user", "create", "--broker"])
        .arg(format!("tcp://127.0.0.1:{broker_port}"))
        .args(["--mechanism", "scram512", "rendezvous", "s3cret-scram"])
        .current_dir(&dir)
        .output()
        .await
        .unwrap();
    assert!(
        created.status.success(),
        "tansu user create: {}",
        String::from_utf8_lossy(&created.stderr)
    );
    drop(open);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _broker = Tansu::start(&binary, &dir, broker_port, tls_port, true).await;

    let topic = "secure.events";
    let bootstrap = format!("127.0.0.1:{tls_port}");
    let mut producer = ClientConfig::new();
    producer
        .set("bootstrap.servers", &bootstrap)
        .set("message.timeout.ms", "30000");
    let mut properties = Default::default();
    sasl_ssl(&mut properties, &ca.pem_file, "s3cret-scram");
    for (k, v) in &properties {
        producer.set(k, v);
    }
    let admin: AdminClient<DefaultClientContext> = producer.create().unwrap();
    let created = admin
        .create_topics(
            [&NewTopic::new(topic, 1, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        )
        .await
        .expect("creating the topic over SASL_SSL");
    assert!(
        created
            .iter()
            .all(|r| matches!(r, Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)))),
        "{created:?}"
    );
    let producer: FutureProducer = producer.create().unwrap();
    let value = serde_json::json!({"correlation_id": "corr-sasl-1", "event_type": "done"});
    producer
        .send(
            FutureRecord::to(topic).key("k").payload(&value.to_string()),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e)
        .expect("producing over SASL_SSL");

    let h = harness().await;
    let secure = |password: &str, ca: &Path, group: &str| {
        let mut c = config(&h, group);
        c.brokers = bootstrap.clone();
        c.topics = vec![topic.into()];
        sasl_ssl(&mut c.properties, ca, password);
        c
    };
    let ingress = start(&h, secure("s3cret-scram", &ca.pem_file, "g-sasl"));
    eventually("the record read over SASL_SSL", async || {
        ingress.stats.snapshot().0 >= 1
    })
    .await;
    ingress.stop().await;
    assert!(*terminated.ok.lock().unwrap() > 0);

    // A wrong password: Tansu refuses the SCRAM exchange and the ingress says so.
    let ingress = start(&h, secure("wrong", &ca.pem_file, "g-sasl-wrong"));
    eventually("the authentication failure reported", async || {
        ingress
            .stats
            .last_client_error()
            .is_some_and(|e| e.contains("SASL authentication error"))
    })
    .await;
    eprintln!("wrong password: {:?}", ingress.stats.last_client_error());
    assert_eq!(ingress.stats.snapshot().0, 0);
    ingress.stop().await;

    // The terminator's certificate from another CA: refused before any credential is sent.
    let failed_before = terminated.failed.lock().unwrap().len();
    let ingress = start(&h, secure("s3cret-scram", &other.pem_file, "g-sasl-ca"));
    eventually("the certificate refused", async || {
        ingress
            .stats
            .last_client_error()
            .is_some_and(|e| e.contains("certificate verify failed"))
    })
    .await;
    eprintln!("wrong CA: {:?}", ingress.stats.last_client_error());
    ingress.stop().await;
    assert!(terminated.failed.lock().unwrap().len() > failed_before);
    let _ = std::fs::remove_dir_all(&dir);
}
