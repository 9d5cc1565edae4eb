//! Uprobes on OpenSSL's `SSL_read`, `SSL_write`, `SSL_read_ex`, `SSL_write_ex` and
//! `SSL_do_handshake`.
//!
//! Entry remembers the buffer per thread; the socket syscall OpenSSL makes inside the call tells
//! which fd it is (see `syscalls::complete`); the return probe copies the plaintext actually
//! transferred. Reads served from OpenSSL's own buffer make no syscall: the last fd of that
//! `SSL *` is used then. Over a memory BIO (Node, Python `asyncio`) OpenSSL makes no syscall at
//! all: the application moves the ciphertext itself, so such an `SSL *` is bound to the socket
//! its thread read ciphertext from just before its first read, or wrote ciphertext to just
//! after its first write (a client writes its request before it reads anything).

use agent_common::{ConnKey, Counter, Direction, data_flags, event::UNKNOWN_OFFSET};
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user},
    macros::{uprobe, uretprobe},
    programs::{ProbeContext, RetProbeContext},
};
use aya_log_ebpf::debug;

use crate::{
    filter::is_traced,
    maps::{
        CIPHERTEXT_READS, CONNS, HANDSHAKE, PENDING_TLS, PendingTls, TLS_FDS, TlsBinding, TlsKey,
        WAITING_PLAINTEXT, WAITING_WRITES, count,
    },
    plaintext,
    record::{DataRecord, DataSource, STASHED_PAYLOAD},
};

/// Remembers a call at its entry; `direction` is a `Direction` as `u32`, or [`HANDSHAKE`].
#[inline(always)]
fn enter(ctx: &ProbeContext, direction: u32, extended: bool) {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !is_traced((pid_tgid >> 32) as u32) {
        return;
    }
    let pending = PendingTls {
        ssl: ctx.arg(0).unwrap_or(0),
        buf: if direction == HANDSHAKE {
            0
        } else {
            ctx.arg(1).unwrap_or(0)
        },
        count_out: if extended { ctx.arg(3).unwrap_or(0) } else { 0 },
        fd: -1,
        direction,
    };
    let _ = PENDING_TLS.insert(&pid_tgid, &pending, 0);
}

#[inline(always)]
fn exit(ctx: &RetProbeContext) {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: value copied out before the entry is removed.
    let Some(pending) = (unsafe { PENDING_TLS.get(&pid_tgid) }).copied() else {
        return;
    };
    let _ = PENDING_TLS.remove(&pid_tgid);
    // Bound before the result is looked at: a memory-BIO `SSL *` is bound by the handshake's
    // reads, which return no data.
    let fd = socket_of(ctx, pid_tgid, &pending);
    if pending.direction == HANDSHAKE {
        return;
    }
    // Both forms return an `int`; the upper half of the register is not defined.
    let result: i32 = ctx.ret();
    let len = if pending.count_out != 0 {
        if result != 1 {
            return;
        }
        // SAFETY: user read through the helper.
        match unsafe { bpf_probe_read_user(pending.count_out as *const u64) } {
            Ok(n) => n,
            Err(_) => {
                count(Counter::UserReadFailed);
                return;
            }
        }
    } else if result > 0 {
        result as u64
    } else {
        return;
    };
    if len == 0 {
        return;
    }
    let Some(fd) = fd else {
        if pending.direction == Direction::Egress as u32 {
            wait_for_ciphertext_write(pid_tgid, pending.ssl, pending.buf, len);
        } else {
            count(Counter::TlsCallWithoutFd);
        }
        return;
    };
    plaintext::submit(pid_tgid, fd, pending.direction, pending.buf, len);
}

/// Keeps a write of an unbound `SSL *`, its plaintext copied now, until its thread writes
/// ciphertext to a TLS socket ([`bind_waiting_write`]). A thread has one waiting write: another
/// `SSL *` waiting at the same time makes both unattributable, and a second write of the same
/// one replaces the first.
#[inline(always)]
fn wait_for_ciphertext_write(pid_tgid: u64, ssl: u64, buf: u64, len: u64) {
    // SAFETY: plain value read.
    if let Some(waiting) = unsafe { WAITING_WRITES.get(&pid_tgid) }.copied() {
        if waiting != ssl {
            let _ = WAITING_WRITES.remove(&pid_tgid);
            let _ = WAITING_PLAINTEXT.remove(&pid_tgid);
            count(Counter::TlsWriteAmbiguous);
            count(Counter::TlsWriteAmbiguous);
            return;
        }
        count(Counter::TlsCallWithoutFd);
    }
    let source = DataSource {
        pid_tgid,
        fd: -1,
        sock: 0,
        direction: Direction::Egress as u32,
        flags: data_flags::TLS,
        offset: UNKNOWN_OFFSET,
    };
    let Some(mut record) = DataRecord::start_within(source, len, STASHED_PAYLOAD as u32) else {
        return;
    };
    record.append_user(buf, len);
    record.stash(&WAITING_PLAINTEXT, pid_tgid);
    let _ = WAITING_WRITES.insert(&pid_tgid, &ssl, 0);
}

/// Called when a thread writes ciphertext to the TLS socket `fd` (holding `sock`) outside any
/// OpenSSL call: the memory-BIO write waiting on this thread was its plaintext. Binds its
/// `SSL *` to the socket and sends the plaintext.
#[inline(always)]
pub fn bind_waiting_write(pid_tgid: u64, fd: i32, sock: u64) {
    // SAFETY: value copied out before the entry is removed.
    let Some(ssl) = (unsafe { WAITING_WRITES.get(&pid_tgid) }).copied() else {
        return;
    };
    let _ = WAITING_WRITES.remove(&pid_tgid);
    let key = TlsKey {
        tgid: pid_tgid >> 32,
        ssl,
    };
    bind(&key, fd, sock);
    count(Counter::TlsBoundByWrite);
    if let Some(record) = WAITING_PLAINTEXT.get_ptr_mut(&pid_tgid) {
        plaintext::submit_stashed(pid_tgid, fd, record);
        let _ = WAITING_PLAINTEXT.remove(&pid_tgid);
    }
}

/// The socket fd an OpenSSL call worked on, in order of certainty: the syscall it made itself
/// (socket BIO), the socket cached for its `SSL *` while the fd still holds it, or, for a read
/// or handshake over a memory BIO that has none, the TLS socket its thread read ciphertext from
/// just before. Binds the `SSL *` to what it found.
#[inline(always)]
fn socket_of(ctx: &RetProbeContext, pid_tgid: u64, pending: &PendingTls) -> Option<i32> {
    let tgid = (pid_tgid >> 32) as u32;
    // Taken by every read, so that a read of an already bound `SSL *` does not leave it for the
    // next, unbound one.
    let ciphertext_read = if pending.direction != Direction::Egress as u32 {
        // SAFETY: plain value read, copied before the entry is removed.
        let fd = unsafe { CIPHERTEXT_READS.get(&pid_tgid) }.copied();
        if fd.is_some() {
            let _ = CIPHERTEXT_READS.remove(&pid_tgid);
        }
        fd
    } else {
        None
    };
    let key = TlsKey {
        tgid: u64::from(tgid),
        ssl: pending.ssl,
    };
    // SAFETY: plain value read.
    let binding = unsafe { TLS_FDS.get(&key) }.copied();
    if pending.fd >= 0 {
        let sock = socket_on(tgid, pending.fd);
        match binding {
            // Most calls: the binding holds already.
            Some(bound) if bound.fd == pending.fd && bound.sock == sock => {}
            Some(bound) => {
                if bound.fd != pending.fd && is_current(tgid, &bound) {
                    count(Counter::TlsFdMismatch);
                    debug!(
                        ctx,
                        "SSL {:x} moved from fd {} to fd {}", pending.ssl, bound.fd, pending.fd
                    );
                }
                bind(&key, pending.fd, sock);
            }
            None => bind(&key, pending.fd, sock),
        }
        return Some(pending.fd);
    }
    if let Some(bound) = binding.filter(|bound| is_current(tgid, bound)) {
        return Some(bound.fd);
    }
    let fd = ciphertext_read?;
    bind(&key, fd, socket_on(tgid, fd));
    count(Counter::TlsBoundByRead);
    Some(fd)
}

/// Whether a binding's fd still holds the socket it was bound to: OpenSSL reuses freed `SSL *`
/// addresses, and fds are reused too.
#[inline(always)]
fn is_current(tgid: u32, binding: &TlsBinding) -> bool {
    binding.sock != 0 && socket_on(tgid, binding.fd) == binding.sock
}

/// The socket `fd` holds in `tgid`, as far as the connection table knows; 0 when none.
#[inline(always)]
fn socket_on(tgid: u32, fd: i32) -> u64 {
    // SAFETY: plain value read.
    unsafe { CONNS.get(&ConnKey { tgid, fd }) }.map_or(0, |state| state.sock)
}

/// Caches that the `SSL *` of `key` uses `fd`, which holds `sock`.
#[inline(always)]
fn bind(key: &TlsKey, fd: i32, sock: u64) {
    let binding = TlsBinding {
        sock,
        fd,
        reserved: 0,
    };
    let _ = TLS_FDS.insert(key, &binding, 0);
}

/// Entry of `SSL_read(ssl, buf, num)`.
#[uprobe]
pub fn openssl_enter_ssl_read(ctx: ProbeContext) -> u32 {
    enter(&ctx, Direction::Ingress as u32, false);
    0
}

/// Entry of `SSL_write(ssl, buf, num)`.
#[uprobe]
pub fn openssl_enter_ssl_write(ctx: ProbeContext) -> u32 {
    enter(&ctx, Direction::Egress as u32, false);
    0
}

/// Entry of `SSL_read_ex(ssl, buf, num, &readbytes)`.
#[uprobe]
pub fn openssl_enter_ssl_read_ex(ctx: ProbeContext) -> u32 {
    enter(&ctx, Direction::Ingress as u32, true);
    0
}

/// Entry of `SSL_write_ex(ssl, buf, num, &written)`.
#[uprobe]
pub fn openssl_enter_ssl_write_ex(ctx: ProbeContext) -> u32 {
    enter(&ctx, Direction::Egress as u32, true);
    0
}

/// Entry of `SSL_do_handshake(ssl)` (which `SSL_accept` and `SSL_connect` call too): over a
/// socket BIO, its syscalls bind the `SSL *` to its socket before any data, so a first read
/// OpenSSL answers from what the handshake already received finds it.
#[uprobe]
pub fn openssl_enter_ssl_do_handshake(ctx: ProbeContext) -> u32 {
    enter(&ctx, HANDSHAKE, false);
    0
}

/// Return of any of them: the entry recorded which one it was.
#[uretprobe]
pub fn openssl_exit_ssl_io(ctx: RetProbeContext) -> u32 {
    exit(&ctx);
    0
}
