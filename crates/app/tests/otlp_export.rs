//! Trace and metric export: with `telemetry.otlp_endpoint` set, the binary exports spans and
//! metrics over OTLP/gRPC to a collector (here a real OTLP gRPC server on loopback, in plain
//! HTTP/2 or over TLS with a certificate from a CA made here and given as
//! `telemetry.otlp_ca_file`); a request's W3C `traceparent` metadata makes its span part of the
//! caller's trace; and one join is one trace across gRPC, the API call, Kafka and the resume.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use rendezvous_grpc_api::v1;
use rendezvous_grpc_api::v1::callback_service_client::CallbackServiceClient;
use rendezvous_grpc_api::v1::wait_service_client::WaitServiceClient;

#[derive(Clone, Default)]
struct Collector(Arc<Mutex<Vec<Span>>>, Arc<Mutex<Vec<String>>>);

#[tonic::async_trait]
impl MetricsService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        let mut names = self.1.lock().unwrap();
        for resource in request.into_inner().resource_metrics {
            for scope in resource.scope_metrics {
                names.extend(scope.metrics.into_iter().map(|m| m.name));
            }
        }
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.0.lock().unwrap();
        for resource in request.into_inner().resource_spans {
            for scope in resource.scope_spans {
                spans.extend(scope.spans);
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_exported_and_continue_the_callers_trace() {
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector_addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()))
            .add_service(MetricsServiceServer::new(collector.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    exported(
        &collector,
        "plain",
        &[(
            "RENDEZVOUS__TELEMETRY__OTLP_ENDPOINT",
            format!("http://{collector_addr}"),
        )],
    )
    .await;
}

/// An `https://` collector whose certificate a private CA signed: verified against
/// `telemetry.otlp_ca_file`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_exported_over_tls_to_a_collector_of_a_private_ca() {
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let identity = tonic::transport::Identity::from_pem(cert.pem(), key.serialize_pem());

    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector_addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
            .unwrap()
            .add_service(TraceServiceServer::new(collector.clone()))
            .add_service(MetricsServiceServer::new(collector.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let dir = std::env::temp_dir().join(format!("rendezvous-otlp-ca-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca_file = dir.join("collector-ca.pem");
    std::fs::write(&ca_file, ca_pem).unwrap();
    exported(
        &collector,
        "tls",
        &[
            (
                "RENDEZVOUS__TELEMETRY__OTLP_ENDPOINT",
                format!("https://{collector_addr}"),
            ),
            (
                "RENDEZVOUS__TELEMETRY__OTLP_CA_FILE",
                ca_file.display().to_string(),
            ),
        ],
    )
    .await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs the binary with `env`, sends a request with a `traceparent`, stops it, and checks
/// that `collector` received the request's span in the caller's trace.
async fn exported(collector: &Collector, name: &str, env: &[(&str, String)]) {
    let cwd = std::env::temp_dir().join(format!("rendezvous-otlp-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&cwd).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_rendezvous"))
        .current_dir(&cwd)
        .env("RENDEZVOUS__SERVER__LISTEN", "127.0.0.1:0")
        .env("RENDEZVOUS__ADMIN__LISTEN", "127.0.0.1:0")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env_remove("RUST_LOG")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = stderr
            .next()
            .expect("the service prints its address")
            .unwrap();
        if let Some(addr) = line.split("listening on ").nth(1) {
            break addr.trim().to_owned();
        }
    };
    std::thread::spawn(move || stderr.for_each(drop));

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent_span_id = "00f067aa0ba902b7";
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut request = tonic::Request::new(v1::GetWaitRequest {
        key: Some(v1::get_wait_request::Key::WaitId(uuid_like())),
        tenant_id: String::new(),
    });
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-{parent_span_id}-01")
            .parse()
            .unwrap(),
    );
    let status = WaitServiceClient::new(channel)
        .get_wait(request)
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);

    // Shutting down flushes the exporter.
    terminate(child).await;
    let mut found = None;
    for _ in 0..50 {
        found = collector
            .0
            .lock()
            .unwrap()
            .iter()
            .find(|s| hex(&s.trace_id) == trace_id)
            .cloned();
        if found.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let span = found.unwrap_or_else(|| {
        panic!(
            "no span of trace {trace_id}; got {:?}",
            collector.0.lock().unwrap()
        )
    });
    assert_eq!(hex(&span.parent_span_id), parent_span_id);
    assert!(span.name.contains("GetWait"), "{}", span.name);
    assert_eq!(span.kind(), SpanKind::Server);
    let attribute = |key: &str| {
        span.attributes
            .iter()
            .find(|a| a.key == key)
            .and_then(|a| a.value.as_ref())
            .map(|v| format!("{:?}", v.value))
    };
    assert!(
        attribute("rpc.method").is_some_and(|m| m.contains("GetWait")),
        "{:?}",
        span.attributes
    );
    assert!(
        attribute("rpc.service").is_some_and(|m| m.contains("rendezvous.v1.WaitService")),
        "{:?}",
        span.attributes
    );
    // Metrics go to the same endpoint (flushed at shutdown at the latest).
    let names = collector.1.lock().unwrap().clone();
    for name in ["rendezvous.build_info", "rendezvous.ready"] {
        assert!(
            names.iter().any(|n| n == name),
            "{name} not exported: {names:?}"
        );
    }
    let _ = std::fs::remove_dir_all(&cwd);
}

/// SIGTERM, then the exit, which must be clean.
async fn terminate(mut child: std::process::Child) {
    assert!(
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let exit = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "{exit:?}");
}

fn uuid_like() -> String {
    "00000000-0000-4000-8000-000000000001".to_owned()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

const JOIN_TRACE_ID: &str = "5b8efff798038103d269b633813fc60c";
const ENGINE_SPAN: &str = "eee19b7ec3c1b174";

fn with_trace<T>(message: T, traceparent: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("traceparent", traceparent.parse().unwrap());
    request
        .metadata_mut()
        .insert("tracestate", "engine=1".parse().unwrap());
    request
}

/// One trace per wait, across every hop: the engine registers with a `traceparent`; the
/// outbound call is a CLIENT span of that trace whose own span id is what the external service
/// receives (with the `tracestate` kept); the external service publishes the Kafka event with
/// that context and answers through the gateway; the record's CONSUMER span and the resume's
/// PRODUCER span are in the same trace, and the `Resume` message carries a context of that
/// trace for the engine to continue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_join_is_one_trace_across_grpc_the_call_kafka_and_the_resume() {
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector_addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    // The external service: records the headers of the call it receives.
    let received: Arc<Mutex<Vec<BTreeMap<String, String>>>> = Arc::default();
    let log = received.clone();
    let external = axum::Router::new().fallback(move |headers: axum::http::HeaderMap| {
        let log = log.clone();
        async move {
            log.lock().unwrap().push(
                headers
                    .iter()
                    .filter_map(|(k, v)| Some((k.to_string(), v.to_str().ok()?.to_owned())))
                    .collect(),
            );
            (axum::http::StatusCode::ACCEPTED, "{}")
        }
    });
    let external_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let external_addr = external_listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(external_listener, external).await });

    let cwd = std::env::temp_dir().join(format!("rendezvous-one-trace-{}", std::process::id()));
    std::fs::create_dir_all(&cwd).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_rendezvous"))
        .current_dir(&cwd)
        .env("RENDEZVOUS__SERVER__LISTEN", "127.0.0.1:0")
        .env("RENDEZVOUS__ADMIN__LISTEN", "127.0.0.1:0")
        .env("RENDEZVOUS__API__ALLOW_PRIVATE_NETWORKS", "true")
        .env("RENDEZVOUS__API__POLL_INTERVAL", "100ms")
        .env("RENDEZVOUS__KAFKA__REFRESH_INTERVAL", "200ms")
        .env(
            "RENDEZVOUS__TELEMETRY__OTLP_ENDPOINT",
            format!("http://{collector_addr}"),
        )
        .env_remove("RUST_LOG")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    let (mut addr, mut bootstrap) = (None, None);
    while addr.is_none() || bootstrap.is_none() {
        let line = stderr
            .next()
            .expect("the service prints its addresses")
            .unwrap();
        if let Some(a) = line.split("listening on ").nth(1) {
            addr = Some(a.trim().to_owned());
        }
        if let Some(b) = line.split("bootstrap servers ").nth(1) {
            bootstrap = Some(b.trim().to_owned());
        }
    }
    std::thread::spawn(move || stderr.for_each(drop));
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", addr.unwrap()))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut waits = WaitServiceClient::new(channel.clone());
    let mut callbacks = CallbackServiceClient::new(channel);

    // The engine's stream, then its registration in its trace.
    let (subscribe, requests) = tokio::sync::mpsc::channel(4);
    subscribe
        .send(v1::ResumeStreamRequest {
            message: Some(v1::resume_stream_request::Message::Subscribe(
                v1::Subscribe::default(),
            )),
        })
        .await
        .unwrap();
    let mut resumes = waits
        .resume_stream(tokio_stream::wrappers::ReceiverStream::new(requests))
        .await
        .unwrap()
        .into_inner();
    let mut config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../domain/tests/fixtures/01-wait-for-both.json"
        ))
        .unwrap(),
    )
    .unwrap();
    config["data"]["apiCall"]["url"] = format!("http://{external_addr}/api/action").into();
    let engine = format!("00-{JOIN_TRACE_ID}-{ENGINE_SPAN}-01");
    let registered = waits
        .register_wait(with_trace(
            v1::RegisterWaitRequest {
                execution_id: "exec-trace".into(),
                node_id: "node-1".into(),
                node_config_json: config.to_string(),
                input_variables: [("input_data".to_owned(), "x".to_owned())].into(),
                ..Default::default()
            },
            &engine,
        ))
        .await
        .unwrap()
        .into_inner();

    // The call arrives with a child context of the engine's trace: a new span id.
    let deadline = Instant::now() + Duration::from_secs(30);
    let call = loop {
        if let Some(call) = received.lock().unwrap().first().cloned() {
            break call;
        }
        assert!(Instant::now() < deadline, "the call never came");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let call_context = call["traceparent"].clone();
    let parts: Vec<&str> = call_context.split('-').collect();
    assert_eq!(parts[1], JOIN_TRACE_ID, "{call_context}");
    assert_ne!(
        parts[2], ENGINE_SPAN,
        "the call reused the engine's span id"
    );
    assert_eq!(call.get("tracestate").map(String::as_str), Some("engine=1"));

    // The external service continues that context: the Kafka event and the callback.
    let producer: rdkafka::producer::FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap.unwrap())
        .create()
        .unwrap();
    let event = serde_json::json!({"correlation_id": registered.correlation_id, "execution_id": "exec-trace", "event_type": "action.completed"}).to_string();
    producer
        .send(
            rdkafka::producer::FutureRecord::<str, str>::to("external-service.events")
                .payload(&event)
                .headers(
                    rdkafka::message::OwnedHeaders::new().insert(rdkafka::message::Header {
                        key: "traceparent",
                        value: Some(call_context.as_str()),
                    }),
                ),
            Duration::from_secs(5),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    callbacks
        .deliver_api_response(with_trace(
            v1::DeliverApiResponseRequest {
                correlation_id: registered.correlation_id.clone(),
                execution_id: "exec-trace".into(),
                http_status: 200,
                body: b"{}".to_vec(),
                idempotency_key: "api-1".into(),
                ..Default::default()
            },
            &call_context,
        ))
        .await
        .unwrap();

    // The resume carries a context of the same trace.
    let resume = loop {
        let message = tokio::time::timeout(Duration::from_secs(30), resumes.message())
            .await
            .expect("a resume in time")
            .unwrap()
            .expect("the stream is open");
        if let Some(v1::resume_stream_response::Message::Resume(resume)) = message.message {
            break resume;
        }
    };
    assert_eq!(resume.outcome(), v1::Outcome::Completed);
    assert_eq!(
        resume.traceparent.split('-').nth(1),
        Some(JOIN_TRACE_ID),
        "{resume:?}"
    );
    assert_eq!(resume.tracestate, "engine=1");
    subscribe
        .send(v1::ResumeStreamRequest {
            message: Some(v1::resume_stream_request::Message::Ack(v1::Ack {
                resume_id: resume.resume_id.clone(),
            })),
        })
        .await
        .unwrap();
    drop(subscribe);

    // Shutting down flushes the exporter.
    terminate(child).await;
    let spans: Vec<Span> = collector
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|s| hex(&s.trace_id) == JOIN_TRACE_ID)
        .cloned()
        .collect();
    let find = |kind: SpanKind, name: &str| {
        spans
            .iter()
            .find(|s| s.kind() == kind && s.name.contains(name))
            .unwrap_or_else(|| {
                panic!(
                    "no {kind:?} span named like {name:?} in the trace: {:#?}",
                    spans
                        .iter()
                        .map(|s| (&s.name, s.kind()))
                        .collect::<Vec<_>>()
                )
            })
    };
    let register = find(SpanKind::Server, "RegisterWait");
    assert_eq!(hex(&register.parent_span_id), ENGINE_SPAN);
    let call_span = find(SpanKind::Client, "POST");
    assert_eq!(
        hex(&call_span.span_id),
        parts[2],
        "the call's span is what the service saw"
    );
    assert_eq!(
        call_span.parent_span_id, register.span_id,
        "the call is the registration's child"
    );
    let consume = find(SpanKind::Consumer, "external-service.events");
    assert_eq!(hex(&consume.parent_span_id), parts[2]);
    find(SpanKind::Server, "DeliverApiResponse");
    // Whichever event decided the wait, its span links back to the registration.
    assert!(
        spans.iter().any(|s| s
            .links
            .iter()
            .any(|l| l.span_id == register.span_id && hex(&l.trace_id) == JOIN_TRACE_ID)),
        "no span links to the registration: {:#?}",
        spans
            .iter()
            .map(|s| (&s.name, s.links.len()))
            .collect::<Vec<_>>()
    );
    let send = find(SpanKind::Producer, "resume");
    assert_eq!(
        resume.traceparent.split('-').nth(2),
        Some(hex(&send.span_id).as_str())
    );
    let _ = std::fs::remove_dir_all(&cwd);
}
