//! Building and running the server: the one entry point tests and the binary share.

use std::borrow::Cow;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::Response;
use axum::response::IntoResponse;
use axum::{Extension, Router};
use ims_redis::cache::ResponseCache;
use ims_redis::rate_limit::{PartsFn, Quota, RateLimitLayer, RateLimiter};
use ims_redis::session::RefreshTokenStore;
use ims_redis::{LayerBody, RedisConnection, RedisService};
use tokio::net::{TcpListener, TcpSocket};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use utoipa_axum::router::OpenApiRouter;

use crate::around::AroundLayer;
use crate::auth::tokens::TokenKeys;
use crate::config::Settings;
use crate::db::Db;
use crate::policy::{self, Limit};
use crate::request_id::{AccessLog, AssignRequestId};
use crate::serve::ServeOptions;
use crate::state::AppState;
use crate::writes_only::WritesOnly;
use crate::{auth, error, health};

/// Request bodies above this are refused with 413 (contract §2).
pub const BODY_LIMIT: usize = 1024 * 1024;

/// How long shutdown waits for the database and Redis connections to close.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// How often expired fallback refresh tokens are purged from SQL.
const TOKEN_PURGE_INTERVAL: Duration = Duration::from_secs(3600);

/// How long start-up waits for invalidations left over by instances that died
/// (`outbox::apply_left_over`) before serving anyway.
const OUTBOX_AT_START: std::time::Duration = std::time::Duration::from_secs(5);

/// The whole HTTP API. Each area owns its routes; cross-cutting policies are attached where
/// routes are declared.
pub fn router(state: AppState) -> Router {
    let settings = &state.settings;
    let (global, credentials) = (
        quota(settings.rate_limit_global),
        quota(settings.rate_limit_auth),
    );
    // Each area declares its routes once (`routes!` of handlers with `#[utoipa::path]`, with
    // their policies): the router and the OpenAPI document both come from that list.
    // Every route of the areas but `auth` takes the access token.
    // Their cache policies use this server's engine (`policy::building_with`).
    let api = policy::building_with(&state.cache, || {
        OpenApiRouter::new()
            .merge(auth::router())
            .merge(policy::signed_in(
                OpenApiRouter::new()
                    .merge(crate::catalog::router())
                    .merge(crate::contacts::router())
                    .merge(crate::items::router())
                    .merge(crate::inventory::router())
                    .merge(crate::sales::router())
                    .merge(crate::purchasing::router())
                    .merge(crate::dashboard::router())
                    .merge(crate::reports::router())
                    .merge(health::organization_cache_router()),
            ))
    });
    // Every API route: RATE_LIMIT_GLOBAL per client IP and route, or the limit its
    // declaration names (`RoutePolicy::limit`: the credential routes, RATE_LIMIT_AUTH);
    // and RATE_LIMIT_USER per authenticated user (the access token's subject), over all
    // routes and addresses (contract §6).
    let (api, api_operations) = api.split_for_parts();
    let limits = settings.rate_limit_enabled.then(|| {
        let user: PartsFn = Arc::new(|parts: &axum::http::request::Parts| {
            crate::auth::verified(parts).map(|claims| Cow::Borrowed(claims.sub.as_str()))
        });
        policy::routes_limited_by(&api_operations, Limit::Credentials)
            .iter()
            .fold(RateLimitLayer::new(global), |layer, path| {
                layer.route(path, credentials)
            })
            .per_user(quota(settings.rate_limit_user), user)
            .with_limiter(state.limiter.clone())
    });
    // Not limited: monitoring and the API description must always answer.
    let (unlimited, unlimited_operations) = OpenApiRouter::new()
        .merge(health::router())
        .merge(health::cache_router())
        .merge(health::metrics_router())
        .split_for_parts();
    let unlimited = unlimited.merge(crate::openapi::router(crate::openapi::finish(
        api_operations,
        unlimited_operations,
    )));
    // The layers every route shares, as one stack, the limits innermost on the API's routes
    // and fallbacks: a 405 on an API path counts against that route like any request to
    // it; the 404 fallback has no route, so no key, and passes. axum boxes each
    // `Router::layer` or `route_layer` level and clones every box of a route, nested ones
    // included, on every request; one `ServiceBuilder` is one box.
    let edge = |limits: Option<RateLimitLayer>| {
        tower::ServiceBuilder::new()
            // Every response has an id, preflights answered by CORS included.
            .layer(AroundLayer(AssignRequestId))
            // Only with origins configured: CORS adds `Vary` headers to every response.
            .option_layer(cors(&state.settings.cors_allowed_origins))
            // Only when its lines can be written at all (the log filter is fixed at start):
            // with `info` off for it, the layer would only pass every request through.
            .option_layer(
                tracing::enabled!(target: "ims_api::access", tracing::Level::INFO)
                    .then(|| AroundLayer(AccessLog(state.settings.clone()))),
            )
            // Counted outside the time-out, so that its 503 is counted too (inside it, the
            // count was dropped with the timed-out future; found by a probe).
            .layer(AroundLayer(crate::telemetry::Track))
            // A request running longer than REQUEST_TIMEOUT_MS is a 503 and a panic in a
            // handler a 500, both problem+json, counted, logged, with the id.
            .layer(AroundLayer(error::RequestTimeout(
                state.settings.request_timeout,
            )))
            .layer(CatchPanicLayer::custom(error::panicked))
            // Outside every route layer: the token is verified once, for all of them.
            .map_request(crate::auth::verify_once(state.keys.clone()))
            // What only writes need, which reads (`GET`, `HEAD`, `OPTIONS`) go past: the
            // body limit (no read takes a body), the cache engine for the `invalidates` and
            // `writes_through` policies (the read policies hold it), and the outbox, where
            // the `invalidates` policies find the journal (contract §5).
            .layer(WritesOnly(
                tower::ServiceBuilder::new()
                    .layer(DefaultBodyLimit::max(BODY_LIMIT))
                    .layer(Extension(state.cache.clone()))
                    .option_layer(settings.cache_outbox.then(|| {
                        let journal = state.journal.clone();
                        tower::util::MapRequestLayer::new(move |mut request: Request| {
                            request.extensions_mut().insert(journal.clone());
                            request
                        })
                    })),
            ))
            // One response body type with or without limits.
            .option_layer(limits.map(|limits| {
                tower::ServiceBuilder::new()
                    .map_response(|response: Response<LayerBody>| response.into_response())
                    .layer(limits)
            }))
    };
    api.fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(edge(limits))
        .merge(
            unlimited
                .method_not_allowed_fallback(error::method_not_allowed)
                .layer(edge(None)),
        )
        .with_state(state)
}

/// CORS for `CORS_ALLOWED_ORIGINS` (none: no layer, no CORS headers, browsers keep the
/// same-origin rule). Bearer tokens, not cookies, so credentials are not allowed.
fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    use axum::http::{header, HeaderName, HeaderValue, Method};
    let allowed: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    let layer = CorsLayer::new()
        .allow_origin(AllowOrigin::list(allowed))
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
            Method::HEAD,
            Method::OPTIONS,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::IF_NONE_MATCH,
            header::CACHE_CONTROL,
            HeaderName::from_static("x-request-id"),
        ])
        // Every response header a browser client needs to read (the truncation of a CSV
        // report, its file name, a stale entry's age, why a token was refused; a probe found
        // these four missing).
        .expose_headers([
            header::ETAG,
            header::RETRY_AFTER,
            header::AGE,
            header::CONTENT_DISPOSITION,
            header::WWW_AUTHENTICATE,
            header::LOCATION,
            HeaderName::from_static("x-report-truncated"),
            HeaderName::from_static("x-cache"),
            HeaderName::from_static("x-cache-ttl"),
            HeaderName::from_static("x-cache-tier"),
            HeaderName::from_static("x-request-id"),
            HeaderName::from_static("ratelimit-limit"),
            HeaderName::from_static("ratelimit-remaining"),
            HeaderName::from_static("ratelimit-reset"),
            HeaderName::from_static("ratelimit-policy"),
            HeaderName::from_static("ratelimit"),
        ])
        .max_age(Duration::from_secs(600));
    Some(layer)
}

fn quota(limit: crate::config::RateLimit) -> Quota {
    Quota {
        limit: limit.requests,
        window: limit.window,
    }
}

/// Listen backlog. Past the connection cap, new connections wait here (see
/// `docs/http.md`), so it is larger than the 128 that `TcpListener::bind` asks for; the kernel
/// caps it at `net.core.somaxconn`.
const LISTEN_BACKLOG: u32 = 1024;

/// Binds `addr` as `TcpListener::bind` does, with a longer backlog.
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // Restarting must not wait for the old socket's TIME_WAIT (as `TcpListener::bind`).
    #[cfg(not(windows))]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// A server that is built (database migrated, Redis connected or degraded, socket bound)
/// and ready to run.
pub struct Application {
    listener: TcpListener,
    state: AppState,
    /// The connection cap in force (`HTTP_MAX_CONNECTIONS` or derived from the descriptor
    /// limit).
    max_connections: usize,
}

impl Application {
    /// Binds `settings.bind` and builds.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let listener = listen(settings.bind)
            .map_err(|e| anyhow::anyhow!("cannot listen on {} (IMS_BIND): {e}", settings.bind))?;
        Self::build_with_listener(settings, listener).await
    }

    /// Builds on an already bound listener (tests bind port 0).
    pub async fn build_with_listener(
        settings: Settings,
        listener: TcpListener,
    ) -> anyhow::Result<Self> {
        if settings.jwt_secret_generated {
            tracing::warn!(
                "JWT_SECRET is not set: using a random secret for this process only. Tokens will \
                 not survive a restart and other instances will reject them. Set JWT_SECRET \
                 (at least 32 characters) in production."
            );
        }
        if let Some(value) = &settings.trust_proxy_ignored {
            tracing::warn!(
                "TRUST_PROXY={value:?} is neither true, false nor a number of proxies: \
                 X-Forwarded-For is ignored (contract §1), clients are their peer addresses"
            );
        }
        crate::telemetry::prometheus();
        // Here rather than in `main`, so tests, which run the server in their own process,
        // get the same raised limit and derived cap.
        let max_connections = crate::serve::max_connections(settings.http_max_connections);
        let db = Db::connect_with(
            &settings.database_url,
            settings.database_max_connections,
            Some(settings.request_timeout),
        )
        .await
        .map_err(|e| anyhow::anyhow!("cannot open the database (DATABASE_URL): {e}"))?;
        if settings.migrate_on_start {
            db.migrate().await?;
        } else {
            let missing = db.missing_migrations().await;
            if missing > 0 {
                anyhow::bail!(
                    "the database lacks {missing} of this version's migrations and \
                     MIGRATE_ON_START=false: run `ims-api migrate` first (or set \
                     MIGRATE_ON_START=true)"
                );
            }
        }
        let connection = RedisConnection::connect(settings.redis.clone()).await;
        let redis = RedisService::new(connection, settings.redis.key_prefix.clone());
        let keys = Arc::new(TokenKeys::new(&settings.jwt_secret));
        // Cache entries in their own Redis when REDIS_CACHE_URL says so (run it allkeys-lru,
        // as contract §1 says; sessions, limits and locks stay on the main one).
        let cache_redis = match &settings.redis_cache {
            Some(config) => {
                let cache_redis = RedisService::new(
                    RedisConnection::connect(config.clone()).await,
                    config.key_prefix.clone(),
                );
                cache_redis
            }
            None => redis.clone(),
        };
        warn_if_evicting(&redis, settings.redis_cache.is_none()).await;
        // The cache's tenant is the organization of a valid access token; anything else is
        // not cached (and the handler answers 401).
        let cache = ResponseCache::with_l1(
            cache_redis.clone(),
            Arc::new(|parts: &axum::http::request::Parts| {
                crate::auth::verified(parts).map(|claims| claims.org.clone())
            }),
            settings.cache_ttl_jitter,
            settings.cache_l1,
        );
        // `/cache/stats` counts the same entries on every instance: every group, not only
        // those this one has stored under (key prefixes such as `items:list` are inside
        // their group and would count its entries twice).
        cache.count_groups(
            crate::policy::Group::ALL
                .iter()
                .map(|group| group.name())
                .filter(|name| !name.contains(':')),
        );
        cache.set_max_entry_bytes(settings.cache_max_entry_bytes);
        // The warm-up asks which organizations wrote lately; without it, nothing records.
        if settings.cache_warm_interval.is_some() {
            cache.track_activity();
        }
        cache.set_grace(settings.cache_grace);
        let trust = settings.proxy_trust.clone();
        let limiter = RateLimiter::new(
            redis.clone(),
            Arc::new(move |parts: &axum::http::request::Parts| {
                let peer = parts
                    .extensions
                    .get::<axum::extract::ConnectInfo<SocketAddr>>()
                    .map(|c| c.0.ip());
                trust
                    .client(peer, &parts.headers)
                    .map(|ip| Cow::Owned(crate::client_ip::rate_limit_client(ip)))
            }),
            Arc::new(|parts: &axum::http::request::Parts| {
                parts
                    .extensions
                    .get::<axum::extract::MatchedPath>()
                    .map(|path| Cow::Borrowed(path.as_str()))
            }),
            100_000,
        );
        let outbox = Arc::new(crate::outbox::SqlJournal::new(db.clone()));
        let journal: ims_redis::invalidate::Journal = outbox.clone();
        let tenant_shares =
            crate::fairness::TenantShares::new(db.pool().options().get_max_connections());
        let state = AppState::new(crate::state::Services {
            tenant_shares,
            outbox,
            journal,
            limiter,
            db,
            refresh_tokens: RefreshTokenStore::new(redis.clone()),
            cache,
            redis,
            keys,
            settings: Arc::new(settings),
            started_at: Instant::now(),
            draining: std::sync::atomic::AtomicBool::new(false),
            redis_report: crate::health::RedisReportCache::default(),
        });
        Ok(Self {
            listener,
            state,
            max_connections,
        })
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.local_addr().port()
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// The shared state (tests reach the database and Redis handles through it).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` completes, then drains in-flight requests and closes Redis
    /// and the database.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let Self {
            listener,
            state,
            max_connections,
        } = self;
        let options = ServeOptions {
            header_timeout: state.settings.http_header_timeout,
            max_connections,
        };
        tracing::info!(
            "IMS API listening on http://{} (at most {} connections, header time-out {} ms)",
            listener.local_addr()?,
            options.max_connections,
            options.header_timeout.as_millis()
        );
        if state.settings.cache_outbox {
            crate::outbox::apply_left_over(&state, OUTBOX_AT_START).await;
        }
        let purge = tokio::spawn(purge_expired_tokens(state.clone()));
        let upkeep = tokio::spawn(crate::telemetry::upkeep());
        let outbox = state
            .settings
            .cache_outbox
            .then(|| tokio::spawn(crate::outbox::run(state.clone(), state.outbox.clone())));
        let app = router(state.clone());
        let warmup = state
            .settings
            .cache_warm_interval
            .map(|interval| tokio::spawn(crate::warmup::run(state.clone(), app.clone(), interval)));
        // Not ready from the signal on; still serving for SHUTDOWN_DELAY_MS, so a load
        // balancer polling /health/ready stops sending before the listener closes.
        let draining = state.clone();
        let shutdown = async move {
            shutdown.await;
            draining
                .draining
                .store(true, std::sync::atomic::Ordering::Release);
            tokio::time::sleep(draining.settings.shutdown_delay).await;
        };
        crate::serve::serve(listener, app, options, shutdown).await;
        purge.abort();
        upkeep.abort();
        if let Some(outbox) = outbox {
            outbox.abort();
        }
        if let Some(warmup) = warmup {
            warmup.abort();
        }
        // Closing waits for every connection to say goodbye; one whose peer went silent
        // (a database cut off mid-query) would hold the process forever (found by a
        // probe: SIGTERM never finished while PostgreSQL was unreachable). The requests
        // are done by now, so what is left is bounded and then abandoned.
        let closed = tokio::time::timeout(CLOSE_TIMEOUT, async {
            state.redis.connection().close().await;
            state.db.close().await;
        })
        .await;
        if closed.is_err() {
            tracing::warn!(
                "the database or Redis did not close within {} s; exiting without them",
                CLOSE_TIMEOUT.as_secs()
            );
        }
        tracing::info!("IMS API stopped");
        Ok(())
    }
}

/// One warning at start when the main Redis may evict: rate-limit logs and locks live there
/// (sessions survive eviction: their SQL rows vouch for them; so does the cache: a hit
/// checks its epochs), and `cache_too` says the response cache fills it too. A cache Redis
/// of its own may evict anything (`allkeys-lru`, contract §1). Silent when Redis refuses
/// `CONFIG GET` (managed services often do) or is down.
async fn warn_if_evicting(redis: &RedisService, cache_too: bool) {
    let Some(policy) = redis.config_get("maxmemory-policy").await else {
        return;
    };
    if policy == "noeviction" {
        return;
    }
    if cache_too {
        tracing::warn!(
            "Redis maxmemory-policy is {policy} and the response cache shares it with rate \
             limits and locks: filling the cache can evict them (limits reset). Run a \
             separate cache Redis (REDIS_CACHE_URL, allkeys-lru) and keep this one \
             noeviction; see docs/redis.md"
        );
    } else {
        tracing::warn!(
            "the main Redis's maxmemory-policy is {policy}: it may evict rate-limit logs \
             (limits reset) and locks. Keep it noeviction; see docs/redis.md"
        );
    }
}

/// Purges expired fallback tokens once per interval across all instances: the first to
/// take the job's lock runs it, and the lock is left to expire with the interval, so the
/// others skip. Without Redis every instance purges; the `DELETE` is idempotent.
async fn purge_expired_tokens(state: AppState) {
    let locks = ims_redis::lock::Locks::new(state.redis.clone());
    loop {
        let lease = TOKEN_PURGE_INTERVAL.saturating_sub(Duration::from_secs(1));
        let ours = !state.redis.is_connected()
            || locks
                .try_acquire("job:purge-expired-tokens", lease)
                .await
                .is_some();
        if ours {
            if let Err(e) = crate::auth::purge_expired_tokens(&state).await {
                tracing::warn!("purging expired refresh tokens failed: {e}");
            }
        }
        tokio::time::sleep(TOKEN_PURGE_INTERVAL).await;
    }
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutdown signal received; draining requests");
}
