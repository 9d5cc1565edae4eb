//! The OTLP/gRPC sink the agent exports to: the end-to-end tests' server
//! (`otlp-test-server`) with a collector that answers OK to traces, metrics and logs and only
//! counts what it receives: spans by resource (`service.name`, `process.pid`) and span kind,
//! and requests per signal. It stores nothing else. It listens on 127.0.0.1 and stops when
//! dropped.

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddr},
    sync::{Arc, Mutex},
};

use anyhow::{Result, anyhow};
use opentelemetry_proto::tonic::{
    collector::{
        logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest,
        trace::v1::ExportTraceServiceRequest,
    },
    common::v1::any_value,
    trace::v1::span::SpanKind,
};
use otlp_test_server::{Collector, OtlpServer};
use serde::Serialize;

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

/// The shared totals, kept by the collector.
#[derive(Clone, Default)]
struct Counter(Arc<Mutex<Tally>>);

impl Counter {
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
impl Collector for Counter {
    async fn traces(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<(), tonic::Status> {
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
        Ok(())
    }

    async fn metrics(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<(), tonic::Status> {
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
        Ok(())
    }

    async fn logs(
        &self,
        _request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<(), tonic::Status> {
        self.update(|tally| tally.log_requests += 1);
        Ok(())
    }
}

/// A running sink; stops when dropped.
pub struct Sink {
    counter: Counter,
    server: OtlpServer,
}

impl Sink {
    /// Binds 127.0.0.1 on a free port and starts serving.
    pub fn start() -> Result<Self> {
        let counter = Counter::default();
        let server = OtlpServer::start(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), counter.clone())
            .map_err(|error| anyhow!("sink: {error}"))?;
        Ok(Self { counter, server })
    }

    /// The endpoint for `--otlp-endpoint`.
    pub fn endpoint(&self) -> String {
        self.server.endpoint()
    }

    /// The counts since the last call, resetting them.
    pub fn take(&self) -> Counts {
        let tally = std::mem::take(&mut *self.counter.0.lock().unwrap_or_else(|e| e.into_inner()));
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
}
