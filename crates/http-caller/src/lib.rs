//! The outbound HTTP adapter of Rendezvous: makes a wait's API call with a timeout, a response
//! size limit, no redirects, and SSRF protection — names are resolved by a resolver that drops
//! loopback and private addresses unless they are allowed, so DNS cannot smuggle a call inside.
//!
//! The only crate allowed to depend on reqwest.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rendezvous_domain::is_private;
use rendezvous_domain::{ApiRequest, HttpMethod};
use rendezvous_ports::{CallFailure, HttpCaller, HttpReply};

/// Limits of outbound calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerConfig {
    /// Whole-request timeout (connect, send, read).
    pub timeout: Duration,
    /// The largest response body read.
    pub max_response_bytes: usize,
    /// Whether loopback and private addresses may be called.
    pub allow_private_networks: bool,
}

impl Default for CallerConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            max_response_bytes: 1024 * 1024,
            allow_private_networks: false,
        }
    }
}

/// Resolves names with the system resolver and drops non-public addresses.
struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> = addrs
                .iter()
                .copied()
                .filter(|a| !is_private(a.ip()))
                .collect();
            if public.is_empty() {
                return Err(format!(
                    "{host} resolves only to loopback or private addresses, refused"
                )
                .into());
            }
            Ok(Box::new(public.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The reqwest-based [`HttpCaller`].
#[derive(Debug, Clone)]
pub struct ReqwestCaller {
    client: reqwest::Client,
    config: CallerConfig,
}

impl ReqwestCaller {
    /// A caller with its own connection pool.
    pub fn new(config: CallerConfig) -> Result<Self, String> {
        // reqwest is built without a default TLS crypto provider; use ring's (idempotent).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("rendezvous/", env!("CARGO_PKG_VERSION")));
        if !config.allow_private_networks {
            builder = builder.dns_resolver(Arc::new(PublicOnly));
        }
        let client = builder
            .build()
            .map_err(|e| format!("building the HTTP client: {e}"))?;
        Ok(Self { client, config })
    }
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
        let url = reqwest::Url::parse(&request.url)
            .map_err(|e| CallFailure::Permanent(format!("{:?} is not a URL: {e}", request.url)))?;
        // Literal addresses are not resolved, so check them here.
        if !self.config.allow_private_networks
            && let Some(ip) = url
                .host_str()
                .and_then(|h| h.trim_matches(['[', ']']).parse::<IpAddr>().ok())
            && is_private(ip)
        {
            return Err(CallFailure::Permanent(format!(
                "{ip} is a loopback or private address, refused"
            )));
        }
        let mut builder = self.client.request(method(request.method), url);
        for (name, value) in &request.headers {
            let (name, value) = header(name, value)?;
            builder = builder.header(name, value);
        }
        if let Some(body) = &request.body {
            builder = builder
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_string());
        }
        let mut response = builder.send().await.map_err(|e| {
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
            .map_err(|e| CallFailure::Transient(error_chain(&e)))?
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

/// A header as reqwest takes it, or a permanent failure naming it (registration refuses such
/// values; this guards calls written before it did).
fn header(
    name: &str,
    value: &str,
) -> Result<(reqwest::header::HeaderName, reqwest::header::HeaderValue), CallFailure> {
    let header_name = reqwest::header::HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| CallFailure::Permanent(format!("{name:?} is not a valid HTTP header name")))?;
    if let Some(problem) = rendezvous_domain::request::header_value_problem(value) {
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
