//! Authentication posture: how a request presents its credentials (Basic credentials in
//! plaintext, secrets in the query string; its JWT's claims come with its principal) and
//! whether an endpoint that nearly always gets credentials answered without them.

use std::num::NonZeroUsize;

use lru::LruCache;

use super::principal::authorization;
use crate::{calls::secrets::names_a_secret, protocols::http::HttpRequest};

/// Endpoints whose authentication habit is kept; past it the least recently seen is dropped.
const MAX_ENDPOINTS: usize = 16_384;

/// The request sends Basic credentials.
pub fn sends_basic(request: &HttpRequest) -> bool {
    authorization(request).is_some_and(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
}

/// The request carries any credentials at all.
pub fn sends_credentials(request: &HttpRequest) -> bool {
    request.header_str("authorization").is_some()
        || request.header_str("cookie").is_some()
        || request.headers.iter().any(|header| {
            crate::analysis::inventory::auth::api_key_name(&String::from_utf8_lossy(
                header.name.as_bytes(),
            ))
        })
        || credential_in_query(request).is_some()
}

/// The name of the first query parameter that carries a credential (`api_key`, `token`,
/// `password`, ...) with a value.
pub fn credential_in_query(request: &HttpRequest) -> Option<String> {
    let query = request.query()?;
    form_urlencoded::parse(query.as_bytes())
        .find(|(name, value)| !value.is_empty() && names_a_secret(name))
        .map(|(name, _)| name.chars().take(64).collect())
}

/// How often each endpoint gets credentials, to see an answer without them where they are
/// the rule.
#[derive(Debug)]
pub struct AuthHabits {
    endpoints: LruCache<String, Habit>,
}

impl Default for AuthHabits {
    fn default() -> Self {
        Self {
            endpoints: LruCache::new(NonZeroUsize::new(MAX_ENDPOINTS).unwrap_or(NonZeroUsize::MIN)),
        }
    }
}

#[derive(Debug, Default)]
struct Habit {
    calls: u64,
    authenticated: u64,
}

impl AuthHabits {
    /// Counts one call of `endpoint`; true when it was answered 2xx without credentials while
    /// at least `auth_ratio` of at least `min_calls` earlier calls had them.
    pub fn unauthenticated_success(
        &mut self,
        endpoint: &str,
        authenticated: bool,
        status: u16,
        min_calls: u32,
        auth_ratio: f64,
    ) -> Option<String> {
        if !self.endpoints.contains(endpoint) {
            self.endpoints.put(endpoint.to_owned(), Habit::default());
        }
        let habit = self.endpoints.get_mut(endpoint)?;
        let usual = habit.calls >= u64::from(min_calls)
            && habit.authenticated as f64 >= auth_ratio * habit.calls as f64;
        let found = (usual && !authenticated && (200..300).contains(&status)).then(|| {
            format!(
                "answered {status} without credentials; {} of its {} earlier calls had them",
                habit.authenticated, habit.calls
            )
        });
        // The anomaly itself is not learned as the endpoint's habit.
        if found.is_none() {
            habit.calls += 1;
            habit.authenticated += u64::from(authenticated);
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_without_credentials_where_they_are_the_rule() {
        let mut habits = AuthHabits::default();
        for _ in 0..30 {
            assert!(
                habits
                    .unauthenticated_success("GET /a", true, 200, 20, 0.95)
                    .is_none()
            );
        }
        assert!(
            habits
                .unauthenticated_success("GET /a", false, 401, 20, 0.95)
                .is_none()
        );
        assert!(
            habits
                .unauthenticated_success("GET /a", false, 200, 20, 0.95)
                .is_some()
        );
        // A public endpoint is not one.
        for _ in 0..30 {
            habits.unauthenticated_success("GET /b", false, 200, 20, 0.95);
        }
        assert!(
            habits
                .unauthenticated_success("GET /b", false, 200, 20, 0.95)
                .is_none()
        );
    }
}
