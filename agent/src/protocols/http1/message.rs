//! The incremental message parser of one direction: turns that direction's chunks into message
//! heads and ends, tracking gaps, and resynchronises on the next start line when it loses the
//! message boundaries.
//!
//! Work is linear in the bytes fed. A head whole in one chunk, the usual case, is parsed in
//! place, once. Otherwise it is buffered line by line and parsed with `httparse` only once its
//! blank line has arrived, the blank line being searched for in the new bytes only (with the last
//! two buffered bytes for context). Buffers are bounded by [`MAX_HEAD`] and the body cap; what is
//! kept of a message (header values, first body bytes) shares the chunk it arrived in when it
//! arrived in one, so a message retains at most the two chunks its head and body start in.

use std::marker::PhantomData;

use bytes::Bytes;

use super::{
    body::BodyCollector,
    head::{self, Framing, Kind, Prefix},
};
use crate::{
    protocols::http::{Header, HttpBody},
    streams::StreamChunk,
};

/// Bytes of a head (start line and header lines), or of a trailer section, kept while waiting
/// for its end; a longer one is a parse failure.
pub(super) const MAX_HEAD: usize = 64 * 1024;

/// Bytes of a chunk-size line (size and extensions); a longer one is a framing failure.
const MAX_CHUNK_LINE: usize = 4 * 1024;

/// A buffer grown past this is freed after use rather than kept for the next message.
const KEEP_BUFFER: usize = 8 * 1024;

/// What is known of a message when its head is parsed.
#[derive(Debug, Clone, Copy)]
pub(super) struct HeadMeta {
    /// Time of the chunk holding the first byte of the start line.
    pub start_ns: u64,
    /// Time of the chunk holding the last byte of the head.
    pub end_ns: u64,
    /// That first chunk was TLS plaintext.
    pub tls: bool,
    /// The direction lost its message boundaries and found them again at this message.
    pub after_resync: bool,
    /// Bytes of this direction just before the message were not seen (lost, skipped while
    /// resynchronising, or sent before the capture joined the connection): whole messages may
    /// be among them.
    pub unseen_before: bool,
}

/// The end of a message whose head was parsed.
#[derive(Debug)]
pub(super) struct MessageEnd {
    /// The body (empty when there is none).
    pub body: HttpBody,
    /// Trailer lines of a chunked body.
    pub trailers: Vec<Header>,
    /// Time of the chunk holding the last byte seen of the message.
    pub end_ns: u64,
    /// The end was not seen: the message was cut by a gap, a framing error, or the connection
    /// end.
    pub cut: bool,
}

/// Receives what the parser finds.
pub(super) trait Sink<H> {
    /// A head was parsed; returns how its body is framed.
    fn head(&mut self, head: H, meta: HeadMeta) -> Framing;

    /// The message whose head came last ended.
    fn complete(&mut self, end: MessageEnd);

    /// The message boundaries were lost (after `complete` for a message that was cut): bytes
    /// of this direction, possibly whole messages, will never be seen.
    fn desync(&mut self);
}

/// Where the parser is in the byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a line: the buffer holds the line so far, possibly a start line.
    FirstLine,
    /// Resynchronising in the middle of a line: skipping to the next line feed.
    SkipLine,
    /// The start line was accepted: the buffer holds the head so far.
    Headers,
    /// In the body of a message whose head was parsed.
    Body(Body),
    /// The connection switched protocols or ended: nothing more is parsed.
    Stopped,
}

/// Where the parser is in a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Body {
    /// This many `Content-Length` bytes are still to come.
    Length(u64),
    /// Everything up to the connection end.
    UntilClose,
    /// A chunk-size line: the buffer holds it so far.
    ChunkSize,
    /// This many bytes of chunk data are still to come.
    ChunkData(u64),
    /// The line break after chunk data; `cr` when its CR was seen.
    ChunkEnd { cr: bool },
    /// The trailer section after the last chunk: the buffer holds it so far.
    Trailers,
}

/// Parses the messages of one direction of a connection.
pub(super) struct MessageParser<K> {
    /// Offset of the next byte expected, once a chunk was seen.
    expected: Option<u64>,
    /// Where the bytes of another protocol start, when a head switched protocols.
    switched_at: Option<u64>,
    state: State,
    /// The parser is at a message boundary it trusts (it has not lost sync since the last
    /// head it parsed).
    synced: bool,
    after_resync: bool,
    unseen_before: bool,
    buf: Vec<u8>,
    body: BodyCollector,
    trailers: Vec<Header>,
    /// The message in progress: time and TLS flag of its first byte.
    start_ns: u64,
    tls: bool,
    /// Time of the latest chunk.
    last_ns: u64,
    kind: PhantomData<fn() -> K>,
}

impl<K: Kind> MessageParser<K> {
    /// A parser expecting a message at the start of the first chunk it is fed.
    pub(super) fn new(body_cap: usize) -> Self {
        Self {
            expected: None,
            switched_at: None,
            state: State::FirstLine,
            synced: true,
            after_resync: false,
            unseen_before: false,
            buf: Vec::new(),
            body: BodyCollector::new(body_cap),
            trailers: Vec::new(),
            start_ns: 0,
            tls: false,
            last_ns: 0,
            kind: PhantomData,
        }
    }

    /// Consumes one chunk of this direction.
    pub(super) fn feed(&mut self, chunk: &StreamChunk, sink: &mut impl Sink<K::Head>) {
        self.last_ns = chunk.ts_ns;
        let captured = chunk.data.len() as u64;
        let len = chunk.len.max(captured);
        let expected = match self.expected {
            Some(expected) => expected,
            None => {
                if chunk.offset > 0 {
                    // Joined mid-stream: not a loss of sync, as nothing before was expected,
                    // but whole messages may have gone by unseen.
                    self.unseen_before = true;
                    sink.desync();
                }
                chunk.offset
            }
        };
        if chunk.offset > expected {
            self.lost(chunk.offset.saturating_sub(expected), sink);
        }
        // Bytes before `expected` were already seen (an overlap the stream stage should never
        // produce): skip them.
        let seen = expected.saturating_sub(chunk.offset);
        self.expected = Some(expected.max(chunk.offset.saturating_add(len)));
        if chunk.gap {
            self.lost(len.saturating_sub(seen), sink);
            return;
        }
        if self.state == State::SkipLine {
            // Programs usually write a message with its own calls: while resynchronising, the
            // start of a chunk is worth checking for a start line.
            self.state = State::FirstLine;
        }
        let skip = usize::try_from(seen).unwrap_or(usize::MAX);
        if let Some(data) = chunk.data.get(skip..) {
            let at = chunk.offset.saturating_add(seen);
            self.data(&chunk.data, data, at, chunk.ts_ns, chunk.tls, sink);
        }
        self.lost(len.saturating_sub(captured.max(seen)), sink);
    }

    /// The connection ended: a body delimited by the close completes, anything else in
    /// progress is cut. Nothing is kept afterwards.
    pub(super) fn end(&mut self, sink: &mut impl Sink<K::Head>) {
        match self.state {
            State::Body(Body::UntilClose) => self.finish(self.last_ns, sink),
            State::Body(_) => self.cut(sink),
            _ => {}
        }
        self.state = State::Stopped;
        self.buf = Vec::new();
        self.trailers = Vec::new();
    }

    /// Where another protocol's bytes start in this direction, once the connection switched:
    /// right after the head that switched it, or else after the last byte seen.
    pub(super) fn switch_offset(&self) -> Option<u64> {
        self.switched_at.or(self.expected)
    }

    /// Stops parsing: the connection carries another protocol now.
    pub(super) fn stop(&mut self) {
        self.state = State::Stopped;
        self.buf = Vec::new();
        self.trailers = Vec::new();
        self.body.take();
    }

    /// Bytes held by this parser.
    #[cfg(test)]
    pub(super) fn retained(&self) -> usize {
        self.buf
            .capacity()
            .saturating_add(self.body.retained())
            .saturating_add(self.trailers.capacity() * std::mem::size_of::<Header>())
    }

    /// `count` bytes of this direction were not captured.
    fn lost(&mut self, count: u64, sink: &mut impl Sink<K::Head>) {
        if count == 0 {
            return;
        }
        match self.state {
            // Known lengths just consume the lost bytes: the message goes on.
            State::Body(Body::Length(remaining)) => {
                let inside = count.min(remaining);
                self.body.lose(inside);
                if inside == remaining {
                    self.finish(self.last_ns, sink);
                } else {
                    self.state = State::Body(Body::Length(remaining.saturating_sub(inside)));
                }
                self.lost(count.saturating_sub(inside), sink);
            }
            State::Body(Body::ChunkData(remaining)) if count <= remaining => {
                self.body.lose(count);
                self.state = remaining
                    .checked_sub(count)
                    .filter(|left| *left > 0)
                    .map_or(State::Body(Body::ChunkEnd { cr: false }), |left| {
                        State::Body(Body::ChunkData(left))
                    });
            }
            State::Body(Body::UntilClose) => self.body.lose(count),
            State::Stopped => {}
            // The byte after a gap may well start a message (the gap swallowed whole ones).
            _ => self.lose_sync(State::FirstLine, sink),
        }
    }

    /// Captured bytes, in order: `data`, a slice of the received bytes `source`, which what is
    /// kept of them shares, starting at stream offset `at`.
    fn data(
        &mut self,
        source: &Bytes,
        mut data: &[u8],
        mut at: u64,
        ts_ns: u64,
        tls: bool,
        sink: &mut impl Sink<K::Head>,
    ) {
        while !data.is_empty() {
            let before = self.state;
            let used = match self.state {
                State::FirstLine => self.first_line(source, data, ts_ns, tls, sink),
                State::SkipLine => self.skip_line(data),
                State::Headers => self.headers(data, ts_ns, sink),
                State::Body(body) => self.body(body, source, data, ts_ns, sink),
                State::Stopped => data.len(),
            };
            // A state consumes nothing only when it hands the bytes to another state; the guard
            // makes progress certain regardless.
            let used = if used == 0 && self.state == before {
                1
            } else {
                used
            };
            at = at.saturating_add(used as u64);
            if self.state == State::Stopped && before != State::Stopped {
                self.switched_at = Some(at);
            }
            data = data.get(used..).unwrap_or_default();
        }
    }

    /// At a line start: accumulates a possible start line and checks it.
    fn first_line(
        &mut self,
        source: &Bytes,
        data: &[u8],
        ts_ns: u64,
        tls: bool,
        sink: &mut impl Sink<K::Head>,
    ) -> usize {
        if self.buf.is_empty() {
            // Empty lines between messages are allowed (RFC 9112 2.2).
            let blank = data
                .iter()
                .take_while(|byte| matches!(byte, b'\r' | b'\n'))
                .count();
            if blank > 0 {
                return blank;
            }
            self.start_ns = ts_ns;
            self.tls = tls;
            // Only while in sync: a failed attempt then loses sync or leaves the rest of the
            // chunk to the head being accumulated, so no byte is scanned by more than one.
            if self.synced
                && let Some(used) = self.whole_head(source, data, ts_ns, sink)
            {
                return used;
            }
        }
        let (line, complete) = split_line(data);
        let too_long = self.buf.len().saturating_add(line.len()) > MAX_HEAD;
        if too_long || head::prefix(K::STARTS, &self.buf, line) == Prefix::No {
            self.fail(
                if complete {
                    State::FirstLine
                } else {
                    State::SkipLine
                },
                sink,
            );
            return line.len();
        }
        self.buf.extend_from_slice(line);
        if complete {
            if K::first_line_valid(&self.buf) {
                self.state = State::Headers;
            } else {
                self.fail(State::FirstLine, sink);
            }
        }
        line.len()
    }

    /// Resynchronising: skips to the start of the next line.
    fn skip_line(&mut self, data: &[u8]) -> usize {
        let (line, complete) = split_line(data);
        if complete {
            self.state = State::FirstLine;
        }
        line.len()
    }

    /// A whole valid head at the start of `data`, parsed in place: the usual head, sent in one
    /// piece, then costs no copy and one parse. Returns the head's length, or `None`, having
    /// done nothing, for anything else, which the line-by-line path handles (its outcome for a
    /// head this accepts is the same).
    fn whole_head(
        &mut self,
        source: &Bytes,
        data: &[u8],
        ts_ns: u64,
        sink: &mut impl Sink<K::Head>,
    ) -> Option<usize> {
        if head::prefix(K::STARTS, data, &[]) != Prefix::Full {
            return None;
        }
        // A head starts at a line start, so a line feed comes before it.
        let len = find_blank_line(&[0, b'\n'], data).filter(|len| *len <= MAX_HEAD)?;
        let head = data.get(..len)?;
        let parsed = K::parse(source, head)?;
        self.parsed(parsed, ts_ns, sink);
        Some(len)
    }

    /// After the start line: accumulates header lines up to the blank line, then parses.
    fn headers(&mut self, data: &[u8], ts_ns: u64, sink: &mut impl Sink<K::Head>) -> usize {
        let Some((used, complete)) = self.accumulate_section(data) else {
            self.fail(State::SkipLine, sink);
            return 0;
        };
        if !complete {
            return used;
        }
        let head = Bytes::copy_from_slice(&self.buf);
        self.clear_buffer();
        match K::parse(&head, &head) {
            Some(parsed) => self.parsed(parsed, ts_ns, sink),
            None => self.fail(State::FirstLine, sink),
        }
        used
    }

    /// A head was parsed from bytes ending in a chunk of time `ts_ns`.
    fn parsed(&mut self, parsed: K::Head, ts_ns: u64, sink: &mut impl Sink<K::Head>) {
        let meta = HeadMeta {
            start_ns: self.start_ns,
            end_ns: ts_ns,
            tls: self.tls,
            after_resync: std::mem::take(&mut self.after_resync),
            unseen_before: std::mem::take(&mut self.unseen_before),
        };
        self.synced = true;
        if K::streams_events(&parsed) {
            self.body.keep_tail();
        }
        match sink.head(parsed, meta) {
            Framing::Empty => self.finish(ts_ns, sink),
            Framing::Length(length) => self.state = State::Body(Body::Length(length)),
            Framing::Chunked => self.state = State::Body(Body::ChunkSize),
            Framing::UntilClose => self.state = State::Body(Body::UntilClose),
            Framing::Switch => self.stop(),
            // The head is known, the body's extent is not.
            Framing::Invalid => {
                self.cut(sink);
                self.lose_sync(State::FirstLine, sink);
            }
        }
    }

    /// In a body.
    fn body(
        &mut self,
        body: Body,
        source: &Bytes,
        data: &[u8],
        ts_ns: u64,
        sink: &mut impl Sink<K::Head>,
    ) -> usize {
        match body {
            Body::Length(remaining) => {
                let used = self.body_bytes(source, data, remaining, ts_ns);
                match remaining.checked_sub(used as u64).filter(|left| *left > 0) {
                    Some(left) => self.state = State::Body(Body::Length(left)),
                    None => self.finish(ts_ns, sink),
                }
                used
            }
            Body::UntilClose => {
                self.body.push(source, data, ts_ns);
                data.len()
            }
            Body::ChunkSize => self.chunk_size(data, sink),
            Body::ChunkData(remaining) => {
                let used = self.body_bytes(source, data, remaining, ts_ns);
                self.state = match remaining.checked_sub(used as u64).filter(|left| *left > 0) {
                    Some(left) => State::Body(Body::ChunkData(left)),
                    None => State::Body(Body::ChunkEnd { cr: false }),
                };
                used
            }
            Body::ChunkEnd { cr } => {
                match data.first() {
                    Some(b'\r') if !cr => self.state = State::Body(Body::ChunkEnd { cr: true }),
                    Some(b'\n') => self.state = State::Body(Body::ChunkSize),
                    _ => {
                        // Not a line start: the offending byte is looked at again while skipping.
                        self.fail(State::SkipLine, sink);
                        return 0;
                    }
                }
                1
            }
            Body::Trailers => self.trailers(data, ts_ns, sink),
        }
    }

    /// Pushes up to `remaining` body bytes from `data`, a slice of `source`, returning how many.
    fn body_bytes(&mut self, source: &Bytes, data: &[u8], remaining: u64, ts_ns: u64) -> usize {
        let take = usize::try_from(remaining).map_or(data.len(), |left| left.min(data.len()));
        let taken = data.get(..take).unwrap_or(data);
        self.body.push(source, taken, ts_ns);
        taken.len()
    }

    /// A chunk-size line.
    fn chunk_size(&mut self, data: &[u8], sink: &mut impl Sink<K::Head>) -> usize {
        let (line, complete) = split_line(data);
        if self.buf.len().saturating_add(line.len()) > MAX_CHUNK_LINE {
            self.fail(State::SkipLine, sink);
            return line.len();
        }
        self.buf.extend_from_slice(line);
        if complete {
            let size = head::parse_chunk_size(&mut self.buf);
            self.clear_buffer();
            match size {
                Some(0) => self.state = State::Body(Body::Trailers),
                Some(size) => self.state = State::Body(Body::ChunkData(size)),
                None => self.fail(State::FirstLine, sink),
            }
        }
        line.len()
    }

    /// The trailer section: header lines up to the blank line.
    fn trailers(&mut self, data: &[u8], ts_ns: u64, sink: &mut impl Sink<K::Head>) -> usize {
        let Some((used, complete)) = self.accumulate_section(data) else {
            self.fail(State::SkipLine, sink);
            return 0;
        };
        if !complete {
            return used;
        }
        let section = Bytes::copy_from_slice(&self.buf);
        self.clear_buffer();
        match head::parse_trailers(&section) {
            Some(trailers) => {
                self.trailers = trailers;
                self.finish(ts_ns, sink);
            }
            None => self.fail(State::FirstLine, sink),
        }
        used
    }

    /// Appends `data` to the buffer up to the end of a header section (a blank line), returning
    /// how many bytes it took and whether the section is complete; `None` when the section would
    /// exceed [`MAX_HEAD`].
    fn accumulate_section(&mut self, data: &[u8]) -> Option<(usize, bool)> {
        // The last two bytes before `data`; a section starts at a line start, so before the
        // buffer comes a line feed.
        let tail = match self.buf.as_slice() {
            [] => [0, b'\n'],
            [only] => [b'\n', *only],
            [.., before_last, last] => [*before_last, *last],
        };
        let end = find_blank_line(&tail, data);
        let used = end.unwrap_or(data.len());
        if self.buf.len().saturating_add(used) > MAX_HEAD {
            return None;
        }
        self.buf.extend_from_slice(data.get(..used).unwrap_or(data));
        Some((used, end.is_some()))
    }

    /// The message in progress ended at `end_ns`.
    fn finish(&mut self, end_ns: u64, sink: &mut impl Sink<K::Head>) {
        self.state = State::FirstLine;
        sink.complete(MessageEnd {
            body: self.body.take(),
            trailers: std::mem::take(&mut self.trailers),
            end_ns,
            cut: false,
        });
    }

    /// The message in progress ends here, its end unseen.
    fn cut(&mut self, sink: &mut impl Sink<K::Head>) {
        self.body.mark_incomplete();
        self.state = State::FirstLine;
        sink.complete(MessageEnd {
            body: self.body.take(),
            trailers: std::mem::take(&mut self.trailers),
            end_ns: self.last_ns,
            cut: true,
        });
    }

    /// The bytes do not fit where the parser is: while in sync that loses sync; while
    /// resynchronising it just means this line was not a start line either.
    fn fail(&mut self, next: State, sink: &mut impl Sink<K::Head>) {
        if self.synced || matches!(self.state, State::Body(_)) {
            self.lose_sync(next, sink);
        } else {
            self.clear_buffer();
            self.state = next;
        }
    }

    /// Message boundaries are lost: the message in progress is cut, the sink told, and the
    /// parser continues in `next`, looking for a start line.
    fn lose_sync(&mut self, next: State, sink: &mut impl Sink<K::Head>) {
        if matches!(self.state, State::Body(_)) {
            self.cut(sink);
        }
        self.clear_buffer();
        self.trailers.clear();
        self.state = next;
        self.synced = false;
        self.after_resync = true;
        self.unseen_before = true;
        sink.desync();
    }

    /// Empties the buffer, freeing it when an unusually large message grew it.
    fn clear_buffer(&mut self) {
        if self.buf.capacity() > KEEP_BUFFER {
            self.buf = Vec::new();
        } else {
            self.buf.clear();
        }
    }
}

/// `data` up to and including its first line feed (`true`), or all of it (`false`).
fn split_line(data: &[u8]) -> (&[u8], bool) {
    match memchr::memchr(b'\n', data) {
        Some(end) => (data.get(..=end).unwrap_or(data), true),
        None => (data, false),
    }
}

/// The length of the prefix of `data` ending with a blank line (`LF LF` or `LF CR LF`), given
/// the `tail` bytes that came just before `data`.
fn find_blank_line(tail: &[u8], data: &[u8]) -> Option<usize> {
    let before = |index: usize, back: usize| -> Option<u8> {
        match index.checked_sub(back) {
            Some(at) => data.get(at).copied(),
            None => tail
                .len()
                .checked_sub(back.saturating_sub(index))
                .and_then(|at| tail.get(at).copied()),
        }
    };
    memchr::memchr_iter(b'\n', data)
        .find(|index| {
            before(*index, 1) == Some(b'\n')
                || (before(*index, 1) == Some(b'\r') && before(*index, 2) == Some(b'\n'))
        })
        .map(|index| index.saturating_add(1))
}
