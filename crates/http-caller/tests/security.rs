//! The caller's security layer against a real listener on 127.0.0.1 that counts every
//! connection: each refused address (literal, and behind a name) reaches nothing; proxy
//! environment variables are ignored unless a proxy is configured; headers the client owns are
//! refused; a secret header is sent with the secret's value, read at call time, and a secret
//! that cannot be read fails the call naming it, never showing its value.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rendezvous_domain::{ApiRequest, HttpMethod, ResponseMode};
use rendezvous_http_caller::{CallerConfig, Lookup, ReqwestCaller, SecretSource};
use rendezvous_ports::{CallFailure, HttpCaller};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A plain TCP listener on 127.0.0.1 answering `200 ok` to anything, counting connections and
/// keeping each request's head (request line and headers) as text.
struct Listener {
    port: u16,
    connections: Arc<AtomicUsize>,
    heads: Arc<Mutex<Vec<String>>>,
}

impl Listener {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let heads = Arc::new(Mutex::new(Vec::new()));
        let (count, log) = (connections.clone(), heads.clone());
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let log = log.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    log.lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&head).into_owned());
                    let _ = stream
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                        )
                        .await;
                });
            }
        });
        Self {
            port,
            connections,
            heads,
        }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }
}

fn get(url: String) -> ApiRequest {
    ApiRequest {
        method: HttpMethod::Get,
        url,
        headers: BTreeMap::new(),
        secret_headers: BTreeMap::new(),
        body: None,
        response_mode: ResponseMode::Callback,
    }
}

fn config(allow_private_networks: bool) -> CallerConfig {
    CallerConfig {
        timeout: Duration::from_millis(500),
        allow_private_networks,
        ..CallerConfig::default()
    }
}

/// A lookup answering from a table (an unknown name does not resolve).
fn table(entries: &[(&str, IpAddr)]) -> Lookup {
    let table: BTreeMap<String, IpAddr> = entries
        .iter()
        .map(|(name, ip)| ((*name).to_owned(), *ip))
        .collect();
    Arc::new(move |host: String| {
        let found = table.get(&host).copied();
        Box::pin(async move {
            found.map(|ip| vec![ip]).ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::NotFound, format!("{host}: unknown"))
            })
        })
    })
}

/// Every refused form: loopback, 0/8, private, link-local, CGNAT, 192.0.0/24, benchmarking,
/// 240/4 and broadcast, multicast, documentation, and the IPv6 forms (unspecified, mapped,
/// compatible, translated, NAT64, 6to4, Teredo, unique-local, link-local, multicast).
const REFUSED: [&str; 28] = [
    "127.0.0.1",
    "127.1.2.3",
    "0.0.0.0",
    "0.1.2.3",
    "10.0.0.1",
    "172.16.5.4",
    "192.168.1.1",
    "169.254.169.254",
    "100.64.0.1",
    "192.0.0.1",
    "198.18.0.1",
    "240.0.0.1",
    "255.255.255.255",
    "224.0.0.1",
    "192.0.2.1",
    "::1",
    "::",
    "::ffff:127.0.0.1",
    "::127.0.0.1",
    "::ffff:0:127.0.0.1",
    "64:ff9b::7f00:1",
    "64:ff9b:1::7f00:1",
    "2002:7f00:1::",
    "2001:0:7f00:1::",
    "fd00::1",
    "fe80::1",
    "ff02::1",
    "2001:db8::1",
];

fn literal(ip: &str, port: u16) -> String {
    if ip.contains(':') {
        format!("http://[{ip}]:{port}/x")
    } else {
        format!("http://{ip}:{port}/x")
    }
}

#[tokio::test]
async fn every_refused_literal_address_reaches_nothing() {
    let listener = Listener::start().await;
    let caller = ReqwestCaller::new(config(false)).unwrap();
    let mut urls: Vec<String> = REFUSED
        .iter()
        .map(|ip| literal(ip, listener.port))
        .collect();
    // Other spellings of 127.0.0.1, normalised by the URL parser.
    urls.push(format!("http://0x7f.1:{}/x", listener.port));
    urls.push(format!("http://2130706433:{}/x", listener.port));
    for url in urls {
        let failure = caller.call(&get(url.clone())).await.unwrap_err();
        assert!(
            matches!(&failure, CallFailure::Permanent(r) if r.contains("refused") && r.contains("private")),
            "{url}: {failure:?}"
        );
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        listener.connections(),
        0,
        "a refused call reached the listener"
    );
}

#[tokio::test]
async fn every_refused_address_behind_a_name_reaches_nothing() {
    let listener = Listener::start().await;
    let names: Vec<(String, IpAddr)> = REFUSED
        .iter()
        .enumerate()
        .map(|(i, ip)| (format!("case-{i}.partner.test"), ip.parse().unwrap()))
        .collect();
    let entries: Vec<(&str, IpAddr)> = names.iter().map(|(n, ip)| (n.as_str(), *ip)).collect();
    let guarded = ReqwestCaller::with_lookup(config(false), table(&entries)).unwrap();
    for (name, ip) in &names {
        let failure = guarded
            .call(&get(format!("http://{name}:{}/x", listener.port)))
            .await
            .unwrap_err();
        assert!(
            matches!(&failure, CallFailure::Permanent(r) if r.contains("refused") && r.contains("private")),
            "{name} -> {ip}: {failure:?}"
        );
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        listener.connections(),
        0,
        "a refused call reached the listener"
    );
    // The same name, allowed: the listener is reachable, so the refusal above was the check.
    let open = ReqwestCaller::with_lookup(
        config(true),
        table(&[("loop.partner.test", "127.0.0.1".parse().unwrap())]),
    )
    .unwrap();
    let reply = open
        .call(&get(format!(
            "http://loop.partner.test:{}/x",
            listener.port
        )))
        .await
        .unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(listener.connections(), 1);
}

/// The proxy variables this test sets for its child process.
const PROXY_VARIABLES: [&str; 6] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// Run in a child process by [`proxy_variables_are_ignored`] with the proxy variables set
/// (a process cannot set its own environment safely); does nothing otherwise.
#[tokio::test]
async fn proxy_variables_child() {
    if std::env::var_os("RDV_PROXY_CHILD").is_none() {
        return;
    }
    // The name resolves to loopback: called directly, the resolver refuses it. Through the
    // proxy of the environment, the proxy (the parent's listener) would get the request.
    let caller = ReqwestCaller::with_lookup(
        config(false),
        table(&[("partner.test", "127.0.0.1".parse().unwrap())]),
    )
    .unwrap();
    for url in ["http://partner.test/x", "https://partner.test/x"] {
        let failure = caller.call(&get(url.into())).await.unwrap_err();
        assert!(
            matches!(&failure, CallFailure::Permanent(r) if r.contains("refused")),
            "{url}: {failure:?}"
        );
    }
}

#[test]
fn proxy_variables_are_ignored() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let proxy = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let mut child = std::process::Command::new(std::env::current_exe().unwrap());
    child
        .args(["proxy_variables_child", "--exact", "--nocapture"])
        .env("RDV_PROXY_CHILD", "1")
        .env_remove("NO_PROXY")
        .env_remove("no_proxy");
    for name in PROXY_VARIABLES {
        child.env(name, &proxy);
    }
    let output = child.output().unwrap();
    assert!(
        output.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("1 passed"),
        "the child ran the test: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert_eq!(
        listener.accept().map_err(|e| e.kind()).err(),
        Some(std::io::ErrorKind::WouldBlock),
        "the proxy of the environment got a connection"
    );
}

#[tokio::test]
async fn a_configured_proxy_is_used() {
    let proxy = Listener::start().await;
    // By address, and by a name resolving to loopback (the proxy's own name is not refused).
    for proxy_url in [
        format!("http://127.0.0.1:{}", proxy.port),
        format!("http://proxy.test:{}", proxy.port),
    ] {
        let caller = ReqwestCaller::with_lookup(
            CallerConfig {
                proxy: Some(proxy_url.clone()),
                ..config(false)
            },
            table(&[("proxy.test", "127.0.0.1".parse().unwrap())]),
        )
        .unwrap();
        let reply = caller
            .call(&get("http://partner.test/orders".into()))
            .await
            .unwrap();
        assert_eq!(reply.status, 200, "{proxy_url}");
        // A literal private address is still refused before the proxy.
        let refused = caller
            .call(&get("http://169.254.169.254/latest".into()))
            .await
            .unwrap_err();
        assert!(matches!(refused, CallFailure::Permanent(_)), "{refused:?}");
    }
    let heads = proxy.heads();
    assert_eq!(heads.len(), 2, "{heads:?}");
    assert!(
        heads
            .iter()
            .all(|h| h.starts_with("GET http://partner.test/orders HTTP/1.1")),
        "{heads:?}"
    );
    assert!(
        ReqwestCaller::new(CallerConfig {
            proxy: Some("not a url".into()),
            ..config(false)
        })
        .unwrap_err()
        .contains("api.proxy")
    );
}

#[tokio::test]
async fn headers_the_client_owns_are_never_sent() {
    let listener = Listener::start().await;
    let caller = ReqwestCaller::new(config(true)).unwrap();
    for name in [
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "proxy-authorization",
        "te",
        "trailer",
        "upgrade",
    ] {
        let mut call = get(format!("http://127.0.0.1:{}/x", listener.port));
        call.headers.insert(name.into(), "evil.test".into());
        let failure = caller.call(&call).await.unwrap_err();
        assert!(
            matches!(&failure, CallFailure::Permanent(r) if r.contains(name) && r.contains("may not be set")),
            "{name}: {failure:?}"
        );
    }
    assert_eq!(listener.connections(), 0);
}

/// A fresh directory for secret files.
fn secret_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("rdv-secrets-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn secret_headers_carry_the_secret_read_at_call_time() {
    let listener = Listener::start().await;
    let dir = secret_dir("values");
    let file = dir.join("partner_token");
    std::fs::write(&file, "Bearer s3cr3t-one\n").unwrap();
    let path_value = std::env::var("PATH").unwrap();
    let caller = ReqwestCaller::new(CallerConfig {
        secrets: BTreeMap::from([
            ("partner_token".to_owned(), SecretSource::File(file.clone())),
            ("from_env".to_owned(), SecretSource::Env("PATH".into())),
        ]),
        ..config(true)
    })
    .unwrap();
    let debug = format!("{caller:?}");
    assert!(!debug.contains("s3cr3t"), "{debug}");
    let mut call = get(format!("http://127.0.0.1:{}/x", listener.port));
    call.secret_headers = BTreeMap::from([
        ("authorization".to_owned(), "partner_token".to_owned()),
        ("x-env".to_owned(), "from_env".to_owned()),
    ]);
    caller.call(&call).await.unwrap();
    // Rotated: the next call reads the new value.
    std::fs::write(&file, "Bearer s3cr3t-two\r\n").unwrap();
    caller.call(&call).await.unwrap();
    let heads = listener.heads();
    let header = |head: &str, name: &str| {
        head.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")).map(str::to_owned))
    };
    assert_eq!(
        header(&heads[0], "authorization").as_deref(),
        Some("Bearer s3cr3t-one")
    );
    assert_eq!(
        header(&heads[1], "authorization").as_deref(),
        Some("Bearer s3cr3t-two")
    );
    assert_eq!(header(&heads[0], "x-env"), Some(path_value));
}

#[tokio::test]
async fn a_secret_that_cannot_be_read_fails_the_call_naming_it_not_its_value() {
    let listener = Listener::start().await;
    let dir = secret_dir("bad");
    let broken = dir.join("broken");
    std::fs::write(&broken, "hunter2\nX-Injected: 1\n").unwrap();
    let empty = dir.join("empty");
    std::fs::write(&empty, "\n").unwrap();
    let caller = ReqwestCaller::new(CallerConfig {
        secrets: BTreeMap::from([
            ("broken".to_owned(), SecretSource::File(broken.clone())),
            ("empty".to_owned(), SecretSource::File(empty.clone())),
            (
                "missing_file".to_owned(),
                SecretSource::File(dir.join("absent")),
            ),
            (
                "missing_env".to_owned(),
                SecretSource::Env("RDV_TEST_SURELY_UNSET_VARIABLE".into()),
            ),
        ]),
        ..config(true)
    })
    .unwrap();
    for (secret, expected) in [
        (
            "unknown",
            "the secret \"unknown\" is not configured on this instance ([secrets])",
        ),
        ("broken", "not a valid HTTP header value"),
        ("empty", "is empty"),
        ("missing_file", "cannot be read from file"),
        (
            "missing_env",
            "environment variable RDV_TEST_SURELY_UNSET_VARIABLE is not set",
        ),
    ] {
        let mut call = get(format!("http://127.0.0.1:{}/x", listener.port));
        call.secret_headers = BTreeMap::from([("x-token".to_owned(), secret.to_owned())]);
        let failure = caller.call(&call).await.unwrap_err();
        let CallFailure::Transient(reason) = &failure else {
            panic!("{secret}: {failure:?}");
        };
        assert!(
            reason.starts_with("header x-token: ") && reason.contains(expected),
            "{secret}: {reason}"
        );
        assert!(!reason.contains("hunter2"), "{reason}");
    }
    assert_eq!(listener.connections(), 0);
}
