//! The running agent, wired in one place: capture -> streams -> export.
//!
//! - the ring-buffer reader (a tokio task) decodes records and sends them in batches over a
//!   bounded channel, so a slow consumer makes the kernel count drops instead of the agent
//!   growing;
//! - the stream stage (its own thread: it writes to stdout, which may block) assembles streams
//!   and hands chunks to the exporter;
//! - the control loop (this task) owns the kernel object: it attaches OpenSSL probes to new
//!   processes, forgets kernel state of dead ones, logs loss counters, and stops on a signal.

use std::{
    io::{self, Write},
    net::SocketAddr,
    path::PathBuf,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use agent_common::{ConnKey, PayloadPolicy, Verdict};
use log::{debug, info, warn};
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::{mpsc, oneshot},
};

use crate::{
    analysis::{
        AnalyzedCall, Analyzer,
        events::{ApiEvent, unix_ms_now},
        inventory::{
            Inventory, InventorySettings, SharedInventory,
            store::{InventoryStore, StoreError},
        },
        routes::RouteSettings,
        security::{
            SecurityAnalyzer,
            principal::PrincipalKeyer,
            rules::{
                ActiveRules,
                watch::{self, RuleHandle},
            },
        },
        sensitive::SensitiveScanner,
    },
    calls::{DescribeSettings, Redact},
    capture::{
        Capture, CaptureError, CaptureEvent, CaptureSettings, ReaderStats, forward_kernel_log,
        read_events,
    },
    clock::WallClock,
    enrich::{
        self, Enricher, ProcessRegistry,
        kubernetes::{self, PodIndex},
        start_identity_reader,
    },
    export::{
        dump::DumpWriter,
        health::AgentHealth,
        otlp::{self, EventQueue, OtlpError, OtlpRecorder, OtlpSettings},
        server,
        stdout::CallPrinter,
    },
    protocols::{DecoderSettings, ProtocolStage},
    selection::{Selection, Selector, StdioSelection, initial_verdicts},
    streams::{CaptureRequest, StreamOutput, StreamSettings, StreamTable},
};

/// Batches of capture events waiting for the stream stage (each at most 4,096 records and
/// 512 KiB): the ring buffer, not this queue, absorbs bursts.
const EVENT_QUEUE: usize = 8;
/// Requests waiting for the control loop; more are dropped (a missed rescan is retried at the
/// next exec).
const REQUEST_QUEUE: usize = 1024;
/// A process may load OpenSSL after exec (Python imports `ssl` later): scan it again then.
const RESCAN_AFTER_EXEC: Duration = Duration::from_secs(1);
/// How often the TLS uprobes are detached from OpenSSL copies no process maps any more.
const TLS_RETIRE_INTERVAL: Duration = Duration::from_secs(30);
/// How long start-up waits for the Kubernetes pod list.
const POD_LIST_TIMEOUT: Duration = Duration::from_secs(10);
/// How often loss counters are logged.
const STATS_INTERVAL: Duration = Duration::from_secs(60);
/// How often loss counters are handed to the agent's own metrics.
const HEALTH_INTERVAL: Duration = Duration::from_secs(1);
/// How often idle connections are looked for.
const RECLAIM_INTERVAL_NS: u64 = 10_000_000_000;
/// How often the inventory looks for orphaned operations.
const INVENTORY_TICK: Duration = Duration::from_secs(1);

/// Where calls go.
#[derive(Debug, Clone)]
pub enum CallOutput {
    /// Spans and metrics to an OpenTelemetry collector.
    Otlp(OtlpSettings),
    /// One readable line per call on stdout.
    Lines,
    /// Calls are not decoded (`--dump` alone: stdout carries chunks).
    None,
}

/// What `apiscope run` was asked to do.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Capture settings.
    pub capture: CaptureSettings,
    /// Stream settings.
    pub streams: StreamSettings,
    /// Decoder settings.
    pub decoders: DecoderSettings,
    /// Route templating.
    pub routes: RouteSettings,
    /// Print every chunk as a JSON line on stdout.
    pub dump: bool,
    /// Address of the health and metrics endpoints, if served.
    pub listen: Option<SocketAddr>,
    /// Which workloads are captured.
    pub selection: Selection,
    /// Which processes have their standard input and output captured.
    pub stdio: StdioSelection,
    /// This Kubernetes node's name, when calls are named after its pods.
    pub kubernetes_node: Option<String>,
    /// The API inventory.
    pub inventory: InventoryOptions,
    /// The security rules, unless checking is off.
    pub security: Option<SecurityOptions>,
    /// Where calls go.
    pub calls: CallOutput,
    /// What calls' descriptions export beyond the conventions' defaults (header allowlist).
    pub describe: DescribeSettings,
    /// Export the prompts and answers of model calls, redacted.
    pub export_genai_content: bool,
}

/// How the API inventory is kept.
#[derive(Debug, Clone)]
pub struct InventoryOptions {
    /// Directory of its database.
    pub directory: PathBuf,
    /// Time between saves of what changed.
    pub persist_interval: Duration,
    /// Time between full snapshots.
    pub snapshot_interval: Duration,
    /// What it keeps, and the declared specs.
    pub settings: InventorySettings,
}

/// How calls are checked against the security rules.
#[derive(Debug, Clone)]
pub struct SecurityOptions {
    /// The rules loaded at start.
    pub rules: ActiveRules,
    /// The user's packs, watched for changes.
    pub packs: Vec<PathBuf>,
}

/// Why the agent stopped other than by a signal.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Capture could not start.
    #[error(transparent)]
    Capture(#[from] CaptureError),
    /// Signal handlers or the ring-buffer reader failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The stream stage stopped (e.g. stdout was closed under `--dump`).
    #[error("stream stage stopped: {0}")]
    Streams(String),
    /// The health and metrics endpoints could not listen.
    #[error("cannot serve the health and metrics endpoints on {address}: {source}")]
    Listen {
        /// The address.
        address: SocketAddr,
        /// Why.
        source: io::Error,
    },
    /// The Kubernetes API server cannot be reached.
    #[error("kubernetes: {0}")]
    Kubernetes(String),
    /// The OTLP exporter could not be built.
    #[error(transparent)]
    Otlp(#[from] OtlpError),
    /// The inventory database cannot be used.
    #[error(transparent)]
    Inventory(#[from] StoreError),
}

/// Runs until SIGINT or SIGTERM; returns after every probe is detached.
pub async fn run(options: RunOptions) -> Result<(), RunError> {
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    // SIGHUP reloads the rule packs (and must not end the agent, its default).
    let mut sighup = signal(SignalKind::hangup())?;
    let health = Arc::new(AgentHealth::default());
    // One scanner for the inventory's sensitive-data findings and the redaction of exported
    // model content: its patterns are compiled once.
    let scanner = Arc::new(SensitiveScanner::new());
    // Opened first: a database the agent cannot use must stop it before anything attaches.
    let inventory = match options.calls {
        CallOutput::None => None,
        _ => Some(open_inventory(&options.inventory, Arc::clone(&scanner))?),
    };
    let describe = DescribeSettings {
        content: options
            .export_genai_content
            .then(|| scanner as Arc<dyn Redact>),
        ..options.describe.clone()
    };
    // Served from the start, so that liveness holds and readiness says "not yet" while the
    // programs load.
    let (server, own_port) = match options.listen {
        Some(address) => {
            let shared = inventory.as_ref().map(|(shared, _)| Arc::clone(shared));
            let (bound, task) = server::start(address, Arc::clone(&health), shared)
                .await
                .map_err(|source| RunError::Listen { address, source })?;
            info!("serving /healthz, /readyz and /metrics on http://{bound}");
            (Some(task), Some(bound.port()))
        }
        None => (None, None),
    };
    // Capture first: the exporters' connections must be opened once the probes that record
    // the agent's own connections are attached, or the collector's end of them, when it runs
    // on this host, would be traced like any other.
    let (pods, pod_watch) = match &options.kubernetes_node {
        Some(node) => {
            let client = kubernetes::connect().await.map_err(RunError::Kubernetes)?;
            let index = Arc::new(PodIndex::default());
            let (listed_tx, listed) = oneshot::channel();
            let watch = tokio::spawn(kubernetes::watch_node(
                client,
                node.clone(),
                Arc::clone(&index),
                listed_tx,
            ));
            // The first calls and the selection rules need the pods: wait for the list, but
            // not forever (an unreachable API server must not keep the node unobserved).
            if tokio::time::timeout(POD_LIST_TIMEOUT, listed)
                .await
                .is_err()
            {
                warn!(
                    "kubernetes: no pod list after {POD_LIST_TIMEOUT:?}; starting without, the watch goes on"
                );
            }
            (Some(index), Some(watch))
        }
        None => (None, None),
    };
    match enrich::cgroup::join_host_namespace() {
        Ok(true) => info!("joined the host's cgroup namespace, to read host processes' cgroups"),
        Ok(false) => {}
        Err(error) => {
            warn!("cannot join the host's cgroup namespace ({error}): container ids may be missing")
        }
    }
    let processes = Arc::new(ProcessRegistry::default());
    let mut capture_settings = options.capture.clone();
    capture_settings.selection = options.selection.kernel(initial_verdicts(
        &options.selection,
        &processes,
        pods.as_deref(),
    ));
    // Calls to the agent's own endpoints (probes, scrapes, `apiscope inventory`) are not the
    // host's API traffic.
    if let Some(port) = own_port {
        capture_settings.selection.ports.push((port, Verdict::Skip));
    }
    let (mut capture, outputs) = Capture::start(capture_settings)?;
    health.set_probe_groups(capture.report());
    let process_verdicts = outputs.process_verdicts;
    let stdio_processes = outputs.stdio_processes;
    let (otlp, otlp_tasks) = match &options.calls {
        CallOutput::Otlp(settings) => {
            let (recorder, tasks) = otlp::start(settings, &health, &enrich::host_name())?;
            (Some(recorder), Some(tasks))
        }
        _ => (None, None),
    };
    let events = otlp.as_ref().map(OtlpRecorder::events);
    let (shared_inventory, inventory_keeper) = match inventory {
        Some((shared, store)) => {
            let keeper =
                InventoryKeeper::start(Arc::clone(&shared), store, events, &options.inventory)?;
            (Some(shared), Some(keeper))
        }
        None => (None, None),
    };

    let rules_reload = Arc::new(AtomicBool::new(false));
    let rules_stop = Arc::new(AtomicBool::new(false));
    let (security, rule_watcher) = match &options.security {
        Some(security) if !matches!(options.calls, CallOutput::None) => {
            let handle = RuleHandle::new(security.rules.clone());
            let _ = health.rules.set(Arc::clone(&handle));
            let watcher = watch::spawn(
                security.packs.clone(),
                Arc::clone(&handle),
                Arc::clone(&rules_reload),
                Arc::clone(&rules_stop),
            )?;
            // Kept beside the inventory, so a principal keeps its hash across restarts.
            let keyer = PrincipalKeyer::in_directory(&options.inventory.directory);
            let analyzer = SecurityAnalyzer::new(handle, keyer, Arc::clone(&health.findings));
            (Some(analyzer), Some(watcher))
        }
        _ => (None, None),
    };

    let stats = Arc::new(ReaderStats::default());
    let (event_tx, event_rx) = mpsc::channel(EVENT_QUEUE);
    let queue_gauge = event_tx.clone();
    let (request_tx, mut request_rx) = mpsc::channel(REQUEST_QUEUE);
    let mut identified = Vec::new();
    if let Some(verdicts) = process_verdicts {
        let (selected_tx, selected_rx) = std::sync::mpsc::channel();
        identified.push(selected_tx);
        let selector = Selector::new(
            options.selection.clone(),
            Arc::clone(&processes),
            pods.clone(),
            verdicts,
        );
        std::thread::Builder::new()
            .name("selection".into())
            .spawn(move || selector.run(selected_rx))?;
    }
    if !options.stdio.is_empty() {
        let (stdio_tx, stdio_rx) = std::sync::mpsc::channel();
        identified.push(stdio_tx);
        let stdio = options.stdio.clone();
        std::thread::Builder::new()
            .name("stdio-selection".into())
            .spawn(move || stdio.run(stdio_processes, stdio_rx))?;
    }
    let exec_notices = start_identity_reader(&processes, identified)?;
    let mut reader = tokio::spawn(read_events(
        outputs.ring,
        event_tx,
        Arc::clone(&stats),
        move |pid, path| exec_notices.exec(pid, path),
    ));
    let kernel_log = outputs
        .kernel_log
        .map(|logger| tokio::spawn(forward_kernel_log(logger)));

    let (streams_done_tx, mut streams_done) = oneshot::channel();
    let stream_requests = request_tx.clone();
    let stream_health = Arc::clone(&health);
    let streams = std::thread::Builder::new()
        .name("streams".into())
        .spawn(move || {
            let enricher = Enricher::new(processes, pods);
            let result = stream_stage(
                event_rx,
                stream_requests,
                &options,
                StageOutputs {
                    otlp,
                    inventory: shared_inventory,
                    security,
                    describe,
                },
                enricher,
                &stream_health,
            );
            let _ = streams_done_tx.send(result);
        })?;

    health.set_ready(true);
    let off = health.probe_groups().off;
    let off = if off.is_empty() {
        String::new()
    } else {
        format!("; probe groups off: {}", off.join(", "))
    };
    info!(
        "ready: capturing socket and TLS traffic (pid {}){off}",
        std::process::id()
    );
    let mut stats_tick = tokio::time::interval(STATS_INTERVAL);
    stats_tick.tick().await;
    let mut health_tick = tokio::time::interval(HEALTH_INTERVAL);
    let mut tls_retire_tick = tokio::time::interval(TLS_RETIRE_INTERVAL);
    tls_retire_tick.tick().await;
    let outcome = loop {
        tokio::select! {
            _ = sigterm.recv() => break Ok(()),
            _ = sigint.recv() => break Ok(()),
            _ = sighup.recv() => {
                info!("SIGHUP: reloading the rule packs");
                rules_reload.store(true, Ordering::Relaxed);
            }
            Some(request) = request_rx.recv() => match request {
                CaptureRequest::ScanProcess(pid) => {
                    capture.scan_process(pid);
                    let again = request_tx.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(RESCAN_AFTER_EXEC).await;
                        let _ = again.try_send(CaptureRequest::RescanProcess(pid));
                    });
                }
                CaptureRequest::RescanProcess(pid) => capture.scan_process(pid),
                CaptureRequest::ForgetConnections(keys) => capture.forget_connections(keys),
                CaptureRequest::SetPayloadPolicies(sockets) => {
                    capture.set_payload_policies(sockets.iter().copied());
                    // Logged once in the kernel's map, where the programs read them.
                    debug!("payload policies of {} connections: {:?}", sockets.len(), sockets);
                }
            },
            _ = stats_tick.tick() => log_stats(&capture, &stats),
            _ = tls_retire_tick.tick() => capture.retire_unmapped_tls(),
            _ = health_tick.tick() => {
                publish_health(&capture, &stats, &health);
                let queued = queue_gauge.max_capacity() - queue_gauge.capacity();
                health.set_event_batches_queued(queued as u64);
            }
            result = &mut reader => break match result {
                Ok(Ok(())) => Err(RunError::Streams("ring-buffer reader ended".into())),
                Ok(Err(error)) => Err(RunError::Io(error)),
                Err(error) => Err(RunError::Streams(format!("ring-buffer reader failed: {error}"))),
            },
            result = &mut streams_done => break Err(RunError::Streams(match result {
                Ok(Err(error)) => error.to_string(),
                _ => "ended".into(),
            })),
        }
    };
    health.set_ready(false);
    log_stats(&capture, &stats);
    publish_health(&capture, &stats, &health);
    // Detach first so nothing new is captured while the stages drain.
    drop(capture);
    drop(queue_gauge);
    reader.abort();
    if let Some(task) = kernel_log {
        task.abort();
    }
    let _ = reader.await;
    if streams.join().is_err() {
        warn!("stream stage panicked");
    }
    if let Some(keeper) = inventory_keeper {
        keeper.stop();
    }
    rules_stop.store(true, Ordering::Relaxed);
    if rule_watcher.is_some_and(|watcher| watcher.join().is_err()) {
        warn!("rule watcher panicked");
    }
    if let Some(tasks) = otlp_tasks {
        let stats = Arc::clone(&tasks.stats);
        tasks.finish().await;
        info!(
            "OTLP totals: spans_exported={}, spans_dropped={}, spans_failed={}, metric_exports_failed={}",
            stats.spans_exported.load(Ordering::Relaxed),
            stats.spans_dropped.load(Ordering::Relaxed),
            stats.spans_failed.load(Ordering::Relaxed),
            stats.metric_exports_failed.load(Ordering::Relaxed),
        );
    }
    for task in [server, pod_watch].into_iter().flatten() {
        task.abort();
    }
    info!("stopped: every probe detached");
    outcome
}

/// Opens the inventory's database and restores what it holds.
fn open_inventory(
    options: &InventoryOptions,
    scanner: Arc<SensitiveScanner>,
) -> Result<(SharedInventory, InventoryStore), StoreError> {
    let store = InventoryStore::open(&options.directory)?;
    let saved = store.load()?;
    info!(
        "inventory: {} endpoints restored from {}",
        saved.len(),
        store.path().display()
    );
    let mut inventory = Inventory::new(options.settings.clone(), scanner, unix_ms_now());
    inventory.restore(saved);
    Ok((Arc::new(Mutex::new(inventory)), store))
}

/// Where events go: the collector, or the log when there is none.
fn emit(events: Option<&EventQueue>, raised: &[ApiEvent]) {
    for event in raised {
        match events {
            Some(queue) => queue.push(event, None),
            None => log_event(event),
        }
    }
}

fn log_event(event: &ApiEvent) {
    // A snapshot's body is the whole inventory, served at /inventory: the log names it only.
    if event.name == crate::analysis::events::INVENTORY_SNAPSHOT {
        debug!("{}: {}", event.name, event.service.name);
    } else {
        info!("{}: {}", event.name, event.body);
    }
}

/// The thread that keeps the inventory: it saves what changed, reports orphaned operations
/// and sends periodic snapshots, and saves once more when stopped.
struct InventoryKeeper {
    stop: std::sync::mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl InventoryKeeper {
    fn start(
        inventory: SharedInventory,
        mut store: InventoryStore,
        events: Option<EventQueue>,
        options: &InventoryOptions,
    ) -> io::Result<Self> {
        let (stop, stopped) = std::sync::mpsc::channel();
        let (persist_every, snapshot_every) = (options.persist_interval, options.snapshot_interval);
        let thread = std::thread::Builder::new()
            .name("inventory".into())
            .spawn(move || {
                let (mut saved_at, mut snapshot_at) = (Instant::now(), Instant::now());
                loop {
                    let stopping = !matches!(
                        stopped.recv_timeout(INVENTORY_TICK),
                        Err(std::sync::mpsc::RecvTimeoutError::Timeout)
                    );
                    let now_ms = unix_ms_now();
                    let save = stopping || saved_at.elapsed() >= persist_every;
                    let snapshot = !stopping && snapshot_at.elapsed() >= snapshot_every;
                    let (orphans, dirty, snapshots) = {
                        let mut inventory =
                            inventory.lock().unwrap_or_else(PoisonError::into_inner);
                        (
                            inventory.orphan_events(now_ms),
                            if save {
                                inventory.take_dirty()
                            } else {
                                Vec::new()
                            },
                            if snapshot {
                                inventory.snapshot_events(now_ms)
                            } else {
                                Vec::new()
                            },
                        )
                    };
                    emit(events.as_ref(), &orphans);
                    emit(events.as_ref(), &snapshots);
                    if save {
                        saved_at = Instant::now();
                        if let Err(error) = store.save(&dirty) {
                            warn!("inventory not saved: {error}");
                        }
                    }
                    if snapshot {
                        snapshot_at = Instant::now();
                    }
                    if stopping {
                        return;
                    }
                }
            })?;
        Ok(Self { stop, thread })
    }

    /// Saves what is left and waits for the thread.
    fn stop(self) {
        let _ = self.stop.send(());
        if self.thread.join().is_err() {
            warn!("inventory thread panicked");
        }
    }
}

/// Hands the loss counters to the agent's own metrics.
fn publish_health(capture: &Capture, stats: &ReaderStats, health: &AgentHealth) {
    health.set_kernel(&capture.counters());
    let (kernel, tls_files) = capture.probes_attached();
    health.set_probes(kernel as u64, tls_files as u64);
    health.set_records_malformed(stats.malformed.load(Ordering::Relaxed));
}

fn log_stats(capture: &Capture, stats: &ReaderStats) {
    let kernel: Vec<String> = capture
        .counters()
        .into_iter()
        .map(|(counter, value)| format!("{}={value}", counter.name()))
        .collect();
    info!(
        "capture totals: {}, records_read={}, records_malformed={}",
        kernel.join(", "),
        stats.records.load(Ordering::Relaxed),
        stats.malformed.load(Ordering::Relaxed),
    );
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
}

/// What the stream stage hands its results to, and how it describes them.
struct StageOutputs {
    otlp: Option<OtlpRecorder>,
    inventory: Option<SharedInventory>,
    security: Option<SecurityAnalyzer>,
    describe: DescribeSettings,
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

/// The stages after capture, on one thread: streams -> protocols -> calls -> enrichment ->
/// analysis -> export. Runs until the event channel closes.
fn stream_stage(
    mut events: mpsc::Receiver<Vec<CaptureEvent>>,
    requests: mpsc::Sender<CaptureRequest>,
    options: &RunOptions,
    outputs: StageOutputs,
    mut enricher: Enricher,
    health: &AgentHealth,
) -> io::Result<()> {
    let clock = WallClock::measure();
    let mut table = StreamTable::new(options.streams);
    let mut dump = options
        .dump
        .then(|| DumpWriter::new(io::BufWriter::new(io::stdout().lock()), clock));
    let mut sink = match (outputs.otlp, &options.calls) {
        (Some(recorder), _) => Some(CallSink::Otlp(recorder)),
        (None, CallOutput::Lines) => Some(CallSink::Lines(CallPrinter::new(
            io::stdout().lock(),
            clock,
        ))),
        _ => None,
    };
    let mut protocols = ProtocolStage::new(options.decoders);
    let mut analyzer = Analyzer::new(&options.routes, outputs.describe);
    if let Some(inventory) = outputs.inventory {
        analyzer = analyzer.with_inventory(inventory);
    }
    if let Some(security) = outputs.security {
        analyzer = analyzer.with_security(security);
    }
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
            if let Some(request) = payload_policy_request(&mut protocols, options.dump) {
                out.requests.push(request);
            }
            for connection in &out.connected {
                analyzer.connected(connection);
            }
            for call in calls.drain(..) {
                sink.write(analyzer.analyze(enricher.enrich(call)))?;
            }
        }
        health.set_connections_evicted(table.evicted());
        for request in out.requests.drain(..) {
            // Full means the control loop is behind; a dropped scan is retried at the next exec.
            let _ = requests.try_send(request);
        }
        out.clear();
    }
    io::stdout().flush()
}
