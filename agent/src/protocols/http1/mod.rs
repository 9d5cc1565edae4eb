//! HTTP/1.0 and HTTP/1.1: an incremental decoder for one connection, turning its two byte
//! streams into [`ApiCall`]s.
//!
//! # Messages
//!
//! Heads are parsed with `httparse` (lenient options) once their blank line has arrived. Keep-
//! alive and pipelining are supported: requests queue up and responses are paired with them
//! first-in-first-out. Bodies are delimited as RFC 9112 section 6 says: a request has a body
//! only with `Content-Length` or chunked `Transfer-Encoding`; a response to `HEAD`, a 1xx, `204`
//! and `304` has none; otherwise chunked coding, then `Content-Length`, then the connection end
//! delimit it. Chunk extensions are ignored, trailers are kept. Interim responses (`100
//! Continue`) are skipped: the request keeps waiting for its final response. A `101`, or a 2xx
//! to `CONNECT`, switches protocols: that call goes out with `upgraded`, every other one as far
//! as it was seen, and the decoder wants nothing more. A complete request with `Upgrade: h2c`
//! answered `101` with `Upgrade: h2c` makes no call here: the decoder hands the connection and
//! that request over to HTTP/2 (`Decoder::take_successor`), where it is stream 1.
//!
//! A call goes out when both its request and its response have ended (responses may end first,
//! e.g. an early `413`), or when it is given up on, or at the connection end. `start_ns` is the
//! time of the chunk holding the first request byte, `end_ns` that of the chunk holding the last
//! response byte (the last request byte when there is no response).
//!
//! # Bounds
//!
//! A head or trailer section longer than 64 KiB and a chunk-size line longer than 4 KiB are
//! parse failures. A body keeps at most `body_cap` bytes (its size counts every payload byte,
//! lost ones included). At most 64 requests wait for a response with their content; beyond
//! that the oldest goes out with `response_missing` and its response, when it comes, is
//! skipped (at most 1024 such skips are remembered; beyond that every waiting request goes out
//! as when responses are lost). Every byte is looked at a bounded number of times.
//!
//! # Gaps and resynchronisation
//!
//! Each direction expects the next chunk at the offset where the last one ended (the first
//! chunk sets it). Bytes are lost when a chunk starts past that offset, when a chunk captured
//! fewer bytes than it moved (the rest of it), and for a `gap` chunk (all of it). Lost bytes:
//!
//! - inside a body of known remaining length (`Content-Length`, or the data of one chunk) are
//!   consumed as body bytes: the message goes on, its body marked incomplete;
//! - inside a body delimited by the connection end are counted;
//! - anywhere else (a head, between messages, chunked framing) lose the message boundaries of
//!   that direction. The message in progress, if its head was parsed, ends there as cut (a
//!   request becomes a call with `request_incomplete`, a response still pairs, with
//!   `response_incomplete`), and the direction resynchronises.
//!
//! A framing error (a start line or head `httparse` rejects, a bad chunk-size line, a head too
//! large, contradictory `Content-Length`, a request transfer coding other than chunked) loses
//! the boundaries the same way.
//!
//! Resynchronising, a direction looks at the start of each line, of each chunk (programs
//! usually write a message with calls of its own) and right after a gap for a start line: a known method and a request line `httparse` accepts on the request
//! side, `HTTP/1.x NNN` on the response side. Bytes skipped meanwhile are dropped. The first
//! message found carries `gaps.after_resync` into its call (for a response, the first final
//! response kept).
//!
//! Pairing rules, which never pair a response with a request it may not answer:
//!
//! 1. When the request direction loses its boundaries, requests may have been lost entirely.
//!    The requests already queued keep their place, since any lost request came after them and
//!    responses come in request order. The next request parsed gets a barrier: a response that
//!    started (first byte time) before that request's first byte answers a lost request, and is
//!    dropped. The first response starting at or after it is paired with it.
//! 2. When the response direction loses its boundaries, any number of responses may have been
//!    lost, so order no longer tells which request the next response answers: every request
//!    waiting for a response goes out with `response_missing` (the oldest one's response is the
//!    one that was in the lost bytes), and the next request parsed gets a barrier as in 1.
//! 3. A response arriving while no request waits (e.g. the capture joined the connection in
//!    the middle, or it answers a request reported without response) is parsed to find its end
//!    and dropped.
//! 4. A direction whose first chunk does not start at offset 0 joined mid-stream: nothing
//!    before was expected, so this is no loss of sync (no `after_resync`), but whole messages
//!    went by unseen. On the request side the first request gets a barrier as in 1; on the
//!    response side the requests already waiting go out with `response_missing` and the next
//!    request gets a barrier, as in 2. Either direction starts by resynchronising when its
//!    first bytes are not a message start.
//!
//! Limitation: with pipelining, a response to a lost request that started after the next
//! visible request was sent passes the barrier and is paired with that request. Without
//! pipelining a client sends a request only after the previous response, so this cannot
//! happen.

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod body;
#[doc(hidden)]
pub mod fuzzing;
mod head;
mod message;
mod pairing;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use agent_common::Direction;

use self::{
    head::{RequestKind, ResponseKind, starts_message},
    message::MessageParser,
    pairing::{Pairing, Requests, Responses},
};
use super::{
    Decoder, DecoderSettings, Orientation,
    http2::{H2cUpgrade, Http2Decoder},
    opposite,
};
use crate::{calls::ApiCall, streams::StreamChunk};

/// A decoder for the connection whose first chunk with bytes is `chunk`, if it is HTTP/1.x:
/// the connection protocol table's entry.
pub fn decoder(chunk: &StreamChunk, settings: DecoderSettings) -> Option<Box<dyn Decoder>> {
    detect(chunk)
        .map(|detected| Box::new(Http1Decoder::new(detected, settings)) as Box<dyn Decoder>)
}

/// Recognises HTTP/1 from the first captured bytes of a connection: a request line (a known
/// method, and a valid line when it is complete) or a status line (`HTTP/1.0 ` or `HTTP/1.1 `,
/// and then requests travel the other way). `None` for anything else, such as a TLS handshake
/// or the HTTP/2 preface.
pub fn detect(chunk: &StreamChunk) -> Option<Orientation> {
    let requests = if starts_message::<RequestKind>(&chunk.data) {
        chunk.direction
    } else if starts_message::<ResponseKind>(&chunk.data) {
        opposite(chunk.direction)
    } else {
        return None;
    };
    Some(Orientation::new(chunk, requests))
}

/// The HTTP/1 decoder of one connection.
pub struct Http1Decoder {
    requests_direction: Direction,
    requests: MessageParser<RequestKind>,
    responses: MessageParser<ResponseKind>,
    pairing: Pairing,
    ended: bool,
    /// Kept for the HTTP/2 decoder an h2c upgrade hands over to.
    settings: DecoderSettings,
}

impl Http1Decoder {
    /// A decoder for the connection `detected` describes, fed from its first chunk on.
    pub fn new(detected: Orientation, settings: DecoderSettings) -> Self {
        Self {
            requests_direction: detected.requests,
            requests: MessageParser::new(settings.body_cap),
            responses: MessageParser::new(settings.body_cap),
            pairing: Pairing::new(detected.connection, detected.side),
            ended: false,
            settings,
        }
    }

    /// Bytes and queue entries held now, for the bounds tests.
    #[cfg(test)]
    fn retained(&self) -> (usize, usize) {
        (
            self.requests
                .retained()
                .saturating_add(self.responses.retained()),
            self.pairing.queued(),
        )
    }
}

impl Decoder for Http1Decoder {
    fn on_chunk(&mut self, chunk: &StreamChunk, calls: &mut Vec<ApiCall>) {
        if !self.wants_more() {
            return;
        }
        let pairing = &mut self.pairing;
        if chunk.direction == self.requests_direction {
            self.requests.feed(chunk, &mut Requests { pairing, calls });
        } else {
            self.responses
                .feed(chunk, &mut Responses { pairing, calls });
        }
        if self.pairing.upgraded() {
            self.requests.stop();
            self.responses.stop();
        }
    }

    fn on_end(&mut self, _ts_ns: u64, calls: &mut Vec<ApiCall>) {
        if self.wants_more() {
            let pairing = &mut self.pairing;
            self.responses.end(&mut Responses { pairing, calls });
            self.requests.end(&mut Requests { pairing, calls });
        }
        self.pairing.finish(calls);
        self.requests.stop();
        self.responses.stop();
        self.ended = true;
    }

    fn wants_more(&self) -> bool {
        !self.ended && !self.pairing.upgraded()
    }

    fn take_successor(&mut self) -> Option<Box<dyn Decoder>> {
        let switching = self.pairing.take_h2c()?;
        let offsets = (
            self.requests.switch_offset()?,
            self.responses.switch_offset()?,
        );
        let upgrade = H2cUpgrade {
            connection: Arc::clone(self.pairing.connection()),
            requests: self.requests_direction,
            side: self.pairing.side(),
            request: switching.request,
            start_ns: switching.start_ns,
            request_end_ns: switching.end_ns,
            tls: switching.tls,
        };
        Some(Box::new(Http2Decoder::after_upgrade(
            upgrade,
            offsets,
            self.settings,
        )))
    }
}
