//! The model API fuzz target (`genai`): calls to the known endpoints, over HTTP/1.1.

use crate::protocols::fuzzing::http1_exchange;

/// The model API endpoints the `genai` target picks from: (host, request target).
const GENAI_ENDPOINTS: [(&str, &str); 8] = [
    ("api.openai.com", "/v1/chat/completions"),
    ("api.openai.com", "/v1/responses"),
    ("api.openai.com", "/v1/completions"),
    ("api.openai.com", "/v1/embeddings"),
    ("api.anthropic.com", "/v1/messages"),
    (
        "generativelanguage.googleapis.com",
        "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse",
    ),
    ("localhost:11434", "/api/chat"),
    ("localhost:11434", "/api/generate"),
];

/// A model API call: after the first byte (bits 0 to 2: the endpoint, one of
/// [`GENAI_ENDPOINTS`]), the exchange of [`http1_exchange`], a `POST` of the JSON request
/// answered by one JSON document or an event stream of them. The prompts and answers of each
/// model call are read too, as the opt-in content export reads them.
pub fn exchange(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let Some((host, target)) = GENAI_ENDPOINTS.get(usize::from(first & 7)) else {
        return;
    };
    let head = format!(
        "POST {target} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
         Authorization: Bearer sk-fuzz\r\n"
    );
    http1_exchange(rest, &head, "");
}
