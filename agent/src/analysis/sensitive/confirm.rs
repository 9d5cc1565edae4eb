//! Confirmations of candidates: word and number boundaries, checksums (Luhn, ISO 13616),
//! issuer ranges, phone and SSN layouts, a JWT's decoded header.

use base64::Engine as _;
use email_address::{EmailAddress, Options};
use serde_json::{Map, Value};

use super::MAX_JWT_HEADER;

pub(super) fn byte_at(text: &str, index: Option<usize>) -> Option<u8> {
    index.and_then(|index| text.as_bytes().get(index)).copied()
}

/// Not glued to a longer word: `xAKIA…` or `sk_live_…9x` are something else.
pub(super) fn is_standalone_word(text: &str, start: usize, end: usize) -> bool {
    let is_word = |byte: Option<u8>| byte.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_');
    !is_word(byte_at(text, start.checked_sub(1))) && !is_word(byte_at(text, Some(end)))
}

/// Not glued to a word nor to another number (`v1.4111…`, `0.4111…`, `12:34`,
/// `2024 555-…`), nor after a `+` (a phone's country code, an exponent): only then are its
/// digits read as one value.
pub(super) fn is_standalone_number(text: &str, start: usize, end: usize) -> bool {
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
pub(super) const FILE_EXTENSIONS: [&str; 12] = [
    "png", "jpg", "jpeg", "gif", "svg", "webp", "ico", "css", "js", "json", "html", "txt",
];

pub(super) fn is_email(text: &str, start: usize, end: usize, candidate: &str) -> bool {
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
pub(super) fn in_url_userinfo(text: &str, start: usize) -> bool {
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
pub(super) fn is_card(run: &str) -> bool {
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
pub(super) fn is_card_layout(groups: &[usize]) -> bool {
    let Some((last, leading)) = groups.split_last() else {
        return false;
    };
    let fours =
        !leading.is_empty() && leading.iter().all(|len| *len == 4) && (1..=4).contains(last);
    fours || groups == [4, 6, 5] || groups == [4, 6, 4]
}

/// The card lengths from `from` to `to`, one bit each.
pub(super) const fn lengths(from: u32, to: u32) -> u32 {
    (1 << (to + 1)) - (1 << from)
}

/// Issuer ranges (on the first digits) and the lengths each issues.
pub(super) const ISSUERS: [(u32, u32, u32); 17] = [
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
pub(super) fn is_card_number(digits: &str) -> bool {
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

pub(super) fn luhn(digits: &str) -> bool {
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
pub(super) fn is_iban(candidate: &str) -> bool {
    let ends =
        std::iter::once(candidate.len()).chain(candidate.rmatch_indices(' ').map(|(at, _)| at));
    ends.filter_map(|end| candidate.get(..end))
        .map(|printed| printed.replace(' ', ""))
        .take_while(|electronic| electronic.len() >= 15)
        .any(|electronic| electronic.parse::<iban::Iban>().is_ok())
}

pub(super) fn digit_count(text: &str) -> usize {
    text.bytes().filter(u8::is_ascii_digit).count()
}

/// `2024-01-15` or `15.01.2024`: a date, not a phone number.
pub(super) fn looks_like_date(text: &str) -> bool {
    let mut groups = text
        .split(|c: char| !c.is_ascii_digit())
        .filter(|group| !group.is_empty())
        .map(str::len);
    matches!(
        (groups.next(), groups.next(), groups.next(), groups.next()),
        (Some(4), Some(2), Some(2), None) | (Some(2), Some(2), Some(4), None)
    )
}

pub(super) fn is_intl_phone(candidate: &str) -> bool {
    (8..=15).contains(&digit_count(candidate))
        && has_phone_layout(candidate)
        && !looks_like_date(candidate)
}

/// Single separators between digits, a space allowed around one parenthesised area code.
pub(super) fn has_phone_layout(candidate: &str) -> bool {
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
pub(super) fn is_nanp_phone(candidate: &str) -> bool {
    if candidate.contains('(') {
        return true;
    }
    let mut separators = candidate.bytes().rev().filter(|b| !b.is_ascii_digit());
    let (last, previous) = (separators.next(), separators.next());
    last.is_some() && last == previous && last != Some(b' ')
}

pub(super) fn is_trunk_phone(candidate: &str) -> bool {
    let mut separators = candidate.bytes().filter(|b| !b.is_ascii_digit());
    let first = separators.next();
    (10..=11).contains(&digit_count(candidate)) && separators.all(|b| Some(b) == first)
}

/// `AAA-GG-SSSS` outside the ranges the SSA never issues: area 000, 666 and 900-999,
/// group 00, serial 0000.
pub(super) fn is_ssn(candidate: &str) -> bool {
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
pub(super) fn is_jwt(text: &str, start: usize, candidate: &str) -> bool {
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
