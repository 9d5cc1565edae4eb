//! The OTLP/gRPC sink the agent exports to: it answers OK to traces, metrics and logs (gzip
//! accepted) and only counts what it receives: spans by resource (`service.name`,
//! `process.pid`) and span kind, and requests per signal. It stores nothing else.
//!
//! It runs on a current-thread tokio runtime in a thread of its own, on 127.0.0.1, and stops
//! when dropped.

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddr, TcpListener},
    sync::{Arc, Mutex, mpsc},
    thread,
    time::Duration,
};

use anyhow::{Context as _, Result, anyhow};
use opentelemetry_proto::tonic::{
    collector::{
        logs::v1::{
            ExportLogsServiceRequest, ExportLogsServiceResponse,
            logs_service_server::{LogsService, LogsServiceServer},
        },
        metrics::v1::{
            ExportMetricsServiceRequest, ExportMetricsServiceResponse,
            metrics_service_server::{MetricsService, MetricsServiceServer},
        },
        trace::v1::{
            ExportTraceServiceRequest, ExportTraceServiceResponse,
            trace_service_server::{TraceService, TraceServiceServer},
        },
    },
    common::v1::any_value,
    trace::v1::span::SpanKind,
};
use serde::Serialize;
use tonic::codec::CompressionEncoding;

/// How long [`Sink::start`] waits for the server thread.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest export accepted.
const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// Spans of one kind from one process.
#[derive(Clone, Debug, Serialize)]
pub struct SpanCount {
    /// The resource's `service.name`.
    pub service: String,
    /// The resource's `process.pid` (-1 if absent).
    pub pid: i64,
    /// `SERVER`, `CLIENT`, ...
    pub kind: String,
    /// How many.
    pub spans: u64,
}

/// What the sink received since the last [`Sink::take`].
#[derive(Clone, Debug, Default, Serialize)]
pub struct Counts {
    /// Spans per resource (service and pid) and kind.
    pub spans: Vec<SpanCount>,
    /// Trace export requests.
    pub trace_requests: u64,
    /// Metric export requests.
    pub metric_requests: u64,
    /// Metric data points, all kinds.
    pub metric_points: u64,
    /// Log export requests.
    pub log_requests: u64,
}

impl Counts {
    /// Spans of `kind` (`SERVER`, `CLIENT`) from service `service` in one of `pids`.
    pub fn spans_of(&self, service: &str, pids: &[i64], kind: &str) -> u64 {
        self.spans
            .iter()
            .filter(|c| c.service == service && c.kind == kind && pids.contains(&c.pid))
            .map(|c| c.spans)
            .sum()
    }

    /// Every span received.
    pub fn total_spans(&self) -> u64 {
        self.spans.iter().map(|c| c.spans).sum()
    }
}

/// Spans per (service.name, process.pid, kind).
type SpanTally = BTreeMap<(String, i64, String), u64>;

/// The running totals.
#[derive(Default)]
struct Tally {
    spans: SpanTally,
    trace_requests: u64,
    metric_requests: u64,
    metric_points: u64,
    log_requests: u64,
}

/// The shared totals behind the three services.
#[derive(Clone, Default)]
struct Services(Arc<Mutex<Tally>>);

impl Services {
    fn update(&self, f: impl FnOnce(&mut Tally)) {
        f(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()));
    }
}

/// The value of a resource attribute.
fn resource_attr<'a>(
    resource: Option<&'a opentelemetry_proto::tonic::resource::v1::Resource>,
    key: &str,
) -> Option<&'a any_value::Value> {
    resource?
        .attributes
        .iter()
        .find(|kv| kv.key == key)?
        .value
        .as_ref()?
        .value
        .as_ref()
}

#[tonic::async_trait]
impl TraceService for Services {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let request = request.into_inner();
        // Counted outside the lock, merged under it.
        let mut batch = SpanTally::new();
        for resource_spans in &request.resource_spans {
            let resource = resource_spans.resource.as_ref();
            let service = match resource_attr(resource, "service.name") {
                Some(any_value::Value::StringValue(name)) => name.clone(),
                Some(other) => format!("{other:?}"),
                None => "(none)".to_owned(),
            };
            let pid = match resource_attr(resource, "process.pid") {
                Some(any_value::Value::IntValue(pid)) => *pid,
                _ => -1,
            };
            for span in resource_spans.scope_spans.iter().flat_map(|s| &s.spans) {
                let kind = SpanKind::try_from(span.kind).map_or("INVALID", |kind| {
                    kind.as_str_name().trim_start_matches("SPAN_KIND_")
                });
                *batch
                    .entry((service.clone(), pid, kind.to_owned()))
                    .or_default() += 1;
            }
        }
        self.update(|tally| {
            tally.trace_requests += 1;
            for (key, n) in batch {
                *tally.spans.entry(key).or_default() += n;
            }
        });
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Services {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        use opentelemetry_proto::tonic::metrics::v1::metric::Data;
        let request = request.into_inner();
        let points: usize = request
            .resource_metrics
            .iter()
            .flat_map(|r| &r.scope_metrics)
            .flat_map(|s| &s.metrics)
            .map(|metric| match &metric.data {
                Some(Data::Gauge(g)) => g.data_points.len(),
                Some(Data::Sum(s)) => s.data_points.len(),
                Some(Data::Histogram(h)) => h.data_points.len(),
                Some(Data::ExponentialHistogram(h)) => h.data_points.len(),
                Some(Data::Summary(s)) => s.data_points.len(),
                None => 0,
            })
            .sum();
        self.update(|tally| {
            tally.metric_requests += 1;
            tally.metric_points += points as u64;
        });
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl LogsService for Services {
    async fn export(
        &self,
        _request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        self.update(|tally| tally.log_requests += 1);
        Ok(tonic::Response::new(ExportLogsServiceResponse::default()))
    }
}

/// A running sink; stops when dropped.
pub struct Sink {
    /// Where it listens.
    addr: SocketAddr,
    /// The counters.
    services: Services,
    /// Stops the server.
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    /// The server thread.
    thread: Option<thread::JoinHandle<()>>,
}

impl Sink {
    /// Binds 127.0.0.1 on a free port and starts serving.
    pub fn start() -> Result<Self> {
        let listener =
            TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("sink: bind 127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let services = Services::default();
        let (shutdown_tx, shutdown_rx) = tokio::sync::oneshot::channel();
        let (ready_tx, ready_rx) = mpsc::channel();
        let served = services.clone();
        let thread = thread::Builder::new()
            .name("otlp-sink".into())
            .spawn(move || serve(listener, served, shutdown_rx, ready_tx))?;
        let mut sink = Self {
            addr,
            services,
            shutdown: Some(shutdown_tx),
            thread: Some(thread),
        };
        match ready_rx.recv_timeout(START_TIMEOUT) {
            Ok(Ok(())) => Ok(sink),
            Ok(Err(error)) => Err(anyhow!("sink: {error}")),
            Err(_) => {
                sink.stop();
                Err(anyhow!("sink: not started after {START_TIMEOUT:?}"))
            }
        }
    }

    /// The endpoint for `--otlp-endpoint`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The counts since the last call, resetting them.
    pub fn take(&self) -> Counts {
        let tally = std::mem::take(&mut *self.services.0.lock().unwrap_or_else(|e| e.into_inner()));
        Counts {
            spans: tally
                .spans
                .into_iter()
                .map(|((service, pid, kind), spans)| SpanCount {
                    service,
                    pid,
                    kind,
                    spans,
                })
                .collect(),
            trace_requests: tally.trace_requests,
            metric_requests: tally.metric_requests,
            metric_points: tally.metric_points,
            log_requests: tally.log_requests,
        }
    }

    fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The server thread: a current-thread runtime serving until `shutdown`.
fn serve(
    listener: TcpListener,
    services: Services,
    shutdown: tokio::sync::oneshot::Receiver<()>,
    ready: mpsc::Sender<Result<(), String>>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            let _ = ready.send(Err(format!("tokio runtime: {error}")));
            return;
        }
    };
    runtime.block_on(async move {
        let listener = match tokio::net::TcpListener::from_std(listener) {
            Ok(listener) => listener,
            Err(error) => {
                let _ = ready.send(Err(format!("tokio listener: {error}")));
                return;
            }
        };
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let server = tonic::transport::Server::builder()
            .add_service(
                TraceServiceServer::new(services.clone())
                    .accept_compressed(CompressionEncoding::Gzip)
                    .max_decoding_message_size(MAX_MESSAGE_BYTES),
            )
            .add_service(
                MetricsServiceServer::new(services.clone())
                    .accept_compressed(CompressionEncoding::Gzip)
                    .max_decoding_message_size(MAX_MESSAGE_BYTES),
            )
            .add_service(
                LogsServiceServer::new(services)
                    .accept_compressed(CompressionEncoding::Gzip)
                    .max_decoding_message_size(MAX_MESSAGE_BYTES),
            )
            .serve_with_incoming(incoming);
        let _ = ready.send(Ok(()));
        // Not a graceful shutdown: open connections are cancelled with the runtime, so that
        // stopping never waits on a client.
        tokio::select! {
            result = server => {
                if let Err(error) = result {
                    eprintln!("warning: OTLP sink stopped: {error}");
                }
            }
            _ = shutdown => {}
        }
    });
}
