//! `apiscope inventory`: the running agent's API inventory (from its `/inventory` endpoint)
//! as a readable table, or as the JSON itself.

use std::fmt::Write as _;

use serde_json::Value;

/// Flags of `apiscope inventory`.
#[derive(Debug, clap::Args)]
pub struct InventoryArgs {
    /// Address of the running agent's HTTP endpoints (its server.listen).
    #[arg(long, env = "APISCOPE_SERVER_LISTEN", default_value = "127.0.0.1:9750")]
    pub server: String,
    /// Print the inventory as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Why the inventory could not be shown.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    /// The agent did not answer.
    #[error("cannot read the inventory from {url} (is `apiscope run` running there?): {reason}")]
    Unreachable {
        /// What was asked.
        url: String,
        /// Why it failed.
        reason: String,
    },
}

/// Cells wider than this are cut, so one long route does not push the table off the screen.
const MAX_CELL: usize = 60;

/// Fetches the inventory and renders it as asked.
pub async fn show(args: &InventoryArgs) -> Result<String, InventoryError> {
    let url = format!(
        "http://{}/inventory",
        args.server.trim_start_matches("http://")
    );
    let unreachable = |reason: String| InventoryError::Unreachable {
        url: url.clone(),
        reason,
    };
    let response = reqwest::get(&url)
        .await
        .map_err(|error| unreachable(error.to_string()))?;
    let status = response.status();
    let text = response
        .text()
        .await
        .map_err(|error| unreachable(error.to_string()))?;
    if !status.is_success() {
        return Err(unreachable(format!("HTTP {status}: {}", text.trim())));
    }
    if args.json {
        return Ok(text);
    }
    let inventory: Value =
        serde_json::from_str(&text).map_err(|error| unreachable(error.to_string()))?;
    Ok(table(&inventory))
}

/// The inventory as a table: one row per endpoint, then one per orphaned operation.
pub fn table(inventory: &Value) -> String {
    let mut rows = vec![
        [
            "SERVICE",
            "ENDPOINT",
            "CALLS",
            "STATUS",
            "AUTH",
            "TLS",
            "SENSITIVE",
            "CODES",
        ]
        .map(str::to_owned),
    ];
    for service in array(&inventory["services"]) {
        let name = text(&service["name"]);
        for endpoint in array(&service["endpoints"]) {
            rows.push([
                name.clone(),
                text(&endpoint["endpoint"]),
                text(&endpoint["calls"]),
                conformance(&endpoint["conformance"]),
                keys(&[&endpoint["auth"]]),
                transport(endpoint),
                keys(&[
                    &endpoint["sensitive_request"],
                    &endpoint["sensitive_response"],
                ]),
                counts(&endpoint["statuses"]),
            ]);
        }
        for orphan in array(&service["orphans"]) {
            rows.push([
                name.clone(),
                text(orphan),
                "0".into(),
                "orphan".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
            ]);
        }
    }
    render(&rows)
}

fn array(value: &Value) -> &[Value] {
    value.as_array().map_or(&[], Vec::as_slice)
}

fn text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn conformance(value: &Value) -> String {
    match value.as_str() {
        Some("no_spec") | None => "-".into(),
        Some(other) => other.into(),
    }
}

/// The keys of the objects in `values`, joined: the schemes or classes seen.
fn keys(values: &[&Value]) -> String {
    let mut names: Vec<&str> = values
        .iter()
        .filter_map(|value| value.as_object())
        .flat_map(|object| object.keys().map(String::as_str))
        .collect();
    names.sort_unstable();
    names.dedup();
    if names.is_empty() {
        "-".into()
    } else {
        names.join(",")
    }
}

fn counts(value: &Value) -> String {
    let Some(object) = value.as_object() else {
        return "-".into();
    };
    let mut out = String::new();
    for (key, count) in object {
        let _ = write!(
            out,
            "{}{key}:{count}",
            if out.is_empty() { "" } else { " " }
        );
    }
    out
}

fn transport(endpoint: &Value) -> String {
    let tls = endpoint["tls_calls"].as_u64().unwrap_or(0);
    let plain = endpoint["plaintext_calls"].as_u64().unwrap_or(0);
    match (tls, plain) {
        (0, 0) => "-",
        (_, 0) => "tls",
        (0, _) => "plain",
        _ => "mixed",
    }
    .into()
}

fn render(rows: &[[String; 8]]) -> String {
    let cut = |cell: &str| -> String {
        if cell.chars().count() > MAX_CELL {
            cell.chars().take(MAX_CELL - 1).chain(['…']).collect()
        } else {
            cell.to_owned()
        }
    };
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|row| row.iter().map(|cell| cut(cell)).collect())
        .collect();
    let widths: Vec<usize> = (0..8)
        .map(|column| {
            rows.iter()
                .filter_map(|row| row.get(column))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (cell, width) in row.iter().zip(&widths) {
            let _ = write!(line, "{cell:<width$}  ");
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn endpoints_and_orphans_become_rows() {
        let inventory = json!({
            "services": [{
                "name": "users-api",
                "endpoints": [{
                    "endpoint": "GET /users/{id}",
                    "calls": 500,
                    "conformance": "documented",
                    "auth": {"jwt": 400, "none": 100},
                    "tls_calls": 0,
                    "plaintext_calls": 500,
                    "sensitive_request": {},
                    "sensitive_response": {"email": 500},
                    "statuses": {"200": 499, "404": 1},
                }],
                "orphans": ["GET /health"],
            }],
        });
        let table = table(&inventory);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3, "{table}");
        assert!(lines[0].starts_with("SERVICE"), "{table}");
        for cell in [
            "users-api",
            "GET /users/{id}",
            "500",
            "documented",
            "jwt,none",
            "plain",
            "email",
            "200:499 404:1",
        ] {
            assert!(lines[1].contains(cell), "{cell}: {table}");
        }
        assert!(
            lines[2].contains("GET /health") && lines[2].contains("orphan"),
            "{table}"
        );
    }
}
