//! The outbound HTTP adapter of Rendezvous: makes a wait's API call with a timeout, a response
//! size limit, no redirects, and SSRF protection — literal addresses outside the public
//! internet are refused, names are resolved by a resolver that drops such addresses unless
//! they are allowed (so DNS cannot smuggle a call inside), and no proxy is used unless one is
//! configured explicitly (`HTTP_PROXY` and friends are ignored: a proxy would resolve names
//! itself, past the resolver's check). Headers that reference a secret get its value here, at
//! call time, from the configured [`SecretSource`]s; the value is never stored, logged or put
//! in a reason.
//!
//! The only crate allowed to depend on reqwest.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rendezvous_domain::request::{forbidden_header, header_value_problem};
use rendezvous_domain::{ApiRequest, HttpMethod};
use rendezvous_domain::{is_private, non_public_range};
use rendezvous_ports::{CallFailure, HttpCaller, HttpReply};

/// The largest secret file read, in bytes.
pub const MAX_SECRET_BYTES: u64 = 16 * 1024;

/// Limits of outbound calls, and where secrets come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerConfig {
    /// Whole-request timeout (connect, send, read).
    pub timeout: Duration,
    /// The largest response body read.
    pub max_response_bytes: usize,
    /// Whether loopback, private and other non-public addresses may be called.
    pub allow_private_networks: bool,
    /// The proxy every call goes through (`http://proxy.internal:3128`). `None`: no proxy at
    /// all, whatever `HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY` or `NO_PROXY` say. Through a
    /// proxy, names are resolved by the proxy, which must then refuse private destinations
    /// itself (literal addresses are still refused here).
    pub proxy: Option<String>,
    /// The secrets headers may reference, by name.
    pub secrets: BTreeMap<String, SecretSource>,
}

impl Default for CallerConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            max_response_bytes: 1024 * 1024,
            allow_private_networks: false,
            proxy: None,
            secrets: BTreeMap::new(),
        }
    }
}

/// Where a secret's value is read from, at every call (so a rotated secret is picked up).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// A file (`/run/secrets/partner_token`); a trailing newline is not part of the value.
    File(PathBuf),
    /// An environment variable of the service's process.
    Env(String),
}

impl fmt::Display for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(path) => write!(f, "file {}", path.display()),
            Self::Env(name) => write!(f, "environment variable {name}"),
        }
    }
}

/// A secret's value; its `Debug` does not show it.
struct Secret(String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl SecretSource {
    /// Reads the value now, blocking (the service reads its own secrets so at start-up): the
    /// file's text without trailing CR/LF (at most [`MAX_SECRET_BYTES`]), or the variable's
    /// value; never empty. An error says what could not be read, never the value.
    pub fn read_now(&self) -> Result<String, String> {
        let value = match self {
            Self::File(path) => {
                let metadata = std::fs::metadata(path)
                    .map_err(|e| format!("cannot be read from {self}: {e}"))?;
                if metadata.len() > MAX_SECRET_BYTES {
                    return Err(format!(
                        "cannot be read from {self}: over the limit of {MAX_SECRET_BYTES} bytes"
                    ));
                }
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot be read from {self}: {e}"))?;
                text.trim_end_matches(['\r', '\n']).to_owned()
            }
            Self::Env(name) => std::env::var(name).map_err(|e| match e {
                std::env::VarError::NotPresent => format!("cannot be read: {self} is not set"),
                std::env::VarError::NotUnicode(_) => {
                    format!("cannot be read: {self} is not UTF-8")
                }
            })?,
        };
        if value.is_empty() {
            return Err(format!("is empty (read from {self})"));
        }
        Ok(value)
    }

    /// Reads the value for a call, off the request threads, and checks it can travel in a
    /// header. An error says what could not be read, never the value.
    async fn read(&self) -> Result<Secret, String> {
        let source = self.clone();
        let value = tokio::task::spawn_blocking(move || source.read_now())
            .await
            .map_err(|e| format!("cannot be read from {self}: {e}"))??;
        if let Some(problem) = header_value_problem(&value) {
            // The problem names a byte position and a control character, never the value.
            return Err(format!("read from {self} is not usable: {problem}"));
        }
        Ok(Secret(value))
    }
}

/// Looks a host name up: the system resolver unless a test gives another. Whatever it returns
/// goes through the same address check.
pub type Lookup = Arc<
    dyn Fn(String) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<IpAddr>>> + Send>>
        + Send
        + Sync,
>;

/// The system resolver.
fn system_lookup() -> Lookup {
    Arc::new(|host: String| {
        Box::pin(async move {
            Ok(tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .map(|a| a.ip())
                .collect())
        })
    })
}

/// Resolves names with `lookup`; unless private networks are allowed, drops every address
/// outside the public internet ([`is_private`]) and refuses a name that resolves only to such
/// addresses. The proxy's own host (`exempt`) is resolved without the check.
struct Checked {
    lookup: Lookup,
    allow_private_networks: bool,
    exempt: Option<String>,
}

impl reqwest::dns::Resolve for Checked {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        let lookup = self.lookup.clone();
        let check = !self.allow_private_networks
            && self
                .exempt
                .as_deref()
                .is_none_or(|exempt| !exempt.eq_ignore_ascii_case(&host));
        Box::pin(async move {
            let addrs = lookup(host.clone()).await?;
            let usable: Vec<SocketAddr> = addrs
                .iter()
                .filter(|ip| !check || !is_private(**ip))
                .map(|ip| SocketAddr::new(*ip, 0))
                .collect();
            if usable.is_empty() {
                let ranges: Vec<&str> = addrs
                    .iter()
                    .filter_map(|ip| non_public_range(*ip))
                    .collect();
                return Err(if ranges.is_empty() {
                    format!("{host} did not resolve to any address")
                } else {
                    format!(
                        "{host} resolves only to loopback or private addresses ({}), refused \
                         (api.allow_private_networks)",
                        ranges.join(", ")
                    )
                }
                .into());
            }
            Ok(Box::new(usable.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Checks a proxy URL: `http(s)://host[:port]`. The error shows it without credentials.
pub fn check_proxy(proxy: &str) -> Result<reqwest::Url, String> {
    match reqwest::Url::parse(proxy) {
        Ok(url)
            if matches!(url.scheme(), "http" | "https")
                && url.host_str().is_some_and(|h| !h.is_empty()) =>
        {
            Ok(url)
        }
        _ => Err(format!(
            "expected http://host:port or https://host:port, found {}",
            rendezvous_domain::request::redact_url(proxy)
        )),
    }
}

/// The reqwest-based [`HttpCaller`].
#[derive(Debug, Clone)]
pub struct ReqwestCaller {
    client: reqwest::Client,
    config: CallerConfig,
}

impl ReqwestCaller {
    /// A caller with its own connection pool, resolving names with the system resolver. An
    /// error when the proxy is not a URL.
    pub fn new(config: CallerConfig) -> Result<Self, String> {
        Self::with_lookup(config, system_lookup())
    }

    /// A caller that looks names up with `lookup` (tests use it to make a name resolve to a
    /// chosen address); the addresses it returns are checked like the system resolver's.
    pub fn with_lookup(config: CallerConfig, lookup: Lookup) -> Result<Self, String> {
        // reqwest is built without a default TLS crypto provider; use ring's (idempotent).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("rendezvous/", env!("CARGO_PKG_VERSION")));
        let mut exempt = None;
        builder = match &config.proxy {
            Some(proxy) => {
                let url = check_proxy(proxy).map_err(|e| format!("api.proxy: {e}"))?;
                exempt = url.host_str().map(str::to_owned);
                builder.proxy(
                    reqwest::Proxy::all(url)
                        .map_err(|e| format!("api.proxy is not usable: {e}"))?,
                )
            }
            // No proxy from the environment: it would resolve names past the check below.
            None => builder.no_proxy(),
        };
        builder = builder.dns_resolver(Arc::new(Checked {
            lookup,
            allow_private_networks: config.allow_private_networks,
            exempt,
        }));
        let client = builder
            .build()
            .map_err(|e| format!("building the HTTP client: {e}"))?;
        Ok(Self { client, config })
    }
}

/// The current span's W3C context as headers, when a tracer records it.
fn current_trace_context() -> std::collections::HashMap<String, String> {
    use opentelemetry::trace::TraceContextExt as _;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    let cx = tracing::Span::current().context();
    let mut carrier = std::collections::HashMap::new();
    if cx.span().span_context().is_valid() {
        opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut carrier));
    }
    carrier.retain(|_, v| !v.is_empty());
    carrier
}

fn method(m: HttpMethod) -> reqwest::Method {
    match m {
        HttpMethod::Get => reqwest::Method::GET,
        HttpMethod::Post => reqwest::Method::POST,
        HttpMethod::Put => reqwest::Method::PUT,
        HttpMethod::Patch => reqwest::Method::PATCH,
        HttpMethod::Delete => reqwest::Method::DELETE,
    }
}

#[async_trait]
impl HttpCaller for ReqwestCaller {
    async fn call(&self, request: &ApiRequest) -> Result<HttpReply, CallFailure> {
        let url = reqwest::Url::parse(&request.url).map_err(|e| {
            CallFailure::Permanent(format!(
                "{} is not a URL: {e}",
                rendezvous_domain::request::redact_url(&request.url)
            ))
        })?;
        // Literal addresses are not resolved, so check them here (the URL parser has already
        // normalised them: `0x7f.1` is 127.0.0.1).
        if !self.config.allow_private_networks
            && let Some(ip) = url
                .host_str()
                .and_then(|h| h.trim_matches(['[', ']']).parse::<IpAddr>().ok())
            && let Some(range) = non_public_range(ip)
        {
            return Err(CallFailure::Permanent(format!(
                "{ip} is a loopback or private address ({range}), refused \
                 (api.allow_private_networks)"
            )));
        }
        let mut headers = reqwest::header::HeaderMap::new();
        for (name, value) in &request.headers {
            let (name, value) = header(name, value)?;
            headers.insert(name, value);
        }
        for (name, secret) in &request.secret_headers {
            let (name, value) = self.secret_header(name, secret).await?;
            headers.insert(name, value);
        }
        // The server sees the call's own span (the caller's CLIENT span) as its parent, with
        // the registration's tracestate kept; without a tracer the stored context goes as is.
        for (name, value) in current_trace_context() {
            if let Ok((name, value)) = header(&name, &value) {
                headers.insert(name, value);
            }
        }
        let mut builder = self
            .client
            .request(method(request.method), url)
            .headers(headers);
        if let Some(body) = &request.body {
            builder = builder
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_string());
        }
        let mut response = builder.send().await.map_err(|e| {
            // reqwest's errors show the URL, with its query: the service logs it redacted.
            let e = e.without_url();
            let text = error_chain(&e);
            // A request that cannot be built never will be: not worth retrying.
            if e.is_builder() || (text.contains("refused") && text.contains("private")) {
                CallFailure::Permanent(text)
            } else {
                CallFailure::Transient(text)
            }
        })?;
        let status = response.status().as_u16();
        let headers: BTreeMap<String, String> = response
            .headers()
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
            .collect();
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| CallFailure::Transient(error_chain(&e.without_url())))?
        {
            if body.len() + chunk.len() > self.config.max_response_bytes {
                return Err(CallFailure::Permanent(format!(
                    "the response body is over the limit of {} bytes",
                    self.config.max_response_bytes
                )));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(HttpReply {
            status,
            headers,
            body,
        })
    }
}

impl ReqwestCaller {
    /// The header `name` with the value of the secret `secret`, marked sensitive (HTTP/2 does
    /// not index it, `Debug` does not show it). A secret that is not configured or cannot be
    /// read is a transient failure (another instance, or a fixed mount, may have it) naming
    /// the header, the secret and its source, never its value.
    async fn secret_header(
        &self,
        name: &str,
        secret: &str,
    ) -> Result<(reqwest::header::HeaderName, reqwest::header::HeaderValue), CallFailure> {
        let header_name = header_name(name)?;
        let Some(source) = self.config.secrets.get(secret) else {
            return Err(CallFailure::Transient(format!(
                "header {name}: the secret {secret:?} is not configured on this instance \
                 ([secrets])"
            )));
        };
        let value = source.read().await.map_err(|problem| {
            CallFailure::Transient(format!("header {name}: the secret {secret:?} {problem}"))
        })?;
        let mut header_value = reqwest::header::HeaderValue::from_str(&value.0).map_err(|_| {
            CallFailure::Transient(format!(
                "header {name}: the secret {secret:?} is not a valid HTTP header value"
            ))
        })?;
        header_value.set_sensitive(true);
        Ok((header_name, header_value))
    }
}

/// A header name as reqwest takes it, or a permanent failure naming it: not a token, or one
/// the client owns ([`forbidden_header`]; registration refuses both, this guards calls
/// written before it did).
fn header_name(name: &str) -> Result<reqwest::header::HeaderName, CallFailure> {
    if let Some(problem) = forbidden_header(name) {
        return Err(CallFailure::Permanent(problem));
    }
    reqwest::header::HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| CallFailure::Permanent(format!("{name:?} is not a valid HTTP header name")))
}

/// A header as reqwest takes it, or a permanent failure naming it (registration refuses such
/// values; this guards calls written before it did).
fn header(
    name: &str,
    value: &str,
) -> Result<(reqwest::header::HeaderName, reqwest::header::HeaderValue), CallFailure> {
    let header_name = header_name(name)?;
    if let Some(problem) = header_value_problem(value) {
        return Err(CallFailure::Permanent(format!("header {name}: {problem}")));
    }
    let header_value = reqwest::header::HeaderValue::from_str(value).map_err(|_| {
        CallFailure::Permanent(format!(
            "header {name}: the value is not a valid HTTP header value"
        ))
    })?;
    Ok((header_name, header_value))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
