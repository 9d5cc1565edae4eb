//! Injection payloads in API requests (OWASP API Top 10 signals: API8 injection, API7 SSRF):
//! which class of payload a request carries, and where, never the value.
//!
//! SQL injection and XSS are found by libinjection (the `libinjectionrs` port: tokenisation and
//! fingerprints, not keyword lists, which is what keeps "select a plan" and "O'Reilly" quiet),
//! with a few patterns for XSS vectors outside HTML. Command injection and path traversal are
//! patterns over shell and path syntax (one `RegexSet` pass), SSRF is URL parsing and the standard
//! library's address ranges. Every value is first decoded in bounded rounds (percent-encoding,
//! HTML references, `\u` escapes, NFKC), and the evidence names what had to be undone.
//!
//! The input comes from arbitrary programs, so everything is bounded: bytes per value and per
//! request, JSON depth and nodes, decoding rounds, matches per request (and one per class and
//! location). Nothing here panics on input.
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod decode;
mod patterns;
mod ssrf_targets;
#[cfg(test)]
mod tests;

use std::{borrow::Cow, sync::Arc};

use serde_json::Value;

use super::{
    family::{CallContext, Claimed, DetectorFamily, claim},
    finding::Finding,
    rules::{Matcher, Rule},
};
use decode::Encodings;
use patterns::Rules;

/// Bytes of one value that are scanned; the rest is ignored.
const MAX_VALUE_BYTES: usize = 8 * 1024;
/// Bytes scanned per request, over all its values.
const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// Matches one request adds; once reached, the scan stops.
const MAX_MATCHES: usize = 32;
/// JSON nesting followed; deeper values are not visited.
const MAX_DEPTH: usize = 32;
/// JSON values (keys included) visited per body.
const MAX_NODES: usize = 4096;
/// Bytes of a match's location.
const MAX_LOCATION: usize = 256;
/// JSON bodies larger than this are scanned as text instead of parsed: parsing is linear, but
/// the whole tree would be held for the first 64 KiB that are scanned.
const MAX_JSON_BODY: usize = 1024 * 1024;

/// Headers never scanned: protocol machinery, credentials and tracing ids, which carry no input
/// an application interprets (and, for credentials, random tokens that only add false
/// positives). Everything else is scanned, `user-agent`, `referer` and `cookie` included:
/// injection through them is common (Shellshock came in `user-agent`).
const SKIPPED_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "x-api-key",
    "content-type",
    "content-length",
    "content-encoding",
    "content-md5",
    "transfer-encoding",
    "host",
    "connection",
    "keep-alive",
    "upgrade",
    "upgrade-insecure-requests",
    "te",
    "trailer",
    "cache-control",
    "pragma",
    "range",
    "date",
    "expect",
    "dnt",
    "priority",
    "traceparent",
    "tracestate",
    "baggage",
    "b3",
    "x-request-id",
    "x-correlation-id",
    "x-amzn-trace-id",
    "x-csrf-token",
    "x-xsrf-token",
];
/// Header name prefixes never scanned (`accept-language`, `if-none-match`, `sec-fetch-mode`).
const SKIPPED_HEADER_PREFIXES: &[&str] = &["accept", "if-", "sec-", "x-b3-", "grpc-", ":"];
/// Headers whose value is an address by design: proxies put internal addresses there, so they
/// are scanned for every class but SSRF.
const ADDRESS_HEADERS: &[&str] = &[
    "forwarded",
    "via",
    "referer",
    "origin",
    "x-real-ip",
    "x-client-ip",
    "true-client-ip",
    "cf-connecting-ip",
];

/// A class of injection payload.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum InjectionClass {
    /// SQL injection.
    Sqli,
    /// Cross-site scripting: markup or script that a page may render.
    Xss,
    /// OS command injection: shell syntax that chains or substitutes commands.
    CommandInjection,
    /// Path traversal and file inclusion: `../`, sensitive absolute paths, NUL truncation.
    PathTraversal,
    /// Server-side request forgery: a URL or host naming an internal address or a file scheme.
    Ssrf,
}

impl InjectionClass {
    /// Every class, in order.
    pub const ALL: [Self; 5] = [
        Self::Sqli,
        Self::Xss,
        Self::CommandInjection,
        Self::PathTraversal,
        Self::Ssrf,
    ];

    /// The class's name, as serde writes it (`command_injection`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Sqli => "sqli",
            Self::Xss => "xss",
            Self::CommandInjection => "command_injection",
            Self::PathTraversal => "path_traversal",
            Self::Ssrf => "ssrf",
        }
    }
}

/// One match: never the matched value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InjectionMatch {
    /// The class of payload.
    pub class: InjectionClass,
    /// Where: `path`, `query:NAME`, `header:NAME`, `body` + RFC 6901 JSON pointer
    /// (`body/user/name`), `body/FIELD` for forms; bounded to 256 bytes.
    pub location: String,
    /// What matched, redacted: the detector and its rule or fingerprint
    /// (`libinjection sqli fingerprint s&1c`, `pattern unix-command-chain`, `ssrf loopback`),
    /// followed by `; encoding url+html` when the payload was only visible once decoded.
    pub evidence: String,
    /// For SSRF: the host (lowercased; IP literal or name) and port (explicit, else the scheme's
    /// default) the URL names, so the caller can later see whether the server connected there.
    /// Kept in process only. `None` for other classes, and for SSRF through a scheme without a
    /// network host (`file:///etc/passwd`).
    pub target: Option<(String, Option<u16>)>,
}

/// How a value is encoded in the place it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    /// As is (headers, JSON strings, text bodies, values handed to [`InjectionDetector::scan_value`]).
    Plain,
    /// Percent-encoded by the protocol (path, query, form fields): that one decoding is not
    /// evasion, so it is not reported as an encoding undone. `plus` decodes `+` as a space.
    UrlEncoded { plus: bool },
}

/// Which classes a value is scanned for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// Every class.
    All,
    /// Every class but SSRF (addresses by design, JSON keys).
    NoSsrf,
    /// Path traversal only (the whole request path, after its segments were scanned).
    TraversalOnly,
}

impl Scope {
    fn allows(self, class: InjectionClass) -> bool {
        match self {
            Self::All => true,
            Self::NoSsrf => class != InjectionClass::Ssrf,
            Self::TraversalOnly => class == InjectionClass::PathTraversal,
        }
    }
}

/// What a request has left to spend: bytes to scan, and where its matches start in `out` (for
/// the cap) and where duplicates are looked for.
struct Budget {
    bytes: usize,
    start: usize,
    dedupe_from: usize,
}

/// Finds injection payloads in request parts; built once (compiles its patterns), shared,
/// `Send + Sync`.
pub struct InjectionDetector {
    rules: Rules,
}

impl Default for InjectionDetector {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for InjectionDetector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InjectionDetector").finish_non_exhaustive()
    }
}

impl InjectionDetector {
    /// A detector with every rule compiled.
    pub fn new() -> Self {
        Self {
            rules: Rules::new(),
        }
    }

    /// Scans one value found at `location` (as is: it is decoded here, but `+` stays a plus),
    /// adding at most one match per class, and none for a class `out` already has at
    /// `location`.
    pub fn scan_value(&self, value: &str, location: &str, out: &mut Vec<InjectionMatch>) {
        let mut budget = Budget {
            bytes: MAX_VALUE_BYTES,
            start: out.len(),
            dedupe_from: 0,
        };
        self.scan(
            value,
            location,
            Transport::Plain,
            Scope::All,
            &mut budget,
            out,
        );
    }

    /// Scans a request: its path segments (as `path`, and the whole path for traversal), each
    /// query parameter value (`query:NAME`; a parameter without `=` as `query`), the values of
    /// headers other than [`SKIPPED_HEADERS`] (`header:NAME`; each cookie as `header:cookie`),
    /// and the body: JSON walked value by value, keys included (`body` + JSON pointer),
    /// `application/x-www-form-urlencoded` field by field (`body/FIELD`), other text as text
    /// (`body`); binary bodies are skipped. `target` is the request-target as sent, origin or
    /// absolute form; header names are lowercase. At most 32 matches are added.
    pub fn scan_request(
        &self,
        target: &str,
        headers: &[(&str, &[u8])],
        body: &[u8],
        content_type: Option<&str>,
        out: &mut Vec<InjectionMatch>,
    ) {
        let mut budget = Budget {
            bytes: MAX_REQUEST_BYTES,
            start: out.len(),
            dedupe_from: out.len(),
        };
        let (path, query) = split_target(target);
        let path_encoding = Transport::UrlEncoded { plus: false };
        for segment in path.split('/').filter(|segment| !segment.is_empty()) {
            self.scan(segment, "path", path_encoding, Scope::All, &mut budget, out);
        }
        self.scan(
            path,
            "path",
            path_encoding,
            Scope::TraversalOnly,
            &mut budget,
            out,
        );
        if let Some(query) = query {
            self.scan_pairs(query, "query:", "query", &mut budget, out);
        }
        for (name, value) in headers {
            if skipped_header(name) {
                continue;
            }
            let value = String::from_utf8_lossy(value);
            if *name == "cookie" {
                for cookie in value.split(';') {
                    let value = cookie.split_once('=').map_or(cookie, |(_, value)| value);
                    self.scan(
                        value,
                        "header:cookie",
                        Transport::Plain,
                        Scope::All,
                        &mut budget,
                        out,
                    );
                }
                continue;
            }
            let scope = if address_header(name) {
                Scope::NoSsrf
            } else {
                Scope::All
            };
            let location = format!("header:{name}");
            self.scan(&value, &location, Transport::Plain, scope, &mut budget, out);
        }
        self.scan_body(body, content_type, &mut budget, out);
    }

    /// Scans `name=value&...` pairs (a query string or a form body), each value at
    /// `prefix` + its decoded name.
    fn scan_pairs(
        &self,
        pairs: &str,
        prefix: &str,
        nameless: &str,
        budget: &mut Budget,
        out: &mut Vec<InjectionMatch>,
    ) {
        let encoding = Transport::UrlEncoded { plus: true };
        for pair in pairs.split('&').filter(|pair| !pair.is_empty()) {
            if exhausted(budget, out) {
                return;
            }
            match pair.split_once('=') {
                Some((name, value)) => {
                    let name = bounded(name, MAX_LOCATION);
                    let name = decode::percent_decode(name, true)
                        .map_or(Cow::Borrowed(name), |(name, _)| Cow::Owned(name));
                    let location = format!("{prefix}{name}");
                    self.scan(value, &location, encoding, Scope::All, budget, out);
                }
                None => self.scan(pair, nameless, encoding, Scope::All, budget, out),
            }
        }
    }

    /// Scans a body by its content type (sniffed when there is none).
    fn scan_body(
        &self,
        body: &[u8],
        content_type: Option<&str>,
        budget: &mut Budget,
        out: &mut Vec<InjectionMatch>,
    ) {
        if body.is_empty() {
            return;
        }
        match body_kind(body, content_type) {
            BodyKind::Json => {
                let parsed = (body.len() <= MAX_JSON_BODY)
                    .then(|| serde_json::from_slice::<Value>(body).ok())
                    .flatten();
                match parsed {
                    Some(json) => self.scan_json(&json, budget, out),
                    // Not JSON after all (or too large to parse): still text a server may read.
                    None => self.scan_text(body, budget, out),
                }
            }
            BodyKind::Form => {
                let text = String::from_utf8_lossy(body.get(..MAX_REQUEST_BYTES).unwrap_or(body));
                self.scan_pairs(&text, "body/", "body", budget, out);
            }
            BodyKind::Text => self.scan_text(body, budget, out),
            BodyKind::Binary => {}
        }
    }

    /// Scans a text body in value-sized chunks, as `body`.
    fn scan_text(&self, body: &[u8], budget: &mut Budget, out: &mut Vec<InjectionMatch>) {
        let text = String::from_utf8_lossy(body.get(..MAX_REQUEST_BYTES).unwrap_or(body));
        let mut rest = text.as_ref();
        while !rest.is_empty() && !exhausted(budget, out) {
            let chunk = bounded(rest, MAX_VALUE_BYTES);
            self.scan(chunk, "body", Transport::Plain, Scope::All, budget, out);
            rest = rest.get(chunk.len()..).unwrap_or_default();
            if chunk.is_empty() {
                break;
            }
        }
    }

    /// Walks a JSON body depth-first in document order, scanning strings and keys.
    fn scan_json(&self, json: &Value, budget: &mut Budget, out: &mut Vec<InjectionMatch>) {
        let mut stack: Vec<(String, &Value, usize)> = vec![("body".to_owned(), json, 0)];
        let mut nodes = 0;
        while let Some((pointer, value, depth)) = stack.pop() {
            nodes += 1;
            if nodes > MAX_NODES || exhausted(budget, out) {
                return;
            }
            match value {
                Value::String(text) => {
                    self.scan(text, &pointer, Transport::Plain, Scope::All, budget, out);
                }
                Value::Object(members) if depth < MAX_DEPTH => {
                    let first_child = stack.len();
                    for (key, child) in members {
                        if nodes > MAX_NODES {
                            break;
                        }
                        let child_pointer = pointer_child(&pointer, key);
                        self.scan(
                            key,
                            &child_pointer,
                            Transport::Plain,
                            Scope::NoSsrf,
                            budget,
                            out,
                        );
                        nodes += 1;
                        stack.push((child_pointer, child, depth + 1));
                    }
                    stack.get_mut(first_child..).unwrap_or_default().reverse();
                }
                Value::Array(items) if depth < MAX_DEPTH => {
                    let first_child = stack.len();
                    for (index, child) in items.iter().enumerate().take(MAX_NODES) {
                        stack.push((
                            pointer_child(&pointer, &index.to_string()),
                            child,
                            depth + 1,
                        ));
                    }
                    stack.get_mut(first_child..).unwrap_or_default().reverse();
                }
                // Numbers, booleans and null carry no payload; deeper nesting is not followed.
                _ => {}
            }
        }
    }

    /// Scans one value: as found (after the transport's own decoding), then with every
    /// encoding undone, for the classes `scope` allows.
    fn scan(
        &self,
        value: &str,
        location: &str,
        transport: Transport,
        scope: Scope,
        budget: &mut Budget,
        out: &mut Vec<InjectionMatch>,
    ) {
        if value.is_empty() || exhausted(budget, out) {
            return;
        }
        let value = bounded(value, MAX_VALUE_BYTES.min(budget.bytes));
        budget.bytes = budget.bytes.saturating_sub(value.len().max(1));
        let (base, base_encodings) = match transport {
            Transport::UrlEncoded { plus } => match decode::percent_decode(value, plus) {
                Some((decoded, extra)) => (Cow::Owned(decoded), extra),
                None => (Cow::Borrowed(value), Encodings::default()),
            },
            Transport::Plain => (Cow::Borrowed(value), Encodings::default()),
        };
        let location = bounded(location, MAX_LOCATION);
        let mut found: Vec<InjectionMatch> = Vec::new();
        self.detect(&base, base_encodings, scope, location, &mut found);
        if found.len() < InjectionClass::ALL.len()
            && let Some((decoded, mut encodings)) = decode::decode(&base)
        {
            encodings.insert(base_encodings);
            self.detect(&decoded, encodings, scope, location, &mut found);
        }
        for found in found {
            let already = out
                .get(budget.dedupe_from..)
                .unwrap_or_default()
                .iter()
                .any(|known| known.class == found.class && known.location == found.location);
            if !already && !exhausted(budget, out) {
                out.push(found);
            }
        }
    }

    /// Runs every detector on `text`, adding a match for each class `scope` allows that is not
    /// in `found` yet.
    fn detect(
        &self,
        text: &str,
        encodings: Encodings,
        scope: Scope,
        location: &str,
        found: &mut Vec<InjectionMatch>,
    ) {
        if text.trim().is_empty() {
            return;
        }
        let wanted = |class: InjectionClass, found: &Vec<InjectionMatch>| {
            scope.allows(class) && !found.iter().any(|known| known.class == class)
        };
        let add = |class, evidence: String, target, found: &mut Vec<InjectionMatch>| {
            let evidence = if encodings.is_empty() {
                evidence
            } else {
                format!("{evidence}; encoding {}", encodings.names())
            };
            found.push(InjectionMatch {
                class,
                location: location.to_owned(),
                evidence,
                target,
            });
        };
        // One bare word (letters, digits, `_`, `-`) is one SQL token and no markup: libinjection
        // cannot find anything in it, and most values are such words (ids, names, enums).
        let bare_word = text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !bare_word && wanted(InjectionClass::Sqli, found) {
            let sqli = libinjectionrs::detect_sqli(text.as_bytes());
            if sqli.is_injection() {
                let fingerprint = sqli.fingerprint.as_ref().map_or("", |fp| fp.as_str());
                let evidence = format!("libinjection sqli fingerprint {fingerprint}");
                add(InjectionClass::Sqli, evidence, None, found);
            }
        }
        if !bare_word
            && wanted(InjectionClass::Xss, found)
            && libinjectionrs::detect_xss(text.as_bytes()).is_injection()
        {
            add(
                InjectionClass::Xss,
                "libinjection xss".to_owned(),
                None,
                found,
            );
        }
        let lowercased = text.to_ascii_lowercase();
        let mut hits: Vec<(InjectionClass, &'static str)> = Vec::new();
        self.rules
            .matches(&lowercased, |class, name| hits.push((class, name)));
        for (class, name) in hits {
            if wanted(class, found) {
                add(class, format!("pattern {name}"), None, found);
            }
        }
        if wanted(InjectionClass::Ssrf, found)
            && let Some(ssrf) = ssrf_targets::check(text)
        {
            add(
                InjectionClass::Ssrf,
                format!("ssrf {}", ssrf.rule),
                ssrf.target,
                found,
            );
        }
    }
}

/// The `injection` rules: each raises the first match of its classes in a served request.
#[derive(Debug, Default)]
pub(super) struct InjectionFamily {
    /// Each rule with the classes it raises.
    rules: Vec<Claimed<Vec<InjectionClass>>>,
}

impl DetectorFamily for InjectionFamily {
    fn adopt(&mut self, rules: &[Arc<Rule>]) -> bool {
        self.rules = claim(rules, |matcher| match matcher {
            Matcher::Injection(params) => Some(params.classes.clone()),
            _ => None,
        });
        !self.rules.is_empty()
    }

    fn judge(&mut self, context: &CallContext<'_>, findings: &mut Vec<Finding>) {
        let Some(served) = context.served() else {
            return;
        };
        let found = served.injections();
        for rule in &self.rules {
            if let Some(found) = found.iter().find(|found| rule.check.contains(&found.class)) {
                findings.push(rule.finding(
                    served.subject(),
                    found.location.clone(),
                    found.evidence.clone(),
                ));
            }
        }
    }
}

/// Whether the request has no bytes or matches left.
fn exhausted(budget: &Budget, out: &[InjectionMatch]) -> bool {
    budget.bytes == 0 || out.len().saturating_sub(budget.start) >= MAX_MATCHES
}

/// The longest prefix of `text` of at most `max` bytes that ends on a character boundary.
fn bounded(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.get(..end).unwrap_or_default()
}

/// The path and query of a request-target, origin (`/p?q`) or absolute (`http://h/p?q`) form.
fn split_target(target: &str) -> (&str, Option<&str>) {
    let target = match target.find("://") {
        Some(at) if !target.starts_with('/') => {
            let after = target.get(at + 3..).unwrap_or_default();
            after
                .find(['/', '?'])
                .map_or("", |slash| after.get(slash..).unwrap_or_default())
        }
        _ => target,
    };
    match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    }
}

fn skipped_header(name: &str) -> bool {
    SKIPPED_HEADERS.contains(&name)
        || SKIPPED_HEADER_PREFIXES
            .iter()
            .any(|prefix| name.starts_with(prefix))
}

fn address_header(name: &str) -> bool {
    ADDRESS_HEADERS.contains(&name) || name.starts_with("x-forwarded-")
}

/// `pointer/key` with the key escaped as RFC 6901 says (`~` as `~0`, `/` as `~1`), bounded.
fn pointer_child(pointer: &str, key: &str) -> String {
    let mut child = String::with_capacity(pointer.len() + key.len() + 1);
    child.push_str(pointer);
    child.push('/');
    for c in key.chars() {
        if child.len() >= MAX_LOCATION {
            break;
        }
        match c {
            '~' => child.push_str("~0"),
            '/' => child.push_str("~1"),
            c => child.push(c),
        }
    }
    bounded(&child, MAX_LOCATION).to_owned()
}

/// How a body is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyKind {
    Json,
    Form,
    Text,
    Binary,
}

/// The body's kind from its media type, or from its first bytes when it has none.
fn body_kind(body: &[u8], content_type: Option<&str>) -> BodyKind {
    let Some(content_type) = content_type else {
        let first = body.iter().find(|b| !b.is_ascii_whitespace());
        if matches!(first, Some(b'{' | b'[')) {
            return BodyKind::Json;
        }
        let prefix = body.get(..MAX_VALUE_BYTES).unwrap_or(body);
        // A multi-byte character cut at the end of the prefix is still text.
        let text = match std::str::from_utf8(prefix) {
            Ok(_) => true,
            Err(error) => error.error_len().is_none(),
        };
        return if text && !prefix.contains(&0) {
            BodyKind::Text
        } else {
            BodyKind::Binary
        };
    };
    let media = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if media.contains("json") {
        BodyKind::Json
    } else if media == "application/x-www-form-urlencoded" {
        BodyKind::Form
    } else if media.starts_with("text/")
        || [
            "xml",
            "javascript",
            "graphql",
            "yaml",
            "multipart/form-data",
            "csv",
        ]
        .iter()
        .any(|kind| media.contains(kind))
    {
        BodyKind::Text
    } else {
        BodyKind::Binary
    }
}
