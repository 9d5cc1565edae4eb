//! Generative-AI model APIs over HTTP: finds the model call a decoded exchange carries,
//! whatever HTTP version carried it.
//!
//! Recognised by method and path: OpenAI and OpenAI-compatible servers (`/chat/completions`,
//! `/v1/completions`, `/v1/embeddings`, `/v1/responses`), Anthropic (`/v1/messages`), Google
//! Gemini (`/models/{model}:generateContent` and `:streamGenerateContent`) and Ollama
//! (`/api/chat`, `/api/generate`, `/api/embed`). The provider is named by the host for the
//! well-known endpoints, else by the API's shape (a self-hosted OpenAI-compatible server is
//! `openai`).
//!
//! The fields come from the kept body bytes: one JSON document (its first body-cap bytes), or
//! the JSON events of a stream (server-sent `data:` lines, or Ollama's JSON lines) from its
//! start and its tail (the decoders keep the last body-cap bytes of event streams), read in
//! order: the first id and model stand, the last finish reasons and token counts stand. A cut
//! stream whose tail still holds its finish reasons and usage lacks only content deltas and is
//! complete for these fields; otherwise the call is marked incomplete. Nothing is guessed.

mod call;
pub mod content;
pub mod describe;
#[doc(hidden)]
pub mod fuzzing;

use std::sync::Arc;

use serde_json::Value;

pub use call::{GenAiCall, GenAiOperation};

use super::{
    DecoderSettings,
    http::{HttpExchange, carries_event_stream},
    json_documents::documents,
};
use crate::calls::{ApiCall, Layer};

/// Choices or candidates read per response: a response asking for more is still bounded work.
const MAX_CHOICES: usize = 16;

/// Hosts of well-known providers, by suffix, and the conventions' provider name.
const PROVIDER_HOSTS: &[(&str, &str)] = &[
    ("api.openai.com", "openai"),
    (".openai.azure.com", "azure.ai.openai"),
    ("api.anthropic.com", "anthropic"),
    ("generativelanguage.googleapis.com", "gcp.gemini"),
    ("aiplatform.googleapis.com", "gcp.vertex_ai"),
    ("api.mistral.ai", "mistral_ai"),
    ("api.groq.com", "groq"),
    ("api.deepseek.com", "deepseek"),
    ("api.x.ai", "x_ai"),
    ("api.perplexity.ai", "perplexity"),
];

/// The model call an HTTP exchange carries, as its layer: the HTTP layer table's entry for
/// model APIs.
pub fn find(
    call: &ApiCall,
    http: &HttpExchange,
    _settings: DecoderSettings,
) -> Vec<Arc<dyn Layer>> {
    let Some(mut genai) = describe(http) else {
        return Vec::new();
    };
    if let Some(response) = &http.response {
        let first_ns = response.body.first_ns;
        genai.time_to_first_chunk_ns = first_ns
            .checked_sub(call.start_ns)
            .filter(|_| genai.streamed && first_ns > 0);
    }
    vec![Arc::new(genai)]
}

/// The model call `http` carries, if it is one.
pub fn describe(http: &HttpExchange) -> Option<GenAiCall> {
    let request = &http.request;
    if request.method != "POST" {
        return None;
    }
    let (operation, shape_provider, path_model) = recognise(request.path())?;
    let provider = request
        .host()
        .and_then(|(host, _)| provider_of_host(host))
        .unwrap_or(shape_provider);
    let mut call = GenAiCall {
        operation,
        provider,
        request_model: path_model,
        response_model: None,
        response_id: None,
        finish_reasons: Vec::new(),
        input_tokens: None,
        output_tokens: None,
        temperature: None,
        top_p: None,
        max_tokens: None,
        streamed: false,
        time_to_first_chunk_ns: None,
        incomplete: request.body.is_cut() || http.response.is_none(),
    };
    for document in documents(&request.body.captured) {
        read_request(&document, &mut call);
    }
    if let Some(response) = &http.response {
        call.streamed |= carries_event_stream(&response.headers);
        if (200..300).contains(&response.status) {
            let body = &response.body;
            // The stream's start gives the id and model, its tail the finish and usage.
            let events = documents(&body.captured)
                .into_iter()
                .chain(documents(&body.tail));
            for document in events {
                read_response(&document, &mut call);
            }
            call.incomplete |= body.is_cut() && !ends_summed_up(&call);
        }
    }
    Some(call)
}

/// The operation, the provider the API's shape says, and a model named in the path.
fn recognise(path: &str) -> Option<(GenAiOperation, &'static str, Option<String>)> {
    let openai = |operation| Some((operation, "openai", None));
    if path.ends_with("/chat/completions") {
        return openai(GenAiOperation::Chat);
    }
    if path.ends_with("/v1/responses") {
        return openai(GenAiOperation::Chat);
    }
    if path.ends_with("/v1/completions") {
        return openai(GenAiOperation::TextCompletion);
    }
    if path.ends_with("/v1/embeddings") {
        return openai(GenAiOperation::Embeddings);
    }
    if path.ends_with("/v1/messages") {
        return Some((GenAiOperation::Chat, "anthropic", None));
    }
    let ollama = |operation| Some((operation, "ollama", None));
    match path {
        "/api/chat" => return ollama(GenAiOperation::Chat),
        "/api/generate" => return ollama(GenAiOperation::TextCompletion),
        "/api/embed" | "/api/embeddings" => return ollama(GenAiOperation::Embeddings),
        _ => {}
    }
    let (_, model_and_method) = path.rsplit_once("/models/")?;
    let (model, method) = model_and_method.split_once(':')?;
    matches!(method, "generateContent" | "streamGenerateContent").then(|| {
        (
            GenAiOperation::GenerateContent,
            "gcp.gemini",
            Some(model.to_owned()),
        )
    })
}

fn provider_of_host(host: &str) -> Option<&'static str> {
    let host = host.to_ascii_lowercase();
    PROVIDER_HOSTS
        .iter()
        .find(|(suffix, _)| host == suffix.trim_start_matches('.') || host.ends_with(suffix))
        .map(|(_, provider)| *provider)
}

/// A cut stream whose kept tail still held its summing-up events lacks only middle parts
/// (content deltas), which no field comes from.
fn ends_summed_up(call: &GenAiCall) -> bool {
    call.streamed && !call.finish_reasons.is_empty() && call.output_tokens.is_some()
}

fn read_request(document: &Value, call: &mut GenAiCall) {
    if let Some(model) = document.get("model").and_then(Value::as_str) {
        call.request_model.get_or_insert_with(|| model.to_owned());
    }
    // Gemini and Ollama nest the sampling parameters.
    let parameters = [
        Some(document),
        document.get("generationConfig"),
        document.get("options"),
    ];
    for parameters in parameters.into_iter().flatten() {
        let number = |keys: &[&str]| keys.iter().find_map(|key| parameters.get(*key)?.as_f64());
        call.temperature = call.temperature.or(number(&["temperature"]));
        call.top_p = call.top_p.or(number(&["top_p", "topP"]));
        call.max_tokens = call.max_tokens.or(keys_u64(
            parameters,
            &[
                "max_tokens",
                "max_completion_tokens",
                "max_output_tokens",
                "maxOutputTokens",
                "num_predict",
            ],
        ));
    }
    if document.get("stream").and_then(Value::as_bool) == Some(true) {
        call.streamed = true;
    }
}

/// Reads one response document or stream event. Anthropic's stream events and the Responses
/// API's nest the message (`message`, `response`); Anthropic's deltas carry the stop reason.
fn read_response(document: &Value, call: &mut GenAiCall) {
    let nested = [
        Some(document),
        document.get("message").filter(|value| value.is_object()),
        document.get("response").filter(|value| value.is_object()),
    ];
    for value in nested.into_iter().flatten() {
        if let Some(id) = keys_str(value, &["id", "responseId"]) {
            call.response_id.get_or_insert_with(|| id.to_owned());
        }
        if let Some(model) = keys_str(value, &["model", "modelVersion"]) {
            call.response_model.get_or_insert_with(|| model.to_owned());
        }
        let finish = finish_reasons(value);
        if !finish.is_empty() {
            call.finish_reasons = finish;
        }
        let usage = value
            .get("usage")
            .or_else(|| value.get("usageMetadata"))
            .unwrap_or(value);
        if let Some(input) = keys_u64(
            usage,
            &[
                "prompt_tokens",
                "input_tokens",
                "promptTokenCount",
                "prompt_eval_count",
            ],
        ) {
            call.input_tokens = Some(input);
        }
        if let Some(output) = keys_u64(
            usage,
            &[
                "completion_tokens",
                "output_tokens",
                "candidatesTokenCount",
                "eval_count",
            ],
        ) {
            call.output_tokens = Some(output);
        }
    }
}

/// The finish reasons a document states: per choice (OpenAI), per candidate (Gemini), or one
/// for the message (Anthropic's `stop_reason`, also in a stream's `delta`; Ollama's
/// `done_reason`). Stream chunks whose choices have not finished state none.
fn finish_reasons(value: &Value) -> Vec<String> {
    let listed = |key: &str, reason: &str| -> Vec<String> {
        value
            .get(key)
            .and_then(Value::as_array)
            .map(|items| {
                items
                    .iter()
                    .take(MAX_CHOICES)
                    .filter_map(|item| item.get(reason)?.as_str())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    let choices = listed("choices", "finish_reason");
    if !choices.is_empty() {
        return choices;
    }
    let candidates = listed("candidates", "finishReason");
    if !candidates.is_empty() {
        return candidates;
    }
    [
        value.get("stop_reason"),
        value
            .get("delta")
            .and_then(|delta| delta.get("stop_reason")),
        value.get("done_reason"),
    ]
    .into_iter()
    .flatten()
    .find_map(Value::as_str)
    .map(|reason| vec![reason.to_owned()])
    .unwrap_or_default()
}

fn keys_str<'a>(value: &'a Value, keys: &[&str]) -> Option<&'a str> {
    keys.iter().find_map(|key| value.get(*key)?.as_str())
}

fn keys_u64(value: &Value, keys: &[&str]) -> Option<u64> {
    keys.iter().find_map(|key| value.get(*key)?.as_u64())
}

#[cfg(test)]
mod tests;
