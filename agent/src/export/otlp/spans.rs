//! Spans: one per call, built directly as SDK span data (the call already happened, with kernel
//! timestamps), batched per resource and exported.

use std::{
    borrow::Cow,
    collections::HashMap,
    sync::{Arc, atomic::Ordering},
    time::{Duration, SystemTime},
};

use log::warn;
use opentelemetry::InstrumentationScope;
use opentelemetry::{
    Context,
    propagation::{Extractor, TextMapPropagator},
    trace::{SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceState},
};
use opentelemetry_sdk::{
    Resource,
    propagation::TraceContextPropagator,
    trace::{IdGenerator, RandomIdGenerator, SpanData, SpanEvents, SpanExporter, SpanLinks},
};
use tokio::sync::mpsc;

use super::{ExportStats, OtlpSettings, ResourceKey};
use crate::{
    calls::ApiCall,
    clock::WallClock,
    export::semconv::{CallDescription, Kind},
};

/// A span waiting for its batch.
pub(super) struct QueuedSpan {
    /// Which resource it belongs to.
    pub key: ResourceKey,
    /// That resource.
    pub resource: Resource,
    /// The span.
    pub span: SpanData,
}

/// The `traceparent`/`tracestate` of a request, for the W3C propagator.
struct TraceHeaders<'a>(&'a CallDescription);

impl Extractor for TraceHeaders<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            "traceparent" => self.0.traceparent.as_deref(),
            "tracestate" => self.0.tracestate.as_deref(),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        vec!["traceparent", "tracestate"]
    }
}

fn system_time(clock: &WallClock, monotonic_ns: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_nanos(clock.unix_ns(monotonic_ns))
}

thread_local! {
    static CLOCK: WallClock = WallClock::measure();
    /// Built once: every span carries the same scope.
    static SCOPE: InstrumentationScope = InstrumentationScope::builder("apiscope")
        .with_version(env!("CARGO_PKG_VERSION"))
        .build();
}

/// The span of a call: a child of the request's `traceparent` when it has a valid one, else the
/// root of a new trace.
pub fn span_data(call: &ApiCall, description: &CallDescription) -> SpanData {
    let ids = RandomIdGenerator::default();
    // Most requests carry no traceparent: skip the propagator for them.
    let parent = match description.traceparent {
        Some(_) => TraceContextPropagator::new()
            .extract_with_context(&Context::new(), &TraceHeaders(description))
            .span()
            .span_context()
            .clone(),
        None => SpanContext::empty_context(),
    };
    let (trace_id, parent_span_id, trace_state, remote) = if parent.is_valid() {
        (
            parent.trace_id(),
            parent.span_id(),
            parent.trace_state().clone(),
            true,
        )
    } else {
        (
            ids.new_trace_id(),
            SpanId::INVALID,
            TraceState::default(),
            false,
        )
    };
    let (start_time, end_time) = CLOCK.with(|clock| {
        (
            system_time(clock, call.start_ns),
            system_time(clock, call.end_ns),
        )
    });
    SpanData {
        span_context: SpanContext::new(
            trace_id,
            ids.new_span_id(),
            TraceFlags::SAMPLED,
            false,
            trace_state,
        ),
        parent_span_id,
        parent_span_is_remote: remote,
        span_kind: match description.kind {
            Kind::Server => SpanKind::Server,
            Kind::Client => SpanKind::Client,
        },
        name: Cow::Owned(description.name.clone()),
        start_time,
        end_time,
        attributes: description.span_attributes.clone(),
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: match &description.error {
            Some(_) => Status::error(""),
            None => Status::Unset,
        },
        instrumentation_scope: SCOPE.with(Clone::clone),
    }
}

/// Collects spans into batches and exports each batch, one group per resource, until the queue
/// closes; then exports what is left.
pub(super) async fn export_loop(
    mut exporter: opentelemetry_otlp::SpanExporter,
    mut queue: mpsc::Receiver<QueuedSpan>,
    settings: OtlpSettings,
    stats: Arc<ExportStats>,
) {
    let mut batch = Vec::with_capacity(settings.max_export_batch_size);
    let mut tick = tokio::time::interval(settings.schedule_delay);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            span = queue.recv() => match span {
                Some(span) => {
                    batch.push(span);
                    if batch.len() >= settings.max_export_batch_size {
                        export_batch(&mut exporter, &mut batch, &stats).await;
                    }
                }
                None => break,
            },
            _ = tick.tick() => export_batch(&mut exporter, &mut batch, &stats).await,
        }
    }
    export_batch(&mut exporter, &mut batch, &stats).await;
    let _ = exporter.shutdown();
}

async fn export_batch(
    exporter: &mut opentelemetry_otlp::SpanExporter,
    batch: &mut Vec<QueuedSpan>,
    stats: &ExportStats,
) {
    if batch.is_empty() {
        return;
    }
    let mut groups: HashMap<ResourceKey, (Resource, Vec<SpanData>)> = HashMap::new();
    for queued in batch.drain(..) {
        groups
            .entry(queued.key)
            .or_insert_with(|| (queued.resource, Vec::new()))
            .1
            .push(queued.span);
    }
    for (resource, spans) in groups.into_values() {
        let count = spans.len() as u64;
        exporter.set_resource(&resource);
        match exporter.export(spans).await {
            Ok(()) => {
                stats.spans_exported.fetch_add(count, Ordering::Relaxed);
            }
            Err(error) => {
                if stats.spans_failed.fetch_add(count, Ordering::Relaxed) == 0 {
                    warn!("OTLP span export failed (further failures are only counted): {error}");
                }
            }
        }
    }
}
