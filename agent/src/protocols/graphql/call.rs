//! The GraphQL operation a call carried over HTTP.

/// The kind of a GraphQL operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GraphqlOperationType {
    /// `query` (also a document's anonymous shorthand `{ ... }`).
    Query,
    /// `mutation`.
    Mutation,
    /// `subscription`.
    Subscription,
}

impl GraphqlOperationType {
    /// The keyword, as the conventions' `graphql.operation.type` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Query => "query",
            Self::Mutation => "mutation",
            Self::Subscription => "subscription",
        }
    }
}

/// One GraphQL operation: a batched request carries several, each reported as its own call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphqlOperation {
    /// Its type.
    pub operation_type: GraphqlOperationType,
    /// Its name, when the document names it.
    pub name: Option<String>,
    /// The request was not seen whole (its body was longer than the body cap or lost bytes, or
    /// its document was nested deeper than the parser goes): type and name are what the seen
    /// part says for certain, and a batch may hold operations that are not reported.
    pub incomplete: bool,
}
