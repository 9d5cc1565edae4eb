//! Stdio selection: which processes have their standard input and output captured. An AI
//! agent starts its local MCP tool servers as child processes and talks to them over pipes;
//! capturing every process's pipes would copy every shell pipeline on the host, so only the
//! processes whose command line matches a configured glob are followed.
//!
//! Command lines may hold secrets (tokens passed as arguments): they are matched here and
//! never kept.

use std::{sync::mpsc, time::Duration};

use globset::{Glob, GlobMatcher};
use log::info;

use crate::{capture::StdioProcesses, enrich::ProcessIdentity};

/// How often running processes are matched again: an exec whose notice was dropped (queue full)
/// must not leave its process unfollowed for long.
const RESCAN_INTERVAL: Duration = Duration::from_secs(5);

/// The stdio capture globs, compiled.
#[derive(Debug, Clone, Default)]
pub struct StdioSelection {
    commands: Vec<GlobMatcher>,
}

impl StdioSelection {
    /// Compiles `globs` (matched against a process's arguments joined by spaces, e.g.
    /// `*mcp-server-*` or `python3 */tools_server.py*`); the error names the bad one.
    pub fn new(globs: &[String]) -> Result<Self, String> {
        let commands = globs
            .iter()
            .map(|glob| {
                Glob::new(glob)
                    .map(|glob| glob.compile_matcher())
                    .map_err(|error| format!("stdio command glob {glob:?}: {error}"))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { commands })
    }

    /// True when no process is selected.
    pub fn is_empty(&self) -> bool {
        self.commands.is_empty()
    }

    /// True when `pid`'s command line matches a glob (false once it is gone).
    pub fn matches(&self, pid: u32) -> bool {
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            return false;
        };
        self.matches_command_line(&cmdline)
    }

    fn matches_command_line(&self, cmdline: &[u8]) -> bool {
        let arguments: Vec<_> = cmdline
            .split(|byte| *byte == 0)
            .filter(|argument| !argument.is_empty())
            .map(String::from_utf8_lossy)
            .collect();
        let joined = arguments.join(" ");
        self.commands.iter().any(|glob| glob.is_match(&joined))
    }

    /// Follows the matching processes until `execs` ends: those running now, each process
    /// that execs, and every running one again each [`RESCAN_INTERVAL`].
    pub fn run(
        self,
        mut followed: StdioProcesses,
        execs: mpsc::Receiver<std::sync::Arc<ProcessIdentity>>,
    ) {
        let own = std::process::id();
        let scan = |followed: &mut StdioProcesses| {
            for pid in crate::capture::running_pids().filter(|pid| *pid != own) {
                if self.matches(pid) && followed.add(pid) {
                    info!("stdio capture: following process {pid}");
                }
            }
        };
        scan(&mut followed);
        loop {
            match execs.recv_timeout(RESCAN_INTERVAL) {
                Ok(identity) => {
                    if self.matches(identity.pid) && followed.add(identity.pid) {
                        info!("stdio capture: following process {}", identity.pid);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => scan(&mut followed),
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::StdioSelection;

    #[test]
    fn globs_match_the_arguments_joined_by_spaces() {
        let selection = StdioSelection::new(&["*tools_server.py --stdio*".to_owned()]).unwrap();
        assert!(selection.matches_command_line(b"python3\0/srv/tools_server.py\0--stdio\0"));
        assert!(!selection.matches_command_line(b"python3\0/srv/tools_server.py\0--port\x008\0"));
        assert!(!selection.matches_command_line(b""));
    }

    #[test]
    fn a_bad_glob_is_named() {
        let error = StdioSelection::new(&["[unclosed".to_owned()]).unwrap_err();
        assert!(error.contains("[unclosed"), "{error}");
    }
}
