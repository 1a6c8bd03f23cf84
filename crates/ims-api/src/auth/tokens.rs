//! Credentials: argon2 password hashes, HS256 access tokens and opaque refresh tokens.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::Argon2;
use constant_time_eq::constant_time_eq;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::error::ApiError;

/// Verified tokens kept at most (a few hundred bytes each).
const VERIFIED_TOKENS: usize = 10_000;

/// Claims of an access token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// The user's organization id: every domain query is scoped to it.
    pub org: String,
    /// The session (login) the token was issued in.
    pub sid: String,
    /// The user's role.
    pub role: String,
    /// Issued at, seconds since the epoch.
    pub iat: u64,
    /// Expires at, seconds since the epoch.
    pub exp: u64,
}

/// HS256 keys derived once from `JWT_SECRET`.
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    /// Tokens whose signature and claims were verified, with their claims: a client sends
    /// the same token with every request until it expires, and checking it again (base64,
    /// two JSON documents, HMAC) was the largest single part of a cached hit's server time.
    /// Only a token that passed the full check is kept, under its exact text, so a cached
    /// answer is the one the check would give again, but for expiry, which is checked on
    /// every use. Bounded; an evicted token is simply checked in full again.
    verified: quick_cache::sync::Cache<Token, Arc<Claims>>,
}

/// A verified token as a cache key, compared in constant time: a lookup must not tell by
/// its timing how much of a presented token matches one kept here. `constant_time_eq`
/// compares 16 bytes a step; `subtle`'s byte-by-byte `ct_eq`, used before, cost some
/// 6,000 instructions on every request's lookup (a 250-byte token), more than the rest of
/// the lookup and of the claims' use together.
struct Token(Box<str>);

impl PartialEq for Token {
    fn eq(&self, other: &Self) -> bool {
        constant_time_eq(self.0.as_bytes(), other.0.as_bytes())
    }
}

impl Eq for Token {}

impl Hash for Token {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // As `str` hashes: lookups are made with the presented `&str`.
        self.0.hash(state);
    }
}

impl quick_cache::Equivalent<Token> for str {
    fn equivalent(&self, key: &Token) -> bool {
        constant_time_eq(self.as_bytes(), key.0.as_bytes())
    }
}

fn expired() -> ApiError {
    ApiError::Unauthorized("the access token has expired".into())
}

impl TokenKeys {
    /// Keys for `secret`.
    pub fn new(secret: &str) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Self {
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
            validation,
            verified: quick_cache::sync::Cache::new(VERIFIED_TOKENS),
        }
    }

    /// Signs an access token for `claims`.
    pub fn sign(&self, claims: &Claims) -> Result<String, ApiError> {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
            .map_err(|e| ApiError::Internal(e.into()))
    }

    /// Verifies signature, algorithm and expiry.
    pub fn verify(&self, token: &str) -> Result<Claims, ApiError> {
        self.verify_shared(token).map(|claims| (*claims).clone())
    }

    /// [`verify`](Self::verify), the claims shared: a token verified before is only
    /// checked for expiry.
    pub fn verify_shared(&self, token: &str) -> Result<Arc<Claims>, ApiError> {
        self.verify_at(token, jsonwebtoken::get_current_timestamp())
    }

    /// The check as of `now` (seconds since the epoch): for a token verified before, only
    /// its expiry; any other in full by `jsonwebtoken`, then its expiry the same way.
    fn verify_at(&self, token: &str, now: u64) -> Result<Arc<Claims>, ApiError> {
        let claims = match self.verified.get(token) {
            Some(claims) => claims,
            None => {
                let claims =
                    jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
                        .map(|data| Arc::new(data.claims))
                        .map_err(|e| match e.kind() {
                            jsonwebtoken::errors::ErrorKind::ExpiredSignature => expired(),
                            _ => ApiError::Unauthorized("the access token is invalid".into()),
                        })?;
                self.verified.insert(Token(token.into()), claims.clone());
                claims
            }
        };
        // RFC 7519 §4.1.4: never accepted on or after `exp`. jsonwebtoken accepts the whole
        // second `exp` names (its test is `exp < now`), so a token outlived its expiry by up
        // to a second (found by a probe).
        if claims.exp <= now {
            self.verified.remove(token);
            return Err(expired());
        }
        Ok(claims)
    }
}

/// Claims for a user, valid for `ttl` from now.
pub fn claims_for(
    user_id: &str,
    org_id: &str,
    session_id: &str,
    role: &str,
    ttl: Duration,
) -> Claims {
    let now = jsonwebtoken::get_current_timestamp();
    Claims {
        sub: user_id.into(),
        org: org_id.into(),
        sid: session_id.into(),
        role: role.into(),
        iat: now,
        exp: now + ttl.as_secs(),
    }
}

/// A new opaque refresh token: 256 random bits, hex.
pub fn new_refresh_token() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// Hashes a password with argon2id on the blocking pool (it takes tens of milliseconds of
/// CPU by design, which must not stall the async workers).
pub async fn hash_password(password: String) -> Result<String, ApiError> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| ApiError::Internal(anyhow::anyhow!("argon2: {e}")))
    })
    .await
    .map_err(|e| ApiError::Internal(e.into()))?
}

// Verifying against this when the email is unknown keeps both answers equally slow, so
// response time does not reveal which emails have accounts.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$WZjKXYwd1+Nfn8l1yI/TkdZ2+nFJo3RMCuVS4ErPZzI";

/// Checks `password` against `hash` (or against a dummy hash when `hash` is `None`).
pub async fn verify_password(password: String, hash: Option<String>) -> Result<bool, ApiError> {
    tokio::task::spawn_blocking(move || {
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| DUMMY_HASH.to_string());
        let ok = PasswordHash::new(&hash)
            .map(|parsed| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
            })
            .unwrap_or(false);
        known && ok
    })
    .await
    .map_err(|e| ApiError::Internal(e.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_reject_other_keys() {
        let keys = TokenKeys::new("a-secret-of-at-least-thirty-two-chars!");
        let claims = claims_for("u", "o", "s", "admin", Duration::from_secs(60));
        let token = keys.sign(&claims).expect("sign");
        assert_eq!(keys.verify(&token).expect("verify").org, "o");
        let other = TokenKeys::new("another-secret-of-at-least-thirty-two!");
        assert!(other.verify(&token).is_err());
    }

    #[test]
    fn a_verified_token_is_kept_but_still_expires_and_a_changed_one_is_checked_in_full() {
        let keys = TokenKeys::new("a-secret-of-at-least-thirty-two-chars!");
        let claims = claims_for("u", "o", "s", "admin", Duration::from_secs(60));
        let token = keys.sign(&claims).expect("sign");
        let first = keys.verify_shared(&token).expect("verify");
        let again = keys.verify_shared(&token).expect("verify again");
        assert!(
            Arc::ptr_eq(&first, &again),
            "the second check reads the kept claims"
        );
        // Every character of the signature changed in turn: never accepted, although the
        // original is kept.
        let signature = token.rfind('.').expect("three parts") + 1;
        for at in signature..token.len() {
            let mut changed = token.clone().into_bytes();
            changed[at] = if changed[at] == b'A' { b'B' } else { b'A' };
            let changed = String::from_utf8(changed).expect("ascii");
            assert!(keys.verify(&changed).is_err(), "changed at {at} accepted");
        }
        // Valid from the cache until the second `exp` names; refused as expired from that
        // second on, and forgotten.
        let last = keys
            .verify_at(&token, claims.exp - 1)
            .expect("valid before exp");
        assert!(Arc::ptr_eq(&first, &last));
        let err = keys
            .verify_at(&token, claims.exp)
            .expect_err("expired at exp");
        assert!(err.to_string().contains("expired"), "{err}");
        assert!(keys.verified.get(token.as_str()).is_none());
        // Checked in full (not kept), the same: refused from the second `exp` names.
        let fresh = TokenKeys::new("a-secret-of-at-least-thirty-two-chars!");
        assert!(fresh.verify_at(&token, claims.exp).is_err());
        assert!(fresh.verify_at(&token, claims.exp - 1).is_ok());
    }

    #[tokio::test]
    async fn passwords_verify() {
        let hash = hash_password("correct horse".into()).await.expect("hash");
        assert!(verify_password("correct horse".into(), Some(hash.clone()))
            .await
            .expect("v"));
        assert!(!verify_password("wrong".into(), Some(hash))
            .await
            .expect("v"));
        assert!(!verify_password("x".into(), None).await.expect("v"));
    }
}
