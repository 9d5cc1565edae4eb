//! Export: where the agent's results leave the process.

pub mod dump;
pub mod health;
pub mod otlp;
pub mod server;
pub mod stdout;

use serde::{Deserialize, Serialize};

use crate::calls::HeaderAllowlist;

/// The `export:` section of the configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExportSettings {
    /// OTLP export; without an endpoint, calls are printed on stdout.
    pub otlp: otlp::OtlpSettings,
    /// HTTP headers exported as `http.request.header.<name>` / `http.response.header.<name>`,
    /// beyond the conventions' own. Names that may carry credentials are refused.
    pub http_headers: HeaderAllowlist,
    /// Export the prompts and answers of model calls (`gen_ai.input.messages`,
    /// `gen_ai.output.messages`), with the sensitive values the scan finds redacted. Off by
    /// default: they are the users' own words.
    pub genai_content: bool,
}
