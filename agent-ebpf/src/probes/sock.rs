//! BTF tracepoints inside `sock_sendmsg`/`sock_recvmsg`: they fire only for sockets, on the
//! thread making the syscall, with the kernel socket. That is how a syscall on a socket is told
//! from one on a file or pipe, with no fd-table walk.

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid, macros::btf_tracepoint, programs::BtfTracePointContext,
};

use crate::maps::PENDING_IO;

/// `MSG_PEEK`: the bytes stay queued and will be read again.
const MSG_PEEK: i32 = 2;

#[inline(always)]
fn note_socket(ctx: &BtfTracePointContext, peek: bool) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(pending) = PENDING_IO.get_ptr_mut(&pid_tgid) else {
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

/// `sock_send_length(sk, ret, flags)`.
#[btf_tracepoint(function = "sock_send_length")]
pub fn sock_enter_send_length(ctx: BtfTracePointContext) -> u32 {
    note_socket(&ctx, false);
    0
}

/// `sock_recv_length(sk, ret, flags)`.
#[btf_tracepoint(function = "sock_recv_length")]
pub fn sock_enter_recv_length(ctx: BtfTracePointContext) -> u32 {
    let flags: i32 = ctx.arg(2);
    note_socket(&ctx, flags & MSG_PEEK != 0);
    0
}
