//! Checking one observed request against its declared operation. Every violation is worded
//! from names and constraints of the spec, never from the request's values.

use std::{borrow::Cow, collections::HashMap};

use jsonschema::Validator;
use serde_json::{Number, Value};

use super::{
    DeclaredOperation, ObservedRequest, Violation, ViolationKind,
    model::{self, MediaType, Parameter, ParameterIn, RequestBody, Style, ValueSchema},
    schema::{self, Types},
};

/// The most violations one request reports: enough to act on, bounded for a hostile request.
const MAX_VIOLATIONS: usize = 16;

/// The largest body validated; a larger one is skipped rather than parsed.
const MAX_BODY: usize = 64 * 1024;

/// The longest request-supplied name (a query key, a JSON pointer) put in a violation.
const MAX_NAME: usize = 128;

/// Headers OpenAPI says are described elsewhere than in `parameters`.
const IGNORED_HEADERS: [&str; 3] = ["accept", "content-type", "authorization"];

/// `text` cut to a bounded length at a character boundary.
pub(super) fn bounded(text: &str) -> Cow<'_, str> {
    match text.char_indices().nth(MAX_NAME) {
        Some((end, _)) => Cow::Owned(format!("{}…", text.get(..end).unwrap_or_default())),
        None => Cow::Borrowed(text),
    }
}

/// Violations, collected up to the bound.
struct Report {
    violations: Vec<Violation>,
}

impl Report {
    fn is_full(&self) -> bool {
        self.violations.len() >= MAX_VIOLATIONS
    }

    fn push(&mut self, kind: ViolationKind, location: String, reason: String) {
        if !self.is_full() {
            self.violations.push(Violation {
                kind,
                location,
                reason,
            });
        }
    }

    /// The schema failures of a body, each located by the JSON pointer of what failed.
    fn body_failures(&mut self, validator: &Validator, instance: &Value) {
        let room = MAX_VIOLATIONS.saturating_sub(self.violations.len());
        for error in validator.iter_errors(instance).take(room) {
            self.push(
                ViolationKind::InvalidBody,
                format!("body{}", bounded(error.instance_path().as_str())),
                schema::reason(error.kind()),
            );
        }
    }
}

/// Checks `request` against `operation`.
pub(super) fn validate(
    operation: &DeclaredOperation,
    request: &ObservedRequest<'_>,
) -> Vec<Violation> {
    let mut report = Report {
        violations: Vec::new(),
    };
    check_query(&operation.parameters, request.query, &mut report);
    check_headers(&operation.parameters, &request.header_names, &mut report);
    check_path(operation, request.path, &mut report);
    if let Some(body) = &operation.body {
        check_body(body, request, &mut report);
    }
    report.violations
}

/// The query's pairs, decoded, grouped by name in order of first appearance.
fn query_pairs(query: Option<&str>) -> Vec<(String, Vec<String>)> {
    let mut grouped: Vec<(String, Vec<String>)> = Vec::new();
    // Indexed by name so that a query of thousands of keys stays linear.
    let mut index: HashMap<String, usize> = HashMap::new();
    for (name, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        let value = value.into_owned();
        match index.get(name.as_ref()).and_then(|&at| grouped.get_mut(at)) {
            Some((_, values)) => values.push(value),
            None => {
                index.insert(name.clone().into_owned(), grouped.len());
                grouped.push((name.into_owned(), vec![value]));
            }
        }
    }
    grouped
}

fn check_query(parameters: &[Parameter], query: Option<&str>, report: &mut Report) {
    let pairs = query_pairs(query);
    let declared: Vec<&Parameter> = parameters
        .iter()
        .filter(|parameter| parameter.location == ParameterIn::Query)
        .collect();
    for parameter in &declared {
        let values = pairs
            .iter()
            .find(|(name, _)| *name == parameter.name)
            .map(|(_, values)| values.as_slice());
        let location = format!("query.{}", parameter.name);
        match values {
            None if parameter.required && !spread_over_keys(parameter, &pairs) => report.push(
                ViolationKind::MissingParameter,
                location,
                "required query parameter is missing".to_owned(),
            ),
            None => {}
            Some(values) => check_value(parameter, values, &location, report),
        }
    }
    // An exploded object parameter spreads its properties over arbitrary keys.
    if declared.iter().any(|parameter| takes_any_key(parameter)) {
        return;
    }
    for (name, _) in &pairs {
        if report.is_full() {
            return;
        }
        if !declared.iter().any(|parameter| owns_key(parameter, name)) {
            report.push(
                ViolationKind::UnknownParameter,
                format!("query.{}", bounded(name)),
                "query parameter is not declared".to_owned(),
            );
        }
    }
}

/// Whether `key` is `parameter` itself or one of its `deepObject` keys (`filter[status]`).
fn owns_key(parameter: &Parameter, key: &str) -> bool {
    key == parameter.name
        || (parameter.style == Style::DeepObject
            && key
                .strip_prefix(parameter.name.as_str())
                .is_some_and(|rest| rest.starts_with('[')))
}

/// Whether a parameter absent under its own name may still be present under other keys.
fn spread_over_keys(parameter: &Parameter, pairs: &[(String, Vec<String>)]) -> bool {
    takes_any_key(parameter)
        || (parameter.style == Style::DeepObject
            && pairs.iter().any(|(key, _)| owns_key(parameter, key)))
}

fn takes_any_key(parameter: &Parameter) -> bool {
    parameter.style == Style::FormExploded
        && matches!(&parameter.schema, Some(ValueSchema::Typed { types, .. }) if types.object)
}

/// Validates the values given for one parameter (several when it is repeated).
fn check_value(parameter: &Parameter, values: &[String], location: &str, report: &mut Report) {
    let Some(schema) = &parameter.schema else {
        return;
    };
    let instances: Vec<Value> = match schema {
        ValueSchema::Typed { types, items, .. } if types.array => {
            vec![array_of(values, parameter.style, *items)]
        }
        // Objects are only read from the keys they spread over, which are not checked.
        ValueSchema::Typed { types, .. } if types.object => return,
        ValueSchema::Typed { types, .. } => {
            values.iter().map(|value| coerce(value, *types)).collect()
        }
        ValueSchema::Content { .. } => {
            let parsed: Option<Vec<Value>> = values
                .iter()
                .map(|value| serde_json::from_str(value).ok())
                .collect();
            match parsed {
                Some(parsed) => parsed,
                None => {
                    report.push(
                        ViolationKind::InvalidParameter,
                        location.to_owned(),
                        "not valid JSON".to_owned(),
                    );
                    return;
                }
            }
        }
    };
    let validator = match schema {
        ValueSchema::Typed { validator, .. } | ValueSchema::Content { validator } => validator,
    };
    // One failure per parameter: further reasons for the same value rarely add to the first.
    let failure = instances
        .iter()
        .find_map(|instance| validator.iter_errors(instance).next());
    if let Some(error) = failure {
        report.push(
            ViolationKind::InvalidParameter,
            location.to_owned(),
            schema::reason(error.kind()),
        );
    }
}

/// An array parameter's items, from repeated keys or one delimited value.
fn array_of(values: &[String], style: Style, items: Types) -> Value {
    let pieces: Vec<&str> = match (style, values) {
        (Style::Delimited(delimiter), [single]) => single.split(delimiter).collect(),
        (Style::Other, [single]) => single.split(',').collect(),
        _ => values.iter().map(String::as_str).collect(),
    };
    Value::Array(
        pieces
            .into_iter()
            .map(|piece| coerce(piece, items))
            .collect(),
    )
}

/// Reads a parameter's text as the JSON type its schema admits; text that fits none stays a
/// string, so the validator reports the type it expected.
fn coerce(text: &str, types: Types) -> Value {
    if types.integer
        && let Ok(integer) = text.parse::<i64>()
    {
        return Value::from(integer);
    }
    if (types.number || types.integer)
        && let Some(number) = text.parse::<f64>().ok().and_then(Number::from_f64)
    {
        return Value::Number(number);
    }
    if types.boolean {
        match text {
            "true" => return Value::Bool(true),
            "false" => return Value::Bool(false),
            _ => {}
        }
    }
    Value::String(text.to_owned())
}

fn check_headers(parameters: &[Parameter], present: &[&str], report: &mut Report) {
    for parameter in parameters {
        let lowercase = parameter.name.to_ascii_lowercase();
        if parameter.location != ParameterIn::Header
            || !parameter.required
            || IGNORED_HEADERS.contains(&lowercase.as_str())
        {
            continue;
        }
        if !present
            .iter()
            .any(|name| name.eq_ignore_ascii_case(&lowercase))
        {
            report.push(
                ViolationKind::MissingParameter,
                format!("header.{}", parameter.name),
                "required header is missing".to_owned(),
            );
        }
    }
}

fn check_path(operation: &DeclaredOperation, path: &str, report: &mut Report) {
    if !operation.template.matches(path) {
        return;
    }
    for (name, raw) in operation.template.parameter_values(path) {
        let Some(parameter) = operation
            .parameters
            .iter()
            .find(|parameter| parameter.location == ParameterIn::Path && parameter.name == name)
        else {
            continue;
        };
        let value = percent_encoding::percent_decode_str(raw).decode_utf8_lossy();
        let location = format!("path.{name}");
        check_value(
            parameter,
            std::slice::from_ref(&value.into_owned()),
            &location,
            report,
        );
    }
}

fn check_body(body: &RequestBody, request: &ObservedRequest<'_>, report: &mut Report) {
    let Some(bytes) = request.body.filter(|bytes| !bytes.is_empty()) else {
        if body.required {
            report.push(
                ViolationKind::MissingBody,
                "body".to_owned(),
                "required request body is missing".to_owned(),
            );
        }
        return;
    };
    // A cut body tells nothing about the whole: neither its syntax nor its content is judged.
    if !request.body_complete || bytes.len() > MAX_BODY {
        return;
    }
    let media_type = request.content_type.map(essence);
    let Some(declared) = declared_media_type(&body.content, media_type.as_deref()) else {
        if !body.content.is_empty() {
            report.push(
                ViolationKind::InvalidBody,
                "body".to_owned(),
                format!(
                    "media type is not declared (declared: {})",
                    declared_names(&body.content)
                ),
            );
        }
        return;
    };
    let Some(validator) = &declared.validator else {
        return;
    };
    match serde_json::from_slice::<Value>(bytes) {
        Ok(instance) => report.body_failures(validator, &instance),
        Err(_) => report.push(
            ViolationKind::InvalidBody,
            "body".to_owned(),
            "not valid JSON".to_owned(),
        ),
    }
}

/// The media type without its parameters, lowercase (`application/json`).
fn essence(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// The declared media type a request's falls under: exact, then `type/*`, then `*/*`. A
/// request without a content type is read as the first JSON one declared.
fn declared_media_type<'a>(
    content: &'a [MediaType],
    media_type: Option<&str>,
) -> Option<&'a MediaType> {
    let Some(media_type) = media_type.filter(|media_type| !media_type.is_empty()) else {
        return content
            .iter()
            .find(|declared| model::is_json(&declared.name));
    };
    let range = media_type
        .split_once('/')
        .map(|(kind, _)| format!("{kind}/*"));
    content
        .iter()
        .find(|declared| declared.name == media_type)
        .or_else(|| {
            content
                .iter()
                .find(|declared| Some(&declared.name) == range.as_ref())
        })
        .or_else(|| content.iter().find(|declared| declared.name == "*/*"))
}

fn declared_names(content: &[MediaType]) -> String {
    let names: Vec<&str> = content
        .iter()
        .map(|declared| declared.name.as_str())
        .collect();
    names.join(", ")
}
