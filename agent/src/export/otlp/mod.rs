//! OTLP export: spans and metrics of every call to an OpenTelemetry collector, over gRPC or
//! HTTP/protobuf, with the official `opentelemetry-otlp` exporters.
//!
//! Every traced process is its own OpenTelemetry resource (`service.name`, `process.pid`, ...),
//! while the SDK ties one resource to an exporter. So spans are batched here, per resource, and
//! handed to one exporter whose resource is set before each group; metrics are aggregated by
//! one lightweight SDK meter provider per process and collected on one timer. One connection
//! to the collector serves everything.

mod metrics;
mod settings;
mod spans;

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use opentelemetry::KeyValue;
use opentelemetry_otlp::{
    ExporterBuildError, MetricExporter, SpanExporter, WithExportConfig, WithHttpConfig,
    WithTonicConfig,
};
use opentelemetry_sdk::Resource;
use tokio::{
    sync::{mpsc, oneshot},
    task::JoinHandle,
};

pub use settings::{OtlpProtocol, OtlpSettings};
pub use spans::span_data;

use self::{metrics::MetricsRegistry, spans::QueuedSpan};
use crate::{analysis::AnalyzedCall, enrich::ProcessIdentity, export::semconv::CallDescription};

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
    /// A header could not be used as gRPC metadata.
    #[error("OTLP header `{0}` is not valid gRPC metadata")]
    Header(String),
}

/// Counts kept by the exporter, for the agent's own logs.
#[derive(Debug, Default)]
pub struct ExportStats {
    /// Spans handed to the exporter.
    pub spans_exported: AtomicU64,
    /// Spans dropped because the queue was full.
    pub spans_dropped: AtomicU64,
    /// Spans in batches the collector did not accept.
    pub spans_failed: AtomicU64,
    /// Metric exports the collector did not accept.
    pub metric_exports_failed: AtomicU64,
}

/// Processes whose resource is kept built; beyond it the cache starts over.
const MAX_RESOURCES: usize = 16_384;

/// Identifies one process's resource: its pid and the identity record it was built from (a new
/// record after exec means a new resource).
type ResourceKey = (u32, usize);

/// The handle the pipeline records calls through, from the stream thread. Cheap: spans go
/// into a bounded queue (counted when full), metrics into in-memory aggregations.
pub struct OtlpRecorder {
    spans: mpsc::Sender<QueuedSpan>,
    metrics: Arc<MetricsRegistry>,
    stats: Arc<ExportStats>,
    resources: HashMap<ResourceKey, Resource>,
}

/// The export tasks, to be finished at shutdown once the recorder is dropped.
pub struct OtlpTasks {
    spans: JoinHandle<()>,
    metrics: JoinHandle<()>,
    stop_metrics: oneshot::Sender<()>,
    /// The exporter's counters.
    pub stats: Arc<ExportStats>,
}

/// Resource attributes of a process.
fn resource(process: &ProcessIdentity, host_name: &str) -> Resource {
    let mut attributes = vec![
        KeyValue::new("service.name", process.service_name.clone()),
        KeyValue::new("host.name", host_name.to_owned()),
        KeyValue::new("process.pid", i64::from(process.pid)),
        KeyValue::new("process.executable.name", process.executable_name.clone()),
        KeyValue::new("telemetry.distro.name", "apiscope"),
        KeyValue::new("telemetry.distro.version", env!("CARGO_PKG_VERSION")),
    ];
    if let Some(path) = &process.executable_path {
        attributes.push(KeyValue::new("process.executable.path", path.clone()));
    }
    Resource::builder_empty()
        .with_attributes(attributes)
        .build()
}

/// Builds the exporters and starts the export tasks on the current tokio runtime.
pub fn start(settings: &OtlpSettings) -> Result<(OtlpRecorder, OtlpTasks), OtlpError> {
    let (span_exporter, metric_exporter) = build_exporters(settings)?;
    let stats = Arc::new(ExportStats::default());
    let (span_tx, span_rx) = mpsc::channel(settings.max_queue_size);
    let registry = Arc::new(MetricsRegistry::default());
    let (stop_metrics, metrics_stopped) = oneshot::channel();
    let spans = tokio::spawn(spans::export_loop(
        span_exporter,
        span_rx,
        settings.clone(),
        Arc::clone(&stats),
    ));
    let metrics = tokio::spawn(metrics::export_loop(
        metric_exporter,
        Arc::clone(&registry),
        settings.metric_interval,
        metrics_stopped,
        Arc::clone(&stats),
    ));
    Ok((
        OtlpRecorder {
            spans: span_tx,
            metrics: registry,
            stats: Arc::clone(&stats),
            resources: HashMap::new(),
        },
        OtlpTasks {
            spans,
            metrics,
            stop_metrics,
            stats,
        },
    ))
}

fn build_exporters(settings: &OtlpSettings) -> Result<(SpanExporter, MetricExporter), OtlpError> {
    let failed = |signal| {
        let endpoint = settings.endpoint.clone();
        move |source| OtlpError::Build {
            signal,
            endpoint,
            source,
        }
    };
    match settings.protocol {
        OtlpProtocol::Grpc => {
            let metadata = settings::metadata(&settings.headers)?;
            let spans = grpc(SpanExporter::builder().with_tonic(), settings, &metadata)
                .build()
                .map_err(failed("traces"))?;
            let metrics = grpc(MetricExporter::builder().with_tonic(), settings, &metadata)
                .build()
                .map_err(failed("metrics"))?;
            Ok((spans, metrics))
        }
        OtlpProtocol::HttpProtobuf => {
            let spans = http(SpanExporter::builder().with_http(), settings, "traces")
                .build()
                .map_err(failed("traces"))?;
            let metrics = http(MetricExporter::builder().with_http(), settings, "metrics")
                .build()
                .map_err(failed("metrics"))?;
            Ok((spans, metrics))
        }
    }
}

/// Applies the settings to a gRPC exporter builder of either signal.
fn grpc<B: WithExportConfig + WithTonicConfig>(
    builder: B,
    settings: &OtlpSettings,
    metadata: &tonic::metadata::MetadataMap,
) -> B {
    let builder = builder
        .with_endpoint(settings.endpoint.clone())
        .with_timeout(settings.timeout)
        .with_metadata(metadata.clone());
    let builder = if settings.gzip {
        builder.with_compression(opentelemetry_otlp::Compression::Gzip)
    } else {
        builder
    };
    settings::with_grpc_tls(builder, &settings.endpoint)
}

/// Applies the settings to an HTTP exporter builder of `signal` (`traces`, `metrics`).
fn http<B: WithExportConfig + WithHttpConfig>(
    builder: B,
    settings: &OtlpSettings,
    signal: &str,
) -> B {
    let builder = builder
        .with_endpoint(settings.signal_url(signal))
        .with_timeout(settings.timeout)
        .with_headers(settings.headers.iter().cloned().collect());
    if settings.gzip {
        builder.with_compression(opentelemetry_otlp::Compression::Gzip)
    } else {
        builder
    }
}

impl OtlpRecorder {
    /// Records one call: its span (queued for the next batch) and its metrics.
    pub fn record(&mut self, analyzed: &AnalyzedCall, description: &CallDescription) {
        let enriched = &analyzed.call;
        let key = (
            enriched.process.pid,
            Arc::as_ptr(&enriched.process) as usize,
        );
        if self.resources.len() >= MAX_RESOURCES && !self.resources.contains_key(&key) {
            self.resources.clear();
        }
        let resource = self
            .resources
            .entry(key)
            .or_insert_with(|| resource(&enriched.process, &enriched.host_name))
            .clone();
        self.metrics.record(key, &resource, description);
        let span = QueuedSpan {
            key,
            resource,
            span: spans::span_data(&enriched.call, description),
        };
        if self.spans.try_send(span).is_err() {
            self.stats.spans_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl OtlpTasks {
    /// Exports the last batch of spans and a last collection of metrics. Call it after the
    /// [`OtlpRecorder`] is dropped, so the span queue is closed.
    pub async fn finish(self) {
        let _ = self.spans.await;
        let _ = self.stop_metrics.send(());
        let _ = self.metrics.await;
    }
}
