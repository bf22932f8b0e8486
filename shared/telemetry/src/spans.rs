//! Spans built directly on the OpenTelemetry SDK, for the few that every call
//! makes: the RPC server and client spans and the cache span.
//!
//! `tracing` spans reach OpenTelemetry through the tracing-opentelemetry
//! bridge, which per span keeps a registry entry and a span builder, converts
//! every field into an attribute with allocations of its own, and swaps the
//! current context on every poll; measured in the gateway benchmark that was
//! several microseconds per span before any export. These spans go straight to
//! the SDK with static names and attributes. They still nest with `tracing`
//! spans both ways: a `tracing` span started while one of these is the current
//! context (the request's future runs inside it) becomes its child, and these
//! take the current context, whichever made it, as their parent.

use std::borrow::Cow;
use std::sync::OnceLock;

use opentelemetry::trace::{SpanKind, Status, TraceContextExt as _, Tracer as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::SdkTracer;

static TRACER: OnceLock<SdkTracer> = OnceLock::new();

/// Makes `tracer` the one direct spans are built on; called once, when export starts.
pub(crate) fn install(tracer: SdkTracer) {
    let _ = TRACER.set(tracer);
}

/// One span, ended when dropped. Its [`Self::context`] is what the work it
/// covers runs in (`opentelemetry::context::FutureExt::with_context`) and what
/// is written into outgoing calls' headers.
#[derive(Debug)]
pub struct DirectSpan {
    context: Context,
}

impl DirectSpan {
    /// A span of `kind` under `parent`, its name and attributes from `describe`;
    /// `None` when this process exports no spans, and then neither `describe`
    /// runs nor anything is allocated. Static strings in names and attributes
    /// are kept as they are.
    pub fn start<N: Into<Cow<'static, str>>>(
        kind: SpanKind,
        parent: &Context,
        describe: impl FnOnce() -> (N, Vec<KeyValue>),
    ) -> Option<Self> {
        let tracer = TRACER.get().filter(|_| crate::tracing_enabled())?;
        let (name, attributes) = describe();
        let span = tracer
            .span_builder(name)
            .with_kind(kind)
            .with_attributes(attributes)
            .start_with_context(tracer, parent);
        Some(Self {
            context: parent.with_span(span),
        })
    }

    /// [`Self::start`] under the current context, read only when a span is made.
    pub fn start_in_current<N: Into<Cow<'static, str>>>(kind: SpanKind, describe: impl FnOnce() -> (N, Vec<KeyValue>)) -> Option<Self> {
        if !crate::tracing_enabled() {
            return None;
        }
        Self::start(kind, &Context::current(), describe)
    }

    /// The context with this span current.
    pub fn context(&self) -> &Context {
        &self.context
    }

    pub fn set_attribute(&self, attribute: KeyValue) {
        self.context.span().set_attribute(attribute);
    }

    /// Marks the span failed (status ERROR).
    pub fn fail(&self) {
        self.context.span().set_status(Status::error(""));
    }
}

impl Drop for DirectSpan {
    fn drop(&mut self) {
        self.context.span().end();
    }
}
