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

/// Shared application state: one pointer, so the clones axum and the layers make per
/// request cost an atomic increment rather than copying every handle (the Redis service
/// alone carries a `String`). Fields are reached through `Deref`.
#[derive(Clone)]
pub struct AppState(Arc<Services>);

impl AppState {
    /// Wraps the services.
    pub fn new(services: Services) -> Self {
        Self(Arc::new(services))
    }
}

impl std::ops::Deref for AppState {
    type Target = Services;

    fn deref(&self) -> &Services {
        &self.0
    }
}

/// What [`AppState`] holds.
pub struct Services {
    /// The SQL store.
    pub db: Db,
    /// Typed Redis access (degrades, never fails).
    pub redis: RedisService,
    /// Refresh tokens in Redis.
    pub refresh_tokens: RefreshTokenStore,
    /// The response cache behind the routes' `cached`/`invalidates` policies.
    pub cache: Arc<ResponseCache>,
    /// The invalidation outbox the routes' `invalidates` policies record in.
    pub journal: ims_redis::invalidate::Journal,
    /// The same outbox, as itself, for its poller.
    pub outbox: Arc<crate::outbox::SqlJournal>,
    /// The rate limiter behind the router's `RateLimitLayer`.
    pub limiter: Arc<RateLimiter>,
    /// JWT signing and verification keys.
    pub keys: Arc<TokenKeys>,
    /// The settings the server started with.
    pub settings: Arc<Settings>,
    /// When the process started, for `uptime`.
    pub started_at: Instant,
    /// Set once shutdown has begun: `/health/ready` answers 503 from then on.
    pub draining: std::sync::atomic::AtomicBool,
    /// Each organization's share of the database for the expensive reads.
    pub tenant_shares: crate::fairness::TenantShares,
    /// What `/health/cache` last found out about Redis, reused for a second.
    pub redis_report: crate::health::RedisReportCache,
}
