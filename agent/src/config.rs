//! The agent's configuration: a YAML file whose every key can also be set by flag or
//! environment variable (see `main.rs`). Unknown keys are errors, so a typo never silently
//! falls back to a default.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use globset::Glob;
use serde::Deserialize;

use crate::export::otlp::OtlpProtocol;

#[doc(hidden)]
pub mod fuzzing;
mod ranges;

/// Everything `apiscope run` can be configured with.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Kernel capture.
    pub capture: CaptureConfig,
    /// Per-connection stream assembly.
    pub streams: StreamsConfig,
    /// Protocol decoding.
    pub decode: DecodeConfig,
    /// Route templating.
    pub routes: RoutesConfig,
    /// Where results go.
    pub export: ExportConfig,
    /// The agent's HTTP endpoints.
    pub server: ServerConfig,
    /// Pod metadata from the Kubernetes API server.
    pub kubernetes: KubernetesConfig,
    /// Which workloads are captured.
    pub selection: SelectionConfig,
    /// The API inventory.
    pub inventory: InventoryConfig,
    /// Security rules.
    pub security: SecurityConfig,
}

/// `security:` section.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct SecurityConfig {
    /// Check calls against the security rules.
    pub enabled: bool,
    /// The user's rule packs, applied in order over the built-in default pack; watched for
    /// changes.
    pub rule_packs: Vec<PathBuf>,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            rule_packs: Vec::new(),
        }
    }
}

/// `inventory:` section.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct InventoryConfig {
    /// Directory of the inventory database (`inventory.sqlite`), kept across restarts.
    pub directory: PathBuf,
    /// Seconds between saves of what changed.
    pub persist_interval_secs: u64,
    /// Seconds between full inventory snapshots (`api.inventory.snapshot` events).
    pub snapshot_interval_secs: u64,
    /// A declared operation without a call for this many seconds is an orphan.
    pub orphan_after_secs: u64,
    /// Endpoints per service; more collapse into one.
    pub max_endpoints_per_service: usize,
    /// Services kept.
    pub max_services: usize,
    /// Declared OpenAPI documents, each bound to the service it describes.
    pub specs: Vec<SpecFile>,
}

impl Default for InventoryConfig {
    fn default() -> Self {
        Self {
            directory: PathBuf::from("/var/lib/apiscope"),
            persist_interval_secs: 30,
            snapshot_interval_secs: 300,
            orphan_after_secs: 86_400,
            max_endpoints_per_service: 1_000,
            max_services: 4_096,
            specs: Vec::new(),
        }
    }
}

/// A declared OpenAPI document (3.0 or 3.1, YAML or JSON) and the service it describes.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SpecFile {
    /// The `service.name` the document describes.
    pub service: String,
    /// The document's path.
    pub file: PathBuf,
}

/// `selection:` section: a process is captured when it matches an `include` rule (or there
/// are none) and no `exclude` rule; a connection likewise by its ports.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct SelectionConfig {
    /// Rules that select what is captured; none means everything.
    pub include: Vec<SelectionRule>,
    /// Rules that exclude what they match, even if included.
    pub exclude: Vec<SelectionRule>,
}

/// One selection rule: it matches when every field it sets matches. A rule matches either
/// processes (by `namespace`, `labels`, `executable`, `cgroup`) or connections (by `port`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(try_from = "RawSelectionRule")]
pub struct SelectionRule {
    /// Kubernetes namespace glob, e.g. `kube-*`.
    pub namespace: Option<Glob>,
    /// Pod labels that must all be present with these values.
    pub labels: BTreeMap<String, String>,
    /// Executable glob: matched against the full path when it contains a `/`, else against
    /// the file name, e.g. `*/sshd` or `nginx`.
    pub executable: Option<Glob>,
    /// Cgroup v2 path glob, e.g. `/system.slice/*`.
    pub cgroup: Option<Glob>,
    /// TCP port, local or peer.
    pub port: Option<u16>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSelectionRule {
    namespace: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    executable: Option<String>,
    cgroup: Option<String>,
    port: Option<u16>,
}

impl TryFrom<RawSelectionRule> for SelectionRule {
    type Error = String;

    fn try_from(raw: RawSelectionRule) -> Result<Self, String> {
        // The parser places errors of a list's items at the list's start: naming the rule's
        // fields tells which item is meant.
        let fields = raw.describe();
        let glob = |field: &str, pattern: Option<String>| {
            pattern
                .map(|pattern| {
                    Glob::new(&pattern).map_err(|error| format!("rule {fields}: {field}: {error}"))
                })
                .transpose()
        };
        let rule = SelectionRule {
            namespace: glob("namespace", raw.namespace)?,
            labels: raw.labels,
            executable: glob("executable", raw.executable)?,
            cgroup: glob("cgroup", raw.cgroup)?,
            port: raw.port,
        };
        let matches_processes = rule.namespace.is_some()
            || !rule.labels.is_empty()
            || rule.executable.is_some()
            || rule.cgroup.is_some();
        match (matches_processes, rule.port) {
            (false, None) => {
                Err("an empty rule: set namespace, labels, executable, cgroup or port".into())
            }
            (true, Some(_)) => Err(format!(
                "rule {fields}: a rule matches processes (namespace, labels, executable, cgroup) or connections (port), not both"
            )),
            _ => Ok(rule),
        }
    }
}

impl RawSelectionRule {
    /// The fields the rule sets, e.g. `{executable: x, port: 1}`.
    fn describe(&self) -> String {
        let mut fields = Vec::new();
        for (name, value) in [
            ("namespace", &self.namespace),
            ("executable", &self.executable),
            ("cgroup", &self.cgroup),
        ] {
            if let Some(value) = value {
                fields.push(format!("{name}: {value}"));
            }
        }
        if !self.labels.is_empty() {
            fields.push(format!("labels: {:?}", self.labels));
        }
        if let Some(port) = self.port {
            fields.push(format!("port: {port}"));
        }
        format!("{{{}}}", fields.join(", "))
    }
}

/// `kubernetes:` section.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct KubernetesConfig {
    /// Name calls after the pods, namespaces and workloads the API server reports for this
    /// node (in-cluster service account, else `$KUBECONFIG`).
    pub enabled: bool,
    /// This node's name (the Helm chart sets it from the downward API).
    pub node_name: Option<String>,
}

/// `server:` section.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address of `/healthz`, `/readyz` and `/metrics`, e.g. `127.0.0.1:9750`; `off` for none.
    pub listen: String,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9750".to_owned(),
        }
    }
}

/// `decode:` section.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct DecodeConfig {
    /// Body bytes kept per message for analysis (at most 1 MiB); never exported.
    #[serde(deserialize_with = "ranges::within::<_, _, 0, 1_048_576>")]
    pub body_cap: usize,
}

impl Default for DecodeConfig {
    fn default() -> Self {
        Self { body_cap: 4096 }
    }
}

/// `routes:` section.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct RoutesConfig {
    /// Route patterns tried before the heuristic, e.g. `/users/{id}/orders`.
    pub patterns: Vec<String>,
    /// Distinct routes per service before new ones collapse into one.
    pub max_routes_per_service: usize,
}

impl Default for RoutesConfig {
    fn default() -> Self {
        Self {
            patterns: Vec::new(),
            max_routes_per_service: 100,
        }
    }
}

/// `export:` section.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ExportConfig {
    /// OTLP export; without an endpoint, calls are printed on stdout.
    pub otlp: OtlpConfig,
    /// HTTP headers exported as `http.request.header.<name>` / `http.response.header.<name>`,
    /// beyond the conventions' own. Names that may carry credentials are refused.
    pub http_headers: Vec<String>,
    /// Export the prompts and answers of model calls (`gen_ai.input.messages`,
    /// `gen_ai.output.messages`), with the sensitive values the scan finds redacted. Off by
    /// default: they are the users' own words.
    pub genai_content: bool,
}

/// Compression of OTLP exports.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OtlpCompression {
    /// gzip.
    Gzip,
    /// None.
    None,
}

/// `export.otlp:` section.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct OtlpConfig {
    /// Collector endpoint, e.g. `http://collector:4317` (gRPC) or `http://collector:4318`.
    pub endpoint: Option<String>,
    /// Transport.
    pub protocol: OtlpProtocol,
    /// Headers sent with every export (e.g. an API key for a SaaS backend).
    pub headers: BTreeMap<String, String>,
    /// A file of headers, one `name=value` per line (`#` starts a comment), read at start:
    /// where API keys belong, rather than in this file (which may be readable by more people).
    pub headers_file: Option<PathBuf>,
    /// Compression.
    pub compression: OtlpCompression,
    /// Time allowed per export, in milliseconds.
    #[serde(deserialize_with = "ranges::within::<_, _, 1, 600_000>")]
    pub timeout_ms: u64,
    /// Encoded span bytes waiting for export at most; spans beyond are dropped and counted.
    #[serde(deserialize_with = "ranges::within::<_, _, 1024, 4_294_967_296>")]
    pub max_queue_bytes: usize,
    /// How failed exports are tried again.
    pub retry: RetryConfig,
}

/// `export.otlp.retry:` section: exponential backoff with jitter, for failures the OTLP
/// specification calls retryable (unreachable, overloaded or restarting collector).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Delay before the first retry, in milliseconds; each next one doubles.
    #[serde(deserialize_with = "ranges::within::<_, _, 1, 60_000>")]
    pub initial_interval_ms: u64,
    /// Longest delay between two attempts, in milliseconds.
    #[serde(deserialize_with = "ranges::within::<_, _, 1, 600_000>")]
    pub max_interval_ms: u64,
    /// Total delay after which a batch is given up (counted as failed), in milliseconds; 0:
    /// no retries.
    #[serde(deserialize_with = "ranges::within::<_, _, 0, 3_600_000>")]
    pub max_elapsed_ms: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        let defaults = crate::export::otlp::RetrySettings::default();
        let millis =
            |duration: std::time::Duration| u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        Self {
            initial_interval_ms: millis(defaults.initial_interval),
            max_interval_ms: millis(defaults.max_interval),
            max_elapsed_ms: millis(defaults.max_elapsed),
        }
    }
}

impl Default for OtlpConfig {
    fn default() -> Self {
        Self {
            endpoint: None,
            protocol: OtlpProtocol::Grpc,
            headers: BTreeMap::new(),
            headers_file: None,
            compression: OtlpCompression::Gzip,
            timeout_ms: 10_000,
            max_queue_bytes: 16 * 1024 * 1024,
            retry: RetryConfig::default(),
        }
    }
}

/// `capture:` section.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct CaptureConfig {
    /// Payload bytes copied per socket call or OpenSSL call (1 to 32768). Bytes past the cap are
    /// counted but not captured.
    #[serde(deserialize_with = "ranges::within::<_, _, 1, 32_768>")]
    pub capture_cap: u32,
    /// Payload bytes copied per call on connections of a framed protocol (HTTP/2, so gRPC),
    /// 32768 to 2097152: there a byte past the capture cap may be a frame header, and losing
    /// one loses the rest of the connection.
    #[serde(deserialize_with = "ranges::within::<_, _, 32_768, 2_097_152>")]
    pub framed_cap: u32,
    /// Size in bytes of the ring buffer shared by all CPUs; a power of two (4 KiB to 1 GiB).
    #[serde(deserialize_with = "ranges::within::<_, _, 4096, 1_073_741_824>")]
    pub ring_buffer_bytes: u32,
    /// Globs of the command lines (arguments joined by spaces) of processes whose standard
    /// input and output are captured: MCP tool servers that agents start and talk to over
    /// pipes, e.g. `*mcp-server-*`. Empty: no pipe is captured.
    pub stdio_commands: Vec<String>,
    /// How socket syscalls find their socket: `auto` (the socket tracepoints where the kernel
    /// has them, Linux 6.3+, else a walk of the file table), `tracepoints` or `fd_table`.
    pub socket_lookup: SocketLookupChoice,
    /// A file the verifier's whole log is appended to when the kernel refuses a program (the
    /// agent's log only gets its last word).
    pub verifier_log: Option<PathBuf>,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        Self {
            capture_cap: 16 * 1024,
            framed_cap: 256 * 1024,
            ring_buffer_bytes: 8 * 1024 * 1024,
            stdio_commands: Vec::new(),
            socket_lookup: SocketLookupChoice::Auto,
            verifier_log: None,
        }
    }
}

/// How socket syscalls find their socket (`capture.socket_lookup`).
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum SocketLookupChoice {
    /// The best this kernel has.
    #[default]
    Auto,
    /// The `sock_send_length`/`sock_recv_length` tracepoints (Linux 6.3+).
    Tracepoints,
    /// A walk of the file table at syscall exit (any kernel).
    #[value(name = "fd_table")]
    FdTable,
}

impl SocketLookupChoice {
    /// The lookup asked for; `None` for automatic.
    pub fn lookup(self) -> Option<agent_common::SocketLookup> {
        match self {
            SocketLookupChoice::Auto => None,
            SocketLookupChoice::Tracepoints => Some(agent_common::SocketLookup::Tracepoints),
            SocketLookupChoice::FdTable => Some(agent_common::SocketLookup::FdTable),
        }
    }
}

/// `streams:` section.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct StreamsConfig {
    /// Connections tracked at once; the least recently active is evicted beyond that.
    #[serde(deserialize_with = "ranges::within::<_, _, 1, 4_194_304>")]
    pub max_connections: usize,
    /// Seconds without traffic after which a connection's state is dropped.
    pub idle_timeout_secs: u64,
}

impl Default for StreamsConfig {
    fn default() -> Self {
        Self {
            max_connections: 65_536,
            idle_timeout_secs: 300,
        }
    }
}

/// A configuration file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: cannot read configuration: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid YAML or does not match the schema.
    #[error("{path}:{line}:{column}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line of the problem (0 when the parser gave none).
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        reason: String,
    },
}

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config = Self::parse(&text, path)?;
        // Spec files named in a configuration file are found beside it.
        if let Some(directory) = path.parent() {
            for spec in &mut config.inventory.specs {
                spec.file = directory.join(&spec.file);
            }
            for pack in &mut config.security.rule_packs {
                *pack = directory.join(&*pack);
            }
        }
        Ok(config)
    }

    /// Parses configuration text; `path` only names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        serde_yaml_ng::from_str(text).map_err(|error| {
            let (line, column, reason) = yaml_error(&error);
            ConfigError::Invalid {
                path: path.to_owned(),
                line,
                column,
                reason,
            }
        })
    }
}

/// Where a YAML file is wrong and why: 1-based line and column (0 when the parser gave none)
/// and the reason without the parser's own " at line L column C" suffix, so that callers can
/// put the location in front, as `file:line:column: reason`.
pub fn yaml_error(error: &serde_yaml_ng::Error) -> (usize, usize, String) {
    let (line, column) = error
        .location()
        .map(|at| (at.line(), at.column()))
        .unwrap_or((0, 0));
    let reason = error.to_string();
    let reason = reason
        .split(" at line ")
        .next()
        .unwrap_or(&reason)
        .to_owned();
    (line, column, reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("agent.yaml"))
    }

    #[test]
    fn empty_file_means_defaults() {
        assert_eq!(parse("").unwrap(), Config::default());
    }

    #[test]
    fn partial_sections_keep_other_defaults() {
        let config = parse("capture:\n  capture_cap: 4096\n").unwrap();
        assert_eq!(config.capture.capture_cap, 4096);
        assert_eq!(config.capture.ring_buffer_bytes, 8 * 1024 * 1024);
        assert_eq!(config.streams, StreamsConfig::default());
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let error = parse("capture:\n  capture_cap: 4096\n  ring_bufer_bytes: 1\n").unwrap_err();
        let message = error.to_string();
        assert!(message.starts_with("agent.yaml:3:"), "{message}");
        assert!(message.contains("ring_bufer_bytes"), "{message}");
    }

    #[test]
    fn wrong_type_is_reported() {
        let message = parse("streams:\n  idle_timeout_secs: soon\n")
            .unwrap_err()
            .to_string();
        assert!(message.starts_with("agent.yaml:2:"), "{message}");
        assert!(message.contains("invalid type"), "{message}");
    }

    #[test]
    fn export_section() {
        let config = parse(
            "export:\n  otlp:\n    endpoint: http://c:4318\n    protocol: http/protobuf\n    headers:\n      x-key: k\n",
        )
        .unwrap();
        assert_eq!(
            config.export.otlp.endpoint.as_deref(),
            Some("http://c:4318")
        );
        assert_eq!(config.export.otlp.protocol, OtlpProtocol::HttpProtobuf);
        assert_eq!(config.export.otlp.headers["x-key"], "k");
        let message = parse("export:\n  otlp:\n    protocol: carrier-pigeon\n")
            .unwrap_err()
            .to_string();
        assert!(message.starts_with("agent.yaml:3:"), "{message}");
    }

    #[test]
    fn out_of_range_values_name_file_line_and_bounds() {
        for (text, line, bounds) in [
            ("capture:\n  capture_cap: 0\n", 2, "1 to 32768"),
            ("capture:\n  framed_cap: 4096\n", 2, "32768 to 2097152"),
            ("decode:\n  body_cap: 99999999\n", 2, "0 to 1048576"),
            (
                "export:\n  otlp:\n    retry:\n      initial_interval_ms: 0\n",
                4,
                "1 to 60000",
            ),
            ("export:\n  otlp:\n    max_queue_bytes: 10\n", 3, "1024 to"),
        ] {
            let message = parse(text).unwrap_err().to_string();
            assert!(
                message.starts_with(&format!("agent.yaml:{line}:")),
                "{text:?}: {message}"
            );
            assert!(message.contains("out of range"), "{message}");
            assert!(message.contains(bounds), "{message}");
        }
        let config = parse("capture:\n  capture_cap: 32768\n").unwrap();
        assert_eq!(config.capture.capture_cap, 32_768);
    }

    #[test]
    fn retry_section_and_headers_file() {
        let config = parse(
            "export:\n  otlp:\n    headers_file: /etc/apiscope/otlp-headers\n    retry:\n      initial_interval_ms: 50\n      max_elapsed_ms: 0\n",
        )
        .unwrap();
        let otlp = config.export.otlp;
        assert_eq!(
            otlp.headers_file.as_deref(),
            Some(Path::new("/etc/apiscope/otlp-headers"))
        );
        assert_eq!(otlp.retry.initial_interval_ms, 50);
        assert_eq!(otlp.retry.max_interval_ms, 30_000);
        assert_eq!(otlp.retry.max_elapsed_ms, 0);
        let message = parse("export:\n  otlp:\n    retry:\n      attempts: 3\n")
            .unwrap_err()
            .to_string();
        assert!(message.starts_with("agent.yaml:4:"), "{message}");
    }

    #[test]
    fn selection_rules_are_checked_where_they_are_written() {
        let config = parse(
            "selection:\n  exclude:\n    - executable: \"*/sshd\"\n    - port: 22\n  include:\n    - namespace: shop\n      labels: {app: web}\n",
        )
        .unwrap();
        assert_eq!(config.selection.exclude.len(), 2);
        assert_eq!(config.selection.include[0].labels["app"], "web");
        for (text, line, reason) in [
            ("selection:\n  exclude:\n    - {}\n", 3, "an empty rule"),
            (
                "selection:\n  include:\n    - port: 80\n    - executable: x\n      port: 1\n",
                3,
                "rule {executable: x, port: 1}: a rule matches processes",
            ),
            (
                "selection:\n  exclude:\n    - cgroup: \"[a\"\n",
                3,
                "cgroup:",
            ),
            (
                "selection:\n  exclude:\n    - exe: x\n",
                3,
                "unknown field `exe`",
            ),
            (
                "selection:\n  exclude:\n    - port: 70000\n",
                3,
                "invalid value",
            ),
        ] {
            let message = parse(text).unwrap_err().to_string();
            assert!(
                message.starts_with(&format!("agent.yaml:{line}:")) && message.contains(reason),
                "{text:?}: {message}"
            );
        }
    }

    #[test]
    fn inventory_section() {
        let config = parse(
            "inventory:\n  directory: /tmp/inv\n  orphan_after_secs: 60\n  specs:\n    - service: shop\n      file: shop.yaml\n",
        )
        .unwrap();
        assert_eq!(config.inventory.directory, Path::new("/tmp/inv"));
        assert_eq!(config.inventory.orphan_after_secs, 60);
        assert_eq!(config.inventory.persist_interval_secs, 30);
        assert_eq!(config.inventory.specs[0].service, "shop");
        let message = parse("inventory:\n  specs:\n    - service: shop\n")
            .unwrap_err()
            .to_string();
        assert!(message.starts_with("agent.yaml:3:"), "{message}");
        assert!(message.contains("missing field `file`"), "{message}");
    }

    #[test]
    fn unreadable_file_names_the_path() {
        let message = Config::load(Path::new("/nonexistent/apiscope.yaml"))
            .unwrap_err()
            .to_string();
        assert!(message.contains("/nonexistent/apiscope.yaml"), "{message}");
    }
}
