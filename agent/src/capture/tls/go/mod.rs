//! Go `crypto/tls`: which functions of a Go executable to probe, where, and how its `tls.Conn`
//! reaches its socket, all read from the binary.
//!
//! The Go version comes from the build information, `(*Conn).Write` and `.Read` from the
//! symbol table or, in stripped binaries, from Go's own function table; their return
//! instructions from decoding their machine code; the struct layout from the table of known
//! releases, or from the binary's DWARF for newer ones. A binary where any of this fails is
//! not probed and is counted: a guessed layout would read the wrong memory.

mod buildinfo;
mod layout;
mod pclntab;
mod returns;

use std::{ops::Range, path::Path};

use agent_common::{
    Direction,
    go_tls::{self, GoConnLayout},
};
use aya::{
    Ebpf,
    programs::uprobe::{UProbeAttachLocation, UProbeAttachPoint},
};
use object::{Architecture, Object, ObjectSection, ObjectSymbol};

use self::{buildinfo::GoRelease, pclntab::FunctionTable};
use super::attach_uprobe;
use crate::capture::{
    CaptureError,
    links::ProbeLink,
    probes::{GO_TLS_ENTRY_PROGRAM, GO_TLS_RETURN_PROGRAM},
};

/// The functions probed, and which way each moves the plaintext.
pub(crate) const FUNCTIONS: [(&str, Direction); 2] = [
    ("crypto/tls.(*Conn).Write", Direction::Egress),
    ("crypto/tls.(*Conn).Read", Direction::Ingress),
];

/// Go's function table is read for stripped binaries of these releases only: its header
/// changed in 1.18, and 1.26 no longer stores the text start in it.
const FUNCTION_TABLE_RELEASES: Range<u32> = 18..26;

/// A function's extent is capped at this when it is decoded: `(*Conn).Write` and `.Read` are a
/// few KiB.
const MAX_FUNCTION_LEN: u64 = 64 * 1024;

/// What a file is to the Go probes.
#[derive(Debug)]
pub enum GoInspection {
    /// Not a Go executable.
    NotGo,
    /// A Go executable that does not use `crypto/tls`.
    WithoutTls,
    /// A Go executable with `crypto/tls` that cannot be probed safely, and why.
    Unsupported(String),
    /// Where to attach.
    Probe(GoTlsProbes),
}

/// Where the probes of one Go executable go, as file offsets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoTlsProbes {
    /// The Go version it was built with (`go1.19.8`).
    pub version: String,
    /// Where its `tls.Conn`'s socket fd lies.
    pub layout: GoConnLayout,
    /// `(*Conn).Write`, then `(*Conn).Read`.
    pub functions: Vec<ProbedFunction>,
}

/// One probed function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbedFunction {
    /// Its Go name.
    pub name: &'static str,
    /// Which way its bytes go.
    pub direction: Direction,
    /// File offset of its first instruction.
    pub entry: u64,
    /// File offsets of its return instructions, where its result is read; none for `Write`,
    /// whose bytes are known at entry.
    pub returns: Vec<u64>,
}

/// Attaches the entry program to each function, its cookie carrying the binary's layout and
/// the function's direction, and the return program to each of its return instructions, adding
/// their links to `links`; on failure the links made so far stay there (attached) until the
/// file is retired or the agent stops.
pub fn attach(
    ebpf: &mut Ebpf,
    path: &Path,
    probes: &GoTlsProbes,
    links: &mut Vec<ProbeLink>,
) -> Result<(), CaptureError> {
    for function in &probes.functions {
        let entry = UProbeAttachPoint {
            location: UProbeAttachLocation::AbsoluteOffset(function.entry),
            cookie: Some(go_tls::cookie(probes.layout, function.direction)),
        };
        attach_uprobe(ebpf, GO_TLS_ENTRY_PROGRAM, entry, path, links)?;
        for offset in &function.returns {
            let at = UProbeAttachLocation::AbsoluteOffset(*offset).into();
            attach_uprobe(ebpf, GO_TLS_RETURN_PROGRAM, at, path, links)?;
        }
    }
    Ok(())
}

/// Inspects a parsed ELF file.
pub fn inspect(file: &object::File) -> GoInspection {
    let Some(version) = buildinfo::go_version(file) else {
        return GoInspection::NotGo;
    };
    match plan(file, &version) {
        Ok(Some(probes)) => GoInspection::Probe(probes),
        Ok(None) => GoInspection::WithoutTls,
        Err(why) => GoInspection::Unsupported(format!("{version}: {why}")),
    }
}

/// The probes of a Go binary built with `version`; `None` when it has no `crypto/tls`.
fn plan(file: &object::File, version: &str) -> Result<Option<GoTlsProbes>, String> {
    let release = GoRelease::parse(version);
    let ranges = function_ranges(file, release)?;
    let found = ranges.iter().filter(|range| range.is_some()).count();
    if found == 0 {
        return Ok(None);
    }
    if file.architecture() != Architecture::X86_64 {
        return Err(format!("{:?} binaries are not probed", file.architecture()));
    }
    if found < FUNCTIONS.len() {
        return Err("only one of (*Conn).Write and (*Conn).Read is in the binary".to_owned());
    }
    let release = release.ok_or("a development build, whose layout no release promises")?;
    if release
        < (GoRelease {
            major: 1,
            minor: 17,
        })
    {
        return Err("Go before 1.17 passes arguments on the stack".to_owned());
    }
    let layout = layout::known(release)
        .or_else(|| layout::from_dwarf(file))
        .ok_or("a release newer than the agent knows, without DWARF to read its layout from")?;
    let mut functions = Vec::with_capacity(FUNCTIONS.len());
    for ((name, direction), range) in FUNCTIONS.into_iter().zip(ranges) {
        let range = range.ok_or("unreachable: both functions were found")?;
        let (code, to_file_offset) = code_of(file, &range)
            .ok_or_else(|| format!("the code of {name} is not in the file"))?;
        // A write is sent at its entry (see `go_tls.rs` on the kernel side); only reads need
        // their returns.
        let returns: Vec<u64> = match direction {
            Direction::Egress => Vec::new(),
            Direction::Ingress => returns::return_addresses(code, range.start)
                .into_iter()
                .map(|address| address - range.start + to_file_offset)
                .collect(),
        };
        if direction == Direction::Ingress && returns.is_empty() {
            return Err(format!("no return instruction found in {name}"));
        }
        functions.push(ProbedFunction {
            name,
            direction,
            entry: to_file_offset,
            returns,
        });
    }
    Ok(Some(GoTlsProbes {
        version: version.to_owned(),
        layout,
        functions,
    }))
}

/// Runs the hand-written parsers of this module on `data`: as Go's function table, as the
/// build information's version string, and as machine code.
pub(super) fn fuzz_tables(data: &[u8]) {
    if let Some(table) = FunctionTable::parse(data, 0x1000) {
        for (name, _) in FUNCTIONS {
            let _ = table.find(name);
        }
    }
    let _ = buildinfo::inline_string(data);
    let _ = returns::return_addresses(data, 0x1000);
}

/// The address ranges of [`FUNCTIONS`], from the symbol table, or from Go's function table
/// when the binary is stripped.
fn function_ranges(
    file: &object::File,
    release: Option<GoRelease>,
) -> Result<[Option<Range<u64>>; 2], String> {
    if file.symbols().next().is_some() {
        return Ok(FUNCTIONS.map(|(name, _)| {
            file.symbols()
                .find(|symbol| symbol.name() == Ok(name) && symbol.size() > 0)
                .map(|symbol| symbol.address()..symbol.address() + symbol.size())
        }));
    }
    let readable = release.is_some_and(|release| {
        release.major == 1 && FUNCTION_TABLE_RELEASES.contains(&release.minor)
    });
    if !readable {
        return Err("stripped, and Go's function table of this release is not read".to_owned());
    }
    let table = FunctionTable::of(file).ok_or("stripped, and Go's function table is unreadable")?;
    Ok(FUNCTIONS.map(|(name, _)| table.find(name)))
}

/// The machine code in `range` and the file offset where it starts.
fn code_of<'data>(file: &object::File<'data>, range: &Range<u64>) -> Option<(&'data [u8], u64)> {
    if range.end - range.start > MAX_FUNCTION_LEN {
        return None;
    }
    let section = file.sections().find(|section| {
        section.address() <= range.start && range.end <= section.address() + section.size()
    })?;
    let (section_offset, _) = section.file_range()?;
    let data = section.data().ok()?;
    let start = usize::try_from(range.start - section.address()).ok()?;
    let end = usize::try_from(range.end - section.address()).ok()?;
    Some((data.get(start..end)?, section_offset + start as u64))
}

#[cfg(test)]
mod tests;
