use std::{sync::LazyLock, time::Instant};

use super::{confirm::luhn, *};
use SensitiveClass::*;

static SCANNER: LazyLock<SensitiveScanner> = LazyLock::new(SensitiveScanner::new);

const JWT: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";
const AWS_SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

fn text(value: &str) -> Vec<SensitiveClass> {
    let mut out = Vec::new();
    SCANNER.scan_text(value, "t", &mut out);
    out.into_iter().map(|finding| finding.class).collect()
}

fn named(name: &str, value: &str) -> Vec<SensitiveClass> {
    let mut out = Vec::new();
    SCANNER.scan_named(name, value, "n", &mut out);
    out.into_iter().map(|finding| finding.class).collect()
}

#[test]
fn redaction_replaces_what_the_scan_finds_and_keeps_the_rest() {
    let redacted = SCANNER.redact(&format!(
        "Mail jane.doe@example.com, card 4111 1111 1111 1111, token {JWT}; password: hunter2 ok"
    ));
    for secret in [
        "jane.doe@example.com",
        "4111 1111 1111 1111",
        JWT,
        "hunter2",
    ] {
        assert!(!redacted.contains(secret), "{secret} in {redacted}");
    }
    assert!(redacted.starts_with("Mail [REDACTED:"), "{redacted}");
    assert!(redacted.ends_with(" ok"), "{redacted}");
    assert_eq!(SCANNER.redact("Say hello."), "Say hello.");
}

/// A body's findings, sorted (JSON objects are walked in key order).
fn body(bytes: &str, content_type: Option<&str>) -> Vec<(SensitiveClass, String)> {
    let mut out = Vec::new();
    SCANNER.scan_body(bytes.as_bytes(), content_type, &mut out);
    let mut findings: Vec<_> = out
        .into_iter()
        .map(|finding| (finding.class, finding.location))
        .collect();
    findings.sort();
    findings
}

fn json(bytes: &str) -> Vec<(SensitiveClass, String)> {
    body(bytes, Some("application/json"))
}

fn found(pairs: &[(SensitiveClass, &str)]) -> Vec<(SensitiveClass, String)> {
    let mut findings: Vec<_> = pairs
        .iter()
        .map(|(class, location)| (*class, (*location).to_owned()))
        .collect();
    findings.sort();
    findings
}

fn repeat(unit: &str, len: usize) -> String {
    unit.chars().cycle().take(len).collect()
}

/// One value of each class, as `(class, text)`.
fn samples() -> Vec<(SensitiveClass, String)> {
    vec![
        (Email, "bob.smith+tag@mail.example.co.uk".into()),
        (PaymentCard, "4111 1111 1111 1111".into()),
        (Iban, "GB82 WEST 1234 5698 7654 32".into()),
        (Phone, "+44 20 7946 0958".into()),
        (UsSsn, "219-09-9999".into()),
        (Jwt, JWT.into()),
        (PrivateKey, "-----BEGIN RSA PRIVATE KEY-----\nMIIEow".into()),
        (AwsAccessKey, "AKIAIOSFODNN7EXAMPLE".into()),
        (
            AwsSecretKey,
            format!("aws_secret_access_key = {AWS_SECRET}"),
        ),
        (GcpApiKey, format!("AIza{}", repeat("Sy9bC-d_E", 35))),
        (
            GcpServiceAccount,
            r#"{"type": "service_account", "project_id": "p""#.into(),
        ),
        (GithubToken, format!("ghp_{}", repeat("aB3dE6", 36))),
        (
            SlackToken,
            "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx".into(),
        ),
        (
            StripeKey,
            format!("sk_live_{}", repeat("4eC39HqLyjWDarjtT1zdp7dc", 24)),
        ),
        (OpenaiKey, format!("sk-proj-{}", repeat("Ab1_Cd2-Ef3", 48))),
        (
            AnthropicKey,
            format!("sk-ant-api03-{}", repeat("xY9_zW8-", 80)),
        ),
        (Password, r#"{"password": "hunter2!"#.into()),
    ]
}

#[test]
fn names_are_the_serde_names() {
    for class in SensitiveClass::ALL {
        let serialized = serde_json::to_string(&class).unwrap();
        assert_eq!(serialized, format!("\"{}\"", class.name()));
        assert_eq!(
            serde_json::from_str::<SensitiveClass>(&serialized).unwrap(),
            class
        );
    }
}

#[test]
fn every_sample_is_found_alone() {
    for (class, sample) in samples() {
        assert_eq!(text(&sample), [class], "{sample}");
        assert_eq!(text(&format!("seen: {sample} .")), [class], "{sample}");
    }
}

#[test]
fn findings_never_carry_the_value() {
    let mut out = Vec::new();
    for (_, sample) in samples() {
        SCANNER.scan_text(&sample, "header:x-test", &mut out);
        SCANNER.scan_named("password", &sample, "query:password", &mut out);
        let document = serde_json::json!({ "value": sample, "password": sample });
        SCANNER.scan_body(document.to_string().as_bytes(), None, &mut out);
    }
    assert!(out.len() >= SensitiveClass::ALL.len());
    let debug = format!("{out:?}");
    let field_names = ["aws_secret_access_key", "service_account", "password"];
    for (_, sample) in samples() {
        for secret in sample.split(|c: char| c.is_whitespace() || c == '"') {
            if secret.len() >= 6 && !field_names.contains(&secret) {
                assert!(!debug.contains(secret), "{secret} in {debug}");
            }
        }
    }
}

#[test]
fn benign_traffic_is_clean() {
    let response = r#"{
        "id": "550e8400-e29b-41d4-a716-446655440000",
        "order_id": "ORD-2024-000123", "order_number": 1002003004005,
        "created_at": "2024-01-15T10:30:00.123+05:30", "ts": 1733212800000,
        "updated": 1733212800123456, "price": 1299.99, "ratio": 0.4111111111111111,
        "total": "1,234,567.89", "version": "10.15.3", "build": "1.0.0+20130313144700",
        "sha256": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "etag": "W/\"5f3a9c0b1d2e4f60\"", "ip": "192.168.100.200",
        "avatar": "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAf4111111111111111FcSJAAAADUlEQVR42mNk+A8AAQUBAScY42YAAAAASUVORK5CYII=",
        "note": "ask the user@ desk", "asset": "logo@2x.png", "dep": "react@18.2.0",
        "passport_number": "X1234567", "compass": "north", "password_updated_at": "2024-01-01",
        "tags": ["a1b2c3d4", "2024-01-15", "12:30:45", "v2"], "page": {"size": 50, "next": null}
    }"#;
    assert!(json(response).is_empty(), "{:?}", json(response));
    for header in [
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0",
        "max-age=31536000; includeSubDomains",
        "Thu, 15 Jan 2024 10:30:00 GMT",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "gzip, deflate, br",
        "/api/v1/orders/1733212800000/items/42",
    ] {
        assert!(text(header).is_empty(), "{header}");
    }
}

#[test]
fn emails() {
    assert_eq!(text("write to alice@example.com today"), [Email]);
    assert_eq!(text("mailto:bob@example.org"), [Email]);
    assert_eq!(text("/users/bob@example.org/profile"), [Email]);
    for benign in [
        "ask the user@ in prose",
        "user@localhost",
        "icon@2x.png",
        "lodash@4.17.21",
        "@scope/package",
        "https://user:pass@example.com/path",
        "https://deploy@git.example.com/repo.git",
        "nobody@example.c",
    ] {
        assert!(text(benign).is_empty(), "{benign}");
    }
}

#[test]
fn payment_cards() {
    for card in [
        "4111 1111 1111 1111",
        "5500-0000-0000-0004",
        "4111111111111111",
        "378282246310005",
        "3782 822463 10005",
        "6011111111111117",
        "2223000048400011",
        "card 4111 1111 1111 1111 123",
    ] {
        assert_eq!(text(card), [PaymentCard], "{card}");
    }
    assert_eq!(
        json(r#"{"pan": 4111111111111111}"#),
        found(&[(PaymentCard, "body/pan")])
    );
    for benign in [
        "4111111111111112",
        "4111 1111 1111 1112",
        "1733212800000",
        "1733212800000000",
        "0.4111111111111111",
        "41111111111111110",
        "4111-1111 1111-1111",
        "41 11 11 11 11 11 11 11",
        "12345678-1234-1234-1234-123456789012",
        "550e8400-e29b-41d4-a716-446655440000",
        "iVBORw0KGgoAAAANSUhEUgAA4111111111111111AAAAFcSJAAAADUlEQVR42mNk",
        "order ORD4111111111111111",
        "v1.4111111111111111",
        "price 1234.56, total 99999.99",
    ] {
        assert!(text(benign).is_empty(), "{benign}");
    }
    assert!(json(r#"{"ts": 1733212800000, "ratio": 0.4111111111111111}"#).is_empty());
}

#[test]
fn luhn_checks() {
    assert!(luhn("4111111111111111"));
    assert!(luhn("79927398713"));
    assert!(!luhn("4111111111111112"));
}

#[test]
fn ibans() {
    assert_eq!(text("GB82 WEST 1234 5698 7654 32"), [Iban]);
    assert_eq!(text("iban: DE89370400440532013000."), [Iban]);
    assert_eq!(text("GB82 WEST 1234 5698 7654 32 EUR"), [Iban]);
    for benign in [
        "GB82 WEST 1234 5698 7654 33",
        "DE89370400440532013001",
        "XX89370400440532013000",
        "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
        "DE8937040044053201300099",
    ] {
        assert!(text(benign).is_empty(), "{benign}");
    }
}

#[test]
fn phones() {
    for phone in [
        "+44 20 7946 0958",
        "+4915112345678",
        "+1 (555) 234-5678",
        "call (555) 234-5678",
        "555-234-5678",
        "1-800-555-1234",
        "020 7946 0958",
        "06 12 34 56 78",
    ] {
        assert_eq!(text(phone), [Phone], "{phone}");
    }
    assert_eq!(named("mobileNumber", "5552345678"), [Phone]);
    assert_eq!(
        json(r#"{"user": {"phone": "07700900123"}}"#),
        found(&[(Phone, "body/user/phone")])
    );
    for benign in [
        "1733212800000",
        "2024-01-15T10:30:00+05:30",
        "+2024-01-15",
        "version 1.2.3",
        "1.0.0+20130313144700",
        "id 5552345678",
        "555 234 5678",
        "555-234.5678",
        "10.0.0.1",
        "+12345",
        "2024-01-15 10:30:00",
        "ORD-555-234-5678-99",
    ] {
        assert!(text(benign).is_empty(), "{benign}");
    }
    assert!(named("mobile_os_version", "17.2").is_empty());
    assert!(named("phone", "2024-01-15").is_empty());
}

#[test]
fn ssns() {
    assert_eq!(text("ssn 219-09-9999"), [UsSsn]);
    for benign in [
        "000-12-3456",
        "666-12-3456",
        "912-34-5678",
        "123-00-4567",
        "123-45-0000",
        "2024-01-15",
        "1123-45-6789",
        "123-45-67890",
        "123-45-6789-1",
    ] {
        assert!(text(benign).is_empty(), "{benign}");
    }
}

#[test]
fn jwts() {
    assert_eq!(text(&format!("token={JWT}")), [Jwt]);
    let no_alg = "eyJ0eXAiOiJKV1QifQ.eyJzdWIiOiIxIn0.c2lnbmF0dXJl";
    for benign in ["a.b.c", "www.example.com", "eyJhbGciOi.eyJzdWIi.x", no_alg] {
        assert!(text(benign).is_empty(), "{benign}");
    }
}

#[test]
fn private_keys() {
    for key in [
        "-----BEGIN PRIVATE KEY-----",
        "-----BEGIN OPENSSH PRIVATE KEY-----",
        "-----BEGIN ENCRYPTED PRIVATE KEY-----",
        "-----BEGIN PGP PRIVATE KEY BLOCK-----",
    ] {
        assert_eq!(text(key), [PrivateKey], "{key}");
    }
    assert!(text("-----BEGIN PUBLIC KEY-----").is_empty());
    assert!(text("-----BEGIN CERTIFICATE-----").is_empty());
}

#[test]
fn aws_keys() {
    assert_eq!(text("ASIAY34FZKBOKMUTVV7A"), [AwsAccessKey]);
    for benign in [
        "AKIAIOSFODNN7EXAMPL",
        "XAKIAIOSFODNN7EXAMPLE",
        "AIDAIOSFODNN7EXAMPLE",
    ] {
        assert!(text(benign).is_empty(), "{benign}");
    }
    assert_eq!(
        json(&format!(
            r#"{{"Credentials": {{"SecretAccessKey": "{AWS_SECRET}"}}}}"#
        )),
        found(&[(AwsSecretKey, "body/Credentials/SecretAccessKey")])
    );
    assert_eq!(named("aws_secret_access_key", AWS_SECRET), [AwsSecretKey]);
    assert_eq!(
        text(&format!("AWS_SECRET_ACCESS_KEY={AWS_SECRET}")),
        [AwsSecretKey]
    );
    assert!(text(AWS_SECRET).is_empty());
    assert!(named("checksum", AWS_SECRET).is_empty());
}

#[test]
fn gcp() {
    assert!(text(&format!("AIza{}", repeat("a", 34))).is_empty());
    let account = r#"{"credentials": {"type": "service_account", "private_key_id": "abc", "client_email": "x@p.iam.gserviceaccount.com"}}"#;
    let findings = json(account);
    assert!(findings.contains(&(GcpServiceAccount, "body/credentials".to_owned())));
    let cut = format!(r#"{{"private_key_id": "{}", "private_k"#, repeat("0a", 40));
    assert_eq!(json(&cut), found(&[(GcpServiceAccount, "body")]));
    assert!(json(r#"{"type": "user", "kind": "ServiceAccount"}"#).is_empty());
}

#[test]
fn vendor_tokens() {
    let pat = format!("github_pat_11ABCDEFG0{}", repeat("aZ09_", 60));
    assert_eq!(text(&pat), [GithubToken]);
    assert_eq!(text(&format!("ghs_{}", repeat("Q1", 36))), [GithubToken]);
    assert_eq!(
        text("https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX"),
        [SlackToken]
    );
    assert_eq!(text(&format!("rk_live_{}", repeat("Ab1", 24))), [StripeKey]);
    assert_eq!(text(&format!("pk_live_{}", repeat("Ab1", 24))), [StripeKey]);
    assert_eq!(text(&format!("sk_test_{}", repeat("Ab1", 24))), [StripeKey]);
    assert_eq!(text(&format!("sk-{}", repeat("Ab1", 48))), [OpenaiKey]);
    assert_eq!(
        text(&format!("sk-svcacct-{}", repeat("Ab1", 40))),
        [OpenaiKey]
    );
    for benign in [
        "ghp_short".to_owned(),
        format!("ghp_{}", repeat("a", 37)),
        "xoxz-123456789012-abcdef".to_owned(),
        format!("pk_test_{}", repeat("Ab1", 24)),
        "sk_live_short".to_owned(),
        format!("sk-{}", repeat("Ab1", 20)),
        "task-list-items-and-more".to_owned(),
        format!("ask-{}", repeat("Ab1", 48)),
    ] {
        assert!(text(&benign).is_empty(), "{benign}");
    }
}

#[test]
fn passwords() {
    assert_eq!(
        json(r#"{"password": "hunter2"}"#),
        found(&[(Password, "body/password")])
    );
    assert_eq!(
        json(r#"{"user": {"newPassword": "x1", "client_secret": "abc"}}"#),
        found(&[
            (Password, "body/user/newPassword"),
            (Password, "body/user/client_secret")
        ])
    );
    for name in [
        "pwd",
        "pass",
        "db_pass",
        "PASSWD",
        "passphrase",
        "api-secret",
        "password2",
    ] {
        assert_eq!(named(name, "abc"), [Password], "{name}");
    }
    for name in [
        "passport_number",
        "compass",
        "bypass",
        "passenger",
        "secretary",
        "password_updated_at",
        "passwordMinLength",
        "secret_name",
        "user",
    ] {
        assert!(named(name, "abc").is_empty(), "{name}");
    }
    for value in ["", "   ", "********", "null"] {
        assert!(named("password", value).is_empty(), "{value:?}");
    }
    assert!(json(r#"{"password": "", "pwd": true, "secret": null, "pass": 12}"#).is_empty());
}

#[test]
fn passwords_in_forms_and_text() {
    let form = body(
        "username=bob&password=hunter2&remember=1",
        Some("application/x-www-form-urlencoded"),
    );
    assert_eq!(form, found(&[(Password, "body/password")]));
    assert_eq!(
        text("https://app.example.com/login?user=bob&pwd=s3cret"),
        [Password]
    );
    assert_eq!(
        body(r#"{"user": "bob", "password": "hunt"#, None),
        found(&[(Password, "body")])
    );
    assert!(text("https://app.example.com/?passport=X1234567").is_empty());
}

#[test]
fn json_pointers_name_keys_and_indices() {
    let document = r#"{"users": [{"email": "a@example.com"},
        {"contacts": {"work/home": {"e~mail": "c@example.com"}}}], "n": [[1, "d@example.com"]]}"#;
    assert_eq!(
        json(document),
        found(&[
            (Email, "body/users/0/email"),
            (Email, "body/users/1/contacts/work~1home/e~0mail"),
            (Email, "body/n/0/1"),
        ])
    );
    assert_eq!(json(r#""e@example.com""#), found(&[(Email, "body")]));
}

#[test]
fn sensitive_keys_are_redacted_from_locations() {
    let findings = json(r#"{"by_user": {"bob@example.com": {"password": "x"}}}"#);
    assert_eq!(
        findings,
        found(&[
            (Email, "body/by_user/*"),
            (Password, "body/by_user/*/password")
        ])
    );
}

#[test]
fn json_detected_without_content_type() {
    assert_eq!(
        body(" \n{\"email\": \"a@example.com\"}", None),
        found(&[(Email, "body/email")])
    );
    assert_eq!(
        body("hello a@example.com", Some("text/plain")),
        found(&[(Email, "body")])
    );
    assert!(body("a@example.com", Some("image/png")).is_empty());
}

#[test]
fn truncated_json_is_scanned_as_text() {
    let cut = r#"{"users": [{"id": 1, "email": "bob@example.com", "name": "Bo"#;
    assert_eq!(json(cut), found(&[(Email, "body")]));
}

#[test]
fn findings_are_deduplicated() {
    let mut out = Vec::new();
    SCANNER.scan_text("a@example.com b@example.com", "path", &mut out);
    SCANNER.scan_text("c@example.com", "path", &mut out);
    SCANNER.scan_text("c@example.com", "query:e", &mut out);
    let locations: Vec<&str> = out
        .iter()
        .map(|finding| finding.location.as_str())
        .collect();
    assert_eq!(locations, ["path", "query:e"]);
}

#[test]
fn locations_are_capped() {
    let key = repeat("k/é", 1000);
    let findings = json(&format!(r#"{{"{key}": {{"{key}": "a@example.com"}}}}"#));
    assert_eq!(findings.len(), 1);
    assert!(
        findings
            .iter()
            .all(|(_, location)| location.len() <= MAX_LOCATION)
    );
    let mut out = Vec::new();
    SCANNER.scan_text("a@example.com", &repeat("é", 1000), &mut out);
    assert!(
        out.iter()
            .all(|finding| finding.location.len() <= MAX_LOCATION)
    );
}

#[test]
fn findings_per_call_are_capped() {
    let fields: Vec<String> = (0..1000)
        .map(|i| format!(r#""f{i}": "u{i}@example.com""#))
        .collect();
    let findings = json(&format!("{{{}}}", fields.join(",")));
    assert_eq!(findings.len(), MAX_FINDINGS);
}

#[test]
fn bounds_hold_on_hostile_input() {
    let started = Instant::now();
    let mut out = Vec::new();
    let huge = "a@example.com 4111 1111 1111 1111 +44 20 7946 0958 ".repeat(200_000);
    SCANNER.scan_text(&huge, "path", &mut out);
    SCANNER.scan_named("password", &huge, "query:password", &mut out);
    SCANNER.scan_body(huge.as_bytes(), None, &mut out);
    SCANNER.scan_body(
        huge.as_bytes(),
        Some("application/x-www-form-urlencoded"),
        &mut out,
    );
    for unit in [
        "[",
        "{\"a\":",
        "1",
        "a",
        "1 ",
        "1-",
        "eyJ",
        "\"a\":\"b\",",
        "aaa.",
        "AKIA",
    ] {
        let hostile = unit.repeat((10 << 20) / unit.len());
        SCANNER.scan_body(hostile.as_bytes(), Some("application/json"), &mut out);
        SCANNER.scan_text(&hostile, "t", &mut out);
    }
    let nested = format!("{}\"a@example.com\"{}", "[".repeat(120), "]".repeat(120));
    SCANNER.scan_body(nested.as_bytes(), None, &mut out);
    let wide = format!("[{}0]", "[],".repeat(20_000));
    SCANNER.scan_body(wide.as_bytes(), None, &mut out);
    let invalid: Vec<u8> = (0..=255u8).cycle().take(1 << 20).collect();
    SCANNER.scan_body(&invalid, None, &mut out);
    assert!(started.elapsed().as_secs() < 20, "{:?}", started.elapsed());
}

#[test]
fn depth_is_capped() {
    let deep = format!("{}\"a@example.com\"{}", "[".repeat(40), "]".repeat(40));
    assert!(json(&deep).is_empty());
    let shallow = format!("{}\"a@example.com\"{}", "[".repeat(10), "]".repeat(10));
    assert_eq!(json(&shallow).len(), 1);
}

#[test]
fn arbitrary_text_never_panics() {
    let alphabet: Vec<char> = "aA0 9-+.@_/:\"{}[]=,éß€\u{1F600}\n~xoxsk_AKIAeyJ"
        .chars()
        .collect();
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut out = Vec::new();
    for _ in 0..300 {
        let text: String = (0..2000)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                alphabet[(state % alphabet.len() as u64) as usize]
            })
            .collect();
        out.clear();
        SCANNER.scan_text(&text, &text, &mut out);
        SCANNER.scan_named(&text, &text, "n", &mut out);
        SCANNER.scan_body(text.as_bytes(), None, &mut out);
        SCANNER.scan_body(
            text.as_bytes(),
            Some("application/x-www-form-urlencoded"),
            &mut out,
        );
    }
    let boundary = format!("{}é a@example.com", "x".repeat(MAX_SCAN_BYTES - 1));
    SCANNER.scan_text(&boundary, "t", &mut out);
    SCANNER.scan_body(boundary.as_bytes(), None, &mut out);
}
