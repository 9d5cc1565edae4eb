//! gRPC on HTTP/2: what an HTTP/2 exchange carrying gRPC adds to its call.
//!
//! An exchange is gRPC when its request's `content-type` is `application/grpc`, optionally
//! followed by `+codec` or parameters (gRPC-Web, `application/grpc-web*`, frames its trailers
//! inside the body and is not this). The HTTP/2 decoder starts a [`GrpcTracker`] from the
//! request head, hands it every DATA payload of each direction in order (and every loss), and
//! turns it into a [`GrpcCall`] when the stream completes.
//!
//! # Messages
//!
//! Each direction's DATA bytes are a sequence of length-prefixed messages: a 1-byte compressed
//! flag (0 or 1) and a 4-byte big-endian length, then that many bytes. DATA frame boundaries
//! mean nothing to this framing: a message may span many frames and a frame may hold many
//! messages. The parser keeps only the prefix bytes of the message being started and the
//! remaining length of the one in progress, so its memory is constant whatever the sizes;
//! message bytes are skipped, never kept. Whole messages are counted; a message cut by the
//! stream's end is not.
//!
//! Lost bytes that fall inside the message in progress (its remaining length is known) are
//! skipped and counting goes on. Lost bytes that reach past it, a flag other than 0 or 1, or a
//! direction whose end of stream was not seen make the position of the next prefix
//! unknown: that direction stops counting and reports its count as unknown (`None`) rather
//! than a number that may be wrong.
//!
//! # Status
//!
//! `grpc-status` from the response trailers, else from the response headers (a trailers-only
//! response, which gRPC sends for errors before any message). A value that is not a decimal
//! number is not reported.

mod call;
pub mod describe;
#[doc(hidden)]
// The harness indexes its own small tables with masked bytes of the fuzzer's input.
#[allow(clippy::indexing_slicing)]
pub mod fuzzing;

use std::sync::Arc;

pub use call::{GrpcCall, status_name};

use super::http::{BodyPart, BodyWatcher, HttpExchange, HttpRequest, HttpResponse, header};
use crate::calls::Layer;

/// Tracks one gRPC call while its HTTP/2 stream is decoded.
#[derive(Debug, Clone)]
pub struct GrpcTracker {
    service: String,
    method: String,
    request: MessageCounter,
    response: MessageCounter,
}

impl GrpcTracker {
    /// Starts tracking when `request` is a gRPC request (by its `content-type`); `None`
    /// otherwise.
    pub fn start(request: &HttpRequest) -> Option<Self> {
        if !is_grpc_content_type(request.header_str("content-type")?) {
            return None;
        }
        let (service, method) = split_path(request.path()).unwrap_or_default();
        Some(Self {
            service: service.to_owned(),
            method: method.to_owned(),
            request: MessageCounter::default(),
            response: MessageCounter::default(),
        })
    }

    /// The next DATA payload bytes (padding removed) the client sent on the stream, and `lost`
    /// bytes after them that were not captured.
    pub fn on_request_data(&mut self, data: &[u8], lost: u64) {
        self.request.feed(data, lost);
    }

    /// The next DATA payload bytes (padding removed) the server sent on the stream, and `lost`
    /// bytes after them that were not captured.
    pub fn on_response_data(&mut self, data: &[u8], lost: u64) {
        self.response.feed(data, lost);
    }

    /// The call as far as it was seen, its status from `response` (trailers first, then
    /// headers) when there is one. A direction whose end of stream was not seen (lost frames,
    /// a reset, no response) may have carried more messages than were counted, so its count
    /// is unknown.
    fn call(
        mut self,
        response: Option<&HttpResponse>,
        request_ended: bool,
        response_ended: bool,
    ) -> GrpcCall {
        if !request_ended {
            self.request.framing = Framing::Lost;
        }
        if !response_ended {
            self.response.framing = Framing::Lost;
        }
        let status_code = response.and_then(|response| {
            header(&response.trailers, "grpc-status")
                .or_else(|| header(&response.headers, "grpc-status"))
                .and_then(|status| parse_status(&status.value))
        });
        GrpcCall {
            service: self.service,
            method: self.method,
            status_code,
            request_messages: self.request.count(),
            response_messages: self.response.count(),
            compressed: self.request.compressed || self.response.compressed,
        }
    }
}

impl BodyWatcher for GrpcTracker {
    fn on_data(&mut self, part: BodyPart, data: &[u8], lost: u64) {
        match part {
            BodyPart::Request => self.on_request_data(data, lost),
            BodyPart::Response => self.on_response_data(data, lost),
        }
    }

    fn finish(
        self: Box<Self>,
        exchange: &HttpExchange,
        request_ended: bool,
        response_ended: bool,
    ) -> Arc<dyn Layer> {
        Arc::new(self.call(exchange.response.as_ref(), request_ended, response_ended))
    }
}

/// Starts watching an exchange whose request is a gRPC call (its `content-type`): the HTTP
/// layer table's entry for gRPC.
pub fn watch(request: &HttpRequest) -> Option<Box<dyn BodyWatcher>> {
    GrpcTracker::start(request).map(|tracker| Box::new(tracker) as Box<dyn BodyWatcher>)
}

/// `application/grpc`, `application/grpc+proto`, `application/grpc; charset=...`, in any case.
fn is_grpc_content_type(value: &str) -> bool {
    const GRPC: &str = "application/grpc";
    let value = value.trim();
    match value.get(..GRPC.len()) {
        Some(prefix) if prefix.eq_ignore_ascii_case(GRPC) => {
            matches!(value.as_bytes().get(GRPC.len()), None | Some(b'+' | b';'))
        }
        _ => false,
    }
}

/// `/package.Service/Method` as (`package.Service`, `Method`); `None` for any other shape.
fn split_path(path: &str) -> Option<(&str, &str)> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    (!service.is_empty() && !method.is_empty() && !method.contains('/'))
        .then_some((service, method))
}

/// A `grpc-status` value: ASCII decimal digits only.
fn parse_status(value: &[u8]) -> Option<u32> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// Where one direction's parser is in the message framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// Reading a message prefix: `seen` of its 5 bytes so far, the length bytes among them.
    Prefix { seen: u8, length: [u8; 4] },
    /// Skipping a message's bytes.
    Body { remaining: u32 },
    /// Boundaries lost: nothing more is counted.
    Lost,
}

impl Default for Framing {
    fn default() -> Self {
        Self::Prefix {
            seen: 0,
            length: [0; 4],
        }
    }
}

/// Counts one direction's length-prefixed messages.
#[derive(Debug, Clone, Default)]
struct MessageCounter {
    framing: Framing,
    messages: u64,
    compressed: bool,
}

impl MessageCounter {
    fn feed(&mut self, data: &[u8], lost: u64) {
        self.parse(data);
        if lost == 0 {
            return;
        }
        match &mut self.framing {
            // Missing bytes inside the message in progress are just skipped over.
            Framing::Body { remaining } if lost <= u64::from(*remaining) => {
                *remaining -= u32::try_from(lost).unwrap_or(*remaining);
                if *remaining == 0 {
                    self.end_message();
                }
            }
            // A prefix was (or may have been) among them: where the next one starts is unknown.
            _ => self.framing = Framing::Lost,
        }
    }

    fn parse(&mut self, mut data: &[u8]) {
        while let Some((&byte, rest)) = data.split_first() {
            match &mut self.framing {
                Framing::Lost => return,
                Framing::Body { remaining } => {
                    // Skips as much of the message as this payload holds, in one step.
                    let available = u32::try_from(data.len()).unwrap_or(u32::MAX);
                    let skipped = (*remaining).min(available);
                    *remaining -= skipped;
                    data = data.get(skipped as usize..).unwrap_or_default();
                    if *remaining == 0 {
                        self.end_message();
                    }
                }
                Framing::Prefix { seen, length } => {
                    data = rest;
                    if *seen == 0 {
                        match byte {
                            0 => {}
                            1 => self.compressed = true,
                            _ => {
                                self.framing = Framing::Lost;
                                return;
                            }
                        }
                    } else if let Some(slot) = length.get_mut(usize::from(*seen) - 1) {
                        *slot = byte;
                    }
                    *seen += 1;
                    if *seen == 5 {
                        let remaining = u32::from_be_bytes(*length);
                        if remaining == 0 {
                            self.end_message();
                        } else {
                            self.framing = Framing::Body { remaining };
                        }
                    }
                }
            }
        }
    }

    fn end_message(&mut self) {
        self.messages += 1;
        self.framing = Framing::default();
    }

    fn count(&self) -> Option<u64> {
        (self.framing != Framing::Lost).then_some(self.messages)
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::protocols::http::{Header, HttpBody, HttpVersion};

    fn headers(pairs: &[(&str, &str)]) -> Vec<Header> {
        pairs
            .iter()
            .map(|(name, value)| Header {
                name: (*name).into(),
                value: Bytes::copy_from_slice(value.as_bytes()),
            })
            .collect()
    }

    fn request(path: &str, content_type: &str) -> HttpRequest {
        HttpRequest {
            method: "POST".into(),
            target: path.into(),
            version: HttpVersion::Http2,
            headers: headers(&[("content-type", content_type), ("te", "trailers")]),
            trailers: Vec::new(),
            body: HttpBody::default(),
        }
    }

    fn response(head: &[(&str, &str)], trailers: &[(&str, &str)]) -> HttpResponse {
        HttpResponse {
            version: HttpVersion::Http2,
            status: 200,
            headers: headers(head),
            trailers: headers(trailers),
            body: HttpBody::default(),
        }
    }

    fn message(compressed: bool, payload: &[u8]) -> Vec<u8> {
        let mut framed = vec![u8::from(compressed)];
        framed.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        framed.extend_from_slice(payload);
        framed
    }

    fn tracker() -> GrpcTracker {
        GrpcTracker::start(&request("/helloworld.Greeter/SayHello", "application/grpc"))
            .expect("a gRPC request")
    }

    #[test]
    fn only_grpc_content_types_start_a_call() {
        for grpc in [
            "application/grpc",
            "application/grpc+proto",
            "Application/GRPC+json",
            "application/grpc; charset=utf-8",
        ] {
            assert!(
                GrpcTracker::start(&request("/a.B/C", grpc)).is_some(),
                "{grpc}"
            );
        }
        for other in [
            "application/grpc-web",
            "application/grpc-web-text+proto",
            "application/grpcx",
            "application/json",
            "",
        ] {
            assert!(
                GrpcTracker::start(&request("/a.B/C", other)).is_none(),
                "{other}"
            );
        }
        let mut no_type = request("/a.B/C", "x");
        no_type.headers.clear();
        assert!(GrpcTracker::start(&no_type).is_none());
    }

    #[test]
    fn service_and_method_come_from_the_path() {
        let call = tracker().call(None, true, true);
        assert_eq!(call.service, "helloworld.Greeter");
        assert_eq!(call.method, "SayHello");
        for malformed in ["/", "/only", "//M", "/S/", "/a/b/c", "nopath"] {
            let call = GrpcTracker::start(&request(malformed, "application/grpc"))
                .expect("gRPC by content-type")
                .call(None, true, true);
            assert_eq!((call.service.as_str(), call.method.as_str()), ("", ""));
        }
    }

    #[test]
    fn unary_call_with_status_in_trailers() {
        let mut grpc = tracker();
        grpc.on_request_data(&message(false, b"\x0a\x05world"), 0);
        grpc.on_response_data(&message(false, b"\x0a\x0bhello world"), 0);
        let call = grpc.call(
            Some(&response(
                &[("content-type", "application/grpc")],
                &[("grpc-status", "0"), ("grpc-message", "")],
            )),
            true,
            true,
        );
        assert_eq!(call.status_code, Some(0));
        assert_eq!(call.request_messages, Some(1));
        assert_eq!(call.response_messages, Some(1));
        assert!(!call.compressed);
    }

    #[test]
    fn trailers_only_response_gives_the_status_from_its_headers() {
        let mut grpc = tracker();
        grpc.on_request_data(&message(false, b"x"), 0);
        let call = grpc.call(
            Some(&response(
                &[("grpc-status", "5"), ("grpc-message", "not here")],
                &[],
            )),
            true,
            true,
        );
        assert_eq!(call.status_code, Some(5));
        assert_eq!(call.response_messages, Some(0));
        // Trailers win over headers.
        let call = tracker().call(
            Some(&response(&[("grpc-status", "0")], &[("grpc-status", "13")])),
            true,
            true,
        );
        assert_eq!(call.status_code, Some(13));
        // Not a number: not reported.
        for bad in ["", "OK", "-1", "1 ", "99999999999"] {
            let call = tracker().call(Some(&response(&[], &[("grpc-status", bad)])), true, true);
            assert_eq!(call.status_code, None, "{bad:?}");
        }
        assert_eq!(tracker().call(None, true, true).status_code, None);
    }

    #[test]
    fn messages_are_counted_across_any_data_boundaries() {
        let mut stream = Vec::new();
        for n in 0..4u8 {
            stream.extend(message(false, &vec![n; usize::from(n) * 300]));
        }
        // One payload, then every split into two, then byte by byte.
        for split in 0..=stream.len() {
            let mut grpc = tracker();
            let (a, b) = stream.split_at(split);
            grpc.on_response_data(a, 0);
            grpc.on_response_data(b, 0);
            assert_eq!(
                grpc.call(None, true, true).response_messages,
                Some(4),
                "split {split}"
            );
        }
        let mut grpc = tracker();
        for byte in &stream {
            grpc.on_request_data(std::slice::from_ref(byte), 0);
        }
        grpc.on_request_data(&[], 0);
        assert_eq!(grpc.call(None, true, true).request_messages, Some(4));
    }

    #[test]
    fn a_message_cut_by_the_end_is_not_counted() {
        let mut grpc = tracker();
        grpc.on_request_data(&message(false, b"whole"), 0);
        let cut = message(false, b"cut short");
        grpc.on_request_data(cut.get(..8).expect("8 bytes"), 0);
        grpc.on_response_data(&[0, 0, 0], 0);
        let call = grpc.call(None, true, true);
        assert_eq!(call.request_messages, Some(1));
        assert_eq!(call.response_messages, Some(0));
    }

    #[test]
    fn large_lengths_need_no_memory() {
        let mut grpc = tracker();
        // A 4 GiB - 1 message announced, 1 MiB of it seen: still one message in progress.
        grpc.on_response_data(&[0, 0xff, 0xff, 0xff, 0xff], 0);
        grpc.on_response_data(&vec![7; 1 << 20], 0);
        assert_eq!(grpc.call(None, true, true).response_messages, Some(0));
    }

    #[test]
    fn the_compressed_flag_is_noted() {
        let mut grpc = tracker();
        grpc.on_request_data(&message(false, b"a"), 0);
        grpc.on_response_data(&message(true, b"gzipped"), 0);
        let call = grpc.call(None, true, true);
        assert!(call.compressed);
        assert_eq!(call.response_messages, Some(1));
    }

    #[test]
    fn bytes_lost_inside_a_message_are_skipped() {
        let mut grpc = tracker();
        let big = message(false, &[9; 100]);
        // The first 30 bytes seen, the next 50 lost, the last 25 seen: still one message.
        grpc.on_request_data(big.get(..30).expect("30 bytes"), 50);
        grpc.on_request_data(big.get(80..).expect("the rest"), 0);
        grpc.on_request_data(&message(false, b"next"), 0);
        // Lost up to the very end of a message ends it.
        grpc.on_response_data(big.get(..5).expect("prefix"), 100);
        grpc.on_response_data(&message(false, b"next"), 0);
        let call = grpc.call(None, true, true);
        assert_eq!(call.request_messages, Some(2));
        assert_eq!(call.response_messages, Some(2));
    }

    #[test]
    fn after_a_gap_or_a_bad_flag_the_count_is_unknown() {
        // Lost bytes that reach past the message in progress.
        let mut grpc = tracker();
        grpc.on_request_data(&message(false, b"one"), 1);
        grpc.on_request_data(&message(false, b"two"), 0);
        grpc.on_response_data(&message(false, b"fine"), 0);
        let call = grpc.call(None, true, true);
        assert_eq!(call.request_messages, None);
        assert_eq!(call.response_messages, Some(1));

        // Lost bytes inside a prefix.
        let mut grpc = tracker();
        grpc.on_response_data(&[0, 0], 2);
        assert_eq!(grpc.call(None, true, true).response_messages, None);

        // A flag that is neither 0 nor 1.
        let mut grpc = tracker();
        grpc.on_response_data(&message(false, b"ok"), 0);
        grpc.on_response_data(&[2, 0, 0, 0, 1, 0], 0);
        grpc.on_response_data(&message(false, b"after"), 0);
        assert_eq!(grpc.call(None, true, true).response_messages, None);

        // A direction whose end was not seen.
        let seen = |request_ended, response_ended| {
            let mut grpc = tracker();
            grpc.on_request_data(&message(false, b"q"), 0);
            grpc.on_response_data(&message(false, b"r"), 0);
            let call = grpc.call(None, request_ended, response_ended);
            (call.request_messages, call.response_messages)
        };
        assert_eq!(seen(true, true), (Some(1), Some(1)));
        assert_eq!(seen(false, true), (None, Some(1)));
        assert_eq!(seen(true, false), (Some(1), None));
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..2_000 {
            let mut grpc = tracker();
            for _ in 0..8 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let bytes = seed.to_le_bytes();
                let take = usize::try_from(seed % 9).unwrap_or(0);
                grpc.on_request_data(bytes.get(..take).unwrap_or_default(), 0);
                grpc.on_response_data(&bytes, 0);
            }
            let _ = grpc.call(None, true, true);
        }
    }

    /// The hook in the HTTP/2 decoder, fed real frames: the call comes out with its gRPC part.
    mod through_http2 {
        use std::sync::Arc;

        use agent_common::{Direction, Role};
        use bytes::Bytes;

        use super::message;
        use crate::{
            calls::ApiCall,
            protocols::{Decoder, DecoderSettings, grpc::GrpcCall, http2},
            streams::{Connection, StreamChunk},
            testing::http2_frame as frame,
        };

        const DATA: u8 = 0;
        const HEADERS: u8 = 1;
        const END_STREAM: u8 = 1;
        const END_HEADERS: u8 = 4;

        /// A server's connection: requests come in, responses go out.
        struct Wire {
            connection: Arc<Connection>,
            client: loona_hpack::Encoder<'static>,
            server: loona_hpack::Encoder<'static>,
            offsets: [u64; 2],
            decoder: Option<http2::Http2Decoder>,
            calls: Vec<ApiCall>,
        }

        impl Wire {
            fn new() -> Self {
                let mut wire = Self {
                    connection: crate::testing::connection(1, Role::Server),
                    client: loona_hpack::Encoder::new(),
                    server: loona_hpack::Encoder::new(),
                    offsets: [0; 2],
                    decoder: None,
                    calls: Vec::new(),
                };
                let mut preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
                preface.extend(frame(4, 0, 0, &[]));
                wire.send(Direction::Ingress, preface, 0);
                wire.send(Direction::Egress, frame(4, 0, 0, &[]), 0);
                wire
            }

            /// Sends `data`, then `lost` bytes that are not captured.
            fn send(&mut self, direction: Direction, data: Vec<u8>, lost: u64) {
                let slot = direction as usize;
                let chunk = StreamChunk {
                    connection: Arc::clone(&self.connection),
                    direction,
                    offset: self.offsets[slot],
                    len: data.len() as u64 + lost,
                    data: Bytes::from(data),
                    tls: false,
                    gap: false,
                    ts_ns: 1_000 + self.offsets[slot],
                    tid: 1,
                    comm: "t".into(),
                };
                self.offsets[slot] += chunk.len;
                let decoder = self.decoder.get_or_insert_with(|| {
                    let detected = http2::detect(&chunk).expect("HTTP/2");
                    http2::Http2Decoder::new(detected, DecoderSettings { body_cap: 64 })
                });
                decoder.on_chunk(&chunk, &mut self.calls);
            }

            fn request(&mut self, stream: u32, path: &str) {
                let block = self.client.encode([
                    (&b":method"[..], &b"POST"[..]),
                    (b":scheme", b"http"),
                    (b":path", path.as_bytes()),
                    (b":authority", b"127.0.0.1:50051"),
                    (b"content-type", b"application/grpc"),
                    (b"te", b"trailers"),
                ]);
                let headers = frame(HEADERS, END_HEADERS, stream, &block);
                self.send(Direction::Ingress, headers, 0);
            }

            fn response(&mut self, stream: u32, fields: &[(&str, &str)], end: bool) {
                let block = self
                    .server
                    .encode(fields.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())));
                let flags = END_HEADERS | if end { END_STREAM } else { 0 };
                self.send(Direction::Egress, frame(HEADERS, flags, stream, &block), 0);
            }

            fn grpc(&mut self) -> Vec<GrpcCall> {
                std::mem::take(&mut self.calls)
                    .into_iter()
                    .map(|call| call.layer::<GrpcCall>().expect("a gRPC call").clone())
                    .collect()
            }
        }

        #[test]
        fn calls_carry_their_grpc_part() {
            let mut wire = Wire::new();
            // Stream 1: a client-streaming call whose first message loses 30 of its bytes in
            // capture, inside one DATA frame; status in the trailers.
            wire.request(1, "/pkg.Svc/Upload");
            let big = message(false, &[7; 100]);
            let first = frame(DATA, 0, 1, &big);
            wire.send(Direction::Ingress, first[..9 + 40].to_vec(), 30);
            wire.send(Direction::Ingress, first[9 + 70..].to_vec(), 0);
            let mut rest = message(false, b"two");
            rest.extend(message(false, b"three"));
            wire.send(Direction::Ingress, frame(DATA, END_STREAM, 1, &rest), 0);
            wire.response(
                1,
                &[(":status", "200"), ("content-type", "application/grpc")],
                false,
            );
            let reply = message(false, b"done");
            wire.send(Direction::Egress, frame(DATA, 0, 1, &reply), 0);
            wire.response(1, &[("grpc-status", "0")], true);
            // Stream 3: a trailers-only NOT_FOUND.
            wire.request(3, "/pkg.Svc/Get");
            wire.send(
                Direction::Ingress,
                frame(DATA, END_STREAM, 3, &message(false, b"k")),
                0,
            );
            wire.response(3, &[(":status", "200"), ("grpc-status", "5")], true);

            let calls = wire.grpc();
            assert_eq!(
                calls,
                [
                    GrpcCall {
                        service: "pkg.Svc".into(),
                        method: "Upload".into(),
                        status_code: Some(0),
                        request_messages: Some(3),
                        response_messages: Some(1),
                        compressed: false,
                    },
                    GrpcCall {
                        service: "pkg.Svc".into(),
                        method: "Get".into(),
                        status_code: Some(5),
                        request_messages: Some(1),
                        response_messages: Some(0),
                        compressed: false,
                    },
                ]
            );
        }
    }
}
