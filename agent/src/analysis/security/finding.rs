//! What the detector families find, and how it is reported: each match of a rule becomes one
//! `api.security.finding` event naming the rule, the rule set's audit identity, the caller's
//! principal hash and where and why it matched, never the value that did.

use std::{
    collections::BTreeMap,
    net::IpAddr,
    sync::{Arc, Mutex, PoisonError},
};

use opentelemetry::KeyValue;

use super::{
    principal::{Principal, PrincipalKind},
    rules::{Audit, Lane, Rule, RuleSeverity},
};
use crate::{
    analysis::events::{self, ApiEvent, ServiceRef, Severity},
    enrich::EnrichedCall,
};

/// Findings per rule and lane since start, for the agent's own metrics.
#[derive(Debug, Default)]
pub struct FindingCounts {
    counts: Mutex<BTreeMap<(String, &'static str), u64>>,
}

impl FindingCounts {
    /// (rule id, lane, findings) for every rule that found something.
    pub fn snapshot(&self) -> Vec<(String, &'static str, u64)> {
        self.counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|((rule, lane), count)| (rule.clone(), *lane, *count))
            .collect()
    }

    /// Counts one finding of `rule`.
    pub(super) fn add(&self, rule: &Rule) {
        // Rules are bounded by the packs, so this map is too.
        *self
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry((rule.id.to_string(), rule.lane.name()))
            .or_default() += 1;
    }
}

/// The endpoint a finding is about.
#[derive(Debug, Clone)]
pub(super) struct Endpoint {
    /// `http.request.method`, or `MCP` for an MCP exchange.
    pub method: String,
    /// `http.route`: the route template, else the path; for MCP the method and its target.
    pub route: String,
}

impl Endpoint {
    /// `api.endpoint`: `GET /orders/{id}`.
    pub fn name(&self) -> String {
        format!("{} {}", self.method, self.route)
    }
}

/// Whom and what a finding is about: what all the findings of one call share, built once per
/// call that has any.
#[derive(Debug, Clone)]
pub(super) struct Subject {
    /// The service that served (or made) the call.
    pub service: Arc<ServiceRef>,
    /// The endpoint called.
    pub endpoint: Endpoint,
    /// Who called it.
    pub principal: Principal,
    /// The client's address (`client.address`), when it is the one to name.
    pub source: Option<IpAddr>,
}

/// The service of `call`, as events name it.
pub(super) fn service(call: &EnrichedCall) -> Arc<ServiceRef> {
    Arc::new(ServiceRef {
        name: call.workload.service_name.clone(),
        namespace: call.workload.service_namespace().map(str::to_owned),
    })
}

/// Where a finding goes among the findings of its call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Order {
    /// In the order its family found it, ahead of the findings ranked by rule: a family that
    /// finds matches for several rules at once (AI traffic, an SSRF an outbound call
    /// confirms) reports them as found, and families listed earlier report first.
    Found,
    /// At the position of its rule among the active rules: the findings of rules judged one by
    /// one follow the packs' order, whichever family judged them.
    Rule(usize),
}

/// One match of one rule, before it becomes an event.
#[derive(Debug)]
pub(super) struct Finding {
    /// Where it goes among the call's findings.
    pub order: Order,
    /// The rule that matched.
    pub rule: Arc<Rule>,
    /// Whom and what it is about.
    pub subject: Arc<Subject>,
    /// Which part matched: `query:q`, `header:authorization`, `request`, ...
    pub location: String,
    /// Why it matched, never the value itself.
    pub evidence: String,
}

impl Finding {
    /// The event that reports the finding, raised at `now_ms` under the rule set of `audit`.
    pub fn event(&self, audit: &Audit, now_ms: u64) -> ApiEvent {
        let Self {
            rule,
            subject,
            location,
            evidence,
            ..
        } = self;
        let Subject {
            service,
            endpoint,
            principal,
            source,
        } = subject.as_ref();
        let mut attributes = vec![
            KeyValue::new("security_rule.uuid", rule.uuid.clone()),
            KeyValue::new("security_rule.name", rule.id.to_string()),
            KeyValue::new("security_rule.version", rule.version.to_string()),
            KeyValue::new("security_rule.category", rule.category.clone()),
            KeyValue::new("security_rule.description", rule.title.clone()),
            KeyValue::new("security_rule.ruleset.name", rule.ruleset.clone()),
            KeyValue::new("security_rule.reference", rule.references.url()),
            KeyValue::new("apiscope.rule.references", rule.references.text()),
            KeyValue::new("apiscope.rule.severity", rule.severity.name()),
            KeyValue::new("apiscope.rule.lane", rule.lane.name()),
            KeyValue::new("apiscope.rules.sha256", audit.sha256.clone()),
            KeyValue::new("apiscope.rules.version", audit.version.clone()),
            KeyValue::new("api.endpoint", endpoint.name()),
            KeyValue::new("http.request.method", endpoint.method.clone()),
            KeyValue::new("http.route", endpoint.route.clone()),
            KeyValue::new("apiscope.principal.hash", principal.hash.clone()),
            KeyValue::new("apiscope.principal.kind", principal.kind.name()),
            KeyValue::new("apiscope.finding.location", location.clone()),
            KeyValue::new("apiscope.finding.evidence", evidence.clone()),
        ];
        if principal.kind == PrincipalKind::Jwt {
            attributes.push(KeyValue::new("apiscope.principal.claimed", true));
        }
        if let Some(source) = source {
            attributes.push(KeyValue::new("client.address", source.to_string()));
        }
        ApiEvent {
            name: events::SECURITY_FINDING,
            service: Arc::clone(service),
            severity: match rule.lane {
                Lane::Monitor => Severity::Info,
                _ => severity(rule.severity),
            },
            time_ms: now_ms,
            body: format!(
                "{}: {evidence} at {location} of {} {}",
                rule.id,
                service.name,
                endpoint.name()
            ),
            attributes,
        }
    }
}

fn severity(severity: RuleSeverity) -> Severity {
    match severity {
        RuleSeverity::Low => Severity::Info,
        RuleSeverity::Medium => Severity::Warn,
        RuleSeverity::High => Severity::Error,
        RuleSeverity::Critical => Severity::Fatal,
    }
}
