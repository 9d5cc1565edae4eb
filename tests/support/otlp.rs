//! The end-to-end tests' OTLP receiver: the shared test server (`otlp-test-server`, which the
//! benchmarks' sink runs too) with a collector that keeps everything.
//!
//! [`OtlpReceiver::start`] binds 127.0.0.1:0 and returns once it serves. Every export request is kept as
//! received, as its protobuf encoding (to search everything that was exported
//! for a secret), and flattened into [`FlatSpan`]s and [`FlatMetric`]s (one
//! per data point). Waits are condvar-based and bounded; the server stops
//! when the receiver is dropped.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point};
use opentelemetry_proto::tonic::resource::v1::Resource;
use otlp_test_server::{Collector, OtlpServer};
use prost::Message as _;

use super::Agent;

pub use opentelemetry_proto::tonic::metrics::v1::AggregationTemporality;
pub use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
pub use opentelemetry_proto::tonic::trace::v1::status::StatusCode;

// ---------------------------------------------------------------------------
// Flattened data
// ---------------------------------------------------------------------------

/// An attribute value, typed as OTLP's `AnyValue`.
#[derive(Clone, Debug, PartialEq)]
pub enum AttrValue {
    Str(String),
    Int(i64),
    Bool(bool),
    Double(f64),
    Bytes(Vec<u8>),
    Array(Vec<AttrValue>),
    Map(BTreeMap<String, AttrValue>),
    /// An `AnyValue` without a value.
    Empty,
}

impl AttrValue {
    fn from_proto(value: Option<&AnyValue>) -> AttrValue {
        match value.and_then(|v| v.value.as_ref()) {
            None => AttrValue::Empty,
            Some(any_value::Value::StringValue(s)) => AttrValue::Str(s.clone()),
            Some(any_value::Value::IntValue(i)) => AttrValue::Int(*i),
            Some(any_value::Value::BoolValue(b)) => AttrValue::Bool(*b),
            Some(any_value::Value::DoubleValue(d)) => AttrValue::Double(*d),
            Some(any_value::Value::BytesValue(b)) => AttrValue::Bytes(b.clone()),
            Some(any_value::Value::ArrayValue(a)) => AttrValue::Array(
                a.values
                    .iter()
                    .map(|v| AttrValue::from_proto(Some(v)))
                    .collect(),
            ),
            Some(any_value::Value::KvlistValue(kv)) => AttrValue::Map(attrs(&kv.values)),
            // Only meaningful in OTLP profiles (an index into a string table).
            Some(any_value::Value::StringValueStrindex(_)) => AttrValue::Empty,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            AttrValue::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            AttrValue::Int(i) => Some(*i),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            AttrValue::Bool(b) => Some(*b),
            _ => None,
        }
    }

    pub fn as_double(&self) -> Option<f64> {
        match self {
            AttrValue::Double(d) => Some(*d),
            _ => None,
        }
    }
}

impl fmt::Display for AttrValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttrValue::Str(s) => write!(f, "{s:?}"),
            AttrValue::Int(i) => write!(f, "{i}"),
            AttrValue::Bool(b) => write!(f, "{b}"),
            AttrValue::Double(d) => write!(f, "{d:?}"),
            AttrValue::Bytes(b) => write!(f, "bytes:{}", hex(b)),
            AttrValue::Array(a) => {
                f.write_str("[")?;
                for (i, v) in a.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{v}")?;
                }
                f.write_str("]")
            }
            AttrValue::Map(m) => write!(f, "{{{}}}", format_attrs(m)),
            AttrValue::Empty => f.write_str("<empty>"),
        }
    }
}

/// A string attribute value (for building expectations).
pub fn s(value: &str) -> AttrValue {
    AttrValue::Str(value.to_owned())
}

/// An integer attribute value (for building expectations).
pub fn i(value: i64) -> AttrValue {
    AttrValue::Int(value)
}

/// Attributes as a map; a key repeated in one list keeps its last value.
pub type Attrs = BTreeMap<String, AttrValue>;

fn attrs(list: &[KeyValue]) -> Attrs {
    list.iter()
        .map(|kv| (kv.key.clone(), AttrValue::from_proto(kv.value.as_ref())))
        .collect()
}

fn resource_attrs(resource: Option<&Resource>) -> Attrs {
    resource.map_or_else(Attrs::new, |r| attrs(&r.attributes))
}

fn scope_name(scope: Option<&InstrumentationScope>) -> (String, String) {
    scope.map_or_else(Default::default, |s| (s.name.clone(), s.version.clone()))
}

/// `k=v, k=v` in key order.
pub fn format_attrs(attrs: &Attrs) -> String {
    attrs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One span, with its resource and scope.
#[derive(Clone, Debug)]
pub struct FlatSpan {
    pub resource: Attrs,
    pub scope_name: String,
    pub scope_version: String,
    pub name: String,
    pub kind: SpanKind,
    /// 32 lowercase hex digits (whatever length was sent, hex-encoded).
    pub trace_id: String,
    /// 16 lowercase hex digits.
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    pub trace_state: String,
    pub flags: u32,
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    pub status_code: StatusCode,
    pub status_message: String,
    pub attributes: Attrs,
    pub dropped_attributes_count: u32,
    pub events: usize,
    pub links: usize,
}

impl FlatSpan {
    /// Every span of `request`, flattened as the receiver does.
    pub fn from_request(request: &ExportTraceServiceRequest) -> Vec<FlatSpan> {
        let mut out = Vec::new();
        FlatSpan::flatten(request, &mut out);
        out
    }

    fn flatten(request: &ExportTraceServiceRequest, out: &mut Vec<FlatSpan>) {
        for rs in &request.resource_spans {
            let resource = resource_attrs(rs.resource.as_ref());
            for ss in &rs.scope_spans {
                let (scope_name, scope_version) = scope_name(ss.scope.as_ref());
                for span in &ss.spans {
                    let status = span.status.clone().unwrap_or_default();
                    out.push(FlatSpan {
                        resource: resource.clone(),
                        scope_name: scope_name.clone(),
                        scope_version: scope_version.clone(),
                        name: span.name.clone(),
                        kind: SpanKind::try_from(span.kind).unwrap_or(SpanKind::Unspecified),
                        trace_id: hex(&span.trace_id),
                        span_id: hex(&span.span_id),
                        parent_span_id: hex(&span.parent_span_id),
                        trace_state: span.trace_state.clone(),
                        flags: span.flags,
                        start_unix_nano: span.start_time_unix_nano,
                        end_unix_nano: span.end_time_unix_nano,
                        status_code: StatusCode::try_from(status.code).unwrap_or(StatusCode::Unset),
                        status_message: status.message,
                        attributes: attrs(&span.attributes),
                        dropped_attributes_count: span.dropped_attributes_count,
                        events: span.events.len(),
                        links: span.links.len(),
                    });
                }
            }
        }
    }

    pub fn attr(&self, key: &str) -> Option<&AttrValue> {
        self.attributes.get(key)
    }

    pub fn attr_str(&self, key: &str) -> Option<&str> {
        self.attr(key).and_then(AttrValue::as_str)
    }

    pub fn attr_int(&self, key: &str) -> Option<i64> {
        self.attr(key).and_then(AttrValue::as_int)
    }

    pub fn resource_str(&self, key: &str) -> Option<&str> {
        self.resource.get(key).and_then(AttrValue::as_str)
    }

    pub fn resource_int(&self, key: &str) -> Option<i64> {
        self.resource.get(key).and_then(AttrValue::as_int)
    }

    /// `process.pid` of the resource.
    pub fn pid(&self) -> Option<u32> {
        self.resource_int("process.pid")
            .and_then(|p| u32::try_from(p).ok())
    }

    pub fn is_server(&self) -> bool {
        self.kind == SpanKind::Server
    }

    pub fn is_client(&self) -> bool {
        self.kind == SpanKind::Client
    }

    /// End minus start, in nanoseconds (negative if end < start).
    pub fn duration_nanos(&self) -> i128 {
        i128::from(self.end_unix_nano) - i128::from(self.start_unix_nano)
    }
}

impl fmt::Display for FlatSpan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} {:?} trace={} span={} parent={} start={} dur={}ns status={:?}{} \
             attrs {{{}}} resource {{{}}} scope={:?}",
            self.kind,
            self.name,
            self.trace_id,
            self.span_id,
            if self.parent_span_id.is_empty() {
                "-"
            } else {
                &self.parent_span_id
            },
            self.start_unix_nano,
            self.duration_nanos(),
            self.status_code,
            if self.status_message.is_empty() {
                String::new()
            } else {
                format!(" ({:?})", self.status_message)
            },
            format_attrs(&self.attributes),
            format_attrs(&self.resource),
            self.scope_name,
        )
    }
}

/// One line per span, for panic messages (at most 200 lines).
pub fn summarize_spans<'a>(spans: impl IntoIterator<Item = &'a FlatSpan>) -> String {
    let spans: Vec<&FlatSpan> = spans.into_iter().collect();
    let mut out = format!("{} spans:\n", spans.len());
    for (n, span) in spans.iter().enumerate() {
        if n == 200 {
            out.push_str(&format!("  ... {} more\n", spans.len() - 200));
            break;
        }
        out.push_str(&format!("  {span}\n"));
    }
    out
}

/// What kind of metric a data point belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricKind {
    Gauge,
    Sum,
    Histogram,
    ExponentialHistogram,
    Summary,
    /// A metric without data.
    Empty,
}

/// One data point of one metric, with its resource and scope.
#[derive(Clone, Debug)]
pub struct FlatMetric {
    pub resource: Attrs,
    pub scope_name: String,
    pub name: String,
    pub description: String,
    pub unit: String,
    pub kind: MetricKind,
    pub temporality: AggregationTemporality,
    /// For sums.
    pub is_monotonic: bool,
    /// The data point's attributes.
    pub attributes: Attrs,
    pub start_unix_nano: u64,
    pub time_unix_nano: u64,
    /// Histogram (and summary) count.
    pub count: u64,
    /// Histogram (and summary) sum.
    pub sum: Option<f64>,
    pub bucket_counts: Vec<u64>,
    pub explicit_bounds: Vec<f64>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    /// A gauge's or sum's value (an integer value converted).
    pub value: Option<f64>,
    /// A gauge's or sum's value, when sent as an integer.
    pub value_int: Option<i64>,
}

impl FlatMetric {
    /// Every data point of `request`, flattened as the receiver does.
    pub fn from_request(request: &ExportMetricsServiceRequest) -> Vec<FlatMetric> {
        let mut out = Vec::new();
        FlatMetric::flatten(request, &mut out);
        out
    }

    fn flatten(request: &ExportMetricsServiceRequest, out: &mut Vec<FlatMetric>) {
        for rm in &request.resource_metrics {
            let resource = resource_attrs(rm.resource.as_ref());
            for sm in &rm.scope_metrics {
                let (scope_name, _) = scope_name(sm.scope.as_ref());
                for m in &sm.metrics {
                    let base = FlatMetric {
                        resource: resource.clone(),
                        scope_name: scope_name.clone(),
                        name: m.name.clone(),
                        description: m.description.clone(),
                        unit: m.unit.clone(),
                        kind: MetricKind::Empty,
                        temporality: AggregationTemporality::Unspecified,
                        is_monotonic: false,
                        attributes: Attrs::new(),
                        start_unix_nano: 0,
                        time_unix_nano: 0,
                        count: 0,
                        sum: None,
                        bucket_counts: Vec::new(),
                        explicit_bounds: Vec::new(),
                        min: None,
                        max: None,
                        value: None,
                        value_int: None,
                    };
                    let temporality = |t: i32| {
                        AggregationTemporality::try_from(t)
                            .unwrap_or(AggregationTemporality::Unspecified)
                    };
                    let number = |kind, temporality, is_monotonic, p: &_| {
                        let p: &opentelemetry_proto::tonic::metrics::v1::NumberDataPoint = p;
                        let (value, value_int) = match p.value {
                            Some(number_data_point::Value::AsDouble(d)) => (Some(d), None),
                            Some(number_data_point::Value::AsInt(i)) => (Some(i as f64), Some(i)),
                            None => (None, None),
                        };
                        FlatMetric {
                            kind,
                            temporality,
                            is_monotonic,
                            attributes: attrs(&p.attributes),
                            start_unix_nano: p.start_time_unix_nano,
                            time_unix_nano: p.time_unix_nano,
                            value,
                            value_int,
                            ..base.clone()
                        }
                    };
                    match &m.data {
                        None => out.push(base.clone()),
                        Some(metric::Data::Gauge(g)) => out.extend(g.data_points.iter().map(|p| {
                            number(
                                MetricKind::Gauge,
                                AggregationTemporality::Unspecified,
                                false,
                                p,
                            )
                        })),
                        Some(metric::Data::Sum(sum)) => {
                            out.extend(sum.data_points.iter().map(|p| {
                                number(
                                    MetricKind::Sum,
                                    temporality(sum.aggregation_temporality),
                                    sum.is_monotonic,
                                    p,
                                )
                            }))
                        }
                        Some(metric::Data::Histogram(h)) => {
                            out.extend(h.data_points.iter().map(|p| FlatMetric {
                                kind: MetricKind::Histogram,
                                temporality: temporality(h.aggregation_temporality),
                                attributes: attrs(&p.attributes),
                                start_unix_nano: p.start_time_unix_nano,
                                time_unix_nano: p.time_unix_nano,
                                count: p.count,
                                sum: p.sum,
                                bucket_counts: p.bucket_counts.clone(),
                                explicit_bounds: p.explicit_bounds.clone(),
                                min: p.min,
                                max: p.max,
                                ..base.clone()
                            }))
                        }
                        Some(metric::Data::ExponentialHistogram(h)) => {
                            out.extend(h.data_points.iter().map(|p| FlatMetric {
                                kind: MetricKind::ExponentialHistogram,
                                temporality: temporality(h.aggregation_temporality),
                                attributes: attrs(&p.attributes),
                                start_unix_nano: p.start_time_unix_nano,
                                time_unix_nano: p.time_unix_nano,
                                count: p.count,
                                sum: p.sum,
                                min: p.min,
                                max: p.max,
                                ..base.clone()
                            }))
                        }
                        Some(metric::Data::Summary(summary)) => {
                            out.extend(summary.data_points.iter().map(|p| FlatMetric {
                                kind: MetricKind::Summary,
                                attributes: attrs(&p.attributes),
                                start_unix_nano: p.start_time_unix_nano,
                                time_unix_nano: p.time_unix_nano,
                                count: p.count,
                                sum: Some(p.sum),
                                ..base.clone()
                            }))
                        }
                    }
                }
            }
        }
    }

    pub fn attr(&self, key: &str) -> Option<&AttrValue> {
        self.attributes.get(key)
    }

    pub fn attr_str(&self, key: &str) -> Option<&str> {
        self.attr(key).and_then(AttrValue::as_str)
    }

    pub fn attr_int(&self, key: &str) -> Option<i64> {
        self.attr(key).and_then(AttrValue::as_int)
    }

    pub fn resource_str(&self, key: &str) -> Option<&str> {
        self.resource.get(key).and_then(AttrValue::as_str)
    }

    /// `process.pid` of the resource.
    pub fn pid(&self) -> Option<u32> {
        self.resource
            .get("process.pid")
            .and_then(AttrValue::as_int)
            .and_then(|p| u32::try_from(p).ok())
    }

    /// Identifies the time series this point belongs to.
    fn series_key(&self) -> String {
        format!(
            "{}|{}|{}|{}",
            self.name,
            self.scope_name,
            format_attrs(&self.resource),
            format_attrs(&self.attributes)
        )
    }
}

impl fmt::Display for FlatMetric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} [{}] {:?} {:?} t={} ",
            self.name, self.unit, self.kind, self.temporality, self.time_unix_nano
        )?;
        match self.kind {
            MetricKind::Histogram | MetricKind::ExponentialHistogram | MetricKind::Summary => {
                write!(
                    f,
                    "count={} sum={:?} buckets={:?}",
                    self.count, self.sum, self.bucket_counts
                )?;
            }
            _ => write!(f, "value={:?}", self.value)?,
        }
        write!(
            f,
            " attrs {{{}}} resource {{{}}}",
            format_attrs(&self.attributes),
            format_attrs(&self.resource)
        )
    }
}

/// One line per data point, for panic messages (at most 200 lines).
pub fn summarize_metrics<'a>(points: impl IntoIterator<Item = &'a FlatMetric>) -> String {
    let points: Vec<&FlatMetric> = points.into_iter().collect();
    let mut out = format!("{} data points:\n", points.len());
    for (n, p) in points.iter().enumerate() {
        if n == 200 {
            out.push_str(&format!("  ... {} more\n", points.len() - 200));
            break;
        }
        out.push_str(&format!("  {p}\n"));
    }
    out
}

/// The latest state of each time series among `points`: for cumulative
/// series the point with the latest timestamp, for delta series (and
/// unspecified temporality) every point summed into one (count, sum,
/// bucket counts, value). The result is one point per series, in series
/// order.
pub fn collapse_series<'a>(points: impl IntoIterator<Item = &'a FlatMetric>) -> Vec<FlatMetric> {
    let mut series: BTreeMap<String, FlatMetric> = BTreeMap::new();
    for p in points {
        let key = p.series_key();
        match series.get_mut(&key) {
            None => {
                series.insert(key, p.clone());
            }
            Some(acc) if p.temporality == AggregationTemporality::Cumulative => {
                if p.time_unix_nano >= acc.time_unix_nano {
                    *acc = p.clone();
                }
            }
            Some(acc) => {
                acc.count += p.count;
                acc.sum = match (acc.sum, p.sum) {
                    (Some(a), Some(b)) => Some(a + b),
                    (a, b) => a.or(b),
                };
                if acc.bucket_counts.len() == p.bucket_counts.len() {
                    for (a, b) in acc.bucket_counts.iter_mut().zip(&p.bucket_counts) {
                        *a += b;
                    }
                }
                if acc.kind == MetricKind::Sum {
                    acc.value = Some(acc.value.unwrap_or(0.0) + p.value.unwrap_or(0.0));
                    acc.value_int = match (acc.value_int, p.value_int) {
                        (Some(a), Some(b)) => Some(a + b),
                        (a, b) => a.or(b),
                    };
                } else {
                    acc.value = p.value;
                    acc.value_int = p.value_int;
                }
                acc.start_unix_nano = acc.start_unix_nano.min(p.start_unix_nano);
                acc.time_unix_nano = acc.time_unix_nano.max(p.time_unix_nano);
            }
        }
    }
    series.into_values().collect()
}

/// One log record (an agent event), with its resource.
#[derive(Clone, Debug)]
pub struct FlatLog {
    pub resource: Attrs,
    pub event_name: String,
    pub time_unix_nano: u64,
    pub severity_text: String,
    /// The body, when it is a string.
    pub body: String,
    pub attributes: Attrs,
    /// Hex, empty when the record is about no call.
    pub trace_id: String,
    pub span_id: String,
}

impl FlatLog {
    fn flatten(request: &ExportLogsServiceRequest, out: &mut Vec<FlatLog>) {
        for rl in &request.resource_logs {
            let resource = resource_attrs(rl.resource.as_ref());
            for sl in &rl.scope_logs {
                for record in &sl.log_records {
                    out.push(FlatLog {
                        resource: resource.clone(),
                        event_name: record.event_name.clone(),
                        time_unix_nano: record.time_unix_nano,
                        severity_text: record.severity_text.clone(),
                        body: AttrValue::from_proto(record.body.as_ref())
                            .as_str()
                            .unwrap_or_default()
                            .to_owned(),
                        attributes: attrs(&record.attributes),
                        trace_id: hex(&record.trace_id),
                        span_id: hex(&record.span_id),
                    });
                }
            }
        }
    }

    pub fn attr_str(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).and_then(AttrValue::as_str)
    }

    pub fn service(&self) -> Option<&str> {
        self.resource
            .get("service.name")
            .and_then(AttrValue::as_str)
    }
}

impl fmt::Display for FlatLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} [{}] {}",
            self.event_name,
            self.service().unwrap_or("?"),
            self.attr_str("api.endpoint").unwrap_or(&self.body)
        )
    }
}

/// One line per log record, for failure messages.
pub fn summarize_logs(logs: &[FlatLog]) -> String {
    let lines: Vec<String> = logs.iter().map(ToString::to_string).collect();
    format!("{} records:\n  {}", logs.len(), lines.join("\n  "))
}

// ---------------------------------------------------------------------------
// The receiver
// ---------------------------------------------------------------------------

#[derive(Default)]
struct Store {
    traces: Vec<ExportTraceServiceRequest>,
    metrics: Vec<ExportMetricsServiceRequest>,
    logs: Vec<ExportLogsServiceRequest>,
    /// The protobuf encoding of every request, in arrival order.
    bytes: Vec<Vec<u8>>,
    spans: Vec<FlatSpan>,
    points: Vec<FlatMetric>,
    records: Vec<FlatLog>,
    /// The client ports that sent requests (this receiver's exporters' connections).
    client_ports: BTreeSet<u16>,
    /// The values of every ASCII request header (gRPC metadata), by name.
    headers: BTreeMap<String, BTreeSet<String>>,
    /// Requests answered with [`Shared::failing`]'s status instead of being kept.
    refused: usize,
}

#[derive(Default)]
struct Shared {
    store: Mutex<Store>,
    changed: Condvar,
    /// When set, every request is answered with this status (a collector in trouble).
    failing: Mutex<Option<tonic::Code>>,
    /// When set, every request is answered only after this long (an overloaded collector);
    /// a client that gives up first leaves nothing recorded.
    answer_delay: Mutex<Option<Duration>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Store> {
        // A panicking test thread cannot poison it in a way that matters here.
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for as long as [`OtlpReceiver::answer_after`] says.
    async fn hold(&self) {
        let delay = *self.answer_delay.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
    }

    /// Records who sent a request and its headers; then, unless the receiver is set to
    /// fail, what it brought.
    fn record<T>(
        &self,
        request: tonic::Request<T>,
        f: impl FnOnce(&mut Store, T),
    ) -> Result<(), tonic::Status> {
        let failing = *self.failing.lock().unwrap_or_else(|e| e.into_inner());
        let mut store = self.lock();
        store
            .client_ports
            .extend(request.remote_addr().map(|addr| addr.port()));
        for entry in request.metadata().iter() {
            if let tonic::metadata::KeyAndValueRef::Ascii(name, value) = entry
                && let Ok(value) = value.to_str()
            {
                store
                    .headers
                    .entry(name.as_str().to_owned())
                    .or_default()
                    .insert(value.to_owned());
            }
        }
        let result = match failing {
            Some(code) => {
                store.refused += 1;
                Err(tonic::Status::new(code, "the test receiver is set to fail"))
            }
            None => {
                f(&mut store, request.into_inner());
                Ok(())
            }
        };
        drop(store);
        self.changed.notify_all();
        result
    }
}

/// Keeps every export in the shared store.
#[derive(Clone)]
struct Keeper(Arc<Shared>);

#[tonic::async_trait]
impl Collector for Keeper {
    async fn traces(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<(), tonic::Status> {
        self.0.hold().await;
        self.0.record(request, |store, request| {
            store.bytes.push(request.encode_to_vec());
            FlatSpan::flatten(&request, &mut store.spans);
            store.traces.push(request);
        })
    }

    async fn metrics(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<(), tonic::Status> {
        self.0.hold().await;
        self.0.record(request, |store, request| {
            store.bytes.push(request.encode_to_vec());
            FlatMetric::flatten(&request, &mut store.points);
            store.metrics.push(request);
        })
    }

    async fn logs(
        &self,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<(), tonic::Status> {
        self.0.hold().await;
        self.0.record(request, |store, request| {
            store.bytes.push(request.encode_to_vec());
            FlatLog::flatten(&request, &mut store.records);
            store.logs.push(request);
        })
    }
}

/// Span batches and metrics every 500 ms: a test waits half a second for what it checks, not
/// the SDK defaults' 5 s and 60 s.
pub const EXPORT_EVERY_500_MS: &[(&str, &str)] = &[
    ("OTEL_METRIC_EXPORT_INTERVAL", "500"),
    ("OTEL_BSP_SCHEDULE_DELAY", "500"),
];

/// An OTLP/gRPC server on 127.0.0.1 that keeps everything it is sent.
pub struct OtlpReceiver {
    shared: Arc<Shared>,
    server: OtlpServer,
}

impl OtlpReceiver {
    /// Binds 127.0.0.1:0 and returns once the server is being served.
    pub fn start() -> OtlpReceiver {
        OtlpReceiver::start_on(SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// Binds `addr` (e.g. that of a receiver stopped before, to play a collector that comes
    /// back) and returns once the server is being served.
    pub fn start_on(addr: SocketAddr) -> OtlpReceiver {
        let shared = Arc::new(Shared::default());
        let server = OtlpServer::start(addr, Keeper(Arc::clone(&shared)))
            .unwrap_or_else(|error| panic!("OTLP receiver: {error}"));
        OtlpReceiver { shared, server }
    }

    /// `http://127.0.0.1:PORT`, for an OTLP/gRPC exporter.
    pub fn endpoint(&self) -> String {
        self.server.endpoint()
    }

    /// `apiscope run` exporting here (over OTLP/gRPC, the agent's default), with `args`
    /// added and `env` set; returns once it is ready.
    pub fn agent(&self, args: &[&str], env: &[(&str, &str)]) -> Agent {
        let endpoint = self.endpoint();
        let mut all = vec!["--otlp-endpoint", endpoint.as_str()];
        all.extend_from_slice(args);
        Agent::start_exporting(&all, env)
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// Every span received so far, in arrival order.
    pub fn spans(&self) -> Vec<FlatSpan> {
        self.shared.lock().spans.clone()
    }

    /// The client ports requests came from: the connections of the exporters sending here.
    pub fn client_ports(&self) -> Vec<u16> {
        self.shared.lock().client_ports.iter().copied().collect()
    }

    /// Every metric data point received so far, in arrival order.
    pub fn metrics(&self) -> Vec<FlatMetric> {
        self.shared.lock().points.clone()
    }

    /// Every trace export request, as received.
    pub fn trace_requests(&self) -> Vec<ExportTraceServiceRequest> {
        self.shared.lock().traces.clone()
    }

    /// Every metrics export request, as received.
    pub fn metrics_requests(&self) -> Vec<ExportMetricsServiceRequest> {
        self.shared.lock().metrics.clone()
    }

    /// Every logs export request, as received.
    pub fn logs_requests(&self) -> Vec<ExportLogsServiceRequest> {
        self.shared.lock().logs.clone()
    }

    /// The protobuf encoding of every request received (traces, metrics and
    /// logs), concatenated: search it for anything that must never be
    /// exported. Strings appear in it as their raw UTF-8 bytes.
    pub fn all_bytes(&self) -> Vec<u8> {
        self.shared.lock().bytes.concat()
    }

    /// Number of export requests received (all signals).
    pub fn request_count(&self) -> usize {
        self.shared.lock().bytes.len()
    }

    /// From now on, answers every request with `code` and keeps nothing (`None`: accepts
    /// again), as a collector that is overloaded or failing does.
    pub fn fail_with(&self, code: Option<tonic::Code>) {
        *self
            .shared
            .failing
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = code;
    }

    /// From now on, answers every request only after `delay` (`None`: at once), as an
    /// overloaded collector does; what a client stops waiting for is not kept.
    pub fn answer_after(&self, delay: Option<Duration>) {
        *self
            .shared
            .answer_delay
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = delay;
    }

    /// Number of requests answered with [`OtlpReceiver::fail_with`]'s status.
    pub fn refused_count(&self) -> usize {
        self.shared.lock().refused
    }

    /// Every value request header `name` (lowercase) arrived with.
    pub fn header_values(&self, name: &str) -> BTreeSet<String> {
        self.shared
            .lock()
            .headers
            .get(name)
            .cloned()
            .unwrap_or_default()
    }

    /// Waits until `pred` holds over every span received so far and returns
    /// them all; on timeout returns `Err` with what was received.
    pub fn try_wait_for_spans(
        &self,
        pred: impl FnMut(&[FlatSpan]) -> bool,
        timeout: Duration,
    ) -> Result<Vec<FlatSpan>, Vec<FlatSpan>> {
        self.wait_on(|s| &s.spans, pred, timeout)
    }

    /// Like [`OtlpReceiver::try_wait_for_spans`], panicking with a summary of
    /// the spans received on timeout.
    pub fn wait_for_spans(
        &self,
        pred: impl FnMut(&[FlatSpan]) -> bool,
        timeout: Duration,
    ) -> Vec<FlatSpan> {
        self.try_wait_for_spans(pred, timeout)
            .unwrap_or_else(|spans| {
                panic!(
                    "OTLP receiver {}: expected spans not received within {timeout:?}; got {}",
                    self.endpoint(),
                    summarize_spans(&spans)
                )
            })
    }

    /// Waits until `pred` holds over every metric data point received so far
    /// and returns them all; on timeout returns `Err` with what was received.
    pub fn try_wait_for_metrics(
        &self,
        pred: impl FnMut(&[FlatMetric]) -> bool,
        timeout: Duration,
    ) -> Result<Vec<FlatMetric>, Vec<FlatMetric>> {
        self.wait_on(|s| &s.points, pred, timeout)
    }

    /// Like [`OtlpReceiver::try_wait_for_metrics`], panicking with a summary
    /// on timeout.
    pub fn wait_for_metrics(
        &self,
        pred: impl FnMut(&[FlatMetric]) -> bool,
        timeout: Duration,
    ) -> Vec<FlatMetric> {
        self.try_wait_for_metrics(pred, timeout)
            .unwrap_or_else(|points| {
                panic!(
                    "OTLP receiver {}: expected metrics not received within {timeout:?}; got {}",
                    self.endpoint(),
                    summarize_metrics(&points)
                )
            })
    }

    /// Waits until `pred` holds over every log record received so far and
    /// returns them all; panics with a summary on timeout.
    pub fn wait_for_logs(
        &self,
        pred: impl FnMut(&[FlatLog]) -> bool,
        timeout: Duration,
    ) -> Vec<FlatLog> {
        self.wait_on(|s| &s.records, pred, timeout)
            .unwrap_or_else(|records| {
                panic!(
                    "OTLP receiver {}: expected log records not received within {timeout:?}; got {}",
                    self.endpoint(),
                    summarize_logs(&records)
                )
            })
    }

    fn wait_on<T: Clone>(
        &self,
        field: impl Fn(&Store) -> &Vec<T>,
        mut pred: impl FnMut(&[T]) -> bool,
        timeout: Duration,
    ) -> Result<Vec<T>, Vec<T>> {
        let deadline = Instant::now() + timeout;
        let mut store = self.shared.lock();
        loop {
            if pred(field(&store)) {
                return Ok(field(&store).clone());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(field(&store).clone());
            }
            store = self
                .shared
                .changed
                .wait_timeout(store, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

// ---------------------------------------------------------------------------
// Helpers for tests
// ---------------------------------------------------------------------------

/// The distinct values of `key` among `spans`' attributes, formatted.
pub fn distinct_attr<'a>(spans: impl IntoIterator<Item = &'a FlatSpan>, key: &str) -> Vec<String> {
    spans
        .into_iter()
        .filter_map(|s| s.attr(key).map(ToString::to_string))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}
