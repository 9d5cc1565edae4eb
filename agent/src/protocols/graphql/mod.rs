//! GraphQL over HTTP: finds the operation a decoded HTTP request executes, whatever decoder
//! produced the exchange.
//!
//! Recognised requests: `POST` with a JSON body holding a `query` string (and optionally an
//! `operationName`) or a JSON array of such objects (a batch, one operation each), and `GET`
//! with `?query=` (and `operationName`) in the target. The executed operation is the one
//! `operationName` names, else the document's only operation; its type and name are read from
//! the document parsed by `apollo-parser`, with recursion and token limits, so a hostile
//! document costs bounded work and stack.
//!
//! Only the body's first `body_cap` bytes are kept. From a cut body, what those bytes say for
//! certain is reported and marked incomplete: the batch's objects that ended before the cut,
//! and an object cut after its `query` string when that string names the operation beyond
//! doubt; a `query` string itself cut gives nothing. Anything that is not valid JSON, not a
//! GraphQL request, or a document with a syntax error gives nothing: nothing is guessed.

use std::fmt;

use apollo_parser::{Parser, cst};
use serde::{
    Deserialize,
    de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor},
};

mod call;
pub mod describe;
#[doc(hidden)]
pub mod fuzzing;

use std::sync::Arc;

pub use call::{GraphqlOperation, GraphqlOperationType};

use super::{
    DecoderSettings,
    http::{HttpBody, HttpExchange, HttpRequest},
};
use crate::calls::{ApiCall, Layer};

/// Operations reported for one batched request at most: one request must not turn into an
/// unbounded number of calls. Operations past it are not reported and the others are marked
/// incomplete.
const MAX_BATCH: usize = 64;

/// Nesting the parser follows before it stops: real operations rarely nest more than a few
/// dozen levels, and the parser recurses once per level, so a hostile document must not be
/// able to exhaust the decoding thread's stack.
const RECURSION_LIMIT: usize = 64;

/// Tokens the parser reads at most: well above what a body cap's worth of document holds, a
/// bound for configurations with a large body cap.
const TOKEN_LIMIT: usize = 32_768;

/// The GraphQL operations an HTTP exchange executes, one layer each: the HTTP layer table's
/// entry for GraphQL (a batched request becomes one call per operation).
pub fn find(
    _call: &ApiCall,
    http: &HttpExchange,
    _settings: DecoderSettings,
) -> Vec<Arc<dyn Layer>> {
    operations(&http.request)
        .into_iter()
        .map(|operation| Arc::new(operation) as Arc<dyn Layer>)
        .collect()
}

/// The GraphQL operations `request` executes, in order: none when it is no GraphQL request
/// or they cannot be known, several for a batch.
pub fn operations(request: &HttpRequest) -> Vec<GraphqlOperation> {
    match request.method.as_str() {
        "GET" => request
            .query()
            .and_then(from_query_string)
            .into_iter()
            .collect(),
        "POST" => from_body(&request.body),
        _ => Vec::new(),
    }
}

/// What a request object said of `operationName`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OperationName<'a> {
    /// It names this operation.
    Given(&'a str),
    /// It is absent, null or empty: the document must hold a single operation.
    Absent,
    /// The object was cut before it could be seen.
    Unseen,
}

/// `GET /graphql?query=...&operationName=...`: heads are always seen whole.
fn from_query_string(query: &str) -> Option<GraphqlOperation> {
    if !query.contains("query=") {
        return None;
    }
    let mut document = None;
    let mut name = None;
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        match &*key {
            "query" => document = Some(value),
            "operationName" => name = Some(value),
            _ => {}
        }
    }
    let name = match name.as_deref() {
        Some(name) if !name.is_empty() => OperationName::Given(name),
        _ => OperationName::Absent,
    };
    select(&document?, name, false)
}

/// A JSON request body, single or batched, as far as it was kept.
fn from_body(body: &HttpBody) -> Vec<GraphqlOperation> {
    let captured: &[u8] = &body.captured;
    // Cheap refusals first: most POST bodies are not GraphQL, and are not parsed.
    let first = captured
        .iter()
        .copied()
        .find(|byte| !byte.is_ascii_whitespace());
    if !matches!(first, Some(b'{' | b'[')) || memchr::memmem::find(captured, b"\"query\"").is_none()
    {
        return Vec::new();
    }
    let cut = body.incomplete || (captured.len() as u64) < body.size;
    let mut objects = Vec::new();
    let mut deserializer = serde_json::Deserializer::from_slice(captured);
    let parsed = de::Deserializer::deserialize_any(&mut deserializer, Body(&mut objects))
        .and_then(|batch_cut| deserializer.end().map(|()| batch_cut));
    let incomplete = match parsed {
        Ok(batch_cut) => cut || batch_cut,
        // The kept bytes end inside the JSON: what ended before the cut is sound.
        Err(error) if cut && error.classify() == serde_json::error::Category::Eof => true,
        Err(_) => return Vec::new(),
    };
    objects
        .iter()
        .filter_map(|object| {
            let name = match &object.operation_name {
                Some(Some(name)) if !name.is_empty() => OperationName::Given(name),
                Some(_) => OperationName::Absent,
                None if object.closed => OperationName::Absent,
                None => OperationName::Unseen,
            };
            select(object.document.as_deref()?, name, incomplete)
        })
        .collect()
}

/// Parses `document` and picks the operation executed under `name`.
fn select(document: &str, name: OperationName<'_>, incomplete: bool) -> Option<GraphqlOperation> {
    let tree = Parser::new(document)
        .recursion_limit(RECURSION_LIMIT)
        .token_limit(TOKEN_LIMIT)
        .parse();
    // A syntax error means no operation runs. A limit stops the parser early: the operations
    // it read are sound, but others may follow unread.
    let mut limited = false;
    for error in tree.errors() {
        if !error.is_limit() {
            return None;
        }
        limited = true;
    }
    let mut operations = tree
        .document()
        .definitions()
        .filter_map(|definition| match definition {
            cst::Definition::OperationDefinition(operation) => operation_head(&operation),
            _ => None,
        });
    let (operation_type, operation_name) = match name {
        OperationName::Given(wanted) => {
            operations.find(|(_, name)| name.as_deref() == Some(wanted))?
        }
        // Without a name, only a document read whole and holding one operation is certain.
        OperationName::Absent | OperationName::Unseen if !limited => {
            let only = operations.next()?;
            operations.next().is_none().then_some(only)?
        }
        OperationName::Absent | OperationName::Unseen => return None,
    };
    Some(GraphqlOperation {
        operation_type,
        name: operation_name,
        incomplete: incomplete || limited,
    })
}

/// An operation's type and name, when the parser read its head whole (up to the opening
/// brace of its selection set: a limit may stop it anywhere).
fn operation_head(
    operation: &cst::OperationDefinition,
) -> Option<(GraphqlOperationType, Option<String>)> {
    operation.selection_set()?.l_curly_token()?;
    let operation_type = match operation.operation_type() {
        // The shorthand `{ ... }` is a query.
        None => GraphqlOperationType::Query,
        Some(kind) if kind.query_token().is_some() => GraphqlOperationType::Query,
        Some(kind) if kind.mutation_token().is_some() => GraphqlOperationType::Mutation,
        Some(kind) if kind.subscription_token().is_some() => GraphqlOperationType::Subscription,
        Some(_) => return None,
    };
    let name = operation
        .name()
        .and_then(|name| name.ident_token())
        .map(|token| token.text().to_owned());
    Some((operation_type, name))
}

/// One GraphQL-over-HTTP request object, as far as it was seen.
#[derive(Debug, Default)]
struct RequestObject {
    /// `query`, when it was seen whole.
    document: Option<String>,
    /// `operationName`, when it was seen (`Some(None)` for null).
    operation_name: Option<Option<String>>,
    /// The object's closing brace was seen: a key not seen is absent.
    closed: bool,
}

/// The keys of a request object that matter; `variables` and `extensions` are skipped
/// without being kept.
#[derive(Deserialize)]
#[serde(field_identifier)]
enum Key {
    #[serde(rename = "query")]
    Query,
    #[serde(rename = "operationName")]
    OperationName,
    #[serde(other)]
    Other,
}

/// The body: one request object or an array of them. Objects are pushed as they start, so
/// that those read before a cut are kept when the cut ends the parse with an error. Its value
/// is true when the batch held more than [`MAX_BATCH`] objects.
struct Body<'a>(&'a mut Vec<RequestObject>);

impl<'de> Visitor<'de> for Body<'_> {
    type Value = bool;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a GraphQL request object or an array of them")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<bool, A::Error> {
        read_object(self.0, map)?;
        Ok(false)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        while self.0.len() < MAX_BATCH {
            if seq.next_element_seed(Element(&mut *self.0))?.is_none() {
                return Ok(false);
            }
        }
        let mut batch_cut = false;
        while seq.next_element::<IgnoredAny>()?.is_some() {
            batch_cut = true;
        }
        Ok(batch_cut)
    }
}

/// One object of a batch.
struct Element<'a>(&'a mut Vec<RequestObject>);

impl<'de> DeserializeSeed<'de> for Element<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Element<'_> {
    type Value = ();

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a GraphQL request object")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        read_object(self.0, map)
    }
}

fn read_object<'de, A: MapAccess<'de>>(
    objects: &mut Vec<RequestObject>,
    mut map: A,
) -> Result<(), A::Error> {
    objects.push(RequestObject::default());
    let Some(object) = objects.last_mut() else {
        return Ok(());
    };
    while let Some(key) = map.next_key::<Key>()? {
        match key {
            Key::Query => object.document = map.next_value()?,
            Key::OperationName => object.operation_name = Some(map.next_value()?),
            Key::Other => {
                map.next_value::<IgnoredAny>()?;
            }
        }
    }
    object.closed = true;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;

    use super::*;
    use crate::{
        calls::{CallGaps, Side},
        protocols::{http::HttpVersion, post_process},
    };

    fn request(method: &str, target: &str, body: &str) -> HttpRequest {
        HttpRequest {
            method: method.into(),
            target: target.into(),
            version: HttpVersion::Http11,
            headers: Vec::new(),
            trailers: Vec::new(),
            body: HttpBody {
                size: body.len() as u64,
                captured: Bytes::copy_from_slice(body.as_bytes()),
                incomplete: false,
                tail: Bytes::new(),
                first_ns: 0,
            },
        }
    }

    fn post(body: &str) -> Vec<GraphqlOperation> {
        operations(&request("POST", "/graphql", body))
    }

    /// A body of which only the first `kept` bytes were kept, as a body cap leaves it.
    fn post_cut(body: &str, kept: usize) -> Vec<GraphqlOperation> {
        let mut request = request("POST", "/graphql", body);
        request.body.captured = request.body.captured.slice(..kept);
        operations(&request)
    }

    fn op(operation_type: GraphqlOperationType, name: Option<&str>) -> GraphqlOperation {
        GraphqlOperation {
            operation_type,
            name: name.map(str::to_owned),
            incomplete: false,
        }
    }

    fn incomplete(operation: GraphqlOperation) -> GraphqlOperation {
        GraphqlOperation {
            incomplete: true,
            ..operation
        }
    }

    use GraphqlOperationType::{Mutation, Query, Subscription};

    /// No operation found.
    const NONE: [GraphqlOperation; 0] = [];

    #[test]
    fn named_query() {
        assert_eq!(
            post(
                r#"{"query":"query GetUser($id: ID!) { user(id: $id) { name } }","variables":{"id":"1"}}"#
            ),
            [op(Query, Some("GetUser"))]
        );
    }

    #[test]
    fn anonymous_shorthand_is_an_unnamed_query() {
        assert_eq!(post(r#"{"query":"{ users { name } }"}"#), [op(Query, None)]);
        assert_eq!(
            post(r#"{"query":"query { users { name } }","operationName":null}"#),
            [op(Query, None)]
        );
    }

    #[test]
    fn mutation_and_subscription() {
        assert_eq!(
            post(
                r#"{"operationName":"AddUser","query":"mutation AddUser { addUser(name: \"x\") { id } }"}"#
            ),
            [op(Mutation, Some("AddUser"))]
        );
        assert_eq!(
            post(r#"{"query":"subscription OnUser { userAdded { id } }"}"#),
            [op(Subscription, Some("OnUser"))]
        );
    }

    #[test]
    fn operation_name_chooses_among_several() {
        let document = "query A { a } mutation B { b } fragment F on T { f } query C { c }";
        let body = |name: &str| format!(r#"{{"query":"{document}","operationName":{name}}}"#);
        assert_eq!(post(&body(r#""B""#)), [op(Mutation, Some("B"))]);
        assert_eq!(post(&body(r#""C""#)), [op(Query, Some("C"))]);
        // No such operation, or no name for several: nothing runs, nothing is reported.
        assert_eq!(post(&body(r#""D""#)), NONE);
        assert_eq!(post(&body("null")), NONE);
        assert_eq!(post(&format!(r#"{{"query":"{document}"}}"#)), NONE);
    }

    #[test]
    fn batch_gives_one_operation_per_object_in_order() {
        assert_eq!(
            post(
                r#"[{"query":"query ListUsers { users { id } }"},
                     {"query":"mutation AddUser { addUser(name: \"a\") { id } }","operationName":"AddUser"},
                     {"query":"{ me { id } }"}]"#
            ),
            [
                op(Query, Some("ListUsers")),
                op(Mutation, Some("AddUser")),
                op(Query, None)
            ]
        );
        // An object that is not a GraphQL request is skipped, not guessed.
        assert_eq!(
            post(r#"[{"query":"query A { a }"},{"variables":{}},{"query":"query B { b }"}]"#),
            [op(Query, Some("A")), op(Query, Some("B"))]
        );
    }

    #[test]
    fn batch_is_bounded() {
        let one = r#"{"query":"{ a }"}"#;
        let body = format!("[{}]", vec![one; MAX_BATCH + 10].join(","));
        let found = post(&body);
        assert_eq!(found.len(), MAX_BATCH);
        assert!(found.iter().all(|operation| operation.incomplete));
    }

    #[test]
    fn get_form() {
        let get = |target: &str| operations(&request("GET", target, ""));
        assert_eq!(
            get("/graphql?query=query%20GetUser%20%7B%20user%20%7B%20name%20%7D%20%7D"),
            [op(Query, Some("GetUser"))]
        );
        assert_eq!(
            get("/graphql?operationName=B&query=query+A+%7B+a+%7D+query+B+%7B+b+%7D"),
            [op(Query, Some("B"))]
        );
        assert_eq!(
            get("/graphql?query=%7Bme%7Bid%7D%7D&operationName="),
            [op(Query, None)]
        );
        // A search API's `query` is not a GraphQL document.
        assert_eq!(get("/search?query=red+shoes"), NONE);
        assert_eq!(get("/graphql"), NONE);
        // The form is GET only.
        assert_eq!(
            operations(&request("DELETE", "/graphql?query=%7Ba%7D", "")),
            NONE
        );
    }

    #[test]
    fn invalid_json_gives_nothing() {
        for body in [
            r#"{"query":"{ a }""#,
            r#"{"query":"{ a }"} trailing"#,
            r#"{"query": 42}"#,
            r#"[{"query":"{ a }"}, 7]"#,
            r#"{"query":"\ud800"}"#,
            "not json \"query\"",
        ] {
            assert_eq!(post(body), NONE, "{body}");
        }
        let mut not_utf8 = request("POST", "/graphql", r#"{"query":"{ a }"}"#);
        not_utf8.body.captured = Bytes::from_static(b"{\"query\":\"{ a }\xff\"}");
        assert_eq!(operations(&not_utf8), NONE);
    }

    #[test]
    fn deeply_nested_variables_are_skipped_without_recursion() {
        // serde_json skips an ignored value with a loop, not recursion: no stack is at risk.
        let deep = format!(
            r#"{{"query":"{{ a }}","variables":{}{}}}"#,
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        assert_eq!(post(&deep), [op(Query, None)]);
    }

    #[test]
    fn invalid_graphql_gives_nothing() {
        for document in [
            "red shoes",
            "query A { a ",
            "{ a } }",
            "query A(",
            "mutation",
            "",
        ] {
            let body = serde_json::json!({ "query": document }).to_string();
            assert_eq!(post(&body), NONE, "{document}");
        }
    }

    #[test]
    fn truncated_body_reports_only_what_is_certain() {
        let body = r#"{"operationName":"B","query":"query A { a } mutation B { b }","variables":{"big":"xxxxxxxxxxxxxxxx"}}"#;
        // Cut in the variables: the document and the name were seen whole.
        let in_variables = body.find("xxxx").unwrap();
        assert_eq!(
            post_cut(body, in_variables),
            [incomplete(op(Mutation, Some("B")))]
        );
        // Cut inside the document: nothing, never a name cut short.
        for kept in 0..body.find("}\",").unwrap() {
            assert_eq!(post_cut(body, kept), NONE, "kept {kept}");
        }
        // Name unseen: certain only for a document with one operation.
        let single =
            r#"{"query":"query Only { a }","variables":{"v":"xxxx"},"operationName":"Only"}"#;
        let in_variables = single.find("xxxx").unwrap();
        assert_eq!(
            post_cut(single, in_variables),
            [incomplete(op(Query, Some("Only")))]
        );
        let several = r#"{"query":"query A { a } query B { b }","operationName":"B"}"#;
        assert_eq!(
            post_cut(several, several.find("\"operationName").unwrap()),
            NONE
        );
        // A cut batch: the objects that ended before the cut.
        let batch = r#"[{"query":"query A { a }"},{"query":"query B { b }"}]"#;
        let second = batch.find("{\"query\":\"query B").unwrap();
        assert_eq!(
            post_cut(batch, second + 12),
            [incomplete(op(Query, Some("A")))]
        );
        // Bytes lost inside the kept part make it incomplete too.
        let mut lossy = request("POST", "/graphql", r#"{"query":"query A { a }"}"#);
        lossy.body.incomplete = true;
        assert_eq!(operations(&lossy), [incomplete(op(Query, Some("A")))]);
    }

    #[test]
    fn deep_nesting_is_bounded() {
        // Far deeper than the parser follows; must not exhaust the stack.
        for depth in [RECURSION_LIMIT + 1, 10_000, 200_000] {
            let document = format!("query Deep {}{}", "{ a ".repeat(depth), "}".repeat(depth));
            let named = serde_json::json!({ "query": document, "operationName": "Deep" });
            // The head was read before the limit stopped the parser.
            assert_eq!(
                post(&named.to_string()),
                [incomplete(op(Query, Some("Deep")))],
                "depth {depth}"
            );
            // Without a name, an operation could follow unread: nothing is certain.
            let unnamed = serde_json::json!({ "query": document });
            assert_eq!(post(&unnamed.to_string()), NONE, "depth {depth}");
        }
        let within = format!("query Fine {}{}", "{ a ".repeat(20), "}".repeat(20));
        assert_eq!(
            post(&serde_json::json!({ "query": within }).to_string()),
            [op(Query, Some("Fine"))]
        );
    }

    #[test]
    fn other_methods_and_bodies_are_not_graphql() {
        assert_eq!(post(r#"{"search":"query"}"#), NONE);
        assert_eq!(post("query=%7Ba%7D"), NONE);
        assert_eq!(
            operations(&request("PUT", "/graphql", r#"{"query":"{ a }"}"#)),
            NONE
        );
    }

    fn call(request: HttpRequest) -> ApiCall {
        ApiCall {
            connection: crate::testing::connection(1, agent_common::Role::Server),
            side: Side::Server,
            start_ns: 1,
            end_ns: 2,
            tls: false,
            gaps: CallGaps::default(),
            exchange: Arc::new(HttpExchange {
                request,
                response: None,
                upgraded: false,
            }),
            layer: None,
        }
    }

    fn graphql_of(call: &ApiCall) -> Option<&GraphqlOperation> {
        call.layer::<GraphqlOperation>()
    }

    #[test]
    fn post_processing_expands_batches_in_place_from_the_given_index() {
        let batch = r#"[{"query":"query A { a }"},{"query":"mutation B { b }"}]"#;
        let mut calls = vec![
            call(request("POST", "/graphql", batch)),
            call(request("GET", "/plain", "")),
            call(request("POST", "/graphql", batch)),
            call(request("GET", "/graphql?query=%7Ba%7D", "")),
        ];
        post_process(&mut calls, 1, DecoderSettings { body_cap: 4096 });
        let found: Vec<_> = calls.iter().map(graphql_of).collect();
        assert_eq!(
            found,
            [
                // Before `from`: left alone.
                None,
                None,
                Some(&op(Query, Some("A"))),
                Some(&op(Mutation, Some("B"))),
                Some(&op(Query, None)),
            ]
        );
        assert_eq!(calls[2].start_ns, calls[3].start_ns);
        assert!(Arc::ptr_eq(&calls[2].connection, &calls[3].connection));
    }
}
