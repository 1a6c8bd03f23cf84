//! The cache's counters: since start for `/health/cache` and Prometheus, and per scope
//! (organization) for `/cache/stats`.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::Serialize;

use super::{unix_millis, ResponseCache};

/// Counters behind `GET /health/cache`.
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) hits: AtomicU64,
    pub(super) misses: AtomicU64,
    pub(super) bypasses: AtomicU64,
    pub(super) coalesced: AtomicU64,
    pub(super) stores: AtomicU64,
    pub(super) stale_refused: AtomicU64,
    pub(super) invalidations: AtomicU64,
    pub(super) invalidated_keys: AtomicU64,
    pub(super) errors: AtomicU64,
}

/// A snapshot of the cache's counters since start.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CacheStats {
    /// Requests answered from Redis (or from a concurrent identical miss).
    pub hits: u64,
    /// Requests that ran the handler because nothing was cached.
    pub misses: u64,
    /// Requests with `Cache-Control: no-cache`.
    pub bypasses: u64,
    /// Misses answered by another request's handler run (stampede protection).
    pub coalesced: u64,
    /// `hits / (hits + misses)`, 0 when there were none.
    pub hit_rate: f64,
    /// Entries written.
    pub stores: u64,
    /// Stores refused because an invalidation happened while the handler ran.
    pub stale_stores_refused: u64,
    /// Group invalidations performed.
    pub invalidations: u64,
    /// Entries deleted by invalidations.
    pub invalidated_keys: u64,
    /// Lookups, stores or invalidations that Redis could not serve.
    pub errors: u64,
    /// The in-process tier (not serialized: applications report it as they see fit).
    #[serde(skip)]
    pub l1: L1Stats,
}

/// One scope's share of the counters.
#[derive(Debug, Default)]
pub(super) struct ScopeCounters {
    pub(super) hits: AtomicU64,
    pub(super) misses: AtomicU64,
}

/// One scope's (organization's) view of the cache.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScopeStats {
    /// Requests of this scope answered from the cache, on this instance.
    pub hits: u64,
    /// Requests of this scope that ran the handler, on this instance.
    pub misses: u64,
    /// `hits / (hits + misses)`, 0 when there were none.
    pub hit_rate: f64,
    /// Entries the scope has cached now (across instances when in Redis).
    pub entries: u64,
}

/// Counters of the in-process tier.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct L1Stats {
    /// Requests answered from process memory (part of `hits`).
    pub hits: u64,
    /// Entries held now.
    pub entries: u64,
    /// Bytes held now (bodies, keys and bookkeeping).
    pub bytes: u64,
    /// Invalidation messages this instance published.
    pub invalidations_published: u64,
    /// Invalidation messages received from other instances.
    pub invalidations_received: u64,
    /// Times the whole tier was dropped: a gap in a sender's sequence, or a lost
    /// subscription.
    pub flushes: u64,
    /// Polls by misses waiting for another instance's run of the same key.
    pub lock_waits: u64,
}

/// Events counted by the layer.
pub(crate) enum Event {
    Hit,
    Miss,
    Bypass,
    Coalesced,
}

impl ResponseCache {
    pub(crate) fn count(&self, scope: &str, event: Event) {
        let counter = match event {
            Event::Hit => &self.counters.hits,
            Event::Miss => &self.counters.misses,
            Event::Bypass => &self.counters.bypasses,
            Event::Coalesced => &self.counters.coalesced,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if matches!(event, Event::Hit | Event::Miss) {
            let Ok(counters) = self
                .per_scope
                .get_or_insert_with(scope, || Ok::<_, Infallible>(Arc::default()));
            let counter = if matches!(event, Event::Hit) {
                &counters.hits
            } else {
                &counters.misses
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// This instance's hits and misses for `scope` since start (or since the scope was
    /// last among the 100,000 most recently counted), and the entries `scope` has cached
    /// now: the unexpired members of its groups' indexes in Redis (the groups named with
    /// [`count_groups`](Self::count_groups) and those this instance stored under), or its
    /// entries in process memory without Redis. An index member outlives its entry when
    /// only a tag's invalidation or the flush after an outage removed the entry; it counts
    /// until it expires (checking each member would cost a command per entry).
    pub async fn scope_stats(&self, scope: &str) -> ScopeStats {
        let counters = self.per_scope.get(scope).unwrap_or_default();
        let hits = counters.hits.load(Ordering::Relaxed);
        let misses = counters.misses.load(Ordering::Relaxed);
        let entries = if self.is_local() {
            self.l1.count_scope(scope)
        } else {
            let groups: Vec<String> = self
                .groups_seen
                .lock()
                .map(|g| g.iter().cloned().collect())
                .unwrap_or_default();
            let keys: Vec<String> = groups
                .iter()
                .map(|group| self.redis.key(&self.layout.index(scope, group)))
                .collect();
            let now_ms = unix_millis();
            self.redis
                .connection()
                .run(|mut c| async move {
                    let mut pipe = redis::pipe();
                    for key in &keys {
                        pipe.cmd("ZCOUNT").arg(key).arg(now_ms).arg("+inf");
                    }
                    pipe.query_async::<Vec<u64>>(&mut c).await
                })
                .await
                .map(|counts| counts.into_iter().sum())
                .unwrap_or(0)
        };
        ScopeStats {
            hits,
            misses,
            hit_rate: if hits + misses == 0 {
                0.0
            } else {
                hits as f64 / (hits + misses) as f64
            },
            entries,
        }
    }

    /// Counters since start.
    pub fn stats(&self) -> CacheStats {
        let c = &self.counters;
        let hits = c.hits.load(Ordering::Relaxed);
        let misses = c.misses.load(Ordering::Relaxed);
        CacheStats {
            hits,
            misses,
            bypasses: c.bypasses.load(Ordering::Relaxed),
            coalesced: c.coalesced.load(Ordering::Relaxed),
            hit_rate: if hits + misses == 0 {
                0.0
            } else {
                hits as f64 / (hits + misses) as f64
            },
            stores: c.stores.load(Ordering::Relaxed),
            stale_stores_refused: c.stale_refused.load(Ordering::Relaxed),
            invalidations: c.invalidations.load(Ordering::Relaxed),
            invalidated_keys: c.invalidated_keys.load(Ordering::Relaxed),
            errors: c.errors.load(Ordering::Relaxed),
            l1: {
                let (entries, bytes) = self.l1.size();
                L1Stats {
                    hits: self.l1.hits.load(Ordering::Relaxed),
                    entries,
                    bytes,
                    invalidations_published: self.l1.published.load(Ordering::Relaxed),
                    invalidations_received: self.l1.received.load(Ordering::Relaxed),
                    flushes: self.l1.flushes.load(Ordering::Relaxed),
                    lock_waits: self.l1.lock_waits.load(Ordering::Relaxed),
                }
            },
        }
    }
}
