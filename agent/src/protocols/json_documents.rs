//! The JSON documents an HTTP body carries, for the layers read from bodies (model calls, MCP):
//! one JSON document, or the events of a stream of them.

use serde_json::Value;

/// The JSON documents of a body: the whole body, else each `data:` line of a server-sent
/// event stream or each line of a JSON-lines stream. Lines that do not parse (the cut last
/// one, `[DONE]`) are skipped.
pub fn documents(body: &[u8]) -> Vec<Value> {
    if body.is_empty() {
        return Vec::new();
    }
    if let Ok(whole) = serde_json::from_slice::<Value>(body) {
        return vec![whole];
    }
    body.split(|byte| *byte == b'\n')
        .filter_map(|line| {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let payload = line.strip_prefix(b"data:").unwrap_or(line);
            serde_json::from_slice::<Value>(payload.trim_ascii()).ok()
        })
        .filter(Value::is_object)
        .collect()
}
