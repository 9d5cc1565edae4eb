//! Names that mark a value as a credential: such values never leave the host.

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

/// True for names whose values must never leave the host.
pub fn names_a_secret(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    SECRET_WORDS.iter().any(|word| name.contains(word))
}
