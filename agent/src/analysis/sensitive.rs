//! Sensitive data in API traffic: which classes of personal data and credentials a message
//! carries, and where, never what.
//!
//! Candidates are found by regular expressions (one [`RegexSet`] pass says which could be
//! there) and then confirmed the way each class allows: Luhn and issuer ranges for payment
//! cards, the ISO 13616 checksum for IBANs, the SSA's invalid ranges for SSNs, the decoded
//! header for JWTs, field names for passwords and AWS secret keys. The input comes from
//! arbitrary programs, so every call is bounded: bytes scanned, JSON depth and nodes, findings.

use base64::Engine as _;
use email_address::{EmailAddress, Options};
use regex::{Match, Regex, RegexSet};
use serde_json::{Map, Value};

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
        let mut found = ClassSet::default();
        if text.len() < MIN_PATTERN_LEN {
            return found;
        }
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

/// How a pattern's candidates are confirmed.
#[derive(Debug, Clone, Copy)]
enum Rule {
    /// A credential with a known prefix, not part of a longer word.
    Token(SensitiveClass),
    /// Text that is sensitive wherever it appears.
    Marker(SensitiveClass),
    Email,
    Card,
    Iban,
    /// `+` and country code.
    PhoneIntl,
    /// North American `(555) 123-4567`, `555-123-4567`.
    PhoneNanp,
    /// National numbers with a trunk `0`: `020 7946 0958`, `06 12 34 56 78`.
    PhoneTrunk,
    Ssn,
    Jwt,
}

impl Rule {
    fn class(self) -> SensitiveClass {
        match self {
            Self::Token(class) | Self::Marker(class) => class,
            Self::Email => SensitiveClass::Email,
            Self::Card => SensitiveClass::PaymentCard,
            Self::Iban => SensitiveClass::Iban,
            Self::PhoneIntl | Self::PhoneNanp | Self::PhoneTrunk => SensitiveClass::Phone,
            Self::Ssn => SensitiveClass::UsSsn,
            Self::Jwt => SensitiveClass::Jwt,
        }
    }

    fn accepts(self, text: &str, candidate: Match<'_>) -> bool {
        let (start, end) = (candidate.start(), candidate.end());
        let value = candidate.as_str();
        match self {
            Self::Token(_) => is_standalone_word(text, start, end),
            Self::Marker(_) => true,
            Self::Email => is_email(text, start, end, value),
            Self::Card => is_standalone_number(text, start, end) && is_card(value),
            Self::Iban => is_standalone_word(text, start, end) && is_iban(value),
            Self::PhoneIntl => is_standalone_number(text, start, end) && is_intl_phone(value),
            Self::PhoneNanp => is_standalone_number(text, start, end) && is_nanp_phone(value),
            Self::PhoneTrunk => is_standalone_number(text, start, end) && is_trunk_phone(value),
            Self::Ssn => is_standalone_number(text, start, end) && is_ssn(value),
            Self::Jwt => is_jwt(text, start, value),
        }
    }
}

/// The patterns, in the order the set reports them. All are ASCII, so no match splits a
/// character.
const RULES: [(Rule, &str); 18] = [
    (
        Rule::Email,
        r"[A-Za-z0-9][A-Za-z0-9._%+-]*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,24}",
    ),
    (Rule::Card, r"(?:[0-9][ -]?){12,}[0-9]"),
    (
        Rule::Iban,
        r"[A-Z]{2}[0-9]{2}(?:[A-Z0-9]{11,30}|(?: [A-Z0-9]{4}){2,7}(?: [A-Z0-9]{1,4})?)",
    ),
    (Rule::PhoneIntl, r"\+[1-9][0-9 ().-]{6,22}[0-9]"),
    (
        Rule::PhoneNanp,
        r"(?:1[-. ]?)?(?:\([2-9][0-9]{2}\) ?|[2-9][0-9]{2}[-.])[2-9][0-9]{2}[-. ][0-9]{4}",
    ),
    (Rule::PhoneTrunk, r"0[1-9][0-9]{0,3}(?:[ -][0-9]{2,5}){2,4}"),
    (Rule::Ssn, r"[0-9]{3}-[0-9]{2}-[0-9]{4}"),
    (
        Rule::Jwt,
        r"e[wy][A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*",
    ),
    (
        Rule::Marker(SensitiveClass::PrivateKey),
        r"-----BEGIN [A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----",
    ),
    (
        Rule::Token(SensitiveClass::AwsAccessKey),
        r"(?:AKIA|ASIA)[A-Z0-9]{16}",
    ),
    (
        Rule::Token(SensitiveClass::GcpApiKey),
        r"AIza[0-9A-Za-z_-]{35}",
    ),
    (
        Rule::Marker(SensitiveClass::GcpServiceAccount),
        r#""type"[ \t]*:[ \t]*"service_account"|"private_key_id"[ \t]*:[ \t]*"[0-9a-f]{40}""#,
    ),
    (
        Rule::Token(SensitiveClass::GithubToken),
        r"gh[pousr]_[A-Za-z0-9]{36}|github_pat_[A-Za-z0-9_]{22,}",
    ),
    (
        Rule::Token(SensitiveClass::SlackToken),
        r"xox[abprs]-[A-Za-z0-9-]{10,}",
    ),
    (
        Rule::Marker(SensitiveClass::SlackToken),
        r"hooks\.slack\.com/services/T[A-Za-z0-9_]+/B[A-Za-z0-9_]+/[A-Za-z0-9_]+",
    ),
    (
        Rule::Token(SensitiveClass::StripeKey),
        r"(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{16,}|pk_live_[A-Za-z0-9]{16,}|whsec_[A-Za-z0-9]{24,}",
    ),
    (
        Rule::Token(SensitiveClass::OpenaiKey),
        r"sk-(?:proj|svcacct|admin)-[A-Za-z0-9_-]{20,}|sk-[A-Za-z0-9]{48}",
    ),
    (
        Rule::Token(SensitiveClass::AnthropicKey),
        r"sk-ant-[a-z]{2,8}[0-9]{2}-[A-Za-z0-9_-]{20,}",
    ),
];

/// `"name": "value"`, `name=value`, `name: value`: values judged by their names. Its search
/// restarts inside each match (see `named_pairs`), so its parts are bounded and an unquoted
/// value stops at `=` and `:`: else `a:a:a:…` would be rescanned from every `:`.
const PAIR_PATTERN: &str = r#""([A-Za-z0-9_.-]{1,64})"[ \t]*:[ \t]*"([^"\\]{1,256})|([A-Za-z_][A-Za-z0-9_.-]{0,63})[ \t]*[=:][ \t]*['"]?([^ \t\r\n"'&,;=:]{1,256})"#;

fn byte_at(text: &str, index: Option<usize>) -> Option<u8> {
    index.and_then(|index| text.as_bytes().get(index)).copied()
}

/// Not glued to a longer word: `xAKIA…` or `sk_live_…9x` are something else.
fn is_standalone_word(text: &str, start: usize, end: usize) -> bool {
    let is_word = |byte: Option<u8>| byte.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_');
    !is_word(byte_at(text, start.checked_sub(1))) && !is_word(byte_at(text, Some(end)))
}

/// Not glued to a word nor to another number (`v1.4111…`, `0.4111…`, `12:34`,
/// `2024 555-…`), nor after a `+` (a phone's country code, an exponent): only then are its
/// digits read as one value.
fn is_standalone_number(text: &str, start: usize, end: usize) -> bool {
    const JOINERS: &[u8] = b".,-/: ";
    let before = byte_at(text, start.checked_sub(1));
    let two_before = byte_at(text, start.checked_sub(2));
    let after = byte_at(text, Some(end));
    let two_after = byte_at(text, end.checked_add(1));
    let is_word = |byte: Option<u8>| byte.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_');
    let is_joiner = |byte: Option<u8>| byte.is_some_and(|b| JOINERS.contains(&b));
    let is_digit = |byte: Option<u8>| byte.is_some_and(|b| b.is_ascii_digit());
    let glued_before =
        is_word(before) || before == Some(b'+') || (is_joiner(before) && is_digit(two_before));
    let glued_after = is_word(after) || (is_joiner(after) && is_digit(two_after));
    !glued_before && !glued_after
}

/// Top-level domains that are file extensions: `icon@2x.png` is an asset, not an address.
const FILE_EXTENSIONS: [&str; 12] = [
    "png", "jpg", "jpeg", "gif", "svg", "webp", "ico", "css", "js", "json", "html", "txt",
];

fn is_email(text: &str, start: usize, end: usize, candidate: &str) -> bool {
    let after = byte_at(text, Some(end));
    if after.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return false;
    }
    let tld = candidate.rsplit('.').next().unwrap_or_default();
    if FILE_EXTENSIONS
        .iter()
        .any(|ext| tld.eq_ignore_ascii_case(ext))
    {
        return false;
    }
    let options = Options::default()
        .with_required_tld()
        .without_domain_literal()
        .without_display_text();
    !in_url_userinfo(text, start) && EmailAddress::parse_with_options(candidate, options).is_ok()
}

/// `https://user:pass@host/` names a URL's user, not a mailbox.
fn in_url_userinfo(text: &str, start: usize) -> bool {
    let bytes = text.as_bytes();
    let head = bytes
        .get(start.saturating_sub(256)..start)
        .unwrap_or_default();
    let authority = head
        .iter()
        .rposition(|b| matches!(b, b'/' | b'?' | b'#' | b'@') || b.is_ascii_whitespace())
        .map_or(0, |delimiter| delimiter + 1);
    head.get(..authority)
        .is_some_and(|scheme| scheme.ends_with(b"://"))
}

/// Card numbers: digits alone, or in the groups cards are printed in; any group prefix that
/// makes a card counts (`4111 1111 1111 1111 123` is a card and its CVC).
fn is_card(run: &str) -> bool {
    let separator = match (run.contains(' '), run.contains('-')) {
        (false, false) => return is_card_number(run),
        (true, true) => return false,
        (true, false) => ' ',
        (false, true) => '-',
    };
    let mut groups = [0usize; 19];
    let mut digits = String::with_capacity(19);
    for (count, group) in run.split(separator).enumerate() {
        let Some(slot) = groups.get_mut(count) else {
            return false;
        };
        if digits.len() + group.len() > 19 {
            return false;
        }
        *slot = group.len();
        digits.push_str(group);
        if is_card_layout(groups.get(..=count).unwrap_or_default()) && is_card_number(&digits) {
            return true;
        }
    }
    false
}

/// Groups as printed on cards: fours with a shorter last group, or Amex and Diners 4-6-5/4-6-4.
fn is_card_layout(groups: &[usize]) -> bool {
    let Some((last, leading)) = groups.split_last() else {
        return false;
    };
    let fours =
        !leading.is_empty() && leading.iter().all(|len| *len == 4) && (1..=4).contains(last);
    fours || groups == [4, 6, 5] || groups == [4, 6, 4]
}

/// The card lengths from `from` to `to`, one bit each.
const fn lengths(from: u32, to: u32) -> u32 {
    (1 << (to + 1)) - (1 << from)
}

/// Issuer ranges (on the first digits) and the lengths each issues.
const ISSUERS: [(u32, u32, u32); 17] = [
    (4, 4, 1 << 13 | 1 << 16 | 1 << 19), // Visa
    (51, 55, lengths(16, 16)),           // Mastercard
    (2221, 2720, lengths(16, 16)),       // Mastercard 2-series
    (34, 34, lengths(15, 15)),           // American Express
    (37, 37, lengths(15, 15)),           // American Express
    (6011, 6011, lengths(16, 19)),       // Discover
    (644, 649, lengths(16, 19)),         // Discover
    (65, 65, lengths(16, 19)),           // Discover
    (62, 62, lengths(16, 19)),           // UnionPay
    (3528, 3589, lengths(16, 19)),       // JCB
    (300, 305, lengths(14, 19)),         // Diners Club
    (36, 36, lengths(14, 19)),           // Diners Club
    (38, 39, lengths(14, 19)),           // Diners Club
    (50, 50, lengths(13, 19)),           // Maestro
    (56, 58, lengths(13, 19)),           // Maestro
    (6304, 6304, lengths(13, 19)),       // Maestro
    (67, 67, lengths(13, 19)),           // Maestro
];

/// A PAN: an issuer's prefix and length, and a valid Luhn check digit. Issuer ranges keep
/// millisecond timestamps and most ids (which start with `1`) out.
fn is_card_number(digits: &str) -> bool {
    let len = digits.len();
    if !(13..=19).contains(&len) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let issued = ISSUERS.iter().any(|(low, high, lengths)| {
        let width = low.ilog10() as usize + 1;
        let prefix = digits
            .get(..width)
            .and_then(|prefix| prefix.parse::<u32>().ok());
        prefix.is_some_and(|prefix| (*low..=*high).contains(&prefix)) && lengths & (1 << len) != 0
    });
    issued && luhn(digits)
}

fn luhn(digits: &str) -> bool {
    let sum: u32 = digits
        .chars()
        .rev()
        .filter_map(|c| c.to_digit(10))
        .enumerate()
        .map(|(position, digit)| match (position % 2, digit * 2) {
            (0, _) => digit,
            (_, doubled) if doubled > 9 => doubled - 9,
            (_, doubled) => doubled,
        })
        .sum();
    sum.is_multiple_of(10)
}

/// An IBAN whose country format and mod-97 checksum hold; for the printed form a trailing
/// group may be a neighbouring word (`GB82 WEST 1234 5698 7654 32 EUR`).
fn is_iban(candidate: &str) -> bool {
    let ends =
        std::iter::once(candidate.len()).chain(candidate.rmatch_indices(' ').map(|(at, _)| at));
    ends.filter_map(|end| candidate.get(..end))
        .map(|printed| printed.replace(' ', ""))
        .take_while(|electronic| electronic.len() >= 15)
        .any(|electronic| electronic.parse::<iban::Iban>().is_ok())
}

fn digit_count(text: &str) -> usize {
    text.bytes().filter(u8::is_ascii_digit).count()
}

/// `2024-01-15` or `15.01.2024`: a date, not a phone number.
fn looks_like_date(text: &str) -> bool {
    let mut groups = text
        .split(|c: char| !c.is_ascii_digit())
        .filter(|group| !group.is_empty())
        .map(str::len);
    matches!(
        (groups.next(), groups.next(), groups.next(), groups.next()),
        (Some(4), Some(2), Some(2), None) | (Some(2), Some(2), Some(4), None)
    )
}

fn is_intl_phone(candidate: &str) -> bool {
    (8..=15).contains(&digit_count(candidate))
        && has_phone_layout(candidate)
        && !looks_like_date(candidate)
}

/// Single separators between digits, a space allowed around one parenthesised area code.
fn has_phone_layout(candidate: &str) -> bool {
    let bytes = candidate.as_bytes();
    let open = bytes.iter().position(|b| *b == b'(');
    let close = bytes.iter().position(|b| *b == b')');
    let parens = bytes.iter().filter(|b| matches!(b, b'(' | b')')).count();
    let parens_ok = match (open, close) {
        (None, None) => true,
        (Some(open), Some(close)) => {
            let inside = bytes.get(open + 1..close).unwrap_or_default();
            parens == 2 && (1..=4).contains(&inside.len()) && inside.iter().all(u8::is_ascii_digit)
        }
        _ => false,
    };
    let separators_ok = bytes.windows(2).all(|pair| match pair {
        [a, b] if !a.is_ascii_digit() && !b.is_ascii_digit() => {
            matches!((a, b), (b')', b' ' | b'-' | b'.') | (b' ' | b'+', b'('))
        }
        _ => true,
    });
    parens_ok && separators_ok
}

/// Spaces alone are not enough (`555 123 4567` is as likely three numbers), and the two
/// separators of `555-123-4567` must agree.
fn is_nanp_phone(candidate: &str) -> bool {
    if candidate.contains('(') {
        return true;
    }
    let mut separators = candidate.bytes().rev().filter(|b| !b.is_ascii_digit());
    let (last, previous) = (separators.next(), separators.next());
    last.is_some() && last == previous && last != Some(b' ')
}

fn is_trunk_phone(candidate: &str) -> bool {
    let mut separators = candidate.bytes().filter(|b| !b.is_ascii_digit());
    let first = separators.next();
    (10..=11).contains(&digit_count(candidate)) && separators.all(|b| Some(b) == first)
}

/// `AAA-GG-SSSS` outside the ranges the SSA never issues: area 000, 666 and 900-999,
/// group 00, serial 0000.
fn is_ssn(candidate: &str) -> bool {
    let part = |range: std::ops::Range<usize>| candidate.get(range).unwrap_or_default();
    let (area, group, serial) = (part(0..3), part(4..6), part(7..11));
    area != "000" && area != "666" && !area.starts_with('9') && group != "00" && serial != "0000"
}

/// Whether a whole credential (a bearer token) is a JWT: three base64url segments, the first
/// decoding to a JSON object that names its `alg`.
pub fn is_jwt_token(credential: &str) -> bool {
    let segments = credential.split('.');
    let base64url = |segment: &str| {
        segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
    };
    segments.clone().count() == 3
        && segments
            .take(2)
            .all(|segment| !segment.is_empty() && base64url(segment))
        && is_jwt(credential, 0, credential)
}

/// Three base64url segments whose first decodes to a JSON object naming its `alg`.
fn is_jwt(text: &str, start: usize, candidate: &str) -> bool {
    let before = byte_at(text, start.checked_sub(1));
    if before.is_some_and(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')) {
        return false;
    }
    let header = candidate.split('.').next().unwrap_or_default();
    if header.len() > MAX_JWT_HEADER {
        return false;
    }
    let Ok(json) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header) else {
        return false;
    };
    serde_json::from_slice::<Map<String, Value>>(&json)
        .is_ok_and(|header| header.get("alg").is_some_and(Value::is_string))
}

/// Calls `visit` with the name and value of each `name: value` (or `name=value`, or quoted)
/// pair in `text`, at most [`MAX_NODES`] of them.
fn for_each_pair<'t>(regex: &Regex, text: &'t str, mut visit: impl FnMut(Match<'t>, Match<'t>)) {
    let mut start = 0;
    for _ in 0..MAX_NODES {
        let Some(captures) = regex.captures_at(text, start) else {
            return;
        };
        let quoted = captures.get(1).zip(captures.get(2));
        let Some((name, value)) = quoted.or_else(|| captures.get(3).zip(captures.get(4))) else {
            return;
        };
        visit(name, value);
        // A value may be the next pair's name (`note: password = hunter2`); it starts after
        // the name, so the search always moves on.
        start = value.start();
    }
}

/// Runs the named-value rules on each `name: value` pair of a text (a JSON body cut short,
/// an env dump, a URL in a `Referer`).
fn named_pairs(regex: &Regex, text: &str, found: &mut ClassSet) {
    for_each_pair(regex, text, |name, value| {
        named_classes(name.as_str(), value.as_str(), found);
    });
}

/// Where the sensitive values of `name: value` pairs are in `text`, for redaction.
fn pair_values(regex: &Regex, text: &str, cuts: &mut Vec<(usize, usize, SensitiveClass)>) {
    for_each_pair(regex, text, |name, value| {
        let mut found = ClassSet::default();
        named_classes(name.as_str(), value.as_str(), &mut found);
        if let Some(class) = found.iter().next() {
            cuts.push((value.start(), value.end(), class));
        }
    });
}

/// What a value is by the name it is under: a password (or other secret), an AWS secret
/// key, a phone number.
fn named_classes(name: &str, value: &str, found: &mut ClassSet) {
    if is_placeholder(value) {
        return;
    }
    let words = name_words(name);
    if names_aws_secret(&words) && is_aws_secret_value(value) {
        found.insert(SensitiveClass::AwsSecretKey);
    } else if names_password(&words) {
        found.insert(SensitiveClass::Password);
    }
    if names_phone(&words) && is_phone_value(value) {
        found.insert(SensitiveClass::Phone);
    }
}

/// Empty, masked (`********`) or not a value at all (`null`): nothing is disclosed.
fn is_placeholder(value: &str) -> bool {
    const WORDS: [&str; 8] = [
        "null",
        "none",
        "undefined",
        "true",
        "false",
        "redacted",
        "[redacted]",
        "<redacted>",
    ];
    let value = value.trim();
    value.chars().all(|c| matches!(c, '*' | '\u{2022}'))
        || WORDS.iter().any(|word| value.eq_ignore_ascii_case(word))
}

/// A field name's lowercase words joined by `_`: `newPassword`, `new_password` and
/// `new-password2` all give `new_password`.
fn name_words(name: &str) -> String {
    let mut words = String::with_capacity(name.len().min(MAX_NAME));
    let mut after_lowercase = false;
    for c in name.chars().take(MAX_NAME) {
        if c.is_ascii_alphabetic() {
            if c.is_ascii_uppercase() && after_lowercase {
                words.push('_');
            }
            words.push(c.to_ascii_lowercase());
            after_lowercase = c.is_ascii_lowercase();
        } else {
            if !words.is_empty() && !words.ends_with('_') {
                words.push('_');
            }
            after_lowercase = false;
        }
    }
    words
}

/// Last words that make a name describe a password rather than hold one
/// (`password_updated_at`, `password_min_length`, `secret_name`).
const PASSWORD_METADATA: [&str; 28] = [
    "at",
    "date",
    "time",
    "ts",
    "updated",
    "changed",
    "created",
    "expires",
    "expiry",
    "expiration",
    "expired",
    "policy",
    "strength",
    "length",
    "hint",
    "required",
    "enabled",
    "type",
    "status",
    "url",
    "rules",
    "count",
    "attempts",
    "min",
    "max",
    "name",
    "ref",
    "arn",
];

/// A word that names a password or secret. Whole words only for the short forms, so
/// `passport`, `compass` and `secretary` are not.
fn is_password_word(word: &str) -> bool {
    const SUFFIXES: [&str; 4] = ["password", "passwd", "passphrase", "secret"];
    matches!(word, "pwd" | "pass" | "passcode" | "secrets")
        || SUFFIXES.iter().any(|suffix| word.ends_with(suffix))
}

fn names_password(words: &str) -> bool {
    let words: Vec<&str> = words.split('_').filter(|word| !word.is_empty()).collect();
    let Some(at) = words.iter().rposition(|word| is_password_word(word)) else {
        return false;
    };
    let is_last = at + 1 == words.len();
    is_last
        || !words
            .last()
            .is_some_and(|last| PASSWORD_METADATA.contains(last))
}

fn names_aws_secret(words: &str) -> bool {
    let joined = words.replace('_', "");
    joined.contains("secretaccesskey") || joined.contains("awssecret")
}

fn is_aws_secret_value(value: &str) -> bool {
    value.len() == 40
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'/' || b == b'+')
}

fn names_phone(words: &str) -> bool {
    words.split('_').any(|word| {
        word.ends_with("phone") || matches!(word, "mobile" | "msisdn" | "tel" | "cell" | "fax")
    })
}

/// Digits with the usual punctuation, 7 to 15 of them, and not a date.
fn is_phone_value(value: &str) -> bool {
    let value = value.trim();
    let number = value.strip_prefix('+').unwrap_or(value);
    number
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b' ' | b'-' | b'.' | b'(' | b')'))
        && (7..=15).contains(&digit_count(number))
        && !looks_like_date(number)
}

impl crate::calls::Redact for SensitiveScanner {
    fn redact(&self, text: &str) -> String {
        SensitiveScanner::redact(self, text)
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::LazyLock, time::Instant};

    use super::*;
    use SensitiveClass::*;

    static SCANNER: LazyLock<SensitiveScanner> = LazyLock::new(SensitiveScanner::new);

    const JWT: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";
    const AWS_SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

    fn text(value: &str) -> Vec<SensitiveClass> {
        let mut out = Vec::new();
        SCANNER.scan_text(value, "t", &mut out);
        out.into_iter().map(|finding| finding.class).collect()
    }

    fn named(name: &str, value: &str) -> Vec<SensitiveClass> {
        let mut out = Vec::new();
        SCANNER.scan_named(name, value, "n", &mut out);
        out.into_iter().map(|finding| finding.class).collect()
    }

    #[test]
    fn redaction_replaces_what_the_scan_finds_and_keeps_the_rest() {
        let redacted = SCANNER.redact(&format!(
            "Mail jane.doe@example.com, card 4111 1111 1111 1111, token {JWT}; password: hunter2 ok"
        ));
        for secret in [
            "jane.doe@example.com",
            "4111 1111 1111 1111",
            JWT,
            "hunter2",
        ] {
            assert!(!redacted.contains(secret), "{secret} in {redacted}");
        }
        assert!(redacted.starts_with("Mail [REDACTED:"), "{redacted}");
        assert!(redacted.ends_with(" ok"), "{redacted}");
        assert_eq!(SCANNER.redact("Say hello."), "Say hello.");
    }

    /// A body's findings, sorted (JSON objects are walked in key order).
    fn body(bytes: &str, content_type: Option<&str>) -> Vec<(SensitiveClass, String)> {
        let mut out = Vec::new();
        SCANNER.scan_body(bytes.as_bytes(), content_type, &mut out);
        let mut findings: Vec<_> = out
            .into_iter()
            .map(|finding| (finding.class, finding.location))
            .collect();
        findings.sort();
        findings
    }

    fn json(bytes: &str) -> Vec<(SensitiveClass, String)> {
        body(bytes, Some("application/json"))
    }

    fn found(pairs: &[(SensitiveClass, &str)]) -> Vec<(SensitiveClass, String)> {
        let mut findings: Vec<_> = pairs
            .iter()
            .map(|(class, location)| (*class, (*location).to_owned()))
            .collect();
        findings.sort();
        findings
    }

    fn repeat(unit: &str, len: usize) -> String {
        unit.chars().cycle().take(len).collect()
    }

    /// One value of each class, as `(class, text)`.
    fn samples() -> Vec<(SensitiveClass, String)> {
        vec![
            (Email, "bob.smith+tag@mail.example.co.uk".into()),
            (PaymentCard, "4111 1111 1111 1111".into()),
            (Iban, "GB82 WEST 1234 5698 7654 32".into()),
            (Phone, "+44 20 7946 0958".into()),
            (UsSsn, "219-09-9999".into()),
            (Jwt, JWT.into()),
            (PrivateKey, "-----BEGIN RSA PRIVATE KEY-----\nMIIEow".into()),
            (AwsAccessKey, "AKIAIOSFODNN7EXAMPLE".into()),
            (
                AwsSecretKey,
                format!("aws_secret_access_key = {AWS_SECRET}"),
            ),
            (GcpApiKey, format!("AIza{}", repeat("Sy9bC-d_E", 35))),
            (
                GcpServiceAccount,
                r#"{"type": "service_account", "project_id": "p""#.into(),
            ),
            (GithubToken, format!("ghp_{}", repeat("aB3dE6", 36))),
            (
                SlackToken,
                "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx".into(),
            ),
            (
                StripeKey,
                format!("sk_live_{}", repeat("4eC39HqLyjWDarjtT1zdp7dc", 24)),
            ),
            (OpenaiKey, format!("sk-proj-{}", repeat("Ab1_Cd2-Ef3", 48))),
            (
                AnthropicKey,
                format!("sk-ant-api03-{}", repeat("xY9_zW8-", 80)),
            ),
            (Password, r#"{"password": "hunter2!"#.into()),
        ]
    }

    #[test]
    fn names_are_the_serde_names() {
        for class in SensitiveClass::ALL {
            let serialized = serde_json::to_string(&class).unwrap();
            assert_eq!(serialized, format!("\"{}\"", class.name()));
            assert_eq!(
                serde_json::from_str::<SensitiveClass>(&serialized).unwrap(),
                class
            );
        }
    }

    #[test]
    fn every_sample_is_found_alone() {
        for (class, sample) in samples() {
            assert_eq!(text(&sample), [class], "{sample}");
            assert_eq!(text(&format!("seen: {sample} .")), [class], "{sample}");
        }
    }

    #[test]
    fn findings_never_carry_the_value() {
        let mut out = Vec::new();
        for (_, sample) in samples() {
            SCANNER.scan_text(&sample, "header:x-test", &mut out);
            SCANNER.scan_named("password", &sample, "query:password", &mut out);
            let document = serde_json::json!({ "value": sample, "password": sample });
            SCANNER.scan_body(document.to_string().as_bytes(), None, &mut out);
        }
        assert!(out.len() >= SensitiveClass::ALL.len());
        let debug = format!("{out:?}");
        let field_names = ["aws_secret_access_key", "service_account", "password"];
        for (_, sample) in samples() {
            for secret in sample.split(|c: char| c.is_whitespace() || c == '"') {
                if secret.len() >= 6 && !field_names.contains(&secret) {
                    assert!(!debug.contains(secret), "{secret} in {debug}");
                }
            }
        }
    }

    #[test]
    fn benign_traffic_is_clean() {
        let response = r#"{
            "id": "550e8400-e29b-41d4-a716-446655440000",
            "order_id": "ORD-2024-000123", "order_number": 1002003004005,
            "created_at": "2024-01-15T10:30:00.123+05:30", "ts": 1733212800000,
            "updated": 1733212800123456, "price": 1299.99, "ratio": 0.4111111111111111,
            "total": "1,234,567.89", "version": "10.15.3", "build": "1.0.0+20130313144700",
            "sha256": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "etag": "W/\"5f3a9c0b1d2e4f60\"", "ip": "192.168.100.200",
            "avatar": "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAf4111111111111111FcSJAAAADUlEQVR42mNk+A8AAQUBAScY42YAAAAASUVORK5CYII=",
            "note": "ask the user@ desk", "asset": "logo@2x.png", "dep": "react@18.2.0",
            "passport_number": "X1234567", "compass": "north", "password_updated_at": "2024-01-01",
            "tags": ["a1b2c3d4", "2024-01-15", "12:30:45", "v2"], "page": {"size": 50, "next": null}
        }"#;
        assert!(json(response).is_empty(), "{:?}", json(response));
        for header in [
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0",
            "max-age=31536000; includeSubDomains",
            "Thu, 15 Jan 2024 10:30:00 GMT",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "gzip, deflate, br",
            "/api/v1/orders/1733212800000/items/42",
        ] {
            assert!(text(header).is_empty(), "{header}");
        }
    }

    #[test]
    fn emails() {
        assert_eq!(text("write to alice@example.com today"), [Email]);
        assert_eq!(text("mailto:bob@example.org"), [Email]);
        assert_eq!(text("/users/bob@example.org/profile"), [Email]);
        for benign in [
            "ask the user@ in prose",
            "user@localhost",
            "icon@2x.png",
            "lodash@4.17.21",
            "@scope/package",
            "https://user:pass@example.com/path",
            "https://deploy@git.example.com/repo.git",
            "nobody@example.c",
        ] {
            assert!(text(benign).is_empty(), "{benign}");
        }
    }

    #[test]
    fn payment_cards() {
        for card in [
            "4111 1111 1111 1111",
            "5500-0000-0000-0004",
            "4111111111111111",
            "378282246310005",
            "3782 822463 10005",
            "6011111111111117",
            "2223000048400011",
            "card 4111 1111 1111 1111 123",
        ] {
            assert_eq!(text(card), [PaymentCard], "{card}");
        }
        assert_eq!(
            json(r#"{"pan": 4111111111111111}"#),
            found(&[(PaymentCard, "body/pan")])
        );
        for benign in [
            "4111111111111112",
            "4111 1111 1111 1112",
            "1733212800000",
            "1733212800000000",
            "0.4111111111111111",
            "41111111111111110",
            "4111-1111 1111-1111",
            "41 11 11 11 11 11 11 11",
            "12345678-1234-1234-1234-123456789012",
            "550e8400-e29b-41d4-a716-446655440000",
            "iVBORw0KGgoAAAANSUhEUgAA4111111111111111AAAAFcSJAAAADUlEQVR42mNk",
            "order ORD4111111111111111",
            "v1.4111111111111111",
            "price 1234.56, total 99999.99",
        ] {
            assert!(text(benign).is_empty(), "{benign}");
        }
        assert!(json(r#"{"ts": 1733212800000, "ratio": 0.4111111111111111}"#).is_empty());
    }

    #[test]
    fn luhn_checks() {
        assert!(luhn("4111111111111111"));
        assert!(luhn("79927398713"));
        assert!(!luhn("4111111111111112"));
    }

    #[test]
    fn ibans() {
        assert_eq!(text("GB82 WEST 1234 5698 7654 32"), [Iban]);
        assert_eq!(text("iban: DE89370400440532013000."), [Iban]);
        assert_eq!(text("GB82 WEST 1234 5698 7654 32 EUR"), [Iban]);
        for benign in [
            "GB82 WEST 1234 5698 7654 33",
            "DE89370400440532013001",
            "XX89370400440532013000",
            "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "DE8937040044053201300099",
        ] {
            assert!(text(benign).is_empty(), "{benign}");
        }
    }

    #[test]
    fn phones() {
        for phone in [
            "+44 20 7946 0958",
            "+4915112345678",
            "+1 (555) 234-5678",
            "call (555) 234-5678",
            "555-234-5678",
            "1-800-555-1234",
            "020 7946 0958",
            "06 12 34 56 78",
        ] {
            assert_eq!(text(phone), [Phone], "{phone}");
        }
        assert_eq!(named("mobileNumber", "5552345678"), [Phone]);
        assert_eq!(
            json(r#"{"user": {"phone": "07700900123"}}"#),
            found(&[(Phone, "body/user/phone")])
        );
        for benign in [
            "1733212800000",
            "2024-01-15T10:30:00+05:30",
            "+2024-01-15",
            "version 1.2.3",
            "1.0.0+20130313144700",
            "id 5552345678",
            "555 234 5678",
            "555-234.5678",
            "10.0.0.1",
            "+12345",
            "2024-01-15 10:30:00",
            "ORD-555-234-5678-99",
        ] {
            assert!(text(benign).is_empty(), "{benign}");
        }
        assert!(named("mobile_os_version", "17.2").is_empty());
        assert!(named("phone", "2024-01-15").is_empty());
    }

    #[test]
    fn ssns() {
        assert_eq!(text("ssn 219-09-9999"), [UsSsn]);
        for benign in [
            "000-12-3456",
            "666-12-3456",
            "912-34-5678",
            "123-00-4567",
            "123-45-0000",
            "2024-01-15",
            "1123-45-6789",
            "123-45-67890",
            "123-45-6789-1",
        ] {
            assert!(text(benign).is_empty(), "{benign}");
        }
    }

    #[test]
    fn jwts() {
        assert_eq!(text(&format!("token={JWT}")), [Jwt]);
        let no_alg = "eyJ0eXAiOiJKV1QifQ.eyJzdWIiOiIxIn0.c2lnbmF0dXJl";
        for benign in ["a.b.c", "www.example.com", "eyJhbGciOi.eyJzdWIi.x", no_alg] {
            assert!(text(benign).is_empty(), "{benign}");
        }
    }

    #[test]
    fn private_keys() {
        for key in [
            "-----BEGIN PRIVATE KEY-----",
            "-----BEGIN OPENSSH PRIVATE KEY-----",
            "-----BEGIN ENCRYPTED PRIVATE KEY-----",
            "-----BEGIN PGP PRIVATE KEY BLOCK-----",
        ] {
            assert_eq!(text(key), [PrivateKey], "{key}");
        }
        assert!(text("-----BEGIN PUBLIC KEY-----").is_empty());
        assert!(text("-----BEGIN CERTIFICATE-----").is_empty());
    }

    #[test]
    fn aws_keys() {
        assert_eq!(text("ASIAY34FZKBOKMUTVV7A"), [AwsAccessKey]);
        for benign in [
            "AKIAIOSFODNN7EXAMPL",
            "XAKIAIOSFODNN7EXAMPLE",
            "AIDAIOSFODNN7EXAMPLE",
        ] {
            assert!(text(benign).is_empty(), "{benign}");
        }
        assert_eq!(
            json(&format!(
                r#"{{"Credentials": {{"SecretAccessKey": "{AWS_SECRET}"}}}}"#
            )),
            found(&[(AwsSecretKey, "body/Credentials/SecretAccessKey")])
        );
        assert_eq!(named("aws_secret_access_key", AWS_SECRET), [AwsSecretKey]);
        assert_eq!(
            text(&format!("AWS_SECRET_ACCESS_KEY={AWS_SECRET}")),
            [AwsSecretKey]
        );
        assert!(text(AWS_SECRET).is_empty());
        assert!(named("checksum", AWS_SECRET).is_empty());
    }

    #[test]
    fn gcp() {
        assert!(text(&format!("AIza{}", repeat("a", 34))).is_empty());
        let account = r#"{"credentials": {"type": "service_account", "private_key_id": "abc", "client_email": "x@p.iam.gserviceaccount.com"}}"#;
        let findings = json(account);
        assert!(findings.contains(&(GcpServiceAccount, "body/credentials".to_owned())));
        let cut = format!(r#"{{"private_key_id": "{}", "private_k"#, repeat("0a", 40));
        assert_eq!(json(&cut), found(&[(GcpServiceAccount, "body")]));
        assert!(json(r#"{"type": "user", "kind": "ServiceAccount"}"#).is_empty());
    }

    #[test]
    fn vendor_tokens() {
        let pat = format!("github_pat_11ABCDEFG0{}", repeat("aZ09_", 60));
        assert_eq!(text(&pat), [GithubToken]);
        assert_eq!(text(&format!("ghs_{}", repeat("Q1", 36))), [GithubToken]);
        assert_eq!(
            text("https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX"),
            [SlackToken]
        );
        assert_eq!(text(&format!("rk_live_{}", repeat("Ab1", 24))), [StripeKey]);
        assert_eq!(text(&format!("pk_live_{}", repeat("Ab1", 24))), [StripeKey]);
        assert_eq!(text(&format!("sk_test_{}", repeat("Ab1", 24))), [StripeKey]);
        assert_eq!(text(&format!("sk-{}", repeat("Ab1", 48))), [OpenaiKey]);
        assert_eq!(
            text(&format!("sk-svcacct-{}", repeat("Ab1", 40))),
            [OpenaiKey]
        );
        for benign in [
            "ghp_short".to_owned(),
            format!("ghp_{}", repeat("a", 37)),
            "xoxz-123456789012-abcdef".to_owned(),
            format!("pk_test_{}", repeat("Ab1", 24)),
            "sk_live_short".to_owned(),
            format!("sk-{}", repeat("Ab1", 20)),
            "task-list-items-and-more".to_owned(),
            format!("ask-{}", repeat("Ab1", 48)),
        ] {
            assert!(text(&benign).is_empty(), "{benign}");
        }
    }

    #[test]
    fn passwords() {
        assert_eq!(
            json(r#"{"password": "hunter2"}"#),
            found(&[(Password, "body/password")])
        );
        assert_eq!(
            json(r#"{"user": {"newPassword": "x1", "client_secret": "abc"}}"#),
            found(&[
                (Password, "body/user/newPassword"),
                (Password, "body/user/client_secret")
            ])
        );
        for name in [
            "pwd",
            "pass",
            "db_pass",
            "PASSWD",
            "passphrase",
            "api-secret",
            "password2",
        ] {
            assert_eq!(named(name, "abc"), [Password], "{name}");
        }
        for name in [
            "passport_number",
            "compass",
            "bypass",
            "passenger",
            "secretary",
            "password_updated_at",
            "passwordMinLength",
            "secret_name",
            "user",
        ] {
            assert!(named(name, "abc").is_empty(), "{name}");
        }
        for value in ["", "   ", "********", "null"] {
            assert!(named("password", value).is_empty(), "{value:?}");
        }
        assert!(json(r#"{"password": "", "pwd": true, "secret": null, "pass": 12}"#).is_empty());
    }

    #[test]
    fn passwords_in_forms_and_text() {
        let form = body(
            "username=bob&password=hunter2&remember=1",
            Some("application/x-www-form-urlencoded"),
        );
        assert_eq!(form, found(&[(Password, "body/password")]));
        assert_eq!(
            text("https://app.example.com/login?user=bob&pwd=s3cret"),
            [Password]
        );
        assert_eq!(
            body(r#"{"user": "bob", "password": "hunt"#, None),
            found(&[(Password, "body")])
        );
        assert!(text("https://app.example.com/?passport=X1234567").is_empty());
    }

    #[test]
    fn json_pointers_name_keys_and_indices() {
        let document = r#"{"users": [{"email": "a@example.com"},
            {"contacts": {"work/home": {"e~mail": "c@example.com"}}}], "n": [[1, "d@example.com"]]}"#;
        assert_eq!(
            json(document),
            found(&[
                (Email, "body/users/0/email"),
                (Email, "body/users/1/contacts/work~1home/e~0mail"),
                (Email, "body/n/0/1"),
            ])
        );
        assert_eq!(json(r#""e@example.com""#), found(&[(Email, "body")]));
    }

    #[test]
    fn sensitive_keys_are_redacted_from_locations() {
        let findings = json(r#"{"by_user": {"bob@example.com": {"password": "x"}}}"#);
        assert_eq!(
            findings,
            found(&[
                (Email, "body/by_user/*"),
                (Password, "body/by_user/*/password")
            ])
        );
    }

    #[test]
    fn json_detected_without_content_type() {
        assert_eq!(
            body(" \n{\"email\": \"a@example.com\"}", None),
            found(&[(Email, "body/email")])
        );
        assert_eq!(
            body("hello a@example.com", Some("text/plain")),
            found(&[(Email, "body")])
        );
        assert!(body("a@example.com", Some("image/png")).is_empty());
    }

    #[test]
    fn truncated_json_is_scanned_as_text() {
        let cut = r#"{"users": [{"id": 1, "email": "bob@example.com", "name": "Bo"#;
        assert_eq!(json(cut), found(&[(Email, "body")]));
    }

    #[test]
    fn findings_are_deduplicated() {
        let mut out = Vec::new();
        SCANNER.scan_text("a@example.com b@example.com", "path", &mut out);
        SCANNER.scan_text("c@example.com", "path", &mut out);
        SCANNER.scan_text("c@example.com", "query:e", &mut out);
        let locations: Vec<&str> = out
            .iter()
            .map(|finding| finding.location.as_str())
            .collect();
        assert_eq!(locations, ["path", "query:e"]);
    }

    #[test]
    fn locations_are_capped() {
        let key = repeat("k/é", 1000);
        let findings = json(&format!(r#"{{"{key}": {{"{key}": "a@example.com"}}}}"#));
        assert_eq!(findings.len(), 1);
        assert!(
            findings
                .iter()
                .all(|(_, location)| location.len() <= MAX_LOCATION)
        );
        let mut out = Vec::new();
        SCANNER.scan_text("a@example.com", &repeat("é", 1000), &mut out);
        assert!(
            out.iter()
                .all(|finding| finding.location.len() <= MAX_LOCATION)
        );
    }

    #[test]
    fn findings_per_call_are_capped() {
        let fields: Vec<String> = (0..1000)
            .map(|i| format!(r#""f{i}": "u{i}@example.com""#))
            .collect();
        let findings = json(&format!("{{{}}}", fields.join(",")));
        assert_eq!(findings.len(), MAX_FINDINGS);
    }

    #[test]
    fn bounds_hold_on_hostile_input() {
        let started = Instant::now();
        let mut out = Vec::new();
        let huge = "a@example.com 4111 1111 1111 1111 +44 20 7946 0958 ".repeat(200_000);
        SCANNER.scan_text(&huge, "path", &mut out);
        SCANNER.scan_named("password", &huge, "query:password", &mut out);
        SCANNER.scan_body(huge.as_bytes(), None, &mut out);
        SCANNER.scan_body(
            huge.as_bytes(),
            Some("application/x-www-form-urlencoded"),
            &mut out,
        );
        for unit in [
            "[",
            "{\"a\":",
            "1",
            "a",
            "1 ",
            "1-",
            "eyJ",
            "\"a\":\"b\",",
            "aaa.",
            "AKIA",
        ] {
            let hostile = unit.repeat((10 << 20) / unit.len());
            SCANNER.scan_body(hostile.as_bytes(), Some("application/json"), &mut out);
            SCANNER.scan_text(&hostile, "t", &mut out);
        }
        let nested = format!("{}\"a@example.com\"{}", "[".repeat(120), "]".repeat(120));
        SCANNER.scan_body(nested.as_bytes(), None, &mut out);
        let wide = format!("[{}0]", "[],".repeat(20_000));
        SCANNER.scan_body(wide.as_bytes(), None, &mut out);
        let invalid: Vec<u8> = (0..=255u8).cycle().take(1 << 20).collect();
        SCANNER.scan_body(&invalid, None, &mut out);
        assert!(started.elapsed().as_secs() < 20, "{:?}", started.elapsed());
    }

    #[test]
    fn depth_is_capped() {
        let deep = format!("{}\"a@example.com\"{}", "[".repeat(40), "]".repeat(40));
        assert!(json(&deep).is_empty());
        let shallow = format!("{}\"a@example.com\"{}", "[".repeat(10), "]".repeat(10));
        assert_eq!(json(&shallow).len(), 1);
    }

    #[test]
    fn arbitrary_text_never_panics() {
        let alphabet: Vec<char> = "aA0 9-+.@_/:\"{}[]=,éß€\u{1F600}\n~xoxsk_AKIAeyJ"
            .chars()
            .collect();
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut out = Vec::new();
        for _ in 0..300 {
            let text: String = (0..2000)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    alphabet[(state % alphabet.len() as u64) as usize]
                })
                .collect();
            out.clear();
            SCANNER.scan_text(&text, &text, &mut out);
            SCANNER.scan_named(&text, &text, "n", &mut out);
            SCANNER.scan_body(text.as_bytes(), None, &mut out);
            SCANNER.scan_body(
                text.as_bytes(),
                Some("application/x-www-form-urlencoded"),
                &mut out,
            );
        }
        let boundary = format!("{}é a@example.com", "x".repeat(MAX_SCAN_BYTES - 1));
        SCANNER.scan_text(&boundary, "t", &mut out);
        SCANNER.scan_body(boundary.as_bytes(), None, &mut out);
    }
}
