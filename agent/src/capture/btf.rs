//! Field offsets of the kernel's `struct sock`, read from the running kernel's BTF.
//!
//! The eBPF side of aya has no CO-RE field relocations, so the programs read socket fields at
//! offsets userspace computes here and stores in the `CONFIG` map.

use std::path::{Path, PathBuf};

use agent_common::SockOffsets;
use btfparse::{Offset, Readable, TypeInformation};

/// Where the running kernel publishes its own BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Why the socket offsets could not be found.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    /// The BTF file could not be read.
    #[error(
        "cannot read kernel BTF at {path}: {source} (the kernel needs CONFIG_DEBUG_INFO_BTF=y)"
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
    #[error("kernel BTF has no byte-addressable `struct sock` field `{field}`: {reason}")]
    Field {
        /// The field path inside `struct sock`.
        field: &'static str,
        /// What went wrong.
        reason: String,
    },
}

/// Raw BTF bytes, readable by `btfparse`.
struct BtfBytes(Vec<u8>);

impl Readable for BtfBytes {
    fn read(&self, offset: u64, buffer: &mut [u8]) -> btfparse::Result<()> {
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        let source = start
            .checked_add(buffer.len())
            .and_then(|end| self.0.get(start..end))
            .ok_or_else(|| {
                btfparse::Error::new(
                    btfparse::ErrorKind::InvalidOffset,
                    "read past the end of BTF",
                )
            })?;
        buffer.copy_from_slice(source);
        Ok(())
    }
}

/// Reads the offsets of the `struct sock` fields the kernel programs use from the BTF at `path`.
pub fn sock_offsets(path: &Path) -> Result<SockOffsets, BtfError> {
    let bytes = std::fs::read(path).map_err(|source| BtfError::Read {
        path: path.to_owned(),
        source,
    })?;
    let types = TypeInformation::new(&BtfBytes(bytes)).map_err(|error| BtfError::Parse {
        path: path.to_owned(),
        reason: format!("{error:?}"),
    })?;
    let sock = types.id_of("sock").ok_or_else(|| BtfError::Field {
        field: "sock",
        reason: "no type named `sock`".to_owned(),
    })?;
    let offset = |field: &'static str| -> Result<u32, BtfError> {
        match types.offset_of(sock, field) {
            Ok((_, Offset::ByteOffset(offset))) => Ok(offset),
            Ok((_, Offset::BitOffsetAndSize(..))) => Err(BtfError::Field {
                field,
                reason: "it is a bitfield".to_owned(),
            }),
            Err(error) => Err(BtfError::Field {
                field,
                reason: format!("{error:?}"),
            }),
        }
    };
    Ok(SockOffsets {
        family: offset("__sk_common.skc_family")?,
        local_port: offset("__sk_common.skc_num")?,
        peer_port: offset("__sk_common.skc_dport")?,
        local_addr4: offset("__sk_common.skc_rcv_saddr")?,
        peer_addr4: offset("__sk_common.skc_daddr")?,
        local_addr6: offset("__sk_common.skc_v6_rcv_saddr")?,
        peer_addr6: offset("__sk_common.skc_v6_daddr")?,
        protocol: offset("sk_protocol")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_kernel_has_every_socket_field() {
        let offsets = sock_offsets(Path::new(VMLINUX_BTF)).expect("offsets from vmlinux BTF");
        // skc_daddr and skc_rcv_saddr are the first two words of sock_common on every kernel
        // since 2.6.x; the rest only has to be distinct and inside struct sock.
        assert_eq!(offsets.peer_addr4, 0);
        assert_eq!(offsets.local_addr4, 4);
        assert_ne!(offsets.family, offsets.protocol);
        assert!(offsets.protocol > offsets.peer_addr6);
    }

    #[test]
    fn missing_file_names_the_path() {
        let error = sock_offsets(Path::new("/nonexistent/btf")).unwrap_err();
        assert!(error.to_string().contains("/nonexistent/btf"), "{error}");
    }
}
