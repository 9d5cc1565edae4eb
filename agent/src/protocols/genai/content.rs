//! The prompts and answers of a model call, for the opt-in content export: each message's role
//! and text as the request sent them, and the text of each answer (a streamed answer's deltas
//! joined, as far as the kept start and tail of the stream hold them).

use serde_json::Value;

use crate::protocols::{http::HttpExchange, json_documents::documents};

/// Messages read per request, and answers per response.
const MAX_MESSAGES: usize = 64;

/// What was said in one model call.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GenAiContent {
    /// `(role, text)` of each message sent, in order.
    pub input: Vec<(String, String)>,
    /// The text of each answer (choice or candidate), in order.
    pub output: Vec<String>,
}

/// The content of the model call `http` carries, as far as its kept bytes hold it.
pub fn content(http: &HttpExchange) -> GenAiContent {
    let mut found = GenAiContent::default();
    for request in documents(&http.request.body.captured) {
        read_input(&request, &mut found.input);
    }
    found.input.truncate(MAX_MESSAGES);
    if let Some(response) = &http.response {
        let events = documents(&response.body.captured)
            .into_iter()
            .chain(documents(&response.body.tail));
        for event in events {
            read_output(&event, &mut found.output);
        }
    }
    found.output.retain(|text| !text.is_empty());
    found
}

fn read_input(request: &Value, input: &mut Vec<(String, String)>) {
    let mut add = |role: &str, text: String| {
        if !text.is_empty() && input.len() < MAX_MESSAGES {
            input.push((role.to_owned(), text));
        }
    };
    // Anthropic's and Gemini's system prompts sit beside the messages.
    if let Some(system) = request.get("system") {
        add("system", text_of(system));
    }
    if let Some(system) = request.get("systemInstruction") {
        add("system", text_of(system));
    }
    // OpenAI, Anthropic and Ollama `messages`, Gemini `contents`, the Responses API's `input`.
    for key in ["messages", "contents", "input"] {
        match request.get(key) {
            Some(Value::Array(messages)) => {
                for message in messages.iter().take(MAX_MESSAGES) {
                    let role = message
                        .get("role")
                        .and_then(Value::as_str)
                        .unwrap_or("user");
                    add(role, text_of(message));
                }
            }
            Some(Value::String(text)) => add("user", text.clone()),
            _ => {}
        }
    }
    if let Some(Value::String(prompt)) = request.get("prompt") {
        add("user", prompt.clone());
    }
}

/// Appends one response document's answer text to `output`: the whole answer of a JSON
/// response, or one stream event's delta (appended to the answer of its index).
fn read_output(event: &Value, output: &mut Vec<String>) {
    let mut append = |index: usize, text: &str| {
        if index >= MAX_MESSAGES || text.is_empty() {
            return;
        }
        if output.len() <= index {
            output.resize(index + 1, String::new());
        }
        if let Some(answer) = output.get_mut(index) {
            answer.push_str(text);
        }
    };
    let index_of = |item: &Value, fallback: usize| {
        item.get("index")
            .and_then(Value::as_u64)
            .and_then(|index| usize::try_from(index).ok())
            .unwrap_or(fallback)
    };
    // OpenAI choices (whole, delta or completion text), Gemini candidates.
    for key in ["choices", "candidates"] {
        if let Some(items) = event.get(key).and_then(Value::as_array) {
            for (position, item) in items.iter().take(MAX_MESSAGES).enumerate() {
                let index = index_of(item, position);
                for part in ["message", "delta", "content"] {
                    if let Some(value) = item.get(part) {
                        append(index, &text_of(value));
                    }
                }
                if let Some(Value::String(text)) = item.get("text") {
                    append(index, text);
                }
            }
        }
    }
    // Anthropic: the whole message's content, or a content block's delta.
    if event.get("type").and_then(Value::as_str) == Some("message")
        && let Some(content) = event.get("content")
    {
        append(0, &text_of(content));
    }
    if let Some(delta) = event.get("delta").filter(|delta| delta.is_object())
        && let Some(Value::String(text)) = delta.get("text")
    {
        append(0, text);
    }
    // The Responses API's text deltas and Ollama's answers.
    if event.get("type").and_then(Value::as_str) == Some("response.output_text.delta")
        && let Some(Value::String(text)) = event.get("delta")
    {
        append(0, text);
    }
    if let Some(message) = event.get("message").filter(|_| event.get("done").is_some()) {
        append(0, &text_of(message));
    }
    if let Some(Value::String(text)) = event.get("response") {
        append(0, text);
    }
}

/// The text of a message or content value: a string, a message's `content` or `parts`, or an
/// array of parts, each `text` part's text joined by newlines.
fn text_of(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Array(parts) => parts
            .iter()
            .take(MAX_MESSAGES)
            .map(text_of)
            .filter(|text| !text.is_empty())
            .collect::<Vec<_>>()
            .join("\n"),
        Value::Object(_) => ["content", "parts", "text"]
            .iter()
            .find_map(|key| value.get(*key))
            .map(text_of)
            .unwrap_or_default(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::{HttpExchange, content};
    use crate::testing::{header, post};

    fn exchange(request: &str, response: &str) -> HttpExchange {
        let answer = vec![header("content-type", "application/json")];
        post(
            "/v1/chat/completions",
            Vec::new(),
            request,
            Some((answer, response)),
        )
    }

    #[test]
    fn openai_messages_and_choices() {
        let found = content(&exchange(
            r#"{"model":"m","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":[{"type":"text","text":"Hi"},{"type":"image_url","image_url":{"url":"x"}}]}]}"#,
            r#"{"choices":[{"index":0,"message":{"role":"assistant","content":"Hello!"}}]}"#,
        ));
        assert_eq!(
            found.input,
            [
                ("system".to_owned(), "Be brief.".to_owned()),
                ("user".to_owned(), "Hi".to_owned())
            ]
        );
        assert_eq!(found.output, ["Hello!"]);
    }

    #[test]
    fn streamed_deltas_are_joined_per_choice() {
        let stream = concat!(
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Hel\"}}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"}}]}\n\n",
            "data: [DONE]\n\n"
        );
        let found = content(&exchange(r#"{"messages":[],"stream":true}"#, stream));
        assert_eq!(found.output, ["Hello"]);
    }

    #[test]
    fn anthropic_and_gemini_shapes() {
        let anthropic = content(&exchange(
            r#"{"system":"Rules.","messages":[{"role":"user","content":"Q"}]}"#,
            r#"{"type":"message","content":[{"type":"text","text":"A"}]}"#,
        ));
        assert_eq!(anthropic.input.len(), 2);
        assert_eq!(anthropic.output, ["A"]);
        let gemini = content(&exchange(
            r#"{"contents":[{"role":"user","parts":[{"text":"Q"}]}]}"#,
            r#"{"candidates":[{"content":{"role":"model","parts":[{"text":"A"}]}}]}"#,
        ));
        assert_eq!(gemini.input, [("user".to_owned(), "Q".to_owned())]);
        assert_eq!(gemini.output, ["A"]);
    }
}
