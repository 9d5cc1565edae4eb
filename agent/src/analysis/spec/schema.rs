//! JSON Schema validators for the document's schemas, compiled once at load, and the
//! value-free wording of their failures.

use std::{collections::HashMap, sync::Arc};

use jsonschema::{
    Draft, Registry, ValidationError, Validator,
    error::{TypeKind, ValidationErrorKind},
};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Value, json};

use super::document::OpenApiVersion;

/// The URI the whole document is registered under, so that `#/components/...` references
/// inside any schema resolve against it. `urn:` keeps it from ever looking fetchable.
const DOCUMENT_URI: &str = "urn:apiscope:openapi";

/// How many `$ref`s are followed when looking up a schema's type, against reference cycles.
const MAX_REF_DEPTH: usize = 16;

/// How many unexpected property names a reason lists.
const MAX_LISTED_NAMES: usize = 5;

/// Characters a JSON pointer may keep in a URI fragment; the rest (`{`, `}`, spaces in path
/// templates) are percent-encoded.
const FRAGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'/')
    .remove(b'~')
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'!')
    .remove(b'$')
    .remove(b'&')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')')
    .remove(b'*')
    .remove(b'+')
    .remove(b',')
    .remove(b';')
    .remove(b'=')
    .remove(b':')
    .remove(b'@');

/// The document's schemas, ready to compile validators for any schema in it.
pub(super) struct Schemas {
    registry: Registry<'static>,
    draft: Draft,
    /// Shared by every operation that uses the same schema (components reused across paths).
    compiled: HashMap<String, Arc<Validator>>,
}

impl Schemas {
    /// Registers `root` with the JSON Schema dialect of its OpenAPI version.
    pub(super) fn new(root: &Value, version: OpenApiVersion) -> Result<Self, String> {
        let (draft, contents) = match version {
            OpenApiVersion::V3_0 => {
                let mut contents = root.clone();
                rewrite_nullable(&mut contents);
                (Draft::Draft4, contents)
            }
            OpenApiVersion::V3_1 => (Draft::Draft202012, root.clone()),
        };
        let registry = Registry::new()
            .draft(draft)
            .add(DOCUMENT_URI, draft.create_resource(contents))
            .and_then(|builder| builder.prepare())
            .map_err(|error| error.to_string())?;
        Ok(Self {
            registry,
            draft,
            compiled: HashMap::new(),
        })
    }

    /// The validator of the schema at `pointer` in the document.
    pub(super) fn validator(&mut self, pointer: &str) -> Result<Arc<Validator>, String> {
        if let Some(validator) = self.compiled.get(pointer) {
            return Ok(Arc::clone(validator));
        }
        let reference = format!("{DOCUMENT_URI}#{}", utf8_percent_encode(pointer, FRAGMENT));
        let validator = jsonschema::options()
            .with_draft(self.draft)
            .with_registry(&self.registry)
            .offline()
            .should_validate_formats(true)
            .build(&json!({ "$ref": reference }))
            .map_err(|error| schema_error(&error))?;
        let validator = Arc::new(validator);
        self.compiled
            .insert(pointer.to_owned(), Arc::clone(&validator));
        Ok(validator)
    }
}

/// A compile error names the schema's keyword, never an instance (there is none yet).
fn schema_error(error: &ValidationError<'_>) -> String {
    match error.kind() {
        ValidationErrorKind::Referencing(error) => error.to_string(),
        kind => format!(
            "`{}` at `{}` is invalid: {}",
            kind.keyword(),
            error.instance_path(),
            reason(kind)
        ),
    }
}

/// 3.0's `nullable: true` is not JSON Schema: it becomes a `null` in `type` (and `enum`).
/// A `nullable` beside a `$ref` or without a `type` stays unsupported: draft 4 ignores it.
fn rewrite_nullable(value: &mut Value) {
    match value {
        Value::Object(object) => {
            if object.get("nullable") == Some(&Value::Bool(true)) {
                if let Some(Value::String(single)) = object.get("type") {
                    let types = json!([single, "null"]);
                    object.insert("type".to_owned(), types);
                }
                if let Some(Value::Array(options)) = object.get_mut("enum")
                    && !options.contains(&Value::Null)
                {
                    options.push(Value::Null);
                }
            }
            object.values_mut().for_each(rewrite_nullable);
        }
        Value::Array(items) => items.iter_mut().for_each(rewrite_nullable),
        _ => {}
    }
}

/// The JSON types a schema admits, as far as its `type` says: what a parameter's text is
/// read as before validation.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Types {
    pub integer: bool,
    pub number: bool,
    pub boolean: bool,
    pub array: bool,
    pub object: bool,
}

impl Types {
    /// The types of the schema at `pointer`, following local `$ref`s.
    pub(super) fn at(root: &Value, pointer: &str) -> Self {
        root.pointer(pointer)
            .and_then(|schema| follow(root, schema))
            .map_or_else(Self::default, Self::of)
    }

    /// The types of the `items` of the array schema at `pointer`.
    pub(super) fn of_items(root: &Value, pointer: &str) -> Self {
        root.pointer(pointer)
            .and_then(|schema| follow(root, schema))
            .and_then(|schema| schema.get("items"))
            .and_then(|items| follow(root, items))
            .map_or_else(Self::default, Self::of)
    }

    fn of(schema: &Value) -> Self {
        let mut types = Self::default();
        let mut admit = |name: &str| match name {
            "integer" => types.integer = true,
            "number" => types.number = true,
            "boolean" => types.boolean = true,
            "array" => types.array = true,
            "object" => types.object = true,
            _ => {}
        };
        match schema.get("type") {
            Some(Value::String(name)) => admit(name),
            Some(Value::Array(names)) => names.iter().filter_map(Value::as_str).for_each(admit),
            _ => {}
        }
        types
    }
}

/// The schema `schema` stands for once its local `$ref`s are followed.
fn follow<'a>(root: &'a Value, mut schema: &'a Value) -> Option<&'a Value> {
    for _ in 0..MAX_REF_DEPTH {
        let Some(reference) = schema.get("$ref").and_then(Value::as_str) else {
            return Some(schema);
        };
        let target = percent_encoding::percent_decode_str(reference.strip_prefix('#')?)
            .decode_utf8()
            .ok()?;
        schema = root.pointer(&target)?;
    }
    None
}

/// Why a value fails a schema, in words that name the schema's constraints and never the
/// value (it may be a password or a card number).
pub(super) fn reason(kind: &ValidationErrorKind) -> String {
    use ValidationErrorKind as Kind;
    match kind {
        Kind::AdditionalItems { limit } => format!("more than {limit} items"),
        Kind::AdditionalProperties { unexpected } => {
            format!("additional {} not allowed", property_list(unexpected))
        }
        Kind::UnevaluatedProperties { unexpected } => {
            format!("unevaluated {} not allowed", property_list(unexpected))
        }
        Kind::UnevaluatedItems { .. } => "unevaluated items are not allowed".to_owned(),
        Kind::AnyOf { .. } => "does not match any of the `anyOf` schemas".to_owned(),
        Kind::OneOfNotValid { .. } => "does not match any of the `oneOf` schemas".to_owned(),
        Kind::OneOfMultipleValid { .. } => {
            "matches more than one of the `oneOf` schemas".to_owned()
        }
        Kind::Not { .. } => "matches the schema under `not`".to_owned(),
        Kind::Constant { .. } => "not the expected constant".to_owned(),
        Kind::Enum { .. } => "not one of the allowed values".to_owned(),
        Kind::Contains => "no item matches the `contains` schema".to_owned(),
        Kind::FalseSchema => "no value is allowed here".to_owned(),
        Kind::Format { format } => format!("not a valid `{format}`"),
        Kind::Maximum { limit } => format!("greater than the maximum {limit}"),
        Kind::ExclusiveMaximum { limit } => format!("not less than the exclusive maximum {limit}"),
        Kind::Minimum { limit } => format!("less than the minimum {limit}"),
        Kind::ExclusiveMinimum { limit } => {
            format!("not greater than the exclusive minimum {limit}")
        }
        Kind::MaxItems { limit } => format!("more than {limit} items"),
        Kind::MinItems { limit } => format!("fewer than {limit} items"),
        Kind::MaxLength { limit } => format!("longer than {limit} characters"),
        Kind::MinLength { limit } => format!("shorter than {limit} characters"),
        Kind::MaxProperties { limit } => format!("more than {limit} properties"),
        Kind::MinProperties { limit } => format!("fewer than {limit} properties"),
        Kind::MultipleOf { multiple_of } => format!("not a multiple of {multiple_of}"),
        Kind::Pattern { pattern } => format!("does not match the pattern `{pattern}`"),
        Kind::PropertyNames { .. } => "a property name does not match `propertyNames`".to_owned(),
        Kind::Required { property } => match property.as_str() {
            Some(name) => format!("required property `{name}` is missing"),
            None => "a required property is missing".to_owned(),
        },
        Kind::Type { kind } => format!("expected {}", expected_types(kind)),
        Kind::UniqueItems => "items are not unique".to_owned(),
        Kind::Referencing(_) => "a schema reference cannot be resolved".to_owned(),
        other => format!("fails `{}`", other.keyword()),
    }
}

/// Property names come from the request: a few, each cut short, keep the reason bounded.
fn property_list(names: &[String]) -> String {
    let mut quoted: Vec<String> = names
        .iter()
        .take(MAX_LISTED_NAMES)
        .map(|name| format!("`{}`", super::validate::bounded(name)))
        .collect();
    if names.len() > MAX_LISTED_NAMES {
        quoted.push("…".to_owned());
    }
    match quoted.as_slice() {
        [single] => format!("property {single} is"),
        _ => format!("properties {} are", quoted.join(", ")),
    }
}

fn expected_types(kind: &TypeKind) -> String {
    match kind {
        TypeKind::Single(single) => single.to_string(),
        TypeKind::Multiple(set) => {
            let names: Vec<String> = set.iter().map(|single| single.to_string()).collect();
            format!("one of {}", names.join(", "))
        }
    }
}
