//! Streams: capture events turned into ordered per-connection, per-direction byte streams.
//!
//! A connection is one socket in one process, identified by (pid, fd, generation): the
//! generation changes whenever the fd starts holding another socket. Each direction keeps a
//! byte offset; a chunk says where it starts, how many bytes the call moved and how many were
//! captured, so a gap or a truncation is always visible and never glued over. The stage keeps
//! no payload beyond a TLS connection's first handshake record (at most 4 KiB, until its
//! client fingerprint is taken): its memory is a small record per connection, bounded by
//! `max_connections`.

pub mod client_hello;
pub mod procfs;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use agent_common::{ConnKey, Direction, PayloadPolicy, Role, data_flags};
use bytes::Bytes;
use foldhash::HashMap;

pub use crate::capture::Transport;
use crate::{
    capture::{CaptureEvent, ConnectionSeen, DataChunk},
    settings_format,
};

use self::client_hello::{ClientHelloAssembly, HelloProgress};

/// One value for each direction of a connection.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PerDirection<T> {
    /// What the traced process sent.
    pub egress: T,
    /// What the traced process received.
    pub ingress: T,
}

impl<T> PerDirection<T> {
    /// The value of `direction`, to change.
    pub fn get_mut(&mut self, direction: Direction) -> &mut T {
        match direction {
            Direction::Egress => &mut self.egress,
            Direction::Ingress => &mut self.ingress,
        }
    }
}

/// The `streams:` section of the configuration: limits of the connection table.
#[derive(Debug, Clone, Copy, serde::Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct StreamSettings {
    /// Connections tracked at once; the least recently active one is evicted beyond that.
    #[serde(deserialize_with = "settings_format::within::<_, _, 1, 4_194_304>")]
    pub max_connections: usize,
    /// Seconds without traffic after which a connection's state is dropped.
    #[serde(
        rename = "idle_timeout_secs",
        deserialize_with = "settings_format::secs_within::<_, 1, 31_536_000>",
        serialize_with = "settings_format::as_secs"
    )]
    pub idle_timeout: Duration,
}

impl Default for StreamSettings {
    fn default() -> Self {
        Self {
            max_connections: 65_536,
            idle_timeout: Duration::from_secs(300),
        }
    }
}

/// What is known of one connection, shared by all its chunks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    /// Unique within this agent run.
    pub id: u64,
    /// Process id.
    pub pid: u32,
    /// Socket fd in `pid`.
    pub fd: i32,
    /// The kernel socket the fd held (tells a reused fd apart); 0 when unknown.
    pub sock: u64,
    /// Which end the process is.
    pub role: Role,
    /// The connection was open before capture saw it start (neither `connect` nor `accept` was
    /// seen: it predates the agent, or its fd was passed or duplicated unseen), so its first
    /// captured bytes may be in the middle of its streams.
    pub opened_unseen: bool,
    /// This process's end, when known.
    pub local: Option<SocketAddr>,
    /// The other end, when known.
    pub peer: Option<SocketAddr>,
    /// Thread name of the process when the connection was first seen.
    pub comm: String,
    /// The JA4 fingerprint of the TLS client, on the serving end of a TLS connection whose
    /// ClientHello the kernel saw.
    pub tls_client_ja4: Option<Arc<str>>,
    /// What carries the bytes.
    pub transport: Transport,
}

/// A piece of one direction of one connection.
#[derive(Debug, Clone)]
pub struct StreamChunk {
    /// The connection.
    pub connection: Arc<Connection>,
    /// Which way the bytes went.
    pub direction: Direction,
    /// Position of the first byte in this direction of the connection.
    pub offset: u64,
    /// Bytes the call moved.
    pub len: u64,
    /// The first of those bytes, as captured (fewer than `len` when truncated).
    pub data: Bytes,
    /// Plaintext from an OpenSSL call.
    pub tls: bool,
    /// The bytes moved inside the kernel and none were captured (`sendfile`, `splice`).
    pub gap: bool,
    /// `CLOCK_MONOTONIC` time at the end of the call.
    pub ts_ns: u64,
    /// Thread id.
    pub tid: u32,
    /// Thread name.
    pub comm: String,
}

/// What applying capture events produced, appended to by [`StreamTable::apply`].
#[derive(Debug, Default)]
pub struct StreamOutput {
    /// New chunks, in capture order.
    pub chunks: Vec<StreamChunk>,
    /// Connections that ended: (connection id, `CLOCK_MONOTONIC` time of the end).
    pub ended: Vec<(u64, u64)>,
    /// Outbound connections whose `connect` the kernel saw, whatever they carry later (or
    /// not): analysis confirms server-side request forgery with them.
    pub connected: Vec<Arc<Connection>>,
    /// Work for the capture stage.
    pub requests: Vec<CaptureRequest>,
}

impl StreamOutput {
    /// Empties every list, keeping the allocations.
    pub fn clear(&mut self) {
        self.chunks.clear();
        self.ended.clear();
        self.connected.clear();
        self.requests.clear();
    }
}

/// Work the stream stage asks of the capture stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaptureRequest {
    /// Look again a little later, for libraries loaded after exec.
    RescanProcess(u32),
    /// Drop the kernel-side state of these fds.
    ForgetConnections(Vec<ConnKey>),
    /// Copy the payload of these sockets (fd, and the socket it held) as the policy says:
    /// nothing when nothing decodes them, whole calls for framed protocols.
    SetPayloadPolicies(Vec<(ConnKey, u64, PayloadPolicy)>),
}

struct ConnectionState {
    connection: Arc<Connection>,
    sock: u64,
    next_offset: PerDirection<u64>,
    last_seen_ns: u64,
    client_hello: ClientHelloAssembly,
}

/// Per-connection stream assembly.
pub struct StreamTable {
    settings: StreamSettings,
    /// Looked up for every event. Processes pick their fds, so the hash is seeded at random,
    /// and fast: SipHash was a measurable part of the stream thread.
    connections: HashMap<ConnKey, ConnectionState>,
    next_id: u64,
    evicted: u64,
}

impl StreamTable {
    /// An empty table.
    pub fn new(settings: StreamSettings) -> Self {
        Self {
            settings,
            connections: HashMap::default(),
            next_id: 1,
            evicted: 0,
        }
    }

    /// Connections tracked now.
    pub fn len(&self) -> usize {
        self.connections.len()
    }

    /// True when no connection is tracked.
    pub fn is_empty(&self) -> bool {
        self.connections.is_empty()
    }

    /// Connections evicted because the table was full.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Applies one capture event, appending what it produces to `out`.
    pub fn apply(&mut self, event: CaptureEvent, out: &mut StreamOutput) {
        match event {
            CaptureEvent::Data(data) => out.chunks.extend(self.chunk(data, &mut out.ended)),
            CaptureEvent::Connection(seen) => {
                if let Some(connected) = self.open(seen, &mut out.ended) {
                    out.connected.push(connected);
                }
            }
            CaptureEvent::Closed {
                tgid,
                fd,
                sock,
                ts_ns,
            } => {
                let key = ConnKey { tgid, fd };
                if self
                    .connections
                    .get(&key)
                    .is_some_and(|state| state.sock == sock)
                {
                    self.end(key, ts_ns, &mut out.ended);
                }
            }
            // The reader hands execs and libraries to the identity and capture stages directly.
            CaptureEvent::CodeLoaded(_) => {}
            CaptureEvent::Exit { tgid, ts_ns } => {
                let keys: Vec<ConnKey> = self
                    .connections
                    .keys()
                    .filter(|key| key.tgid == tgid)
                    .copied()
                    .collect();
                for key in &keys {
                    self.end(*key, ts_ns, &mut out.ended);
                }
                if !keys.is_empty() {
                    out.requests.push(CaptureRequest::ForgetConnections(keys));
                }
            }
        }
    }

    /// Removes a connection, reporting its end.
    fn end(&mut self, key: ConnKey, ts_ns: u64, ended: &mut Vec<(u64, u64)>) {
        if let Some(state) = self.connections.remove(&key) {
            ended.push((state.connection.id, ts_ns.max(state.last_seen_ns)));
        }
    }

    /// Forgets connections idle since before `now_ns - idle_timeout`, reporting their end;
    /// returns their keys so the kernel side can forget them too.
    pub fn reclaim_idle(&mut self, now_ns: u64, ended: &mut Vec<(u64, u64)>) -> Vec<ConnKey> {
        let cutoff = now_ns.saturating_sub(
            u64::try_from(self.settings.idle_timeout.as_nanos()).unwrap_or(u64::MAX),
        );
        let idle: Vec<ConnKey> = self
            .connections
            .iter()
            .filter(|(_, state)| state.last_seen_ns < cutoff)
            .map(|(key, _)| *key)
            .collect();
        for key in &idle {
            self.end(*key, now_ns, ended);
        }
        idle
    }

    /// Tracks a connection the kernel announced; returns it when this process connected it.
    fn open(
        &mut self,
        seen: ConnectionSeen,
        ended: &mut Vec<(u64, u64)>,
    ) -> Option<Arc<Connection>> {
        let key = ConnKey {
            tgid: seen.tgid,
            fd: seen.fd,
        };
        let stdio = seen.transport == Transport::Stdio;
        let role = match seen.role {
            Role::Unknown if !stdio => infer_role(seen.tgid, seen.local),
            known => known,
        };
        let connection = Connection {
            id: 0,
            pid: seen.tgid,
            fd: seen.fd,
            sock: 0,
            role,
            // The kernel saw neither `connect` nor `accept` on this fd.
            opened_unseen: seen.role == Role::Unknown,
            tls_client_ja4: None,
            transport: seen.transport,
            local: (!stdio).then(|| canonical(seen.local)),
            peer: (!stdio).then(|| canonical(seen.peer)),
            comm: seen.comm,
        };
        let connected = role == Role::Client && seen.role != Role::Unknown;
        self.insert(key, seen.sock, connection, seen.ts_ns, ended);
        self.connections
            .get(&key)
            .filter(|_| connected)
            .map(|state| Arc::clone(&state.connection))
    }

    /// Starts tracking a connection on `key`, ending the one it replaces (the fd now holds
    /// another socket) or the least recently active one when the table is full.
    fn insert(
        &mut self,
        key: ConnKey,
        sock: u64,
        mut connection: Connection,
        now_ns: u64,
        ended: &mut Vec<(u64, u64)>,
    ) {
        if self.connections.contains_key(&key) {
            self.end(key, now_ns, ended);
        } else if self.connections.len() >= self.settings.max_connections {
            self.evict_oldest(now_ns, ended);
        }
        connection.id = self.next_id;
        connection.sock = sock;
        self.next_id += 1;
        self.connections.insert(
            key,
            ConnectionState {
                connection: Arc::new(connection),
                sock,
                next_offset: PerDirection::default(),
                last_seen_ns: now_ns,
                client_hello: ClientHelloAssembly::default(),
            },
        );
    }

    fn evict_oldest(&mut self, now_ns: u64, ended: &mut Vec<(u64, u64)>) {
        let oldest = self
            .connections
            .iter()
            .min_by_key(|(_, state)| state.last_seen_ns)
            .map(|(key, _)| *key);
        if let Some(key) = oldest {
            self.end(key, now_ns, ended);
            self.evicted += 1;
        }
    }

    fn chunk(&mut self, data: DataChunk, ended: &mut Vec<(u64, u64)>) -> Option<StreamChunk> {
        let key = ConnKey {
            tgid: data.tgid,
            fd: data.fd,
        };
        let state = match self.connections.get_mut(&key) {
            // OpenSSL records carry sock 0 when the kernel side did not know the socket yet:
            // they belong to whatever the fd holds now.
            Some(state) if data.sock == 0 || state.sock == data.sock => state,
            _ => {
                // The connection record was lost (ring buffer full) or the state was
                // reclaimed: rebuild what /proc still knows.
                let connection = resolve_from_proc(data.tgid, data.fd, &data.comm);
                self.insert(key, data.sock, connection, data.ts_ns, ended);
                self.connections.get_mut(&key)?
            }
        };
        if data.flags & data_flags::TLS_HANDSHAKE != 0 {
            state.last_seen_ns = state.last_seen_ns.max(data.ts_ns);
            let progress = state
                .client_hello
                .add(data.offset.unwrap_or_default(), &data.payload);
            if let Some(HelloProgress::Fingerprint(ja4)) = progress
                && state.connection.role == Role::Server
            {
                // Before any plaintext: every chunk of the connection carries the fingerprint.
                state.connection = Arc::new(Connection {
                    tls_client_ja4: Some(ja4.into()),
                    ..Connection::clone(&state.connection)
                });
            }
            return None;
        }
        let next_offset = state.next_offset.get_mut(data.direction);
        // The kernel's count sees records lost on the way; it restarts when the kernel side
        // forgot the connection, so it is trusted only while it does not go backwards.
        let offset = match data.offset {
            Some(kernel) if kernel >= *next_offset => kernel,
            _ => *next_offset,
        };
        *next_offset = offset.saturating_add(data.len);
        state.last_seen_ns = state.last_seen_ns.max(data.ts_ns);
        Some(StreamChunk {
            connection: Arc::clone(&state.connection),
            direction: data.direction,
            offset,
            len: data.len,
            data: data.payload,
            tls: data.flags & data_flags::TLS != 0,
            gap: data.flags & data_flags::GAP != 0,
            ts_ns: data.ts_ns,
            tid: data.tid,
            comm: data.comm,
        })
    }
}

/// Role of a connection opened before the agent started: the serving end is the one whose
/// local port has a listener.
fn infer_role(pid: u32, local: SocketAddr) -> Role {
    let table = procfs::tcp_table(pid);
    if table.is_empty() {
        Role::Unknown
    } else if procfs::is_served_locally(&table, local) {
        Role::Server
    } else {
        Role::Client
    }
}

/// The address as the peer would write it: an IPv4 peer of a dual-stack IPv6 socket is
/// `::ffff:a.b.c.d` in the kernel, and `a.b.c.d` in every convention and every user's mind.
fn canonical(address: SocketAddr) -> SocketAddr {
    SocketAddr::new(address.ip().to_canonical(), address.port())
}

/// A connection rebuilt from `/proc` when its connection record is missing.
fn resolve_from_proc(pid: u32, fd: i32, comm: &str) -> Connection {
    let table = procfs::tcp_table(pid);
    let entry = procfs::socket_inode(pid, fd)
        .and_then(|inode| table.iter().find(|entry| entry.inode == inode));
    let role = match entry {
        Some(entry) if procfs::is_served_locally(&table, entry.local) => Role::Server,
        Some(_) => Role::Client,
        None => Role::Unknown,
    };
    Connection {
        id: 0,
        pid,
        fd,
        sock: 0,
        role,
        opened_unseen: true,
        tls_client_ja4: None,
        transport: Transport::Tcp,
        local: entry.map(|entry| canonical(entry.local)),
        peer: entry.map(|entry| canonical(entry.remote)),
        comm: comm.to_owned(),
    }
}

#[cfg(test)]
mod tests;
