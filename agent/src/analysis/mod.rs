//! Analysis: what is derived from calls across time (routes now; inventory, rules and detectors
//! later).

pub mod routes;

use crate::{calls::Payload, enrich::EnrichedCall};

use routes::{RouteSettings, RouteTemplater};

/// A call with what analysis derived from it.
#[derive(Debug, Clone)]
pub struct AnalyzedCall {
    /// The enriched call.
    pub call: EnrichedCall,
    /// The templated route (`http.route`), for protocols with paths.
    pub route: Option<String>,
}

/// The analysis stage: route templating for now.
#[derive(Debug)]
pub struct Analyzer {
    routes: RouteTemplater,
}

impl Analyzer {
    /// An analyzer with the given route settings.
    pub fn new(routes: &RouteSettings) -> Self {
        Self {
            routes: RouteTemplater::new(routes),
        }
    }

    /// Derives what the exporters need from one call.
    pub fn analyze(&mut self, call: EnrichedCall) -> AnalyzedCall {
        let route = match &call.call.payload {
            // An empty target is one that could not be decoded: no route to speak of.
            Payload::Http(http) if http.request.target.is_empty() => None,
            Payload::Http(http) => Some(
                self.routes
                    .route(&call.workload.service_name, http.request.path()),
            ),
        };
        AnalyzedCall { call, route }
    }
}
