//! SSRF confirmed by what the kernel saw: a request names an internal address in a parameter,
//! and the process that served it calls that address within a short window. The two arrive
//! in either order (a server usually fetches before it answers, so its outbound call is
//! decoded first), so both are remembered for the window.

use std::{collections::VecDeque, net::IpAddr, sync::Arc};

use super::{
    family::{CallContext, Claimed, DetectorFamily, ServedRequest, claim},
    finding::{Finding, Order, Subject},
    injection::InjectionClass,
    rules::{Matcher, Rule},
};
use crate::{calls::Side, protocols::http::HttpExchange, streams::Connection};

/// How far apart the kernel's and analysis's views of "when" may be (ms).
const CLOCK_SLACK_MS: u64 = 100;
/// The evidence of an SSRF whose server had called the address before the request was judged.
const CALLED_BEFORE: &str = "the serving process had called the address the parameter names";
/// The evidence of an SSRF whose server called the address after its request was judged.
const CALLED_AFTER: &str =
    "the serving process called the address within the window, after the request";
/// Outbound calls and pending requests remembered, each; the oldest go first.
const MAX_REMEMBERED: usize = 1_024;

/// Where an outbound call went.
#[derive(Debug, Clone)]
struct Outbound {
    /// The calling process.
    pid: u32,
    /// The address it connected to.
    peer: Option<(IpAddr, u16)>,
    /// The `Host` it named, lowercased, without port.
    host: Option<String>,
    /// Unix ms of the call.
    at_ms: u64,
}

/// A request whose parameter named an internal address, waiting for its server to go there.
#[derive(Debug, Clone)]
struct Pending<T> {
    /// The serving process.
    pid: u32,
    /// The host (IP literal or name, lowercased) and port the parameter named.
    target: (String, Option<u16>),
    /// Unix ms until which a call there confirms it.
    until_ms: u64,
    /// What the finding needs once confirmed.
    payload: T,
}

/// Recent outbound calls and pending requests.
#[derive(Debug)]
struct SsrfTracker<T> {
    outbound: VecDeque<Outbound>,
    pending: VecDeque<Pending<T>>,
}

impl<T> Default for SsrfTracker<T> {
    fn default() -> Self {
        Self {
            outbound: VecDeque::new(),
            pending: VecDeque::new(),
        }
    }
}

impl<T> SsrfTracker<T> {
    /// A request of `pid` named `target`: true when `pid` already called it since `since_ms`;
    /// else it waits as pending until `until_ms`.
    fn request(
        &mut self,
        pid: u32,
        target: &(String, Option<u16>),
        since_ms: u64,
        until_ms: u64,
        payload: T,
    ) -> bool {
        self.expire(since_ms);
        let seen = self
            .outbound
            .iter()
            .any(|call| call.pid == pid && call.at_ms >= since_ms && reaches(call, target));
        if !seen {
            if self.pending.len() >= MAX_REMEMBERED {
                self.pending.pop_front();
            }
            self.pending.push_back(Pending {
                pid,
                target: target.clone(),
                until_ms,
                payload,
            });
        }
        seen
    }

    /// An outbound call: the pending requests it confirms, removed.
    fn outbound(&mut self, call: Outbound) -> Vec<T> {
        let now = call.at_ms;
        let (confirmed, waiting): (VecDeque<_>, VecDeque<_>) = std::mem::take(&mut self.pending)
            .into_iter()
            .filter(|pending| pending.until_ms >= now)
            .partition(|pending| pending.pid == call.pid && reaches(&call, &pending.target));
        self.pending = waiting;
        self.remember(call);
        confirmed
            .into_iter()
            .map(|pending| pending.payload)
            .collect()
    }

    /// Keeps an outbound call or connection for the requests that come after it.
    fn remember(&mut self, call: Outbound) {
        if self.outbound.len() >= MAX_REMEMBERED {
            self.outbound.pop_front();
        }
        self.outbound.push_back(call);
    }

    fn expire(&mut self, since_ms: u64) {
        while self
            .outbound
            .front()
            .is_some_and(|call| call.at_ms < since_ms)
        {
            self.outbound.pop_front();
        }
    }
}

/// The `ssrf_confirmed` rules: the SSRF targets a served request names, waiting for the
/// outbound call of its server that confirms them.
#[derive(Debug, Default)]
pub(super) struct SsrfConfirmationFamily {
    /// Each rule with its window (ms).
    rules: Vec<Claimed<u64>>,
    tracker: SsrfTracker<Confirmation>,
}

/// What a confirmed SSRF needs to be reported after its request was.
#[derive(Debug)]
struct Confirmation {
    rule: Arc<Rule>,
    subject: Arc<Subject>,
    location: String,
}

impl DetectorFamily for SsrfConfirmationFamily {
    fn adopt(&mut self, rules: &[Arc<Rule>]) -> bool {
        self.rules = claim(rules, |matcher| match matcher {
            Matcher::SsrfConfirmed(params) => Some(params.window_ms),
            _ => None,
        });
        !self.rules.is_empty()
    }

    fn judge(&mut self, context: &CallContext<'_>, findings: &mut Vec<Finding>) {
        if let Some(served) = context.served() {
            self.requested(context, served, findings);
        } else if context.call.call.side == Side::Client
            && let Some(http) = context.call.call.exchange::<HttpExchange>()
        {
            self.called(context, http, findings);
        }
    }

    fn connected(&mut self, connection: &Connection, now_ms: u64) {
        self.tracker.remember(Outbound {
            pid: connection.pid,
            peer: connection.peer.map(|peer| (peer.ip(), peer.port())),
            host: None,
            at_ms: now_ms,
        });
    }
}

impl SsrfConfirmationFamily {
    /// A served request: each rule confirms the first SSRF target its server already called,
    /// and leaves the others pending.
    fn requested(
        &mut self,
        context: &CallContext<'_>,
        served: &ServedRequest<'_>,
        findings: &mut Vec<Finding>,
    ) {
        let call = &context.call.call;
        let now_ms = context.now_ms;
        // Only what the process did once the request had arrived is its doing.
        let duration_ms = call.end_ns.saturating_sub(call.start_ns) / 1_000_000;
        let window_start = now_ms.saturating_sub(duration_ms + CLOCK_SLACK_MS);
        // A later confirmation comes from the server's own call: it names no client address.
        let mut sourceless: Option<Arc<Subject>> = None;
        for rule in &self.rules {
            let tracker = &mut self.tracker;
            let confirmed = served
                .injections()
                .iter()
                .filter(|found| found.class == InjectionClass::Ssrf)
                .filter_map(|found| Some((found, found.target.as_ref()?)))
                .find(|(found, target)| {
                    let subject = sourceless.get_or_insert_with(|| {
                        Arc::new(Subject {
                            source: None,
                            ..Subject::clone(served.subject())
                        })
                    });
                    tracker.request(
                        call.connection.pid,
                        target,
                        window_start,
                        now_ms + rule.check,
                        Confirmation {
                            rule: Arc::clone(&rule.rule),
                            subject: Arc::clone(subject),
                            location: found.location.clone(),
                        },
                    )
                });
            if let Some((found, _)) = confirmed {
                findings.push(rule.finding(
                    served.subject(),
                    found.location.clone(),
                    CALLED_BEFORE.to_owned(),
                ));
            }
        }
    }

    /// A call this host's process made: it may confirm an SSRF a request of the same process
    /// asked for.
    fn called(
        &mut self,
        context: &CallContext<'_>,
        http: &HttpExchange,
        findings: &mut Vec<Finding>,
    ) {
        let connection = &context.call.call.connection;
        let confirmed = self.tracker.outbound(Outbound {
            pid: connection.pid,
            peer: connection.peer.map(|peer| (peer.ip(), peer.port())),
            host: http
                .request
                .host()
                .map(|(host, _)| host.to_ascii_lowercase()),
            at_ms: context.now_ms,
        });
        findings.extend(confirmed.into_iter().map(|confirmation| Finding {
            order: Order::Found,
            rule: confirmation.rule,
            subject: confirmation.subject,
            location: confirmation.location,
            evidence: CALLED_AFTER.to_owned(),
        }));
    }
}

/// The call went where the target names: the same IP (or a loopback name for a loopback
/// address), or the same `Host`; and the same port, the scheme's default ports when none is
/// named.
fn reaches(call: &Outbound, (host, port): &(String, Option<u16>)) -> bool {
    let port_matches = |seen: u16| port.map_or(seen == 80 || seen == 443, |port| port == seen);
    let named = host.trim_start_matches('[').trim_end_matches(']');
    let by_address = call.peer.is_some_and(|(ip, seen)| {
        let same = match named.parse::<IpAddr>() {
            Ok(target) => canonical(target) == canonical(ip),
            Err(_) => named == "localhost" && ip.is_loopback(),
        };
        same && port_matches(seen)
    });
    let by_host =
        call.host.as_deref() == Some(named) && call.peer.is_none_or(|(_, seen)| port_matches(seen));
    by_address || by_host
}

/// IPv4-mapped IPv6 addresses as IPv4, so `::ffff:127.0.0.1` is `127.0.0.1`.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(pid: u32, port: u16, at_ms: u64) -> Outbound {
        Outbound {
            pid,
            peer: Some((IpAddr::from([127, 0, 0, 1]), port)),
            host: Some("127.0.0.1".into()),
            at_ms,
        }
    }

    #[test]
    fn a_call_before_or_after_the_request_confirms_it() {
        let mut tracker = SsrfTracker::default();
        let target = ("127.0.0.1".to_owned(), Some(8080));
        assert!(tracker.outbound(call(7, 8080, 100)).is_empty());
        assert!(tracker.request(7, &target, 90, 5_000, "before"));
        assert!(!tracker.request(7, &target, 200, 5_000, "after"));
        assert_eq!(tracker.outbound(call(8, 8080, 300)), Vec::<&str>::new());
        assert_eq!(tracker.outbound(call(7, 9090, 300)), Vec::<&str>::new());
        assert_eq!(tracker.outbound(call(7, 8080, 400)), ["after"]);
    }

    #[test]
    fn a_call_after_the_window_does_not() {
        let mut tracker = SsrfTracker::default();
        let target = ("localhost".to_owned(), Some(8080));
        assert!(!tracker.request(7, &target, 0, 1_000, ()));
        assert!(tracker.outbound(call(7, 8080, 2_000)).is_empty());
    }
}
