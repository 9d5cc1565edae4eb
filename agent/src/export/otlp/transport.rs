//! Sending encoded trace and log export requests to the collector, over gRPC (tonic) or
//! HTTP/protobuf (reqwest), the same transports and settings the metric exporter uses.

use std::{
    io::Write as _,
    sync::atomic::{AtomicU64, Ordering},
    time::Instant,
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

use tokio::sync::watch;

use super::{OtlpError, OtlpProtocol, OtlpSettings, RetrySettings, settings};

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
    retry: RetrySettings,
    /// Turns true when the agent stops: a batch waiting for its next attempt is then given
    /// up, so that shutdown does not wait out the backoff.
    stopping: watch::Receiver<bool>,
    /// Since when exports have been failing, for the one log line when they succeed again.
    outage: Option<Instant>,
}

/// Why one export attempt failed.
#[derive(Debug)]
struct ExportFailure {
    reason: String,
    /// Whether the same request may succeed later, as the OTLP specification lists the
    /// failures: the collector unreachable, overloaded, timing out or restarting.
    retryable: bool,
}

impl ExportFailure {
    fn retryable(reason: String) -> Self {
        Self {
            reason,
            retryable: true,
        }
    }

    /// A gRPC status: retryable for the codes OTLP/gRPC names (RESOURCE_EXHAUSTED included:
    /// collectors answer it when their own queue is full).
    fn grpc(status: &Status) -> Self {
        use tonic::Code;
        Self {
            reason: format!("{}: {}", status.code(), status.message()),
            retryable: matches!(
                status.code(),
                Code::Cancelled
                    | Code::DeadlineExceeded
                    | Code::ResourceExhausted
                    | Code::Aborted
                    | Code::OutOfRange
                    | Code::Unavailable
                    | Code::DataLoss
            ),
        }
    }

    /// An HTTP status: retryable for the codes OTLP/HTTP names.
    fn http(status: reqwest::StatusCode) -> Self {
        Self {
            reason: format!("HTTP {status}"),
            retryable: matches!(status.as_u16(), 429 | 502 | 503 | 504),
        }
    }
}

/// Where a [`SignalClient`] counts what became of the items it was handed.
pub(super) struct Outcome<'a> {
    /// Items the collector accepted.
    pub exported: &'a AtomicU64,
    /// Items the collector refused, or that were given up after the retries.
    pub failed: &'a AtomicU64,
    /// Export attempts that were retried.
    pub retries: &'a AtomicU64,
}

impl SignalClient {
    /// A client of `signal`'s service on the configured collector; connects on first use.
    pub fn new(
        settings: &OtlpSettings,
        signal: Signal,
        stopping: watch::Receiver<bool>,
    ) -> Result<Self, OtlpError> {
        Ok(Self {
            signal,
            transport: Transport::new(settings, signal)?,
            retry: settings.retry,
            stopping,
            outage: None,
        })
    }

    /// Sends one encoded export request of `count` items, trying it again after retryable
    /// failures (see [`RetrySettings`]), and counts the items in `outcome`. While a batch
    /// waits, the next ones wait in the bounded queue behind it, and what does not fit is
    /// dropped and counted there: capture never waits for the collector. Logs once when
    /// exports start failing and once when they work again, so an outage does not flood the
    /// log.
    pub async fn export_counted(&mut self, request: Vec<u8>, count: u64, outcome: Outcome<'_>) {
        let request = Bytes::from(request);
        let mut delays = self.retry.delays();
        loop {
            let failure = match self.transport.export(self.signal, request.clone()).await {
                Ok(response) => {
                    let rejected = self.signal.rejected(response).min(count);
                    outcome
                        .exported
                        .fetch_add(count - rejected, Ordering::Relaxed);
                    outcome.failed.fetch_add(rejected, Ordering::Relaxed);
                    if let Some(since) = self.outage.take() {
                        log::info!(
                            "OTLP {} export works again, after {:.1} s of failures",
                            self.signal.http_name(),
                            since.elapsed().as_secs_f64()
                        );
                    }
                    return;
                }
                Err(failure) => failure,
            };
            let delay = if failure.retryable && !*self.stopping.borrow() {
                delays.next()
            } else {
                None
            };
            if self.outage.is_none() {
                self.outage = Some(Instant::now());
                log::warn!(
                    "OTLP {} export failed ({}; until it works again, failures are only \
                     counted): {}",
                    self.signal.http_name(),
                    if delay.is_some() {
                        "retrying with backoff"
                    } else {
                        "not retryable, batch dropped"
                    },
                    failure.reason
                );
            }
            let Some(delay) = delay else {
                outcome.failed.fetch_add(count, Ordering::Relaxed);
                return;
            };
            outcome.retries.fetch_add(1, Ordering::Relaxed);
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                // Stopping: one last attempt now, none after it.
                _ = self.stopping.changed() => {}
            }
        }
    }
}

/// How export requests reach the collector.
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

impl Transport {
    fn new(settings: &OtlpSettings, signal: Signal) -> Result<Self, OtlpError> {
        let url = settings.endpoint().unwrap_or_default();
        let failed = |reason: String| OtlpError::Client {
            endpoint: url.to_owned(),
            reason,
        };
        match settings.protocol {
            OtlpProtocol::Grpc => {
                let mut endpoint = Endpoint::from_shared(url.to_owned())
                    .map_err(|error| failed(error.to_string()))?
                    .timeout(settings.timeout)
                    .connect_timeout(settings.timeout);
                if url.starts_with("https://") {
                    endpoint = endpoint
                        .tls_config(ClientTlsConfig::new().with_native_roots())
                        .map_err(|error| failed(error.to_string()))?;
                }
                let mut grpc = tonic::client::Grpc::new(endpoint.connect_lazy());
                if settings.gzip() {
                    grpc = grpc.send_compressed(CompressionEncoding::Gzip);
                }
                Ok(Self::Grpc {
                    grpc,
                    metadata: settings::metadata(&settings.headers)?,
                })
            }
            OtlpProtocol::HttpProtobuf => {
                let mut headers = reqwest::header::HeaderMap::new();
                for (name, value) in &settings.headers.0 {
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
                    gzip: settings.gzip(),
                })
            }
        }
    }

    /// Sends one encoded request; returns the collector's encoded answer.
    async fn export(&mut self, signal: Signal, request: Bytes) -> Result<Bytes, ExportFailure> {
        match self {
            Self::Grpc { grpc, metadata } => {
                grpc.ready().await.map_err(|error| {
                    ExportFailure::retryable(format!("collector unreachable: {error}"))
                })?;
                let mut request = tonic::Request::new(request);
                *request.metadata_mut() = metadata.clone();
                let response = grpc
                    .unary(
                        request,
                        tonic::codegen::http::uri::PathAndQuery::from_static(signal.grpc_path()),
                        EncodedCodec,
                    )
                    .await
                    .map_err(|status| ExportFailure::grpc(&status))?;
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
                    Bytes::from(gzip_bytes(&request).map_err(|error| ExportFailure {
                        reason: error.to_string(),
                        retryable: false,
                    })?)
                } else {
                    request
                };
                // Failures to connect, send or read the answer: the collector is unreachable
                // or went away mid-request.
                let unreachable =
                    |error: reqwest::Error| ExportFailure::retryable(error.to_string());
                let response = post.body(body).send().await.map_err(unreachable)?;
                let status = response.status();
                if !status.is_success() {
                    return Err(ExportFailure::http(status));
                }
                response.bytes().await.map_err(unreachable)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_the_specification_calls_transient_are_retried() {
        for code in [
            tonic::Code::Unavailable,
            tonic::Code::ResourceExhausted,
            tonic::Code::DeadlineExceeded,
        ] {
            assert!(
                ExportFailure::grpc(&Status::new(code, "")).retryable,
                "{code:?}"
            );
        }
        for code in [
            tonic::Code::InvalidArgument,
            tonic::Code::Unauthenticated,
            tonic::Code::PermissionDenied,
        ] {
            assert!(
                !ExportFailure::grpc(&Status::new(code, "")).retryable,
                "{code:?}"
            );
        }
        for status in [429, 502, 503, 504] {
            let status = reqwest::StatusCode::from_u16(status).unwrap();
            assert!(ExportFailure::http(status).retryable, "{status}");
        }
        for status in [400, 401, 403, 404, 413, 500] {
            let status = reqwest::StatusCode::from_u16(status).unwrap();
            assert!(!ExportFailure::http(status).retryable, "{status}");
        }
    }
}
