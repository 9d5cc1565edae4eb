//! Calls: the decoded API exchanges every later stage works on. A call is the exchange its
//! connection protocol decoded (an HTTP request and response, the messages on a pipe) and,
//! when one was found inside, the application protocol it carries (gRPC, GraphQL, a model
//! call, MCP): each is the protocol folder's own type, behind [`Exchange`] and [`Layer`], so
//! that what comes later reads a call's [`CallDescription`] and asks for the typed parts it
//! knows ([`ApiCall::exchange`], [`ApiCall::layer`]) without a list of every protocol.

pub mod description;
pub mod secrets;

use std::{any::Any, fmt::Debug, sync::Arc};

use crate::streams::Connection;

pub use description::{
    CallDescription, DescribeContext, DescribeSettings, EndpointIdentity, HeaderAllowlist,
    Instrument, Kind, Measure, Redact,
};

/// Which end of the exchange the traced process was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// It sent the request.
    Client,
    /// It received the request.
    Server,
}

/// What could not be seen of a call. Every flag set means the call is reported as far as it
/// was seen, never completed by guessing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallGaps {
    /// Some request bytes were not captured (a gap, a lost record, or the capture cap).
    pub request_incomplete: bool,
    /// No response was seen (connection closed, reset, or the response was lost).
    pub response_missing: bool,
    /// Some response bytes were not captured.
    pub response_incomplete: bool,
    /// The call follows a point where the decoder lost track of message boundaries and found
    /// them again.
    pub after_resync: bool,
    /// Some header fields could not be decoded (HTTP/2 fields that refer to compression-table
    /// entries added before the capture joined the connection): they are left out, never
    /// guessed.
    pub headers_unknown: bool,
}

impl CallGaps {
    /// True when nothing is missing.
    pub fn is_complete(&self) -> bool {
        *self == Self::default()
    }
}

/// What a connection protocol decoded of one call: the exchange as it went over the wire.
pub trait Exchange: Any + Debug + Send + Sync {
    /// The request's path, for protocols whose requests have one: routes are made from it.
    fn path(&self) -> Option<&str> {
        None
    }

    /// Describes `call`, whose exchange this is, in the conventions' terms.
    fn describe(&self, call: &ApiCall, context: DescribeContext<'_>) -> CallDescription;

    /// The endpoint the call reached, for protocols the inventory keeps.
    fn endpoint(&self) -> Option<EndpointIdentity> {
        None
    }
}

/// An application protocol found inside an exchange.
pub trait Layer: Any + Debug + Send + Sync {
    /// Refines the description of `call`, whose layer this is: the span name, attributes,
    /// error and measures this protocol defines.
    fn describe(
        &self,
        call: &ApiCall,
        context: DescribeContext<'_>,
        description: &mut CallDescription,
    );

    /// Refines the endpoint the exchange reached: the protocol, route and operation this
    /// protocol names, and how it says the call ended.
    fn endpoint(&self, _endpoint: &mut EndpointIdentity) {}
}

/// One API exchange (a request and its response) as seen by one process.
#[derive(Debug, Clone)]
pub struct ApiCall {
    /// The connection it travelled on.
    pub connection: Arc<Connection>,
    /// Which end the process was.
    pub side: Side,
    /// `CLOCK_MONOTONIC` time of the syscall that carried the first request byte.
    pub start_ns: u64,
    /// `CLOCK_MONOTONIC` time of the syscall that carried the last response byte (or the last
    /// request byte when there is no response).
    pub end_ns: u64,
    /// The bytes were TLS plaintext.
    pub tls: bool,
    /// What was not seen.
    pub gaps: CallGaps,
    /// What the connection protocol decoded.
    pub exchange: Arc<dyn Exchange>,
    /// The application protocol carried inside, when one was found.
    pub layer: Option<Arc<dyn Layer>>,
}

impl ApiCall {
    /// The exchange, when it is of type `T`.
    pub fn exchange<T: Exchange>(&self) -> Option<&T> {
        let exchange: &dyn Any = self.exchange.as_ref();
        exchange.downcast_ref()
    }

    /// The exchange to change, when it is of type `T` and no other call shares it (as while
    /// a decoder or a test still builds it).
    pub fn exchange_mut<T: Exchange>(&mut self) -> Option<&mut T> {
        let exchange: &mut dyn Any = Arc::get_mut(&mut self.exchange)?;
        exchange.downcast_mut()
    }

    /// The layer, when there is one of type `T`.
    pub fn layer<T: Layer>(&self) -> Option<&T> {
        let layer: &dyn Any = self.layer.as_deref()?;
        layer.downcast_ref()
    }

    /// The request's path, for protocols with paths.
    pub fn path(&self) -> Option<&str> {
        self.exchange.path()
    }

    /// The endpoint the call reached, for protocols the inventory keeps: its exchange's,
    /// refined by its layer.
    pub fn endpoint(&self) -> Option<EndpointIdentity> {
        let mut endpoint = self.exchange.endpoint()?;
        if let Some(layer) = &self.layer {
            layer.endpoint(&mut endpoint);
        }
        Some(endpoint)
    }

    /// The call in the conventions' terms: its exchange's description, refined by its layer.
    pub fn describe(&self, context: DescribeContext<'_>) -> CallDescription {
        let mut description = self.exchange.describe(self, context);
        if let Some(layer) = &self.layer {
            layer.describe(self, context, &mut description);
        }
        description
    }
}
