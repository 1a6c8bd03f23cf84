//! The `AuthUser` extractor: a verified access token, or a 401.

use axum::extract::FromRequestParts;
use axum::http::{header, request::Parts, HeaderMap};

use crate::error::ApiError;
use crate::state::AppState;

/// The caller, from a valid `Authorization: Bearer <accessToken>`.
#[derive(Debug, Clone)]
pub struct AuthUser {
    /// User id (`sub`).
    pub user_id: String,
    /// Organization id (`org`): the scope of every domain query.
    pub org_id: String,
    /// Session id (`sid`).
    pub session_id: String,
    /// Role.
    pub role: String,
}

/// The token of an `Authorization: Bearer <token>` header, if there is one.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
        .filter(|t| !t.is_empty())
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if !parts.headers.contains_key(header::AUTHORIZATION) {
            return Err(ApiError::Unauthorized(
                "missing Authorization: Bearer token".into(),
            ));
        }
        let token = bearer_token(&parts.headers).ok_or_else(|| {
            ApiError::Unauthorized("expected Authorization: Bearer <token>".into())
        })?;
        let claims = state.keys.verify(token)?;
        Ok(Self {
            user_id: claims.sub,
            org_id: claims.org,
            session_id: claims.sid,
            role: claims.role,
        })
    }
}
