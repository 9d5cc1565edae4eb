//! Settings userspace writes into the `CONFIG` map before it attaches any program.

/// What the selection rules decided for a process (`PID_FILTER` values) or a port
/// (`PORT_FILTER` values).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Not captured.
    Skip = 0,
    /// Captured.
    Trace = 1,
    /// Just exec'd: not captured until userspace has matched its new executable against the
    /// rules (an excluded program must not leak its first calls).
    Pending = 2,
}

/// What happens to processes (or ports) no filter map entry lists.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FilterMode {
    /// Unlisted ones are captured: the rules only exclude.
    TraceUnlisted = 0,
    /// Unlisted ones are not captured: the rules include.
    SkipUnlisted = 1,
}

/// Byte offsets of the `struct sock` fields the programs read, taken by userspace from the
/// running kernel's BTF. aya's eBPF side has no CO-RE field relocations, so this is how the
/// programs stay correct across kernel builds.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockOffsets {
    /// `sk->__sk_common.skc_family` (u16).
    pub family: u32,
    /// `sk->__sk_common.skc_num`: local port, host order (u16).
    pub local_port: u32,
    /// `sk->__sk_common.skc_dport`: peer port, network order (u16).
    pub peer_port: u32,
    /// `sk->__sk_common.skc_rcv_saddr`: local IPv4 address.
    pub local_addr4: u32,
    /// `sk->__sk_common.skc_daddr`: peer IPv4 address.
    pub peer_addr4: u32,
    /// `sk->__sk_common.skc_v6_rcv_saddr`: local IPv6 address.
    pub local_addr6: u32,
    /// `sk->__sk_common.skc_v6_daddr`: peer IPv6 address.
    pub peer_addr6: u32,
    /// `sk->sk_protocol` (u16).
    pub protocol: u32,
}

/// Bits of [`CaptureConfig::filters`].
pub mod filter_maps {
    /// `PID_FILTER` decides which processes are captured: forks inherit their parent's entry,
    /// exits remove theirs.
    pub const PIDS: u32 = 1 << 0;
    /// `PORT_FILTER` decides which connections are captured.
    pub const PORTS: u32 = 1 << 1;
    /// Every exec makes its process [`super::Verdict::Pending`] and is reported, whatever the
    /// process's verdict was, so that userspace matches its new executable.
    pub const EXEC_GATE: u32 = 1 << 2;
}

/// The single value of the `CONFIG` array map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct CaptureConfig {
    /// The agent's own process id: never traced, so the agent cannot capture itself.
    pub agent_tgid: u32,
    /// Payload bytes copied per call, at most [`crate::event::MAX_PAYLOAD`].
    pub capture_cap: u32,
    /// [`FilterMode`] of processes `PID_FILTER` does not list, as `u32`.
    pub filter_mode: u32,
    /// [`filter_maps`] bits: which filter maps hold entries. The probes skip the lookups (and
    /// the cgroup id helper) for empty maps, since they run on every read and write of the host.
    pub filters: u32,
    /// Where the socket fields are.
    pub sock: SockOffsets,
    /// Payload bytes copied per call on connections of a framed protocol
    /// ([`crate::conn_flags::FRAMED`]), in records of at most [`crate::event::MAX_PAYLOAD`].
    pub framed_cap: u32,
    /// [`FilterMode`] of connections neither of whose ports `PORT_FILTER` lists, as `u32`.
    pub port_mode: u32,
}

#[cfg(feature = "user")]
// SAFETY: plain `#[repr(C)]` integers, no padding, every bit pattern valid.
unsafe impl aya::Pod for CaptureConfig {}

const _: () = assert!(core::mem::size_of::<CaptureConfig>() == 56);
