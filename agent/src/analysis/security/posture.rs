//! Authentication posture: how a request presents its credentials (a JWT that says `alg: none`
//! or has no expiry, Basic credentials in plaintext, secrets in the query string) and whether
//! an endpoint that nearly always gets credentials answered without them.

use std::{num::NonZeroUsize, sync::Arc};

use lru::LruCache;

use super::{
    family::{CallContext, Claimed, DetectorFamily, ServedRequest, claim},
    finding::Finding,
    principal::authorization,
    rules::{Matcher, Rule, UnauthenticatedParams},
};
use crate::{calls::secrets::names_a_secret, protocols::http::HttpRequest};

/// Endpoints whose authentication habit is kept; past it the least recently seen is dropped.
const MAX_ENDPOINTS: usize = 16_384;

/// The posture rules, judged on every served request.
#[derive(Debug, Default)]
pub(super) struct PostureFamily {
    rules: Vec<Claimed<Check>>,
    habits: AuthHabits,
}

/// What a posture rule checks.
#[derive(Debug)]
enum Check {
    JwtAlgNone,
    JwtWithoutExpiry,
    BasicOverPlaintext,
    CredentialsInQuery,
    UnauthenticatedSuccess(UnauthenticatedParams),
}

impl DetectorFamily for PostureFamily {
    fn adopt(&mut self, rules: &[Arc<Rule>]) -> bool {
        self.rules = claim(rules, |matcher| {
            Some(match matcher {
                Matcher::JwtAlgNone => Check::JwtAlgNone,
                Matcher::JwtWithoutExpiry => Check::JwtWithoutExpiry,
                Matcher::BasicOverPlaintext => Check::BasicOverPlaintext,
                Matcher::CredentialsInQuery => Check::CredentialsInQuery,
                Matcher::UnauthenticatedSuccess(params) => {
                    Check::UnauthenticatedSuccess(params.clone())
                }
                _ => return None,
            })
        });
        !self.rules.is_empty()
    }

    fn judge(&mut self, context: &CallContext<'_>, findings: &mut Vec<Finding>) {
        let Some(served) = context.served() else {
            return;
        };
        for rule in &self.rules {
            if let Some((location, evidence)) =
                check(&rule.check, context, served, &mut self.habits)
            {
                findings.push(rule.finding(served.subject(), location, evidence));
            }
        }
    }
}

/// Where and why `served` fails `check`, if it does.
fn check(
    check: &Check,
    context: &CallContext<'_>,
    served: &ServedRequest<'_>,
    habits: &mut AuthHabits,
) -> Option<(String, String)> {
    let request = served.request();
    let status = served.status;
    match check {
        Check::JwtAlgNone => served
            .principal()
            .jwt
            .as_ref()
            .filter(|claims| {
                claims
                    .alg
                    .as_deref()
                    .is_some_and(|alg| alg.eq_ignore_ascii_case("none"))
                    && (status == 0 || (200..400).contains(&status))
            })
            .map(|_| {
                (
                    "header:authorization".to_owned(),
                    format!("JWT header alg none, answered {status}"),
                )
            }),
        Check::JwtWithoutExpiry => served
            .principal()
            .jwt
            .as_ref()
            .filter(|claims| !claims.expires)
            .map(|_| {
                (
                    "header:authorization".to_owned(),
                    "JWT payload has no exp".to_owned(),
                )
            }),
        Check::BasicOverPlaintext => (sends_basic(request) && !context.call.call.tls).then(|| {
            (
                "header:authorization".to_owned(),
                "Basic credentials on a plaintext connection".to_owned(),
            )
        }),
        Check::CredentialsInQuery => credential_in_query(request).map(|name| {
            (
                format!("query:{name}"),
                "a credential-named parameter carries a value".to_owned(),
            )
        }),
        Check::UnauthenticatedSuccess(params) => habits
            .unauthenticated_success(
                &format!(
                    "{}\u{0}{}",
                    context.call.workload.service_name,
                    served.endpoint_name()
                ),
                sends_credentials(request),
                status,
                params.min_calls,
                params.auth_ratio,
            )
            .map(|evidence| ("request".to_owned(), evidence)),
    }
}

/// The request sends Basic credentials.
fn sends_basic(request: &HttpRequest) -> bool {
    authorization(request).is_some_and(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
}

/// The request carries any credentials at all.
fn sends_credentials(request: &HttpRequest) -> bool {
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
fn credential_in_query(request: &HttpRequest) -> Option<String> {
    let query = request.query()?;
    form_urlencoded::parse(query.as_bytes())
        .find(|(name, value)| !value.is_empty() && names_a_secret(name))
        .map(|(name, _)| name.chars().take(64).collect())
}

/// How often each endpoint gets credentials, to see an answer without them where they are
/// the rule.
#[derive(Debug)]
struct AuthHabits {
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
    fn unauthenticated_success(
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
