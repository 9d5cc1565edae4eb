//! Reading the ring buffers without a wake-up per record.
//!
//! The kernel side only forces a wake-up once a quarter of a megabyte is waiting; the reader
//! also drains on a short tick, so a quiet host still sees its records within milliseconds and
//! a busy one is read in large batches.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use aya::maps::{MapData, RingBuf};
use log::warn;
use tokio::{
    io::{Interest, unix::AsyncFd},
    sync::mpsc,
};

use super::{CaptureEvent, CodeLoaded};

/// How often the reader drains the ring buffer when no wake-up came.
const DRAIN_TICK: Duration = Duration::from_millis(10);

/// Most records handed downstream in one batch.
const MAX_BATCH: usize = 4096;

/// Most record bytes in one batch: with a short queue of batches, this bounds what waits in
/// userspace, so a slow stream stage leaves the data in the ring buffer (whose size the user
/// chose) and the kernel counts what does not fit.
const MAX_BATCH_BYTES: usize = 512 * 1024;

/// Counts kept by the reader, readable from other tasks.
#[derive(Debug, Default)]
pub struct ReaderStats {
    /// Records read from the ring buffer.
    pub records: AtomicU64,
    /// Records that could not be decoded.
    pub malformed: AtomicU64,
}

/// Reads records until `events` is closed, decoding them and sending them downstream in
/// batches. Waits when downstream is full, so the kernel side counts the loss instead of the
/// agent growing without bound. Execs and new libraries go to `on_code` instead, as soon as
/// they are decoded: what `/proc` says of a short-lived process must be read before it exits,
/// and a held process waits for its file to be inspected, neither of which may wait for the
/// batch.
pub async fn read_events(
    ring: RingBuf<MapData>,
    events: mpsc::Sender<Vec<CaptureEvent>>,
    stats: Arc<ReaderStats>,
    on_code: impl Fn(CodeLoaded),
) -> std::io::Result<()> {
    // SAFETY: the AsyncFd owns the ring buffer, whose fd stays open and unchanged until drop.
    let mut ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
        .map_err(|error| error.into_parts().1)?;
    let mut tick = tokio::time::interval(DRAIN_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            guard = ring.readable_mut() => guard?.clear_ready(),
            _ = tick.tick() => {}
        }
        loop {
            let mut batch = Vec::new();
            let mut batch_bytes = 0;
            let ring = ring.get_mut();
            while batch.len() < MAX_BATCH && batch_bytes < MAX_BATCH_BYTES {
                let Some(record) = ring.next() else { break };
                batch_bytes += record.len();
                stats.records.fetch_add(1, Ordering::Relaxed);
                match CaptureEvent::decode(&record) {
                    // Execs skip the batch: the identity and TLS work they start must not wait
                    // behind the data (a short-lived process is gone by then, and a held one
                    // waits for it).
                    Ok(CaptureEvent::CodeLoaded(code)) => on_code(code),
                    Ok(event) => batch.push(event),
                    Err(error) => {
                        if stats.malformed.fetch_add(1, Ordering::Relaxed) == 0 {
                            warn!("dropping undecodable kernel record: {error}");
                        }
                    }
                }
            }
            let full = batch.len() == MAX_BATCH || batch_bytes >= MAX_BATCH_BYTES;
            if !batch.is_empty() && events.send(batch).await.is_err() {
                return Ok(());
            }
            if !full {
                break;
            }
        }
    }
}

/// Forwards the kernel programs' log records to the agent's log.
pub async fn forward_kernel_log(
    logger: aya_log::EbpfLogger<&'static dyn log::Log>,
) -> std::io::Result<()> {
    // SAFETY: the AsyncFd owns the logger, whose ring-buffer fd stays open until drop.
    let mut logger = unsafe { AsyncFd::register_with_interest(logger, Interest::READABLE) }
        .map_err(|error| error.into_parts().1)?;
    loop {
        let mut guard = logger.readable_mut().await?;
        guard.get_inner_mut().flush();
        guard.clear_ready();
    }
}
