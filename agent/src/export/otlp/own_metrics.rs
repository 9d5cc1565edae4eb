//! The agent's own metrics: every record, loss and drop it counts, exported beside the calls'
//! metrics under the agent's own resource (`service.name` = `apiscope`), so an operator can
//! alert on data the agent did not see or did not deliver.

use std::sync::{Arc, atomic::Ordering};

use agent_common::Counter;

use crate::export::health::{AgentHealth, ExportStats, Outcomes};
use opentelemetry::{KeyValue, metrics::MeterProvider as _};
use opentelemetry_sdk::{
    Resource,
    metrics::{ManualReader, SdkMeterProvider, data::ResourceMetrics, reader::MetricReader},
};

use super::metrics::SharedReader;

/// An outcome counter's name, description, and where its values come from.
type OutcomeCounter = (&'static str, &'static str, fn(&ExportStats) -> Outcomes);

/// Why a captured record or call was lost, as the `reason` attribute of
/// `apiscope.capture.lost`.
const LOSSES: [(Counter, &str); 6] = [
    (Counter::RingBufferFull, "ring_buffer_full"),
    (Counter::UserReadFailed, "user_read_failed"),
    (Counter::TlsCallWithoutFd, "tls_call_without_fd"),
    (Counter::TlsFdMismatch, "tls_fd_mismatch"),
    (Counter::TlsWriteAmbiguous, "tls_write_ambiguous"),
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
                observer.observe(observed.kernel_total(Counter::EventsSent), &[]);
            })
            .build();
        let observed = Arc::clone(health);
        meter
            .u64_observable_counter("apiscope.capture.lost")
            .with_description("Captured data lost before decoding, by reason.")
            .with_callback(move |observer| {
                for (counter, reason) in LOSSES {
                    observer.observe(
                        observed.kernel_total(counter),
                        &[KeyValue::new("reason", reason)],
                    );
                }
                observer.observe(
                    observed.records_malformed(),
                    &[KeyValue::new("reason", "record_malformed")],
                );
                observer.observe(
                    observed.connections_evicted(),
                    &[KeyValue::new("reason", "connection_evicted")],
                );
            })
            .build();
        let observed = Arc::clone(health);
        meter
            .u64_observable_gauge("apiscope.probe.groups")
            .with_description("Kernel probe groups by state: on, or off (the kernel refused them).")
            .with_callback(move |observer| {
                let groups = observed.probe_groups();
                observer.observe(groups.on, &[KeyValue::new("state", "on")]);
                observer.observe(groups.off.len() as u64, &[KeyValue::new("state", "off")]);
            })
            .build();
        let observed = Arc::clone(health);
        meter
            .u64_observable_counter("apiscope.capture.muted")
            .with_description("Socket and TLS calls not copied: no decoder wants their connection.")
            .with_callback(move |observer| {
                observer.observe(observed.kernel_total(Counter::PayloadMuted), &[]);
            })
            .build();
        let outcome_counters: [OutcomeCounter; 2] = [
            (
                "apiscope.export.spans",
                "Spans by outcome: exported, dropped (queue full), failed.",
                ExportStats::spans_by_outcome,
            ),
            (
                "apiscope.export.events",
                "Events (log records) by outcome: exported, dropped (queue full), failed.",
                ExportStats::events_by_outcome,
            ),
        ];
        for (name, description, outcomes) in outcome_counters {
            let observed = Arc::clone(export);
            meter
                .u64_observable_counter(name)
                .with_description(description)
                .with_callback(move |observer| {
                    for (outcome, count) in outcomes(&observed) {
                        observer.observe(count, &[KeyValue::new("outcome", outcome)]);
                    }
                })
                .build();
        }
        let observed = Arc::clone(export);
        meter
            .u64_observable_counter("apiscope.export.spans_not_sampled")
            .with_description(
                "Calls whose span the sampler left out; they count in the metrics, the inventory \
                 and findings all the same.",
            )
            .with_callback(move |observer| {
                observer.observe(observed.spans_not_sampled.load(Ordering::Relaxed), &[]);
            })
            .build();
        let observed = Arc::clone(export);
        meter
            .u64_observable_counter("apiscope.export.retries")
            .with_description("Span and event exports that failed and were tried again.")
            .with_callback(move |observer| {
                observer.observe(observed.export_retries.load(Ordering::Relaxed), &[]);
            })
            .build();
        let observed = Arc::clone(&health.findings);
        meter
            .u64_observable_counter("apiscope.security.findings")
            .with_description("Security findings, by rule and lane.")
            .with_callback(move |observer| {
                for (rule, lane, count) in observed.snapshot() {
                    observer.observe(
                        count,
                        &[
                            KeyValue::new("security_rule.name", rule),
                            KeyValue::new("apiscope.rule.lane", lane),
                        ],
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
