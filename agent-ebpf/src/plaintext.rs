//! TLS plaintext handed over by a library probe (OpenSSL, Go `crypto/tls`): counted on the
//! connection's own offsets and sent like the bytes of a plain socket call.

use agent_common::{ConnKey, Counter, Direction, conn_flags, data_flags, event::UNKNOWN_OFFSET};

use crate::{
    conn::{advance, flags_with_policy, sniff_framed},
    maps::{CONNS, count},
    record::{DataRecord, DataSource, StashedRecord, UserBytes, send_stashed, submit_framed},
};

/// Sends the `len` plaintext bytes at user address `buf` that the TLS connection on `fd` of the
/// calling process moved in `direction` (an `agent_common::Direction` as `u32`). On a TLS
/// connection the syscall bytes (ciphertext) are never counted, so these bytes carry the
/// connection's offsets.
#[inline(always)]
pub fn submit(pid_tgid: u64, fd: i32, direction: u32, buf: u64, len: u64) {
    let conn = ConnKey {
        tgid: (pid_tgid >> 32) as u32,
        fd,
    };
    let state = CONNS.get_ptr_mut(&conn);
    let (sock, offset, flags) = match state {
        Some(state) => {
            let flags = flags_with_policy(conn.tgid, fd, state);
            if flags & conn_flags::MUTED != 0 {
                count(Counter::PayloadMuted);
                return;
            }
            // SAFETY: map value pointer, valid for the program's run.
            let sock = unsafe { (*state).sock };
            (sock, advance(state, direction, len), flags)
        }
        None => (0, UNKNOWN_OFFSET, 0),
    };
    let source = DataSource {
        pid_tgid,
        fd,
        sock,
        direction,
        flags: data_flags::TLS,
        offset,
    };
    if flags & conn_flags::FRAMED != 0 {
        submit_framed(source, len, UserBytes::buffer(buf));
        return;
    }
    if let Some(mut record) = DataRecord::start(source, len) {
        record.append_user(buf, len);
        if let Some(state) = state
            && offset == 0
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
    let conn = ConnKey {
        tgid: (pid_tgid >> 32) as u32,
        fd,
    };
    // SAFETY: `record` points to a map value, valid for the program's run.
    let len = unsafe { (*record).header.len };
    let (sock, offset) = match CONNS.get_ptr_mut(&conn) {
        Some(state) => {
            if flags_with_policy(conn.tgid, fd, state) & conn_flags::MUTED != 0 {
                count(Counter::PayloadMuted);
                return;
            }
            let offset = advance(state, Direction::Egress as u32, len);
            if offset == 0 {
                // SAFETY: as above; 9 bytes are well inside the stash.
                sniff_framed(state, unsafe { StashedRecord::first_bytes(record) });
            }
            // SAFETY: map value pointer, valid for the program's run.
            (unsafe { (*state).sock }, offset)
        }
        None => (0, UNKNOWN_OFFSET),
    };
    send_stashed(record, fd, sock, offset);
}
