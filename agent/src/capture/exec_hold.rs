//! Holding a process at exec, or at its mapping of a TLS library, until the TLS uprobes of the
//! file are attached.
//!
//! A uprobe is attached per file, after userspace has read the file, and an exec is reported
//! to userspace asynchronously: the first run of a program that carries its own TLS stack
//! (Node, with OpenSSL inside; any Go program) used to be over before its probes were there.
//! So the exec tracepoint stops (`SIGSTOP`) a process that runs a file userspace has not
//! inspected yet and records it in the `HELD` map; once the file is inspected and its probes
//! attached, [`ExecHold::inspected`] adds the file to `KNOWN_EXECUTABLES` and continues the
//! process. A process that maps a TLS library new to the agent as code is held the same way,
//! at the end of its `mmap`. Each file is held for once, until userspace forgets it (no process
//! maps it any more: [`ExecHold::forget`]).
//!
//! A held process is always continued. The hold keeper, a small process of its own
//! (`apiscope hold-keeper`, [`keep_holds`]), continues every process held longer than the
//! bound and, when the agent is gone (its end of the keeper's standard input closes, however
//! the agent ended), every process still held; it reports each one it continued on its
//! standard output, which the agent counts. The agent continues what is held when it stops.

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    process::{Child, ChildStdin, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use agent_common::ExecutableKey;
use aya::maps::{HashMap, IterableMap as _, Map, MapData};
use log::{debug, warn};

/// `CAP_KILL`: signalling processes of other users.
const CAP_KILL: u32 = 5;

/// The keeper's first line: it has the `HELD` map and runs its loop.
const KEEPER_READY: &str = "ready";

/// How long the agent waits for the keeper's first line.
const KEEPER_START_TIMEOUT: Duration = Duration::from_secs(5);

/// The hidden subcommand that runs the hold keeper.
pub const KEEPER_COMMAND: &str = "hold-keeper";

/// The agent's side of the holds: the two maps, and the keeper process.
#[derive(Debug)]
pub struct ExecHold {
    known: HashMap<MapData, ExecutableKey, u8>,
    held: HashMap<MapData, u32, u64>,
    keeper: Child,
    /// The keeper's standard input: closing it (dropping this, or the agent ending) tells the
    /// keeper to continue everything held and exit.
    keeper_input: Option<ChildStdin>,
    /// Processes the keeper continued because the bound passed.
    expired: Arc<AtomicU64>,
}

impl ExecHold {
    /// Starts the keeper with the `HELD` map and the `bound` of a hold. Holding is only switched
    /// on (in the kernel's configuration) once this returned.
    pub fn start(
        known: HashMap<MapData, ExecutableKey, u8>,
        held: HashMap<MapData, u32, u64>,
        bound: Duration,
    ) -> Result<Self, String> {
        if !super::features::has_capability(CAP_KILL) {
            return Err(
                "the agent lacks CAP_KILL, which continuing another user's process needs".into(),
            );
        }
        let id = held
            .map()
            .info()
            .map_err(|error| format!("cannot read the HELD map's id: {error}"))?
            .id();
        let mut keeper = Command::new("/proc/self/exe")
            .args([
                KEEPER_COMMAND,
                "--held-map-id",
                &id.to_string(),
                "--bound-ms",
                &bound.as_millis().to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|error| format!("cannot start the hold keeper: {error}"))?;
        let (Some(input), Some(output)) = (keeper.stdin.take(), keeper.stdout.take()) else {
            let _ = keeper.kill();
            return Err("the hold keeper has no standard input or output".into());
        };
        let expired = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&expired);
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
        let reader = std::thread::Builder::new()
            .name("apiscope-holds".into())
            .spawn(move || count_expiries(output, &ready_tx, &counted, bound));
        // Holding starts once the keeper runs its loop: its own exec (of a file new to the
        // kernel side) must be over, or it would be held with no one to continue it.
        let ready = reader
            .map_err(|error| format!("cannot start the hold keeper's reader: {error}"))
            .and_then(|_| {
                ready_rx
                    .recv_timeout(KEEPER_START_TIMEOUT)
                    .map_err(|_| "the hold keeper did not start".to_owned())
            });
        if let Err(error) = ready {
            let _ = keeper.kill();
            let _ = keeper.wait();
            return Err(error);
        }
        Ok(Self {
            known,
            held,
            keeper,
            keeper_input: Some(input),
            expired,
        })
    }

    /// The file `executable` was inspected: its execs are not held any more. Continues process
    /// `tgid` if it was held for it.
    pub fn inspected(&mut self, executable: ExecutableKey, tgid: u32, held: bool) {
        if executable.ino != 0 {
            // The map is an LRU: when full, the file inspected longest ago goes and is held
            // once more at its next exec.
            let _ = self.known.insert(executable, 0, 0);
        }
        if held {
            release(&mut self.held, tgid);
        }
    }

    /// Forgets the files with these inode numbers, which userspace no longer holds uprobes or
    /// verdicts for: their next exec or mapping is held again. By inode number alone, as
    /// userspace knows a file by `stat`'s device number, not the kernel's; a file of another
    /// filesystem with the same number is held once more, which costs only that.
    pub fn forget(&mut self, inodes: &std::collections::HashSet<u64>) {
        if inodes.is_empty() {
            return;
        }
        let forgotten: Vec<ExecutableKey> = self
            .known
            .keys()
            .filter_map(Result::ok)
            .filter(|file| inodes.contains(&file.ino))
            .collect();
        for file in forgotten {
            let _ = self.known.remove(&file);
        }
    }

    /// Processes continued because their hold passed its bound.
    pub fn expired(&self) -> u64 {
        self.expired.load(Ordering::Relaxed)
    }
}

impl Drop for ExecHold {
    fn drop(&mut self) {
        let held: Vec<u32> = self.held.keys().filter_map(Result::ok).collect();
        for tgid in held {
            release(&mut self.held, tgid);
        }
        // The keeper sweeps once more and exits; waited for, a little, so it is not left to
        // be reaped by someone else.
        drop(self.keeper_input.take());
        for _ in 0..KEEPER_EXIT_WAITS {
            if !matches!(self.keeper.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(KEEPER_EXIT_POLL);
        }
        warn!("the hold keeper did not exit; killing it");
        let _ = self.keeper.kill();
        let _ = self.keeper.wait();
    }
}

/// Continues process `tgid` and removes its hold; true when the process was there to be
/// continued. Continued before the entry goes, so that no moment exists where a stopped
/// process has no entry that would get it continued. (Agent and keeper may both continue a
/// process whose hold ends right at the bound; a second SIGCONT does nothing.)
fn release(held: &mut HashMap<MapData, u32, u64>, tgid: u32) -> bool {
    // SAFETY: plain syscall. The entry exists, so the process has not exited (its exit removes
    // the entry) and the id is not reused.
    let continued = unsafe { libc::kill(tgid as libc::pid_t, libc::SIGCONT) } == 0;
    // Gone already when the process ran to its exit in between.
    let _ = held.remove(&tgid);
    continued
}

/// Reads the keeper's output until it exits: first its `ready` line, announced on `ready`,
/// then its reports, one process id per line, counted in `expired`.
fn count_expiries(
    output: impl std::io::Read,
    ready: &std::sync::mpsc::SyncSender<()>,
    expired: &AtomicU64,
    bound: Duration,
) {
    let mut lines = BufReader::new(output).lines();
    if !matches!(lines.next(), Some(Ok(line)) if line == KEEPER_READY) {
        return;
    }
    let _ = ready.send(());
    for line in lines {
        let Ok(line) = line else { break };
        expired.fetch_add(1, Ordering::Relaxed);
        warn!(
            "process {line} was held for {} ms, its bound, before the TLS uprobes of the \
             executable or library it was held for were attached: its first TLS calls may be \
             missed",
            bound.as_millis()
        );
    }
    debug!("the hold keeper exited");
}

/// How often, and how many times, the agent looks for the keeper's exit when it stops (its
/// final sweeps take three of its ticks, 150 ms at most).
const KEEPER_EXIT_POLL: Duration = Duration::from_millis(50);
const KEEPER_EXIT_WAITS: u32 = 20;

/// Sweeps of the `HELD` map the keeper makes once the agent is gone.
const FINAL_SWEEPS: u32 = 3;

/// How often the keeper looks for holds past their bound: a tenth of the bound, between 5 and
/// 50 ms, so a hold ends at most that late.
fn keeper_tick(bound: Duration) -> Duration {
    (bound / 10).clamp(Duration::from_millis(5), Duration::from_millis(50))
}

/// The hold keeper's main loop (`apiscope hold-keeper`): continues the processes of the `HELD`
/// map (opened by id, which keeps it alive past the agent) held longer than `bound`, and every
/// one of them once its standard input closes; then it exits. Termination signals are ignored:
/// a Ctrl-C meant for the agent reaches its whole process group, and the keeper must outlive
/// the agent to do its work.
pub fn keep_holds(held_map_id: u32, bound: Duration) -> anyhow::Result<()> {
    // SAFETY: plain syscalls setting a signal disposition to "ignore".
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGTERM, libc::SIG_IGN);
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
    }
    let map = MapData::from_id(held_map_id)?;
    let mut held: HashMap<MapData, u32, u64> = HashMap::try_from(Map::from_map_data(map)?)?;
    let tick = keeper_tick(bound);
    let bound_ns = u64::try_from(bound.as_nanos()).unwrap_or(u64::MAX);
    let mut input = std::io::stdin().lock();
    let mut reported = std::io::stdout().lock();
    writeln!(reported, "{KEEPER_READY}")?;
    reported.flush()?;
    // Once the agent is gone, the map is swept a few ticks apart: an exec that read "hold"
    // just before the agent switched holding off (or ended) may record its hold late.
    let mut sweeps_after_agent = 0;
    loop {
        let agent_gone = sweeps_after_agent > 0 || input_closed_within(&mut input, tick);
        let now = crate::clock::WallClock::monotonic_now_ns();
        let due: Vec<u32> = held
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, since)| agent_gone || now.saturating_sub(*since) >= bound_ns)
            .map(|(tgid, _)| tgid)
            .collect();
        for tgid in due {
            if release(&mut held, tgid) && !agent_gone {
                let _ = writeln!(reported, "{tgid}");
                let _ = reported.flush();
            }
        }
        if agent_gone {
            sweeps_after_agent += 1;
            if sweeps_after_agent == FINAL_SWEEPS {
                return Ok(());
            }
            std::thread::sleep(tick);
        }
    }
}

/// Waits up to `tick` for the standard input to close; true when it did. The agent never
/// writes to it, so anything readable is its end.
fn input_closed_within(input: &mut std::io::StdinLock<'_>, tick: Duration) -> bool {
    let mut poll = libc::pollfd {
        fd: libc::STDIN_FILENO,
        events: libc::POLLIN,
        revents: 0,
    };
    let timeout = i32::try_from(tick.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: one valid pollfd.
    let ready = unsafe { libc::poll(&mut poll, 1, timeout) };
    if ready <= 0 {
        return false;
    }
    let mut byte = [0u8; 1];
    !matches!(input.read(&mut byte), Ok(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_keeper_looks_often_enough_and_not_too_often() {
        assert_eq!(
            keeper_tick(Duration::from_millis(200)),
            Duration::from_millis(20)
        );
        assert_eq!(
            keeper_tick(Duration::from_millis(10)),
            Duration::from_millis(5)
        );
        assert_eq!(
            keeper_tick(Duration::from_secs(5)),
            Duration::from_millis(50)
        );
    }
}
