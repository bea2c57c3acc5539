//! Telemetry: `tracing` logs to stderr (human-readable or JSON), and, when an OTLP endpoint is
//! configured, trace export over OTLP/gRPC (over TLS for an `https://` endpoint, verified
//! against the system's roots and `telemetry.otlp_ca_file`) with W3C trace context taken from
//! incoming gRPC metadata (`traceparent`). Only the app installs a subscriber.

use std::io::IsTerminal;

use anyhow::{Context, Result};
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
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
        crate::metrics::shutdown();
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
    // Colours only for a person at a terminal: a file or a collector gets plain text.
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let fmt = match config.log_format {
        LogFormat::Json => fmt.json().flatten_event(true).boxed(),
        LogFormat::Human => fmt.boxed(),
    };
    let (otel, provider) = if let Some(endpoint) = otlp_endpoint(config, "TRACES") {
        let builder = opentelemetry_otlp::SpanExporter::builder().with_tonic();
        let exporter = to_collector(builder, config, &endpoint)?
            .build()
            .with_context(|| format!("building the OTLP trace exporter for {endpoint}"))?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource())
            .build();
        let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("rendezvous"));
        (Some(layer), Some(provider))
    } else {
        (None, None)
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel)
        .try_init()
        .context("installing the log subscriber")?;
    Ok(TelemetryGuard { provider })
}

/// Where telemetry of `signal` (`TRACES`, `METRICS`) is exported: `telemetry.otlp_endpoint`,
/// else the standard `OTEL_EXPORTER_OTLP_{signal}_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT`
/// variable (which the exporter then reads itself). `None`: no export.
fn otlp_endpoint(config: &TelemetrySection, signal: &str) -> Option<String> {
    if !config.otlp_endpoint.is_empty() {
        return Some(config.otlp_endpoint.clone());
    }
    [
        format!("OTEL_EXPORTER_OTLP_{signal}_ENDPOINT"),
        "OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(),
    ]
    .iter()
    .find_map(|var| std::env::var(var).ok().filter(|v| !v.trim().is_empty()))
}

/// The resource every signal carries: `service.name` from `OTEL_SERVICE_NAME` or
/// `rendezvous`, plus `OTEL_RESOURCE_ATTRIBUTES` (read by the SDK's detectors).
pub(crate) fn resource() -> opentelemetry_sdk::Resource {
    let builder = opentelemetry_sdk::Resource::builder();
    let named = std::env::var("OTEL_SERVICE_NAME").is_ok_and(|v| !v.is_empty());
    if named {
        builder.build()
    } else {
        builder.with_service_name("rendezvous").build()
    }
}

/// The OTLP/gRPC metric exporter, when an endpoint is configured (see [`otlp_endpoint`]).
pub(crate) fn otlp_metric_exporter(
    config: &TelemetrySection,
) -> Result<Option<opentelemetry_otlp::MetricExporter>> {
    let Some(endpoint) = otlp_endpoint(config, "METRICS") else {
        return Ok(None);
    };
    let builder = opentelemetry_otlp::MetricExporter::builder().with_tonic();
    to_collector(builder, config, &endpoint)?
        .build()
        .map(Some)
        .with_context(|| format!("building the OTLP metric exporter for {endpoint}"))
}

/// An OTLP/gRPC exporter (of any signal) aimed at `endpoint`: `telemetry.otlp_endpoint` when
/// set (else the exporter reads the standard variable itself), over TLS for `https://`.
fn to_collector<B: WithExportConfig + WithTonicConfig>(
    builder: B,
    config: &TelemetrySection,
    endpoint: &str,
) -> Result<B> {
    let builder = if config.otlp_endpoint.is_empty() {
        builder
    } else {
        builder.with_endpoint(config.otlp_endpoint.clone())
    };
    Ok(if endpoint.starts_with("https://") {
        builder.with_tls_config(otlp_tls(config)?)
    } else {
        builder
    })
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

/// The span of one incoming gRPC request: a SERVER span with the `rpc.*` attributes of the
/// semantic conventions, continuing the caller's W3C trace context (`traceparent` /
/// `tracestate` metadata) when it sends one. Its `trace_id` and `span_id` are fields, so every
/// log line inside it carries them (the caller's trace id when no exporter is configured).
pub fn request_span(request: &tonic::codegen::http::Request<()>) -> tracing::Span {
    let path = request.uri().path().trim_start_matches('/');
    let (service, method) = path.split_once('/').unwrap_or((path, ""));
    let span = tracing::info_span!(
        "grpc.request",
        otel.name = %path,
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = %service,
        rpc.method = %method,
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
    );
    let parent = TraceContextPropagator::new().extract(&HeaderExtractor(request.headers()));
    let caller = parent.span().span_context().clone();
    let _ = span.set_parent(parent);
    let own = span.context().span().span_context().clone();
    let ids = if own.is_valid() { own } else { caller };
    if ids.is_valid() {
        span.record("trace_id", tracing::field::display(ids.trace_id()));
        span.record("span_id", tracing::field::display(ids.span_id()));
    }
    span
}
