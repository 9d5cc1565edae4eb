//! Events as OTLP log records (`event_name` set, as OpenTelemetry events are), one resource
//! per service they are about, sent in batches like spans. Events of a call carry its span's
//! trace and span ids, so a backend links an `api.schema.violation` to the request that broke
//! the spec.

use std::{
    collections::BTreeMap,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use opentelemetry::KeyValue;
use opentelemetry_proto::tonic::{
    collector::logs::v1::ExportLogsServiceRequest,
    common::v1::{AnyValue, InstrumentationScope, any_value},
    logs::v1::{LogRecord, ResourceLogs, ScopeLogs},
    resource::v1::Resource,
};
use prost::Message as _;
use tokio::sync::mpsc;

use super::{
    spans::proto_attribute,
    transport::{Outcome, SignalClient},
};
use crate::{
    analysis::events::{ApiEvent, ServiceRef},
    export::health::ExportStats,
};

/// An event waiting for its batch.
pub(super) struct QueuedEvent {
    service: Arc<ServiceRef>,
    record: LogRecord,
}

/// Where events are queued for export: cloned by every stage that raises events. Bounded;
/// a full queue drops the event and counts it.
#[derive(Clone)]
pub struct EventQueue {
    sender: mpsc::Sender<QueuedEvent>,
    stats: Arc<ExportStats>,
}

/// The trace and span ids of the call an event is about.
#[derive(Debug, Clone, Copy)]
pub struct CallContext<'a> {
    /// Its trace id (16 bytes).
    pub trace_id: &'a [u8],
    /// Its span id (8 bytes).
    pub span_id: &'a [u8],
}

impl EventQueue {
    /// A queue of at most `capacity` events.
    pub(super) fn new(
        capacity: usize,
        stats: Arc<ExportStats>,
    ) -> (Self, mpsc::Receiver<QueuedEvent>) {
        let (sender, receiver) = mpsc::channel(capacity.max(1));
        (Self { sender, stats }, receiver)
    }

    /// Queues `event`, about the call of `context` when there is one.
    pub fn push(&self, event: &ApiEvent, context: Option<CallContext<'_>>) {
        let queued = QueuedEvent {
            service: Arc::clone(&event.service),
            record: record(event, context),
        };
        if self.sender.try_send(queued).is_err() {
            self.stats.events_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn record(event: &ApiEvent, context: Option<CallContext<'_>>) -> LogRecord {
    let time = event.time_ms.saturating_mul(1_000_000);
    LogRecord {
        time_unix_nano: time,
        observed_time_unix_nano: time,
        severity_number: event.severity.number(),
        severity_text: event.severity.text().into(),
        body: Some(AnyValue {
            value: Some(any_value::Value::StringValue(event.body.clone())),
        }),
        attributes: event
            .attributes
            .iter()
            .cloned()
            .map(proto_attribute)
            .collect(),
        trace_id: context.map(|c| c.trace_id.to_vec()).unwrap_or_default(),
        span_id: context.map(|c| c.span_id.to_vec()).unwrap_or_default(),
        event_name: event.name.into(),
        ..LogRecord::default()
    }
}

/// The resource of a service's events.
fn resource(service: &ServiceRef, host_name: &str) -> Resource {
    let mut attributes = vec![
        KeyValue::new("service.name", service.name.clone()),
        KeyValue::new("host.name", host_name.to_owned()),
        KeyValue::new("telemetry.distro.name", "apiscope"),
        KeyValue::new("telemetry.distro.version", env!("CARGO_PKG_VERSION")),
    ];
    if let Some(namespace) = &service.namespace {
        attributes.push(KeyValue::new("service.namespace", namespace.clone()));
    }
    Resource {
        attributes: attributes.into_iter().map(proto_attribute).collect(),
        ..Resource::default()
    }
}

/// What the export loop needs besides its queue.
pub(super) struct EventExport {
    /// The collector's logs service.
    pub client: SignalClient,
    /// `host.name` of every resource.
    pub host_name: String,
    /// Events per export at most.
    pub max_batch: usize,
    /// Time between exports.
    pub schedule_delay: Duration,
    /// The exporter's counters.
    pub stats: Arc<ExportStats>,
}

/// Collects events into batches and exports each, one resource per service, until the queue
/// closes; then exports what is left.
pub(super) async fn export_loop(mut export: EventExport, mut queue: mpsc::Receiver<QueuedEvent>) {
    let mut batch: BTreeMap<Arc<ServiceRef>, Vec<LogRecord>> = BTreeMap::new();
    let mut queued = 0;
    let mut tick = tokio::time::interval(export.schedule_delay);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            event = queue.recv() => match event {
                Some(event) => {
                    batch.entry(event.service).or_default().push(event.record);
                    queued += 1;
                    if queued >= export.max_batch {
                        send(&mut export, &mut batch).await;
                        queued = 0;
                    }
                }
                None => break,
            },
            _ = tick.tick() => {
                send(&mut export, &mut batch).await;
                queued = 0;
            }
        }
    }
    send(&mut export, &mut batch).await;
}

async fn send(export: &mut EventExport, batch: &mut BTreeMap<Arc<ServiceRef>, Vec<LogRecord>>) {
    if batch.is_empty() {
        return;
    }
    let scope = InstrumentationScope {
        name: "apiscope".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        ..InstrumentationScope::default()
    };
    let mut count = 0;
    let resource_logs = std::mem::take(batch)
        .into_iter()
        .map(|(service, log_records)| {
            count += log_records.len() as u64;
            ResourceLogs {
                resource: Some(resource(&service, &export.host_name)),
                scope_logs: vec![ScopeLogs {
                    scope: Some(scope.clone()),
                    log_records,
                    ..ScopeLogs::default()
                }],
                ..ResourceLogs::default()
            }
        })
        .collect();
    let request = ExportLogsServiceRequest { resource_logs }.encode_to_vec();
    let stats = &export.stats;
    export
        .client
        .export_counted(
            request,
            count,
            Outcome {
                exported: &stats.events_exported,
                failed: &stats.events_failed,
                retries: &stats.export_retries,
            },
        )
        .await;
}
