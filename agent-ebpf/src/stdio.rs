//! Stdio capture: the standard input and output of selected processes (MCP tool servers, which
//! an agent starts and talks to over pipes) are taken as one connection, keyed by
//! [`STDIO_FD`].
//!
//! The wire is followed by fd: userspace marks fd 0 (in) and fd 1 (out) of a process when it
//! selects it, and a duplicate of a marked fd is marked too (servers move the wire above fd 2
//! and point 0 and 1 elsewhere, so that stray prints cannot corrupt it: the official MCP SDKs
//! do). An fd overwritten by `dup2` or closed is unmarked.

use agent_common::{
    ConnKey,
    maps::{STDIO_FD, STDIO_SOCK},
};
use aya_ebpf::helpers::bpf_get_current_pid_tgid;

use crate::maps::{IoShape, PENDING_DUPS, PendingDup, PendingIo, STDIO_FDS, STDIO_PROCESSES};

/// `fcntl` commands that duplicate an fd.
const F_DUPFD: u64 = 0;
const F_DUPFD_CLOEXEC: u64 = 1030;

/// True when a finished call that found no socket read or wrote a marked stdio fd in the
/// direction it carries: `pending` then names the process's stdio connection.
#[inline(always)]
pub fn claim(tgid: u32, pending: &mut PendingIo, shape: IoShape) -> bool {
    if shape != IoShape::Buffer && shape != IoShape::Iovec {
        return false;
    }
    let key = ConnKey {
        tgid,
        fd: pending.fd,
    };
    // SAFETY: plain lookup of a u32 value.
    match unsafe { STDIO_FDS.get(&key) } {
        Some(direction) if *direction == pending.direction => {
            pending.fd = STDIO_FD;
            pending.sock = STDIO_SOCK;
            true
        }
        _ => false,
    }
}

/// Entry of `dup`, `dup2`, `dup3` (`new` is -1 for `dup`, whose new fd is its result).
#[inline(always)]
pub fn enter_dup(old: u64, new: u64) {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: plain lookup of a u8 value.
    if unsafe { STDIO_PROCESSES.get(&((pid_tgid >> 32) as u32)) }.is_none() {
        return;
    }
    let pending = PendingDup {
        old: old as i32,
        new: new as i32,
    };
    let _ = PENDING_DUPS.insert(&pid_tgid, &pending, 0);
}

/// Entry of `fcntl(fd, cmd, arg)`: only the duplicating commands matter.
#[inline(always)]
pub fn enter_fcntl(fd: u64, cmd: u64) {
    if cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC {
        enter_dup(fd, u64::MAX);
    }
}

/// Exit of a duplicating call that returned `result`, the new fd.
#[inline(always)]
pub fn exit_dup(result: i64) {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: value copied out before the entry is removed.
    let Some(pending) = (unsafe { PENDING_DUPS.get(&pid_tgid) }).copied() else {
        return;
    };
    let _ = PENDING_DUPS.remove(&pid_tgid);
    if result < 0 {
        return;
    }
    let tgid = (pid_tgid >> 32) as u32;
    let new = ConnKey {
        tgid,
        fd: result as i32,
    };
    // The new fd's old file is gone, whatever it was.
    let _ = STDIO_FDS.remove(&new);
    let old = ConnKey {
        tgid,
        fd: pending.old,
    };
    // SAFETY: value copied out.
    if let Some(direction) = unsafe { STDIO_FDS.get(&old) }.copied() {
        let _ = STDIO_FDS.insert(&new, &direction, 0);
    }
}

/// `close(fd)`: the fd no longer holds the wire.
#[inline(always)]
pub fn forget(tgid: u32, fd: i32) {
    let _ = STDIO_FDS.remove(&ConnKey { tgid, fd });
}
