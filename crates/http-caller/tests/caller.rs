//! The HTTP caller against a real server on 127.0.0.1: replies of any status, the body limit,
//! timeouts, no redirects, and SSRF protection by literal address and by DNS name.

use std::collections::BTreeMap;
use std::time::Duration;

use rendezvous_domain::{ApiRequest, HttpMethod, ResponseMode};
use rendezvous_http_caller::{CallerConfig, ReqwestCaller};
use rendezvous_ports::{CallFailure, HttpCaller};

async fn server() -> String {
    let app = axum::Router::new()
        .route(
            "/ok",
            axum::routing::post(|body: String| async move {
                (axum::http::StatusCode::OK, [("x-echo", "1")], body)
            }),
        )
        .route("/big", axum::routing::get(|| async { "x".repeat(10_000) }))
        .route(
            "/slow",
            axum::routing::get(|| async {
                tokio::time::sleep(Duration::from_secs(3)).await;
                "late"
            }),
        )
        .route(
            "/moved",
            axum::routing::get(|| async {
                (
                    axum::http::StatusCode::FOUND,
                    [("location", "http://169.254.169.254/")],
                    "",
                )
            }),
        )
        .route(
            "/busy",
            axum::routing::get(|| async { (axum::http::StatusCode::SERVICE_UNAVAILABLE, "busy") }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("127.0.0.1:{port}")
}

fn request(method: HttpMethod, url: String, body: Option<serde_json::Value>) -> ApiRequest {
    ApiRequest {
        method,
        url,
        headers: BTreeMap::new(),
        secret_headers: BTreeMap::new(),
        body,
        response_mode: ResponseMode::Callback,
    }
}

fn caller(allow_private_networks: bool) -> ReqwestCaller {
    ReqwestCaller::new(CallerConfig {
        timeout: Duration::from_millis(500),
        max_response_bytes: 1000,
        allow_private_networks,
        ..CallerConfig::default()
    })
    .unwrap()
}

#[tokio::test]
async fn replies_limits_and_timeouts() {
    let host = server().await;
    let c = caller(true);
    let reply = c
        .call(&request(
            HttpMethod::Post,
            format!("http://{host}/ok"),
            Some(serde_json::json!({"a": 1})),
        ))
        .await
        .unwrap();
    assert_eq!(
        (
            reply.status,
            reply.body.as_slice(),
            reply.headers["x-echo"].as_str()
        ),
        (200, br#"{"a":1}"#.as_slice(), "1")
    );
    let busy = c
        .call(&request(
            HttpMethod::Get,
            format!("http://{host}/busy"),
            None,
        ))
        .await
        .unwrap();
    assert_eq!(
        busy.status, 503,
        "any status is a reply; the service decides what it means"
    );
    let moved = c
        .call(&request(
            HttpMethod::Get,
            format!("http://{host}/moved"),
            None,
        ))
        .await
        .unwrap();
    assert_eq!(moved.status, 302, "redirects are not followed");
    let big = c
        .call(&request(
            HttpMethod::Get,
            format!("http://{host}/big"),
            None,
        ))
        .await
        .unwrap_err();
    assert_eq!(
        big,
        CallFailure::Permanent("the response body is over the limit of 1000 bytes".into())
    );
    let slow = c
        .call(&request(
            HttpMethod::Get,
            format!("http://{host}/slow"),
            None,
        ))
        .await
        .unwrap_err();
    assert!(matches!(slow, CallFailure::Transient(_)), "{slow:?}");
    let refused = c
        .call(&request(
            HttpMethod::Get,
            "http://127.0.0.1:1/".into(),
            None,
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(refused, CallFailure::Transient(_)),
        "connection refused is transient: {refused:?}"
    );
}

#[tokio::test]
async fn private_destinations_are_refused_by_address_and_by_name() {
    let host = server().await;
    let port = host.rsplit(':').next().unwrap();
    let c = caller(false);
    let literal = c
        .call(&request(
            HttpMethod::Get,
            format!("http://{host}/busy"),
            None,
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(&literal, CallFailure::Permanent(r) if r.contains("private")),
        "{literal:?}"
    );
    // A name that resolves to loopback is refused too (DNS cannot smuggle a call inside).
    let by_name = c
        .call(&request(
            HttpMethod::Get,
            format!("http://localhost:{port}/busy"),
            None,
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(&by_name, CallFailure::Permanent(r) if r.contains("private")),
        "{by_name:?}"
    );
    let v6 = c
        .call(&request(
            HttpMethod::Get,
            format!("http://[::1]:{port}/busy"),
            None,
        ))
        .await
        .unwrap_err();
    assert!(matches!(&v6, CallFailure::Permanent(_)), "{v6:?}");
}

#[tokio::test]
async fn invalid_headers_are_permanent_failures_naming_the_header() {
    let host = server().await;
    let c = caller(true);
    for (name, value) in [
        ("x-tenant", "t\r\nx-injected: 1"),
        ("x-tenant", "t\n"),
        ("x-tenant", "t\0"),
        ("bad name", "v"),
    ] {
        let mut call = request(HttpMethod::Post, format!("http://{host}/ok"), None);
        call.headers.insert(name.into(), value.into());
        let failure = c.call(&call).await.unwrap_err();
        assert!(
            matches!(&failure, CallFailure::Permanent(r) if r.contains(name)),
            "{name:?}: {value:?}: {failure:?}"
        );
    }
}
