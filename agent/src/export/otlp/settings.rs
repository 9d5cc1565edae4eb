//! The `export.otlp:` section of the configuration: where and how to export. The standard
//! `OTEL_EXPORTER_OTLP_*`, `OTEL_BSP_*` and `OTEL_METRIC_EXPORT_INTERVAL` variables set its
//! keys too (see `config::sources`).

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use opentelemetry_otlp::{WithTonicConfig, tonic_types::transport::ClientTlsConfig};
use serde::{Deserialize, Serialize};
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};

use super::OtlpError;
use crate::settings_format;

/// OTLP transport, named as the OpenTelemetry specification spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum OtlpProtocol {
    /// OTLP over gRPC (`grpc`), usually port 4317.
    #[serde(rename = "grpc")]
    Grpc,
    /// OTLP over HTTP with protobuf bodies (`http/protobuf`), usually port 4318.
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
}

/// Compression of OTLP exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OtlpCompression {
    /// gzip.
    Gzip,
    /// None.
    None,
}

/// `export.otlp:` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtlpSettings {
    /// Collector endpoint, e.g. `http://collector:4317` (gRPC) or `http://collector:4318` (for
    /// HTTP, the base URL: `/v1/traces` and `/v1/metrics` are appended). Without one, calls
    /// are printed on stdout.
    pub endpoint: Option<String>,
    /// Transport.
    pub protocol: OtlpProtocol,
    /// Headers sent with every export (gRPC metadata), e.g. an API key for a SaaS backend.
    pub headers: OtlpHeaders,
    /// A file of headers, one `name=value` per line (`#` starts a comment), read at start:
    /// where API keys belong, rather than in the configuration file (which may be readable by
    /// more people).
    pub headers_file: Option<PathBuf>,
    /// Compression.
    pub compression: OtlpCompression,
    /// Time allowed per export, in milliseconds.
    #[serde(
        rename = "timeout_ms",
        deserialize_with = "settings_format::millis_within::<_, 1, 600_000>",
        serialize_with = "settings_format::as_millis"
    )]
    pub timeout: Duration,
    /// Spans and events waiting for export at most; more are dropped and counted. (The SDKs'
    /// default of 2,048 suits one application; an agent exports the whole host's calls, and
    /// `max_queue_bytes` is what bounds memory.)
    #[serde(deserialize_with = "settings_format::within::<_, _, 1, 16_777_216>")]
    pub max_queue_size: usize,
    /// Encoded span bytes waiting for export at most; spans beyond are dropped and counted.
    #[serde(deserialize_with = "settings_format::within::<_, _, 1024, 4_294_967_296>")]
    pub max_queue_bytes: usize,
    /// Spans or events per export at most.
    #[serde(deserialize_with = "settings_format::within::<_, _, 1, 65_536>")]
    pub max_export_batch_size: usize,
    /// Longest a span or event waits before its batch is sent, in milliseconds.
    #[serde(
        rename = "schedule_delay_ms",
        deserialize_with = "settings_format::millis_within::<_, 1, 600_000>",
        serialize_with = "settings_format::as_millis"
    )]
    pub schedule_delay: Duration,
    /// How often metrics are collected and exported, in milliseconds.
    #[serde(
        rename = "metric_interval_ms",
        deserialize_with = "settings_format::millis_within::<_, 1, 86_400_000>",
        serialize_with = "settings_format::as_millis"
    )]
    pub metric_interval: Duration,
    /// How failed exports of spans and events are tried again.
    pub retry: RetrySettings,
    /// Which calls' spans are exported.
    pub sampling: super::SamplingSettings,
}

impl Default for OtlpSettings {
    fn default() -> Self {
        Self {
            endpoint: None,
            protocol: OtlpProtocol::Grpc,
            headers: OtlpHeaders::default(),
            headers_file: None,
            compression: OtlpCompression::Gzip,
            timeout: Duration::from_secs(10),
            max_queue_size: 65_536,
            max_queue_bytes: 16 * 1024 * 1024,
            max_export_batch_size: 512,
            schedule_delay: Duration::from_secs(5),
            metric_interval: Duration::from_secs(60),
            retry: RetrySettings::default(),
            sampling: super::SamplingSettings::default(),
        }
    }
}

/// `export.otlp.retry:` section: how a failed export is tried again. Only failures the OTLP
/// specification calls retryable (the collector unreachable, overloaded or restarting) are,
/// after exponentially growing delays with jitter, so that the agents of a whole cluster do
/// not come back in step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetrySettings {
    /// Delay before the first retry, in milliseconds; each next one doubles, up to
    /// `max_interval_ms`.
    #[serde(
        rename = "initial_interval_ms",
        deserialize_with = "settings_format::millis_within::<_, 1, 60_000>",
        serialize_with = "settings_format::as_millis"
    )]
    pub initial_interval: Duration,
    /// Longest delay between two attempts, in milliseconds.
    #[serde(
        rename = "max_interval_ms",
        deserialize_with = "settings_format::millis_within::<_, 1, 600_000>",
        serialize_with = "settings_format::as_millis"
    )]
    pub max_interval: Duration,
    /// Total delay after which a batch is given up (counted as failed), in milliseconds; 0:
    /// no retries.
    #[serde(
        rename = "max_elapsed_ms",
        deserialize_with = "settings_format::millis_within::<_, 0, 3_600_000>",
        serialize_with = "settings_format::as_millis"
    )]
    pub max_elapsed: Duration,
}

impl Default for RetrySettings {
    /// The OpenTelemetry Collector's exporter defaults, but for a 1 s first delay: 30 s
    /// between attempts at most, a batch given up after 5 minutes.
    fn default() -> Self {
        Self {
            initial_interval: Duration::from_secs(1),
            max_interval: Duration::from_secs(30),
            max_elapsed: Duration::from_secs(300),
        }
    }
}

impl RetrySettings {
    /// The delays before each retry of one batch, jittered (each delay grows by a random
    /// fraction of itself); ends when `max_elapsed` would be passed.
    pub(super) fn delays(&self) -> impl Iterator<Item = Duration> + Send + use<> {
        backon::BackoffBuilder::build(
            backon::ExponentialBuilder::new()
                .with_min_delay(self.initial_interval)
                .with_max_delay(self.max_interval.max(self.initial_interval))
                .with_jitter()
                .without_max_times()
                .with_total_delay(Some(self.max_elapsed)),
        )
    }
}

/// Headers sent with every export: often an API key, so their values never appear in a
/// debug print (nor, through it, in a log line).
#[derive(Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(transparent)]
pub struct OtlpHeaders(pub BTreeMap<String, String>);

impl std::fmt::Debug for OtlpHeaders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.0.keys().map(|name| (name, "[redacted]")))
            .finish()
    }
}

impl OtlpSettings {
    /// The collector's address, when one is set.
    pub fn endpoint(&self) -> Option<&str> {
        self.endpoint
            .as_deref()
            .map(str::trim)
            .filter(|endpoint| !endpoint.is_empty())
    }

    /// The HTTP URL of one signal (`traces`, `metrics`).
    pub fn signal_url(&self, signal: &str) -> String {
        format!(
            "{}/v1/{signal}",
            self.endpoint().unwrap_or_default().trim_end_matches('/')
        )
    }

    /// Whether exports are compressed with gzip.
    pub fn gzip(&self) -> bool {
        self.compression == OtlpCompression::Gzip
    }

    /// Adds the headers of `headers_file`, if one is named; its values win over the
    /// configuration's (the file is where keys belong).
    pub fn read_headers_file(&mut self) -> Result<(), HeadersFileError> {
        let Some(path) = &self.headers_file else {
            return Ok(());
        };
        let failed = |line: usize, reason: String| HeadersFileError {
            path: path.clone(),
            line,
            reason,
        };
        let text = std::fs::read_to_string(path)
            .map_err(|error| failed(0, format!("cannot read OTLP headers: {error}")))?;
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match line.split_once('=') {
                Some((name, value)) if !name.trim().is_empty() => {
                    self.headers
                        .0
                        .insert(name.trim().to_owned(), value.trim().to_owned());
                }
                _ => return Err(failed(index + 1, "expected NAME=VALUE".to_owned())),
            }
        }
        Ok(())
    }
}

/// A line of the OTLP headers file that cannot be used. The line itself is not shown: it may
/// hold a key.
#[derive(Debug, thiserror::Error)]
#[error("{path}:{line}: {reason}")]
pub struct HeadersFileError {
    /// The file.
    pub path: PathBuf,
    /// 1-based line (0: the file could not be read).
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

/// The headers as gRPC metadata.
pub(super) fn metadata(headers: &OtlpHeaders) -> Result<MetadataMap, OtlpError> {
    let mut metadata = MetadataMap::new();
    for (name, value) in &headers.0 {
        let key = MetadataKey::from_bytes(name.to_ascii_lowercase().as_bytes())
            .map_err(|_| OtlpError::Header(name.clone()))?;
        let value =
            MetadataValue::try_from(value.as_str()).map_err(|_| OtlpError::Header(name.clone()))?;
        metadata.insert(key, value);
    }
    Ok(metadata)
}

/// Turns on TLS with the system's roots for `https` gRPC endpoints.
pub(super) fn with_grpc_tls<B: WithTonicConfig>(builder: B, endpoint: &str) -> B {
    if endpoint.starts_with("https://") {
        builder.with_tls_config(ClientTlsConfig::new().with_native_roots())
    } else {
        builder
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_grow_with_jitter_and_stop_at_the_total() {
        let retry = RetrySettings {
            initial_interval: Duration::from_millis(100),
            max_interval: Duration::from_secs(1),
            max_elapsed: Duration::from_secs(10),
        };
        let delays: Vec<Duration> = retry.delays().take(1_000).collect();
        assert!(delays.len() > 5 && delays.len() < 100, "{delays:?}");
        assert!(delays[0] >= retry.initial_interval, "{delays:?}");
        assert!(delays[0] < retry.initial_interval * 2, "{delays:?}");
        // Jitter may add up to one more interval on top of the longest.
        assert!(delays.iter().all(|delay| *delay <= retry.max_interval * 2));
        assert!(delays.iter().sum::<Duration>() <= retry.max_elapsed + retry.max_interval * 2);
        let no_retries = RetrySettings {
            max_elapsed: Duration::ZERO,
            ..retry
        };
        assert_eq!(no_retries.delays().next(), None);
    }

    #[test]
    fn header_values_never_show_in_debug() {
        let headers = OtlpHeaders([("x-api-key".into(), "s3cret".into())].into());
        let shown = format!("{headers:?}");
        assert!(shown.contains("x-api-key"), "{shown}");
        assert!(!shown.contains("s3cret"), "{shown}");
    }

    #[test]
    fn headers_file_lines_are_read_and_bad_lines_are_not_shown() {
        let dir = std::env::temp_dir().join(format!("apiscope-headers-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("headers");
        let read = |path: &std::path::Path| {
            let mut settings = OtlpSettings {
                headers_file: Some(path.to_owned()),
                ..OtlpSettings::default()
            };
            settings.read_headers_file().map(|()| settings.headers.0)
        };
        std::fs::write(
            &path,
            "# the backend's key\n\nx-api-key = s3cret\nx-team=shop\n",
        )
        .unwrap();
        assert_eq!(
            read(&path).unwrap(),
            BTreeMap::from([
                ("x-api-key".to_owned(), "s3cret".to_owned()),
                ("x-team".to_owned(), "shop".to_owned())
            ])
        );
        std::fs::write(&path, "x-team=shop\ns3cret-without-a-name\n").unwrap();
        let message = read(&path).unwrap_err().to_string();
        assert_eq!(
            message,
            format!("{}:2: expected NAME=VALUE", path.display())
        );
        let message = read(&dir.join("missing")).unwrap_err().to_string();
        assert!(message.contains("cannot read OTLP headers"), "{message}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
