//! The start of a TLS handshake, copied for the peer's fingerprint.
//!
//! A TLS connection's syscall bytes are ciphertext and are otherwise never sent. Its first
//! received record is the exception: on the serving end it is the client's ClientHello, from
//! which userspace computes the client's JA4 fingerprint. Only that record is copied (OpenSSL
//! reads its 5-byte header and its body in two calls, so a record may take two or more), within
//! [`HANDSHAKE_CAP`] bytes per connection.
//!
//! The copy is a program of its own, [`handshake_copy`], that syscall exits tail-call into: it
//! is verified apart from them, and if it does not load, the exits go on without it.

use agent_common::{ConnKey, ConnState, Direction, data_flags, maps::tail_calls};
use aya_ebpf::{macros::tracepoint, programs::TracePointContext};

use crate::{
    maps::{CONNS, HANDSHAKE_JOBS, IoShape, PendingIo, TAIL_CALLS},
    probes::syscalls::user_bytes,
    record::{DataRecord, DataSource},
};

/// Most handshake bytes copied per connection. A ClientHello with post-quantum key shares is
/// under 2 KiB; one larger than this is not fingerprinted.
const HANDSHAKE_CAP: u32 = 4096;
/// TLS record header: content type, version (2), length (2).
const RECORD_HEADER: u32 = 5;
/// Content type of a handshake record.
const CONTENT_HANDSHAKE: u8 = 0x16;
/// Handshake message type of a ClientHello.
const CLIENT_HELLO: u8 = 0x01;

/// A finished read on a TLS connection, handed to [`handshake_copy`].
#[repr(C)]
#[derive(Clone, Copy)]
pub struct HandshakeJob {
    /// The read, as its entry recorded it (with the socket).
    pending: PendingIo,
    /// `pid_tgid` of the reading thread.
    pid_tgid: u64,
    /// Bytes the read returned.
    result: i64,
    /// [`IoShape`] of the read, as `u32`.
    shape: u32,
    /// Zero.
    reserved: u32,
}

/// Hands a finished read of `result` bytes on a TLS connection to the handshake copy, if it may
/// add to the connection's first received record. Does not return when it does; returns at once
/// when there is nothing to copy or the copy is not loaded.
#[inline(always)]
pub fn hand_over(
    ctx: &TracePointContext,
    pid_tgid: u64,
    pending: &PendingIo,
    state: *mut ConnState,
    result: i64,
    shape: IoShape,
) {
    if pending.direction != Direction::Ingress as u32
        || result <= 0
        || pending.peek != 0
        || shape == IoShape::Mmsghdr
    {
        return;
    }
    // SAFETY: map value pointer, valid for the program's run.
    let (seen, wanted) = unsafe { ((*state).handshake_seen, (*state).handshake_wanted) };
    if wanted != 0 && seen >= wanted {
        return;
    }
    let Some(job) = HANDSHAKE_JOBS.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's slot of a per-CPU map; the tail-called program reads it on this CPU.
    unsafe {
        *job = HandshakeJob {
            pending: *pending,
            pid_tgid,
            result,
            shape: shape as u32,
            reserved: 0,
        };
        TAIL_CALLS.tail_call(ctx, tail_calls::HANDSHAKE_COPY);
    }
}

/// Tail-called by syscall exits (see [`hand_over`]): copies what a finished read adds to the
/// connection's first received record, if that record is still incomplete.
#[tracepoint]
pub fn handshake_copy(_ctx: TracePointContext) -> u32 {
    let Some(job) = HANDSHAKE_JOBS.get(0).copied() else {
        return 0;
    };
    let key = ConnKey {
        tgid: (job.pid_tgid >> 32) as u32,
        fd: job.pending.fd,
    };
    let Some(state) = CONNS.get_ptr_mut(&key) else {
        return 0;
    };
    let shape = if job.shape == IoShape::Iovec as u32 {
        IoShape::Iovec
    } else if job.shape == IoShape::Msghdr as u32 {
        IoShape::Msghdr
    } else {
        IoShape::Buffer
    };
    copy(&job, state, shape);
    0
}

#[inline(always)]
fn copy(job: &HandshakeJob, state: *mut ConnState, shape: IoShape) {
    // SAFETY: map value pointer, valid for the program's run.
    let (seen, wanted) = unsafe { ((*state).handshake_seen, (*state).handshake_wanted) };
    let started = wanted != 0;
    if started && seen >= wanted {
        return;
    }
    let room = if started {
        wanted - seen
    } else {
        HANDSHAKE_CAP
    };
    let len = job.result as u64;
    let source = DataSource {
        pid_tgid: job.pid_tgid,
        fd: job.pending.fd,
        sock: job.pending.sock,
        direction: job.pending.direction,
        flags: data_flags::TLS_HANDSHAKE,
        offset: seen as u64,
    };
    let Some(mut record) = DataRecord::start_within(source, len, room) else {
        return;
    };
    record.append(user_bytes(&job.pending, shape), 0, len);
    let wanted = if started {
        wanted
    } else {
        match first_record_length(&record) {
            Some(total) => total,
            None => {
                // Not a ClientHello arriving: nothing to fingerprint on this connection.
                // SAFETY: as above.
                unsafe {
                    (*state).handshake_wanted = 1;
                    (*state).handshake_seen = 1;
                }
                return;
            }
        }
    };
    let moved = if len > HANDSHAKE_CAP as u64 {
        HANDSHAKE_CAP
    } else {
        len as u32
    };
    // SAFETY: as above.
    unsafe {
        (*state).handshake_wanted = wanted;
        (*state).handshake_seen = seen.saturating_add(moved);
    }
    record.submit();
}

/// The length, header included and within the cap, of the handshake record that starts
/// `record`; `None` unless it is one that may hold a ClientHello.
#[inline(always)]
fn first_record_length(record: &DataRecord) -> Option<u32> {
    let [content, major, minor, high, low] = record.first_bytes::<5>()?;
    if content != CONTENT_HANDSHAKE || major != 0x03 || minor > 0x04 {
        return None;
    }
    if let Some([.., message]) = record.first_bytes::<6>()
        && message != CLIENT_HELLO
    {
        return None;
    }
    let total = RECORD_HEADER + ((high as u32) << 8 | low as u32);
    Some(if total > HANDSHAKE_CAP {
        HANDSHAKE_CAP
    } else {
        total
    })
}
