//! Telemetry: `tracing` logs to stderr (human-readable or JSON), and, when an OTLP endpoint is
//! configured, trace export over OTLP/gRPC (over TLS for an `https://` endpoint, verified
//! against the system's roots and `telemetry.otlp_ca_file`) with W3C trace context taken from
//! incoming gRPC metadata (`traceparent`). Only the app installs a subscriber.

use anyhow::{Context, Result};
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::tonic_types::transport::{Certificate, ClientTlsConfig};
use opentelemetry_otlp::{WithExportConfig, WithTonicConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{LogFormat, TelemetrySection};

/// Keeps the trace exporter alive; dropping it flushes pending spans.
#[derive(Debug, Default)]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(e) = provider.shutdown()
        {
            eprintln!("rendezvous: flushing traces: {e}");
        }
    }
}

/// Installs the global subscriber. Call once, inside the tokio runtime (the OTLP exporter
/// needs it).
pub fn init(config: &TelemetrySection) -> Result<TelemetryGuard> {
    let filter =
        EnvFilter::try_from_default_env().or_else(|_| EnvFilter::try_new(&config.log_level))?;
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = match config.log_format {
        LogFormat::Json => fmt.json().flatten_event(true).boxed(),
        LogFormat::Human => fmt.boxed(),
    };
    let (otel, provider) = if config.otlp_endpoint.is_empty() {
        (None, None)
    } else {
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(config.otlp_endpoint.clone());
        if config.otlp_endpoint.starts_with("https://") {
            exporter = exporter.with_tls_config(otlp_tls(config)?);
        }
        let exporter = exporter
            .build()
            .with_context(|| format!("building the OTLP exporter for {}", config.otlp_endpoint))?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(
                opentelemetry_sdk::Resource::builder()
                    .with_service_name("rendezvous")
                    .build(),
            )
            .build();
        let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("rendezvous"));
        (Some(layer), Some(provider))
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel)
        .try_init()
        .context("installing the log subscriber")?;
    Ok(TelemetryGuard { provider })
}

/// TLS to the collector: the system's roots, and those of `telemetry.otlp_ca_file`.
fn otlp_tls(config: &TelemetrySection) -> Result<ClientTlsConfig> {
    let tls = ClientTlsConfig::new().with_enabled_roots();
    if config.otlp_ca_file.as_os_str().is_empty() {
        return Ok(tls);
    }
    let pem = std::fs::read(&config.otlp_ca_file).with_context(|| {
        format!(
            "telemetry.otlp_ca_file: cannot read {}",
            config.otlp_ca_file.display()
        )
    })?;
    Ok(tls.ca_certificate(Certificate::from_pem(pem)))
}

struct HeaderExtractor<'a>(&'a tonic::codegen::http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// The span of one incoming gRPC request, continuing the caller's W3C trace context
/// (`traceparent` / `tracestate` metadata) when it sends one.
pub fn request_span(request: &tonic::codegen::http::Request<()>) -> tracing::Span {
    let path = request.uri().path();
    let span = tracing::info_span!("grpc.request", otel.name = %path.trim_start_matches('/'), rpc.system = "grpc");
    let parent = TraceContextPropagator::new().extract(&HeaderExtractor(request.headers()));
    let _ = span.set_parent(parent);
    span
}
