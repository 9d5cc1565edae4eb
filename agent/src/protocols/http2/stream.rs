//! The streams of one HTTP/2 connection: each request stream's request, response, bodies and
//! what was missed, until it becomes a call.

use std::sync::Arc;

use bytes::Bytes;
use foldhash::HashMap;

use crate::{
    calls::{ApiCall, CallGaps, Side},
    protocols::{
        http::{
            BodyPart, BodyWatcher, Header, HeaderName, HttpBody, HttpExchange, HttpRequest,
            HttpResponse, HttpVersion, body_tail::BodyTail, carries_event_stream,
        },
        watchers,
    },
    streams::Connection,
};

/// Streams open at once per connection; HEADERS opening more are counted and ignored.
pub(super) const MAX_OPEN_STREAMS: usize = 256;
/// Decoded names and values kept per header block.
const MAX_FIELDS_BYTES: usize = 64 * 1024;

/// Which half of the exchanges a direction carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Part {
    /// Client to server.
    Request,
    /// Server to client.
    Response,
}

/// The name of the placeholder entries a joined connection's HPACK tables start with (see
/// `DirectionReader::join`): no real field name contains a NUL byte.
pub(super) const UNKNOWN_ENTRY_NAME: &[u8] = b"\0";

/// A decoded header block: pseudo-headers apart, regular fields in order.
#[derive(Debug, Default)]
pub(super) struct Fields {
    method: Option<String>,
    path: Option<String>,
    status: Option<u16>,
    /// A `:status` that is not a three-digit number.
    bad_status: bool,
    headers: Vec<Header>,
    bytes: usize,
    /// Fields past the bound were dropped.
    truncated: bool,
    /// Some fields referred to compression-table entries from before the capture joined.
    pub(super) unknown: bool,
}

impl Fields {
    /// Adds one decoded field.
    pub(super) fn push(&mut self, name: &[u8], value: &[u8]) {
        if name == UNKNOWN_ENTRY_NAME {
            self.unknown = true;
            return;
        }
        self.bytes = self.bytes.saturating_add(name.len() + value.len());
        if self.bytes > MAX_FIELDS_BYTES {
            self.truncated = true;
            return;
        }
        let text = |bytes: &[u8]| std::str::from_utf8(bytes).ok().map(str::to_owned);
        match name {
            b":method" => self.method = text(value),
            b":path" => self.path = text(value),
            b":status" => {
                self.status = std::str::from_utf8(value)
                    .ok()
                    .filter(|status| status.len() == 3)
                    .and_then(|status| status.parse().ok());
                self.bad_status = self.status.is_none();
            }
            _ => {
                let name = match std::str::from_utf8(name) {
                    Ok(name) => HeaderName::from(name),
                    // Field names are lowercase tokens: anything else is kept as sent.
                    Err(_) => match HeaderName::from_lowercase(Bytes::copy_from_slice(name)) {
                        Some(name) => name,
                        None => return,
                    },
                };
                self.headers.push(Header {
                    name,
                    value: Bytes::copy_from_slice(value),
                });
            }
        }
    }
}

/// One half of a stream's body.
#[derive(Debug, Default)]
struct Body {
    size: u64,
    captured: Vec<u8>,
    incomplete: bool,
    /// The last bytes, kept for a response streaming events.
    tail: Option<BodyTail>,
    /// When the first byte came.
    first_ns: u64,
}

impl From<HttpBody> for Body {
    fn from(body: HttpBody) -> Self {
        Self {
            size: body.size,
            captured: body.captured.to_vec(),
            incomplete: body.incomplete,
            tail: None,
            first_ns: body.first_ns,
        }
    }
}

impl Body {
    fn into_http(self) -> HttpBody {
        HttpBody {
            size: self.size,
            captured: Bytes::from(self.captured),
            incomplete: self.incomplete,
            tail: self.tail.map(BodyTail::into_bytes).unwrap_or_default(),
            first_ns: self.first_ns,
        }
    }
}

/// One request stream.
#[derive(Debug)]
struct Stream {
    start_ns: u64,
    request_end_ns: u64,
    response_end_ns: u64,
    request: HttpRequest,
    request_body: Body,
    request_ended: bool,
    /// The final response's head, once seen.
    response: Option<HttpResponse>,
    response_body: Body,
    /// The response headers could not be decoded.
    response_unknown: bool,
    response_ended: bool,
    gaps: CallGaps,
    /// The layers that follow this exchange's body bytes (gRPC), started from its request.
    watchers: Vec<Box<dyn BodyWatcher>>,
}

impl Stream {
    /// The next DATA payload bytes of one direction (padding removed), carried by a syscall at
    /// `ts_ns`, and `lost` bytes that were not captured after them. Every body byte of the
    /// stream passes here.
    fn on_data(&mut self, part: Part, data: &[u8], lost: u64, body_cap: usize, ts_ns: u64) {
        let body_part = match part {
            Part::Request => BodyPart::Request,
            Part::Response => BodyPart::Response,
        };
        for watcher in &mut self.watchers {
            watcher.on_data(body_part, data, lost);
        }
        let body = match part {
            Part::Request => &mut self.request_body,
            Part::Response => &mut self.response_body,
        };
        if body.first_ns == 0 && (!data.is_empty() || lost > 0) {
            body.first_ns = ts_ns;
        }
        body.size = body
            .size
            .saturating_add(data.len() as u64)
            .saturating_add(lost);
        let room = body_cap.saturating_sub(body.captured.len()).min(data.len());
        body.captured
            .extend_from_slice(data.get(..room).unwrap_or_default());
        if let Some(tail) = &mut body.tail {
            tail.push(data.get(room..).unwrap_or_default());
            if lost > 0 {
                tail.restart();
            }
        }
        if lost > 0 {
            body.incomplete = true;
            match part {
                Part::Request => self.gaps.request_incomplete = true,
                Part::Response => self.gaps.response_incomplete = true,
            }
        }
    }

    fn complete(&self) -> bool {
        self.request_ended && self.response_ended
    }
}

/// The request streams of a connection.
pub(super) struct Streams {
    connection: Arc<Connection>,
    side: Side,
    body_cap: usize,
    /// The connection's bytes were TLS plaintext.
    pub(super) tls: bool,
    /// The connection was joined after it opened.
    pub(super) joined: bool,
    open: HashMap<u32, Stream>,
    /// Streams that are done, in the order they finished.
    finished: Vec<u32>,
    /// Streams ignored because too many were open.
    dropped: u64,
}

impl Streams {
    /// No stream yet on `connection`, whose process is the `side` end.
    pub(super) fn new(
        connection: Arc<Connection>,
        side: Side,
        body_cap: usize,
        joined: bool,
    ) -> Self {
        Self {
            connection,
            side,
            body_cap,
            tls: false,
            joined,
            open: HashMap::default(),
            finished: Vec::new(),
            dropped: 0,
        }
    }

    /// Streams open now.
    #[cfg(test)]
    pub(super) fn open(&self) -> usize {
        self.open.len()
    }

    /// Streams ignored because too many were open.
    #[cfg(test)]
    pub(super) fn dropped(&self) -> u64 {
        self.dropped
    }

    /// A header block of `part` on stream `id` ended at `end_ns`; `fields` is `None` when it
    /// could not be decoded.
    pub(super) fn on_headers(
        &mut self,
        part: Part,
        id: u32,
        fields: Option<Fields>,
        end_stream: bool,
        start_ns: u64,
        end_ns: u64,
    ) {
        match part {
            Part::Request => self.on_request_headers(id, fields, end_stream, start_ns, end_ns),
            Part::Response => {
                let Some(stream) = self.open.get_mut(&id) else {
                    // A pushed stream, one opened before the capture joined, or one ignored.
                    return;
                };
                stream.response_end_ns = end_ns;
                match fields {
                    None => {
                        stream.response_unknown = true;
                        stream.gaps.response_incomplete = true;
                    }
                    Some(fields) => {
                        if fields.truncated || fields.bad_status {
                            stream.gaps.response_incomplete = true;
                        }
                        stream.gaps.headers_unknown |= fields.unknown;
                        match &mut stream.response {
                            Some(response) => response.trailers = fields.headers,
                            None => match fields.status {
                                // Interim responses are not kept.
                                Some(status) if (100..200).contains(&status) => {}
                                Some(status) => {
                                    if carries_event_stream(&fields.headers) {
                                        stream.response_body.tail =
                                            Some(BodyTail::new(self.body_cap));
                                    }
                                    stream.response = Some(HttpResponse {
                                        version: HttpVersion::Http2,
                                        status,
                                        headers: fields.headers,
                                        trailers: Vec::new(),
                                        body: HttpBody::default(),
                                    });
                                }
                                None => {
                                    stream.response_unknown = true;
                                    stream.gaps.response_incomplete = true;
                                }
                            },
                        }
                    }
                }
                if end_stream {
                    self.end_stream(part, id, end_ns);
                }
            }
        }
    }

    fn on_request_headers(
        &mut self,
        id: u32,
        fields: Option<Fields>,
        end_stream: bool,
        start_ns: u64,
        end_ns: u64,
    ) {
        if let Some(stream) = self.open.get_mut(&id) {
            // Trailers.
            stream.request_end_ns = end_ns;
            match fields {
                Some(fields) => {
                    stream.gaps.request_incomplete |= fields.truncated;
                    stream.gaps.headers_unknown |= fields.unknown;
                    stream.request.trailers = fields.headers;
                }
                None => stream.gaps.request_incomplete = true,
            }
            if end_stream {
                self.end_stream(Part::Request, id, end_ns);
            }
            return;
        }
        // Clients open odd streams; headers that cannot be read open no call, since nothing
        // of it would be known.
        let Some(fields) = fields.filter(|_| id % 2 == 1) else {
            return;
        };
        // A method that refers to an entry from before the capture joined is unknown, and
        // left empty; a block without one is not a request.
        let Some(method) = fields.method.or_else(|| fields.unknown.then(String::new)) else {
            return;
        };
        if self.open.len() >= MAX_OPEN_STREAMS {
            self.dropped = self.dropped.saturating_add(1);
            return;
        }
        // CONNECT names its target in `:authority` and has no `:path`.
        let target = fields.path.or_else(|| {
            crate::protocols::http::header(&fields.headers, ":authority")
                .and_then(|authority| std::str::from_utf8(&authority.value).ok())
                .map(str::to_owned)
        });
        let gaps = CallGaps {
            request_incomplete: fields.truncated || (target.is_none() && !fields.unknown),
            after_resync: self.joined,
            headers_unknown: fields.unknown,
            ..CallGaps::default()
        };
        let request = HttpRequest {
            method,
            target: target.unwrap_or_default(),
            version: HttpVersion::Http2,
            headers: fields.headers,
            trailers: Vec::new(),
            body: HttpBody::default(),
        };
        self.open_stream(id, request, gaps, start_ns, end_ns);
        if end_stream {
            self.end_stream(Part::Request, id, end_ns);
        }
    }

    /// Opens stream 1 with the HTTP/1.1 request that upgraded the connection to h2c (RFC 7540
    /// section 3.2): its response comes as HTTP/2 on that stream.
    pub(super) fn open_upgraded(&mut self, mut request: HttpRequest, start_ns: u64, end_ns: u64) {
        let body = std::mem::take(&mut request.body);
        self.open_stream(1, request, CallGaps::default(), start_ns, end_ns);
        if let Some(stream) = self.open.get_mut(&1) {
            stream.request_body = Body::from(body);
        }
        self.end_stream(Part::Request, 1, end_ns);
    }

    fn open_stream(
        &mut self,
        id: u32,
        request: HttpRequest,
        gaps: CallGaps,
        start_ns: u64,
        end_ns: u64,
    ) {
        let stream = Stream {
            start_ns,
            request_end_ns: end_ns,
            response_end_ns: 0,
            watchers: watchers(&request),
            request,
            request_body: Body::default(),
            request_ended: false,
            response: None,
            response_body: Body::default(),
            response_unknown: false,
            response_ended: false,
            gaps,
        };
        self.open.insert(id, stream);
    }

    /// DATA payload bytes of `part` on stream `id`, carried at `ts_ns`, and `lost` uncaptured
    /// ones after them.
    pub(super) fn on_data(&mut self, part: Part, id: u32, data: &[u8], lost: u64, ts_ns: u64) {
        if let Some(stream) = self.open.get_mut(&id) {
            stream.on_data(part, data, lost, self.body_cap, ts_ns);
        }
    }

    /// A DATA frame of `part` on stream `id` ended at `ts_ns`.
    pub(super) fn touch(&mut self, part: Part, id: u32, ts_ns: u64) {
        if let Some(stream) = self.open.get_mut(&id) {
            match part {
                Part::Request => stream.request_end_ns = ts_ns,
                Part::Response => stream.response_end_ns = ts_ns,
            }
        }
    }

    /// `part` ended stream `id` (END_STREAM) at `ts_ns`.
    pub(super) fn end_stream(&mut self, part: Part, id: u32, ts_ns: u64) {
        if let Some(stream) = self.open.get_mut(&id) {
            match part {
                Part::Request => {
                    stream.request_ended = true;
                    stream.request_end_ns = ts_ns;
                }
                Part::Response => {
                    stream.response_ended = true;
                    stream.response_end_ns = ts_ns;
                }
            }
            if stream.complete() {
                self.finished.push(id);
            }
        }
    }

    /// Either end reset stream `id` at `ts_ns`.
    pub(super) fn reset(&mut self, id: u32, ts_ns: u64) {
        if let Some(stream) = self.open.get_mut(&id)
            && !stream.complete()
        {
            stream.request_end_ns = stream.request_end_ns.max(ts_ns);
            self.finished.push(id);
        }
    }

    /// The server will not process streams above `last`.
    pub(super) fn go_away(&mut self, last: u32, ts_ns: u64) {
        let mut gone: Vec<u32> = self
            .open
            .iter_mut()
            .filter(|(id, stream)| **id > last && !stream.complete())
            .map(|(id, stream)| {
                stream.request_end_ns = stream.request_end_ns.max(ts_ns);
                *id
            })
            .collect();
        gone.sort_unstable();
        self.finished.extend(gone);
    }

    /// Hands out the streams that are done, as calls.
    pub(super) fn take_finished(&mut self, calls: &mut Vec<ApiCall>) {
        for id in std::mem::take(&mut self.finished) {
            if let Some(stream) = self.open.remove(&id) {
                calls.push(self.call(stream));
            }
        }
    }

    /// Frame boundaries of `part` are lost: every open stream goes out, incomplete on that
    /// side.
    pub(super) fn lose(&mut self, part: Part, calls: &mut Vec<ApiCall>) {
        self.take_finished(calls);
        for stream in self.open.values_mut() {
            match part {
                Part::Request if !stream.request_ended => stream.gaps.request_incomplete = true,
                Part::Response if !stream.response_ended => {
                    stream.gaps.response_incomplete = true;
                }
                _ => {}
            }
        }
        self.drain(calls);
    }

    /// The connection ended at `ts_ns`: every open stream goes out as far as it was seen.
    pub(super) fn finish(&mut self, calls: &mut Vec<ApiCall>) {
        self.take_finished(calls);
        self.drain(calls);
    }

    fn drain(&mut self, calls: &mut Vec<ApiCall>) {
        if self.dropped > 0 {
            log::debug!(
                "http2: connection {} had {} streams beyond {MAX_OPEN_STREAMS} open, not reported",
                self.connection.id,
                self.dropped
            );
        }
        let mut left: Vec<(u32, Stream)> = self.open.drain().collect();
        left.sort_unstable_by_key(|(id, _)| *id);
        for (_, stream) in left {
            calls.push(self.call(stream));
        }
    }

    fn call(&self, mut stream: Stream) -> ApiCall {
        if !stream.request_ended {
            stream.gaps.request_incomplete = true;
        }
        if stream.response.is_none() && !stream.response_unknown {
            stream.gaps.response_missing = true;
        } else if !stream.response_ended {
            stream.gaps.response_incomplete = true;
        }
        let mut request = stream.request;
        request.body = stream.request_body.into_http();
        let response = stream.response.map(|mut response| {
            response.body = stream.response_body.into_http();
            response
        });
        let exchange = HttpExchange {
            request,
            response,
            upgraded: false,
        };
        // The first watcher's layer: one layer per call.
        let layer =
            stream.watchers.into_iter().next().map(|watcher| {
                watcher.finish(&exchange, stream.request_ended, stream.response_ended)
            });
        let end_ns = if exchange.response.is_some() || stream.response_unknown {
            stream.response_end_ns.max(stream.start_ns)
        } else {
            stream.request_end_ns.max(stream.start_ns)
        };
        ApiCall {
            connection: Arc::clone(&self.connection),
            side: self.side,
            start_ns: stream.start_ns,
            end_ns,
            tls: self.tls,
            gaps: stream.gaps,
            exchange: Arc::new(exchange),
            layer,
        }
    }
}
