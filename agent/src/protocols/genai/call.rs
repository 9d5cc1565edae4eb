//! A call to a generative-AI model API: what was asked of which model, and what it cost.

/// The kind of work asked of the model, as the GenAI conventions' `gen_ai.operation.name`
/// names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GenAiOperation {
    /// A chat or messages exchange (`/v1/chat/completions`, `/v1/responses`, `/v1/messages`,
    /// Ollama's `/api/chat`).
    Chat,
    /// A plain completion (`/v1/completions`, Ollama's `/api/generate`).
    TextCompletion,
    /// Embeddings (`/v1/embeddings`, Ollama's `/api/embed`).
    Embeddings,
    /// Gemini's `generateContent` and `streamGenerateContent`.
    GenerateContent,
}

impl GenAiOperation {
    /// The `gen_ai.operation.name` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Chat => "chat",
            Self::TextCompletion => "text_completion",
            Self::Embeddings => "embeddings",
            Self::GenerateContent => "generate_content",
        }
    }
}

/// One model call, read from the request and response bodies. Each field is what the bytes
/// said; a field the seen bytes did not hold is `None`, never guessed.
#[derive(Debug, Clone, PartialEq)]
pub struct GenAiCall {
    /// The operation.
    pub operation: GenAiOperation,
    /// `gen_ai.provider.name`: `openai`, `anthropic`, `gcp.gemini`, `azure.ai.openai`, `ollama`,
    /// or another OpenAI-compatible provider known by its host.
    pub provider: &'static str,
    /// `gen_ai.request.model`.
    pub request_model: Option<String>,
    /// `gen_ai.response.model`.
    pub response_model: Option<String>,
    /// `gen_ai.response.id`.
    pub response_id: Option<String>,
    /// `gen_ai.response.finish_reasons`, one per choice or candidate.
    pub finish_reasons: Vec<String>,
    /// `gen_ai.usage.input_tokens`.
    pub input_tokens: Option<u64>,
    /// `gen_ai.usage.output_tokens`.
    pub output_tokens: Option<u64>,
    /// `gen_ai.request.temperature`.
    pub temperature: Option<f64>,
    /// `gen_ai.request.top_p`.
    pub top_p: Option<f64>,
    /// `gen_ai.request.max_tokens`.
    pub max_tokens: Option<u64>,
    /// The response came as a stream of events (server-sent events or JSON lines).
    pub streamed: bool,
    /// For a streamed response, the time from the request's first byte to the response
    /// body's first byte, in ns: the client's time to first chunk, the server's time to first
    /// token.
    pub time_to_first_chunk_ns: Option<u64>,
    /// A body was cut (beyond the body cap, or bytes lost), so fields it would have held may
    /// be missing.
    pub incomplete: bool,
}

// The floats come from JSON numbers, which are never NaN, so equality is reflexive.
impl Eq for GenAiCall {}
