//! Trace ids: made where a trace starts (a call with no request above it, or a request that
//! came without one), then carried in every frame header down the call chain; and span ids:
//! one per request a server runs, which the calls it makes carry as their parent, so that a
//! trace's spans link hop by hop (W3C trace context's model: the trace id is the trace's, the
//! span ids are 8 bytes).

use std::cell::{Cell, RefCell};
use std::fmt;

use bytes::Bytes;

/// A new 16-byte trace id. Ids need to be unique, not secret: they come from a per-thread
/// generator (SplitMix64) seeded from the process's random hasher keys. They are made 256 at
/// a time into one buffer that each id shares, so that making one costs a few
/// multiplications and a reference count rather than an allocation.
pub fn new_id() -> Bytes {
    thread_local! {
        static STATE: Cell<u64> = Cell::new(crate::random::seed());
        static BATCH: RefCell<Bytes> = const { RefCell::new(Bytes::new()) };
    }
    BATCH.with(|batch| {
        let mut batch = batch.borrow_mut();
        if batch.is_empty() {
            let mut ids = Vec::with_capacity(ID_LEN * IDS_PER_BATCH);
            STATE.with(|s| {
                for _ in 0..IDS_PER_BATCH * 2 {
                    ids.extend_from_slice(&crate::random::step(s).to_be_bytes());
                }
            });
            *batch = Bytes::from(ids);
        }
        batch.split_to(ID_LEN)
    })
}

/// A finished span: a request a server ran, from its frame's arrival to its answer, or a
/// call a client made, from its start to its result (retries and all). What
/// [`export_spans`] hands an exporter (OpenTelemetry over OTLP with the feature `otel`:
/// `crate::monitor::otlp`).
///
/// A call made while serving a request is a client span under that request's server span,
/// and the server that answers it records its span under the client span: the frame
/// header's parent span id (or `traceparent`'s parent id over gRPC) is the client span's,
/// so the time between the two (connecting, queueing, the network) shows as a gap.
#[derive(Clone, Debug)]
pub struct FinishedSpan {
    /// Which side recorded it.
    pub kind: SpanKind,
    /// The trace (16 bytes; a shorter or longer id from a peer is cut or padded with zeros).
    pub trace_id: [u8; 16],
    /// This span: a request's ([`Context::span_id`](crate::Context::span_id)), or a call's.
    pub span_id: u64,
    /// The span above it (0: a root): a request's caller's client span, or the request
    /// that made a call.
    pub parent_span_id: u64,
    /// The method's full name (`im.msg.MsgSvr.Append`).
    pub name: &'static str,
    /// The service's full name and the method's.
    pub service: &'static str,
    #[allow(missing_docs)]
    pub method: &'static str,
    /// When the request arrived and when it was answered.
    pub start: std::time::SystemTime,
    #[allow(missing_docs)]
    pub end: std::time::SystemTime,
    /// The answer's status code (0: ok).
    pub status: u32,
    /// Whether it went over gRPC (else svrkit frames, or in process).
    pub grpc: bool,
    /// A server span: the calling service's name, as the request gave it (empty for a
    /// client span).
    pub caller: faststr::FastStr,
}

/// The side of a call a span is of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpanKind {
    /// A request a server ran.
    Server,
    /// A call a client made.
    Client,
}

type Sink = Box<dyn Fn(FinishedSpan) + Send + Sync>;

fn sink() -> &'static std::sync::OnceLock<Sink> {
    static SINK: std::sync::OnceLock<Sink> = std::sync::OnceLock::new();
    &SINK
}

/// Hands every span this process's servers finish to `export`, from now on (on the thread
/// that answered the request: it must not block). Once per process; false if an exporter
/// was set already.
pub fn export_spans(export: impl Fn(FinishedSpan) + Send + Sync + 'static) -> bool {
    sink().set(Box::new(export)).is_ok()
}

/// Whether spans are exported: servers only record them then.
#[inline]
pub(crate) fn exporting() -> bool {
    sink().get().is_some()
}

/// Exports a finished span, if an exporter is set.
pub(crate) fn finish(span: FinishedSpan) {
    if let Some(export) = sink().get() {
        export(span);
    }
}

/// Whether a `monitor::otlp::tracing_layer` was made: until then a request's handler runs
/// without an OpenTelemetry context of its own, which nothing would read.
#[cfg(feature = "otel")]
static LAYERED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Notes that a `tracing` layer exports the process's own spans (`monitor::otlp`).
#[cfg(feature = "otel")]
pub(crate) fn set_layered() {
    LAYERED.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// The OpenTelemetry context a request's handler runs in, when a `monitor::otlp::tracing_layer` exports
/// spans: its server span as the current span.
#[cfg(feature = "otel")]
pub(crate) fn handler_context(trace_id: [u8; 16], span_id: u64) -> Option<opentelemetry::Context> {
    if !LAYERED.load(std::sync::atomic::Ordering::Relaxed) {
        return None;
    }
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
    };
    let span = SpanContext::new(
        TraceId::from_bytes(trace_id),
        SpanId::from_bytes(span_id.to_be_bytes()),
        TraceFlags::SAMPLED,
        false,
        TraceState::default(),
    );
    Some(opentelemetry::Context::new().with_remote_span_context(span))
}

/// The span a call made now starts under, if a `monitor::otlp::tracing_layer` exports spans and the
/// current one is of `trace_id`'s trace: a handler's innermost span, or its request's.
#[cfg(feature = "otel")]
pub(crate) fn current_span(trace_id: &[u8; 16]) -> Option<u64> {
    if !LAYERED.load(std::sync::atomic::Ordering::Relaxed) {
        return None;
    }
    use opentelemetry::trace::TraceContextExt;
    let cx = opentelemetry::Context::current();
    let span = cx.span();
    let current = span.span_context();
    (current.is_valid() && current.trace_id().to_bytes() == *trace_id)
        .then(|| u64::from_be_bytes(current.span_id().to_bytes()))
}

/// A trace id as the 16 bytes spans carry.
pub(crate) fn id_bytes(id: &[u8]) -> [u8; 16] {
    let mut out = [0u8; 16];
    let n = id.len().min(16);
    out[..n].copy_from_slice(&id[..n]);
    out
}

/// A new span id: random, never 0 (which means "none").
pub fn new_span_id() -> u64 {
    crate::random::random().max(1)
}

/// Bytes in a trace id.
const ID_LEN: usize = 16;
/// Ids made at once.
const IDS_PER_BATCH: usize = 256;

/// Shows a trace id as lowercase hex (`-` when empty).
pub struct Hex<'a>(pub &'a [u8]);

impl fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("-");
        }
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_distinct_across_threads() {
        let mut ids: Vec<Bytes> = (0..4)
            .map(|_| std::thread::spawn(|| (0..1000).map(|_| new_id()).collect::<Vec<_>>()))
            .flat_map(|t| t.join().unwrap())
            .collect();
        assert!(ids.iter().all(|id| id.len() == 16));
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 4000);
        assert_eq!(Hex(&[0x0a, 0xff]).to_string(), "0aff");
        assert_eq!(Hex(&[]).to_string(), "-");
    }
}
