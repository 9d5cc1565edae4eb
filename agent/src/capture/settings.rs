//! The `capture:` section of the configuration: what the kernel programs copy and how they
//! find their sockets.

use std::{path::PathBuf, time::Duration};

use agent_common::SocketLookup;
use serde::{Deserialize, Serialize};

use crate::settings_format;

/// `capture:` section.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct CaptureSettings {
    /// Payload bytes copied per socket call or OpenSSL call (1 to 32768). Bytes past the cap are
    /// counted but not captured.
    #[serde(deserialize_with = "settings_format::within::<_, _, 1, 32_768>")]
    pub capture_cap: u32,
    /// Payload bytes copied per call on connections of a framed protocol (HTTP/2, so gRPC),
    /// 32768 to 2097152: there a byte past the capture cap may be a frame header, and losing
    /// one loses the rest of the connection.
    #[serde(deserialize_with = "settings_format::within::<_, _, 32_768, 2_097_152>")]
    pub framed_cap: u32,
    /// Size in bytes of the ring buffer shared by all CPUs; a power of two (4 KiB to 1 GiB).
    #[serde(deserialize_with = "settings_format::within::<_, _, 4096, 1_073_741_824>")]
    pub ring_buffer_bytes: u32,
    /// Globs of the command lines (arguments joined by spaces) of processes whose standard
    /// input and output are captured: MCP tool servers that agents start and talk to over
    /// pipes, e.g. `*mcp-server-*`. Empty: no pipe is captured.
    pub stdio_commands: Vec<String>,
    /// How socket syscalls find their socket: `auto` (the socket tracepoints where the kernel
    /// has them, Linux 6.3+, else a walk of the file table), `tracepoints` or `fd_table`.
    pub socket_lookup: SocketLookupChoice,
    /// A file the verifier's whole log is appended to when the kernel refuses a program (the
    /// agent's log only gets its last word).
    pub verifier_log: Option<PathBuf>,
    /// The longest a process that runs an executable new to the agent, or maps a TLS library
    /// new to it, is held (stopped) at that exec or mapping, in milliseconds (0 to 2000), while
    /// the agent looks for TLS stacks in the file and attaches their uprobes, so that its first
    /// TLS calls are seen. 0 holds nothing.
    /// Processes with a controlling terminal are never held.
    #[serde(
        rename = "exec_hold_ms",
        deserialize_with = "settings_format::millis_within::<_, 0, 2000>",
        serialize_with = "settings_format::as_millis"
    )]
    pub exec_hold: Duration,
}

impl Default for CaptureSettings {
    fn default() -> Self {
        Self {
            capture_cap: 16 * 1024,
            framed_cap: 256 * 1024,
            ring_buffer_bytes: 8 * 1024 * 1024,
            stdio_commands: Vec::new(),
            socket_lookup: SocketLookupChoice::Auto,
            verifier_log: None,
            exec_hold: Duration::from_millis(200),
        }
    }
}

/// How socket syscalls find their socket (`capture.socket_lookup`).
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SocketLookupChoice {
    /// The best this kernel has.
    #[default]
    Auto,
    /// The `sock_send_length`/`sock_recv_length` tracepoints (Linux 6.3+).
    Tracepoints,
    /// A walk of the file table at syscall exit (any kernel).
    FdTable,
}

impl SocketLookupChoice {
    /// The lookup asked for; `None` for automatic.
    pub fn lookup(self) -> Option<SocketLookup> {
        match self {
            SocketLookupChoice::Auto => None,
            SocketLookupChoice::Tracepoints => Some(SocketLookup::Tracepoints),
            SocketLookupChoice::FdTable => Some(SocketLookup::FdTable),
        }
    }
}
