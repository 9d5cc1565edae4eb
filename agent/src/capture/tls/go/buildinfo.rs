//! The Go version a binary was built with, read from its build information (section
//! `.go.buildinfo`, which every Go executable since 1.13 has, stripped or not).
//!
//! The section starts with a 32-byte header: the magic `\xff Go buildinf:`, the pointer size
//! (byte 14) and flags (byte 15). With flag bit 1 set (Go 1.18+) the version string follows the
//! header, preceded by its length as a varint; before 1.18 the header holds, at byte 16, a
//! pointer to a Go string header (data pointer, length) elsewhere in the binary. Layout from
//! the Go source, `src/debug/buildinfo/buildinfo.go`.

use object::{Endianness, Object, ObjectSection};

const MAGIC: &[u8] = b"\xff Go buildinf:";
const HEADER_LEN: usize = 32;
const FLAG_INLINE_STRINGS: u8 = 0x2;
/// Longer than any Go version string ("go1.22.12", "devel go1.23-abcdef Tue ..."); a length
/// beyond it means the section is not what it claims.
const MAX_VERSION_LEN: u64 = 128;

/// A Go release, as far as the probes care.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct GoRelease {
    /// Always 1 so far.
    pub major: u32,
    /// 19 in `go1.19.8`.
    pub minor: u32,
}

impl GoRelease {
    /// The release of a version string such as `go1.19.8`, `go1.21rc2` or `go1.22.0 X:boringcrypto`;
    /// `None` for development builds (`devel ...`), whose layout no table can promise.
    pub fn parse(version: &str) -> Option<Self> {
        let numbers = version.strip_prefix("go")?;
        let mut parts = numbers.split(|c: char| !c.is_ascii_digit());
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        Some(Self { major, minor })
    }
}

/// The Go version string of `file` (`go1.19.8`); `None` when it is not a Go executable or its
/// build information cannot be read.
pub fn go_version(file: &object::File) -> Option<String> {
    let section = file.section_by_name(".go.buildinfo")?;
    let data = section.data().ok()?;
    let header = data.get(..HEADER_LEN)?;
    if !header.starts_with(MAGIC) {
        return None;
    }
    let pointer_size = usize::from(*header.get(14)?);
    let flags = *header.get(15)?;
    if flags & FLAG_INLINE_STRINGS != 0 {
        return inline_string(data.get(HEADER_LEN..)?);
    }
    let big_endian = file.endianness() == Endianness::Big;
    let string_header = read_pointer(header.get(16..)?, pointer_size, big_endian)?;
    let string = read_at_address(file, string_header, 2 * pointer_size)?;
    let text = read_pointer(string, pointer_size, big_endian)?;
    let len = read_pointer(string.get(pointer_size..)?, pointer_size, big_endian)?;
    if len > MAX_VERSION_LEN {
        return None;
    }
    let bytes = read_at_address(file, text, usize::try_from(len).ok()?)?;
    String::from_utf8(bytes.to_vec()).ok()
}

/// A varint-length-prefixed string at the start of `data`.
pub(super) fn inline_string(data: &[u8]) -> Option<String> {
    let (len, used) = uvarint(data)?;
    if len > MAX_VERSION_LEN {
        return None;
    }
    let bytes = data.get(used..used + usize::try_from(len).ok()?)?;
    String::from_utf8(bytes.to_vec()).ok()
}

/// An unsigned LEB128 varint (Go's `binary.Uvarint`) and the bytes it took; at most 10.
fn uvarint(data: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, byte) in data.iter().take(10).enumerate() {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// A pointer-sized unsigned value at the start of `data`.
fn read_pointer(data: &[u8], size: usize, big_endian: bool) -> Option<u64> {
    match (size, big_endian) {
        (8, false) => Some(u64::from_le_bytes(data.get(..8)?.try_into().ok()?)),
        (8, true) => Some(u64::from_be_bytes(data.get(..8)?.try_into().ok()?)),
        (4, false) => Some(u32::from_le_bytes(data.get(..4)?.try_into().ok()?).into()),
        (4, true) => Some(u32::from_be_bytes(data.get(..4)?.try_into().ok()?).into()),
        _ => None,
    }
}

/// `len` bytes of the file at virtual address `address`, from the section that holds them.
pub(super) fn read_at_address<'data>(
    file: &object::File<'data>,
    address: u64,
    len: usize,
) -> Option<&'data [u8]> {
    file.sections().find_map(|section| {
        let start = address.checked_sub(section.address())?;
        if start >= section.size() {
            return None;
        }
        let data = section.data().ok()?;
        let start = usize::try_from(start).ok()?;
        data.get(start..start.checked_add(len)?)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_are_read_from_version_strings() {
        let release = |major, minor| Some(GoRelease { major, minor });
        assert_eq!(GoRelease::parse("go1.19.8"), release(1, 19));
        assert_eq!(GoRelease::parse("go1.21rc2"), release(1, 21));
        assert_eq!(GoRelease::parse("go1.22.0 X:boringcrypto"), release(1, 22));
        assert_eq!(GoRelease::parse("go1.26"), release(1, 26));
        assert_eq!(GoRelease::parse("devel go1.23-abcdef"), None);
        assert_eq!(GoRelease::parse("go"), None);
        assert_eq!(GoRelease::parse(""), None);
    }

    #[test]
    fn inline_strings_are_length_prefixed() {
        assert_eq!(
            inline_string(b"\x08go1.19.8rest").as_deref(),
            Some("go1.19.8")
        );
        // A length beyond the data, or an endless varint, is no version.
        assert_eq!(inline_string(b"\x20go1.19"), None);
        assert_eq!(inline_string(&[0xff; 12]), None);
        assert_eq!(inline_string(b""), None);
    }
}
