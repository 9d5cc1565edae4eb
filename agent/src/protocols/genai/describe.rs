//! Model calls in the GenAI semantic conventions: the span is named
//! `{gen_ai.operation.name} {gen_ai.request.model}` and carries the model call's attributes;
//! the GenAI duration, time-to-first-chunk and token-usage histograms are recorded beside the
//! HTTP ones. Prompts and answers leave the host only when the operator opted in, redacted.

use opentelemetry::KeyValue;

use super::{GenAiCall, content::content};
use crate::{
    calls::{
        ApiCall, CallDescription, DescribeContext, Instrument, Kind, Layer, Redact,
        description::{ERROR_TYPE, int, string_array},
    },
    protocols::http::HttpExchange,
};

/// `gen_ai.operation.name`: `chat`, `text_completion`, `embeddings`, `generate_content`.
pub const GEN_AI_OPERATION_NAME: &str = "gen_ai.operation.name";
/// `gen_ai.provider.name`.
pub const GEN_AI_PROVIDER_NAME: &str = "gen_ai.provider.name";
/// `gen_ai.request.model`.
pub const GEN_AI_REQUEST_MODEL: &str = "gen_ai.request.model";
/// `gen_ai.response.model`.
pub const GEN_AI_RESPONSE_MODEL: &str = "gen_ai.response.model";
/// `gen_ai.response.id`.
pub const GEN_AI_RESPONSE_ID: &str = "gen_ai.response.id";
/// `gen_ai.response.finish_reasons`.
pub const GEN_AI_RESPONSE_FINISH_REASONS: &str = "gen_ai.response.finish_reasons";
/// `gen_ai.usage.input_tokens`.
pub const GEN_AI_USAGE_INPUT_TOKENS: &str = "gen_ai.usage.input_tokens";
/// `gen_ai.usage.output_tokens`.
pub const GEN_AI_USAGE_OUTPUT_TOKENS: &str = "gen_ai.usage.output_tokens";
/// `gen_ai.request.max_tokens`.
pub const GEN_AI_REQUEST_MAX_TOKENS: &str = "gen_ai.request.max_tokens";
/// `gen_ai.request.temperature`.
pub const GEN_AI_REQUEST_TEMPERATURE: &str = "gen_ai.request.temperature";
/// `gen_ai.request.top_p`.
pub const GEN_AI_REQUEST_TOP_P: &str = "gen_ai.request.top_p";
/// `gen_ai.response.time_to_first_chunk`: seconds from the request to a streamed response's
/// first chunk.
pub const GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK: &str = "gen_ai.response.time_to_first_chunk";
/// `gen_ai.input.messages`: the prompts sent, opt-in and redacted (JSON).
pub const GEN_AI_INPUT_MESSAGES: &str = "gen_ai.input.messages";
/// `gen_ai.output.messages`: the answers, opt-in and redacted (JSON).
pub const GEN_AI_OUTPUT_MESSAGES: &str = "gen_ai.output.messages";
/// `gen_ai.token.type` of the token-usage histogram: `input` or `output`.
pub const GEN_AI_TOKEN_TYPE: &str = "gen_ai.token.type";
/// `apiscope.gen_ai.streamed`: the response came as a stream of events.
pub const APISCOPE_GEN_AI_STREAMED: &str = "apiscope.gen_ai.streamed";
/// `apiscope.gen_ai.incomplete`: a body was cut, so model fields it held may be missing.
pub const APISCOPE_GEN_AI_INCOMPLETE: &str = "apiscope.gen_ai.incomplete";

/// Bucket boundaries of the GenAI operation duration, in seconds, as the GenAI conventions
/// advise (model calls take far longer than most HTTP calls).
const DURATION_BUCKETS: [f64; 14] = [
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];
/// Bucket boundaries of the token usage histogram, as the GenAI conventions advise.
const TOKEN_BUCKETS: [f64; 14] = [
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0,
    16777216.0, 67108864.0,
];
/// The GenAI conventions' buckets for the time to a streamed answer's first token or chunk,
/// in seconds.
const FIRST_TOKEN_BUCKETS: [f64; 16] = [
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// The server's request duration and the client's operation duration.
static DURATION: [&Instrument; 2] = [
    &Instrument {
        name: "gen_ai.server.request.duration",
        unit: "s",
        description: "Generative AI server request duration.",
        boundaries: &DURATION_BUCKETS,
    },
    &Instrument {
        name: "gen_ai.client.operation.duration",
        unit: "s",
        description: "GenAI operation duration.",
        boundaries: &DURATION_BUCKETS,
    },
];

/// The server's time to first token and the client's time to first chunk.
static FIRST_CHUNK: [&Instrument; 2] = [
    &Instrument {
        name: "gen_ai.server.time_to_first_token",
        unit: "s",
        description: "Time to generate first token for successful responses.",
        boundaries: &FIRST_TOKEN_BUCKETS,
    },
    &Instrument {
        name: "gen_ai.client.operation.time_to_first_chunk",
        unit: "s",
        description: "Time to receive the first chunk of a streamed response.",
        boundaries: &FIRST_TOKEN_BUCKETS,
    },
];

/// The client's token usage (the conventions define none for the server).
static TOKEN_USAGE: Instrument = Instrument {
    name: "gen_ai.client.token.usage",
    unit: "{token}",
    description: "Number of input and output tokens used.",
    boundaries: &TOKEN_BUCKETS,
};

impl Layer for GenAiCall {
    fn describe(
        &self,
        call: &ApiCall,
        context: DescribeContext<'_>,
        description: &mut CallDescription,
    ) {
        let operation = self.operation.as_str();
        // What names the call: on the span, and as the GenAI metrics' attributes.
        let mut identity = vec![
            KeyValue::new(GEN_AI_OPERATION_NAME, operation),
            KeyValue::new(GEN_AI_PROVIDER_NAME, self.provider),
        ];
        let models = [
            (GEN_AI_REQUEST_MODEL, &self.request_model),
            (GEN_AI_RESPONSE_MODEL, &self.response_model),
        ];
        for (key, value) in models {
            if let Some(value) = value {
                identity.push(KeyValue::new(key, value.clone()));
            }
        }
        let attributes = &mut description.span_attributes;
        attributes.extend(identity.iter().cloned());
        if let Some(id) = &self.response_id {
            attributes.push(KeyValue::new(GEN_AI_RESPONSE_ID, id.clone()));
        }
        if !self.finish_reasons.is_empty() {
            attributes.push(KeyValue::new(
                GEN_AI_RESPONSE_FINISH_REASONS,
                string_array(self.finish_reasons.iter().cloned()),
            ));
        }
        let counts = [
            (GEN_AI_USAGE_INPUT_TOKENS, self.input_tokens),
            (GEN_AI_USAGE_OUTPUT_TOKENS, self.output_tokens),
            (GEN_AI_REQUEST_MAX_TOKENS, self.max_tokens),
        ];
        for (key, value) in counts {
            if let Some(value) = value {
                attributes.push(KeyValue::new(key, int(value)));
            }
        }
        let floats = [
            (GEN_AI_REQUEST_TEMPERATURE, self.temperature),
            (GEN_AI_REQUEST_TOP_P, self.top_p),
        ];
        for (key, value) in floats {
            if let Some(value) = value {
                attributes.push(KeyValue::new(key, value));
            }
        }
        if self.streamed {
            attributes.push(KeyValue::new(APISCOPE_GEN_AI_STREAMED, true));
        }
        let time_to_first_chunk = self.time_to_first_chunk_ns.map(|nanos| nanos as f64 / 1e9);
        if let Some(seconds) = time_to_first_chunk {
            attributes.push(KeyValue::new(GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK, seconds));
        }
        if self.incomplete {
            attributes.push(KeyValue::new(APISCOPE_GEN_AI_INCOMPLETE, true));
        }
        if let (Some(redactor), Some(http)) =
            (&context.settings.content, call.exchange::<HttpExchange>())
        {
            content_attributes(http, redactor.as_ref(), attributes);
        }
        if let Some(error) = &description.error {
            identity.push(KeyValue::new(ERROR_TYPE, error.clone()));
        }
        let duration = description.duration_seconds;
        description.measure(DURATION, duration, identity.clone());
        if let Some(seconds) = time_to_first_chunk {
            description.measure(FIRST_CHUNK, seconds, identity.clone());
        }
        if description.kind == Kind::Client {
            let usage = [("input", self.input_tokens), ("output", self.output_tokens)];
            for (token_type, count) in usage {
                if let Some(count) = count {
                    let mut typed = identity.clone();
                    typed.push(KeyValue::new(GEN_AI_TOKEN_TYPE, token_type));
                    description.measure([&TOKEN_USAGE; 2], count as f64, typed);
                }
            }
        }
        description.name = match &self.request_model {
            Some(model) => format!("{operation} {model}"),
            None => operation.to_owned(),
        };
    }
}

/// The opted-in prompts and answers of a model call, in the conventions' message shape
/// (`[{"role": ..., "parts": [{"type": "text", "content": ...}]}]`), redacted of the sensitive
/// values found in them.
fn content_attributes(http: &HttpExchange, redactor: &dyn Redact, attributes: &mut Vec<KeyValue>) {
    let said = content(http);
    let message = |role: &str, text: &str| {
        serde_json::json!({
            "role": role,
            "parts": [{"type": "text", "content": redactor.redact(text)}],
        })
    };
    let input: Vec<_> = said
        .input
        .iter()
        .map(|(role, text)| message(role, text))
        .collect();
    let output: Vec<_> = said
        .output
        .iter()
        .map(|text| message("assistant", text))
        .collect();
    for (key, messages) in [
        (GEN_AI_INPUT_MESSAGES, input),
        (GEN_AI_OUTPUT_MESSAGES, output),
    ] {
        if !messages.is_empty() {
            attributes.push(KeyValue::new(
                key,
                serde_json::Value::Array(messages).to_string(),
            ));
        }
    }
}
