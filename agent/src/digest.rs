//! Short digests: what leaves the host, or names a thing, in place of bytes that must not
//! (a session id, a command line) or are too long to carry (a TLS fingerprint's lists).

use ring::digest::{SHA256, digest};

/// The first `bytes` bytes (at most 32) of the SHA-256 of `data`, as lowercase hex.
pub fn sha256_hex_prefix(data: &[u8], bytes: usize) -> String {
    let digest = digest(&SHA256, data);
    let whole = digest.as_ref();
    hex::encode(whole.get(..bytes).unwrap_or(whole))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_the_sha256() {
        assert_eq!(sha256_hex_prefix(b"abc", 4), "ba7816bf");
        assert_eq!(sha256_hex_prefix(b"abc", 64).len(), 64);
    }
}
