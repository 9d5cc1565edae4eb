use std::{
    fs,
    path::PathBuf,
    sync::atomic::{AtomicUsize, Ordering},
};

use super::*;

const USERS_3_0: &str = include_str!("testdata/users-3.0.yaml");
const USERS_3_1: &str = include_str!("testdata/users-3.1.yaml");

/// A file holding `text`, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, text: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let unique = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "apiscope-spec-{}-{unique}-{name}",
            std::process::id()
        ));
        fs::write(&path, text).expect("temp file is writable");
        Self(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

fn load(name: &str, text: &str) -> Result<DeclaredApi, SpecError> {
    let file = TempFile::new(name, text);
    DeclaredApi::load(&file.0)
}

fn both() -> [DeclaredApi; 2] {
    [
        load("users-3.0.yaml", USERS_3_0).expect("3.0 fixture loads"),
        load("users-3.1.yaml", USERS_3_1).expect("3.1 fixture loads"),
    ]
}

fn request<'a>(path: &'a str, query: Option<&'a str>) -> ObservedRequest<'a> {
    ObservedRequest {
        path,
        query,
        header_names: vec!["host", "x-request-id"],
        content_type: Some("application/json"),
        body: None,
        body_complete: true,
    }
}

fn with_body<'a>(body: &'a str) -> ObservedRequest<'a> {
    ObservedRequest {
        body: Some(body.as_bytes()),
        content_type: Some("application/json; charset=utf-8"),
        ..request("/api/v1/users", None)
    }
}

fn check(api: &DeclaredApi, method: &str, request: &ObservedRequest<'_>) -> Vec<Violation> {
    api.find(method, request.path)
        .expect("the request's operation is declared")
        .validate(request)
}

fn summary(violations: &[Violation]) -> Vec<(ViolationKind, &str)> {
    violations
        .iter()
        .map(|violation| (violation.kind, violation.location.as_str()))
        .collect()
}

#[test]
fn loads_both_versions() {
    for api in both() {
        assert_eq!(api.title(), "Users");
        assert_eq!(api.version(), "1.4.0");
        let mut declared: Vec<(&str, &str)> = api
            .operations()
            .iter()
            .map(|operation| (operation.method.as_str(), operation.path_template.as_str()))
            .collect();
        declared.sort_unstable();
        assert_eq!(
            declared,
            [
                ("DELETE", "/api/v1/users/{id}"),
                ("GET", "/api/v1/users"),
                ("GET", "/api/v1/users/me"),
                ("GET", "/api/v1/users/{id}"),
                ("POST", "/api/v1/users"),
            ]
        );
        let delete = api.find("delete", "/api/v1/users/7").expect("declared");
        assert!(delete.deprecated);
        assert_eq!(delete.operation_id.as_deref(), Some("deleteUser"));
        assert!(
            !api.find("GET", "/api/v1/users/7")
                .expect("declared")
                .deprecated
        );
    }
}

#[test]
fn loads_json() {
    let json = r#"{"openapi": "3.1.0", "info": {"title": "J", "version": "1"},
        "paths": {"/ping": {"get": {"responses": {"200": {"description": "ok"}}}}}}"#;
    let api = load("ping.json", json).expect("JSON loads");
    assert_eq!(
        api.find("GET", "/ping").map(|o| o.path_template.as_str()),
        Some("/ping")
    );
}

#[test]
fn broken_yaml_names_file_and_line() {
    let error = load(
        "broken.yaml",
        "openapi: 3.0.3\ninfo:\n  title: [unclosed\n  version: 1\n",
    )
    .expect_err("broken YAML is rejected");
    let message = error.to_string();
    assert!(message.contains("broken.yaml:"), "{message}");
    assert!(
        message.contains(":4:") || message.contains(":3:"),
        "{message}"
    );
    assert!(!message.contains('\n'), "{message}");
}

#[test]
fn wrong_structure_is_rejected_with_a_reason() {
    for version in ["3.0.3", "3.1.0"] {
        let text = format!("openapi: {version}\ninfo:\n  title: T\n  version: '1'\npaths: 5\n");
        let message = load("structure.yaml", &text)
            .expect_err("`paths: 5` is rejected")
            .to_string();
        assert!(message.contains("structure.yaml:5"), "{message}");
        assert!(message.contains("paths"), "{message}");
        assert!(message.contains("invalid type"), "{message}");
    }
}

#[test]
fn other_versions_are_rejected() {
    let swagger = "swagger: '2.0'\ninfo:\n  title: T\n  version: '1'\npaths: {}\n";
    let message = load("swagger.yaml", swagger)
        .expect_err("rejected")
        .to_string();
    assert!(message.contains("swagger.yaml"), "{message}");
    assert!(message.contains("Swagger `2.0`"), "{message}");
    let missing = load("none.yaml", "info:\n  title: T\n").expect_err("rejected");
    assert!(missing.to_string().contains("`openapi` field is missing"));
    let future = load("future.yaml", "openapi: 4.0.0\n").expect_err("rejected");
    assert!(future.to_string().contains("`4.0.0`"));
}

#[test]
fn unresolvable_reference_is_rejected() {
    let text = "openapi: 3.0.3\ninfo: {title: T, version: '1'}\npaths:\n  /a:\n    get:\n      \
                parameters:\n        - $ref: '#/components/parameters/Nope'\n      \
                responses: {'200': {description: ok}}\n";
    let message = load("ref.yaml", text).expect_err("rejected").to_string();
    assert!(message.contains("names nothing"), "{message}");
}

#[test]
fn literal_segments_beat_parameters() {
    for api in both() {
        let route = |path| api.find("GET", path).map(|o| o.path_template.as_str());
        assert_eq!(route("/api/v1/users/me"), Some("/api/v1/users/me"));
        assert_eq!(route("/api/v1/users/42"), Some("/api/v1/users/{id}"));
        assert_eq!(route("/api/v1/users/42/"), Some("/api/v1/users/{id}"));
        assert_eq!(route("/api/v1/users/"), Some("/api/v1/users"));
        assert_eq!(route("/api/v1/users//"), None);
        assert_eq!(route("/api/v1/users/42/posts"), None);
        assert_eq!(route("/users"), None);
        assert!(api.find("PUT", "/api/v1/users").is_none());
    }
}

#[test]
fn conforming_requests_have_no_violation() {
    for api in both() {
        assert_eq!(
            check(
                &api,
                "GET",
                &request("/api/v1/users", Some("limit=10&status=active"))
            ),
            []
        );
        assert_eq!(check(&api, "GET", &request("/api/v1/users/42", None)), []);
        let body = r#"{"name": "Ada", "nickname": null, "items": [{"qty": 2}]}"#;
        assert_eq!(check(&api, "POST", &with_body(body)), []);
    }
}

#[test]
fn unknown_query_parameter() {
    for api in both() {
        let violations = check(
            &api,
            "GET",
            &request("/api/v1/users", Some("limit=5&verbose=1")),
        );
        assert_eq!(
            summary(&violations),
            [(ViolationKind::UnknownParameter, "query.verbose")]
        );
    }
}

#[test]
fn invalid_parameters() {
    for api in both() {
        let violations = check(&api, "GET", &request("/api/v1/users", Some("limit=abc")));
        assert_eq!(
            summary(&violations),
            [(ViolationKind::InvalidParameter, "query.limit")]
        );
        assert_eq!(violations[0].reason, "expected integer");
        let violations = check(
            &api,
            "GET",
            &request("/api/v1/users", Some("limit=0&status=gone")),
        );
        assert_eq!(
            summary(&violations),
            [
                (ViolationKind::InvalidParameter, "query.limit"),
                (ViolationKind::InvalidParameter, "query.status"),
            ]
        );
        assert_eq!(violations[0].reason, "less than the minimum 1");
        assert_eq!(violations[1].reason, "not one of the allowed values");
        let violations = check(&api, "GET", &request("/api/v1/users/abc", None));
        assert_eq!(
            summary(&violations),
            [(ViolationKind::InvalidParameter, "path.id")]
        );
    }
}

#[test]
fn missing_header_and_body() {
    for api in both() {
        let request = ObservedRequest {
            header_names: vec!["host"],
            ..request("/api/v1/users", None)
        };
        let violations = check(&api, "POST", &request);
        assert_eq!(
            summary(&violations),
            [
                (ViolationKind::MissingParameter, "header.X-Request-Id"),
                (ViolationKind::MissingBody, "body"),
            ]
        );
    }
}

#[test]
fn invalid_bodies_are_located_by_pointer() {
    for api in both() {
        let mut violations = check(&api, "POST", &with_body(r#"{"nickname": 3}"#));
        violations.sort_by(|a, b| a.location.cmp(&b.location));
        assert_eq!(
            summary(&violations),
            [
                (ViolationKind::InvalidBody, "body"),
                (ViolationKind::InvalidBody, "body/nickname"),
            ]
        );
        assert_eq!(violations[0].reason, "required property `name` is missing");
        let violations = check(
            &api,
            "POST",
            &with_body(r#"{"name": "A", "items": [{"qty": "x"}]}"#),
        );
        assert_eq!(
            summary(&violations),
            [(ViolationKind::InvalidBody, "body/items/0/qty")]
        );
        assert_eq!(violations[0].reason, "expected integer");
        let violations = check(&api, "POST", &with_body(r#"{"name": "A", "foo": 1}"#));
        assert_eq!(
            violations[0].reason,
            "additional property `foo` is not allowed"
        );
        let violations = check(&api, "POST", &with_body("{not json"));
        assert_eq!(summary(&violations), [(ViolationKind::InvalidBody, "body")]);
        assert_eq!(violations[0].reason, "not valid JSON");
        let form = ObservedRequest {
            content_type: Some("text/plain"),
            ..with_body("name=A")
        };
        assert_eq!(
            summary(&check(&api, "POST", &form)),
            [(ViolationKind::InvalidBody, "body")]
        );
    }
}

#[test]
fn truncated_body_is_not_judged() {
    for api in both() {
        let cut = ObservedRequest {
            body_complete: false,
            ..with_body(r#"{"name": "Ada", "items": [{"qt"#)
        };
        assert_eq!(check(&api, "POST", &cut), []);
    }
}

#[test]
fn oversized_body_is_not_validated() {
    let api = load("users-3.0.yaml", USERS_3_0).expect("loads");
    let big = format!(r#"{{"nickname": "{}"}}"#, "a".repeat(70 * 1024));
    assert_eq!(check(&api, "POST", &with_body(&big)), []);
}

#[test]
fn violations_are_bounded() {
    let api = load("users-3.0.yaml", USERS_3_0).expect("loads");
    let query: Vec<String> = (0..100).map(|n| format!("p{n}=1")).collect();
    let query = query.join("&");
    assert_eq!(
        check(&api, "GET", &request("/api/v1/users", Some(&query))).len(),
        16
    );
    let items: Vec<&str> = vec![r#"{"qty": "x"}"#; 100];
    let body = format!(r#"{{"name": "A", "items": [{}]}}"#, items.join(","));
    assert_eq!(check(&api, "POST", &with_body(&body)).len(), 16);
}

#[test]
fn values_never_leak() {
    const SECRET: &str = "4111111111111111-hunter2";
    for api in both() {
        let query = format!("limit={SECRET}&status={SECRET}&token={SECRET}");
        let path = format!("/api/v1/users/{SECRET}");
        let body = format!(
            r#"{{"name": {{"card": "{SECRET}"}}, "password": "{SECRET}"[, "nickname": ["{SECRET}"], "items": [{{"qty": "{SECRET}"}}]}}"#
        )
        .replace("\"[", "\"");
        let mut violations = check(&api, "GET", &request("/api/v1/users", Some(&query)));
        violations.extend(check(&api, "GET", &request(&path, None)));
        violations.extend(check(&api, "POST", &with_body(&body)));
        assert!(violations.len() >= 6, "{violations:?}");
        let printed = format!("{violations:?}");
        assert!(!printed.contains("4111"), "{printed}");
        assert!(!printed.contains("hunter2"), "{printed}");
    }
}

#[test]
fn kinds_have_event_names() {
    assert_eq!(ViolationKind::UnknownParameter.name(), "unknown_parameter");
    assert_eq!(ViolationKind::MissingParameter.name(), "missing_parameter");
    assert_eq!(ViolationKind::InvalidParameter.name(), "invalid_parameter");
    assert_eq!(ViolationKind::MissingBody.name(), "missing_body");
    assert_eq!(ViolationKind::InvalidBody.name(), "invalid_body");
}

#[test]
fn uncompilable_schema_is_rejected() {
    let text = "openapi: 3.0.3\ninfo: {title: T, version: '1'}\npaths:\n  /a:\n    post:\n      \
                requestBody: {content: {application/json: {schema: {pattern: '(['}}}}\n      \
                responses: {'200': {description: ok}}\n";
    let message = load("regex.yaml", text).expect_err("rejected").to_string();
    assert!(message.contains("cannot be compiled"), "{message}");
    assert!(message.contains("/schema/pattern"), "{message}");
}

#[test]
fn array_parameters_are_split_and_coerced() {
    let text = "openapi: 3.1.0\ninfo: {title: T, version: '1'}\npaths:\n  /a:\n    get:\n      \
                parameters:\n        - {name: ids, in: query, explode: false, \
                schema: {type: array, items: {type: integer}}}\n        \
                - {name: tag, in: query, schema: {type: array, items: {type: string}}}\n      \
                responses: {'200': {description: ok}}\n";
    let api = load("arrays.yaml", text).expect("loads");
    assert_eq!(
        check(&api, "GET", &request("/a", Some("ids=1,2&tag=x&tag=y"))),
        []
    );
    let violations = check(&api, "GET", &request("/a", Some("ids=1,x")));
    assert_eq!(
        summary(&violations),
        [(ViolationKind::InvalidParameter, "query.ids")]
    );
}

#[test]
fn hostile_input_never_panics() {
    let text = "openapi: 3.0.3\ninfo: {title: T, version: '1'}\npaths:\n  /n/{id}:\n    post:\n      \
                parameters: [{name: id, in: path, required: true, schema: {type: boolean}}]\n      \
                requestBody: {content: {application/json: {schema: {$ref: '#/components/schemas/Node'}}}}\n      \
                responses: {'200': {description: ok}}\ncomponents:\n  schemas:\n    Node:\n      \
                type: object\n      properties: {children: {type: array, items: {$ref: '#/components/schemas/Node'}}}\n";
    let api = load("recursive.yaml", text).expect("recursive schemas load");
    let nested = format!("{}{}", r#"{"children": ["#.repeat(200), "]}".repeat(200));
    let bodies: [&[u8]; 5] = [
        b"\xff\xfe\x00",
        nested.as_bytes(),
        br#"{"children": [{"children": [1]}]}"#,
        b"",
        b"[]",
    ];
    for body in bodies {
        let request = ObservedRequest {
            path: "/n/%ff%",
            query: Some("%=&&=%zz&a=%ff"),
            header_names: Vec::new(),
            content_type: Some(";;/"),
            body: Some(body),
            body_complete: true,
        };
        let operation = api.find("POST", request.path).expect("declared");
        assert!(operation.validate(&request).len() <= 16);
    }
}
