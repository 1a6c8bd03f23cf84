//! The state every handler can reach: database, Redis, token keys and settings.

use std::sync::Arc;
use std::time::Instant;

use ims_redis::cache::ResponseCache;
use ims_redis::rate_limit::RateLimiter;
use ims_redis::session::RefreshTokenStore;
use ims_redis::RedisService;

use crate::auth::tokens::TokenKeys;
use crate::config::Settings;
use crate::db::Db;

/// Shared, cheaply clonable application state.
#[derive(Clone)]
pub struct AppState {
    /// The SQL store.
    pub db: Db,
    /// Typed Redis access (degrades, never fails).
    pub redis: RedisService,
    /// Refresh tokens in Redis.
    pub refresh_tokens: RefreshTokenStore,
    /// The response cache behind the routes' `cached`/`invalidates` policies.
    pub cache: Arc<ResponseCache>,
    /// The rate limiter behind the router's `RateLimitLayer`.
    pub limiter: Arc<RateLimiter>,
    /// JWT signing and verification keys.
    pub keys: Arc<TokenKeys>,
    /// The settings the server started with.
    pub settings: Arc<Settings>,
    /// When the process started, for `uptime`.
    pub started_at: Instant,
}
