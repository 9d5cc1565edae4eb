//! Stateful detectors of API abuse (OWASP API Security Top 10 2023): broken object level
//! authorization (API1, [`BolaDetector`]), broken authentication (API2,
//! [`AuthFailureDetector`], [`CredentialStuffingDetector`], [`TokenSpreadDetector`]),
//! unrestricted resource consumption (API4, [`RateDetector`]), excessive data exposure
//! (API3, [`ExposureDetector`]) and bot-like clients (API6, [`RegularityDetector`]).
//!
//! Each detector sees one [`Observation`] per API call and sometimes answers with a
//! [`Detection`]: counts and thresholds, and the key it counted per (a principal id, a source
//! address, a service and endpoint), never an object id, a credential or a user name. Pure:
//! no I/O, no clock of its own (time is the observations' `now_ms`), no threads.
//!
//! # Windows
//!
//! Counts are over a sliding window of `window_secs`: event counts in a ring of 10 sub-buckets
//! (the count covers the last 9/10 to 10/10 of the window), distinct counts as exact sets of
//! 64-bit hashes with the time each was last seen. A key fires when it crosses its threshold and
//! then stays quiet for one window: once per key per window, re-armed after it.
//!
//! # Baselines
//!
//! BOLA and rate thresholds are `max(floor, factor × baseline)`, the baseline being the key's
//! own count per completed window (tumbling windows of `window_secs` from time 0): an
//! exponentially weighted moving average, each new window weighing 1/8 (its influence halves in
//! about five windows), starting at the first window learned. Only windows in which the key was
//! seen and never went above its threshold are learned, so an attack does not teach itself as
//! normal and idle hours do not lower the bar. Exposure baselines are per-call means of an
//! endpoint's response sizes and sensitive findings (equal weights for the first 64 calls, then
//! 1/64 each), anomalous responses excluded.
//!
//! # Bounds
//!
//! Each detector tracks at most [`MAX_KEYS`] keys and remembers at most 262 144 values (id,
//! user name or source hashes, 16 bytes each) across its distinct sets; beyond either the least
//! recently seen key is forgotten, baseline included. A distinct set never holds more than the
//! threshold + 1 values (BOLA thresholds, baseline included, are capped at 1024), the oldest
//! forgotten first. An observation costs O(threshold) at most, allocates only for a new key, and
//! memory does not grow with traffic.
//!
//! # Time
//!
//! Time may repeat, start at 0, jump ahead by hours (the windows are simply empty) or go back:
//! by up to a window it is counted at the latest time the key saw; further back the key's
//! windows start over (its baseline kept).

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod auth_failures;
mod bola;
mod credentials;
mod exposure;
mod rate;
mod regularity;
mod table;
#[cfg(test)]
mod tests;
mod window;

use std::{collections::HashMap, sync::Arc};

use super::{
    family::{CallContext, Claimed, DetectorFamily},
    finding::Finding,
    rules::{Lane, Matcher, Rule, RuleId},
};

pub use self::{
    auth_failures::{AuthFailureDetector, AuthFailureParams, AuthFailureScope},
    bola::{BolaDetector, BolaParams},
    credentials::{
        CredentialStuffingDetector, CredentialStuffingParams, TokenSpreadDetector,
        TokenSpreadParams,
    },
    exposure::{ExposureDetector, ExposureParams},
    rate::{RateDetector, RateParams, RateScope},
    regularity::{RegularityDetector, RegularityParams},
};

/// Keys (principals, sources, endpoints, credentials) one detector tracks at most; when full,
/// the least recently seen is forgotten.
pub const MAX_KEYS: usize = 16_384;

/// The largest distinct-count threshold: it bounds the size of a key's distinct set.
const MAX_DISTINCT: usize = 1024;

/// The longest window, a day.
const MAX_WINDOW_SECS: u64 = 86_400;

/// The largest baseline or size factor accepted.
const MAX_FACTOR: f64 = 1_000_000.0;

/// One API call as the abuse detectors see it: who, what, how it ended. All strings are already
/// bounded by the caller.
#[derive(Debug, Clone, Copy)]
pub struct Observation<'a> {
    /// Unix ms of the call (monotonic enough; may repeat; may go slightly backwards: tolerate
    /// it).
    pub now_ms: u64,
    /// The service that served it, e.g. `orders-api`.
    pub service: &'a str,
    /// Its endpoint, e.g. `GET /orders/{id}`.
    pub endpoint: &'a str,
    /// A stable id of the caller (principal): e.g. `jwt:sub=alice`, `key:3fa9...` (a keyed
    /// hash), `basic:5e1c...`, `cookie:...`, or `ip:10.0.0.7` when nothing better is known.
    /// Never a raw credential.
    pub principal: &'a str,
    /// The client address (source), e.g. `10.0.0.7`.
    pub source: &'a str,
    /// The username the request tried to log in with, hashed by the caller (Basic auth user or
    /// a login body's username field), when any.
    pub login_user: Option<u64>,
    /// A hash of the credential presented (token/API key/cookie), when any, to see one token
    /// used from many sources.
    pub credential: Option<u64>,
    /// The object ids named by the request's path parameters (the templated `{id}` segments),
    /// hashed by the caller. At most a few.
    pub object_ids: &'a [u64],
    /// HTTP status (0 when no response was seen).
    pub status: u16,
    /// Response body bytes (declared or seen).
    pub response_bytes: u64,
    /// Sensitive-data findings counted in the response.
    pub response_sensitive: u32,
}

/// What a detector found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detection {
    /// Counts and thresholds, e.g. `21 distinct object ids in 60 s (threshold 20, baseline
    /// 2.1)`; never ids, tokens or user names.
    pub evidence: String,
    /// What it was counted per: the principal id (BOLA, authentication failures per principal,
    /// token spread, rate per principal), `source <address>` (authentication failures per
    /// source, credential stuffing) or `<service> <endpoint>` (rate per endpoint, exposure).
    pub key: String,
}

/// A detector of one abuse family, fed every observation of the calls its rule selects.
pub trait AbuseDetector: Send {
    /// Counts `obs` and returns a detection when it makes its key cross the threshold (at most
    /// once per key per window).
    fn observe(&mut self, obs: &Observation<'_>) -> Option<Detection>;

    /// Keys tracked now (at most [`MAX_KEYS`]), for metrics and tests.
    fn tracked_keys(&self) -> usize;
}

/// A new detector (no keys yet) for `matcher`, if it is one of the stateful abuse matchers;
/// `matcher` should have passed its rule pack's validation.
pub fn detector(matcher: &Matcher) -> Option<Box<dyn AbuseDetector>> {
    Some(match matcher {
        Matcher::Bola(p) => Box::new(BolaDetector::new(p)),
        Matcher::AuthFailures(p) => Box::new(AuthFailureDetector::new(p)),
        Matcher::CredentialStuffing(p) => Box::new(CredentialStuffingDetector::new(p)),
        Matcher::TokenSpread(p) => Box::new(TokenSpreadDetector::new(p)),
        Matcher::Rate(p) => Box::new(RateDetector::new(p)),
        Matcher::Exposure(p) => Box::new(ExposureDetector::new(p)),
        Matcher::Regularity(p) => Box::new(RegularityDetector::new(p)),
        _ => return None,
    })
}

/// Object ids of one request the enumeration detectors read.
const MAX_OBJECT_IDS: usize = 4;

/// The stateful abuse rules: each rule's detector sees every served request.
#[derive(Default)]
pub(super) struct AbuseFamily {
    /// Every abuse rule with its detector, in pack order, those off included: a lane edit does
    /// not forget a baseline.
    rules: Vec<Claimed<Box<dyn AbuseDetector>>>,
}

impl DetectorFamily for AbuseFamily {
    fn adopt(&mut self, rules: &[Arc<Rule>]) -> bool {
        let mut previous: HashMap<RuleId, (Matcher, Box<dyn AbuseDetector>)> =
            std::mem::take(&mut self.rules)
                .into_iter()
                .map(|old| (old.rule.id.clone(), (old.rule.matcher.clone(), old.check)))
                .collect();
        for (position, rule) in rules.iter().enumerate() {
            let state = match previous.remove(&rule.id) {
                Some((matcher, state)) if matcher == rule.matcher => state,
                _ => match detector(&rule.matcher) {
                    Some(fresh) => fresh,
                    None => continue,
                },
            };
            self.rules.push(Claimed {
                position,
                rule: Arc::clone(rule),
                check: state,
            });
        }
        self.rules.iter().any(|abuse| abuse.rule.lane != Lane::Off)
    }

    fn judge(&mut self, context: &CallContext<'_>, findings: &mut Vec<Finding>) {
        let Some(served) = context.served() else {
            return;
        };
        let request = served.request();
        let principal = served.principal();
        // Keyed hashes of the path segments the route templates (`/orders/{id}` of `/orders/42`).
        let object_ids: Vec<u64> = request
            .path()
            .split('/')
            .zip(served.route.split('/'))
            .filter(|(_, template)| template.starts_with('{') && template.ends_with('}'))
            .take(MAX_OBJECT_IDS)
            .map(|(segment, _)| context.keyer.hash(segment.as_bytes()))
            .collect();
        let source = served
            .source
            .map_or_else(|| "unknown".to_owned(), |ip| ip.to_string());
        let observation = Observation {
            now_ms: context.now_ms,
            service: &context.call.workload.service_name,
            endpoint: served.endpoint_name(),
            principal: &principal.id,
            source: &source,
            login_user: principal.login_user,
            credential: principal.credential,
            object_ids: &object_ids,
            status: served.status,
            response_bytes: served
                .http
                .response
                .as_ref()
                .map_or(0, |response| response.body.size),
            response_sensitive: served.response_sensitive,
        };
        for abuse in self
            .rules
            .iter_mut()
            .filter(|abuse| abuse.rule.lane != Lane::Off)
        {
            if let Some(detection) = abuse.check.observe(&observation) {
                findings.push(abuse.finding(
                    served.subject(),
                    "request".to_owned(),
                    detection.evidence,
                ));
            }
        }
    }
}

/// A window in ms, its length clamped to what validation accepts (so never 0).
fn window_ms(secs: u64) -> u64 {
    secs.clamp(1, MAX_WINDOW_SECS) * 1000
}

fn check_range(name: &str, value: u64, min: u64, max: u64) -> Result<(), String> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(format!("{name} must be from {min} to {max}, not {value}"))
    }
}

fn check_factor(name: &str, value: f64, min: f64) -> Result<(), String> {
    if value.is_finite() && (min..=MAX_FACTOR).contains(&value) {
        Ok(())
    } else {
        Err(format!(
            "{name} must be a number from {min} to {MAX_FACTOR} (a multiple of the baseline), not {value}"
        ))
    }
}
