//! HTTP exchanges in the stable HTTP semantic conventions: span name and attributes, the
//! duration and body-size histograms, and the endpoint the inventory keeps.

use std::sync::Arc;

use opentelemetry::{KeyValue, StringValue, Value};

use super::{Header, HttpExchange};
use crate::calls::{
    ApiCall, CallDescription, DescribeContext, EndpointIdentity, Instrument, Kind,
    description::{ERROR_TYPE, int},
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
/// Prefix of the allowlisted request headers' attributes.
pub const HTTP_REQUEST_HEADER: &str = "http.request.header";
/// Prefix of the allowlisted response headers' attributes.
pub const HTTP_RESPONSE_HEADER: &str = "http.response.header";

/// What replaces every query-string value: values may carry keys and tokens.
pub const REDACTED: &str = "REDACTED";

/// Bucket boundaries of the duration histograms, in seconds, as the HTTP conventions advise.
pub const DURATION_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// Bucket boundaries of the body-size histograms, in bytes.
const SIZE_BUCKETS: [f64; 12] = [
    0.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0, 16777216.0,
    67108864.0,
];

/// `http.server.request.duration` and `http.client.request.duration`.
pub static DURATION: [&Instrument; 2] = [
    &Instrument {
        name: "http.server.request.duration",
        unit: "s",
        description: "Duration of HTTP server requests.",
        boundaries: &DURATION_BUCKETS,
    },
    &Instrument {
        name: "http.client.request.duration",
        unit: "s",
        description: "Duration of HTTP client requests.",
        boundaries: &DURATION_BUCKETS,
    },
];

/// `http.{server,client}.request.body.size`.
static REQUEST_BODY_SIZE: [&Instrument; 2] = [
    &Instrument {
        name: "http.server.request.body.size",
        unit: "By",
        description: "Size of HTTP server request bodies.",
        boundaries: &SIZE_BUCKETS,
    },
    &Instrument {
        name: "http.client.request.body.size",
        unit: "By",
        description: "Size of HTTP client request bodies.",
        boundaries: &SIZE_BUCKETS,
    },
];

/// `http.{server,client}.response.body.size`.
static RESPONSE_BODY_SIZE: [&Instrument; 2] = [
    &Instrument {
        name: "http.server.response.body.size",
        unit: "By",
        description: "Size of HTTP server response bodies.",
        boundaries: &SIZE_BUCKETS,
    },
    &Instrument {
        name: "http.client.response.body.size",
        unit: "By",
        description: "Size of HTTP client response bodies.",
        boundaries: &SIZE_BUCKETS,
    },
];

/// Methods the conventions know; anything else is reported as `_OTHER`, which keeps a scanner
/// sending random verbs from creating new metric series.
const KNOWN_METHODS: [&str; 9] = [
    "CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE",
];

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

/// Describes an HTTP exchange: named `{method} {route}`, with the stable HTTP conventions'
/// attributes, duration and body-size measures, and its endpoint.
pub fn describe(
    call: &ApiCall,
    http: &HttpExchange,
    context: DescribeContext<'_>,
) -> CallDescription {
    let mut description = CallDescription::of(call);
    let connection = &call.connection;
    let request = &http.request;
    let kind = description.kind;
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
    if let Some(route) = context.route {
        span_attributes.push(KeyValue::new(HTTP_ROUTE, route.to_owned()));
        metric_attributes.push(KeyValue::new(HTTP_ROUTE, route.to_owned()));
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
        // Formatted once, shared by both attributes.
        let ip = StringValue::from(Arc::<str>::from(peer.ip().to_string()));
        span_attributes.push(KeyValue::new(NETWORK_PEER_ADDRESS, ip.clone()));
        span_attributes.push(KeyValue::new(NETWORK_PEER_PORT, i64::from(peer.port())));
        if kind == Kind::Server {
            span_attributes.push(KeyValue::new(CLIENT_ADDRESS, ip));
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
    // The incomplete parts, already described, go after the conventions' own attributes.
    span_attributes.append(&mut description.span_attributes);
    exported_headers(
        context,
        HTTP_REQUEST_HEADER,
        &request.headers,
        &mut span_attributes,
    );
    if let Some(response) = &http.response {
        exported_headers(
            context,
            HTTP_RESPONSE_HEADER,
            &response.headers,
            &mut span_attributes,
        );
    }
    description.span_attributes = span_attributes;

    // The conventions name a span of an unknown method `HTTP`.
    let name_method = if method == "_OTHER" { "HTTP" } else { &method };
    description.name = match context.route {
        Some(route) => format!("{name_method} {route}"),
        None => name_method.to_owned(),
    };
    description.summary = format!("{} {}", request.method, context.route.unwrap_or("-"));
    description.outcome = status.map(|status| status.to_string());
    description.measure(
        DURATION,
        description.duration_seconds,
        metric_attributes.clone(),
    );
    if let Some(size) = request_body_size {
        description.measure(REQUEST_BODY_SIZE, size as f64, metric_attributes.clone());
    }
    if let Some(size) = response_body_size {
        description.measure(RESPONSE_BODY_SIZE, size as f64, metric_attributes);
    }
    description.error = error;
    description.traceparent = request.header_str("traceparent").map(str::to_owned);
    description.tracestate = request.header_str("tracestate").map(str::to_owned);
    description
}

/// The endpoint an HTTP exchange reached, keyed by its method and (templated) path; none when
/// the method or target could not be decoded.
pub fn endpoint(http: &HttpExchange) -> Option<EndpointIdentity> {
    let request = &http.request;
    (!request.method.is_empty() && !request.target.is_empty()).then(|| EndpointIdentity {
        protocol: "http",
        method: request.method.clone(),
        route: None,
        operation: None,
        status: http
            .response
            .as_ref()
            .map_or_else(|| "none".to_owned(), |response| response.status.to_string()),
        in_openapi: true,
    })
}

/// The values of the headers the operator chose to export, as `{prefix}.{name}` arrays.
fn exported_headers(
    context: DescribeContext<'_>,
    prefix: &str,
    headers: &[Header],
    out: &mut Vec<KeyValue>,
) {
    for name in context.settings.headers.names() {
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

#[cfg(test)]
mod tests {
    use opentelemetry::Value;

    use super::*;
    use crate::{
        calls::{DescribeSettings, HeaderAllowlist, Side},
        testing::{attribute, call, describe as described_with_defaults, header},
    };

    /// The attributes of a description's first measure, its duration: the metrics'.
    fn metric_attributes(described: &CallDescription) -> &[KeyValue] {
        &described.measures[0].attributes
    }

    #[test]
    fn server_span_attributes_follow_the_http_conventions() {
        let described = call(
            Side::Server,
            503,
            vec![
                header("host", "api.local:8443"),
                header("user-agent", "curl/8"),
            ],
        )
        .description;
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
        assert!(attribute(metric_attributes(&described), URL_PATH).is_none());
        assert!(attribute(metric_attributes(&described), SERVER_PORT).is_none());
    }

    #[test]
    fn client_errors_start_at_400_and_server_address_falls_back_to_the_socket() {
        let described = call(Side::Client, 404, Vec::new()).description;
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
            call(Side::Server, 404, Vec::new())
                .description
                .error
                .is_none()
        );
    }

    #[test]
    fn allowlisted_headers_are_exported_and_secret_ones_refused() {
        let settings = DescribeSettings {
            headers: HeaderAllowlist::new(&["X-Request-Id".into()]).unwrap(),
            content: None,
        };
        let analyzed = call(
            Side::Server,
            200,
            vec![
                header("x-request-id", "abc"),
                header("authorization", "Bearer s3cret"),
            ],
        );
        let described = analyzed.call.call.describe(DescribeContext {
            route: analyzed.route.as_deref(),
            settings: &settings,
        });
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
    fn unknown_methods_are_other() {
        let mut analyzed = call(Side::Server, 200, Vec::new());
        if let Some(http) = analyzed.call.call.exchange_mut::<HttpExchange>() {
            http.request.method = "PURGE".into();
        }
        let described = described_with_defaults(&analyzed.call.call, None);
        assert_eq!(described.name, "HTTP");
        let a = &described.span_attributes;
        assert_eq!(
            attribute(a, HTTP_REQUEST_METHOD_ORIGINAL),
            Some(&Value::from("PURGE"))
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
