//! Spans: one per call, encoded straight into OTLP protobuf on the stream thread (the call
//! already happened, with kernel timestamps), queued as bytes under a count and a byte bound,
//! and sent in batches grouped by resource.
//!
//! The SDK's span pipeline is not used: it would build `SpanData`, convert it to the protocol
//! types and encode it, three copies of every attribute, and it keeps one resource per
//! exporter while every traced process here is its own resource.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use opentelemetry::{
    Context, KeyValue,
    propagation::{Extractor, TextMapPropagator},
    trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId},
};
use opentelemetry_proto::tonic::{
    common::v1::{AnyValue, InstrumentationScope, KeyValue as ProtoKeyValue},
    trace::v1::{
        Span, SpanFlags, Status,
        span::{Event, SpanKind},
        status::StatusCode,
    },
};
use opentelemetry_sdk::{
    propagation::TraceContextPropagator,
    trace::{IdGenerator, RandomIdGenerator},
};
use prost::Message;
use tokio::sync::mpsc;

use super::{
    ResourceKey, attributes,
    batch::TraceRequest,
    transport::{Outcome, SignalClient},
};
use crate::export::health::ExportStats;
use crate::{
    analysis::events::{ApiEvent, SECURITY_FINDING},
    calls::{ApiCall, CallDescription, Kind},
    clock::WallClock,
};

/// A span waiting for its batch, already encoded.
pub(super) struct QueuedSpan {
    /// Which resource it belongs to.
    pub key: ResourceKey,
    /// That resource, encoded (shared by every span of the process).
    pub resource: Arc<[u8]>,
    /// The encoded `Span` message.
    pub span: Vec<u8>,
}

/// Spans between the recorder and an export batch (gathered on the stream thread, or handed
/// over and not yet taken into a batch), by count and by encoded bytes: what the queue's bounds
/// apply to.
#[derive(Debug, Default)]
pub(super) struct QueueLevel {
    spans: AtomicUsize,
    bytes: AtomicUsize,
}

impl QueueLevel {
    fn add(&self, spans: usize, bytes: usize) {
        self.spans.fetch_add(spans, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    fn remove(&self, spans: usize, bytes: usize) {
        self.spans.fetch_sub(spans, Ordering::Relaxed);
        self.bytes.fetch_sub(bytes, Ordering::Relaxed);
    }
}

/// Most spans gathered on the stream thread before they are handed over even if the stream
/// batch is not done.
const HAND_OVER_AFTER: usize = 512;

/// The producer side of the span queue. Spans gather on the stream thread and are handed to the
/// export task together, once per stream batch: a hand-over per span woke the export task (a
/// futex wake and two context switches) for every call. Bounded by count and by encoded bytes,
/// counting the spans gathered as well as those handed over.
pub(super) struct SpanQueue {
    sender: mpsc::Sender<Vec<QueuedSpan>>,
    gathered: Vec<QueuedSpan>,
    gathered_bytes: usize,
    level: Arc<QueueLevel>,
    max_spans: usize,
    max_bytes: usize,
}

impl SpanQueue {
    /// A queue of at most `max_spans` spans and `max_bytes` encoded bytes.
    pub fn new(
        max_spans: usize,
        max_bytes: usize,
    ) -> (Self, mpsc::Receiver<Vec<QueuedSpan>>, Arc<QueueLevel>) {
        // The level is the bound; a hand-over carries at least one span, so the channel never
        // fills first.
        let (sender, receiver) = mpsc::channel(max_spans.max(1));
        let level = Arc::new(QueueLevel::default());
        let queue = Self {
            sender,
            gathered: Vec::new(),
            gathered_bytes: 0,
            level: Arc::clone(&level),
            max_spans,
            max_bytes,
        };
        (queue, receiver, level)
    }

    /// Queues a span; false when the queue is full (the span is dropped).
    pub fn push(&mut self, span: QueuedSpan) -> bool {
        let size = span.span.len();
        if self.level.spans.load(Ordering::Relaxed) >= self.max_spans
            || self.level.bytes.load(Ordering::Relaxed) + size > self.max_bytes
        {
            return false;
        }
        self.level.add(1, size);
        self.gathered.push(span);
        self.gathered_bytes += size;
        if self.gathered.len() >= HAND_OVER_AFTER {
            self.hand_over();
        }
        true
    }

    /// Hands the gathered spans to the export task; returns how many were dropped because it
    /// has stopped.
    pub fn hand_over(&mut self) -> usize {
        if self.gathered.is_empty() {
            return 0;
        }
        let spans = std::mem::take(&mut self.gathered);
        let bytes = std::mem::take(&mut self.gathered_bytes);
        match self.sender.try_send(spans) {
            Ok(()) => 0,
            Err(error) => {
                let spans = error.into_inner();
                self.level.remove(spans.len(), bytes);
                spans.len()
            }
        }
    }
}

impl Drop for SpanQueue {
    fn drop(&mut self) {
        // The last stream batch's spans: the export task sends them in its final export.
        self.hand_over();
    }
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

thread_local! {
    static CLOCK: WallClock = WallClock::measure();
}

/// The instrumentation scope every span carries, encoded.
pub(super) fn encoded_scope() -> Vec<u8> {
    InstrumentationScope {
        name: "apiscope".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        ..InstrumentationScope::default()
    }
    .encode_to_vec()
}

/// An attribute in protocol form.
pub(super) fn proto_attribute(attribute: KeyValue) -> ProtoKeyValue {
    ProtoKeyValue {
        key: attribute.key.as_str().to_owned(),
        value: Some(AnyValue::from(attribute.value)),
        ..ProtoKeyValue::default()
    }
}

/// Who a call's span is: a child of the request's `traceparent` when it has a valid one, else
/// the root of a new trace.
#[derive(Debug, Clone)]
pub struct SpanIdentity {
    /// The request's trace context; invalid when it had none.
    pub parent: SpanContext,
    /// The span's trace.
    pub trace_id: TraceId,
    /// The span's own id.
    pub span_id: SpanId,
}

impl SpanIdentity {
    /// The identity of the span of the call `description` describes.
    pub fn of(description: &CallDescription) -> Self {
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
        let trace_id = if parent.is_valid() {
            parent.trace_id()
        } else {
            ids.new_trace_id()
        };
        Self {
            parent,
            trace_id,
            span_id: ids.new_span_id(),
        }
    }
}

/// The span of a call, encoded as an OTLP `Span` message, with the ids of `identity`.
pub fn encode_span(
    call: &ApiCall,
    description: CallDescription,
    events: &[ApiEvent],
    identity: &SpanIdentity,
) -> Vec<u8> {
    let mut flags = TraceFlags::SAMPLED.to_u8() as u32 | SpanFlags::ContextHasIsRemoteMask as u32;
    let parent = &identity.parent;
    let (parent_span_id, trace_state) = if parent.is_valid() {
        flags |= SpanFlags::ContextIsRemoteMask as u32;
        (
            parent.span_id().to_bytes().to_vec(),
            parent.trace_state().header(),
        )
    } else {
        (Vec::new(), String::new())
    };
    let (start, end) =
        CLOCK.with(|clock| (clock.unix_ns(call.start_ns), clock.unix_ns(call.end_ns)));
    let span = Span {
        trace_id: identity.trace_id.to_bytes().to_vec(),
        span_id: identity.span_id.to_bytes().to_vec(),
        trace_state,
        parent_span_id,
        flags,
        name: description.name,
        kind: match description.kind {
            Kind::Server => SpanKind::Server,
            Kind::Client => SpanKind::Client,
        } as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: end,
        status: description.error.map(|_| Status {
            code: StatusCode::Error as i32,
            ..Status::default()
        }),
        events: finding_events(events, end),
        ..Span::default()
    };
    let mut bytes = Vec::with_capacity(span.encoded_len() + ATTRIBUTE_BYTES_GUESS);
    span.encode_raw(&mut bytes);
    attributes::append(SPAN_ATTRIBUTES, &description.span_attributes, &mut bytes);
    bytes
}

/// `Span.attributes`, appended after the rest of the span.
const SPAN_ATTRIBUTES: u32 = 9;

/// Room for a typical span's attributes, so that appending them does not reallocate.
const ATTRIBUTE_BYTES_GUESS: usize = 512;

/// The call's security findings as span events, at the call's end (when they were found),
/// with the rule's identity: the log records carry the rest.
fn finding_events(events: &[ApiEvent], at: u64) -> Vec<Event> {
    const ON_THE_SPAN: [&str; 5] = [
        "security_rule.uuid",
        "security_rule.name",
        "security_rule.category",
        "apiscope.rule.severity",
        "apiscope.finding.location",
    ];
    events
        .iter()
        .filter(|event| event.name == SECURITY_FINDING)
        .map(|event| Event {
            time_unix_nano: at,
            name: SECURITY_FINDING.to_owned(),
            attributes: event
                .attributes
                .iter()
                .filter(|attribute| ON_THE_SPAN.contains(&attribute.key.as_str()))
                .cloned()
                .map(proto_attribute)
                .collect(),
            dropped_attributes_count: 0,
        })
        .collect()
}

/// Collects spans into batches and exports each batch, one group per resource, until the queue
/// closes; then exports what is left.
pub(super) async fn export_loop(
    mut client: SignalClient,
    mut queue: mpsc::Receiver<Vec<QueuedSpan>>,
    level: Arc<QueueLevel>,
    max_batch: usize,
    schedule_delay: Duration,
    stats: Arc<ExportStats>,
) {
    let mut batch = Batch::new(encoded_scope());
    let mut tick = tokio::time::interval(schedule_delay);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            spans = queue.recv() => match spans {
                Some(spans) => {
                    for span in spans {
                        level.remove(1, span.span.len());
                        batch.push(span);
                        if batch.spans >= max_batch {
                            batch.export(&mut client, &stats).await;
                        }
                    }
                }
                None => break,
            },
            _ = tick.tick() => batch.export(&mut client, &stats).await,
        }
    }
    batch.export(&mut client, &stats).await;
}

/// Spans collected for the next export, grouped by resource.
struct Batch {
    scope: Vec<u8>,
    groups: HashMap<ResourceKey, ResourceGroup>,
    spans: usize,
}

/// One process's spans in a batch.
struct ResourceGroup {
    resource: Arc<[u8]>,
    spans: Vec<Vec<u8>>,
}

impl Batch {
    fn new(scope: Vec<u8>) -> Self {
        Self {
            scope,
            groups: HashMap::new(),
            spans: 0,
        }
    }

    fn push(&mut self, queued: QueuedSpan) {
        self.groups
            .entry(queued.key)
            .or_insert_with(|| ResourceGroup {
                resource: queued.resource,
                spans: Vec::new(),
            })
            .spans
            .push(queued.span);
        self.spans += 1;
    }

    async fn export(&mut self, client: &mut SignalClient, stats: &ExportStats) {
        if self.spans == 0 {
            return;
        }
        let count = std::mem::take(&mut self.spans) as u64;
        let mut request = TraceRequest::default();
        for group in self.groups.values() {
            request.add_resource(&group.resource, &self.scope, &group.spans);
        }
        self.groups.clear();
        client
            .export_counted(
                request.finish(),
                count,
                Outcome {
                    exported: &stats.spans_exported,
                    failed: &stats.spans_failed,
                    retries: &stats.export_retries,
                },
            )
            .await;
    }
}
