//! Trace export: with `telemetry.otlp_endpoint` set, the binary exports spans over OTLP/gRPC to
//! a collector (here a real OTLP gRPC server on loopback, in plain HTTP/2 or over TLS with a
//! certificate from a CA made here and given as `telemetry.otlp_ca_file`), and a request's W3C
//! `traceparent` metadata makes its span part of the caller's trace.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::Span;
use rendezvous_grpc_api::v1;
use rendezvous_grpc_api::v1::wait_service_client::WaitServiceClient;

#[derive(Clone, Default)]
struct Collector(Arc<Mutex<Vec<Span>>>);

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
    let _ = std::fs::remove_dir_all(&cwd);
}

fn uuid_like() -> String {
    "00000000-0000-4000-8000-000000000001".to_owned()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
