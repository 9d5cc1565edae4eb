//! The stream stage: every stage after capture, on one thread (it may write to stdout, which
//! may block): streams -> protocols -> calls -> enrichment -> analysis -> export.

use std::{
    io::{self, Write},
    sync::Arc,
};

use agent_common::{ConnKey, PayloadPolicy};
use tokio::sync::{mpsc, oneshot};

use super::inventory_keeper::log_event;
use crate::{
    analysis::{
        AnalyzedCall, Analyzer, inventory::SharedInventory, routes::RouteSettings,
        security::SecurityAnalyzer,
    },
    calls::DescribeSettings,
    capture::CaptureEvent,
    clock::WallClock,
    enrich::Enricher,
    export::{dump::DumpWriter, health::AgentHealth, otlp::OtlpRecorder, stdout::CallPrinter},
    protocols::{DecoderSettings, ProtocolStage},
    streams::{CaptureRequest, StreamOutput, StreamSettings, StreamTable},
};

/// How often idle connections are looked for.
const RECLAIM_INTERVAL_NS: u64 = 10_000_000_000;

/// Where the stage sends calls.
pub(super) enum StageCalls {
    /// To the OTLP exporter.
    Otlp(OtlpRecorder),
    /// As lines on stdout.
    Lines,
    /// Nowhere: calls are not decoded (`--dump` alone).
    Off,
}

/// The stages after capture, with their settings and what they hand their results to.
pub(super) struct StreamStage {
    pub(super) streams: StreamSettings,
    pub(super) decode: DecoderSettings,
    pub(super) routes: RouteSettings,
    /// Every chunk is printed as a JSON line.
    pub(super) dump: bool,
    pub(super) calls: StageCalls,
    pub(super) inventory: Option<SharedInventory>,
    pub(super) security: Option<SecurityAnalyzer>,
    pub(super) describe: DescribeSettings,
    pub(super) enricher: Enricher,
}

/// Where decoded calls are written.
enum CallSink {
    Otlp(OtlpRecorder),
    Lines(CallPrinter<io::StdoutLock<'static>>),
}

impl CallSink {
    fn write(&mut self, analyzed: AnalyzedCall) -> io::Result<()> {
        match self {
            Self::Otlp(recorder) => {
                recorder.record(analyzed);
                Ok(())
            }
            Self::Lines(printer) => {
                analyzed.events.iter().for_each(log_event);
                printer.print(&analyzed)
            }
        }
    }

    /// Sends on what one batch of kernel records produced.
    fn flush(&mut self) {
        if let Self::Otlp(recorder) = self {
            recorder.flush();
        }
    }
}

/// Tells capture what to copy of the connections whose protocol was found (or found
/// missing): nothing for those no decoder wants (unless `--dump` shows every byte), whole calls
/// for framed protocols.
fn payload_policy_request(protocols: &mut ProtocolStage, dump: bool) -> Option<CaptureRequest> {
    let sockets: Vec<(ConnKey, u64, PayloadPolicy)> = protocols
        .take_payload_policies()
        .filter(|(connection, policy)| {
            connection.sock != 0 && !(dump && *policy == PayloadPolicy::Mute)
        })
        .map(|(connection, policy)| {
            let key = ConnKey {
                tgid: connection.pid,
                fd: connection.fd,
            };
            (key, connection.sock, policy)
        })
        .collect();
    (!sockets.is_empty()).then_some(CaptureRequest::SetPayloadPolicies(sockets))
}

impl StreamStage {
    /// Starts the stage's thread; it runs until the event channel closes, and its outcome
    /// arrives on the returned receiver.
    pub(super) fn spawn(
        self,
        events: mpsc::Receiver<Vec<CaptureEvent>>,
        requests: mpsc::Sender<CaptureRequest>,
        health: Arc<AgentHealth>,
    ) -> io::Result<(
        std::thread::JoinHandle<()>,
        oneshot::Receiver<io::Result<()>>,
    )> {
        let (done_tx, done) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("streams".into())
            .spawn(move || {
                let _ = done_tx.send(self.run(events, &requests, &health));
            })?;
        Ok((thread, done))
    }

    fn run(
        self,
        mut events: mpsc::Receiver<Vec<CaptureEvent>>,
        requests: &mpsc::Sender<CaptureRequest>,
        health: &AgentHealth,
    ) -> io::Result<()> {
        let clock = WallClock::measure();
        let mut table = StreamTable::new(self.streams);
        let mut dump = self
            .dump
            .then(|| DumpWriter::new(io::BufWriter::new(io::stdout().lock()), clock));
        let mut sink = match self.calls {
            StageCalls::Otlp(recorder) => Some(CallSink::Otlp(recorder)),
            StageCalls::Lines => Some(CallSink::Lines(CallPrinter::new(
                io::stdout().lock(),
                clock,
            ))),
            StageCalls::Off => None,
        };
        let mut protocols = ProtocolStage::new(self.decode);
        let mut analyzer = Analyzer::new(&self.routes, self.describe);
        if let Some(inventory) = self.inventory {
            analyzer = analyzer.with_inventory(inventory);
        }
        if let Some(security) = self.security {
            analyzer = analyzer.with_security(security);
        }
        let mut enricher = self.enricher;
        let mut out = StreamOutput::default();
        let mut calls = Vec::new();
        let mut last_reclaim_ns = WallClock::monotonic_now_ns();
        while let Some(batch) = events.blocking_recv() {
            for event in batch {
                table.apply(event, &mut out);
            }
            let now = WallClock::monotonic_now_ns();
            if now.saturating_sub(last_reclaim_ns) > RECLAIM_INTERVAL_NS {
                last_reclaim_ns = now;
                let idle = table.reclaim_idle(now, &mut out.ended);
                if !idle.is_empty() {
                    out.requests.push(CaptureRequest::ForgetConnections(idle));
                }
            }
            if let Some(dump) = dump.as_mut() {
                dump.write_batch(&out.chunks)?;
            }
            if let Some(sink) = sink.as_mut() {
                for chunk in &out.chunks {
                    protocols.on_chunk(chunk, &mut calls);
                }
                for (id, ts_ns) in &out.ended {
                    protocols.on_end(*id, *ts_ns, &mut calls);
                }
                if let Some(request) = payload_policy_request(&mut protocols, self.dump) {
                    out.requests.push(request);
                }
                for connection in &out.connected {
                    analyzer.connected(connection);
                }
                for call in calls.drain(..) {
                    sink.write(analyzer.analyze(enricher.enrich(call)))?;
                }
                sink.flush();
            }
            health.set_connections_evicted(table.evicted());
            for request in out.requests.drain(..) {
                // Full means the control loop is behind; a dropped scan is retried at the next
                // exec.
                let _ = requests.try_send(request);
            }
            out.clear();
        }
        io::stdout().flush()
    }
}
