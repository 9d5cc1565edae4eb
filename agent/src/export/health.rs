//! The agent's account of itself: what it captured, lost and exported, whether its probes are
//! attached. The stages publish here; the OTLP exporter and the HTTP server read it.

use std::sync::{
    Arc,
    atomic::{AtomicBool, AtomicU64, Ordering},
};

use agent_common::Counter;

use crate::{
    analysis::security::{FindingCounts, rules::watch::RuleHandle},
    capture::{LoadReport, TlsCoverage},
};

/// Counts the stages publish for export. Cumulative totals since the agent started.
#[derive(Debug)]
pub struct AgentHealth {
    kernel: [AtomicU64; Counter::COUNT as usize],
    records_malformed: AtomicU64,
    connections_evicted: AtomicU64,
    exec_holds_expired: AtomicU64,
    event_batches_queued: AtomicU64,
    kernel_probes: AtomicU64,
    tls: std::sync::Mutex<TlsCoverage>,
    ready: AtomicBool,
    /// What the OTLP exporter did with the spans and metrics handed to it.
    pub export: Arc<ExportStats>,
    /// Security findings per rule, raised by the analysis stage.
    pub findings: Arc<FindingCounts>,
    /// The security rules in force, once loaded.
    pub rules: std::sync::OnceLock<Arc<RuleHandle>>,
    /// The probe groups that run and those that are off, once the kernel side is loaded.
    probe_groups: std::sync::OnceLock<ProbeGroups>,
}

/// The probe groups by state, as the endpoints and metrics show them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProbeGroups {
    /// How many groups run.
    pub on: u64,
    /// The names of the groups that are off.
    pub off: Vec<&'static str>,
}

impl Default for AgentHealth {
    fn default() -> Self {
        Self {
            kernel: std::array::from_fn(|_| AtomicU64::new(0)),
            records_malformed: AtomicU64::new(0),
            connections_evicted: AtomicU64::new(0),
            exec_holds_expired: AtomicU64::new(0),
            event_batches_queued: AtomicU64::new(0),
            kernel_probes: AtomicU64::new(0),
            tls: std::sync::Mutex::default(),
            ready: AtomicBool::new(false),
            export: Arc::default(),
            findings: Arc::default(),
            rules: std::sync::OnceLock::new(),
            probe_groups: std::sync::OnceLock::new(),
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

    /// Publishes the number of processes continued because their hold at exec passed its
    /// bound before their TLS uprobes were attached.
    pub fn set_exec_holds_expired(&self, value: u64) {
        self.exec_holds_expired.store(value, Ordering::Relaxed);
    }

    /// Processes whose hold at exec passed its bound, in total.
    pub fn exec_holds_expired(&self) -> u64 {
        self.exec_holds_expired.load(Ordering::Relaxed)
    }

    /// Publishes how many batches of kernel records wait for the stream stage.
    pub fn set_event_batches_queued(&self, value: u64) {
        self.event_batches_queued.store(value, Ordering::Relaxed);
    }

    /// Publishes the probes attached: kernel programs, and files with TLS uprobes (and those
    /// not probed) per stack.
    pub fn set_probes(&self, kernel: u64, tls: TlsCoverage) {
        self.kernel_probes.store(kernel, Ordering::Relaxed);
        *self
            .tls
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = tls;
    }

    /// Publishes which probe groups run, once, after the kernel side is loaded.
    pub fn set_probe_groups(&self, report: &LoadReport) {
        let (on, _) = report.group_counts();
        let off = report
            .groups_off()
            .map(|status| status.group.name())
            .collect();
        let _ = self.probe_groups.set(ProbeGroups { on: on as u64, off });
    }

    /// The probe groups by state; none before the kernel side is loaded.
    pub fn probe_groups(&self) -> ProbeGroups {
        self.probe_groups.get().cloned().unwrap_or_default()
    }

    /// Marks the agent ready (every kernel probe attached, stages running) or not.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// Whether the agent is ready.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// Records that could not be decoded, in total.
    pub fn records_malformed(&self) -> u64 {
        self.records_malformed.load(Ordering::Relaxed)
    }

    /// Connections evicted from the full stream table, in total.
    pub fn connections_evicted(&self) -> u64 {
        self.connections_evicted.load(Ordering::Relaxed)
    }

    /// Batches of kernel records waiting for the stream stage.
    pub fn event_batches_queued(&self) -> u64 {
        self.event_batches_queued.load(Ordering::Relaxed)
    }

    /// Kernel programs attached.
    pub fn kernel_probes(&self) -> u64 {
        self.kernel_probes.load(Ordering::Relaxed)
    }

    /// Files with TLS uprobes, and files not probed, per stack.
    pub fn tls_coverage(&self) -> TlsCoverage {
        *self
            .tls
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The current total of a kernel-side counter.
    pub fn kernel_total(&self, counter: Counter) -> u64 {
        self.kernel
            .get(counter as usize)
            .map_or(0, |slot| slot.load(Ordering::Relaxed))
    }
}

/// Counts kept by the exporter, for the agent's own logs.
#[derive(Debug, Default)]
pub struct ExportStats {
    /// Spans handed to the exporter.
    pub spans_exported: AtomicU64,
    /// Spans dropped because the queue was full (by count or by bytes).
    pub spans_dropped: AtomicU64,
    /// Spans in batches the collector did not accept.
    pub spans_failed: AtomicU64,
    /// Calls whose span the sampler left out (`export.otlp.sampling`).
    pub spans_not_sampled: AtomicU64,
    /// Metric exports the collector did not accept.
    pub metric_exports_failed: AtomicU64,
    /// Events (log records) handed to the exporter.
    pub events_exported: AtomicU64,
    /// Events dropped because the queue was full.
    pub events_dropped: AtomicU64,
    /// Events in batches the collector did not accept.
    pub events_failed: AtomicU64,
    /// Export attempts of spans or events that failed and were tried again.
    pub export_retries: AtomicU64,
}

/// Items of one signal by export outcome: exported, dropped (queue full), failed.
pub type Outcomes = [(&'static str, u64); 3];

impl ExportStats {
    /// Spans by outcome: exported, dropped (queue full), failed.
    pub fn spans_by_outcome(&self) -> Outcomes {
        outcomes(
            &self.spans_exported,
            &self.spans_dropped,
            &self.spans_failed,
        )
    }

    /// Events by outcome: exported, dropped (queue full), failed.
    pub fn events_by_outcome(&self) -> Outcomes {
        outcomes(
            &self.events_exported,
            &self.events_dropped,
            &self.events_failed,
        )
    }
}

fn outcomes(exported: &AtomicU64, dropped: &AtomicU64, failed: &AtomicU64) -> Outcomes {
    [
        ("exported", exported.load(Ordering::Relaxed)),
        ("dropped", dropped.load(Ordering::Relaxed)),
        ("failed", failed.load(Ordering::Relaxed)),
    ]
}
