//! The OpenAPI documents teams declared for their services, and how observed requests
//! conform to them.
//!
//! A document (3.0.x or 3.1.x, YAML or JSON) is read once: its structure is checked with a
//! typed model of its version, its operations are read with `$ref`s followed, and a JSON
//! Schema validator is compiled for each parameter and JSON body schema. Checking a request
//! then costs no parsing of the spec. Violations name parameters, properties and constraints,
//! never the request's values, which may be secrets.

mod document;
mod error;
mod model;
mod schema;
mod template;
mod validate;

#[cfg(test)]
mod tests;

use std::path::Path;

use serde_json::Value;

pub use error::SpecError;

use model::{Parameter, RequestBody};
use template::Template;

/// A declared API: the operations of one OpenAPI document, ready to match and check calls.
#[derive(Debug)]
pub struct DeclaredApi {
    title: String,
    version: String,
    operations: Vec<DeclaredOperation>,
}

impl DeclaredApi {
    /// Loads an OpenAPI 3.0.x or 3.1.x document (YAML or JSON).
    pub fn load(path: &Path) -> Result<DeclaredApi, SpecError> {
        let document = document::read(path)?;
        let mut schemas =
            schema::Schemas::new(&document.root, document.version).map_err(|reason| {
                SpecError::Schema {
                    path: path.to_path_buf(),
                    at: "#".to_owned(),
                    reason,
                }
            })?;
        let operations = model::operations(&document.root, &mut schemas)
            .map_err(|problem| problem.in_file(path))?;
        let info = |field: &str| {
            document
                .root
                .pointer(&format!("/info/{field}"))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        Ok(DeclaredApi {
            title: info("title"),
            version: info("version"),
            operations,
        })
    }

    /// The API's title (`info.title`).
    pub fn title(&self) -> &str {
        &self.title
    }

    /// The API's own version (`info.version`), not the OpenAPI version.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The operation declaring `method` (any case) on a concrete `path` (no query): the most
    /// specific template wins, literal segments before parameters, left to right.
    pub fn find(&self, method: &str, path: &str) -> Option<&DeclaredOperation> {
        self.operations
            .iter()
            .filter(|operation| operation.method.eq_ignore_ascii_case(method))
            .filter(|operation| operation.template.matches(path))
            .max_by(|a, b| a.template.specificity_cmp(&b.template))
    }

    /// Every declared operation.
    pub fn operations(&self) -> &[DeclaredOperation] {
        &self.operations
    }
}

/// One declared operation: a method on a path template, with what its requests must carry.
#[derive(Debug)]
pub struct DeclaredOperation {
    /// The method, uppercase (`GET`).
    pub method: String,
    /// The path template (`/users/{id}`), prefixed with the base path of `servers[0].url`.
    pub path_template: String,
    /// The `operationId`, when declared.
    pub operation_id: Option<String>,
    /// Whether the operation is declared `deprecated`.
    pub deprecated: bool,
    template: Template,
    parameters: Vec<Parameter>,
    body: Option<RequestBody>,
}

impl DeclaredOperation {
    /// How `request` departs from this operation: at most 16 violations, none quoting a value.
    pub fn validate(&self, request: &ObservedRequest<'_>) -> Vec<Violation> {
        validate::validate(self, request)
    }
}

/// The parts of an observed request that conformance is checked on.
pub struct ObservedRequest<'a> {
    /// The path, without the query.
    pub path: &'a str,
    /// The raw query string, without `?`.
    pub query: Option<&'a str>,
    /// The names of the request's headers, lowercase.
    pub header_names: Vec<&'a str>,
    /// The `Content-Type` header's value.
    pub content_type: Option<&'a str>,
    /// The captured body; `None` when the request has none.
    pub body: Option<&'a [u8]>,
    /// Whether `body` is the whole body (false when the capture cut it).
    pub body_complete: bool,
}

/// One way a request departs from its declared operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// What kind of departure.
    pub kind: ViolationKind,
    /// Where: `query.NAME`, `header.NAME`, `path.NAME`, `body` or `body/JSON/POINTER`.
    pub location: String,
    /// Why, from the spec's names and constraints only, never the request's values.
    pub reason: String,
}

/// The kinds of violation, as events and metrics name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ViolationKind {
    /// A query parameter the operation does not declare.
    UnknownParameter,
    /// A required parameter that is absent.
    MissingParameter,
    /// A parameter whose value does not match its schema.
    InvalidParameter,
    /// A required request body that is absent.
    MissingBody,
    /// A body that is not of a declared media type, not valid JSON, or does not match its schema.
    InvalidBody,
}

impl ViolationKind {
    /// The kind's name in events (`unknown_parameter`).
    pub fn name(self) -> &'static str {
        match self {
            Self::UnknownParameter => "unknown_parameter",
            Self::MissingParameter => "missing_parameter",
            Self::InvalidParameter => "invalid_parameter",
            Self::MissingBody => "missing_body",
            Self::InvalidBody => "invalid_body",
        }
    }
}
