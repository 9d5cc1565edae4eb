//! Pairing requests with responses first-in-first-out, and deciding which calls go out when.
//! The rules are described in the module documentation of [`super`].

use std::{collections::VecDeque, sync::Arc};

use super::{
    head::{Framing, MethodKind, is_interim, request_framing, response_framing},
    message::{HeadMeta, MessageEnd, Sink},
};
use crate::{
    calls::{ApiCall, CallGaps, Side},
    protocols::http::{HttpExchange, HttpRequest, HttpResponse, header},
    streams::Connection,
};

/// Requests still holding their content while waiting for a response; beyond that the oldest
/// goes out as a call without response.
pub(super) const MAX_WAITING: usize = 64;

/// Requests that went out early whose responses are still to be skipped; beyond that the
/// decoder stops trusting the order of responses and gives up on every waiting request.
const MAX_SKIPPED: usize = 1024;

/// A call being assembled.
struct Exchange {
    tls: bool,
    request: HttpRequest,
    request_done: bool,
    request_end_ns: u64,
    response: Option<HttpResponse>,
    response_done: bool,
    response_end_ns: u64,
    gaps: CallGaps,
    upgraded: bool,
}

/// A request in the queue.
struct Entry {
    seq: u64,
    start_ns: u64,
    method: MethodKind,
    /// Requests may have been lost just before this one: a response that started before this
    /// request's first byte answers one of those, not this one.
    after_barrier: bool,
    /// A response was paired with it, or it was given up on.
    answered: bool,
    /// `None` once the call went out early: the entry stays only so that its response, when
    /// it comes, is skipped rather than paired with the next request.
    call: Option<Box<Exchange>>,
}

/// The request queue of one connection.
pub(super) struct Pairing {
    connection: Arc<Connection>,
    side: Side,
    /// Answered entries first, then unanswered ones, in request order.
    queue: VecDeque<Entry>,
    next_seq: u64,
    /// Unanswered entries holding a call.
    waiting: usize,
    /// Unanswered entries whose call went out early.
    skipped: usize,
    /// The request being parsed, when its head is.
    open_request: Option<u64>,
    /// The final response being parsed, when it answers a queued request.
    response: Option<u64>,
    /// The next request is preceded by a point where responses were lost.
    next_after_barrier: bool,
    /// The response direction resynchronised and no final response was paired since.
    response_after_resync: bool,
    upgraded: bool,
    /// The request that switched the connection to h2c, once answered by `101`.
    h2c: Option<SwitchingRequest>,
}

/// A request whose `101` switched the connection to HTTP/2 (h2c): no HTTP/1 call, its response
/// comes on HTTP/2 stream 1.
pub(super) struct SwitchingRequest {
    /// The request, complete.
    pub request: HttpRequest,
    /// Time of its first byte.
    pub start_ns: u64,
    /// Time of its last byte.
    pub end_ns: u64,
    /// It travelled over TLS.
    pub tls: bool,
}

impl Pairing {
    /// An empty queue for `connection`, whose process is the `side` end.
    pub(super) fn new(connection: Arc<Connection>, side: Side) -> Self {
        Self {
            connection,
            side,
            queue: VecDeque::new(),
            next_seq: 0,
            waiting: 0,
            skipped: 0,
            open_request: None,
            response: None,
            next_after_barrier: false,
            response_after_resync: false,
            upgraded: false,
            h2c: None,
        }
    }

    /// The connection the queue belongs to.
    pub(super) fn connection(&self) -> &Arc<Connection> {
        &self.connection
    }

    /// Which end of the exchanges the traced process is.
    pub(super) fn side(&self) -> Side {
        self.side
    }

    /// The request that switched the connection to h2c, if it did.
    pub(super) fn take_h2c(&mut self) -> Option<SwitchingRequest> {
        self.h2c.take()
    }

    /// The connection switched protocols.
    pub(super) fn upgraded(&self) -> bool {
        self.upgraded
    }

    /// Entries in the queue.
    #[cfg(test)]
    pub(super) fn queued(&self) -> usize {
        self.queue.len()
    }

    fn request_head(
        &mut self,
        request: HttpRequest,
        meta: HeadMeta,
        calls: &mut Vec<ApiCall>,
    ) -> Framing {
        let framing = request_framing(&request.headers);
        if self.skipped >= MAX_SKIPPED {
            self.give_up_waiting(calls);
        }
        if self.waiting >= MAX_WAITING {
            self.send_oldest_early(calls);
        }
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        let after_barrier = meta.unseen_before || std::mem::take(&mut self.next_after_barrier);
        let method = MethodKind::of(&request.method);
        let exchange = Exchange {
            tls: meta.tls,
            request,
            request_done: false,
            request_end_ns: meta.end_ns,
            response: None,
            response_done: false,
            response_end_ns: 0,
            gaps: CallGaps {
                after_resync: meta.after_resync,
                ..CallGaps::default()
            },
            upgraded: false,
        };
        self.queue.push_back(Entry {
            seq,
            start_ns: meta.start_ns,
            method,
            after_barrier,
            answered: false,
            call: Some(Box::new(exchange)),
        });
        self.waiting = self.waiting.saturating_add(1);
        self.open_request = Some(seq);
        framing
    }

    fn request_end(&mut self, end: MessageEnd, calls: &mut Vec<ApiCall>) {
        let Some(seq) = self.open_request.take() else {
            return;
        };
        let Some(call) = self.call_mut(seq) else {
            return;
        };
        call.gaps.request_incomplete |= end.cut || end.body.incomplete;
        call.request.body = end.body;
        call.request.trailers = end.trailers;
        call.request_done = true;
        call.request_end_ns = end.end_ns;
        self.send_finished(calls);
    }

    fn response_head(
        &mut self,
        response: HttpResponse,
        meta: HeadMeta,
        calls: &mut Vec<ApiCall>,
    ) -> Framing {
        self.response = None;
        let after_resync = meta.after_resync || std::mem::take(&mut self.response_after_resync);
        let paired = self.pair(meta.start_ns);
        let method = paired
            .and_then(|index| self.queue.get(index))
            .map_or(MethodKind::Other, |entry| entry.method);
        let framing = response_framing(method, response.status, &response.headers);
        let status = response.status;
        match paired {
            Some(index) if !is_interim(status) => self.answer(index, response, after_resync),
            // Interim responses and orphans (answering requests never seen) are parsed to find
            // their end, then dropped; a resync mark waits for the response that is kept.
            _ => self.response_after_resync = after_resync,
        }
        if framing == Framing::Switch {
            self.switch(meta.end_ns, calls);
        }
        framing
    }

    /// The index of the entry a response starting at `start_ns` answers, if any.
    fn pair(&self, start_ns: u64) -> Option<usize> {
        let index = self.queue.iter().position(|entry| !entry.answered)?;
        let entry = self.queue.get(index)?;
        (!entry.after_barrier || start_ns >= entry.start_ns).then_some(index)
    }

    /// Pairs the final `response` with the entry at `index`.
    fn answer(&mut self, index: usize, response: HttpResponse, after_resync: bool) {
        let Some(entry) = self.queue.get_mut(index) else {
            return;
        };
        entry.answered = true;
        match entry.call.as_mut() {
            Some(call) => {
                call.response = Some(response);
                call.gaps.after_resync |= after_resync;
                self.response = Some(entry.seq);
                self.waiting = self.waiting.saturating_sub(1);
            }
            None => {
                // The call went out already: this response is the one to skip.
                self.queue.remove(index);
                self.skipped = self.skipped.saturating_sub(1);
                self.response_after_resync = after_resync;
            }
        }
    }

    fn response_end(&mut self, end: MessageEnd, calls: &mut Vec<ApiCall>) {
        let Some(seq) = self.response.take() else {
            return;
        };
        let Some(call) = self.call_mut(seq) else {
            return;
        };
        call.gaps.response_incomplete |= end.cut || end.body.incomplete;
        if let Some(response) = call.response.as_mut() {
            response.body = end.body;
            response.trailers = end.trailers;
        }
        call.response_done = true;
        call.response_end_ns = end.end_ns;
        self.send_finished(calls);
    }

    /// The response direction lost sync: how many responses the lost bytes held is unknown,
    /// so no waiting request can be paired by order any more.
    fn responses_lost(&mut self, calls: &mut Vec<ApiCall>) {
        self.response = None;
        self.give_up_waiting(calls);
    }

    /// Every unanswered request is reported without response; responses that started before
    /// the next request are dropped, as they answer those.
    fn give_up_waiting(&mut self, calls: &mut Vec<ApiCall>) {
        self.queue
            .retain(|entry| entry.answered || entry.call.is_some());
        for entry in self.queue.iter_mut().filter(|entry| !entry.answered) {
            entry.answered = true;
            if let Some(call) = entry.call.as_mut() {
                call.gaps.response_missing = true;
                call.response_done = true;
            }
        }
        self.waiting = 0;
        self.skipped = 0;
        self.next_after_barrier = true;
        self.send_finished(calls);
    }

    /// The queue is full: the oldest waiting request goes out without response, and its
    /// response, when it comes, is skipped.
    fn send_oldest_early(&mut self, calls: &mut Vec<ApiCall>) {
        let oldest = self
            .queue
            .iter_mut()
            .find(|entry| !entry.answered && entry.call.is_some());
        let Some(entry) = oldest else {
            return;
        };
        let (seq, start_ns, call) = (entry.seq, entry.start_ns, entry.call.take());
        if self.open_request == Some(seq) {
            self.open_request = None;
        }
        if let Some(call) = call {
            calls.push(self.finalize(start_ns, *call, false));
        }
        self.waiting = self.waiting.saturating_sub(1);
        self.skipped = self.skipped.saturating_add(1);
    }

    /// The connection switched protocols after the response being parsed: that call goes out
    /// upgraded, every other one as far as it was seen, and nothing more is parsed.
    /// A complete request upgraded to h2c makes no call here: it is handed over to HTTP/2.
    fn switch(&mut self, end_ns: u64, calls: &mut Vec<ApiCall>) {
        if let Some(seq) = self.response.take() {
            self.h2c = self.take_h2c_request(seq);
            if let Some(call) = self.call_mut(seq) {
                call.upgraded = true;
                call.response_done = true;
                call.response_end_ns = end_ns;
            }
        }
        self.finish(calls);
        self.upgraded = true;
    }

    /// Removes the entry `seq` from the queue when it is a complete request that asked for
    /// `Upgrade: h2c` and was answered `101` with `Upgrade: h2c`.
    fn take_h2c_request(&mut self, seq: u64) -> Option<SwitchingRequest> {
        let asks_h2c = |headers: &[crate::protocols::http::Header]| {
            header(headers, "upgrade").is_some_and(|upgrade| {
                upgrade
                    .value
                    .split(|byte| *byte == b',')
                    .any(|token| token.trim_ascii().eq_ignore_ascii_case(b"h2c"))
            })
        };
        let index = self.queue.iter().position(|entry| entry.seq == seq)?;
        let call = self.queue.get(index)?.call.as_deref()?;
        let switched = call.request_done
            && asks_h2c(&call.request.headers)
            && call
                .response
                .as_ref()
                .is_some_and(|response| response.status == 101 && asks_h2c(&response.headers));
        if !switched {
            return None;
        }
        let entry = self.queue.remove(index)?;
        let call = entry.call?;
        Some(SwitchingRequest {
            request: call.request,
            start_ns: entry.start_ns,
            end_ns: call.request_end_ns,
            tls: call.tls,
        })
    }

    /// Sends every call, finished or not, and empties the queue.
    pub(super) fn finish(&mut self, calls: &mut Vec<ApiCall>) {
        for entry in std::mem::take(&mut self.queue) {
            if let Some(call) = entry.call {
                calls.push(self.finalize(entry.start_ns, *call, entry.answered));
            }
        }
        self.waiting = 0;
        self.skipped = 0;
        self.open_request = None;
        self.response = None;
    }

    /// Sends the calls at the front of the queue that are finished.
    fn send_finished(&mut self, calls: &mut Vec<ApiCall>) {
        while let Some(entry) = self.queue.front() {
            let finished = entry
                .call
                .as_ref()
                .is_some_and(|call| call.request_done && call.response_done);
            if !finished {
                return;
            }
            if let Some(Entry {
                start_ns,
                call: Some(call),
                ..
            }) = self.queue.pop_front()
            {
                calls.push(self.finalize(start_ns, *call, true));
            }
        }
    }

    fn call_mut(&mut self, seq: u64) -> Option<&mut Exchange> {
        self.queue
            .iter_mut()
            .find(|entry| entry.seq == seq)?
            .call
            .as_deref_mut()
    }

    /// The call for an exchange as far as it was seen; `answered` tells whether a response was
    /// paired with it (or it was given up on).
    fn finalize(&self, start_ns: u64, mut call: Exchange, answered: bool) -> ApiCall {
        call.gaps.response_missing |= !answered;
        call.gaps.response_incomplete |= answered && !call.response_done;
        call.gaps.request_incomplete |= !call.request_done;
        let end_ns = match call.response {
            Some(_) => call.response_end_ns.max(call.request_end_ns),
            None => call.request_end_ns,
        };
        ApiCall {
            connection: Arc::clone(&self.connection),
            side: self.side,
            start_ns,
            end_ns,
            tls: call.tls,
            gaps: call.gaps,
            exchange: Arc::new(HttpExchange {
                request: call.request,
                response: call.response,
                upgraded: call.upgraded,
            }),
            layer: None,
        }
    }
}

/// Where the request direction's parser reports.
pub(super) struct Requests<'a> {
    /// The queue.
    pub pairing: &'a mut Pairing,
    /// Where finished calls go.
    pub calls: &'a mut Vec<ApiCall>,
}

impl Sink<HttpRequest> for Requests<'_> {
    fn head(&mut self, head: HttpRequest, meta: HeadMeta) -> Framing {
        self.pairing.request_head(head, meta, self.calls)
    }

    fn complete(&mut self, end: MessageEnd) {
        self.pairing.request_end(end, self.calls);
    }

    fn desync(&mut self) {
        // Requests already queued keep their place: any lost request came after them, and
        // responses come in request order. The next request parsed carries `unseen_before`,
        // which puts a barrier before it.
    }
}

/// Where the response direction's parser reports.
pub(super) struct Responses<'a> {
    /// The queue.
    pub pairing: &'a mut Pairing,
    /// Where finished calls go.
    pub calls: &'a mut Vec<ApiCall>,
}

impl Sink<HttpResponse> for Responses<'_> {
    fn head(&mut self, head: HttpResponse, meta: HeadMeta) -> Framing {
        self.pairing.response_head(head, meta, self.calls)
    }

    fn complete(&mut self, end: MessageEnd) {
        self.pairing.response_end(end, self.calls);
    }

    fn desync(&mut self) {
        self.pairing.responses_lost(self.calls);
    }
}
