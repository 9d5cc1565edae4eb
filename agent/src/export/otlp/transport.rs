//! Sending encoded trace and log export requests to the collector, over gRPC (tonic) or
//! HTTP/protobuf (reqwest), the same transports and settings the metric exporter uses.

use std::{
    io::Write as _,
    sync::atomic::{AtomicU64, Ordering},
};

use bytes::{Buf as _, BufMut as _, Bytes};
use opentelemetry_proto::tonic::collector::{
    logs::v1::ExportLogsServiceResponse, trace::v1::ExportTraceServiceResponse,
};
use prost::Message as _;
use tonic::{
    Status,
    codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder},
    metadata::MetadataMap,
    transport::{Channel, ClientTlsConfig, Endpoint},
};

use super::{OtlpError, OtlpProtocol, OtlpSettings, settings};

/// An OTLP signal whose encoded export requests a [`SignalClient`] sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Signal {
    /// Spans.
    Traces,
    /// Log records (the agent's events).
    Logs,
}

impl Signal {
    /// The export method of the signal's gRPC service.
    fn grpc_path(self) -> &'static str {
        match self {
            Self::Traces => "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            Self::Logs => "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
        }
    }

    /// The last part of the signal's OTLP/HTTP path (`/v1/traces`).
    fn http_name(self) -> &'static str {
        match self {
            Self::Traces => "traces",
            Self::Logs => "logs",
        }
    }

    /// How many items the collector's answer says it rejected. An empty or unreadable answer
    /// still means the collector accepted the batch.
    fn rejected(self, response: Bytes) -> u64 {
        let rejected = match self {
            Self::Traces => ExportTraceServiceResponse::decode(response)
                .ok()
                .and_then(|response| response.partial_success)
                .map(|partial| partial.rejected_spans),
            Self::Logs => ExportLogsServiceResponse::decode(response)
                .ok()
                .and_then(|response| response.partial_success)
                .map(|partial| partial.rejected_log_records),
        };
        rejected.map_or(0, |count| u64::try_from(count).unwrap_or(0))
    }
}

/// A client of one of the collector's services.
pub(super) struct SignalClient {
    signal: Signal,
    transport: Transport,
}

enum Transport {
    /// OTLP/gRPC.
    Grpc {
        /// The gRPC client on a lazily connected channel (it reconnects by itself).
        grpc: tonic::client::Grpc<Channel>,
        /// Headers sent with every export.
        metadata: MetadataMap,
    },
    /// OTLP/HTTP with protobuf bodies.
    Http {
        /// The HTTP client (connection pool).
        client: reqwest::Client,
        /// `{endpoint}/v1/{signal}`.
        url: String,
        /// Headers sent with every export.
        headers: reqwest::header::HeaderMap,
        /// Compress bodies with gzip.
        gzip: bool,
    },
}

impl SignalClient {
    /// A client of `signal`'s service on the configured collector; connects on first use.
    pub fn new(settings: &OtlpSettings, signal: Signal) -> Result<Self, OtlpError> {
        Ok(Self {
            signal,
            transport: Transport::new(settings, signal)?,
        })
    }

    /// Sends one encoded export request; returns how many items the collector said it
    /// rejected (partial success), or why the export failed.
    pub async fn export(&mut self, request: Vec<u8>) -> Result<u64, String> {
        let response = self.transport.export(self.signal, request).await?;
        Ok(self.signal.rejected(response))
    }

    /// Sends one encoded export request of `count` items and counts them as `exported` or
    /// `failed`; the first failure is logged, later ones only counted, so an unreachable
    /// collector does not flood the log.
    pub async fn export_counted(
        &mut self,
        request: Vec<u8>,
        count: u64,
        exported: &AtomicU64,
        failed: &AtomicU64,
    ) {
        match self.export(request).await {
            Ok(rejected) => {
                let rejected = rejected.min(count);
                exported.fetch_add(count - rejected, Ordering::Relaxed);
                failed.fetch_add(rejected, Ordering::Relaxed);
            }
            Err(error) => {
                if failed.fetch_add(count, Ordering::Relaxed) == 0 {
                    log::warn!(
                        "OTLP {} export failed (further failures are only counted): {error}",
                        self.signal.http_name()
                    );
                }
            }
        }
    }
}

impl Transport {
    fn new(settings: &OtlpSettings, signal: Signal) -> Result<Self, OtlpError> {
        let failed = |reason: String| OtlpError::Client {
            endpoint: settings.endpoint.clone(),
            reason,
        };
        match settings.protocol {
            OtlpProtocol::Grpc => {
                let mut endpoint = Endpoint::from_shared(settings.endpoint.clone())
                    .map_err(|error| failed(error.to_string()))?
                    .timeout(settings.timeout)
                    .connect_timeout(settings.timeout);
                if settings.endpoint.starts_with("https://") {
                    endpoint = endpoint
                        .tls_config(ClientTlsConfig::new().with_native_roots())
                        .map_err(|error| failed(error.to_string()))?;
                }
                let mut grpc = tonic::client::Grpc::new(endpoint.connect_lazy());
                if settings.gzip {
                    grpc = grpc.send_compressed(CompressionEncoding::Gzip);
                }
                Ok(Self::Grpc {
                    grpc,
                    metadata: settings::metadata(&settings.headers)?,
                })
            }
            OtlpProtocol::HttpProtobuf => {
                let mut headers = reqwest::header::HeaderMap::new();
                for (name, value) in &settings.headers {
                    let name = reqwest::header::HeaderName::from_bytes(name.as_bytes())
                        .map_err(|_| OtlpError::Header(name.clone()))?;
                    let value = reqwest::header::HeaderValue::from_str(value)
                        .map_err(|_| OtlpError::Header(name.to_string()))?;
                    headers.insert(name, value);
                }
                let client = reqwest::Client::builder()
                    .timeout(settings.timeout)
                    .build()
                    .map_err(|error| failed(error.to_string()))?;
                Ok(Self::Http {
                    client,
                    url: settings.signal_url(signal.http_name()),
                    headers,
                    gzip: settings.gzip,
                })
            }
        }
    }

    /// Sends one encoded request; returns the collector's encoded answer.
    async fn export(&mut self, signal: Signal, request: Vec<u8>) -> Result<Bytes, String> {
        match self {
            Self::Grpc { grpc, metadata } => {
                grpc.ready()
                    .await
                    .map_err(|error| format!("collector unreachable: {error}"))?;
                let mut request = tonic::Request::new(Bytes::from(request));
                *request.metadata_mut() = metadata.clone();
                let response = grpc
                    .unary(
                        request,
                        tonic::codegen::http::uri::PathAndQuery::from_static(signal.grpc_path()),
                        EncodedCodec,
                    )
                    .await
                    .map_err(|status| format!("{}: {}", status.code(), status.message()))?;
                Ok(response.into_inner())
            }
            Self::Http {
                client,
                url,
                headers,
                gzip,
            } => {
                let mut post = client
                    .post(url.as_str())
                    .headers(headers.clone())
                    .header(reqwest::header::CONTENT_TYPE, "application/x-protobuf");
                let body = if *gzip {
                    post = post.header(reqwest::header::CONTENT_ENCODING, "gzip");
                    gzip_bytes(&request).map_err(|error| error.to_string())?
                } else {
                    request
                };
                let response = post
                    .body(body)
                    .send()
                    .await
                    .map_err(|error| error.to_string())?;
                let status = response.status();
                if !status.is_success() {
                    return Err(format!("HTTP {status}"));
                }
                response.bytes().await.map_err(|error| error.to_string())
            }
        }
    }
}

fn gzip_bytes(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(bytes.len() / 4),
        flate2::Compression::default(),
    );
    encoder.write_all(bytes)?;
    encoder.finish()
}

/// A gRPC codec that sends an already-encoded request and hands back the encoded answer.
struct EncodedCodec;

impl Codec for EncodedCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = EncodedRequest;
    type Decoder = ExportResponse;

    fn encoder(&mut self) -> Self::Encoder {
        EncodedRequest
    }

    fn decoder(&mut self) -> Self::Decoder {
        ExportResponse
    }
}

/// Writes the encoded request as the gRPC message.
struct EncodedRequest;

impl Encoder for EncodedRequest {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

/// Takes the collector's answer as it is.
struct ExportResponse;

impl Decoder for ExportResponse {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}
