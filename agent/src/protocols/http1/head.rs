//! Message heads: recognising the first line of a message, parsing a complete head with
//! `httparse`, and the body framing a head announces (RFC 9112 section 6).

use bytes::Bytes;
use httparse::{ParserConfig, Status};

use crate::protocols::http::{
    Header, HeaderName, HttpBody, HttpRequest, HttpResponse, HttpVersion, carries_event_stream,
};

/// Header lines parsed per head or trailer section; more is a parse failure.
const MAX_HEADERS: usize = 128;

/// Request-line starts recognised: a method token and the space after it. Only these methods
/// start a message, so that resynchronising on arbitrary body bytes rarely finds a false start.
const METHODS: [&[u8]; 9] = [
    b"GET ",
    b"POST ",
    b"PUT ",
    b"DELETE ",
    b"HEAD ",
    b"OPTIONS ",
    b"PATCH ",
    b"CONNECT ",
    b"TRACE ",
];

/// Status-line starts recognised.
const VERSIONS: [&[u8]; 2] = [b"HTTP/1.0 ", b"HTTP/1.1 "];

/// One of the two message kinds, so the incremental parser can be shared by both directions.
pub(super) trait Kind {
    /// The parsed head.
    type Head;

    /// The tokens a first line starts with.
    const STARTS: &'static [&'static [u8]];

    /// Whether a complete first line (ending in its line feed) is a valid start line.
    fn first_line_valid(line: &[u8]) -> bool;

    /// Parses a complete head (ending in its blank line), a slice of `source`, which the head's
    /// parts share; `None` when it is not valid.
    fn parse(source: &Bytes, head: &[u8]) -> Option<Self::Head>;

    /// Whether the message's body streams events whose last ones matter (its tail is kept).
    fn streams_events(head: &Self::Head) -> bool;
}

/// Requests (the request line starts with a method).
pub(super) struct RequestKind;

/// Responses (the status line starts with the version).
pub(super) struct ResponseKind;

impl Kind for RequestKind {
    type Head = HttpRequest;

    const STARTS: &'static [&'static [u8]] = &METHODS;

    fn first_line_valid(line: &[u8]) -> bool {
        let mut slots = [httparse::EMPTY_HEADER; 0];
        let mut request = httparse::Request::new(&mut slots);
        // The line alone leaves the header section unfinished: `Partial` means it was valid.
        config().parse_request(&mut request, line).is_ok()
    }

    fn parse(source: &Bytes, head: &[u8]) -> Option<HttpRequest> {
        let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut slots);
        if !matches!(
            config().parse_request(&mut request, head),
            Ok(Status::Complete(_))
        ) {
            return None;
        }
        Some(HttpRequest {
            method: request.method?.to_owned(),
            target: request.path?.to_owned(),
            version: HttpVersion::http1(request.version?),
            headers: headers(source, request.headers),
            trailers: Vec::new(),
            body: HttpBody::default(),
        })
    }

    fn streams_events(_: &HttpRequest) -> bool {
        false
    }
}

impl Kind for ResponseKind {
    type Head = HttpResponse;

    const STARTS: &'static [&'static [u8]] = &VERSIONS;

    fn first_line_valid(line: &[u8]) -> bool {
        let mut slots = [httparse::EMPTY_HEADER; 0];
        let mut response = httparse::Response::new(&mut slots);
        config().parse_response(&mut response, line).is_ok()
    }

    fn parse(source: &Bytes, head: &[u8]) -> Option<HttpResponse> {
        let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut slots);
        if !matches!(
            config().parse_response(&mut response, head),
            Ok(Status::Complete(_))
        ) {
            return None;
        }
        Some(HttpResponse {
            version: HttpVersion::http1(response.version?),
            status: response.code?,
            headers: headers(source, response.headers),
            trailers: Vec::new(),
            body: HttpBody::default(),
        })
    }

    fn streams_events(head: &HttpResponse) -> bool {
        carries_event_stream(&head.headers)
    }
}

/// The parser settings: an observer accepts what real peers accept rather than enforcing the
/// grammar, so the lenient options are on.
fn config() -> ParserConfig {
    let mut config = ParserConfig::default();
    config
        .allow_multiple_spaces_in_request_line_delimiters(true)
        .allow_multiple_spaces_in_response_status_delimiters(true)
        .allow_spaces_after_header_name_in_responses(true)
        .allow_obsolete_multiline_headers_in_responses(true)
        .ignore_invalid_headers_in_requests(true)
        .ignore_invalid_headers_in_responses(true);
    config
}

/// Parses a complete trailer section (ending in its blank line).
pub(super) fn parse_trailers(section: &Bytes) -> Option<Vec<Header>> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    match httparse::parse_headers(section, &mut slots) {
        Ok(Status::Complete((_, parsed))) => Some(headers(section, parsed)),
        _ => None,
    }
}

/// Parses a complete chunk-size line (ending in its line feed), extensions ignored.
pub(super) fn parse_chunk_size(line: &mut Vec<u8>) -> Option<u64> {
    // httparse reads an empty line as size 0 and wants CRLF: require a digit, accept a bare LF.
    if !line.first().is_some_and(u8::is_ascii_hexdigit) {
        return None;
    }
    if !line.ends_with(b"\r\n") {
        line.pop();
        line.extend_from_slice(b"\r\n");
    }
    match httparse::parse_chunk_size(line) {
        Ok(Status::Complete((_, size))) => Some(size),
        _ => None,
    }
}

/// Converts parsed headers, sharing `source`, the buffer they were parsed from, for the values.
fn headers(source: &Bytes, parsed: &[httparse::Header<'_>]) -> Vec<Header> {
    parsed
        .iter()
        .map(|header| Header {
            name: header_name(source, header.name),
            value: sub_bytes(source, header.value),
        })
        .collect()
}

/// A parsed header name, sharing `source` when it was sent in lowercase.
fn header_name(source: &Bytes, name: &str) -> HeaderName {
    if name.bytes().any(|byte| byte.is_ascii_uppercase()) {
        return HeaderName::from(name);
    }
    HeaderName::from_lowercase(sub_bytes(source, name.as_bytes()))
        .unwrap_or_else(|| HeaderName::from(name))
}

/// `part`, a slice of `whole`, as a `Bytes` sharing `whole`'s buffer (a copy if it is not one).
pub(super) fn sub_bytes(whole: &Bytes, part: &[u8]) -> Bytes {
    let start = part.as_ptr().addr().wrapping_sub(whole.as_ptr().addr());
    match start.checked_add(part.len()) {
        Some(end) if end <= whole.len() => whole.slice(start..end),
        _ => Bytes::copy_from_slice(part),
    }
}

/// How far some bytes match one of the start tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Prefix {
    /// They match no token.
    No,
    /// They are a proper prefix of a token: more bytes are needed to tell.
    Partial,
    /// They begin with a whole token.
    Full,
}

/// How far `first` followed by `second` matches one of `starts`.
pub(super) fn prefix(starts: &[&[u8]], first: &[u8], second: &[u8]) -> Prefix {
    let available = first.len().saturating_add(second.len());
    let mut best = Prefix::No;
    for start in starts {
        let equal = start
            .iter()
            .zip(first.iter().chain(second))
            .all(|(token, byte)| token == byte);
        if !equal {
            continue;
        }
        if available >= start.len() {
            return Prefix::Full;
        }
        best = Prefix::Partial;
    }
    best
}

/// Whether `data` begins with the start of a message of kind `K`: a whole start token, and a
/// valid start line when the line is complete.
pub(super) fn starts_message<K: Kind>(data: &[u8]) -> bool {
    let line = match data.iter().position(|byte| *byte == b'\n') {
        Some(end) => data.get(..=end).unwrap_or(data),
        None => data,
    };
    prefix(K::STARTS, line, &[]) == Prefix::Full
        && (!line.ends_with(b"\n") || K::first_line_valid(line))
}

/// What a request method means for the framing of its response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum MethodKind {
    /// `HEAD`: the response has no body whatever its headers say.
    Head,
    /// `CONNECT`: a 2xx response turns the connection into a tunnel.
    Connect,
    /// Anything else.
    Other,
}

impl MethodKind {
    /// The kind of `method`.
    pub(super) fn of(method: &str) -> Self {
        match method {
            "HEAD" => Self::Head,
            "CONNECT" => Self::Connect,
            _ => Self::Other,
        }
    }
}

/// How the body of a message is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    /// No body: the message ends with its head.
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Everything up to the end of the connection.
    UntilClose,
    /// The connection switches protocols after the head (`101`, or a `CONNECT` tunnel).
    Switch,
    /// The framing headers make no sense: the message boundaries are lost.
    Invalid,
}

/// The framing of a request body: requests have a body only when they announce one.
pub(super) fn request_framing(headers: &[Header]) -> Framing {
    match transfer_chunked(headers) {
        Some(true) => Framing::Chunked,
        // A request whose last coding is not chunked has no knowable length (RFC 9112 6.3).
        Some(false) => Framing::Invalid,
        None => match content_length(headers) {
            Length::Absent | Length::Known(0) => Framing::Empty,
            Length::Known(length) => Framing::Length(length),
            Length::Invalid => Framing::Invalid,
        },
    }
}

/// The framing of a response body, which depends on the request it answers.
pub(super) fn response_framing(method: MethodKind, status: u16, headers: &[Header]) -> Framing {
    if status == 101 || (method == MethodKind::Connect && (200..300).contains(&status)) {
        return Framing::Switch;
    }
    if method == MethodKind::Head || (100..200).contains(&status) || status == 204 || status == 304
    {
        return Framing::Empty;
    }
    match transfer_chunked(headers) {
        Some(true) => Framing::Chunked,
        Some(false) => Framing::UntilClose,
        None => match content_length(headers) {
            Length::Absent => Framing::UntilClose,
            Length::Known(0) => Framing::Empty,
            Length::Known(length) => Framing::Length(length),
            Length::Invalid => Framing::Invalid,
        },
    }
}

/// Whether the status is an interim (1xx) response other than `101`, which is final.
pub(super) fn is_interim(status: u16) -> bool {
    (100..200).contains(&status) && status != 101
}

/// `Some(true)` when the last transfer coding is chunked, `Some(false)` for another coding,
/// `None` without `Transfer-Encoding`.
fn transfer_chunked(headers: &[Header]) -> Option<bool> {
    let last = headers
        .iter()
        .rev()
        .find(|header| header.name == "transfer-encoding")?;
    let coding = last
        .value
        .rsplit(|byte| *byte == b',')
        .next()
        .unwrap_or(&[]);
    Some(coding.trim_ascii().eq_ignore_ascii_case(b"chunked"))
}

/// What the `Content-Length` headers say.
enum Length {
    Absent,
    Known(u64),
    /// Not a number, or differing values.
    Invalid,
}

fn content_length(headers: &[Header]) -> Length {
    let mut found = None;
    let values = headers
        .iter()
        .filter(|header| header.name == "content-length")
        .flat_map(|header| header.value.split(|byte| *byte == b','));
    for value in values {
        let Some(length) = parse_decimal(value.trim_ascii()) else {
            return Length::Invalid;
        };
        if found.is_some_and(|previous| previous != length) {
            return Length::Invalid;
        }
        found = Some(length);
    }
    found.map_or(Length::Absent, Length::Known)
}

fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |value, digit| {
        if !digit.is_ascii_digit() {
            return None;
        }
        value.checked_mul(10)?.checked_add(u64::from(digit - b'0'))
    })
}
