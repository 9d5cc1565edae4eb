//! The `apiscope run` command line: flags, environment variables and the configuration file,
//! resolved into [`RunOptions`]. Flags and variables win over the file.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use crate::{
    analysis::{
        inventory::{InventorySettings, SpecBinding},
        routes::RouteSettings,
        security::rules::{ActiveRules, PackError},
        spec::{DeclaredApi, SpecError},
    },
    calls::{DescribeSettings, HeaderAllowlist},
    capture::{CaptureSettings, KernelSelection},
    config::{
        Config, ConfigError, InventoryConfig, OtlpCompression, SelectionRule, SocketLookupChoice,
        SpecFile,
    },
    export::otlp::{OtlpHeaders, OtlpProtocol, OtlpSettings, RetrySettings},
    pipeline::{CallOutput, InventoryOptions, RunOptions, SecurityOptions},
    protocols::DecoderSettings,
    selection::{Selection, StdioSelection},
    streams::StreamSettings,
};

/// Flags of `apiscope run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Print every captured chunk as one JSON line on stdout.
    #[arg(long)]
    pub dump: bool,
    /// YAML configuration file; flags and environment variables override its keys.
    #[arg(long, env = "APISCOPE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Payload bytes captured per call (capture.capture_cap).
    #[arg(long, env = "APISCOPE_CAPTURE_CAP")]
    pub capture_cap: Option<u32>,
    /// Payload bytes captured per call on HTTP/2 connections (capture.framed_cap).
    #[arg(long, env = "APISCOPE_FRAMED_CAP")]
    pub framed_cap: Option<u32>,
    /// Command-line glob of processes whose stdin and stdout are captured, repeatable: MCP
    /// tool servers over stdio (capture.stdio_commands).
    #[arg(long = "stdio-command")]
    pub stdio_commands: Vec<String>,
    /// Ring-buffer size in bytes, a power of two (capture.ring_buffer_bytes).
    #[arg(long, env = "APISCOPE_RING_BUFFER_BYTES")]
    pub ring_buffer_bytes: Option<u32>,
    /// How socket syscalls find their socket: auto, tracepoints or fd_table
    /// (capture.socket_lookup).
    #[arg(long, env = "APISCOPE_SOCKET_LOOKUP", value_enum)]
    pub socket_lookup: Option<SocketLookupChoice>,
    /// File the verifier's whole log is appended to when the kernel refuses a program
    /// (capture.verifier_log).
    #[arg(long, env = "APISCOPE_VERIFIER_LOG")]
    pub verifier_log: Option<PathBuf>,
    /// Connections tracked at once (streams.max_connections).
    #[arg(long, env = "APISCOPE_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Seconds of silence before a connection's state is dropped (streams.idle_timeout_secs).
    #[arg(long, env = "APISCOPE_IDLE_TIMEOUT_SECS")]
    pub idle_timeout_secs: Option<u64>,
    /// Body bytes kept per message for analysis, never exported (decode.body_cap).
    #[arg(long, env = "APISCOPE_BODY_CAP")]
    pub body_cap: Option<usize>,
    /// OTLP collector endpoint (export.otlp.endpoint); without one, calls are printed.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// OTLP transport: `grpc` or `http/protobuf` (export.otlp.protocol).
    #[arg(long, env = "OTEL_EXPORTER_OTLP_PROTOCOL", value_parser = parse_protocol)]
    pub otlp_protocol: Option<OtlpProtocol>,
    /// Extra OTLP header `NAME=VALUE`, repeatable (export.otlp.headers).
    #[arg(long = "otlp-header", value_parser = parse_header)]
    pub otlp_headers: Vec<(String, String)>,
    /// File of OTLP headers, one `NAME=VALUE` per line (export.otlp.headers_file): for API
    /// keys, which a flag would show to every user of `ps`.
    #[arg(long, env = "APISCOPE_OTLP_HEADERS_FILE")]
    pub otlp_headers_file: Option<PathBuf>,
    /// OTLP compression: `gzip` or `none` (export.otlp.compression).
    #[arg(long, env = "OTEL_EXPORTER_OTLP_COMPRESSION", value_parser = parse_compression)]
    pub otlp_compression: Option<OtlpCompression>,
    /// Encoded span bytes waiting for export at most (export.otlp.max_queue_bytes).
    #[arg(long, env = "APISCOPE_OTLP_MAX_QUEUE_BYTES")]
    pub otlp_max_queue_bytes: Option<usize>,
    /// Name calls after their Kubernetes pods and workloads (kubernetes.enabled).
    #[arg(long, env = "APISCOPE_KUBERNETES")]
    pub kubernetes: Option<bool>,
    /// This node's name, for the pods scheduled on it (kubernetes.node_name).
    #[arg(long, env = "APISCOPE_NODE_NAME")]
    pub node_name: Option<String>,
    /// Capture only what matches this rule, a YAML mapping such as `{namespace: shop}`;
    /// repeatable, `;`-separated in the variable (selection.include).
    #[arg(long = "include", env = "APISCOPE_INCLUDE", value_delimiter = ';', value_parser = parse_rule)]
    pub include: Vec<SelectionRule>,
    /// Do not capture what matches this rule, e.g. `{executable: sshd}` or `{port: 22}`;
    /// repeatable, `;`-separated in the variable (selection.exclude).
    #[arg(long = "exclude", env = "APISCOPE_EXCLUDE", value_delimiter = ';', value_parser = parse_rule)]
    pub exclude: Vec<SelectionRule>,
    /// Address of the health and metrics endpoints, or `off` (server.listen).
    #[arg(long, env = "APISCOPE_LISTEN")]
    pub listen: Option<String>,
    /// Export this HTTP header's values too, repeatable (export.http_headers); names that may
    /// carry credentials are refused.
    #[arg(long = "export-header")]
    pub export_headers: Vec<String>,
    /// Export the prompts and answers of model calls, redacted of sensitive values
    /// (export.genai_content).
    #[arg(long)]
    pub export_genai_content: bool,
    /// A route pattern tried before the heuristic, e.g. `/users/{id}`; repeatable
    /// (routes.patterns).
    #[arg(long = "route")]
    pub routes: Vec<String>,
    /// Distinct routes per service before new ones collapse (routes.max_routes_per_service).
    #[arg(long, env = "APISCOPE_MAX_ROUTES_PER_SERVICE")]
    pub max_routes_per_service: Option<usize>,
    /// Directory of the inventory database (inventory.directory).
    #[arg(long, env = "APISCOPE_INVENTORY_DIR")]
    pub inventory_dir: Option<PathBuf>,
    /// A declared OpenAPI document bound to its service, `SERVICE=FILE`; repeatable,
    /// `;`-separated in the variable (inventory.specs).
    #[arg(long = "spec", env = "APISCOPE_SPECS", value_delimiter = ';', value_parser = parse_spec)]
    pub specs: Vec<SpecFile>,
    /// Seconds between saves of the inventory (inventory.persist_interval_secs).
    #[arg(long, env = "APISCOPE_INVENTORY_PERSIST_SECS")]
    pub inventory_persist_secs: Option<u64>,
    /// Seconds between inventory snapshots (inventory.snapshot_interval_secs).
    #[arg(long, env = "APISCOPE_INVENTORY_SNAPSHOT_SECS")]
    pub inventory_snapshot_secs: Option<u64>,
    /// Seconds without a call before a declared operation is an orphan
    /// (inventory.orphan_after_secs).
    #[arg(long, env = "APISCOPE_ORPHAN_AFTER_SECS")]
    pub orphan_after_secs: Option<u64>,
    /// Endpoints kept per service (inventory.max_endpoints_per_service).
    #[arg(long, env = "APISCOPE_MAX_ENDPOINTS_PER_SERVICE")]
    pub max_endpoints_per_service: Option<usize>,
    /// Services kept in the inventory (inventory.max_services).
    #[arg(long, env = "APISCOPE_MAX_SERVICES")]
    pub max_services: Option<usize>,
    /// Check calls against the security rules (security.enabled).
    #[arg(long, env = "APISCOPE_SECURITY")]
    pub security: Option<bool>,
    /// A rule pack applied over the built-in one, watched for changes; repeatable,
    /// `;`-separated in the variable (security.rule_packs).
    #[arg(long = "rule-pack", env = "APISCOPE_RULE_PACKS", value_delimiter = ';')]
    pub rule_packs: Vec<PathBuf>,
}

/// A flag, variable or file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The configuration file.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A header that may not be exported.
    #[error("export.http_headers: {0}")]
    Header(String),
    /// Kubernetes enrichment is on but the node is unnamed.
    #[error(
        "kubernetes.enabled needs this node's name: kubernetes.node_name, --node-name or APISCOPE_NODE_NAME"
    )]
    NodeName,
    /// A stdio command glob that does not compile.
    #[error("capture.stdio_commands: {0}")]
    StdioCommand(String),
    /// `server.listen` is neither an address nor `off`.
    #[error("server.listen: `{0}` is not an address such as 127.0.0.1:9750, nor `off`")]
    Listen(String),
    /// A declared spec that cannot be used.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// A rule pack that cannot be used.
    #[error(transparent)]
    RulePack(#[from] PackError),
    /// A line of the OTLP headers file. The line itself is not shown: it may hold a key.
    #[error("{path}:{line}: {reason}")]
    HeadersFile {
        /// The file.
        path: PathBuf,
        /// 1-based line (0: the file could not be read).
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// An environment variable.
    #[error("environment variable {name}={value:?}: {reason}")]
    Environment {
        /// Variable name.
        name: &'static str,
        /// Its value.
        value: String,
        /// What is wrong.
        reason: &'static str,
    },
}

fn parse_protocol(text: &str) -> Result<OtlpProtocol, String> {
    match text.trim() {
        "grpc" => Ok(OtlpProtocol::Grpc),
        "http/protobuf" => Ok(OtlpProtocol::HttpProtobuf),
        other => Err(format!("`{other}` is not `grpc` or `http/protobuf`")),
    }
}

fn parse_compression(text: &str) -> Result<OtlpCompression, String> {
    match text.trim() {
        "gzip" => Ok(OtlpCompression::Gzip),
        "none" | "" => Ok(OtlpCompression::None),
        other => Err(format!("`{other}` is not `gzip` or `none`")),
    }
}

fn parse_rule(text: &str) -> Result<SelectionRule, String> {
    serde_yaml_ng::from_str(text).map_err(|error| format!("`{text}`: {error}"))
}

fn parse_spec(text: &str) -> Result<SpecFile, String> {
    match text.split_once('=') {
        Some((service, file)) if !service.trim().is_empty() && !file.trim().is_empty() => {
            Ok(SpecFile {
                service: service.trim().to_owned(),
                file: PathBuf::from(file.trim()),
            })
        }
        _ => Err(format!("`{text}` is not SERVICE=FILE")),
    }
}

fn parse_header(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.trim().is_empty() => {
            Ok((name.trim().to_owned(), value.trim().to_owned()))
        }
        _ => Err(format!("`{text}` is not NAME=VALUE")),
    }
}

/// Reads a duration in milliseconds from an `OTEL_*` variable.
fn env_millis(name: &'static str, default: u64) -> Result<Duration, SettingsError> {
    env_number(name, default).map(Duration::from_millis)
}

fn env_number<T: std::str::FromStr>(name: &'static str, default: T) -> Result<T, SettingsError> {
    match std::env::var(name) {
        Ok(value) if !value.trim().is_empty() => {
            value
                .trim()
                .parse()
                .map_err(|_| SettingsError::Environment {
                    name,
                    value,
                    reason: "not a whole number",
                })
        }
        _ => Ok(default),
    }
}

/// The headers of an OTLP headers file: `name=value` lines; blank lines and lines starting
/// with `#` are skipped.
fn file_headers(path: &Path) -> Result<Vec<(String, String)>, SettingsError> {
    let failed = |line: usize, reason: String| SettingsError::HeadersFile {
        path: path.to_owned(),
        line,
        reason,
    };
    let text = std::fs::read_to_string(path)
        .map_err(|error| failed(0, format!("cannot read OTLP headers: {error}")))?;
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty() && !line.trim_start().starts_with('#'))
        .map(|(index, line)| {
            parse_header(line).map_err(|_| failed(index + 1, "expected NAME=VALUE".to_owned()))
        })
        .collect()
}

/// `OTEL_EXPORTER_OTLP_HEADERS`: `name=value` pairs separated by commas.
fn env_headers() -> Result<Vec<(String, String)>, SettingsError> {
    const NAME: &str = "OTEL_EXPORTER_OTLP_HEADERS";
    let Ok(value) = std::env::var(NAME) else {
        return Ok(Vec::new());
    };
    value
        .split(',')
        .filter(|pair| !pair.trim().is_empty())
        .map(|pair| {
            parse_header(pair).map_err(|_| SettingsError::Environment {
                name: NAME,
                value: value.clone(),
                reason: "expected name=value pairs separated by commas",
            })
        })
        .collect()
}

/// The endpoints' address; `None` for `off`.
fn listen_address(text: &str) -> Result<Option<std::net::SocketAddr>, SettingsError> {
    match text.trim() {
        "off" => Ok(None),
        address => address
            .parse()
            .map(Some)
            .map_err(|_| SettingsError::Listen(text.to_owned())),
    }
}

impl RunArgs {
    /// The configuration file (or defaults) with flags and environment variables applied.
    pub fn config(&self) -> Result<Config, SettingsError> {
        let mut config = match &self.config {
            Some(path) => Config::load(path)?,
            None => Config::default(),
        };
        let capture = &mut config.capture;
        capture.capture_cap = self.capture_cap.unwrap_or(capture.capture_cap);
        capture.framed_cap = self.framed_cap.unwrap_or(capture.framed_cap);
        capture.ring_buffer_bytes = self.ring_buffer_bytes.unwrap_or(capture.ring_buffer_bytes);
        capture.socket_lookup = self.socket_lookup.unwrap_or(capture.socket_lookup);
        if self.verifier_log.is_some() {
            capture.verifier_log.clone_from(&self.verifier_log);
        }
        capture
            .stdio_commands
            .extend(self.stdio_commands.iter().cloned());
        let streams = &mut config.streams;
        streams.max_connections = self.max_connections.unwrap_or(streams.max_connections);
        streams.idle_timeout_secs = self.idle_timeout_secs.unwrap_or(streams.idle_timeout_secs);
        config.decode.body_cap = self.body_cap.unwrap_or(config.decode.body_cap);
        config.kubernetes.enabled = self.kubernetes.unwrap_or(config.kubernetes.enabled);
        if self.node_name.is_some() {
            config.kubernetes.node_name.clone_from(&self.node_name);
        }
        let selection = &mut config.selection;
        selection.include.extend(self.include.iter().cloned());
        selection.exclude.extend(self.exclude.iter().cloned());
        if let Some(listen) = &self.listen {
            config.server.listen.clone_from(listen);
        }
        let otlp = &mut config.export.otlp;
        if self.otlp_endpoint.is_some() {
            otlp.endpoint.clone_from(&self.otlp_endpoint);
        }
        otlp.protocol = self.otlp_protocol.unwrap_or(otlp.protocol);
        otlp.compression = self.otlp_compression.unwrap_or(otlp.compression);
        otlp.max_queue_bytes = self.otlp_max_queue_bytes.unwrap_or(otlp.max_queue_bytes);
        if self.otlp_headers_file.is_some() {
            otlp.headers_file.clone_from(&self.otlp_headers_file);
        }
        if let Some(path) = &otlp.headers_file {
            otlp.headers.extend(file_headers(path)?);
        }
        otlp.headers.extend(env_headers()?);
        otlp.headers.extend(self.otlp_headers.iter().cloned());
        config
            .export
            .http_headers
            .extend(self.export_headers.iter().cloned());
        config.export.genai_content |= self.export_genai_content;
        let routes = &mut config.routes;
        routes.patterns.extend(self.routes.iter().cloned());
        routes.max_routes_per_service = self
            .max_routes_per_service
            .unwrap_or(routes.max_routes_per_service);
        let inventory = &mut config.inventory;
        if let Some(directory) = &self.inventory_dir {
            inventory.directory.clone_from(directory);
        }
        inventory.specs.extend(self.specs.iter().cloned());
        inventory.persist_interval_secs = self
            .inventory_persist_secs
            .unwrap_or(inventory.persist_interval_secs);
        inventory.snapshot_interval_secs = self
            .inventory_snapshot_secs
            .unwrap_or(inventory.snapshot_interval_secs);
        inventory.orphan_after_secs = self
            .orphan_after_secs
            .unwrap_or(inventory.orphan_after_secs);
        inventory.max_endpoints_per_service = self
            .max_endpoints_per_service
            .unwrap_or(inventory.max_endpoints_per_service);
        inventory.max_services = self.max_services.unwrap_or(inventory.max_services);
        let security = &mut config.security;
        security.enabled = self.security.unwrap_or(security.enabled);
        security.rule_packs.extend(self.rule_packs.iter().cloned());
        Ok(config)
    }

    /// Everything `apiscope run` needs.
    pub fn run_options(&self) -> Result<RunOptions, SettingsError> {
        let config = self.config()?;
        let otlp = &config.export.otlp;
        let calls = match &otlp.endpoint {
            Some(endpoint) if !endpoint.trim().is_empty() => CallOutput::Otlp(OtlpSettings {
                endpoint: endpoint.trim().to_owned(),
                protocol: otlp.protocol,
                headers: OtlpHeaders(otlp.headers.clone().into_iter().collect()),
                gzip: otlp.compression == OtlpCompression::Gzip,
                timeout: env_millis("OTEL_EXPORTER_OTLP_TIMEOUT", otlp.timeout_ms)?,
                // The SDKs' default of 2,048 suits one application; an agent exports the whole
                // host's calls, and the byte bound below is what limits memory.
                max_queue_size: env_number("OTEL_BSP_MAX_QUEUE_SIZE", 65_536)?.max(1),
                max_queue_bytes: otlp.max_queue_bytes.max(1),
                max_export_batch_size: env_number("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512)?.max(1),
                schedule_delay: env_millis("OTEL_BSP_SCHEDULE_DELAY", 5_000)?
                    .max(Duration::from_millis(1)),
                metric_interval: env_millis("OTEL_METRIC_EXPORT_INTERVAL", 60_000)?
                    .max(Duration::from_millis(1)),
                retry: RetrySettings {
                    initial_interval: Duration::from_millis(otlp.retry.initial_interval_ms),
                    max_interval: Duration::from_millis(
                        otlp.retry
                            .max_interval_ms
                            .max(otlp.retry.initial_interval_ms),
                    ),
                    max_elapsed: Duration::from_millis(otlp.retry.max_elapsed_ms),
                },
            }),
            _ if self.dump => CallOutput::None,
            _ => CallOutput::Lines,
        };
        Ok(RunOptions {
            capture: CaptureSettings {
                capture_cap: config.capture.capture_cap,
                framed_cap: config.capture.framed_cap,
                ring_buffer_bytes: config.capture.ring_buffer_bytes,
                selection: KernelSelection::default(),
                socket_lookup: config.capture.socket_lookup.lookup(),
                verifier_log: config.capture.verifier_log.clone(),
            },
            selection: Selection::new(&config.selection),
            stdio: StdioSelection::new(&config.capture.stdio_commands)
                .map_err(SettingsError::StdioCommand)?,
            streams: StreamSettings {
                max_connections: config.streams.max_connections.max(1),
                idle_timeout_ns: config
                    .streams
                    .idle_timeout_secs
                    .saturating_mul(1_000_000_000),
            },
            decoders: DecoderSettings {
                body_cap: config.decode.body_cap,
            },
            routes: RouteSettings {
                patterns: config.routes.patterns.clone(),
                max_routes_per_service: config.routes.max_routes_per_service.max(1),
            },
            dump: self.dump,
            listen: listen_address(&config.server.listen)?,
            kubernetes_node: match &config.kubernetes {
                kubernetes if !kubernetes.enabled => None,
                kubernetes => Some(
                    kubernetes
                        .node_name
                        .clone()
                        .filter(|name| !name.trim().is_empty())
                        .ok_or(SettingsError::NodeName)?,
                ),
            },
            inventory: inventory_options(&config.inventory)?,
            security: config
                .security
                .enabled
                .then(|| -> Result<SecurityOptions, PackError> {
                    Ok(SecurityOptions {
                        rules: ActiveRules::load(&config.security.rule_packs)?,
                        packs: config.security.rule_packs.clone(),
                    })
                })
                .transpose()?,
            calls,
            describe: DescribeSettings {
                headers: HeaderAllowlist::new(&config.export.http_headers)
                    .map_err(SettingsError::Header)?,
                content: None,
            },
            export_genai_content: config.export.genai_content,
        })
    }
}

/// The inventory's settings, with every declared spec loaded (so a broken one stops the
/// agent before it starts).
fn inventory_options(config: &InventoryConfig) -> Result<InventoryOptions, SettingsError> {
    let specs = config
        .specs
        .iter()
        .map(|spec| {
            Ok(SpecBinding {
                service: spec.service.clone(),
                file: spec.file.display().to_string(),
                api: Arc::new(DeclaredApi::load(&spec.file)?),
            })
        })
        .collect::<Result<Vec<_>, SpecError>>()?;
    Ok(InventoryOptions {
        directory: config.directory.clone(),
        persist_interval: Duration::from_secs(config.persist_interval_secs.max(1)),
        snapshot_interval: Duration::from_secs(config.snapshot_interval_secs.max(1)),
        settings: InventorySettings {
            specs,
            orphan_after: Duration::from_secs(config.orphan_after_secs),
            max_endpoints_per_service: config.max_endpoints_per_service.max(1),
            max_services: config.max_services.max(1),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_and_protocols_parse() {
        assert_eq!(
            parse_header("x-api-key = abc=def").unwrap(),
            ("x-api-key".into(), "abc=def".into())
        );
        assert!(parse_header("=v").is_err());
        assert_eq!(
            parse_protocol("http/protobuf").unwrap(),
            OtlpProtocol::HttpProtobuf
        );
        assert!(parse_protocol("http/json").is_err());
        assert_eq!(parse_compression("none").unwrap(), OtlpCompression::None);
    }

    #[test]
    fn headers_file_lines_are_read_and_bad_lines_are_not_shown() {
        let dir = std::env::temp_dir().join(format!("apiscope-headers-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("headers");
        std::fs::write(
            &path,
            "# the backend's key\n\nx-api-key = s3cret\nx-team=shop\n",
        )
        .unwrap();
        assert_eq!(
            file_headers(&path).unwrap(),
            [
                ("x-api-key".to_owned(), "s3cret".to_owned()),
                ("x-team".to_owned(), "shop".to_owned())
            ]
        );
        std::fs::write(&path, "x-team=shop\ns3cret-without-a-name\n").unwrap();
        let message = file_headers(&path).unwrap_err().to_string();
        assert_eq!(
            message,
            format!("{}:2: expected NAME=VALUE", path.display())
        );
        let message = file_headers(&dir.join("missing")).unwrap_err().to_string();
        assert!(message.contains("cannot read OTLP headers"), "{message}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn selection_rules_parse_from_flags() {
        let rule = parse_rule("{executable: \"*/sshd\"}").unwrap();
        assert_eq!(rule.executable.unwrap().glob(), "*/sshd");
        assert_eq!(parse_rule("{port: 22}").unwrap().port, Some(22));
        let message = parse_rule("{port: 22, executable: x}").unwrap_err();
        assert!(message.contains("not both"), "{message}");
        assert!(parse_rule("{exe: x}").is_err());
    }

    #[test]
    fn listen_is_an_address_or_off() {
        assert_eq!(listen_address("off").unwrap(), None);
        assert_eq!(
            listen_address("0.0.0.0:9750").unwrap(),
            Some("0.0.0.0:9750".parse().unwrap())
        );
        let message = listen_address("localhost").unwrap_err().to_string();
        assert!(
            message.starts_with("server.listen: `localhost`"),
            "{message}"
        );
    }
}
