//! Events: what analysis has to say about a service beyond its calls (an endpoint discovered,
//! a request that breaks the declared spec, sensitive data seen), exported as OpenTelemetry
//! log records. Events carry names, counts and locations, never the values of a call.

use std::sync::Arc;

use opentelemetry::KeyValue;

/// `event.name` of an endpoint seen for the first time.
pub const ENDPOINT_DISCOVERED: &str = "api.endpoint.discovered";
/// `event.name` of an endpoint of a service with a declared spec that the spec lacks.
pub const ENDPOINT_SHADOW: &str = "api.endpoint.shadow";
/// `event.name` of a call to an operation the spec marks deprecated.
pub const ENDPOINT_ZOMBIE: &str = "api.endpoint.zombie";
/// `event.name` of a declared operation that saw no call within the orphan window.
pub const ENDPOINT_ORPHAN: &str = "api.endpoint.orphan";
/// `event.name` of a request that does not conform to its declared operation.
pub const SCHEMA_VIOLATION: &str = "api.schema.violation";
/// `event.name` of a class of sensitive data seen in a call.
pub const SENSITIVE_DATA_DETECTED: &str = "api.sensitive_data.detected";
/// `event.name` of a security rule's match on a call.
pub const SECURITY_FINDING: &str = "api.security.finding";
/// `event.name` of a workload calling (or serving) a model API it was not seen using before.
pub const AI_MODEL_DISCOVERED: &str = "api.ai.model.discovered";
/// `event.name` of a workload using (or being) an MCP server not seen before.
pub const MCP_SERVER_DISCOVERED: &str = "api.mcp.server.discovered";
/// `event.name` of an MCP server listing a tool not seen before.
pub const MCP_TOOL_DISCOVERED: &str = "api.mcp.tool.discovered";
/// `event.name` of the periodic full inventory of one service.
pub const INVENTORY_SNAPSHOT: &str = "api.inventory.snapshot";

/// A service, as events name it (their OpenTelemetry resource).
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct ServiceRef {
    /// `service.name`.
    pub name: String,
    /// `service.namespace`, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// How much attention an event asks for (OpenTelemetry severity numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// Informational: inventory changes.
    Info,
    /// Worth a look: non-conformance, sensitive data.
    Warn,
    /// Worth acting on: high-severity security findings.
    Error,
    /// Act now: critical security findings.
    Fatal,
}

impl Severity {
    /// The OpenTelemetry `SeverityNumber`.
    pub fn number(self) -> i32 {
        match self {
            Self::Info => 9,
            Self::Warn => 13,
            Self::Error => 17,
            Self::Fatal => 21,
        }
    }

    /// The OpenTelemetry severity text.
    pub fn text(self) -> &'static str {
        match self {
            Self::Info => "INFO",
            Self::Warn => "WARN",
            Self::Error => "ERROR",
            Self::Fatal => "FATAL",
        }
    }
}

/// One event about a service.
#[derive(Debug, Clone)]
pub struct ApiEvent {
    /// `event.name`, one of the constants above.
    pub name: &'static str,
    /// The service it is about.
    pub service: Arc<ServiceRef>,
    /// Its severity.
    pub severity: Severity,
    /// Unix time in milliseconds.
    pub time_ms: u64,
    /// A readable sentence (or, for snapshots, the JSON inventory).
    pub body: String,
    /// Attributes: endpoint, class, location, ...
    pub attributes: Vec<KeyValue>,
}

/// Unix time now, in milliseconds.
pub fn unix_ms_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| {
            u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
        })
}
