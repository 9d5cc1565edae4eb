//! Uprobes on Go's `crypto/tls.(*Conn).Write` and `.Read`.
//!
//! Go passes arguments and results in registers (its internal ABI, Go 1.17+ on amd64): at entry
//! RAX is the `*Conn` and RBX, RCX the buffer's pointer and length; at a return instruction RAX
//! is the byte count. R14 holds the running goroutine (`g`) at both, and since goroutines move
//! between threads, a call is keyed by its goroutine. Returns are probed at each `RET` of the
//! function (found by userspace): a uretprobe rewrites the return address on the stack, which
//! Go moves when it grows a goroutine's stack. The socket fd is read behind the `*Conn` at entry,
//! through the binary's layout carried by the attach cookie (`agent_common::go_tls`).

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

/// Entry of `(*Conn).Write(b []byte)` or `(*Conn).Read(b []byte)`; the cookie says which.
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
    let (conn, buf, g) = unsafe { ((*ctx.regs).rax, (*ctx.regs).rbx, (*ctx.regs).r14) };
    let Some(fd) = socket_fd(conn, go_tls::layout(cookie)) else {
        count(Counter::UserReadFailed);
        return 0;
    };
    let pending = PendingGoTls {
        buf,
        fd,
        direction: go_tls::direction(cookie) as u32,
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

/// A return instruction of either function.
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
    // An error can come with bytes (a short write); those bytes did move.
    if transferred <= 0 {
        return 0;
    }
    // The fd was read through the binary's layout: only a socket the syscall probes know (the
    // library's own read or write made the entry) is trusted with the bytes.
    // SAFETY: plain lookup.
    if unsafe {
        CONNS.get(&ConnKey {
            tgid,
            fd: pending.fd,
        })
    }
    .is_none()
    {
        count(Counter::TlsCallWithoutFd);
        return 0;
    }
    let direction = if pending.direction == Direction::Egress as u32 {
        Direction::Egress
    } else {
        Direction::Ingress
    };
    plaintext::submit(
        pid_tgid,
        pending.fd,
        direction as u32,
        pending.buf,
        transferred as u64,
    );
    0
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
