//! `apiscope check`: every kernel feature capture relies on, checked one by one, each with a
//! sentence an operator can act on, naming the oldest kernel that has what is missing.

use std::{fmt, path::Path};

use agent_common::SocketLookup;
use aya::{
    programs::ProgramType,
    sys::{BpfHelper, is_helper_supported},
};

use super::{btf, socket_lookup_name, tracefs::TRACEFS};

/// Outcome of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Available.
    Ok,
    /// Was missing and the agent fixed it (e.g. mounted tracefs).
    Fixed,
    /// Missing: capture cannot work.
    Missing,
}

/// One line of the `check` table.
#[derive(Debug, Clone)]
pub struct Finding {
    /// Short name of the feature.
    pub feature: &'static str,
    /// Outcome.
    pub status: Status,
    /// What was found, or what to do.
    pub detail: String,
}

impl Finding {
    fn new(feature: &'static str, result: Result<(Status, String), String>) -> Self {
        match result {
            Ok((status, detail)) => Self {
                feature,
                status,
                detail,
            },
            Err(detail) => Self {
                feature,
                status: Status::Missing,
                detail,
            },
        }
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = match self.status {
            Status::Ok => "ok",
            Status::Fixed => "fixed",
            Status::Missing => "MISSING",
        };
        write!(f, "{:<12} {:<8} {}", self.feature, status, self.detail)
    }
}

/// Runs every check that needs no kernel program, with the socket lookup `wanted` (`None`:
/// the best this kernel has); the caller adds the load test.
pub fn check_host(wanted: Option<SocketLookup>) -> Vec<Finding> {
    let mut findings = vec![Finding::new("privileges", privileges())];
    findings.extend(check_kernel(wanted));
    findings.push(Finding::new("tracefs", ensure_tracefs()));
    findings.push(Finding::new("uprobes", uprobes()));
    findings
}

/// The kernel features without which no program can run: BTF (and the socket lookup it
/// allows), ring buffers and `bpf_loop`.
fn check_kernel(wanted: Option<SocketLookup>) -> Vec<Finding> {
    let layout = btf::kernel_layout(Path::new(btf::VMLINUX_BTF), wanted);
    let (btf, sockets) = match layout {
        Ok(layout) => (
            Ok((
                Status::Ok,
                format!(
                    "{} (struct sock: family at {}, protocol at {})",
                    btf::VMLINUX_BTF,
                    layout.sock.family,
                    layout.sock.protocol
                ),
            )),
            Ok((Status::Ok, socket_lookup_detail(layout.socket_lookup))),
        ),
        Err(error) => {
            let error = error.to_string();
            (Err(error.clone()), Err(error))
        }
    };
    vec![
        Finding::new("BTF", btf),
        Finding::new("sockets", sockets),
        Finding::new("ring buffer", ring_buffer()),
        Finding::new("bpf_loop", bpf_loop()),
    ]
}

/// Fails with the first missing kernel feature, in one sentence, before anything is loaded.
pub fn require_kernel(wanted: Option<SocketLookup>) -> Result<(), String> {
    match check_kernel(wanted)
        .into_iter()
        .find(|finding| finding.status == Status::Missing)
    {
        Some(missing) => Err(format!("{}: {}", missing.feature, missing.detail)),
        None => Ok(()),
    }
}

fn socket_lookup_detail(lookup: SocketLookup) -> String {
    let why = match lookup {
        SocketLookup::Tracepoints => "Linux 6.3+",
        SocketLookup::FdTable => {
            "this kernel has no sock_send_length tracepoint, or it was asked for"
        }
    };
    format!("found by {} ({why})", socket_lookup_name(lookup))
}

/// Effective capability bits of this process, from `/proc/self/status`.
fn effective_capabilities() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let hex = status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// Whether this process has capability `cap` (a `CAP_*` number) in its effective set.
pub fn has_capability(cap: u32) -> bool {
    effective_capabilities().is_some_and(|caps| caps & (1 << cap) != 0)
}

/// Whether this process may load and attach the probes.
pub fn privileges() -> Result<(Status, String), String> {
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_PERFMON: u32 = 38;
    const CAP_BPF: u32 = 39;
    let caps = effective_capabilities().ok_or("cannot read /proc/self/status")?;
    let has = |cap: u32| caps & (1 << cap) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        Ok((Status::Ok, format!("effective capabilities {caps:#x}")))
    } else {
        Err("needs CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN): run as root".to_owned())
    }
}

fn is_tracefs_mounted() -> bool {
    Path::new(TRACEFS).join("events/syscalls").is_dir()
}

/// Mounts tracefs when it is missing: classic tracepoints cannot attach without it.
pub fn ensure_tracefs() -> Result<(Status, String), String> {
    if is_tracefs_mounted() {
        return Ok((Status::Ok, format!("mounted at {TRACEFS}")));
    }
    let status = std::process::Command::new("mount")
        .args(["-t", "tracefs", "nodev", TRACEFS])
        .status()
        .map_err(|error| format!("not mounted at {TRACEFS} and `mount` failed: {error}"))?;
    if status.success() && is_tracefs_mounted() {
        Ok((
            Status::Fixed,
            format!("was not mounted; mounted it at {TRACEFS}"),
        ))
    } else {
        Err(format!(
            "not mounted at {TRACEFS} and mounting it failed: run `mount -t tracefs nodev {TRACEFS}`"
        ))
    }
}

fn uprobes() -> Result<(Status, String), String> {
    let path = "/sys/bus/event_source/devices/uprobe/type";
    std::fs::read_to_string(path)
        .map(|kind| (Status::Ok, format!("perf event type {}", kind.trim())))
        .map_err(|_| format!("{path} missing: the kernel needs CONFIG_UPROBE_EVENTS=y"))
}

fn ring_buffer() -> Result<(Status, String), String> {
    const BPF_MAP_CREATE: libc::c_long = 0;
    const BPF_MAP_TYPE_RINGBUF: u32 = 27;
    // bpf_attr's map-create prefix: map_type, key_size, value_size, max_entries, map_flags,
    // then fields left zero. The kernel wants the rest of the union zeroed.
    let mut attr = [0u32; 32];
    attr[0] = BPF_MAP_TYPE_RINGBUF;
    attr[3] = 4096;
    // SAFETY: valid pointer and size for the bpf syscall.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_CREATE,
            attr.as_ptr(),
            std::mem::size_of_val(&attr),
        )
    };
    if fd < 0 {
        let error = std::io::Error::last_os_error();
        return Err(format!(
            "cannot create a BPF ring buffer ({error}): needs Linux 5.8+ and BPF privileges"
        ));
    }
    // SAFETY: fd was just returned by the kernel and is owned here.
    unsafe { libc::close(fd as libc::c_int) };
    Ok((Status::Ok, "BPF_MAP_TYPE_RINGBUF available".to_owned()))
}

fn bpf_loop() -> Result<(Status, String), String> {
    match is_helper_supported(ProgramType::TracePoint, BpfHelper::BPF_FUNC_loop) {
        Ok(true) => Ok((Status::Ok, "the bpf_loop helper is available".to_owned())),
        Ok(false) => Err("the kernel has no bpf_loop helper: needs Linux 5.17+".to_owned()),
        Err(error) => Err(format!(
            "cannot probe for the bpf_loop helper ({error}): needs Linux 5.17+ and BPF privileges"
        )),
    }
}
