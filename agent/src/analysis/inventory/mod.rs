//! The live API inventory: every endpoint of every service seen on this host, who calls it,
//! how, with which data, and how it compares with the spec its team declared (documented,
//! shadow, zombie; declared operations without traffic are orphans). Kept across restarts
//! in [`store`]; reconstructed as OpenAPI in [`openapi`].
//!
//! An endpoint belongs to the service that serves it: a server-side call counts for the
//! process that answered; a client-side call to a service on this host only names its caller
//! there (the server side counts it), and a call to a service elsewhere counts for that
//! service, named after the host it was sent to.

pub mod ai;
pub mod auth;
mod endpoint;
mod learned_schema;
pub mod openapi;
mod settings;
pub mod store;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    hash::{BuildHasher, Hash},
    sync::{Arc, Mutex},
};

use opentelemetry::KeyValue;
use serde::{Deserialize, Serialize};

pub use endpoint::{Conformance, Endpoint, EndpointKey, LatencySummary};
pub use learned_schema::JsonTypes;
pub use settings::{InventorySettings, SpecFile};

use super::{
    events::{self, ApiEvent, ServiceRef, Severity},
    routes::OVERFLOW_ROUTE,
    sensitive::{Finding, SensitiveClass, SensitiveScanner},
    spec::{DeclaredApi, ObservedRequest},
};
use crate::{
    calls::{EndpointIdentity, Side},
    enrich::EnrichedCall,
    protocols::http::{HttpExchange, HttpRequest},
};

/// Event keys remembered to report each finding once; beyond it they are forgotten (and
/// reported again when seen again).
const MAX_REPORTED: usize = 65_536;

/// The inventory, shared by the analysis stage (which feeds it), the HTTP endpoints and
/// the maintenance thread.
pub type SharedInventory = Arc<Mutex<Inventory>>;

/// A declared spec, bound to the service it describes.
#[derive(Debug, Clone)]
pub struct SpecBinding {
    /// The `service.name` it describes.
    pub service: String,
    /// The file it was read from.
    pub file: String,
    /// The spec.
    pub api: Arc<DeclaredApi>,
}

/// One service's part of the inventory.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceInventory {
    /// `service.name`.
    pub name: String,
    /// `service.namespace`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The service runs elsewhere: it is named after the host its clients here called.
    pub external: bool,
    /// Endpoints by key.
    #[serde(skip)]
    endpoints: BTreeMap<EndpointKey, Endpoint>,
}

/// What observing one call gave.
#[derive(Debug, Default)]
pub struct Observed {
    /// The route the declared spec names for the call, when it declares one.
    pub declared_route: Option<String>,
    /// Events the call raised.
    pub events: Vec<ApiEvent>,
    /// Sensitive data findings in the response.
    pub response_sensitive: u32,
}

/// Which service a call counts for, and who called it.
struct Attribution {
    service: ServiceRef,
    external: bool,
    caller: String,
    /// The call is counted here (else only its caller is named).
    counts: bool,
}

/// The inventory.
#[derive(Debug)]
pub struct Inventory {
    settings: InventorySettings,
    services: BTreeMap<ServiceRef, ServiceInventory>,
    specs: HashMap<String, SpecBinding>,
    scanner: Arc<SensitiveScanner>,
    /// Endpoints changed since the last save.
    dirty: BTreeSet<(ServiceRef, EndpointKey)>,
    /// Hashes of findings already reported.
    reported: HashSet<u64>,
    /// Declared operations reported as orphans, per service.
    orphans: BTreeMap<ServiceRef, BTreeSet<EndpointKey>>,
    /// Model APIs and MCP servers per workload.
    ai: ai::AiInventory,
    started_ms: u64,
}

impl Inventory {
    /// An empty inventory, started at `now_ms`, comparing calls with the declared `specs`
    /// and finding sensitive data with `scanner`.
    pub fn new(
        settings: InventorySettings,
        specs: Vec<SpecBinding>,
        scanner: Arc<SensitiveScanner>,
        now_ms: u64,
    ) -> Self {
        let specs = specs
            .into_iter()
            .map(|binding| (binding.service.clone(), binding))
            .collect();
        Self {
            settings,
            services: BTreeMap::new(),
            specs,
            scanner,
            dirty: BTreeSet::new(),
            reported: HashSet::new(),
            orphans: BTreeMap::new(),
            ai: ai::AiInventory::default(),
            started_ms: now_ms,
        }
    }

    /// Puts back endpoints read from the store (they are not discovered again).
    pub fn restore(&mut self, saved: Vec<store::SavedEndpoint>) {
        for saved in saved {
            self.service_mut(&saved.service, saved.external)
                .endpoints
                .insert(saved.endpoint.key.clone(), saved.endpoint);
        }
    }

    /// Endpoints changed since the last call, for the store.
    pub fn take_dirty(&mut self) -> Vec<store::SavedEndpoint> {
        let dirty = std::mem::take(&mut self.dirty);
        dirty
            .into_iter()
            .filter_map(|(service, key)| {
                let inventory = self.services.get(&service)?;
                Some(store::SavedEndpoint {
                    external: inventory.external,
                    endpoint: inventory.endpoints.get(&key)?.clone(),
                    service,
                })
            })
            .collect()
    }

    /// Adds one call; `route` is its templated route, when it has a path. Endpoints are kept
    /// for the calls whose protocol names one, over HTTP (what is learnt of an endpoint, its
    /// parameters, bodies and authentication, is HTTP's).
    pub fn observe(&mut self, call: &EnrichedCall, route: Option<&str>, now_ms: u64) -> Observed {
        let ai_events = self.ai.observe(call, now_ms);
        let mut observed = match (call.call.endpoint(), call.call.exchange::<HttpExchange>()) {
            (Some(identity), Some(http)) => self.observe_http(call, http, identity, route, now_ms),
            _ => Observed::default(),
        };
        observed.events.splice(0..0, ai_events);
        observed
    }

    fn observe_http(
        &mut self,
        call: &EnrichedCall,
        http: &HttpExchange,
        identity: EndpointIdentity,
        route: Option<&str>,
        now_ms: u64,
    ) -> Observed {
        let request = &http.request;
        let attribution = attribute(call, request);
        if !self.services.contains_key(&attribution.service)
            && self.services.len() >= self.settings.max_services
        {
            return Observed::default();
        }
        let in_openapi = identity.in_openapi;
        let status = identity.status.clone();
        let mut key = EndpointKey::of(identity, route.unwrap_or_else(|| request.path()));
        // Both sides of a call classify it, so both land on the declared route; only the
        // counted side validates it.
        let spec = self
            .specs
            .get(&attribution.service.name)
            .filter(|_| in_openapi)
            .cloned();
        let operation = spec
            .as_ref()
            .and_then(|spec| spec.api.find(&request.method, request.path()));
        let conformance = match (&spec, operation) {
            (None, _) => Conformance::NoSpec,
            (Some(_), None) => Conformance::Shadow,
            (Some(_), Some(operation)) if operation.deprecated => Conformance::Zombie,
            (Some(_), Some(_)) => Conformance::Documented,
        };
        let declared_route = operation.map(|operation| operation.path_template.clone());
        if let Some(template) = &declared_route {
            key.route.clone_from(template);
        }
        let findings = if attribution.counts {
            scan(&self.scanner, http)
        } else {
            Vec::new()
        };
        let in_response = findings
            .iter()
            .filter(|(direction, _)| *direction == Direction::Response)
            .count();
        let mut observed = Observed {
            declared_route,
            events: Vec::new(),
            response_sensitive: u32::try_from(in_response).unwrap_or(u32::MAX),
        };
        let service = Arc::new(attribution.service.clone());
        let max_endpoints = self.settings.max_endpoints_per_service;
        let inventory = self.service_mut(&attribution.service, attribution.external);
        if !inventory.endpoints.contains_key(&key) && inventory.endpoints.len() >= max_endpoints {
            key.route = OVERFLOW_ROUTE.to_owned();
            key.operation = None;
        }
        let endpoint = inventory.endpoints.entry(key.clone()).or_insert_with(|| {
            observed
                .events
                .extend(discovery_events(&service, &key, conformance, now_ms));
            Endpoint::new(key.clone(), conformance, now_ms)
        });
        endpoint.conformance = conformance;
        endpoint.in_openapi = Some(in_openapi);
        endpoint.add_caller(&attribution.caller);
        if attribution.counts {
            count_call(endpoint, call, http, &status, now_ms);
            count_findings(endpoint, &findings);
            let violations = operation
                .map(|operation| operation.validate(&observed_request(request)))
                .unwrap_or_default();
            for violation in &violations {
                endpoint.add_violation(&format!(
                    "{} {}",
                    violation.kind.name(),
                    violation.location
                ));
            }
            let candidates = findings_events(&service, &key, &findings, now_ms).chain(
                violations
                    .iter()
                    .map(|violation| violation_event(&service, &key, violation, now_ms)),
            );
            for (identity, event) in candidates.collect::<Vec<_>>() {
                if self.first_report(identity) {
                    observed.events.push(event);
                }
            }
        }
        self.dirty.insert((attribution.service, key));
        observed
    }

    /// Declared operations that became orphans since the last call (no call within the
    /// orphan window), as events. Operations called again are reported again when they next
    /// fall silent.
    pub fn orphan_events(&mut self, now_ms: u64) -> Vec<ApiEvent> {
        let window = u64::try_from(self.settings.orphan_after.as_millis()).unwrap_or(u64::MAX);
        let mut found = Vec::new();
        for binding in self.specs.values() {
            let service = ServiceRef {
                name: binding.service.clone(),
                namespace: None,
            };
            let orphans = self.orphan_keys(binding, now_ms, window);
            let reported = self.orphans.entry(service.clone()).or_default();
            let service = Arc::new(service);
            for key in &orphans {
                if !reported.contains(key) {
                    found.push(orphan_event(&service, key, now_ms));
                }
            }
            *reported = orphans;
        }
        found
    }

    /// The declared operations of `binding` without a call in the last `window` ms.
    fn orphan_keys(
        &self,
        binding: &SpecBinding,
        now_ms: u64,
        window: u64,
    ) -> BTreeSet<EndpointKey> {
        let mut last_calls: HashMap<(&str, &str), u64> = HashMap::new();
        for (service, inventory) in &self.services {
            if service.name != binding.service {
                continue;
            }
            for endpoint in inventory
                .endpoints
                .values()
                .filter(|endpoint| endpoint.calls > 0)
            {
                let last = last_calls
                    .entry((&endpoint.key.method, &endpoint.key.route))
                    .or_default();
                *last = (*last).max(endpoint.last_seen_ms);
            }
        }
        binding
            .api
            .operations()
            .iter()
            .filter(|operation| {
                let last = last_calls
                    .get(&(operation.method.as_str(), operation.path_template.as_str()))
                    .copied()
                    .unwrap_or(0)
                    .max(self.started_ms);
                now_ms.saturating_sub(last) >= window
            })
            .map(|operation| EndpointKey {
                protocol: "http".to_owned(),
                method: operation.method.clone(),
                route: operation.path_template.clone(),
                operation: None,
            })
            .collect()
    }

    /// One `api.inventory.snapshot` event per service, its body the service's JSON view.
    pub fn snapshot_events(&self, now_ms: u64) -> Vec<ApiEvent> {
        self.view(now_ms)
            .services
            .into_iter()
            .map(|view| {
                let service = Arc::new(ServiceRef {
                    name: view.service.name.clone(),
                    namespace: view.service.namespace.clone(),
                });
                let endpoints = view.endpoints.len() as i64;
                ApiEvent {
                    name: events::INVENTORY_SNAPSHOT,
                    service,
                    severity: Severity::Info,
                    time_ms: now_ms,
                    body: serde_json::to_string(&view).unwrap_or_default(),
                    attributes: vec![KeyValue::new("api.inventory.endpoints", endpoints)],
                }
            })
            .collect()
    }

    /// The whole inventory, as `/inventory` serves it.
    pub fn view(&self, now_ms: u64) -> InventoryView<'_> {
        let window = u64::try_from(self.settings.orphan_after.as_millis()).unwrap_or(u64::MAX);
        let mut services: Vec<ServiceView<'_>> = self
            .services
            .values()
            .map(|service| ServiceView {
                service,
                spec: self
                    .specs
                    .get(&service.name)
                    .map(|binding| binding.file.as_str()),
                endpoints: service
                    .endpoints
                    .values()
                    .map(|endpoint| EndpointView {
                        endpoint: endpoint.key.to_string(),
                        latency_ms: endpoint.latency.summary(),
                        data: endpoint,
                    })
                    .collect(),
                orphans: Vec::new(),
            })
            .collect();
        for binding in self.specs.values() {
            let orphans: Vec<String> = self
                .orphan_keys(binding, now_ms, window)
                .iter()
                .map(ToString::to_string)
                .collect();
            if let Some(view) = services
                .iter_mut()
                .find(|view| view.service.name == binding.service)
            {
                view.orphans = orphans;
            }
        }
        InventoryView {
            generated_ms: now_ms,
            services,
            ai: self.ai.view(),
        }
    }

    /// The OpenAPI 3.1 document reconstructed from `service`'s traffic.
    pub fn openapi(&self, service: &str) -> Option<serde_json::Value> {
        let endpoints: Vec<&Endpoint> = self
            .services
            .values()
            .filter(|inventory| inventory.name == service)
            .flat_map(|inventory| inventory.endpoints.values())
            .collect();
        (!endpoints.is_empty()).then(|| openapi::document(service, &endpoints))
    }

    fn service_mut(&mut self, service: &ServiceRef, external: bool) -> &mut ServiceInventory {
        self.services
            .entry(service.clone())
            .or_insert_with(|| ServiceInventory {
                name: service.name.clone(),
                namespace: service.namespace.clone(),
                external,
                endpoints: BTreeMap::new(),
            })
    }

    /// True the first time `identity` is reported (within the memory bound).
    fn first_report(&mut self, identity: u64) -> bool {
        if self.reported.len() >= MAX_REPORTED {
            self.reported.clear();
        }
        self.reported.insert(identity)
    }
}

/// The inventory as `/inventory` serves it.
#[derive(Debug, Serialize)]
pub struct InventoryView<'a> {
    /// Unix ms it was made at.
    pub generated_ms: u64,
    /// Every service.
    pub services: Vec<ServiceView<'a>>,
    /// Every workload's model APIs and MCP servers.
    pub ai: Vec<ai::AiWorkloadView<'a>>,
}

/// One service in the view.
#[derive(Debug, Serialize)]
pub struct ServiceView<'a> {
    /// The service.
    #[serde(flatten)]
    pub service: &'a ServiceInventory,
    /// The declared spec's file, when one is bound.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spec: Option<&'a str>,
    /// Its endpoints.
    pub endpoints: Vec<EndpointView<'a>>,
    /// Declared operations without traffic in the orphan window.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub orphans: Vec<String>,
}

/// One endpoint in the view.
#[derive(Debug, Serialize)]
pub struct EndpointView<'a> {
    /// The endpoint, as text: `GET /users/{id}`.
    pub endpoint: String,
    /// Latency percentiles.
    pub latency_ms: Option<LatencySummary>,
    /// Everything else.
    #[serde(flatten)]
    pub data: &'a Endpoint,
}

/// The service a call counts for and its caller.
fn attribute(call: &EnrichedCall, request: &HttpRequest) -> Attribution {
    let workload = &call.workload;
    let own = ServiceRef {
        name: workload.service_name.clone(),
        namespace: workload.service_namespace().map(str::to_owned),
    };
    match (call.call.side, &call.peer) {
        (Side::Server, _) => Attribution {
            service: own,
            external: false,
            caller: call
                .call
                .connection
                .peer
                .map_or_else(|| "unknown".to_owned(), |peer| peer.ip().to_string()),
            counts: true,
        },
        (Side::Client, Some(peer)) => Attribution {
            service: ServiceRef {
                name: peer.name.clone(),
                namespace: peer.namespace.clone(),
            },
            external: false,
            caller: own.name,
            counts: false,
        },
        (Side::Client, None) => {
            let host = request
                .host()
                .map(|(host, _)| host.to_owned())
                .or_else(|| call.call.connection.peer.map(|peer| peer.ip().to_string()))
                .unwrap_or_else(|| "unknown".to_owned());
            Attribution {
                service: ServiceRef {
                    name: host,
                    namespace: None,
                },
                external: true,
                caller: own.name,
                counts: true,
            }
        }
    }
}

/// Counts the call's status (as its protocol tells it), authentication, transport, duration
/// and shapes.
fn count_call(
    endpoint: &mut Endpoint,
    call: &EnrichedCall,
    http: &HttpExchange,
    status: &str,
    now_ms: u64,
) {
    let request = &http.request;
    endpoint.calls += 1;
    endpoint.last_seen_ms = endpoint.last_seen_ms.max(now_ms);
    endpoint.first_seen_ms = endpoint.first_seen_ms.min(now_ms);
    endpoint.add_status(status);
    for scheme in auth::schemes(request) {
        *endpoint.auth.entry(scheme).or_default() += 1;
    }
    if call.call.tls {
        endpoint.tls_calls += 1;
    } else {
        endpoint.plaintext_calls += 1;
    }
    if let Some((host, port)) = request.host() {
        endpoint.add_host(match port {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        });
    }
    let duration_ns = call.call.end_ns.saturating_sub(call.call.start_ns);
    endpoint.latency.add_ms(duration_ns as f64 / 1e6);
    learn_shapes(endpoint, http);
}

fn learn_shapes(endpoint: &mut Endpoint, http: &HttpExchange) {
    let request = &http.request;
    let schema = &mut endpoint.schema;
    if let Some(query) = request.query() {
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            let name = if learned_schema::names_a_field(&name) {
                &name
            } else {
                endpoint::OTHER
            };
            schema.learn_query(name, &value);
        }
    }
    let parameters: Vec<JsonTypes> = endpoint
        .key
        .route
        .split('/')
        .zip(request.path().split('/'))
        .filter(|(template, _)| template.starts_with('{'))
        .map(|(_, segment)| JsonTypes::of_text(segment))
        .collect();
    if schema.path_parameters.len() != parameters.len() {
        schema.path_parameters = parameters;
    } else {
        for (learned, seen) in schema.path_parameters.iter_mut().zip(parameters) {
            learned.add(seen);
        }
    }
    if let Some(body) = json_body(request.header_str("content-type"), &request.body) {
        schema
            .request_body
            .get_or_insert_with(Default::default)
            .learn(&body);
    }
    if let Some(response) = http
        .response
        .as_ref()
        .filter(|r| (200..300).contains(&r.status))
    {
        let content_type = crate::protocols::http::header(&response.headers, "content-type")
            .and_then(|header| std::str::from_utf8(&header.value).ok());
        if let Some(body) = json_body(content_type, &response.body) {
            schema
                .response_body
                .get_or_insert_with(Default::default)
                .learn(&body);
        }
    }
}

/// A whole JSON body, parsed; `None` for other or cut bodies.
fn json_body(
    content_type: Option<&str>,
    body: &crate::protocols::http::HttpBody,
) -> Option<serde_json::Value> {
    let json = content_type.is_some_and(|kind| kind.to_ascii_lowercase().contains("json"));
    let whole = !body.incomplete && body.captured.len() as u64 == body.size;
    (json && whole && !body.captured.is_empty())
        .then(|| serde_json::from_slice(&body.captured).ok())
        .flatten()
}

/// Which message a finding was in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Direction {
    Request,
    Response,
}

impl Direction {
    fn name(self) -> &'static str {
        match self {
            Self::Request => "request",
            Self::Response => "response",
        }
    }
}

/// Headers whose values are credentials by design: the authentication schemes account for
/// them, and flagging each would say nothing new.
const CREDENTIAL_HEADERS: [&str; 4] = [
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
];

/// Sensitive findings of both messages.
fn scan(scanner: &SensitiveScanner, http: &HttpExchange) -> Vec<(Direction, Finding)> {
    let request = &http.request;
    let mut request_findings = Vec::new();
    scan_headers(scanner, &request.headers, &mut request_findings);
    if let Some(query) = request.query() {
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            scanner.scan_named(
                &name,
                &value,
                &format!("query:{name}"),
                &mut request_findings,
            );
        }
    }
    scanner.scan_text(request.path(), "path", &mut request_findings);
    scanner.scan_body(
        &request.body.captured,
        request.header_str("content-type"),
        &mut request_findings,
    );
    let mut response_findings = Vec::new();
    if let Some(response) = &http.response {
        scan_headers(scanner, &response.headers, &mut response_findings);
        let content_type = crate::protocols::http::header(&response.headers, "content-type")
            .and_then(|header| std::str::from_utf8(&header.value).ok());
        scanner.scan_body(
            &response.body.captured,
            content_type,
            &mut response_findings,
        );
    }
    request_findings
        .into_iter()
        .map(|finding| (Direction::Request, finding))
        .chain(
            response_findings
                .into_iter()
                .map(|finding| (Direction::Response, finding)),
        )
        .collect()
}

fn scan_headers(
    scanner: &SensitiveScanner,
    headers: &[crate::protocols::http::Header],
    out: &mut Vec<Finding>,
) {
    for header in headers {
        let name = String::from_utf8_lossy(header.name.as_bytes());
        if CREDENTIAL_HEADERS.contains(&name.as_ref()) || name.starts_with(':') {
            continue;
        }
        let value = String::from_utf8_lossy(&header.value);
        scanner.scan_header(&name, &value, out);
    }
}

/// The request as the declared spec's validation reads it.
fn observed_request(request: &HttpRequest) -> ObservedRequest<'_> {
    ObservedRequest {
        path: request.path(),
        query: request.query(),
        header_names: request
            .headers
            .iter()
            .filter_map(|header| std::str::from_utf8(header.name.as_bytes()).ok())
            .collect(),
        content_type: request.header_str("content-type"),
        body: (request.body.size > 0).then_some(&request.body.captured[..]),
        body_complete: !request.body.incomplete
            && request.body.captured.len() as u64 == request.body.size,
    }
}

fn endpoint_attributes(key: &EndpointKey) -> Vec<KeyValue> {
    let mut attributes = vec![
        KeyValue::new("api.endpoint", key.to_string()),
        KeyValue::new("api.protocol", format!("{:?}", key.protocol).to_lowercase()),
        KeyValue::new("http.request.method", key.method.clone()),
        KeyValue::new("http.route", key.route.clone()),
    ];
    if let Some(operation) = &key.operation {
        attributes.push(KeyValue::new("graphql.operation", operation.clone()));
    }
    attributes
}

fn event(
    name: &'static str,
    service: &Arc<ServiceRef>,
    key: &EndpointKey,
    severity: Severity,
    now_ms: u64,
    body: String,
) -> ApiEvent {
    ApiEvent {
        name,
        service: Arc::clone(service),
        severity,
        time_ms: now_ms,
        body,
        attributes: endpoint_attributes(key),
    }
}

fn discovery_events(
    service: &Arc<ServiceRef>,
    key: &EndpointKey,
    conformance: Conformance,
    now_ms: u64,
) -> Vec<ApiEvent> {
    let name = &service.name;
    let mut discovered = event(
        events::ENDPOINT_DISCOVERED,
        service,
        key,
        Severity::Info,
        now_ms,
        format!("{key} of {name} seen for the first time"),
    );
    discovered
        .attributes
        .push(KeyValue::new("api.conformance", conformance.name()));
    let mut found = vec![discovered];
    match conformance {
        Conformance::Shadow => found.push(event(
            events::ENDPOINT_SHADOW,
            service,
            key,
            Severity::Warn,
            now_ms,
            format!("{key} of {name} is not in its declared spec"),
        )),
        Conformance::Zombie => found.push(event(
            events::ENDPOINT_ZOMBIE,
            service,
            key,
            Severity::Warn,
            now_ms,
            format!("{key} of {name} is deprecated in its declared spec and still called"),
        )),
        Conformance::NoSpec | Conformance::Documented => {}
    }
    found
}

fn orphan_event(service: &Arc<ServiceRef>, key: &EndpointKey, now_ms: u64) -> ApiEvent {
    event(
        events::ENDPOINT_ORPHAN,
        service,
        key,
        Severity::Info,
        now_ms,
        format!("{key} of {} is declared but saw no call", service.name),
    )
}

/// A hash identifying what an event reports, to report it once.
fn identity(parts: impl Hash) -> u64 {
    foldhash::fast::FixedState::with_seed(0).hash_one(parts)
}

fn findings_events<'a>(
    service: &'a Arc<ServiceRef>,
    key: &'a EndpointKey,
    findings: &'a [(Direction, Finding)],
    now_ms: u64,
) -> impl Iterator<Item = (u64, ApiEvent)> + 'a {
    findings.iter().map(move |(direction, finding)| {
        let class = finding.class.name();
        let mut found = event(
            events::SENSITIVE_DATA_DETECTED,
            service,
            key,
            Severity::Warn,
            now_ms,
            format!(
                "{class} in the {} of {key} of {} at {}",
                direction.name(),
                service.name,
                finding.location
            ),
        );
        found.attributes.extend([
            KeyValue::new("api.sensitive_data.class", class),
            KeyValue::new("api.sensitive_data.direction", direction.name()),
            KeyValue::new("api.sensitive_data.location", finding.location.clone()),
        ]);
        let identity = identity((service, key, direction, finding.class, &finding.location));
        (identity, found)
    })
}

fn violation_event(
    service: &Arc<ServiceRef>,
    key: &EndpointKey,
    violation: &super::spec::Violation,
    now_ms: u64,
) -> (u64, ApiEvent) {
    let kind = violation.kind.name();
    let mut found = event(
        events::SCHEMA_VIOLATION,
        service,
        key,
        Severity::Warn,
        now_ms,
        format!(
            "{key} of {}: {kind} at {}: {}",
            service.name, violation.location, violation.reason
        ),
    );
    found.attributes.extend([
        KeyValue::new("api.violation.kind", kind),
        KeyValue::new("api.violation.location", violation.location.clone()),
        KeyValue::new("api.violation.reason", violation.reason.clone()),
    ]);
    let identity = identity((service, key, kind, &violation.location));
    (identity, found)
}

/// Counts one call's sensitive classes on its endpoint, once per class and message.
fn count_findings(endpoint: &mut Endpoint, findings: &[(Direction, Finding)]) {
    let classes: BTreeSet<(Direction, SensitiveClass)> = findings
        .iter()
        .map(|(direction, finding)| (*direction, finding.class))
        .collect();
    for (direction, class) in classes {
        let counts = match direction {
            Direction::Request => &mut endpoint.sensitive_request,
            Direction::Response => &mut endpoint.sensitive_response,
        };
        *counts.entry(class).or_default() += 1;
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use super::auth::AuthScheme;
    use super::*;
    use crate::{enrich::PeerService, testing::call};

    fn inventory() -> Inventory {
        Inventory::new(
            InventorySettings {
                orphan_after: Duration::from_secs(60),
                max_endpoints_per_service: 2,
                max_services: 8,
                ..InventorySettings::default()
            },
            Vec::new(),
            Arc::new(SensitiveScanner::new()),
            0,
        )
    }

    fn names(events: &[ApiEvent]) -> Vec<&'static str> {
        events.iter().map(|event| event.name).collect()
    }

    fn endpoint<'a>(inventory: &'a Inventory, service: &str, key: &str) -> &'a Endpoint {
        inventory
            .services
            .values()
            .filter(|inventory| inventory.name == service)
            .flat_map(|inventory| inventory.endpoints.values())
            .find(|endpoint| endpoint.key.to_string() == key)
            .unwrap_or_else(|| panic!("no {key} in {service}"))
    }

    #[test]
    fn server_calls_count_for_the_serving_service() {
        let mut inventory = inventory();
        let analyzed = call(Side::Server, 201, Vec::new());
        let first = inventory.observe(&analyzed.call, Some("/users/{id}"), 1_000);
        assert_eq!(names(&first.events), [events::ENDPOINT_DISCOVERED]);
        assert_eq!(first.declared_route, None);
        let again = inventory.observe(&analyzed.call, Some("/users/{id}"), 2_000);
        assert!(again.events.is_empty());
        let users = endpoint(&inventory, "srv", "POST /users/{id}");
        assert_eq!(users.calls, 2);
        assert_eq!(users.statuses["201"], 2);
        assert_eq!(users.auth[&AuthScheme::ApiKeyQuery], 2);
        assert_eq!(users.callers["127.0.0.1"], 2);
        assert_eq!((users.plaintext_calls, users.tls_calls), (2, 0));
        assert_eq!((users.first_seen_ms, users.last_seen_ms), (1_000, 2_000));
        assert_eq!(users.schema.path_parameters, [JsonTypes::of_text("42")]);
        assert!(users.schema.query.contains_key("api_key"));
        assert_eq!(users.conformance, Conformance::NoSpec);
    }

    #[test]
    fn client_calls_name_their_caller_or_count_for_the_remote_host() {
        let mut inventory = inventory();
        let mut local = call(Side::Client, 200, Vec::new());
        local.call.peer = Some(Arc::new(PeerService {
            name: "users".into(),
            namespace: Some("shop".into()),
        }));
        inventory.observe(&local.call, Some("/users/{id}"), 1);
        let served = endpoint(&inventory, "users", "POST /users/{id}");
        assert_eq!((served.calls, served.callers["srv"]), (0, 1));

        let remote = call(Side::Client, 200, Vec::new());
        inventory.observe(&remote.call, Some("/users/{id}"), 1);
        let external = inventory
            .services
            .values()
            .find(|service| service.external)
            .expect("the remote service");
        assert_eq!(external.name, "127.0.0.1");
        assert_eq!(
            endpoint(&inventory, "127.0.0.1", "POST /users/{id}").calls,
            1
        );
    }

    #[test]
    fn endpoints_beyond_the_bound_collapse_and_changes_are_saved_once() {
        let mut inventory = inventory();
        let analyzed = call(Side::Server, 200, Vec::new());
        for route in ["/a", "/b", "/c", "/d"] {
            inventory.observe(&analyzed.call, Some(route), 1);
        }
        let keys: BTreeSet<String> = inventory
            .take_dirty()
            .into_iter()
            .map(|saved| saved.endpoint.key.to_string())
            .collect();
        assert_eq!(
            keys,
            BTreeSet::from(["POST /a", "POST /b", "POST /{overflow}"].map(str::to_owned))
        );
        assert!(inventory.take_dirty().is_empty());
        assert_eq!(endpoint(&inventory, "srv", "POST /{overflow}").calls, 2);
    }

    /// An inventory bound to the users API's declared spec (tests/fixtures/users_api.yaml)
    /// for the service `srv`.
    fn with_spec() -> Inventory {
        let file = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/users_api.yaml"
        );
        let api = DeclaredApi::load(std::path::Path::new(file)).unwrap();
        let mut inventory = inventory();
        inventory.settings.max_endpoints_per_service = 100;
        let binding = SpecBinding {
            service: "srv".into(),
            file: file.into(),
            api: Arc::new(api),
        };
        inventory.specs.insert("srv".into(), binding);
        inventory
    }

    fn observe_at(inventory: &mut Inventory, method: &str, target: &str, at: u64) -> Observed {
        let mut analyzed = call(Side::Server, 200, Vec::new());
        let http = analyzed
            .call
            .call
            .exchange_mut::<HttpExchange>()
            .expect("an HTTP call");
        http.request.method = method.into();
        http.request.target = target.into();
        let route = crate::analysis::routes::template(http.request.path());
        inventory.observe(&analyzed.call, Some(&route), at)
    }

    #[test]
    fn a_declared_spec_classifies_endpoints_and_names_their_routes() {
        let mut inventory = with_spec();
        let documented = observe_at(&mut inventory, "GET", "/users/7?verbose=1", 1_000);
        assert_eq!(documented.declared_route.as_deref(), Some("/users/{id}"));
        assert_eq!(
            names(&documented.events),
            [events::ENDPOINT_DISCOVERED, events::SCHEMA_VIOLATION]
        );
        let shadow = observe_at(&mut inventory, "GET", "/admin/export", 1_000);
        assert_eq!(
            names(&shadow.events),
            [events::ENDPOINT_DISCOVERED, events::ENDPOINT_SHADOW]
        );
        let zombie = observe_at(&mut inventory, "GET", "/legacy/report", 1_000);
        assert_eq!(
            names(&zombie.events),
            [events::ENDPOINT_DISCOVERED, events::ENDPOINT_ZOMBIE]
        );
        let again = observe_at(&mut inventory, "GET", "/users/8?verbose=1", 1_001);
        assert!(again.events.is_empty(), "a violation is reported once");
        let users = endpoint(&inventory, "srv", "GET /users/{id}");
        assert_eq!(users.conformance, Conformance::Documented);
        assert_eq!(users.violations.values().sum::<u64>(), 2);

        // Operations silent for the whole window since the start (0) are orphans, once, until
        // called again.
        let window = 60_000;
        let orphans: BTreeSet<String> = inventory
            .orphan_events(window + 1)
            .iter()
            .map(|event| event.body.split(" of ").next().unwrap_or("").to_owned())
            .collect();
        let expected = [
            "GET /health",
            "GET /users",
            "POST /users",
            "GET /payments/{id}",
            "GET /orders/{id}",
        ];
        assert_eq!(orphans, BTreeSet::from(expected.map(str::to_owned)));
        assert!(inventory.orphan_events(window + 2).is_empty());
        let later = inventory.orphan_events(2 * window + 10);
        assert!(
            later
                .iter()
                .any(|event| event.body.starts_with("GET /users/{id} "))
        );
    }

    #[test]
    fn restored_endpoints_are_not_discovered_again() {
        let mut first = inventory();
        let analyzed = call(Side::Server, 200, Vec::new());
        first.observe(&analyzed.call, Some("/users/{id}"), 1);
        let saved = first.take_dirty();
        let mut second = inventory();
        second.restore(saved);
        let observed = second.observe(&analyzed.call, Some("/users/{id}"), 2);
        assert!(observed.events.is_empty(), "{:?}", names(&observed.events));
        assert_eq!(endpoint(&second, "srv", "POST /users/{id}").calls, 2);
    }
}
