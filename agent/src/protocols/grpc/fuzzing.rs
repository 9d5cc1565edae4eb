//! The gRPC fuzz target (`grpc`): calls on one HTTP/2 connection, their messages cut anywhere.

use crate::protocols::fuzzing::{
    DATA, END_HEADERS, END_STREAM, Feed, HEADERS, PREFACE, lost, records, requests_of, role_of,
};
use crate::{protocols::opposite, streams::Transport, testing::http2_frame};

/// The request head of the gRPC calls, as a grpc-go client sends it.
const GRPC_REQUEST: &[(&str, &str)] = &[
    (":method", "POST"),
    (":scheme", "http"),
    (":path", "/helloworld.Greeter/SayHello"),
    (":authority", "localhost:50051"),
    ("content-type", "application/grpc"),
    ("user-agent", "grpc-go/1.64.0"),
    ("te", "trailers"),
    ("grpc-timeout", "9998m"),
];

/// The response head of the gRPC calls.
const GRPC_RESPONSE: &[(&str, &str)] = &[(":status", "200"), ("content-type", "application/grpc")];

/// Four gRPC calls on one HTTP/2 connection (opened by the client preface): after the first
/// byte (the role), each of the records [`records`] cuts from the rest is one chunk holding
/// one DATA frame of one call, preceded by that side's HEADERS when it is the first of its
/// side of the call. The DATA payloads are gRPC's length-prefixed messages, cut anywhere.
/// Control bits: 0, the server sends it (else the client); 1, the chunk lost bytes past what
/// it carries; 2 and 3, which call (streams 1, 3, 5 and 7); 4, it ends its side of the call:
/// the client's DATA frame carries END_STREAM, the server's payload is instead the
/// `grpc-status` of the trailers that end the response.
pub fn connection(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let role = role_of(first);
    let mut feed = Feed::new(Transport::Tcp, role, false, 0);
    let client_sends = requests_of(role);
    feed.whole(client_sends, PREFACE);
    // The client's and the server's: each side's blocks update its peer's table.
    let mut encoders = [loona_hpack::Encoder::new(), loona_hpack::Encoder::new()];
    let mut headers_sent = [[false; 2]; 4];
    for (control, payload) in records(rest) {
        let side = usize::from(control & 1);
        let call = usize::from(control >> 2 & 3);
        let stream = 1 + 2 * call as u32;
        let ends = control & 0x10 != 0;
        let mut bytes = Vec::new();
        let sent = &mut headers_sent[call][side];
        if !*sent {
            *sent = true;
            let head = if side == 0 {
                GRPC_REQUEST
            } else {
                GRPC_RESPONSE
            };
            let block = encoders[side].encode(
                head.iter()
                    .map(|(name, value)| (name.as_bytes(), value.as_bytes())),
            );
            bytes.extend(http2_frame(HEADERS, END_HEADERS, stream, &block));
        }
        if side == 1 && ends {
            let block = encoders[1].encode([(b"grpc-status".as_slice(), payload)]);
            bytes.extend(http2_frame(
                HEADERS,
                END_HEADERS | END_STREAM,
                stream,
                &block,
            ));
        } else {
            let flags = if ends { END_STREAM } else { 0 };
            bytes.extend(http2_frame(DATA, flags, stream, payload));
        }
        let direction = if side == 0 {
            client_sends
        } else {
            opposite(client_sends)
        };
        feed.chunk(direction, &bytes, bytes.len() as u64 + lost(control));
    }
    feed.end();
}
