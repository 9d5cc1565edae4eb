//! The HTTP/2 fuzz targets: whole connections (`http2`) and header blocks (`hpack`).

use agent_common::{Direction, Role};

use crate::protocols::fuzzing::{
    END_HEADERS, END_STREAM, Feed, HEADERS, PREFACE, requests_of, role_of,
};
use crate::{streams::Transport, testing::http2_frame};

/// An HTTP/2 connection: after the first byte (the role; bit 7: joined mid-way, otherwise the
/// client preface opens it), the chunks [`Feed::chunks`] cuts from the rest, to whichever
/// decoder the first of them selects.
pub fn connection(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let role = role_of(first);
    let joined = first & 0x80 != 0;
    let mut feed = Feed::new(Transport::Tcp, role, joined, if joined { 5_000 } else { 0 });
    if !joined {
        feed.whole(requests_of(role), PREFACE);
    }
    feed.chunks(rest);
    feed.end();
}

/// One header block through each direction's HPACK decoder: after the first byte (the role;
/// bit 7: joined mid-way, so decoded against placeholders), the rest is the block of a
/// HEADERS frame on stream 1 from the client, then of one from the server.
pub fn hpack_block(data: &[u8]) {
    let Some((&first, block)) = data.split_first() else {
        return;
    };
    let joined = first & 0x80 != 0;
    let mut feed = Feed::new(
        Transport::Tcp,
        Role::Client,
        joined,
        if joined { 5_000 } else { 0 },
    );
    if !joined {
        feed.whole(Direction::Egress, PREFACE);
    }
    let frame_bytes = http2_frame(HEADERS, END_HEADERS | END_STREAM, 1, block);
    feed.whole(Direction::Egress, &frame_bytes);
    feed.whole(Direction::Ingress, &frame_bytes);
    feed.end();
}
