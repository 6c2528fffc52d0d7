//! Who may query: Flight's handshake with basic credentials returns a bearer token; static tokens
//! from the config are accepted as they are; every other call must carry one of them in its
//! `authorization` header.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use tonic::Status;
use tonic::metadata::MetadataMap;

/// Checks credentials and tokens.
#[derive(Debug)]
pub struct Authenticator {
    users: HashMap<String, String>,
    static_tokens: Vec<String>,
    lifetime: Duration,
    /// Tokens handed out by the handshake: token -> (user, when it expires).
    issued: Mutex<HashMap<String, (String, Instant)>>,
}

impl Authenticator {
    /// An authenticator for these users and static tokens; with neither, everyone is let in.
    pub fn new(
        users: HashMap<String, String>,
        static_tokens: Vec<String>,
        lifetime: Duration,
    ) -> Self {
        Self {
            users,
            static_tokens,
            lifetime,
            issued: Mutex::new(HashMap::new()),
        }
    }

    fn open(&self) -> bool {
        self.users.is_empty() && self.static_tokens.is_empty()
    }

    /// The handshake: `authorization: Basic base64(user:password)` in, a new bearer token out.
    /// A client that sends a valid bearer token instead gets it back. On an open server anyone
    /// gets a token.
    pub fn handshake(&self, metadata: &MetadataMap) -> Result<String, Status> {
        let header = authorization(metadata);
        if let Some(token) = header.as_deref().and_then(|h| h.strip_prefix("Bearer ")) {
            self.check_token(token)?;
            return Ok(token.to_string());
        }
        let user = if self.open() {
            "anonymous".to_string()
        } else {
            let basic = header
                .as_deref()
                .and_then(|h| h.strip_prefix("Basic "))
                .ok_or_else(|| {
                    Status::unauthenticated("handshake needs basic credentials (user and password)")
                })?;
            // Go's Flight client (under ADBC) sends unpadded base64; others pad.
            let decoded = STANDARD_NO_PAD
                .decode(basic.trim().trim_end_matches('='))
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| Status::unauthenticated("malformed basic credentials"))?;
            let (user, password) = decoded
                .split_once(':')
                .ok_or_else(|| Status::unauthenticated("malformed basic credentials"))?;
            let known = self
                .users
                .get(user)
                .is_some_and(|expected| same(expected.as_bytes(), password.as_bytes()));
            if !known {
                return Err(Status::unauthenticated("wrong user name or password"));
            }
            user.to_string()
        };
        let token = uuid::Uuid::new_v4().simple().to_string();
        let mut issued = self.issued.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        issued.retain(|_, (_, expires)| *expires > now);
        issued.insert(token.clone(), (user, now + self.lifetime));
        Ok(token)
    }

    /// Lets a call through when it carries a valid bearer token (or the server is open).
    pub fn authorize(&self, metadata: &MetadataMap) -> Result<(), Status> {
        if self.open() {
            return Ok(());
        }
        let header = authorization(metadata).ok_or_else(|| {
            Status::unauthenticated(
                "missing authorization header: log in with the handshake or send a bearer token",
            )
        })?;
        let token = header
            .strip_prefix("Bearer ")
            .ok_or_else(|| Status::unauthenticated("authorization must be a bearer token"))?;
        self.check_token(token)
    }

    fn check_token(&self, token: &str) -> Result<(), Status> {
        if self
            .static_tokens
            .iter()
            .any(|t| same(t.as_bytes(), token.as_bytes()))
        {
            return Ok(());
        }
        let issued = self.issued.lock().unwrap_or_else(PoisonError::into_inner);
        match issued.get(token) {
            Some((_, expires)) if *expires > Instant::now() => Ok(()),
            Some(_) => Err(Status::unauthenticated("token expired: log in again")),
            None if self.open() => Ok(()),
            None => Err(Status::unauthenticated("invalid token")),
        }
    }
}

fn authorization(metadata: &MetadataMap) -> Option<String> {
    metadata
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_string())
}

/// Compares secrets in time that does not depend on where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
#[expect(clippy::unwrap_used)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::STANDARD;

    fn with_header(value: &str) -> MetadataMap {
        let mut map = MetadataMap::new();
        map.insert("authorization", value.parse().unwrap());
        map
    }

    fn guarded() -> Authenticator {
        Authenticator::new(
            HashMap::from([("analyst".to_string(), "s3cret".to_string())]),
            vec!["static-token-0123456789".to_string()],
            Duration::from_secs(60),
        )
    }

    #[test]
    fn handshake_issues_tokens_for_the_right_password_only() {
        let auth = guarded();
        let good = format!("Basic {}", STANDARD.encode("analyst:s3cret"));
        let token = auth.handshake(&with_header(&good)).unwrap();
        assert!(
            auth.authorize(&with_header(&format!("Bearer {token}")))
                .is_ok()
        );
        // Unpadded, as Go's client sends it.
        let unpadded = format!("Basic {}", STANDARD_NO_PAD.encode("analyst:s3cret"));
        assert!(auth.handshake(&with_header(&unpadded)).is_ok());
        let bad = format!("Basic {}", STANDARD.encode("analyst:guess"));
        assert!(auth.handshake(&with_header(&bad)).is_err());
        assert!(auth.handshake(&MetadataMap::new()).is_err());
    }

    #[test]
    fn calls_need_a_known_token() {
        let auth = guarded();
        assert!(auth.authorize(&MetadataMap::new()).is_err());
        assert!(auth.authorize(&with_header("Bearer nope")).is_err());
        assert!(
            auth.authorize(&with_header("Bearer static-token-0123456789"))
                .is_ok()
        );
        let open = Authenticator::new(HashMap::new(), Vec::new(), Duration::from_secs(1));
        assert!(open.authorize(&MetadataMap::new()).is_ok());
    }
}
