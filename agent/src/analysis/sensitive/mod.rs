//! Sensitive data in API traffic: which classes of personal data and credentials a message
//! carries, and where, never what.
//!
//! Candidates are found by regular expressions (one [`RegexSet`] pass says which could be
//! there) and then confirmed the way each class allows: Luhn and issuer ranges for payment
//! cards, the ISO 13616 checksum for IBANs, the SSA's invalid ranges for SSNs, the decoded
//! header for JWTs, field names for passwords and AWS secret keys. The input comes from
//! arbitrary programs, so every call is bounded: bytes scanned, JSON depth and nodes, findings.

mod confirm;
mod field_names;
mod patterns;
mod recent;
#[cfg(test)]
mod tests;

use std::cell::RefCell;

use regex::{Regex, RegexSet};
use serde_json::{Map, Value};

pub use self::confirm::is_jwt_token;
use self::{
    field_names::{named_classes, named_pairs, pair_values},
    patterns::{PAIR_PATTERN, RULES, Rule},
    recent::RecentVerdicts,
};

/// Bytes of one text or body that are scanned; the rest is ignored.
const MAX_SCAN_BYTES: usize = 64 * 1024;
/// JSON nesting followed; deeper values are not visited.
const MAX_DEPTH: usize = 32;
/// JSON values (or form fields, or `name: value` pairs in a text) visited per call.
const MAX_NODES: usize = 4096;
/// Findings one call adds; once reached, the call stops.
const MAX_FINDINGS: usize = 64;
/// Bytes of a finding's location.
const MAX_LOCATION: usize = 256;
/// Candidates of one pattern checked per text, so near-misses cannot add up.
const MAX_CANDIDATES: usize = 256;
/// Characters of a field name that are read to judge it.
const MAX_NAME: usize = 128;
/// The shortest text any pattern matches (`a@b.co`): shorter ones skip the regexes.
const MIN_PATTERN_LEN: usize = 6;
/// Bytes of a JWT's first segment decoded: real headers are far smaller.
const MAX_JWT_HEADER: usize = 4096;
/// The JSON pointer segment standing for a key that is itself sensitive, so the location does
/// not carry it.
const REDACTED_KEY: &str = "*";

/// A class of sensitive data.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum SensitiveClass {
    /// An e-mail address.
    Email,
    /// A payment card number (PAN).
    PaymentCard,
    /// An International Bank Account Number.
    Iban,
    /// A telephone number.
    Phone,
    /// A US Social Security Number.
    UsSsn,
    /// A JSON Web Token.
    Jwt,
    /// A PEM private key.
    PrivateKey,
    /// An AWS access key id.
    AwsAccessKey,
    /// An AWS secret access key.
    AwsSecretKey,
    /// A Google Cloud API key.
    GcpApiKey,
    /// A Google Cloud service-account key file.
    GcpServiceAccount,
    /// A GitHub token.
    GithubToken,
    /// A Slack token or incoming-webhook URL.
    SlackToken,
    /// A Stripe API or webhook key.
    StripeKey,
    /// An OpenAI API key.
    OpenaiKey,
    /// An Anthropic API key.
    AnthropicKey,
    /// A value whose field name says it is a password or secret.
    Password,
}

impl SensitiveClass {
    /// Every class, in order.
    pub const ALL: [Self; 17] = [
        Self::Email,
        Self::PaymentCard,
        Self::Iban,
        Self::Phone,
        Self::UsSsn,
        Self::Jwt,
        Self::PrivateKey,
        Self::AwsAccessKey,
        Self::AwsSecretKey,
        Self::GcpApiKey,
        Self::GcpServiceAccount,
        Self::GithubToken,
        Self::SlackToken,
        Self::StripeKey,
        Self::OpenaiKey,
        Self::AnthropicKey,
        Self::Password,
    ];

    /// The class's name, as serde writes it (`payment_card`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Email => "email",
            Self::PaymentCard => "payment_card",
            Self::Iban => "iban",
            Self::Phone => "phone",
            Self::UsSsn => "us_ssn",
            Self::Jwt => "jwt",
            Self::PrivateKey => "private_key",
            Self::AwsAccessKey => "aws_access_key",
            Self::AwsSecretKey => "aws_secret_key",
            Self::GcpApiKey => "gcp_api_key",
            Self::GcpServiceAccount => "gcp_service_account",
            Self::GithubToken => "github_token",
            Self::SlackToken => "slack_token",
            Self::StripeKey => "stripe_key",
            Self::OpenaiKey => "openai_key",
            Self::AnthropicKey => "anthropic_key",
            Self::Password => "password",
        }
    }
}

/// One finding: a class and where it was, never the value.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Finding {
    /// What was found.
    pub class: SensitiveClass,
    /// Where: the caller's location for texts and named values (`header:x-api-key`), `body`
    /// for a body read as text, `body` + the RFC 6901 pointer of the value for JSON
    /// (`body/users/0/email`), `body/` + the field for forms; at most 256 bytes.
    pub location: String,
}

thread_local! {
    /// The stream thread's recent verdicts (see [`recent`]).
    static RECENT: RefCell<RecentVerdicts> = RefCell::new(RecentVerdicts::default());
}

/// Finds sensitive data in message parts; built once, shared by every call.
#[derive(Debug)]
pub struct SensitiveScanner {
    /// Every rule's pattern, then [`PAIR_PATTERN`].
    set: RegexSet,
    rules: Vec<(Rule, Regex)>,
    pairs: Regex,
}

impl Default for SensitiveScanner {
    fn default() -> Self {
        Self::new()
    }
}

impl SensitiveScanner {
    /// A scanner with every pattern compiled.
    #[expect(
        clippy::expect_used,
        reason = "built-in patterns, compiled by the unit tests; no input reaches them"
    )]
    pub fn new() -> Self {
        let patterns = RULES.iter().map(|(_, pattern)| *pattern);
        let set =
            RegexSet::new(patterns.chain([PAIR_PATTERN])).expect("the built-in patterns compile");
        let rules = RULES
            .iter()
            .map(|(rule, pattern)| {
                (
                    *rule,
                    Regex::new(pattern).expect("the built-in patterns compile"),
                )
            })
            .collect();
        let pairs = Regex::new(PAIR_PATTERN).expect("the built-in patterns compile");
        Self { set, rules, pairs }
    }

    /// Scans a free-text value (header value, query value, path) found at `location`, e.g.
    /// `header:x-api-key`, `query:card`, `path`. A finding already in `out` is not added again.
    pub fn scan_text(&self, text: &str, location: &str, out: &mut Vec<Finding>) {
        Sink::new(out).add(self.classes_in(text), location);
    }

    /// Scans a header's value; its location, `header:<name>`, is only written when something is
    /// found (most headers of most calls carry nothing).
    pub fn scan_header(&self, name: &str, value: &str, out: &mut Vec<Finding>) {
        let found = self.classes_in(value);
        if !found.is_empty() {
            Sink::new(out).add(found, &format!("header:{name}"));
        }
    }

    /// Scans a named value (query parameter, form field): its name may make it a password, an
    /// AWS secret key or a phone number, besides what the value itself shows.
    pub fn scan_named(&self, name: &str, value: &str, location: &str, out: &mut Vec<Finding>) {
        let value = capped(value, MAX_SCAN_BYTES);
        let mut found = self.classes_in(value);
        named_classes(name, value, &mut found);
        Sink::new(out).add(found, location);
    }

    /// Scans a body. JSON (a content type naming `json`, or bytes starting with `{` or `[`)
    /// is walked value by value, each finding located by the JSON pointer of its value after
    /// `body`; a form (`application/x-www-form-urlencoded`) is read field by field
    /// (`body/password`); anything else, and JSON that does not parse (a body cut by the
    /// capture cap), is scanned as text at `body`. Images, audio, video and fonts are skipped.
    pub fn scan_body(&self, body: &[u8], content_type: Option<&str>, out: &mut Vec<Finding>) {
        let body = body.get(..MAX_SCAN_BYTES).unwrap_or(body);
        let mut sink = Sink::new(out);
        match BodyKind::of(body, content_type) {
            BodyKind::Media => {}
            BodyKind::Form => self.scan_form(body, &mut sink),
            BodyKind::Json => match serde_json::from_slice::<Value>(body) {
                Ok(value) => JsonWalk::new(self, sink).visit(&value, None, 0),
                // Cut by the capture cap, or not JSON after all.
                Err(_) => self.scan_body_text(body, &mut sink),
            },
            BodyKind::Text => self.scan_body_text(body, &mut sink),
        }
    }

    fn scan_body_text(&self, body: &[u8], sink: &mut Sink<'_>) {
        sink.add(self.classes_in(&String::from_utf8_lossy(body)), "body");
    }

    fn scan_form(&self, body: &[u8], sink: &mut Sink<'_>) {
        for (name, value) in form_urlencoded::parse(body).take(MAX_NODES) {
            if sink.full() {
                return;
            }
            let mut location = String::from("body");
            let (segment, key_classes) = self.key_segment(&name);
            push_segment(&mut location, segment);
            sink.add(key_classes, &location);
            let mut found = self.classes_in(&value);
            named_classes(&name, &value, &mut found);
            sink.add(found, &location);
        }
    }

    /// The pointer segment of a key: the key itself, or [`REDACTED_KEY`] with what it shows
    /// when the key is sensitive data (a map keyed by e-mail addresses).
    fn key_segment<'k>(&self, key: &'k str) -> (&'k str, ClassSet) {
        let classes = self.classes_in(key);
        if classes.is_empty() {
            (key, classes)
        } else {
            (REDACTED_KEY, classes)
        }
    }

    /// The classes a text shows by its content alone (and by `name: value` pairs within it).
    /// `text` with every value the scan would report replaced by `[REDACTED:<class>]`, the
    /// values of named pairs (`password: hunter2`) included; text past the scan limit is
    /// dropped. For content an operator chose to export.
    pub fn redact(&self, text: &str) -> String {
        let text = capped(text, MAX_SCAN_BYTES);
        let mut cuts: Vec<(usize, usize, SensitiveClass)> = Vec::new();
        for index in self.set.matches(text).iter() {
            match self.rules.get(index) {
                Some((rule, regex)) => cuts.extend(
                    regex
                        .find_iter(text)
                        .take(MAX_CANDIDATES)
                        .filter(|candidate| rule.accepts(text, *candidate))
                        .map(|candidate| (candidate.start(), candidate.end(), rule.class())),
                ),
                None => pair_values(&self.pairs, text, &mut cuts),
            }
        }
        cuts.sort_unstable_by_key(|(start, end, _)| (*start, std::cmp::Reverse(*end)));
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        for (start, end, class) in cuts {
            if end <= at {
                continue;
            }
            out.push_str(text.get(at..start.max(at)).unwrap_or_default());
            out.push_str("[REDACTED:");
            out.push_str(class.name());
            out.push(']');
            at = end;
        }
        out.push_str(text.get(at..).unwrap_or_default());
        out
    }

    fn classes_in(&self, text: &str) -> ClassSet {
        if text.len() < MIN_PATTERN_LEN {
            return ClassSet::default();
        }
        if text.len() > recent::MAX_TEXT {
            return self.scan_classes(text);
        }
        RECENT.with_borrow_mut(|recent| recent.classes(text, || self.scan_classes(text)))
    }

    /// [`Self::classes_in`] without the cache.
    fn scan_classes(&self, text: &str) -> ClassSet {
        let mut found = ClassSet::default();
        let text = capped(text, MAX_SCAN_BYTES);
        for index in self.set.matches(text).iter() {
            let Some((rule, regex)) = self.rules.get(index) else {
                named_pairs(&self.pairs, text, &mut found);
                continue;
            };
            let class = rule.class();
            if !found.contains(class)
                && regex
                    .find_iter(text)
                    .take(MAX_CANDIDATES)
                    .any(|candidate| rule.accepts(text, candidate))
            {
                found.insert(class);
            }
        }
        found
    }
}

/// How a body is read.
enum BodyKind {
    Json,
    Form,
    Media,
    Text,
}

impl BodyKind {
    fn of(body: &[u8], content_type: Option<&str>) -> Self {
        let content_type = content_type.unwrap_or_default().trim_start();
        let media = ["image/", "audio/", "video/", "font/"];
        if media
            .iter()
            .any(|prefix| starts_with_ignore_case(content_type, prefix))
        {
            Self::Media
        } else if contains_ignore_case(content_type, "x-www-form-urlencoded") {
            Self::Form
        } else if contains_ignore_case(content_type, "json")
            || matches!(body.trim_ascii_start().first(), Some(b'{' | b'['))
        {
            Self::Json
        } else {
            Self::Text
        }
    }
}

fn starts_with_ignore_case(text: &str, prefix: &str) -> bool {
    text.as_bytes()
        .get(..prefix.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(prefix.as_bytes()))
}

fn contains_ignore_case(text: &str, needle: &str) -> bool {
    text.as_bytes()
        .windows(needle.len())
        .any(|window| window.eq_ignore_ascii_case(needle.as_bytes()))
}

/// Walks one parsed JSON body, within the depth and node caps.
struct JsonWalk<'s, 'o> {
    scanner: &'s SensitiveScanner,
    sink: Sink<'o>,
    /// The location of the value being visited: `body` and its pointer.
    pointer: String,
    nodes: usize,
}

impl<'s, 'o> JsonWalk<'s, 'o> {
    fn new(scanner: &'s SensitiveScanner, sink: Sink<'o>) -> Self {
        Self {
            scanner,
            sink,
            pointer: String::from("body"),
            nodes: 0,
        }
    }

    /// Visits a value; `name` is the key it is under (for an array, the array's key), which
    /// may make a string a password.
    fn visit(&mut self, value: &Value, name: Option<&str>, depth: usize) {
        if self.exhausted() {
            return;
        }
        self.nodes += 1;
        match value {
            Value::String(text) => {
                let mut found = self.scanner.classes_in(text);
                if let Some(name) = name {
                    named_classes(name, text, &mut found);
                }
                self.sink.add(found, &self.pointer);
            }
            // Card numbers are sent as JSON numbers too.
            Value::Number(number) => {
                let found = self.scanner.classes_in(&number.to_string());
                self.sink.add(found, &self.pointer);
            }
            Value::Array(items) if depth < MAX_DEPTH => {
                for (index, item) in items.iter().enumerate() {
                    if self.exhausted() {
                        return;
                    }
                    let len = self.pointer.len();
                    self.pointer.push('/');
                    self.pointer.push_str(&index.to_string());
                    self.visit(item, name, depth + 1);
                    self.pointer.truncate(len);
                }
            }
            Value::Object(fields) if depth < MAX_DEPTH => self.visit_object(fields, depth),
            _ => {}
        }
    }

    fn exhausted(&self) -> bool {
        self.nodes >= MAX_NODES || self.sink.full()
    }

    fn visit_object(&mut self, fields: &Map<String, Value>, depth: usize) {
        if is_service_account(fields) {
            let found = ClassSet::of(SensitiveClass::GcpServiceAccount);
            self.sink.add(found, &self.pointer);
        }
        for (key, value) in fields {
            if self.exhausted() {
                return;
            }
            let len = self.pointer.len();
            let (segment, key_classes) = self.scanner.key_segment(key);
            push_segment(&mut self.pointer, segment);
            self.sink.add(key_classes, &self.pointer);
            self.visit(value, Some(key), depth + 1);
            self.pointer.truncate(len);
        }
    }
}

/// A Google Cloud service-account key file, or an object shaped like one.
fn is_service_account(fields: &Map<String, Value>) -> bool {
    let typed = fields.get("type").and_then(Value::as_str) == Some("service_account");
    typed || (fields.contains_key("private_key_id") && fields.contains_key("private_key"))
}

/// Appends an RFC 6901 segment (`~` as `~0`, `/` as `~1`), stopping at the location cap.
fn push_segment(pointer: &mut String, segment: &str) {
    pointer.push('/');
    for c in segment.chars() {
        if pointer.len() >= MAX_LOCATION {
            return;
        }
        match c {
            '~' => pointer.push_str("~0"),
            '/' => pointer.push_str("~1"),
            c => pointer.push(c),
        }
    }
}

/// At most `max` bytes of `text`, cut at a character boundary.
fn capped(text: &str, max: usize) -> &str {
    text.get(..text.floor_char_boundary(max))
        .unwrap_or_default()
}

/// Where one call's findings go: deduplicated against all of `out`, at most
/// [`MAX_FINDINGS`] added.
struct Sink<'o> {
    out: &'o mut Vec<Finding>,
    added: usize,
}

impl<'o> Sink<'o> {
    fn new(out: &'o mut Vec<Finding>) -> Self {
        Self { out, added: 0 }
    }

    fn full(&self) -> bool {
        self.added >= MAX_FINDINGS
    }

    fn add(&mut self, classes: ClassSet, location: &str) {
        let location = capped(location, MAX_LOCATION);
        for class in classes.iter() {
            if self.full() {
                return;
            }
            let seen = self
                .out
                .iter()
                .any(|finding| finding.class == class && finding.location == location);
            if !seen {
                self.out.push(Finding {
                    class,
                    location: location.to_owned(),
                });
                self.added += 1;
            }
        }
    }
}

/// A set of classes, one bit each.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct ClassSet(u32);

impl ClassSet {
    fn of(class: SensitiveClass) -> Self {
        let mut set = Self::default();
        set.insert(class);
        set
    }

    fn insert(&mut self, class: SensitiveClass) {
        self.0 |= 1 << class as u32;
    }

    fn contains(self, class: SensitiveClass) -> bool {
        self.0 & (1 << class as u32) != 0
    }

    fn is_empty(self) -> bool {
        self.0 == 0
    }

    fn iter(self) -> impl Iterator<Item = SensitiveClass> {
        SensitiveClass::ALL
            .into_iter()
            .filter(move |class| self.contains(*class))
    }
}

impl crate::calls::Redact for SensitiveScanner {
    fn redact(&self, text: &str) -> String {
        SensitiveScanner::redact(self, text)
    }
}
