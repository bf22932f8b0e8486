//! The spans every call makes (the RPC server and client spans, the cache span),
//! made with the OpenTelemetry API on the process's tracer rather than through
//! the `tracing` bridge. They run on every call, and the bridge costs per span a
//! registry entry, a span builder and a conversion of every field, whether or not
//! the span is sampled; here a span that is not sampled costs its ids and the
//! sampler's decision, and its attributes are never built.
//!
//! They nest with `tracing` spans both ways: a `tracing` span started while one of
//! these is the current context becomes its child (tracing-opentelemetry takes the
//! current context as the parent), and these take the current context, whichever
//! made it, as theirs. Both go to the same tracer provider, sampler and exporter.

use std::sync::OnceLock;

use opentelemetry::trace::{Span as _, SpanBuilder, SpanKind, Status, TraceContextExt as _, Tracer as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::SdkTracer;

static TRACER: OnceLock<SdkTracer> = OnceLock::new();

/// Makes `tracer` the one call spans are made with; the first call wins.
pub(crate) fn install(tracer: SdkTracer) {
    let _ = TRACER.set(tracer);
}

/// One span, ended when dropped. Its [`Self::context`] is what the work it
/// covers runs in (`opentelemetry::context::FutureExt::with_context`) and what is
/// written into outgoing calls' headers. A span the sampler dropped still has
/// its own ids (with the sampled flag off, so the next hops do not record
/// either) but records nothing.
#[derive(Debug)]
pub struct CallSpan {
    span: opentelemetry_sdk::trace::Span,
    context: Context,
}

impl CallSpan {
    /// A span of `kind` named `name` under `parent`, or `None` when this process exports
    /// no spans. `attributes` runs only for a span that is sampled. Pass names from the
    /// descriptors (or `unknown`), never unchecked input: a backend indexes span names.
    pub fn start(kind: SpanKind, parent: &Context, name: &'static str, attributes: impl FnOnce() -> Vec<KeyValue>) -> Option<Self> {
        let tracer = TRACER.get().filter(|_| crate::tracing_enabled())?;
        Some(Self::build(tracer, kind, parent, name, attributes))
    }

    fn build(tracer: &SdkTracer, kind: SpanKind, parent: &Context, name: &'static str, attributes: impl FnOnce() -> Vec<KeyValue>) -> Self {
        let mut span = tracer.build_with_context(SpanBuilder::from_name(name).with_kind(kind), parent);
        if span.is_recording() {
            span.set_attributes(attributes());
        }
        // The span's ids go into the context; the span itself stays here, where its
        // attributes and status are set, instead of behind the context's lock.
        let context = parent.with_remote_span_context(span.span_context().clone());
        Self { span, context }
    }

    /// [`Self::start`] under the current context, read only when a span is made.
    pub fn start_in_current(kind: SpanKind, name: &'static str, attributes: impl FnOnce() -> Vec<KeyValue>) -> Option<Self> {
        if !crate::tracing_enabled() {
            return None;
        }
        Self::start(kind, &Context::current(), name, attributes)
    }

    /// The context with this span current.
    pub fn context(&self) -> &Context {
        &self.context
    }

    pub fn set_attribute(&mut self, attribute: KeyValue) {
        self.span.set_attribute(attribute);
    }

    /// Marks the span failed (status ERROR).
    pub fn fail(&mut self) {
        self.span.set_status(Status::error(""));
    }
}

impl Drop for CallSpan {
    fn drop(&mut self) {
        self.span.end();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use opentelemetry::trace::{SpanId, TraceId, TracerProvider as _};
    use opentelemetry_sdk::trace::{InMemorySpanExporter, Sampler, SdkTracerProvider, SimpleSpanProcessor};

    use super::*;

    fn tracer(sampler: Sampler) -> (SdkTracer, InMemorySpanExporter) {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(SimpleSpanProcessor::new(exporter.clone()))
            .with_sampler(sampler)
            .build();
        (provider.tracer("test"), exporter)
    }

    fn start(tracer: &SdkTracer, kind: SpanKind, parent: &Context, name: &'static str, attributes: Vec<KeyValue>) -> CallSpan {
        CallSpan::build(tracer, kind, parent, name, || attributes)
    }

    fn caller(flags: opentelemetry::trace::TraceFlags) -> Context {
        Context::new().with_remote_span_context(opentelemetry::trace::SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
            SpanId::from_hex("00f067aa0ba902b7").unwrap(),
            flags,
            true,
            Default::default(),
        ))
    }

    #[test]
    fn spans_nest_under_the_caller_and_end_with_their_attributes_and_status() {
        let (tracer, exporter) = tracer(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)));
        let caller = caller(opentelemetry::trace::TraceFlags::SAMPLED);
        let mut server = start(
            &tracer,
            SpanKind::Server,
            &caller,
            "suite.user.v1.UserService/GetUser",
            vec![KeyValue::new("rpc.system", "grpc")],
        );
        let mut cache = start(&tracer, SpanKind::Client, server.context(), "cache GET", Vec::new());
        cache.set_attribute(KeyValue::new("cache.outcome", "hit"));
        drop(cache);
        server.set_attribute(KeyValue::new("rpc.grpc.status_code", 13));
        server.fail();
        drop(server);

        let spans = exporter.get_finished_spans().unwrap();
        let [cache, server] = spans.as_slice() else { panic!("{spans:#?}") };
        assert_eq!(server.span_context.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(server.parent_span_id.to_string(), "00f067aa0ba902b7");
        assert!(server.parent_span_is_remote);
        assert_eq!(server.span_kind, SpanKind::Server);
        assert_eq!(server.status, Status::error(""));
        assert!(server.attributes.contains(&KeyValue::new("rpc.grpc.status_code", 13)));
        assert_eq!(cache.parent_span_id, server.span_context.span_id());
        assert!(!cache.parent_span_is_remote, "a parent in this process");
        assert_eq!(cache.attributes, [KeyValue::new("cache.outcome", "hit")]);
        assert_eq!(cache.status, Status::Unset);
    }

    #[test]
    fn a_span_not_sampled_records_nothing_and_tells_the_next_hop() {
        let (tracer, exporter) = tracer(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)));
        let span = start(
            &tracer,
            SpanKind::Server,
            &caller(opentelemetry::trace::TraceFlags::NOT_SAMPLED),
            "x",
            Vec::new(),
        );
        let own = span.context().span().span_context().clone();
        assert!(own.is_valid() && !own.is_sampled());
        assert_ne!(
            own.span_id(),
            SpanId::from_hex("00f067aa0ba902b7").unwrap(),
            "its own span id, for the logs"
        );
        drop(span);
        assert!(exporter.get_finished_spans().unwrap().is_empty());
    }
}
