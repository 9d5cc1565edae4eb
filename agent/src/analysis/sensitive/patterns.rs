//! The patterns that find candidates, and how each pattern's candidates are confirmed.

use regex::Match;

use super::{
    SensitiveClass,
    confirm::{
        is_card, is_email, is_iban, is_intl_phone, is_jwt, is_nanp_phone, is_ssn,
        is_standalone_number, is_standalone_word, is_trunk_phone,
    },
};

/// How a pattern's candidates are confirmed.
#[derive(Debug, Clone, Copy)]
pub(super) enum Rule {
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
    pub(super) fn class(self) -> SensitiveClass {
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

    pub(super) fn accepts(self, text: &str, candidate: Match<'_>) -> bool {
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
pub(super) const RULES: [(Rule, &str); 18] = [
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
pub(super) const PAIR_PATTERN: &str = r#""([A-Za-z0-9_.-]{1,64})"[ \t]*:[ \t]*"([^"\\]{1,256})|([A-Za-z_][A-Za-z0-9_.-]{0,63})[ \t]*[=:][ \t]*['"]?([^ \t\r\n"'&,;=:]{1,256})"#;
