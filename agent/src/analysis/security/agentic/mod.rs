//! Detectors for AI traffic: what rides in the JSON of model calls and MCP exchanges, judged on
//! whichever end of the exchange the agent sees (an agent's own calls to a remote model, a
//! tool server on this host), unlike the API detectors, which judge served calls.
//!
//! - prompt injection: markers ([`prompt`]) in the messages sent to a model, in what a model
//!   answered, and in what a tool returned to an agent (indirect injection);
//! - tool poisoning: directives hidden in an MCP tool's description;
//! - rug pull: a tool whose description or input schema changed after it was first seen, for
//!   the same server (its address and path, or for stdio its command line);
//! - excessive agency: a destructive tool call by an agent that has just read injection
//!   markers (from a model or a tool);
//! - allowlists: a model provider or an MCP server not on the configured list (once per
//!   workload and provider or server).
//!
//! Both ends of an exchange on this host are seen: a finding already raised for the same rule
//! and content within [`REPEAT_WINDOW_MS`] is not raised again.

pub mod prompt;

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use globset::Glob;

use super::{
    family::{CallContext, Claimed, DetectorFamily, claim},
    finding::{self, Endpoint, Finding, Order, Subject},
    rules::{Matcher, Rule},
};
use crate::{
    analysis::mcp_server,
    calls::Side,
    enrich::EnrichedCall,
    protocols::{
        genai::GenAiCall,
        http::HttpExchange,
        mcp::{McpCall, McpOutcome},
    },
};

/// How long a finding stands for the other end's copy of the same exchange.
pub const REPEAT_WINDOW_MS: u64 = 5_000;
/// Tools remembered for rug pulls; beyond it the memory starts over (missing a change, never
/// inventing one).
const MAX_TOOLS: usize = 16_384;
/// Agents remembered as having read injection markers.
const MAX_AGENTS: usize = 4_096;
/// Findings remembered for repeats.
const MAX_RECENT: usize = 4_096;

/// Uses of providers and servers off the allowlists remembered as reported.
const MAX_DISALLOWED: usize = 4_096;

/// The parameters of the agentic rules in force.
#[derive(Debug, Default, Clone, Copy)]
pub struct AgenticSettings<'a> {
    /// Tool-name words and argument phrases of destructive operations.
    pub destructive: &'a [String],
    /// How long a marker read makes an agent suspect, in ms.
    pub agency_window_ms: u64,
    /// The model providers workloads may call; empty: any.
    pub providers: &'a [String],
    /// Globs of the MCP servers workloads may use; empty: any.
    pub servers: &'a [String],
}

/// What an agentic detector found in one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgenticMatch {
    /// The detector: `prompt_injection`, `mcp_tool_poisoning`, `mcp_tool_changed` or
    /// `excessive_agency`.
    pub detector: &'static str,
    /// Where: `request:messages`, `response:content`, `tool:<name>:description`, ...
    pub location: String,
    /// Why, never the text itself.
    pub evidence: String,
}

/// The state of the agentic detectors.
#[derive(Debug, Default)]
pub struct AgenticDetector {
    /// Digest of each tool as first seen, by server and tool name.
    tools: HashMap<(String, String), String>,
    /// When each agent process last read injection markers, in unix ms.
    marked_agents: HashMap<u32, u64>,
    /// Recent findings, by a hash of their content, with when they were raised.
    recent: HashMap<u64, u64>,
    /// The name each MCP server's `initialize` answer gave, by server.
    server_names: HashMap<String, String>,
    /// Workload and provider or server pairs already reported as off the allowlist.
    disallowed: HashSet<String>,
}

/// What one call carries for these detectors.
struct AiExchange<'a> {
    genai: Option<&'a GenAiCall>,
    http: Option<&'a HttpExchange>,
    mcp: Option<&'a McpCall>,
}

impl AgenticDetector {
    /// The matches of one call under the rules' `settings`.
    pub fn observe(
        &mut self,
        call: &EnrichedCall,
        settings: &AgenticSettings<'_>,
        now_ms: u64,
    ) -> Vec<AgenticMatch> {
        let exchange = AiExchange {
            genai: call.call.layer::<GenAiCall>(),
            http: call.call.exchange::<HttpExchange>(),
            mcp: call.call.layer::<McpCall>(),
        };
        let mut found = Vec::new();
        let agent = agent_process(call);
        let workload = &call.workload.service_name;
        if let (Some(genai), Some(http)) = (exchange.genai, exchange.http) {
            self.model_call(http, agent, now_ms, &mut found);
            let provider = genai.provider;
            if !settings.providers.is_empty()
                && !settings.providers.iter().any(|allowed| allowed == provider)
                && self.first_disallowed(workload, provider)
            {
                found.push(AgenticMatch {
                    detector: "genai_provider_allowlist",
                    location: "gen_ai.provider.name".to_owned(),
                    evidence: format!("provider {provider} is not on the allowlist"),
                });
            }
        }
        if let Some(mcp) = exchange.mcp {
            let server = mcp_server::identity(call);
            if let Some((name, _)) = &mcp.server_info {
                self.server_names.insert(server.clone(), name.clone());
            }
            if !settings.servers.is_empty()
                && !self.server_allowed(&server, settings.servers)
                && self.first_disallowed(workload, &server)
            {
                found.push(AgenticMatch {
                    detector: "mcp_server_allowlist",
                    location: "mcp.server".to_owned(),
                    evidence: format!("MCP server {server} is not on the allowlist"),
                });
            }
            self.mcp_exchange(mcp, &server, agent, settings, now_ms, &mut found);
        }
        found.retain(|found| self.first_time(found, now_ms));
        found
    }

    fn model_call(
        &mut self,
        http: &HttpExchange,
        agent: Option<u32>,
        now_ms: u64,
        found: &mut Vec<AgenticMatch>,
    ) {
        let sent = json_text(&http.request.body.captured);
        if let Some(marker) = prompt::scan(&sent) {
            found.push(injection("request:messages", &marker));
        }
        let Some(response) = &http.response else {
            return;
        };
        let mut answered = json_text(&response.body.captured);
        answered.push('\n');
        answered.push_str(&json_text(&response.body.tail));
        if let Some(marker) = prompt::scan(&answered) {
            found.push(injection("response:content", &marker));
            self.mark_agent(agent, now_ms);
        }
    }

    /// True when a glob of `allowed` matches the server or the name it gave.
    fn server_allowed(&self, server: &str, allowed: &[String]) -> bool {
        let name = self.server_names.get(server);
        allowed
            .iter()
            .filter_map(|glob| Glob::new(glob).ok())
            .map(|glob| glob.compile_matcher())
            .any(|glob| glob.is_match(server) || name.is_some_and(|name| glob.is_match(name)))
    }

    /// True the first time `workload` is seen using `what` off an allowlist.
    fn first_disallowed(&mut self, workload: &str, what: &str) -> bool {
        if self.disallowed.len() >= MAX_DISALLOWED {
            self.disallowed.clear();
        }
        self.disallowed.insert(format!("{workload}\u{0}{what}"))
    }

    fn mcp_exchange(
        &mut self,
        mcp: &McpCall,
        server: &str,
        agent: Option<u32>,
        settings: &AgenticSettings<'_>,
        now_ms: u64,
        found: &mut Vec<AgenticMatch>,
    ) {
        if mcp.method == "tools/list" && mcp.outcome == McpOutcome::Result {
            for tool in &mcp.tools {
                if self.tools.len() >= MAX_TOOLS {
                    self.tools.clear();
                }
                let key = (server.to_owned(), tool.name.clone());
                let changed = match self.tools.get_mut(&key) {
                    Some(digest) if *digest == tool.digest => continue,
                    Some(digest) => {
                        *digest = tool.digest.clone();
                        true
                    }
                    None => {
                        self.tools.insert(key, tool.digest.clone());
                        false
                    }
                };
                if changed {
                    found.push(AgenticMatch {
                        detector: "mcp_tool_changed",
                        location: format!("tool:{}", tool.name),
                        evidence: format!(
                            "the description or input schema of tool {} changed since it was first listed by {server}",
                            tool.name
                        ),
                    });
                }
                if let Some(marker) = prompt::scan_tool_description(&tool.description) {
                    found.push(AgenticMatch {
                        detector: "mcp_tool_poisoning",
                        location: format!("tool:{}:description", tool.name),
                        evidence: format!("{}: {}", marker.kind, marker.detail),
                    });
                }
            }
        }
        if mcp.method != "tools/call" {
            return;
        }
        let tool = mcp.target.as_deref().unwrap_or_default();
        if let Some(since) = agent.and_then(|agent| self.marked_agents.get(&agent).copied())
            && now_ms.saturating_sub(since) <= settings.agency_window_ms
            && let Some(operation) =
                destructive_operation(tool, &mcp.arguments, settings.destructive)
        {
            found.push(AgenticMatch {
                detector: "excessive_agency",
                location: format!("tool:{tool}"),
                evidence: format!(
                    "a destructive call ({operation}) {} ms after the agent read injection markers",
                    now_ms.saturating_sub(since)
                ),
            });
        }
        if let Some(marker) = prompt::scan(&mcp.tool_output) {
            found.push(injection(&format!("tool:{tool}:result"), &marker));
            self.mark_agent(agent, now_ms);
        }
    }

    fn mark_agent(&mut self, agent: Option<u32>, now_ms: u64) {
        let Some(agent) = agent else {
            return;
        };
        if self.marked_agents.len() >= MAX_AGENTS {
            self.marked_agents.clear();
        }
        self.marked_agents.insert(agent, now_ms);
    }

    /// False for a match already raised within the repeat window (the other end's copy).
    fn first_time(&mut self, found: &AgenticMatch, now_ms: u64) -> bool {
        use std::hash::BuildHasher;
        let key = foldhash::fast::FixedState::with_seed(0).hash_one((
            found.detector,
            &found.location,
            &found.evidence,
        ));
        if self.recent.len() >= MAX_RECENT {
            self.recent
                .retain(|_, at| now_ms.saturating_sub(*at) <= REPEAT_WINDOW_MS);
        }
        match self.recent.insert(key, now_ms) {
            Some(at) => now_ms.saturating_sub(at) > REPEAT_WINDOW_MS,
            None => true,
        }
    }
}

/// The rules about AI traffic, judged on either end of a model call or MCP exchange.
#[derive(Debug, Default)]
pub(super) struct AgenticFamily {
    detector: AgenticDetector,
    /// Each rule with the detector whose matches it raises.
    rules: Vec<Claimed<&'static str>>,
    parameters: Parameters,
}

/// The parameters the agentic rules in force set: the last rule to set one wins.
#[derive(Debug, Default)]
struct Parameters {
    destructive: Vec<String>,
    agency_window_ms: u64,
    providers: Vec<String>,
    servers: Vec<String>,
}

impl Parameters {
    fn of(rules: &[Claimed<&'static str>]) -> Self {
        let mut parameters = Self::default();
        for claimed in rules {
            match &claimed.rule.matcher {
                Matcher::ExcessiveAgency(params) => {
                    parameters.destructive = params.destructive.clone();
                    parameters.agency_window_ms = params.window_secs.saturating_mul(1_000);
                }
                Matcher::GenaiProviderAllowlist(params) => {
                    parameters.providers = params.providers.clone();
                }
                Matcher::McpServerAllowlist(params) => parameters.servers = params.servers.clone(),
                _ => {}
            }
        }
        parameters
    }

    fn settings(&self) -> AgenticSettings<'_> {
        AgenticSettings {
            destructive: &self.destructive,
            agency_window_ms: self.agency_window_ms,
            providers: &self.providers,
            servers: &self.servers,
        }
    }
}

impl DetectorFamily for AgenticFamily {
    fn adopt(&mut self, rules: &[Arc<Rule>]) -> bool {
        self.rules = claim(rules, Matcher::agentic_detector);
        self.parameters = Parameters::of(&self.rules);
        !self.rules.is_empty()
    }

    fn judge(&mut self, context: &CallContext<'_>, findings: &mut Vec<Finding>) {
        // Asked of every call: most carry neither, and cost nothing more.
        let carries_ai = context.call.call.layer::<GenAiCall>().is_some()
            || context.call.call.layer::<McpCall>().is_some();
        if !carries_ai {
            return;
        }
        let found =
            self.detector
                .observe(context.call, &self.parameters.settings(), context.now_ms);
        if found.is_empty() {
            return;
        }
        let subject = Arc::new(subject(context));
        for AgenticMatch {
            detector,
            location,
            evidence,
        } in found
        {
            for rule in self.rules.iter().filter(|rule| rule.check == detector) {
                findings.push(Finding {
                    order: Order::Found,
                    rule: Arc::clone(&rule.rule),
                    subject: Arc::clone(&subject),
                    location: location.clone(),
                    evidence: evidence.clone(),
                });
            }
        }
    }
}

/// Whom and what an AI-traffic finding is about: an MCP exchange's endpoint is
/// `MCP {method} {target}`; a stdio exchange's caller is the agent process that started the
/// server.
fn subject(context: &CallContext<'_>) -> Subject {
    let call = &context.call.call;
    let source = call.connection.peer.map(|peer| peer.ip());
    let mcp_endpoint = call.layer::<McpCall>().map(|mcp| Endpoint {
        method: "MCP".to_owned(),
        route: match &mcp.target {
            Some(target) => format!("{} {target}", mcp.method),
            None => mcp.method.clone(),
        },
    });
    let (endpoint, principal, source) = match (call.exchange::<HttpExchange>(), mcp_endpoint) {
        (Some(http), endpoint) => {
            let endpoint = endpoint.unwrap_or_else(|| Endpoint {
                method: http.request.method.clone(),
                route: http.request.path().to_owned(),
            });
            (
                endpoint,
                context.keyer.principal(&http.request, source),
                source,
            )
        }
        // Over pipes, the agent process that started the server is the caller.
        (None, endpoint) => {
            let endpoint = endpoint.unwrap_or_else(|| Endpoint {
                method: "MCP".to_owned(),
                route: String::new(),
            });
            (
                endpoint,
                context.keyer.process(&agent_name(context.call)),
                None,
            )
        }
    };
    Subject {
        service: finding::service(context.call),
        endpoint,
        principal,
        source,
    }
}

fn injection(location: &str, marker: &prompt::Marker) -> AgenticMatch {
    AgenticMatch {
        detector: "prompt_injection",
        location: location.to_owned(),
        evidence: format!("{}: {}", marker.kind, marker.detail),
    }
}

/// The agent process of an exchange: the caller when this end made it; for a stdio tool
/// server, the parent that started it.
fn agent_process(call: &EnrichedCall) -> Option<u32> {
    let connection = &call.call.connection;
    match (call.call.side, connection.transport) {
        (Side::Client, _) => Some(connection.pid),
        (Side::Server, crate::streams::Transport::Stdio) => parent_of(connection.pid),
        (Side::Server, crate::streams::Transport::Tcp) => None,
    }
}

/// The name of the agent process of an exchange (its thread name), or `unknown`.
fn agent_name(call: &EnrichedCall) -> String {
    agent_process(call)
        .and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).ok())
        .map_or_else(|| "unknown".to_owned(), |comm| comm.trim().to_owned())
}

/// The parent of `pid`, from `/proc/PID/stat` (after the command name, which may hold spaces
/// and parentheses, come the state and the parent's pid).
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, after_name) = stat.rsplit_once(')')?;
    after_name.split_whitespace().nth(1)?.parse().ok()
}

/// The destructive operation a tool call names, if any: a word of the tool's name (split at
/// `_`, `-`, `.`, `/` and case changes), or a phrase of its arguments.
fn destructive_operation(tool: &str, arguments: &str, destructive: &[String]) -> Option<String> {
    let words: Vec<String> = tool
        .split(['_', '-', '.', '/', ' '])
        .flat_map(split_camel_case)
        .map(|word| word.to_ascii_lowercase())
        .collect();
    let arguments = arguments.to_ascii_lowercase();
    destructive.iter().find_map(|pattern| {
        let pattern = pattern.to_ascii_lowercase();
        if words.contains(&pattern) {
            Some(format!("tool name word `{pattern}`"))
        } else if pattern.contains(' ') && arguments.contains(&pattern) {
            Some(format!("arguments hold `{pattern}`"))
        } else {
            None
        }
    })
}

fn split_camel_case(word: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    for (index, pair) in word.as_bytes().windows(2).enumerate() {
        if let [before, after] = pair
            && before.is_ascii_lowercase()
            && after.is_ascii_uppercase()
        {
            // Both are ASCII, so `index + 1` is a character boundary.
            parts.push(word.get(start..=index).unwrap_or_default());
            start = index + 1;
        }
    }
    parts.push(word.get(start..).unwrap_or_default());
    parts
}

/// The string values and keys of the JSON in `body` (a document, possibly cut, or the events
/// of a stream), decoded and joined by newlines: the text a model or an agent reads, whatever
/// the API's shape. A cut string at the end is left out.
pub fn json_text(body: &[u8]) -> String {
    let mut text = String::new();
    let mut index = 0;
    while let Some(start) = body
        .get(index..)
        .and_then(|rest| rest.iter().position(|byte| *byte == b'"'))
    {
        let start = index + start;
        let mut end = start + 1;
        let mut escaped = false;
        while let Some(byte) = body.get(end) {
            match (escaped, *byte) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => break,
                _ => {}
            }
            end += 1;
        }
        let Some(literal) = body.get(start..=end) else {
            break;
        };
        if let Ok(value) = serde_json::from_slice::<String>(literal) {
            text.push_str(&value);
            text.push('\n');
        }
        index = end + 1;
    }
    text
}

#[cfg(test)]
mod tests;
