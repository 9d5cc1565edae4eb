//! The hold of a process at exec: one that runs a file userspace has not inspected yet is
//! stopped before its first instruction, so that the TLS uprobes of a new executable (Node and
//! others carry OpenSSL inside) are attached before its first TLS call. Userspace continues it
//! once the file is inspected; its release keeper does so when userspace is late or gone.
//!
//! Processes with a controlling terminal are never held: a job-control shell would take the
//! stop for the user's and put the program in the background.

use agent_common::{Counter, ExecutableKey};
use aya_ebpf::helpers::{bpf_get_current_task, generated::bpf_send_signal};

use crate::{
    fd_table::read,
    maps::{CONFIG, HELD, KNOWN_EXECUTABLES, count},
};

/// `SIGSTOP`: cannot be caught or ignored.
const SIGSTOP: u32 = 19;

/// The file the current task now runs, after its exec; zero when a pointer on the way is
/// unreadable.
#[inline(always)]
pub fn current_executable() -> ExecutableKey {
    executable().unwrap_or_default()
}

#[inline(always)]
fn executable() -> Option<ExecutableKey> {
    let offsets = CONFIG.get(0)?.exec;
    // SAFETY: helper without arguments.
    let task = unsafe { bpf_get_current_task() };
    let mm: u64 = read(task, offsets.task_mm.into())?;
    let file: u64 = read(mm, offsets.mm_exe_file.into())?;
    let inode: u64 = read(file, offsets.file_inode.into())?;
    let super_block: u64 = read(inode, offsets.inode_sb.into())?;
    Some(ExecutableKey {
        dev: read(super_block, offsets.super_dev.into())?,
        reserved: 0,
        ino: read(inode, offsets.inode_ino.into())?,
    })
}

/// Whether the current task has a controlling terminal; also true when it cannot be told.
#[inline(always)]
fn has_terminal() -> bool {
    let Some(config) = CONFIG.get(0) else {
        return true;
    };
    // SAFETY: helper without arguments.
    let task = unsafe { bpf_get_current_task() };
    let Some(signal) = read::<u64>(task, config.exec.task_signal.into()) else {
        return true;
    };
    read::<u64>(signal, config.exec.signal_tty.into()).is_none_or(|tty| tty != 0)
}

/// Stops process `tgid`, which just exec'd `executable`, when holds are on, the file is new
/// and the process has no terminal; true when it was stopped. Records the stop in `HELD`
/// first, so that a stop nobody could release never happens: a full map means no hold.
#[inline(always)]
pub fn hold_if_new(tgid: u32, executable: &ExecutableKey, now_ns: u64) -> bool {
    if CONFIG
        .get(0)
        .is_none_or(|config| config.hold_new_executables == 0)
        || executable.ino == 0
    {
        return false;
    }
    // SAFETY: plain value read.
    if unsafe { KNOWN_EXECUTABLES.get(executable) }.is_some() || has_terminal() {
        return false;
    }
    if HELD.insert(&tgid, &now_ns, 0).is_err() {
        return false;
    }
    // SAFETY: helper with a signal number; it signals the current process.
    if unsafe { bpf_send_signal(SIGSTOP) } != 0 {
        let _ = HELD.remove(&tgid);
        return false;
    }
    count(Counter::ExecHeld);
    true
}

/// Forgets the hold of process `tgid`, which is exiting (a held process killed while stopped).
#[inline(always)]
pub fn forget(tgid: u32) {
    let _ = HELD.remove(&tgid);
}
