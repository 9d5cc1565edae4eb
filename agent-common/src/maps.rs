//! Keys and values of the maps userspace also reads or writes.

/// Key of the `CONNS` map: one socket fd in one process.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnKey {
    /// Process id.
    pub tgid: u32,
    /// Socket fd.
    pub fd: i32,
}

/// A file of code (an executable, or a library mapped as code) as the kernel names it: the
/// `s_dev` of its filesystem (the kernel's own encoding, not `stat`'s) and its inode number.
/// Keys the `KNOWN_EXECUTABLES` map, whose entries userspace only ever copies from
/// [`crate::ExecEvent::executable`], so the two encodings never meet.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ExecutableKey {
    /// `inode->i_sb->s_dev`.
    pub dev: u32,
    /// Zero.
    pub reserved: u32,
    /// `inode->i_ino`.
    pub ino: u64,
}

/// How the file names of OpenSSL's shared copies start (`libssl.so.3`, and the renamed copies
/// Python wheels carry, `libssl-1a2b3c4d.so.1.1`): the libraries userspace inspects, and the
/// ones a process is held for when it maps one new to the agent.
pub const OPENSSL_FILE_PREFIXES: [&str; 2] = ["libssl.so", "libssl-"];
/// How the file names of GnuTLS's shared copies start, as [`OPENSSL_FILE_PREFIXES`].
pub const GNUTLS_FILE_PREFIXES: [&str; 1] = ["libgnutls.so"];

/// The `sock` of a process's stdio connection (its fd 0 and fd 1 taken as one), which has no
/// kernel socket: kernel addresses are never this small.
pub const STDIO_SOCK: u64 = 1;
/// The fd a stdio connection is keyed and announced by: never a real fd, so that closing or
/// reusing fd 0 does not touch it.
pub const STDIO_FD: i32 = -2;
/// [`crate::ConnectionEvent::family`] of a stdio connection (`AF_UNSPEC`): it has no addresses.
pub const STDIO_FAMILY: u32 = 0;

/// Slots of the `TAIL_CALLS` program array: the programs syscall exits hand work over to, so
/// that it is verified (and can fail to load) apart from the exits themselves.
pub mod tail_calls {
    /// Copies the start of a TLS handshake (the ClientHello, for the JA4 fingerprint).
    pub const HANDSHAKE_COPY: u32 = 0;
    /// Number of slots.
    pub const COUNT: u32 = 1;
}

/// Bits of [`ConnState::flags`].
pub mod conn_flags {
    /// A [`crate::ConnectionEvent`] was sent for `ConnState::sock`.
    pub const ANNOUNCED: u32 = 1 << 0;
    /// Not a TCP socket over IPv4/IPv6: no data is sent for it.
    pub const IGNORED: u32 = 1 << 1;
    /// Carries TLS: the syscall bytes are ciphertext and are not sent; the plaintext comes from
    /// the OpenSSL probes.
    pub const TLS: u32 = 1 << 2;
    /// Some payload has been seen, so the TLS-record sniff of the first bytes is done.
    pub const SNIFFED: u32 = 1 << 3;
    /// Userspace muted the socket (its `PAYLOAD_POLICIES` entry names it): bytes are counted,
    /// not copied.
    pub const MUTED: u32 = 1 << 4;
    /// Userspace found a framed protocol on the socket (its `PAYLOAD_POLICIES` entry names it):
    /// a call's bytes are copied up to `CaptureConfig::framed_cap`, in as many records as that
    /// takes, not only up to the capture cap.
    pub const FRAMED: u32 = 1 << 5;
}

/// What userspace wants copied of a socket's payload.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PayloadPolicy {
    /// Nothing: no decoder wants the connection.
    Mute = 1,
    /// Every byte up to `CaptureConfig::framed_cap` per call: the protocol frames its stream
    /// (HTTP/2), so a lost frame header loses the rest of the connection.
    Framed = 2,
}

/// Value of the `PAYLOAD_POLICIES` map, keyed by [`ConnKey`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PolicyEntry {
    /// The socket the fd held when the policy was set: a reused fd holds another socket, which
    /// the policy does not apply to.
    pub sock: u64,
    /// [`PayloadPolicy`] as `u32`.
    pub policy: u32,
    /// Zero.
    pub reserved: u32,
}

/// Value of the `CONNS` map: what the kernel side knows about one socket fd.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ConnState {
    /// The socket last seen on this fd; 0 until the first I/O after `connect`/`accept`.
    pub sock: u64,
    /// [`crate::Role`] as `u32`.
    pub role: u32,
    /// [`conn_flags`] bits.
    pub flags: u32,
    /// Bytes moved so far in each direction (indexed by `Direction`), counted whether or not
    /// their records reached userspace: a lost record shows there as a jump in offsets.
    pub offsets: [u64; 2],
    /// Ciphertext bytes received so far that were copied as the start of the TLS handshake
    /// (records flagged [`crate::data_flags::TLS_HANDSHAKE`]).
    pub handshake_seen: u32,
    /// How many of the first received ciphertext bytes are wanted: the first TLS record, within
    /// a cap. Zero until the first record is seen.
    pub handshake_wanted: u32,
}

/// Key of the `OWN_TUPLES` map: one of the agent's own TCP connections, from the agent's end.
/// Addresses are in network byte order (IPv4 in the first four bytes), ports in host order.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct OwnTuple {
    /// `AF_INET` or `AF_INET6`.
    pub family: u32,
    /// The agent's port.
    pub local_port: u32,
    /// The peer's port.
    pub peer_port: u32,
    /// Zero.
    pub reserved: u32,
    /// The agent's address.
    pub local_addr: [u8; 16],
    /// The peer's address.
    pub peer_addr: [u8; 16],
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain `#[repr(C)]` integers, no padding, every bit pattern valid.
    unsafe impl aya::Pod for super::ConnKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ConnState {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PolicyEntry {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ExecutableKey {}
}
