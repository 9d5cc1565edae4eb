//! Builders of connections, chunks, exchanges and calls for the unit tests, the benchmarks
//! and the fuzzing harnesses: one place that knows how to make each, so that a change of a
//! type changes one builder.

use std::sync::Arc;

use agent_common::{Direction, Role};
use bytes::Bytes;

use crate::{
    analysis::AnalyzedCall,
    calls::{ApiCall, CallDescription, CallGaps, DescribeContext, DescribeSettings, Side},
    enrich::{EnrichedCall, ProcessIdentity, Workload},
    protocols::{
        grpc::GrpcCall,
        http::{Header, HttpBody, HttpExchange, HttpRequest, HttpResponse, HttpVersion},
    },
    streams::{Connection, StreamChunk, Transport},
};

/// A connection of process 100, fd 5, with the given id and role.
pub fn connection(id: u64, role: Role) -> Arc<Connection> {
    Arc::new(bare_connection(id, role))
}

/// The connection of [`connection`], not yet shared: for a test that sets more of it, as
/// `Connection { peer, ..bare_connection(1, Role::Client) }`.
pub fn bare_connection(id: u64, role: Role) -> Connection {
    Connection {
        id,
        sock: 0,
        pid: 100,
        fd: 5,
        role,
        opened_unseen: false,
        tls_client_ja4: None,
        transport: Transport::Tcp,
        local: None,
        peer: None,
        comm: "test".into(),
    }
}

/// A chunk of `connection` at `offset` that moved `len` bytes, of which `data` was captured.
pub fn chunk(
    connection: &Arc<Connection>,
    direction: Direction,
    offset: u64,
    data: &[u8],
    len: u64,
    ts_ns: u64,
) -> StreamChunk {
    StreamChunk {
        connection: Arc::clone(connection),
        direction,
        offset,
        len,
        data: Bytes::copy_from_slice(data),
        tls: false,
        gap: false,
        ts_ns,
        tid: 1,
        comm: "test".into(),
    }
}

/// An HTTP/2 frame (RFC 9113, section 4.1) of `kind` with `flags` on `stream`, carrying
/// `payload` cut to the most a frame can carry.
pub fn http2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let payload = payload
        .get(..payload.len().min(0xff_ffff))
        .unwrap_or_default();
    let len = u32::try_from(payload.len()).unwrap_or(0).to_be_bytes();
    let mut out = vec![len[1], len[2], len[3], kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A whole body holding `text`.
pub fn body(text: &str) -> HttpBody {
    HttpBody {
        size: text.len() as u64,
        captured: Bytes::copy_from_slice(text.as_bytes()),
        incomplete: false,
        tail: Bytes::new(),
        first_ns: 0,
    }
}

/// A header field.
pub fn header(name: &str, value: &str) -> Header {
    Header {
        name: name.into(),
        value: Bytes::copy_from_slice(value.as_bytes()),
    }
}

/// An HTTP/1.1 `POST` of `sent` to `target`, answered `200` with `answer`'s headers and body
/// when there is an answer: the exchange the layers found inside HTTP are read from.
pub fn post(
    target: &str,
    headers: Vec<Header>,
    sent: &str,
    answer: Option<(Vec<Header>, &str)>,
) -> HttpExchange {
    HttpExchange {
        request: HttpRequest {
            method: "POST".into(),
            target: target.into(),
            version: HttpVersion::Http11,
            headers,
            trailers: Vec::new(),
            body: body(sent),
        },
        response: answer.map(|(headers, text)| HttpResponse {
            version: HttpVersion::Http11,
            status: 200,
            headers,
            trailers: Vec::new(),
            body: body(text),
        }),
        upgraded: false,
    }
}

/// A call of `connection` carrying `exchange`, from 1 ms to 3.5 ms, with nothing missed.
pub fn api_call(connection: Arc<Connection>, side: Side, exchange: HttpExchange) -> ApiCall {
    ApiCall {
        connection,
        side,
        start_ns: 1_000_000,
        end_ns: 3_500_000,
        tls: false,
        gaps: CallGaps::default(),
        exchange: Arc::new(exchange),
        layer: None,
    }
}

/// A server or client call of `POST /users/42?api_key=s3cret` (a 12-byte body) between
/// `127.0.0.1:8080` (process 10, `srv`) and `127.0.0.1:50000`, answered `status`, with the
/// route `/users/{id}`.
pub fn call(side: Side, status: u16, headers: Vec<Header>) -> AnalyzedCall {
    let sized = |size| HttpBody {
        size,
        ..HttpBody::default()
    };
    let exchange = HttpExchange {
        request: HttpRequest {
            method: "POST".into(),
            target: "/users/42?api_key=s3cret".into(),
            version: HttpVersion::Http11,
            headers,
            trailers: Vec::new(),
            body: sized(12),
        },
        response: Some(HttpResponse {
            version: HttpVersion::Http11,
            status,
            headers: Vec::new(),
            trailers: Vec::new(),
            body: sized(0),
        }),
        upgraded: false,
    };
    let connection = Arc::new(Connection {
        id: 1,
        sock: 0,
        pid: 10,
        fd: 3,
        role: Role::Server,
        opened_unseen: false,
        tls_client_ja4: None,
        transport: Transport::Tcp,
        local: "127.0.0.1:8080".parse().ok(),
        peer: "127.0.0.1:50000".parse().ok(),
        comm: "srv".into(),
    });
    let call = EnrichedCall {
        call: api_call(connection, side, exchange),
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
    };
    let route = Some("/users/{id}".to_owned());
    let description = describe(&call.call, route.as_deref());
    AnalyzedCall {
        call,
        route,
        description,
        events: Vec::new(),
    }
}

/// `call` described with the default settings and `route`.
pub fn describe(call: &ApiCall, route: Option<&str>) -> CallDescription {
    call.describe(DescribeContext {
        route,
        settings: &DescribeSettings::default(),
    })
}

/// A gRPC call of `helloworld.Greeter/SayHello` (4 messages sent, the replies uncounted) that
/// ended with `status_code`, on [`call`]'s connection.
pub fn grpc_call(side: Side, status_code: Option<u32>) -> AnalyzedCall {
    let mut analyzed = call(side, 200, vec![header("user-agent", "grpc-python/1")]);
    if let Some(http) = analyzed.call.call.exchange_mut::<HttpExchange>() {
        http.request.target = "/helloworld.Greeter/SayHello".into();
    }
    analyzed.call.call.layer = Some(Arc::new(GrpcCall {
        service: "helloworld.Greeter".into(),
        method: "SayHello".into(),
        status_code,
        request_messages: Some(4),
        response_messages: None,
        compressed: false,
    }));
    analyzed.description = describe(&analyzed.call.call, analyzed.route.as_deref());
    analyzed
}

/// The value of attribute `key` among `attributes`.
pub fn attribute<'a>(
    attributes: &'a [opentelemetry::KeyValue],
    key: &str,
) -> Option<&'a opentelemetry::Value> {
    attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| &kv.value)
}
