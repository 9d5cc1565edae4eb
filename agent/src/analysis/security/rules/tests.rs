use super::*;

fn merged(user: &str) -> Result<ActiveRules, PackError> {
    ActiveRules::from_sources(&[
        (DEFAULT_PACK_NAME.to_owned(), DEFAULT_PACK.to_owned()),
        ("team.yaml".to_owned(), user.to_owned()),
    ])
}

fn rule<'a>(rules: &'a ActiveRules, id: &str) -> &'a Rule {
    rules
        .rules
        .iter()
        .find(|rule| rule.id.as_str() == id)
        .unwrap_or_else(|| panic!("no rule {id}"))
}

#[test]
fn the_default_pack_loads_with_an_owasp_item_for_every_rule() {
    let rules = ActiveRules::load(&[] as &[&str]).unwrap();
    assert!(rules.rules.len() >= 15);
    assert!(!rules.kill_switch);
    assert_eq!(rules.audit.version, "apiscope-default@2026.12.0");
    assert_eq!(rules.audit.sha256.len(), 64);
    for rule in &rules.rules {
        assert!(rule.references.url().ends_with('/'), "{}", rule.id);
        assert_eq!(rule.uuid.len(), 36);
    }
    let bola = rule(&rules, "bola-enumeration");
    assert_eq!(
        bola.references.url(),
        "https://owasp.org/API-Security/editions/2023/en/0xa1-broken-object-level-authorization/"
    );
    assert_eq!(
        bola.references.text(),
        "OWASP API1:2023; PCI DSS 7.2.1; GDPR Art. 32"
    );
}

#[test]
fn a_user_pack_overrides_by_id_and_adds_rules() {
    let rules = merged(
        r#"
name: team
version: "3"
rules:
  - id: sqli
    lane: off
  - id: team-admin-traversal
    version: 1
    title: Traversal on the admin API
    severity: critical
    lane: monitor
    category: injection
    references: {owasp_api: "API5:2023"}
    match: {detector: injection, classes: [path_traversal]}
"#,
    )
    .unwrap();
    let sqli = rule(&rules, "sqli");
    assert_eq!((sqli.lane, sqli.ruleset.as_str()), (Lane::Off, "team"));
    assert_eq!(
        sqli.severity,
        RuleSeverity::High,
        "what the override leaves is kept"
    );
    assert_eq!(rule(&rules, "team-admin-traversal").lane, Lane::Monitor);
    assert_eq!(rules.audit.version, "apiscope-default@2026.12.0 + team@3");
    let default = ActiveRules::load(&[] as &[&str]).unwrap();
    assert_ne!(rules.audit.sha256, default.audit.sha256);
    assert!(rules.summary().contains("1 off"));
}

#[test]
fn the_kill_switch_is_a_pack_key() {
    let rules = merged("name: stop\nversion: '1'\nkill_switch: true\n").unwrap();
    assert!(rules.kill_switch);
    assert!(rules.summary().contains("KILL SWITCH ON"));
}

#[test]
fn bad_packs_name_file_line_and_reason() {
    for (text, line, reason) in [
        (
            "name: t\nversion: '1'\nrules:\n  - id: sqli\n    lane: sometimes\n",
            5,
            "unknown variant `sometimes`",
        ),
        (
            "name: t\nversion: '1'\nrules:\n  - id: sqli\n    colour: red\n",
            5,
            "unknown field `colour`",
        ),
        (
            "name: t\nversion: '1'\nrules:\n  - id: bola-enumeration\n    match: {detector: bola, distinct_ids: 0}\n",
            4,
            "distinct_ids",
        ),
        (
            "name: t\nversion: '1'\nrules:\n  - id: listed-tls-client\n    match: {detector: tls_fingerprint, ja4: [curl]}\n",
            4,
            "\"curl\" is not a JA4 fingerprint",
        ),
        (
            "name: t\nversion: '1'\nrules:\n  - id: Bad Id\n",
            4,
            "rule id `Bad Id`",
        ),
        (
            "name: t\nversion: '1'\nrules:\n  - id: brand-new\n    lane: alert\n",
            4,
            "a new rule needs `match`",
        ),
        (
            "name: t\nversion: '1'\nrules:\n  - id: x\n    references: {owasp_api: API11:2023}\n",
            5,
            "API1:2023 to API10:2023",
        ),
        (
            "name: t\nversion: '1'\nrules:\n  - id: x\n    match: {detector: telepathy}\n",
            5,
            "unknown variant `telepathy`",
        ),
    ] {
        let message = merged(text).unwrap_err().to_string();
        assert!(
            message.starts_with(&format!("team.yaml:{line}:")) && message.contains(reason),
            "{text}: {message}"
        );
    }
}
