//! A call described in the OpenTelemetry conventions' terms: what every exporter, the
//! inventory and the stdout lines read, so that a span, its metrics, its inventory entry and
//! its line agree. The protocol folders fill it in (see [`super::Exchange`] and
//! [`super::Layer`]); nothing downstream looks at a protocol's own types to describe a call.

use std::sync::Arc;

use opentelemetry::{KeyValue, StringValue, Value};

use super::{ApiCall, Side, secrets::names_a_secret};

/// `error.type`.
pub const ERROR_TYPE: &str = "error.type";
/// apiscope's own: which parts of the call were not captured (see [`super::CallGaps`]).
pub const APISCOPE_CALL_INCOMPLETE: &str = "apiscope.call.incomplete";
/// `service.peer.name`: the `service.name` of the other end.
pub const SERVICE_PEER_NAME: &str = "service.peer.name";
/// `service.peer.namespace`.
pub const SERVICE_PEER_NAMESPACE: &str = "service.peer.namespace";

/// Span kind of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The process served the call.
    Server,
    /// The process made the call.
    Client,
}

impl From<Side> for Kind {
    fn from(side: Side) -> Self {
        match side {
            Side::Server => Kind::Server,
            Side::Client => Kind::Client,
        }
    }
}

/// A histogram a protocol records its calls into, declared once beside the protocol's
/// description as a `static`; the metrics exporter creates it the first time a call of a
/// process records into it.
#[derive(Debug, PartialEq)]
pub struct Instrument {
    /// The conventions' name, e.g. `http.server.request.duration`.
    pub name: &'static str,
    /// UCUM unit, e.g. `s` or `By`.
    pub unit: &'static str,
    /// One sentence.
    pub description: &'static str,
    /// Explicit bucket boundaries, as the conventions advise.
    pub boundaries: &'static [f64],
}

/// One value a call records into an instrument.
#[derive(Debug, Clone)]
pub struct Measure {
    /// Where it goes.
    pub instrument: &'static Instrument,
    /// The value, in the instrument's unit.
    pub value: f64,
    /// Its attributes: low cardinality only.
    pub attributes: Vec<KeyValue>,
}

/// What identifies the endpoint a call reached, for the inventory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointIdentity {
    /// The protocol it speaks, lowercase: `http`, `grpc`, `graphql`.
    pub protocol: &'static str,
    /// The request method (`POST` for gRPC).
    pub method: String,
    /// Its route, when the protocol names it rather than the call's templated path (gRPC's
    /// `/package.Service/Method`).
    pub route: Option<String>,
    /// The operation within the route (GraphQL's `query GetUser`).
    pub operation: Option<String>,
    /// How the call ended, as the inventory's status mix counts it (`200`, `NOT_FOUND`,
    /// `none`).
    pub status: String,
    /// Whether an OpenAPI document describes such endpoints (paths and methods): declared
    /// specs are checked against it, and the reconstructed document includes it.
    pub in_openapi: bool,
}

/// A call described for export: computed once per call, from its exchange and then its layer.
#[derive(Debug, Clone)]
pub struct CallDescription {
    /// Span kind.
    pub kind: Kind,
    /// Span name.
    pub name: String,
    /// What was called, as the stdout line shows it (`GET /users/{id}`, `grpc svc/Method`).
    pub summary: String,
    /// How it ended, as the stdout line shows it (`404`, `NOT_FOUND`, `tool_error`), when
    /// known.
    pub outcome: Option<String>,
    /// Span attributes.
    pub span_attributes: Vec<KeyValue>,
    /// The error type when the call failed by its protocol's rules.
    pub error: Option<String>,
    /// What the call records into the metrics.
    pub measures: Vec<Measure>,
    /// Duration in seconds.
    pub duration_seconds: f64,
    /// The incoming `traceparent`, if any.
    pub traceparent: Option<String>,
    /// The incoming `tracestate`, if any.
    pub tracestate: Option<String>,
}

impl CallDescription {
    /// The description of `call` before its protocol says anything: its kind and duration,
    /// and which of its parts were not captured.
    pub fn of(call: &ApiCall) -> Self {
        let mut span_attributes = Vec::new();
        let gaps = incomplete_parts(call);
        if !gaps.is_empty() {
            span_attributes.push(KeyValue::new(APISCOPE_CALL_INCOMPLETE, string_array(gaps)));
        }
        Self {
            kind: call.side.into(),
            name: String::new(),
            summary: String::new(),
            outcome: None,
            span_attributes,
            error: None,
            measures: Vec::new(),
            duration_seconds: call.end_ns.saturating_sub(call.start_ns) as f64 / 1e9,
            traceparent: None,
            tracestate: None,
        }
    }

    /// Records `value` into `instrument` (the server or client one, by the call's kind).
    pub fn measure(
        &mut self,
        [server, client]: [&'static Instrument; 2],
        value: f64,
        attributes: Vec<KeyValue>,
    ) {
        let instrument = match self.kind {
            Kind::Server => server,
            Kind::Client => client,
        };
        self.measures.push(Measure {
            instrument,
            value,
            attributes,
        });
    }

    /// Drops the measures recorded so far: a layer whose own metrics replace its carrier's.
    pub fn drop_measures(&mut self) {
        self.measures.clear();
    }
}

/// Names of the parts of a call that were not captured.
fn incomplete_parts(call: &ApiCall) -> Vec<&'static str> {
    let gaps = call.gaps;
    [
        (gaps.request_incomplete, "request"),
        (gaps.response_missing, "response_missing"),
        (gaps.response_incomplete, "response"),
        (gaps.after_resync, "resync"),
        (gaps.headers_unknown, "headers"),
    ]
    .into_iter()
    .filter_map(|(set, name)| set.then_some(name))
    .collect()
}

/// Redacts sensitive values out of text that is exported by an operator's choice.
pub trait Redact: std::fmt::Debug + Send + Sync {
    /// `text` with every sensitive value replaced.
    fn redact(&self, text: &str) -> String;
}

/// Headers exported beyond the conventions' own, as `http.request.header.<name>` and
/// `http.response.header.<name>`: an explicit allowlist, empty by default. Names that may
/// carry credentials are refused where they are written.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(try_from = "Vec<String>", into = "Vec<String>")]
pub struct HeaderAllowlist {
    names: Vec<String>,
}

impl TryFrom<Vec<String>> for HeaderAllowlist {
    type Error = String;

    fn try_from(names: Vec<String>) -> Result<Self, String> {
        Self::new(&names)
    }
}

impl From<HeaderAllowlist> for Vec<String> {
    fn from(allowlist: HeaderAllowlist) -> Self {
        allowlist.names
    }
}

impl HeaderAllowlist {
    /// An allowlist of these header names; refuses names that may carry credentials.
    pub fn new(names: &[String]) -> Result<Self, String> {
        let names: Vec<String> = names
            .iter()
            .map(|name| name.trim().to_ascii_lowercase())
            .collect();
        match names
            .iter()
            .find(|name| names_a_secret(name) || name.is_empty())
        {
            Some(name) => Err(format!(
                "header `{name}` cannot be exported: its values may carry credentials"
            )),
            None => Ok(Self { names }),
        }
    }

    /// The lowercase names.
    pub fn names(&self) -> &[String] {
        &self.names
    }
}

/// What the operator chose to export beyond the conventions' defaults.
#[derive(Debug, Clone, Default)]
pub struct DescribeSettings {
    /// Header values exported as attributes.
    pub headers: HeaderAllowlist,
    /// Redacts the content of model calls (prompts and answers) when its export was opted
    /// into; `None`: never exported.
    pub content: Option<Arc<dyn Redact>>,
}

/// What a description is made from besides the call: the analysis stage's route and the
/// operator's settings.
#[derive(Debug, Clone, Copy)]
pub struct DescribeContext<'a> {
    /// The call's route (`http.route`), for protocols with paths.
    pub route: Option<&'a str>,
    /// The operator's choices.
    pub settings: &'a DescribeSettings,
}

/// A string-array attribute value.
pub fn string_array<S: Into<StringValue>>(values: impl IntoIterator<Item = S>) -> Value {
    Value::Array(
        values
            .into_iter()
            .map(Into::into)
            .collect::<Vec<_>>()
            .into(),
    )
}

/// An integer attribute value, saturated to `i64`.
pub fn int(value: u64) -> Value {
    Value::I64(i64::try_from(value).unwrap_or(i64::MAX))
}
