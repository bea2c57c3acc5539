//! Trace export: with `telemetry.otlp_endpoint` set, the binary exports spans over OTLP/gRPC to
//! a collector (here a real OTLP gRPC server on loopback), and a request's W3C `traceparent`
//! metadata makes its span part of the caller's trace.

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
    let cwd = std::env::temp_dir().join(format!("rendezvous-otlp-{}", std::process::id()));
    std::fs::create_dir_all(&cwd).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_rendezvous"))
        .current_dir(&cwd)
        .env("RENDEZVOUS__SERVER__LISTEN", "127.0.0.1:0")
        .env(
            "RENDEZVOUS__TELEMETRY__OTLP_ENDPOINT",
            format!("http://{collector_addr}"),
        )
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
