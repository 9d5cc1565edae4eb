//! One endpoint of the inventory: what identifies it within its service and what has been
//! seen of it. Every collection is bounded; names and counts only, never values.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
};

use serde::{Deserialize, Serialize};
use sketches_ddsketch::{Config, DDSketch};

use super::{
    auth::AuthScheme,
    learned_schema::{JsonTypes, LearnedSchema},
};
use crate::{analysis::sensitive::SensitiveClass, calls::EndpointIdentity};

/// The key further values are counted under once a bounded map is full.
pub const OTHER: &str = "(other)";
/// Distinct status codes kept per endpoint.
const MAX_STATUSES: usize = 16;
/// Distinct callers kept per endpoint.
const MAX_CALLERS: usize = 64;
/// Distinct host names kept per endpoint.
const MAX_HOSTS: usize = 16;
/// Distinct query parameter names kept per endpoint.
const MAX_QUERY_PARAMETERS: usize = 32;
/// Distinct violations kept per endpoint.
const MAX_VIOLATIONS: usize = 32;

/// What identifies an endpoint within its service.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EndpointKey {
    /// Its protocol, as the call's protocol names it: `http`, `grpc`, `graphql`.
    pub protocol: String,
    /// The HTTP method (`POST` for gRPC).
    pub method: String,
    /// The route template (`/users/{id}`); for gRPC `/package.Service/Method`.
    pub route: String,
    /// For GraphQL, the operation: `query GetUser`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
}

impl EndpointKey {
    /// The key of the endpoint `identity` names; `route` is the call's templated path, for
    /// protocols that do not name their route themselves.
    pub fn of(identity: EndpointIdentity, route: &str) -> Self {
        Self {
            protocol: identity.protocol.to_owned(),
            method: identity.method,
            route: identity.route.unwrap_or_else(|| route.to_owned()),
            operation: identity.operation,
        }
    }
}

/// `{method} {route}` for plain HTTP; `{protocol} {operation} ({method} {route})` for an
/// operation within a route (GraphQL); `{protocol} {route}` for a protocol that names its
/// route itself (gRPC's `grpc package.Service/Method`).
impl fmt::Display for EndpointKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.operation {
            Some(operation) => write!(
                f,
                "{} {operation} ({} {})",
                self.protocol, self.method, self.route
            ),
            None if self.protocol == HTTP => write!(f, "{} {}", self.method, self.route),
            None => write!(
                f,
                "{} {}",
                self.protocol,
                self.route.trim_start_matches('/')
            ),
        }
    }
}

/// The protocol of plain HTTP endpoints.
const HTTP: &str = "http";

/// How an endpoint compares with its service's declared spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Conformance {
    /// The service has no declared spec.
    NoSpec,
    /// The spec declares it.
    Documented,
    /// The spec does not declare it.
    Shadow,
    /// The spec declares it deprecated, and it is still called.
    Zombie,
}

impl Conformance {
    /// Its name, as exported.
    pub fn name(self) -> &'static str {
        match self {
            Self::NoSpec => "no_spec",
            Self::Documented => "documented",
            Self::Shadow => "shadow",
            Self::Zombie => "zombie",
        }
    }
}

/// Call durations, as a sketch with 1 % relative error in constant memory.
#[derive(Clone, Serialize, Deserialize)]
pub struct Latency(DDSketch);

impl fmt::Debug for Latency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Latency")
            .field("count", &self.0.count())
            .finish()
    }
}

impl Default for Latency {
    fn default() -> Self {
        Self(DDSketch::new(Config::defaults()))
    }
}

/// Latency percentiles, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LatencySummary {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Longest.
    pub max: f64,
}

impl Latency {
    /// Adds one duration.
    pub fn add_ms(&mut self, milliseconds: f64) {
        self.0.add(milliseconds);
    }

    /// The percentiles; `None` before the first call.
    pub fn summary(&self) -> Option<LatencySummary> {
        let quantile = |q| self.0.quantile(q).ok().flatten();
        Some(LatencySummary {
            p50: quantile(0.5)?,
            p90: quantile(0.9)?,
            p99: quantile(0.99)?,
            max: self.0.max()?,
        })
    }
}

/// A query parameter seen on an endpoint.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct QueryParameter {
    /// The types its values read as.
    pub types: JsonTypes,
    /// Calls that carried it.
    pub seen: u64,
}

/// What the endpoint's messages look like.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EndpointSchema {
    /// The types of the route's parameters, in route order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub path_parameters: Vec<JsonTypes>,
    /// Query parameters by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub query: BTreeMap<String, QueryParameter>,
    /// The JSON request body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_body: Option<LearnedSchema>,
    /// The JSON body of successful (2xx) responses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_body: Option<LearnedSchema>,
}

impl EndpointSchema {
    /// Learns a query parameter, keeping at most [`MAX_QUERY_PARAMETERS`] names.
    pub fn learn_query(&mut self, name: &str, value: &str) {
        let name = if self.query.len() < MAX_QUERY_PARAMETERS || self.query.contains_key(name) {
            name
        } else {
            OTHER
        };
        let parameter = self.query.entry(name.to_owned()).or_default();
        parameter.types.add(JsonTypes::of_text(value));
        parameter.seen += 1;
    }
}

/// Sensitive data classes seen, with the number of calls each was seen in.
pub type SensitiveCounts = BTreeMap<SensitiveClass, u64>;

/// Everything the inventory knows of one endpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Endpoint {
    /// What identifies it.
    pub key: EndpointKey,
    /// Whether an OpenAPI document describes it, as its protocol said at its last call;
    /// `None` for endpoints saved before the protocols said so (then all but gRPC's are).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_openapi: Option<bool>,
    /// Unix ms of its first call.
    pub first_seen_ms: u64,
    /// Unix ms of its last call.
    pub last_seen_ms: u64,
    /// Calls seen.
    pub calls: u64,
    /// Calls per status (HTTP status code, or gRPC status name).
    pub statuses: BTreeMap<String, u64>,
    /// Calls per authentication scheme.
    pub auth: BTreeMap<AuthScheme, u64>,
    /// Calls over TLS.
    pub tls_calls: u64,
    /// Calls in plaintext.
    pub plaintext_calls: u64,
    /// Host names (and ports) it was called by.
    pub hosts: BTreeSet<String>,
    /// Calls per calling workload (its service name, or its address when not local).
    pub callers: BTreeMap<String, u64>,
    /// Sensitive classes seen in requests.
    pub sensitive_request: SensitiveCounts,
    /// Sensitive classes seen in responses.
    pub sensitive_response: SensitiveCounts,
    /// How it compares with the declared spec.
    pub conformance: Conformance,
    /// Requests per violation of the declared spec (`kind location`).
    pub violations: BTreeMap<String, u64>,
    /// Learned message schemas.
    pub schema: EndpointSchema,
    /// Call durations; persisted on their own, not part of the JSON view.
    #[serde(skip)]
    pub latency: Latency,
}

impl Endpoint {
    /// An endpoint first seen at `now_ms`, not called yet.
    pub fn new(key: EndpointKey, conformance: Conformance, now_ms: u64) -> Self {
        Self {
            key,
            in_openapi: None,
            first_seen_ms: now_ms,
            last_seen_ms: now_ms,
            calls: 0,
            statuses: BTreeMap::new(),
            auth: BTreeMap::new(),
            tls_calls: 0,
            plaintext_calls: 0,
            hosts: BTreeSet::new(),
            callers: BTreeMap::new(),
            sensitive_request: BTreeMap::new(),
            sensitive_response: BTreeMap::new(),
            conformance,
            violations: BTreeMap::new(),
            schema: EndpointSchema::default(),
            latency: Latency::default(),
        }
    }

    /// Counts one call from `caller`.
    pub fn add_caller(&mut self, caller: &str) {
        count_bounded(&mut self.callers, caller, MAX_CALLERS);
    }

    /// Counts one call answered with `status`.
    pub fn add_status(&mut self, status: &str) {
        count_bounded(&mut self.statuses, status, MAX_STATUSES);
    }

    /// Counts one request that broke the spec this way.
    pub fn add_violation(&mut self, violation: &str) {
        count_bounded(&mut self.violations, violation, MAX_VIOLATIONS);
    }

    /// Remembers the host (and port) the endpoint was called by.
    pub fn add_host(&mut self, host: String) {
        if self.hosts.len() < MAX_HOSTS {
            self.hosts.insert(host);
        }
    }
}

/// Adds one to `key`, keeping at most `cap` keys: further keys count under [`OTHER`].
fn count_bounded(map: &mut BTreeMap<String, u64>, key: &str, cap: usize) {
    let key = if map.len() < cap || map.contains_key(key) {
        key
    } else {
        OTHER
    };
    *map.entry(key.to_owned()).or_default() += 1;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_maps_pool_what_does_not_fit() {
        let mut endpoint = Endpoint::new(
            EndpointKey {
                protocol: HTTP.to_owned(),
                method: "GET".into(),
                route: "/".into(),
                operation: None,
            },
            Conformance::NoSpec,
            0,
        );
        for i in 0..1_000 {
            endpoint.add_caller(&format!("10.0.{}.{}", i / 256, i % 256));
            endpoint.add_host(format!("host-{i}"));
        }
        assert_eq!(endpoint.callers.len(), MAX_CALLERS + 1);
        assert_eq!(endpoint.callers[OTHER], 1_000 - MAX_CALLERS as u64);
        assert_eq!(endpoint.hosts.len(), MAX_HOSTS);
    }

    #[test]
    fn latency_percentiles_are_within_the_sketch_error() {
        let mut latency = Latency::default();
        assert!(latency.summary().is_none());
        for ms in 1..=1_000 {
            latency.add_ms(f64::from(ms));
        }
        let summary = latency.summary().unwrap();
        assert!((summary.p50 - 500.0).abs() < 10.0, "{summary:?}");
        assert!((summary.p99 - 990.0).abs() < 20.0, "{summary:?}");
        assert_eq!(summary.max, 1_000.0);
    }

    #[test]
    fn keys_read_as_their_protocol_writes_them() {
        let key =
            |protocol: &str, method: &str, route: &str, operation: Option<&str>| EndpointKey {
                protocol: String::from(protocol),
                method: method.into(),
                route: route.into(),
                operation: operation.map(str::to_owned),
            };
        assert_eq!(
            key("http", "GET", "/users/{id}", None).to_string(),
            "GET /users/{id}"
        );
        assert_eq!(
            key("grpc", "POST", "/shop.Cart/Add", None).to_string(),
            "grpc shop.Cart/Add"
        );
        assert_eq!(
            key("graphql", "POST", "/graphql", Some("query Me")).to_string(),
            "graphql query Me (POST /graphql)"
        );
    }
}
