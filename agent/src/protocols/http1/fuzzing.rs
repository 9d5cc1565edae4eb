//! The HTTP/1 fuzz target (`http1`): whole connections, and what they upgrade to.

use crate::protocols::fuzzing::{Feed, role_of};
use crate::streams::Transport;

/// An HTTP/1 connection: after the first byte (the role), the chunks [`Feed::chunks`] cuts
/// from the rest.
pub fn connection(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let mut feed = Feed::new(Transport::Tcp, role_of(first), false, 0);
    feed.chunks(rest);
    feed.end();
}
