//! Trace context across the log (feature `otel`): a command's events carry the W3C
//! `traceparent` of the span it ran in (metadata key [`TRACEPARENT`]), and the projections and
//! sagas that handle them run each event's handler in a span whose parent is that context, so
//! that one trace shows the command, its events' read models and the sagas they drive (a
//! saga's queued commands keep the context they were queued in, and their delivery continues
//! it). A relay publishes each such event in a span of that trace too, and sends the context
//! in the message's `traceparent` header, which a consumer's projection in another service
//! continues. A
//! projection whose handlers read a lean envelope (`Source`, `Origin`: no metadata, for speed)
//! is not linked; sagas always are.
//!
//! The spans are `tracing` spans; the application maps them to OpenTelemetry with
//! `tracing-opentelemetry`'s layer (and exports them as it likes, OTLP included). Without the
//! feature, events carry no trace context and handlers run in no span of their own.

use crate::envelope::Metadata;

/// The metadata key holding an event's W3C trace context (`00-<trace id>-<span id>-<flags>`).
pub const TRACEPARENT: &str = "traceparent";

/// Stores the current span's trace context in `metadata` (a command's), unless it holds one
/// already (a context the caller chose, or copied from an event).
pub(crate) fn stamp(metadata: &mut Metadata) {
    #[cfg(feature = "otel")]
    if !metadata.contains_key(TRACEPARENT)
        && let Some(traceparent) = otel::current()
    {
        metadata.insert(TRACEPARENT.to_owned(), traceparent.into());
    }
    #[cfg(not(feature = "otel"))]
    let _ = metadata;
}

/// The current span's trace context, as a `traceparent` (`None` without one, or without the
/// feature): what a saga's queued commands keep to continue the trace when delivered.
#[cfg_attr(not(any(feature = "postgres", feature = "sqlite")), allow(dead_code))]
pub(crate) fn current() -> Option<String> {
    #[cfg(feature = "otel")]
    {
        otel::current()
    }
    #[cfg(not(feature = "otel"))]
    {
        None
    }
}

/// Makes the trace context `traceparent` (a queued command's) the parent of `span`: nothing
/// when it is `None` or not a `traceparent`, or without the feature.
#[cfg_attr(not(any(feature = "postgres", feature = "sqlite")), allow(dead_code))]
pub(crate) fn continue_in(span: &tracing::Span, traceparent: Option<&str>) {
    #[cfg(feature = "otel")]
    if let Some(parent) = traceparent.and_then(otel::parse) {
        otel::set_parent(span, parent);
    }
    #[cfg(not(feature = "otel"))]
    let _ = (span, traceparent);
}

/// The span to handle an event in (`kind`: `projection` or `saga`): a child of the trace
/// context the event carries; `None` when it carries none (or without the feature).
#[cfg_attr(not(any(feature = "postgres", feature = "sqlite")), allow(dead_code))]
pub(crate) fn handling_span(
    kind: &'static str,
    name: &str,
    event: &crate::envelope::RecordedEvent,
) -> Option<tracing::Span> {
    event_span(kind, name, "handles", event)
}

/// The span `kind` `name` does `action` to an event in (`relay orders publishes
/// OrderPlaced`): a child of the trace context the event carries; `None` when it carries none
/// (or without the feature).
#[cfg_attr(not(any(feature = "postgres", feature = "sqlite")), allow(dead_code))]
pub(crate) fn event_span(
    kind: &'static str,
    name: &str,
    action: &'static str,
    event: &crate::envelope::RecordedEvent,
) -> Option<tracing::Span> {
    #[cfg(feature = "otel")]
    {
        let parent = event
            .metadata
            .get(TRACEPARENT)
            .and_then(serde_json::Value::as_str)
            .and_then(otel::parse)?;
        let span = tracing::info_span!(
            "factum.handle",
            otel.name = %format_args!("{kind} {name} {action} {}", event.event_type),
            factum.kind = kind,
            factum.name = %name,
            factum.event_type = %event.event_type,
            factum.stream_id = %event.stream_id,
            factum.stream_version = event.stream_version,
        );
        otel::set_parent(&span, parent);
        Some(span)
    }
    #[cfg(not(feature = "otel"))]
    {
        let _ = (kind, name, action, event);
        None
    }
}

#[cfg(feature = "otel")]
mod otel {
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState,
    };
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;

    /// The current span's context as a `traceparent`, if it has a valid one.
    pub(super) fn current() -> Option<String> {
        let context = tracing::Span::current().context();
        let span = context.span();
        let span_context = span.span_context();
        span_context.is_valid().then(|| {
            format!(
                "00-{}-{}-{:02x}",
                span_context.trace_id(),
                span_context.span_id(),
                span_context.trace_flags().to_u8()
            )
        })
    }

    /// A `traceparent` (version 00) read back; `None` when it is not one.
    pub(super) fn parse(traceparent: &str) -> Option<SpanContext> {
        let mut parts = traceparent.split('-');
        let (version, trace_id, span_id, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if version != "00" || parts.next().is_some() || trace_id.len() != 32 || span_id.len() != 16
        {
            return None;
        }
        let context = SpanContext::new(
            TraceId::from_hex(trace_id).ok()?,
            SpanId::from_hex(span_id).ok()?,
            TraceFlags::new(u8::from_str_radix(flags, 16).ok()?),
            true,
            TraceState::default(),
        );
        context.is_valid().then_some(context)
    }

    /// Makes `parent` the parent of `span` (nothing when no OpenTelemetry layer records it).
    pub(super) fn set_parent(span: &tracing::Span, parent: SpanContext) {
        let context = opentelemetry::Context::new().with_remote_span_context(parent);
        if let Err(error) = span.set_parent(context) {
            tracing::trace!(%error, "no OpenTelemetry layer to continue the event's trace");
        }
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn a_traceparent_reads_back_and_anything_else_does_not() {
            let context = super::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
                .expect("a valid traceparent");
            assert_eq!(
                context.trace_id().to_string(),
                "4bf92f3577b34da6a3ce929d0e0e4736"
            );
            for bad in [
                "",
                "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-xx",
                "00-zz-00f067aa0ba902b7-01",
            ] {
                assert!(super::parse(bad).is_none(), "{bad:?}");
            }
        }
    }
}
