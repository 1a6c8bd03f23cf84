//! Authentication: organizations and users, HS256 access tokens, and rotating refresh
//! tokens stored in Redis (SHA-256 keyed) with a SQL fallback and reuse detection.
//!
//! Sessions (one per login) live in SQL: they are what the user lists and revokes, and they
//! must survive a Redis restart. A refresh token is valid only while its session is live, so
//! revoking a session kills its tokens wherever they are stored.

mod extract;
mod store;
pub mod tokens;

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderValue, StatusCode};
use ims_redis::session::{hash_token, Taken};
use serde::{Deserialize, Serialize};
use sqlx::AnyConnection;
use time::OffsetDateTime;
use tower_http::set_header::SetResponseHeaderLayer;

pub use extract::{bearer_token, verified, verify_once, AuthUser, Org, VerifiedClaims};
use store::UserRow;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::db;
use crate::error::{ApiError, ApiResult, Json, Query, Validator};
use crate::fields;
use crate::pagination::{PageParams, Paginated};
use crate::policy::{Limit, RoutePolicy};
use crate::state::AppState;

/// The auth routes. Register, login and refresh are public; the rest need a bearer token.
pub fn router() -> OpenApiRouter<AppState> {
    crate::openapi::tagged(
        "auth",
        OpenApiRouter::new()
            // Credentials: RATE_LIMIT_AUTH per address, not the global limit.
            .routes(routes!(register).limit(Limit::Credentials))
            .routes(routes!(login).limit(Limit::Credentials))
            .routes(routes!(refresh).limit(Limit::Credentials))
            .routes(routes!(logout))
            .routes(routes!(me))
            .routes(routes!(list_sessions, revoke_all_sessions))
            .routes(routes!(revoke_session))
            // Tokens, sessions and the user's own record are never for a cache to keep
            // (RFC 6749 §5.1 for token responses; found missing by a probe).
            .layer(SetResponseHeaderLayer::if_not_present(
                header::CACHE_CONTROL,
                HeaderValue::from_static("no-store"),
            )),
    )
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct RegisterBody {
    #[schema(schema_with = fields::email_schema)]
    email: String,
    #[schema(min_length = 8, max_length = 1024)]
    password: String,
    #[schema(schema_with = fields::name_schema)]
    name: String,
    #[schema(schema_with = fields::name_schema)]
    organization_name: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
struct LoginBody {
    #[schema(schema_with = fields::login_email_schema)]
    email: String,
    #[schema(min_length = 1, max_length = 1024)]
    password: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct RefreshBody {
    /// The refresh token as issued (64 hex digits); anything of this shape is looked up.
    #[schema(pattern = "^[A-Za-z0-9_-]{1,512}$")]
    refresh_token: String,
}

/// The shape [`RefreshBody`]'s pattern documents; other strings are refused with 422
/// before any lookup.
fn refresh_token_shaped(token: &str) -> bool {
    (1..=512).contains(&token.len())
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The user as clients see it.
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct UserView {
    id: String,
    email: String,
    name: String,
    organization_id: String,
    role: String,
}

impl From<&UserRow> for UserView {
    fn from(u: &UserRow) -> Self {
        Self {
            id: u.id.clone(),
            email: u.email.clone(),
            name: u.name.clone(),
            organization_id: u.organization_id.clone(),
            role: u.role.clone(),
        }
    }
}

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct TokenPair {
    access_token: String,
    refresh_token: String,
    token_type: String,
    expires_in: u64,
    user: UserView,
}

/// What Redis keeps for a refresh token (contract §3: at least `userId` and `createdAt`).
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TokenRecord {
    user_id: String,
    organization_id: String,
    session_id: String,
    created_at: String,
    expires_at: String,
    /// The hash of the token this one replaced, whose reuse grace period ends when this
    /// one is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    replaces: Option<String>,
}

/// Who is logging in from where, remembered on the session.
struct ClientMeta {
    user_agent: Option<String>,
    ip: Option<String>,
}

impl axum::extract::FromRequestParts<AppState> for ClientMeta {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let headers = &parts.headers;
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0);
        let client = state
            .settings
            .proxy_trust
            .client(peer.map(|p| p.ip()), headers);
        Ok(Self {
            user_agent: headers
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.chars().take(256).collect()),
            ip: client.map(|ip| ip.to_string()),
        })
    }
}

/// Emails are stored and compared in lower case. Not trimmed: the document's pattern
/// refuses surrounding whitespace, and so does the server.
fn normalize_email(email: &str) -> String {
    email.to_lowercase()
}

fn expiry_after(ttl: Duration) -> String {
    db::timestamp(OffsetDateTime::now_utc() + ttl)
}

#[utoipa::path(
    post, path = "/auth/register", operation_id = "register",
    summary = "Register an organization and its first user",
    description = "Creates the organization and its first user (role `admin`) and starts a session.",
    request_body = RegisterBody,
    responses(
        (status = 201, description = "The new user and a token pair", body = TokenPair),
        (status = 409, description = "The email is already registered", body = crate::error::Problem, content_type = "application/problem+json"),
    ),
)]
async fn register(
    State(state): State<AppState>,
    meta: ClientMeta,
    Json(body): Json<RegisterBody>,
) -> ApiResult<(StatusCode, Json<TokenPair>)> {
    let email = normalize_email(&body.email);
    let name = body.name.trim();
    let organization_name = body.organization_name.trim();
    Validator::default()
        .check(
            fields::looks_like_email(&email),
            "email",
            "must be a valid email address",
        )
        .check(
            body.email.chars().count() <= fields::MAX_EMAIL_CHARS,
            "email",
            &format!("must be at most {} characters", fields::MAX_EMAIL_CHARS),
        )
        .check(
            body.password.chars().count() >= 8,
            "password",
            "must be at least 8 characters",
        )
        .check(
            body.password.chars().count() <= 1024,
            "password",
            "must be at most 1024 characters",
        )
        .check(!name.is_empty(), "name", "must not be empty")
        .check(
            body.name.chars().count() <= 200,
            "name",
            "must be at most 200 characters",
        )
        .check(
            !organization_name.is_empty(),
            "organizationName",
            "must not be empty",
        )
        .check(
            body.organization_name.chars().count() <= 200,
            "organizationName",
            "must be at most 200 characters",
        )
        .finish()?;
    let hash = tokens::hash_password(body.password).await?;
    let user =
        store::create_org_with_admin(&state.db, organization_name, &email, &hash, name).await?;
    let pair = start_session(&state, &user, &meta).await?;
    tracing::info!(user_id = %user.id, org_id = %user.organization_id, "organization registered");
    Ok((StatusCode::CREATED, Json(pair)))
}

#[utoipa::path(
    post, path = "/auth/login", operation_id = "login", summary = "Log in",
    request_body = LoginBody,
    responses(
        (status = 200, description = "A token pair for a new session", body = TokenPair),
        (status = 401, description = "Wrong email or password", body = crate::error::Problem, content_type = "application/problem+json"),
    ),
)]
async fn login(
    State(state): State<AppState>,
    meta: ClientMeta,
    Json(body): Json<LoginBody>,
) -> ApiResult<Json<TokenPair>> {
    let email = normalize_email(&body.email);
    Validator::default()
        .check(!email.is_empty(), "email", "must not be empty")
        .check(!body.password.is_empty(), "password", "must not be empty")
        .check(
            body.password.chars().count() <= 1024,
            "password",
            "must be at most 1024 characters",
        )
        .finish()?;
    let user = store::find_user_by_email(&state.db, &email).await?;
    let verified = tokens::verify_password(
        body.password,
        user.as_ref().map(|u| u.password_hash.clone()),
    )
    .await?;
    let user = match user {
        Some(user) if verified => user,
        _ => return Err(ApiError::Unauthorized("invalid email or password".into())),
    };
    Ok(Json(start_session(&state, &user, &meta).await?))
}

/// Opens a session for `user` and issues its first token pair.
async fn start_session(
    state: &AppState,
    user: &UserRow,
    meta: &ClientMeta,
) -> ApiResult<TokenPair> {
    let expires_at = expiry_after(state.settings.refresh_token_ttl);
    let mut tx = state.db.begin().await?;
    store::take_turns_at_login(&mut tx, state.db.backend(), &user.id).await?;
    let session_id = store::create_session(
        &mut *tx,
        user,
        &expires_at,
        meta.user_agent.as_deref(),
        meta.ip.as_deref(),
    )
    .await?;
    // SESSION_MAX_PER_USER: the most recently used sessions stay, the others end. Without
    // a cap every login added a session for as long as SESSION_MAX_AGE, however many (a
    // probe made 3,000), each with its tokens in Redis and SQL.
    let keep = state.settings.session_max_per_user;
    let ended = store::end_sessions_past(&mut tx, &user.id, &session_id, keep).await?;
    if ended > 0 {
        tracing::info!(user_id = %user.id, ended, "least recently used sessions ended: SESSION_MAX_PER_USER");
    }
    let (pair, _) = issue_pair(state, &mut tx, user, &session_id, None).await?;
    crate::db::commit(tx).await?;
    Ok(pair)
}

/// The refresh token a rotation replaces.
#[derive(Clone, Copy)]
struct Replaced<'a> {
    token: &'a str,
    hash: &'a str,
}

/// Signs an access token and stores a new refresh token: in Redis when it answers, else in
/// the SQL fallback table through `conn` (the caller's transaction, so an outage costs no
/// extra commit). After a rotation within a grace period, also the pair sealed for a second
/// presentation of the replaced token (kept on the session row, and by the caller in Redis).
async fn issue_pair(
    state: &AppState,
    conn: &mut AnyConnection,
    user: &UserRow,
    session_id: &str,
    replaces: Option<Replaced<'_>>,
) -> ApiResult<(TokenPair, Option<String>)> {
    let ttl = state.settings.refresh_token_ttl;
    let claims = tokens::claims_for(
        &user.id,
        &user.organization_id,
        session_id,
        &user.role,
        state.settings.access_token_ttl,
    );
    let access_token = state.keys.sign(&claims)?;
    let refresh_token = tokens::new_refresh_token();
    let token_hash = hash_token(&refresh_token);
    let expires_at = expiry_after(ttl);
    let record = TokenRecord {
        user_id: user.id.clone(),
        organization_id: user.organization_id.clone(),
        session_id: session_id.to_string(),
        created_at: db::now(),
        expires_at: expires_at.clone(),
        replaces: replaces.map(|r| r.hash.to_string()),
    };
    let pair = TokenPair {
        access_token,
        refresh_token,
        token_type: "Bearer".into(),
        expires_in: state.settings.access_token_ttl.as_secs(),
        user: UserView::from(user),
    };
    // The session row keeps the live token's hash: if Redis evicts the key, the token
    // still refreshes (see `refresh`). After a rotation it also keeps the replaced token's
    // hash (a replay of it is reuse, whatever Redis remembers) and, for the grace period,
    // this answer, sealed as in Redis: a second tab gets it without Redis too.
    let sealed = match replaces {
        None => {
            store::set_session_token(&mut *conn, session_id, &token_hash).await?;
            None
        }
        Some(replaced) => {
            let grace = state.settings.refresh_reuse_grace;
            let answer = (!grace.is_zero())
                .then(|| ims_redis::session::seal_answer(replaced.token, &pair))
                .flatten();
            store::rotate_session_token(
                &mut *conn,
                session_id,
                &token_hash,
                replaced.hash,
                answer.as_deref(),
                &expiry_after(grace),
            )
            .await?;
            // And every replaced token, as rotated, for as long as it could be presented
            // (a token lives at most `ttl` after the rotation that replaces it): a replay of
            // a token from before the last rotation is then reuse without Redis' tombstone
            // too. Only the last one was known in SQL, so on an instance cut off from
            // Redis an older replay was a plain 401 and the session lived on.
            store::insert_refresh_token(
                &mut *conn,
                replaced.hash,
                &user.id,
                session_id,
                &expires_at,
                true,
            )
            .await?;
            answer
        }
    };
    if !state.refresh_tokens.put(&token_hash, &record, ttl).await {
        store::insert_refresh_token(
            &mut *conn,
            &token_hash,
            &user.id,
            session_id,
            &expires_at,
            false,
        )
        .await?;
    }
    Ok((pair, sealed))
}

fn invalid_refresh() -> ApiError {
    ApiError::Unauthorized("the refresh token is invalid or expired".into())
}

#[utoipa::path(
    post, path = "/auth/refresh", operation_id = "refreshTokens",
    summary = "Rotate a refresh token",
    description = "Returns a new pair; the presented refresh token is dead from now on. Presenting an already rotated token revokes its whole session.",
    request_body = RefreshBody,
    responses(
        (status = 200, description = "A new token pair", body = TokenPair),
        (status = 401, description = "The refresh token is invalid, expired or was already used", body = crate::error::Problem, content_type = "application/problem+json"),
    ),
)]
async fn refresh(
    State(state): State<AppState>,
    Json(body): Json<RefreshBody>,
) -> ApiResult<Json<TokenPair>> {
    let token = body.refresh_token.as_str();
    if !refresh_token_shaped(token) {
        return Err(ApiError::field("refreshToken", "must be a refresh token"));
    }
    let token_hash = hash_token(token);
    let ttl = state.settings.refresh_token_ttl;

    // Redis first (the normal home of tokens), then the SQL fallback table. All SQL work of a
    // rotation is one transaction: one commit whether or not Redis is up.
    // Taking the token from Redis consumes it: from here on, a 503 "try again" at the
    // request's time-out would send the client back with a token already rotated, which
    // past its grace period revokes the session (a probe saw 4 of 60 at a 2 ms time-out).
    // So the time-out waits for this request's own answer (`db::durable`).
    db::durable();
    let taken = state
        .refresh_tokens
        .take::<TokenRecord>(&token_hash, ttl)
        .await;
    let redis_answered = matches!(taken, Taken::Missing);
    let mut tx = state.db.begin().await?;
    // `presented`: the token must still be its session's live one (the row is the
    // authority; a claim below has already checked and cleared it).
    let (user_id, session_id, presented) = match taken {
        Taken::Found(record) => {
            // The token this one replaced may no longer be presented, even within its
            // grace period: its successor (this token) is in use.
            if let Some(replaced) = &record.replaces {
                state.refresh_tokens.forget_successor(replaced).await;
            }
            (record.user_id, record.session_id, Some(token_hash.as_str()))
        }
        Taken::Missing | Taken::Unavailable => {
            match store::consume_refresh_token(&mut *tx, &token_hash).await? {
                Some(row) if row.expires_at > db::now() => {
                    (row.user_id, row.session_id, Some(token_hash.as_str()))
                }
                Some(_) => return Err(invalid_refresh()),
                None => {
                    // Not in Redis, not in the fallback table: the live token of a session
                    // whose Redis key was evicted? Not if Redis holds its tombstone: then
                    // Redis rotated it, and this is a second presentation.
                    let rotated = redis_answered
                        && state
                            .refresh_tokens
                            .rotated::<TokenRecord>(&token_hash)
                            .await
                            .is_some();
                    let claimed = if rotated {
                        None
                    } else {
                        claim_through_row(&mut tx, &token_hash).await?
                    };
                    match claimed {
                        // No token to check against the row: the claim already did.
                        Some((user_id, session_id)) => (user_id, session_id, None),
                        None => {
                            // Release the write lock before the reuse check writes elsewhere.
                            tx.rollback().await?;
                            if let Some(pair) = within_grace(&state, token, &token_hash).await {
                                return Ok(Json(pair));
                            }
                            // A tombstone, no successor, and the session row still naming
                            // this token as live: the rotation that wrote the tombstone
                            // never committed (its database work failed after it took the
                            // token from Redis, or its process died), and this is the
                            // client's retry. Not a reuse: rotate through the row.
                            let uncommitted =
                                rotated && store::is_live_token(&state.db, &token_hash).await?;
                            if !uncommitted {
                                return Err(
                                    reject_unknown(&state, &token_hash, redis_answered).await
                                );
                            }
                            tx = state.db.begin().await?;
                            match claim_through_row(&mut tx, &token_hash).await? {
                                Some((user_id, session_id)) => (user_id, session_id, None),
                                // The row named this token a moment ago and no longer
                                // does: the rotation that wrote the tombstone was not dead
                                // but still writing, and has committed since. This is a
                                // second presentation, treated as any other (answered 401
                                // without revoking, it left the winner's new token working).
                                None => {
                                    tx.rollback().await?;
                                    // Within the grace period, its pair (two tabs at once).
                                    if let Some(pair) =
                                        within_grace(&state, token, &token_hash).await
                                    {
                                        return Ok(Json(pair));
                                    }
                                    return Err(reject_unknown(
                                        &state,
                                        &token_hash,
                                        redis_answered,
                                    )
                                    .await);
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    // SESSION_MAX_AGE: however often it is refreshed, a session ends this long after login.
    let started_after = started_after(state.settings.session_max_age);
    if !store::touch_session(
        &mut *tx,
        &session_id,
        &user_id,
        &expiry_after(ttl),
        &started_after,
        presented,
    )
    .await?
    {
        // Redis still held this token, but the session has moved on to another: it was
        // rotated while Redis was away (through the session row), and this is a replay.
        if let Some(presented) = presented {
            if store::rotated_past(&mut *tx, &session_id, presented).await? {
                tx.rollback().await?;
                // Rotated (through the session row, Redis away) within the grace period: a
                // second tab, with Redis back between the two.
                if let Some(pair) = kept_on_session(&state, token, &token_hash).await {
                    return Ok(Json(pair));
                }
                return Err(revoke_for_reuse(&state, &user_id, &session_id).await);
            }
        }
        return Err(invalid_refresh());
    }
    let user = store::find_user(&mut *tx, &user_id)
        .await?
        .ok_or_else(invalid_refresh)?;
    let replaced = Replaced {
        token,
        hash: &token_hash,
    };
    let (pair, sealed) = issue_pair(&state, &mut tx, &user, &session_id, Some(replaced)).await?;
    crate::db::commit(tx).await?;
    if let Some(sealed) = sealed {
        let grace = state.settings.refresh_reuse_grace;
        state
            .refresh_tokens
            .remember_sealed(token, &sealed, grace)
            .await;
    }
    Ok(Json(pair))
}

/// Claims the session whose live token is `token_hash` when Redis has no record of it
/// (evicted, flushed, away, or taken by a rotation that never committed): the session row
/// vouches for it. Returns the user and the session. (The rotation that follows records the
/// token as rotated in SQL, as every rotation does, for when it is presented again: its Redis
/// key, if Redis is away, outlives this rotation.)
async fn claim_through_row(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    token_hash: &str,
) -> ApiResult<Option<(String, String)>> {
    let Some((user_id, session_id)) = store::claim_session_by_token(&mut **tx, token_hash).await?
    else {
        return Ok(None);
    };
    tracing::info!(
        %session_id,
        "refresh token not in Redis (evicted, Redis away, or a rotation that failed); the session row vouches for it"
    );
    Ok(Some((user_id, session_id)))
}

/// The pair a rotated token was answered with, if it is presented again within
/// `REFRESH_REUSE_GRACE` of its rotation and its successor is unused (a browser with two
/// tabs refreshing at once): both get the same pair. The rotation may still be finishing
/// when the second request sees the token gone, so a tombstone without a remembered pair
/// is given a moment before it counts as reuse.
async fn within_grace(state: &AppState, token: &str, token_hash: &str) -> Option<TokenPair> {
    if state.settings.refresh_reuse_grace.is_zero() {
        return None;
    }
    // Every rotation keeps its answer on the session row, committed with it: the only grace
    // while Redis is away (two tabs used to end the session).
    if let Some(pair) = kept_on_session(state, token, token_hash).await {
        return Some(pair);
    }
    // Else the pair is remembered in Redis, and without it there is nothing to wait for (a
    // probe saw such refusals take the whole half second).
    if !state.redis.is_connected() {
        return None;
    }
    let tokens = &state.refresh_tokens;
    if let Some(pair) = tokens.successor::<TokenPair>(token).await {
        return unused(state, pair).await;
    }
    // Rotated through Redis (its tombstone) or through SQL (a fallback token, or a token
    // whose Redis key was gone and that the session row vouched for, recorded as rotated).
    // Looking at Redis alone, a second tab racing a rotation through SQL was taken for a
    // replay within a millisecond or two, and the session revoked (a black-box probe).
    let rotated = tokens.rotated::<TokenRecord>(token_hash).await.is_some()
        || matches!(
            store::rotated_token_session(&state.db, token_hash).await,
            Ok(Some(_))
        );
    if !rotated {
        return None;
    }
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(500);
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        if let Some(pair) = tokens.successor::<TokenPair>(token).await {
            return unused(state, pair).await;
        }
        if let Some(pair) = kept_on_session(state, token, token_hash).await {
            return Some(pair);
        }
    }
    None
}

/// The pair the session row keeps for `token`, rotated within `REFRESH_REUSE_GRACE`, if its
/// successor is unused.
async fn kept_on_session(state: &AppState, token: &str, token_hash: &str) -> Option<TokenPair> {
    if state.settings.refresh_reuse_grace.is_zero() {
        return None;
    }
    let sealed = store::replaced_answer(&state.db, token_hash).await.ok()??;
    let pair = ims_redis::session::open_answer::<TokenPair>(token, &sealed)?;
    unused(state, pair).await
}

/// `pair` while its refresh token is unused: still its session's live token (the session
/// row is the authority, whichever way the token was rotated since). Its `expiresIn` says
/// what its access token has left now, not what it had when the first tab got it.
async fn unused(state: &AppState, mut pair: TokenPair) -> Option<TokenPair> {
    let live = store::is_live_token(&state.db, &hash_token(&pair.refresh_token)).await;
    if !live.unwrap_or(false) {
        return None;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    if let Ok(claims) = state.keys.verify(&pair.access_token) {
        pair.expires_in = claims.exp.saturating_sub(now).min(pair.expires_in);
    }
    Some(pair)
}

/// The answer to a refresh token that is live nowhere. If it was live once, this is a replay
/// of a rotated token: someone else holds the session, so the whole session dies.
async fn reject_unknown(state: &AppState, token_hash: &str, redis_answered: bool) -> ApiError {
    let rotated = match store::rotated_token_session(&state.db, token_hash).await {
        Ok(Some(found)) => Some(found),
        // The token a session's last rotation replaced: known without Redis' tombstone (a
        // replay sent to an instance cut off from Redis was a plain 401 and ended nothing).
        Ok(None) => match store::session_replacing(&state.db, token_hash).await {
            Ok(Some(found)) => Some(found),
            Ok(None) => None,
            Err(e) => return e,
        },
        Err(e) => return e,
    };
    let rotated = match rotated {
        Some(found) => Some(found),
        None if redis_answered => state
            .refresh_tokens
            .rotated::<TokenRecord>(token_hash)
            .await
            .map(|r| (r.user_id, r.session_id)),
        None => None,
    };
    let Some((user_id, session_id)) = rotated else {
        return invalid_refresh();
    };
    revoke_for_reuse(state, &user_id, &session_id).await
}

/// Ends the session of a replayed refresh token: someone else holds it.
async fn revoke_for_reuse(state: &AppState, user_id: &str, session_id: &str) -> ApiError {
    match store::revoke_sessions(&state.db, user_id, Some(session_id), "refresh token reuse").await
    {
        Err(e) => return e,
        // The session had ended already (a logout, a revocation): nothing was reused from a
        // live session, and saying so misled clients (a probe).
        Ok(0) => return invalid_refresh(),
        Ok(_) => {}
    }
    tracing::warn!(%user_id, %session_id, "refresh token reuse detected; session revoked");
    ApiError::Unauthorized(
        "this refresh token was already used; the session has been revoked".into(),
    )
}

#[utoipa::path(
    post, path = "/auth/logout", operation_id = "logout",
    summary = "Log out: end the refresh token's session",
    request_body = RefreshBody,
    responses((status = 204, description = "Logged out")),
    security(("bearer" = []))
)]
async fn logout(
    State(state): State<AppState>,
    caller: AuthUser,
    Json(body): Json<RefreshBody>,
) -> ApiResult<StatusCode> {
    if !refresh_token_shaped(&body.refresh_token) {
        return Err(ApiError::field("refreshToken", "must be a refresh token"));
    }
    let token_hash = hash_token(&body.refresh_token);
    // The token's owner: Redis, the SQL fallback table (rotated tokens included), the
    // session row, then Redis' tombstone of a rotated token (below). The session row keeps
    // every session's current token and so answers when Redis has lost the key or cannot
    // be asked: without it, a logout during an outage ended the caller's own session and
    // left the token's alive (found by a black-box probe).
    let mut owner = state
        .refresh_tokens
        .get::<TokenRecord>(&token_hash)
        .await
        .map(|record| (record.user_id, record.session_id));
    if owner.is_none() {
        owner = sqlx::query_as::<_, (String, String)>(
            "SELECT user_id, session_id FROM refresh_tokens WHERE token_hash = $1",
        )
        .bind(&token_hash)
        .fetch_optional(state.db.pool())
        .await?;
    }
    if owner.is_none() {
        owner = store::session_of_token(&state.db, &token_hash).await?;
    }
    // A token rotated through Redis: its tombstone still names the session. The client
    // logging out with the token its own refresh just replaced means this session all the
    // same; without this look the 204 ended nothing and the successor kept working (a
    // black-box probe: 17 of 40 logouts racing a refresh, and every logout after one).
    if owner.is_none() {
        owner = state
            .refresh_tokens
            .rotated::<TokenRecord>(&token_hash)
            .await
            .map(|record| (record.user_id, record.session_id));
    }
    // Only the token's owner ends its session. Anyone else's token, or one found nowhere,
    // changes nothing, and the answer is the same 204, so it reveals nothing.
    if let Some((user_id, session_id)) = owner.filter(|(user, _)| *user == caller.user_id) {
        state.refresh_tokens.remove(&token_hash).await;
        store::delete_refresh_token(&state.db, &token_hash).await?;
        store::revoke_sessions(&state.db, &user_id, Some(&session_id), "logout").await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    get, path = "/auth/me", operation_id = "getMe", summary = "The calling user",
    responses((status = 200, description = "The user, with the current session id", body = MeView)),
    security(("bearer" = []))
)]
async fn me(State(state): State<AppState>, caller: AuthUser) -> ApiResult<Json<MeView>> {
    let user = store::find_user(state.db.pool(), &caller.user_id)
        .await?
        .ok_or_else(|| ApiError::Unauthorized("the user no longer exists".into()))?;
    Ok(Json(MeView {
        user: UserView::from(&user),
        created_at: user.created_at.clone(),
        session_id: caller.session_id,
    }))
}

/// The user, with when it was created and the caller's session.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct MeView {
    #[serde(flatten)]
    user: UserView,
    created_at: String,
    /// The session the access token belongs to.
    session_id: String,
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct SessionView {
    #[serde(flatten)]
    session: store::SessionRow,
    current: bool,
}

#[utoipa::path(
    get, path = "/auth/sessions", operation_id = "listSessions",
    summary = "The caller's active sessions",
    description = "One page of them, newest first, the current one marked.",
    params(crate::pagination::PageParams),
    responses((status = 200, description = "One page of active sessions, the current one marked", body = crate::pagination::Paginated<SessionView>)),
    security(("bearer" = []))
)]
async fn list_sessions(
    State(state): State<AppState>,
    caller: AuthUser,
    Query(page): Query<PageParams>,
) -> ApiResult<Json<Paginated<SessionView>>> {
    let max_age = state.settings.session_max_age;
    let found = store::list_sessions(
        &state.db,
        &caller.user_id,
        &started_after(max_age),
        page.validated()?,
    )
    .await?;
    let sessions: Vec<SessionView> = found
        .data
        .into_iter()
        .map(|mut session| {
            // It ends at its sliding expiry or SESSION_MAX_AGE after it began, whichever
            // comes first (the row keeps only the former).
            if let Some(end) = ends_by_age(&session.created_at, max_age) {
                if end < session.expires_at {
                    session.expires_at = end;
                }
            }
            SessionView {
                current: session.id == caller.session_id,
                session,
            }
        })
        .collect();
    Ok(Json(Paginated {
        data: sessions,
        page: found.page,
        limit: found.limit,
        total: found.total,
    }))
}

#[utoipa::path(
    delete, path = "/auth/sessions", operation_id = "revokeAllSessions",
    summary = "Revoke all of the caller's sessions",
    responses((status = 204, description = "Revoked")),
    security(("bearer" = []))
)]
async fn revoke_all_sessions(
    State(state): State<AppState>,
    caller: AuthUser,
) -> ApiResult<StatusCode> {
    store::revoke_sessions(&state.db, &caller.user_id, None, "revoked by user").await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    delete, path = "/auth/sessions/{id}", operation_id = "revokeSession",
    summary = "Revoke one of the caller's sessions",
    responses(
        (status = 204, description = "Revoked"),
        (status = 404, description = "No such active session of the caller", body = crate::error::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn revoke_session(
    State(state): State<AppState>,
    caller: AuthUser,
    // As every row's `{id}`: a UUID written another way is redirected (308) to the
    // session's URL, as the document says (this route answered 404; a probe), and path
    // text that is no UUID (`%00`, which PostgreSQL cannot even compare) never reaches SQL.
    fields::Id(id): fields::Id,
) -> ApiResult<StatusCode> {
    let not_found = || ApiError::NotFound("no such active session".into());
    let started_after = started_after(state.settings.session_max_age);
    if !store::is_live_session(&state.db, &caller.user_id, &id, &started_after).await? {
        return Err(not_found());
    }
    let revoked =
        store::revoke_sessions(&state.db, &caller.user_id, Some(&id), "revoked by user").await?;
    if revoked == 0 {
        return Err(not_found());
    }
    Ok(StatusCode::NO_CONTENT)
}

/// The start a session must be younger than to be live: `SESSION_MAX_AGE` ago.
fn started_after(max_age: std::time::Duration) -> String {
    db::timestamp(time::OffsetDateTime::now_utc() - max_age)
}

/// When a session that began at `created_at` reaches `SESSION_MAX_AGE`, in the rows' format
/// (`None` if the stamp does not parse).
fn ends_by_age(created_at: &str, max_age: std::time::Duration) -> Option<String> {
    let began =
        time::OffsetDateTime::parse(created_at, &time::format_description::well_known::Rfc3339)
            .ok()?;
    Some(db::timestamp(
        began.checked_add(time::Duration::try_from(max_age).ok()?)?,
    ))
}

/// Deletes fallback refresh tokens past their expiry (run periodically).
pub async fn purge_expired_tokens(state: &AppState) -> ApiResult<u64> {
    store::delete_expired_tokens(&state.db).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_shape() {
        assert_eq!(normalize_email("Ann@Example.COM"), "ann@example.com");
    }
}
