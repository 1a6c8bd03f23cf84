//! The scheduled cache warm-up (`CACHE_WARM_INTERVAL`, seeds 001 and 002): once per
//! interval, on one instance of the deployment, the dashboard KPIs of recently active
//! organizations whose entry is missing are computed and stored, so the first reader after
//! a write finds them cached.
//!
//! One instance per interval: each instance ticks every interval and runs the job only if
//! it takes the job's lock, whose lease is the interval; the others skip that tick. The
//! lease is renewed while a run lasts, so a run longer than the interval (a large
//! deployment, a slow database) does not let another instance start one beside it; and a
//! run takes at most [`MAX_ORGANIZATIONS`], the most recently active first. The
//! work goes through the router like any request (with an access token minted for the
//! organization), so the cache layer stores it with its usual race protection.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request};
use axum::Router;
use ims_redis::cache::query_hash;
use ims_redis::lock::Locks;
use tower::ServiceExt;

use crate::auth::tokens::claims_for;
use crate::state::AppState;

/// Warm-up runs by this process, for `/health/cache`.
pub static WARMUPS: AtomicU64 = AtomicU64::new(0);

/// Organizations that wrote within this window count as recently active.
const ACTIVE_WINDOW: Duration = Duration::from_secs(3600);

/// Organizations one run warms at most: each costs a dashboard query, and a run should
/// fit in its interval rather than hold the database for minutes.
pub const MAX_ORGANIZATIONS: usize = 1000;

/// The routes a warm-up fills: (key prefix, path).
const ROUTES: [(&str, &str); 1] = [("dashboard:kpis", "/dashboard/kpis")];

/// Runs the warm-up every `interval` until the process ends.
pub async fn run(state: AppState, app: Router, interval: Duration) {
    let locks = Locks::new(state.redis.clone());
    let lease = interval
        .saturating_sub(Duration::from_millis(50))
        .max(Duration::from_millis(1));
    loop {
        tokio::time::sleep(interval).await;
        let Some(mut job) = locks.try_acquire("job:cache-warm", lease).await else {
            continue;
        };
        // Held while the run lasts (it was not: a run longer than its interval met the next
        // instance's beside it), then left to expire, not released, so that the next run
        // is an interval later whichever instance takes it.
        job.keep_alive(lease);
        WARMUPS.fetch_add(1, Ordering::Relaxed);
        let warmed = warm(&state, &app).await;
        drop(job);
        tracing::debug!(warmed, "cache warm-up");
    }
}

/// Fills the missing entries of every recently active organization; returns how many.
async fn warm(state: &AppState, app: &Router) -> usize {
    let mut warmed = 0;
    for org in state
        .cache
        .active_scopes(ACTIVE_WINDOW, MAX_ORGANIZATIONS)
        .await
    {
        for (key_prefix, path) in ROUTES {
            let rest = format!("GET:{path}:{}", query_hash(None));
            if state.cache.is_cached(&org, key_prefix, &rest).await {
                continue;
            }
            let claims = claims_for(
                "cache-warmup",
                &org,
                "cache-warmup",
                "system",
                Duration::from_secs(60),
            );
            let Ok(token) = state.keys.sign(&claims) else {
                continue;
            };
            let Ok(request) = Request::get(path)
                .header(header::AUTHORIZATION, format!("Bearer {token}"))
                .body(Body::empty())
            else {
                continue;
            };
            let Ok(response) = app.clone().oneshot(request).await;
            if response.status().is_success() {
                warmed += 1;
            }
        }
    }
    warmed
}
