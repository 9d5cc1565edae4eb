//! How a request authenticates, from the names and shapes of its credentials, never their
//! values: `Authorization` schemes, API keys in headers or the query, session cookies.

use serde::{Deserialize, Serialize};

use crate::{
    analysis::sensitive::is_jwt_token, calls::secrets::names_a_secret, protocols::http::HttpRequest,
};

/// One way a request can carry credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthScheme {
    /// No credentials seen.
    None,
    /// `Authorization: Basic`.
    Basic,
    /// `Authorization: Bearer` with an opaque token.
    Bearer,
    /// `Authorization: Bearer` with a JSON Web Token.
    Jwt,
    /// An API key in a header such as `x-api-key`.
    ApiKeyHeader,
    /// An API key in the query string (`?api_key=`): it ends up in logs.
    ApiKeyQuery,
    /// A cookie (a session).
    Cookie,
    /// Another `Authorization` scheme (Digest, AWS signatures, ...).
    Other,
}

impl AuthScheme {
    /// The scheme's name, as exported.
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Basic => "basic",
            Self::Bearer => "bearer",
            Self::Jwt => "jwt",
            Self::ApiKeyHeader => "api_key_header",
            Self::ApiKeyQuery => "api_key_query",
            Self::Cookie => "cookie",
            Self::Other => "other",
        }
    }
}

/// Every scheme `request` uses; `[None]` when it carries no credentials.
pub fn schemes(request: &HttpRequest) -> Vec<AuthScheme> {
    let mut found = Vec::new();
    for header in &request.headers {
        let scheme = if header.name == "authorization" {
            Some(authorization_scheme(&header.value))
        } else if header.name == "cookie" {
            Some(AuthScheme::Cookie)
        } else {
            let name = String::from_utf8_lossy(header.name.as_bytes());
            api_key_name(&name).then_some(AuthScheme::ApiKeyHeader)
        };
        if let Some(scheme) = scheme.filter(|scheme| !found.contains(scheme)) {
            found.push(scheme);
        }
    }
    let key_in_query = request.query().is_some_and(|query| {
        form_urlencoded::parse(query.as_bytes()).any(|(name, _)| names_a_secret(&name))
    });
    if key_in_query {
        found.push(AuthScheme::ApiKeyQuery);
    }
    if found.is_empty() {
        found.push(AuthScheme::None);
    }
    found
}

/// Header names (besides `authorization` and `cookie`) that carry an API key or token.
pub(crate) fn api_key_name(name: &str) -> bool {
    // Proxies' bookkeeping headers hold no credential of the caller's.
    let bookkeeping = name.starts_with("x-forwarded") || name.starts_with("sec-");
    !bookkeeping && names_a_secret(name)
}

fn authorization_scheme(value: &[u8]) -> AuthScheme {
    let value = String::from_utf8_lossy(value);
    let (scheme, credentials) = value.trim().split_once(' ').unwrap_or((&value, ""));
    if scheme.eq_ignore_ascii_case("basic") {
        AuthScheme::Basic
    } else if scheme.eq_ignore_ascii_case("bearer") {
        if is_jwt_token(credentials.trim()) {
            AuthScheme::Jwt
        } else {
            AuthScheme::Bearer
        }
    } else {
        AuthScheme::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocols::http::test_request as request;

    /// `{"alg":"HS256","typ":"JWT"}`.{"sub":"1"}.signature
    const JWT: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxIn0.c2ln";

    #[test]
    fn schemes_are_told_apart() {
        /// A request's target and headers, and the schemes it uses.
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a [AuthScheme]);
        let bearer = format!("Bearer {JWT}");
        let cases: [Case<'_>; 7] = [
            ("/", &[], &[AuthScheme::None]),
            (
                "/",
                &[("Authorization", "Basic YTpi")],
                &[AuthScheme::Basic],
            ),
            (
                "/",
                &[("authorization", "Bearer opaque")],
                &[AuthScheme::Bearer],
            ),
            ("/", &[("Authorization", &bearer)], &[AuthScheme::Jwt]),
            ("/", &[("X-API-Key", "k")], &[AuthScheme::ApiKeyHeader]),
            ("/?api_key=k&q=1", &[], &[AuthScheme::ApiKeyQuery]),
            (
                "/",
                &[("Cookie", "sid=1"), ("Authorization", "Digest x")],
                &[AuthScheme::Cookie, AuthScheme::Other],
            ),
        ];
        for (target, headers, expected) in cases {
            assert_eq!(schemes(&request(target, headers)), expected, "{headers:?}");
        }
    }
}
