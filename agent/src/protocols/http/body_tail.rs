//! The last bytes of a streamed body: a server-sent event stream or a JSON-lines stream puts
//! what sums it up (finish reasons, token usage) in its last events, past the body cap that
//! bounds what is kept of its start.

use bytes::Bytes;

/// The last bytes of a body past its kept start, at most the body cap of them, contiguous:
/// a loss starts it afresh. Holds at most twice the cap while it fills.
#[derive(Debug)]
pub struct BodyTail {
    cap: usize,
    bytes: Vec<u8>,
}

impl BodyTail {
    /// An empty tail keeping at most `cap` bytes.
    pub fn new(cap: usize) -> Self {
        Self {
            cap,
            bytes: Vec::new(),
        }
    }

    /// The next body bytes.
    pub fn push(&mut self, data: &[u8]) {
        self.bytes.extend_from_slice(data);
        let excess = self.bytes.len().saturating_sub(self.cap);
        // Dropping the front only once it is as long as the cap keeps the copying linear.
        if excess >= self.cap {
            self.bytes.drain(..excess);
        }
    }

    /// Bytes were lost: what was kept is no longer the end of a contiguous run.
    pub fn restart(&mut self) {
        self.bytes.clear();
    }

    /// Bytes held now.
    pub fn retained(&self) -> usize {
        self.bytes.capacity()
    }

    /// The last bytes, at most the cap.
    pub fn into_bytes(self) -> Bytes {
        let start = self.bytes.len().saturating_sub(self.cap);
        Bytes::copy_from_slice(self.bytes.get(start..).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_cap_bytes_within_twice_the_cap() {
        let mut tail = BodyTail::new(8);
        for piece in b"abcdefghijklmnopqrstuvwxyz0123456789".chunks(5) {
            tail.push(piece);
            assert!(tail.bytes.len() < 16);
        }
        assert_eq!(&tail.into_bytes()[..], b"23456789");
    }

    #[test]
    fn a_loss_restarts_the_tail() {
        let mut tail = BodyTail::new(8);
        tail.push(b"before");
        tail.restart();
        tail.push(b"after");
        assert_eq!(&tail.into_bytes()[..], b"after");
    }
}
