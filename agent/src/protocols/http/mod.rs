//! HTTP exchanges, whichever version carried them (the `http1` and `http2` decoders both
//! produce them): the types, and their description in the stable HTTP conventions
//! ([`describe`]). Header values and bodies stay in the process for analysis; exporters take
//! only what their allowlists name.

pub mod body_tail;
pub mod describe;

use std::{fmt::Debug, sync::Arc};

use bytes::Bytes;

use crate::calls::{ApiCall, CallDescription, DescribeContext, EndpointIdentity, Exchange, Layer};

/// Which body of an exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyPart {
    /// The request's.
    Request,
    /// The response's.
    Response,
}

/// A layer that must see every body byte of an exchange as the decoder reads it, because what
/// it reports cannot be read back from the bytes kept (gRPC counts its length-prefixed
/// messages): started from the request head by the HTTP layer table, fed by the HTTP/2
/// decoder, and made into the call's layer when the exchange completes.
pub trait BodyWatcher: Debug + Send {
    /// The next body bytes of `part`, and `lost` bytes after them that were not captured.
    fn on_data(&mut self, part: BodyPart, data: &[u8], lost: u64);

    /// The layer, once the exchange is complete; `request_ended` and `response_ended` tell
    /// whether each body's end was seen.
    fn finish(
        self: Box<Self>,
        exchange: &HttpExchange,
        request_ended: bool,
        response_ended: bool,
    ) -> Arc<dyn Layer>;
}

/// One header line. Names are lowercased; values are the raw bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Lowercased header name.
    pub name: HeaderName,
    /// Raw value bytes.
    pub value: Bytes,
}

/// A lowercased header name. Decoding a call must not cost an allocation per header line, so
/// well-known names are static and names received in lowercase share the received bytes; only
/// other names hold a lowercased copy.
#[derive(Clone, PartialEq, Eq)]
pub struct HeaderName(Bytes);

impl HeaderName {
    /// A name already in lowercase, kept as it is (typically a slice of the received bytes);
    /// `None` when it holds an uppercase letter.
    pub fn from_lowercase(name: Bytes) -> Option<Self> {
        (!name.iter().any(u8::is_ascii_uppercase)).then_some(Self(name))
    }

    /// The lowercased name's bytes, as received (not always UTF-8).
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl From<&str> for HeaderName {
    /// Lowercases `name`.
    fn from(name: &str) -> Self {
        match well_known(name) {
            Some(known) => Self(Bytes::from_static(known)),
            None => Self(Bytes::from(name.to_ascii_lowercase())),
        }
    }
}

impl PartialEq<&str> for HeaderName {
    fn eq(&self, other: &&str) -> bool {
        self.0 == other.as_bytes()
    }
}

impl PartialEq<String> for HeaderName {
    fn eq(&self, other: &String) -> bool {
        self.0 == other.as_bytes()
    }
}

impl std::fmt::Debug for HeaderName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&String::from_utf8_lossy(&self.0), f)
    }
}

/// The static lowercase spelling of `name` when it is one of the names most calls carry.
fn well_known(name: &str) -> Option<&'static [u8]> {
    // Lowercased on the stack: a longer name is none of these.
    let mut buffer = [0u8; 32];
    let lowered = buffer.get_mut(..name.len())?;
    lowered.copy_from_slice(name.as_bytes());
    lowered.make_ascii_lowercase();
    let lowered: &[u8] = lowered;
    // `match` on literals compiles to a switch on the length and a few comparisons.
    macro_rules! one_of {
        ($($known:literal),* $(,)?) => {
            match lowered {
                $($known => Some($known.as_slice()),)*
                _ => None,
            }
        };
    }
    one_of!(
        b"accept",
        b"accept-encoding",
        b"accept-language",
        b"accept-ranges",
        b"access-control-allow-origin",
        b"age",
        b"authorization",
        b"cache-control",
        b"connection",
        b"content-encoding",
        b"content-length",
        b"content-type",
        b"cookie",
        b"date",
        b"etag",
        b"expires",
        b"host",
        b"if-modified-since",
        b"if-none-match",
        b"keep-alive",
        b"last-modified",
        b"location",
        b"origin",
        b"pragma",
        b"referer",
        b"server",
        b"set-cookie",
        b"strict-transport-security",
        b"traceparent",
        b"tracestate",
        b"transfer-encoding",
        b"upgrade",
        b"user-agent",
        b"vary",
        b"via",
        b"x-content-type-options",
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-frame-options",
        b"x-request-id",
    )
}

/// A message body: how large it was and the first bytes of it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpBody {
    /// Payload bytes of the body (after removing chunked framing), as far as they were seen.
    pub size: u64,
    /// The first body bytes, at most the configured body cap, for later analysis.
    pub captured: Bytes,
    /// Some body bytes fell in a capture gap or past the capture cap.
    pub incomplete: bool,
    /// The last body bytes past `captured`, at most the body cap, for a response streaming
    /// events (server-sent events, JSON lines), whose last events sum it up; empty otherwise.
    pub tail: Bytes,
    /// `CLOCK_MONOTONIC` time of the syscall that carried the body's first byte; 0 when no
    /// body byte was seen. A streamed answer's time to first chunk.
    pub first_ns: u64,
}

impl HttpBody {
    /// True when some of the body was not kept: past the body cap, or lost.
    pub fn is_cut(&self) -> bool {
        self.incomplete || (self.captured.len() as u64) < self.size
    }
}

/// True when the headers announce a stream of events: `text/event-stream` or JSON lines.
/// Asked of every response head, so it compares bytes in place rather than allocating.
pub fn carries_event_stream(headers: &[Header]) -> bool {
    header(headers, "content-type").is_some_and(|header| {
        [&b"event-stream"[..], b"ndjson", b"jsonl"]
            .iter()
            .any(|kind| {
                header
                    .value
                    .windows(kind.len())
                    .any(|window| window.eq_ignore_ascii_case(kind))
            })
    })
}

/// The HTTP version an exchange travelled with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpVersion {
    /// HTTP/1.0.
    Http10,
    /// HTTP/1.1.
    Http11,
    /// HTTP/2.
    Http2,
}

impl HttpVersion {
    /// The HTTP/1 version of a start line's minor digit (`httparse` accepts only 0 and 1).
    pub fn http1(minor: u8) -> Self {
        if minor == 0 {
            Self::Http10
        } else {
            Self::Http11
        }
    }

    /// The version as the conventions' `network.protocol.version` writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http10 => "1.0",
            Self::Http11 => "1.1",
            Self::Http2 => "2",
        }
    }
}

/// A request as sent on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    /// Method token, e.g. `GET`.
    pub method: String,
    /// The request-target exactly as sent (origin form `/path?query`, or absolute form).
    pub target: String,
    /// HTTP version.
    pub version: HttpVersion,
    /// Header lines in order.
    pub headers: Vec<Header>,
    /// Trailer lines of a chunked body.
    pub trailers: Vec<Header>,
    /// The body.
    pub body: HttpBody,
}

/// A final response (1xx interim responses are not kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// HTTP version.
    pub version: HttpVersion,
    /// Status code.
    pub status: u16,
    /// Header lines in order.
    pub headers: Vec<Header>,
    /// Trailer lines of a chunked body.
    pub trailers: Vec<Header>,
    /// The body.
    pub body: HttpBody,
}

/// A request and, when seen, its final response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpExchange {
    /// The request.
    pub request: HttpRequest,
    /// The final response.
    pub response: Option<HttpResponse>,
    /// The connection switched protocols after this exchange (`101`, or a `CONNECT` tunnel):
    /// nothing after it is parsed as HTTP.
    pub upgraded: bool,
}

impl Exchange for HttpExchange {
    /// The request target's path; none when the target could not be decoded.
    fn path(&self) -> Option<&str> {
        (!self.request.target.is_empty()).then(|| self.request.path())
    }

    fn describe(&self, call: &ApiCall, context: DescribeContext<'_>) -> CallDescription {
        describe::describe(call, self, context)
    }

    fn endpoint(&self) -> Option<EndpointIdentity> {
        describe::endpoint(self)
    }
}

/// Finds a header by lowercase name.
pub fn header<'a>(headers: &'a [Header], name: &str) -> Option<&'a Header> {
    headers.iter().find(|header| header.name == name)
}

impl HttpRequest {
    /// The path of the request-target, without query or fragment; for an absolute-form target
    /// (`http://host/path`, sent to proxies) the path part.
    pub fn path(&self) -> &str {
        let target = self.target.as_str();
        // Only a target that does not start with `/` can be absolute-form: `://` later in an
        // origin-form target is part of its query (`/a?next=http://b/c`).
        let absolute = if target.starts_with('/') {
            None
        } else {
            target.find("://")
        };
        let target = match absolute {
            Some(scheme_end) => {
                let rest = &target[scheme_end + 3..];
                rest.find('/').map_or("/", |start| &rest[start..])
            }
            None => target,
        };
        let end = target.find(['?', '#']).unwrap_or(target.len());
        &target[..end]
    }

    /// The query string of the request-target, without the `?`, when there is one.
    pub fn query(&self) -> Option<&str> {
        let (_, query) = self.target.split_once('?')?;
        Some(query.split('#').next().unwrap_or(query))
    }

    /// The `Host` header split into host and port (the port when it names one). HTTP/2's
    /// `:authority` pseudo-header, kept among the headers, takes its place and wins over it.
    pub fn host(&self) -> Option<(&str, Option<u16>)> {
        let value =
            header(&self.headers, ":authority").or_else(|| header(&self.headers, "host"))?;
        let value = std::str::from_utf8(&value.value).ok()?;
        let value = value.trim();
        if value.is_empty() {
            return None;
        }
        // `[v6]:port`, `name:port`, or a bare host.
        if let Some(rest) = value.strip_prefix('[') {
            let (host, after) = rest.split_once(']')?;
            let port = after.strip_prefix(':').and_then(|port| port.parse().ok());
            return Some((host, port));
        }
        match value.rsplit_once(':') {
            Some((host, port)) if !host.contains(':') => Some((host, port.parse().ok())),
            _ => Some((value, None)),
        }
    }

    /// A header's value as text, when present and valid UTF-8.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        std::str::from_utf8(&header(&self.headers, name)?.value).ok()
    }
}

/// A `GET target` request with `headers` (lowercase names), for tests of what reads requests.
#[cfg(test)]
pub(crate) fn test_request(target: &str, headers: &[(&str, &str)]) -> HttpRequest {
    HttpRequest {
        method: "GET".into(),
        target: target.into(),
        version: HttpVersion::Http11,
        headers: headers
            .iter()
            .map(|(name, value)| Header {
                name: (*name).into(),
                value: Bytes::copy_from_slice(value.as_bytes()),
            })
            .collect(),
        trailers: Vec::new(),
        body: HttpBody::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(target: &str, host: Option<&str>) -> HttpRequest {
        HttpRequest {
            method: "GET".into(),
            target: target.into(),
            version: HttpVersion::Http11,
            headers: host
                .map(|host| Header {
                    name: "host".into(),
                    value: Bytes::copy_from_slice(host.as_bytes()),
                })
                .into_iter()
                .collect(),
            trailers: Vec::new(),
            body: HttpBody::default(),
        }
    }

    #[test]
    fn path_and_query() {
        let r = request("/a/b?x=1&y=2#frag", None);
        assert_eq!(r.path(), "/a/b");
        assert_eq!(r.query(), Some("x=1&y=2"));
        let r = request("http://example.com:8080/p?q", None);
        assert_eq!(r.path(), "/p");
        assert_eq!(r.query(), Some("q"));
        assert_eq!(request("http://example.com", None).path(), "/");
        assert_eq!(request("*", None).path(), "*");
        assert_eq!(request("/plain", None).query(), None);
        let r = request("/login?next=http://evil.example/x", None);
        assert_eq!(r.path(), "/login");
        assert_eq!(r.query(), Some("next=http://evil.example/x"));
    }

    #[test]
    fn host_header_forms() {
        assert_eq!(
            request("/", Some("api.local:8443")).host(),
            Some(("api.local", Some(8443)))
        );
        assert_eq!(
            request("/", Some("api.local")).host(),
            Some(("api.local", None))
        );
        assert_eq!(
            request("/", Some("[::1]:80")).host(),
            Some(("::1", Some(80)))
        );
        assert_eq!(request("/", Some("")).host(), None);
        assert_eq!(request("/", None).host(), None);
    }

    #[test]
    fn http2_authority_wins_over_host() {
        let mut r = request("/", Some("old.local"));
        r.headers.insert(
            0,
            Header {
                name: ":authority".into(),
                value: Bytes::from_static(b"api.local:8443"),
            },
        );
        assert_eq!(r.host(), Some(("api.local", Some(8443))));
    }
}
