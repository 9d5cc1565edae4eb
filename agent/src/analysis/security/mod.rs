//! Security signals: each served API call is checked against the active rules (injection
//! payloads, authentication posture and abuse, enumeration, floods, data exposure, SSRF
//! confirmed by the process's own outbound calls), and every match becomes an
//! `api.security.finding` event with the rule's identity, the pack's audit identity, the
//! caller's principal hash and redacted evidence: which part matched and why, never its value.

pub mod abuse;
pub mod agentic;
pub mod injection;
mod posture;
pub mod principal;
pub mod rules;
mod settings;
mod ssrf_confirmation;

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    sync::{Arc, Mutex, PoisonError},
};

use opentelemetry::KeyValue;

use super::events::{self, ApiEvent, ServiceRef, Severity};
use crate::{
    calls::Side,
    enrich::EnrichedCall,
    protocols::{genai::GenAiCall, http::HttpExchange, mcp::McpCall},
    streams::Connection,
};

pub use settings::SecuritySettings;

use abuse::{AbuseDetector, Observation};
use agentic::{AgenticDetector, AgenticMatch, AgenticSettings};
use injection::{InjectionClass, InjectionDetector, InjectionMatch};
use posture::AuthHabits;
use principal::{Principal, PrincipalKeyer};
use rules::{ActiveRules, Lane, Matcher, Rule, RuleId, RuleSeverity, watch::RuleHandle};
use ssrf_confirmation::{Outbound, SsrfTracker};

/// How far apart the kernel's and analysis's views of "when" may be (ms).
const CLOCK_SLACK_MS: u64 = 100;
/// Object ids of one request read for enumeration detectors.
const MAX_OBJECT_IDS: usize = 4;

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

    fn add(&self, rule: &Rule) {
        // Rules are bounded by the packs, so this map is too.
        *self
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry((rule.id.to_string(), rule.lane.name()))
            .or_default() += 1;
    }
}

/// What a confirmed SSRF needs to be reported after its request was.
#[derive(Debug, Clone)]
struct SsrfContext {
    rule: Arc<Rule>,
    service: Arc<ServiceRef>,
    endpoint: Endpoint,
    principal: Principal,
    location: String,
}

/// The endpoint a finding is about.
#[derive(Debug, Clone)]
struct Endpoint {
    method: String,
    route: String,
}

impl Endpoint {
    fn name(&self) -> String {
        format!("{} {}", self.method, self.route)
    }
}

/// The security stage's state: the rules in force and what the stateful detectors learned.
pub struct SecurityAnalyzer {
    handle: Arc<RuleHandle>,
    rules: Arc<ActiveRules>,
    generation: u64,
    injection: InjectionDetector,
    keyer: PrincipalKeyer,
    /// The state of each stateful rule, with the matcher it was built for.
    abuse: HashMap<RuleId, (Matcher, Box<dyn AbuseDetector>)>,
    habits: AuthHabits,
    ssrf: SsrfTracker<SsrfContext>,
    agentic: AgenticDetector,
    counts: Arc<FindingCounts>,
}

impl std::fmt::Debug for SecurityAnalyzer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecurityAnalyzer")
            .field("rules", &self.rules.audit)
            .field("stateful_rules", &self.abuse.len())
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
            injection: InjectionDetector::new(),
            keyer,
            abuse: HashMap::new(),
            habits: AuthHabits::default(),
            ssrf: SsrfTracker::default(),
            agentic: AgenticDetector::default(),
            counts,
        };
        analyzer.adopt(rules);
        analyzer
    }

    /// The findings of one call.
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
        let mut events = self.agentic(call, now_ms);
        let Some(http) = call.call.exchange::<HttpExchange>() else {
            return events;
        };
        events.extend(match call.call.side {
            Side::Client => self.outbound(call, http, now_ms),
            Side::Server => self.served(call, http, route, response_sensitive, now_ms),
        });
        events
    }

    /// The findings of the AI-traffic rules, on either end of a model call or MCP exchange.
    fn agentic(&mut self, call: &EnrichedCall, now_ms: u64) -> Vec<ApiEvent> {
        // Asked of every call: most carry neither, and cost nothing more.
        let carries_ai =
            call.call.layer::<GenAiCall>().is_some() || call.call.layer::<McpCall>().is_some();
        if !carries_ai {
            return Vec::new();
        }
        let rules = Arc::clone(&self.rules);
        let active: Vec<&Arc<Rule>> = rules
            .rules
            .iter()
            .filter(|rule| rule.lane != Lane::Off && rule.matcher.agentic_detector().is_some())
            .collect();
        if active.is_empty() {
            return Vec::new();
        }
        let mut settings = AgenticSettings::default();
        for rule in &active {
            match &rule.matcher {
                Matcher::ExcessiveAgency(params) => {
                    settings.destructive = &params.destructive;
                    settings.agency_window_ms = params.window_secs.saturating_mul(1_000);
                }
                Matcher::GenaiProviderAllowlist(params) => settings.providers = &params.providers,
                Matcher::McpServerAllowlist(params) => settings.servers = &params.servers,
                _ => {}
            }
        }
        let found = self.agentic.observe(call, &settings, now_ms);
        if found.is_empty() {
            return Vec::new();
        }
        let service = Arc::new(ServiceRef {
            name: call.workload.service_name.clone(),
            namespace: call.workload.service_namespace().map(str::to_owned),
        });
        let (endpoint, principal, source) = self.ai_context(call);
        let findings: Vec<Finding<'_>> = found
            .iter()
            .flat_map(
                |AgenticMatch {
                     detector,
                     location,
                     evidence,
                 }| {
                    active
                        .iter()
                        .filter(|rule| rule.matcher.agentic_detector() == Some(*detector))
                        .map(|rule| Finding {
                            rule,
                            location: location.clone(),
                            evidence: evidence.clone(),
                        })
                },
            )
            .collect();
        findings
            .iter()
            .map(|finding| self.event(finding, &service, &endpoint, &principal, source, now_ms))
            .collect()
    }

    /// The endpoint, principal and client address an AI-traffic finding names: an MCP
    /// exchange's endpoint is `MCP {method} {target}`; a stdio exchange's caller is the agent
    /// process that started the server.
    fn ai_context(&self, call: &EnrichedCall) -> (Endpoint, Principal, Option<IpAddr>) {
        let source = call.call.connection.peer.map(|peer| peer.ip());
        let mcp_endpoint = call.call.layer::<McpCall>().map(|mcp| Endpoint {
            method: "MCP".to_owned(),
            route: match &mcp.target {
                Some(target) => format!("{} {target}", mcp.method),
                None => mcp.method.clone(),
            },
        });
        match (call.call.exchange::<HttpExchange>(), mcp_endpoint) {
            (Some(http), endpoint) => {
                let endpoint = endpoint.unwrap_or_else(|| Endpoint {
                    method: http.request.method.clone(),
                    route: http.request.path().to_owned(),
                });
                (
                    endpoint,
                    self.keyer.principal(&http.request, source),
                    source,
                )
            }
            // Over pipes, the agent process that started the server is the caller.
            (None, endpoint) => {
                let agent = agentic::agent_name(call);
                let endpoint = endpoint.unwrap_or_else(|| Endpoint {
                    method: "MCP".to_owned(),
                    route: String::new(),
                });
                (endpoint, self.keyer.process(&agent), None)
            }
        }
    }

    /// Takes a new rule set, keeping the state of every stateful rule whose matcher did not
    /// change (a lane or title edit does not forget a baseline).
    fn adopt(&mut self, rules: Arc<ActiveRules>) {
        let mut kept = HashMap::new();
        for rule in &rules.rules {
            let Some(params) = rule.matcher.abuse_params() else {
                continue;
            };
            let state = match self.abuse.remove(&rule.id) {
                Some((matcher, state)) if matcher == rule.matcher => (matcher, state),
                _ => (rule.matcher.clone(), abuse::detector(&params)),
            };
            kept.insert(rule.id.clone(), state);
        }
        self.abuse = kept;
        self.rules = rules;
    }

    /// An outbound connection the kernel saw a process open: the evidence that confirms an
    /// SSRF its request asked for, whatever protocol the connection then speaks.
    pub fn connected(&mut self, connection: &Connection, now_ms: u64) {
        if self.rules.kill_switch {
            return;
        }
        self.ssrf.remember(Outbound {
            pid: connection.pid,
            peer: connection.peer.map(|peer| (peer.ip(), peer.port())),
            host: None,
            at_ms: now_ms,
        });
    }

    /// A call this host's process made: it may confirm an SSRF a request of the same process
    /// asked for.
    fn outbound(&mut self, call: &EnrichedCall, http: &HttpExchange, now_ms: u64) -> Vec<ApiEvent> {
        let outbound = Outbound {
            pid: call.call.connection.pid,
            peer: call
                .call
                .connection
                .peer
                .map(|peer| (peer.ip(), peer.port())),
            host: http
                .request
                .host()
                .map(|(host, _)| host.to_ascii_lowercase()),
            at_ms: now_ms,
        };
        let confirmed = self.ssrf.outbound(outbound);
        confirmed
            .into_iter()
            .map(|context| {
                let finding = Finding {
                    rule: &context.rule,
                    location: context.location.clone(),
                    evidence: "the serving process called the address within the window, after the request".to_owned(),
                };
                self.event(&finding, &context.service, &context.endpoint, &context.principal, None, now_ms)
            })
            .collect()
    }

    fn served(
        &mut self,
        call: &EnrichedCall,
        http: &HttpExchange,
        route: Option<&str>,
        response_sensitive: u32,
        now_ms: u64,
    ) -> Vec<ApiEvent> {
        let request = &http.request;
        if request.method.is_empty() {
            return Vec::new();
        }
        let source = call.call.connection.peer.map(|peer| peer.ip());
        let principal = self.keyer.principal(request, source);
        let endpoint = Endpoint {
            method: request.method.clone(),
            route: route.unwrap_or_else(|| request.path()).to_owned(),
        };
        let service = Arc::new(ServiceRef {
            name: call.workload.service_name.clone(),
            namespace: call.workload.service_namespace().map(str::to_owned),
        });
        let status = http.response.as_ref().map_or(0, |response| response.status);
        let rules = Arc::clone(&self.rules);
        let wants_injection = rules.rules.iter().any(|rule| {
            rule.lane != Lane::Off
                && matches!(
                    rule.matcher,
                    Matcher::Injection(_) | Matcher::SsrfConfirmed(_)
                )
        });
        let injections = if wants_injection {
            self.scan(http)
        } else {
            Vec::new()
        };
        let object_ids = object_ids(&self.keyer, request.path(), &endpoint.route);
        let endpoint_name = endpoint.name();
        let source_text = source.map_or_else(|| "unknown".to_owned(), |ip| ip.to_string());
        let observation = Observation {
            now_ms,
            service: &service.name,
            endpoint: &endpoint_name,
            principal: &principal.id,
            source: &source_text,
            login_user: principal.login_user,
            credential: principal.credential,
            object_ids: &object_ids,
            status,
            response_bytes: http
                .response
                .as_ref()
                .map_or(0, |response| response.body.size),
            response_sensitive,
        };
        let mut findings = Vec::new();
        for rule in rules.rules.iter().filter(|rule| rule.lane != Lane::Off) {
            let found = match &rule.matcher {
                Matcher::Injection(params) => injections
                    .iter()
                    .filter(|found| params.classes.contains(&found.class))
                    .map(|found| (found.location.clone(), found.evidence.clone()))
                    .next(),
                Matcher::SsrfConfirmed(params) => {
                    let context = |location: &str| SsrfContext {
                        rule: Arc::clone(rule),
                        service: Arc::clone(&service),
                        endpoint: endpoint.clone(),
                        principal: principal.clone(),
                        location: location.to_owned(),
                    };
                    // Only what the process did once the request had arrived is its doing.
                    let window_start =
                        now_ms.saturating_sub(call_duration_ms(call) + CLOCK_SLACK_MS);
                    injections
                        .iter()
                        .filter(|found| found.class == InjectionClass::Ssrf)
                        .filter_map(|found| Some((found, found.target.as_ref()?)))
                        .find(|(found, target)| {
                            self.ssrf.request(
                                call.call.connection.pid,
                                target,
                                window_start,
                                now_ms + params.window_ms,
                                context(&found.location),
                            )
                        })
                        .map(|(found, _)| {
                            (
                                found.location.clone(),
                                "the serving process had called the address the parameter names"
                                    .to_owned(),
                            )
                        })
                }
                Matcher::JwtAlgNone => principal
                    .jwt
                    .as_ref()
                    .filter(|claims| {
                        claims
                            .alg
                            .as_deref()
                            .is_some_and(|alg| alg.eq_ignore_ascii_case("none"))
                            && (status == 0 || (200..400).contains(&status))
                    })
                    .map(|_| {
                        (
                            "header:authorization".to_owned(),
                            format!("JWT header alg none, answered {status}"),
                        )
                    }),
                Matcher::JwtWithoutExpiry => principal
                    .jwt
                    .as_ref()
                    .filter(|claims| !claims.expires)
                    .map(|_| {
                        (
                            "header:authorization".to_owned(),
                            "JWT payload has no exp".to_owned(),
                        )
                    }),
                Matcher::BasicOverPlaintext => (posture::sends_basic(request) && !call.call.tls)
                    .then(|| {
                        (
                            "header:authorization".to_owned(),
                            "Basic credentials on a plaintext connection".to_owned(),
                        )
                    }),
                Matcher::TlsFingerprint(params) => call
                    .call
                    .connection
                    .tls_client_ja4
                    .as_deref()
                    .filter(|ja4| {
                        params
                            .ja4
                            .iter()
                            .any(|listed| listed.eq_ignore_ascii_case(ja4))
                    })
                    .map(|ja4| {
                        (
                            "tls:client_hello".to_owned(),
                            format!("JA4 {ja4} is listed"),
                        )
                    }),
                Matcher::CredentialsInQuery => posture::credential_in_query(request).map(|name| {
                    (
                        format!("query:{name}"),
                        "a credential-named parameter carries a value".to_owned(),
                    )
                }),
                Matcher::UnauthenticatedSuccess(params) => self
                    .habits
                    .unauthenticated_success(
                        &format!("{}\u{0}{endpoint_name}", service.name),
                        posture::sends_credentials(request),
                        status,
                        params.min_calls,
                        params.auth_ratio,
                    )
                    .map(|evidence| ("request".to_owned(), evidence)),
                _ => self
                    .abuse
                    .get_mut(&rule.id)
                    .and_then(|(_, state)| state.observe(&observation))
                    .map(|detection| ("request".to_owned(), detection.evidence)),
            };
            if let Some((location, evidence)) = found {
                findings.push(Finding {
                    rule,
                    location,
                    evidence,
                });
            }
        }
        findings
            .iter()
            .map(|finding| self.event(finding, &service, &endpoint, &principal, source, now_ms))
            .collect()
    }

    fn scan(&self, http: &HttpExchange) -> Vec<InjectionMatch> {
        let request = &http.request;
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
        self.injection.scan_request(
            &request.target,
            &headers,
            &request.body.captured,
            request.header_str("content-type"),
            &mut found,
        );
        found
    }

    fn event(
        &self,
        finding: &Finding<'_>,
        service: &Arc<ServiceRef>,
        endpoint: &Endpoint,
        principal: &Principal,
        source: Option<IpAddr>,
        now_ms: u64,
    ) -> ApiEvent {
        let rule = finding.rule;
        self.counts.add(rule);
        let audit = &self.rules.audit;
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
            KeyValue::new("apiscope.finding.location", finding.location.clone()),
            KeyValue::new("apiscope.finding.evidence", finding.evidence.clone()),
        ];
        if principal.kind == principal::PrincipalKind::Jwt {
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
                "{}: {} at {} of {} {}",
                rule.id,
                finding.evidence,
                finding.location,
                service.name,
                endpoint.name()
            ),
            attributes,
        }
    }
}

/// One match of one rule, before it becomes an event.
struct Finding<'a> {
    rule: &'a Arc<Rule>,
    location: String,
    evidence: String,
}

fn severity(severity: RuleSeverity) -> Severity {
    match severity {
        RuleSeverity::Low => Severity::Info,
        RuleSeverity::Medium => Severity::Warn,
        RuleSeverity::High => Severity::Error,
        RuleSeverity::Critical => Severity::Fatal,
    }
}

/// Keyed hashes of the path segments the route templates (`/orders/{id}` of `/orders/42`).
fn object_ids(keyer: &PrincipalKeyer, path: &str, route: &str) -> Vec<u64> {
    path.split('/')
        .zip(route.split('/'))
        .filter(|(_, template)| template.starts_with('{') && template.ends_with('}'))
        .take(MAX_OBJECT_IDS)
        .map(|(segment, _)| keyer.hash(segment.as_bytes()))
        .collect()
}

/// How long the call took, in ms: the window in which its process's own calls belong to it.
fn call_duration_ms(call: &EnrichedCall) -> u64 {
    call.call.end_ns.saturating_sub(call.call.start_ns) / 1_000_000
}

#[cfg(test)]
mod tests;
