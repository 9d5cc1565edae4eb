//! The AI part of the inventory: per workload, the model APIs it calls or serves (provider,
//! model, calls, token totals) and the MCP servers it uses or is (their tools, with the digest
//! of each tool's description and input schema). Shadow AI use shows up here: a workload
//! calling a provider nobody declared.
//!
//! Kept in memory, bounded per workload; a first sighting is an event.

use std::{collections::BTreeMap, sync::Arc};

use opentelemetry::KeyValue;
use serde::Serialize;

use crate::{
    analysis::{
        events::{self, ApiEvent, ServiceRef, Severity},
        mcp_server,
    },
    calls::Side,
    enrich::EnrichedCall,
    protocols::{
        genai::GenAiCall,
        mcp::{McpCall, McpOutcome},
    },
};

/// Models remembered per workload; further ones are not inventoried.
const MAX_MODELS: usize = 256;
/// MCP servers remembered per workload.
const MAX_SERVERS: usize = 64;
/// Tools remembered per MCP server.
const MAX_TOOLS: usize = 256;
/// Workloads remembered.
const MAX_WORKLOADS: usize = 4_096;

/// One workload's use of one model API.
#[derive(Debug, Clone, Serialize)]
pub struct ModelUse {
    /// `gen_ai.provider.name`.
    pub provider: &'static str,
    /// The model asked for (`gen_ai.request.model`), or `unknown`.
    pub model: String,
    /// `client` (the workload called it) or `server` (it served it).
    pub side: &'static str,
    /// Calls seen.
    pub calls: u64,
    /// Input tokens the responses reported.
    pub input_tokens: u64,
    /// Output tokens the responses reported.
    pub output_tokens: u64,
    /// Unix ms of the first call.
    pub first_seen_ms: u64,
    /// Unix ms of the last call.
    pub last_seen_ms: u64,
}

/// One tool of an MCP server.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ToolUse {
    /// SHA-256 of its description and input schema as last listed, hex; none until a listing
    /// is seen (a call of the tool can complete first, on another connection).
    pub digest: Option<String>,
    /// How many times a listing changed it.
    pub changes: u32,
    /// Calls of it seen.
    pub calls: u64,
}

/// One MCP server a workload uses (or, on the serving end, is).
#[derive(Debug, Clone, Serialize)]
pub struct McpServerUse {
    /// Its Host and path on streamable HTTP, or `stdio:` and its service for a stdio server.
    pub server: String,
    /// The name its `initialize` answer gave.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `tcp` or `pipe`.
    pub transport: &'static str,
    /// `client` or `server`.
    pub side: &'static str,
    /// Requests seen.
    pub calls: u64,
    /// Its tools, by name.
    pub tools: BTreeMap<String, ToolUse>,
    /// Unix ms of the last request.
    pub last_seen_ms: u64,
}

/// One workload's AI use.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AiUse {
    /// Model APIs, by `side provider model`.
    pub models: BTreeMap<String, ModelUse>,
    /// MCP servers, by `side server`.
    pub mcp_servers: BTreeMap<String, McpServerUse>,
}

/// Every workload's AI use.
#[derive(Debug, Default)]
pub struct AiInventory {
    workloads: BTreeMap<ServiceRef, AiUse>,
}

/// One workload in the view.
#[derive(Debug, Serialize)]
pub struct AiWorkloadView<'a> {
    /// The workload.
    #[serde(flatten)]
    pub service: &'a ServiceRef,
    /// What it uses.
    #[serde(flatten)]
    pub uses: &'a AiUse,
}

impl AiInventory {
    /// Adds one call; returns the events of what it showed for the first time.
    pub fn observe(&mut self, call: &EnrichedCall, now_ms: u64) -> Vec<ApiEvent> {
        let (genai, mcp) = (call.call.layer::<GenAiCall>(), call.call.layer::<McpCall>());
        if genai.is_none() && mcp.is_none() {
            return Vec::new();
        }
        let service = ServiceRef {
            name: call.workload.service_name.clone(),
            namespace: call.workload.service_namespace().map(str::to_owned),
        };
        if !self.workloads.contains_key(&service) && self.workloads.len() >= MAX_WORKLOADS {
            return Vec::new();
        }
        let side = match call.call.side {
            Side::Client => "client",
            Side::Server => "server",
        };
        let uses = self.workloads.entry(service.clone()).or_default();
        let service = Arc::new(service);
        let mut found = Vec::new();
        if let Some(genai) = genai
            && let Some(event) = observe_model(uses, genai, side, &service, now_ms)
        {
            found.push(event);
        }
        if let Some(mcp) = mcp {
            let server = mcp_server::identity(call);
            let transport = match call.call.connection.transport {
                crate::streams::Transport::Tcp => "tcp",
                crate::streams::Transport::Stdio => "pipe",
            };
            let seen = Sighting {
                server,
                transport,
                side,
            };
            found.extend(observe_mcp(uses, mcp, seen, &service, now_ms));
        }
        found
    }

    /// Every workload, for `/inventory`.
    pub fn view(&self) -> Vec<AiWorkloadView<'_>> {
        self.workloads
            .iter()
            .map(|(service, uses)| AiWorkloadView { service, uses })
            .collect()
    }
}

fn observe_model(
    uses: &mut AiUse,
    genai: &GenAiCall,
    side: &'static str,
    service: &Arc<ServiceRef>,
    now_ms: u64,
) -> Option<ApiEvent> {
    let model = genai
        .request_model
        .clone()
        .unwrap_or_else(|| "unknown".to_owned());
    let key = format!("{side} {} {model}", genai.provider);
    let new = !uses.models.contains_key(&key);
    if new && uses.models.len() >= MAX_MODELS {
        return None;
    }
    let entry = uses.models.entry(key).or_insert_with(|| ModelUse {
        provider: genai.provider,
        model: model.clone(),
        side,
        calls: 0,
        input_tokens: 0,
        output_tokens: 0,
        first_seen_ms: now_ms,
        last_seen_ms: now_ms,
    });
    entry.calls += 1;
    entry.input_tokens += genai.input_tokens.unwrap_or(0);
    entry.output_tokens += genai.output_tokens.unwrap_or(0);
    entry.last_seen_ms = now_ms;
    new.then(|| ApiEvent {
        name: events::AI_MODEL_DISCOVERED,
        service: Arc::clone(service),
        severity: Severity::Info,
        time_ms: now_ms,
        body: format!(
            "{} {} model {model} of {} for the first time",
            service.name,
            if side == "client" { "called" } else { "served" },
            genai.provider
        ),
        attributes: vec![
            KeyValue::new("gen_ai.provider.name", genai.provider),
            KeyValue::new("gen_ai.request.model", model),
            KeyValue::new("apiscope.side", side),
        ],
    })
}

/// Where an MCP exchange was seen.
struct Sighting {
    server: String,
    transport: &'static str,
    side: &'static str,
}

fn observe_mcp(
    uses: &mut AiUse,
    mcp: &McpCall,
    seen: Sighting,
    service: &Arc<ServiceRef>,
    now_ms: u64,
) -> Vec<ApiEvent> {
    let key = format!("{} {}", seen.side, seen.server);
    let new = !uses.mcp_servers.contains_key(&key);
    if new && uses.mcp_servers.len() >= MAX_SERVERS {
        return Vec::new();
    }
    let entry = uses.mcp_servers.entry(key).or_insert_with(|| McpServerUse {
        server: seen.server.clone(),
        name: None,
        transport: seen.transport,
        side: seen.side,
        calls: 0,
        tools: BTreeMap::new(),
        last_seen_ms: now_ms,
    });
    entry.calls += 1;
    entry.last_seen_ms = now_ms;
    if let Some((name, _)) = &mcp.server_info {
        entry.name = Some(name.clone());
    }
    let mut found = Vec::new();
    let event = |name, body: String, attributes| ApiEvent {
        name,
        service: Arc::clone(service),
        severity: Severity::Info,
        time_ms: now_ms,
        body,
        attributes,
    };
    if new {
        found.push(event(
            events::MCP_SERVER_DISCOVERED,
            format!(
                "{} uses MCP server {} for the first time",
                service.name, seen.server
            ),
            vec![
                KeyValue::new("apiscope.mcp.server", seen.server.clone()),
                KeyValue::new("network.transport", seen.transport),
                KeyValue::new("apiscope.side", seen.side),
            ],
        ));
    }
    if mcp.method == "tools/list" && mcp.outcome == McpOutcome::Result {
        for tool in &mcp.tools {
            let room = entry.tools.len() < MAX_TOOLS;
            let listed = match entry.tools.get_mut(&tool.name) {
                Some(known) => known,
                None if room => entry.tools.entry(tool.name.clone()).or_default(),
                None => continue,
            };
            match &listed.digest {
                Some(digest) if *digest != tool.digest => listed.changes += 1,
                Some(_) => continue,
                None => found.push(event(
                    events::MCP_TOOL_DISCOVERED,
                    format!("MCP server {} lists tool {}", seen.server, tool.name),
                    vec![
                        KeyValue::new("apiscope.mcp.server", seen.server.clone()),
                        KeyValue::new("gen_ai.tool.name", tool.name.clone()),
                        KeyValue::new("apiscope.mcp.tool.digest", tool.digest.clone()),
                    ],
                )),
            }
            listed.digest = Some(tool.digest.clone());
        }
    }
    // Counted whether or not a listing named the tool yet: the call may complete before it.
    if mcp.method == "tools/call"
        && let Some(name) = &mcp.target
        && (entry.tools.contains_key(name) || entry.tools.len() < MAX_TOOLS)
    {
        entry.tools.entry(name.clone()).or_default().calls += 1;
    }
    found
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::protocols::mcp::McpTool;

    fn sighting() -> Sighting {
        Sighting {
            server: "127.0.0.1:8000/mcp".into(),
            transport: "tcp",
            side: "client",
        }
    }

    fn listing(digest: &str) -> McpCall {
        let mut call = McpCall::new("tools/list".into());
        call.outcome = McpOutcome::Result;
        call.tools = vec![McpTool {
            name: "add".into(),
            digest: digest.into(),
            description: "adds".into(),
        }];
        call
    }

    fn tool_call() -> McpCall {
        let mut call = McpCall::new("tools/call".into());
        call.outcome = McpOutcome::Result;
        call.target = Some("add".into());
        call
    }

    #[test]
    fn a_tool_call_that_completes_before_its_listing_still_counts() {
        let mut uses = AiUse::default();
        let service = Arc::new(ServiceRef {
            name: "agent".into(),
            namespace: None,
        });
        let mut observe = |call: &McpCall| observe_mcp(&mut uses, call, sighting(), &service, 1);
        // On two connections, the call's response can be decoded before the listing's.
        assert!(
            observe(&tool_call())
                .iter()
                .all(|event| event.name != events::MCP_TOOL_DISCOVERED)
        );
        let found = observe(&listing("d1"));
        assert_eq!(
            found
                .iter()
                .filter(|event| event.name == events::MCP_TOOL_DISCOVERED)
                .count(),
            1
        );
        observe(&tool_call());
        observe(&listing("d2"));
        let server = &uses.mcp_servers["client 127.0.0.1:8000/mcp"];
        let add = &server.tools["add"];
        assert_eq!(add.calls, 2);
        assert_eq!(add.digest.as_deref(), Some("d2"));
        assert_eq!(
            add.changes, 1,
            "the first listing is a discovery, not a change"
        );
    }
}
