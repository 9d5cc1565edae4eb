//! Attributes written straight into an encoded OTLP message, from the SDK's `KeyValue`s.
//!
//! Every call's span carries a dozen or more attributes. Going through the protocol types
//! copied each key and value into a `KeyValue` and an `AnyValue` before prost encoded them
//! again: about a quarter of the cost of a span. Protobuf lets a repeated field's entries
//! appear anywhere in a message, so a span is encoded without its attributes and they are
//! appended here.

use opentelemetry::{KeyValue, Value};
use opentelemetry_proto::tonic::common::v1::AnyValue;
use prost::{
    Message,
    encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len},
};

/// `KeyValue.key` and `KeyValue.value`.
const KEY: u32 = 1;
const VALUE: u32 = 2;
/// The `AnyValue` cases written directly; arrays go through the protocol types.
const STRING_VALUE: u32 = 1;
const BOOL_VALUE: u32 = 2;
const INT_VALUE: u32 = 3;
const DOUBLE_VALUE: u32 = 4;

/// One attribute's value, ready to be measured and written.
enum Encoded<'a> {
    Str(&'a str),
    Bool(bool),
    Int(i64),
    Double(f64),
    /// An `AnyValue` message encoded by prost (arrays).
    Message(Vec<u8>),
}

impl<'a> Encoded<'a> {
    fn of(value: &'a Value) -> Self {
        match value {
            Value::String(text) => Self::Str(text.as_str()),
            Value::Bool(flag) => Self::Bool(*flag),
            Value::I64(number) => Self::Int(*number),
            Value::F64(number) => Self::Double(*number),
            other => Self::Message(AnyValue::from(other.clone()).encode_to_vec()),
        }
    }

    /// Length of the `AnyValue` message.
    fn len(&self) -> usize {
        match self {
            Self::Str(text) => key_len(STRING_VALUE) + length_delimited(text.len()),
            Self::Bool(_) => key_len(BOOL_VALUE) + 1,
            Self::Int(number) => key_len(INT_VALUE) + encoded_len_varint(*number as u64),
            Self::Double(_) => key_len(DOUBLE_VALUE) + 8,
            Self::Message(bytes) => bytes.len(),
        }
    }

    fn write(&self, buf: &mut Vec<u8>) {
        match self {
            Self::Str(text) => {
                encode_key(STRING_VALUE, WireType::LengthDelimited, buf);
                encode_varint(text.len() as u64, buf);
                buf.extend_from_slice(text.as_bytes());
            }
            Self::Bool(flag) => {
                encode_key(BOOL_VALUE, WireType::Varint, buf);
                encode_varint(u64::from(*flag), buf);
            }
            Self::Int(number) => {
                encode_key(INT_VALUE, WireType::Varint, buf);
                encode_varint(*number as u64, buf);
            }
            Self::Double(number) => {
                encode_key(DOUBLE_VALUE, WireType::SixtyFourBit, buf);
                buf.extend_from_slice(&number.to_le_bytes());
            }
            Self::Message(bytes) => buf.extend_from_slice(bytes),
        }
    }
}

/// Bytes of a length-delimited payload of `len` bytes, its length prefix included.
fn length_delimited(len: usize) -> usize {
    encoded_len_varint(len as u64) + len
}

/// Appends `attributes` to `buf`, an encoded message, as entries of its repeated `KeyValue`
/// field `tag`.
pub(super) fn append(tag: u32, attributes: &[KeyValue], buf: &mut Vec<u8>) {
    for attribute in attributes {
        let key = attribute.key.as_str();
        let value = Encoded::of(&attribute.value);
        let value_len = value.len();
        let entry_len = key_len(KEY)
            + length_delimited(key.len())
            + key_len(VALUE)
            + length_delimited(value_len);
        encode_key(tag, WireType::LengthDelimited, buf);
        encode_varint(entry_len as u64, buf);
        encode_key(KEY, WireType::LengthDelimited, buf);
        encode_varint(key.len() as u64, buf);
        buf.extend_from_slice(key.as_bytes());
        encode_key(VALUE, WireType::LengthDelimited, buf);
        encode_varint(value_len as u64, buf);
        value.write(buf);
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::Array;
    use opentelemetry_proto::tonic::trace::v1::Span;

    use super::*;
    use crate::export::otlp::spans::proto_attribute;

    #[test]
    fn appended_attributes_decode_as_the_protocol_types_would_encode_them() {
        let attributes = vec![
            KeyValue::new("url.path", "/users/42"),
            KeyValue::new("http.response.status_code", 200i64),
            KeyValue::new("negative", -7i64),
            KeyValue::new("error", true),
            KeyValue::new("ratio", 0.25),
            KeyValue::new("empty", ""),
            KeyValue::new("long", "x".repeat(300)),
            KeyValue::new(
                "tags",
                Value::Array(Array::String(vec!["a".into(), "b".into()])),
            ),
        ];
        let span = Span {
            name: "GET /users/{id}".into(),
            ..Span::default()
        };
        let mut bytes = span.encode_to_vec();
        append(9, &attributes, &mut bytes);
        let decoded = Span::decode(bytes.as_slice()).expect("the span decodes");
        assert_eq!(decoded.name, "GET /users/{id}");
        let expected: Vec<_> = attributes.into_iter().map(proto_attribute).collect();
        assert_eq!(decoded.attributes, expected);
    }
}
