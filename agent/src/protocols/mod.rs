//! Protocols: one folder per protocol, each with its detection, its decoder or finder, its
//! call type, that type's description for export and its fuzz targets, registered in one of
//! the two tables below: [`CONNECTION_PROTOCOLS`], which decode a connection's two byte
//! streams into [`ApiCall`]s behind the [`Decoder`] trait, and [`HTTP_LAYERS`], the protocols
//! carried inside HTTP exchanges. [`ProtocolStage`] detects the protocol of each connection from its
//! first bytes, feeds the matching decoder, and finds the layers of every HTTP exchange.

#[doc(hidden)]
pub mod fuzzing;
pub mod genai;
pub mod graphql;
pub mod grpc;
pub mod http;
pub mod http1;
pub mod http2;
pub mod json_documents;
pub mod mcp;

use std::sync::Arc;

use agent_common::{Direction, PayloadPolicy, Role};
use foldhash::HashMap;

use crate::{
    calls::{ApiCall, Layer, Side},
    streams::{Connection, StreamChunk},
};

use self::{
    fuzzing::FuzzTarget,
    http::{BodyWatcher, HttpExchange, HttpRequest},
};

/// A protocol found from a connection's first bytes, which then decodes the whole
/// connection.
pub struct ConnectionProtocol {
    /// Its name.
    pub name: &'static str,
    /// A decoder for the connection whose first chunk with bytes is `chunk`, if it is this
    /// protocol's.
    pub decoder: fn(chunk: &StreamChunk, settings: DecoderSettings) -> Option<Box<dyn Decoder>>,
    /// Its fuzz targets.
    pub fuzz: &'static [FuzzTarget],
}

/// The connection protocols, tried in this order on each connection's first bytes.
pub const CONNECTION_PROTOCOLS: &[ConnectionProtocol] = &[
    ConnectionProtocol {
        name: "mcp-stdio",
        decoder: mcp::stdio::decoder,
        fuzz: &[FuzzTarget {
            name: "mcp_stdio",
            harness: mcp::fuzzing::stdio_connection,
        }],
    },
    ConnectionProtocol {
        name: "http2",
        decoder: http2::decoder,
        fuzz: &[
            FuzzTarget {
                name: "http2",
                harness: http2::fuzzing::connection,
            },
            FuzzTarget {
                name: "hpack",
                harness: http2::fuzzing::hpack_block,
            },
        ],
    },
    ConnectionProtocol {
        name: "http1",
        decoder: http1::decoder,
        fuzz: &[FuzzTarget {
            name: "http1",
            harness: http1::fuzzing::connection,
        }],
    },
];

/// The layers an exchange carries, found from its kept bytes.
pub type FindLayers =
    fn(call: &ApiCall, http: &HttpExchange, settings: DecoderSettings) -> Vec<Arc<dyn Layer>>;

/// How a protocol carried inside HTTP is found in an exchange.
pub enum LayerFinder {
    /// From the request head, the layer follows every body byte as the HTTP/2 decoder reads
    /// it (what it reports cannot be read back from the bytes kept).
    Watch(fn(request: &HttpRequest) -> Option<Box<dyn BodyWatcher>>),
    /// From a decoded exchange's kept bytes: the layers it carries, one per call (a batch
    /// makes several calls of one exchange).
    Find(FindLayers),
}

/// A protocol carried inside HTTP exchanges.
pub struct HttpLayer {
    /// Its name.
    pub name: &'static str,
    /// How it is found.
    pub finder: LayerFinder,
    /// Its fuzz targets.
    pub fuzz: &'static [FuzzTarget],
}

/// The protocols carried inside HTTP, tried in this order on every exchange: the first found
/// is the call's layer.
pub const HTTP_LAYERS: &[HttpLayer] = &[
    HttpLayer {
        name: "grpc",
        finder: LayerFinder::Watch(grpc::watch),
        fuzz: &[FuzzTarget {
            name: "grpc",
            harness: grpc::fuzzing::connection,
        }],
    },
    HttpLayer {
        name: "graphql",
        finder: LayerFinder::Find(graphql::find),
        fuzz: &[FuzzTarget {
            name: "graphql",
            harness: graphql::fuzzing::exchange,
        }],
    },
    HttpLayer {
        name: "genai",
        finder: LayerFinder::Find(genai::find),
        fuzz: &[FuzzTarget {
            name: "genai",
            harness: genai::fuzzing::exchange,
        }],
    },
    HttpLayer {
        name: "mcp",
        finder: LayerFinder::Find(mcp::http::find),
        fuzz: &[FuzzTarget {
            name: "mcp_http",
            harness: mcp::fuzzing::http_exchange,
        }],
    },
];

/// The watchers of the layers that watch bodies and take `request`, in table order.
pub fn watchers(request: &HttpRequest) -> Vec<Box<dyn BodyWatcher>> {
    HTTP_LAYERS
        .iter()
        .filter_map(|layer| match layer.finder {
            LayerFinder::Watch(watch) => watch(request),
            LayerFinder::Find(_) => None,
        })
        .collect()
}

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

/// The `decode:` section of the configuration: settings shared by the decoders.
#[derive(Debug, Clone, Copy, serde::Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct DecoderSettings {
    /// Body bytes kept per message for analysis (at most 1 MiB); never exported.
    #[serde(deserialize_with = "crate::settings_format::within::<_, _, 0, 1_048_576>")]
    pub body_cap: usize,
}

impl Default for DecoderSettings {
    fn default() -> Self {
        Self { body_cap: 4096 }
    }
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

/// What every decoder's calls go through, from `calls[first_new..]` on: the layers found in
/// an HTTP exchange's kept bytes are found here once, whichever HTTP version carried it. A
/// call whose layer a watcher already found keeps it; one exchange carrying several layers of
/// one kind (a GraphQL batch) becomes one call each, in order.
fn post_process(calls: &mut Vec<ApiCall>, first_new: usize, settings: DecoderSettings) {
    let mut index = first_new;
    while let Some(call) = calls.get(index) {
        let found = match call.exchange::<HttpExchange>() {
            Some(http) if call.layer.is_none() => find_layers(call, http, settings),
            _ => Vec::new(),
        };
        let count = found.len().max(1);
        let mut found = found.into_iter();
        if let Some(first) = found.next() {
            let copies: Vec<ApiCall> = found
                .map(|layer| ApiCall {
                    layer: Some(layer),
                    ..call.clone()
                })
                .collect();
            if let Some(call) = calls.get_mut(index) {
                call.layer = Some(first);
            }
            calls.splice(index + 1..index + 1, copies);
        }
        index += count;
    }
}

/// The layers of the first protocol of [`HTTP_LAYERS`] found in `http`'s kept bytes.
fn find_layers(
    call: &ApiCall,
    http: &HttpExchange,
    settings: DecoderSettings,
) -> Vec<Arc<dyn Layer>> {
    HTTP_LAYERS
        .iter()
        .filter_map(|layer| match layer.finder {
            LayerFinder::Find(find) => Some(find(call, http, settings)),
            LayerFinder::Watch(_) => None,
        })
        .find(|found| !found.is_empty())
        .unwrap_or_default()
}

/// Picks the decoder for a connection from its first captured bytes: the first protocol of
/// [`CONNECTION_PROTOCOLS`] that recognises them.
fn detect(chunk: &StreamChunk, settings: DecoderSettings) -> Option<Box<dyn Decoder>> {
    CONNECTION_PROTOCOLS
        .iter()
        .find_map(|protocol| (protocol.decoder)(chunk, settings))
}

/// What a connection protocol's detection found out about a connection: it carries the
/// protocol, and which way its exchanges go.
#[derive(Debug, Clone)]
pub struct Orientation {
    connection: Arc<Connection>,
    requests: Direction,
    side: Side,
}

impl Orientation {
    /// `chunk`'s connection, whose requests travel in `requests`.
    fn new(chunk: &StreamChunk, requests: Direction) -> Self {
        Self {
            connection: Arc::clone(&chunk.connection),
            requests,
            side: side_of(chunk.connection.role, requests),
        }
    }

    /// The direction requests travel in.
    pub fn requests(&self) -> Direction {
        self.requests
    }

    /// Which end of the exchanges the traced process is.
    pub fn side(&self) -> Side {
        self.side
    }
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

    use super::{DecoderSettings, ProtocolStage};
    use crate::testing;

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
