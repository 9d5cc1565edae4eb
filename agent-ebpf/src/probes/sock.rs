//! BTF tracepoints inside `sock_sendmsg`/`sock_recvmsg` (Linux 6.3+): they fire only for
//! sockets, on the thread making the syscall, with the kernel socket. That is how a syscall on a
//! socket is told from one on a file or pipe, with no fd-table walk (the walk, in `fd_table`,
//! is what older kernels use instead).

use agent_common::Direction;
use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid, macros::btf_tracepoint, programs::BtfTracePointContext,
};

use crate::{
    filter::is_traced,
    maps::{IoShape, PENDING_IO, PendingIo},
    syscall_args::SyscallArgs,
};

/// x86_64 numbers of the data syscalls whose arguments are (fd, buffer, count) in that order:
/// read, write, readv, writev, sendto, recvfrom, sendmsg, recvmsg, recvmmsg, sendmmsg. Anything
/// else (io_uring, a kernel-internal send) is not rebuilt.
const DATA_SYSCALLS: [u64; 10] = [0, 1, 19, 20, 44, 45, 46, 47, 299, 307];

/// `MSG_PEEK`: the bytes stay queued and will be read again.
pub const MSG_PEEK: u64 = 2;

/// Rebuilds a pending call whose entry was missed: a read that was already blocked when the
/// agent attached (an idle keep-alive connection) would otherwise lose its first request.
#[inline(always)]
fn recover(pid_tgid: u64, direction: Direction, peek: bool) -> Option<*mut PendingIo> {
    if !is_traced((pid_tgid >> 32) as u32) {
        return None;
    }
    let args = SyscallArgs::current();
    if !DATA_SYSCALLS.contains(&args.number()?) {
        return None;
    }
    let pending = PendingIo {
        fd: args.arg(0)? as i32,
        buf: args.arg(1)?,
        count: args.arg(2)?,
        sock: 0,
        shape: IoShape::Recovered as u32,
        direction: direction as u32,
        peek: peek as u32,
    };
    PENDING_IO.insert(&pid_tgid, &pending, 0).ok()?;
    PENDING_IO.get_ptr_mut(&pid_tgid)
}

#[inline(always)]
fn note_socket(ctx: &BtfTracePointContext, direction: Direction, peek: bool) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(pending) = PENDING_IO
        .get_ptr_mut(&pid_tgid)
        .or_else(|| recover(pid_tgid, direction, peek))
    else {
        return;
    };
    let sock: u64 = ctx.arg(0);
    // SAFETY: map value pointer, valid for the program's run.
    unsafe {
        // The first socket of the call wins: sendmmsg passes here once per message.
        if (*pending).sock == 0 {
            (*pending).sock = sock;
        }
    }
}

/// A socket moving to `SYN_SENT` inside a traced `connect`: its kernel socket, so the exit of
/// `connect` can announce the connection at once, before (or without) any byte on it.
#[inline(always)]
pub fn note_connecting(sock: u64) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(pending) = PENDING_IO.get_ptr_mut(&pid_tgid) else {
        return;
    };
    // SAFETY: map value pointer, valid for the program's run.
    unsafe {
        if (*pending).shape == IoShape::Connect as u32 && (*pending).sock == 0 {
            (*pending).sock = sock;
        }
    }
}

/// `sock_send_length(sk, ret, flags)`.
#[btf_tracepoint(function = "sock_send_length")]
pub fn sock_enter_send_length(ctx: BtfTracePointContext) -> u32 {
    note_socket(&ctx, Direction::Egress, false);
    0
}

/// `sock_recv_length(sk, ret, flags)`: the flags only matter for a call rebuilt here (a real
/// entry recorded them already).
#[btf_tracepoint(function = "sock_recv_length")]
pub fn sock_enter_recv_length(ctx: BtfTracePointContext) -> u32 {
    let flags: i32 = ctx.arg(2);
    note_socket(&ctx, Direction::Ingress, flags as u64 & MSG_PEEK != 0);
    0
}
