//! Analysis: what is derived from calls across time: routes, the API inventory and its
//! conformance with declared specs, sensitive data.

pub mod events;
pub mod inventory;
pub mod routes;
pub mod sensitive;
pub mod spec;

use std::sync::PoisonError;

use crate::{calls::Payload, enrich::EnrichedCall};

use events::{ApiEvent, unix_ms_now};
use inventory::SharedInventory;
use routes::{RouteSettings, RouteTemplater};

/// A call with what analysis derived from it.
#[derive(Debug, Clone)]
pub struct AnalyzedCall {
    /// The enriched call.
    pub call: EnrichedCall,
    /// The route (`http.route`), for protocols with paths: the declared spec's template when
    /// the service has one that declares the call, else the templated path.
    pub route: Option<String>,
    /// Events the call raised (discoveries, violations, sensitive data), exported with the
    /// call's trace context.
    pub events: Vec<ApiEvent>,
}

/// The analysis stage: route templating and, when kept, the inventory.
#[derive(Debug)]
pub struct Analyzer {
    routes: RouteTemplater,
    inventory: Option<SharedInventory>,
}

impl Analyzer {
    /// An analyzer with the given route settings and no inventory.
    pub fn new(routes: &RouteSettings) -> Self {
        Self {
            routes: RouteTemplater::new(routes),
            inventory: None,
        }
    }

    /// The same analyzer, feeding `inventory` with every call.
    pub fn with_inventory(self, inventory: SharedInventory) -> Self {
        Self {
            inventory: Some(inventory),
            ..self
        }
    }

    /// Derives what the exporters need from one call.
    pub fn analyze(&mut self, call: EnrichedCall) -> AnalyzedCall {
        let mut route = match &call.call.payload {
            // An empty target is one that could not be decoded: no route to speak of.
            Payload::Http(http) if http.request.target.is_empty() => None,
            Payload::Http(http) => Some(
                self.routes
                    .route(&call.workload.service_name, http.request.path()),
            ),
        };
        let mut events = Vec::new();
        if let Some(inventory) = &self.inventory {
            let observed = inventory
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .observe(&call, route.as_deref(), unix_ms_now());
            if observed.declared_route.is_some() {
                route = observed.declared_route;
            }
            events = observed.events;
        }
        AnalyzedCall {
            call,
            route,
            events,
        }
    }
}
