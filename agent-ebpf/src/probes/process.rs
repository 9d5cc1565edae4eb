//! Process lifecycle: exec (userspace looks for OpenSSL in the new image) and exit (userspace
//! drops the process's connection state).

use agent_common::EventKind;
use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid, macros::tracepoint, programs::TracePointContext,
};

use crate::{filter::is_traced, record::submit_lifecycle};

/// `sched:sched_process_exec`.
#[tracepoint]
pub fn process_enter_exec(_ctx: TracePointContext) -> u32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if is_traced(tgid) {
        submit_lifecycle(EventKind::ProcessExec, tgid, -1, 0);
    }
    0
}

/// `sched:sched_process_exit`, once per process (when its main thread exits).
#[tracepoint]
pub fn process_enter_exit(_ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if tgid == pid_tgid as u32 && is_traced(tgid) {
        submit_lifecycle(EventKind::ProcessExit, tgid, -1, 0);
    }
    0
}
