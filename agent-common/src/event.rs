//! Records the eBPF programs write into the shared ring buffer.
//!
//! Every record starts with a `u32` [`EventKind`] so userspace can tell them apart before it
//! knows their size.

/// Largest payload one data record can carry. The runtime capture cap
/// ([`crate::CaptureConfig::capture_cap`]) is clamped to this.
pub const MAX_PAYLOAD: usize = 32 * 1024;

/// Most records one call of a framed connection is cut into: `CaptureConfig::framed_cap` is
/// at most this many times [`MAX_PAYLOAD`].
pub const MAX_FRAMED_RECORDS: u32 = 64;

/// Size of the per-CPU scratch area that payloads are assembled in. Twice [`MAX_PAYLOAD`] so the
/// verifier can prove that "any offset up to MAX_PAYLOAD plus any length up to MAX_PAYLOAD" stays
/// inside the buffer while iovecs are copied one after another.
pub const SCRATCH_PAYLOAD: usize = 2 * MAX_PAYLOAD;

/// [`DataHeader::offset`] when the kernel side did not count the connection's bytes.
pub const UNKNOWN_OFFSET: u64 = u64::MAX;

/// Length of a task's `comm`, as the kernel defines it.
pub const COMM_LEN: usize = 16;

/// Stable identifiers of the ring-buffer records. Values never change meaning.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A [`DataEvent`]: bytes sent or received on a socket, or a known gap.
    Data = 1,
    /// A [`ConnectionEvent`]: first sight of a socket, with its addresses.
    Connection = 2,
    /// A [`LifecycleEvent`]: a tracked socket was closed.
    Close = 3,
    /// An [`ExecEvent`]: a process called `execve`.
    ProcessExec = 4,
    /// A [`LifecycleEvent`]: a process exited.
    ProcessExit = 5,
    /// An [`ExecEvent`] without a path: a process mapped a file userspace has not inspected
    /// as code (a library), and was held for it.
    LibraryMapped = 6,
}

impl EventKind {
    /// Maps a raw record tag back to its kind; `None` for tags this build does not know.
    pub fn from_u32(raw: u32) -> Option<Self> {
        match raw {
            1 => Some(Self::Data),
            2 => Some(Self::Connection),
            3 => Some(Self::Close),
            4 => Some(Self::ProcessExec),
            5 => Some(Self::ProcessExit),
            6 => Some(Self::LibraryMapped),
            _ => None,
        }
    }
}

/// Which way the bytes went, seen from the traced process.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// The process sent the bytes.
    Egress = 0,
    /// The process received the bytes.
    Ingress = 1,
}

/// Which end of the connection the traced process is.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Opened before the agent started, or reused in a way the agent did not see.
    Unknown = 0,
    /// The process called `connect`.
    Client = 1,
    /// The process got the socket from `accept`.
    Server = 2,
}

/// Bits of [`DataHeader::flags`].
pub mod data_flags {
    /// Plaintext taken from an OpenSSL call rather than from the socket syscall.
    pub const TLS: u32 = 1 << 0;
    /// The bytes moved inside the kernel (`sendfile`, `splice`): `len` counts them, none are
    /// captured. Keeps the stream offsets aligned.
    pub const GAP: u32 = 1 << 1;
    /// At least one user-memory read failed while copying the payload; `captured` holds what was
    /// copied before the failure.
    pub const READ_FAILED: u32 = 1 << 2;
    /// More iovecs (or messages) than the kernel side walks: the rest of `len` is not captured.
    pub const IOV_TRUNCATED: u32 = 1 << 3;
    /// The first ciphertext bytes a TLS connection received, its peer's first handshake record
    /// (a ClientHello when the process serves): not stream data, `offset` counts within the
    /// handshake. Sent whatever the payload policy, for the client's TLS fingerprint.
    pub const TLS_HANDSHAKE: u32 = 1 << 4;
}

/// Fixed part of a data record; `captured` payload bytes follow it in the ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct DataHeader {
    /// Always [`EventKind::Data`].
    pub kind: u32,
    /// [`Direction`] as `u32`.
    pub direction: u32,
    /// [`data_flags`] bits.
    pub flags: u32,
    /// Process id (thread-group id).
    pub tgid: u32,
    /// Thread id.
    pub tid: u32,
    /// File descriptor of the socket in `tgid`.
    pub fd: i32,
    /// Kernel address of the socket's `struct sock`; identifies the socket while it lives. Zero for
    /// records that come from an OpenSSL call, where only the fd is known. Never exported.
    pub sock: u64,
    /// Bytes the call really moved (the original length, before the capture cap).
    pub len: u64,
    /// Payload bytes that follow this header (at most the capture cap).
    pub captured: u32,
    /// Keeps `ts_ns` 8-byte aligned without implicit padding.
    pub reserved: u32,
    /// Position of the first byte in this direction of the connection, counted by the kernel;
    /// [`UNKNOWN_OFFSET`] when the kernel side has no state for the connection.
    pub offset: u64,
    /// `CLOCK_MONOTONIC` time at the end of the call, in nanoseconds.
    pub ts_ns: u64,
    /// The thread's `comm`, NUL padded.
    pub comm: [u8; COMM_LEN],
}

/// A data record as the kernel assembles it in its per-CPU scratch buffer. Only the header and
/// the first `captured` payload bytes are copied into the ring buffer.
#[repr(C)]
pub struct DataEvent {
    /// Fixed part.
    pub header: DataHeader,
    /// Payload bytes, see [`SCRATCH_PAYLOAD`] for why it is twice the largest payload.
    pub payload: [u8; SCRATCH_PAYLOAD],
}

/// First sight of a TCP socket in a traced process, with both addresses read from the kernel's
/// socket. Sent once per (process, fd, socket).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ConnectionEvent {
    /// Always [`EventKind::Connection`].
    pub kind: u32,
    /// [`Role`] as `u32`.
    pub role: u32,
    /// Process id.
    pub tgid: u32,
    /// Socket fd in `tgid`.
    pub fd: i32,
    /// Kernel address of the `struct sock`, as in [`DataHeader::sock`].
    pub sock: u64,
    /// `AF_INET` or `AF_INET6`.
    pub family: u32,
    /// Local port, host byte order.
    pub local_port: u32,
    /// Peer port, host byte order.
    pub peer_port: u32,
    /// Keeps the addresses 8-byte aligned without implicit padding.
    pub reserved: u32,
    /// Local address: 4 bytes used for IPv4, 16 for IPv6, network order.
    pub local_addr: [u8; 16],
    /// Peer address, as `local_addr`.
    pub peer_addr: [u8; 16],
    /// `CLOCK_MONOTONIC` time of first sight.
    pub ts_ns: u64,
    /// The thread's `comm`, NUL padded.
    pub comm: [u8; COMM_LEN],
}

/// Longest executable path an [`ExecEvent`] carries, NUL included.
pub const EXEC_PATH_LEN: usize = 256;

/// A process called `execve`: which file it runs now. Read in the kernel because short-lived
/// processes are often gone before userspace could look at `/proc/PID/exe`. Also the record
/// of a library mapped as code and held for ([`EventKind::LibraryMapped`]), with no path.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExecEvent {
    /// [`EventKind::ProcessExec`] or [`EventKind::LibraryMapped`].
    pub kind: u32,
    /// Process id.
    pub tgid: u32,
    /// `CLOCK_MONOTONIC` time of the exec.
    pub ts_ns: u64,
    /// Bytes of `path` used, NUL excluded.
    pub path_len: u32,
    /// 1 when the process was stopped at this exec or mapping (the file was new to the agent,
    /// see [`crate::ExecutableKey`]) and waits in the `HELD` map for userspace to release it.
    pub held: u32,
    /// The executable's (or library's) file as the kernel names it; zero when it could not be
    /// read.
    pub executable: crate::ExecutableKey,
    /// The path given to `execve`, NUL terminated; empty for a library.
    pub path: [u8; EXEC_PATH_LEN],
}

/// A lifecycle record: a tracked socket closed, or a process exited.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct LifecycleEvent {
    /// [`EventKind::Close`] or [`EventKind::ProcessExit`].
    pub kind: u32,
    /// Process id.
    pub tgid: u32,
    /// Closed fd for [`EventKind::Close`]; -1 otherwise.
    pub fd: i32,
    /// Keeps `sock` 8-byte aligned without implicit padding.
    pub reserved: u32,
    /// The closed socket for [`EventKind::Close`]; 0 otherwise.
    pub sock: u64,
    /// `CLOCK_MONOTONIC` time of the event.
    pub ts_ns: u64,
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain `#[repr(C)]` integers and byte arrays, no padding, every bit pattern valid.
    unsafe impl aya::Pod for super::DataHeader {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ConnectionEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::LifecycleEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ExecEvent {}
}

const _: () = assert!(core::mem::size_of::<DataHeader>() == 80);
const _: () = assert!(core::mem::size_of::<ConnectionEvent>() == 96);
const _: () = assert!(core::mem::size_of::<LifecycleEvent>() == 32);
const _: () = assert!(core::mem::size_of::<ExecEvent>() == 40 + EXEC_PATH_LEN);
