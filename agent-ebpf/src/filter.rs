//! The first check of every probe: is this process (and then this connection) captured at all?

use agent_common::{CaptureConfig, Counter, FilterMode, Verdict, filter_maps};

use crate::maps::{CONFIG, PID_FILTER, PORT_FILTER, count};

/// True when the calling process is selected for capture: never the agent itself, then the
/// selection rules' verdict for the process, else the configured default.
#[inline(always)]
pub fn is_traced(tgid: u32) -> bool {
    let Some(config) = CONFIG.get(0) else {
        return false;
    };
    if tgid == config.agent_tgid || config.capture_cap == 0 {
        return false;
    }
    if config.filters & filter_maps::PIDS != 0 {
        // SAFETY: plain lookup of a u32 value; a stale read only changes one decision.
        if let Some(verdict) = unsafe { PID_FILTER.get(&tgid) } {
            if *verdict == Verdict::Trace as u32 {
                return true;
            }
            count(Counter::SelectionSkippedCalls);
            return false;
        }
    }
    config.filter_mode == FilterMode::TraceUnlisted as u32
}

/// True when a connection between these ports is selected for capture: a port listed as
/// skipped excludes it, one listed as traced includes it, else the configured default.
#[inline(always)]
pub fn port_traced(config: &CaptureConfig, local_port: u16, peer_port: u16) -> bool {
    if config.filters & filter_maps::PORTS == 0 {
        return true;
    }
    // SAFETY: plain lookups of u32 values.
    let (local, peer) = unsafe {
        (
            PORT_FILTER.get(&(local_port as u32)).copied(),
            PORT_FILTER.get(&(peer_port as u32)).copied(),
        )
    };
    let skip = Verdict::Skip as u32;
    let traced = if local == Some(skip) || peer == Some(skip) {
        false
    } else if local.is_some() || peer.is_some() {
        true
    } else {
        config.port_mode == FilterMode::TraceUnlisted as u32
    };
    if !traced {
        count(Counter::SelectionSkippedConnections);
    }
    traced
}
