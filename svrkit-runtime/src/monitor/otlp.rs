//! Spans exported to an OpenTelemetry collector over OTLP/gRPC (feature `otel`, `[monitor]
//! otlp_endpoint`): one server span per request a server of this process runs, and one
//! client span per call it makes, with the svrkit trace id as their trace id, so that a
//! trace's hops link up in Jaeger, Tempo or any OTLP backend: a request's server span is
//! under its caller's client span, which is under the request that made the call.
//!
//! The runtime records spans itself ([`crate::trace::FinishedSpan`], with the ids it carries
//! in frame headers and W3C `traceparent`): they go straight to OpenTelemetry's batch span
//! processor as span data, with the ids svrkit chose, and the processor exports them from a
//! task of its own. A request's thread only hands its span over (a queue push; a full queue
//! drops the span and counts it, never blocks). No tracing subscriber is involved.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::OnceLock;
use std::time::Duration;

use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::runtime::Tokio;
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks, SpanProcessor};

use crate::trace::FinishedSpan;

/// The exporter: flush it before the process ends, or the last spans are lost.
#[derive(Clone)]
pub struct Otlp {
    processor: Arc<BatchSpanProcessor<Tokio>>,
}

impl std::fmt::Debug for Otlp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Otlp")
    }
}

impl Otlp {
    /// Sends the spans recorded so far, waiting until they are sent (or failed). Blocks the
    /// thread: call it from a blocking one (`tokio::task::spawn_blocking`).
    ///
    /// # Errors
    /// When the collector could not take them.
    pub fn flush(&self) -> Result<(), String> {
        self.processor.force_flush().map_err(|e| e.to_string())
    }
}

/// Starts exporting this process's spans to the collector at `endpoint`
/// (`http://host:4317`), naming the process `service_name`. Must run inside a tokio
/// runtime: the exporter's task runs there.
///
/// # Errors
/// When the exporter cannot be built (a malformed endpoint), or spans are exported already.
pub fn start(endpoint: &str, service_name: &str) -> Result<Otlp, String> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .with_timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| format!("cannot export spans to {endpoint}: {e}"))?;
    let mut processor = BatchSpanProcessor::builder(exporter, Tokio).build();
    processor.set_resource(
        &Resource::builder()
            .with_service_name(service_name.to_owned())
            .build(),
    );
    let processor = Arc::new(processor);
    let otlp = Otlp {
        processor: processor.clone(),
    };
    let scope = InstrumentationScope::builder("svrkit")
        .with_version(env!("CARGO_PKG_VERSION"))
        .build();
    let exporting = processor.clone();
    if !crate::trace::export_spans(move |span| exporting.on_end(span_data(span, &scope))) {
        return Err("spans are exported already in this process".into());
    }
    let _ = started().set(otlp.clone());
    Ok(otlp)
}

fn started() -> &'static OnceLock<Otlp> {
    static STARTED: OnceLock<Otlp> = OnceLock::new();
    &STARTED
}

/// Sends the spans recorded so far, if an exporter was started (see [`Otlp::flush`]): what a
/// process does before it exits.
///
/// # Errors
/// As [`Otlp::flush`].
pub fn flush() -> Result<(), String> {
    started().get().map_or(Ok(()), Otlp::flush)
}

/// A finished span as OpenTelemetry's span data, with svrkit's ids.
fn span_data(span: FinishedSpan, scope: &InstrumentationScope) -> SpanData {
    let status = if span.status == 0 {
        Status::Unset
    } else {
        Status::error(format!("svrkit status {}", span.status))
    };
    let mut attributes = vec![
        KeyValue::new("rpc.system", if span.grpc { "grpc" } else { "svrkit" }),
        KeyValue::new("rpc.service", span.service),
        KeyValue::new("rpc.method", span.method),
        KeyValue::new("svrkit.status_code", i64::from(span.status)),
    ];
    if !span.caller.is_empty() {
        attributes.push(KeyValue::new("svrkit.caller", span.caller.to_string()));
    }
    SpanData {
        span_context: SpanContext::new(
            TraceId::from_bytes(span.trace_id),
            SpanId::from_bytes(span.span_id.to_be_bytes()),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        ),
        parent_span_id: SpanId::from_bytes(span.parent_span_id.to_be_bytes()),
        // A server span's parent is its caller's, in another process; a client span's is
        // the request of this process that made the call.
        parent_span_is_remote: span.parent_span_id != 0
            && span.kind == crate::trace::SpanKind::Server,
        span_kind: match span.kind {
            crate::trace::SpanKind::Server => SpanKind::Server,
            crate::trace::SpanKind::Client => SpanKind::Client,
        },
        name: Cow::Borrowed(span.name),
        start_time: span.start,
        end_time: span.end.max(span.start),
        attributes,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status,
        instrumentation_scope: scope.clone(),
    }
}
