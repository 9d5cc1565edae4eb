//! SSRF confirmed by what the kernel saw: a request names an internal address in a parameter,
//! and the process that served it calls that address within a short window. The two arrive
//! in either order (a server usually fetches before it answers, so its outbound call is
//! decoded first), so both are remembered for the window.

use std::{collections::VecDeque, net::IpAddr};

/// Outbound calls and pending requests remembered, each; the oldest go first.
const MAX_REMEMBERED: usize = 1_024;

/// Where an outbound call went.
#[derive(Debug, Clone)]
pub struct Outbound {
    /// The calling process.
    pub pid: u32,
    /// The address it connected to.
    pub peer: Option<(IpAddr, u16)>,
    /// The `Host` it named, lowercased, without port.
    pub host: Option<String>,
    /// Unix ms of the call.
    pub at_ms: u64,
}

/// A request whose parameter named an internal address, waiting for its server to go there.
#[derive(Debug, Clone)]
pub struct Pending<T> {
    /// The serving process.
    pub pid: u32,
    /// The host (IP literal or name, lowercased) and port the parameter named.
    pub target: (String, Option<u16>),
    /// Unix ms until which a call there confirms it.
    pub until_ms: u64,
    /// What the finding needs once confirmed.
    pub payload: T,
}

/// Recent outbound calls and pending requests.
#[derive(Debug)]
pub struct SsrfTracker<T> {
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
    pub fn request(
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
    pub fn outbound(&mut self, call: Outbound) -> Vec<T> {
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
    pub fn remember(&mut self, call: Outbound) {
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
