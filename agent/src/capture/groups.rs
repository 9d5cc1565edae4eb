//! What came of loading the kernel programs: each group's state, each program's verifier cost,
//! and, for a group that is off, why, in words an operator can act on.

use std::{fmt, io::Write as _, path::Path};

use agent_common::SocketLookup;
use aya::programs::ProgramError;
use log::warn;

use super::probes::{Hook, ProbeGroup};

/// The most instructions the verifier may process for any one program of ours: a fifth of the
/// kernel's limit (1,000,000), so that another build of the same kernel, whose verifier
/// explores a little more, still accepts it.
pub const VERIFIER_BUDGET: u32 = 200_000;

/// Whether a group runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupState {
    /// Loaded and attached.
    On,
    /// Not running, and why.
    Off(LoadFailure),
}

/// One group's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupStatus {
    /// The group.
    pub group: ProbeGroup,
    /// Its state.
    pub state: GroupState,
}

/// A loaded program and what verifying it cost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramCost {
    /// Program name.
    pub program: &'static str,
    /// Its group.
    pub group: ProbeGroup,
    /// Where it attaches.
    pub hook: Hook,
    /// Instructions the verifier processed (`bpf_prog_info.verified_insns`, Linux 5.16+);
    /// `None` where the kernel does not say.
    pub verified_insns: Option<u32>,
}

/// What loading the kernel side came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadReport {
    /// How socket syscalls find their socket on this kernel.
    pub socket_lookup: SocketLookup,
    /// Every group, in load order.
    pub groups: Vec<GroupStatus>,
    /// Every program that loaded, in table order.
    pub programs: Vec<ProgramCost>,
}

impl LoadReport {
    /// The groups that are off.
    pub fn groups_off(&self) -> impl Iterator<Item = &GroupStatus> {
        self.groups
            .iter()
            .filter(|status| matches!(status.state, GroupState::Off(_)))
    }

    /// How many groups are on and off.
    pub fn group_counts(&self) -> (usize, usize) {
        let off = self.groups_off().count();
        (self.groups.len() - off, off)
    }

    /// Whether `group` is on.
    pub fn is_on(&self, group: ProbeGroup) -> bool {
        self.groups
            .iter()
            .any(|status| status.group == group && status.state == GroupState::On)
    }
}

/// Why a group could not start: the program that failed, the reason in one sentence, and, when
/// the verifier refused it, the verifier's last word (its full log is only written on request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadFailure {
    /// The program that failed.
    pub program: &'static str,
    /// One sentence.
    pub reason: String,
    /// The line of the verifier's log that says why, if the verifier refused the program.
    pub verifier: Option<String>,
    /// The verifier's whole log, for `--verifier-log` and debug logging.
    pub log: Option<String>,
}

impl LoadFailure {
    /// The kernel refused to load `program`.
    pub fn load(program: &'static str, error: &ProgramError) -> Self {
        match error {
            ProgramError::LoadError {
                io_error,
                verifier_log,
            } => {
                let log = verifier_log.to_string();
                Self {
                    program,
                    reason: format!("the kernel refused program `{program}` ({io_error})"),
                    verifier: verifier_verdict(&log),
                    log: (!log.trim().is_empty()).then_some(log),
                }
            }
            other => Self::other(
                program,
                format!("cannot load program `{program}`: {}", chain(other)),
            ),
        }
    }

    /// `program` could not be attached to `target`.
    pub fn attach(program: &'static str, target: &str, error: &ProgramError) -> Self {
        Self::other(
            program,
            format!(
                "cannot attach program `{program}` to {target}: {}",
                chain(error)
            ),
        )
    }

    /// `program` failed for a reason of the agent's own.
    pub fn other(program: &'static str, reason: String) -> Self {
        Self {
            program,
            reason,
            verifier: None,
            log: None,
        }
    }

    /// Appends the verifier's log, if there is one, to the file at `path`.
    pub fn write_log(&self, group: ProbeGroup, path: &Path) {
        let Some(log) = &self.log else {
            return;
        };
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut file| {
                writeln!(
                    file,
                    "=== program {} (group {}) ===\n{log}",
                    self.program,
                    group.name()
                )
            });
        if let Err(error) = written {
            warn!(
                "cannot write the verifier log to {}: {error}",
                path.display()
            );
        }
    }
}

impl fmt::Display for LoadFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)?;
        if let Some(verdict) = &self.verifier {
            write!(f, "; verifier: \"{verdict}\"")?;
        }
        Ok(())
    }
}

/// An error and its sources, on one line: aya's attach errors name the file, and only their
/// source says what was wrong with it.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The line of a verifier log that says why the program was refused: the last one before the
/// statistics the verifier ends every log with, or the last statistics line if that is all
/// there is (as when the program is too large).
fn verifier_verdict(log: &str) -> Option<String> {
    let is_statistics = |line: &str| {
        ["verification time", "stack depth", "processed "]
            .iter()
            .any(|start| line.starts_with(start))
    };
    let lines: Vec<&str> = log
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect();
    lines
        .iter()
        .rev()
        .find(|line| !is_statistics(line))
        .or(lines.last())
        .map(|line| (*line).to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_verdict_is_the_line_before_the_statistics() {
        let log = "0: (b7) r0 = 0\n1: (85) call bpf_probe_read_user#112\n\
                   R2 unbounded memory access, use 'var &= const' or 'if (var < const)'\n\
                   verification time 21 usec\nstack depth 8\n\
                   processed 12 insns (limit 1000000) max_states_per_insn 0 total_states 1\n";
        assert_eq!(
            verifier_verdict(log).as_deref(),
            Some("R2 unbounded memory access, use 'var &= const' or 'if (var < const)'")
        );
        let too_large = "BPF program is too large. Processed 1000001 insn\n\
                         verification time 8352319 usec\nstack depth 376+0+24\n\
                         processed 1000001 insns (limit 1000000) max_states_per_insn 29\n";
        assert_eq!(
            verifier_verdict(too_large).as_deref(),
            Some("BPF program is too large. Processed 1000001 insn")
        );
        let stats_only = "processed 5 insns (limit 1000000)\n";
        assert_eq!(
            verifier_verdict(stats_only).as_deref(),
            Some("processed 5 insns (limit 1000000)")
        );
        assert_eq!(verifier_verdict("\n"), None);
    }

    #[test]
    fn a_failure_reads_as_one_line() {
        let failure = LoadFailure {
            program: "syscalls_exit_recvmmsg",
            reason: "the kernel refused program `syscalls_exit_recvmmsg` (Argument list too long)"
                .to_owned(),
            verifier: Some("BPF program is too large. Processed 1000001 insn".to_owned()),
            log: Some("a\nlong\nlog\n".to_owned()),
        };
        let shown = failure.to_string();
        assert!(!shown.contains('\n'), "{shown}");
        assert!(shown.ends_with("verifier: \"BPF program is too large. Processed 1000001 insn\""));
    }

    #[test]
    fn the_log_is_appended_to_the_requested_file() {
        let path = std::env::temp_dir().join(format!("apiscope-verifier-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let failure = LoadFailure {
            program: "syscalls_exit_recvmmsg",
            reason: String::new(),
            verifier: None,
            log: Some("0: (b7) r0 = 0\nprocessed 1 insns\n".to_owned()),
        };
        failure.write_log(ProbeGroup::BatchedMessages, &path);
        failure.write_log(ProbeGroup::BatchedMessages, &path);
        let written = std::fs::read_to_string(&path).expect("log written");
        let _ = std::fs::remove_file(&path);
        assert_eq!(
            written
                .matches("=== program syscalls_exit_recvmmsg (group batched_messages) ===")
                .count(),
            2,
            "{written}"
        );
        assert!(written.contains("processed 1 insns"), "{written}");
    }
}
