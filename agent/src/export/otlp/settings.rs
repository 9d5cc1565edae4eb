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
    pub headers: Vec<(String, String)>,
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
}

impl OtlpSettings {
    /// The HTTP URL of one signal (`traces`, `metrics`).
    pub fn signal_url(&self, signal: &str) -> String {
        format!("{}/v1/{signal}", self.endpoint.trim_end_matches('/'))
    }
}

/// The headers as gRPC metadata.
pub(super) fn metadata(headers: &[(String, String)]) -> Result<MetadataMap, OtlpError> {
    let mut metadata = MetadataMap::new();
    for (name, value) in headers {
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
