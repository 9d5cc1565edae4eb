//! GraphQL operations in the GraphQL semantic conventions: the span is named `{type} {name}`
//! (or `{type}`) and carries the operation's type and name; the document never leaves the
//! host. The HTTP attributes and measures stay, as those of the transport.

use opentelemetry::KeyValue;

use super::GraphqlOperation;
use crate::calls::{ApiCall, CallDescription, DescribeContext, EndpointIdentity, Layer};

/// `graphql.operation.type`: `query`, `mutation` or `subscription`.
pub const GRAPHQL_OPERATION_TYPE: &str = "graphql.operation.type";
/// `graphql.operation.name`, when the operation is named.
pub const GRAPHQL_OPERATION_NAME: &str = "graphql.operation.name";
/// apiscope's own: the GraphQL request was not seen whole, so a batch may hold more
/// operations than were reported (set only when true).
pub const APISCOPE_GRAPHQL_INCOMPLETE: &str = "apiscope.graphql.incomplete";

impl Layer for GraphqlOperation {
    fn describe(
        &self,
        _call: &ApiCall,
        _context: DescribeContext<'_>,
        description: &mut CallDescription,
    ) {
        let operation_type = self.operation_type.as_str();
        let attributes = &mut description.span_attributes;
        attributes.push(KeyValue::new(GRAPHQL_OPERATION_TYPE, operation_type));
        description.name = match &self.name {
            Some(name) => {
                attributes.push(KeyValue::new(GRAPHQL_OPERATION_NAME, name.clone()));
                format!("{operation_type} {name}")
            }
            None => operation_type.to_owned(),
        };
        if self.incomplete {
            attributes.push(KeyValue::new(APISCOPE_GRAPHQL_INCOMPLETE, true));
        }
        description.summary = format!("{} graphql {}", description.summary, description.name);
    }

    fn endpoint(&self, endpoint: &mut EndpointIdentity) {
        endpoint.protocol = "graphql";
        endpoint.operation = Some(format!(
            "{} {}",
            self.operation_type.as_str(),
            self.name.as_deref().unwrap_or("(anonymous)")
        ));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use opentelemetry::Value;

    use super::*;
    use crate::{
        calls::Side,
        protocols::{graphql::GraphqlOperationType, http::describe::HTTP_ROUTE},
        testing::{attribute, call, describe},
    };

    #[test]
    fn graphql_operations_name_the_span() {
        let mut analyzed = call(Side::Server, 200, Vec::new());
        analyzed.call.call.layer = Some(Arc::new(GraphqlOperation {
            operation_type: GraphqlOperationType::Mutation,
            name: Some("AddUser".into()),
            incomplete: false,
        }));
        let described = describe(&analyzed.call.call, analyzed.route.as_deref());
        assert_eq!(described.name, "mutation AddUser");
        let a = &described.span_attributes;
        assert_eq!(
            attribute(a, GRAPHQL_OPERATION_TYPE),
            Some(&Value::from("mutation"))
        );
        assert_eq!(
            attribute(a, GRAPHQL_OPERATION_NAME),
            Some(&Value::from("AddUser"))
        );
        assert_eq!(attribute(a, APISCOPE_GRAPHQL_INCOMPLETE), None);
        // The HTTP attributes stay.
        assert_eq!(attribute(a, HTTP_ROUTE), Some(&Value::from("/users/{id}")));

        analyzed.call.call.layer = Some(Arc::new(GraphqlOperation {
            operation_type: GraphqlOperationType::Query,
            name: None,
            incomplete: true,
        }));
        let described = describe(&analyzed.call.call, analyzed.route.as_deref());
        assert_eq!(described.name, "query");
        let a = &described.span_attributes;
        assert_eq!(attribute(a, GRAPHQL_OPERATION_NAME), None);
        assert_eq!(
            attribute(a, APISCOPE_GRAPHQL_INCOMPLETE),
            Some(&Value::Bool(true))
        );
    }
}
