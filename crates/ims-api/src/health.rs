//! `GET /health` (contract §7, REDIS-007): real round trips to the database and Redis.
//!
//! Redis down is a degraded but healthy service (200); the database down is unhealthy (503),
//! because no request can be served without it.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::Json;
use crate::state::AppState;

/// Longest the database check may take before it counts as down.
const DATABASE_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// After Redis refused a write, `/health` checks for this long whether it takes one.
const WRITE_REFUSAL_MEMORY: Duration = Duration::from_secs(10);

/// `GET /metrics`: Prometheus text format.
pub fn metrics_router() -> OpenApiRouter<AppState> {
    crate::openapi::tagged("health", OpenApiRouter::new().routes(routes!(metrics_text)))
}

#[utoipa::path(
    get, path = "/metrics", operation_id = "getMetrics", summary = "Prometheus metrics",
    description = "Requests and latency by route and status, response-cache counters, Redis state and database pool, in the Prometheus text format.",
    responses((status = 200, description = "Prometheus text exposition format", content_type = "text/plain")),
)]
async fn metrics_text(State(state): State<AppState>) -> impl axum::response::IntoResponse {
    // Counters kept elsewhere are copied in at scrape time, so the request path pays nothing.
    let stats = state.cache.stats();
    for (name, value) in [
        ("ims_cache_hits_total", stats.hits),
        ("ims_cache_misses_total", stats.misses),
        ("ims_cache_bypasses_total", stats.bypasses),
        ("ims_cache_coalesced_total", stats.coalesced),
        ("ims_cache_stores_total", stats.stores),
        (
            "ims_cache_stale_stores_refused_total",
            stats.stale_stores_refused,
        ),
        ("ims_cache_invalidations_total", stats.invalidations),
        ("ims_cache_invalidated_keys_total", stats.invalidated_keys),
        ("ims_cache_errors_total", stats.errors),
        ("ims_cache_l1_hits_total", stats.l1.hits),
        (
            "ims_cache_invalidations_published_total",
            stats.l1.invalidations_published,
        ),
        (
            "ims_cache_invalidations_received_total",
            stats.l1.invalidations_received,
        ),
        ("ims_cache_l1_flushes_total", stats.l1.flushes),
        ("ims_cache_lock_waits_total", stats.l1.lock_waits),
        (
            "ims_cache_warmups_total",
            crate::warmup::WARMUPS.load(std::sync::atomic::Ordering::Relaxed),
        ),
    ] {
        metrics::counter!(name).absolute(value);
    }
    metrics::gauge!("ims_cache_l1_entries").set(stats.l1.entries as f64);
    metrics::gauge!("ims_cache_l1_bytes").set(stats.l1.bytes as f64);
    metrics::counter!("ims_redis_outages_total").absolute(state.redis.connection().outages());
    metrics::counter!("ims_redis_cache_outages_total")
        .absolute(state.cache.redis().connection().outages());
    metrics::counter!("ims_redis_write_refusals_total")
        .absolute(state.redis.connection().write_refusals());
    metrics::counter!("ims_redis_cache_write_refusals_total")
        .absolute(state.cache.redis().connection().write_refusals());
    metrics::gauge!("ims_redis_up").set(if state.redis.is_connected() { 1.0 } else { 0.0 });
    metrics::gauge!("ims_redis_cache_up").set(if state.cache.redis().is_connected() {
        1.0
    } else {
        0.0
    });
    metrics::gauge!("ims_db_pool_connections").set(f64::from(state.db.pool().size()));
    metrics::gauge!("ims_db_pool_idle_connections").set(state.db.pool().num_idle() as f64);
    metrics::gauge!("ims_uptime_seconds").set(state.started_at.elapsed().as_secs_f64());
    crate::telemetry::process_collector().collect();
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::telemetry::prometheus().render(),
    )
}

/// `GET /health/cache`: the response cache's counters since start.
pub fn cache_router() -> OpenApiRouter<AppState> {
    crate::openapi::tagged("health", OpenApiRouter::new().routes(routes!(cache_stats)))
}

/// `GET /cache/stats`: the caller's organization's share of the cache (authenticated, rate
/// limited like every API route).
pub fn organization_cache_router() -> OpenApiRouter<AppState> {
    crate::openapi::tagged(
        "health",
        OpenApiRouter::new().routes(routes!(organization_cache_stats)),
    )
}

/// The caller's organization's cache figures.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct OrganizationCacheStats {
    /// Requests of the organization answered from the cache, on this instance.
    hits: u64,
    /// Requests of the organization that ran the handler, on this instance.
    misses: u64,
    /// `hits / (hits + misses)`, 0 when there were none.
    hit_rate: f64,
    /// Entries the organization has cached now.
    entries: u64,
}

#[utoipa::path(
    get, path = "/cache/stats", operation_id = "getOrganizationCacheStats",
    summary = "The caller's organization's cache figures",
    description = "Hits and misses on this instance since start, and entries cached now. Never another organization's.",
    responses((status = 200, description = "The organization's figures", body = OrganizationCacheStats)),
    security(("bearer" = []))
)]
async fn organization_cache_stats(
    State(state): State<AppState>,
    caller: crate::auth::AuthUser,
) -> Json<OrganizationCacheStats> {
    let stats = state.cache.scope_stats(&caller.org_id).await;
    Json(OrganizationCacheStats {
        hits: stats.hits,
        misses: stats.misses,
        hit_rate: stats.hit_rate,
        entries: stats.entries,
    })
}

/// Redis' own figures (`INFO`; summed over the masters of a cluster).
#[derive(Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct RedisFigures {
    /// Keys in every database.
    keys: u64,
    /// Bytes Redis uses.
    used_memory: u64,
    /// Keys evicted since Redis started (`maxmemory`).
    evicted_keys: u64,
    /// Client connections.
    connected_clients: u64,
}

// Documentation only: the fields of `ims_redis::cache::CacheStats`, which is flattened into
// `CacheReport` (ims-redis does not depend on utoipa).
/// The response cache's counters since start.
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "camelCase")]
#[allow(dead_code)]
struct CacheCounters {
    /// Requests answered from Redis (or from a concurrent identical miss).
    hits: u64,
    /// Requests that ran the handler because nothing was cached.
    misses: u64,
    /// Requests with `Cache-Control: no-cache`.
    bypasses: u64,
    /// Misses answered by another request's handler run (stampede protection).
    coalesced: u64,
    /// `hits / (hits + misses)`, 0 when there were none.
    hit_rate: f64,
    /// Entries written.
    stores: u64,
    /// Stores refused because an invalidation happened while the handler ran.
    stale_stores_refused: u64,
    /// Group invalidations performed.
    invalidations: u64,
    /// Entries deleted by invalidations.
    invalidated_keys: u64,
    /// Lookups, stores or invalidations that Redis could not serve.
    errors: u64,
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct CacheReport {
    #[serde(flatten)]
    #[schema(value_type = CacheCounters)]
    stats: ims_redis::cache::CacheStats,
    /// Hits served from process memory.
    l1_hits: u64,
    /// Hits served from Redis (and misses answered by a concurrent identical miss).
    l2_hits: u64,
    /// Entries in process memory now.
    l1_entries: u64,
    /// Bytes in process memory now.
    l1_bytes: u64,
    /// Invalidation messages published / received over Redis pub/sub.
    invalidations_published: u64,
    invalidations_received: u64,
    /// Times the in-process tier was dropped whole (a lost message or subscription).
    l1_flushes: u64,
    /// The cache's Redis (`REDIS_CACHE_URL`'s, or the main one): `up` or `down`.
    redis: &'static str,
    /// Redis' own figures; absent when Redis cannot be asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    redis_info: Option<RedisFigures>,
    /// Cluster-wide single flight: polls by misses waiting for another instance's run.
    lock_waits: u64,
    /// Scheduled warm-ups this instance ran (`CACHE_WARM_INTERVAL`).
    warmups: u64,
    /// Redis Cluster mode only: each master and whether it answered a `PING` now.
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster: Option<ClusterReport>,
    /// False while lookups bypass the cache: after a Redis outage until every entry is
    /// flushed, or while Redis refuses the writes an invalidation needs (`READONLY`,
    /// `NOREPLICAS`, `NOPERM`, `MISCONF`, `OOM`), which `redis` alone does not show.
    serving: bool,
    /// Whether a hit checks the epochs its entry was stored under: true when the cache's
    /// Redis may evict keys or has evicted any since it started (any `maxmemory-policy` but
    /// `noeviction` under a `maxmemory`, `evicted_keys` above 0, a cluster, or a Redis that
    /// refuses `CONFIG`); see docs/redis.md.
    checks_epochs: bool,
}

#[derive(Clone, Serialize, utoipa::ToSchema)]
struct ClusterReport {
    masters: Vec<MasterReport>,
}

#[derive(Clone, Serialize, utoipa::ToSchema)]
struct MasterReport {
    /// `host:port`, as the cluster announces it.
    address: String,
    /// `up` when it answered a `PING` within the command time-out, else `down`.
    status: &'static str,
}

#[utoipa::path(
    get, path = "/health/cache", operation_id = "getCacheStats",
    summary = "Response cache counters since start",
    responses((status = 200, description = "Hits, misses, hit rate, L1/L2 split, invalidations, errors", body = CacheReport)),
)]
async fn cache_stats(State(state): State<AppState>) -> Json<CacheReport> {
    let stats = state.cache.stats();
    // The cache's Redis: its own (`REDIS_CACHE_URL`) or the main one.
    let connection = state.cache.redis().connection();
    let RedisReport {
        info: redis_info,
        cluster,
    } = state.redis_report.get(connection).await;
    Json(CacheReport {
        redis_info,
        lock_waits: stats.l1.lock_waits,
        warmups: crate::warmup::WARMUPS.load(std::sync::atomic::Ordering::Relaxed),
        cluster,
        serving: state.cache.is_serving(),
        l1_hits: stats.l1.hits,
        l2_hits: stats.hits.saturating_sub(stats.l1.hits),
        l1_entries: stats.l1.entries,
        l1_bytes: stats.l1.bytes,
        invalidations_published: stats.l1.invalidations_published,
        invalidations_received: stats.l1.invalidations_received,
        l1_flushes: stats.l1.flushes,
        redis: if connection.is_connected() {
            "up"
        } else {
            "down"
        },
        checks_epochs: state.cache.checks_epochs(),
        stats,
    })
}

/// What `/health/cache` reports of the cache's Redis itself: `INFO` figures, and on a
/// cluster a `PING` of every master.
#[derive(Clone)]
struct RedisReport {
    info: Option<RedisFigures>,
    cluster: Option<ClusterReport>,
}

/// How long `/health/cache` reuses what it found out about Redis.
const REDIS_REPORT_MAX_AGE: Duration = Duration::from_secs(1);

/// The last [`RedisReport`], reused for [`REDIS_REPORT_MAX_AGE`] while the connection's
/// state (up or down) is unchanged. `/health/cache` is not
/// authenticated or rate limited (monitoring must always answer), and each report costs
/// Redis an `INFO` per master and a cluster a `PING` per master: without this, anyone could
/// make Redis work as fast as they can send requests. Callers that arrive while a report is
/// being made wait for it instead of asking Redis too.
#[derive(Default)]
pub struct RedisReportCache(tokio::sync::Mutex<Option<LastReport>>);

struct LastReport {
    at: std::time::Instant,
    /// Whether the connection was up when it was made.
    up: bool,
    report: RedisReport,
}

impl RedisReportCache {
    async fn get(&self, connection: &ims_redis::RedisConnection) -> RedisReport {
        let mut last = self.0.lock().await;
        let up = connection.is_connected();
        if let Some(last) = last.as_ref() {
            if last.up == up && last.at.elapsed() < REDIS_REPORT_MAX_AGE {
                return last.report.clone();
            }
        }
        let report = RedisReport::read(connection).await;
        *last = Some(LastReport {
            at: std::time::Instant::now(),
            up,
            report: report.clone(),
        });
        report
    }
}

impl RedisReport {
    async fn read(connection: &ims_redis::RedisConnection) -> Self {
        let cluster = if connection.is_cluster() {
            let masters = connection
                .cluster_masters()
                .await
                .into_iter()
                .map(|(address, answered)| MasterReport {
                    address,
                    status: if answered { "up" } else { "down" },
                })
                .collect();
            Some(ClusterReport { masters })
        } else {
            None
        };
        let info = connection.info().await.map(|info| RedisFigures {
            keys: info.keys,
            used_memory: info.used_memory,
            evicted_keys: info.evicted_keys,
            connected_clients: info.connected_clients,
        });
        Self { info, cluster }
    }
}

/// The health routes.
pub fn router() -> OpenApiRouter<AppState> {
    crate::openapi::tagged(
        "health",
        OpenApiRouter::new()
            .routes(routes!(health))
            .routes(routes!(live))
            .routes(routes!(ready)),
    )
}

/// `GET /health/live` on the server bound to `bind` (the unspecified address means this
/// host), by hand over TCP: `Ok` on a 200 within 3 s, else why not. For `ims-api
/// healthcheck`.
pub async fn probe_live(bind: std::net::SocketAddr) -> Result<(), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut target = bind;
    if target.ip().is_unspecified() {
        target.set_ip(if target.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    let probe = async {
        let mut stream = tokio::net::TcpStream::connect(target)
            .await
            .map_err(|e| format!("cannot connect to {target}: {e}"))?;
        stream
            .write_all(b"GET /health/live HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await
            .map_err(|e| format!("cannot send to {target}: {e}"))?;
        let mut head = [0u8; 12];
        stream
            .read_exact(&mut head)
            .await
            .map_err(|e| format!("no answer from {target}: {e}"))?;
        if head.starts_with(b"HTTP/1.1 200") {
            Ok(())
        } else {
            Err(format!(
                "{target} answered {:?}",
                String::from_utf8_lossy(&head)
            ))
        }
    };
    tokio::time::timeout(Duration::from_secs(3), probe)
        .await
        .map_err(|_| format!("no answer from {target} within 3 s"))?
}

/// A probe's answer.
#[derive(Serialize, utoipa::ToSchema)]
struct Probe {
    /// `ok`, or why not: `draining`, `database unavailable`.
    status: &'static str,
}

#[utoipa::path(
    get, path = "/health/live", operation_id = "getLiveness", summary = "Liveness probe",
    description = "200 while the process serves requests. Touches neither the database nor Redis.",
    responses((status = 200, description = "The process answers", body = Probe)),
)]
async fn live() -> Json<Probe> {
    Json(Probe { status: "ok" })
}

#[utoipa::path(
    get, path = "/health/ready", operation_id = "getReadiness", summary = "Readiness probe",
    description = "200 when the instance should get traffic; 503 while the database is unreachable (a real `SELECT 1`, at most 2 s) and from SIGTERM on (draining). Redis down is still ready: the API degrades without it.",
    responses(
        (status = 200, description = "Ready", body = Probe),
        (status = 503, description = "Draining or the database is unreachable", body = Probe),
    ),
)]
async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Probe>) {
    if state.draining.load(std::sync::atomic::Ordering::Acquire) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Probe { status: "draining" }),
        );
    }
    match tokio::time::timeout(DATABASE_CHECK_TIMEOUT, state.db.ping()).await {
        Ok(Ok(_)) => (StatusCode::OK, Json(Probe { status: "ok" })),
        _ => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Probe {
                status: "database unavailable",
            }),
        ),
    }
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct ServiceHealth {
    status: &'static str,
    /// Milliseconds of the round trip (or of the failed attempt).
    response_time: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct Services {
    database: ServiceHealth,
    /// The main Redis: sessions, rate limits, locks (and the cache, unless it has its own).
    redis: ServiceHealth,
    /// The cache's own Redis (`REDIS_CACHE_URL`), when there is one. Down: every request is
    /// a miss, still healthy.
    #[serde(skip_serializing_if = "Option::is_none")]
    redis_cache: Option<ServiceHealth>,
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct Memory {
    rss: Option<usize>,
    virtual_size: Option<usize>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct HealthReport {
    status: &'static str,
    timestamp: String,
    /// Seconds since the process started.
    uptime: f64,
    memory: Memory,
    services: Services,
}

fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

#[utoipa::path(
    get, path = "/health", operation_id = "getHealth", summary = "Service health",
    description = "Real round trips to the database (`SELECT 1`) and Redis (`PING`). Redis down is degraded but healthy.",
    responses(
        (status = 200, description = "Healthy (Redis may be down)", body = HealthReport),
        (status = 503, description = "Unhealthy: the database is down", body = HealthReport),
    ),
)]
async fn health(State(state): State<AppState>) -> (StatusCode, Json<HealthReport>) {
    let database = async {
        let started = std::time::Instant::now();
        match tokio::time::timeout(DATABASE_CHECK_TIMEOUT, state.db.ping()).await {
            Ok(Ok(rtt)) => ServiceHealth {
                status: "up",
                response_time: millis(rtt),
                error: None,
            },
            Ok(Err(e)) => ServiceHealth {
                status: "down",
                response_time: millis(started.elapsed()),
                error: Some(e.to_string()),
            },
            Err(_) => ServiceHealth {
                status: "down",
                response_time: millis(started.elapsed()),
                error: Some("timed out".into()),
            },
        }
    };
    let ping = |redis: &ims_redis::RedisService| {
        let redis = redis.clone();
        async move {
            let connection = redis.connection();
            let started = std::time::Instant::now();
            // Why it is down; `None`: up.
            let (rtt, down) = match connection.ping().await {
                Err(e) => (started.elapsed(), Some(e.to_string())),
                // It answers, but requests do not use it yet: too slow for them to wait on
                // (REDIS_SLOW_MS; half of it is what a `PING` must beat for recovery), or
                // not fast for long enough since an outage.
                Ok(rtt) if !connection.is_connected() => {
                    let why = if rtt >= connection.slow_threshold() / 2 {
                        "answering too slowly; requests do not wait on it"
                    } else {
                        "answering again; in use once it has answered fast for a while"
                    };
                    (rtt, Some(why.to_string()))
                }
                // It answers, but refused a write lately (a replica's URL, a user without
                // the scripts, `min-replicas-to-write` unmet, full): sessions, limits and
                // the cache are on their fallbacks, so whether it takes a write now is
                // what "up" means (a `PING` alone said "up" throughout; a probe).
                Ok(rtt) if connection.refused_a_write_within(WRITE_REFUSAL_MEMORY) => {
                    let refused = redis.check_writable().await.err();
                    let refused = refused.filter(|e| e.refused_write().is_some());
                    (rtt, refused.map(|e| format!("refuses writes: {e}")))
                }
                Ok(rtt) => (rtt, None),
            };
            ServiceHealth {
                status: if down.is_none() { "up" } else { "down" },
                response_time: millis(rtt),
                error: down,
            }
        }
    };
    let redis_cache = async {
        match state.settings.redis_cache {
            Some(_) => Some(ping(state.cache.redis()).await),
            None => None,
        }
    };
    let (database, redis, redis_cache) = tokio::join!(database, ping(&state.redis), redis_cache);
    let healthy = database.status == "up";
    let memory = memory_stats::memory_stats();
    let report = HealthReport {
        status: if healthy { "healthy" } else { "unhealthy" },
        timestamp: crate::db::now(),
        uptime: state.started_at.elapsed().as_secs_f64(),
        memory: Memory {
            rss: memory.map(|m| m.physical_mem),
            virtual_size: memory.map(|m| m.virtual_mem),
        },
        services: Services {
            database,
            redis,
            redis_cache,
        },
    };
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(report))
}
