//! Credentials: argon2 password hashes, HS256 access tokens and opaque refresh tokens.

use std::time::Duration;

use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::Argon2;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::error::ApiError;

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
        }
    }

    /// Signs an access token for `claims`.
    pub fn sign(&self, claims: &Claims) -> Result<String, ApiError> {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
            .map_err(|e| ApiError::Internal(e.into()))
    }

    /// Verifies signature, algorithm and expiry.
    pub fn verify(&self, token: &str) -> Result<Claims, ApiError> {
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
                    ApiError::Unauthorized("the access token has expired".into())
                }
                _ => ApiError::Unauthorized("the access token is invalid".into()),
            })
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
