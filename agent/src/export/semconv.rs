//! The OpenTelemetry semantic conventions for what apiscope reports: attribute names, and the
//! mapping from an analyzed HTTP call to span and metric attributes (stable HTTP conventions).
//! Shared by every exporter so that a span, its metrics and its stdout line agree.

mod mcp;

pub use mcp::session_digest;

use std::sync::Arc;

use opentelemetry::{KeyValue, Value};

use crate::{
    analysis::{AnalyzedCall, sensitive::SensitiveScanner},
    calls::secrets::names_a_secret,
    calls::{
        GenAiCall, GraphqlOperation, GrpcCall, HttpExchange, Payload, Side, grpc::status_name,
    },
    enrich::PeerService,
};

/// `http.request.method`.
pub const HTTP_REQUEST_METHOD: &str = "http.request.method";
/// `http.request.method_original`: the method as sent when it is not a known one.
pub const HTTP_REQUEST_METHOD_ORIGINAL: &str = "http.request.method_original";
/// `http.response.status_code`.
pub const HTTP_RESPONSE_STATUS_CODE: &str = "http.response.status_code";
/// `http.route`.
pub const HTTP_ROUTE: &str = "http.route";
/// `http.request.body.size`.
pub const HTTP_REQUEST_BODY_SIZE: &str = "http.request.body.size";
/// `http.response.body.size`.
pub const HTTP_RESPONSE_BODY_SIZE: &str = "http.response.body.size";
/// `url.path`.
pub const URL_PATH: &str = "url.path";
/// `url.query`, values redacted.
pub const URL_QUERY: &str = "url.query";
/// `url.scheme`.
pub const URL_SCHEME: &str = "url.scheme";
/// `service.peer.name`: the `service.name` of the other end.
pub const SERVICE_PEER_NAME: &str = "service.peer.name";
/// `service.peer.namespace`.
pub const SERVICE_PEER_NAMESPACE: &str = "service.peer.namespace";
/// `server.address`.
pub const SERVER_ADDRESS: &str = "server.address";
/// `server.port`.
pub const SERVER_PORT: &str = "server.port";
/// `tls.client.ja4`: the JA4 fingerprint of the client's TLS ClientHello.
pub const TLS_CLIENT_JA4: &str = "tls.client.ja4";
/// `client.address`.
pub const CLIENT_ADDRESS: &str = "client.address";
/// `network.peer.address`.
pub const NETWORK_PEER_ADDRESS: &str = "network.peer.address";
/// `network.peer.port`.
pub const NETWORK_PEER_PORT: &str = "network.peer.port";
/// `network.protocol.version`.
pub const NETWORK_PROTOCOL_VERSION: &str = "network.protocol.version";
/// `user_agent.original`.
pub const USER_AGENT_ORIGINAL: &str = "user_agent.original";
/// `error.type`.
pub const ERROR_TYPE: &str = "error.type";
/// apiscope's own: which parts of the call were not captured (see `calls::CallGaps`).
pub const APISCOPE_CALL_INCOMPLETE: &str = "apiscope.call.incomplete";
/// `rpc.system` (RPC conventions v1.37): `grpc`.
pub const RPC_SYSTEM: &str = "rpc.system";
/// `rpc.service`: the fully qualified service, e.g. `helloworld.Greeter`.
pub const RPC_SERVICE: &str = "rpc.service";
/// `rpc.method`: the method name alone, e.g. `SayHello`.
pub const RPC_METHOD: &str = "rpc.method";
/// `rpc.grpc.status_code`: the numeric gRPC status.
pub const RPC_GRPC_STATUS_CODE: &str = "rpc.grpc.status_code";
/// apiscope's own (the conventions have no span attribute for it): whole messages the client
/// sent, when the count is known.
pub const APISCOPE_RPC_REQUEST_MESSAGE_COUNT: &str = "apiscope.rpc.request.message.count";
/// apiscope's own: whole messages the server sent, when the count is known.
pub const APISCOPE_RPC_RESPONSE_MESSAGE_COUNT: &str = "apiscope.rpc.response.message.count";
/// apiscope's own: some gRPC message of the call was compressed (set only when true).
pub const APISCOPE_GRPC_COMPRESSED: &str = "apiscope.grpc.compressed";

/// `gen_ai.operation.name`: `chat`, `text_completion`, `embeddings`, `generate_content`.
pub const GEN_AI_OPERATION_NAME: &str = "gen_ai.operation.name";
/// `gen_ai.provider.name`.
pub const GEN_AI_PROVIDER_NAME: &str = "gen_ai.provider.name";
/// `gen_ai.request.model`.
pub const GEN_AI_REQUEST_MODEL: &str = "gen_ai.request.model";
/// `gen_ai.response.model`.
pub const GEN_AI_RESPONSE_MODEL: &str = "gen_ai.response.model";
/// `gen_ai.response.id`.
pub const GEN_AI_RESPONSE_ID: &str = "gen_ai.response.id";
/// `gen_ai.response.finish_reasons`.
pub const GEN_AI_RESPONSE_FINISH_REASONS: &str = "gen_ai.response.finish_reasons";
/// `gen_ai.usage.input_tokens`.
pub const GEN_AI_USAGE_INPUT_TOKENS: &str = "gen_ai.usage.input_tokens";
/// `gen_ai.usage.output_tokens`.
pub const GEN_AI_USAGE_OUTPUT_TOKENS: &str = "gen_ai.usage.output_tokens";
/// `gen_ai.request.max_tokens`.
pub const GEN_AI_REQUEST_MAX_TOKENS: &str = "gen_ai.request.max_tokens";
/// `gen_ai.request.temperature`.
pub const GEN_AI_REQUEST_TEMPERATURE: &str = "gen_ai.request.temperature";
/// `gen_ai.request.top_p`.
pub const GEN_AI_REQUEST_TOP_P: &str = "gen_ai.request.top_p";
/// `gen_ai.response.time_to_first_chunk`: seconds from the request to a streamed response's
/// first chunk.
pub const GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK: &str = "gen_ai.response.time_to_first_chunk";
/// `gen_ai.input.messages`: the prompts sent, opt-in and redacted (JSON).
pub const GEN_AI_INPUT_MESSAGES: &str = "gen_ai.input.messages";
/// `gen_ai.output.messages`: the answers, opt-in and redacted (JSON).
pub const GEN_AI_OUTPUT_MESSAGES: &str = "gen_ai.output.messages";
/// `apiscope.gen_ai.streamed`: the response came as a stream of events.
pub const APISCOPE_GEN_AI_STREAMED: &str = "apiscope.gen_ai.streamed";
/// `apiscope.gen_ai.incomplete`: a body was cut, so model fields it held may be missing.
pub const APISCOPE_GEN_AI_INCOMPLETE: &str = "apiscope.gen_ai.incomplete";
/// `graphql.operation.type`: `query`, `mutation` or `subscription`.
pub const GRAPHQL_OPERATION_TYPE: &str = "graphql.operation.type";
/// `graphql.operation.name`, when the operation is named.
pub const GRAPHQL_OPERATION_NAME: &str = "graphql.operation.name";
/// apiscope's own: the GraphQL request was not seen whole, so a batch may hold more
/// operations than were reported (set only when true).
pub const APISCOPE_GRAPHQL_INCOMPLETE: &str = "apiscope.graphql.incomplete";

/// What replaces every query-string value: values may carry keys and tokens.
pub const REDACTED: &str = "REDACTED";

/// Methods the conventions know; anything else is reported as `_OTHER`, which keeps a scanner
/// sending random verbs from creating new metric series.
const KNOWN_METHODS: [&str; 9] = [
    "CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE",
];

/// Span kind of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The process served the call.
    Server,
    /// The process made the call.
    Client,
}

/// A call described in convention terms, computed once per call.
#[derive(Debug, Clone)]
pub struct CallDescription {
    /// Span kind.
    pub kind: Kind,
    /// Which duration metrics the carrier protocol's measures go to.
    pub carrier: CarrierMetric,
    /// Span name: `{method} {route}` or `{method}` (`{service}/{method}` for gRPC).
    pub name: String,
    /// Span attributes.
    pub span_attributes: Vec<KeyValue>,
    /// Metric attributes: low cardinality only.
    pub metric_attributes: Vec<KeyValue>,
    /// The error type when the call failed by the conventions' rules.
    pub error: Option<String>,
    /// Request body bytes, when there was a body.
    pub request_body_size: Option<u64>,
    /// Response body bytes, when there was a body.
    pub response_body_size: Option<u64>,
    /// Duration in seconds.
    pub duration_seconds: f64,
    /// The incoming `traceparent` header, if any.
    pub traceparent: Option<String>,
    /// The incoming `tracestate` header, if any.
    pub tracestate: Option<String>,
    /// What the GenAI metrics record, when the call is a model call.
    pub genai: Option<GenAiMeasures>,
    /// The MCP metrics' attributes, when the call is an MCP exchange.
    pub mcp: Option<Vec<KeyValue>>,
}

/// The duration metrics of a call's carrier protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CarrierMetric {
    /// The HTTP server and client metrics.
    Http,
    /// The RPC metrics (gRPC): its HTTP/2 carrier would repeat the same duration under `POST`
    /// with the method path as route.
    Rpc,
    /// None: the call has no carrier protocol (MCP over stdio).
    None,
}

/// A model call's measures for the GenAI metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct GenAiMeasures {
    /// `gen_ai.operation.name`, `gen_ai.provider.name`, the request and response models, and
    /// `error.type` when the call failed.
    pub attributes: Vec<KeyValue>,
    /// `gen_ai.usage.input_tokens`, when the response said.
    pub input_tokens: Option<u64>,
    /// `gen_ai.usage.output_tokens`, when the response said.
    pub output_tokens: Option<u64>,
    /// Seconds to a streamed response's first chunk.
    pub time_to_first_chunk: Option<f64>,
}

/// Headers exported beyond the conventions' own, as `http.request.header.<name>` and
/// `http.response.header.<name>`: an explicit allowlist, empty by default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderAllowlist {
    names: Vec<String>,
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

    fn attributes(&self, prefix: &str, headers: &[crate::calls::Header], out: &mut Vec<KeyValue>) {
        for name in &self.names {
            let values: Vec<opentelemetry::StringValue> = headers
                .iter()
                .filter(|header| &header.name == name)
                .map(|header| String::from_utf8_lossy(&header.value).into_owned().into())
                .collect();
            if !values.is_empty() {
                out.push(KeyValue::new(
                    format!("{prefix}.{name}"),
                    Value::Array(values.into()),
                ));
            }
        }
    }
}

/// Turns analyzed calls into convention terms.
#[derive(Debug, Clone, Default)]
pub struct Describer {
    headers: HeaderAllowlist,
    /// Redacts the prompts and answers of model calls, when their export was opted into.
    genai_content: Option<Arc<SensitiveScanner>>,
}

impl Describer {
    /// A describer exporting the allowlisted headers.
    pub fn new(headers: HeaderAllowlist) -> Self {
        Self {
            headers,
            genai_content: None,
        }
    }

    /// The same describer, exporting the prompts and answers of model calls (redacted) when
    /// `export` is set.
    pub fn with_genai_content(self, export: bool) -> Self {
        Self {
            genai_content: export.then(|| Arc::new(SensitiveScanner::new())),
            ..self
        }
    }

    /// Describes an analyzed call for export.
    pub fn describe(&self, analyzed: &AnalyzedCall) -> CallDescription {
        match &analyzed.call.call.payload {
            Payload::Http(http) => {
                let mut description = match &http.grpc {
                    Some(grpc) => describe_grpc(analyzed, http, grpc),
                    None => describe_http(analyzed, http),
                };
                if let Some(operation) = &http.graphql {
                    describe_graphql(operation, &mut description);
                }
                if let Some(genai) = &http.genai {
                    describe_genai(genai, &mut description);
                    if let Some(scanner) = &self.genai_content {
                        describe_genai_content(http, scanner, &mut description.span_attributes);
                    }
                }
                if let Some(call) = &http.mcp {
                    mcp::describe_on_http(call, &mut description);
                }
                self.headers.attributes(
                    "http.request.header",
                    &http.request.headers,
                    &mut description.span_attributes,
                );
                if let Some(response) = &http.response {
                    self.headers.attributes(
                        "http.response.header",
                        &response.headers,
                        &mut description.span_attributes,
                    );
                }
                if let Some(peer) = &analyzed.call.peer {
                    describe_peer(peer, &mut description.span_attributes);
                }
                description
            }
            Payload::Mcp(call) => mcp::describe_on_stdio(analyzed, call),
        }
    }
}

/// The opted-in prompts and answers of a model call, in the conventions' message shape
/// (`[{"role": ..., "parts": [{"type": "text", "content": ...}]}]`), redacted of the sensitive
/// values the scan finds.
fn describe_genai_content(
    http: &HttpExchange,
    scanner: &SensitiveScanner,
    attributes: &mut Vec<KeyValue>,
) {
    let said = crate::protocols::genai::content::content(http);
    let message = |role: &str, text: &str| {
        serde_json::json!({
            "role": role,
            "parts": [{"type": "text", "content": scanner.redact(text)}],
        })
    };
    let input: Vec<_> = said
        .input
        .iter()
        .map(|(role, text)| message(role, text))
        .collect();
    let output: Vec<_> = said
        .output
        .iter()
        .map(|text| message("assistant", text))
        .collect();
    for (key, messages) in [
        (GEN_AI_INPUT_MESSAGES, input),
        (GEN_AI_OUTPUT_MESSAGES, output),
    ] {
        if !messages.is_empty() {
            attributes.push(KeyValue::new(
                key,
                serde_json::Value::Array(messages).to_string(),
            ));
        }
    }
}

/// The local service that answered a client call.
fn describe_peer(peer: &PeerService, attributes: &mut Vec<KeyValue>) {
    attributes.push(KeyValue::new(SERVICE_PEER_NAME, peer.name.clone()));
    if let Some(namespace) = &peer.namespace {
        attributes.push(KeyValue::new(SERVICE_PEER_NAMESPACE, namespace.clone()));
    }
}

/// A model call names the span `{gen_ai.operation.name} {gen_ai.request.model}` and adds the
/// GenAI conventions' attributes; prompts and completions never leave the host.
fn describe_genai(call: &GenAiCall, description: &mut CallDescription) {
    let operation = call.operation.as_str();
    // What names the call: on the span, and as the GenAI metrics' attributes.
    let mut identity = vec![
        KeyValue::new(GEN_AI_OPERATION_NAME, operation),
        KeyValue::new(GEN_AI_PROVIDER_NAME, call.provider),
    ];
    let models = [
        (GEN_AI_REQUEST_MODEL, &call.request_model),
        (GEN_AI_RESPONSE_MODEL, &call.response_model),
    ];
    for (key, value) in models {
        if let Some(value) = value {
            identity.push(KeyValue::new(key, value.clone()));
        }
    }
    let attributes = &mut description.span_attributes;
    attributes.extend(identity.iter().cloned());
    if let Some(id) = &call.response_id {
        attributes.push(KeyValue::new(GEN_AI_RESPONSE_ID, id.clone()));
    }
    if !call.finish_reasons.is_empty() {
        attributes.push(KeyValue::new(
            GEN_AI_RESPONSE_FINISH_REASONS,
            string_array(call.finish_reasons.iter().cloned()),
        ));
    }
    let counts = [
        (GEN_AI_USAGE_INPUT_TOKENS, call.input_tokens),
        (GEN_AI_USAGE_OUTPUT_TOKENS, call.output_tokens),
        (GEN_AI_REQUEST_MAX_TOKENS, call.max_tokens),
    ];
    for (key, value) in counts {
        if let Some(value) = value {
            attributes.push(KeyValue::new(key, int(value)));
        }
    }
    let floats = [
        (GEN_AI_REQUEST_TEMPERATURE, call.temperature),
        (GEN_AI_REQUEST_TOP_P, call.top_p),
    ];
    for (key, value) in floats {
        if let Some(value) = value {
            attributes.push(KeyValue::new(key, value));
        }
    }
    if call.streamed {
        attributes.push(KeyValue::new(APISCOPE_GEN_AI_STREAMED, true));
    }
    let time_to_first_chunk = call.time_to_first_chunk_ns.map(|nanos| nanos as f64 / 1e9);
    if let Some(seconds) = time_to_first_chunk {
        attributes.push(KeyValue::new(GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK, seconds));
    }
    if call.incomplete {
        attributes.push(KeyValue::new(APISCOPE_GEN_AI_INCOMPLETE, true));
    }
    if let Some(error) = &description.error {
        identity.push(KeyValue::new(ERROR_TYPE, error.clone()));
    }
    description.genai = Some(GenAiMeasures {
        attributes: identity,
        input_tokens: call.input_tokens,
        output_tokens: call.output_tokens,
        time_to_first_chunk,
    });
    description.name = match &call.request_model {
        Some(model) => format!("{operation} {model}"),
        None => operation.to_owned(),
    };
}

/// A GraphQL operation names the span (`{type} {name}`, or `{type}`) and adds its attributes;
/// the document itself never leaves the host.
fn describe_graphql(operation: &GraphqlOperation, description: &mut CallDescription) {
    let operation_type = operation.operation_type.as_str();
    let attributes = &mut description.span_attributes;
    attributes.push(KeyValue::new(GRAPHQL_OPERATION_TYPE, operation_type));
    description.name = match &operation.name {
        Some(name) => {
            attributes.push(KeyValue::new(GRAPHQL_OPERATION_NAME, name.clone()));
            format!("{operation_type} {name}")
        }
        None => operation_type.to_owned(),
    };
    if operation.incomplete {
        attributes.push(KeyValue::new(APISCOPE_GRAPHQL_INCOMPLETE, true));
    }
}

/// A string-array attribute value.
fn string_array<S: Into<opentelemetry::StringValue>>(values: impl IntoIterator<Item = S>) -> Value {
    Value::Array(
        values
            .into_iter()
            .map(Into::into)
            .collect::<Vec<_>>()
            .into(),
    )
}

fn int(value: u64) -> Value {
    Value::I64(i64::try_from(value).unwrap_or(i64::MAX))
}

/// Replaces every value of a query string, keeping the parameter names.
pub fn redact_query(query: &str) -> String {
    query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) => format!("{name}={REDACTED}"),
            None if pair.is_empty() => String::new(),
            None => format!("{pair}={REDACTED}"),
        })
        .collect::<Vec<_>>()
        .join("&")
}

fn describe_http(analyzed: &AnalyzedCall, http: &HttpExchange) -> CallDescription {
    let enriched = &analyzed.call;
    let call = &enriched.call;
    let connection = &call.connection;
    let request = &http.request;
    let kind = match call.side {
        Side::Server => Kind::Server,
        Side::Client => Kind::Client,
    };
    // An empty method is one that could not be decoded (see `CallGaps::headers_unknown`).
    let (method, original) = if KNOWN_METHODS.contains(&request.method.as_str()) {
        (request.method.clone(), None)
    } else if request.method.is_empty() {
        ("_OTHER".to_owned(), None)
    } else {
        ("_OTHER".to_owned(), Some(request.method.clone()))
    };
    let scheme = if call.tls { "https" } else { "http" };
    // The response's: the request that upgraded a connection to h2c went as HTTP/1.1, and its
    // response came back in HTTP/2.
    let version = http
        .response
        .as_ref()
        .map_or(request.version, |response| response.version)
        .as_str();
    let status = http.response.as_ref().map(|response| response.status);
    let error = status
        .filter(|status| match kind {
            Kind::Server => *status >= 500,
            Kind::Client => *status >= 400,
        })
        .map(|status| status.to_string());

    // The server end of the socket: ours for a server span, the peer's for a client span.
    let server_socket = match kind {
        Kind::Server => connection.local,
        Kind::Client => connection.peer,
    };
    let (server_address, server_port) = match request.host() {
        Some((host, port)) => (
            Some(host.to_owned()),
            port.or_else(|| server_socket.map(|addr| addr.port())),
        ),
        None => (
            server_socket.map(|addr| addr.ip().to_string()),
            server_socket.map(|addr| addr.port()),
        ),
    };

    let mut span_attributes = vec![
        KeyValue::new(HTTP_REQUEST_METHOD, method.clone()),
        KeyValue::new(URL_SCHEME, scheme),
        KeyValue::new(NETWORK_PROTOCOL_VERSION, version),
    ];
    // An empty target is one that could not be decoded.
    if !request.target.is_empty() {
        span_attributes.push(KeyValue::new(URL_PATH, request.path().to_owned()));
    }
    let mut metric_attributes = vec![
        KeyValue::new(HTTP_REQUEST_METHOD, method.clone()),
        KeyValue::new(URL_SCHEME, scheme),
        KeyValue::new(NETWORK_PROTOCOL_VERSION, version),
    ];
    if let Some(original) = original {
        span_attributes.push(KeyValue::new(HTTP_REQUEST_METHOD_ORIGINAL, original));
    }
    if let Some(query) = request.query() {
        span_attributes.push(KeyValue::new(URL_QUERY, redact_query(query)));
    }
    if let Some(route) = &analyzed.route {
        span_attributes.push(KeyValue::new(HTTP_ROUTE, route.clone()));
        metric_attributes.push(KeyValue::new(HTTP_ROUTE, route.clone()));
    }
    if let Some(status) = status {
        span_attributes.push(KeyValue::new(HTTP_RESPONSE_STATUS_CODE, i64::from(status)));
        metric_attributes.push(KeyValue::new(HTTP_RESPONSE_STATUS_CODE, i64::from(status)));
    }
    if let Some(error) = &error {
        span_attributes.push(KeyValue::new(ERROR_TYPE, error.clone()));
        metric_attributes.push(KeyValue::new(ERROR_TYPE, error.clone()));
    }
    if let Some(address) = server_address {
        span_attributes.push(KeyValue::new(SERVER_ADDRESS, address));
    }
    if let Some(port) = server_port {
        span_attributes.push(KeyValue::new(SERVER_PORT, i64::from(port)));
    }
    if let Some(peer) = connection.peer {
        span_attributes.push(KeyValue::new(NETWORK_PEER_ADDRESS, peer.ip().to_string()));
        span_attributes.push(KeyValue::new(NETWORK_PEER_PORT, i64::from(peer.port())));
        if kind == Kind::Server {
            span_attributes.push(KeyValue::new(CLIENT_ADDRESS, peer.ip().to_string()));
        }
    }
    if let Some(ja4) = &connection.tls_client_ja4 {
        span_attributes.push(KeyValue::new(TLS_CLIENT_JA4, ja4.to_string()));
    }
    if let Some(agent) = request.header_str("user-agent") {
        span_attributes.push(KeyValue::new(USER_AGENT_ORIGINAL, agent.to_owned()));
    }
    let request_body_size = (request.body.size > 0).then_some(request.body.size);
    let response_body_size = http
        .response
        .as_ref()
        .map(|response| response.body.size)
        .filter(|size| *size > 0);
    if let Some(size) = request_body_size {
        span_attributes.push(KeyValue::new(HTTP_REQUEST_BODY_SIZE, int(size)));
    }
    if let Some(size) = response_body_size {
        span_attributes.push(KeyValue::new(HTTP_RESPONSE_BODY_SIZE, int(size)));
    }
    let gaps = incomplete_parts(call);
    if !gaps.is_empty() {
        span_attributes.push(KeyValue::new(APISCOPE_CALL_INCOMPLETE, string_array(gaps)));
    }

    // The conventions name a span of an unknown method `HTTP`.
    let name_method = if method == "_OTHER" { "HTTP" } else { &method };
    let name = match &analyzed.route {
        Some(route) => format!("{name_method} {route}"),
        None => name_method.to_owned(),
    };
    CallDescription {
        kind,
        carrier: CarrierMetric::Http,
        name,
        span_attributes,
        metric_attributes,
        error,
        request_body_size,
        response_body_size,
        duration_seconds: call.end_ns.saturating_sub(call.start_ns) as f64 / 1e9,
        traceparent: request.header_str("traceparent").map(str::to_owned),
        tracestate: request.header_str("tracestate").map(str::to_owned),
        genai: None,
        mcp: None,
    }
}

/// What of the HTTP description a gRPC span keeps: where the call went and what was missed.
/// The rest (method, path, HTTP status) is the same for every gRPC call or repeats the
/// service and method.
const GRPC_KEPT_HTTP_ATTRIBUTES: [&str; 7] = [
    SERVER_ADDRESS,
    SERVER_PORT,
    CLIENT_ADDRESS,
    NETWORK_PEER_ADDRESS,
    NETWORK_PEER_PORT,
    USER_AGENT_ORIGINAL,
    APISCOPE_CALL_INCOMPLETE,
];

/// True when `code` makes a span an error: any non-OK status for a client; for a server only
/// the codes that mean the server failed (UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL,
/// UNAVAILABLE, DATA_LOSS), not those answering a bad request.
fn is_grpc_error(kind: Kind, code: u32) -> bool {
    match kind {
        Kind::Client => code != 0,
        Kind::Server => matches!(code, 2 | 4 | 12 | 13 | 14 | 15),
    }
}

/// A gRPC call in the RPC conventions (v1.37 attribute names): named `{service}/{method}`,
/// with `rpc.*` attributes on the span and the metrics.
fn describe_grpc(analyzed: &AnalyzedCall, http: &HttpExchange, grpc: &GrpcCall) -> CallDescription {
    let mut description = describe_http(analyzed, http);
    description
        .span_attributes
        .retain(|attribute| GRPC_KEPT_HTTP_ATTRIBUTES.contains(&attribute.key.as_str()));
    let mut rpc = vec![KeyValue::new(RPC_SYSTEM, "grpc")];
    // An unparsable `:path` has no service or method to name: the span is just `grpc`.
    description.name = if grpc.service.is_empty() {
        "grpc".to_owned()
    } else {
        rpc.push(KeyValue::new(RPC_SERVICE, grpc.service.clone()));
        rpc.push(KeyValue::new(RPC_METHOD, grpc.method.clone()));
        format!("{}/{}", grpc.service, grpc.method)
    };
    if let Some(code) = grpc.status_code {
        rpc.push(KeyValue::new(RPC_GRPC_STATUS_CODE, i64::from(code)));
    }
    match grpc.status_code {
        Some(code) => {
            description.error = is_grpc_error(description.kind, code)
                .then(|| status_name(code).map_or_else(|| code.to_string(), str::to_owned));
        }
        // Without `grpc-status`, an HTTP status other than 200 (a proxy's 503, a server that
        // is not gRPC) is what tells how the call ended: it is kept, and so is the error the
        // HTTP rules made of it.
        None => {
            if let Some(response) = &http.response
                && response.status != 200
            {
                description.span_attributes.push(KeyValue::new(
                    HTTP_RESPONSE_STATUS_CODE,
                    i64::from(response.status),
                ));
            }
        }
    }
    if let Some(error) = &description.error {
        rpc.push(KeyValue::new(ERROR_TYPE, error.clone()));
    }
    description.span_attributes.extend(rpc.iter().cloned());
    description.metric_attributes = rpc;
    if let Some(count) = grpc.request_messages {
        description.span_attributes.push(KeyValue::new(
            APISCOPE_RPC_REQUEST_MESSAGE_COUNT,
            int(count),
        ));
    }
    if let Some(count) = grpc.response_messages {
        description.span_attributes.push(KeyValue::new(
            APISCOPE_RPC_RESPONSE_MESSAGE_COUNT,
            int(count),
        ));
    }
    if grpc.compressed {
        description
            .span_attributes
            .push(KeyValue::new(APISCOPE_GRPC_COMPRESSED, true));
    }
    description.carrier = CarrierMetric::Rpc;
    // Message bytes are not HTTP bodies to measure.
    description.request_body_size = None;
    description.response_body_size = None;
    description
}

/// Names of the parts of a call that were not captured.
fn incomplete_parts(call: &crate::calls::ApiCall) -> Vec<&'static str> {
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

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;

    use bytes::Bytes;

    use super::*;
    use crate::{
        calls::{ApiCall, CallGaps, GrpcCall, Header, HttpBody, HttpRequest, HttpResponse},
        enrich::{EnrichedCall, ProcessIdentity, Workload},
        streams::Connection,
    };

    fn header(name: &str, value: &str) -> Header {
        Header {
            name: name.into(),
            value: Bytes::copy_from_slice(value.as_bytes()),
        }
    }

    /// A server or client call of `POST /users/42?api_key=s3cret` answered `status`.
    pub(crate) fn call(side: Side, status: u16, headers: Vec<Header>) -> AnalyzedCall {
        let body = |size| HttpBody {
            size,
            ..HttpBody::default()
        };
        let exchange = HttpExchange {
            request: HttpRequest {
                method: "POST".into(),
                target: "/users/42?api_key=s3cret".into(),
                version: crate::calls::http::HttpVersion::Http11,
                headers,
                trailers: Vec::new(),
                body: body(12),
            },
            response: Some(HttpResponse {
                version: crate::calls::http::HttpVersion::Http11,
                status,
                headers: Vec::new(),
                trailers: Vec::new(),
                body: body(0),
            }),
            upgraded: false,
            grpc: None,
            graphql: None,
            genai: None,
            mcp: None,
        };
        AnalyzedCall {
            call: EnrichedCall {
                call: ApiCall {
                    connection: Arc::new(Connection {
                        id: 1,
                        sock: 0,
                        pid: 10,
                        fd: 3,
                        role: agent_common::Role::Server,
                        opened_unseen: false,
                        tls_client_ja4: None,
                        transport: crate::streams::Transport::Tcp,
                        local: Some("127.0.0.1:8080".parse().unwrap()),
                        peer: Some("127.0.0.1:50000".parse().unwrap()),
                        comm: "srv".into(),
                    }),
                    side,
                    start_ns: 1_000_000,
                    end_ns: 3_500_000,
                    tls: false,
                    gaps: CallGaps::default(),
                    payload: Payload::Http(exchange),
                },
                workload: Arc::new(Workload::new(
                    Arc::new(ProcessIdentity {
                        pid: 10,
                        executable_name: "srv".into(),
                        ..Default::default()
                    }),
                    None,
                )),
                peer: None,
                host_name: "host".into(),
            },
            route: Some("/users/{id}".into()),
            events: Vec::new(),
        }
    }

    fn attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a Value> {
        attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| &kv.value)
    }

    #[test]
    fn server_span_attributes_follow_the_http_conventions() {
        let described = Describer::default().describe(&call(
            Side::Server,
            503,
            vec![
                header("host", "api.local:8443"),
                header("user-agent", "curl/8"),
            ],
        ));
        let a = &described.span_attributes;
        assert_eq!(described.name, "POST /users/{id}");
        assert_eq!(described.kind, Kind::Server);
        assert_eq!(
            attribute(a, HTTP_REQUEST_METHOD),
            Some(&Value::from("POST"))
        );
        assert_eq!(attribute(a, URL_PATH), Some(&Value::from("/users/42")));
        assert_eq!(
            attribute(a, URL_QUERY),
            Some(&Value::from("api_key=REDACTED"))
        );
        assert_eq!(
            attribute(a, HTTP_RESPONSE_STATUS_CODE),
            Some(&Value::I64(503))
        );
        assert_eq!(
            attribute(a, SERVER_ADDRESS),
            Some(&Value::from("api.local"))
        );
        assert_eq!(attribute(a, SERVER_PORT), Some(&Value::I64(8443)));
        assert_eq!(
            attribute(a, CLIENT_ADDRESS),
            Some(&Value::from("127.0.0.1"))
        );
        assert_eq!(attribute(a, NETWORK_PEER_PORT), Some(&Value::I64(50000)));
        assert_eq!(
            attribute(a, USER_AGENT_ORIGINAL),
            Some(&Value::from("curl/8"))
        );
        assert_eq!(attribute(a, HTTP_REQUEST_BODY_SIZE), Some(&Value::I64(12)));
        assert_eq!(attribute(a, HTTP_RESPONSE_BODY_SIZE), None);
        assert_eq!(described.error.as_deref(), Some("503"));
        assert!((described.duration_seconds - 0.0025).abs() < 1e-12);
        // Metrics carry no per-request values.
        assert!(attribute(&described.metric_attributes, URL_PATH).is_none());
        assert!(attribute(&described.metric_attributes, SERVER_PORT).is_none());
    }

    #[test]
    fn client_errors_start_at_400_and_server_address_falls_back_to_the_socket() {
        let described = Describer::default().describe(&call(Side::Client, 404, Vec::new()));
        assert_eq!(described.kind, Kind::Client);
        assert_eq!(described.error.as_deref(), Some("404"));
        let a = &described.span_attributes;
        assert_eq!(
            attribute(a, SERVER_ADDRESS),
            Some(&Value::from("127.0.0.1"))
        );
        assert_eq!(attribute(a, SERVER_PORT), Some(&Value::I64(50000)));
        assert!(attribute(a, CLIENT_ADDRESS).is_none());
        assert!(
            Describer::default()
                .describe(&call(Side::Server, 404, Vec::new()))
                .error
                .is_none()
        );
    }

    #[test]
    fn allowlisted_headers_are_exported_and_secret_ones_refused() {
        let allowlist = HeaderAllowlist::new(&["X-Request-Id".into()]).unwrap();
        let described = Describer::new(allowlist).describe(&call(
            Side::Server,
            200,
            vec![
                header("x-request-id", "abc"),
                header("authorization", "Bearer s3cret"),
            ],
        ));
        assert_eq!(
            attribute(
                &described.span_attributes,
                "http.request.header.x-request-id"
            ),
            Some(&Value::Array(
                vec![opentelemetry::StringValue::from("abc")].into()
            ))
        );
        assert!(
            !format!("{:?}", described.span_attributes).contains("s3cret"),
            "a secret was exported"
        );
        for secret in [
            "Authorization",
            "Cookie",
            "Set-Cookie",
            "X-API-Key",
            "X-Auth-Token",
        ] {
            assert!(
                HeaderAllowlist::new(&[secret.into()]).is_err(),
                "{secret} accepted"
            );
        }
    }

    #[test]
    fn graphql_operations_name_the_span() {
        use crate::calls::GraphqlOperationType;

        let mut analyzed = call(Side::Server, 200, Vec::new());
        let Payload::Http(http) = &mut analyzed.call.call.payload else {
            panic!("an HTTP call");
        };
        http.graphql = Some(GraphqlOperation {
            operation_type: GraphqlOperationType::Mutation,
            name: Some("AddUser".into()),
            incomplete: false,
        });
        let described = Describer::default().describe(&analyzed);
        assert_eq!(described.name, "mutation AddUser");
        let a = &described.span_attributes;
        assert_eq!(
            attribute(a, GRAPHQL_OPERATION_TYPE),
            Some(&Value::from("mutation"))
        );
        assert_eq!(
            attribute(a, GRAPHQL_OPERATION_NAME),
            Some(&Value::from("AddUser"))
        );
        assert_eq!(attribute(a, APISCOPE_GRAPHQL_INCOMPLETE), None);
        // The HTTP attributes stay.
        assert_eq!(attribute(a, HTTP_ROUTE), Some(&Value::from("/users/{id}")));

        let Payload::Http(http) = &mut analyzed.call.call.payload else {
            panic!("an HTTP call");
        };
        http.graphql = Some(GraphqlOperation {
            operation_type: GraphqlOperationType::Query,
            name: None,
            incomplete: true,
        });
        let described = Describer::default().describe(&analyzed);
        assert_eq!(described.name, "query");
        let a = &described.span_attributes;
        assert_eq!(attribute(a, GRAPHQL_OPERATION_NAME), None);
        assert_eq!(
            attribute(a, APISCOPE_GRAPHQL_INCOMPLETE),
            Some(&Value::Bool(true))
        );
    }

    #[test]
    fn unknown_methods_are_other() {
        let mut analyzed = call(Side::Server, 200, Vec::new());
        let Payload::Http(http) = &mut analyzed.call.call.payload else {
            panic!("an HTTP call");
        };
        http.request.method = "PURGE".into();
        analyzed.route = None;
        let described = Describer::default().describe(&analyzed);
        assert_eq!(described.name, "HTTP");
        let a = &described.span_attributes;
        assert_eq!(
            attribute(a, HTTP_REQUEST_METHOD_ORIGINAL),
            Some(&Value::from("PURGE"))
        );
    }

    /// A gRPC call of `helloworld.Greeter/SayHello` that ended with `status_code`.
    pub(crate) fn grpc_call(side: Side, status_code: Option<u32>) -> AnalyzedCall {
        let mut analyzed = call(side, 200, vec![header("user-agent", "grpc-python/1")]);
        let Payload::Http(http) = &mut analyzed.call.call.payload else {
            panic!("an HTTP call");
        };
        http.request.target = "/helloworld.Greeter/SayHello".into();
        http.grpc = Some(GrpcCall {
            service: "helloworld.Greeter".into(),
            method: "SayHello".into(),
            status_code,
            request_messages: Some(4),
            response_messages: None,
            compressed: false,
        });
        analyzed
    }

    #[test]
    fn grpc_calls_follow_the_rpc_conventions() {
        let described = Describer::default().describe(&grpc_call(Side::Server, Some(0)));
        assert_eq!(described.name, "helloworld.Greeter/SayHello");
        assert_eq!(described.carrier, CarrierMetric::Rpc);
        assert!(described.error.is_none());
        let a = &described.span_attributes;
        assert_eq!(attribute(a, RPC_SYSTEM), Some(&Value::from("grpc")));
        assert_eq!(
            attribute(a, RPC_SERVICE),
            Some(&Value::from("helloworld.Greeter"))
        );
        assert_eq!(attribute(a, RPC_METHOD), Some(&Value::from("SayHello")));
        assert_eq!(attribute(a, RPC_GRPC_STATUS_CODE), Some(&Value::I64(0)));
        assert_eq!(
            attribute(a, APISCOPE_RPC_REQUEST_MESSAGE_COUNT),
            Some(&Value::I64(4))
        );
        // An unknown count is left out, not reported as what was seen.
        assert_eq!(attribute(a, APISCOPE_RPC_RESPONSE_MESSAGE_COUNT), None);
        assert_eq!(attribute(a, APISCOPE_GRPC_COMPRESSED), None);
        assert_eq!(attribute(a, SERVER_PORT), Some(&Value::I64(8080)));
        // The HTTP carrier's attributes say nothing a gRPC span needs.
        assert_eq!(attribute(a, HTTP_REQUEST_METHOD), None);
        assert_eq!(attribute(a, URL_PATH), None);
        assert_eq!(attribute(a, HTTP_RESPONSE_STATUS_CODE), None);
        let m = &described.metric_attributes;
        assert_eq!(attribute(m, RPC_METHOD), Some(&Value::from("SayHello")));
        assert_eq!(attribute(m, RPC_GRPC_STATUS_CODE), Some(&Value::I64(0)));
        assert_eq!(attribute(m, HTTP_ROUTE), None);
    }

    #[test]
    fn grpc_errors_depend_on_the_side() {
        let error = |side, code| {
            Describer::default()
                .describe(&grpc_call(side, Some(code)))
                .error
        };
        // NOT_FOUND answers the request: an error for the client only.
        assert_eq!(error(Side::Client, 5).as_deref(), Some("NOT_FOUND"));
        assert_eq!(error(Side::Server, 5), None);
        for code in [2, 4, 12, 13, 14, 15] {
            assert!(error(Side::Server, code).is_some(), "{code}");
        }
        for code in [0, 1, 3, 5, 6, 7, 8, 9, 10, 11, 16] {
            assert!(error(Side::Server, code).is_none(), "{code}");
        }
        assert_eq!(error(Side::Client, 99).as_deref(), Some("99"));
        assert_eq!(error(Side::Client, 0), None);
        let described = Describer::default().describe(&grpc_call(Side::Client, Some(14)));
        assert_eq!(
            attribute(&described.span_attributes, ERROR_TYPE),
            Some(&Value::from("UNAVAILABLE"))
        );
        // No status seen: no code, no error.
        let described = Describer::default().describe(&grpc_call(Side::Client, None));
        assert!(described.error.is_none());
        assert_eq!(
            attribute(&described.span_attributes, RPC_GRPC_STATUS_CODE),
            None
        );
        assert_eq!(
            attribute(&described.span_attributes, HTTP_RESPONSE_STATUS_CODE),
            None
        );
        // No `grpc-status` and an HTTP error: the HTTP status says how it ended.
        let mut analyzed = grpc_call(Side::Client, None);
        let Payload::Http(http) = &mut analyzed.call.call.payload else {
            panic!("an HTTP call");
        };
        if let Some(response) = &mut http.response {
            response.status = 503;
        }
        let described = Describer::default().describe(&analyzed);
        assert_eq!(described.error.as_deref(), Some("503"));
        assert_eq!(
            attribute(&described.span_attributes, HTTP_RESPONSE_STATUS_CODE),
            Some(&Value::I64(503))
        );
        assert_eq!(
            attribute(&described.metric_attributes, ERROR_TYPE),
            Some(&Value::from("503"))
        );
    }

    #[test]
    fn query_values_are_redacted_names_kept() {
        assert_eq!(
            redact_query("api_key=s3cr3t&page=2&flag&x="),
            "api_key=REDACTED&page=REDACTED&flag=REDACTED&x=REDACTED"
        );
        assert_eq!(redact_query(""), "");
    }
}
