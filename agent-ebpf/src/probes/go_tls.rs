//! Uprobes on Go's `crypto/tls.(*Conn).Write` and `.Read`.
//!
//! Go passes arguments and results in registers (its internal ABI, Go 1.17+ on amd64): at entry
//! RAX is the `*Conn` and RBX, RCX the buffer's pointer and length; at a return instruction RAX
//! is the byte count. A write is sent at its entry: `Write` writes all of its buffer or fails
//! the connection, and sent at its return, the request could reach userspace after the
//! response another goroutine read meanwhile. A read is sent at its return, probed at each
//! `RET` of the function (found by userspace): a uretprobe rewrites the return address on the
//! stack, which Go moves when it grows a goroutine's stack. R14 holds the running goroutine
//! (`g`) at both ends, and since goroutines move between threads, a read is keyed by its
//! goroutine. The socket fd is read behind the `*Conn` at entry, through the binary's layout
//! carried by the attach cookie (`agent_common::go_tls`).

use agent_common::{ConnKey, Counter, Direction, go_tls};
use aya_ebpf::{
    EbpfContext,
    helpers::{bpf_get_attach_cookie, bpf_get_current_pid_tgid, bpf_probe_read_user},
    macros::uprobe,
    programs::ProbeContext,
};

use crate::{
    filter::is_traced,
    maps::{CONNS, GoroutineKey, PENDING_GO_TLS, PendingGoTls, count},
    plaintext,
};

/// Entry of `(*Conn).Write(b []byte)` (sent now) or `(*Conn).Read(b []byte)` (remembered for
/// its return); the cookie says which.
#[uprobe]
pub fn go_tls_enter(ctx: ProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if !is_traced(tgid) {
        return 0;
    }
    // SAFETY: the program's own context.
    let cookie = unsafe { bpf_get_attach_cookie(ctx.as_ptr()) };
    // SAFETY: reads of the saved user registers in the program's context.
    let (conn, buf, len, g) = unsafe {
        (
            (*ctx.regs).rax,
            (*ctx.regs).rbx,
            (*ctx.regs).rcx,
            (*ctx.regs).r14,
        )
    };
    let Some(fd) = socket_fd(conn, go_tls::layout(cookie)) else {
        count(Counter::UserReadFailed);
        return 0;
    };
    if go_tls::direction(cookie) == Direction::Egress {
        if len > 0 && is_known_socket(tgid, fd) {
            plaintext::submit(pid_tgid, fd, Direction::Egress as u32, buf, len);
        }
        return 0;
    }
    let pending = PendingGoTls {
        buf,
        fd,
        direction: Direction::Ingress as u32,
    };
    let _ = PENDING_GO_TLS.insert(
        &GoroutineKey {
            tgid: tgid.into(),
            g,
        },
        &pending,
        0,
    );
    0
}

/// A return instruction of `Read`.
#[uprobe]
pub fn go_tls_return(ctx: ProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    // SAFETY: reads of the saved user registers in the program's context.
    let (transferred, g) = unsafe { ((*ctx.regs).rax as i64, (*ctx.regs).r14) };
    let key = GoroutineKey {
        tgid: tgid.into(),
        g,
    };
    // SAFETY: value copied out before the entry is removed.
    let Some(pending) = (unsafe { PENDING_GO_TLS.get(&key) }).copied() else {
        return 0;
    };
    let _ = PENDING_GO_TLS.remove(&key);
    // An error can come with bytes; those bytes did move.
    if transferred <= 0 || !is_known_socket(tgid, pending.fd) {
        return 0;
    }
    plaintext::submit(
        pid_tgid,
        pending.fd,
        pending.direction,
        pending.buf,
        transferred as u64,
    );
    0
}

/// Whether `fd` is a socket the syscall probes know in `tgid`. The fd was read through the
/// binary's layout: only a known socket (the library's own reads and writes of the handshake
/// made it known) is trusted with the bytes; otherwise the call is counted.
#[inline(always)]
fn is_known_socket(tgid: u32, fd: i32) -> bool {
    // SAFETY: plain lookup.
    let known = unsafe { CONNS.get(&ConnKey { tgid, fd }) }.is_some();
    if !known {
        count(Counter::TlsCallWithoutFd);
    }
    known
}

/// The socket fd behind a `*tls.Conn`: its `net.Conn`'s data word (a `*net.TCPConn`), that
/// conn's `*netFD`, and the fd in the netFD's `poll.FD`.
#[inline(always)]
fn socket_fd(conn: u64, layout: go_tls::GoConnLayout) -> Option<i32> {
    // SAFETY: user reads through the helper; a bad address fails the read, nothing else.
    unsafe {
        let net_conn: u64 =
            bpf_probe_read_user((conn + layout.conn as u64 + 8) as *const u64).ok()?;
        let net_fd: u64 = bpf_probe_read_user((net_conn + layout.fd as u64) as *const u64).ok()?;
        let fd: i64 = bpf_probe_read_user((net_fd + layout.sysfd as u64) as *const i64).ok()?;
        i32::try_from(fd).ok().filter(|fd| *fd >= 0)
    }
}
