//! Callbacks over plain HTTP, on the service's own port beside gRPC, for external services
//! that cannot speak gRPC: `POST /v1/callbacks/api-response` (the body is the API's response)
//! and `POST /v1/callbacks/events/{source}` (the body is the event's JSON), the wait named in
//! the query (`correlation_id`, `execution_id`, optionally `tenant_id`; `http_status` for a
//! response). A caller proves itself with a Standard Webhooks signature (`webhook.rs`; its
//! `webhook-id` is the idempotency key) or with a gateway credential as over gRPC
//! (`authorization: Bearer …` or a client certificate; the key in `idempotency-key`). The same
//! use case, codes and limits as `DeliverApiResponse`/`DeliverEvent`, answered as JSON:
//! `{"result": …, "wait_id": …, "status": …, "detail": …}`, or an error in the Google JSON
//! error shape, `{"error": {"code": <HTTP status>, "status": "<gRPC code>", "message": …}}`.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use rendezvous_ports::{Clock, ResumeSignal, Store};
use rendezvous_service::{Principal, Role};
use tonic::metadata::MetadataMap;
use tonic::{Code, Status};

use crate::auth::PeerIdentity;
use crate::server::{DeliveryReply, GrpcApi};
use crate::v1;
use crate::webhook::{ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER};

/// The largest callback body read, in bytes: the gRPC message limit, so that both doors take
/// the same events (the service then holds each to its own payload limit).
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// The idempotency key of a callback authenticated by a credential.
const IDEMPOTENCY_HEADER: &str = "idempotency-key";

/// The path of the API-response callback (what `{{ callback_url }}` renders to).
pub const API_RESPONSE_PATH: &str = "/v1/callbacks/api-response";

impl<S: Store, G: ResumeSignal, C: Clock> GrpcApi<S, G, C> {
    /// The HTTP callback routes, to merge into the server's router.
    ///
    /// Another method on a callback path, or another path under `/v1/callbacks/`, gets a
    /// JSON error too.
    pub fn http_routes(&self) -> axum::Router {
        axum::Router::new()
            .route(
                API_RESPONSE_PATH,
                post(api_response::<S, G, C>).fallback(method_not_allowed),
            )
            .route(
                "/v1/callbacks/events/{source}",
                post(event::<S, G, C>).fallback(method_not_allowed),
            )
            .route("/v1/callbacks/{*rest}", any(no_such_callback))
            .with_state(self.clone())
    }

    /// The caller of a callback, and its idempotency key: a Standard Webhooks signature over
    /// `body` when the request carries one (a bad one is refused whatever else it carries),
    /// else the credential the gRPC door accepts, holding the gateway role.
    fn http_caller(
        &self,
        headers: &HeaderMap,
        peer: Option<&PeerIdentity>,
        body: &[u8],
        rpc: &str,
    ) -> Result<(Principal, String), Status> {
        let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        if headers.contains_key(SIGNATURE_HEADER) {
            if self.webhooks.is_empty() {
                return Err(Status::unauthenticated(
                    "a signed callback, but no webhook secret is configured (auth.webhooks)",
                ));
            }
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64);
            let secret = self
                .webhooks
                .verify(
                    text(ID_HEADER),
                    text(TIMESTAMP_HEADER),
                    text(SIGNATURE_HEADER),
                    body,
                    now,
                )
                .map_err(|refused| Status::unauthenticated(refused.to_string()))?;
            let principal = Principal {
                name: format!("webhook secret {}", secret.name),
                roles: [Role::Gateway].into(),
                tenants: secret.tenants.clone(),
            };
            let key = text(ID_HEADER).unwrap_or_default().to_owned();
            return Ok((principal, key));
        }
        let metadata = MetadataMap::from_headers(headers.clone());
        let principal = self.auth.authenticate(&metadata, peer)?;
        principal
            .require(Role::Gateway, rpc)
            .map_err(crate::to_status)?;
        let key = text(IDEMPOTENCY_HEADER).or_else(|| text(ID_HEADER)).ok_or_else(|| {
            Status::invalid_argument(format!(
                "{IDEMPOTENCY_HEADER}: required (the delivery's identity: a retry with the same key is a duplicate), or sign the callback (webhook-id)"
            ))
        })?;
        Ok((principal, key.to_owned()))
    }
}

/// The wait a callback is for, from the query string.
#[derive(Debug, Default)]
struct Target {
    correlation_id: String,
    execution_id: String,
    tenant_id: String,
    http_status: Option<u32>,
}

impl Target {
    /// Reads the query; unknown parameters are refused by name (`allowed` lists the known).
    fn read(query: &HashMap<String, String>, allowed: &[&str]) -> Result<Self, Status> {
        let mut unknown: Vec<&str> = query
            .keys()
            .map(String::as_str)
            .filter(|k| !allowed.contains(k))
            .collect();
        if !unknown.is_empty() {
            unknown.sort_unstable();
            return Err(Status::invalid_argument(format!(
                "unknown query parameters: {} (known: {})",
                unknown.join(", "),
                allowed.join(", ")
            )));
        }
        let get = |k: &str| query.get(k).cloned().unwrap_or_default();
        let http_status = match query.get("http_status") {
            None => None,
            Some(raw) => Some(raw.parse().map_err(|_| {
                Status::invalid_argument(format!(
                    "http_status: expected an HTTP status code, found {raw:?}"
                ))
            })?),
        };
        Ok(Self {
            correlation_id: get("correlation_id"),
            execution_id: get("execution_id"),
            tenant_id: get("tenant_id"),
            http_status,
        })
    }
}

/// The query string as axum reads it (a malformed one is refused by [`query_or_refuse`]).
type RawQuery = Result<Query<HashMap<String, String>>, QueryRejection>;

/// A callback read and authenticated: the wait it names, its headers and body, its caller and
/// its idempotency key.
struct Callback {
    target: Target,
    headers: HeaderMap,
    body: Bytes,
    caller: Principal,
    key: String,
}

impl<S: Store, G: ResumeSignal, C: Clock> GrpcApi<S, G, C> {
    /// Reads a callback for `rpc` whose query may hold the `allowed` parameters.
    async fn receive(
        &self,
        query: RawQuery,
        request: Request,
        allowed: &[&str],
        rpc: &str,
    ) -> Result<Callback, Status> {
        let target = Target::read(&query_or_refuse(query)?, allowed)?;
        let (headers, peer, body) = read(request).await?;
        let (caller, key) = self.http_caller(&headers, peer.as_ref(), &body, rpc)?;
        Ok(Callback {
            target,
            headers,
            body,
            caller,
            key,
        })
    }
}

/// `POST /v1/callbacks/api-response`: the external API's answer for a wait's `api` source.
async fn api_response<S: Store, G: ResumeSignal, C: Clock>(
    State(api): State<GrpcApi<S, G, C>>,
    query: RawQuery,
    request: Request,
) -> Response {
    answer(async move {
        let allowed = ["correlation_id", "execution_id", "tenant_id", "http_status"];
        let Callback {
            target,
            headers,
            body,
            caller,
            key,
        } = api
            .receive(query, request, &allowed, "DeliverApiResponse")
            .await?;
        // The response's type travels with it, so a reader of the wait sees what came.
        let kept = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| ("content-type".to_owned(), v.to_owned()))
            .into_iter()
            .collect();
        let message = v1::DeliverApiResponseRequest {
            correlation_id: target.correlation_id,
            execution_id: target.execution_id,
            http_status: target.http_status.unwrap_or(200),
            headers: kept,
            body: body.to_vec(),
            idempotency_key: key,
            tenant_id: target.tenant_id,
        };
        api.deliver(&caller, message).await
    })
    .await
}

/// `POST /v1/callbacks/events/{source}`: an event (JSON) for a named source of a wait.
async fn event<S: Store, G: ResumeSignal, C: Clock>(
    State(api): State<GrpcApi<S, G, C>>,
    Path(source): Path<String>,
    query: RawQuery,
    request: Request,
) -> Response {
    answer(async move {
        let allowed = ["correlation_id", "execution_id", "tenant_id"];
        let Callback {
            target,
            body,
            caller,
            key,
            ..
        } = api
            .receive(query, request, &allowed, "DeliverEvent")
            .await?;
        let payload_json = String::from_utf8(body.to_vec())
            .map_err(|_| Status::invalid_argument("payload: the body is not UTF-8 JSON"))?;
        let message = v1::DeliverEventRequest {
            correlation_id: target.correlation_id,
            execution_id: target.execution_id,
            source,
            payload_json,
            event_key: key,
            tenant_id: target.tenant_id,
        };
        api.deliver(&caller, message).await
    })
    .await
}

fn query_or_refuse(query: RawQuery) -> Result<HashMap<String, String>, Status> {
    query
        .map(|Query(q)| q)
        .map_err(|e| Status::invalid_argument(format!("the query string: {}", e.body_text())))
}

/// The headers, the connection's client certificate and the body (at most
/// [`MAX_BODY_BYTES`]) of a request.
async fn read(request: Request) -> Result<(HeaderMap, Option<PeerIdentity>, Bytes), Status> {
    let (mut parts, body) = request.into_parts();
    let peer = parts.extensions.remove::<PeerIdentity>();
    let body = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| {
            Status::resource_exhausted(format!(
                "the callback body is over the limit of {MAX_BODY_BYTES} bytes"
            ))
        })?;
    Ok((parts.headers, peer, body))
}

/// A callback path called with another method than `POST`.
async fn method_not_allowed() -> Response {
    let body = serde_json::json!({
        "error": {
            "code": 405,
            "status": "UNIMPLEMENTED",
            "message": "callbacks are sent with POST",
        }
    });
    (
        StatusCode::METHOD_NOT_ALLOWED,
        [(header::ALLOW, "POST")],
        axum::Json(body),
    )
        .into_response()
}

/// A path under `/v1/callbacks/` that is none of the callbacks.
async fn no_such_callback(uri: axum::http::Uri) -> Response {
    let body = serde_json::json!({
        "error": {
            "code": 404,
            "status": "NOT_FOUND",
            "message": format!(
                "no callback at {}: POST {API_RESPONSE_PATH} or /v1/callbacks/events/{{source}}",
                uri.path()
            ),
        }
    });
    (StatusCode::NOT_FOUND, axum::Json(body)).into_response()
}

/// The JSON answer of a callback: the delivery's outcome, or the error.
async fn answer(work: impl Future<Output = Result<DeliveryReply, Status>>) -> Response {
    match work.await {
        Ok(reply) => axum::Json(serde_json::json!({
            "result": reply.result.as_str_name(),
            "wait_id": reply.wait_id,
            "status": reply.status.as_str_name(),
            "detail": reply.detail,
        }))
        .into_response(),
        Err(status) => error(&status),
    }
}

/// A gRPC status as an HTTP error in the Google JSON error shape.
pub(crate) fn error(status: &Status) -> Response {
    let http = http_status(status.code());
    let body = serde_json::json!({
        "error": {
            "code": http.as_u16(),
            "status": grpc_code_name(status.code()),
            "message": status.message(),
        }
    });
    (http, axum::Json(body)).into_response()
}

/// The HTTP status of a gRPC code, as gRPC-HTTP transcoding maps it, except that a request
/// over a size limit is 413 (it is not worth retrying, as 429 would suggest).
fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::FailedPrecondition => StatusCode::PRECONDITION_FAILED,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::ResourceExhausted => StatusCode::PAYLOAD_TOO_LARGE,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The canonical name of a gRPC code (`INVALID_ARGUMENT`).
fn grpc_code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_of_the_error_model_has_its_http_status() {
        for (code, http) in [
            (Code::InvalidArgument, 400),
            (Code::Unauthenticated, 401),
            (Code::PermissionDenied, 403),
            (Code::NotFound, 404),
            (Code::AlreadyExists, 409),
            (Code::FailedPrecondition, 412),
            (Code::ResourceExhausted, 413),
            (Code::Aborted, 409),
            (Code::Unavailable, 503),
            (Code::Internal, 500),
        ] {
            assert_eq!(http_status(code).as_u16(), http, "{code:?}");
        }
    }

    #[test]
    fn unknown_query_parameters_are_named() {
        let query: HashMap<String, String> = [
            ("correlation_id".into(), "c".into()),
            ("corelation_id".into(), "c".into()),
        ]
        .into();
        let refused = Target::read(&query, &["correlation_id"]).unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument);
        assert!(refused.message().contains("corelation_id"), "{refused:?}");
        let query: HashMap<String, String> = [("http_status".into(), "ok".into())].into();
        let refused = Target::read(&query, &["http_status"]).unwrap_err();
        assert!(refused.message().contains("http_status"), "{refused:?}");
    }
}
