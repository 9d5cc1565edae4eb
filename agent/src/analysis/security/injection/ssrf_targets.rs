//! SSRF-looking values: a value that is a URL (or a bare host) naming an address the server
//! should never be made to fetch from: loopback, private and link-local ranges, cloud metadata
//! endpoints, or a scheme that reads files or speaks raw protocols (`file:`, `gopher:`, `dict:`).
//!
//! Hosts are parsed twice: by the url crate (the WHATWG parser browsers and most HTTP clients
//! follow, which also reads `0x7f.1`, `2130706433`, `0177.0.0.1` and fullwidth digits), and
//! naively (authority up to the first `/`, host after the last `@`), because SSRF payloads aim at
//! the gap between the validator's parser and the fetcher's; a value is flagged if either names
//! an internal address. Address ranges come from the standard library's `Ipv4Addr`/`Ipv6Addr`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use url::{Host, Url};

/// Characters of a value read as a URL: longer values are text, not a link to follow.
const MAX_URL_LEN: usize = 4096;

/// Schemes that make a URL-fetching server read local files or talk raw TCP protocols.
const DANGEROUS_SCHEMES: &[&str] = &[
    "file", "gopher", "dict", "ldap", "ldaps", "tftp", "sftp", "jar", "netdoc",
];

/// Schemes whose URLs a server fetches over the network.
const FETCH_SCHEMES: &[&str] = &["http", "https", "ws", "wss", "ftp", "ftps"];

/// Host names of cloud metadata services and of loopback aliases.
const INTERNAL_NAMES: &[(&str, &str)] = &[
    ("localhost", "loopback"),
    ("localhost.localdomain", "loopback"),
    ("ip6-localhost", "loopback"),
    ("ip6-loopback", "loopback"),
    ("localtest.me", "loopback"),
    ("lvh.me", "loopback"),
    ("metadata.google.internal", "cloud-metadata"),
    ("metadata.goog", "cloud-metadata"),
    ("metadata", "cloud-metadata"),
    ("instance-data", "cloud-metadata"),
    ("instance-data.ec2.internal", "cloud-metadata"),
    ("metadata.azure.internal", "cloud-metadata"),
];

/// Wildcard-DNS services that resolve `10.0.0.1.nip.io` to the address in the name.
const WILDCARD_DNS: &[&str] = &[".nip.io", ".sslip.io", ".xip.io", ".traefik.me"];

/// Cloud metadata service addresses: AWS, GCP, Azure (169.254.169.254), AWS ECS (169.254.170.2),
/// Alibaba (100.100.100.200), Oracle (192.0.0.192).
const METADATA_V4: &[Ipv4Addr] = &[
    Ipv4Addr::new(169, 254, 169, 254),
    Ipv4Addr::new(169, 254, 170, 2),
    Ipv4Addr::new(100, 100, 100, 200),
    Ipv4Addr::new(192, 0, 0, 192),
];

/// AWS's IPv6 metadata endpoint.
const METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x254);

/// What makes a value SSRF-looking: the rule, and the host (lowercased) and port it names;
/// `target` is `None` for a scheme without a network host (`file:///etc/passwd`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SsrfFinding {
    pub(super) rule: &'static str,
    pub(super) target: Option<(String, Option<u16>)>,
}

/// Whether `value` (decoded, trimmed by the caller or not) is a URL or host naming an internal
/// address or using a dangerous scheme.
pub(super) fn check(value: &str) -> Option<SsrfFinding> {
    let value = value.trim();
    if value.is_empty() || value.len() > MAX_URL_LEN {
        return None;
    }
    let lower = value.to_ascii_lowercase();
    // Text with spaces is prose, unless it starts like a URL: `http://evil @localhost` is a
    // parser-differential payload, and only the naive reading sees its host.
    if value.contains(char::is_whitespace) {
        return scheme_of(&lower)
            .filter(|scheme| FETCH_SCHEMES.contains(scheme))
            .and_then(|_| naive_authority(after_scheme(&lower)))
            .and_then(classify_text)
            .map(finding);
    }
    match scheme_of(&lower) {
        Some(scheme) if DANGEROUS_SCHEMES.contains(&scheme) => {
            let target = Url::parse(&lower).ok().and_then(|url| {
                let host = url.host_str().filter(|host| !host.is_empty())?.to_owned();
                Some((host, url.port_or_known_default()))
            });
            Some(SsrfFinding {
                rule: match scheme {
                    "file" => "scheme-file",
                    "gopher" => "scheme-gopher",
                    "dict" => "scheme-dict",
                    _ => "scheme-other",
                },
                target,
            })
        }
        Some(scheme) => {
            let parsed = if FETCH_SCHEMES.contains(&scheme) {
                Url::parse(&lower).ok().and_then(|url| {
                    let host = url.host()?.to_owned();
                    internal_host(&host).map(|rule| (rule, host, url.port_or_known_default()))
                })
            } else {
                None
            };
            parsed
                .or_else(|| naive_authority(after_scheme(&lower)).and_then(classify_text))
                .map(finding)
        }
        // Protocol-relative `//host/`, as fetchers resolve it against `http:`.
        None if lower.starts_with("//") => {
            naive_authority(&lower).and_then(classify_text).map(finding)
        }
        None => bare_host(&lower).map(finding),
    }
}

fn finding((rule, host, port): (&'static str, Host<String>, Option<u16>)) -> SsrfFinding {
    let host = match host {
        Host::Domain(name) => name,
        Host::Ipv4(ip) => ip.to_string(),
        Host::Ipv6(ip) => ip.to_string(),
    };
    SsrfFinding {
        rule,
        target: Some((host, port)),
    }
}

/// The scheme of `lower` (`http` of `http://`, also `https` of `https:10.0.0.1`), if it has one.
fn scheme_of(lower: &str) -> Option<&str> {
    let colon = lower.find(':')?;
    let scheme = lower.get(..colon)?;
    let mut chars = scheme.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    // `localhost:8080` and `10.0.0.1:80` are hosts with ports, not schemes; `https:10.0.0.1`
    // is a URL all the same.
    let known = FETCH_SCHEMES.contains(&scheme) || DANGEROUS_SCHEMES.contains(&scheme);
    let rest = lower.get(colon + 1..).unwrap_or_default();
    let port_like = !known
        && !rest.starts_with('/')
        && rest
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_digit() || b == b'+');
    (valid && !port_like).then_some(scheme)
}

/// What follows `scheme:`, without the `//`.
fn after_scheme(lower: &str) -> &str {
    let rest = lower.split_once(':').map_or(lower, |(_, rest)| rest);
    rest.trim_start_matches(['/', '\\'])
}

/// The host and port of an authority read naively: up to the first `/`, `?` or `#`, after the
/// last `@`.
fn naive_authority(text: &str) -> Option<(&str, Option<u16>)> {
    let text = text.trim_start_matches('/');
    let end = text.find(['/', '?', '#']).unwrap_or(text.len());
    let authority = text.get(..end)?;
    let host_port = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    split_port(host_port)
}

/// `host` and its port from `host:port`, `[v6]:port`, or a bare IPv6 literal.
fn split_port(host_port: &str) -> Option<(&str, Option<u16>)> {
    if let Some(bracketed) = host_port.strip_prefix('[') {
        let (host, rest) = bracketed.split_once(']')?;
        let port = rest.strip_prefix(':').and_then(|port| port.parse().ok());
        return Some((host, port));
    }
    if host_port.matches(':').count() > 1 {
        return Some((host_port, None));
    }
    match host_port.split_once(':') {
        Some((host, port)) => Some((host, leading_port(port))),
        None => Some((host_port, None)),
    }
}

/// The port a lax parser reads from `11211aaa` or `+11211` (the digits it starts with).
fn leading_port(text: &str) -> Option<u16> {
    let digits = text.trim_start_matches('+');
    let len = digits.bytes().take_while(u8::is_ascii_digit).count();
    digits.get(..len)?.parse().ok()
}

/// Classifies a host read from text: an IPv6 literal, or anything the WHATWG host parser takes.
fn classify_text(
    (host, port): (&str, Option<u16>),
) -> Option<(&'static str, Host<String>, Option<u16>)> {
    let host = host.trim().trim_end_matches('.');
    // An IPv6 zone (`fe80::1%eth0`, `%25` in URLs) names the interface, not the host.
    let host = match host.split_once('%') {
        Some((address, _)) if address.contains(':') => address,
        _ => host,
    };
    if host.is_empty() {
        return None;
    }
    let parsed = match host.parse::<Ipv6Addr>() {
        Ok(ip) => Host::Ipv6(ip),
        Err(_) => Host::parse(host).ok()?,
    };
    internal_host(&parsed).map(|rule| (rule, parsed, port))
}

/// A value that is only a host (`10.0.0.1`, `[::1]:80`, `localhost:6379`,
/// `metadata.google.internal`). Shortened IPv4 forms (`127.1`) are left to URLs: bare, they are
/// version numbers as often as addresses.
fn bare_host(lower: &str) -> Option<(&'static str, Host<String>, Option<u16>)> {
    let end = lower.find(['/', '?', '#']).unwrap_or(lower.len());
    let (host, port) = split_port(lower.get(..end)?)?;
    let ip_like = host.parse::<IpAddr>().is_ok() || dotted_quad(host);
    // Single words (`metadata`) are words; dotted numbers other than four parts are versions.
    let named = (host.contains('.') || host == "localhost")
        && !host.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    if !ip_like && !named {
        return None;
    }
    classify_text((host, port))
}

/// Four dot-separated numbers, decimal, octal or hex (`0x7f.0.0.1`).
fn dotted_quad(host: &str) -> bool {
    host.split('.').count() == 4
        && host.split('.').all(|part| {
            !part.is_empty() && part.bytes().all(|b| b.is_ascii_hexdigit() || b == b'x')
        })
}

/// Why `host` is internal, if it is.
fn internal_host(host: &Host<String>) -> Option<&'static str> {
    match host {
        Host::Ipv4(ip) => internal_v4(*ip),
        Host::Ipv6(ip) => internal_v6(*ip),
        Host::Domain(name) => internal_name(name.trim_end_matches('.')),
    }
}

fn internal_name(name: &str) -> Option<&'static str> {
    if let Some((_, rule)) = INTERNAL_NAMES.iter().find(|(known, _)| *known == name) {
        return Some(rule);
    }
    if name.ends_with(".localhost") || name.ends_with(".localtest.me") || name.ends_with(".lvh.me")
    {
        return Some("loopback");
    }
    // `.internal` is reserved for private networks (ICANN, 2024).
    if name.ends_with(".internal") {
        return Some("internal-name");
    }
    let embedded = WILDCARD_DNS
        .iter()
        .find_map(|suffix| name.strip_suffix(suffix))?;
    // `10.0.0.1.nip.io`, `app-10-0-0-1.nip.io`, `10-0-0-1.sslip.io`: the last four numbers.
    let numbers: Vec<&str> = embedded.rsplit(['.', '-']).take(4).collect();
    let octets: Option<Vec<u8>> = numbers.iter().rev().map(|n| n.parse().ok()).collect();
    match octets.as_deref() {
        Some(&[a, b, c, d]) => internal_v4(Ipv4Addr::new(a, b, c, d)).map(|_| "wildcard-dns"),
        _ => None,
    }
}

fn internal_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [first, second, third, _] = ip.octets();
    if METADATA_V4.contains(&ip) {
        Some("cloud-metadata")
    } else if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_unspecified() || first == 0 {
        // 0.0.0.0 reaches the host itself on Linux; the rest of 0/8 is "this network".
        Some("unspecified")
    } else if ip.is_private() {
        Some("private")
    } else if ip.is_link_local() {
        Some("link-local")
    } else if first == 100 && second & 0xc0 == 64 {
        // 100.64.0.0/10, carrier-grade NAT and many clusters' pod networks.
        Some("shared-address-space")
    } else if first == 192 && second == 0 && third == 0 {
        Some("ietf-protocol-assignments")
    } else if ip.is_broadcast() {
        Some("broadcast")
    } else {
        None
    }
}

fn internal_v6(ip: Ipv6Addr) -> Option<&'static str> {
    if ip == METADATA_V6 {
        return Some("cloud-metadata");
    }
    if ip.is_loopback() {
        return Some("loopback");
    }
    if ip.is_unspecified() {
        return Some("unspecified");
    }
    if let Some(v4) = embedded_v4(ip) {
        return internal_v4(v4);
    }
    if ip.is_unique_local() {
        Some("unique-local")
    } else if ip.is_unicast_link_local() {
        Some("link-local")
    } else {
        None
    }
}

/// The IPv4 address an IPv6 address stands for: mapped (`::ffff:a.b.c.d`), compatible
/// (`::a.b.c.d`), SIIT (`::ffff:0:a.b.c.d`) and NAT64 (`64:ff9b::/96`, `64:ff9b:1::/48`), all of
/// which some stacks or gateways route to the IPv4 host.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    let [s0, s1, s2, s3, s4, s5, s6, s7] = ip.segments();
    let tail = Ipv4Addr::from((u32::from(s6) << 16) | u32::from(s7));
    let zero_prefix = [s0, s1, s2, s3] == [0; 4];
    let compatible = zero_prefix && s4 == 0 && s5 == 0;
    let siit = zero_prefix && s4 == 0xffff && s5 == 0;
    let nat64 = [s0, s1, s2, s3, s4, s5] == [0x64, 0xff9b, 0, 0, 0, 0];
    let local_nat64 = s0 == 0x64 && s1 == 0xff9b && s2 == 1;
    (compatible || siit || nat64 || local_nat64).then_some(tail)
}
