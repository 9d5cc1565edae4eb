//! The gRPC part of a call carried by HTTP/2.

/// What a gRPC call adds to its HTTP/2 exchange.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GrpcCall {
    /// The fully qualified service, e.g. `helloworld.Greeter` (from `:path`); empty when
    /// `:path` is not `/service/method`.
    pub service: String,
    /// The method, e.g. `SayHello` (from `:path`); empty when `:path` is not
    /// `/service/method`.
    pub method: String,
    /// `grpc-status` from the trailers (or a trailers-only response), when seen.
    pub status_code: Option<u32>,
    /// Whole length-prefixed messages the client sent; `None` when a gap or broken framing
    /// made the count unknown (a lower bound is not reported as a count).
    pub request_messages: Option<u64>,
    /// Whole length-prefixed messages the server sent; `None` as for `request_messages`.
    pub response_messages: Option<u64>,
    /// Some message carried the compressed flag.
    pub compressed: bool,
}

/// The name of a gRPC status code (`NOT_FOUND` for 5), as the gRPC specification spells it;
/// `None` for codes it does not define.
pub fn status_name(code: u32) -> Option<&'static str> {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    NAMES.get(usize::try_from(code).ok()?).copied()
}
