//! What the fuzz targets (`agent/fuzz`) run: arbitrary bytes, cut into the chunks of one
//! connection, through the protocol stage as capture would feed it. The seed corpora also run
//! through these in the unit tests, so the harness is checked by every `cargo test`.
//!
//! Nothing here asserts anything of the calls: the property under test is that no input makes
//! a decoder panic, allocate without bound or loop.

use std::sync::Arc;

use agent_common::{Direction, Role};
use bytes::Bytes;

use super::{DecoderSettings, ProtocolStage};
use crate::{
    calls::ApiCall,
    streams::{Connection, StreamChunk},
};

/// The client connection preface.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// One connection being fed to a protocol stage, chunk by chunk.
struct Feed {
    stage: ProtocolStage,
    connection: Arc<Connection>,
    offsets: [u64; 2],
    ts_ns: u64,
    calls: Vec<ApiCall>,
}

impl Feed {
    /// A connection of a process with `role`, its start seen or not; offsets start at `offset`.
    fn new(role: Role, opened_unseen: bool, offset: u64) -> Self {
        Self {
            stage: ProtocolStage::new(DecoderSettings { body_cap: 1024 }),
            connection: Arc::new(Connection {
                id: 1,
                sock: 0,
                pid: 1,
                fd: 3,
                role,
                opened_unseen,
                tls_client_ja4: None,
                transport: crate::streams::Transport::Tcp,
                local: None,
                peer: None,
                comm: "fuzz".into(),
            }),
            offsets: [offset; 2],
            ts_ns: 0,
            calls: Vec::new(),
        }
    }

    /// A chunk of `direction` that moved `len` bytes, of which `data` was captured.
    fn chunk(&mut self, direction: Direction, data: &[u8], len: u64) {
        let slot = direction as usize & 1;
        self.ts_ns += 1_000;
        let chunk = StreamChunk {
            connection: Arc::clone(&self.connection),
            direction,
            offset: self.offsets[slot],
            len,
            data: Bytes::copy_from_slice(data),
            tls: false,
            gap: false,
            ts_ns: self.ts_ns,
            tid: 1,
            comm: "fuzz".into(),
        };
        self.offsets[slot] = self.offsets[slot].saturating_add(len);
        self.stage.on_chunk(&chunk, &mut self.calls);
        // Calls are dropped as they come, as the pipeline hands them on.
        self.calls.clear();
    }

    /// Cuts `data` into chunks: each starts with a control byte (bit 0: egress or ingress;
    /// bit 1: the chunk lost bytes past what it carries) and a 2-byte big-endian payload
    /// length, then that payload.
    fn chunks(&mut self, mut data: &[u8]) {
        while let [control, high, low, rest @ ..] = data {
            let direction = if control & 1 == 0 {
                Direction::Egress
            } else {
                Direction::Ingress
            };
            let take = usize::from(u16::from_be_bytes([*high, *low])).min(rest.len());
            let (payload, after) = rest.split_at(take);
            let lost = if control & 2 != 0 { 1_000 } else { 0 };
            self.chunk(direction, payload, payload.len() as u64 + lost);
            data = after;
        }
    }

    fn end(mut self) {
        self.stage
            .on_end(self.connection.id, self.ts_ns + 1, &mut self.calls);
    }
}

/// The role and the start of a connection, from a byte.
fn role_of(byte: u8) -> Role {
    match byte % 3 {
        0 => Role::Client,
        1 => Role::Server,
        _ => Role::Unknown,
    }
}

/// An HTTP/2 connection: after the first byte (the role; bit 7: joined mid-way, otherwise the
/// client preface opens it), the chunks [`Feed::chunks`] cuts from the rest, to whichever
/// decoder the first of them selects.
pub fn http2_connection(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let role = role_of(first);
    let joined = first & 0x80 != 0;
    let mut feed = Feed::new(role, joined, if joined { 5_000 } else { 0 });
    if !joined {
        let requests = if role == Role::Server {
            Direction::Ingress
        } else {
            Direction::Egress
        };
        feed.chunk(requests, PREFACE, PREFACE.len() as u64);
    }
    feed.chunks(rest);
    feed.end();
}

/// One header block through each direction's HPACK decoder: after the first byte (the role;
/// bit 7: joined mid-way, so decoded against placeholders), the rest is the block of a
/// HEADERS frame on stream 1 from the client, then of one from the server.
pub fn hpack_block(data: &[u8]) {
    let Some((&first, block)) = data.split_first() else {
        return;
    };
    let joined = first & 0x80 != 0;
    let mut feed = Feed::new(Role::Client, joined, if joined { 5_000 } else { 0 });
    if !joined {
        feed.chunk(Direction::Egress, PREFACE, PREFACE.len() as u64);
    }
    // HEADERS with END_HEADERS and END_STREAM; a block longer than a frame is cut to one.
    let block = block.get(..block.len().min(0xff_ffff)).unwrap_or_default();
    let len = u32::try_from(block.len()).unwrap_or(0).to_be_bytes();
    let mut frame = vec![len[1], len[2], len[3], 0x1, 0x5, 0, 0, 0, 1];
    frame.extend_from_slice(block);
    let frame_len = frame.len() as u64;
    feed.chunk(Direction::Egress, &frame, frame_len);
    feed.chunk(Direction::Ingress, &frame, frame_len);
    feed.end();
}

/// An HTTP/1 connection: after the first byte (the role), the chunks [`Feed::chunks`] cuts
/// from the rest.
pub fn http1_connection(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let mut feed = Feed::new(role_of(first), false, 0);
    feed.chunks(rest);
    feed.end();
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// Runs every file of `agent/fuzz/corpus/<target>` through `harness`.
    fn run_corpus(target: &str, harness: fn(&[u8])) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/corpus")
            .join(target);
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("no seed corpus at {}: {e}", dir.display()));
        let mut seeds = 0;
        for entry in entries {
            let path = entry.expect("corpus entry").path();
            harness(&std::fs::read(&path).expect("corpus file"));
            seeds += 1;
        }
        assert!(seeds > 0, "empty seed corpus at {}", dir.display());
    }

    #[test]
    fn http2_seeds_decode_without_panic() {
        run_corpus("http2", http2_connection);
    }

    #[test]
    fn hpack_seeds_decode_without_panic() {
        run_corpus("hpack", hpack_block);
    }

    #[test]
    fn http1_seeds_decode_without_panic() {
        run_corpus("http1", http1_connection);
    }
}
