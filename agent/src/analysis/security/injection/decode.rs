//! Bounded decoding of the encodings attackers wrap payloads in, so the detectors see what the
//! application will eventually see: percent-encoding (repeated, for double encoding, with the
//! overlong UTF-8 forms some decoders accept), HTML character references, JavaScript-style
//! `\uXXXX` / `\xXX` escapes and Unicode compatibility forms (fullwidth `＜` is `<` after NFKC).

use unicode_normalization::UnicodeNormalization as _;

/// Rounds of decoding: three undo double and triple encoding; real values need fewer.
const MAX_ROUNDS: usize = 3;
/// Characters NFKC may produce from one value: a few code points expand to many, so the output
/// is capped relative to the input bound rather than trusted to stay small.
const MAX_NORMALISED_CHARS: usize = 16 * 1024;

/// The encodings undone on a value, for the evidence of a match that needed them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Encodings(u8);

impl Encodings {
    /// Percent-encoding beyond the one the transport itself uses.
    pub(super) const URL: Self = Self(1);
    /// Overlong UTF-8 sequences (`%c0%af` for `/`), which only lax decoders accept.
    pub(super) const OVERLONG: Self = Self(2);
    /// HTML character references.
    pub(super) const HTML: Self = Self(4);
    /// `\uXXXX`, `\u{...}` and `\xXX` escapes.
    pub(super) const ESCAPE: Self = Self(8);
    /// Unicode compatibility forms (NFKC).
    pub(super) const UNICODE: Self = Self(16);

    const NAMES: [(Self, &'static str); 5] = [
        (Self::URL, "url"),
        (Self::OVERLONG, "utf8-overlong"),
        (Self::HTML, "html"),
        (Self::ESCAPE, "escape"),
        (Self::UNICODE, "unicode-nfkc"),
    ];

    /// Whether nothing was undone.
    pub(super) fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Adds `other`'s encodings.
    pub(super) fn insert(&mut self, other: Self) {
        self.0 |= other.0;
    }

    /// `url+html`: the names joined, in a fixed order.
    pub(super) fn names(self) -> String {
        Self::NAMES
            .iter()
            .filter(|(flag, _)| self.0 & flag.0 != 0)
            .map(|(_, name)| *name)
            .collect::<Vec<_>>()
            .join("+")
    }
}

/// One percent-decoding pass over `value` (`+` as a space when `plus_as_space`), with `%uXXXX`
/// and overlong UTF-8 folded to the ASCII they stand for. `None` when nothing was encoded.
pub(super) fn percent_decode(value: &str, plus_as_space: bool) -> Option<(String, Encodings)> {
    if !(value.contains('%') || plus_as_space && value.contains('+')) {
        return None;
    }
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut changed = false;
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        match byte {
            b'%' => {
                if let Some(decoded) = hex_at(bytes, i + 1, 2) {
                    // Two hex digits always fit a byte.
                    out.push(u8::try_from(decoded).unwrap_or(b'%'));
                    changed = true;
                    i += 3;
                    continue;
                }
                // IIS's `%uXXXX`, a favourite of evasion lists.
                if matches!(bytes.get(i + 1), Some(b'u' | b'U'))
                    && let Some(c) = hex_at(bytes, i + 2, 4).and_then(char::from_u32)
                {
                    out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
                    changed = true;
                    i += 6;
                    continue;
                }
                out.push(byte);
            }
            b'+' if plus_as_space => {
                out.push(b' ');
                changed = true;
            }
            _ => out.push(byte),
        }
        i += 1;
    }
    if !changed {
        return None;
    }
    let (folded, overlong) = fold_overlong(&out);
    let mut undone = Encodings::default();
    if overlong {
        undone.insert(Encodings::OVERLONG);
    }
    Some((String::from_utf8_lossy(&folded).into_owned(), undone))
}

/// Replaces overlong two- and three-byte UTF-8 encodings of ASCII (`c0 af`, `e0 80 af`) by the
/// ASCII byte: strict decoders reject them, lax ones (and path filters) do not.
fn fold_overlong(bytes: &[u8]) -> (Vec<u8>, bool) {
    let mut out = Vec::with_capacity(bytes.len());
    let mut found = false;
    let mut i = 0;
    let continuation = |b: Option<&u8>| b.copied().filter(|b| b & 0xc0 == 0x80);
    while let Some(&byte) = bytes.get(i) {
        if matches!(byte, 0xc0 | 0xc1)
            && let Some(next) = continuation(bytes.get(i + 1))
        {
            out.push(((byte & 0x1f) << 6) | (next & 0x3f));
            found = true;
            i += 2;
            continue;
        }
        // `e0 80 xx` and `e0 81 xx` encode 0x00..=0x7f: overlong ASCII.
        if byte == 0xe0
            && let (Some(second @ (0x80 | 0x81)), Some(third)) = (
                continuation(bytes.get(i + 1)),
                continuation(bytes.get(i + 2)),
            )
        {
            out.push(((second & 0x01) << 6) | (third & 0x3f));
            found = true;
            i += 3;
            continue;
        }
        out.push(byte);
        i += 1;
    }
    (out, found)
}

/// The value of `len` hex digits at `bytes[at..]`, if they are all there.
fn hex_at(bytes: &[u8], at: usize, len: usize) -> Option<u32> {
    let digits = bytes.get(at..at.checked_add(len)?)?;
    digits.iter().try_fold(0u32, |acc, &digit| {
        Some(acc * 16 + char::from(digit).to_digit(16)?)
    })
}

/// Named HTML references that payloads use to hide syntax; the full table (2,000 names) would
/// add nothing a detector keys on.
const NAMED_REFERENCES: &[(&str, char)] = &[
    ("lt", '<'),
    ("gt", '>'),
    ("amp", '&'),
    ("quot", '"'),
    ("apos", '\''),
    ("nbsp", ' '),
    ("tab", '\t'),
    ("newline", '\n'),
    ("colon", ':'),
    ("semi", ';'),
    ("sol", '/'),
    ("bsol", '\\'),
    ("lpar", '('),
    ("rpar", ')'),
    ("equals", '='),
    ("period", '.'),
    ("comma", ','),
    ("excl", '!'),
    ("num", '#'),
    ("dollar", '$'),
    ("percnt", '%'),
    ("grave", '`'),
    ("lsqb", '['),
    ("rsqb", ']'),
    ("lbrack", '['),
    ("rbrack", ']'),
    ("lcub", '{'),
    ("rcub", '}'),
    ("lbrace", '{'),
    ("rbrace", '}'),
    ("vert", '|'),
    ("verbar", '|'),
    ("plus", '+'),
    ("ast", '*'),
    ("quest", '?'),
    ("commat", '@'),
    ("hat", '^'),
    ("lowbar", '_'),
];

/// Named references browsers also accept without the `;`.
const LEGACY_NAMES: &[&str] = &["lt", "gt", "amp", "quot"];

/// Decodes HTML character references: numeric (`&#60;`, `&#x3c;`, `;` optional as browsers
/// allow) and the named ones above. `None` when there were none.
pub(super) fn html_decode(value: &str) -> Option<String> {
    if !value.contains('&') {
        return None;
    }
    let mut out = String::with_capacity(value.len());
    let mut changed = false;
    let mut rest = value;
    while let Some(at) = rest.find('&') {
        let (before, from_amp) = rest.split_at(at);
        out.push_str(before);
        let after = from_amp.get(1..).unwrap_or_default();
        match html_reference(after) {
            Some((c, used)) => {
                out.push(c);
                changed = true;
                rest = after.get(used..).unwrap_or_default();
            }
            None => {
                out.push('&');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    changed.then_some(out)
}

/// The character of the reference `text` starts with (after its `&`), and its length.
fn html_reference(text: &str) -> Option<(char, usize)> {
    let semicolon = |len: usize| len + usize::from(text.as_bytes().get(len) == Some(&b';'));
    if let Some(number) = text.strip_prefix('#') {
        let (digits, radix, prefix) = match number.strip_prefix(['x', 'X']) {
            Some(hex) => (hex, 16, 2),
            None => (number, 10, 1),
        };
        let len = digits
            .bytes()
            .take_while(|b| char::from(*b).is_digit(radix))
            .count();
        // Seven digits reach past U+10FFFF; longer runs are padding (`&#0000060`), which is
        // legal, so leading zeros are skipped rather than the reference refused.
        let significant = digits.get(..len)?.trim_start_matches('0');
        if len == 0 || significant.len() > 7 {
            return None;
        }
        let code = u32::from_str_radix(
            if significant.is_empty() {
                "0"
            } else {
                significant
            },
            radix,
        )
        .ok()?;
        let c = char::from_u32(code)
            .filter(|c| *c != '\0')
            .unwrap_or('\u{fffd}');
        return Some((c, semicolon(prefix + len)));
    }
    let len = text
        .bytes()
        .take(8)
        .take_while(u8::is_ascii_alphanumeric)
        .count();
    let name = text.get(..len)?;
    let (_, c) = NAMED_REFERENCES
        .iter()
        .find(|(known, _)| known.eq_ignore_ascii_case(name))?;
    let terminated = text.as_bytes().get(len) == Some(&b';');
    let legacy = LEGACY_NAMES
        .iter()
        .any(|legacy| legacy.eq_ignore_ascii_case(name));
    (terminated || legacy).then_some((*c, semicolon(len)))
}

/// Decodes `\uXXXX`, `\u{X...}` and `\xXX` escapes (JSON, JavaScript, many template languages).
/// `None` when there were none.
pub(super) fn escape_decode(value: &str) -> Option<String> {
    if !value.contains('\\') {
        return None;
    }
    let bytes = value.as_bytes();
    let mut out = String::with_capacity(value.len());
    let mut changed = false;
    let mut i = 0;
    let mut copied = 0;
    while let Some(at) = bytes.get(i..).and_then(|rest| memchr::memchr(b'\\', rest)) {
        let start = i + at;
        let decoded = match bytes.get(start + 1) {
            Some(b'u') if bytes.get(start + 2) == Some(&b'{') => {
                let digits = bytes
                    .get(start + 3..)
                    .unwrap_or_default()
                    .iter()
                    .take(7)
                    .take_while(|b| b.is_ascii_hexdigit())
                    .count();
                if bytes.get(start + 3 + digits) == Some(&b'}') {
                    hex_at(bytes, start + 3, digits).map(|code| (code, 4 + digits))
                } else {
                    None
                }
            }
            Some(b'u') => hex_at(bytes, start + 2, 4).map(|code| (code, 6)),
            Some(b'x') => hex_at(bytes, start + 2, 2).map(|code| (code, 4)),
            _ => None,
        };
        match decoded.and_then(|(code, len)| char::from_u32(code).map(|c| (c, len))) {
            Some((c, len)) => {
                out.push_str(value.get(copied..start).unwrap_or_default());
                out.push(c);
                changed = true;
                i = start + len;
                copied = i;
            }
            None => i = start + 1,
        }
    }
    out.push_str(value.get(copied..).unwrap_or_default());
    changed.then_some(out)
}

/// NFKC of `value` when it has non-ASCII characters that change under it. `None` otherwise.
pub(super) fn normalise(value: &str) -> Option<String> {
    if value.is_ascii() {
        return None;
    }
    let normalised: String = value.nfkc().take(MAX_NORMALISED_CHARS).collect();
    (normalised != value).then_some(normalised)
}

/// `value` with every encoding undone, in at most [`MAX_ROUNDS`] rounds, and which encodings
/// were undone; `None` when the value was not encoded at all.
pub(super) fn decode(value: &str) -> Option<(String, Encodings)> {
    let mut current: Option<String> = None;
    let mut undone = Encodings::default();
    for _ in 0..MAX_ROUNDS {
        let text = current.as_deref().unwrap_or(value);
        let mut round_changed = false;
        let mut next = text.to_owned();
        if let Some(normalised) = normalise(&next) {
            next = normalised;
            undone.insert(Encodings::UNICODE);
            round_changed = true;
        }
        if let Some((decoded, extra)) = percent_decode(&next, false) {
            next = decoded;
            undone.insert(Encodings::URL);
            undone.insert(extra);
            round_changed = true;
        }
        if let Some(decoded) = html_decode(&next) {
            next = decoded;
            undone.insert(Encodings::HTML);
            round_changed = true;
        }
        if let Some(decoded) = escape_decode(&next) {
            next = decoded;
            undone.insert(Encodings::ESCAPE);
            round_changed = true;
        }
        if !round_changed {
            break;
        }
        current = Some(next);
    }
    current.map(|text| (text, undone))
}
