//! The agent's configuration: a YAML file whose every key can also be set by flag or
//! environment variable (see `main.rs`). Unknown keys are errors, so a typo never silently
//! falls back to a default.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Everything `apiscope run` can be configured with.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Kernel capture.
    pub capture: CaptureConfig,
    /// Per-connection stream assembly.
    pub streams: StreamsConfig,
}

/// `capture:` section.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct CaptureConfig {
    /// Payload bytes copied per socket call or OpenSSL call (1 to 32768). Bytes past the cap are
    /// counted but not captured.
    pub capture_cap: u32,
    /// Size in bytes of the ring buffer shared by all CPUs; a power of two.
    pub ring_buffer_bytes: u32,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        Self {
            capture_cap: 16 * 1024,
            ring_buffer_bytes: 8 * 1024 * 1024,
        }
    }
}

/// `streams:` section.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct StreamsConfig {
    /// Connections tracked at once; the least recently active is evicted beyond that.
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
        Self::parse(&text, path)
    }

    /// Parses configuration text; `path` only names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        serde_yaml_ng::from_str(text).map_err(|error| {
            let (line, column) = error
                .location()
                .map(|at| (at.line(), at.column()))
                .unwrap_or((0, 0));
            let reason = error.to_string();
            // The parser appends " at line L column C"; the location is already in front.
            let reason = reason
                .split(" at line ")
                .next()
                .unwrap_or(&reason)
                .to_owned();
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
    fn unreadable_file_names_the_path() {
        let message = Config::load(Path::new("/nonexistent/apiscope.yaml"))
            .unwrap_err()
            .to_string();
        assert!(message.contains("/nonexistent/apiscope.yaml"), "{message}");
    }
}
