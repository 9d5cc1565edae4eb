//! Ring-buffer records decoded into owned userspace types.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use agent_common::{
    ConnectionEvent, DataHeader, Direction, EventKind, ExecEvent, ExecutableKey, LifecycleEvent,
    Role, event::UNKNOWN_OFFSET, maps::STDIO_FAMILY,
};
use bytes::Bytes;

/// A process about to run code from a file: the executable of its exec, or a library it
/// mapped as code while the file was new to the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeLoaded {
    /// Process id.
    pub tgid: u32,
    /// How the code came.
    pub by: LoadedBy,
    /// The file, as the kernel names it (zero when unknown).
    pub file: ExecutableKey,
    /// Stopped until the capture stage has inspected `file`.
    pub held: bool,
}

/// How a process came to run the code of a [`CodeLoaded`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadedBy {
    /// `execve`, with the path given to it (may be relative or a symlink) when it was read.
    Exec {
        /// The path executed.
        path: Option<String>,
    },
    /// `mmap` of a library with `PROT_EXEC`.
    Mapping,
}

/// What the kernel reported, decoded and owned.
#[derive(Debug, Clone)]
pub enum CaptureEvent {
    /// Bytes moved on a socket.
    Data(DataChunk),
    /// First sight of a socket, with its addresses.
    Connection(ConnectionSeen),
    /// A socket fd was closed.
    Closed {
        /// Process id.
        tgid: u32,
        /// The closed fd.
        fd: i32,
        /// The kernel socket it held.
        sock: u64,
        /// `CLOCK_MONOTONIC` time of the close.
        ts_ns: u64,
    },
    /// A process called `execve`, or mapped a new library as code.
    CodeLoaded(CodeLoaded),
    /// A process exited.
    Exit {
        /// Process id.
        tgid: u32,
        /// `CLOCK_MONOTONIC` time of the exit.
        ts_ns: u64,
    },
}

/// One data record.
#[derive(Debug, Clone)]
pub struct DataChunk {
    /// Process id.
    pub tgid: u32,
    /// Thread id.
    pub tid: u32,
    /// Socket fd.
    pub fd: i32,
    /// Kernel socket, 0 when the record came from an OpenSSL call on an fd the kernel side had
    /// no socket for.
    pub sock: u64,
    /// Which way the bytes went.
    pub direction: Direction,
    /// `agent_common::data_flags` bits.
    pub flags: u32,
    /// Bytes the call really moved.
    pub len: u64,
    /// Where the bytes start in this direction of the connection, as the kernel counted them
    /// (records lost on the way show as jumps); `None` when the kernel did not count.
    pub offset: Option<u64>,
    /// The first bytes of it, at most the capture cap.
    pub payload: Bytes,
    /// `CLOCK_MONOTONIC` time at the end of the call.
    pub ts_ns: u64,
    /// Thread name.
    pub comm: String,
}

/// What carries a connection's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// A TCP socket.
    Tcp,
    /// The standard input and output of a process selected for stdio capture (an MCP tool
    /// server), read and written over pipes; it has no addresses.
    Stdio,
}

/// One connection record.
#[derive(Debug, Clone)]
pub struct ConnectionSeen {
    /// Process id.
    pub tgid: u32,
    /// Socket fd.
    pub fd: i32,
    /// Kernel socket.
    pub sock: u64,
    /// Client, server, or unknown.
    pub role: Role,
    /// This process's end.
    pub local: SocketAddr,
    /// The other end.
    pub peer: SocketAddr,
    /// A TCP socket, or a process's stdio (whose addresses are then unspecified).
    pub transport: Transport,
    /// Thread name.
    pub comm: String,
    /// `CLOCK_MONOTONIC` time of first sight.
    pub ts_ns: u64,
}

/// A record that could not be decoded; counted, never fatal.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// Shorter than its fixed part or than the payload length it announces.
    #[error("record of {0} bytes is truncated")]
    Truncated(usize),
    /// A kind tag this build does not know (kernel and userspace from different builds).
    #[error("unknown record kind {0}")]
    UnknownKind(u32),
}

/// Reads a `Pod` record from the front of `bytes`, whatever its alignment.
fn read_record<T: aya::Pod>(bytes: &[u8]) -> Result<T, DecodeError> {
    if bytes.len() < size_of::<T>() {
        return Err(DecodeError::Truncated(bytes.len()));
    }
    // SAFETY: length checked above; `T: Pod` accepts any bit pattern; read_unaligned copes with
    // the ring buffer's 8-byte alignment being less than T's on some records.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// Turns a NUL-padded `comm` into a string.
fn comm_string(comm: &[u8; 16]) -> String {
    let name = comm.split(|&b| b == 0).next().unwrap_or_default();
    String::from_utf8_lossy(name).into_owned()
}

fn role(raw: u32) -> Role {
    match raw {
        1 => Role::Client,
        2 => Role::Server,
        _ => Role::Unknown,
    }
}

fn socket_addr(family: u32, addr: [u8; 16], port: u32) -> SocketAddr {
    let port = port as u16;
    let ip = if family == libc::AF_INET6 as u32 {
        IpAddr::V6(Ipv6Addr::from(addr))
    } else {
        IpAddr::V4(Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3]))
    };
    SocketAddr::new(ip, port)
}

impl CaptureEvent {
    /// Decodes one ring-buffer record.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let kind: u32 = read_record(bytes)?;
        match EventKind::from_u32(kind) {
            Some(EventKind::Data) => {
                let header: DataHeader = read_record(bytes)?;
                let start = size_of::<DataHeader>();
                let payload = start
                    .checked_add(header.captured as usize)
                    .and_then(|end| bytes.get(start..end))
                    .ok_or(DecodeError::Truncated(bytes.len()))?;
                Ok(Self::Data(DataChunk {
                    tgid: header.tgid,
                    tid: header.tid,
                    fd: header.fd,
                    sock: header.sock,
                    direction: if header.direction == Direction::Ingress as u32 {
                        Direction::Ingress
                    } else {
                        Direction::Egress
                    },
                    flags: header.flags,
                    len: header.len,
                    offset: (header.offset != UNKNOWN_OFFSET).then_some(header.offset),
                    payload: Bytes::copy_from_slice(payload),
                    ts_ns: header.ts_ns,
                    comm: comm_string(&header.comm),
                }))
            }
            Some(EventKind::Connection) => {
                let event: ConnectionEvent = read_record(bytes)?;
                Ok(Self::Connection(ConnectionSeen {
                    tgid: event.tgid,
                    fd: event.fd,
                    sock: event.sock,
                    role: role(event.role),
                    local: socket_addr(event.family, event.local_addr, event.local_port),
                    peer: socket_addr(event.family, event.peer_addr, event.peer_port),
                    transport: if event.family == STDIO_FAMILY {
                        Transport::Stdio
                    } else {
                        Transport::Tcp
                    },
                    comm: comm_string(&event.comm),
                    ts_ns: event.ts_ns,
                }))
            }
            Some(kind @ (EventKind::ProcessExec | EventKind::LibraryMapped)) => {
                let event: ExecEvent = read_record(bytes)?;
                let used = (event.path_len as usize).min(event.path.len());
                let path = event.path.get(..used).unwrap_or_default();
                Ok(Self::CodeLoaded(CodeLoaded {
                    tgid: event.tgid,
                    by: match kind {
                        EventKind::ProcessExec => LoadedBy::Exec {
                            path: (!path.is_empty())
                                .then(|| String::from_utf8_lossy(path).into_owned()),
                        },
                        _ => LoadedBy::Mapping,
                    },
                    file: event.executable,
                    held: event.held != 0,
                }))
            }
            Some(kind @ (EventKind::Close | EventKind::ProcessExit)) => {
                let event: LifecycleEvent = read_record(bytes)?;
                Ok(match kind {
                    EventKind::Close => Self::Closed {
                        tgid: event.tgid,
                        fd: event.fd,
                        sock: event.sock,
                        ts_ns: event.ts_ns,
                    },
                    _ => Self::Exit {
                        tgid: event.tgid,
                        ts_ns: event.ts_ns,
                    },
                })
            }
            None => Err(DecodeError::UnknownKind(kind)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn as_bytes<T: aya::Pod>(value: &T) -> Vec<u8> {
        // SAFETY: Pod types are plain bytes.
        unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), size_of::<T>()) }
            .to_vec()
    }

    fn header(captured: u32) -> DataHeader {
        DataHeader {
            kind: EventKind::Data as u32,
            direction: Direction::Ingress as u32,
            flags: 0,
            tgid: 10,
            tid: 11,
            fd: 3,
            sock: 0xffff_0000,
            len: 1000,
            captured,
            reserved: 0,
            offset: 7,
            ts_ns: 5,
            comm: *b"curl\0\0\0\0\0\0\0\0\0\0\0\0",
        }
    }

    #[test]
    fn data_record_keeps_length_and_payload() {
        let mut bytes = as_bytes(&header(4));
        bytes.extend_from_slice(b"GET ");
        let CaptureEvent::Data(chunk) = CaptureEvent::decode(&bytes).unwrap() else {
            panic!("not a data record");
        };
        assert_eq!(chunk.len, 1000);
        assert_eq!(chunk.offset, Some(7));
        assert_eq!(&chunk.payload[..], b"GET ");
        assert_eq!(chunk.comm, "curl");
        assert_eq!(chunk.direction, Direction::Ingress);
    }

    #[test]
    fn payload_shorter_than_announced_is_rejected() {
        let mut bytes = as_bytes(&header(10));
        bytes.extend_from_slice(b"GET ");
        assert!(matches!(
            CaptureEvent::decode(&bytes),
            Err(DecodeError::Truncated(_))
        ));
    }

    #[test]
    fn every_prefix_of_a_record_decodes_or_fails_cleanly() {
        let mut bytes = as_bytes(&header(4));
        bytes.extend_from_slice(b"GET ");
        for end in 0..bytes.len() {
            assert!(CaptureEvent::decode(&bytes[..end]).is_err());
        }
        assert_eq!(
            CaptureEvent::decode(&[9, 0, 0, 0, 0, 0, 0, 0]).unwrap_err(),
            DecodeError::UnknownKind(9)
        );
    }

    #[test]
    fn exec_and_mapping_records_carry_their_file_and_whether_it_was_held() {
        let mut path = [0u8; agent_common::event::EXEC_PATH_LEN];
        path[..8].copy_from_slice(b"/bin/ok\0");
        let executable = ExecutableKey {
            dev: 0x0080_0003,
            reserved: 0,
            ino: 1234,
        };
        let event = ExecEvent {
            kind: EventKind::ProcessExec as u32,
            tgid: 7,
            ts_ns: 1,
            path_len: 7,
            held: 1,
            executable,
            path,
        };
        let decoded = CaptureEvent::decode(&as_bytes(&event)).unwrap();
        let CaptureEvent::CodeLoaded(exec) = decoded else {
            panic!("not an exec record: {decoded:?}");
        };
        assert_eq!(
            exec,
            CodeLoaded {
                tgid: 7,
                by: LoadedBy::Exec {
                    path: Some("/bin/ok".to_owned())
                },
                file: executable,
                held: true,
            }
        );
        let mapping = ExecEvent {
            kind: EventKind::LibraryMapped as u32,
            path_len: 0,
            path: [0; agent_common::event::EXEC_PATH_LEN],
            ..event
        };
        let decoded = CaptureEvent::decode(&as_bytes(&mapping)).unwrap();
        let CaptureEvent::CodeLoaded(library) = decoded else {
            panic!("not a mapping record: {decoded:?}");
        };
        assert_eq!(library.by, LoadedBy::Mapping);
        assert_eq!((library.file, library.held), (executable, true));
    }

    #[test]
    fn ipv6_connection_addresses() {
        let mut local = [0u8; 16];
        local[15] = 1;
        let event = ConnectionEvent {
            kind: EventKind::Connection as u32,
            role: Role::Server as u32,
            tgid: 1,
            fd: 4,
            sock: 9,
            family: libc::AF_INET6 as u32,
            local_port: 8443,
            peer_port: 50000,
            reserved: 0,
            local_addr: local,
            peer_addr: local,
            ts_ns: 0,
            comm: [0; 16],
        };
        let CaptureEvent::Connection(seen) = CaptureEvent::decode(&as_bytes(&event)).unwrap()
        else {
            panic!("not a connection record");
        };
        assert_eq!(seen.local.to_string(), "[::1]:8443");
        assert_eq!(seen.peer.to_string(), "[::1]:50000");
        assert_eq!(seen.role, Role::Server);
    }
}
