//! Trace context across hops: the caller's W3C `traceparent`/`tracestate`, the context a job keeps
//! for the attempt that applies it, and the links between updates that shared their calls. What
//! exports the spans is the server's.

use std::collections::BTreeMap;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry::Context;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The target of spans made for traces alone (a lane's round, each Genesys call): they are
/// exported, and never change what a log line shows as its current span.
pub const TRACE_TARGET: &str = "patchbay::trace";

struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

struct Carrier<'a>(&'a mut BTreeMap<String, String>);

impl Injector for Carrier<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_string(), value);
    }
}

impl Extractor for Carrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

/// The caller's trace, from its `traceparent` and `tracestate`; empty without them.
pub fn from_headers(headers: &http::HeaderMap) -> Context {
    TraceContextPropagator::new().extract(&Headers(headers))
}

/// The current span's trace context as W3C headers, to keep with a job; empty when no trace is
/// being recorded.
pub fn current() -> BTreeMap<String, String> {
    let mut carrier = BTreeMap::new();
    let cx = tracing::Span::current().context();
    if cx.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(&cx, &mut Carrier(&mut carrier));
    }
    carrier
}

/// A context kept by [`current`].
pub fn from_kept(kept: &BTreeMap<String, String>) -> Context {
    let mut kept = kept.clone();
    TraceContextPropagator::new().extract(&Carrier(&mut kept))
}

/// Makes `parent` (when it holds a trace) the parent of `span`, and records the trace and span ids
/// on it, so every log line of the span names its trace.
pub fn adopt(span: &tracing::Span, parent: Context) {
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
    if let Some((trace, id)) = ids(span) {
        span.record("trace_id", trace.as_str());
        span.record("span_id", id.as_str());
    }
}

/// Links `span` to each traced context of `others`: updates that shared its work.
pub fn link(span: &tracing::Span, others: impl IntoIterator<Item = Context>) {
    for cx in others {
        let sc = cx.span().span_context().clone();
        if sc.is_valid() {
            span.add_link(sc);
        }
    }
}

/// `span`'s own context, when a trace is being recorded.
pub fn span_context(span: &tracing::Span) -> Option<opentelemetry::trace::SpanContext> {
    let sc = span.context().span().span_context().clone();
    sc.is_valid().then_some(sc)
}

/// The trace and span ids of `span`, as logs print them; `None` when it is not recorded.
pub fn ids(span: &tracing::Span) -> Option<(String, String)> {
    span_context(span).map(|sc| (sc.trace_id().to_string(), sc.span_id().to_string()))
}
