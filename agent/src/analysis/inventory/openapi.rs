//! An OpenAPI 3.1 document reconstructed from a service's traffic: its HTTP endpoints with
//! templated paths, the parameters and JSON bodies seen, and the responses answered. What it
//! says is what was observed, marked so (`x-apiscope-*`), never a guess at the rest.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

use super::endpoint::{Endpoint, OTHER};

/// Methods an OpenAPI path item can hold.
const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// The document for `service`, from its endpoints.
pub fn document(service: &str, endpoints: &[&Endpoint]) -> Value {
    let mut operations: BTreeMap<(String, String), Vec<&Endpoint>> = BTreeMap::new();
    for endpoint in endpoints {
        let key = &endpoint.key;
        let method = key.method.to_ascii_lowercase();
        // Endpoints saved before their protocol said: all but gRPC's are described.
        let in_openapi = endpoint.in_openapi.unwrap_or(key.protocol != "grpc");
        let documentable =
            in_openapi && key.route.starts_with('/') && METHODS.contains(&method.as_str());
        if documentable {
            operations
                .entry((path_template(&key.route), method))
                .or_default()
                .push(endpoint);
        }
    }
    let mut paths = Map::new();
    let mut operation_ids = BTreeSet::new();
    for ((path, method), group) in &operations {
        let Some(operation) = operation(path, method, group, &mut operation_ids) else {
            continue;
        };
        let item = paths
            .entry(path.clone())
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(item) = item {
            item.insert(method.clone(), operation);
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": service,
            "version": "observed",
            "description": format!(
                "Reconstructed by apiscope from the traffic of {service}: what was observed, not what is declared."
            ),
        },
        "paths": paths,
    })
}

/// A route with unique parameter names, as OpenAPI requires: `/a/{id}/b/{id}` becomes
/// `/a/{id}/b/{id2}`.
fn path_template(route: &str) -> String {
    let mut used: BTreeMap<String, usize> = BTreeMap::new();
    route
        .split('/')
        .map(|segment| match parameter_name(segment) {
            Some(name) => {
                let count = used.entry(name.to_owned()).or_default();
                *count += 1;
                if *count == 1 {
                    segment.to_owned()
                } else {
                    format!("{{{name}{count}}}")
                }
            }
            None => segment.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn parameter_name(segment: &str) -> Option<&str> {
    segment
        .strip_prefix('{')?
        .strip_suffix('}')
        .filter(|name| !name.is_empty())
}

/// One operation from the endpoints sharing its method and path (GraphQL operations share
/// one); the busiest one's shapes describe it. `None` for no endpoints.
fn operation(
    path: &str,
    method: &str,
    group: &[&Endpoint],
    operation_ids: &mut BTreeSet<String>,
) -> Option<Value> {
    let busiest = group
        .iter()
        .max_by_key(|endpoint| endpoint.calls)
        .copied()?;
    let calls: u64 = group.iter().map(|endpoint| endpoint.calls).sum();
    let mut statuses: BTreeMap<&str, u64> = BTreeMap::new();
    for endpoint in group {
        for (status, count) in &endpoint.statuses {
            *statuses.entry(status.as_str()).or_default() += count;
        }
    }
    let mut operation = Map::new();
    operation.insert(
        "operationId".into(),
        json!(operation_id(method, path, operation_ids)),
    );
    operation.insert("parameters".into(), Value::Array(parameters(path, busiest)));
    if let Some(body) = &busiest.schema.request_body {
        operation.insert(
            "requestBody".into(),
            json!({"content": {"application/json": {"schema": body.to_json_schema()}}}),
        );
    }
    operation.insert("responses".into(), responses(&statuses, busiest));
    operation.insert("x-apiscope-calls".into(), json!(calls));
    let auth: BTreeSet<&str> = group
        .iter()
        .flat_map(|endpoint| endpoint.auth.keys().map(|scheme| scheme.name()))
        .collect();
    operation.insert("x-apiscope-auth".into(), json!(auth));
    Some(Value::Object(operation))
}

fn operation_id(method: &str, path: &str, used: &mut BTreeSet<String>) -> String {
    let words: Vec<String> = path
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|word| !word.is_empty())
        .map(str::to_ascii_lowercase)
        .collect();
    let base = format!("{method}_{}", words.join("_"));
    let mut id = base.clone();
    let mut suffix = 1;
    while used.contains(&id) {
        suffix += 1;
        id = format!("{base}_{suffix}");
    }
    used.insert(id.clone());
    id
}

fn parameters(path: &str, endpoint: &Endpoint) -> Vec<Value> {
    let schema = &endpoint.schema;
    let mut parameters: Vec<Value> = path
        .split('/')
        .filter_map(parameter_name)
        .enumerate()
        .map(|(index, name)| {
            let types = schema
                .path_parameters
                .get(index)
                .copied()
                .unwrap_or_default();
            json!({
                "name": name,
                "in": "path",
                "required": true,
                "schema": {"type": types.schema_type()},
            })
        })
        .collect();
    for (name, parameter) in &schema.query {
        if name == OTHER {
            continue;
        }
        parameters.push(json!({
            "name": name,
            "in": "query",
            "required": parameter.seen >= endpoint.calls,
            "schema": {"type": parameter.types.schema_type()},
        }));
    }
    parameters
}

fn responses(statuses: &BTreeMap<&str, u64>, endpoint: &Endpoint) -> Value {
    let mut responses = Map::new();
    for (status, count) in statuses {
        let is_code = status.len() == 3 && status.bytes().all(|b| b.is_ascii_digit());
        if !is_code {
            continue;
        }
        let mut response = Map::new();
        response.insert(
            "description".into(),
            json!(format!("Answered {count} times")),
        );
        let success = status.starts_with('2');
        if let Some(body) = endpoint.schema.response_body.as_ref().filter(|_| success) {
            response.insert(
                "content".into(),
                json!({"application/json": {"schema": body.to_json_schema()}}),
            );
        }
        responses.insert((*status).to_owned(), Value::Object(response));
    }
    if responses.is_empty() {
        responses.insert(
            "default".into(),
            json!({"description": "No response was seen"}),
        );
    }
    Value::Object(responses)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::inventory::{Conformance, EndpointKey};

    fn endpoint(method: &str, route: &str, calls: u64) -> Endpoint {
        let mut endpoint = Endpoint::new(
            EndpointKey {
                protocol: "http".to_owned(),
                method: method.into(),
                route: route.into(),
                operation: None,
            },
            Conformance::NoSpec,
            0,
        );
        endpoint.calls = calls;
        endpoint.add_status("200");
        endpoint
    }

    #[test]
    fn parameters_are_unique_and_operations_named_once() {
        let a = endpoint("GET", "/users/{id}/orders/{id}", 3);
        let b = endpoint("GET", "/users-id-orders-id", 1);
        let document = document("shop", &[&a, &b]);
        let paths = document["paths"].as_object().unwrap();
        let item = &paths["/users/{id}/orders/{id2}"]["get"];
        let names: Vec<&str> = item["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["id", "id2"]);
        let other = &paths["/users-id-orders-id"]["get"]["operationId"];
        assert_ne!(item["operationId"], *other);
        assert_eq!(item["responses"]["200"]["description"], "Answered 1 times");
    }

    #[test]
    fn unknown_methods_and_non_paths_are_left_out() {
        let a = endpoint("PROPFIND", "/dav", 1);
        let b = endpoint("OPTIONS", "*", 1);
        let document = document("dav", &[&a, &b]);
        assert_eq!(document["paths"], json!({}));
    }
}
