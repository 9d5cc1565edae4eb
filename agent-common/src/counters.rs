//! Loss and health counters the programs keep in the per-CPU `COUNTERS` array.

/// Index of each counter in the `COUNTERS` map. Values never change meaning.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Records written to the ring buffer.
    EventsSent = 0,
    /// Records lost because the ring buffer was full.
    RingBufferFull = 1,
    /// `bpf_probe_read_user` calls that failed (page not resident, bad pointer).
    UserReadFailed = 2,
    /// TLS library calls whose socket could not be found (OpenSSL: no nested syscall, no cached
    /// fd, no ciphertext read before or write after; Go: an fd the socket probes do not know).
    TlsCallWithoutFd = 3,
    /// OpenSSL calls whose nested syscall used another fd than the one cached for that SSL.
    TlsFdMismatch = 4,
    /// Data records whose iovecs or messages were not all walked.
    IovecTruncated = 5,
    /// Socket or OpenSSL calls whose payload was not copied because userspace muted the
    /// connection (no decoder wants it). Not a loss.
    PayloadMuted = 6,
    /// `SSL *` objects over memory BIOs (Node, Python `asyncio`) bound to the socket whose
    /// ciphertext their thread read just before. Not a loss.
    TlsBoundByRead = 7,
    /// Socket and OpenSSL calls of processes the selection rules exclude, skipped at entry.
    /// Not a loss.
    SelectionSkippedCalls = 8,
    /// Connections the selection rules exclude by port, never announced. Not a loss.
    SelectionSkippedConnections = 9,
    /// `SSL *` objects over memory BIOs bound to the socket their thread wrote ciphertext to
    /// right after their first write. Not a loss.
    TlsBoundByWrite = 10,
    /// Memory-BIO writes dropped because another `SSL *` of the same thread waited for the
    /// same ciphertext write: which socket is whose cannot be told.
    TlsWriteAmbiguous = 11,
    /// Processes stopped at exec because their executable was new to the agent, until their
    /// TLS uprobes were attached. Not a loss.
    ExecHeld = 12,
}

impl Counter {
    /// Every counter, in index order.
    pub const ALL: [Counter; 13] = [
        Counter::EventsSent,
        Counter::RingBufferFull,
        Counter::UserReadFailed,
        Counter::TlsCallWithoutFd,
        Counter::TlsFdMismatch,
        Counter::IovecTruncated,
        Counter::PayloadMuted,
        Counter::TlsBoundByRead,
        Counter::SelectionSkippedCalls,
        Counter::SelectionSkippedConnections,
        Counter::TlsBoundByWrite,
        Counter::TlsWriteAmbiguous,
        Counter::ExecHeld,
    ];

    /// Number of slots the `COUNTERS` map needs.
    pub const COUNT: u32 = Self::ALL.len() as u32;

    /// Stable snake_case name, used in logs and the agent's own metrics.
    pub fn name(self) -> &'static str {
        match self {
            Counter::EventsSent => "events_sent",
            Counter::RingBufferFull => "ring_buffer_full",
            Counter::UserReadFailed => "user_read_failed",
            Counter::TlsCallWithoutFd => "tls_call_without_fd",
            Counter::TlsFdMismatch => "tls_fd_mismatch",
            Counter::IovecTruncated => "iovec_truncated",
            Counter::PayloadMuted => "payload_muted",
            Counter::TlsBoundByRead => "tls_bound_by_read",
            Counter::SelectionSkippedCalls => "selection_skipped_calls",
            Counter::SelectionSkippedConnections => "selection_skipped_connections",
            Counter::TlsBoundByWrite => "tls_bound_by_write",
            Counter::TlsWriteAmbiguous => "tls_write_ambiguous",
            Counter::ExecHeld => "exec_held",
        }
    }
}
