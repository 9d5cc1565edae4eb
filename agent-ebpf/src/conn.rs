//! Per-socket state: first sight (with addresses read from the kernel socket), roles, TLS.

use agent_common::{
    ConnKey, ConnState, ConnectionEvent, Counter, EventKind, OwnTuple, PayloadPolicy, Role,
    SockOffsets, conn_flags,
    maps::{STDIO_FAMILY, STDIO_SOCK},
};
use aya_ebpf::helpers::{bpf_get_current_comm, bpf_probe_read_kernel, generated::bpf_ktime_get_ns};

use crate::{
    filter::port_traced,
    maps::{CONFIG, CONNS, EVENTS, OWN_TUPLES, PAYLOAD_POLICIES, count},
    record::wakeup_flags,
};

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const IPPROTO_TCP: u16 = 6;

/// Remembers the role an fd got from `connect` or `accept`; the socket itself is only known at
/// its first I/O.
#[inline(always)]
pub fn set_role(tgid: u32, fd: i32, role: Role) {
    let state = ConnState {
        sock: 0,
        role: role as u32,
        flags: 0,
        offsets: [0; 2],
        handshake_seen: 0,
        handshake_wanted: 0,
    };
    let _ = CONNS.insert(&ConnKey { tgid, fd }, &state, 0);
}

/// Forgets an fd at `close`; returns the socket it held if it was announced to userspace.
#[inline(always)]
pub fn forget(tgid: u32, fd: i32) -> Option<u64> {
    let key = ConnKey { tgid, fd };
    // SAFETY: value copied out before the entry is removed.
    let state = unsafe { *CONNS.get(&key)? };
    let _ = CONNS.remove(&key);
    if state.flags & POLICY_FLAGS != 0 || PAYLOAD_POLICIES.get_ptr(&key).is_some() {
        let _ = PAYLOAD_POLICIES.remove(&key);
    }
    (state.flags & conn_flags::ANNOUNCED != 0).then_some(state.sock)
}

/// The state of `fd`'s current socket, creating it (and announcing it to userspace) when the fd
/// is new or now holds another socket. `None` for sockets that are not TCP over IPv4/IPv6.
#[inline(always)]
pub fn current(tgid: u32, fd: i32, sock: u64) -> Option<*mut ConnState> {
    let key = ConnKey { tgid, fd };
    let role = match CONNS.get_ptr_mut(&key) {
        // SAFETY: map value pointer, valid for the program's run.
        Some(state) if unsafe { (*state).sock } == sock => {
            // SAFETY: as above.
            return (unsafe { (*state).flags } & conn_flags::IGNORED == 0).then_some(state);
        }
        // connect/accept seen, socket not yet: keep the role they gave.
        // SAFETY: as above.
        Some(state) if unsafe { (*state).sock } == 0 => unsafe { (*state).role },
        // A process's stdio serves the agent that started it.
        _ if sock == STDIO_SOCK => Role::Server as u32,
        // Opened before the agent started, or the fd was reused unseen (dup2).
        _ => Role::Unknown as u32,
    };
    let announced = if sock == STDIO_SOCK {
        send_connection(tgid, fd, sock, role, STDIO_FAMILY, [[0; 16]; 2], [0; 2]);
        Some(())
    } else {
        announce(tgid, fd, sock, role)
    };
    let flags = match announced {
        Some(()) => conn_flags::ANNOUNCED,
        None => conn_flags::IGNORED,
    };
    let state = ConnState {
        sock,
        role,
        flags,
        offsets: [0; 2],
        handshake_seen: 0,
        handshake_wanted: 0,
    };
    let _ = CONNS.insert(&key, &state, 0);
    let state = CONNS.get_ptr_mut(&key)?;
    (flags & conn_flags::IGNORED == 0).then_some(state)
}

/// The flags set from userspace's payload policies.
const POLICY_FLAGS: u32 = conn_flags::MUTED | conn_flags::FRAMED;

/// The connection's flags, with the payload policy userspace set for it ([`conn_flags::MUTED`]
/// or [`conn_flags::FRAMED`]). The map is read until the connection is muted; the state's
/// flags answer from then on.
#[inline(always)]
pub fn flags_with_policy(tgid: u32, fd: i32, state: *mut ConnState) -> u32 {
    // SAFETY: map value pointer, valid for the program's run.
    let (flags, sock) = unsafe { ((*state).flags, (*state).sock) };
    // Muted is final; framed (which the kernel may have guessed) can still turn into muted.
    if flags & conn_flags::MUTED != 0 {
        return flags;
    }
    // SAFETY: plain value read.
    let policy_flag = match unsafe { PAYLOAD_POLICIES.get(&ConnKey { tgid, fd }) } {
        Some(entry) if entry.sock == sock && entry.policy == PayloadPolicy::Mute as u32 => {
            conn_flags::MUTED
        }
        Some(entry) if entry.sock == sock && entry.policy == PayloadPolicy::Framed as u32 => {
            conn_flags::FRAMED
        }
        _ => return flags,
    };
    if flags & policy_flag == 0 {
        // SAFETY: as above.
        unsafe { (*state).flags |= policy_flag };
    }
    flags | policy_flag
}

/// Marks the connection framed when its first bytes in a direction are HTTP/2's: the client
/// preface (`PRI * HTTP/2.0`) on a new connection, or, on one whose start was not seen (the
/// role is unknown: it predates the agent), an HTTP/2 frame header of a type that carries
/// traffic. Calls right after are then copied whole without waiting for userspace, which finds
/// the protocol too and mutes the connection if the guess was wrong.
#[inline(always)]
pub fn sniff_framed(state: *mut ConnState, first: Option<[u8; 9]>) {
    let Some(first) = first else {
        return;
    };
    // SAFETY: map value pointer, valid for the program's run.
    let unseen_start = unsafe { (*state).role } == Role::Unknown as u32;
    if first[..3] == *b"PRI" || (unseen_start && looks_like_frame_header(&first)) {
        // SAFETY: as above.
        unsafe { (*state).flags |= conn_flags::FRAMED };
    }
}

/// A DATA, HEADERS, SETTINGS, PING or WINDOW_UPDATE frame header of at most 16 KiB, with the
/// reserved bit clear.
#[inline(always)]
fn looks_like_frame_header(header: &[u8; 9]) -> bool {
    let [l0, l1, _, kind, _, s0, _, _, _] = *header;
    l0 == 0 && l1 <= 0x40 && matches!(kind, 0 | 1 | 4 | 6 | 8) && s0 & 0x80 == 0
}

/// Counts `len` more bytes in `direction` of the connection; returns where they start.
#[inline(always)]
pub fn advance(state: *mut ConnState, direction: u32, len: u64) -> u64 {
    let slot = (direction & 1) as usize;
    // SAFETY: map value pointer, valid for the program's run; `slot` is 0 or 1.
    unsafe {
        let offset = (*state).offsets[slot];
        (*state).offsets[slot] = offset.wrapping_add(len);
        offset
    }
}

/// Reads a field of the kernel socket at a BTF-derived offset.
#[inline(always)]
fn field<T>(sock: u64, offset: u32) -> Option<T> {
    // SAFETY: kernel read through the helper, which tolerates bad addresses.
    unsafe { bpf_probe_read_kernel((sock + offset as u64) as *const T).ok() }
}

/// Sends the connection record; `None` if the socket is not TCP over IPv4/IPv6.
#[inline(always)]
fn announce(tgid: u32, fd: i32, sock: u64, role: u32) -> Option<()> {
    let config = CONFIG.get(0)?;
    let offsets: SockOffsets = config.sock;
    let family: u16 = field(sock, offsets.family)?;
    if family != AF_INET && family != AF_INET6 {
        return None;
    }
    let protocol: u16 = field(sock, offsets.protocol)?;
    if protocol != IPPROTO_TCP {
        return None;
    }
    let local_port: u16 = field(sock, offsets.local_port)?;
    let peer_port: u16 = field(sock, offsets.peer_port)?;
    let mut local_addr = [0u8; 16];
    let mut peer_addr = [0u8; 16];
    if family == AF_INET {
        let local: [u8; 4] = field(sock, offsets.local_addr4)?;
        let peer: [u8; 4] = field(sock, offsets.peer_addr4)?;
        local_addr[..4].copy_from_slice(&local);
        peer_addr[..4].copy_from_slice(&peer);
    } else {
        local_addr = field(sock, offsets.local_addr6)?;
        peer_addr = field(sock, offsets.peer_addr6)?;
    }
    let peer_port = u16::from_be(peer_port);
    if !port_traced(config, local_port, peer_port) {
        return None;
    }
    let from_agent_side = OwnTuple {
        family: family as u32,
        local_port: peer_port as u32,
        peer_port: local_port as u32,
        reserved: 0,
        local_addr: peer_addr,
        peer_addr: local_addr,
    };
    // SAFETY: plain value read.
    if unsafe { OWN_TUPLES.get(&from_agent_side) }.is_some() {
        // The far end of one of the agent's own connections (its exports): never traced.
        return None;
    }
    send_connection(
        tgid,
        fd,
        sock,
        role,
        family as u32,
        [local_addr, peer_addr],
        [local_port as u32, peer_port as u32],
    );
    Some(())
}

/// Sends a connection record: addresses and ports are this end's, then the peer's. The record
/// is written in place in the ring buffer: built on the stack, it would take a quarter of the
/// 512 bytes every program and its loop callbacks share.
#[inline(always)]
fn send_connection(
    tgid: u32,
    fd: i32,
    sock: u64,
    role: u32,
    family: u32,
    [local_addr, peer_addr]: [[u8; 16]; 2],
    [local_port, peer_port]: [u32; 2],
) {
    let Some(mut entry) = EVENTS.reserve::<ConnectionEvent>(0) else {
        count(Counter::RingBufferFull);
        return;
    };
    let event = entry.as_mut_ptr();
    // SAFETY: `event` points at the reserved record, written whole before it is submitted.
    unsafe {
        (*event).kind = EventKind::Connection as u32;
        (*event).role = role;
        (*event).tgid = tgid;
        (*event).fd = fd;
        (*event).sock = sock;
        (*event).family = family;
        (*event).local_port = local_port;
        (*event).peer_port = peer_port;
        (*event).reserved = 0;
        (*event).local_addr = local_addr;
        (*event).peer_addr = peer_addr;
        (*event).ts_ns = bpf_ktime_get_ns();
        (*event).comm = bpf_get_current_comm().unwrap_or([0; 16]);
    }
    entry.submit(wakeup_flags());
    count(Counter::EventsSent);
}
