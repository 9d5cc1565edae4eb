//! TLS plaintext handed over by a library probe (OpenSSL, Go `crypto/tls`): counted on the
//! connection's own offsets and sent like the bytes of a plain socket call.

use agent_common::{
    ConnKey, ConnState, Counter, Direction, conn_flags, data_flags, event::UNKNOWN_OFFSET,
};

use crate::{
    conn::{advance, flags_with_policy, sniff_framed},
    maps::{CONNS, count},
    record::{DataRecord, DataSource, StashedRecord, UserBytes, send_stashed, submit_framed},
};

/// Where `len` plaintext bytes moved in `direction` on a TLS connection go: its state (when the
/// connection is known), its socket, the offset the bytes start at, and its flags.
struct Placement {
    state: Option<*mut ConnState>,
    sock: u64,
    offset: u64,
    flags: u32,
}

/// The [`Placement`] of `len` bytes moved in `direction` on `fd` of process `tgid`, counted on
/// the connection's offsets; `None` when the connection's payload is muted (counted).
#[inline(always)]
fn place(tgid: u32, fd: i32, direction: u32, len: u64) -> Option<Placement> {
    let Some(state) = CONNS.get_ptr_mut(&ConnKey { tgid, fd }) else {
        return Some(Placement {
            state: None,
            sock: 0,
            offset: UNKNOWN_OFFSET,
            flags: 0,
        });
    };
    let flags = flags_with_policy(tgid, fd, state);
    if flags & conn_flags::MUTED != 0 {
        count(Counter::PayloadMuted);
        return None;
    }
    Some(Placement {
        state: Some(state),
        // SAFETY: map value pointer, valid for the program's run.
        sock: unsafe { (*state).sock },
        offset: advance(state, direction, len),
        flags,
    })
}

/// Sends the `len` plaintext bytes at user address `buf` that the TLS connection on `fd` of the
/// calling process moved in `direction` (an `agent_common::Direction` as `u32`). On a TLS
/// connection the syscall bytes (ciphertext) are never counted, so these bytes carry the
/// connection's offsets.
#[inline(always)]
pub fn submit(pid_tgid: u64, fd: i32, direction: u32, buf: u64, len: u64) {
    let Some(place) = place((pid_tgid >> 32) as u32, fd, direction, len) else {
        return;
    };
    let source = DataSource {
        pid_tgid,
        fd,
        sock: place.sock,
        direction,
        flags: data_flags::TLS,
        offset: place.offset,
    };
    if place.flags & conn_flags::FRAMED != 0 {
        submit_framed(source, len, UserBytes::buffer(buf));
        return;
    }
    if let Some(mut record) = DataRecord::start(source, len) {
        record.append_user(buf, len);
        if let Some(state) = place.state
            && place.offset == 0
        {
            sniff_framed(state, record.first_bytes());
        }
        record.submit();
    }
}

/// Sends a memory-BIO write's plaintext, kept since the write (`record`), now that its socket
/// `fd` is known; counted on the connection's offsets like [`submit`].
#[inline(always)]
pub fn submit_stashed(pid_tgid: u64, fd: i32, record: *mut StashedRecord) {
    // SAFETY: `record` points to a map value, valid for the program's run.
    let len = unsafe { (*record).header.len };
    let Some(place) = place((pid_tgid >> 32) as u32, fd, Direction::Egress as u32, len) else {
        return;
    };
    if let Some(state) = place.state
        && place.offset == 0
    {
        // SAFETY: as above; 9 bytes are well inside the stash.
        sniff_framed(state, unsafe { StashedRecord::first_bytes(record) });
    }
    send_stashed(record, fd, place.sock, place.offset);
}
