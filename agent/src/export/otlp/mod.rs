//! OTLP export: spans and metrics of every call, and the events analysis raises (as log
//! records), to an OpenTelemetry collector, over gRPC or HTTP/protobuf.
//!
//! Every traced process is its own OpenTelemetry resource (`service.name`, `process.pid`, ...).
//! Spans are the volume: each is encoded into the protocol's bytes once, when its call is
//! recorded, queued under a byte bound, and sent in batches grouped by resource (see
//! [`spans`]). Metrics are aggregated by one lightweight SDK meter provider per process and
//! exported with the official `opentelemetry-otlp` exporter on one timer.

mod attributes;
mod batch;
mod logs;
mod metrics;
mod own_metrics;
mod sampling;
mod settings;
mod spans;
mod transport;

use std::sync::{Arc, atomic::Ordering};

use foldhash::HashMap;

use opentelemetry::KeyValue;
use opentelemetry_otlp::{
    ExporterBuildError, MetricExporter, WithExportConfig, WithHttpConfig, WithTonicConfig,
};
use opentelemetry_sdk::Resource;
use prost::Message as _;
use tokio::{
    sync::{oneshot, watch},
    task::JoinHandle,
};

pub use logs::{CallContext, EventQueue};
pub use settings::{
    HeadersFileError, OtlpCompression, OtlpHeaders, OtlpProtocol, OtlpSettings, RetrySettings,
};

use crate::export::health::{AgentHealth, ExportStats};
pub use sampling::{SamplerName, SamplingSettings};
pub use spans::{SpanIdentity, encode_span};

use self::{
    logs::EventExport,
    metrics::MetricsRegistry,
    sampling::{CallTraits, SpanSampler},
    spans::{QueuedSpan, SpanQueue},
    transport::{Signal, SignalClient},
};
use crate::{
    analysis::AnalyzedCall,
    enrich::{Workload, kubernetes::ContainerIdentity},
};

/// Why the exporters could not be built.
#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    /// The SDK refused the configuration.
    #[error("cannot build the OTLP {signal} exporter for {endpoint}: {source}")]
    Build {
        /// `traces` or `metrics`.
        signal: &'static str,
        /// The configured endpoint.
        endpoint: String,
        /// The SDK's reason.
        #[source]
        source: ExporterBuildError,
    },
    /// A header could not be used as gRPC metadata or an HTTP header.
    #[error("OTLP header `{0}` is not a valid header name or value")]
    Header(String),
    /// The trace client could not be built.
    #[error("cannot use the OTLP endpoint {endpoint}: {reason}")]
    Client {
        /// The configured endpoint.
        endpoint: String,
        /// Why.
        reason: String,
    },
}

/// Processes whose resource is kept built; beyond it the cache starts over.
const MAX_RESOURCES: usize = 16_384;

/// Identifies one process's resource: its pid and the identity record it was built from (a new
/// record after exec means a new resource).
type ResourceKey = (u32, usize);

/// The handle the pipeline records calls through, from the stream thread. Cheap: spans go
/// into a bounded queue (counted when full), metrics into in-memory aggregations.
pub struct OtlpRecorder {
    spans: SpanQueue,
    sampler: SpanSampler,
    events: EventQueue,
    metrics: Arc<MetricsRegistry>,
    stats: Arc<ExportStats>,
    resources: HashMap<ResourceKey, ProcessResource>,
}

/// A process's resource, as the metrics SDK wants it and encoded for spans.
struct ProcessResource {
    sdk: Resource,
    encoded: Arc<[u8]>,
}

/// The export tasks, to be finished at shutdown once the recorder is dropped.
pub struct OtlpTasks {
    spans: JoinHandle<()>,
    events: JoinHandle<()>,
    metrics: JoinHandle<()>,
    stop_metrics: oneshot::Sender<()>,
    /// Tells the span and event exporters to give up batches waiting for a retry.
    stopping: watch::Sender<bool>,
    /// The exporter's counters.
    pub stats: Arc<ExportStats>,
}

/// Resource attributes of a workload.
fn resource(workload: &Workload, host_name: &str) -> ProcessResource {
    let process = &workload.process;
    let mut attributes = vec![
        KeyValue::new("service.name", workload.service_name.clone()),
        KeyValue::new("host.name", host_name.to_owned()),
        KeyValue::new("process.pid", i64::from(process.pid)),
        KeyValue::new("process.executable.name", process.executable_name.clone()),
        KeyValue::new("telemetry.distro.name", "apiscope"),
        KeyValue::new("telemetry.distro.version", env!("CARGO_PKG_VERSION")),
    ];
    if let Some(path) = &process.executable_path {
        attributes.push(KeyValue::new("process.executable.path", path.clone()));
    }
    if let Some(command) = &process.command {
        attributes.push(KeyValue::new("process.command", command.clone()));
    }
    if let Some(uid) = process.user_id {
        attributes.push(KeyValue::new("process.user.id", i64::from(uid)));
    }
    if let Some(name) = &process.user_name {
        attributes.push(KeyValue::new("process.owner", name.clone()));
    }
    if let Some(id) = &process.container_id {
        attributes.push(KeyValue::new("container.id", id.clone()));
    }
    match &workload.kubernetes {
        Some(container) => kubernetes_attributes(container, &mut attributes),
        None => {
            if let Some(uid) = &process.pod_uid {
                attributes.push(KeyValue::new("k8s.pod.uid", uid.clone()));
            }
        }
    }
    let encoded = opentelemetry_proto::tonic::resource::v1::Resource {
        attributes: attributes
            .iter()
            .cloned()
            .map(spans::proto_attribute)
            .collect(),
        ..Default::default()
    }
    .encode_to_vec();
    ProcessResource {
        sdk: Resource::builder_empty()
            .with_attributes(attributes)
            .build(),
        encoded: encoded.into(),
    }
}

/// The pod's attributes, per the Kubernetes resource conventions.
fn kubernetes_attributes(container: &ContainerIdentity, attributes: &mut Vec<KeyValue>) {
    let pod = &container.pod;
    attributes.extend([
        KeyValue::new("service.namespace", pod.namespace.clone()),
        KeyValue::new("k8s.namespace.name", pod.namespace.clone()),
        KeyValue::new("k8s.pod.name", pod.name.clone()),
        KeyValue::new("k8s.pod.uid", pod.uid.clone()),
    ]);
    if let Some(node) = &pod.node_name {
        attributes.push(KeyValue::new("k8s.node.name", node.clone()));
    }
    if let Some(name) = &container.container_name {
        attributes.push(KeyValue::new("container.name", name.clone()));
    }
    if let Some((kind, name)) = &pod.workload {
        attributes.push(KeyValue::new(kind.attribute(), name.clone()));
    }
    for (key, value) in &pod.labels {
        attributes.push(KeyValue::new(format!("k8s.pod.label.{key}"), value.clone()));
    }
}

/// Builds the exporters and starts the export tasks on the current tokio runtime; `health` is
/// exported as the agent's own metrics.
pub fn start(
    settings: &OtlpSettings,
    health: &Arc<AgentHealth>,
    host_name: &str,
) -> Result<(OtlpRecorder, OtlpTasks), OtlpError> {
    let (stopping, stopping_rx) = watch::channel(false);
    let trace_client = SignalClient::new(settings, Signal::Traces, stopping_rx.clone())?;
    let log_client = SignalClient::new(settings, Signal::Logs, stopping_rx)?;
    let metric_exporter = build_metric_exporter(settings)?;
    let stats = Arc::clone(&health.export);
    let (span_queue, span_rx, span_level) =
        SpanQueue::new(settings.max_queue_size, settings.max_queue_bytes);
    let (event_queue, event_rx) = EventQueue::new(settings.max_queue_size, Arc::clone(&stats));
    let events = tokio::spawn(logs::export_loop(
        EventExport {
            client: log_client,
            host_name: host_name.to_owned(),
            max_batch: settings.max_export_batch_size,
            schedule_delay: settings.schedule_delay,
            stats: Arc::clone(&stats),
        },
        event_rx,
    ));
    let registry = Arc::new(MetricsRegistry::default());
    let health = own_metrics::HealthMetrics::new(health, &stats, host_name);
    let (stop_metrics, metrics_stopped) = oneshot::channel();
    let spans = tokio::spawn(spans::export_loop(
        trace_client,
        span_rx,
        span_level,
        settings.max_export_batch_size,
        settings.schedule_delay,
        Arc::clone(&stats),
    ));
    let metrics = tokio::spawn(metrics::export_loop(
        metric_exporter,
        Arc::clone(&registry),
        health,
        settings.metric_interval,
        metrics_stopped,
        Arc::clone(&stats),
    ));
    Ok((
        OtlpRecorder {
            spans: span_queue,
            sampler: SpanSampler::new(&settings.sampling),
            events: event_queue,
            metrics: registry,
            stats: Arc::clone(&stats),
            resources: HashMap::default(),
        },
        OtlpTasks {
            spans,
            events,
            metrics,
            stop_metrics,
            stopping,
            stats,
        },
    ))
}

fn build_metric_exporter(settings: &OtlpSettings) -> Result<MetricExporter, OtlpError> {
    let failed = |source| OtlpError::Build {
        signal: "metrics",
        endpoint: settings.endpoint().unwrap_or_default().to_owned(),
        source,
    };
    let compression = settings
        .gzip()
        .then_some(opentelemetry_otlp::Compression::Gzip);
    match settings.protocol {
        OtlpProtocol::Grpc => {
            let builder = MetricExporter::builder()
                .with_tonic()
                .with_endpoint(settings.endpoint().unwrap_or_default())
                .with_timeout(settings.timeout)
                .with_metadata(settings::metadata(&settings.headers)?);
            let builder = match compression {
                Some(compression) => builder.with_compression(compression),
                None => builder,
            };
            settings::with_grpc_tls(builder, settings.endpoint().unwrap_or_default())
                .build()
                .map_err(failed)
        }
        OtlpProtocol::HttpProtobuf => {
            let builder = MetricExporter::builder()
                .with_http()
                .with_endpoint(settings.signal_url("metrics"))
                .with_timeout(settings.timeout)
                .with_headers(settings.headers.0.clone().into_iter().collect());
            let builder = match compression {
                Some(compression) => builder.with_compression(compression),
                None => builder,
            };
            builder.build().map_err(failed)
        }
    }
}

impl OtlpRecorder {
    /// The queue events go to, for the stages that raise events outside calls.
    pub fn events(&self) -> EventQueue {
        self.events.clone()
    }

    /// Records one call: its span (queued for the next batch), its metrics and its events.
    pub fn record(&mut self, analyzed: AnalyzedCall) {
        let AnalyzedCall {
            call: enriched,
            description,
            events,
            ..
        } = analyzed;
        let key = (
            enriched.workload.process.pid,
            Arc::as_ptr(&enriched.workload) as usize,
        );
        if self.resources.len() >= MAX_RESOURCES && !self.resources.contains_key(&key) {
            self.resources.clear();
        }
        let resource = self
            .resources
            .entry(key)
            .or_insert_with(|| resource(&enriched.workload, &enriched.host_name));
        self.metrics.record(key, &resource.sdk, &description);
        let identity = SpanIdentity::of(&description);
        let context = CallContext {
            trace_id: &identity.trace_id.to_bytes(),
            span_id: &identity.span_id.to_bytes(),
        };
        for event in &events {
            self.events.push(event, Some(context));
        }
        let traits = CallTraits {
            parent: &identity.parent,
            trace_id: identity.trace_id,
            failed: description.error.is_some(),
            with_events: !events.is_empty(),
            duration: std::time::Duration::from_nanos(
                enriched.call.end_ns.saturating_sub(enriched.call.start_ns),
            ),
        };
        if !self.sampler.keeps(&traits) {
            self.stats.spans_not_sampled.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let span = QueuedSpan {
            key,
            resource: Arc::clone(&resource.encoded),
            span: spans::encode_span(&enriched.call, description, &events, &identity),
        };
        if !self.spans.push(span) {
            self.stats.spans_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Hands the spans recorded since the last call to the export task. The stream stage calls
    /// it once per batch of kernel records.
    pub fn flush(&mut self) {
        let dropped = self.spans.hand_over();
        if dropped > 0 {
            self.stats
                .spans_dropped
                .fetch_add(dropped as u64, Ordering::Relaxed);
        }
    }
}

impl OtlpTasks {
    /// Exports the last batches of spans and events and a last collection of metrics. Call it
    /// after the [`OtlpRecorder`] and every [`EventQueue`] are dropped, so the queues are
    /// closed. A batch waiting for a retry gets one last attempt.
    pub async fn finish(self) {
        let _ = self.stopping.send(true);
        let _ = self.spans.await;
        let _ = self.events.await;
        let _ = self.stop_metrics.send(());
        let _ = self.metrics.await;
    }
}
