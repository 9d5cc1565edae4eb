//! Types shared by apiscope's eBPF programs (`agent-ebpf`) and its userspace agent (`agent`).
//!
//! Everything here is `#[repr(C)]`, has no `bool` and no implicit padding, so that the kernel
//! and userspace agree byte for byte on every record and map value.
#![no_std]

pub mod config;
pub mod counters;
pub mod event;
pub mod go_tls;
pub mod maps;

pub use config::{
    CaptureConfig, ExecOffsets, FdTableOffsets, FilterMode, ForkOffsets, SOCKET_LOOKUP_GLOBAL,
    SockOffsets, SocketLookup, Verdict, filter_maps,
};
pub use counters::Counter;
pub use event::{
    ConnectionEvent, DataEvent, DataHeader, Direction, EventKind, ExecEvent, LifecycleEvent, Role,
    data_flags,
};
pub use maps::{
    ConnKey, ConnState, ExecutableKey, OwnTuple, PayloadPolicy, PolicyEntry, conn_flags,
};
