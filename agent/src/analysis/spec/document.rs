//! Reading a declared document: its syntax, its OpenAPI version, and the structure that
//! version requires, checked with a typed model so that a broken document is rejected at load.

use std::{fs, path::Path};

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::error::SpecError;

/// The OpenAPI versions read here; they differ in the JSON Schema dialect of their schemas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum OpenApiVersion {
    /// 3.0.x: an extended subset of JSON Schema draft 4 (`nullable`, boolean exclusive bounds).
    V3_0,
    /// 3.1.x: JSON Schema 2020-12.
    V3_1,
}

impl OpenApiVersion {
    fn name(self) -> &'static str {
        match self {
            Self::V3_0 => "3.0",
            Self::V3_1 => "3.1",
        }
    }
}

/// A document that is well-formed and has the structure of its OpenAPI version.
pub(super) struct Document {
    pub version: OpenApiVersion,
    pub root: Value,
}

/// The syntax the file is read with.
#[derive(Debug, Clone, Copy)]
enum Format {
    Yaml,
    Json,
}

impl Format {
    /// JSON files get the JSON parser for its sharper messages; anything else is YAML, which
    /// reads JSON too.
    fn of(path: &Path) -> Self {
        match path.extension().and_then(|extension| extension.to_str()) {
            Some(extension) if extension.eq_ignore_ascii_case("json") => Self::Json,
            _ => Self::Yaml,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Yaml => "YAML",
            Self::Json => "JSON",
        }
    }
}

/// Why the text could not be deserialized, and where.
struct Failure {
    at: String,
    line: Option<usize>,
    column: Option<usize>,
    reason: String,
}

/// Reads and checks the document at `path`.
pub(super) fn read(path: &Path) -> Result<Document, SpecError> {
    let text = fs::read_to_string(path).map_err(|error| SpecError::Read {
        path: path.to_path_buf(),
        error,
    })?;
    let format = Format::of(path);
    let root: Value = deserialize(&text, format).map_err(|failure| SpecError::Syntax {
        path: path.to_path_buf(),
        format: format.name(),
        line: failure.line,
        column: failure.column,
        reason: failure.reason,
    })?;
    let version = version_of(&root).map_err(|reason| SpecError::Version {
        path: path.to_path_buf(),
        reason,
    })?;
    let checked = match version {
        OpenApiVersion::V3_0 => deserialize::<openapiv3::OpenAPI>(&text, format).map(drop),
        OpenApiVersion::V3_1 => deserialize::<oas3::Spec>(&text, format).map(drop),
    };
    checked.map_err(|failure| SpecError::Structure {
        path: path.to_path_buf(),
        version: version.name(),
        at: failure.at,
        line: failure.line,
        column: failure.column,
        reason: failure.reason,
    })?;
    Ok(Document { version, root })
}

/// The version the `openapi` field declares, or why it is not one read here.
fn version_of(root: &Value) -> Result<OpenApiVersion, String> {
    let Some(declared) = root.get("openapi") else {
        return Err(match root.get("swagger") {
            Some(Value::String(swagger)) => {
                format!("it declares Swagger `{swagger}`; only OpenAPI 3.0.x and 3.1.x are read")
            }
            _ => "the `openapi` field is missing".to_owned(),
        });
    };
    let Some(declared) = declared.as_str() else {
        return Err("the `openapi` field is not a string (quote it, e.g. \"3.1.0\")".to_owned());
    };
    if is_release_of(declared, "3.0") {
        Ok(OpenApiVersion::V3_0)
    } else if is_release_of(declared, "3.1") {
        Ok(OpenApiVersion::V3_1)
    } else {
        Err(format!(
            "it declares OpenAPI `{declared}`; only 3.0.x and 3.1.x are read"
        ))
    }
}

/// Whether `declared` is `minor` itself or one of its patch releases (`3.0.3`, not `3.01`).
fn is_release_of(declared: &str, minor: &str) -> bool {
    declared
        .strip_prefix(minor)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
}

fn deserialize<T: DeserializeOwned>(text: &str, format: Format) -> Result<T, Failure> {
    match format {
        Format::Yaml => serde_path_to_error::deserialize(serde_yaml_ng::Deserializer::from_str(
            text,
        ))
        .map_err(|error| {
            let at = error.path().to_string();
            let inner = error.into_inner();
            let location = inner.location();
            Failure {
                reason: without_position(&inner.to_string(), &at),
                at,
                line: location.as_ref().map(serde_yaml_ng::Location::line),
                column: location.as_ref().map(serde_yaml_ng::Location::column),
            }
        }),
        Format::Json => {
            let mut deserializer = serde_json::Deserializer::from_str(text);
            let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
                let at = error.path().to_string();
                json_failure(at, &error.into_inner())
            })?;
            deserializer
                .end()
                .map_err(|error| json_failure(String::new(), &error))?;
            Ok(value)
        }
    }
}

fn json_failure(at: String, error: &serde_json::Error) -> Failure {
    // serde_json numbers lines from 1 and says 0 when it does not know the place.
    let known = |n: usize| (n > 0).then_some(n);
    Failure {
        reason: without_position(&error.to_string(), &at),
        at,
        line: known(error.line()),
        column: known(error.column()),
    }
}

/// The parsers write the place (` at line 4 column 10`) and the YAML one the path (`paths: `)
/// into their message; both are reported separately, once.
fn without_position(message: &str, at: &str) -> String {
    let mut reason = String::with_capacity(message.len());
    let mut rest = message;
    while let Some((before, after)) = rest.split_once(" at line ") {
        reason.push_str(before);
        let after = after.trim_start_matches(|c: char| c.is_ascii_digit());
        rest = after.strip_prefix(" column ").map_or(after, |after| {
            after.trim_start_matches(|c: char| c.is_ascii_digit())
        });
    }
    reason.push_str(rest);
    match reason
        .strip_prefix(at)
        .and_then(|tail| tail.strip_prefix(": "))
    {
        Some(tail) if !at.is_empty() => tail.trim().to_owned(),
        _ => reason.trim().to_owned(),
    }
}
