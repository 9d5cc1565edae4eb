//! Names that mark a value as a credential: such values never leave the host.

use std::sync::LazyLock;

use aho_corasick::AhoCorasick;

/// Words that, anywhere in a name (case-insensitive), make its value a secret.
const SECRET_WORDS: [&str; 9] = [
    "authorization",
    "cookie",
    "key",
    "token",
    "secret",
    "password",
    "session",
    "signature",
    "credential",
];

/// [`SECRET_WORDS`] as one automaton: every header and query parameter name of every call is
/// checked, several times, so one pass without a lower-cased copy matters.
static SECRET_WORD_FINDER: LazyLock<AhoCorasick> = LazyLock::new(|| {
    #[expect(
        clippy::expect_used,
        reason = "nine short literals, built by the unit tests; no input reaches the builder"
    )]
    AhoCorasick::builder()
        .ascii_case_insensitive(true)
        .build(SECRET_WORDS)
        .expect("the secret words build an automaton")
});

/// True for names whose values must never leave the host.
pub fn names_a_secret(name: &str) -> bool {
    SECRET_WORD_FINDER.is_match(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_words_match_anywhere_in_any_case() {
        for name in [
            "Authorization",
            "X-API-KEY",
            "access_token",
            "SessionId",
            "x-amz-signature",
        ] {
            assert!(names_a_secret(name), "{name}");
        }
        for name in ["host", "user-agent", "content-type", "page", ""] {
            assert!(!names_a_secret(name), "{name}");
        }
    }
}
