//! Schemas learned from traffic: which JSON fields a body has, of which types, how often.
//! Bounded in depth and size, and blind to values: object keys that look like data (ids,
//! e-mail addresses, long tokens) are pooled as "additional properties" instead of becoming
//! field names, so a map keyed by customer e-mails never puts them in the inventory.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value, json};

use crate::analysis::routes::is_identifier;

/// Deepest nesting learned; deeper values are left out.
const MAX_DEPTH: usize = 8;
/// Places (fields, items) one schema holds at most.
const MAX_NODES: usize = 256;
/// Items of one array learned from; the rest are alike or left out.
const MAX_ITEMS: usize = 16;
/// Longest key kept as a field name.
const MAX_KEY_LEN: usize = 64;

/// The JSON types seen at one place, as a set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JsonTypes(u8);

/// JSON Schema's type names, in bit order.
const TYPE_NAMES: [&str; 7] = [
    "null", "boolean", "integer", "number", "string", "array", "object",
];

impl JsonTypes {
    const INTEGER: u8 = 1 << 2;
    const NUMBER: u8 = 1 << 3;
    const STRING: u8 = 1 << 4;
    const ARRAY: u8 = 1 << 5;
    const OBJECT: u8 = 1 << 6;

    /// The type of a JSON value.
    pub fn of(value: &Value) -> Self {
        Self(match value {
            Value::Null => 1,
            Value::Bool(_) => 1 << 1,
            Value::Number(number) if number.is_i64() || number.is_u64() => Self::INTEGER,
            Value::Number(_) => Self::NUMBER,
            Value::String(_) => Self::STRING,
            Value::Array(_) => Self::ARRAY,
            Value::Object(_) => Self::OBJECT,
        })
    }

    /// The type a textual value (query or path parameter) reads as.
    pub fn of_text(text: &str) -> Self {
        let value = match text {
            "true" | "false" => Value::Bool(true),
            _ if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) => json!(0),
            _ if text.parse::<f64>().is_ok_and(f64::is_finite) => json!(0.5),
            _ => Value::String(String::new()),
        };
        Self::of(&value)
    }

    /// Adds the types of `other`.
    pub fn add(&mut self, other: Self) {
        self.0 |= other.0;
    }

    /// The JSON Schema type names; `integer` is left out where `number` covers it.
    pub fn names(self) -> Vec<&'static str> {
        let bits = if self.0 & Self::NUMBER != 0 {
            self.0 & !Self::INTEGER
        } else {
            self.0
        };
        TYPE_NAMES
            .iter()
            .enumerate()
            .filter(|(bit, _)| bits & (1 << bit) != 0)
            .map(|(_, name)| *name)
            .collect()
    }

    /// The JSON Schema `type` keyword: one name, or a list of several.
    pub fn schema_type(self) -> Value {
        match self.names().as_slice() {
            [] => json!("string"),
            [one] => json!(one),
            many => json!(many),
        }
    }

    fn is_only_object(self) -> bool {
        self.0 == Self::OBJECT
    }
}

impl Serialize for JsonTypes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(
            TYPE_NAMES
                .iter()
                .enumerate()
                .filter(|(bit, _)| self.0 & (1 << bit) != 0)
                .map(|(_, name)| name),
        )
    }
}

impl<'de> Deserialize<'de> for JsonTypes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let names = Vec::<String>::deserialize(deserializer)?;
        let mut types = Self::default();
        for name in names {
            match TYPE_NAMES.iter().position(|known| *known == name) {
                Some(bit) => types.0 |= 1 << bit,
                None => {
                    return Err(serde::de::Error::custom(format!(
                        "`{name}` is not a JSON type"
                    )));
                }
            }
        }
        Ok(types)
    }
}

/// What was seen at one place of a body.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Shape {
    /// The types seen there.
    pub types: JsonTypes,
    /// How many values were seen there.
    pub seen: u64,
    /// Object fields by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub properties: BTreeMap<String, Shape>,
    /// Values under keys that look like data, or past the size bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional: Option<Box<Shape>>,
    /// Array items.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items: Option<Box<Shape>>,
}

/// A body schema learned from many messages, bounded to [`MAX_NODES`] places.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LearnedSchema {
    /// The body's top level.
    pub root: Shape,
    /// Places held.
    pub nodes: usize,
}

impl LearnedSchema {
    /// Learns from one body.
    pub fn learn(&mut self, value: &Value) {
        learn(&mut self.root, value, 0, &mut self.nodes);
    }

    /// The schema as a JSON Schema (2020-12, as OpenAPI 3.1 uses).
    pub fn to_json_schema(&self) -> Value {
        shape_schema(&self.root)
    }
}

/// True for object keys that name a field rather than carry data.
pub(super) fn names_a_field(key: &str) -> bool {
    let mut bytes = key.bytes();
    let starts_well = bytes
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == b'_' || first == b'$');
    starts_well
        && key.len() <= MAX_KEY_LEN
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'$'))
        && !is_identifier(key)
}

/// A child place, created when the bound allows; `None` once the schema is full.
fn child<'a>(slot: &'a mut Option<Box<Shape>>, nodes: &mut usize) -> Option<&'a mut Shape> {
    if slot.is_none() {
        if *nodes >= MAX_NODES {
            return None;
        }
        *nodes += 1;
        *slot = Some(Box::default());
    }
    slot.as_deref_mut()
}

fn learn(shape: &mut Shape, value: &Value, depth: usize, nodes: &mut usize) {
    shape.types.add(JsonTypes::of(value));
    shape.seen += 1;
    if depth >= MAX_DEPTH {
        return;
    }
    match value {
        Value::Object(fields) => {
            for (key, field) in fields {
                let known = shape.properties.contains_key(key);
                if names_a_field(key) && (known || *nodes < MAX_NODES) {
                    if !known {
                        *nodes += 1;
                    }
                    let place = shape.properties.entry(key.clone()).or_default();
                    learn(place, field, depth + 1, nodes);
                } else if let Some(place) = child(&mut shape.additional, nodes) {
                    learn(place, field, depth + 1, nodes);
                }
            }
        }
        Value::Array(items) => {
            for item in items.iter().take(MAX_ITEMS) {
                match child(&mut shape.items, nodes) {
                    Some(place) => learn(place, item, depth + 1, nodes),
                    None => break,
                }
            }
        }
        _ => {}
    }
}

fn shape_schema(shape: &Shape) -> Value {
    let mut schema = Map::new();
    schema.insert("type".into(), shape.types.schema_type());
    if !shape.properties.is_empty() {
        let properties: Map<String, Value> = shape
            .properties
            .iter()
            .map(|(name, place)| (name.clone(), shape_schema(place)))
            .collect();
        schema.insert("properties".into(), Value::Object(properties));
        // A field is required when every object seen there had it.
        if shape.types.is_only_object() {
            let required: Vec<&String> = shape
                .properties
                .iter()
                .filter(|(_, place)| place.seen >= shape.seen)
                .map(|(name, _)| name)
                .collect();
            if !required.is_empty() {
                schema.insert("required".into(), json!(required));
            }
        }
    }
    if let Some(additional) = &shape.additional {
        schema.insert("additionalProperties".into(), shape_schema(additional));
    }
    if let Some(items) = &shape.items {
        schema.insert("items".into(), shape_schema(items));
    }
    Value::Object(schema)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_types_and_required_are_learned() {
        let mut schema = LearnedSchema::default();
        schema.learn(&json!({"id": 1, "name": "a", "tags": ["x"], "price": 1.5}));
        schema.learn(&json!({"id": 2, "name": null, "price": 2}));
        assert_eq!(
            schema.to_json_schema(),
            json!({
                "type": "object",
                "properties": {
                    "id": {"type": "integer"},
                    "name": {"type": ["null", "string"]},
                    "price": {"type": "number"},
                    "tags": {"type": "array", "items": {"type": "string"}},
                },
                "required": ["id", "name", "price"],
            })
        );
    }

    #[test]
    fn keys_that_look_like_data_are_pooled() {
        let mut schema = LearnedSchema::default();
        schema.learn(&json!({
            "alice@example.com": {"role": "admin"},
            "12345": {"role": "user"},
            "3f2504e0-4f89-11d3-9a0c-0305e82c3301": {"role": "user"},
        }));
        assert!(schema.root.properties.is_empty());
        let pooled = schema.root.additional.as_ref().unwrap();
        assert_eq!(pooled.seen, 3);
        assert!(pooled.properties.contains_key("role"));
        let text = serde_json::to_string(&schema).unwrap();
        assert!(!text.contains("alice"), "{text}");
    }

    #[test]
    fn size_and_depth_are_bounded() {
        let mut schema = LearnedSchema::default();
        let wide: Map<String, Value> = (0..10_000)
            .map(|i| (format!("field_{i}"), json!(i)))
            .collect();
        schema.learn(&Value::Object(wide));
        let mut deep = json!(1);
        for _ in 0..1_000 {
            deep = json!({"next": deep});
        }
        schema.learn(&deep);
        assert!(schema.nodes <= MAX_NODES, "{}", schema.nodes);
        let round_trip: LearnedSchema =
            serde_json::from_str(&serde_json::to_string(&schema).unwrap()).unwrap();
        assert_eq!(round_trip, schema);
    }

    #[test]
    fn text_values_read_as_their_types() {
        assert_eq!(JsonTypes::of_text("42").names(), ["integer"]);
        assert_eq!(JsonTypes::of_text("4.5").names(), ["number"]);
        assert_eq!(JsonTypes::of_text("true").names(), ["boolean"]);
        assert_eq!(JsonTypes::of_text("abc").names(), ["string"]);
        assert_eq!(JsonTypes::of_text("NaN").names(), ["string"]);
    }
}
