//! One `ExportTraceServiceRequest` assembled from messages encoded earlier: each span is
//! encoded once, when its call is recorded, and each process's resource once, when it is first
//! seen; a batch only adds the enclosing fields (tag and length of each).
//!
//! ```text
//! ExportTraceServiceRequest { repeated ResourceSpans resource_spans = 1; }
//! ResourceSpans             { Resource resource = 1; repeated ScopeSpans scope_spans = 2; }
//! ScopeSpans                { InstrumentationScope scope = 1; repeated Span spans = 2; }
//! ```

use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};

/// Field 1 of each of the three messages.
const FIRST: u32 = 1;
/// Field 2 of `ResourceSpans` and `ScopeSpans`.
const SECOND: u32 = 2;

/// Bytes a length-delimited field of `len` bytes takes, tag included.
fn field_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

/// Writes the tag and length of a length-delimited field.
fn field_head(tag: u32, len: usize, out: &mut Vec<u8>) {
    encode_key(tag, WireType::LengthDelimited, out);
    encode_varint(len as u64, out);
}

/// An export request being assembled.
#[derive(Debug, Default)]
pub(super) struct TraceRequest {
    bytes: Vec<u8>,
}

impl TraceRequest {
    /// Adds one `ResourceSpans`: an encoded `Resource`, an encoded `InstrumentationScope`, and
    /// encoded `Span`s.
    pub fn add_resource(&mut self, resource: &[u8], scope: &[u8], spans: &[Vec<u8>]) {
        let scope_spans_len = field_len(FIRST, scope.len())
            + spans
                .iter()
                .map(|span| field_len(SECOND, span.len()))
                .sum::<usize>();
        let resource_spans_len =
            field_len(FIRST, resource.len()) + field_len(SECOND, scope_spans_len);
        let out = &mut self.bytes;
        out.reserve(field_len(FIRST, resource_spans_len));
        field_head(FIRST, resource_spans_len, out);
        field_head(FIRST, resource.len(), out);
        out.extend_from_slice(resource);
        field_head(SECOND, scope_spans_len, out);
        field_head(FIRST, scope.len(), out);
        out.extend_from_slice(scope);
        for span in spans {
            field_head(SECOND, span.len(), out);
            out.extend_from_slice(span);
        }
    }

    /// The encoded request.
    pub fn finish(self) -> Vec<u8> {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::{
        collector::trace::v1::ExportTraceServiceRequest,
        common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value},
        resource::v1::Resource,
        trace::v1::Span,
    };
    use prost::Message;

    use super::*;

    fn resource(name: &str) -> Resource {
        Resource {
            attributes: vec![KeyValue {
                key: "service.name".into(),
                value: Some(AnyValue {
                    value: Some(any_value::Value::StringValue(name.into())),
                }),
                ..KeyValue::default()
            }],
            ..Resource::default()
        }
    }

    fn span(name: &str) -> Span {
        Span {
            name: name.into(),
            // Long enough that the length prefix takes two bytes.
            trace_state: "x".repeat(200),
            ..Span::default()
        }
    }

    #[test]
    fn assembled_request_decodes_as_the_official_message() {
        let scope = InstrumentationScope {
            name: "apiscope".into(),
            ..InstrumentationScope::default()
        };
        let mut request = TraceRequest::default();
        request.add_resource(
            &resource("a").encode_to_vec(),
            &scope.encode_to_vec(),
            &[span("one").encode_to_vec(), span("two").encode_to_vec()],
        );
        request.add_resource(
            &resource("b").encode_to_vec(),
            &scope.encode_to_vec(),
            &[span("three").encode_to_vec()],
        );
        let decoded = ExportTraceServiceRequest::decode(request.finish().as_slice()).unwrap();
        assert_eq!(decoded.resource_spans.len(), 2);
        assert_eq!(decoded.resource_spans[0].resource, Some(resource("a")));
        assert_eq!(decoded.resource_spans[1].resource, Some(resource("b")));
        let names: Vec<Vec<String>> = decoded
            .resource_spans
            .iter()
            .map(|resource_spans| {
                assert_eq!(resource_spans.scope_spans.len(), 1);
                let scope_spans = &resource_spans.scope_spans[0];
                assert_eq!(scope_spans.scope.as_ref(), Some(&scope));
                scope_spans.spans.iter().map(|s| s.name.clone()).collect()
            })
            .collect();
        assert_eq!(names, [vec!["one", "two"], vec!["three"]]);
        assert_eq!(
            decoded.resource_spans[0].scope_spans[0].spans[0],
            span("one")
        );
    }

    #[test]
    fn empty_request_is_empty() {
        let decoded =
            ExportTraceServiceRequest::decode(TraceRequest::default().finish().as_slice()).unwrap();
        assert!(decoded.resource_spans.is_empty());
    }
}
