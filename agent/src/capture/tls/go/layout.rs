//! Where a `*tls.Conn`'s socket fd lies in a given Go binary: from a table of the Go releases
//! whose layout is known, or from the binary's DWARF for the others.
//!
//! The three fields walked (`crypto/tls.Conn.conn`, `net.conn.fd`, and `Sysfd` inside
//! `net.netFD`'s embedded `poll.FD`) have kept their offsets from Go 1.17 to 1.26: each struct
//! starts with the field, but for `Sysfd`, which follows the 16-byte `fdMutex`. Source: the Go
//! standard library of each release, and the offsets table OpenTelemetry's eBPF instrumentation
//! generates from them (`pkg/internal/goexec/offsets.json`); a unit test checks the table
//! against the DWARF of Debian's Go.

use std::borrow::Cow;

use agent_common::go_tls::GoConnLayout;
use gimli::{EndianSlice, RunTimeEndian};
use object::{Object, ObjectSection};

use super::buildinfo::GoRelease;

/// The releases of the table: Go 1.17 brought the register ABI the probes read; 1.26 is the
/// newest whose layout was checked.
const KNOWN: std::ops::RangeInclusive<u32> = 17..=26;

/// The layout every known release has.
pub(super) const KNOWN_LAYOUT: GoConnLayout = GoConnLayout {
    conn: 0,
    fd: 0,
    sysfd: 16,
};

/// The struct members walked, as DWARF names them: (struct, member).
const MEMBERS: [(&str, &str); 4] = [
    ("crypto/tls.Conn", "conn"),
    ("net.conn", "fd"),
    ("net.netFD", "pfd"),
    ("internal/poll.FD", "Sysfd"),
];

/// The layout of a known release.
pub fn known(release: GoRelease) -> Option<GoConnLayout> {
    (release.major == 1 && KNOWN.contains(&release.minor)).then_some(KNOWN_LAYOUT)
}

/// The layout the binary's DWARF describes; `None` without DWARF, or when it lacks a member.
pub fn from_dwarf(file: &object::File) -> Option<GoConnLayout> {
    let endian = if file.is_little_endian() {
        RunTimeEndian::Little
    } else {
        RunTimeEndian::Big
    };
    let load = |id: gimli::SectionId| -> Result<Cow<'_, [u8]>, gimli::Error> {
        Ok(file
            .section_by_name(id.name())
            .and_then(|section| section.uncompressed_data().ok())
            .unwrap_or(Cow::Borrowed(&[])))
    };
    let sections = gimli::DwarfSections::load(load).ok()?;
    let dwarf = sections.borrow(|section| EndianSlice::new(section, endian));
    let mut offsets: [Option<u64>; 4] = [None; 4];
    let mut units = dwarf.units();
    while let Ok(Some(header)) = units.next() {
        let Ok(unit) = dwarf.unit(header) else {
            continue;
        };
        collect_members(&dwarf, &unit, &mut offsets);
        if offsets.iter().all(Option::is_some) {
            break;
        }
    }
    let [conn, fd, pfd, sysfd] = offsets;
    let field = |offset: u64| u16::try_from(offset).ok();
    Some(GoConnLayout {
        conn: field(conn?)?,
        fd: field(fd?)?,
        sysfd: field(pfd?.checked_add(sysfd?)?)?,
    })
}

/// Fills in `offsets` (in [`MEMBERS`] order) from the structs of `unit`.
fn collect_members<R: gimli::Reader>(
    dwarf: &gimli::Dwarf<R>,
    unit: &gimli::Unit<R>,
    offsets: &mut [Option<u64>; 4],
) {
    let mut entries = unit.entries();
    // The struct being walked, as its index in MEMBERS, and its depth.
    let mut inside: Option<(usize, isize)> = None;
    let mut depth = 0isize;
    while let Ok(Some((delta, entry))) = entries.next_dfs() {
        depth += delta;
        if inside.is_some_and(|(_, at)| depth <= at) {
            inside = None;
        }
        let name = || -> Option<String> {
            let value = entry.attr_value(gimli::DW_AT_name).ok()??;
            let text = dwarf.attr_string(unit, value).ok()?;
            Some(text.to_string_lossy().ok()?.into_owned())
        };
        if entry.tag() == gimli::DW_TAG_structure_type {
            inside = name().and_then(|name| {
                let index = MEMBERS.iter().position(|(wanted, _)| *wanted == name)?;
                Some((index, depth))
            });
            continue;
        }
        let Some((index, _)) = inside else {
            continue;
        };
        let (Some(slot), Some((_, member))) = (offsets.get_mut(index), MEMBERS.get(index)) else {
            continue;
        };
        if entry.tag() != gimli::DW_TAG_member
            || slot.is_some()
            || name().as_deref() != Some(member)
        {
            continue;
        }
        *slot = entry
            .attr_value(gimli::DW_AT_data_member_location)
            .ok()
            .flatten()
            .and_then(|value| value.udata_value());
    }
}
