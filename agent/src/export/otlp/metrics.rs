//! Metrics: the histograms calls' descriptions record into (each protocol declares its own,
//! see `calls::Instrument`), aggregated by one SDK meter provider per process (its resource)
//! and collected for all of them on one timer.

use std::{
    sync::{Arc, Mutex, Weak, atomic::Ordering},
    time::Duration,
};

use foldhash::HashMap;

use log::warn;
use opentelemetry::metrics::{Histogram, MeterProvider as _};
use opentelemetry_sdk::{
    Resource,
    error::OTelSdkResult,
    metrics::{
        InstrumentKind, ManualReader, Pipeline, SdkMeterProvider, Temporality,
        data::ResourceMetrics, exporter::PushMetricExporter, reader::MetricReader,
    },
};
use tokio::sync::oneshot;

use super::{ResourceKey, own_metrics::HealthMetrics};
use crate::{
    calls::{CallDescription, Instrument},
    export::health::ExportStats,
};

/// Processes with metrics at once; beyond it new processes are not measured (and counted).
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

/// One process's aggregations: a histogram per instrument its calls recorded into, created
/// the first time one did.
struct ProcessMetrics {
    provider: SdkMeterProvider,
    reader: SharedReader,
    histograms: HashMap<&'static str, Histogram<f64>>,
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
            provider,
            reader,
            histograms: HashMap::default(),
            recorded_since_collect: false,
        }
    }

    /// The histogram of `instrument`, created on first use.
    fn histogram(&mut self, instrument: &'static Instrument) -> &Histogram<f64> {
        let provider = &self.provider;
        self.histograms.entry(instrument.name).or_insert_with(|| {
            provider
                .meter("apiscope")
                .f64_histogram(instrument.name)
                .with_unit(instrument.unit)
                .with_description(instrument.description)
                .with_boundaries(instrument.boundaries.to_vec())
                .build()
        })
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
        metrics.recorded_since_collect = true;
        for measure in &description.measures {
            metrics
                .histogram(measure.instrument)
                .record(measure.value, &measure.attributes);
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
