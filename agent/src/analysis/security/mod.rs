//! Security signals: each API call is checked against the active rules (injection payloads,
//! authentication posture and abuse, enumeration, floods, data exposure, SSRF confirmed by the
//! process's own outbound calls, AI traffic), and every match becomes an
//! `api.security.finding` event with the rule's identity, the pack's audit identity, the
//! caller's principal hash and redacted evidence: which part matched and why, never its value.
//!
//! Rules are evaluated by detector families (`family::DetectorFamily`), each in its own
//! module and claiming the matchers it evaluates: the AI-traffic rules (`agentic`), injection
//! payloads (`injection`), SSRF confirmation (`ssrf_confirmation`), authentication posture
//! (`posture`), TLS client fingerprints (`tls_fingerprint`) and the stateful abuse detectors
//! (`abuse`). `families` lists them: adding one is a module and a line there.

pub mod abuse;
pub mod agentic;
mod family;
mod finding;
pub mod injection;
mod posture;
pub mod principal;
pub mod rules;
mod settings;
mod ssrf_confirmation;
mod tls_fingerprint;

use std::sync::Arc;

use super::events::ApiEvent;
use crate::{enrich::EnrichedCall, streams::Connection};

use family::{CallContext, DetectorFamily};
use injection::InjectionDetector;
use principal::PrincipalKeyer;
use rules::{ActiveRules, watch::RuleHandle};

pub use finding::FindingCounts;
pub use settings::SecuritySettings;

/// The detector families. Findings ranked by rule follow the packs' order whatever the family;
/// the others come first, in this order, so that AI-traffic findings lead.
fn families() -> Vec<Box<dyn DetectorFamily>> {
    vec![
        Box::new(agentic::AgenticFamily::default()),
        Box::new(injection::InjectionFamily::default()),
        Box::new(ssrf_confirmation::SsrfConfirmationFamily::default()),
        Box::new(posture::PostureFamily::default()),
        Box::new(tls_fingerprint::TlsFingerprintFamily::default()),
        Box::new(abuse::AbuseFamily::default()),
    ]
}

/// A detector family and whether it claims a rule in force.
struct Registered {
    family: Box<dyn DetectorFamily>,
    active: bool,
}

/// The security stage's state: the rules in force and what the detector families learned.
pub struct SecurityAnalyzer {
    handle: Arc<RuleHandle>,
    rules: Arc<ActiveRules>,
    generation: u64,
    keyer: PrincipalKeyer,
    /// Built once: it compiles its patterns.
    scanner: InjectionDetector,
    families: Vec<Registered>,
    counts: Arc<FindingCounts>,
}

impl std::fmt::Debug for SecurityAnalyzer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecurityAnalyzer")
            .field("rules", &self.rules.audit)
            .field(
                "active_families",
                &self.families.iter().filter(|family| family.active).count(),
            )
            .finish_non_exhaustive()
    }
}

impl SecurityAnalyzer {
    /// An analyzer following the rules of `handle`.
    pub fn new(handle: Arc<RuleHandle>, keyer: PrincipalKeyer, counts: Arc<FindingCounts>) -> Self {
        let rules = handle.current();
        let mut analyzer = Self {
            generation: handle.generation(),
            handle,
            rules: Arc::clone(&rules),
            keyer,
            scanner: InjectionDetector::new(),
            families: families()
                .into_iter()
                .map(|family| Registered {
                    family,
                    active: false,
                })
                .collect(),
            counts,
        };
        analyzer.adopt(rules);
        analyzer
    }

    /// The findings of one call, answered as `route` (when known) with `response_sensitive`
    /// sensitive-data findings in its response.
    pub fn assess(
        &mut self,
        call: &EnrichedCall,
        route: Option<&str>,
        response_sensitive: u32,
        now_ms: u64,
    ) -> Vec<ApiEvent> {
        if self.handle.generation() != self.generation {
            self.generation = self.handle.generation();
            self.adopt(self.handle.current());
        }
        if self.rules.kill_switch {
            return Vec::new();
        }
        let context = CallContext::new(
            call,
            route,
            response_sensitive,
            now_ms,
            &self.keyer,
            &self.scanner,
        );
        let mut findings = Vec::new();
        for registered in self.families.iter_mut().filter(|family| family.active) {
            registered.family.judge(&context, &mut findings);
        }
        // Stable: what a family found together stays in the order it found it.
        findings.sort_by_key(|finding| finding.order);
        findings
            .iter()
            .map(|finding| {
                self.counts.add(&finding.rule);
                finding.event(&self.rules.audit, now_ms)
            })
            .collect()
    }

    /// An outbound connection the kernel saw a process open: the evidence that confirms an
    /// SSRF its request asked for, whatever protocol the connection then speaks.
    pub fn connected(&mut self, connection: &Connection, now_ms: u64) {
        if self.rules.kill_switch {
            return;
        }
        for registered in self.families.iter_mut().filter(|family| family.active) {
            registered.family.connected(connection, now_ms);
        }
    }

    /// Takes a new rule set; each family keeps what it learned for the rules whose matcher did
    /// not change (a lane or title edit does not forget a baseline).
    fn adopt(&mut self, rules: Arc<ActiveRules>) {
        for registered in &mut self.families {
            registered.active = registered.family.adopt(&rules.rules);
        }
        self.rules = rules;
    }
}

#[cfg(test)]
mod tests;
