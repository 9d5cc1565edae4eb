//! Connections and chunks for the decoders' unit tests.

use std::sync::Arc;

use agent_common::{Direction, Role};
use bytes::Bytes;

use crate::{
    calls::{Header, HttpBody, HttpExchange, HttpRequest, HttpResponse, http::HttpVersion},
    streams::{Connection, StreamChunk},
};

/// A connection of process 100, fd 5, with the given id and role.
pub fn connection(id: u64, role: Role) -> Arc<Connection> {
    Arc::new(Connection {
        id,
        sock: 0,
        pid: 100,
        fd: 5,
        role,
        opened_unseen: false,
        tls_client_ja4: None,
        transport: crate::streams::Transport::Tcp,
        local: None,
        peer: None,
        comm: "test".into(),
    })
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
        grpc: None,
        graphql: None,
        genai: None,
        mcp: None,
    }
}
