//! How a family of detectors plugs into the analyzer: it claims the rules whose matchers it
//! evaluates, keeps whatever state its detectors learn, and judges each call it is shown. What
//! several families need of a served request (its principal, its injection matches) is worked
//! out once per call, by the first family that asks, so a family without active rules costs
//! nothing but being skipped.

use std::{cell::OnceCell, net::IpAddr, sync::Arc};

use super::{
    finding::{self, Endpoint, Finding, Subject},
    injection::{InjectionDetector, InjectionMatch},
    principal::{Principal, PrincipalKeyer},
    rules::{Lane, Matcher, Rule},
};
use crate::{
    calls::Side,
    enrich::EnrichedCall,
    protocols::http::{HttpExchange, HttpRequest},
    streams::Connection,
};

/// A family of detectors: the rules of the matchers it claims, judged together against every
/// call, so that the analyzer makes one call per family, and none to a family without rules in
/// force.
pub(super) trait DetectorFamily: Send {
    /// Takes a new rule set (`rules`, every rule in pack order, off ones included), keeping
    /// what its detectors learned for rules whose matcher did not change; true when it claims
    /// a rule in force, so that it is asked to judge calls.
    fn adopt(&mut self, rules: &[Arc<Rule>]) -> bool;

    /// Judges one call, adding what it finds to `findings`.
    fn judge(&mut self, call: &CallContext<'_>, findings: &mut Vec<Finding>);

    /// Sees a connection the kernel saw a process open, whatever it then speaks.
    fn connected(&mut self, _connection: &Connection, _now_ms: u64) {}
}

/// A rule a family claimed, with what the family made of its matcher.
#[derive(Debug)]
pub(super) struct Claimed<C> {
    /// Where its findings go among a call's.
    pub position: usize,
    /// The rule.
    pub rule: Arc<Rule>,
    /// What the family made of its matcher: the parameters it evaluates, or the stateful
    /// detector built of them.
    pub check: C,
}

impl<C> Claimed<C> {
    /// A finding of the rule about `subject`.
    pub fn finding(&self, subject: &Arc<Subject>, location: String, evidence: String) -> Finding {
        Finding {
            order: finding::Order::Rule(self.position),
            rule: Arc::clone(&self.rule),
            subject: Arc::clone(subject),
            location,
            evidence,
        }
    }
}

/// The rules in force among `rules` that `claim` takes, in pack order.
pub(super) fn claim<C>(
    rules: &[Arc<Rule>],
    claim: impl Fn(&Matcher) -> Option<C>,
) -> Vec<Claimed<C>> {
    rules
        .iter()
        .enumerate()
        .filter(|(_, rule)| rule.lane != Lane::Off)
        .filter_map(|(position, rule)| {
            Some(Claimed {
                position,
                rule: Arc::clone(rule),
                check: claim(&rule.matcher)?,
            })
        })
        .collect()
}

/// One call as the families judge it: the call and what they share to judge it.
pub(super) struct CallContext<'a> {
    /// The call.
    pub call: &'a EnrichedCall,
    /// Unix ms at which it is judged.
    pub now_ms: u64,
    /// Names principals.
    pub keyer: &'a PrincipalKeyer,
    served: Option<ServedRequest<'a>>,
}

impl<'a> CallContext<'a> {
    /// The context of `call`, answered as `route` (when known) with `response_sensitive`
    /// sensitive-data findings in its response.
    pub fn new(
        call: &'a EnrichedCall,
        route: Option<&'a str>,
        response_sensitive: u32,
        now_ms: u64,
        keyer: &'a PrincipalKeyer,
        scanner: &'a InjectionDetector,
    ) -> Self {
        let served = call
            .call
            .exchange::<HttpExchange>()
            .filter(|http| call.call.side == Side::Server && !http.request.method.is_empty())
            .map(|http| ServedRequest {
                call,
                http,
                route: route.unwrap_or_else(|| http.request.path()),
                status: http.response.as_ref().map_or(0, |response| response.status),
                response_sensitive,
                source: call.call.connection.peer.map(|peer| peer.ip()),
                keyer,
                scanner,
                principal: OnceCell::new(),
                endpoint_name: OnceCell::new(),
                injections: OnceCell::new(),
                subject: OnceCell::new(),
            });
        Self {
            call,
            now_ms,
            keyer,
            served,
        }
    }

    /// The HTTP request the call served, when it is one: what most families judge.
    pub fn served(&self) -> Option<&ServedRequest<'a>> {
        self.served.as_ref()
    }
}

/// An HTTP request a process of this host served.
pub(super) struct ServedRequest<'a> {
    call: &'a EnrichedCall,
    /// The exchange.
    pub http: &'a HttpExchange,
    /// Its route template, else its path.
    pub route: &'a str,
    /// Its response's status, 0 when none was seen.
    pub status: u16,
    /// Sensitive-data findings in its response.
    pub response_sensitive: u32,
    /// The client's address.
    pub source: Option<IpAddr>,
    keyer: &'a PrincipalKeyer,
    scanner: &'a InjectionDetector,
    principal: OnceCell<Principal>,
    endpoint_name: OnceCell<String>,
    injections: OnceCell<Vec<InjectionMatch>>,
    subject: OnceCell<Arc<Subject>>,
}

impl ServedRequest<'_> {
    /// The request.
    pub fn request(&self) -> &HttpRequest {
        &self.http.request
    }

    /// Who sent it, worked out on first use: most families need it, some never do.
    pub fn principal(&self) -> &Principal {
        self.principal
            .get_or_init(|| self.keyer.principal(self.request(), self.source))
    }

    /// Its endpoint, `GET /orders/{id}`.
    pub fn endpoint_name(&self) -> &str {
        self.endpoint_name
            .get_or_init(|| format!("{} {}", self.request().method, self.route))
    }

    /// The injection payloads it carries, scanned once for the families that judge them (the
    /// injection rules and SSRF confirmation), and only if one asks.
    pub fn injections(&self) -> &[InjectionMatch] {
        self.injections.get_or_init(|| {
            let request = self.request();
            let headers: Vec<(&str, &[u8])> = request
                .headers
                .iter()
                .filter_map(|header| {
                    Some((
                        std::str::from_utf8(header.name.as_bytes()).ok()?,
                        header.value.as_ref(),
                    ))
                })
                .collect();
            let mut found = Vec::new();
            self.scanner.scan_request(
                &request.target,
                &headers,
                &request.body.captured,
                request.header_str("content-type"),
                &mut found,
            );
            found
        })
    }

    /// Whom and what its findings are about, built for the first one.
    pub fn subject(&self) -> &Arc<Subject> {
        self.subject.get_or_init(|| {
            Arc::new(Subject {
                service: finding::service(self.call),
                endpoint: Endpoint {
                    method: self.request().method.clone(),
                    route: self.route.to_owned(),
                },
                principal: self.principal().clone(),
                source: self.source,
            })
        })
    }
}
