//! The agent's configuration: one YAML document whose sections are the settings types of the
//! stages they configure (`capture:` is [`CaptureSettings`], `streams:` is
//! [`StreamSettings`], and so on), so each setting is declared once, beside the code it
//! steers. Every key can also be set from the environment or a flag ([`sources`]): the layers,
//! lowest first, are the defaults, the file, the standard `OTEL_*` variables, `APISCOPE_*`
//! variables and flags. Unknown keys are errors, so a typo never silently falls back to a
//! default.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{
    analysis::{inventory::InventorySettings, routes::RouteSettings, security::SecuritySettings},
    capture::CaptureSettings,
    enrich::kubernetes::KubernetesSettings,
    export::{ExportSettings, server::ServerSettings},
    protocols::DecoderSettings,
    selection::SelectionSettings,
    settings_format::yaml_error,
    streams::StreamSettings,
};

#[doc(hidden)]
pub mod fuzzing;
pub mod sources;

/// Everything `apiscope run` can be configured with: one section per stage.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Kernel capture.
    pub capture: CaptureSettings,
    /// Per-connection stream assembly.
    pub streams: StreamSettings,
    /// Protocol decoding.
    pub decode: DecoderSettings,
    /// Route templating.
    pub routes: RouteSettings,
    /// Where results go.
    pub export: ExportSettings,
    /// The agent's HTTP endpoints.
    pub server: ServerSettings,
    /// Pod metadata from the Kubernetes API server.
    pub kubernetes: KubernetesSettings,
    /// Which workloads are captured.
    pub selection: SelectionSettings,
    /// The API inventory.
    pub inventory: InventorySettings,
    /// Security rules.
    pub security: SecuritySettings,
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
    /// A value set by an environment variable or a flag cannot be used.
    #[error("{origin}: {key}: {reason}")]
    Override {
        /// Where it was set: `environment variable NAME` or `flag --name`.
        origin: String,
        /// The key's path.
        key: String,
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::export::otlp::OtlpProtocol;

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
        assert_eq!(config.streams, StreamSettings::default());
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
        assert_eq!(config.export.otlp.headers.0["x-key"], "k");
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
        assert_eq!(otlp.retry.initial_interval, Duration::from_millis(50));
        assert_eq!(otlp.retry.max_interval, Duration::from_millis(30_000));
        assert_eq!(otlp.retry.max_elapsed, Duration::from_millis(0));
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
        assert_eq!(config.inventory.orphan_after, Duration::from_secs(60));
        assert_eq!(config.inventory.persist_interval, Duration::from_secs(30));
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
