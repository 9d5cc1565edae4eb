//! Connections and chunks for the decoders' unit tests.

use std::sync::Arc;

use agent_common::{Direction, Role};
use bytes::Bytes;

use crate::streams::{Connection, StreamChunk};

/// A connection of process 100, fd 5, with the given id and role.
pub fn connection(id: u64, role: Role) -> Arc<Connection> {
    Arc::new(Connection {
        id,
        sock: 0,
        pid: 100,
        fd: 5,
        role,
        opened_unseen: false,
        tls_client_ja4: None,
        local: None,
        peer: None,
        comm: "test".into(),
    })
}

/// A chunk of `connection` at `offset` that moved `len` bytes, of which `data` was captured.
pub fn chunk(
    connection: &Arc<Connection>,
    direction: Direction,
    offset: u64,
    data: &[u8],
    len: u64,
    ts_ns: u64,
) -> StreamChunk {
    StreamChunk {
        connection: Arc::clone(connection),
        direction,
        offset,
        len,
        data: Bytes::copy_from_slice(data),
        tls: false,
        gap: false,
        ts_ns,
        tid: 1,
        comm: "test".into(),
    }
}
