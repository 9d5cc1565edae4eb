//! gRPC calls in the RPC semantic conventions (v1.37 attribute names): named
//! `{service}/{method}`, with `rpc.*` attributes on the span and the RPC duration histograms
//! instead of the HTTP ones.

use opentelemetry::KeyValue;

use super::{GrpcCall, status_name};
use crate::{
    calls::{
        ApiCall, CallDescription, DescribeContext, EndpointIdentity, Instrument, Kind, Layer,
        description::{APISCOPE_CALL_INCOMPLETE, ERROR_TYPE, int},
    },
    protocols::http::{
        HttpExchange,
        describe::{
            CLIENT_ADDRESS, DURATION_BUCKETS, HTTP_RESPONSE_STATUS_CODE, NETWORK_PEER_ADDRESS,
            NETWORK_PEER_PORT, SERVER_ADDRESS, SERVER_PORT, USER_AGENT_ORIGINAL,
        },
    },
};

/// `rpc.system`: `grpc`.
pub const RPC_SYSTEM: &str = "rpc.system";
/// `rpc.service`: the fully qualified service, e.g. `helloworld.Greeter`.
pub const RPC_SERVICE: &str = "rpc.service";
/// `rpc.method`: the method name alone, e.g. `SayHello`.
pub const RPC_METHOD: &str = "rpc.method";
/// `rpc.grpc.status_code`: the numeric gRPC status.
pub const RPC_GRPC_STATUS_CODE: &str = "rpc.grpc.status_code";
/// apiscope's own (the conventions have no span attribute for it): whole messages the client
/// sent, when the count is known.
pub const APISCOPE_RPC_REQUEST_MESSAGE_COUNT: &str = "apiscope.rpc.request.message.count";
/// apiscope's own: whole messages the server sent, when the count is known.
pub const APISCOPE_RPC_RESPONSE_MESSAGE_COUNT: &str = "apiscope.rpc.response.message.count";
/// apiscope's own: some gRPC message of the call was compressed (set only when true).
pub const APISCOPE_GRPC_COMPRESSED: &str = "apiscope.grpc.compressed";

/// The current RPC conventions' `rpc.{server,client}.call.duration`, in seconds (the older
/// `rpc.{side}.duration` in milliseconds is deprecated).
static DURATION: [&Instrument; 2] = [
    &Instrument {
        name: "rpc.server.call.duration",
        unit: "s",
        description: "Duration of RPC server calls.",
        boundaries: &DURATION_BUCKETS,
    },
    &Instrument {
        name: "rpc.client.call.duration",
        unit: "s",
        description: "Duration of RPC client calls.",
        boundaries: &DURATION_BUCKETS,
    },
];

/// What of the HTTP description a gRPC span keeps: where the call went and what was missed.
/// The rest (method, path, HTTP status) is the same for every gRPC call or repeats the
/// service and method.
const KEPT_HTTP_ATTRIBUTES: [&str; 7] = [
    SERVER_ADDRESS,
    SERVER_PORT,
    CLIENT_ADDRESS,
    NETWORK_PEER_ADDRESS,
    NETWORK_PEER_PORT,
    USER_AGENT_ORIGINAL,
    APISCOPE_CALL_INCOMPLETE,
];

/// True when `code` makes a span an error: any non-OK status for a client; for a server only
/// the codes that mean the server failed (UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL,
/// UNAVAILABLE, DATA_LOSS), not those answering a bad request.
fn is_error(kind: Kind, code: u32) -> bool {
    match kind {
        Kind::Client => code != 0,
        Kind::Server => matches!(code, 2 | 4 | 12 | 13 | 14 | 15),
    }
}

impl Layer for GrpcCall {
    fn describe(
        &self,
        call: &ApiCall,
        _context: DescribeContext<'_>,
        description: &mut CallDescription,
    ) {
        let response = call
            .exchange::<HttpExchange>()
            .and_then(|http| http.response.as_ref());
        description
            .span_attributes
            .retain(|attribute| KEPT_HTTP_ATTRIBUTES.contains(&attribute.key.as_str()));
        let mut rpc = vec![KeyValue::new(RPC_SYSTEM, "grpc")];
        // An unparsable `:path` has no service or method to name: the span is just `grpc`.
        description.name = if self.service.is_empty() {
            "grpc".to_owned()
        } else {
            rpc.push(KeyValue::new(RPC_SERVICE, self.service.clone()));
            rpc.push(KeyValue::new(RPC_METHOD, self.method.clone()));
            format!("{}/{}", self.service, self.method)
        };
        if let Some(code) = self.status_code {
            rpc.push(KeyValue::new(RPC_GRPC_STATUS_CODE, i64::from(code)));
        }
        let status_text =
            |code: u32| status_name(code).map_or_else(|| code.to_string(), str::to_owned);
        match self.status_code {
            Some(code) => {
                description.error = is_error(description.kind, code).then(|| status_text(code));
            }
            // Without `grpc-status`, an HTTP status other than 200 (a proxy's 503, a server
            // that is not gRPC) is what tells how the call ended: it is kept, and so is the
            // error the HTTP rules made of it.
            None => {
                if let Some(response) = response
                    && response.status != 200
                {
                    description.span_attributes.push(KeyValue::new(
                        HTTP_RESPONSE_STATUS_CODE,
                        i64::from(response.status),
                    ));
                }
            }
        }
        if let Some(error) = &description.error {
            rpc.push(KeyValue::new(ERROR_TYPE, error.clone()));
        }
        description.span_attributes.extend(rpc.iter().cloned());
        let counts = [
            (APISCOPE_RPC_REQUEST_MESSAGE_COUNT, self.request_messages),
            (APISCOPE_RPC_RESPONSE_MESSAGE_COUNT, self.response_messages),
        ];
        for (key, count) in counts {
            if let Some(count) = count {
                description
                    .span_attributes
                    .push(KeyValue::new(key, int(count)));
            }
        }
        if self.compressed {
            description
                .span_attributes
                .push(KeyValue::new(APISCOPE_GRPC_COMPRESSED, true));
        }
        // Its carrier would repeat the same duration under `POST` with the method path as
        // route, and message bytes are not HTTP bodies to measure.
        description.drop_measures();
        description.measure(DURATION, description.duration_seconds, rpc);
        description.summary = format!("grpc {}", description.name);
        description.outcome = Some(self.status_code.map_or_else(|| "-".to_owned(), status_text));
    }

    fn endpoint(&self, endpoint: &mut EndpointIdentity) {
        if let Some(code) = self.status_code {
            endpoint.status = status_name(code).unwrap_or("UNKNOWN").to_owned();
        }
        if !self.service.is_empty() {
            endpoint.protocol = "grpc";
            endpoint.route = Some(format!("/{}/{}", self.service, self.method));
            endpoint.in_openapi = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::Value;

    use super::*;
    use crate::{
        calls::Side,
        protocols::http::{
            HttpExchange,
            describe::{HTTP_REQUEST_METHOD, HTTP_ROUTE, URL_PATH},
        },
        testing::{attribute, describe, grpc_call},
    };

    #[test]
    fn grpc_calls_follow_the_rpc_conventions() {
        let described = grpc_call(Side::Server, Some(0)).description;
        assert_eq!(described.name, "helloworld.Greeter/SayHello");
        // Its own duration metric, not its carrier's.
        assert_eq!(described.measures.len(), 1);
        assert_eq!(described.measures[0].instrument, DURATION[0]);
        assert!(described.error.is_none());
        let a = &described.span_attributes;
        assert_eq!(attribute(a, RPC_SYSTEM), Some(&Value::from("grpc")));
        assert_eq!(
            attribute(a, RPC_SERVICE),
            Some(&Value::from("helloworld.Greeter"))
        );
        assert_eq!(attribute(a, RPC_METHOD), Some(&Value::from("SayHello")));
        assert_eq!(attribute(a, RPC_GRPC_STATUS_CODE), Some(&Value::I64(0)));
        assert_eq!(
            attribute(a, APISCOPE_RPC_REQUEST_MESSAGE_COUNT),
            Some(&Value::I64(4))
        );
        // An unknown count is left out, not reported as what was seen.
        assert_eq!(attribute(a, APISCOPE_RPC_RESPONSE_MESSAGE_COUNT), None);
        assert_eq!(attribute(a, APISCOPE_GRPC_COMPRESSED), None);
        assert_eq!(attribute(a, SERVER_PORT), Some(&Value::I64(8080)));
        // The HTTP carrier's attributes say nothing a gRPC span needs.
        assert_eq!(attribute(a, HTTP_REQUEST_METHOD), None);
        assert_eq!(attribute(a, URL_PATH), None);
        assert_eq!(attribute(a, HTTP_RESPONSE_STATUS_CODE), None);
        let m = &described.measures[0].attributes;
        assert_eq!(attribute(m, RPC_METHOD), Some(&Value::from("SayHello")));
        assert_eq!(attribute(m, RPC_GRPC_STATUS_CODE), Some(&Value::I64(0)));
        assert_eq!(attribute(m, HTTP_ROUTE), None);
    }

    #[test]
    fn grpc_errors_depend_on_the_side() {
        let error = |side, code| grpc_call(side, Some(code)).description.error;
        // NOT_FOUND answers the request: an error for the client only.
        assert_eq!(error(Side::Client, 5).as_deref(), Some("NOT_FOUND"));
        assert_eq!(error(Side::Server, 5), None);
        for code in [2, 4, 12, 13, 14, 15] {
            assert!(error(Side::Server, code).is_some(), "{code}");
        }
        for code in [0, 1, 3, 5, 6, 7, 8, 9, 10, 11, 16] {
            assert!(error(Side::Server, code).is_none(), "{code}");
        }
        assert_eq!(error(Side::Client, 99).as_deref(), Some("99"));
        assert_eq!(error(Side::Client, 0), None);
        let described = grpc_call(Side::Client, Some(14)).description;
        assert_eq!(
            attribute(&described.span_attributes, ERROR_TYPE),
            Some(&Value::from("UNAVAILABLE"))
        );
        // No status seen: no code, no error.
        let described = grpc_call(Side::Client, None).description;
        assert!(described.error.is_none());
        assert_eq!(
            attribute(&described.span_attributes, RPC_GRPC_STATUS_CODE),
            None
        );
        assert_eq!(
            attribute(&described.span_attributes, HTTP_RESPONSE_STATUS_CODE),
            None
        );
        // No `grpc-status` and an HTTP error: the HTTP status says how it ended.
        let mut analyzed = grpc_call(Side::Client, None);
        if let Some(response) = analyzed
            .call
            .call
            .exchange_mut::<HttpExchange>()
            .and_then(|http| http.response.as_mut())
        {
            response.status = 503;
        }
        let described = describe(&analyzed.call.call, analyzed.route.as_deref());
        assert_eq!(described.error.as_deref(), Some("503"));
        assert_eq!(
            attribute(&described.span_attributes, HTTP_RESPONSE_STATUS_CODE),
            Some(&Value::I64(503))
        );
        assert_eq!(
            attribute(&described.measures[0].attributes, ERROR_TYPE),
            Some(&Value::from("503"))
        );
    }
}
