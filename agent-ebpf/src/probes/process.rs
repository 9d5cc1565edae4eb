//! Process lifecycle: exec (userspace names the process, matches it against the selection
//! rules and looks for TLS stacks in the new image, which it may be held for: `exec_hold`),
//! libraries mapped as code (held for the same way), fork (a child inherits its parent's
//! selection verdict) and exit (userspace drops the process's connection state).

use agent_common::{Counter, EventKind, ExecEvent, Verdict, filter_maps};
use aya_ebpf::{
    EbpfContext,
    bindings::BPF_RB_FORCE_WAKEUP,
    helpers::{
        bpf_get_current_pid_tgid, bpf_probe_read_kernel_str_bytes, generated::bpf_ktime_get_ns,
    },
    macros::tracepoint,
    programs::TracePointContext,
};

use crate::{
    exec_hold,
    filter::is_traced,
    maps::{CONFIG, EVENTS, PID_FILTER, count},
    probes::syscalls::{arg, ret},
    record::submit_lifecycle,
};

/// `PROT_EXEC` of `mmap`'s protection.
const PROT_EXEC: u64 = 4;

/// Offset of `__data_loc char[] filename` in the `sched_process_exec` record.
const FILENAME_LOC: usize = 8;

/// The `filters` bits of the configuration.
#[inline(always)]
fn filters() -> u32 {
    CONFIG.get(0).map_or(0, |config| config.filters)
}

/// `sched:sched_process_exec`: sends the executed file's path. Read here because short-lived
/// processes are often gone before userspace could read `/proc/PID/exe`. Under selection rules
/// that match executables, the process is held (not captured) until userspace has matched
/// its new image. A process that runs a file new to userspace may be stopped here until its
/// TLS uprobes are attached (`exec_hold`).
#[tracepoint]
pub fn process_enter_exec(ctx: TracePointContext) -> u32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if filters() & filter_maps::EXEC_GATE != 0 {
        let _ = PID_FILTER.insert(&tgid, &(Verdict::Pending as u32), 0);
    } else if !is_traced(tgid) {
        return 0;
    }
    // SAFETY: offset of a field in the record, as its format file lists it.
    let location: u32 = unsafe { ctx.read_at(FILENAME_LOC) }.unwrap_or(0);
    // A __data_loc holds the field's offset from the record start in its low 16 bits.
    let offset = (location & 0xffff) as usize;
    let Some(mut entry) = EVENTS.reserve::<ExecEvent>(0) else {
        count(Counter::RingBufferFull);
        return 0;
    };
    let event = entry.as_mut_ptr();
    // SAFETY: helper without arguments.
    let now_ns = unsafe { bpf_ktime_get_ns() };
    let executable = exec_hold::current_executable();
    // Decided only once the record is reserved: a stopped process is always announced.
    let held = exec_hold::hold_if_new(tgid, &executable, now_ns);
    // SAFETY: `event` points at the reserved record, written whole before submit; the path is
    // read through the helper, which tolerates bad addresses.
    unsafe {
        (*event).kind = EventKind::ProcessExec as u32;
        (*event).tgid = tgid;
        (*event).ts_ns = now_ns;
        (*event).held = held as u32;
        (*event).executable = executable;
        let source = (ctx.as_ptr() as *const u8).add(offset);
        (*event).path_len = bpf_probe_read_kernel_str_bytes(source, &mut (*event).path)
            .map(|path| path.len() as u32)
            .unwrap_or(0);
    }
    // Woken at once: the identity of a short-lived process (curl) must be read from /proc
    // before it exits, and execs are rare enough for the wake-ups to cost nothing.
    entry.submit(BPF_RB_FORCE_WAKEUP as u64);
    count(Counter::EventsSent);
    0
}

/// Entry of `mmap(addr, length, prot, flags, fd, offset)`: a file mapped as code (the dynamic
/// loader or `dlopen` loading a library) that userspace has not inspected is noted for the
/// exit, which holds the process.
#[tracepoint]
pub fn syscalls_enter_mmap(ctx: TracePointContext) -> u32 {
    if arg(&ctx, 2) & PROT_EXEC == 0 {
        return 0;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    if is_traced((pid_tgid >> 32) as u32) {
        exec_hold::note_mapping(pid_tgid, arg(&ctx, 4) as i32);
    }
    0
}

/// Exit of `mmap`: a process that mapped a new file as code is stopped before it runs any of
/// it, and announced, until userspace has inspected the file (`exec_hold`).
#[tracepoint]
pub fn syscalls_exit_mmap(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(file) = exec_hold::take_mapping(pid_tgid) else {
        return 0;
    };
    // A failed call returns -errno.
    if (-4095..0).contains(&ret(&ctx)) {
        return 0;
    }
    let tgid = (pid_tgid >> 32) as u32;
    let Some(mut entry) = EVENTS.reserve::<ExecEvent>(0) else {
        count(Counter::RingBufferFull);
        return 0;
    };
    // SAFETY: helper without arguments.
    let now_ns = unsafe { bpf_ktime_get_ns() };
    // Decided only once the record is reserved: a stopped process is always announced.
    if !exec_hold::hold_if_new(tgid, &file, now_ns) {
        entry.discard(0);
        return 0;
    }
    let event = entry.as_mut_ptr();
    // SAFETY: `event` points at the reserved record, written whole before submit.
    unsafe {
        (*event).kind = EventKind::LibraryMapped as u32;
        (*event).tgid = tgid;
        (*event).ts_ns = now_ns;
        (*event).held = 1;
        (*event).executable = file;
        (*event).path_len = 0;
        (*event).path[0] = 0;
    }
    // Woken at once: the process waits for userspace.
    entry.submit(BPF_RB_FORCE_WAKEUP as u64);
    count(Counter::EventsSent);
    0
}

/// `sched:sched_process_exit`, once per thread: the process's exit is reported when its main
/// thread exits; every thread's selection entry (forks insert threads too) is removed.
#[tracepoint]
pub fn process_enter_exit(_ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let (tgid, pid) = ((pid_tgid >> 32) as u32, pid_tgid as u32);
    if tgid == pid {
        exec_hold::forget(tgid);
        if is_traced(tgid) {
            submit_lifecycle(EventKind::ProcessExit, tgid, -1, 0);
        }
    }
    if filters() & filter_maps::PIDS != 0 {
        let _ = PID_FILTER.remove(&pid);
    }
    0
}

/// `sched:sched_process_fork`: the child (process or thread) inherits its parent's selection
/// verdict, so that a forked worker of an excluded server stays excluded.
#[tracepoint]
pub fn process_enter_fork(ctx: TracePointContext) -> u32 {
    let Some(config) = CONFIG.get(0) else {
        return 0;
    };
    if config.filters & filter_maps::PIDS == 0 {
        return 0;
    }
    let fork = config.fork;
    // SAFETY: offsets of fields in the record, read by userspace from its format file.
    let (parent, child): (u32, u32) = unsafe {
        (
            ctx.read_at(fork.parent_pid as usize).unwrap_or(0),
            ctx.read_at(fork.child_pid as usize).unwrap_or(0),
        )
    };
    // SAFETY: plain value read.
    if let Some(verdict) = unsafe { PID_FILTER.get(&parent) }.copied() {
        let _ = PID_FILTER.insert(&child, &verdict, 0);
    }
    0
}
