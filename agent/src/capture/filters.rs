//! The kernel half of the selection rules: which processes and ports the programs capture,
//! decided in their filter maps so that an excluded workload costs one map lookup per call and
//! never reaches userspace.

use agent_common::{ConnKey, Direction, FilterMode, Verdict, filter_maps};
use aya::maps::{HashMap, MapData};
use log::warn;

/// What the programs are told at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelSelection {
    /// Processes are matched one by one (by executable, cgroup or pod): `PID_FILTER` holds a
    /// verdict per process, and every exec holds its process until userspace has matched it.
    pub per_process: bool,
    /// The verdict of processes with no entry.
    pub unlisted_processes: Verdict,
    /// Verdicts of processes running at start, read from `/proc` before any probe attaches.
    pub processes: Vec<(u32, Verdict)>,
    /// Verdicts of TCP ports; a connection with either port skipped is skipped.
    pub ports: Vec<(u16, Verdict)>,
    /// The verdict of connections neither of whose ports is listed.
    pub unlisted_ports: Verdict,
}

impl Default for KernelSelection {
    /// Everything is captured.
    fn default() -> Self {
        Self {
            per_process: false,
            unlisted_processes: Verdict::Trace,
            processes: Vec::new(),
            ports: Vec::new(),
            unlisted_ports: Verdict::Trace,
        }
    }
}

impl KernelSelection {
    /// The `filters` bits of the programs' configuration.
    pub fn filter_bits(&self) -> u32 {
        let mut bits = 0;
        if self.per_process {
            bits |= filter_maps::PIDS | filter_maps::EXEC_GATE;
        }
        if !self.ports.is_empty() || self.unlisted_ports != Verdict::Trace {
            bits |= filter_maps::PORTS;
        }
        bits
    }

    /// The filter mode of unlisted processes.
    pub fn process_mode(&self) -> FilterMode {
        mode(self.unlisted_processes)
    }

    /// The filter mode of unlisted ports.
    pub fn port_mode(&self) -> FilterMode {
        mode(self.unlisted_ports)
    }
}

fn mode(verdict: Verdict) -> FilterMode {
    match verdict {
        Verdict::Trace => FilterMode::TraceUnlisted,
        Verdict::Skip | Verdict::Pending => FilterMode::SkipUnlisted,
    }
}

/// Sets the processes' verdicts in the kernel's `PID_FILTER`, from the thread that matches
/// processes against the rules.
pub struct ProcessVerdicts(HashMap<MapData, u32, u32>);

impl ProcessVerdicts {
    pub(super) fn new(map: HashMap<MapData, u32, u32>) -> Self {
        Self(map)
    }

    /// Records `verdict` for `pid`; a full map is logged (the process then follows the
    /// default for unlisted processes, or stays held if it was).
    pub fn set(&mut self, pid: u32, verdict: Verdict) {
        if let Err(error) = self.0.insert(pid, verdict as u32, 0) {
            warn!("cannot record the selection verdict of process {pid}: {error}");
        }
    }
}

impl std::fmt::Debug for ProcessVerdicts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProcessVerdicts")
    }
}

/// The kernel's `STDIO_PROCESSES` and `STDIO_FDS`: the processes whose standard input and
/// output are captured and the fds of their wire, written by the thread that matches processes
/// against the stdio globs.
pub struct StdioProcesses {
    processes: HashMap<MapData, u32, u8>,
    fds: HashMap<MapData, ConnKey, u32>,
}

impl StdioProcesses {
    pub(super) fn new(
        processes: HashMap<MapData, u32, u8>,
        fds: HashMap<MapData, ConnKey, u32>,
    ) -> Self {
        Self { processes, fds }
    }

    /// Follows `pid`'s stdio from now on, its fd 0 in and fd 1 out (the kernel follows their
    /// duplicates); false when it was followed already (or a map refused it, which is logged).
    pub fn add(&mut self, pid: u32) -> bool {
        if self.processes.get(&pid, 0).is_ok() {
            return false;
        }
        let wire = [(0, Direction::Ingress), (1, Direction::Egress)];
        let inserted = wire
            .into_iter()
            .try_for_each(|(fd, direction)| {
                self.fds
                    .insert(ConnKey { tgid: pid, fd }, direction as u32, 0)
            })
            .and_then(|()| self.processes.insert(pid, 1, 0));
        match inserted {
            Ok(()) => true,
            Err(error) => {
                warn!("cannot follow the stdio of process {pid}: {error}");
                false
            }
        }
    }
}

impl std::fmt::Debug for StdioProcesses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StdioProcesses")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_follow_what_is_selected() {
        assert_eq!(KernelSelection::default().filter_bits(), 0);
        let per_process = KernelSelection {
            per_process: true,
            ..Default::default()
        };
        assert_eq!(
            per_process.filter_bits(),
            filter_maps::PIDS | filter_maps::EXEC_GATE
        );
        let ports = KernelSelection {
            ports: vec![(22, Verdict::Skip)],
            ..Default::default()
        };
        assert_eq!(ports.filter_bits(), filter_maps::PORTS);
        assert_eq!(ports.port_mode(), FilterMode::TraceUnlisted);
        let only_ports = KernelSelection {
            unlisted_ports: Verdict::Skip,
            ports: vec![(8080, Verdict::Trace)],
            ..Default::default()
        };
        assert_eq!(only_ports.port_mode(), FilterMode::SkipUnlisted);
    }
}
