//! Metrics: the HTTP duration and body-size histograms, the RPC duration histograms and the
//! GenAI duration and token-usage histograms, aggregated by one SDK meter provider per process
//! (its resource) and collected for all of them on one timer.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, Weak, atomic::Ordering},
    time::Duration,
};

use log::warn;
use opentelemetry::{
    KeyValue,
    metrics::{Histogram, MeterProvider as _},
};
use opentelemetry_sdk::{
    Resource,
    error::OTelSdkResult,
    metrics::{
        InstrumentKind, ManualReader, Pipeline, SdkMeterProvider, Temporality,
        data::ResourceMetrics, exporter::PushMetricExporter, reader::MetricReader,
    },
};
use tokio::sync::oneshot;

use super::{ResourceKey, health::HealthMetrics};
use crate::export::health::ExportStats;
use crate::export::semconv::{CallDescription, CarrierMetric, GenAiMeasures, Kind};

/// Bucket boundaries of the duration histograms, in seconds, as the HTTP conventions advise.
const DURATION_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// Bucket boundaries of the body-size histograms, in bytes.
const SIZE_BUCKETS: [f64; 12] = [
    0.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0, 16777216.0,
    67108864.0,
];

/// Bucket boundaries of the GenAI operation duration, in seconds, as the GenAI conventions
/// advise (model calls take far longer than most HTTP calls).
const GENAI_DURATION_BUCKETS: [f64; 14] = [
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];
/// Bucket boundaries of the token usage histogram, as the GenAI conventions advise.
const TOKEN_BUCKETS: [f64; 14] = [
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0,
    16777216.0, 67108864.0,
];

/// Processes with metrics at once; beyond it new processes are not measured (and counted).
/// The GenAI conventions' buckets for the time to a streamed answer's first token or chunk, in
/// seconds.
const FIRST_TOKEN_BUCKETS: [f64; 16] = [
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];
/// The MCP conventions' buckets for operation durations, in seconds.
const MCP_DURATION_BUCKETS: [f64; 14] = [
    0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];
const MAX_PROCESSES: usize = 4_096;

/// A manual reader the provider and the collection loop share.
#[derive(Debug, Clone)]
pub(super) struct SharedReader(Arc<ManualReader>);

impl SharedReader {
    /// Shares `reader`.
    pub fn new(reader: ManualReader) -> Self {
        Self(Arc::new(reader))
    }
}

impl MetricReader for SharedReader {
    fn register_pipeline(&self, pipeline: Weak<Pipeline>) {
        self.0.register_pipeline(pipeline);
    }

    fn collect(&self, rm: &mut ResourceMetrics) -> OTelSdkResult {
        self.0.collect(rm)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }

    fn temporality(&self, kind: InstrumentKind) -> Temporality {
        self.0.temporality(kind)
    }
}

/// The instruments of one side of HTTP.
struct HttpInstruments {
    duration: Histogram<f64>,
    request_size: Histogram<u64>,
    response_size: Histogram<u64>,
}

impl HttpInstruments {
    fn new(provider: &SdkMeterProvider, side: &str) -> Self {
        let meter = provider.meter("apiscope");
        Self {
            duration: meter
                .f64_histogram(format!("http.{side}.request.duration"))
                .with_unit("s")
                .with_description(format!("Duration of HTTP {side} requests."))
                .with_boundaries(DURATION_BUCKETS.to_vec())
                .build(),
            request_size: meter
                .u64_histogram(format!("http.{side}.request.body.size"))
                .with_unit("By")
                .with_description(format!("Size of HTTP {side} request bodies."))
                .with_boundaries(SIZE_BUCKETS.to_vec())
                .build(),
            response_size: meter
                .u64_histogram(format!("http.{side}.response.body.size"))
                .with_unit("By")
                .with_description(format!("Size of HTTP {side} response bodies."))
                .with_boundaries(SIZE_BUCKETS.to_vec())
                .build(),
        }
    }
}

/// A duration histogram of one side of a protocol measured by its calls' duration only: RPC
/// (gRPC), with the current RPC conventions' `rpc.{side}.call.duration` in seconds (the older
/// `rpc.{side}.duration` in milliseconds is deprecated), and MCP's
/// `mcp.{side}.operation.duration`.
struct DurationInstrument {
    duration: Histogram<f64>,
}

impl DurationInstrument {
    fn new(
        provider: &SdkMeterProvider,
        name: String,
        description: String,
        buckets: &[f64],
    ) -> Self {
        Self {
            duration: provider
                .meter("apiscope")
                .f64_histogram(name)
                .with_unit("s")
                .with_description(description)
                .with_boundaries(buckets.to_vec())
                .build(),
        }
    }

    fn rpc(provider: &SdkMeterProvider, side: &str) -> Self {
        let description = format!("Duration of RPC {side} calls.");
        Self::new(
            provider,
            format!("rpc.{side}.call.duration"),
            description,
            &DURATION_BUCKETS,
        )
    }

    fn mcp(provider: &SdkMeterProvider, side: &str) -> Self {
        let description = format!("Duration of MCP requests and notifications on the {side}.");
        let name = format!("mcp.{side}.operation.duration");
        Self::new(provider, name, description, &MCP_DURATION_BUCKETS)
    }
}

/// The GenAI conventions' instruments: the client's operation duration, time to first chunk
/// and token usage (from the calling process's side), the server's request duration and time
/// to first token (a model served on this host).
struct GenAiInstruments {
    client_duration: Histogram<f64>,
    client_first_chunk: Histogram<f64>,
    token_usage: Histogram<u64>,
    server_duration: Histogram<f64>,
    server_first_token: Histogram<f64>,
}

impl GenAiInstruments {
    fn new(provider: &SdkMeterProvider) -> Self {
        let meter = provider.meter("apiscope");
        let seconds = |name: &'static str, description: &'static str, buckets: &[f64]| {
            meter
                .f64_histogram(name)
                .with_unit("s")
                .with_description(description)
                .with_boundaries(buckets.to_vec())
                .build()
        };
        let duration = |name, description| seconds(name, description, &GENAI_DURATION_BUCKETS);
        let first = |name, description| seconds(name, description, &FIRST_TOKEN_BUCKETS);
        Self {
            client_first_chunk: first(
                "gen_ai.client.operation.time_to_first_chunk",
                "Time to receive the first chunk of a streamed response.",
            ),
            server_first_token: first(
                "gen_ai.server.time_to_first_token",
                "Time to generate first token for successful responses.",
            ),
            client_duration: duration(
                "gen_ai.client.operation.duration",
                "GenAI operation duration.",
            ),
            server_duration: duration(
                "gen_ai.server.request.duration",
                "Generative AI server request duration.",
            ),
            token_usage: meter
                .u64_histogram("gen_ai.client.token.usage")
                .with_unit("{token}")
                .with_description("Number of input and output tokens used.")
                .with_boundaries(TOKEN_BUCKETS.to_vec())
                .build(),
        }
    }

    fn record(&self, kind: Kind, duration_seconds: f64, measures: &GenAiMeasures) {
        let attributes = &measures.attributes;
        if kind == Kind::Server {
            self.server_duration.record(duration_seconds, attributes);
            if let Some(first) = measures.time_to_first_chunk {
                self.server_first_token.record(first, attributes);
            }
            return;
        }
        self.client_duration.record(duration_seconds, attributes);
        if let Some(first) = measures.time_to_first_chunk {
            self.client_first_chunk.record(first, attributes);
        }
        for (token_type, count) in [
            ("input", measures.input_tokens),
            ("output", measures.output_tokens),
        ] {
            if let Some(count) = count {
                let mut typed = attributes.clone();
                typed.push(KeyValue::new("gen_ai.token.type", token_type));
                self.token_usage.record(count, &typed);
            }
        }
    }
}

/// One process's aggregations.
struct ProcessMetrics {
    provider: SdkMeterProvider,
    reader: SharedReader,
    server: HttpInstruments,
    client: HttpInstruments,
    rpc_server: DurationInstrument,
    rpc_client: DurationInstrument,
    mcp_server: DurationInstrument,
    mcp_client: DurationInstrument,
    genai: GenAiInstruments,
    recorded_since_collect: bool,
}

impl ProcessMetrics {
    fn new(resource: &Resource) -> Self {
        let reader = SharedReader::new(ManualReader::builder().build());
        let provider = SdkMeterProvider::builder()
            .with_resource(resource.clone())
            .with_reader(reader.clone())
            .build();
        Self {
            server: HttpInstruments::new(&provider, "server"),
            client: HttpInstruments::new(&provider, "client"),
            rpc_server: DurationInstrument::rpc(&provider, "server"),
            rpc_client: DurationInstrument::rpc(&provider, "client"),
            mcp_server: DurationInstrument::mcp(&provider, "server"),
            mcp_client: DurationInstrument::mcp(&provider, "client"),
            genai: GenAiInstruments::new(&provider),
            provider,
            reader,
            recorded_since_collect: false,
        }
    }
}

/// Every process's aggregations.
#[derive(Default)]
pub(super) struct MetricsRegistry {
    processes: Mutex<HashMap<ResourceKey, ProcessMetrics>>,
    refused: std::sync::atomic::AtomicU64,
}

impl MetricsRegistry {
    /// Records one call of the process `key`.
    pub fn record(&self, key: ResourceKey, resource: &Resource, description: &CallDescription) {
        let Ok(mut processes) = self.processes.lock() else {
            return;
        };
        if processes.len() >= MAX_PROCESSES && !processes.contains_key(&key) {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let metrics = processes
            .entry(key)
            .or_insert_with(|| ProcessMetrics::new(resource));
        let attributes = &description.metric_attributes;
        metrics.recorded_since_collect = true;
        if let Some(measures) = &description.genai {
            metrics
                .genai
                .record(description.kind, description.duration_seconds, measures);
        }
        if let Some(mcp) = &description.mcp {
            let instrument = match description.kind {
                Kind::Server => &metrics.mcp_server,
                Kind::Client => &metrics.mcp_client,
            };
            instrument
                .duration
                .record(description.duration_seconds, mcp);
        }
        let instruments = match (description.carrier, description.kind) {
            (CarrierMetric::None, _) => return,
            (CarrierMetric::Rpc, kind) => {
                let instrument = match kind {
                    Kind::Server => &metrics.rpc_server,
                    Kind::Client => &metrics.rpc_client,
                };
                instrument
                    .duration
                    .record(description.duration_seconds, attributes);
                return;
            }
            (CarrierMetric::Http, Kind::Server) => &metrics.server,
            (CarrierMetric::Http, Kind::Client) => &metrics.client,
        };
        instruments
            .duration
            .record(description.duration_seconds, attributes);
        if let Some(size) = description.request_body_size {
            instruments.request_size.record(size, attributes);
        }
        if let Some(size) = description.response_body_size {
            instruments.response_size.record(size, attributes);
        }
    }

    /// Collects every process's metrics. Processes with nothing recorded since the previous
    /// collection are collected one last time and forgotten, so exited processes do not stay.
    fn collect(&self) -> Vec<ResourceMetrics> {
        let Ok(mut processes) = self.processes.lock() else {
            return Vec::new();
        };
        let mut collected = Vec::with_capacity(processes.len());
        processes.retain(|_, metrics| {
            let mut rm = ResourceMetrics::default();
            if metrics.reader.collect(&mut rm).is_ok() {
                collected.push(rm);
            }
            let keep = metrics.recorded_since_collect;
            metrics.recorded_since_collect = false;
            if !keep {
                let _ = metrics.provider.shutdown();
            }
            keep
        });
        collected
    }
}

/// Collects and exports on every tick, and once more when told to stop.
pub(super) async fn export_loop(
    exporter: opentelemetry_otlp::MetricExporter,
    registry: Arc<MetricsRegistry>,
    health: HealthMetrics,
    interval: Duration,
    mut stop: oneshot::Receiver<()>,
    stats: Arc<ExportStats>,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        let stopping = tokio::select! {
            _ = tick.tick() => false,
            _ = &mut stop => true,
        };
        for metrics in registry.collect().into_iter().chain(health.collect()) {
            if let Err(error) = exporter.export(&metrics).await
                && stats.metric_exports_failed.fetch_add(1, Ordering::Relaxed) == 0
            {
                warn!("OTLP metric export failed (further failures are only counted): {error}");
            }
        }
        if stopping {
            health.shutdown();
            let _ = exporter.shutdown();
            return;
        }
    }
}
