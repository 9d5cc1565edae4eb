//! HTTP/2 (RFC 9113): an incremental decoder for one connection, turning its two byte streams
//! into one [`ApiCall`] per request stream.
//!
//! # Detection
//!
//! A connection is HTTP/2 when its first captured bytes are the client connection preface
//! (`PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`, the direction requests travel in), or, at offset 0,
//! the server's preface (a SETTINGS frame: requests travel the other way; over TLS the server
//! often writes it before it reads the client's). With prior knowledge (h2c) and after ALPN
//! `h2` (the TLS plaintext) alike. A role of `Unknown` is decided by direction, as HTTP/1 does.
//! After `Upgrade: h2c` (an HTTP/1.1 request answered by `101`) the HTTP/1 decoder hands the
//! connection over ([`Http2Decoder::after_upgrade`]): the client preface follows the request,
//! frames follow the `101`, and the upgrading request is stream 1, answered in HTTP/2.
//!
//! Joining a connection that was open before the agent started (the capture saw neither its
//! `connect` nor its `accept`, or its first chunk is past offset 0) needs the process's role,
//! and chunks that start with plausible frame headers: every complete frame header in the
//! chunk of a known type, with the reserved bit clear, a length up to 16 KiB, flags that type
//! defines and the stream id and length its type requires. Each direction of such a connection
//! starts framing at its first chunk if that chunk passes the same test, and is lost
//! otherwise. The HPACK dynamic tables are then unknown: each direction's decoder starts with
//! a table full of placeholder entries, behind which the entries it sees added take their
//! places exactly as in the peer's table (indices count from the newest). A field that refers
//! to a placeholder is unknown: it is left out and the call carries `headers_unknown` (an
//! unknown `:method` leaves the method empty; a block without `:method` at all is no request).
//! What decodes is therefore right, and as new entries push the placeholders out the table
//! becomes fully known again. Calls of a joined connection carry `after_resync`.
//!
//! # Frames and streams
//!
//! Each direction is cut into frames (9-byte header, reserved bit ignored). Header blocks
//! (HEADERS or PUSH_PROMISE and their CONTINUATIONs) go through that direction's
//! `loona-hpack` decoder, which keeps its dynamic table for the whole connection; PUSH_PROMISE
//! blocks update the table and make no call. DATA payloads, padding removed, are counted as
//! body bytes and the first `body_cap` of them kept. The first HEADERS of a client-initiated
//! stream in the request direction opens a call (`:method`, `:path`; `:authority` and other
//! pseudo-headers stay among the headers, where `host()` finds `:authority`); a later one
//! carries trailers. In the response direction, `1xx` headers are skipped, the first final
//! one is the response, a later one its trailers. A call goes out when both directions ended
//! the stream (END_STREAM), when either resets it (RST_STREAM), when the server's GOAWAY
//! excludes it, or at the connection end; what was not seen is flagged in its `gaps`.
//! SETTINGS, PING, WINDOW_UPDATE, PRIORITY and unknown frame types are skipped.
//!
//! `start_ns` is the time of the chunk holding the first byte of the request's HEADERS frame,
//! `end_ns` that of the chunk holding the end of the frame that ended the response (or the
//! request, when there is no response).
//!
//! # Bounds
//!
//! A header block larger than 64 KiB is dropped, and so is what a block decodes to beyond
//! 64 KiB of names and values; the call is then incomplete, and since a dropped block's
//! dynamic-table updates are lost, that direction's later blocks are not decoded either. At
//! most 256 streams are open per connection; HEADERS opening more are counted and their
//! streams ignored. Frames other than DATA and header blocks keep at most 8 bytes. The HPACK
//! dynamic table may not grow past 64 KiB (an update beyond is a decoding error).
//!
//! # Gaps
//!
//! Each direction expects its next chunk where the last one ended. Lost bytes (a chunk
//! starting further on, captured bytes short of the length, a `gap` chunk) inside the payload
//! of a DATA frame whose padding length is known are counted as body bytes of that stream,
//! whose body is marked incomplete. Anywhere else they lose the frame boundaries, which the
//! decoder never guesses: every open stream goes out incomplete (on the side of the direction
//! that lost them) and the decoder wants nothing more. Frames that break the protocol (a
//! CONTINUATION out of place, padding longer than its frame, a missing preface) do the same.
//! An HPACK decoding error makes that direction's header blocks unknown from then on (its
//! dynamic table can no longer be trusted): requests whose headers are unknown make no call,
//! responses whose headers are unknown leave their calls with `response_incomplete`.

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

#[doc(hidden)]
pub mod fuzzing;
mod stream;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use agent_common::{Direction, Role};

use self::stream::{Part, Streams};
use super::{Decoder, DecoderSettings, Orientation, opposite};
use crate::{
    calls::{ApiCall, Side},
    protocols::http::HttpRequest,
    streams::{Connection, StreamChunk},
};

/// The client connection preface.
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// A header block (all its fragments) kept for decoding at most.
const MAX_BLOCK: usize = 64 * 1024;
/// Frame payload bytes kept for frames other than DATA and header blocks: RST_STREAM's error
/// code and GOAWAY's last stream id are all that is read of them.
const MAX_SMALL_FRAME: usize = 8;
/// Largest frame length a plausible frame header (joining mid-way) may announce: the default
/// SETTINGS_MAX_FRAME_SIZE, which most peers keep.
const MAX_PLAUSIBLE_LEN: u32 = 16 * 1024;

/// Frame types (RFC 9113 section 6).
mod kind {
    pub const DATA: u8 = 0x0;
    pub const HEADERS: u8 = 0x1;
    pub const PRIORITY: u8 = 0x2;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const PUSH_PROMISE: u8 = 0x5;
    pub const PING: u8 = 0x6;
    pub const GOAWAY: u8 = 0x7;
    pub const WINDOW_UPDATE: u8 = 0x8;
    pub const CONTINUATION: u8 = 0x9;
}

/// Frame flags.
mod flag {
    pub const END_STREAM: u8 = 0x1;
    pub const ACK: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;
    pub const PADDED: u8 = 0x8;
    pub const PRIORITY: u8 = 0x20;
}

/// An HTTP/1.1 request that switched its connection to HTTP/2 (`Upgrade: h2c` answered by
/// `101`), handed over by the HTTP/1 decoder to [`Http2Decoder::after_upgrade`].
#[derive(Debug)]
pub struct H2cUpgrade {
    /// The connection.
    pub connection: Arc<Connection>,
    /// The direction requests travel in.
    pub requests: Direction,
    /// Which end of the exchanges the traced process is.
    pub side: Side,
    /// The upgrading request, complete.
    pub request: HttpRequest,
    /// Time of its first byte.
    pub start_ns: u64,
    /// Time of its last byte.
    pub request_end_ns: u64,
    /// It travelled over TLS.
    pub tls: bool,
}

/// What [`detect`] found out about a connection: it carries HTTP/2, which way, and whether
/// the capture joined it mid-way.
#[derive(Debug, Clone)]
pub struct Detected {
    /// Which way its exchanges go.
    pub orientation: Orientation,
    /// The capture joined the connection after its preface.
    pub joined: bool,
}

/// A decoder for the connection whose first chunk with bytes is `chunk`, if it is HTTP/2:
/// the connection protocol table's entry.
pub fn decoder(chunk: &StreamChunk, settings: DecoderSettings) -> Option<Box<dyn Decoder>> {
    detect(chunk)
        .map(|detected| Box::new(Http2Decoder::new(detected, settings)) as Box<dyn Decoder>)
}

/// Recognises HTTP/2 from the first captured bytes of a connection (see the module
/// documentation): the client preface, the server preface at offset 0, or, past offset 0 and
/// with a known role, plausible frame headers.
pub fn detect(chunk: &StreamChunk) -> Option<Detected> {
    let data: &[u8] = &chunk.data;
    let mid_stream = may_be_mid_stream(chunk);
    let (requests, joined) = if starts_with_preface(data) {
        (chunk.direction, false)
    } else if !mid_stream && server_preface(data) {
        (opposite(chunk.direction), false)
    } else if mid_stream && plausible_frames(data) {
        let requests = match chunk.connection.role {
            Role::Client => Direction::Egress,
            Role::Server => Direction::Ingress,
            // Both directions carry the same frame types: a header block tells them apart.
            Role::Unknown => match first_block_side(data)? {
                Part::Request => chunk.direction,
                Part::Response => opposite(chunk.direction),
            },
        };
        (requests, true)
    } else {
        return None;
    };
    Some(Detected {
        orientation: Orientation::new(chunk, requests),
        joined,
    })
}

/// Whether `data` starts with the client preface (`PRI * HTTP/2.0` at least: no HTTP/1
/// request line or other protocol starts so).
fn starts_with_preface(data: &[u8]) -> bool {
    let n = data.len().min(PREFACE.len());
    n >= 14 && data.get(..n) == PREFACE.get(..n)
}

/// Whether the chunk, the first of its direction, may start in the middle of the stream: it
/// starts past offset 0, or the connection was open before capture saw it start (its offsets
/// count from the agent's first sight), unless it starts with the client preface.
fn may_be_mid_stream(chunk: &StreamChunk) -> bool {
    chunk.offset > 0 || (chunk.connection.opened_unseen && !starts_with_preface(&chunk.data))
}

/// A frame header.
#[derive(Debug, Clone, Copy)]
struct FrameHeader {
    len: u32,
    kind: u8,
    flags: u8,
    stream: u32,
}

impl FrameHeader {
    fn parse(bytes: &[u8; 9]) -> Self {
        let [l0, l1, l2, kind, flags, s0, s1, s2, s3] = *bytes;
        Self {
            len: u32::from_be_bytes([0, l0, l1, l2]),
            kind,
            flags,
            // The reserved bit means nothing.
            stream: u32::from_be_bytes([s0, s1, s2, s3]) & 0x7fff_ffff,
        }
    }

    fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    /// Whether this header looks like one a peer would send: a known type with only its own
    /// flags, the reserved bit clear (`raw_stream`), and the stream and length its type needs.
    fn plausible(&self, raw_stream: u32) -> bool {
        use self::{flag::*, kind::*};
        if raw_stream & 0x8000_0000 != 0 || self.len > MAX_PLAUSIBLE_LEN {
            return false;
        }
        let on_stream = self.stream != 0;
        let (flags, ok) = match self.kind {
            DATA => (END_STREAM | PADDED, on_stream),
            HEADERS => (
                END_STREAM | END_HEADERS | PADDED | flag::PRIORITY,
                on_stream,
            ),
            kind::PRIORITY => (0, on_stream && self.len == 5),
            RST_STREAM => (0, on_stream && self.len == 4),
            SETTINGS => (
                ACK,
                !on_stream && self.len.is_multiple_of(6) && (!self.has(ACK) || self.len == 0),
            ),
            PING => (ACK, !on_stream && self.len == 8),
            GOAWAY => (0, !on_stream && self.len >= 8),
            WINDOW_UPDATE => (0, self.len == 4),
            CONTINUATION => (END_HEADERS, on_stream),
            _ => return false,
        };
        ok && self.flags & !flags == 0
    }
}

/// The first 9 bytes of `data` as a frame header, with the raw stream word.
fn frame_header(data: &[u8]) -> Option<(FrameHeader, u32)> {
    let bytes: &[u8; 9] = data.get(..9)?.try_into().ok()?;
    let raw = bytes
        .get(5..9)
        .and_then(|word| word.try_into().ok())
        .map_or(0, u32::from_be_bytes);
    Some((FrameHeader::parse(bytes), raw))
}

/// A server connection preface: a SETTINGS frame (not an ACK) on stream 0.
fn server_preface(data: &[u8]) -> bool {
    frame_header(data).is_some_and(|(header, raw)| {
        header.kind == kind::SETTINGS && !header.has(flag::ACK) && header.plausible(raw)
    })
}

/// Which way the first whole HEADERS frame in `data` goes, from its first pseudo-header
/// (`:method` and the like for a request, `:status` for a response), decoded against a table of
/// placeholders as after a join. `None` without such a frame or field.
fn first_block_side(data: &[u8]) -> Option<Part> {
    let mut rest = data;
    let block = loop {
        let (header, _) = frame_header(rest)?;
        let end = 9usize.checked_add(header.len as usize)?;
        let payload = rest.get(9..end)?;
        if header.kind == kind::HEADERS {
            break fragment(payload, &header)?;
        }
        rest = rest.get(end..)?;
    };
    let mut hpack = joined_hpack_decoder()?;
    let mut side = None;
    // A reference past the placeholders ends decoding; a pseudo-header found before counts.
    let _ = hpack.decode_with_cb(block, |name, _| {
        if side.is_none() && name.first() == Some(&b':') {
            side = Some(if &name[..] == b":status" {
                Part::Response
            } else {
                Part::Request
            });
        }
    });
    side
}

/// An HPACK decoder for one direction, its table bounded by [`MAX_BLOCK`].
fn hpack_decoder() -> loona_hpack::Decoder<'static> {
    let mut hpack = loona_hpack::Decoder::new();
    hpack.set_max_allowed_table_size(MAX_BLOCK);
    hpack
}

/// An HPACK decoder for a connection joined mid-way: its table full of placeholder entries, as
/// many as fit in the default table size (4,096 bytes, 33 bytes each). See
/// [`DirectionReader::join`].
fn joined_hpack_decoder() -> Option<loona_hpack::Decoder<'static>> {
    let mut hpack = hpack_decoder();
    let mut placeholders = Vec::with_capacity(JOINED_PLACEHOLDERS * 4);
    for _ in 0..JOINED_PLACEHOLDERS {
        // Literal with incremental indexing, new name: the 1-byte name, an empty value.
        placeholders.extend_from_slice(&[0x40, 0x01]);
        placeholders.extend_from_slice(stream::UNKNOWN_ENTRY_NAME);
        placeholders.push(0x00);
    }
    hpack
        .decode_with_cb(&placeholders, |_, _| {})
        .ok()
        .map(|()| hpack)
}

/// Whether `data` starts at a frame boundary, as far as it can tell: every frame header that
/// is whole in `data` (one at least) is plausible, and the first is a frame that starts or
/// carries traffic (PRIORITY, PUSH_PROMISE and CONTINUATION alone tell too little).
fn plausible_frames(data: &[u8]) -> bool {
    let Some((first, _)) = frame_header(data) else {
        return false;
    };
    if !matches!(
        first.kind,
        kind::DATA
            | kind::HEADERS
            | kind::SETTINGS
            | kind::WINDOW_UPDATE
            | kind::PING
            | kind::RST_STREAM
            | kind::GOAWAY
    ) {
        return false;
    }
    let mut rest = data;
    while let Some((header, raw)) = frame_header(rest) {
        if !header.plausible(raw) {
            return false;
        }
        let next = 9usize.saturating_add(header.len as usize);
        match rest.get(next..) {
            Some(after) => rest = after,
            None => break,
        }
    }
    true
}

/// Where a direction is in its byte stream.
#[derive(Debug)]
enum Read {
    /// The client preface, of which this many bytes were seen.
    Preface(usize),
    /// A frame header, of which `header_buf` holds the bytes seen.
    Header,
    /// The payload of a frame other than DATA: this many bytes are left, and the first bytes
    /// (as many as the frame keeps) go to `payload`.
    Payload { frame: FrameHeader, left: u32 },
    /// The padding length byte of a padded DATA frame.
    DataPadLength { frame: FrameHeader, left: u32 },
    /// The data of a DATA frame, then its padding.
    Data {
        frame: FrameHeader,
        data_left: u32,
        pad_left: u32,
    },
    /// Frame boundaries are lost.
    Lost,
}

/// A header block waiting for its CONTINUATION frames.
#[derive(Debug)]
struct PendingBlock {
    stream: u32,
    end_stream: bool,
    push: bool,
    start_ns: u64,
    fragments: Vec<u8>,
    too_large: bool,
}

/// One direction of the connection.
struct DirectionReader {
    part: Part,
    /// Where the next chunk is expected; `None` before the first.
    expected: Option<u64>,
    read: Read,
    header_buf: [u8; 9],
    header_len: usize,
    payload: Vec<u8>,
    /// Time of the chunk holding the current frame's first byte.
    frame_start_ns: u64,
    block: Option<PendingBlock>,
    hpack: loona_hpack::Decoder<'static>,
    /// An HPACK error, or a block that was dropped: the dynamic table is unknown.
    hpack_lost: bool,
    joined: bool,
}

/// What reading a direction did to the connection.
enum Outcome {
    Fine,
    /// Frame boundaries are lost.
    Lost,
}

impl DirectionReader {
    fn new(part: Part, joined: bool) -> Self {
        let mut reader = Self {
            part,
            expected: None,
            read: Read::Header,
            header_buf: [0; 9],
            header_len: 0,
            payload: Vec::new(),
            frame_start_ns: 0,
            block: None,
            hpack: hpack_decoder(),
            hpack_lost: false,
            joined: false,
        };
        if joined {
            reader.join();
        }
        reader
    }

    /// Starts reading a connection whose earlier bytes were not seen. The dynamic table the
    /// peer's encoder refers to is unknown, so it is filled with placeholders: the entries the
    /// decoder sees added go in front of them, exactly where the peer's own are, and a field
    /// that refers past those lands on a placeholder and is reported unknown rather than
    /// guessed. Once enough new entries were added, the placeholders are evicted as the old
    /// entries were. A reference past every placeholder (the old entries were smaller than 33
    /// bytes, or the table was larger than the default) is a decoding error, handled as any
    /// other.
    fn join(&mut self) {
        match joined_hpack_decoder() {
            Some(hpack) => self.hpack = hpack,
            None => self.hpack_lost = true,
        }
        self.joined = true;
    }

    /// Reads on from stream offset `offset` (its first chunk may start before it), in state
    /// `read`.
    fn resume_at(mut self, offset: u64, read: Read) -> Self {
        self.expected = Some(offset);
        self.read = read;
        self
    }

    fn feed(&mut self, chunk: &StreamChunk, streams: &mut Streams) -> Outcome {
        if matches!(self.read, Read::Lost) {
            return Outcome::Lost;
        }
        let mut data: &[u8] = &chunk.data;
        if chunk.gap {
            data = &[];
        }
        match self.expected {
            None => {
                let mid_stream = may_be_mid_stream(chunk);
                if !mid_stream && self.part == Part::Request {
                    self.read = Read::Preface(0);
                } else if mid_stream && !plausible_frames(data) {
                    self.read = Read::Lost;
                    return Outcome::Lost;
                } else if mid_stream {
                    self.join();
                    streams.joined = true;
                }
            }
            Some(expected) if chunk.offset > expected => {
                if let Outcome::Lost = self.lose(chunk.offset - expected, chunk.ts_ns, streams) {
                    return Outcome::Lost;
                }
            }
            Some(expected) => {
                // Bytes already seen (an overlap): only the new ones count.
                let seen = usize::try_from(expected - chunk.offset).unwrap_or(usize::MAX);
                data = data.get(seen..).unwrap_or_default();
            }
        }
        let end = chunk.offset.saturating_add(chunk.len);
        self.expected = Some(end.max(self.expected.unwrap_or(0)));
        if let Outcome::Lost = self.consume(data, chunk.ts_ns, streams) {
            self.read = Read::Lost;
            return Outcome::Lost;
        }
        let captured_end = chunk
            .offset
            .saturating_add(chunk.data.len() as u64)
            .min(end);
        let lost = if chunk.gap {
            chunk.len
        } else {
            end - captured_end
        };
        if lost > 0 {
            return self.lose(lost, chunk.ts_ns, streams);
        }
        Outcome::Fine
    }

    /// `lost` bytes were not captured: fine only inside a DATA frame's known payload.
    fn lose(&mut self, lost: u64, ts_ns: u64, streams: &mut Streams) -> Outcome {
        if let Read::Data {
            frame,
            data_left,
            pad_left,
        } = &mut self.read
            && lost <= u64::from(*data_left) + u64::from(*pad_left)
        {
            let in_data = lost.min(u64::from(*data_left));
            *data_left -= in_data as u32;
            *pad_left -= (lost - in_data) as u32;
            let frame = *frame;
            streams.on_data(self.part, frame.stream, &[], in_data, ts_ns);
            if *data_left == 0 && *pad_left == 0 {
                self.read = Read::Header;
                self.end_data(frame, ts_ns, streams);
            }
            return Outcome::Fine;
        }
        self.read = Read::Lost;
        Outcome::Lost
    }

    /// Reads `data`, which follows what was read before without a hole.
    fn consume(&mut self, mut data: &[u8], ts_ns: u64, streams: &mut Streams) -> Outcome {
        while !data.is_empty() {
            match &mut self.read {
                Read::Lost => return Outcome::Lost,
                Read::Preface(seen) => {
                    let want = PREFACE.get(*seen..).unwrap_or_default();
                    let n = want.len().min(data.len());
                    if data.get(..n) != want.get(..n) {
                        return Outcome::Lost;
                    }
                    *seen += n;
                    data = data.get(n..).unwrap_or_default();
                    if *seen == PREFACE.len() {
                        self.read = Read::Header;
                    }
                }
                Read::Header => {
                    if self.header_len == 0 {
                        self.frame_start_ns = ts_ns;
                    }
                    let n = (9 - self.header_len).min(data.len());
                    if let (Some(to), Some(from)) = (
                        self.header_buf
                            .get_mut(self.header_len..self.header_len + n),
                        data.get(..n),
                    ) {
                        to.copy_from_slice(from);
                    }
                    self.header_len += n;
                    data = data.get(n..).unwrap_or_default();
                    if self.header_len == 9 {
                        self.header_len = 0;
                        let frame = FrameHeader::parse(&self.header_buf);
                        if let Outcome::Lost = self.start_frame(frame, ts_ns, streams) {
                            return Outcome::Lost;
                        }
                    }
                }
                Read::Payload { frame, left } => {
                    let frame = *frame;
                    let n = (*left as usize).min(data.len());
                    *left -= n as u32;
                    let left = *left;
                    let keep = self.keep(&frame).saturating_sub(self.payload.len()).min(n);
                    self.payload
                        .extend_from_slice(data.get(..keep).unwrap_or_default());
                    data = data.get(n..).unwrap_or_default();
                    if left == 0 {
                        self.read = Read::Header;
                        if let Outcome::Lost = self.end_frame(frame, ts_ns, streams) {
                            return Outcome::Lost;
                        }
                    }
                }
                Read::DataPadLength { frame, left } => {
                    let (frame, left) = (*frame, *left);
                    let pad = data.first().copied().unwrap_or(0);
                    data = data.get(1..).unwrap_or_default();
                    let left = left - 1;
                    if u32::from(pad) > left {
                        return Outcome::Lost;
                    }
                    self.read = Read::Data {
                        frame,
                        data_left: left - u32::from(pad),
                        pad_left: u32::from(pad),
                    };
                    self.maybe_end_data(ts_ns, streams);
                }
                Read::Data {
                    frame,
                    data_left,
                    pad_left,
                } => {
                    let frame = *frame;
                    let n = (*data_left as usize).min(data.len());
                    *data_left -= n as u32;
                    let pad = (*pad_left as usize).min(data.len() - n);
                    *pad_left -= pad as u32;
                    if n > 0 {
                        streams.on_data(
                            self.part,
                            frame.stream,
                            data.get(..n).unwrap_or_default(),
                            0,
                            ts_ns,
                        );
                    }
                    data = data.get(n + pad..).unwrap_or_default();
                    self.maybe_end_data(ts_ns, streams);
                }
            }
        }
        Outcome::Fine
    }

    /// Payload bytes kept of a frame that is not DATA.
    fn keep(&self, frame: &FrameHeader) -> usize {
        match frame.kind {
            kind::HEADERS | kind::PUSH_PROMISE | kind::CONTINUATION => MAX_BLOCK + 256,
            _ => MAX_SMALL_FRAME,
        }
    }

    fn start_frame(&mut self, frame: FrameHeader, ts_ns: u64, streams: &mut Streams) -> Outcome {
        // Between a header block's first frame and its last, only its CONTINUATIONs may come.
        if self.block.is_some() != (frame.kind == kind::CONTINUATION) {
            return Outcome::Lost;
        }
        self.payload.clear();
        // A large header block's buffer is not kept for the connection's lifetime.
        if self.payload.capacity() > 4 * 1024 {
            self.payload = Vec::new();
        }
        if frame.kind == kind::DATA {
            if frame.has(flag::PADDED) {
                if frame.len == 0 {
                    return Outcome::Lost;
                }
                self.read = Read::DataPadLength {
                    frame,
                    left: frame.len,
                };
            } else {
                self.read = Read::Data {
                    frame,
                    data_left: frame.len,
                    pad_left: 0,
                };
                self.maybe_end_data(ts_ns, streams);
            }
            return Outcome::Fine;
        }
        if frame.len == 0 {
            self.read = Read::Header;
            return self.end_frame(frame, ts_ns, streams);
        }
        self.read = Read::Payload {
            frame,
            left: frame.len,
        };
        Outcome::Fine
    }

    fn maybe_end_data(&mut self, ts_ns: u64, streams: &mut Streams) {
        if let Read::Data {
            frame,
            data_left: 0,
            pad_left: 0,
        } = self.read
        {
            self.read = Read::Header;
            self.end_data(frame, ts_ns, streams);
        }
    }

    fn end_data(&mut self, frame: FrameHeader, ts_ns: u64, streams: &mut Streams) {
        streams.touch(self.part, frame.stream, ts_ns);
        if frame.has(flag::END_STREAM) {
            streams.end_stream(self.part, frame.stream, ts_ns);
        }
    }

    /// A frame other than DATA ended; `self.payload` holds its first bytes.
    fn end_frame(&mut self, frame: FrameHeader, ts_ns: u64, streams: &mut Streams) -> Outcome {
        let kept = frame.len as usize <= self.payload.len();
        match frame.kind {
            kind::HEADERS | kind::PUSH_PROMISE => {
                let push = frame.kind == kind::PUSH_PROMISE;
                let piece = if kept {
                    match fragment(&self.payload, &frame) {
                        Some(piece) => Some(piece),
                        None => return Outcome::Lost,
                    }
                } else {
                    None
                };
                let mut block = PendingBlock {
                    stream: frame.stream,
                    end_stream: !push && frame.has(flag::END_STREAM),
                    push,
                    start_ns: self.frame_start_ns,
                    fragments: Vec::new(),
                    too_large: piece.is_none(),
                };
                if let Some(piece) = piece {
                    block.fragments.extend_from_slice(piece);
                }
                self.block = Some(block);
            }
            kind::CONTINUATION => {
                let Some(block) = &mut self.block else {
                    return Outcome::Lost;
                };
                if block.stream != frame.stream {
                    return Outcome::Lost;
                }
                let fits = block.fragments.len().saturating_add(self.payload.len()) <= MAX_BLOCK;
                if kept && fits && !block.too_large {
                    block.fragments.extend_from_slice(&self.payload);
                } else {
                    block.too_large = true;
                    block.fragments = Vec::new();
                }
            }
            kind::RST_STREAM => {
                streams.reset(frame.stream, ts_ns);
                return Outcome::Fine;
            }
            kind::GOAWAY => {
                if self.part == Part::Response
                    && let Some(word) = self.payload.get(..4)
                {
                    let last = word.try_into().map_or(u32::MAX, u32::from_be_bytes) & 0x7fff_ffff;
                    streams.go_away(last, ts_ns);
                }
                return Outcome::Fine;
            }
            _ => return Outcome::Fine,
        }
        if frame.has(flag::END_HEADERS) {
            self.end_block(ts_ns, streams);
        }
        Outcome::Fine
    }

    /// A header block is whole: decode it and hand it to its stream.
    fn end_block(&mut self, ts_ns: u64, streams: &mut Streams) {
        let Some(block) = self.block.take() else {
            return;
        };
        if block.too_large {
            self.hpack_lost = true;
        }
        let fields = if self.hpack_lost {
            None
        } else {
            let mut fields = stream::Fields::default();
            match self
                .hpack
                .decode_with_cb(&block.fragments, |name, value| fields.push(&name, &value))
            {
                Ok(()) => Some(fields),
                Err(_) => {
                    self.hpack_lost = true;
                    None
                }
            }
        };
        if block.push {
            return;
        }
        streams.on_headers(
            self.part,
            block.stream,
            fields,
            block.end_stream,
            block.start_ns,
            ts_ns,
        );
    }
}

/// The header block fragment of a whole HEADERS or PUSH_PROMISE payload: padding, priority
/// and promised stream id removed. `None` when the padding does not fit.
fn fragment<'a>(payload: &'a [u8], frame: &FrameHeader) -> Option<&'a [u8]> {
    let (pad, mut rest) = if frame.has(flag::PADDED) {
        let (&pad, rest) = payload.split_first()?;
        (usize::from(pad), rest)
    } else {
        (0, payload)
    };
    let skip = match frame.kind {
        kind::PUSH_PROMISE => 4,
        _ if frame.has(flag::PRIORITY) => 5,
        _ => 0,
    };
    rest = rest.get(skip..)?;
    rest.get(..rest.len().checked_sub(pad)?)
}

/// Placeholder entries a joined connection's HPACK tables start with: 4,096 bytes (the default
/// table size) of 33-byte entries.
const JOINED_PLACEHOLDERS: usize = 4096 / 33;

/// The HTTP/2 decoder of one connection.
pub struct Http2Decoder {
    requests_direction: Direction,
    requests: DirectionReader,
    responses: DirectionReader,
    streams: Streams,
    ended: bool,
}

impl Http2Decoder {
    /// A decoder for the connection `detected` describes, fed from its first chunk on.
    pub fn new(detected: Detected, settings: DecoderSettings) -> Self {
        Self {
            requests_direction: detected.orientation.requests,
            requests: DirectionReader::new(Part::Request, detected.joined),
            responses: DirectionReader::new(Part::Response, detected.joined),
            streams: Streams::new(
                detected.orientation.connection,
                detected.orientation.side,
                settings.body_cap,
                detected.joined,
            ),
            ended: false,
        }
    }

    /// A decoder for a connection that HTTP/1.1 upgraded to h2c: HTTP/2 starts at
    /// `offsets.0` in the request direction (with the client preface) and at `offsets.1` in the
    /// response direction; `upgrade` becomes stream 1, whose response comes as HTTP/2.
    pub fn after_upgrade(
        upgrade: H2cUpgrade,
        offsets: (u64, u64),
        settings: DecoderSettings,
    ) -> Self {
        let mut streams = Streams::new(upgrade.connection, upgrade.side, settings.body_cap, false);
        streams.tls = upgrade.tls;
        streams.open_upgraded(upgrade.request, upgrade.start_ns, upgrade.request_end_ns);
        Self {
            requests_direction: upgrade.requests,
            requests: DirectionReader::new(Part::Request, false)
                .resume_at(offsets.0, Read::Preface(0)),
            responses: DirectionReader::new(Part::Response, false)
                .resume_at(offsets.1, Read::Header),
            streams,
            ended: false,
        }
    }

    /// Streams open now, for the bounds tests.
    #[cfg(test)]
    fn open_streams(&self) -> usize {
        self.streams.open()
    }
}

impl Decoder for Http2Decoder {
    fn on_chunk(&mut self, chunk: &StreamChunk, calls: &mut Vec<ApiCall>) {
        if self.ended {
            return;
        }
        self.streams.tls |= chunk.tls;
        let reader = if chunk.direction == self.requests_direction {
            &mut self.requests
        } else {
            &mut self.responses
        };
        let outcome = reader.feed(chunk, &mut self.streams);
        if let Outcome::Lost = outcome {
            let part = reader.part;
            self.streams.lose(part, calls);
            self.ended = true;
        }
        self.streams.take_finished(calls);
    }

    fn on_end(&mut self, _ts_ns: u64, calls: &mut Vec<ApiCall>) {
        if !self.ended {
            self.streams.finish(calls);
        }
        self.ended = true;
    }

    fn wants_more(&self) -> bool {
        !self.ended
    }

    fn is_framed(&self) -> bool {
        true
    }
}
