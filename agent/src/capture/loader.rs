//! Loading and attaching the kernel programs group by group (see `probes`): every group's
//! programs are loaded (verified) first, then the tail-call slots are filled, then the groups
//! attach in table order. A group that fails at any step is taken out whole and the agent goes
//! on without it; only the core group's failure is an error.

use std::{collections::HashMap, path::Path};

use agent_common::SocketLookup;
use aya::{
    Btf, Ebpf,
    maps::{MapData, ProgramArray},
    programs::{BtfTracePoint, Program, TracePoint},
};
use log::{debug, warn};

use super::{
    CaptureError,
    groups::{GroupState, GroupStatus, LoadFailure, LoadReport, ProgramCost},
    links::{self, ProbeLink},
    probes::{Hook, PROBES, Probe, ProbeGroup},
    release_freed_memory,
};

/// The programs that run, and what loading them came to.
pub(super) struct Loaded {
    /// The attached kernel probes (the OpenSSL uprobes attach later, per file).
    pub links: Vec<ProbeLink>,
    /// Every group's state and every program's verifier cost.
    pub report: LoadReport,
    /// The tail-call slots: they stay filled as long as this is open.
    pub tail_calls: ProgramArray<MapData>,
}

/// Loads and attaches every group's programs that serve `lookup`. The verifier's log of a
/// refused program goes to `verifier_log` when given, and to the debug log.
pub(super) fn load_and_attach(
    ebpf: &mut Ebpf,
    lookup: SocketLookup,
    verifier_log: Option<&Path>,
) -> Result<Loaded, CaptureError> {
    let probes: Vec<&Probe> = PROBES
        .iter()
        .filter(|probe| probe.used_with(lookup))
        .collect();
    let mut failures: HashMap<ProbeGroup, LoadFailure> = HashMap::new();
    load_programs(ebpf, &probes, &mut failures)?;
    let tail_calls = fill_tail_calls(ebpf, &probes, &mut failures)?;
    let mut links = Vec::new();
    for group in ProbeGroup::ALL {
        if failures.contains_key(&group) {
            continue;
        }
        let mut group_links = Vec::new();
        let attached = probes
            .iter()
            .filter(|probe| probe.group == group)
            .try_for_each(|probe| attach(ebpf, probe, &mut group_links));
        match attached {
            Ok(()) => links.append(&mut group_links),
            Err(failure) => {
                links::detach_all(group_links);
                failures.insert(group, failure);
            }
        }
    }
    let mut groups = Vec::new();
    for group in ProbeGroup::ALL {
        let state = match failures.remove(&group) {
            None => GroupState::On,
            Some(failure) => {
                if let Some(path) = verifier_log {
                    failure.write_log(group, path);
                }
                if let Some(log) = &failure.log {
                    debug!("verifier log of {}:\n{log}", failure.program);
                }
                if group.is_required() {
                    links::detach_all(links);
                    return Err(CaptureError::Core(failure));
                }
                warn!(
                    "probe group {} is off: {failure}; {}",
                    group.name(),
                    group.lost_without()
                );
                unload_group(ebpf, &probes, group);
                GroupState::Off(failure)
            }
        };
        groups.push(GroupStatus { group, state });
    }
    let programs = probes
        .iter()
        .filter_map(|probe| {
            let program = ebpf.program(probe.program)?;
            let info = program.info().ok()?;
            Some(ProgramCost {
                program: probe.program,
                group: probe.group,
                hook: probe.hook,
                verified_insns: info.verified_instruction_count(),
            })
        })
        .collect();
    Ok(Loaded {
        links,
        report: LoadReport {
            socket_lookup: lookup,
            groups,
            programs,
        },
        tail_calls,
    })
}

/// Loads every program of `probes`, group by group; a group stops at its first failure. The
/// kernel's BTF, which the BTF tracepoints need, is parsed only if one is loaded, and freed
/// before returning (see the memory note in `Capture::start`).
fn load_programs(
    ebpf: &mut Ebpf,
    probes: &[&Probe],
    failures: &mut HashMap<ProbeGroup, LoadFailure>,
) -> Result<(), CaptureError> {
    let mut kernel_btf = None;
    for probe in probes {
        if failures.contains_key(&probe.group) {
            continue;
        }
        if let Err(failure) = load(ebpf, probe, &mut kernel_btf)? {
            failures.insert(probe.group, failure);
        }
    }
    if kernel_btf.is_some() {
        drop(kernel_btf);
        release_freed_memory();
    }
    Ok(())
}

/// Loads one program. The outer error is the agent's own (a program missing from the object);
/// the inner one is the kernel's refusal.
fn load(
    ebpf: &mut Ebpf,
    probe: &Probe,
    kernel_btf: &mut Option<Btf>,
) -> Result<Result<(), LoadFailure>, CaptureError> {
    let name = probe.program;
    let program = ebpf
        .program_mut(name)
        .ok_or(CaptureError::MissingProgram(name))?;
    let loaded = match (probe.hook, program) {
        (Hook::BtfTracepoint { name: tracepoint }, Program::BtfTracePoint(program)) => {
            let btf = match kernel_btf {
                Some(btf) => btf,
                None => kernel_btf.insert(Btf::from_sys_fs().map_err(CaptureError::KernelBtf)?),
            };
            BtfTracePoint::load(program, tracepoint, btf)
        }
        (Hook::Tracepoint { .. } | Hook::TailCall { .. }, Program::TracePoint(program)) => {
            TracePoint::load(program)
        }
        (Hook::TlsUprobe, Program::UProbe(program)) => program.load(),
        _ => {
            return Ok(Err(LoadFailure::other(
                name,
                format!("program `{name}` is not of the type its hook needs"),
            )));
        }
    };
    Ok(loaded.map_err(|error| LoadFailure::load(name, &error)))
}

/// Puts the loaded tail-call programs in their `TAIL_CALLS` slots.
fn fill_tail_calls(
    ebpf: &mut Ebpf,
    probes: &[&Probe],
    failures: &mut HashMap<ProbeGroup, LoadFailure>,
) -> Result<ProgramArray<MapData>, CaptureError> {
    let map = ebpf.take_map("TAIL_CALLS").ok_or(CaptureError::Settings(
        "the kernel object has no map `TAIL_CALLS`".to_owned(),
    ))?;
    let mut slots = ProgramArray::try_from(map).map_err(|source| CaptureError::Map {
        name: "TAIL_CALLS",
        source,
    })?;
    for probe in probes {
        let Hook::TailCall { slot } = probe.hook else {
            continue;
        };
        if failures.contains_key(&probe.group) {
            continue;
        }
        let name = probe.program;
        let set = ebpf
            .program(name)
            .ok_or(CaptureError::MissingProgram(name))?
            .fd()
            .and_then(|fd| slots.set(slot, fd, 0).map_err(Into::into));
        if let Err(error) = set {
            failures.insert(
                probe.group,
                LoadFailure::other(
                    name,
                    format!("cannot put program `{name}` in its tail-call slot: {error}"),
                ),
            );
        }
    }
    Ok(slots)
}

/// Attaches one program to its hook, adding its link to `links`. Tail-call programs and the
/// TLS uprobes are not attached here.
fn attach(ebpf: &mut Ebpf, probe: &Probe, links: &mut Vec<ProbeLink>) -> Result<(), LoadFailure> {
    let name = probe.program;
    let missing = || LoadFailure::other(name, format!("program `{name}` is not loaded"));
    let program = ebpf.program_mut(name).ok_or_else(missing)?;
    match (probe.hook, program) {
        (
            Hook::Tracepoint {
                category,
                name: tracepoint,
            },
            Program::TracePoint(program),
        ) => {
            let failed = |error| {
                LoadFailure::attach(name, &format!("tracepoint {category}/{tracepoint}"), &error)
            };
            let link = program.attach(category, tracepoint).map_err(failed)?;
            links.push(ProbeLink::Tracepoint(
                program.take_link(link).map_err(failed)?,
            ));
        }
        (Hook::BtfTracepoint { name: tracepoint }, Program::BtfTracePoint(program)) => {
            let failed =
                |error| LoadFailure::attach(name, &format!("BTF tracepoint {tracepoint}"), &error);
            let link = program.attach().map_err(failed)?;
            links.push(ProbeLink::BtfTracepoint(
                program.take_link(link).map_err(failed)?,
            ));
        }
        _ => {}
    }
    Ok(())
}

/// Unloads the programs of a group that is off, so that none of it stays in the kernel.
fn unload_group(ebpf: &mut Ebpf, probes: &[&Probe], group: ProbeGroup) {
    for probe in probes.iter().filter(|probe| probe.group == group) {
        // A program that never loaded answers "not loaded": nothing to undo.
        let _ = match ebpf.program_mut(probe.program) {
            Some(Program::TracePoint(program)) => program.unload(),
            Some(Program::BtfTracePoint(program)) => program.unload(),
            Some(Program::UProbe(program)) => program.unload(),
            _ => Ok(()),
        };
    }
}
