//! What the kernel programs need to know of the running kernel's types, read from its BTF: the
//! field offsets of `struct sock` (and, on kernels without the socket tracepoints, of the file
//! table), and which way sockets are found.
//!
//! The eBPF side of aya has no CO-RE field relocations, so the programs read kernel fields at
//! offsets userspace computes here and stores in the `CONFIG` map.

use std::path::{Path, PathBuf};

use agent_common::{ExecOffsets, FdTableOffsets, SockOffsets, SocketLookup};
use log::warn;

/// Where the running kernel publishes its own BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Why the socket offsets could not be found.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    /// The BTF file could not be read.
    #[error(
        "cannot read kernel BTF at {path}: {source} (needs Linux 5.4+ built with CONFIG_DEBUG_INFO_BTF=y)"
    )]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The BTF could not be parsed.
    #[error("cannot parse kernel BTF at {path}: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        reason: String,
    },
    /// A field the programs need is missing or is a bitfield.
    #[error("kernel BTF has no byte-addressable `struct {structure}` field `{field}`: {reason}")]
    Field {
        /// The struct.
        structure: &'static str,
        /// The field path inside it.
        field: &'static str,
        /// What went wrong.
        reason: String,
    },
    /// The socket tracepoints were asked for on a kernel that does not have them.
    #[error(
        "this kernel has no sock_send_length tracepoint (Linux 6.3+): set the socket lookup to \
         auto or fd_table"
    )]
    NoSocketTracepoints,
}

/// The BTF type the socket tracepoints have where they exist (Linux 6.3+).
const SOCKET_TRACEPOINT_TYPE: &[u8] = b"btf_trace_sock_send_length";

/// What the kernel programs need to know of the running kernel's types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelLayout {
    /// Where the socket fields are.
    pub sock: SockOffsets,
    /// How socket syscalls find their socket on this kernel.
    pub socket_lookup: SocketLookup,
    /// Where the file-table fields are: for the socket lookup that walks the file table, and
    /// for the file a process maps as code (`exec_hold`). Zero when the BTF lacks one of them
    /// and neither needs it.
    pub fd_table: FdTableOffsets,
    /// Where the exec tracepoint finds the executable and the terminal (`exec_hold`); `None`
    /// when this kernel's BTF lacks one of the fields (or of the file table's), which leaves
    /// processes unheld.
    pub exec: Option<ExecOffsets>,
}

/// Reads the [`KernelLayout`] from the BTF at `path`, with the socket lookup `wanted`, or the
/// best one this kernel has when `None`.
///
/// The BTF is walked in place: only a table of where each type starts is allocated (4 bytes per
/// type, 0.5 MiB for a 6.18 kernel). A general-purpose BTF parser that built every type as an
/// object peaked at 57 MiB here, and the allocator kept most of it for the agent's lifetime.
pub fn kernel_layout(path: &Path, wanted: Option<SocketLookup>) -> Result<KernelLayout, BtfError> {
    let bytes = BtfBytes::open(path).map_err(|source| BtfError::Read {
        path: path.to_owned(),
        source,
    })?;
    let btf = RawBtf::parse(&bytes).map_err(|reason| BtfError::Parse {
        path: path.to_owned(),
        reason,
    })?;
    let sock = btf.structure("sock")?;
    let offset = |field: &'static str| btf.byte_offset(sock, "sock", field);
    let sock = SockOffsets {
        family: offset("__sk_common.skc_family")?,
        local_port: offset("__sk_common.skc_num")?,
        peer_port: offset("__sk_common.skc_dport")?,
        local_addr4: offset("__sk_common.skc_rcv_saddr")?,
        peer_addr4: offset("__sk_common.skc_daddr")?,
        local_addr6: offset("__sk_common.skc_v6_rcv_saddr")?,
        peer_addr6: offset("__sk_common.skc_v6_daddr")?,
        protocol: offset("sk_protocol")?,
    };
    let has_tracepoints = btf.named(SOCKET_TRACEPOINT_TYPE, KIND_TYPEDEF).is_some();
    let fd_table = fd_table_offsets(&btf);
    let exec = fd_table
        .as_ref()
        .map_err(ToString::to_string)
        .and_then(|_| exec_offsets(&btf).map_err(|error| error.to_string()))
        .inspect_err(|error| warn!("processes cannot be held at exec: {error}"))
        .ok();
    match wanted {
        Some(SocketLookup::Tracepoints) if !has_tracepoints => Err(BtfError::NoSocketTracepoints),
        Some(SocketLookup::Tracepoints) | None if has_tracepoints => Ok(KernelLayout {
            sock,
            socket_lookup: SocketLookup::Tracepoints,
            fd_table: fd_table.unwrap_or_default(),
            exec,
        }),
        _ => Ok(KernelLayout {
            sock,
            socket_lookup: SocketLookup::FdTable,
            fd_table: fd_table?,
            exec,
        }),
    }
}

/// The byte offset of `field` in struct `structure`.
fn field_offset(
    btf: &RawBtf<'_>,
    structure: &'static str,
    field: &'static str,
) -> Result<u32, BtfError> {
    btf.byte_offset(btf.structure(structure)?, structure, field)
}

/// Where the fields of the walks from the current task to its executable and its terminal, and
/// from a file to its name, are.
fn exec_offsets(btf: &RawBtf<'_>) -> Result<ExecOffsets, BtfError> {
    Ok(ExecOffsets {
        task_mm: field_offset(btf, "task_struct", "mm")?,
        task_signal: field_offset(btf, "task_struct", "signal")?,
        signal_tty: field_offset(btf, "signal_struct", "tty")?,
        mm_exe_file: field_offset(btf, "mm_struct", "exe_file")?,
        file_inode: field_offset(btf, "file", "f_inode")?,
        inode_ino: field_offset(btf, "inode", "i_ino")?,
        inode_sb: field_offset(btf, "inode", "i_sb")?,
        super_dev: field_offset(btf, "super_block", "s_dev")?,
        file_dentry: field_offset(btf, "file", "f_path.dentry")?,
        dentry_name: field_offset(btf, "dentry", "d_name.name")?,
    })
}

/// Where the fields of the walk from the current task to an fd's socket are.
fn fd_table_offsets(btf: &RawBtf<'_>) -> Result<FdTableOffsets, BtfError> {
    let field = |structure, field| field_offset(btf, structure, field);
    Ok(FdTableOffsets {
        task_files: field("task_struct", "files")?,
        files_fdt: field("files_struct", "fdt")?,
        fdt_max_fds: field("fdtable", "max_fds")?,
        fdt_fd: field("fdtable", "fd")?,
        file_inode: field("file", "f_inode")?,
        file_private_data: field("file", "private_data")?,
        inode_mode: field("inode", "i_mode")?,
        socket_sk: field("socket", "sk")?,
    })
}

/// The bytes of a BTF file: mapped where the kernel allows it, else read.
enum BtfBytes {
    /// Linux 6.16+ maps `/sys/kernel/btf/vmlinux` straight onto the kernel's own copy: no
    /// copy, and pages that are not counted in the agent's resident memory.
    Mapped(memmap2::Mmap),
    /// Older kernels, and other files.
    Read(Vec<u8>),
}

impl BtfBytes {
    fn open(path: &Path) -> std::io::Result<Self> {
        let file = std::fs::File::open(path)?;
        // The kernel refuses shared or writable mappings of the vmlinux BTF, so private and
        // read-only. SAFETY: the file read here is the kernel's own BTF, which cannot change
        // or shrink while the kernel runs.
        match unsafe { memmap2::MmapOptions::new().map_copy_read_only(&file) } {
            Ok(map) => Ok(Self::Mapped(map)),
            Err(_) => {
                let mut bytes = Vec::new();
                std::io::Read::read_to_end(&mut &file, &mut bytes)?;
                Ok(Self::Read(bytes))
            }
        }
    }
}

impl std::ops::Deref for BtfBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Self::Mapped(map) => map,
            Self::Read(bytes) => bytes,
        }
    }
}

/// `struct btf_header`: magic, version, flags, then six `u32`s.
const HEADER_LEN: usize = 24;
/// `struct btf_type`: name offset, info, size or type.
const TYPE_LEN: usize = 12;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_TYPEDEF: u32 = 8;
/// Kinds that only qualify or rename another type: typedef, volatile, const, restrict,
/// type tag.
const QUALIFIERS: [u32; 5] = [8, 9, 10, 11, 18];
/// Anonymous structs and unions nest a few levels in `struct sock`; a deeper chain (or a cycle
/// in corrupt BTF) is not followed.
const MAX_DEPTH: usize = 32;

/// The kernel's BTF, walked in place (native byte order: it describes the running kernel).
struct RawBtf<'a> {
    types: &'a [u8],
    strings: &'a [u8],
    /// Where type `id` starts in `types`, at index `id - 1` (id 0 is `void`, not stored).
    starts: Vec<u32>,
}

/// One member of a struct or union.
struct Member {
    name: u32,
    type_id: u32,
    bit_offset: u32,
    bitfield_size: u32,
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    let word = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_ne_bytes(word.try_into().ok()?))
}

impl<'a> RawBtf<'a> {
    fn parse(data: &'a [u8]) -> Result<Self, String> {
        let header = |index: usize| u32_at(data, 4 + 4 * index).map(|value| value as usize);
        let magic = data
            .first_chunk::<2>()
            .map(|magic| u16::from_ne_bytes(*magic));
        if data.len() < HEADER_LEN || magic != Some(0xeb9f) {
            return Err("no BTF header in this machine's byte order".to_owned());
        }
        let section = |offset: Option<usize>, len: Option<usize>| {
            let start = header(0)?.checked_add(offset?)?;
            data.get(start..start.checked_add(len?)?)
        };
        let types = section(header(1), header(2)).ok_or("type section out of bounds")?;
        let strings = section(header(3), header(4)).ok_or("string section out of bounds")?;
        // Every type takes at least `TYPE_LEN` bytes: one allocation, never regrown.
        let mut starts = Vec::with_capacity(types.len() / TYPE_LEN);
        let mut at = 0;
        while at < types.len() {
            let info = u32_at(types, at + 4).ok_or("truncated type")?;
            let (kind, vlen) = ((info >> 24) & 0x1f, (info & 0xffff) as usize);
            // Bytes that follow `struct btf_type` for each kind (include/uapi/linux/btf.h).
            let extra = match kind {
                // int: one u32 of encoding; var: linkage; decl tag: component index
                1 | 14 | 17 => 4,
                // ptr, fwd, typedef, volatile, const, restrict, func, float, type tag
                2 | 7..=12 | 16 | 18 => 0,
                // array: element type, index type, count
                3 => 12,
                // struct/union members, datasec entries and 64-bit enumerators: 12 bytes each
                4 | 5 | 15 | 19 => 12 * vlen,
                // enumerators and function parameters: 8 bytes each
                6 | 13 => 8 * vlen,
                other => {
                    return Err(format!(
                        "unknown BTF kind {other} at type {}",
                        starts.len() + 1
                    ));
                }
            };
            starts.push(u32::try_from(at).map_err(|_| "type section over 4 GiB")?);
            at += TYPE_LEN + extra;
        }
        if at != types.len() {
            return Err("truncated type section".to_owned());
        }
        Ok(Self {
            types,
            strings,
            starts,
        })
    }

    /// `(name offset, info, size or type)` of type `id`.
    fn header(&self, id: u32) -> Option<(u32, u32, u32)> {
        let at = *self.starts.get((id as usize).checked_sub(1)?)? as usize;
        Some((
            u32_at(self.types, at)?,
            u32_at(self.types, at + 4)?,
            u32_at(self.types, at + 8)?,
        ))
    }

    fn kind(info: u32) -> u32 {
        (info >> 24) & 0x1f
    }

    /// The NUL-terminated string at `offset` in the string section, without the NUL.
    fn string(&self, offset: u32) -> &'a [u8] {
        let rest = self.strings.get(offset as usize..).unwrap_or_default();
        rest.split(|&b| b == 0).next().unwrap_or_default()
    }

    /// The id of the first type named `name` of `kind`.
    fn named(&self, name: &[u8], kind: u32) -> Option<u32> {
        (1..=self.starts.len() as u32).find(|&id| {
            self.header(id).is_some_and(|(name_offset, info, _)| {
                Self::kind(info) == kind && self.string(name_offset) == name
            })
        })
    }

    /// The id of `struct name`.
    fn structure(&self, name: &'static str) -> Result<u32, BtfError> {
        self.named(name.as_bytes(), KIND_STRUCT)
            .ok_or(BtfError::Field {
                structure: name,
                field: name,
                reason: format!("no type named `{name}`"),
            })
    }

    /// `id` with typedefs and qualifiers stripped.
    fn resolve(&self, mut id: u32) -> Option<u32> {
        for _ in 0..MAX_DEPTH {
            let (_, info, target) = self.header(id)?;
            if !QUALIFIERS.contains(&Self::kind(info)) {
                return Some(id);
            }
            id = target;
        }
        None
    }

    /// The members of struct or union `id` (after resolving), or none for any other type.
    fn members(&self, id: u32) -> impl Iterator<Item = Member> + '_ {
        let found = self.resolve(id).and_then(|id| {
            let (_, info, _) = self.header(id)?;
            let kind = Self::kind(info);
            let start = self.starts.get((id as usize).checked_sub(1)?)?;
            (kind == KIND_STRUCT || kind == KIND_UNION).then_some((*start as usize, info))
        });
        let (at, info) = found.unwrap_or((0, 0));
        let count = if found.is_some() { info & 0xffff } else { 0 };
        // With the kind flag, a member's offset word holds the bitfield size in its top byte.
        let kind_flag = info >> 31 == 1;
        (0..count as usize).filter_map(move |index| {
            let member = at + TYPE_LEN + 12 * index;
            let offset = u32_at(self.types, member + 8)?;
            Some(Member {
                name: u32_at(self.types, member)?,
                type_id: u32_at(self.types, member + 4)?,
                bit_offset: if kind_flag {
                    offset & 0xff_ffff
                } else {
                    offset
                },
                bitfield_size: if kind_flag { offset >> 24 } else { 0 },
            })
        })
    }

    /// The member `name` of struct or union `id`, looking inside anonymous struct and union
    /// members as C does; its bit offset is from the start of `id`.
    fn member(&self, id: u32, name: &[u8], depth: usize) -> Option<Member> {
        if depth == MAX_DEPTH {
            return None;
        }
        self.members(id).find_map(|member| {
            if self.string(member.name) == name {
                Some(member)
            } else if member.name == 0 {
                let inner = self.member(member.type_id, name, depth + 1)?;
                Some(Member {
                    bit_offset: member.bit_offset + inner.bit_offset,
                    ..inner
                })
            } else {
                None
            }
        })
    }

    /// Byte offset of `path` (member names joined by `.`) inside struct `id`, named
    /// `structure`.
    fn byte_offset(
        &self,
        id: u32,
        structure: &'static str,
        path: &'static str,
    ) -> Result<u32, BtfError> {
        let fail = |reason: &str| BtfError::Field {
            structure,
            field: path,
            reason: reason.to_owned(),
        };
        let mut bits = 0u32;
        let mut current = id;
        for name in path.split('.') {
            let member = self
                .member(current, name.as_bytes(), 0)
                .ok_or_else(|| fail(&format!("no member `{name}`")))?;
            if member.bitfield_size != 0 || member.bit_offset % 8 != 0 {
                return Err(fail("it is a bitfield"));
            }
            bits = bits
                .checked_add(member.bit_offset)
                .ok_or_else(|| fail("offset overflows"))?;
            current = member.type_id;
        }
        Ok(bits / 8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_kernel_has_every_socket_field() {
        let layout = kernel_layout(Path::new(VMLINUX_BTF), None).expect("vmlinux BTF layout");
        let offsets = layout.sock;
        // skc_daddr and skc_rcv_saddr are the first two words of sock_common on every kernel
        // since 2.6.x; the rest only has to be distinct and inside struct sock.
        assert_eq!(offsets.peer_addr4, 0);
        assert_eq!(offsets.local_addr4, 4);
        assert_ne!(offsets.family, offsets.protocol);
        assert!(offsets.protocol > offsets.peer_addr6);
        // Holds need the file table and the exec walk whichever way sockets are found.
        assert!(layout.fd_table.task_files > 0, "{layout:?}");
        assert!(layout.exec.is_some(), "{layout:?}");
    }

    #[test]
    fn running_kernel_has_every_file_table_field() {
        let layout = kernel_layout(Path::new(VMLINUX_BTF), Some(SocketLookup::FdTable))
            .expect("fd-table layout from vmlinux BTF");
        assert_eq!(layout.socket_lookup, SocketLookup::FdTable);
        let offsets = layout.fd_table;
        // Pointers are 8-byte aligned, and a file's inode and private data are distinct.
        for offset in [
            offsets.task_files,
            offsets.files_fdt,
            offsets.fdt_fd,
            offsets.file_inode,
            offsets.file_private_data,
            offsets.socket_sk,
        ] {
            assert_eq!(offset % 8, 0, "{offsets:?}");
        }
        assert_ne!(offsets.file_inode, offsets.file_private_data);
        assert!(offsets.task_files > 0, "{offsets:?}");
    }

    /// A BTF blob with the given types (`(name, info, size_or_type, extra words)`) and strings.
    fn blob(types: &[(u32, u32, u32, &[u32])], strings: &[u8]) -> Vec<u8> {
        let mut section = Vec::new();
        for (name, info, size, extra) in types {
            for word in [*name, *info, *size].iter().chain(extra.iter()) {
                section.extend_from_slice(&word.to_ne_bytes());
            }
        }
        let mut data = Vec::new();
        data.extend_from_slice(&0xeb9f_u16.to_ne_bytes());
        data.extend_from_slice(&[1, 0]);
        let lengths = [
            24,
            0,
            section.len() as u32,
            section.len() as u32,
            strings.len() as u32,
        ];
        for word in lengths {
            data.extend_from_slice(&word.to_ne_bytes());
        }
        data.extend_from_slice(&section);
        data.extend_from_slice(strings);
        data
    }

    #[test]
    fn offsets_go_through_typedefs_and_anonymous_unions() {
        // Strings: 1 "u32", 5 "a", 7 "b", 9 "x", 11 "flag", 16 "outer_t", 24 "top", 28 "c".
        let strings = b"\0u32\0a\0b\0x\0flag\0outer_t\0top\0c\0";
        let kind = |kind: u32, vlen: u32, flag: u32| (flag << 31) | (kind << 24) | vlen;
        let data = blob(
            &[
                // 1: u32
                (1, kind(1, 0, 0), 4, &[32]),
                // 2: union { u32 a; u32 b; }
                (0, kind(5, 2, 0), 4, &[5, 1, 0, 7, 1, 0]),
                // 3: struct { u32 x; union {...}; u32 flag:3; }, bitfield offsets (kind flag)
                (
                    0,
                    kind(4, 3, 1),
                    12,
                    &[9, 1, 0, 0, 2, 32, 11, 1, (3 << 24) | 64],
                ),
                // 4: typedef outer_t -> 3
                (16, kind(8, 0, 0), 3, &[]),
                // 5: struct top { u64 pad; outer_t c; }, c at byte 8
                (24, kind(4, 1, 0), 20, &[28, 4, 64]),
            ],
            strings,
        );
        let btf = RawBtf::parse(&data).expect("valid blob");
        let top = btf.named(b"top", KIND_STRUCT).expect("struct top");
        assert_eq!(top, 5);
        assert_eq!(btf.byte_offset(top, "top", "c.x").unwrap(), 8);
        assert_eq!(btf.byte_offset(top, "top", "c.b").unwrap(), 12);
        let bitfield = btf.byte_offset(top, "top", "c.flag").unwrap_err();
        assert!(bitfield.to_string().contains("bitfield"), "{bitfield}");
        assert!(btf.byte_offset(top, "top", "c.nothing").is_err());
        assert!(RawBtf::parse(&data[..data.len() - strings.len() - 4]).is_err());
    }

    #[test]
    fn missing_file_names_the_path() {
        let error = kernel_layout(Path::new("/nonexistent/btf"), None).unwrap_err();
        assert!(error.to_string().contains("/nonexistent/btf"), "{error}");
    }
}
