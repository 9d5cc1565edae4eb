//! Probe attachments the agent owns, and detaching all of them at once.
//!
//! Closing a tracepoint's or uprobe's perf event makes the kernel wait for RCU grace periods
//! (`tracepoint_synchronize_unregister` in `perf_trace_destroy`/`perf_uprobe_destroy`) before
//! `close` returns: 70-120 ms each on the VMs this runs on. Left to aya, each program dropped its
//! links one after another, so the 41 links took 2-3 s to stop. The kernel still runs those
//! waits one at a time under its `event_mutex`, but with every close in flight at once many
//! complete in the same grace period: 0.75-0.85 s for all 41 (kernel stacks sampled during
//! the stop show every other closer queued on that mutex, so this is the kernel's floor for
//! this many perf events).

use std::{
    thread,
    time::{Duration, Instant},
};

use aya::programs::{
    Link as _, ProgramError, tp_btf::BtfTracePointLink, trace_point::TracePointLink,
    uprobe::UProbeLink,
};
use log::{debug, warn};

/// Stack of a detaching thread: it only makes one `close` and maybe logs a line.
const DETACH_STACK: usize = 64 * 1024;

/// One attached probe, taken from its aya program so the agent decides when it is detached.
#[derive(Debug)]
pub enum ProbeLink {
    /// A classic tracepoint.
    Tracepoint(TracePointLink),
    /// A BTF-typed raw tracepoint.
    BtfTracepoint(BtfTracePointLink),
    /// A uprobe or uretprobe on one file.
    UProbe(UProbeLink),
}

impl ProbeLink {
    fn detach(self) -> Result<(), ProgramError> {
        match self {
            Self::Tracepoint(link) => link.detach(),
            Self::BtfTracepoint(link) => link.detach(),
            Self::UProbe(link) => link.detach(),
        }
    }
}

/// Detaches every link, each on its own thread, and returns only once all of them are
/// detached. A link whose thread cannot be started is detached on the calling thread after the
/// others.
pub fn detach_all(links: Vec<ProbeLink>) {
    let started = Instant::now();
    let count = links.len();
    let mut slots: Vec<Option<ProbeLink>> = links.into_iter().map(Some).collect();
    thread::scope(|scope| {
        for slot in &mut slots {
            // A failed spawn drops the closure unrun, so the link stays in its slot.
            let _ = thread::Builder::new()
                .name("apiscope-detach".into())
                .stack_size(DETACH_STACK)
                .spawn_scoped(scope, move || detach(slot.take()));
        }
    });
    for slot in &mut slots {
        detach(slot.take());
    }
    let elapsed = started.elapsed();
    debug!("{count} probe links detached in {elapsed:?}");
    if elapsed > Duration::from_secs(1) {
        warn!("detaching {count} probe links took {elapsed:?}");
    }
}

fn detach(link: Option<ProbeLink>) {
    if let Some(Err(error)) = link.map(ProbeLink::detach) {
        warn!("detaching a probe failed: {error}");
    }
}
