//! What the `streams` fuzz target (`agent/fuzz`) runs: arbitrary capture events through the
//! stream stage, in batches, and what it assembles through the protocol stage, as the pipeline
//! runs them. Kernel offsets jump back, forward and over each other, records come for fds that
//! hold another socket or none the stage knows, handshake records come in pieces, connections
//! close, processes exit, the table fills up and connections idle out.
//!
//! Beyond not panicking, allocating without bound or looping, the stage must keep its promise
//! to the decoders: each direction of a connection's chunks comes in offset order, a chunk
//! never starting before the end of the one before.

use std::net::{Ipv4Addr, SocketAddr};

use agent_common::{Direction, Role};
use bytes::Bytes;
use foldhash::HashMap;

use crate::{
    capture::{CaptureEvent, ConnectionSeen, DataChunk},
    protocols::{DecoderSettings, ProtocolStage},
    streams::{StreamOutput, StreamSettings, StreamTable, Transport},
};

/// The processes of the events: none exists (pids stop far below), so the stage's `/proc`
/// look-ups find nothing, as for a process already gone, and cost little.
const TGIDS: [u32; 2] = [u32::MAX, u32::MAX - 1];

/// Capture events, each an 8-byte header and a payload: a control byte, an argument byte, two
/// 2-byte big-endian numbers `a` and `b`, a 2-byte big-endian payload length, then that many
/// payload bytes (cut short by the end of `data`). Control bits 0 to 2 give the event:
///
/// * 0 to 3, a data record: the argument's bits 0 to 4 are its `data_flags`, bit 5 its
///   direction (egress, else ingress), bit 6 says the kernel counted its offset, `a`; it moved
///   `b` bytes past its payload.
/// * 4, a connection: the argument's bits 0 and 1 are its role (unknown, client, server),
///   bit 2 makes it a stdio connection; its ports are `a` and `b`.
/// * 5, a close; 6, the process's exit.
/// * 7, the end of a batch: the stage's output goes to the protocol stage, and connections
///   idle for 50 events are reclaimed.
///
/// Bits 3 and 4 pick the fd (3 to 6), bits 5 and 6 the socket (0, which OpenSSL records carry
/// when the kernel side knew none, to 3) and bit 7 the process. The table holds 4 connections
/// of the 8 keys (process and fd). When the events run out, the last batch is handed on and
/// every connection is reclaimed.
pub fn capture_events(mut data: &[u8]) {
    let mut table = StreamTable::new(StreamSettings {
        max_connections: 4,
        idle_timeout: std::time::Duration::from_nanos(50_000),
    });
    let mut assembled = Assembled::new();
    let mut out = StreamOutput::default();
    let mut ts_ns = 0;
    while let [control, argument, a0, a1, b0, b1, len0, len1, rest @ ..] = data {
        let (a, b) = (
            u16::from_be_bytes([*a0, *a1]),
            u16::from_be_bytes([*b0, *b1]),
        );
        let take = usize::from(u16::from_be_bytes([*len0, *len1])).min(rest.len());
        let (payload, after) = rest.split_at(take);
        data = after;
        ts_ns += 1_000;
        let tgid = TGIDS[usize::from(control >> 7)];
        let fd = 3 + i32::from(control >> 3 & 3);
        let sock = u64::from(control >> 5 & 3);
        let event = match control & 7 {
            0..=3 => CaptureEvent::Data(DataChunk {
                tgid,
                tid: tgid,
                fd,
                sock,
                direction: if argument & 0x20 == 0 {
                    Direction::Egress
                } else {
                    Direction::Ingress
                },
                flags: u32::from(argument & 0x1f),
                len: payload.len() as u64 + u64::from(b),
                offset: (argument & 0x40 != 0).then_some(u64::from(a)),
                payload: Bytes::copy_from_slice(payload),
                ts_ns,
                comm: "fuzz".into(),
            }),
            4 => CaptureEvent::Connection(ConnectionSeen {
                tgid,
                fd,
                sock,
                role: match argument & 3 {
                    1 => Role::Client,
                    2 => Role::Server,
                    _ => Role::Unknown,
                },
                local: SocketAddr::from((Ipv4Addr::LOCALHOST, a)),
                peer: SocketAddr::from((Ipv4Addr::LOCALHOST, b)),
                transport: if argument & 4 != 0 {
                    Transport::Stdio
                } else {
                    Transport::Tcp
                },
                comm: "fuzz".into(),
                ts_ns,
            }),
            5 => CaptureEvent::Closed {
                tgid,
                fd,
                sock,
                ts_ns,
            },
            6 => CaptureEvent::Exit { tgid, ts_ns },
            _ => {
                table.reclaim_idle(ts_ns, &mut out.ended);
                assembled.hand_on(&mut out);
                continue;
            }
        };
        table.apply(event, &mut out);
    }
    table.reclaim_idle(u64::MAX, &mut out.ended);
    assembled.hand_on(&mut out);
}

/// Where the stream stage's output goes.
struct Assembled {
    protocols: ProtocolStage,
    /// Where the next chunk of each direction of each connection may start at the earliest.
    next_offsets: HashMap<(u64, usize), u64>,
}

impl Assembled {
    fn new() -> Self {
        Self {
            protocols: ProtocolStage::new(DecoderSettings { body_cap: 1024 }),
            next_offsets: HashMap::default(),
        }
    }

    /// Checks the chunks of `out` and feeds them, then the connections' ends, to the protocol
    /// stage, as the pipeline does after each batch; then empties `out`.
    fn hand_on(&mut self, out: &mut StreamOutput) {
        let protocols = &mut self.protocols;
        let mut calls = Vec::new();
        for chunk in &out.chunks {
            let next = self
                .next_offsets
                .entry((chunk.connection.id, chunk.direction as usize))
                .or_default();
            assert!(
                chunk.offset >= *next,
                "connection {} {:?}: a chunk at {} after one that ended at {next}",
                chunk.connection.id,
                chunk.direction,
                chunk.offset
            );
            *next = chunk.offset.saturating_add(chunk.len);
            protocols.on_chunk(chunk, &mut calls);
            calls.clear();
        }
        for (id, ts_ns) in &out.ended {
            protocols.on_end(*id, *ts_ns, &mut calls);
            calls.clear();
        }
        // Capture would be told what to copy of these connections.
        protocols.take_payload_policies();
        out.clear();
    }
}
