//! End-to-end GraphQL over HTTP: the real agent (`apiscope run --otlp-endpoint ...`, as root)
//! turns curl's GraphQL requests to a graphql-core server (fixtures/graphql_server.py) into
//! spans named after their operations, exported over OTLP to an in-process receiver, one span
//! per operation of a batch on each side.
//!
//! The test finds its spans by the pids of the processes it started (each agent sees all
//! traffic on the host), waits until they have arrived, then stops the agent (which flushes on
//! SIGTERM) and checks everything exported, so duplicates sent late are caught too.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::otlp::{EXPORT_EVERY_500_MS, FlatSpan, OtlpReceiver, summarize_spans};
use support::{Finished, curl, find, free_port, start_python_server};

/// How long the test waits for its spans at the receiver.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(20);
/// `curl -d BODY URL` with a JSON content type; its answer parsed as JSON.
fn post(url: &str, body: &str) -> (Finished, Value) {
    let out = curl(&[
        "-sS",
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        body,
        url,
    ]);
    let answer = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("answer is not JSON ({e}): {}", out.describe()));
    (out, answer)
}

/// The names of `spans` of process `pid` and of `kind`, sorted.
fn names(spans: &[FlatSpan], pid: u32, server: bool) -> Vec<String> {
    let mut names: Vec<String> = spans
        .iter()
        .filter(|s| s.pid() == Some(pid) && if server { s.is_server() } else { s.is_client() })
        .map(|s| s.name.clone())
        .collect();
    names.sort();
    names
}

fn sorted(names: &[&str]) -> Vec<String> {
    let mut names: Vec<String> = names.iter().map(|&name| name.to_owned()).collect();
    names.sort();
    names
}

#[test]
fn graphql_operations_become_spans_named_after_them() {
    let receiver = OtlpReceiver::start();
    let port = free_port();
    let server = start_python_server("graphql_server.py", port, &[]);
    let mut agent = receiver.agent(&[], EXPORT_EVERY_500_MS);
    let url = format!("http://127.0.0.1:{port}/graphql");

    let (query, answer) = post(
        &url,
        r#"{"query":"query GetUser($id: ID!) { user(id: $id) { name } }","variables":{"id":"1"},"operationName":"GetUser"}"#,
    );
    assert_eq!(
        answer["data"]["user"]["name"],
        "Ada",
        "{}",
        query.describe()
    );
    let (mutation, answer) = post(
        &url,
        r#"{"query":"mutation AddUser($name: String!) { addUser(name: $name) { id } }","variables":{"name":"GraceSecretVariable"}}"#,
    );
    assert!(
        answer["data"]["addUser"]["id"].is_string(),
        "{}",
        mutation.describe()
    );
    let (batch, answer) = post(
        &url,
        r#"[{"query":"query ListUsers { users { name } }"},{"query":"query A { users { id } } mutation RemoveUser { removeUser(id: \"1\") }","operationName":"RemoveUser"}]"#,
    );
    assert_eq!(
        answer[1]["data"]["removeUser"],
        true,
        "{}",
        batch.describe()
    );
    let get = curl(&[
        "-sS",
        "-G",
        "--data-urlencode",
        "query={ users { id } }",
        &url,
    ]);
    assert!(
        get.stdout_text().contains("\"users\""),
        "{}",
        get.describe()
    );

    let expected: [(&Finished, &[&str]); 4] = [
        (&query, &["query GetUser"]),
        (&mutation, &["mutation AddUser"]),
        (&batch, &["query ListUsers", "mutation RemoveUser"]),
        (&get, &["query"]),
    ];
    let all: Vec<&str> = expected
        .iter()
        .flat_map(|(_, names)| names.iter().copied())
        .collect();
    let arrived = |spans: &[FlatSpan]| {
        names(spans, server.pid(), true).len() >= all.len()
            && expected
                .iter()
                .all(|(client, want)| names(spans, client.pid, false).len() >= want.len())
    };
    if let Err(spans) = receiver.try_wait_for_spans(arrived, EXPORT_TIMEOUT) {
        agent.fail(&format!(
            "the GraphQL spans did not arrive within {EXPORT_TIMEOUT:?}; got {}",
            summarize_spans(&spans)
        ));
    }
    agent.stop();
    let spans = receiver.spans();

    // One span per operation on each side, exactly: a batch is two calls, not one.
    assert_eq!(
        names(&spans, server.pid(), true),
        sorted(&all),
        "server spans: {}",
        summarize_spans(&spans)
    );
    for (client, want) in expected {
        assert_eq!(
            names(&spans, client.pid, false),
            sorted(want),
            "client spans of `{}`: {}",
            client.command,
            summarize_spans(&spans)
        );
    }
    let ours: Vec<&FlatSpan> = spans
        .iter()
        .filter(|s| {
            s.pid() == Some(server.pid()) || expected.iter().any(|(c, _)| s.pid() == Some(c.pid))
        })
        .collect();
    for span in &ours {
        let (kind, name) = span
            .name
            .split_once(' ')
            .unwrap_or((span.name.as_str(), ""));
        assert_eq!(
            span.attr_str("graphql.operation.type"),
            Some(kind),
            "{}",
            summarize_spans([*span])
        );
        assert_eq!(
            span.attr_str("graphql.operation.name"),
            (!name.is_empty()).then_some(name),
            "{}",
            summarize_spans([*span])
        );
        assert!(span.attr_str("http.request.method").is_some());
        assert!(span.attr("apiscope.graphql.incomplete").is_none());
    }
    // The batch's two operations are one HTTP exchange: same timing.
    let batch_spans: Vec<&&FlatSpan> = ours.iter().filter(|s| s.pid() == Some(batch.pid)).collect();
    assert_eq!(batch_spans.len(), 2);
    assert_eq!(
        batch_spans[0].start_unix_nano,
        batch_spans[1].start_unix_nano
    );
    assert_eq!(batch_spans[0].end_unix_nano, batch_spans[1].end_unix_nano);

    // Documents and variables stay on the host.
    let exported = receiver.all_bytes();
    for secret in ["GraceSecretVariable", "user(id: $id)", "removeUser(id"] {
        assert!(
            find(&exported, secret.as_bytes()).is_none(),
            "{secret:?} was exported"
        );
    }
}
