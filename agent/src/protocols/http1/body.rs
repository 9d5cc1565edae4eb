//! The body of the message being parsed: its size, counted in full, its first bytes, kept up
//! to the body cap, and for a stream of events its last bytes too.

use bytes::Bytes;

use super::head::sub_bytes;
use crate::protocols::http::{HttpBody, body_tail::BodyTail};

/// Collects one message body at a time.
pub(super) struct BodyCollector {
    cap: usize,
    size: u64,
    /// The kept bytes while they are one piece of a received chunk: most bodies arrive whole,
    /// and sharing the chunk's buffer spares a copy.
    shared: Bytes,
    /// The kept bytes once they come from more than one piece (`shared` is empty then).
    owned: Vec<u8>,
    incomplete: bool,
    /// The last bytes, kept for a body streaming events.
    tail: Option<BodyTail>,
    /// When the first byte came.
    first_ns: u64,
}

impl BodyCollector {
    /// A collector keeping at most `cap` bytes of each body.
    pub(super) fn new(cap: usize) -> Self {
        Self {
            cap,
            size: 0,
            shared: Bytes::new(),
            owned: Vec::new(),
            incomplete: false,
            tail: None,
            first_ns: 0,
        }
    }

    /// Keeps the last bytes of the body in progress too (it streams events).
    pub(super) fn keep_tail(&mut self) {
        self.tail = Some(BodyTail::new(self.cap));
    }

    /// Payload bytes seen: `data`, a slice of the received bytes `source`.
    /// Adds the next body bytes, `data` (a slice of `source`), carried by a syscall at `ts_ns`.
    pub(super) fn push(&mut self, source: &Bytes, data: &[u8], ts_ns: u64) {
        if self.first_ns == 0 && !data.is_empty() {
            self.first_ns = ts_ns;
        }
        self.size = self.size.saturating_add(data.len() as u64);
        // Once a byte was lost the captured bytes stop: they are the body's first bytes, never
        // pieces glued across a hole.
        let kept = if self.incomplete {
            0
        } else {
            self.keep_start(source, data)
        };
        if let Some(tail) = &mut self.tail {
            tail.push(data.get(kept..).unwrap_or_default());
        }
    }

    /// Keeps what fits of `data` in the body's first bytes; returns how many.
    fn keep_start(&mut self, source: &Bytes, data: &[u8]) -> usize {
        let len = self.shared.len().saturating_add(self.owned.len());
        let room = self.cap.saturating_sub(len);
        let keep = data.get(..room).unwrap_or(data);
        if keep.is_empty() {
            return 0;
        }
        if len == 0 {
            self.shared = sub_bytes(source, keep);
            return keep.len();
        }
        // Grow by doubling but never past the cap, so a body retains at most `cap` bytes.
        let wanted = len
            .saturating_add(keep.len())
            .max(len.saturating_mul(2))
            .min(self.cap);
        if wanted > self.owned.capacity() {
            self.owned
                .reserve_exact(wanted.saturating_sub(self.owned.len()));
        }
        self.owned
            .extend_from_slice(&std::mem::take(&mut self.shared));
        self.owned.extend_from_slice(keep);
        keep.len()
    }

    /// `count` payload bytes were not captured.
    pub(super) fn lose(&mut self, count: u64) {
        self.size = self.size.saturating_add(count);
        self.incomplete = true;
        if let Some(tail) = &mut self.tail {
            tail.restart();
        }
    }

    /// Some of the body was never seen (its framing was lost).
    pub(super) fn mark_incomplete(&mut self) {
        self.incomplete = true;
    }

    /// The finished body; the collector is ready for the next message.
    pub(super) fn take(&mut self) -> HttpBody {
        let captured = if self.owned.is_empty() {
            std::mem::take(&mut self.shared)
        } else {
            Bytes::from(std::mem::take(&mut self.owned))
        };
        let body = HttpBody {
            size: self.size,
            captured,
            incomplete: self.incomplete,
            tail: self
                .tail
                .take()
                .map(BodyTail::into_bytes)
                .unwrap_or_default(),
            first_ns: std::mem::take(&mut self.first_ns),
        };
        self.size = 0;
        self.incomplete = false;
        body
    }

    /// Bytes held for the body in progress.
    #[cfg(test)]
    pub(super) fn retained(&self) -> usize {
        self.owned
            .capacity()
            .saturating_add(self.shared.len())
            .saturating_add(self.tail.as_ref().map_or(0, BodyTail::retained))
    }
}
