//! Settings userspace writes into the `CONFIG` map before it attaches any program.

/// How the pid and cgroup filter maps are read.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FilterMode {
    /// Trace every process except those listed in the deny maps.
    AllExceptDenied = 0,
    /// Trace only processes listed in the allow maps.
    OnlyAllowed = 1,
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
    /// `PID_FILTER` has entries.
    pub const PIDS: u32 = 1 << 0;
    /// `CGROUP_FILTER` has entries.
    pub const CGROUPS: u32 = 1 << 1;
}

/// The single value of the `CONFIG` array map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct CaptureConfig {
    /// The agent's own process id: never traced, so the agent cannot capture itself.
    pub agent_tgid: u32,
    /// Payload bytes copied per call, at most [`crate::event::MAX_PAYLOAD`].
    pub capture_cap: u32,
    /// [`FilterMode`] as `u32`.
    pub filter_mode: u32,
    /// [`filter_maps`] bits: which filter maps hold entries. The probes skip the lookups (and
    /// the cgroup id helper) for empty maps, since they run on every read and write of the host.
    pub filters: u32,
    /// Where the socket fields are.
    pub sock: SockOffsets,
    /// Payload bytes copied per call on connections of a framed protocol
    /// ([`crate::conn_flags::FRAMED`]), in records of at most [`crate::event::MAX_PAYLOAD`].
    pub framed_cap: u32,
    /// Zero.
    pub reserved: u32,
}

#[cfg(feature = "user")]
// SAFETY: plain `#[repr(C)]` integers, no padding, every bit pattern valid.
unsafe impl aya::Pod for CaptureConfig {}

const _: () = assert!(core::mem::size_of::<CaptureConfig>() == 56);
