//! The declared operations, read from the document: parameters merged across the path and
//! the operation, `$ref`s followed, validators compiled.

use std::sync::Arc;

use jsonschema::Validator;
use serde_json::{Map, Value};

use super::{
    DeclaredOperation,
    error::Problem,
    schema::{Schemas, Types},
    template::Template,
};

/// How many `$ref`s are followed to reach a parameter, body or path item, against cycles.
const MAX_REF_DEPTH: usize = 16;

/// The HTTP methods a path item may declare operations for.
const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// Where a parameter is carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ParameterIn {
    Query,
    Header,
    Path,
    Cookie,
}

impl ParameterIn {
    fn parse(text: &str) -> Option<Self> {
        match text {
            "query" => Some(Self::Query),
            "header" => Some(Self::Header),
            "path" => Some(Self::Path),
            "cookie" => Some(Self::Cookie),
            _ => None,
        }
    }
}

/// How an array or object parameter is serialized (the `style` and `explode` fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Style {
    /// `form` with `explode` (the query default): one `name=value` pair per item.
    FormExploded,
    /// Items joined with this delimiter in one value (`form` without `explode` uses `,`).
    Delimited(char),
    /// `name[key]=value` pairs.
    DeepObject,
    /// Anything else (`simple`, `label`, `matrix`): the value is read as one item.
    Other,
}

impl Style {
    fn of(parameter: &Value, location: ParameterIn) -> Self {
        let style = parameter.get("style").and_then(Value::as_str);
        let form = style.unwrap_or(match location {
            ParameterIn::Query | ParameterIn::Cookie => "form",
            ParameterIn::Header | ParameterIn::Path => "simple",
        });
        let explode = parameter
            .get("explode")
            .and_then(Value::as_bool)
            .unwrap_or(form == "form");
        match (form, explode) {
            ("form", true) => Self::FormExploded,
            ("form", false) => Self::Delimited(','),
            ("spaceDelimited", _) => Self::Delimited(' '),
            ("pipeDelimited", _) => Self::Delimited('|'),
            ("deepObject", _) => Self::DeepObject,
            _ => Self::Other,
        }
    }
}

/// What a parameter's value must be.
#[derive(Debug, Clone)]
pub(super) enum ValueSchema {
    /// `schema`: the text is read as the types it admits, then validated.
    Typed {
        validator: Arc<Validator>,
        types: Types,
        items: Types,
    },
    /// `content`: the text is a serialized document (JSON is the only one read).
    Content { validator: Arc<Validator> },
}

/// A declared parameter.
#[derive(Debug, Clone)]
pub(super) struct Parameter {
    pub name: String,
    pub location: ParameterIn,
    pub required: bool,
    pub style: Style,
    pub schema: Option<ValueSchema>,
}

/// A declared media type of a request body.
#[derive(Debug, Clone)]
pub(super) struct MediaType {
    /// Lowercase, possibly a range (`application/*`, `*/*`).
    pub name: String,
    /// For JSON media types with a schema.
    pub validator: Option<Arc<Validator>>,
}

/// A declared request body.
#[derive(Debug, Clone)]
pub(super) struct RequestBody {
    pub required: bool,
    pub content: Vec<MediaType>,
}

/// Whether a (lowercase) media type carries JSON: `application/json`, `*/*+json`.
pub(super) fn is_json(media_type: &str) -> bool {
    media_type == "application/json" || media_type.ends_with("+json")
}

/// Reads every operation of the document.
pub(super) fn operations(
    root: &Value,
    schemas: &mut Schemas,
) -> Result<Vec<DeclaredOperation>, Problem> {
    let base = base_path(root);
    let mut operations = Vec::new();
    let Some(paths) = root.get("paths").and_then(Value::as_object) else {
        return Ok(operations);
    };
    for (template, item) in paths {
        let pointer = format!("/paths/{}", escape(template));
        let (item, item_pointer) = resolve(root, item, pointer)?;
        let shared = parameters(root, item, &item_pointer, schemas)?;
        let path_template = format!("{base}{template}");
        for method in METHODS {
            let Some(operation) = item.get(method) else {
                continue;
            };
            let pointer = format!("{item_pointer}/{method}");
            operations.push(operation_at(
                root,
                Declared {
                    method,
                    path_template: &path_template,
                    operation,
                    pointer: &pointer,
                },
                &shared,
                schemas,
            )?);
        }
    }
    Ok(operations)
}

/// An operation object and where it was declared.
struct Declared<'a> {
    method: &'a str,
    path_template: &'a str,
    operation: &'a Value,
    pointer: &'a str,
}

fn operation_at(
    root: &Value,
    declared: Declared<'_>,
    shared: &[Parameter],
    schemas: &mut Schemas,
) -> Result<DeclaredOperation, Problem> {
    let own = parameters(root, declared.operation, declared.pointer, schemas)?;
    let mut merged: Vec<Parameter> = shared
        .iter()
        .filter(|inherited| {
            !own.iter().any(|parameter| {
                parameter.name == inherited.name && parameter.location == inherited.location
            })
        })
        .cloned()
        .collect();
    merged.extend(own);
    let body = match declared.operation.get("requestBody") {
        Some(body) => Some(request_body(
            root,
            body,
            format!("{}/requestBody", declared.pointer),
            schemas,
        )?),
        None => None,
    };
    Ok(DeclaredOperation {
        method: declared.method.to_ascii_uppercase(),
        path_template: declared.path_template.to_owned(),
        operation_id: declared
            .operation
            .get("operationId")
            .and_then(Value::as_str)
            .map(str::to_owned),
        deprecated: declared
            .operation
            .get("deprecated")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        template: Template::parse(declared.path_template),
        parameters: merged,
        body,
    })
}

/// The `parameters` of a path item or operation at `pointer`.
fn parameters(
    root: &Value,
    holder: &Value,
    pointer: &str,
    schemas: &mut Schemas,
) -> Result<Vec<Parameter>, Problem> {
    let Some(list) = holder.get("parameters").and_then(Value::as_array) else {
        return Ok(Vec::new());
    };
    let mut parameters = Vec::with_capacity(list.len());
    for (index, parameter) in list.iter().enumerate() {
        let (parameter, pointer) =
            resolve(root, parameter, format!("{pointer}/parameters/{index}"))?;
        if let Some(parameter) = parameter_at(root, parameter, &pointer, schemas)? {
            parameters.push(parameter);
        }
    }
    Ok(parameters)
}

/// One parameter; `None` for those a request cannot be checked against (an unknown `in`).
fn parameter_at(
    root: &Value,
    parameter: &Value,
    pointer: &str,
    schemas: &mut Schemas,
) -> Result<Option<Parameter>, Problem> {
    let name = parameter.get("name").and_then(Value::as_str);
    let location = parameter
        .get("in")
        .and_then(Value::as_str)
        .and_then(ParameterIn::parse);
    let (Some(name), Some(location)) = (name, location) else {
        return Ok(None);
    };
    let required = location == ParameterIn::Path
        || parameter
            .get("required")
            .and_then(Value::as_bool)
            .unwrap_or(false);
    Ok(Some(Parameter {
        name: name.to_owned(),
        location,
        required,
        style: Style::of(parameter, location),
        schema: value_schema(root, parameter, pointer, schemas)?,
    }))
}

fn value_schema(
    root: &Value,
    parameter: &Value,
    pointer: &str,
    schemas: &mut Schemas,
) -> Result<Option<ValueSchema>, Problem> {
    if parameter.get("schema").is_some() {
        let schema_pointer = format!("{pointer}/schema");
        let validator = compile(schemas, &schema_pointer)?;
        return Ok(Some(ValueSchema::Typed {
            validator,
            types: Types::at(root, &schema_pointer),
            items: Types::of_items(root, &schema_pointer),
        }));
    }
    let json_schema = parameter
        .get("content")
        .and_then(Value::as_object)
        .and_then(|content| json_media_type(content))
        .filter(|(_, media_type)| media_type.get("schema").is_some());
    match json_schema {
        Some((name, _)) => {
            let schema_pointer = format!("{pointer}/content/{}/schema", escape(name));
            Ok(Some(ValueSchema::Content {
                validator: compile(schemas, &schema_pointer)?,
            }))
        }
        None => Ok(None),
    }
}

fn json_media_type(content: &Map<String, Value>) -> Option<(&String, &Value)> {
    content
        .iter()
        .find(|(name, _)| is_json(&name.to_ascii_lowercase()))
}

fn request_body(
    root: &Value,
    body: &Value,
    pointer: String,
    schemas: &mut Schemas,
) -> Result<RequestBody, Problem> {
    let (body, pointer) = resolve(root, body, pointer)?;
    let mut content = Vec::new();
    if let Some(declared) = body.get("content").and_then(Value::as_object) {
        for (key, media_type) in declared {
            let name = key.to_ascii_lowercase();
            let validator = if is_json(&name) && media_type.get("schema").is_some() {
                let schema_pointer = format!("{pointer}/content/{}/schema", escape(key));
                Some(compile(schemas, &schema_pointer)?)
            } else {
                None
            };
            content.push(MediaType { name, validator });
        }
    }
    Ok(RequestBody {
        required: body
            .get("required")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        content,
    })
}

fn compile(schemas: &mut Schemas, pointer: &str) -> Result<Arc<Validator>, Problem> {
    schemas
        .validator(pointer)
        .map_err(|reason| Problem::Schema {
            at: pointer.to_owned(),
            reason,
        })
}

/// Follows `$ref`s from `value` (found at `pointer`) to the object they name, and its pointer.
fn resolve<'a>(
    root: &'a Value,
    value: &'a Value,
    pointer: String,
) -> Result<(&'a Value, String), Problem> {
    let mut current = (value, pointer);
    for _ in 0..MAX_REF_DEPTH {
        let Some(reference) = current.0.get("$ref") else {
            return Ok(current);
        };
        let problem = |reason: String| Problem::Reference {
            at: current.1.clone(),
            reason,
        };
        let reference = reference
            .as_str()
            .ok_or_else(|| problem("`$ref` is not a string".to_owned()))?;
        let target = reference
            .strip_prefix('#')
            .and_then(|fragment| {
                percent_encoding::percent_decode_str(fragment)
                    .decode_utf8()
                    .ok()
            })
            .ok_or_else(|| problem(format!("`{reference}` is not within the document")))?
            .into_owned();
        let next = root
            .pointer(&target)
            .ok_or_else(|| problem(format!("`{reference}` names nothing in the document")))?;
        current = (next, target);
    }
    Err(Problem::Reference {
        at: current.1,
        reason: format!("more than {MAX_REF_DEPTH} chained references"),
    })
}

/// A key as a JSON pointer segment.
fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// The path of `servers[0].url` (`/api/v1`), with its variables at their defaults; empty
/// when it has none.
fn base_path(root: &Value) -> String {
    let Some(server) = root.get("servers").and_then(|servers| servers.get(0)) else {
        return String::new();
    };
    let Some(url) = server.get("url").and_then(Value::as_str) else {
        return String::new();
    };
    let url = with_variables(url, server.get("variables"));
    let after_scheme = url.split_once("//").map_or(url.as_str(), |(_, rest)| rest);
    let path = if url.contains("//") {
        after_scheme.split_once('/').map_or("", |(_, path)| path)
    } else {
        after_scheme
    };
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let path = path.trim_matches('/');
    if path.is_empty() {
        String::new()
    } else {
        format!("/{path}")
    }
}

/// `url` with each `{name}` replaced by the default of that server variable.
fn with_variables(url: &str, variables: Option<&Value>) -> String {
    let mut expanded = String::with_capacity(url.len());
    let mut rest = url;
    while let Some((before, after)) = rest.split_once('{') {
        expanded.push_str(before);
        let Some((name, after)) = after.split_once('}') else {
            rest = after;
            break;
        };
        let default = variables
            .and_then(|variables| variables.get(name))
            .and_then(|variable| variable.get("default"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        expanded.push_str(default);
        rest = after;
    }
    expanded.push_str(rest);
    expanded
}
