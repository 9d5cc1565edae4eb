//! The hold of a process at exec: one that runs a file userspace has not inspected yet is
//! stopped before its first instruction, so that the TLS uprobes of a new executable (Node and
//! others carry OpenSSL inside) are attached before its first TLS call. Userspace continues it
//! once the file is inspected; its release keeper does so when userspace is late or gone.
//! A TLS library mapped as code (`mmap` with `PROT_EXEC`: the dynamic loader or `dlopen` loading
//! the `libssl` copy of a container image) is held for the same way, once the mapping exists
//! and before the process runs any of it. Only files named as userspace's TLS libraries are
//! (`agent_common::maps::OPENSSL_FILE_PREFIXES`): userspace would find nothing to attach to in
//! the others, so stopping a process for them would only slow its start.
//!
//! Processes with a controlling terminal are never held: a job-control shell would take the
//! stop for the user's and put the program in the background.

use agent_common::{
    Counter, ExecutableKey,
    maps::{GNUTLS_FILE_PREFIXES, OPENSSL_FILE_PREFIXES},
};
use aya_ebpf::helpers::{
    bpf_get_current_task, bpf_probe_read_kernel_str_bytes, generated::bpf_send_signal,
};

use crate::{
    fd_table::{file_of, read},
    maps::{CONFIG, HELD, KNOWN_EXECUTABLES, PENDING_MAPPINGS, count},
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
    file_key(read(mm, offsets.mm_exe_file.into())?)
}

/// The device and inode of the `struct file *` at `file`.
#[inline(always)]
fn file_key(file: u64) -> Option<ExecutableKey> {
    let offsets = CONFIG.get(0)?.exec;
    let inode: u64 = read(file, offsets.file_inode.into())?;
    let super_block: u64 = read(inode, offsets.inode_sb.into())?;
    Some(ExecutableKey {
        dev: read(super_block, offsets.super_dev.into())?,
        reserved: 0,
        ino: read(inode, offsets.inode_ino.into())?,
    })
}

/// Whether processes that run new files are held.
#[inline(always)]
fn holding() -> bool {
    CONFIG
        .get(0)
        .is_some_and(|config| config.hold_new_executables != 0)
}

/// Whether `file` is one a process is held for: not inspected by userspace yet, and run by a
/// process without a terminal.
#[inline(always)]
fn is_new(file: &ExecutableKey) -> bool {
    // SAFETY: plain value read.
    file.ino != 0 && unsafe { KNOWN_EXECUTABLES.get(file) }.is_none() && !has_terminal()
}

/// Bytes of a file name compared with the TLS libraries' prefixes: the longest prefix fits.
const NAME_BYTES: usize = 16;

/// Whether the name of the `struct file *` at `file` starts as a TLS library's does.
#[inline(always)]
fn named_like_tls_library(file: u64) -> bool {
    let Some(offsets) = CONFIG.get(0).map(|config| config.exec) else {
        return false;
    };
    let Some(name) = read::<u64>(file, offsets.file_dentry.into())
        .and_then(|dentry| read::<u64>(dentry, offsets.dentry_name.into()))
    else {
        return false;
    };
    let mut bytes = [0u8; NAME_BYTES];
    // SAFETY: kernel string read through the helper, which tolerates bad addresses.
    if unsafe { bpf_probe_read_kernel_str_bytes(name as *const u8, &mut bytes) }.is_err() {
        return false;
    }
    OPENSSL_FILE_PREFIXES
        .iter()
        .chain(GNUTLS_FILE_PREFIXES.iter())
        .any(|prefix| starts_with(&bytes, prefix.as_bytes()))
}

/// Byte by byte, so that the compiler unrolls it rather than calling `memcmp`.
#[inline(always)]
fn starts_with(name: &[u8; NAME_BYTES], prefix: &[u8]) -> bool {
    prefix.len() <= NAME_BYTES
        && (0..prefix.len()).all(|at| name.get(at).copied() == prefix.get(at).copied())
}

/// At the entry of `mmap(fd)` by thread `pid_tgid`, asking for code: notes the file when it is
/// a TLS library new to userspace, for [`take_mapping`] at the exit, once the mapping exists
/// (userspace looks for it in `/proc/PID/maps`).
#[inline(always)]
pub fn note_mapping(pid_tgid: u64, fd: i32) {
    if !holding() {
        return;
    }
    let Some(file) = file_of(fd).filter(|file| named_like_tls_library(*file)) else {
        return;
    };
    let Some(key) = file_key(file) else {
        return;
    };
    if is_new(&key) {
        let _ = PENDING_MAPPINGS.insert(&pid_tgid, &key, 0);
    }
}

/// At the exit of `mmap` by thread `pid_tgid`: the new file its entry noted, if any.
#[inline(always)]
pub fn take_mapping(pid_tgid: u64) -> Option<ExecutableKey> {
    // SAFETY: plain value read, copied out before the entry goes.
    let file = unsafe { PENDING_MAPPINGS.get(&pid_tgid) }.copied()?;
    let _ = PENDING_MAPPINGS.remove(&pid_tgid);
    Some(file)
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

/// Stops process `tgid`, which just exec'd or mapped `file`, when holds are on, the file is new
/// and the process has no terminal; true when it was stopped. Records the stop in `HELD`
/// first, so that a stop nobody could release never happens: a full map means no hold.
#[inline(always)]
pub fn hold_if_new(tgid: u32, file: &ExecutableKey, now_ns: u64) -> bool {
    if !holding() || !is_new(file) || HELD.insert(&tgid, &now_ns, 0).is_err() {
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
