//! BTF tracepoints inside `sock_sendmsg`/`sock_recvmsg`: they fire only for sockets, on the
//! thread making the syscall, with the kernel socket. That is how a syscall on a socket is told
//! from one on a file or pipe, with no fd-table walk.

use agent_common::Direction;
use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_probe_read_kernel,
        generated::{bpf_get_current_task_btf, bpf_task_pt_regs},
    },
    macros::btf_tracepoint,
    programs::BtfTracePointContext,
};

use crate::{
    filter::is_traced,
    maps::{IoShape, PENDING_IO, PendingIo},
};

/// Offsets in x86_64 `struct pt_regs` (uapi, stable) of the first three syscall arguments.
const PT_REGS_DI: u64 = 112;
const PT_REGS_SI: u64 = 104;
const PT_REGS_DX: u64 = 96;
/// Offset of `orig_ax`, the syscall number.
const PT_REGS_ORIG_AX: u64 = 120;
/// x86_64 numbers of the data syscalls whose arguments are (fd, buffer, count) in that order:
/// read, write, readv, writev, sendto, recvfrom, sendmsg, recvmsg, recvmmsg, sendmmsg. Anything
/// else (io_uring, a kernel-internal send) is not rebuilt.
const DATA_SYSCALLS: [u64; 10] = [0, 1, 19, 20, 44, 45, 46, 47, 299, 307];

/// `MSG_PEEK`: the bytes stay queued and will be read again.
const MSG_PEEK: i32 = 2;

/// Rebuilds a pending call whose entry was missed: a read that was already blocked when the
/// agent attached (an idle keep-alive connection) would otherwise lose its first request. The
/// syscall's arguments are still in the user registers saved at kernel entry.
#[inline(always)]
fn recover(pid_tgid: u64, direction: Direction) -> Option<*mut PendingIo> {
    if !is_traced((pid_tgid >> 32) as u32) {
        return None;
    }
    // SAFETY: helpers without preconditions in tracing programs; the result is only used as an
    // address for bpf_probe_read_kernel.
    let regs = unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) } as u64;
    // SAFETY: kernel reads through the helper.
    let reg = |offset: u64| unsafe { bpf_probe_read_kernel((regs + offset) as *const u64) }.ok();
    let syscall = reg(PT_REGS_ORIG_AX)?;
    if !DATA_SYSCALLS.contains(&syscall) {
        return None;
    }
    let pending = PendingIo {
        fd: reg(PT_REGS_DI)? as i32,
        buf: reg(PT_REGS_SI)?,
        count: reg(PT_REGS_DX)?,
        sock: 0,
        shape: IoShape::Recovered as u32,
        direction: direction as u32,
        peek: 0,
    };
    PENDING_IO.insert(&pid_tgid, &pending, 0).ok()?;
    PENDING_IO.get_ptr_mut(&pid_tgid)
}

#[inline(always)]
fn note_socket(ctx: &BtfTracePointContext, direction: Direction, peek: bool) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(pending) = PENDING_IO
        .get_ptr_mut(&pid_tgid)
        .or_else(|| recover(pid_tgid, direction))
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
        if peek {
            (*pending).peek = 1;
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

/// `sock_recv_length(sk, ret, flags)`.
#[btf_tracepoint(function = "sock_recv_length")]
pub fn sock_enter_recv_length(ctx: BtfTracePointContext) -> u32 {
    let flags: i32 = ctx.arg(2);
    note_socket(&ctx, Direction::Ingress, flags & MSG_PEEK != 0);
    0
}
