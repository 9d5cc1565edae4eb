//! End-to-end API inventory: the real agent watches a real JSON service (tests/fixtures/
//! users_api.py), classifies its endpoints against the spec its team declared
//! (tests/fixtures/users_api.yaml), templates its routes, reconstructs its OpenAPI document,
//! flags sensitive data classes without exporting a value, and keeps all of it across a
//! restart. Events arrive over OTLP at an in-process receiver (support/otlp.rs); the
//! inventory is read from the agent's own `/inventory` and `/openapi/{service}` endpoints.

mod support;

use std::{
    collections::BTreeSet,
    process::Command,
    time::{Duration, Instant},
};

use serde_json::Value;
use support::otlp::{FlatLog, OtlpReceiver, summarize_logs};
use support::{
    Agent, COMMAND_TIMEOUT, FIXTURE_READY_TIMEOUT, Proc, TempDir, agent_command, curl, find,
    fixture, free_port, python, random_hex, run,
};

/// How long a test waits for events or inventory entries.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(30);
/// Values the users API sends that must never leave the agent.
const SENSITIVE_VALUES: [&str; 6] = [
    "4111 1111 1111 1111",
    "4111111111111111",
    "GB82 WEST 1234 5698 7654 32",
    "GB82WEST12345698765432",
    "jane.doe@example.com",
    "AKIAIOSFODNN7EXAMPLE",
];

/// A users API: the server, its port and its service name. The name is the test's own:
/// every agent watches the whole host, so tests running side by side see each other's
/// servers.
struct UsersApi {
    _server: Proc,
    port: u16,
    service: String,
}

/// Starts the users API, named `users-api-<random>`.
fn users_api() -> UsersApi {
    let port = free_port();
    let service = format!("users-api-{}", random_hex(4));
    let mut server = Proc::spawn(
        "users_api.py",
        Command::new(python())
            .arg("-u")
            .arg(fixture("users_api.py"))
            .args(["--port", &port.to_string()])
            .env("OTEL_SERVICE_NAME", &service),
    );
    server.wait_stdout_line("READY", FIXTURE_READY_TIMEOUT, |l| l.trim() == "READY");
    UsersApi {
        _server: server,
        port,
        service,
    }
}

/// `--spec SERVICE=<the declared spec>`.
fn spec_flag(service: &str) -> String {
    format!("{service}={}", fixture("users_api.yaml").display())
}

/// Sends one request to the users API and checks it was answered.
fn call(port: u16, method: &str, path: &str, body: Option<&str>) {
    let url = format!("http://127.0.0.1:{port}{path}");
    let mut args = vec!["-s", "-o", "/dev/null", "-X", method, &url];
    if let Some(body) = body {
        args.extend(["-H", "Content-Type: application/json", "-d", body]);
    }
    let out = curl(&args);
    assert!(out.status.success(), "{method} {path}: {}", out.describe());
}

/// The endpoint `name` (e.g. `GET /users/{id}`) of `service` in an `/inventory` answer.
fn endpoint<'a>(inventory: &'a Value, service: &str, name: &str) -> Option<&'a Value> {
    inventory["services"]
        .as_array()?
        .iter()
        .filter(|entry| entry["name"] == service)
        .flat_map(|service| service["endpoints"].as_array().into_iter().flatten())
        .find(|endpoint| endpoint["endpoint"] == name)
}

/// Polls `/inventory` until `pred` holds; the agent has no signal for "inventory updated".
fn wait_for_inventory(agent: &mut Agent, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + EXPORT_TIMEOUT;
    loop {
        let text = agent.get("/inventory");
        let inventory: Value = serde_json::from_str(&text).unwrap_or_else(|error| {
            agent.fail(&format!("/inventory is not JSON ({error}): {text}"))
        });
        if pred(&inventory) {
            return inventory;
        }
        if Instant::now() >= deadline {
            agent.fail(&format!("the inventory never showed {what}: {text}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The events named `name` about `service`.
fn events<'a>(logs: &'a [FlatLog], service: &str, name: &str) -> Vec<&'a FlatLog> {
    logs.iter()
        .filter(|log| log.event_name == name && log.service() == Some(service))
        .collect()
}

fn endpoints_of(logs: &[&FlatLog]) -> BTreeSet<String> {
    logs.iter()
        .filter_map(|log| log.attr_str("api.endpoint").map(str::to_owned))
        .collect()
}

#[test]
fn a_declared_spec_tells_documented_shadow_zombie_and_orphan_endpoints() {
    let receiver = OtlpReceiver::start();
    let api = users_api();
    let (port, service) = (api.port, api.service.as_str());
    let mut agent = receiver.agent(
        &[
            "--spec",
            &spec_flag(service),
            "--set",
            "inventory.orphan_after_secs=3",
        ],
        &[("OTEL_BSP_SCHEDULE_DELAY", "200")],
    );
    call(port, "GET", "/users/7?verbose=1", None);
    call(port, "GET", "/admin/export", None);
    call(port, "GET", "/legacy/report", None);
    call(port, "POST", "/users", Some(r#"{"nick": "x"}"#));

    let called = [
        "GET /users/{id}",
        "GET /admin/export",
        "GET /legacy/report",
        "POST /users",
    ];
    // One tick's orphans may arrive in more than one export batch: wait for all of them.
    let never_called = [
        "GET /health",
        "GET /users",
        "GET /payments/{id}",
        "GET /orders/{id}",
    ];
    let logs = receiver.wait_for_logs(
        |logs| {
            let discovered = endpoints_of(&events(logs, service, "api.endpoint.discovered"));
            let orphaned = endpoints_of(&events(logs, service, "api.endpoint.orphan"));
            called.iter().all(|name| discovered.contains(*name))
                && never_called.iter().all(|name| orphaned.contains(*name))
                && events(logs, service, "api.schema.violation").len() >= 2
        },
        EXPORT_TIMEOUT,
    );
    let summary = summarize_logs(&logs);
    assert_eq!(
        endpoints_of(&events(&logs, service, "api.endpoint.shadow")),
        BTreeSet::from(["GET /admin/export".to_owned()]),
        "{summary}"
    );
    assert_eq!(
        endpoints_of(&events(&logs, service, "api.endpoint.zombie")),
        BTreeSet::from(["GET /legacy/report".to_owned()]),
        "{summary}"
    );
    // The first orphans reported are the operations never called since the agent started;
    // a called one can only become an orphan a window after its call, at a later tick.
    let orphans = events(&logs, service, "api.endpoint.orphan");
    let first_tick = orphans.iter().map(|log| log.time_unix_nano).min().unwrap();
    let first: Vec<&FlatLog> = orphans
        .iter()
        .copied()
        .filter(|log| log.time_unix_nano == first_tick)
        .collect();
    assert_eq!(
        endpoints_of(&first),
        BTreeSet::from(never_called.map(str::to_owned)),
        "{summary}"
    );

    // Each request that broke the spec is reported once, with the trace of its call.
    let violations = events(&logs, service, "api.schema.violation");
    let body = violations
        .iter()
        .find(|log| log.attr_str("api.endpoint") == Some("POST /users"))
        .unwrap_or_else(|| panic!("no violation of POST /users: {summary}"));
    assert_eq!(
        body.attr_str("api.violation.kind"),
        Some("invalid_body"),
        "{summary}"
    );
    let query = violations
        .iter()
        .find(|log| log.attr_str("api.endpoint") == Some("GET /users/{id}"))
        .unwrap_or_else(|| panic!("no violation of GET /users/{{id}}: {summary}"));
    assert_eq!(
        query.attr_str("api.violation.kind"),
        Some("unknown_parameter"),
        "{summary}"
    );
    assert!(
        query
            .attr_str("api.violation.location")
            .unwrap_or("")
            .contains("verbose"),
        "{summary}"
    );
    let spans = receiver.wait_for_spans(
        |spans| {
            spans
                .iter()
                .any(|span| span.is_server() && span.attr_str("http.route") == Some("/users"))
        },
        EXPORT_TIMEOUT,
    );
    let post = spans
        .iter()
        .find(|span| span.is_server() && span.attr_str("http.route") == Some("/users"))
        .unwrap();
    assert_eq!(
        (&body.trace_id, &body.span_id),
        (&post.trace_id, &post.span_id)
    );

    let inventory = wait_for_inventory(&mut agent, "four endpoints", |inventory| {
        called
            .iter()
            .all(|name| endpoint(inventory, service, name).is_some())
    });
    for (name, conformance) in [
        ("GET /users/{id}", "documented"),
        ("GET /admin/export", "shadow"),
        ("GET /legacy/report", "zombie"),
        ("POST /users", "documented"),
    ] {
        assert_eq!(
            endpoint(&inventory, service, name).unwrap()["conformance"],
            conformance,
            "{name}: {inventory}"
        );
    }
    let address = agent
        .endpoints_url()
        .trim_start_matches("http://")
        .to_owned();
    let table = run(
        agent_command().args(["inventory", "--server", &address]),
        COMMAND_TIMEOUT,
    );
    assert!(
        table.status.success(),
        "apiscope inventory: {}",
        table.describe()
    );
    let table = table.stdout_text();
    let row = |needle: &str| {
        table
            .lines()
            .find(|line| line.contains(needle))
            .unwrap_or("")
    };
    assert!(row("GET /admin/export").contains("shadow"), "{table}");
    assert!(row("GET /legacy/report").contains("zombie"), "{table}");
    assert!(row("GET /health").contains("orphan"), "{table}");
    agent.stop_for_lines();
}

#[test]
fn five_hundred_user_ids_are_one_endpoint_in_a_valid_openapi_document() {
    let api = users_api();
    let (port, service) = (api.port, api.service.as_str());
    let mut agent = Agent::start_exporting(&[], &[]);
    let urls: Vec<String> = (1..=500)
        .map(|id| format!("http://127.0.0.1:{port}/users/{id}"))
        .collect();
    let out = run(Command::new("curl").arg("-s").args(&urls), COMMAND_TIMEOUT);
    assert!(out.status.success(), "curl: {}", out.describe());

    let inventory = wait_for_inventory(&mut agent, "500 calls of GET /users/{id}", |inventory| {
        endpoint(inventory, service, "GET /users/{id}").is_some_and(|e| e["calls"] == 500)
    });
    let users: Vec<&Value> = inventory["services"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|entry| entry["name"] == service)
        .flat_map(|service| service["endpoints"].as_array().unwrap())
        .collect();
    assert_eq!(users.len(), 1, "one templated endpoint: {inventory}");

    let document = agent.get(&format!("/openapi/{service}"));
    let parsed: Value = serde_json::from_str(&document).unwrap();
    let operation = &parsed["paths"]["/users/{id}"]["get"];
    assert_eq!(operation["parameters"][0]["name"], "id", "{document}");
    assert_eq!(
        operation["parameters"][0]["schema"]["type"], "integer",
        "{document}"
    );
    assert_eq!(
        operation["responses"]["200"]["content"]["application/json"]["schema"]["properties"]["id"]
            ["type"],
        "integer",
        "{document}"
    );
    let dir = TempDir::new("openapi");
    let path = dir.join("users-api.json");
    std::fs::write(&path, &document).unwrap();
    let validated = run(
        Command::new(python())
            .arg("-c")
            .arg(
                "import json, sys\n\
             from openapi_spec_validator import validate\n\
             validate(json.load(open(sys.argv[1])))\n\
             print('VALID')",
            )
            .arg(&path),
        COMMAND_TIMEOUT,
    );
    assert!(
        validated.status.success() && validated.stdout_text().trim() == "VALID",
        "openapi-spec-validator: {}\n{document}",
        validated.describe()
    );
    agent.stop_for_lines();
}

#[test]
fn sensitive_data_classes_are_flagged_and_no_value_leaves_the_agent() {
    let receiver = OtlpReceiver::start();
    let api = users_api();
    let (port, service) = (api.port, api.service.as_str());
    let dir = TempDir::new("inventory-sensitive");
    let directory = dir.path().to_str().unwrap().to_owned();
    let mut agent = receiver.agent(
        &[],
        &[
            ("OTEL_BSP_SCHEDULE_DELAY", "200"),
            ("APISCOPE_INVENTORY_DIRECTORY", &directory),
            ("APISCOPE_INVENTORY_PERSIST_INTERVAL_SECS", "1"),
        ],
    );
    call(port, "GET", "/payments/1", None);
    call(port, "GET", "/orders/1", None);

    let expected = ["payment_card", "iban", "email", "aws_access_key"];
    let logs = receiver.wait_for_logs(
        |logs| {
            let classes: BTreeSet<&str> = events(logs, service, "api.sensitive_data.detected")
                .iter()
                .filter_map(|log| log.attr_str("api.sensitive_data.class"))
                .collect();
            expected.iter().all(|class| classes.contains(class))
        },
        EXPORT_TIMEOUT,
    );
    let summary = summarize_logs(&logs);
    let found: BTreeSet<(String, String, String)> =
        events(&logs, service, "api.sensitive_data.detected")
            .iter()
            .map(|log| {
                let attr = |key| log.attr_str(key).unwrap_or_default().to_owned();
                (
                    attr("api.endpoint"),
                    attr("api.sensitive_data.class"),
                    attr("api.sensitive_data.location"),
                )
            })
            .collect();
    for (class, location) in [
        ("payment_card", "body/card"),
        ("iban", "body/iban"),
        ("email", "body/contact"),
        ("aws_access_key", "body/aws_key"),
    ] {
        let entry = (
            "GET /payments/{id}".to_owned(),
            class.to_owned(),
            location.to_owned(),
        );
        assert!(found.contains(&entry), "{entry:?} missing: {summary}");
    }
    assert!(
        found
            .iter()
            .all(|(endpoint, _, _)| endpoint != "GET /orders/{id}"),
        "a 16-digit number that fails Luhn is no card: {summary}"
    );

    let inventory = wait_for_inventory(&mut agent, "both endpoints", |inventory| {
        endpoint(inventory, service, "GET /orders/{id}").is_some()
            && endpoint(inventory, service, "GET /payments/{id}").is_some()
    });
    let payments =
        &endpoint(&inventory, service, "GET /payments/{id}").unwrap()["sensitive_response"];
    for class in expected {
        assert_eq!(payments[class], 1, "{class}: {inventory}");
    }
    let orders = &endpoint(&inventory, service, "GET /orders/{id}").unwrap()["sensitive_response"];
    assert_eq!(orders, &serde_json::json!({}), "{inventory}");
    let inventory_text = inventory.to_string();
    agent.stop_for_lines();

    let database = std::fs::read(dir.join("inventory.sqlite")).unwrap();
    let exported = receiver.all_bytes();
    for value in SENSITIVE_VALUES {
        for (place, bytes) in [
            ("the OTLP exports", exported.as_slice()),
            ("/inventory", inventory_text.as_bytes()),
            ("the inventory database", database.as_slice()),
        ] {
            assert!(
                find(bytes, value.as_bytes()).is_none(),
                "{value:?} found in {place}"
            );
        }
    }
}

#[test]
fn the_inventory_survives_a_restart_and_a_corrupt_database_is_refused() {
    let api = users_api();
    let (port, service) = (api.port, api.service.as_str());
    let dir = TempDir::new("inventory-restart");
    let directory = dir.path().to_str().unwrap().to_owned();
    let env = [("APISCOPE_INVENTORY_DIRECTORY", directory.as_str())];
    let mut agent = Agent::start_exporting(&[], &env);
    for id in 1..=3 {
        call(port, "GET", &format!("/users/{id}"), None);
    }
    wait_for_inventory(&mut agent, "3 calls of GET /users/{id}", |inventory| {
        endpoint(inventory, service, "GET /users/{id}").is_some_and(|e| e["calls"] == 3)
    });
    agent.stop_for_lines();

    // Restored before any new traffic.
    let mut agent = Agent::start_exporting(&[], &env);
    let text = agent.get("/inventory");
    let inventory: Value = serde_json::from_str(&text).unwrap();
    let users = endpoint(&inventory, service, "GET /users/{id}")
        .unwrap_or_else(|| agent.fail(&format!("not restored: {text}")));
    assert_eq!(users["calls"], 3, "{text}");
    agent.stop_for_lines();

    let path = dir.join("inventory.sqlite");
    let garbage = b"not an inventory: some other program's file\n".repeat(64);
    std::fs::write(&path, &garbage).unwrap();
    let refused = run(
        agent_command()
            .arg("run")
            .env("APISCOPE_INVENTORY_DIRECTORY", &directory),
        COMMAND_TIMEOUT,
    );
    let stderr = refused.stderr_text();
    assert!(
        !refused.status.success(),
        "started on a corrupt database: {}",
        refused.describe()
    );
    assert!(
        stderr.contains(&format!("inventory database {}", path.display()))
            && stderr.contains("left as it is"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read(&path).unwrap(),
        garbage,
        "the file was changed"
    );
}
