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
//!
//! A service's own `tracing` spans join them through [`tracing_layer`]
//! (`tracing-opentelemetry` over the same processor): a span a handler opens is a child of
//! its request's server span, and a call made inside it is a child of that span.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::OnceLock;
use std::time::Duration;

use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState, TracerProvider,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::runtime::Tokio;
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanEvents, SpanLinks, SpanProcessor};
use tracing_subscriber::Layer;
use tracing_subscriber::registry::LookupSpan;

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
    let scope = scope();
    let exporting = processor.clone();
    if !crate::trace::export_spans(move |span| exporting.on_end(span_data(span, &scope))) {
        return Err("spans are exported already in this process".into());
    }
    let _ = started().set(otlp.clone());
    Ok(otlp)
}

fn scope() -> InstrumentationScope {
    InstrumentationScope::builder("svrkit")
        .with_version(env!("CARGO_PKG_VERSION"))
        .build()
}

/// A `tracing` layer that exports the process's own spans (`tracing-opentelemetry`) beside
/// svrkit's, once [`start`] (or `[monitor] otlp_endpoint`) starts exporting; before that, and
/// without it, the layer sees no span at all.
///
/// A span a handler opens is under its request's server span, a call made inside it under
/// that span, and a span opened outside any request starts a trace of its own. Which spans
/// reach it is the subscriber's filter's choice (`RUST_LOG`), as for any layer:
///
/// ```ignore
/// use tracing_subscriber::prelude::*;
/// tracing_subscriber::registry()
///     .with(tracing_subscriber::EnvFilter::new("info"))
///     .with(tracing_subscriber::fmt::layer())
///     .with(svrkit_runtime::monitor::otlp::tracing_layer())
///     .init();
/// ```
pub fn tracing_layer<S>() -> impl Layer<S>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    crate::trace::set_layered();
    let tracer = SdkTracerProvider::builder()
        .with_span_processor(ToExporter)
        .build()
        .tracer_with_scope(scope());
    tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(tracing_subscriber::filter::dynamic_filter_fn(|meta, _| {
            crate::trace::exporting() && !exporters_own(meta.target())
        }))
}

/// Whether spans from `target` are the HTTP/2 and gRPC stack's: the exporter's own sends
/// (and svrkit's gRPC connections) would otherwise become traces to export, each export
/// making more.
fn exporters_own(target: &str) -> bool {
    ["h2", "hyper", "tonic", "tower", "opentelemetry"]
        .iter()
        .any(|crate_name| {
            target
                .strip_prefix(crate_name)
                // The crate, its modules, and its siblings (`hyper_util`, `opentelemetry_sdk`).
                .is_some_and(|rest| {
                    rest.is_empty() || rest.starts_with("::") || rest.starts_with('_')
                })
        })
}

/// Hands the layer's finished spans to the exporter [`start`] made, with svrkit's own.
#[derive(Debug)]
struct ToExporter;

impl SpanProcessor for ToExporter {
    fn on_start(&self, _: &mut opentelemetry_sdk::trace::Span, _: &opentelemetry::Context) {}

    fn on_end(&self, span: SpanData) {
        if let Some(otlp) = started().get() {
            otlp.processor.on_end(span);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _: Duration) -> OTelSdkResult {
        Ok(())
    }
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

#[cfg(test)]
mod tests {
    #[test]
    fn the_exporters_own_stack_is_left_out_by_crate_not_by_prefix() {
        for own in [
            "h2",
            "h2::proto::connection",
            "hyper_util::client",
            "tonic::transport",
            "tower::buffer",
            "opentelemetry_sdk::trace",
        ] {
            assert!(super::exporters_own(own), "{own}");
        }
        for theirs in [
            "svrkit_tests::echo",
            "h2o",
            "hypertext::page",
            "svrkit_runtime",
        ] {
            assert!(!super::exporters_own(theirs), "{theirs}");
        }
    }
}
