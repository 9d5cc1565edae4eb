//! Every map of the kernel side, defined once.

use agent_common::{
    CaptureConfig, ConnKey, ConnState, Counter, DataEvent, ExecutableKey, OwnTuple, PolicyEntry,
    SocketLookup, maps::tail_calls,
};
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, ProgramArray, RingBuf},
};

use crate::{
    handshake::HandshakeJob,
    record::{FramedCall, IovecWalk, MessageWalk, StashedRecord},
};

/// [`SocketLookup`] as `u32`, set by userspace at load time (`agent_common::SOCKET_LOOKUP_GLOBAL`).
/// A frozen read-only global: the verifier knows its value and skips the path not in use.
#[unsafe(no_mangle)]
static SOCKET_LOOKUP: u32 = SocketLookup::Tracepoints as u32;

/// True when socket syscalls find their socket by walking the file table at exit.
#[inline(always)]
pub fn walks_fd_table() -> bool {
    // SAFETY: reads a plain global. The volatile read keeps the compiler from folding the
    // default value in: userspace sets the real one in the object before loading it.
    unsafe { core::ptr::read_volatile(&SOCKET_LOOKUP) == SocketLookup::FdTable as u32 }
}

/// Shape of the user memory a pending syscall moves, read at its exit.
#[repr(u32)]
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum IoShape {
    /// One contiguous buffer (`read`, `write`, `recvfrom`, `sendto`).
    Buffer = 0,
    /// An iovec array (`readv`, `writev`).
    Iovec = 1,
    /// A `struct msghdr` (`recvmsg`, `sendmsg`).
    Msghdr = 2,
    /// An array of `struct mmsghdr` (`recvmmsg`, `sendmmsg`).
    Mmsghdr = 3,
    /// Bytes that never pass through user memory (`sendfile`, `splice`).
    Gap = 4,
    /// Not I/O: a `connect` whose fd becomes a client connection on success.
    Connect = 5,
    /// The entry was missed (the call was already blocked when the agent attached); the socket
    /// tracepoint rebuilt the arguments from the saved user registers. Matches any data shape.
    Recovered = 6,
}

impl IoShape {
    /// True for the shapes whose bytes are read from user memory at exit.
    #[inline(always)]
    pub fn carries_user_data(self) -> bool {
        matches!(
            self,
            Self::Buffer | Self::Iovec | Self::Msghdr | Self::Mmsghdr
        )
    }
}

/// A socket syscall between its entry and its exit, keyed by thread.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PendingIo {
    /// User pointer: buffer, iovec array, msghdr or mmsghdr array, depending on `shape`.
    pub buf: u64,
    /// Buffer length, iovec count or message count, depending on `shape`.
    pub count: u64,
    /// The kernel socket, filled in by the `sock_*_length` tracepoints during the call. Stays 0
    /// when the fd is not a socket.
    pub sock: u64,
    /// The fd the call operates on.
    pub fd: i32,
    /// [`IoShape`] as `u32`.
    pub shape: u32,
    /// `agent_common::Direction` as `u32`.
    pub direction: u32,
    /// Non-zero when the receive only peeked (`MSG_PEEK`): the bytes will be read again.
    pub peek: u32,
}

/// An OpenSSL read or write between its entry and its return, keyed by thread.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PendingTls {
    /// The `SSL *`.
    pub ssl: u64,
    /// Plaintext buffer.
    pub buf: u64,
    /// `size_t *` where the `_ex` forms store the byte count; 0 for the plain forms.
    pub count_out: u64,
    /// Socket fd, learnt from the syscall the library makes inside the call; -1 until then.
    pub fd: i32,
    /// `agent_common::Direction` as `u32`, or [`HANDSHAKE`].
    pub direction: u32,
}

/// `PendingTls::direction` of a handshake (`SSL_do_handshake`): no data, only the binding of
/// the `SSL *` to the socket its nested syscalls use.
pub const HANDSHAKE: u32 = 2;

/// Value of the `SSL *` -> socket cache.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct TlsBinding {
    /// The socket the fd held when the binding was made: once the fd holds another socket (or
    /// none), the binding is stale, as when OpenSSL reuses a freed `SSL *` for a new connection.
    pub sock: u64,
    /// The socket fd.
    pub fd: i32,
    /// Zero.
    pub reserved: u32,
}

/// Key of the `SSL *` -> socket cache.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct TlsKey {
    /// Process id: the same `SSL *` value can exist in two processes.
    pub tgid: u64,
    /// The `SSL *`.
    pub ssl: u64,
}

/// A Go `crypto/tls` read or write between its entry and one of its return instructions.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PendingGoTls {
    /// Plaintext buffer.
    pub buf: u64,
    /// The socket fd behind the `*tls.Conn`.
    pub fd: i32,
    /// `agent_common::Direction` as `u32`.
    pub direction: u32,
}

/// Key of a pending Go TLS call: goroutines move between threads, so calls are keyed by the
/// goroutine (its `g` pointer) within the process.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct GoroutineKey {
    /// Process id.
    pub tgid: u64,
    /// The goroutine's `runtime.g` address.
    pub g: u64,
}

/// Sized by userspace at load time (`--ring-buffer-size`); this is only the default.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(8 * 1024 * 1024, 0);

/// The single [`CaptureConfig`], written by userspace before any program is attached.
#[map]
pub static CONFIG: Array<CaptureConfig> = Array::with_max_entries(1, 0);

/// Loss and health counters, indexed by [`Counter`].
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Counter::COUNT, 0);

/// Where a data record is assembled before it is copied into `EVENTS`: too large for the stack,
/// and too large for a per-CPU map (values are limited to 32 KiB there), so it is a plain array
/// with one slot per CPU, sized by userspace at load time.
#[map]
pub static SCRATCH: Array<DataEvent> = Array::with_max_entries(1, 0);

/// Loop state of an iovec walk (`record::append_iovecs`). Kept in a map rather than on the
/// stack: the verifier does not track map contents, so every iteration of the walk looks the
/// same to it and the loop body is verified about once, not once per distinct state.
#[map]
pub static IOVEC_WALKS: PerCpuArray<IovecWalk> = PerCpuArray::with_max_entries(1, 0);

/// Loop state of a framed call being cut into records (`record::submit_framed`), in a map for
/// the same reason as [`IOVEC_WALKS`].
#[map]
pub static FRAMED_CALLS: PerCpuArray<FramedCall> = PerCpuArray::with_max_entries(1, 0);

/// Loop state of a `recvmmsg`/`sendmmsg` walk (`record::submit_messages`).
#[map]
pub static MESSAGE_WALKS: PerCpuArray<MessageWalk> = PerCpuArray::with_max_entries(1, 0);

/// The TLS handshake read handed from a syscall exit to the handshake-copy program.
#[map]
pub static HANDSHAKE_JOBS: PerCpuArray<HandshakeJob> = PerCpuArray::with_max_entries(1, 0);

/// Programs the syscall exits tail-call into, by `agent_common::tail_calls` slot (userspace
/// fills them by the same numbers). A slot stays empty when
/// its program's group did not load; the tail call then falls through and the exit goes on
/// without it.
#[map]
pub static TAIL_CALLS: ProgramArray = ProgramArray::with_max_entries(tail_calls::COUNT, 0);

/// Socket syscalls in flight, by `pid_tgid`.
#[map]
pub static PENDING_IO: LruHashMap<u64, PendingIo> = LruHashMap::with_max_entries(16384, 0);

/// OpenSSL calls in flight, by `pid_tgid`.
#[map]
pub static PENDING_TLS: LruHashMap<u64, PendingTls> = LruHashMap::with_max_entries(16384, 0);

/// Per thread, the `SSL *` of a memory-BIO write (Node, Python `asyncio`) whose socket is not
/// known yet: the application sends its ciphertext itself, with the thread's next write to a
/// TLS socket, which tells it.
#[map]
pub static WAITING_WRITES: LruHashMap<u64, u64> = LruHashMap::with_max_entries(4096, 0);

/// The plaintext of each write in [`WAITING_WRITES`], copied when it was made: the caller may
/// free its buffer as soon as the data is in the BIO.
#[map]
pub static WAITING_PLAINTEXT: LruHashMap<u64, StashedRecord> = LruHashMap::with_max_entries(256, 0);

/// Go TLS calls between entry and return. An LRU: a goroutine that never returns (the
/// process died in the call) costs one slot until it is evicted.
#[map]
pub static PENDING_GO_TLS: LruHashMap<GoroutineKey, PendingGoTls> =
    LruHashMap::with_max_entries(16384, 0);

/// The socket each `SSL *` was last seen using, for reads OpenSSL serves from its own buffer
/// and for memory BIOs.
#[map]
pub static TLS_FDS: LruHashMap<TlsKey, TlsBinding> = LruHashMap::with_max_entries(65536, 0);

/// Per thread, the fd of the TLS socket whose ciphertext it read last outside any OpenSSL call:
/// where a memory-BIO `SSL *` (Node, Python `asyncio`) read next gets its bytes from. Taken by
/// the thread's next `SSL_read`, so one read binds at most one `SSL *`.
#[map]
pub static CIPHERTEXT_READS: LruHashMap<u64, i32> = LruHashMap::with_max_entries(16384, 0);

/// What the kernel side knows of each socket fd of a traced process.
#[map]
pub static CONNS: LruHashMap<ConnKey, ConnState> = LruHashMap::with_max_entries(65536, 0);

/// What userspace wants copied of a socket's payload (muted, or framed), per fd, naming the
/// socket the fd held (a reused fd holds another socket and is not covered). The kernel side
/// deletes entries at `close`.
#[map]
pub static PAYLOAD_POLICIES: LruHashMap<ConnKey, PolicyEntry> =
    LruHashMap::with_max_entries(65536, 0);

/// The agent's outgoing sockets between `connect` and the end of the handshake, by kernel
/// socket address (see `probes::own_traffic`).
#[map]
pub static OWN_SOCKETS: LruHashMap<u64, u8> = LruHashMap::with_max_entries(1024, 0);

/// The agent's established outgoing connections, from its end: the other end is never traced.
#[map]
pub static OWN_TUPLES: LruHashMap<OwnTuple, u8> = LruHashMap::with_max_entries(1024, 0);

/// Processes whose standard input and output are captured (MCP tool servers an agent talks to
/// over pipes), by process id; set by userspace when a process matches the stdio rules. An LRU
/// map: a process that exited unseen ages out.
#[map]
pub static STDIO_PROCESSES: LruHashMap<u32, u8> = LruHashMap::with_max_entries(4096, 0);

/// The fds of selected processes that hold their stdio wire, with the `agent_common::Direction` as `u32`
/// each carries; see `stdio`.
#[map]
pub static STDIO_FDS: LruHashMap<ConnKey, u32> = LruHashMap::with_max_entries(16384, 0);

/// `dup`-family calls of selected processes in flight, by `pid_tgid`.
#[map]
pub static PENDING_DUPS: LruHashMap<u64, PendingDup> = LruHashMap::with_max_entries(1024, 0);

/// The fds of a duplicating call, at its entry.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PendingDup {
    /// The fd duplicated.
    pub old: i32,
    /// The fd asked for (`dup2`, `dup3`), or -1.
    pub new: i32,
}

/// The selection rules' [`agent_common::Verdict`] per process (and thread) id; processes it
/// does not list follow `CaptureConfig::filter_mode`. Sized for a host's `pid_max` worth of
/// live processes.
#[map]
pub static PID_FILTER: HashMap<u32, u32> = HashMap::with_max_entries(65536, 0);

/// The selection rules' [`agent_common::Verdict`] per TCP port (local or peer); connections
/// with neither port listed follow `CaptureConfig::port_mode`.
#[map]
pub static PORT_FILTER: HashMap<u32, u32> = HashMap::with_max_entries(1024, 0);

/// Executables and libraries userspace has inspected for TLS stacks; an exec of any other file,
/// or a mapping of it as code, is held (`exec_hold`). Least recently used entries go first: a
/// file evicted is held once more.
#[map]
pub static KNOWN_EXECUTABLES: LruHashMap<ExecutableKey, u8> =
    LruHashMap::with_max_entries(16384, 0);

/// Processes stopped at exec or at a library's mapping, by process id, with the
/// `CLOCK_MONOTONIC` time of the stop:
/// what userspace and its release keeper continue. Small on purpose: when it is full, new
/// executables are not held.
#[map]
pub static HELD: HashMap<u32, u64> = HashMap::with_max_entries(256, 0);

/// Mappings of new files as code in flight, by `pid_tgid`: the file, from the `mmap` entry to
/// its exit (`exec_hold`).
#[map]
pub static PENDING_MAPPINGS: LruHashMap<u64, ExecutableKey> = LruHashMap::with_max_entries(1024, 0);

/// Adds one to a loss or health counter.
#[inline(always)]
pub fn count(counter: Counter) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
        unsafe { *slot += 1 };
    }
}
