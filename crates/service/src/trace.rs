//! W3C trace context across the hops that are not one request: the outbound call, a Kafka
//! record, a resume. A span continues a stored or received context ([`continue_trace`]), and
//! a hop sends its own span's context on ([`context_of`]) — or, when no tracer is installed
//! (no exporter configured), the context it received, so the caller's trace still connects.
//! Propagation goes through the process's global propagator (the app installs W3C trace
//! context).

use std::collections::HashMap;

use opentelemetry::propagation::Extractor;
use opentelemetry::trace::TraceContextExt as _;
use rendezvous_domain::TraceContext;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// Makes `span` a child of `parent` (a no-op without one).
pub fn continue_trace(span: &tracing::Span, parent: Option<&TraceContext>) {
    let Some(parent) = parent else { return };
    let cx = opentelemetry::global::get_text_map_propagator(|p| p.extract(&Carrier(parent)));
    if cx.span().span_context().is_valid() {
        let _ = span.set_parent(cx);
    }
}

/// Links `span` to the registration's trace (`registration`): an event that decides a wait
/// may come from another trace (a Kafka producer's, a gateway's), and the decision then points
/// back to its wait's. A no-op without a context or a tracer.
pub fn link(span: &tracing::Span, registration: Option<&TraceContext>) {
    let Some(registration) = registration else {
        return;
    };
    let cx = opentelemetry::global::get_text_map_propagator(|p| p.extract(&Carrier(registration)));
    let linked = cx.span().span_context().clone();
    if linked.is_valid() {
        span.add_link(linked);
    }
}

/// The context a hop inside `span` sends on: the span's own when a tracer records it, else
/// `fallback` (what the hop received).
pub fn context_of(span: &tracing::Span, fallback: Option<&TraceContext>) -> Option<TraceContext> {
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return fallback.cloned();
    }
    let mut carrier = HashMap::new();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut carrier));
    carrier
        .get("traceparent")
        .and_then(|tp| TraceContext::parse(tp, carrier.get("tracestate").map(String::as_str)))
        .or_else(|| fallback.cloned())
}

struct Carrier<'a>(&'a TraceContext);

impl Extractor for Carrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            "traceparent" => Some(&self.0.traceparent),
            "tracestate" if !self.0.tracestate.is_empty() => Some(&self.0.tracestate),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        vec!["traceparent", "tracestate"]
    }
}
