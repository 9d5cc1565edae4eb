//! Who made a call (the principal), as far as the request tells: the claimed subject of a JWT,
//! a keyed hash of an API key, session cookie or Basic username, else the client address.
//! Credentials are hashed with a key of this host before anything keeps them, so no
//! detector, log or export ever holds one.

use std::{net::IpAddr, path::Path};

use base64::Engine as _;
use ring::hmac;
use serde_json::Value;

use crate::{
    analysis::inventory::auth::api_key_name, calls::secrets::names_a_secret,
    protocols::http::HttpRequest,
};

/// Bytes of a JWT segment, claim or username read; more is not a real one.
const MAX_PART: usize = 4096;
/// Bytes of a claim kept in a principal id.
const MAX_CLAIM: usize = 128;
/// Name of the key file in the agent's state directory.
const KEY_FILE: &str = "principal.key";

/// How a principal was recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrincipalKind {
    /// The `sub` (and `iss`) of a JWT, read without verifying it: claimed, not proven.
    Jwt,
    /// An API key or bearer token that is not a JWT.
    ApiKey,
    /// A Basic username.
    Basic,
    /// A session cookie.
    Cookie,
    /// Nothing but the client address.
    Address,
    /// A local process with no credentials of its own on the exchange: the agent that started
    /// a stdio tool server.
    Process,
}

impl PrincipalKind {
    /// The kind's name (`apiscope.principal.kind`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Jwt => "jwt",
            Self::ApiKey => "api_key",
            Self::Basic => "basic",
            Self::Cookie => "cookie",
            Self::Address => "address",
            Self::Process => "process",
        }
    }
}

/// The caller of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Stable id within this host, e.g. `jwt:issuer/alice`, `key:9f2c…`, `ip:10.0.0.7`; kept
    /// in the process only (a JWT's claims are not secrets, but neither are they exported).
    pub id: String,
    /// How it was recognised.
    pub kind: PrincipalKind,
    /// A keyed hash of the id, the only form that is exported (`apiscope.principal.hash`).
    pub hash: String,
    /// Keyed hash of the username a login attempt named (Basic, or a login body's field).
    pub login_user: Option<u64>,
    /// Keyed hash of the credential presented, to see one used from many places.
    pub credential: Option<u64>,
    /// What the bearer JWT says, unverified, when the request sent one.
    pub jwt: Option<JwtClaims>,
}

/// What a JWT's parts say, unverified.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct JwtClaims {
    /// The header's `alg`.
    pub alg: Option<String>,
    /// `sub`.
    pub subject: Option<String>,
    /// `iss`.
    pub issuer: Option<String>,
    /// The payload has `exp`.
    pub expires: bool,
}

/// Turns requests into principals with a key of this host.
pub struct PrincipalKeyer {
    key: hmac::Key,
}

impl std::fmt::Debug for PrincipalKeyer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PrincipalKeyer")
    }
}

impl PrincipalKeyer {
    /// A keyer with a new random key: hashes differ after a restart.
    pub fn random() -> Self {
        Self::random_secret().0
    }

    /// A keyer with the key kept in `directory` (created, mode 0600, when missing), so that a
    /// principal keeps its hash across restarts; a random one when the file cannot be used.
    pub fn in_directory(directory: &Path) -> Self {
        let path = directory.join(KEY_FILE);
        match std::fs::read(&path) {
            Ok(secret) if secret.len() == 32 => return Self::with_secret(&secret),
            Ok(_) => log::warn!("{}: not a principal key; using a new one", path.display()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => log::warn!("{}: {error}; using a new principal key", path.display()),
        }
        let keyer = Self::random_secret();
        if let Err(error) = write_private(&path, &keyer.1) {
            log::warn!("{}: cannot keep the principal key: {error}", path.display());
        }
        keyer.0
    }

    fn random_secret() -> (Self, [u8; 32]) {
        let mut secret = [0u8; 32];
        if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut secret).is_err() {
            log::warn!("no system randomness for the principal key: principals hash unkeyed");
        }
        (Self::with_secret(&secret), secret)
    }

    fn with_secret(secret: &[u8]) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    /// The keyed hash of `data`, 64 bits.
    pub fn hash(&self, data: &[u8]) -> u64 {
        let tag = hmac::sign(&self.key, data);
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(tag.as_ref().get(..8).unwrap_or(&[0; 8]));
        u64::from_le_bytes(bytes)
    }

    /// The principal of an exchange that carries no credentials: the local process `name`.
    pub fn process(&self, name: &str) -> Principal {
        let id = format!("process:{name}");
        Principal {
            hash: format!("{:016x}", self.hash(id.as_bytes())),
            id,
            kind: PrincipalKind::Process,
            login_user: None,
            credential: None,
            jwt: None,
        }
    }

    /// The principal of `request`, sent from `source`.
    pub fn principal(&self, request: &HttpRequest, source: Option<IpAddr>) -> Principal {
        let login_user = self.login_user(request);
        let jwt = authorization(request)
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .and_then(|(_, token)| jwt_claims(token));
        let mut found = self.by_credentials(request, jwt.as_ref());
        if found.is_none() {
            found = source.map(|ip| (format!("ip:{ip}"), PrincipalKind::Address, None));
        }
        let (id, kind, credential) =
            found.unwrap_or_else(|| ("unknown".to_owned(), PrincipalKind::Address, None));
        Principal {
            hash: format!("{:016x}", self.hash(id.as_bytes())),
            id,
            kind,
            login_user,
            credential,
            jwt,
        }
    }

    fn by_credentials(
        &self,
        request: &HttpRequest,
        jwt: Option<&JwtClaims>,
    ) -> Option<(String, PrincipalKind, Option<u64>)> {
        if let Some((scheme, credentials)) = authorization(request) {
            let credential = Some(self.hash(credentials.as_bytes()));
            if scheme.eq_ignore_ascii_case("bearer") {
                return Some(
                    match jwt.and_then(|claims| Some((claims.subject.as_ref()?, &claims.issuer))) {
                        Some((subject, issuer)) => (
                            format!("jwt:{}/{subject}", issuer.as_deref().unwrap_or_default()),
                            PrincipalKind::Jwt,
                            credential,
                        ),
                        None => (
                            self.keyed("key", credentials),
                            PrincipalKind::ApiKey,
                            credential,
                        ),
                    },
                );
            }
            if scheme.eq_ignore_ascii_case("basic") {
                let user = basic_user(credentials).unwrap_or_default();
                return Some((self.keyed("basic", &user), PrincipalKind::Basic, credential));
            }
        }
        for header in &request.headers {
            let name = String::from_utf8_lossy(header.name.as_bytes());
            if name != "authorization" && name != "cookie" && api_key_name(&name) {
                let value = String::from_utf8_lossy(&header.value);
                let credential = Some(self.hash(value.as_bytes()));
                return Some((self.keyed("key", &value), PrincipalKind::ApiKey, credential));
            }
        }
        if let Some(query) = request.query() {
            for (name, value) in form_urlencoded::parse(query.as_bytes()) {
                if names_a_secret(&name) && !value.is_empty() {
                    let credential = Some(self.hash(value.as_bytes()));
                    return Some((self.keyed("key", &value), PrincipalKind::ApiKey, credential));
                }
            }
        }
        let session = request.header_str("cookie").and_then(session_cookie)?;
        let credential = Some(self.hash(session.as_bytes()));
        Some((
            self.keyed("cookie", session),
            PrincipalKind::Cookie,
            credential,
        ))
    }

    fn keyed(&self, prefix: &str, secret: &str) -> String {
        format!("{prefix}:{:016x}", self.hash(secret.as_bytes()))
    }

    /// The username a login request names: Basic credentials, or a `username`/`email`/`login`
    /// field of a JSON or form body posted to a path that looks like a login.
    fn login_user(&self, request: &HttpRequest) -> Option<u64> {
        if let Some((scheme, credentials)) = authorization(request)
            && scheme.eq_ignore_ascii_case("basic")
        {
            return basic_user(credentials).map(|user| self.hash(user.as_bytes()));
        }
        let path = request.path().to_ascii_lowercase();
        let login = ["login", "signin", "sign-in", "auth", "token", "session"]
            .iter()
            .any(|word| path.contains(word));
        if request.method != "POST" || !login {
            return None;
        }
        let body = request
            .body
            .captured
            .get(..MAX_PART)
            .unwrap_or(&request.body.captured);
        let user = match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(fields)) => LOGIN_FIELDS
                .iter()
                .find_map(|name| fields.get(*name).and_then(Value::as_str).map(str::to_owned)),
            _ => form_urlencoded::parse(body)
                .find(|(name, _)| LOGIN_FIELDS.contains(&name.as_ref()))
                .map(|(_, value)| value.into_owned()),
        }?;
        (!user.is_empty()).then(|| self.hash(user.as_bytes()))
    }
}

/// The scheme and credentials of the request's `Authorization` header, trimmed.
pub fn authorization(request: &HttpRequest) -> Option<(&str, &str)> {
    let value = request.header_str("authorization")?.trim();
    let (scheme, credentials) = value.split_once(' ').unwrap_or((value, ""));
    Some((scheme, credentials.trim()))
}

/// Body fields that name who is logging in.
const LOGIN_FIELDS: [&str; 4] = ["username", "user", "email", "login"];

/// Cookie names that hold a session (the frameworks' defaults and their common shapes).
fn session_cookie(cookies: &str) -> Option<&str> {
    cookies.split(';').find_map(|pair| {
        let (name, value) = pair.trim().split_once('=')?;
        let name = name.to_ascii_lowercase();
        let session = name.contains("session") || name.contains("sid") || name.contains("token");
        (session && !value.is_empty()).then_some(value)
    })
}

/// The user of Basic credentials (`base64(user:password)`); the password is dropped here.
fn basic_user(credentials: &str) -> Option<String> {
    if credentials.len() > MAX_PART {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(credentials)
        .ok()?;
    let text = String::from_utf8_lossy(&decoded);
    let (user, _) = text.split_once(':')?;
    Some(user.to_owned())
}

/// What the header and payload of a compact JWT say, unverified; `None` when `token` is not
/// one.
pub fn jwt_claims(token: &str) -> Option<JwtClaims> {
    let mut parts = token.split('.');
    let (header, payload) = (parts.next()?, parts.next()?);
    parts.next()?;
    let decode = |part: &str| -> Option<serde_json::Map<String, Value>> {
        if part.len() > MAX_PART {
            return None;
        }
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part.trim_end_matches('='))
            .ok()?;
        match serde_json::from_slice(&bytes).ok()? {
            Value::Object(fields) => Some(fields),
            _ => None,
        }
    };
    let header = decode(header)?;
    let payload = decode(payload)?;
    let claim = |name: &str| {
        payload
            .get(name)
            .and_then(Value::as_str)
            .map(|value| value.chars().take(MAX_CLAIM).collect())
    };
    Some(JwtClaims {
        alg: header.get("alg").and_then(Value::as_str).map(str::to_owned),
        subject: claim("sub"),
        issuer: claim("iss"),
        expires: payload.contains_key("exp"),
    })
}

fn write_private(path: &Path, secret: &[u8]) -> std::io::Result<()> {
    use std::{io::Write as _, os::unix::fs::OpenOptionsExt as _};
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(secret)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocols::http::test_request as request;

    fn jwt(header: &str, payload: &str) -> String {
        let encode = |text: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text);
        format!("{}.{}.", encode(header), encode(payload))
    }

    #[test]
    fn a_jwt_names_its_claimed_subject_and_the_hash_hides_it() {
        let keyer = PrincipalKeyer::random();
        let token = jwt(r#"{"alg":"none"}"#, r#"{"sub":"alice","iss":"idp"}"#);
        let bearer = format!("Bearer {token}");
        let principal = keyer.principal(&request("/", &[("authorization", &bearer)]), None);
        assert_eq!(principal.id, "jwt:idp/alice");
        assert_eq!(principal.kind, PrincipalKind::Jwt);
        assert!(!principal.hash.contains("alice"));
        let claims = jwt_claims(&token).unwrap();
        assert_eq!(claims.alg.as_deref(), Some("none"));
        assert!(!claims.expires);
    }

    #[test]
    fn keys_cookies_and_basic_users_are_hashed() {
        let keyer = PrincipalKeyer::random();
        let source = Some(IpAddr::from([10, 0, 0, 7]));
        let key = keyer.principal(&request("/", &[("x-api-key", "sk-secret-value")]), source);
        assert_eq!(key.kind, PrincipalKind::ApiKey);
        assert!(!key.id.contains("secret"));
        let query = keyer.principal(&request("/?api_key=abc123", &[]), source);
        assert!(query.id.starts_with("key:") && !query.id.contains("abc123"));
        assert_eq!(query.kind, PrincipalKind::ApiKey);
        let cookie = keyer.principal(
            &request("/", &[("cookie", "theme=dark; sessionid=s3cr3t")]),
            source,
        );
        assert_eq!(cookie.kind, PrincipalKind::Cookie);
        assert!(!cookie.id.contains("s3cr3t"));
        let basic = keyer.principal(
            &request("/", &[("authorization", "Basic YWxpY2U6aHVudGVyMg==")]),
            source,
        );
        assert_eq!(basic.kind, PrincipalKind::Basic);
        assert!(basic.login_user.is_some());
        assert!(!basic.id.contains("alice"));
        let anonymous = keyer.principal(&request("/", &[]), source);
        assert_eq!(
            (anonymous.id.as_str(), anonymous.kind),
            ("ip:10.0.0.7", PrincipalKind::Address)
        );
    }

    #[test]
    fn the_key_is_kept_so_hashes_survive_a_restart() {
        let directory = std::env::temp_dir().join(format!("apiscope-key-{}", std::process::id()));
        std::fs::create_dir_all(&directory).unwrap();
        let first = PrincipalKeyer::in_directory(&directory).hash(b"alice");
        let second = PrincipalKeyer::in_directory(&directory).hash(b"alice");
        assert_eq!(first, second);
        std::fs::remove_dir_all(&directory).unwrap();
    }

    #[test]
    fn broken_tokens_are_not_jwts() {
        for token in ["", "a.b", "not-base64!.x.y", "e30.e30", "WzFd.e30.x"] {
            assert!(jwt_claims(token).is_none(), "{token}");
        }
    }
}
