//! The client's TLS fingerprint (JA4), from the ClientHello a serving connection received.
//!
//! The kernel copies a TLS connection's first received record (at most 4 KiB, in as many
//! pieces as the reads that brought it). On the serving end that is the ClientHello; JA4
//! condenses it into `t13d1516h2_8daaf6152771_b0da82dd1658`: protocol, TLS version, SNI,
//! cipher and extension counts and the first ALPN, then truncated SHA-256 hashes of the sorted
//! cipher suites and of the sorted extensions with the signature algorithms. The same client
//! software gives the same fingerprint wherever it runs, whatever it claims in `User-Agent`.
//! Specification: FoxIO's JA4 (TLS client) technical details, BSD 3-Clause.

use tls_parser::{
    TlsExtension, TlsExtensionType, TlsMessage, TlsMessageHandshake,
    parse_tls_client_hello_extensions, parse_tls_plaintext,
};

/// Largest handshake record assembled: the kernel copies no more.
const MAX_RECORD: usize = 4096;
/// TLS record header: content type, version, length.
const RECORD_HEADER: usize = 5;

/// The first received handshake record of one connection, as its pieces arrive.
#[derive(Debug, Default)]
pub struct ClientHelloAssembly {
    bytes: Vec<u8>,
    finished: bool,
}

/// What adding a piece gave.
#[derive(Debug, PartialEq, Eq)]
pub enum HelloProgress {
    /// More of the record is to come.
    Incomplete,
    /// The record is whole and is a ClientHello: its JA4.
    Fingerprint(String),
    /// Nothing to fingerprint: not a ClientHello, a piece missing, or bytes that do not parse.
    Unusable,
}

impl ClientHelloAssembly {
    /// Adds the piece that starts `offset` bytes into the record. Pieces after the outcome are
    /// ignored.
    pub fn add(&mut self, offset: u64, piece: &[u8]) -> Option<HelloProgress> {
        if self.finished {
            return None;
        }
        let progress = self.extend(offset, piece);
        if progress != HelloProgress::Incomplete {
            self.finished = true;
            self.bytes = Vec::new();
        }
        Some(progress)
    }

    fn extend(&mut self, offset: u64, piece: &[u8]) -> HelloProgress {
        if offset != self.bytes.len() as u64 {
            // A piece was lost on the way: the record cannot be rebuilt.
            return HelloProgress::Unusable;
        }
        let room = MAX_RECORD.saturating_sub(self.bytes.len());
        self.bytes
            .extend_from_slice(piece.get(..room.min(piece.len())).unwrap_or_default());
        let Some(&[high, low]) = self.bytes.get(3..RECORD_HEADER) else {
            return HelloProgress::Incomplete;
        };
        let whole = RECORD_HEADER + usize::from(u16::from_be_bytes([high, low]));
        if whole > MAX_RECORD {
            return HelloProgress::Unusable;
        }
        if self.bytes.len() < whole {
            return HelloProgress::Incomplete;
        }
        match ja4(self.bytes.get(..whole).unwrap_or_default()) {
            Some(fingerprint) => HelloProgress::Fingerprint(fingerprint),
            None => HelloProgress::Unusable,
        }
    }
}

/// The JA4 fingerprint of a whole TLS record holding a ClientHello; `None` for anything else.
pub fn ja4(record: &[u8]) -> Option<String> {
    let (_, plaintext) = parse_tls_plaintext(record).ok()?;
    let hello = plaintext.msg.iter().find_map(|message| match message {
        TlsMessage::Handshake(TlsMessageHandshake::ClientHello(hello)) => Some(hello),
        _ => None,
    })?;
    let extensions = match hello.ext {
        Some(bytes) => parse_tls_client_hello_extensions(bytes).ok()?.1,
        None => Vec::new(),
    };
    let ciphers: Vec<u16> = hello
        .ciphers
        .iter()
        .map(|cipher| cipher.0)
        .filter(|id| !is_grease(*id))
        .collect();
    let mut version = hello.version.0;
    let mut server_name = false;
    let mut first_alpn: Option<&[u8]> = None;
    let mut signature_algorithms: &[u16] = &[];
    let mut extension_ids = Vec::with_capacity(extensions.len());
    for extension in &extensions {
        let id = match extension {
            TlsExtension::Grease(..) => continue,
            TlsExtension::SupportedVersions(versions) => {
                if let Some(highest) = versions
                    .iter()
                    .map(|v| v.0)
                    .filter(|v| !is_grease(*v))
                    .max()
                {
                    version = highest;
                }
                TlsExtensionType::SupportedVersions.0
            }
            TlsExtension::SNI(_) => {
                server_name = true;
                TlsExtensionType::ServerName.0
            }
            TlsExtension::ALPN(protocols) => {
                first_alpn = protocols.first().copied();
                TlsExtensionType::ApplicationLayerProtocolNegotiation.0
            }
            TlsExtension::SignatureAlgorithms(algorithms) => {
                signature_algorithms = algorithms;
                TlsExtensionType::SignatureAlgorithms.0
            }
            other => TlsExtensionType::from(other).0,
        };
        if !is_grease(id) {
            extension_ids.push(id);
        }
    }
    let part_a = format!(
        "t{}{}{:02}{:02}{}",
        version_code(version),
        if server_name { 'd' } else { 'i' },
        ciphers.len().min(99),
        extension_ids.len().min(99),
        alpn_code(first_alpn),
    );
    let mut sorted_ciphers = ciphers;
    sorted_ciphers.sort_unstable();
    // SNI and ALPN are counted in part a but left out of the hash: they vary by destination.
    let mut hashed_extensions: Vec<u16> = extension_ids
        .into_iter()
        .filter(|id| {
            *id != TlsExtensionType::ServerName.0
                && *id != TlsExtensionType::ApplicationLayerProtocolNegotiation.0
        })
        .collect();
    hashed_extensions.sort_unstable();
    let mut part_c = hex_list(&hashed_extensions);
    if !signature_algorithms.is_empty() {
        part_c.push('_');
        part_c.push_str(&hex_list(signature_algorithms));
    }
    Some(format!(
        "{part_a}_{}_{}",
        truncated_hash(&hex_list(&sorted_ciphers)),
        truncated_hash(if hashed_extensions.is_empty() {
            ""
        } else {
            &part_c
        }),
    ))
}

/// GREASE values (RFC 8701): `0x?a?a` with both bytes equal.
fn is_grease(value: u16) -> bool {
    let [high, low] = value.to_be_bytes();
    high == low && low & 0x0f == 0x0a
}

fn version_code(version: u16) -> &'static str {
    match version {
        0x0304 => "13",
        0x0303 => "12",
        0x0302 => "11",
        0x0301 => "10",
        0x0300 => "s3",
        0x0002 => "s2",
        _ => "00",
    }
}

/// First and last character of the first ALPN value; their hex digits when either is not
/// alphanumeric; `00` without ALPN.
fn alpn_code(alpn: Option<&[u8]>) -> String {
    let Some((&first, &last)) = alpn.and_then(|value| Some((value.first()?, value.last()?))) else {
        return "00".to_owned();
    };
    if first.is_ascii_alphanumeric() && last.is_ascii_alphanumeric() {
        return format!("{}{}", first as char, last as char);
    }
    format!("{:x}{:x}", first >> 4, last & 0x0f)
}

fn hex_list(values: &[u16]) -> String {
    values
        .iter()
        .map(|value| format!("{value:04x}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The first 12 hex digits of the SHA-256 of `text`; zeros for an empty list.
fn truncated_hash(text: &str) -> String {
    if text.is_empty() {
        return "000000000000".to_owned();
    }
    crate::digest::sha256_hex_prefix(text.as_bytes(), 6)
}

#[cfg(test)]
mod tests;
