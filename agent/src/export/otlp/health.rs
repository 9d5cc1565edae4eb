//! The agent's own metrics: every record, loss and drop it counts, exported beside the calls'
//! metrics under the agent's own resource (`service.name` = `apiscope`), so an operator can
//! alert on data the agent did not see or did not deliver.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use agent_common::Counter;
use opentelemetry::{KeyValue, metrics::MeterProvider as _};
use opentelemetry_sdk::{
    Resource,
    metrics::{ManualReader, SdkMeterProvider, data::ResourceMetrics, reader::MetricReader},
};

use super::{ExportStats, metrics::SharedReader};

/// Counts the stages publish for export. Cumulative totals since the agent started.
#[derive(Debug)]
pub struct AgentHealth {
    kernel: [AtomicU64; Counter::COUNT as usize],
    records_malformed: AtomicU64,
    connections_evicted: AtomicU64,
}

impl Default for AgentHealth {
    fn default() -> Self {
        Self {
            kernel: std::array::from_fn(|_| AtomicU64::new(0)),
            records_malformed: AtomicU64::new(0),
            connections_evicted: AtomicU64::new(0),
        }
    }
}

impl AgentHealth {
    /// Publishes the kernel-side counters' current totals.
    pub fn set_kernel(&self, totals: &[(Counter, u64)]) {
        for (counter, value) in totals {
            if let Some(slot) = self.kernel.get(*counter as usize) {
                slot.store(*value, Ordering::Relaxed);
            }
        }
    }

    /// Publishes the number of ring-buffer records that could not be decoded.
    pub fn set_records_malformed(&self, value: u64) {
        self.records_malformed.store(value, Ordering::Relaxed);
    }

    /// Publishes the number of connections the stream table evicted because it was full.
    pub fn set_connections_evicted(&self, value: u64) {
        self.connections_evicted.store(value, Ordering::Relaxed);
    }

    fn kernel(&self, counter: Counter) -> u64 {
        self.kernel
            .get(counter as usize)
            .map_or(0, |slot| slot.load(Ordering::Relaxed))
    }
}

/// Why a captured record or call was lost, as the `reason` attribute of
/// `apiscope.capture.lost`.
const LOSSES: [(Counter, &str); 5] = [
    (Counter::RingBufferFull, "ring_buffer_full"),
    (Counter::UserReadFailed, "user_read_failed"),
    (Counter::TlsCallWithoutFd, "tls_call_without_fd"),
    (Counter::TlsFdMismatch, "tls_fd_mismatch"),
    (Counter::IovecTruncated, "iovec_truncated"),
];

/// The agent's own meter provider and its reader.
pub(super) struct HealthMetrics {
    provider: SdkMeterProvider,
    reader: SharedReader,
}

impl HealthMetrics {
    /// Registers the agent's counters, read from `health` and `export` at each collection.
    pub fn new(health: &Arc<AgentHealth>, export: &Arc<ExportStats>, host_name: &str) -> Self {
        let reader = SharedReader::new(ManualReader::builder().build());
        let provider = SdkMeterProvider::builder()
            .with_resource(
                Resource::builder_empty()
                    .with_attributes([
                        KeyValue::new("service.name", "apiscope"),
                        KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
                        KeyValue::new("host.name", host_name.to_owned()),
                        KeyValue::new("process.pid", i64::from(std::process::id())),
                    ])
                    .build(),
            )
            .with_reader(reader.clone())
            .build();
        let meter = provider.meter("apiscope");
        let observed = Arc::clone(health);
        meter
            .u64_observable_counter("apiscope.capture.records")
            .with_description("Records the kernel programs wrote to the ring buffer.")
            .with_callback(move |observer| {
                observer.observe(observed.kernel(Counter::EventsSent), &[]);
            })
            .build();
        let observed = Arc::clone(health);
        meter
            .u64_observable_counter("apiscope.capture.lost")
            .with_description("Captured data lost before decoding, by reason.")
            .with_callback(move |observer| {
                for (counter, reason) in LOSSES {
                    observer.observe(observed.kernel(counter), &[KeyValue::new("reason", reason)]);
                }
                observer.observe(
                    observed.records_malformed.load(Ordering::Relaxed),
                    &[KeyValue::new("reason", "record_malformed")],
                );
                observer.observe(
                    observed.connections_evicted.load(Ordering::Relaxed),
                    &[KeyValue::new("reason", "connection_evicted")],
                );
            })
            .build();
        let observed = Arc::clone(health);
        meter
            .u64_observable_counter("apiscope.capture.muted")
            .with_description("Socket and TLS calls not copied: no decoder wants their connection.")
            .with_callback(move |observer| {
                observer.observe(observed.kernel(Counter::PayloadMuted), &[]);
            })
            .build();
        let observed = Arc::clone(export);
        meter
            .u64_observable_counter("apiscope.export.spans")
            .with_description("Spans by outcome: exported, dropped (queue full), failed.")
            .with_callback(move |observer| {
                for (outcome, count) in [
                    ("exported", &observed.spans_exported),
                    ("dropped", &observed.spans_dropped),
                    ("failed", &observed.spans_failed),
                ] {
                    observer.observe(
                        count.load(Ordering::Relaxed),
                        &[KeyValue::new("outcome", outcome)],
                    );
                }
            })
            .build();
        Self { provider, reader }
    }

    /// Collects the current values.
    pub fn collect(&self) -> Option<ResourceMetrics> {
        let mut metrics = ResourceMetrics::default();
        self.reader.collect(&mut metrics).ok().map(|()| metrics)
    }

    /// Stops the provider.
    pub fn shutdown(&self) {
        let _ = self.provider.shutdown();
    }
}
