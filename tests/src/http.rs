//! The HTTP door: deliveries as an external service sends them over plain HTTP to
//! `/v1/callbacks/...`, signed the Standard Webhooks way, answered as JSON and read back into
//! the gRPC messages and statuses, so that one test body checks both doors alike.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use anyhow::{Context, Result, bail};
use rendezvous_grpc_api::v1;
use rendezvous_grpc_api::webhook::WebhookSecret;
use rendezvous_service::Tenants;
use tonic::{Code, Status};

/// Which door a [`crate::TestApp`] delivers events through.
#[derive(Debug, Clone)]
pub enum Door {
    /// The `CallbackService` RPCs.
    Grpc,
    /// The HTTP callbacks, signed with this secret.
    Http(Signer),
}

/// Signs callbacks with a webhook secret, as a sender does.
#[derive(Debug, Clone)]
pub struct Signer {
    /// The secret as configured (`whsec_…`).
    pub text: String,
    secret: WebhookSecret,
}

impl Signer {
    /// A fresh random secret.
    pub fn random() -> Self {
        use base64::Engine as _;
        let bytes: Vec<u8> = (0..32).map(|_| fastrand::u8(..)).collect();
        let text = format!(
            "whsec_{}",
            base64::engine::general_purpose::STANDARD.encode(bytes)
        );
        Self::from_text(&text)
    }

    /// The signer of a configured secret.
    pub fn from_text(text: &str) -> Self {
        Self {
            text: text.to_owned(),
            secret: WebhookSecret::parse("test", text, Tenants::Any).expect("a valid secret"),
        }
    }

    /// The three Standard Webhooks headers of `body`, signed at `timestamp` (unix seconds).
    pub fn headers(&self, id: &str, timestamp: i64, body: &[u8]) -> Vec<(String, String)> {
        vec![
            ("webhook-id".into(), id.into()),
            ("webhook-timestamp".into(), timestamp.to_string()),
            (
                "webhook-signature".into(),
                self.secret.sign(id, timestamp, body),
            ),
        ]
    }
}

/// Now, in unix seconds.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// An HTTP answer.
#[derive(Debug, Clone)]
pub struct Answer {
    /// Its status code.
    pub status: u16,
    /// Its headers (lowercase names).
    pub headers: BTreeMap<String, String>,
    /// Its body.
    pub body: Vec<u8>,
}

impl Answer {
    /// The body as JSON.
    pub fn json(&self) -> Result<serde_json::Value> {
        serde_json::from_slice(&self.body).with_context(|| {
            format!(
                "the answer ({}) is not JSON: {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// A delivery's answer as the gRPC door gives it: the fields of a delivery response, or
    /// the status of an error body (`{"error": {"status": "INVALID_ARGUMENT", ...}}`).
    pub fn delivery(&self) -> Result<Result<Delivered, Status>> {
        let json = self.json()?;
        if self.status == 200 {
            let field = |name: &str| json[name].as_str().unwrap_or_default().to_owned();
            let result = v1::DeliveryResult::from_str_name(&field("result"))
                .with_context(|| format!("no result in {json}"))?;
            let status = v1::WaitStatus::from_str_name(&field("status"))
                .with_context(|| format!("no status in {json}"))?;
            return Ok(Ok(Delivered {
                result,
                wait_id: field("wait_id"),
                status,
                detail: field("detail"),
            }));
        }
        let error = &json["error"];
        let code = match error["status"].as_str() {
            Some("INVALID_ARGUMENT") => Code::InvalidArgument,
            Some("UNAUTHENTICATED") => Code::Unauthenticated,
            Some("PERMISSION_DENIED") => Code::PermissionDenied,
            Some("NOT_FOUND") => Code::NotFound,
            Some("ALREADY_EXISTS") => Code::AlreadyExists,
            Some("FAILED_PRECONDITION") => Code::FailedPrecondition,
            Some("RESOURCE_EXHAUSTED") => Code::ResourceExhausted,
            Some("ABORTED") => Code::Aborted,
            Some("UNAVAILABLE") => Code::Unavailable,
            Some("INTERNAL") => Code::Internal,
            other => bail!("unexpected error status {other:?} in {json}"),
        };
        if error["code"].as_u64() != Some(u64::from(self.status)) {
            bail!(
                "the error body's code is not the HTTP status {}: {json}",
                self.status
            );
        }
        let message = error["message"].as_str().unwrap_or_default();
        Ok(Err(Status::new(code, message)))
    }
}

/// What a delivery did, in the fields both delivery responses share.
#[derive(Debug, Clone)]
pub struct Delivered {
    /// The result.
    pub result: v1::DeliveryResult,
    /// The wait it was applied to.
    pub wait_id: String,
    /// The wait's status after it.
    pub status: v1::WaitStatus,
    /// Why it did not count, when it did not.
    pub detail: String,
}

/// Both delivery responses carry the same fields.
macro_rules! delivery_response {
    ($($response:ty),*) => {$(
        impl From<Delivered> for $response {
            fn from(d: Delivered) -> Self {
                Self {
                    result: d.result.into(),
                    wait_id: d.wait_id,
                    status: d.status.into(),
                    detail: d.detail,
                }
            }
        }
    )*};
}

delivery_response!(v1::DeliverApiResponseResponse, v1::DeliverEventResponse);

/// `POST http://{addr}{path}` over HTTP/1.1 with these headers and body; the whole answer.
pub async fn post(
    addr: SocketAddr,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Result<Answer> {
    request(addr, "POST", path, headers, body).await
}

/// `{method} http://{addr}{path}` over HTTP/1.1 with these headers and body; the whole answer.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Result<Answer> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    // A server refusing early may close before it read the whole body.
    let _ = stream.write_all(body).await;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of the response head")?;
    let head = String::from_utf8(response[..end].to_vec())?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .context("no status line")?
        .parse()?;
    let headers: BTreeMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = response[end + 4..].to_vec();
    if headers.get("transfer-encoding").map(String::as_str) == Some("chunked") {
        body = dechunk(&body)?;
    }
    Ok(Answer {
        status,
        headers,
        body,
    })
}

/// The body of a chunked transfer.
fn dechunk(mut raw: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = raw
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("a chunk without its size line")?;
        let size = usize::from_str_radix(std::str::from_utf8(&raw[..line_end])?.trim(), 16)?;
        raw = &raw[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        out.extend_from_slice(raw.get(..size).context("a short chunk")?);
        raw = raw.get(size + 2..).context("a chunk without its end")?;
    }
}

/// `key=value&...`, each value form-encoded (as the service renders `{{ callback_url }}`).
pub fn query(pairs: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}
