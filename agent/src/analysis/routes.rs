//! Route templating with bounded cardinality: `/users/42/orders` -> `/users/{id}/orders`.
//!
//! In order: the first configured pattern that matches the path wins; otherwise every segment
//! that looks like an identifier (digits, UUID, hex, long mixed tokens) becomes `{id}` while
//! words stay as they are; and once a service has `max_routes_per_service` distinct routes, any
//! new one is reported as [`OVERFLOW_ROUTE`], so one noisy service cannot explode the metrics.

use std::collections::{HashMap, HashSet};

/// The route reported for a service's routes beyond its cap.
pub const OVERFLOW_ROUTE: &str = "/{overflow}";

/// Services whose routes are tracked at once; beyond it tracking starts over.
const MAX_SERVICES: usize = 4_096;

/// The `routes:` section of the configuration: route templating.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RouteSettings {
    /// Route patterns, e.g. `/users/{id}/orders`: `{name}` matches one segment.
    pub patterns: Vec<String>,
    /// Distinct routes kept per service before new ones collapse into [`OVERFLOW_ROUTE`].
    #[serde(deserialize_with = "crate::settings_format::within::<_, _, 1, 1_000_000>")]
    pub max_routes_per_service: usize,
}

impl Default for RouteSettings {
    fn default() -> Self {
        Self {
            patterns: Vec::new(),
            max_routes_per_service: 100,
        }
    }
}

/// One configured pattern, split into segments.
#[derive(Debug, Clone)]
struct Pattern {
    template: String,
    segments: Vec<Option<String>>,
}

impl Pattern {
    fn parse(template: &str) -> Self {
        let segments = template
            .trim_start_matches('/')
            .split('/')
            .map(|segment| {
                let is_parameter = segment.starts_with('{') && segment.ends_with('}');
                (!is_parameter).then(|| segment.to_owned())
            })
            .collect();
        Self {
            template: template.to_owned(),
            segments,
        }
    }

    fn matches(&self, path: &str) -> bool {
        let mut segments = path.trim_start_matches('/').split('/');
        let matched = self.segments.iter().all(|expected| match segments.next() {
            Some(segment) => expected.as_deref().is_none_or(|literal| literal == segment),
            None => false,
        });
        matched && segments.next().is_none()
    }
}

/// Turns paths into routes, per service.
#[derive(Debug)]
pub struct RouteTemplater {
    patterns: Vec<Pattern>,
    max_routes_per_service: usize,
    seen: HashMap<String, HashSet<String>>,
}

impl RouteTemplater {
    /// A templater with the given settings.
    pub fn new(settings: &RouteSettings) -> Self {
        Self {
            patterns: settings
                .patterns
                .iter()
                .map(|p| Pattern::parse(p))
                .collect(),
            max_routes_per_service: settings.max_routes_per_service,
            seen: HashMap::new(),
        }
    }

    /// The route of `path` (no query string) for `service`.
    pub fn route(&mut self, service: &str, path: &str) -> String {
        let route = match self.patterns.iter().find(|pattern| pattern.matches(path)) {
            Some(pattern) => pattern.template.clone(),
            None => template(path),
        };
        if self.seen.len() >= MAX_SERVICES && !self.seen.contains_key(service) {
            self.seen.clear();
        }
        let routes = self.seen.entry(service.to_owned()).or_default();
        if routes.contains(&route) {
            return route;
        }
        if routes.len() >= self.max_routes_per_service {
            return OVERFLOW_ROUTE.to_owned();
        }
        routes.insert(route.clone());
        route
    }
}

/// Replaces identifier-like segments of `path` with `{id}`.
pub fn template(path: &str) -> String {
    let mut route = String::with_capacity(path.len());
    for (i, segment) in path.trim_start_matches('/').split('/').enumerate() {
        if i > 0 || path.starts_with('/') {
            route.push('/');
        }
        route.push_str(if is_identifier(segment) {
            "{id}"
        } else {
            segment
        });
    }
    route
}

/// True for segments that name one object rather than a kind of thing.
pub(crate) fn is_identifier(segment: &str) -> bool {
    let bytes = segment.as_bytes();
    if bytes.is_empty() {
        return false;
    }
    let digits = bytes.iter().filter(|b| b.is_ascii_digit()).count();
    if digits == bytes.len() {
        return true;
    }
    if is_uuid(segment) {
        return true;
    }
    // Version tokens such as `v1` or `v2beta` name an API, not an object.
    if is_version(segment) {
        return false;
    }
    let hex = bytes.iter().all(|b| b.is_ascii_hexdigit());
    if hex && bytes.len() >= 8 && digits > 0 {
        return true;
    }
    // Long tokens mixing letters and digits (base62 ids, hashes, slugs with numbers).
    let token = bytes
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'%' | b'='));
    token && bytes.len() >= 16 && digits >= 2
}

fn is_uuid(segment: &str) -> bool {
    let bytes = segment.as_bytes();
    bytes.len() == 36
        && bytes.iter().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => *b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

fn is_version(segment: &str) -> bool {
    let rest = segment.strip_prefix('v').unwrap_or("");
    !rest.is_empty() && rest.len() <= 6 && rest.as_bytes().first().is_some_and(u8::is_ascii_digit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_become_parameters_and_words_stay() {
        assert_eq!(template("/users/42"), "/users/{id}");
        assert_eq!(
            template("/orders/3f2504e0-4f89-11d3-9a0c-0305e82c3301/items"),
            "/orders/{id}/items"
        );
        assert_eq!(
            template("/objects/507f1f77bcf86cd799439011"),
            "/objects/{id}"
        );
        assert_eq!(template("/t/aB3dE5gH7jK9mN1p"), "/t/{id}");
        assert_eq!(template("/api/v1/users/me"), "/api/v1/users/me");
        assert_eq!(template("/deadbeef/cafe"), "/deadbeef/cafe");
        assert_eq!(
            template("/search/international-business-machines"),
            "/search/international-business-machines"
        );
        assert_eq!(template("/"), "/");
        assert_eq!(template("/a//b/"), "/a//b/");
    }

    #[test]
    fn a_hundred_thousand_users_are_one_route() {
        let mut templater = RouteTemplater::new(&RouteSettings::default());
        let routes: HashSet<String> = (1..=100_000)
            .map(|id| templater.route("api", &format!("/users/{id}")))
            .collect();
        assert_eq!(routes.into_iter().collect::<Vec<_>>(), ["/users/{id}"]);
    }

    #[test]
    fn configured_patterns_win() {
        let settings = RouteSettings {
            patterns: vec!["/files/{name}".into(), "/users/{user}/profile".into()],
            ..RouteSettings::default()
        };
        let mut templater = RouteTemplater::new(&settings);
        assert_eq!(templater.route("s", "/files/report.pdf"), "/files/{name}");
        assert_eq!(
            templater.route("s", "/users/alice/profile"),
            "/users/{user}/profile"
        );
        assert_eq!(templater.route("s", "/files/a/b"), "/files/a/b");
    }

    #[test]
    fn routes_beyond_the_cap_collapse_per_service() {
        let settings = RouteSettings {
            max_routes_per_service: 3,
            ..RouteSettings::default()
        };
        let mut templater = RouteTemplater::new(&settings);
        let names = ["alpha", "beta", "gamma", "delta", "epsilon"];
        let routes: Vec<String> = names
            .iter()
            .map(|name| templater.route("a", &format!("/{name}")))
            .collect();
        assert_eq!(
            routes,
            ["/alpha", "/beta", "/gamma", OVERFLOW_ROUTE, OVERFLOW_ROUTE]
        );
        assert_eq!(templater.route("a", "/beta"), "/beta");
        assert_eq!(templater.route("b", "/delta"), "/delta");
    }
}
