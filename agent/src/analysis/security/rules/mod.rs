//! The rule engine's rules: packs in YAML (a built-in default pack, then the user's packs,
//! which override rules by id), merged into the active rule set with its audit identity (the
//! packs' SHA-256 and versions). Packs are validated whole before they replace the active set.

#[doc(hidden)]
pub mod fuzzing;
mod pack;
pub mod watch;

use std::{fmt::Write as _, path::Path, sync::Arc};

use serde::Deserialize;

use super::{
    abuse::{
        AuthFailureParams, BolaParams, CredentialStuffingParams, ExposureParams, RateParams,
        RegularityParams, TokenSpreadParams,
    },
    injection::InjectionClass,
};
use crate::settings_format::yaml_error;

pub use pack::RuleId;
use pack::{MAX_RULES, PackFile, RuleEntry};

/// The default pack, built into the agent.
const DEFAULT_PACK: &str = include_str!("default.yaml");
/// How the default pack is named in errors and audit records.
const DEFAULT_PACK_NAME: &str = "<built-in default pack>";

/// What happens when a rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Lane {
    /// A finding is raised at the rule's severity.
    Alert,
    /// A finding is raised at informational severity, to see how a rule would behave before
    /// it alerts.
    Monitor,
    /// The rule is not evaluated.
    Off,
}

impl Lane {
    /// The lane's name, as packs write it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Alert => "alert",
            Self::Monitor => "monitor",
            Self::Off => "off",
        }
    }
}

/// How severe a rule's findings are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleSeverity {
    /// Worth knowing.
    Low,
    /// Worth a look.
    Medium,
    /// Worth acting on.
    High,
    /// Act now.
    Critical,
}

impl RuleSeverity {
    /// The severity's name, as packs write it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
            Self::Critical => "critical",
        }
    }
}

/// What a rule refers to: its OWASP API Security Top 10 2023 item and, where it applies, the
/// PCI DSS requirements and GDPR articles it gives evidence for.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct References {
    /// `API1:2023` ... `API10:2023`.
    #[serde(deserialize_with = "owasp_item")]
    pub owasp_api: String,
    /// The OWASP Top 10 for LLM Applications 2025 item, `LLM01:2025` ... `LLM10:2025`, for
    /// the rules about AI traffic.
    #[serde(default, deserialize_with = "owasp_llm_item")]
    pub owasp_llm: Option<String>,
    /// PCI DSS v4.0 requirements, e.g. `6.4.1`.
    #[serde(default)]
    pub pci_dss: Vec<String>,
    /// GDPR articles, e.g. `Art. 32`.
    #[serde(default)]
    pub gdpr: Vec<String>,
}

/// The OWASP API Security Top 10 2023 items, by number: the page each one has.
const OWASP_API_2023: [&str; 10] = [
    "0xa1-broken-object-level-authorization",
    "0xa2-broken-authentication",
    "0xa3-broken-object-property-level-authorization",
    "0xa4-unrestricted-resource-consumption",
    "0xa5-broken-function-level-authorization",
    "0xa6-unrestricted-access-to-sensitive-business-flows",
    "0xa7-server-side-request-forgery",
    "0xa8-security-misconfiguration",
    "0xa9-improper-inventory-management",
    "0xaa-unsafe-consumption-of-apis",
];

fn owasp_item<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    let item = String::deserialize(deserializer)?;
    owasp_page(&item).map(|_| item.clone()).ok_or_else(|| {
        serde::de::Error::custom(format!(
            "owasp_api `{item}`: expected API1:2023 to API10:2023"
        ))
    })
}

fn owasp_llm_item<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<String>, D::Error> {
    let item = String::deserialize(deserializer)?;
    let number: Option<u32> = item
        .strip_prefix("LLM")
        .and_then(|rest| rest.strip_suffix(":2025"))
        .and_then(|number| number.parse().ok());
    match number {
        Some(1..=10) if item.len() == "LLM01:2025".len() => Ok(Some(item)),
        _ => Err(serde::de::Error::custom(format!(
            "owasp_llm `{item}`: expected LLM01:2025 to LLM10:2025"
        ))),
    }
}

/// The page of an OWASP API Security Top 10 2023 item (`API1:2023`).
fn owasp_page(item: &str) -> Option<&'static str> {
    let number: usize = item
        .strip_prefix("API")?
        .strip_suffix(":2023")?
        .parse()
        .ok()?;
    OWASP_API_2023.get(number.checked_sub(1)?).copied()
}

impl References {
    /// The OWASP page of the rule's item (`security_rule.reference`).
    pub fn url(&self) -> String {
        let page = owasp_page(&self.owasp_api).unwrap_or_default();
        format!("https://owasp.org/API-Security/editions/2023/en/{page}/")
    }

    /// Every reference in one line: `OWASP API1:2023; PCI DSS 6.4.1; GDPR Art. 32`.
    pub fn text(&self) -> String {
        let mut text = format!("OWASP {}", self.owasp_api);
        if let Some(item) = &self.owasp_llm {
            let _ = write!(text, "; OWASP {item}");
        }
        for requirement in &self.pci_dss {
            let _ = write!(text, "; PCI DSS {requirement}");
        }
        for article in &self.gdpr {
            let _ = write!(text, "; GDPR {article}");
        }
        text
    }
}

/// What a rule matches: one detector and its parameters (`match: {detector: bola, ...}`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "detector", rename_all = "snake_case")]
pub enum Matcher {
    /// Injection payloads of these classes in the request.
    Injection(InjectionParams),
    /// A request naming an address in a URL parameter, to which the serving process then
    /// connects.
    SsrfConfirmed(SsrfParams),
    /// A JWT whose header says `alg: none`.
    JwtAlgNone,
    /// A JWT without `exp`.
    JwtWithoutExpiry,
    /// Basic credentials sent in plaintext.
    BasicOverPlaintext,
    /// Credentials in the query string.
    CredentialsInQuery,
    /// A 2xx without credentials from an endpoint that almost always gets them.
    UnauthenticatedSuccess(UnauthenticatedParams),
    /// Enumeration of object ids.
    Bola(BolaParams),
    /// Bursts of 401 and 403.
    AuthFailures(AuthFailureParams),
    /// Many usernames tried from one source.
    CredentialStuffing(CredentialStuffingParams),
    /// One credential used from many sources.
    TokenSpread(TokenSpreadParams),
    /// Request rates far above their baseline.
    Rate(RateParams),
    /// Responses far larger, or with far more sensitive data, than their endpoint's baseline.
    Exposure(ExposureParams),
    /// Calls of one principal to one endpoint at machine-regular intervals.
    Regularity(RegularityParams),
    /// A TLS client whose ClientHello fingerprint is on a list.
    TlsFingerprint(TlsFingerprintParams),
    /// Prompt-injection markers in model messages and answers, and in tool results.
    PromptInjection,
    /// Directives hidden in an MCP tool's description.
    McpToolPoisoning,
    /// An MCP tool whose description or input schema changed after it was first seen.
    McpToolChanged,
    /// A destructive tool call right after the agent read injection markers.
    ExcessiveAgency(ExcessiveAgencyParams),
    /// A model call to a provider not on the allowlist.
    GenaiProviderAllowlist(ProviderAllowlistParams),
    /// An MCP exchange with a server not on the allowlist.
    McpServerAllowlist(ServerAllowlistParams),
}

/// `detector: genai_provider_allowlist`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderAllowlistParams {
    /// The `gen_ai.provider.name`s workloads may call (`openai`, `anthropic`, ...); empty:
    /// any (the rule is off until a pack names some).
    pub providers: Vec<String>,
}

/// `detector: mcp_server_allowlist`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerAllowlistParams {
    /// Globs of the MCP servers workloads may use, matched against the server as the inventory
    /// names it (`mcp.example.com/mcp`, `stdio:<service>:<digest>`) and against the name its
    /// `initialize` answer gave; empty: any.
    pub servers: Vec<String>,
}

/// `detector: excessive_agency`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExcessiveAgencyParams {
    /// Words of tool names (`delete` matches `delete_file` and `deleteFile`) and phrases of
    /// tool arguments (`rm -rf`, with a space) that name destructive operations.
    pub destructive: Vec<String>,
    /// How long after reading injection markers an agent's destructive call counts.
    #[serde(default = "default_agency_window")]
    pub window_secs: u64,
}

fn default_agency_window() -> u64 {
    300
}

/// `detector: tls_fingerprint`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFingerprintParams {
    /// JA4 fingerprints (`t13d1516h2_8daaf6152771_b0da82dd1658`) of the clients to flag.
    pub ja4: Vec<String>,
}

/// True for text shaped as a JA4 fingerprint: a 10-character first part, then two 12-digit
/// hex hashes.
fn is_ja4(text: &str) -> bool {
    let mut parts = text.split('_');
    let hashed = |part: Option<&str>| {
        part.is_some_and(|part| part.len() == 12 && part.bytes().all(|b| b.is_ascii_hexdigit()))
    };
    parts
        .next()
        .is_some_and(|a| a.len() == 10 && a.bytes().all(|b| b.is_ascii_alphanumeric()))
        && hashed(parts.next())
        && hashed(parts.next())
        && parts.next().is_none()
}

/// `detector: injection`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InjectionParams {
    /// The classes the rule raises.
    pub classes: Vec<InjectionClass>,
}

/// `detector: ssrf_confirmed`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SsrfParams {
    /// How long after the request (ms) a connection to the named address confirms it.
    #[serde(default = "default_ssrf_window")]
    pub window_ms: u64,
}

fn default_ssrf_window() -> u64 {
    5_000
}

/// `detector: unauthenticated_success`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnauthenticatedParams {
    /// Calls of an endpoint seen before its authentication habit counts.
    #[serde(default = "default_min_calls")]
    pub min_calls: u32,
    /// The share of its calls that carried credentials for the endpoint to "require" them.
    #[serde(default = "default_auth_ratio")]
    pub auth_ratio: f64,
}

fn default_min_calls() -> u32 {
    20
}

fn default_auth_ratio() -> f64 {
    0.95
}

impl Matcher {
    /// The agentic detector's name (`prompt_injection`, ...) when the matcher is one.
    pub fn agentic_detector(&self) -> Option<&'static str> {
        Some(match self {
            Self::PromptInjection => "prompt_injection",
            Self::McpToolPoisoning => "mcp_tool_poisoning",
            Self::McpToolChanged => "mcp_tool_changed",
            Self::ExcessiveAgency(_) => "excessive_agency",
            Self::GenaiProviderAllowlist(_) => "genai_provider_allowlist",
            Self::McpServerAllowlist(_) => "mcp_server_allowlist",
            _ => return None,
        })
    }

    /// Rejects parameters out of range.
    pub(super) fn validate(&self) -> Result<(), String> {
        match self {
            Self::TlsFingerprint(params) => match params.ja4.iter().find(|ja4| !is_ja4(ja4)) {
                Some(bad) => Err(format!(
                    "tls_fingerprint: {bad:?} is not a JA4 fingerprint (like t13d1516h2_8daaf6152771_b0da82dd1658)"
                )),
                None => Ok(()),
            },
            Self::ExcessiveAgency(params)
                if params.destructive.iter().any(|word| word.trim().is_empty())
                    || !(1..=86_400).contains(&params.window_secs) =>
            {
                Err("excessive_agency: `destructive` holds an empty word, or `window_secs` is not 1 to 86400".to_owned())
            }
            Self::McpServerAllowlist(params) => {
                match params.servers.iter().find_map(|glob| globset::Glob::new(glob).err()) {
                    Some(error) => Err(format!("mcp_server_allowlist: {error}")),
                    None => Ok(()),
                }
            }
            Self::Injection(params) if params.classes.is_empty() => {
                Err("injection: `classes` names no class".to_owned())
            }
            Self::SsrfConfirmed(params) if !(1..=60_000).contains(&params.window_ms) => {
                Err("ssrf_confirmed: `window_ms` must be 1 to 60000".to_owned())
            }
            Self::UnauthenticatedSuccess(params)
                if params.min_calls == 0 || !(0.5..=1.0).contains(&params.auth_ratio) =>
            {
                Err(
                    "unauthenticated_success: `min_calls` must be positive and `auth_ratio` 0.5 to 1"
                        .to_owned(),
                )
            }
            Self::Bola(p) => p.validate(),
            Self::AuthFailures(p) => p.validate(),
            Self::CredentialStuffing(p) => p.validate(),
            Self::TokenSpread(p) => p.validate(),
            Self::Rate(p) => p.validate(),
            Self::Exposure(p) => p.validate(),
            Self::Regularity(p) => p.validate(),
            _ => Ok(()),
        }
    }
}

/// One active rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// Unique id (`security_rule.name`).
    pub id: RuleId,
    /// A UUID derived from the id, the same on every agent (`security_rule.uuid`).
    pub uuid: String,
    /// The rule's version.
    pub version: u32,
    /// What it detects, in a sentence.
    pub title: String,
    /// How severe its findings are.
    pub severity: RuleSeverity,
    /// What happens when it matches.
    pub lane: Lane,
    /// Its category (`security_rule.category`), e.g. `injection`.
    pub category: String,
    /// What it refers to.
    pub references: References,
    /// What it matches.
    pub matcher: Matcher,
    /// The pack that defined it last (`security_rule.ruleset.name`).
    pub ruleset: String,
}

/// The identity of the active rule set, logged at every change and attached to every finding
/// as audit evidence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audit {
    /// SHA-256 of the packs' bytes, in load order, hex.
    pub sha256: String,
    /// The packs' names and versions, in load order: `apiscope-default@2026.12.0 +
    /// team-pack@3`.
    pub version: String,
}

/// The merged rules in force.
#[derive(Debug, Clone)]
pub struct ActiveRules {
    /// Every rule, in the order packs defined them.
    pub rules: Vec<Arc<Rule>>,
    /// No rule runs while set.
    pub kill_switch: bool,
    /// What set is active.
    pub audit: Audit,
}

/// A pack that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    /// The file could not be read.
    #[error("{path}: cannot read rule pack: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid pack.
    #[error("{path}:{line}:{column}: {reason}")]
    Invalid {
        /// The file.
        path: String,
        /// 1-based line (0 when unknown).
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        reason: String,
    },
}

impl ActiveRules {
    /// The default pack merged with the user's `packs`, in order.
    pub fn load(packs: &[impl AsRef<Path>]) -> Result<Self, PackError> {
        let mut sources = vec![(DEFAULT_PACK_NAME.to_owned(), DEFAULT_PACK.to_owned())];
        for path in packs {
            let path = path.as_ref();
            let text = std::fs::read_to_string(path).map_err(|source| PackError::Read {
                path: path.display().to_string(),
                source,
            })?;
            sources.push((path.display().to_string(), text));
        }
        Self::from_sources(&sources)
    }

    /// Merges packs given as (name for errors, text).
    fn from_sources(sources: &[(String, String)]) -> Result<Self, PackError> {
        let mut rules: Vec<Rule> = Vec::new();
        let mut kill_switch = false;
        let mut versions = Vec::new();
        let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
        for (path, text) in sources {
            let pack = parse(path, text)?;
            digest.update(&(text.len() as u64).to_le_bytes());
            digest.update(text.as_bytes());
            kill_switch |= pack.kill_switch;
            versions.push(format!("{}@{}", pack.name, pack.version));
            for (index, entry) in pack.rules.into_iter().enumerate() {
                let id = entry.id.clone();
                let invalid = |reason: String| PackError::Invalid {
                    path: path.clone(),
                    line: line_of_id(text, &id),
                    column: 0,
                    reason: format!("rules[{index}] ({id}): {reason}"),
                };
                match rules.iter_mut().find(|rule| rule.id == entry.id) {
                    Some(rule) => apply(rule, entry, &pack.name),
                    None => rules.push(new_rule(entry, &pack.name).map_err(invalid)?),
                }
            }
        }
        let sha256 = digest
            .finish()
            .as_ref()
            .iter()
            .fold(String::new(), |mut hex, byte| {
                let _ = write!(hex, "{byte:02x}");
                hex
            });
        Ok(Self {
            rules: rules.into_iter().map(Arc::new).collect(),
            kill_switch,
            audit: Audit {
                sha256,
                version: versions.join(" + "),
            },
        })
    }

    /// One line for the log: which set is active and how its rules are laned.
    pub fn summary(&self) -> String {
        let count = |lane: Lane| self.rules.iter().filter(|rule| rule.lane == lane).count();
        format!(
            "security rules {} (sha256 {}): {} alert, {} monitor, {} off{}",
            self.audit.version,
            self.audit.sha256,
            count(Lane::Alert),
            count(Lane::Monitor),
            count(Lane::Off),
            if self.kill_switch {
                "; KILL SWITCH ON: no rule runs"
            } else {
                ""
            }
        )
    }
}

fn parse(path: &str, text: &str) -> Result<PackFile, PackError> {
    let pack: PackFile = serde_yaml_ng::from_str(text).map_err(|error| {
        let (line, column, reason) = yaml_error(&error);
        PackError::Invalid {
            path: path.to_owned(),
            line,
            column,
            reason,
        }
    })?;
    if pack.rules.len() > MAX_RULES {
        return Err(PackError::Invalid {
            path: path.to_owned(),
            line: 0,
            column: 0,
            reason: format!("{} rules: at most {MAX_RULES} per pack", pack.rules.len()),
        });
    }
    Ok(pack)
}

/// The 1-based line where a rule of `id` starts (0 when not found): errors found after parsing
/// still point at their rule.
fn line_of_id(text: &str, id: &RuleId) -> usize {
    text.lines()
        .position(|line| {
            let line = line.trim_start().trim_start_matches("- ").trim();
            line.strip_prefix("id:")
                .is_some_and(|value| value.trim().trim_matches(['"', '\'']) == id.as_str())
        })
        .map_or(0, |index| index + 1)
}

/// A rule first defined by `entry`: every field must be there.
fn new_rule(entry: RuleEntry, pack: &str) -> Result<Rule, String> {
    let missing = |field: &str| format!("a new rule needs `{field}`");
    let matcher = entry.matcher.ok_or_else(|| missing("match"))?;
    Ok(Rule {
        uuid: rule_uuid(&entry.id),
        id: entry.id,
        version: entry.version.ok_or_else(|| missing("version"))?,
        title: entry.title.ok_or_else(|| missing("title"))?,
        severity: entry.severity.ok_or_else(|| missing("severity"))?,
        lane: entry.lane.ok_or_else(|| missing("lane"))?,
        category: entry.category.ok_or_else(|| missing("category"))?,
        references: entry.references.ok_or_else(|| missing("references"))?,
        matcher,
        ruleset: pack.to_owned(),
    })
}

/// Overrides what `entry` gives of an existing rule.
fn apply(rule: &mut Rule, entry: RuleEntry, pack: &str) {
    let RuleEntry {
        id: _,
        version,
        title,
        severity,
        lane,
        category,
        references,
        matcher,
    } = entry;
    rule.version = version.unwrap_or(rule.version);
    rule.title = title.unwrap_or_else(|| rule.title.clone());
    rule.severity = severity.unwrap_or(rule.severity);
    rule.lane = lane.unwrap_or(rule.lane);
    rule.category = category.unwrap_or_else(|| rule.category.clone());
    rule.references = references.unwrap_or_else(|| rule.references.clone());
    rule.matcher = matcher.unwrap_or_else(|| rule.matcher.clone());
    rule.ruleset = pack.to_owned();
}

/// A name-based (v5) UUID of the rule id, so every agent and every version of a pack name the
/// rule alike.
fn rule_uuid(id: &RuleId) -> String {
    uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_URL,
        format!("https://apiscope.dev/rules/{id}").as_bytes(),
    )
    .to_string()
}

#[cfg(test)]
mod tests;
