//! Function addresses from Go's own function table, `.gopclntab`, which stripped binaries keep
//! (the runtime needs it for stack traces and garbage collection).
//!
//! Layout of Go 1.18 to 1.25 (`runtime/symtab.go`, `pcHeader`): a magic (`0xfffffff0` for 1.18
//! and 1.19, `0xfffffff1` since 1.20), two zero bytes, the instruction size quantum, the pointer
//! size, then pointer-sized fields: function count, file count, text start, and the offsets of
//! the function-name table and (last) of the function table. The function table holds, per
//! function and one past the last, `{entry offset from text start, offset of its _func}` as two
//! `u32`; a `_func` starts with its entry offset and the offset of its name (a C string in the
//! name table). A function ends where the next one starts.

use std::ops::Range;

use object::{Object, ObjectSection};

/// The magics of the layouts read here.
const MAGICS: [u32; 2] = [0xffff_fff0, 0xffff_fff1];
/// Header fields after the first 8 bytes, counted in pointers.
const FIELD_NFUNC: usize = 0;
const FIELD_TEXT_START: usize = 2;
const FIELD_FUNCNAME_OFFSET: usize = 3;
const FIELD_PCLN_OFFSET: usize = 7;
/// Longest function name compared: Go's longest names are far shorter.
const MAX_NAME_LEN: usize = 4096;

/// Go's function table of one binary.
#[derive(Debug)]
pub struct FunctionTable<'data> {
    data: &'data [u8],
    functions: usize,
    text_start: u64,
    names: usize,
    table: usize,
}

impl<'data> FunctionTable<'data> {
    /// The table of `file`: the `.gopclntab` section (`.data.rel.ro.gopclntab` in
    /// position-independent builds), or else the table found by its header inside
    /// `.data.rel.ro`, for linkers that merge the sections.
    pub fn of(file: &object::File<'data>) -> Option<Self> {
        let text = file.section_by_name(".text")?.address();
        for name in [".gopclntab", ".data.rel.ro.gopclntab"] {
            if let Some(section) = file.section_by_name(name) {
                return Self::parse(section.data().ok()?, text);
            }
        }
        let data = file.section_by_name(".data.rel.ro")?.data().ok()?;
        // A header: one of the magics, two zero bytes, quantum 1 (x86), 8-byte pointers.
        (0..data.len())
            .step_by(8)
            .filter(|&at| {
                data.get(at..at + 8).is_some_and(|head| {
                    MAGICS
                        .iter()
                        .any(|magic| head.starts_with(&magic.to_le_bytes()))
                        && head.ends_with(&[0, 0, 1, 8])
                })
            })
            .find_map(|at| Self::parse(data.get(at..)?, text))
    }

    /// The table whose header starts `data`; `text_section` is where code starts when the
    /// header's own text start is 0 (position-independent builds, relocated at load).
    pub fn parse(data: &'data [u8], text_section: u64) -> Option<Self> {
        let magic = u32::from_le_bytes(data.get(..4)?.try_into().ok()?);
        if !MAGICS.contains(&magic) || data.get(4..6)? != [0, 0] || *data.get(7)? != 8 {
            return None;
        }
        let field = |index: usize| -> Option<u64> {
            let at = 8 + index * 8;
            Some(u64::from_le_bytes(data.get(at..at + 8)?.try_into().ok()?))
        };
        let functions = usize::try_from(field(FIELD_NFUNC)?).ok()?;
        let text_start = match field(FIELD_TEXT_START)? {
            0 => text_section,
            start => start,
        };
        let names = usize::try_from(field(FIELD_FUNCNAME_OFFSET)?).ok()?;
        let table = usize::try_from(field(FIELD_PCLN_OFFSET)?).ok()?;
        // The function table must fit, entries and the one past the last.
        let table_len = functions.checked_add(1)?.checked_mul(8)?;
        data.get(table..table.checked_add(table_len)?)?;
        Some(Self {
            data,
            functions,
            text_start,
            names,
            table,
        })
    }

    /// The address range of the function named `name`, if the table has it.
    pub fn find(&self, name: &str) -> Option<Range<u64>> {
        (0..self.functions).find_map(|index| {
            let (entry, func) = self.entry(index)?;
            if self.name_of(func)? != name.as_bytes() {
                return None;
            }
            let (end, _) = self.entry(index + 1)?;
            (end > entry)
                .then(|| self.text_start + u64::from(entry)..self.text_start + u64::from(end))
        })
    }

    /// Entry offset and `_func` offset of function `index`.
    fn entry(&self, index: usize) -> Option<(u32, u32)> {
        let at = self.table + index * 8;
        let word = |at: usize| -> Option<u32> {
            Some(u32::from_le_bytes(
                self.data.get(at..at + 4)?.try_into().ok()?,
            ))
        };
        Some((word(at)?, word(at + 4)?))
    }

    /// The name of the `_func` at `func` (relative to the function table).
    fn name_of(&self, func: u32) -> Option<&'data [u8]> {
        let at = self.table.checked_add(usize::try_from(func).ok()?)?;
        let name_offset = i32::from_le_bytes(self.data.get(at + 4..at + 8)?.try_into().ok()?);
        let start = self.names.checked_add(usize::try_from(name_offset).ok()?)?;
        let rest = self.data.get(start..)?;
        let rest = rest.get(..rest.len().min(MAX_NAME_LEN))?;
        let end = rest.iter().position(|&byte| byte == 0)?;
        rest.get(..end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A table with two functions, `a` at text + 0x10 and `main.b` at text + 0x40, ending at
    /// text + 0x80.
    fn table_bytes(text_start: u64) -> Vec<u8> {
        let mut data = Vec::new();
        data.extend(0xffff_fff1u32.to_le_bytes());
        data.extend([0, 0, 1, 8]);
        let header_len = 8 + 8 * 8;
        let names = header_len as u64;
        let name_bytes = b"a\0main.b\0";
        let table = names + name_bytes.len() as u64;
        for field in [2, 0, text_start, names, 0, 0, 0, table] {
            data.extend(field.to_le_bytes());
        }
        data.extend(name_bytes);
        // Function table: 3 entries, then the two _func records.
        let funcs: u32 = 3 * 8;
        for (entry, func) in [(0x10u32, funcs), (0x40, funcs + 8), (0x80, 0)] {
            data.extend(entry.to_le_bytes());
            data.extend(func.to_le_bytes());
        }
        for (entry, name) in [(0x10u32, 0i32), (0x40, 2)] {
            data.extend(entry.to_le_bytes());
            data.extend(name.to_le_bytes());
        }
        data
    }

    #[test]
    fn functions_are_found_by_name_with_their_extent() {
        let data = table_bytes(0x40_1000);
        let table = FunctionTable::parse(&data, 0x9999).expect("a valid table");
        assert_eq!(table.find("a"), Some(0x40_1010..0x40_1040));
        assert_eq!(table.find("main.b"), Some(0x40_1040..0x40_1080));
        assert_eq!(table.find("main"), None);
    }

    #[test]
    fn a_zero_text_start_means_the_text_section() {
        let data = table_bytes(0);
        let table = FunctionTable::parse(&data, 0x1000).expect("a valid table");
        assert_eq!(table.find("a"), Some(0x1010..0x1040));
    }

    #[test]
    fn damaged_tables_find_nothing_and_never_panic() {
        let data = table_bytes(0x40_1000);
        for cut in 0..data.len() {
            if let Some(table) = FunctionTable::parse(&data[..cut], 0) {
                let _ = table.find("main.b");
            }
        }
        let mut wrong_magic = data.clone();
        wrong_magic[0] = 0xfa;
        assert!(FunctionTable::parse(&wrong_magic, 0).is_none());
        let mut huge_count = data;
        huge_count[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(FunctionTable::parse(&huge_count, 0).is_none());
    }
}
