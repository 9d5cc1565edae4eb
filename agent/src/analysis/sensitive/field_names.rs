//! `name: value` pairs, and what a field's name says about its value (passwords, AWS secret
//! keys, phone numbers).

use regex::{Match, Regex};

use super::{
    ClassSet, MAX_NAME, MAX_NODES, SensitiveClass,
    confirm::{digit_count, looks_like_date},
};

/// Calls `visit` with the name and value of each `name: value` (or `name=value`, or quoted)
/// pair in `text`, at most [`MAX_NODES`] of them.
pub(super) fn for_each_pair<'t>(
    regex: &Regex,
    text: &'t str,
    mut visit: impl FnMut(Match<'t>, Match<'t>),
) {
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
pub(super) fn named_pairs(regex: &Regex, text: &str, found: &mut ClassSet) {
    for_each_pair(regex, text, |name, value| {
        named_classes(name.as_str(), value.as_str(), found);
    });
}

/// Where the sensitive values of `name: value` pairs are in `text`, for redaction.
pub(super) fn pair_values(
    regex: &Regex,
    text: &str,
    cuts: &mut Vec<(usize, usize, SensitiveClass)>,
) {
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
pub(super) fn named_classes(name: &str, value: &str, found: &mut ClassSet) {
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
pub(super) fn is_placeholder(value: &str) -> bool {
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
pub(super) fn name_words(name: &str) -> String {
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
pub(super) const PASSWORD_METADATA: [&str; 28] = [
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
pub(super) fn is_password_word(word: &str) -> bool {
    const SUFFIXES: [&str; 4] = ["password", "passwd", "passphrase", "secret"];
    matches!(word, "pwd" | "pass" | "passcode" | "secrets")
        || SUFFIXES.iter().any(|suffix| word.ends_with(suffix))
}

pub(super) fn names_password(words: &str) -> bool {
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

pub(super) fn names_aws_secret(words: &str) -> bool {
    let joined = words.replace('_', "");
    joined.contains("secretaccesskey") || joined.contains("awssecret")
}

pub(super) fn is_aws_secret_value(value: &str) -> bool {
    value.len() == 40
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'/' || b == b'+')
}

pub(super) fn names_phone(words: &str) -> bool {
    words.split('_').any(|word| {
        word.ends_with("phone") || matches!(word, "mobile" | "msisdn" | "tel" | "cell" | "fax")
    })
}

/// Digits with the usual punctuation, 7 to 15 of them, and not a date.
pub(super) fn is_phone_value(value: &str) -> bool {
    let value = value.trim();
    let number = value.strip_prefix('+').unwrap_or(value);
    number
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b' ' | b'-' | b'.' | b'(' | b')'))
        && (7..=15).contains(&digit_count(number))
        && !looks_like_date(number)
}
