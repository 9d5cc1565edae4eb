//! The far end of the agent's own connections. The agent never traces itself, but its exports
//! to a collector on the same host arrive in the collector's process, which is traced: decoding
//! them would make every export produce spans that are exported in turn, without end.
//!
//! `sock:inet_sock_set_state` reports each TCP state change with the socket's addresses. The
//! move to `SYN_SENT` runs in the connecting task, so the agent's outgoing sockets are known
//! there; at `ESTABLISHED` their addresses are final and recorded. That happens before the peer
//! can accept, so the other end's first I/O always finds the record (see `conn::announce`).
//!
//! The same move tells any traced `connect` which kernel socket it is connecting, so that the
//! connection is announced when `connect` returns (see `sock::note_connecting`).

use agent_common::OwnTuple;
use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid, macros::tracepoint, programs::TracePointContext,
};

use crate::maps::{CONFIG, OWN_SOCKETS, OWN_TUPLES};

/// Offsets in the `sock:inet_sock_set_state` record, as its format file lists them.
const SKADDR: usize = 8;
const NEWSTATE: usize = 20;
const SPORT: usize = 24;
const DPORT: usize = 26;
const FAMILY: usize = 28;
const PROTOCOL: usize = 30;
const SADDR: usize = 32;
const DADDR: usize = 36;
const SADDR_V6: usize = 40;
const DADDR_V6: usize = 56;

const TCP_ESTABLISHED: i32 = 1;
const TCP_SYN_SENT: i32 = 2;
const TCP_CLOSE: i32 = 7;
const IPPROTO_TCP: u16 = 6;
const AF_INET: u16 = 2;

/// Reads a field of the record.
#[inline(always)]
fn field<T>(ctx: &TracePointContext, offset: usize) -> Option<T> {
    // SAFETY: offsets of fields in the record, as its format file lists them.
    unsafe { ctx.read_at(offset) }.ok()
}

/// The record's connection as seen from its own end.
#[inline(always)]
fn tuple(ctx: &TracePointContext) -> Option<OwnTuple> {
    let family: u16 = field(ctx, FAMILY)?;
    let mut tuple = OwnTuple {
        family: family as u32,
        local_port: field::<u16>(ctx, SPORT)? as u32,
        peer_port: field::<u16>(ctx, DPORT)? as u32,
        reserved: 0,
        local_addr: [0; 16],
        peer_addr: [0; 16],
    };
    if family == AF_INET {
        let local: [u8; 4] = field(ctx, SADDR)?;
        let peer: [u8; 4] = field(ctx, DADDR)?;
        tuple.local_addr[..4].copy_from_slice(&local);
        tuple.peer_addr[..4].copy_from_slice(&peer);
    } else {
        tuple.local_addr = field(ctx, SADDR_V6)?;
        tuple.peer_addr = field(ctx, DADDR_V6)?;
    }
    Some(tuple)
}

/// `sock:inet_sock_set_state`: records the addresses of the agent's outgoing TCP connections.
#[tracepoint]
pub fn sock_enter_inet_set_state(ctx: TracePointContext) -> u32 {
    if field::<u16>(&ctx, PROTOCOL) != Some(IPPROTO_TCP) {
        return 0;
    }
    let (Some(state), Some(sock)) = (field::<i32>(&ctx, NEWSTATE), field::<u64>(&ctx, SKADDR))
    else {
        return 0;
    };
    match state {
        TCP_SYN_SENT => {
            super::sock::note_connecting(sock);
            let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
            if CONFIG
                .get(0)
                .is_some_and(|config| config.agent_tgid == tgid)
            {
                let _ = OWN_SOCKETS.insert(&sock, &0, 0);
            }
        }
        TCP_ESTABLISHED | TCP_CLOSE => {
            // SAFETY: plain value read.
            if unsafe { OWN_SOCKETS.get(&sock) }.is_none() {
                return 0;
            }
            let Some(tuple) = tuple(&ctx) else {
                return 0;
            };
            if state == TCP_ESTABLISHED {
                let _ = OWN_TUPLES.insert(&tuple, &0, 0);
            } else {
                let _ = OWN_SOCKETS.remove(&sock);
                let _ = OWN_TUPLES.remove(&tuple);
            }
        }
        _ => {}
    }
    0
}
