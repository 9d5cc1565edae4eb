//! What the decoder benchmarks share: connections recorded as the stream stage delivers them,
//! and the criterion groups that decode them through the protocol's table entry, as the
//! pipeline does.

use std::{hint::black_box, sync::Arc};

use agent::{
    protocols::{Decoder, DecoderSettings},
    streams::{Connection, StreamChunk},
};
use agent_common::{Direction, Role};
use criterion::{Criterion, Throughput};

/// Body bytes kept per message, as a typical configuration would.
const BODY_CAP: usize = 4096;

/// A connection protocol's table entry: a decoder for the connection whose first chunk this
/// is, if it carries the protocol.
pub type DecoderFor = fn(&StreamChunk, DecoderSettings) -> Option<Box<dyn Decoder>>;

/// A recorded connection: its chunks in capture order, requests ingress (a server).
pub struct Recording {
    name: &'static str,
    chunks: Vec<StreamChunk>,
    bytes: u64,
    calls: u64,
}

/// Builds chunks with consecutive offsets per direction and increasing times.
pub struct Recorder {
    connection: Arc<Connection>,
    offsets: [u64; 2],
    chunks: Vec<StreamChunk>,
}

impl Recorder {
    /// A recorder of a server's connection.
    pub fn new() -> Self {
        Self {
            connection: agent::testing::connection(1, Role::Server),
            offsets: [0, 0],
            chunks: Vec::new(),
        }
    }

    /// `data`, moved in `direction` right after what was recorded before.
    pub fn push(&mut self, direction: Direction, data: Vec<u8>) {
        let slot = direction as usize;
        let len = data.len() as u64;
        let ts_ns = self.chunks.len() as u64 * 1_000;
        self.chunks.push(agent::testing::chunk(
            &self.connection,
            direction,
            self.offsets[slot],
            &data,
            len,
            ts_ns,
        ));
        self.offsets[slot] += len;
    }

    /// The recording, named `name`, in which `calls` calls should be decoded.
    pub fn finish(self, name: &'static str, calls: u64) -> Recording {
        let bytes = self.chunks.iter().map(|chunk| chunk.len).sum();
        Recording {
            name,
            chunks: self.chunks,
            bytes,
            calls,
        }
    }
}

/// Decodes a whole recording, returning the number of calls.
fn decode(recording: &Recording, decoder_for: DecoderFor) -> usize {
    let settings = DecoderSettings { body_cap: BODY_CAP };
    let Some(mut decoder) = recording
        .chunks
        .first()
        .and_then(|first| decoder_for(first, settings))
    else {
        return 0;
    };
    let mut calls = Vec::new();
    for chunk in &recording.chunks {
        decoder.on_chunk(chunk, &mut calls);
    }
    decoder.on_end(u64::MAX, &mut calls);
    black_box(&calls);
    calls.len()
}

/// Checks that each recording decodes to its calls, then measures the decoder on each, in
/// bytes (`<protocol>_bytes`) and in calls (`<protocol>_calls`) per second.
pub fn bench_recordings(
    criterion: &mut Criterion,
    protocol: &str,
    decoder_for: DecoderFor,
    recordings: &[Recording],
) {
    for recording in recordings {
        assert_eq!(
            decode(recording, decoder_for) as u64,
            recording.calls,
            "{}",
            recording.name
        );
    }
    let mut bytes = criterion.benchmark_group(format!("{protocol}_bytes"));
    for recording in recordings {
        bytes.throughput(Throughput::Bytes(recording.bytes));
        bytes.bench_function(recording.name, |bencher| {
            bencher.iter(|| decode(recording, decoder_for))
        });
    }
    bytes.finish();
    let mut calls = criterion.benchmark_group(format!("{protocol}_calls"));
    for recording in recordings {
        calls.throughput(Throughput::Elements(recording.calls));
        calls.bench_function(recording.name, |bencher| {
            bencher.iter(|| decode(recording, decoder_for))
        });
    }
    calls.finish();
}
