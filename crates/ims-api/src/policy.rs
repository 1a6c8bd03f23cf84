//! The response-cache and invalidation policies routes attach where they are declared
//! (contract §5): `cached("items:list", 60)` on a read, `invalidates(&[Group::Items, …])`
//! on writes. Short names keep each route's policy readable in its router.

use std::time::Duration;

use ims_redis::cache::{CacheLayer, WriteThroughLayer};
use ims_redis::invalidate::InvalidateLayer;

/// Caches the route's `GET` responses under `key_prefix` for `seconds`.
pub fn cached(key_prefix: &str, seconds: u64) -> CacheLayer {
    CacheLayer::new(key_prefix, Duration::from_secs(seconds))
}

/// Caches under `key_prefix:{last path segment}` (one key prefix per report type).
pub fn cached_per_type(key_prefix: &str, seconds: u64) -> CacheLayer {
    CacheLayer::per_last_segment(key_prefix, Duration::from_secs(seconds))
}

/// Like [`cached`], and also served from process memory (L1) for at most
/// `CACHE_L1_MAX_STALE_MS` after it was read from Redis: for reads that change rarely or
/// cost much, where another instance's write may show up that much later (contract §5).
pub fn cached_l1(key_prefix: &str, seconds: u64) -> CacheLayer {
    cached(key_prefix, seconds).with_l1()
}

/// For the expensive aggregates (dashboards): [`cached_l1`], and concurrent misses of one
/// key run the handler once across all instances (the others wait for its result).
pub fn cached_expensive(key_prefix: &str, seconds: u64) -> CacheLayer {
    cached_l1(key_prefix, seconds).with_cluster_single_flight()
}

/// [`cached_expensive`] under `key_prefix:{last path segment}` (reports).
pub fn cached_per_type_expensive(key_prefix: &str, seconds: u64) -> CacheLayer {
    cached_per_type(key_prefix, seconds)
        .with_l1()
        .with_cluster_single_flight()
}

/// After a successful `PUT`/`PATCH` (and its invalidation: attach it outside `invalidates`),
/// stores the response as the `GET` of the same path cached under `key_prefix` for
/// `seconds`, so the next read is a hit showing the change.
pub fn writes_through(key_prefix: &str, seconds: u64) -> WriteThroughLayer {
    WriteThroughLayer::new(key_prefix, Duration::from_secs(seconds))
}

/// What a write can invalidate: a cache group (every read whose key prefix starts with
/// it) or a single key prefix. An enum, so that a misspelt name does not compile (a string
/// would silently leave stale data).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    /// Every item read: lists and details (`items:*`).
    Items,
    /// The item lists only (`items:list`), not the items' details.
    ItemsList,
    /// Stock levels (`stock:*`).
    Stock,
    /// Every dashboard (`dashboard:*`).
    Dashboard,
    /// Every report (`reports:*`).
    Reports,
    /// Categories (`categories:*`).
    Categories,
    /// Contacts (`contacts:*`).
    Contacts,
    /// Tax rates (`tax:*`).
    Tax,
}

impl Group {
    /// The name the cache indexes it under.
    pub fn name(self) -> &'static str {
        match self {
            Self::Items => "items",
            Self::ItemsList => "items:list",
            Self::Stock => "stock",
            Self::Dashboard => "dashboard",
            Self::Reports => "reports",
            Self::Categories => "categories",
            Self::Contacts => "contacts",
            Self::Tax => "tax",
        }
    }
}

/// After a successful write, invalidates the caller's cached responses of `groups` (a
/// group such as `Items` drops all of them, a key prefix such as `ItemsList` one kind).
/// Add `.tag_by_last_segment("item")` on an entity's route to drop that entity's entries
/// too.
pub fn invalidates(groups: &[Group]) -> InvalidateLayer {
    let names: Vec<&str> = groups.iter().map(|g| g.name()).collect();
    InvalidateLayer::new(&names)
}
