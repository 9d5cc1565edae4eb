//! Protocols: one module per protocol, each turning a connection's two byte streams into
//! [`ApiCall`]s behind the [`Decoder`] trait. [`ProtocolStage`] detects the protocol of each
//! connection from its first bytes and feeds the matching decoder.

pub mod body_tail;
// The fuzzing harness reads only the fuzzer's bytes, never captured ones.
#[allow(clippy::indexing_slicing)]
pub mod fuzzing;
pub mod genai;
pub mod graphql;
pub mod grpc;
pub mod http1;
pub mod http2;
pub mod json_documents;
pub mod mcp;
#[cfg(test)]
mod testing;

use std::sync::Arc;

use agent_common::{Direction, PayloadPolicy, Role};
use foldhash::HashMap;

use crate::{
    calls::{ApiCall, Side},
    streams::{Connection, StreamChunk, Transport},
};

/// A protocol decoder for one connection. Chunks arrive in offset order per direction; a chunk
/// whose offset is past the end of the previous one, or whose `data` is shorter than its `len`,
/// carries a gap the decoder must account for.
pub trait Decoder: Send {
    /// Consumes one chunk, appending every call it completes.
    fn on_chunk(&mut self, chunk: &StreamChunk, calls: &mut Vec<ApiCall>);

    /// The connection ended at `ts_ns` (closed, its process exited, or it went idle): completes
    /// what the end completes (a body delimited by the close) and reports what is left as
    /// incomplete calls.
    fn on_end(&mut self, ts_ns: u64, calls: &mut Vec<ApiCall>);

    /// False once the connection carries something this decoder no longer parses (after an
    /// upgrade, or bytes that are not its protocol): the stage then stops feeding it.
    fn wants_more(&self) -> bool;

    /// True for protocols that frame their stream, where a byte lost past the capture cap may
    /// be a frame header and losing one loses the rest of the connection: capture then copies
    /// whole calls (up to the framed cap).
    fn is_framed(&self) -> bool {
        false
    }

    /// The decoder of the protocol the connection switched to, once it did (HTTP/1.1 upgraded
    /// to h2c): it takes over from the switch, the current chunk included.
    fn take_successor(&mut self) -> Option<Box<dyn Decoder>> {
        None
    }
}

/// Settings shared by the decoders.
#[derive(Debug, Clone, Copy)]
pub struct DecoderSettings {
    /// Body bytes kept per message for analysis (never exported by default).
    pub body_cap: usize,
}

/// Per-connection protocol detection and decoding.
pub struct ProtocolStage {
    settings: DecoderSettings,
    /// Keyed by our own connection ids, looked up for every chunk: a seeded fast hash is
    /// enough.
    connections: HashMap<u64, Option<Box<dyn Decoder>>>,
    /// What capture should copy of which connections, found since the last
    /// [`ProtocolStage::take_payload_policies`].
    payload_policies: Vec<(Arc<Connection>, PayloadPolicy)>,
}

impl ProtocolStage {
    /// A stage with no connection yet.
    pub fn new(settings: DecoderSettings) -> Self {
        Self {
            settings,
            connections: HashMap::default(),
            payload_policies: Vec::new(),
        }
    }

    /// Feeds one chunk to its connection's decoder, detecting the protocol on the connection's
    /// first data. Connections of no known protocol are remembered as such, cost nothing
    /// further, and are reported by [`ProtocolStage::take_payload_policies`] so that capture
    /// can stop copying their bytes; so are those of framed protocols, whose calls capture
    /// should copy whole.
    pub fn on_chunk(&mut self, chunk: &StreamChunk, calls: &mut Vec<ApiCall>) {
        let first_new = calls.len();
        let id = chunk.connection.id;
        let slot = match self.connections.get_mut(&id) {
            Some(slot) => slot,
            // Nothing to detect a protocol from yet.
            None if chunk.data.is_empty() => return,
            None => {
                let detected = detect(chunk, self.settings);
                let policy = match &detected {
                    None => {
                        log::debug!(
                            "connection {id} (pid {}, fd {}, {:?}): no protocol in its first \
                             {:?} bytes at offset {}: {:02x?}",
                            chunk.connection.pid,
                            chunk.connection.fd,
                            chunk.connection.role,
                            chunk.direction,
                            chunk.offset,
                            chunk
                                .data
                                .get(..chunk.data.len().min(24))
                                .unwrap_or_default()
                        );
                        Some(PayloadPolicy::Mute)
                    }
                    Some(decoder) if decoder.is_framed() => Some(PayloadPolicy::Framed),
                    Some(_) => None,
                };
                if let Some(policy) = policy {
                    self.payload_policies
                        .push((Arc::clone(&chunk.connection), policy));
                }
                self.connections.entry(id).or_insert(detected)
            }
        };
        if let Some(decoder) = slot {
            decoder.on_chunk(chunk, calls);
            if let Some(mut successor) = decoder.take_successor() {
                successor.on_chunk(chunk, calls);
                if successor.is_framed() {
                    self.payload_policies
                        .push((Arc::clone(&chunk.connection), PayloadPolicy::Framed));
                }
                *decoder = successor;
            }
            post_process(calls, first_new, self.settings);
            if !decoder.wants_more() {
                *slot = None;
                self.payload_policies
                    .push((Arc::clone(&chunk.connection), PayloadPolicy::Mute));
            }
        }
    }

    /// The payload policies found since the last call, oldest first: a later one for the same
    /// connection replaces an earlier one.
    pub fn take_payload_policies(
        &mut self,
    ) -> std::vec::Drain<'_, (Arc<Connection>, PayloadPolicy)> {
        self.payload_policies.drain(..)
    }

    /// The connection `id` ended at `ts_ns`.
    pub fn on_end(&mut self, id: u64, ts_ns: u64, calls: &mut Vec<ApiCall>) {
        if let Some(Some(mut decoder)) = self.connections.remove(&id) {
            let first_new = calls.len();
            decoder.on_end(ts_ns, calls);
            post_process(calls, first_new, self.settings);
        }
    }
}

/// What every decoder's calls go through, from `calls[first_new..]` on: the layers carried
/// inside HTTP (GraphQL, which may turn one call into several, model calls and MCP) are found
/// here once, whichever HTTP version carried them.
fn post_process(calls: &mut Vec<ApiCall>, first_new: usize, settings: DecoderSettings) {
    graphql::annotate(calls, first_new);
    genai::annotate(calls, first_new);
    mcp::http::annotate(calls, first_new, settings.body_cap);
}

/// Picks the decoder for a connection from its first captured bytes.
fn detect(chunk: &StreamChunk, settings: DecoderSettings) -> Option<Box<dyn Decoder>> {
    if chunk.connection.transport == Transport::Stdio {
        return Some(Box::new(mcp::stdio::StdioDecoder::new(settings)));
    }
    if let Some(detected) = http2::detect(chunk) {
        return Some(Box::new(http2::Http2Decoder::new(detected, settings)));
    }
    http1::detect(chunk)
        .map(|detected| Box::new(http1::Http1Decoder::new(detected, settings)) as Box<dyn Decoder>)
}

/// Which end of a connection's exchanges the traced process is: its role when known, else the
/// direction requests travel in (a process sends the requests it makes and receives those it
/// serves).
fn side_of(role: Role, requests: Direction) -> Side {
    match role {
        Role::Server => Side::Server,
        Role::Client => Side::Client,
        Role::Unknown => match requests {
            Direction::Egress => Side::Client,
            Direction::Ingress => Side::Server,
        },
    }
}

/// The other direction of a connection.
fn opposite(direction: Direction) -> Direction {
    match direction {
        Direction::Egress => Direction::Ingress,
        Direction::Ingress => Direction::Egress,
    }
}

#[cfg(test)]
mod tests {
    use agent_common::{Direction, PayloadPolicy, Role};

    use super::{DecoderSettings, ProtocolStage, testing};

    fn policies_after(first_bytes: &[u8]) -> Vec<PayloadPolicy> {
        let mut stage = ProtocolStage::new(DecoderSettings { body_cap: 1024 });
        let connection = testing::connection(1, Role::Client);
        let len = first_bytes.len() as u64;
        let chunk = testing::chunk(&connection, Direction::Egress, 0, first_bytes, len, 1);
        stage.on_chunk(&chunk, &mut Vec::new());
        stage
            .take_payload_policies()
            .map(|(_, policy)| policy)
            .collect()
    }

    #[test]
    fn http2_connections_are_copied_whole() {
        let policies = policies_after(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        assert_eq!(policies, [PayloadPolicy::Framed]);
    }

    #[test]
    fn connections_no_decoder_wants_are_muted() {
        assert_eq!(policies_after(b"\x00\x01binary"), [PayloadPolicy::Mute]);
    }

    #[test]
    fn http1_connections_keep_the_capture_cap() {
        assert!(policies_after(b"GET / HTTP/1.1\r\n").is_empty());
    }
}
