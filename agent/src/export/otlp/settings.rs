//! Where and how to export: from flags, the configuration file and the standard
//! `OTEL_EXPORTER_OTLP_*` / `OTEL_BSP_*` / `OTEL_METRIC_EXPORT_INTERVAL` variables.

use std::time::Duration;

use opentelemetry_otlp::{WithTonicConfig, tonic_types::transport::ClientTlsConfig};
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};

use super::OtlpError;

/// OTLP transport, named as the OpenTelemetry specification spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
pub enum OtlpProtocol {
    /// OTLP over gRPC (`grpc`), usually port 4317.
    #[serde(rename = "grpc")]
    Grpc,
    /// OTLP over HTTP with protobuf bodies (`http/protobuf`), usually port 4318.
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
}

impl OtlpProtocol {
    /// Parses the names the OpenTelemetry specification uses.
    pub fn parse(name: &str) -> Option<Self> {
        match name.trim() {
            "grpc" => Some(Self::Grpc),
            "http/protobuf" | "http" => Some(Self::HttpProtobuf),
            _ => None,
        }
    }
}

/// Everything the OTLP exporter needs.
#[derive(Debug, Clone)]
pub struct OtlpSettings {
    /// Collector endpoint: `http(s)://host:port` (for HTTP, the base URL: `/v1/traces` and
    /// `/v1/metrics` are appended).
    pub endpoint: String,
    /// Transport.
    pub protocol: OtlpProtocol,
    /// Extra headers (gRPC metadata) sent with every export, e.g. an API key.
    pub headers: OtlpHeaders,
    /// Compress exports with gzip.
    pub gzip: bool,
    /// Time allowed for one export.
    pub timeout: Duration,
    /// Spans waiting for export at most; more are dropped and counted.
    pub max_queue_size: usize,
    /// Encoded bytes of the spans waiting for export at most; more are dropped and counted.
    pub max_queue_bytes: usize,
    /// Spans per export at most.
    pub max_export_batch_size: usize,
    /// Longest a span waits before its batch is sent.
    pub schedule_delay: Duration,
    /// How often metrics are collected and exported.
    pub metric_interval: Duration,
    /// How failed exports of spans and events are tried again.
    pub retry: RetrySettings,
}

/// How a failed export is tried again: only failures the OTLP specification calls retryable
/// (the collector unreachable, overloaded or restarting), after exponentially growing delays
/// with jitter, so that the agents of a whole cluster do not come back in step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetrySettings {
    /// Delay before the first retry; each next one doubles, up to `max_interval`.
    pub initial_interval: Duration,
    /// Longest delay between two attempts.
    pub max_interval: Duration,
    /// Total delay after which a batch is given up (counted as failed); zero: no retries.
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
                .with_max_delay(self.max_interval)
                .with_jitter()
                .without_max_times()
                .with_total_delay(Some(self.max_elapsed)),
        )
    }
}

/// Headers sent with every export: often an API key, so their values never appear in a
/// debug print (nor, through it, in a log line).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct OtlpHeaders(pub Vec<(String, String)>);

impl std::fmt::Debug for OtlpHeaders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(name, _)| (name, "[redacted]")))
            .finish()
    }
}

impl OtlpSettings {
    /// The HTTP URL of one signal (`traces`, `metrics`).
    pub fn signal_url(&self, signal: &str) -> String {
        format!("{}/v1/{signal}", self.endpoint.trim_end_matches('/'))
    }
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
        let headers = OtlpHeaders(vec![("x-api-key".into(), "s3cret".into())]);
        let shown = format!("{headers:?}");
        assert!(shown.contains("x-api-key"), "{shown}");
        assert!(!shown.contains("s3cret"), "{shown}");
    }
}
