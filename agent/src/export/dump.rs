//! `--dump`: every captured chunk as one JSON line on stdout, for debugging capture and for the
//! end-to-end tests.

use std::io::{self, Write};

use agent_common::{Direction, Role};
use base64::Engine as _;
use serde::Serialize;

use crate::{clock::WallClock, streams::StreamChunk};

/// One line of the dump.
#[derive(Debug, Serialize)]
struct DumpLine<'a> {
    ts_ns: u64,
    pid: u32,
    tid: u32,
    comm: &'a str,
    fd: i32,
    conn_id: u64,
    direction: &'static str,
    tls: bool,
    gap: bool,
    len: u64,
    captured: usize,
    offset: u64,
    local: Option<String>,
    peer: Option<String>,
    role: &'static str,
    data: String,
}

/// Name of a direction in the dump.
pub fn direction_name(direction: Direction) -> &'static str {
    match direction {
        Direction::Egress => "egress",
        Direction::Ingress => "ingress",
    }
}

/// Name of a role in the dump.
pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::Client => "client",
        Role::Server => "server",
        Role::Unknown => "unknown",
    }
}

/// Payload as text where it is UTF-8, else `b64:` and its base64. Text that itself starts with
/// `b64:` is encoded too, so the two forms can always be told apart.
fn printable(data: &[u8]) -> String {
    match std::str::from_utf8(data) {
        Ok(text) if !text.starts_with(BASE64_PREFIX) => text.to_owned(),
        _ => format!(
            "{BASE64_PREFIX}{}",
            base64::engine::general_purpose::STANDARD.encode(data)
        ),
    }
}

/// Marks a `data` field holding base64.
const BASE64_PREFIX: &str = "b64:";

/// Writes chunks as JSON lines.
pub struct DumpWriter<W: Write> {
    out: W,
    clock: WallClock,
}

impl<W: Write> DumpWriter<W> {
    /// A writer to `out`, stamping times with `clock`.
    pub fn new(out: W, clock: WallClock) -> Self {
        Self { out, clock }
    }

    /// Writes one line per chunk and flushes, so a reader sees each batch at once.
    pub fn write_batch(&mut self, chunks: &[StreamChunk]) -> io::Result<()> {
        for chunk in chunks {
            let connection = &chunk.connection;
            let line = DumpLine {
                ts_ns: self.clock.unix_ns(chunk.ts_ns),
                pid: connection.pid,
                tid: chunk.tid,
                comm: &chunk.comm,
                fd: connection.fd,
                conn_id: connection.id,
                direction: direction_name(chunk.direction),
                tls: chunk.tls,
                gap: chunk.gap,
                len: chunk.len,
                captured: chunk.data.len(),
                offset: chunk.offset,
                local: connection.local.map(|addr| addr.to_string()),
                peer: connection.peer.map(|addr| addr.to_string()),
                role: role_name(connection.role),
                data: printable(&chunk.data),
            };
            serde_json::to_writer(&mut self.out, &line)?;
            self.out.write_all(b"\n")?;
        }
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;

    use super::*;
    use crate::streams::Connection;

    fn chunk(data: &'static [u8]) -> StreamChunk {
        StreamChunk {
            connection: Arc::new(Connection {
                local: Some("127.0.0.1:8080".parse().unwrap()),
                peer: Some("[::1]:5000".parse().unwrap()),
                comm: "python3".into(),
                ..crate::testing::bare_connection(9, Role::Server)
            }),
            direction: Direction::Ingress,
            offset: 12,
            len: 30,
            data: Bytes::from_static(data),
            tls: true,
            gap: false,
            ts_ns: 1_000,
            tid: 101,
            comm: "python3".into(),
        }
    }

    fn dump(chunks: &[StreamChunk]) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        DumpWriter::new(&mut out, WallClock::with_offset(5))
            .write_batch(chunks)
            .unwrap();
        String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    #[test]
    fn text_payload_and_every_field() {
        let line = &dump(&[chunk(b"GET / HTTP/1.1\r\n")])[0];
        assert_eq!(line["data"], "GET / HTTP/1.1\r\n");
        assert_eq!(line["ts_ns"], 1_005);
        assert_eq!(line["direction"], "ingress");
        assert_eq!(line["role"], "server");
        assert_eq!(line["local"], "127.0.0.1:8080");
        assert_eq!(line["peer"], "[::1]:5000");
        assert_eq!(line["len"], 30);
        assert_eq!(line["captured"], 16);
        assert_eq!(line["offset"], 12);
        assert_eq!(line["conn_id"], 9);
        assert_eq!(line["tls"], true);
    }

    #[test]
    fn binary_payload_is_base64() {
        let line = &dump(&[chunk(b"\x16\x03\x01\xff")])[0];
        assert_eq!(line["data"], "b64:FgMB/w==");
    }

    #[test]
    fn text_that_looks_like_base64_is_encoded() {
        let line = &dump(&[chunk(b"b64:abc")])[0];
        assert_eq!(line["data"], "b64:YjY0OmFiYw==");
    }
}
