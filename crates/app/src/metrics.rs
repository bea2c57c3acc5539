//! Metrics: one OpenTelemetry meter provider per process, installed before anything records.
//! The crates record through `opentelemetry::global::meter("rendezvous")`; the admin listener's
//! `/metrics` renders what they recorded in the Prometheus text format (read on demand through
//! a manual reader), and with `telemetry.otlp_endpoint` set the same instruments are also
//! pushed over OTLP every `telemetry.metrics_interval`.
//!
//! Names follow the OpenTelemetry-to-Prometheus rules: dots become underscores, a unit of `s`
//! adds `_seconds`, a monotonic sum (a counter) adds `_total`, an up-down sum is a gauge.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use anyhow::Result;
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Gauge, MeterProvider as _};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, Metric, MetricData, ResourceMetrics};
use opentelemetry_sdk::metrics::reader::MetricReader;
use opentelemetry_sdk::metrics::{
    InstrumentKind, ManualReader, PeriodicReader, Pipeline, SdkMeterProvider, Temporality,
};

use crate::config::TelemetrySection;

/// The name of the meter every crate records with.
pub const METER: &str = "rendezvous";

/// The process's metrics: what `/metrics` reads, and the provider that owns the instruments.
#[derive(Debug)]
pub struct Metrics {
    reader: Pull,
    provider: SdkMeterProvider,
    ready: Gauge<u64>,
}

static INSTALLED: Mutex<Option<Arc<Metrics>>> = Mutex::new(None);

/// Installs the process's meter provider as the global one, once: later calls (more
/// applications in one test process) get the first. Call before any instrument is created —
/// an instrument made from the default no-op provider stays a no-op.
pub fn install(telemetry: &TelemetrySection) -> Result<Arc<Metrics>> {
    let mut installed = INSTALLED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(metrics) = installed.as_ref() {
        return Ok(metrics.clone());
    }
    let reader = Pull(Arc::new(ManualReader::builder().build()));
    let mut builder = SdkMeterProvider::builder()
        .with_reader(reader.clone())
        .with_resource(crate::telemetry::resource());
    if let Some(exporter) = crate::telemetry::otlp_metric_exporter(telemetry)? {
        builder = builder.with_reader(
            PeriodicReader::builder(exporter)
                .with_interval(telemetry.metrics_interval)
                .build(),
        );
    }
    let provider = builder.build();
    opentelemetry::global::set_meter_provider(provider.clone());
    // W3C trace context for every hop the service continues or starts itself (the API call,
    // Kafka records, resumes); set here, with the other process-wide telemetry state.
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    let meter = provider.meter(METER);
    meter
        .u64_gauge("rendezvous.build_info")
        .with_description("The running build: always 1, with its version and git revision.")
        .build()
        .record(
            1,
            &[
                KeyValue::new("version", crate::VERSION),
                KeyValue::new("revision", crate::REVISION),
            ],
        );
    meter
        .u64_gauge("rendezvous.up")
        .with_description("1 while the process runs.")
        .build()
        .record(1, &[]);
    let ready = meter
        .u64_gauge("rendezvous.ready")
        .with_description("1 when the database answers and the instance is not draining.")
        .build();
    let metrics = Arc::new(Metrics {
        reader,
        provider,
        ready,
    });
    *installed = Some(metrics.clone());
    Ok(metrics)
}

/// The meter the app's own instruments use (the global provider's, once installed).
pub(crate) fn meter() -> opentelemetry::metrics::Meter {
    opentelemetry::global::meter(METER)
}

/// Flushes the OTLP exporter, if any, before the process exits.
pub fn shutdown() {
    let installed = INSTALLED.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(metrics) = installed
        && let Err(e) = metrics.provider.shutdown()
    {
        tracing::debug!(error = %e, "flushing metrics");
    }
}

impl Metrics {
    /// Records whether the instance is ready (`rendezvous_ready`).
    pub fn set_ready(&self, ready: bool) {
        self.ready.record(u64::from(ready), &[]);
    }

    /// Everything recorded so far, in the Prometheus text exposition format (0.0.4).
    pub fn render(&self) -> String {
        let mut collected = ResourceMetrics::default();
        if let Err(e) = self.reader.collect(&mut collected) {
            tracing::warn!(error = %e, "collecting metrics failed");
        }
        encode_all(&collected)
    }
}

/// Every metric collected, as Prometheus text.
fn encode_all(collected: &ResourceMetrics) -> String {
    let mut out = String::with_capacity(16 * 1024);
    for scope in collected.scope_metrics() {
        for metric in scope.metrics() {
            encode(&mut out, metric);
        }
    }
    out
}

/// The pull side: a manual reader shared between the provider and `/metrics`.
#[derive(Debug, Clone)]
struct Pull(Arc<ManualReader>);

impl MetricReader for Pull {
    fn register_pipeline(&self, pipeline: Weak<Pipeline>) {
        self.0.register_pipeline(pipeline);
    }

    fn collect(&self, rm: &mut ResourceMetrics) -> OTelSdkResult {
        self.0.collect(rm)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }

    fn temporality(&self, kind: InstrumentKind) -> Temporality {
        self.0.temporality(kind)
    }
}

/// A sample value, written the way Prometheus reads it.
trait Sample: Copy {
    fn write(self, out: &mut String);
}

impl Sample for u64 {
    fn write(self, out: &mut String) {
        let _ = write!(out, "{self}");
    }
}

impl Sample for i64 {
    fn write(self, out: &mut String) {
        let _ = write!(out, "{self}");
    }
}

impl Sample for f64 {
    fn write(self, out: &mut String) {
        if self.is_nan() {
            out.push_str("NaN");
        } else if self.is_infinite() {
            out.push_str(if self > 0.0 { "+Inf" } else { "-Inf" });
        } else {
            let _ = write!(out, "{self}");
        }
    }
}

fn encode(out: &mut String, metric: &Metric) {
    let name = prometheus_name(metric.name(), metric.unit());
    match metric.data() {
        AggregatedMetrics::F64(data) => encode_data(out, &name, metric.description(), data),
        AggregatedMetrics::U64(data) => encode_data(out, &name, metric.description(), data),
        AggregatedMetrics::I64(data) => encode_data(out, &name, metric.description(), data),
    }
}

fn encode_data<T: Sample>(out: &mut String, name: &str, help: &str, data: &MetricData<T>) {
    match data {
        MetricData::Gauge(gauge) => {
            header(out, name, help, "gauge");
            for point in gauge.data_points() {
                line(out, name, point.attributes(), None, point.value());
            }
        }
        MetricData::Sum(sum) => {
            let (name, kind) = if sum.is_monotonic() {
                (format!("{name}_total"), "counter")
            } else {
                (name.to_owned(), "gauge")
            };
            header(out, &name, help, kind);
            for point in sum.data_points() {
                line(out, &name, point.attributes(), None, point.value());
            }
        }
        MetricData::Histogram(histogram) => {
            header(out, name, help, "histogram");
            let bucket = format!("{name}_bucket");
            for point in histogram.data_points() {
                let mut cumulative = 0u64;
                let mut bounds = point.bounds();
                for count in point.bucket_counts() {
                    cumulative += count;
                    // The last count is the bucket above the highest bound: +Inf, below.
                    if let Some(bound) = bounds.next() {
                        let mut le = String::new();
                        bound.write(&mut le);
                        line(out, &bucket, point.attributes(), Some(&le), cumulative);
                    }
                }
                line(
                    out,
                    &bucket,
                    point.attributes(),
                    Some("+Inf"),
                    point.count(),
                );
                line(
                    out,
                    &format!("{name}_sum"),
                    point.attributes(),
                    None,
                    point.sum(),
                );
                line(
                    out,
                    &format!("{name}_count"),
                    point.attributes(),
                    None,
                    point.count(),
                );
            }
        }
        // No instrument here is configured with an exponential aggregation.
        MetricData::ExponentialHistogram(_) => {}
    }
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {}", escape(help, false));
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn line<'a, T: Sample>(
    out: &mut String,
    name: &str,
    attributes: impl Iterator<Item = &'a KeyValue>,
    le: Option<&str>,
    value: T,
) {
    out.push_str(name);
    let mut first = true;
    let mut label = |out: &mut String, key: &str, value: &str| {
        out.push(if first { '{' } else { ',' });
        first = false;
        let _ = write!(out, "{}=\"{}\"", sanitize(key), escape(value, true));
    };
    for kv in attributes {
        label(out, kv.key.as_str(), &kv.value.as_str());
    }
    if let Some(le) = le {
        label(out, "le", le);
    }
    if !first {
        out.push('}');
    }
    out.push(' ');
    value.write(out);
    out.push('\n');
}

/// The Prometheus name of an instrument: invalid characters become `_`, the unit a suffix.
fn prometheus_name(name: &str, unit: &str) -> String {
    let mut name = sanitize(name);
    let suffix = match unit {
        "s" => "_seconds",
        "ms" => "_milliseconds",
        "By" => "_bytes",
        _ => "",
    };
    if !name.ends_with(suffix) {
        name.push_str(suffix);
    }
    name
}

fn sanitize(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// Escapes help text (backslash, newline) or a label value (also the double quote).
fn escape(text: &str, quote: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if quote => out.push_str("\\\""),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use opentelemetry::metrics::MeterProvider as _;

    use super::*;

    fn provider() -> (Pull, SdkMeterProvider) {
        let reader = Pull(Arc::new(ManualReader::builder().build()));
        let provider = SdkMeterProvider::builder()
            .with_reader(reader.clone())
            .build();
        (reader, provider)
    }

    fn render(reader: &Pull) -> String {
        let mut collected = ResourceMetrics::default();
        reader.collect(&mut collected).unwrap();
        encode_all(&collected)
    }

    #[test]
    fn counters_gauges_and_histograms_render_as_prometheus_text() {
        let (reader, provider) = provider();
        let meter = provider.meter("test");
        let counter = meter
            .u64_counter("rendezvous.deliveries")
            .with_description("Deliveries.\nBy source.")
            .build();
        counter.add(2, &[KeyValue::new("source", "kafka")]);
        counter.add(1, &[KeyValue::new("source", "a\"b\\c\nd")]);
        meter
            .i64_up_down_counter("rendezvous.in_flight")
            .build()
            .add(-3, &[]);
        let histogram = meter
            .f64_histogram("rendezvous.decision.duration")
            .with_unit("s")
            .with_boundaries(vec![0.1, 1.0])
            .build();
        for v in [0.0625, 0.5, 0.75, 5.0] {
            histogram.record(v, &[KeyValue::new("outcome", "completed")]);
        }
        let text = render(&reader);
        for expected in [
            "# HELP rendezvous_deliveries_total Deliveries.\\nBy source.\n",
            "# TYPE rendezvous_deliveries_total counter\n",
            "rendezvous_deliveries_total{source=\"kafka\"} 2\n",
            "rendezvous_deliveries_total{source=\"a\\\"b\\\\c\\nd\"} 1\n",
            "# TYPE rendezvous_in_flight gauge\nrendezvous_in_flight -3\n",
            "# TYPE rendezvous_decision_duration_seconds histogram\n",
            "rendezvous_decision_duration_seconds_bucket{outcome=\"completed\",le=\"0.1\"} 1\n",
            "rendezvous_decision_duration_seconds_bucket{outcome=\"completed\",le=\"1\"} 3\n",
            "rendezvous_decision_duration_seconds_bucket{outcome=\"completed\",le=\"+Inf\"} 4\n",
            "rendezvous_decision_duration_seconds_sum{outcome=\"completed\"} 6.3125\n",
            "rendezvous_decision_duration_seconds_count{outcome=\"completed\"} 4\n",
        ] {
            assert!(
                text.contains(expected),
                "{expected:?} missing from:\n{text}"
            );
        }
    }

    #[test]
    fn names_are_made_valid_and_get_their_unit() {
        assert_eq!(prometheus_name("a.b-c", "s"), "a_b_c_seconds");
        assert_eq!(prometheus_name("x_seconds", "s"), "x_seconds");
        assert_eq!(prometheus_name("9lives", "1"), "_9lives");
        let mut out = String::new();
        f64::INFINITY.write(&mut out);
        f64::NAN.write(&mut out);
        assert_eq!(out, "+InfNaN");
    }
}
