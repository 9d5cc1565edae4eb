//! Syscall tracepoints: the socket data path and the connection lifecycle.
//!
//! Entry programs stash the call's arguments per thread; exit programs find out whether the fd
//! was a socket, and which one (the `sock_*_length` tracepoints noted it during the call, or,
//! on older kernels, a walk of the file table), then copy the bytes actually moved. Files and
//! pipes never get a socket and are dropped at exit, but for the standard input and output of
//! the processes selected for stdio capture.

use agent_common::{Counter, Direction, EventKind, Role, conn_flags};
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user},
    macros::tracepoint,
    programs::TracePointContext,
};

use crate::{
    conn, fd_table,
    filter::is_traced,
    handshake,
    maps::{CIPHERTEXT_READS, IoShape, PENDING_IO, PENDING_TLS, PendingIo, count, walks_fd_table},
    probes::{openssl, sock::MSG_PEEK},
    record::{
        DataRecord, DataSource, MSGHDR_IOV, MSGHDR_IOVLEN, UserBytes, submit_framed, submit_gap,
        submit_lifecycle, submit_messages,
    },
    stdio,
    syscall_args::SyscallArgs,
};

/// Offset of the first argument in a `syscalls:sys_enter_*` record; each argument is 8 bytes.
const ARGS: usize = 16;
/// Offset of `ret` in a `syscalls:sys_exit_*` record.
const RET: usize = 16;
/// `-EINPROGRESS`: a non-blocking connect that is under way counts as a connect.
const EINPROGRESS: i64 = -115;

/// What a traced syscall is, as its programs need to know: a constant at every program, so
/// that each one only carries the code of its own kind (the verifier would otherwise walk every
/// kind's paths in every program).
#[derive(Clone, Copy)]
struct Call {
    /// Where its bytes are.
    shape: IoShape,
    /// Which way they go.
    direction: Direction,
    /// Which argument holds its `MSG_*` flags, for receives that may only peek.
    flags_arg: Option<usize>,
}

impl Call {
    const fn new(shape: IoShape, direction: Direction) -> Self {
        Self {
            shape,
            direction,
            flags_arg: None,
        }
    }

    const fn with_flags(shape: IoShape, direction: Direction, flags_arg: usize) -> Self {
        Self {
            shape,
            direction,
            flags_arg: Some(flags_arg),
        }
    }
}

#[inline(always)]
pub(crate) fn arg(ctx: &TracePointContext, n: usize) -> u64 {
    // SAFETY: offsets within the syscall tracepoint record, as its format file lists them.
    unsafe { ctx.read_at::<u64>(ARGS + n * 8).unwrap_or(0) }
}

#[inline(always)]
pub(crate) fn ret(ctx: &TracePointContext) -> i64 {
    // SAFETY: as above.
    unsafe { ctx.read_at::<i64>(RET).unwrap_or(-1) }
}

/// Remembers a socket-candidate call at its entry; `fd_arg` is the argument holding its fd.
#[inline(always)]
fn stash(ctx: &TracePointContext, call: Call, fd_arg: usize) {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !is_traced((pid_tgid >> 32) as u32) {
        return;
    }
    let carries_bytes = call.shape.carries_user_data();
    let pending = PendingIo {
        buf: if carries_bytes { arg(ctx, 1) } else { 0 },
        count: if carries_bytes { arg(ctx, 2) } else { 0 },
        sock: 0,
        fd: arg(ctx, fd_arg) as i32,
        shape: call.shape as u32,
        direction: call.direction as u32,
        peek: call.flags_arg.is_some_and(|n| arg(ctx, n) & MSG_PEEK != 0) as u32,
    };
    let _ = PENDING_IO.insert(&pid_tgid, &pending, 0);
}

/// The call in flight on this thread, taken out of `PENDING_IO`. Where the fd table is walked,
/// a data call whose entry was missed (it was already blocked when the agent attached) is
/// rebuilt from the saved registers; with the socket tracepoints, they rebuild it.
#[inline(always)]
fn take_pending(pid_tgid: u64, call: Call) -> Option<PendingIo> {
    // SAFETY: value copied out before the entry is removed.
    if let Some(pending) = unsafe { PENDING_IO.get(&pid_tgid) }.copied() {
        let _ = PENDING_IO.remove(&pid_tgid);
        return Some(pending);
    }
    if !walks_fd_table() || !call.shape.carries_user_data() || !is_traced((pid_tgid >> 32) as u32) {
        return None;
    }
    let args = SyscallArgs::current();
    let flags = match call.flags_arg {
        Some(n) => args.arg(n)?,
        None => 0,
    };
    Some(PendingIo {
        fd: args.arg(0)? as i32,
        buf: args.arg(1)?,
        count: args.arg(2)?,
        sock: 0,
        shape: call.shape as u32,
        direction: call.direction as u32,
        peek: (flags & MSG_PEEK != 0) as u32,
    })
}

/// Emits what a finished call moved, if its fd turned out to be a traced TCP socket.
#[inline(always)]
fn complete(ctx: &TracePointContext, call: Call) {
    let shape = call.shape;
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(mut pending) = take_pending(pid_tgid, call) else {
        return;
    };
    let recovered = pending.shape == IoShape::Recovered as u32;
    if pending.shape != shape as u32 && !(recovered && shape.carries_user_data()) {
        // Left over from a call whose exit we never saw.
        return;
    }
    let result = ret(ctx);
    let tgid = (pid_tgid >> 32) as u32;
    if shape == IoShape::Connect {
        if result == 0 || result == EINPROGRESS {
            conn::set_role(tgid, pending.fd, Role::Client);
            // Announced now, with its addresses: a connection that never carries a byte (a
            // port probe, a forged request's target) is still seen.
            if pending.sock != 0 {
                let _ = conn::current(tgid, pending.fd, pending.sock);
            }
        }
        return;
    }
    if walks_fd_table() {
        pending.sock = fd_table::socket_of(pending.fd);
    }
    if pending.sock == 0 && !stdio::claim(tgid, &mut pending, shape) {
        return;
    }
    let Some(state) = conn::current(tgid, pending.fd, pending.sock) else {
        return;
    };
    if let Some(tls) = PENDING_TLS.get_ptr_mut(&pid_tgid) {
        // The call runs inside SSL_read/SSL_write: these are its ciphertext bytes, and this is
        // the socket the plaintext belongs to.
        // SAFETY: map value pointers, valid for the program's run.
        unsafe {
            if (*tls).fd < 0 {
                (*tls).fd = pending.fd;
            }
            (*state).flags |= conn_flags::TLS;
        }
        handshake::hand_over(ctx, pid_tgid, &pending, state, result, shape);
        return;
    }
    // SAFETY: as above.
    let flags = unsafe { (*state).flags };
    if result <= 0 || pending.peek != 0 {
        return;
    }
    if flags & conn_flags::TLS != 0 {
        if pending.direction == Direction::Egress as u32 {
            openssl::bind_waiting_write(pid_tgid, pending.fd, pending.sock);
        }
        remember_ciphertext_read(pid_tgid, &pending);
        handshake::hand_over(ctx, pid_tgid, &pending, state, result, shape);
        return;
    }
    let flags = conn::flags_with_policy(tgid, pending.fd, state);
    if flags & conn_flags::MUTED != 0 {
        count(Counter::PayloadMuted);
        return;
    }
    let mut source = DataSource {
        pid_tgid,
        fd: pending.fd,
        sock: pending.sock,
        direction: pending.direction,
        flags: 0,
        offset: 0,
    };
    let len = result as u64;
    if shape == IoShape::Gap {
        source.offset = conn::advance(state, pending.direction, len);
        submit_gap(source, len);
        return;
    }
    if shape == IoShape::Mmsghdr {
        // `result` counts messages here, each with its own length.
        submit_messages(source, pending.buf, len);
        return;
    }
    let bytes = user_bytes(&pending, shape);
    if flags & conn_flags::FRAMED != 0 {
        source.offset = conn::advance(state, pending.direction, len);
        submit_framed(source, len, bytes);
        return;
    }
    let Some(mut record) = DataRecord::start(source, len) else {
        return;
    };
    record.append(bytes, 0, len);
    if flags & conn_flags::SNIFFED == 0 {
        // SAFETY: map value pointer, valid for the program's run.
        unsafe { (*state).flags |= conn_flags::SNIFFED };
        if let Some([0x16, 0x03, minor]) = record.first_bytes()
            && minor <= 0x04
        {
            // A TLS handshake record: ciphertext from a library we do not hook, or the
            // handshake of one we do. Mark the connection so none of it is sent.
            // SAFETY: as above.
            unsafe { (*state).flags |= conn_flags::TLS };
            remember_ciphertext_read(pid_tgid, &pending);
            handshake::hand_over(ctx, pid_tgid, &pending, state, result, shape);
            return;
        }
    }
    let offset = conn::advance(state, pending.direction, len);
    if offset == 0 {
        // Each direction's first bytes: the client preface travels out of the client and into
        // the server, which may well have written its own SETTINGS first.
        conn::sniff_framed(state, record.first_bytes());
    }
    record.set_offset(offset);
    record.submit();
}

/// Where the bytes of a finished call of `shape` are in user memory (any shape but
/// [`IoShape::Mmsghdr`], whose messages each have their own).
#[inline(always)]
pub(crate) fn user_bytes(pending: &PendingIo, shape: IoShape) -> UserBytes {
    if shape == IoShape::Buffer {
        UserBytes::buffer(pending.buf)
    } else if shape == IoShape::Iovec {
        UserBytes::iovecs(pending.buf, pending.count)
    } else {
        let msg = pending.buf;
        // SAFETY: user reads through the helper.
        let iov = unsafe { bpf_probe_read_user((msg + MSGHDR_IOV) as *const u64) }.unwrap_or(0);
        // SAFETY: as above.
        let count =
            unsafe { bpf_probe_read_user((msg + MSGHDR_IOVLEN) as *const u64) }.unwrap_or(0);
        UserBytes::iovecs(iov, count)
    }
}

/// Notes a TLS socket read made outside any OpenSSL call: with a memory BIO, the `SSL_read`
/// that decrypts these bytes follows on the same thread (see `openssl::socket_of`).
#[inline(always)]
fn remember_ciphertext_read(pid_tgid: u64, pending: &PendingIo) {
    if pending.direction == Direction::Ingress as u32 {
        let _ = CIPHERTEXT_READS.insert(&pid_tgid, &pending.fd, 0);
    }
}

/// Defines the entry and exit programs of a syscall of the given [`Call`] kind; the fd is its
/// first argument.
macro_rules! traced_call {
    ($enter:ident, $exit:ident, $call:expr) => {
        #[doc = concat!("Entry of `", stringify!($enter), "`.")]
        #[tracepoint]
        pub fn $enter(ctx: TracePointContext) -> u32 {
            stash(&ctx, $call, 0);
            0
        }

        #[doc = concat!("Exit of `", stringify!($exit), "`.")]
        #[tracepoint]
        pub fn $exit(ctx: TracePointContext) -> u32 {
            complete(&ctx, $call);
            0
        }
    };
}

use Direction::{Egress, Ingress};
use IoShape::{Buffer, Iovec, Mmsghdr, Msghdr};

traced_call!(
    syscalls_enter_read,
    syscalls_exit_read,
    Call::new(Buffer, Ingress)
);
traced_call!(
    syscalls_enter_write,
    syscalls_exit_write,
    Call::new(Buffer, Egress)
);
// recvfrom(fd, buf, len, flags, ...)
traced_call!(
    syscalls_enter_recvfrom,
    syscalls_exit_recvfrom,
    Call::with_flags(Buffer, Ingress, 3)
);
traced_call!(
    syscalls_enter_sendto,
    syscalls_exit_sendto,
    Call::new(Buffer, Egress)
);
traced_call!(
    syscalls_enter_readv,
    syscalls_exit_readv,
    Call::new(Iovec, Ingress)
);
traced_call!(
    syscalls_enter_writev,
    syscalls_exit_writev,
    Call::new(Iovec, Egress)
);
// recvmsg(fd, msg, flags)
traced_call!(
    syscalls_enter_recvmsg,
    syscalls_exit_recvmsg,
    Call::with_flags(Msghdr, Ingress, 2)
);
traced_call!(
    syscalls_enter_sendmsg,
    syscalls_exit_sendmsg,
    Call::new(Msghdr, Egress)
);
// recvmmsg(fd, msgvec, vlen, flags, timeout)
traced_call!(
    syscalls_enter_recvmmsg,
    syscalls_exit_recvmmsg,
    Call::with_flags(Mmsghdr, Ingress, 3)
);
traced_call!(
    syscalls_enter_sendmmsg,
    syscalls_exit_sendmmsg,
    Call::new(Mmsghdr, Egress)
);

/// A call whose bytes never pass through user memory, or a `connect`.
const GAP: Call = Call::new(IoShape::Gap, Egress);
const CONNECT: Call = Call::new(IoShape::Connect, Egress);

/// Entry of `sendfile(out_fd, in_fd, ...)`: the bytes go from a file to `out_fd` inside the
/// kernel.
#[tracepoint]
pub fn syscalls_enter_sendfile64(ctx: TracePointContext) -> u32 {
    stash(&ctx, GAP, 0);
    0
}

/// Exit of `sendfile`.
#[tracepoint]
pub fn syscalls_exit_sendfile64(ctx: TracePointContext) -> u32 {
    complete(&ctx, GAP);
    0
}

/// Entry of `splice(fd_in, off_in, fd_out, ...)`: only a socket on the output side is seen
/// (splicing out of a socket does not pass `sock_recvmsg`).
#[tracepoint]
pub fn syscalls_enter_splice(ctx: TracePointContext) -> u32 {
    stash(&ctx, GAP, 2);
    0
}

/// Exit of `splice`.
#[tracepoint]
pub fn syscalls_exit_splice(ctx: TracePointContext) -> u32 {
    complete(&ctx, GAP);
    0
}

/// Entry of `connect`.
#[tracepoint]
pub fn syscalls_enter_connect(ctx: TracePointContext) -> u32 {
    stash(&ctx, CONNECT, 0);
    0
}

/// Exit of `connect`: on success the fd is a client connection, announced at once.
#[tracepoint]
pub fn syscalls_exit_connect(ctx: TracePointContext) -> u32 {
    complete(&ctx, CONNECT);
    0
}

#[inline(always)]
fn accepted(ctx: &TracePointContext) {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let fd = ret(ctx);
    if fd >= 0 && is_traced(tgid) {
        conn::set_role(tgid, fd as i32, Role::Server);
    }
}

/// Exit of `accept`: the new fd is a server connection.
#[tracepoint]
pub fn syscalls_exit_accept(ctx: TracePointContext) -> u32 {
    accepted(&ctx);
    0
}

/// Exit of `accept4`: as `accept`.
#[tracepoint]
pub fn syscalls_exit_accept4(ctx: TracePointContext) -> u32 {
    accepted(&ctx);
    0
}

/// Entry of `close`: a tracked socket fd ends its connection.
#[tracepoint]
pub fn syscalls_enter_close(ctx: TracePointContext) -> u32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let fd = arg(&ctx, 0) as i32;
    if let Some(sock) = conn::forget(tgid, fd) {
        submit_lifecycle(EventKind::Close, tgid, fd, sock);
    }
    stdio::forget(tgid, fd);
    0
}

/// Entry of `dup(fd)`: a duplicate of a stdio wire fd carries the wire too.
#[tracepoint]
pub fn syscalls_enter_dup(ctx: TracePointContext) -> u32 {
    stdio::enter_dup(arg(&ctx, 0), u64::MAX);
    0
}

/// Entry of `dup2(old, new)`.
#[tracepoint]
pub fn syscalls_enter_dup2(ctx: TracePointContext) -> u32 {
    stdio::enter_dup(arg(&ctx, 0), arg(&ctx, 1));
    0
}

/// Entry of `dup3(old, new, flags)`.
#[tracepoint]
pub fn syscalls_enter_dup3(ctx: TracePointContext) -> u32 {
    stdio::enter_dup(arg(&ctx, 0), arg(&ctx, 1));
    0
}

/// Entry of `fcntl(fd, cmd, arg)`: `F_DUPFD` and `F_DUPFD_CLOEXEC` duplicate.
#[tracepoint]
pub fn syscalls_enter_fcntl(ctx: TracePointContext) -> u32 {
    stdio::enter_fcntl(arg(&ctx, 0), arg(&ctx, 1));
    0
}

macro_rules! duplicating_exit {
    ($($exit:ident),*) => {$(
        #[doc = concat!("Exit of a duplicating call (`", stringify!($exit), "`): its result is the new fd.")]
        #[tracepoint]
        pub fn $exit(ctx: TracePointContext) -> u32 {
            stdio::exit_dup(ret(&ctx));
            0
        }
    )*};
}

duplicating_exit!(
    syscalls_exit_dup,
    syscalls_exit_dup2,
    syscalls_exit_dup3,
    syscalls_exit_fcntl
);
