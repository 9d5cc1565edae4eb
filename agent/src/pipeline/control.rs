//! The control loop: the one task that owns the kernel object. It inspects the executables of
//! new processes (attaching TLS probes, continuing processes held for that), serves the stream
//! stage's requests (forget dead connections, set payload policies), publishes the loss counters, and stops on a signal or a failed stage.

use std::{sync::atomic::Ordering, time::Duration};

use log::{debug, info};
use tokio::signal::unix::{Signal, SignalKind, signal};

use super::{RunError, agent::Agent};
use crate::{
    capture::{CodeLoaded, LoadedBy},
    streams::CaptureRequest,
};

/// A process may load OpenSSL after exec (Python imports `ssl` later): scan it again then.
const RESCAN_AFTER_EXEC: Duration = Duration::from_secs(1);
/// How often the TLS uprobes are detached from OpenSSL copies no process maps any more.
const TLS_RETIRE_INTERVAL: Duration = Duration::from_secs(30);
/// How often loss counters are logged.
const STATS_INTERVAL: Duration = Duration::from_secs(60);
/// How often loss counters are handed to the agent's own metrics.
const HEALTH_INTERVAL: Duration = Duration::from_secs(1);

/// The signals the agent answers: SIGTERM and SIGINT stop it, SIGHUP reloads the rule packs
/// (and must not end it, its default).
pub(super) struct Signals {
    terminate: Signal,
    interrupt: Signal,
    hangup: Signal,
}

impl Signals {
    /// Installs the handlers, before anything starts, so that no signal is missed.
    pub(super) fn install() -> std::io::Result<Self> {
        Ok(Self {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
            hangup: signal(SignalKind::hangup())?,
        })
    }
}

impl Agent {
    /// Runs until a signal stops the agent (`Ok`) or a stage fails.
    pub(super) async fn control(&mut self, signals: &mut Signals) -> Result<(), RunError> {
        let mut stats_tick = tokio::time::interval(STATS_INTERVAL);
        stats_tick.tick().await;
        let mut health_tick = tokio::time::interval(HEALTH_INTERVAL);
        let mut tls_retire_tick = tokio::time::interval(TLS_RETIRE_INTERVAL);
        tls_retire_tick.tick().await;
        loop {
            tokio::select! {
                _ = signals.terminate.recv() => return Ok(()),
                _ = signals.interrupt.recv() => return Ok(()),
                _ = signals.hangup.recv() => match &self.rules {
                    Some(rules) => {
                        info!("SIGHUP: reloading the rule packs");
                        rules.reload.store(true, Ordering::Relaxed);
                    }
                    None => info!("SIGHUP: security checks are off, no rule pack to reload"),
                },
                Some(code) = self.code_loads.recv() => self.inspect_code(&code),
                Some(request) = self.requests.1.recv() => self.serve(request),
                _ = stats_tick.tick() => self.log_stats(),
                _ = tls_retire_tick.tick() => self.capture.retire_unmapped_tls(),
                _ = health_tick.tick() => {
                    self.publish_health();
                    let queue = &self.event_queue;
                    let queued = queue.max_capacity() - queue.capacity();
                    self.health.set_event_batches_queued(queued as u64);
                }
                result = &mut self.reader => return match result {
                    Ok(Ok(())) => Err(RunError::Streams("ring-buffer reader ended".into())),
                    Ok(Err(error)) => Err(RunError::Io(error)),
                    Err(error) => Err(RunError::Streams(format!("ring-buffer reader failed: {error}"))),
                },
                result = &mut self.stage_done => return Err(RunError::Streams(match result {
                    Ok(Err(error)) => error.to_string(),
                    _ => "ended".into(),
                })),
            }
        }
    }

    /// Inspects the file of a process that exec'd or mapped a new library (continuing it if it
    /// was held for that); after an exec, scans the process again a little later for the
    /// libraries it loads, which no hold covers when holds are off.
    fn inspect_code(&mut self, code: &CodeLoaded) {
        self.capture.inspect_code(code);
        if code.by == LoadedBy::Mapping {
            return;
        }
        let again = self.requests.0.clone();
        let pid = code.tgid;
        tokio::spawn(async move {
            tokio::time::sleep(RESCAN_AFTER_EXEC).await;
            let _ = again.try_send(CaptureRequest::RescanProcess(pid));
        });
    }

    /// Carries out one request of the stream stage.
    fn serve(&mut self, request: CaptureRequest) {
        match request {
            CaptureRequest::RescanProcess(pid) => self.capture.scan_process(pid),
            CaptureRequest::ForgetConnections(keys) => self.capture.forget_connections(keys),
            CaptureRequest::SetPayloadPolicies(sockets) => {
                self.capture.set_payload_policies(sockets.iter().copied());
                // Logged once in the kernel's map, where the programs read them.
                debug!(
                    "payload policies of {} connections: {:?}",
                    sockets.len(),
                    sockets
                );
            }
        }
    }
}
