//! The GraphQL fuzz target (`graphql`): requests over HTTP/1.1.

use crate::protocols::fuzzing::http1_exchange;

/// A GraphQL request: the exchange of [`http1_exchange`], a `POST /graphql` whose body is the
/// JSON request (a document and its operation name, or a batch of them).
pub fn exchange(data: &[u8]) {
    http1_exchange(
        data,
        "POST /graphql HTTP/1.1\r\nHost: api.example.com\r\nContent-Type: application/json\r\n\
         Accept: application/graphql-response+json, application/json\r\n",
        "",
    );
}
