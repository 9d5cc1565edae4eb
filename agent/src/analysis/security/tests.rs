use std::path::PathBuf;

use bytes::Bytes;

use super::{
    rules::{Lane, Rule},
    *,
};
use crate::{
    analysis::events,
    calls::Side,
    protocols::http::{Header, HttpExchange},
    testing::call,
};

fn header(name: &str, value: &str) -> Header {
    Header {
        name: name.into(),
        value: Bytes::copy_from_slice(value.as_bytes()),
    }
}

/// A served `GET target` from `peer`, answered `status`.
fn served(target: &str, headers: Vec<Header>, status: u16, peer: &str) -> EnrichedCall {
    let mut analyzed = call(Side::Server, status, headers);
    let http = analyzed
        .call
        .call
        .exchange_mut::<HttpExchange>()
        .expect("an HTTP call");
    http.request.method = "GET".into();
    http.request.target = target.into();
    let mut connection = (*analyzed.call.call.connection).clone();
    connection.peer = Some(peer.parse().unwrap());
    analyzed.call.call.connection = Arc::new(connection);
    analyzed.call
}

/// An outbound call of the serving process to `peer`, naming it as its `Host`.
fn outbound_call(peer: &str) -> EnrichedCall {
    let mut outbound = call(Side::Client, 200, vec![header("host", peer)]);
    let mut connection = (*outbound.call.call.connection).clone();
    connection.peer = Some(peer.parse().unwrap());
    outbound.call.call.connection = Arc::new(connection);
    outbound.call
}

struct Fixture {
    analyzer: SecurityAnalyzer,
    handle: Arc<RuleHandle>,
    pack: PathBuf,
    now_ms: u64,
}

impl Fixture {
    fn new() -> Self {
        let pack = std::env::temp_dir().join(format!(
            "apiscope-pack-{}-{:x}.yaml",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::write(&pack, "name: team\nversion: '1'\n").unwrap();
        let handle = RuleHandle::new(ActiveRules::load(std::slice::from_ref(&pack)).unwrap());
        let analyzer = SecurityAnalyzer::new(
            Arc::clone(&handle),
            PrincipalKeyer::random(),
            Arc::default(),
        );
        Self {
            analyzer,
            handle,
            pack,
            now_ms: 1_000_000,
        }
    }

    fn pack(&self, text: &str) {
        std::fs::write(&self.pack, text).unwrap();
        self.handle.reload(std::slice::from_ref(&self.pack));
    }

    fn assess(&mut self, call: &EnrichedCall, route: &str) -> Vec<ApiEvent> {
        self.now_ms += 10;
        self.analyzer.assess(call, Some(route), 0, self.now_ms)
    }

    /// The rule names of what `call` raised.
    fn rules(&mut self, call: &EnrichedCall, route: &str) -> Vec<String> {
        self.assess(call, route)
            .iter()
            .map(|event| attribute(event, "security_rule.name"))
            .collect()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.pack);
    }
}

fn rand_suffix() -> u64 {
    PrincipalKeyer::random().hash(b"suffix")
}

fn attribute(event: &ApiEvent, key: &str) -> String {
    event
        .attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.as_str().into_owned())
        .unwrap_or_default()
}

#[test]
fn an_injection_raises_its_rule_with_audit_evidence_and_no_value() {
    let mut fixture = Fixture::new();
    let attack = served(
        "/search?q=1%27%20OR%20%271%27%3D%271",
        Vec::new(),
        200,
        "10.0.0.7:5000",
    );
    let events = fixture.assess(&attack, "/search");
    let sqli = events
        .iter()
        .find(|event| attribute(event, "security_rule.name") == "sqli")
        .expect("sqli raised");
    assert_eq!(sqli.name, events::SECURITY_FINDING);
    assert_eq!(attribute(sqli, "apiscope.finding.location"), "query:q");
    assert_eq!(
        attribute(sqli, "security_rule.ruleset.name"),
        "apiscope-default"
    );
    assert_eq!(
        attribute(sqli, "apiscope.rules.sha256"),
        fixture.handle.current().audit.sha256
    );
    assert_eq!(attribute(sqli, "client.address"), "10.0.0.7");
    for kv in &sqli.attributes {
        assert!(!kv.value.as_str().contains("OR '1'"), "{kv:?}");
    }
    let benign = served(
        "/search?q=O%27Reilly%20books",
        Vec::new(),
        200,
        "10.0.0.7:5000",
    );
    assert!(fixture.rules(&benign, "/search").is_empty());
}

#[test]
fn a_rule_set_off_stops_and_a_bad_pack_keeps_the_old_rules() {
    let mut fixture = Fixture::new();
    let attack = served(
        "/files?name=..%2F..%2Fetc%2Fpasswd",
        Vec::new(),
        200,
        "10.0.0.7:5000",
    );
    assert!(
        fixture
            .rules(&attack, "/files")
            .contains(&"path-traversal".to_owned())
    );
    fixture.pack("name: team\nversion: '2'\nrules:\n  - id: path-traversal\n    lane: off\n");
    assert!(
        !fixture
            .rules(&attack, "/files")
            .contains(&"path-traversal".to_owned())
    );
    fixture.pack("name: team\nversion: '3'\nrules:\n  - id: path-traversal\n    lane: [\n");
    assert_eq!(fixture.handle.rejected(), 1);
    assert!(
        !fixture
            .rules(&attack, "/files")
            .contains(&"path-traversal".to_owned()),
        "the last good pack stays"
    );
    fixture.pack("name: team\nversion: '4'\nkill_switch: true\n");
    assert!(fixture.rules(&attack, "/files").is_empty());
}

#[test]
fn a_tls_client_is_flagged_once_a_pack_lists_its_fingerprint() {
    let ja4 = "t13d1812h2_85036bcba153_d41ae481755e";
    let mut fixture = Fixture::new();
    let mut call = served("/orders", Vec::new(), 200, "10.0.0.7:5000");
    let mut connection = (*call.call.connection).clone();
    connection.tls_client_ja4 = Some(ja4.into());
    call.call.connection = Arc::new(connection);
    let listed = "listed-tls-client".to_owned();
    assert!(
        !fixture.rules(&call, "/orders").contains(&listed),
        "the default list is empty"
    );
    fixture.pack(&format!(
        "name: team\nversion: '2'\nrules:\n  - id: listed-tls-client\n    match: {{detector: tls_fingerprint, ja4: [{}]}}\n",
        ja4.to_uppercase()
    ));
    let events = fixture.assess(&call, "/orders");
    let finding = events
        .iter()
        .find(|event| attribute(event, "security_rule.name") == listed)
        .expect("the listed client is flagged");
    assert!(attribute(finding, "apiscope.finding.evidence").contains(ja4));
    fixture.pack("name: team\nversion: '3'\nrules:\n  - id: listed-tls-client\n    match: {detector: tls_fingerprint, ja4: [curl]}\n");
    assert_eq!(
        fixture.handle.rejected(),
        1,
        "a list entry that is no JA4 is refused"
    );
}

#[test]
fn authentication_posture_rules() {
    let mut fixture = Fixture::new();
    let encode = |text: &str| {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
    };
    let token = format!(
        "{}.{}.",
        encode(r#"{"alg":"none"}"#),
        encode(r#"{"sub":"alice"}"#)
    );
    let none = served(
        "/me",
        vec![header("authorization", &format!("Bearer {token}"))],
        200,
        "10.0.0.7:5000",
    );
    let rules = fixture.rules(&none, "/me");
    assert!(rules.contains(&"jwt-alg-none".to_owned()), "{rules:?}");
    assert!(
        rules.contains(&"jwt-without-expiry".to_owned()),
        "{rules:?}"
    );
    let basic = served(
        "/me",
        vec![header("authorization", "Basic YWxpY2U6aHVudGVyMg==")],
        200,
        "10.0.0.7:5000",
    );
    assert!(
        fixture
            .rules(&basic, "/me")
            .contains(&"basic-over-plaintext".to_owned())
    );
    let query = served("/me?api_key=s3cret", Vec::new(), 200, "10.0.0.7:5000");
    let events = fixture.assess(&query, "/me");
    let found = events
        .iter()
        .find(|event| attribute(event, "security_rule.name") == "credentials-in-query")
        .expect("credentials-in-query");
    assert_eq!(
        attribute(found, "apiscope.finding.location"),
        "query:api_key"
    );
    assert!(events.iter().all(|event| !event.body.contains("s3cret")));
}

#[test]
fn enumeration_raises_bola_and_reading_ones_own_objects_does_not() {
    let mut fixture = Fixture::new();
    let mut raised = Vec::new();
    for id in 1..=3 {
        for _ in 0..10 {
            let own = served(&format!("/orders/{id}"), Vec::new(), 200, "10.0.0.8:5000");
            raised.extend(fixture.rules(&own, "/orders/{id}"));
        }
    }
    assert!(
        !raised.contains(&"bola-enumeration".to_owned()),
        "{raised:?}"
    );
    for id in 100..150 {
        let walk = served(&format!("/orders/{id}"), Vec::new(), 200, "10.0.0.9:5000");
        raised.extend(fixture.rules(&walk, "/orders/{id}"));
    }
    let bola = raised
        .iter()
        .filter(|rule| *rule == "bola-enumeration")
        .count();
    assert_eq!(bola, 1, "once per window: {raised:?}");
}

#[test]
fn ssrf_is_confirmed_by_the_servers_own_outbound_call() {
    let mut fixture = Fixture::new();
    assert!(
        fixture
            .assess(&outbound_call("127.0.0.1:9901"), "/")
            .is_empty()
    );
    let request = served(
        "/fetch?url=http%3A%2F%2F127.0.0.1%3A9901%2Fadmin",
        Vec::new(),
        200,
        "10.0.0.7:5000",
    );
    let rules = fixture.rules(&request, "/fetch");
    assert!(rules.contains(&"ssrf-attempt".to_owned()), "{rules:?}");
    assert!(rules.contains(&"ssrf-confirmed".to_owned()), "{rules:?}");
    let elsewhere = served(
        "/fetch?url=http%3A%2F%2F127.0.0.1%3A9902%2Fadmin",
        Vec::new(),
        200,
        "10.0.0.7:5000",
    );
    assert!(
        !fixture
            .rules(&elsewhere, "/fetch")
            .contains(&"ssrf-confirmed".to_owned())
    );
}

#[test]
fn an_ssrf_confirmed_after_its_request_names_the_request_but_no_client_address() {
    let mut fixture = Fixture::new();
    let request = served(
        "/fetch?url=http%3A%2F%2F127.0.0.1%3A9903%2Fadmin",
        Vec::new(),
        200,
        "10.0.0.7:5000",
    );
    let rules = fixture.rules(&request, "/fetch");
    assert!(rules.contains(&"ssrf-attempt".to_owned()), "{rules:?}");
    assert!(!rules.contains(&"ssrf-confirmed".to_owned()), "{rules:?}");
    let events = fixture.assess(&outbound_call("127.0.0.1:9903"), "/");
    let names: Vec<String> = events
        .iter()
        .map(|event| attribute(event, "security_rule.name"))
        .collect();
    assert_eq!(names, ["ssrf-confirmed"]);
    let confirmed = &events[0];
    assert_eq!(
        attribute(confirmed, "apiscope.finding.location"),
        "query:url"
    );
    assert_eq!(attribute(confirmed, "api.endpoint"), "GET /fetch");
    assert_eq!(
        attribute(confirmed, "apiscope.finding.evidence"),
        "the serving process called the address within the window, after the request"
    );
    assert_eq!(attribute(confirmed, "client.address"), "");
    assert!(
        fixture
            .assess(&outbound_call("127.0.0.1:9903"), "/")
            .is_empty(),
        "confirmed once"
    );
}

#[test]
fn a_connection_the_kernel_saw_confirms_an_ssrf_too() {
    let mut fixture = Fixture::new();
    let connection = Arc::clone(&outbound_call("127.0.0.1:9904").call.connection);
    fixture.analyzer.connected(&connection, fixture.now_ms);
    let request = served(
        "/fetch?url=http%3A%2F%2F127.0.0.1%3A9904%2Fadmin",
        Vec::new(),
        200,
        "10.0.0.7:5000",
    );
    let events = fixture.assess(&request, "/fetch");
    let confirmed = events
        .iter()
        .find(|event| attribute(event, "security_rule.name") == "ssrf-confirmed")
        .expect("ssrf-confirmed");
    assert_eq!(
        attribute(confirmed, "apiscope.finding.location"),
        "query:url"
    );
    assert_eq!(attribute(confirmed, "client.address"), "10.0.0.7");
}

#[test]
fn findings_follow_the_order_of_their_rules_whichever_family_judged_them() {
    let mut fixture = Fixture::new();
    fixture.pack(concat!(
        "name: team\nversion: '2'\nrules:\n",
        "  - id: team-sqli\n    version: 1\n    title: SQL injection, by the team\n",
        "    severity: high\n    lane: alert\n    category: injection\n",
        "    references: {owasp_api: 'API8:2023'}\n",
        "    match: {detector: injection, classes: [sqli]}\n",
    ));
    let attack = served(
        "/search?q=1%27%20OR%20%271%27%3D%271",
        vec![header("authorization", "Basic YWxpY2U6aHVudGVyMg==")],
        200,
        "10.0.0.7:5000",
    );
    assert_eq!(
        fixture.rules(&attack, "/search"),
        ["sqli", "basic-over-plaintext", "team-sqli"]
    );
}

#[test]
fn every_detector_of_the_default_pack_is_claimed_by_exactly_one_family() {
    // The default pack has a rule of every detector.
    let rules = ActiveRules::load(&[] as &[&str]).unwrap();
    for rule in &rules.rules {
        let mut single = Rule::clone(rule);
        single.lane = Lane::Alert;
        let single = [Arc::new(single)];
        let claimants = families()
            .iter_mut()
            .filter_map(|family| family.adopt(&single).then_some(()))
            .count();
        assert_eq!(claimants, 1, "{}", rule.id);
    }
}
