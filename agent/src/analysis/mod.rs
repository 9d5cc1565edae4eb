//! Analysis: what is derived from calls across time: routes, the API inventory and its
//! conformance with declared specs, sensitive data, and security findings.

pub mod events;
pub mod inventory;
pub mod mcp_server;
pub mod routes;
pub mod security;
pub mod sensitive;
pub mod spec;

use std::sync::PoisonError;

use opentelemetry::KeyValue;

use crate::{
    calls::{
        CallDescription, DescribeContext, DescribeSettings,
        description::{SERVICE_PEER_NAME, SERVICE_PEER_NAMESPACE},
    },
    enrich::{EnrichedCall, PeerService},
    streams::Connection,
};

use events::{ApiEvent, unix_ms_now};
use inventory::SharedInventory;
use routes::{RouteSettings, RouteTemplater};
use security::SecurityAnalyzer;

/// A call with what analysis derived from it.
#[derive(Debug, Clone)]
pub struct AnalyzedCall {
    /// The enriched call.
    pub call: EnrichedCall,
    /// The route (`http.route`), for protocols with paths: the declared spec's template when
    /// the service has one that declares the call, else the templated path.
    pub route: Option<String>,
    /// The call in the conventions' terms, with its route and peer: what the exporters send.
    pub description: CallDescription,
    /// Events the call raised (discoveries, violations, sensitive data, security findings),
    /// exported with the call's trace context.
    pub events: Vec<ApiEvent>,
}

/// The analysis stage: route templating, the description for export and, when kept, the
/// inventory and the security rules.
#[derive(Debug)]
pub struct Analyzer {
    routes: RouteTemplater,
    describe: DescribeSettings,
    inventory: Option<SharedInventory>,
    security: Option<SecurityAnalyzer>,
}

impl Analyzer {
    /// An analyzer with the given route and description settings and no inventory.
    pub fn new(routes: &RouteSettings, describe: DescribeSettings) -> Self {
        Self {
            routes: RouteTemplater::new(routes),
            describe,
            inventory: None,
            security: None,
        }
    }

    /// The same analyzer, feeding `inventory` with every call.
    pub fn with_inventory(self, inventory: SharedInventory) -> Self {
        Self {
            inventory: Some(inventory),
            ..self
        }
    }

    /// The same analyzer, checking every call against the security rules.
    pub fn with_security(self, security: SecurityAnalyzer) -> Self {
        Self {
            security: Some(security),
            ..self
        }
    }

    /// Notes an outbound connection the kernel saw opened.
    pub fn connected(&mut self, connection: &Connection) {
        if let Some(security) = &mut self.security {
            security.connected(connection, unix_ms_now());
        }
    }

    /// Derives what the exporters need from one call.
    pub fn analyze(&mut self, call: EnrichedCall) -> AnalyzedCall {
        let mut route = call
            .call
            .path()
            .map(|path| self.routes.route(&call.workload.service_name, path));
        let now_ms = unix_ms_now();
        let mut events = Vec::new();
        let mut response_sensitive = 0;
        if let Some(inventory) = &self.inventory {
            let observed = inventory
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .observe(&call, route.as_deref(), now_ms);
            if observed.declared_route.is_some() {
                route = observed.declared_route;
            }
            events = observed.events;
            response_sensitive = observed.response_sensitive;
        }
        if let Some(security) = &mut self.security {
            events.extend(security.assess(&call, route.as_deref(), response_sensitive, now_ms));
        }
        let description = self.describe(&call, route.as_deref());
        AnalyzedCall {
            call,
            route,
            description,
            events,
        }
    }

    /// `call` in the conventions' terms, with `route`, and the local service that answered a
    /// client call.
    fn describe(&self, call: &EnrichedCall, route: Option<&str>) -> CallDescription {
        let mut description = call.call.describe(DescribeContext {
            route,
            settings: &self.describe,
        });
        if let Some(peer) = &call.peer {
            peer_attributes(peer, &mut description.span_attributes);
        }
        description
    }
}

/// The local service that answered a client call.
fn peer_attributes(peer: &PeerService, attributes: &mut Vec<KeyValue>) {
    attributes.push(KeyValue::new(SERVICE_PEER_NAME, peer.name.clone()));
    if let Some(namespace) = &peer.namespace {
        attributes.push(KeyValue::new(SERVICE_PEER_NAMESPACE, namespace.clone()));
    }
}
