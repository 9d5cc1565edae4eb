//! The running agent's parts, started in an order that matters and stopped in reverse.

use std::{
    io,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc as std_mpsc,
    },
    time::Duration,
};

use agent_common::Verdict;
use log::{info, warn};
use tokio::{
    sync::{mpsc, oneshot},
    task::JoinHandle,
};

use super::{
    CallOutput, RunError, RunOptions,
    inventory_keeper::{self, InventoryKeeper},
    stages::{StageCalls, StreamStage},
};
use crate::{
    analysis::{
        inventory::{SharedInventory, store::InventoryStore},
        security::{
            SecurityAnalyzer,
            principal::PrincipalKeyer,
            rules::watch::{self, RuleHandle},
        },
        sensitive::SensitiveScanner,
    },
    calls::{DescribeSettings, Redact},
    capture::{
        Capture, CaptureEvent, CodeLoaded, LoadedBy, ReaderStats, forward_kernel_log, read_events,
    },
    enrich::{
        self, Enricher, ProcessRegistry,
        kubernetes::{self, PodIndex},
        start_identity_reader,
    },
    export::{
        health::AgentHealth,
        otlp::{self, OtlpRecorder, OtlpTasks},
        server::{self, Listen},
    },
    selection::{Selector, initial_verdicts},
    streams::CaptureRequest,
};

/// Batches of capture events waiting for the stream stage (each at most 4,096 records and
/// 512 KiB): the ring buffer, not this queue, absorbs bursts.
const EVENT_QUEUE: usize = 8;
/// Requests waiting for the control loop; more are dropped (a missed rescan is retried at the
/// next exec).
const REQUEST_QUEUE: usize = 1024;
/// Execs and new libraries waiting for the control loop; more are not inspected at once (the
/// rescan after exec, or the next exec of the same file, catches up).
const CODE_QUEUE: usize = 1024;
/// How long start-up waits for the Kubernetes pod list.
const POD_LIST_TIMEOUT: Duration = Duration::from_secs(10);

/// The running agent.
pub(super) struct Agent {
    pub(super) health: Arc<AgentHealth>,
    pub(super) capture: Capture,
    pub(super) stats: Arc<ReaderStats>,
    /// The stream stage's requests to the control loop, and a sender for the loop's own.
    pub(super) requests: (mpsc::Sender<CaptureRequest>, mpsc::Receiver<CaptureRequest>),
    /// Execs and new TLS libraries, straight from the ring-buffer reader.
    pub(super) code_loads: mpsc::Receiver<CodeLoaded>,
    /// A sender of the event queue, kept to read how full it is.
    pub(super) event_queue: mpsc::Sender<Vec<CaptureEvent>>,
    pub(super) reader: JoinHandle<io::Result<()>>,
    pub(super) stage_done: oneshot::Receiver<io::Result<()>>,
    pub(super) rules: Option<RuleWatch>,
    stage: std::thread::JoinHandle<()>,
    kernel_log: Option<JoinHandle<io::Result<()>>>,
    inventory_keeper: Option<InventoryKeeper>,
    otlp_tasks: Option<OtlpTasks>,
    /// The endpoints' server and the pod watch: aborted last.
    background: Vec<JoinHandle<()>>,
}

/// The rule packs' watcher thread, and the flags that reach it.
pub(super) struct RuleWatch {
    /// Set on SIGHUP: the packs are read again.
    pub(super) reload: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Agent {
    /// Starts every part. The order matters: the inventory database first (one the agent
    /// cannot use must stop it before anything attaches); the endpoints next (liveness holds
    /// and readiness says "not yet" while the programs load); the pod list before capture
    /// (the selection rules need it); capture before the exporters (their connections must be
    /// opened once the probes that recognise the agent's own connections are attached, or a
    /// collector on this host would have its end of them traced).
    pub(super) async fn start(options: RunOptions) -> Result<Self, RunError> {
        let health = Arc::new(AgentHealth::default());
        let calls = options.call_output();
        // One scanner for the inventory's sensitive-data findings and the redaction of
        // exported model content: its patterns are compiled once.
        let scanner = Arc::new(SensitiveScanner::new());
        let inventory = match calls {
            CallOutput::Off => None,
            _ => Some(inventory_keeper::open(
                &options.config.inventory,
                options.specs.clone(),
                Arc::clone(&scanner),
            )?),
        };
        let mut background = Vec::new();
        let own_port = serve_endpoints(&options, &health, &inventory, &mut background).await?;
        let pods = watch_pods(&options, &mut background).await?;
        join_host_cgroup_namespace();
        let processes = Arc::new(ProcessRegistry::default());
        let (capture, outputs) = start_capture(&options, &processes, pods.as_deref(), own_port)?;
        health.set_probe_groups(capture.report());
        let (otlp, otlp_tasks) = match calls {
            CallOutput::Otlp => {
                let (recorder, tasks) =
                    otlp::start(&options.config.export.otlp, &health, &enrich::host_name())?;
                (Some(recorder), Some(tasks))
            }
            _ => (None, None),
        };
        let (shared_inventory, inventory_keeper) =
            keep_inventory(&options, inventory, otlp.as_ref())?;
        let (security, rules) = match (&options.rules, calls) {
            (Some(_), CallOutput::Off) | (None, _) => (None, None),
            (Some(active), _) => {
                let (analyzer, watch) = start_security(&options, active.clone(), &health)?;
                (Some(analyzer), Some(watch))
            }
        };

        let stats = Arc::new(ReaderStats::default());
        let (event_tx, event_rx) = mpsc::channel(EVENT_QUEUE);
        let (request_tx, request_rx) = mpsc::channel(REQUEST_QUEUE);
        let (code_tx, code_rx) = mpsc::channel(CODE_QUEUE);
        let identified = start_selection(
            &options,
            &processes,
            pods.clone(),
            outputs.process_verdicts,
            outputs.stdio_processes,
        )?;
        let exec_notices = start_identity_reader(&processes, identified)?;
        let reader = tokio::spawn(read_events(
            outputs.ring,
            event_tx.clone(),
            Arc::clone(&stats),
            move |code: CodeLoaded| {
                if let LoadedBy::Exec { path } = &code.by {
                    exec_notices.exec(code.tgid, path.clone());
                }
                // A held process dropped here is continued by the hold keeper at its bound.
                let _ = code_tx.try_send(code);
            },
        ));
        let kernel_log = outputs
            .kernel_log
            .map(|logger| tokio::spawn(forward_kernel_log(logger)));
        let describe = DescribeSettings {
            headers: options.config.export.http_headers.clone(),
            content: options
                .config
                .export
                .genai_content
                .then_some(scanner as Arc<dyn Redact>),
        };
        let stage = StreamStage {
            streams: options.config.streams,
            decode: options.config.decode,
            routes: options.config.routes.clone(),
            dump: options.dump,
            calls: match (otlp, calls) {
                (Some(recorder), _) => StageCalls::Otlp(recorder),
                (None, CallOutput::Lines) => StageCalls::Lines,
                _ => StageCalls::Off,
            },
            inventory: shared_inventory,
            security,
            describe,
            enricher: Enricher::new(processes, pods),
        };
        let (stage, stage_done) = stage.spawn(event_rx, request_tx.clone(), Arc::clone(&health))?;

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
        Ok(Self {
            health,
            capture,
            stats,
            requests: (request_tx, request_rx),
            code_loads: code_rx,
            event_queue: event_tx,
            reader,
            stage_done,
            rules,
            stage,
            kernel_log,
            inventory_keeper,
            otlp_tasks,
            background,
        })
    }

    /// Stops every part: capture first, so nothing new is captured while the stages drain;
    /// the exporters last, so that what the stages flushed is sent.
    pub(super) async fn stop(self) {
        self.health.set_ready(false);
        self.log_stats();
        self.publish_health();
        drop(self.capture);
        drop(self.event_queue);
        self.reader.abort();
        if let Some(task) = self.kernel_log {
            task.abort();
        }
        let _ = self.reader.await;
        if self.stage.join().is_err() {
            warn!("stream stage panicked");
        }
        if let Some(keeper) = self.inventory_keeper {
            keeper.stop();
        }
        if let Some(rules) = self.rules {
            rules.stop.store(true, Ordering::Relaxed);
            if rules.thread.join().is_err() {
                warn!("rule watcher panicked");
            }
        }
        if let Some(tasks) = self.otlp_tasks {
            let stats = Arc::clone(&tasks.stats);
            tasks.finish().await;
            info!(
                "OTLP totals: spans_exported={}, spans_not_sampled={}, spans_dropped={}, \
                 spans_failed={}, metric_exports_failed={}",
                stats.spans_exported.load(Ordering::Relaxed),
                stats.spans_not_sampled.load(Ordering::Relaxed),
                stats.spans_dropped.load(Ordering::Relaxed),
                stats.spans_failed.load(Ordering::Relaxed),
                stats.metric_exports_failed.load(Ordering::Relaxed),
            );
        }
        for task in self.background {
            task.abort();
        }
        info!("stopped: every probe detached");
    }

    /// Hands the loss counters to the agent's own metrics.
    pub(super) fn publish_health(&self) {
        self.health.set_kernel(&self.capture.counters());
        self.health.set_probes(
            self.capture.kernel_probes_attached() as u64,
            self.capture.tls_coverage(),
        );
        self.health
            .set_records_malformed(self.stats.malformed.load(Ordering::Relaxed));
        self.health
            .set_exec_holds_expired(self.capture.exec_holds_expired());
    }

    /// Logs the loss counters.
    pub(super) fn log_stats(&self) {
        let kernel: Vec<String> = self
            .capture
            .counters()
            .into_iter()
            .map(|(counter, value)| format!("{}={value}", counter.name()))
            .collect();
        info!(
            "capture totals: {}, records_read={}, records_malformed={}",
            kernel.join(", "),
            self.stats.records.load(Ordering::Relaxed),
            self.stats.malformed.load(Ordering::Relaxed),
        );
    }
}

/// Serves `/healthz`, `/readyz` and `/metrics` (and the inventory), unless turned off; returns
/// the port, whose calls are not the host's API traffic.
async fn serve_endpoints(
    options: &RunOptions,
    health: &Arc<AgentHealth>,
    inventory: &Option<(SharedInventory, InventoryStore)>,
    background: &mut Vec<JoinHandle<()>>,
) -> Result<Option<u16>, RunError> {
    let Listen::On(address) = options.config.server.listen else {
        return Ok(None);
    };
    let shared = inventory.as_ref().map(|(shared, _)| Arc::clone(shared));
    let (bound, task) = server::start(address, Arc::clone(health), shared)
        .await
        .map_err(|source| RunError::Listen { address, source })?;
    info!("serving /healthz, /readyz and /metrics on http://{bound}");
    background.push(task);
    Ok(Some(bound.port()))
}

/// Lists and then watches this node's pods, when Kubernetes enrichment is on.
async fn watch_pods(
    options: &RunOptions,
    background: &mut Vec<JoinHandle<()>>,
) -> Result<Option<Arc<PodIndex>>, RunError> {
    let Ok(Some(node)) = options.config.kubernetes.node() else {
        return Ok(None);
    };
    let client = kubernetes::connect().await.map_err(RunError::Kubernetes)?;
    let index = Arc::new(PodIndex::default());
    let (listed_tx, listed) = oneshot::channel();
    background.push(tokio::spawn(kubernetes::watch_node(
        client,
        node.to_owned(),
        Arc::clone(&index),
        listed_tx,
    )));
    // The first calls and the selection rules need the pods: wait for the list, but not
    // forever (an unreachable API server must not keep the node unobserved).
    if tokio::time::timeout(POD_LIST_TIMEOUT, listed)
        .await
        .is_err()
    {
        warn!(
            "kubernetes: no pod list after {POD_LIST_TIMEOUT:?}; starting without, the watch goes on"
        );
    }
    Ok(Some(index))
}

/// In a container, joins the host's cgroup namespace to read host processes' cgroups.
fn join_host_cgroup_namespace() {
    match enrich::cgroup::join_host_namespace() {
        Ok(true) => info!("joined the host's cgroup namespace, to read host processes' cgroups"),
        Ok(false) => {}
        Err(error) => {
            warn!("cannot join the host's cgroup namespace ({error}): container ids may be missing")
        }
    }
}

/// Loads and attaches the kernel programs, with the selection's first verdicts.
fn start_capture(
    options: &RunOptions,
    processes: &Arc<ProcessRegistry>,
    pods: Option<&PodIndex>,
    own_port: Option<u16>,
) -> Result<(Capture, crate::capture::CaptureOutputs), RunError> {
    let mut selection =
        options
            .selection
            .kernel(initial_verdicts(&options.selection, processes, pods));
    // Calls to the agent's own endpoints (probes, scrapes, `apiscope inventory`) are not the
    // host's API traffic.
    if let Some(port) = own_port {
        selection.ports.push((port, Verdict::Skip));
    }
    Ok(Capture::start(&options.config.capture, &selection)?)
}

/// Starts the thread that keeps the inventory, which reports to the collector if there is
/// one.
fn keep_inventory(
    options: &RunOptions,
    inventory: Option<(SharedInventory, InventoryStore)>,
    otlp: Option<&OtlpRecorder>,
) -> Result<(Option<SharedInventory>, Option<InventoryKeeper>), RunError> {
    let Some((shared, store)) = inventory else {
        return Ok((None, None));
    };
    let keeper = InventoryKeeper::start(
        Arc::clone(&shared),
        store,
        otlp.map(OtlpRecorder::events),
        &options.config.inventory,
    )?;
    Ok((Some(shared), Some(keeper)))
}

/// The security analyzer over `rules`, and the watcher that reloads the packs.
fn start_security(
    options: &RunOptions,
    rules: crate::analysis::security::rules::ActiveRules,
    health: &AgentHealth,
) -> io::Result<(SecurityAnalyzer, RuleWatch)> {
    let handle = RuleHandle::new(rules);
    let _ = health.rules.set(Arc::clone(&handle));
    let reload = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let thread = watch::spawn(
        options.config.security.rule_packs.clone(),
        Arc::clone(&handle),
        Arc::clone(&reload),
        Arc::clone(&stop),
    )?;
    // Kept beside the inventory, so a principal keeps its hash across restarts.
    let keyer = PrincipalKeyer::in_directory(&options.config.inventory.directory);
    let analyzer = SecurityAnalyzer::new(handle, keyer, Arc::clone(&health.findings));
    Ok((
        analyzer,
        RuleWatch {
            reload,
            stop,
            thread,
        },
    ))
}

/// Starts the threads that match processes against the selection rules and the stdio
/// commands as they exec; returns where the identity reader sends each identified process.
fn start_selection(
    options: &RunOptions,
    processes: &Arc<ProcessRegistry>,
    pods: Option<Arc<PodIndex>>,
    process_verdicts: Option<crate::capture::ProcessVerdicts>,
    stdio_processes: crate::capture::StdioProcesses,
) -> io::Result<Vec<std_mpsc::Sender<Arc<enrich::ProcessIdentity>>>> {
    let mut identified = Vec::new();
    if let Some(verdicts) = process_verdicts {
        let (selected_tx, selected_rx) = std_mpsc::channel();
        identified.push(selected_tx);
        let selector = Selector::new(
            options.selection.clone(),
            Arc::clone(processes),
            pods,
            verdicts,
        );
        std::thread::Builder::new()
            .name("selection".into())
            .spawn(move || selector.run(selected_rx))?;
    }
    if !options.stdio.is_empty() {
        let (stdio_tx, stdio_rx) = std_mpsc::channel();
        identified.push(stdio_tx);
        let stdio = options.stdio.clone();
        std::thread::Builder::new()
            .name("stdio-selection".into())
            .spawn(move || stdio.run(stdio_processes, stdio_rx))?;
    }
    Ok(identified)
}
