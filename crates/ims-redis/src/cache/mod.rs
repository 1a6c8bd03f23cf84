//! Response caching in Redis, scoped per tenant, invalidated by group, safe under races.
//!
//! [`ResponseCache`] is the engine; [`CacheLayer`] caches a route's `GET` responses and
//! [`crate::invalidate::InvalidateLayer`] invalidates groups after a successful write. Both
//! find the engine in the request's extensions, so routes declare only their policy.
//!
//! Keys follow `{prefix}cache:{scope}:{keyPrefix}:{METHOD}:{path}:{queryHash}`; the scope is
//! whatever the application says identifies a tenant (an organization id).
//!
//! # Invalidation without scanning
//! Every stored entry is also recorded in an index, a sorted set per (scope, group) scored
//! by expiry time, where the group is the key prefix's first segment (`posts:list` →
//! `posts`). Invalidating a group deletes exactly the members of its index in one Lua
//! script, so its cost follows the number of entries affected, not the size of the
//! keyspace. Each store trims index members that have expired, and the index expires with
//! its longest-lived entry, so the bookkeeping cannot outgrow the cache.
//!
//! # Race safety
//! Each (scope, group) has an epoch counter that invalidation increments. A miss reads the
//! epoch before the handler runs; the store is a script that writes only if the epoch is
//! still the one seen. A response computed before a concurrent write therefore cannot be
//! stored after that write's invalidation, in the spirit of memcache leases. A global
//! generation plays the same role for the flush that follows a Redis outage (writes made
//! while Redis was unreachable could not invalidate).
//!
//! # Eviction
//! A Redis run `allkeys-lru` (contract §1, for a cache Redis of its own) may evict an index
//! or an epoch while the entries they describe survive; a write would then find nothing to
//! delete. So an entry is written with the epochs it was stored under, a hit reads the
//! epochs with the entry (one `MGET`, one slot) and serves it only if they are unchanged,
//! and an epoch that disappears is made again from Redis' clock in microseconds, a value
//! no earlier counter of that key reached. Deleting indexed entries on invalidation frees
//! memory; the epochs decide what may be served. A Redis that cannot evict (`noeviction`, or
//! no `maxmemory`) and has evicted nothing since it started, read every second with `CONFIG
//! GET` and `INFO`, is spared the check: there a hit is one `GET` of the entry, which costs
//! the server about a sixth less than the `MGET` and its parse.
//!
//! # Example
//! ```no_run
//! # fn demo(redis: ims_redis::RedisService) {
//! use std::sync::Arc;
//! use std::time::Duration;
//! use ims_redis::cache::{CacheLayer, ResponseCache};
//! use ims_redis::invalidate::InvalidateLayer;
//!
//! // The scope comes from the request: here a tenant header, in practice a verified token.
//! let scope = Arc::new(|parts: &http::request::Parts| {
//!     parts.headers.get("x-tenant")?.to_str().ok().map(str::to_string)
//! });
//! let cache = ResponseCache::new(redis, scope, 0.05);
//! let read = CacheLayer::new("posts:list", Duration::from_secs(60));
//! let write = InvalidateLayer::new(&["posts", "feed"]);
//! // Router::new().route("/posts", get(list).layer(read).post(create).layer(write))
//! //     .layer(Extension(cache));
//! // Or give a read layer the engine itself, so that reads need no extension:
//! let read = CacheLayer::new("posts:list", Duration::from_secs(60)).with_engine(cache.clone());
//! # let _ = (cache, read, write);
//! # }
//! ```

mod entry;
mod flight;
mod key;
mod l1;
mod layer;
mod scripts;
mod stats;
mod write_through;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde::{de::DeserializeOwned, Serialize};
use smallvec::SmallVec;
use tokio::sync::watch;

pub use entry::Cached;
use entry::{epochs_match, Stamp};
pub(crate) use flight::{Flight, Shared};
pub use key::{body_tag, group_of, push_query_hash, query_hash, slot, Layout};
pub use l1::L1Settings;
pub use layer::{CacheBody, CacheLayer, CacheService, VaryFn};
use scripts::{ENSURE, INVALIDATE, STORE};
pub(crate) use stats::Event;
pub use stats::{CacheStats, L1Stats, ScopeStats};
use stats::{Counters, ScopeCounters};
pub use write_through::{WriteThroughLayer, WriteThroughService};

use crate::{RedisError, RedisService};

/// Identifies the tenant of a request, or `None` for requests that must not be cached.
pub type ScopeFn = Arc<dyn Fn(&http::request::Parts) -> Option<String> + Send + Sync>;

/// How long an epoch counter outlives its last bump or its making (and at least its
/// longest-lived entry: a store extends it). An epoch that expires or is evicted only makes
/// its entries misses.
const EPOCH_TTL: Duration = Duration::from_secs(24 * 3600);

/// How long an epoch a miss had to make lives unless a store extends it (to its entry's
/// lifetime): longer than any handler runs between the miss and its store, short enough that
/// an entity read once does not leave its tag's epoch for a day.
const MADE_EPOCH_TTL: Duration = Duration::from_secs(300);

/// The most (scope, name) epochs the in-process engine keeps (`REDIS_ENABLED=false`).
const LOCAL_EPOCHS_MAX: usize = 100_000;

/// A value for a new in-process epoch: above every value any in-process epoch has had, as
/// each is made 2³² above the last one made and counts one per invalidation from there.
fn next_local_epoch() -> u64 {
    static MADE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    MADE.fetch_add(1 << 32, Ordering::Relaxed) + (1 << 32)
}

/// How often the cache asks its Redis whether it may evict (`CONFIG GET`, `INFO`): a policy
/// changed at run time to one that evicts is noticed within this (entries are always
/// stamped, so every entry stored before is checked from then on). Three small commands a
/// second; at 10 s a black-box probe saw entries served stale for 4.5 s after such a change.
const POLICY_CHECK: Duration = Duration::from_secs(1);

/// Responses above this many bytes are served but not stored, unless
/// [`ResponseCache::set_max_entry_bytes`] says otherwise.
pub const DEFAULT_MAX_ENTRY_BYTES: usize = 4 * 1024 * 1024;

/// Pause between attempts to flush the cache after an outage.
const RECOVERY_RETRY: Duration = Duration::from_millis(200);

/// What a miss saw, to be checked again when it stores.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    /// The epochs of the entry's memberships (group, key prefix, tag), in that order.
    epochs: Vec<String>,
    generation: String,
    /// Store only if exactly one invalidation of any membership happened since (the
    /// write's own), rather than none (write-through).
    after_one: bool,
    /// The expired entry still within its grace period (`stale-if-error`), and its age.
    stale: Option<(Arc<Cached>, Duration)>,
}

impl Seen {
    /// What this would be after exactly one invalidation of its group: the expectation of
    /// a write-through store, which may land only if the write's own invalidation, and no
    /// other, happened since this was read.
    pub fn after_one_invalidation(&self) -> Seen {
        Seen {
            epochs: self.epochs.clone(),
            generation: self.generation.clone(),
            after_one: true,
            stale: None,
        }
    }

    /// The epochs seen, for naming a single flight (misses that saw different epochs must
    /// not share a run).
    pub(crate) fn epochs_text(&self) -> String {
        self.epochs.join(".")
    }

    /// The expired entry this miss may answer with if the handler fails with a 5xx, and
    /// how long ago it was stored.
    pub fn stale(&self) -> Option<(&Cached, Duration)> {
        self.stale
            .as_ref()
            .map(|(cached, age)| (cached.as_ref(), *age))
    }
}

/// Whether a store may land, given how far each membership's epoch moved since the miss
/// (`after_one`: a write-through, allowed exactly the write's own single bump).
fn epochs_allow(drift: &[u64], after_one: bool) -> bool {
    let total = drift.iter().fold(0u64, |total, d| total.saturating_add(*d));
    if after_one {
        total == 1
    } else {
        total == 0
    }
}

/// The names an entry is indexed under, each with its own epoch: its group (`posts`), its
/// key prefix when longer (`posts:detail`), and its tag (`#post:42`). A write invalidates
/// whichever of these it affects: a group drops everything in it, a key prefix one kind
/// of read, a tag one entity's entries.
pub fn memberships(key_prefix: &str, tag: Option<&str>) -> Vec<String> {
    membership_parts(key_prefix, tag)
        .map(|parts| parts.concat())
        .collect()
}

/// [`memberships`] without allocating: each name in two parts (`["#", tag]` for a tag, as
/// [`tag_name`] spells it), for the epoch keys a lookup reads.
fn membership_parts<'a>(
    key_prefix: &'a str,
    tag: Option<&'a str>,
) -> impl Iterator<Item = [&'a str; 2]> {
    let group = group_of(key_prefix);
    std::iter::once(["", group])
        .chain((key_prefix != group).then_some(["", key_prefix]))
        .chain(tag.map(|tag| ["#", tag]))
}

/// The tag `{name}:{last segment of path}` (`post`, `/posts/42` → `post:42`).
pub fn last_segment_tag(name: &str, path: &str) -> String {
    format!("{name}:{}", path.rsplit('/').next().unwrap_or_default())
}

/// The invalidation name of an entity tag (`post:42` → `#post:42`), apart from group and
/// key-prefix names.
pub fn tag_name(tag: &str) -> String {
    format!("#{tag}")
}

/// The sorted set of scopes by their last write (milliseconds since the epoch). Outside
/// `cache:`, which holds entries only (and is flushed after an outage).
const ACTIVE: &str = "cacheactive";

/// How long a write is remembered in [`ACTIVE`]: longer than any warm-up asks about.
const ACTIVE_KEPT: Duration = Duration::from_secs(24 * 3600);

fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The key of a response in process memory (L1, or the whole cache without Redis).
pub(crate) fn l1_key(scope: &str, key_prefix: &str, rest: &str) -> String {
    format!("{scope}\n{key_prefix}\n{rest}")
}

/// The result of looking a key up.
#[derive(Debug)]
pub enum Lookup {
    /// A live entry and its remaining time to live.
    Hit(Cached, Duration),
    /// No entry; store the fresh response with this ticket.
    Miss(Seen),
    /// Redis could not be asked, or the cache is being flushed: run the handler, store
    /// nothing.
    Unavailable,
}

/// The response-cache engine shared by every cached route of a process.
pub struct ResponseCache {
    redis: RedisService,
    /// Responses larger than this are served but not stored.
    max_entry_bytes: std::sync::atomic::AtomicUsize,
    /// How long past its freshness an entry is kept for `stale-if-error`, in ms.
    grace: std::sync::atomic::AtomicU64,
    layout: Layout,
    /// The in-process tier, for routes that opt in.
    l1: l1::L1,
    /// Cluster-wide single flight of expensive misses.
    locks: crate::lock::Locks,
    /// Hits and misses per scope, for [`ResponseCache::scope_stats`]; bounded.
    per_scope: quick_cache::sync::Cache<String, Arc<ScopeCounters>>,
    /// The groups entries were stored under, to count a scope's entries by their indexes.
    groups_seen: Mutex<std::collections::BTreeSet<String>>,
    /// Invalidation epochs of the process-only cache (`REDIS_ENABLED=false`), by
    /// `scope\ngroup`: the same race protection as the Redis epochs.
    local_epochs: Mutex<HashMap<String, u64>>,
    scope: ScopeFn,
    /// Fraction of the TTL by which entries are shortened at random, so entries written
    /// together do not all expire together.
    jitter: f64,
    counters: Counters,
    /// In-process single flight: the receiver of the one running miss per key.
    inflight: Mutex<HashMap<String, watch::Receiver<Option<flight::Published>>>>,
    /// False while the cache is flushed after an outage: entries may be stale until then.
    ready: AtomicBool,
    /// Invalidations record their scope for [`active_scopes`](Self::active_scopes).
    tracks_activity: AtomicBool,
    /// A hit checks the epochs its entry was stored under: Redis may evict bookkeeping (or
    /// it is not known whether it may). See [Eviction](self#eviction).
    checks_epochs: AtomicBool,
    /// Woken when Redis answered an invalidation without applying it: the recovery flush
    /// (as after an outage) runs while lookups bypass the cache.
    refused: Arc<tokio::sync::Notify>,
}

/// Logs a store Redis refused (a full cache Redis answers `OOM`), at most once a minute:
/// the refusals were only counted, so a cache Redis that refused every store was silent in
/// the log (a black-box probe). Not the breaker's business: Redis answers, and reads go on.
fn warn_store_failed(e: &crate::RedisError) {
    static THROTTLED: crate::error::Throttled = crate::error::Throttled::new();
    // Redis away has its own two lines (lost, back), as in `service::log_failure`.
    if !e.is_unavailable() {
        THROTTLED.warn(|skipped| {
            tracing::warn!(
                skipped,
                "a cache store failed ({e}); counted in the cache's errors, logged at most \
                 once a minute"
            );
        });
    }
}

impl ResponseCache {
    /// An engine over `redis`, scoping keys with `scope`, shortening each entry's TTL by a
    /// random fraction up to `jitter` (0.0–0.5; 0.05 means entries live 95–100 % of their
    /// TTL). Starts a task that flushes the cache whenever Redis comes back after an outage.
    pub fn new(redis: RedisService, scope: ScopeFn, jitter: f64) -> Arc<Self> {
        Self::with_l1(redis, scope, jitter, L1Settings::default())
    }

    /// Stores no response body larger than `bytes` (they are still served).
    pub fn set_max_entry_bytes(&self, bytes: usize) {
        self.max_entry_bytes.store(bytes, Ordering::Relaxed);
    }

    /// Names the groups (the first segment of a key prefix: `items` of `items:detail`) whose
    /// entries [`scope_stats`](Self::scope_stats) counts, besides those this instance has
    /// stored under: with every group an application declares named at start, every
    /// instance sharing the Redis counts the same entries (each counted only the groups it
    /// had stored under since it started; a probe saw two instances disagree).
    pub fn count_groups<'a>(&self, groups: impl IntoIterator<Item = &'a str>) {
        if let Ok(mut seen) = self.groups_seen.lock() {
            seen.extend(groups.into_iter().map(str::to_string));
        }
    }

    /// Keeps entries `grace` past their freshness: a miss whose handler then fails with a
    /// 5xx answers with the expired entry (`X-Cache: STALE`). Zero (the default): off.
    pub fn set_grace(&self, grace: Duration) {
        self.grace
            .store(grace.as_millis() as u64, Ordering::Relaxed);
    }

    /// The size above which responses are not stored.
    pub fn max_entry_bytes(&self) -> usize {
        self.max_entry_bytes.load(Ordering::Relaxed)
    }

    /// Like [`new`](Self::new), with the in-process tier sized and bounded by `l1`. Starts
    /// the subscriber that keeps it coherent with other instances.
    pub fn with_l1(redis: RedisService, scope: ScopeFn, jitter: f64, l1: L1Settings) -> Arc<Self> {
        let layout = Layout {
            cluster: redis.connection().is_cluster(),
        };
        let redis_enabled = redis.connection().is_enabled();
        let cache = Arc::new(Self {
            max_entry_bytes: std::sync::atomic::AtomicUsize::new(DEFAULT_MAX_ENTRY_BYTES),
            grace: std::sync::atomic::AtomicU64::new(0),
            locks: crate::lock::Locks::new(redis.clone()),
            redis,
            layout,
            l1: l1::L1::new(l1.max_bytes, l1.max_stale, !redis_enabled),
            local_epochs: Mutex::new(HashMap::new()),
            per_scope: quick_cache::sync::Cache::new(100_000),
            groups_seen: Mutex::new(std::collections::BTreeSet::new()),
            scope,
            jitter: jitter.clamp(0.0, 0.5),
            counters: Counters::default(),
            inflight: Mutex::new(HashMap::new()),
            ready: AtomicBool::new(true),
            tracks_activity: AtomicBool::new(false),
            checks_epochs: AtomicBool::new(true),
            refused: Arc::new(tokio::sync::Notify::new()),
        });
        let weak = Arc::downgrade(&cache);
        let mut changes = cache.redis.connection().subscribe();
        let refused = cache.refused.clone();
        tokio::spawn(async move {
            let mut was_up = *changes.borrow_and_update();
            let mut policy_check = tokio::time::interval(POLICY_CHECK);
            policy_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = policy_check.tick() => {
                        let Some(cache) = weak.upgrade() else { break };
                        cache.read_eviction_policy().await;
                    }
                    changed = changes.changed() => {
                        if changed.is_err() {
                            break;
                        }
                        let up = *changes.borrow_and_update();
                        let Some(cache) = weak.upgrade() else { break };
                        if up && !was_up {
                            cache.recover().await;
                        } else if !up {
                            cache.ready.store(false, Ordering::Release);
                        }
                        was_up = up;
                    }
                    () = refused.notified() => {
                        let Some(cache) = weak.upgrade() else { break };
                        // Down: the recovery runs when it is back.
                        if was_up && cache.recover().await {
                            tracing::warn!("response cache serving again");
                        }
                    }
                }
            }
        });
        tokio::spawn(l1::subscribe(Arc::downgrade(&cache)));
        cache
    }

    /// Asks Redis whether it may evict keys, or has, and so whether a hit must check its
    /// entry's epochs: not under `noeviction` or without `maxmemory` on a Redis that has
    /// evicted nothing since it started; yes under any other policy, once it has evicted
    /// (an entry whose bookkeeping went under an earlier policy is still there: a probe
    /// switched `allkeys-lru` to `noeviction` and was served such an entry until its TTL),
    /// on a cluster (whose nodes may differ, and `CONFIG` reaches one), and when Redis
    /// refuses `CONFIG` (managed services often do). Unchanged while Redis is away; a
    /// restarted Redis is flushed of entries before the cache serves again.
    async fn read_eviction_policy(&self) {
        if self.is_local() || !self.redis.is_connected() {
            return;
        }
        let evicts = if self.layout.cluster {
            true
        } else {
            let policy = self.redis.config_get("maxmemory-policy").await;
            let limit = self.redis.config_get("maxmemory").await;
            let evicted = self.redis.connection().info().await.map(|i| i.evicted_keys);
            if !self.redis.is_connected() {
                return;
            }
            evicted != Some(0)
                || !matches!(
                    (policy.as_deref(), limit.as_deref()),
                    (Some("noeviction"), Some(_)) | (Some(_), Some("0"))
                )
        };
        if self.checks_epochs.swap(evicts, Ordering::Relaxed) != evicts {
            tracing::info!(
                checks_epochs = evicts,
                "the cache's Redis {} evict keys: cache hits {} the epochs their entries were \
                 stored under",
                if evicts { "may" } else { "does not" },
                if evicts { "check" } else { "no longer check" }
            );
        }
    }

    /// The Redis the cache keeps its entries in (a cache Redis of its own, or the main
    /// one): the one whose state `/health`-like reports of the cache should describe.
    pub fn redis(&self) -> &RedisService {
        &self.redis
    }

    /// Whether a hit checks its entry's epochs (see
    /// [`read_eviction_policy`](Self::read_eviction_policy)).
    pub fn checks_epochs(&self) -> bool {
        self.checks_epochs.load(Ordering::Relaxed)
    }

    /// True with `REDIS_ENABLED=false`: the whole cache lives in this process, for a
    /// deployment of one instance.
    pub fn is_local(&self) -> bool {
        !self.redis.connection().is_enabled()
    }

    /// The in-process epoch of `name` in `scope`, made when missing (the same rule as in
    /// Redis: a value no earlier epoch of any name reached). The map is bounded: past
    /// [`LOCAL_EPOCHS_MAX`] names it is emptied, which only refuses the stores of misses in
    /// flight (a missing epoch matches nothing), where it grew by every entity tag ever
    /// invalidated.
    fn local_epoch(epochs: &mut HashMap<String, u64>, scope: &str, name: &str) -> u64 {
        let key = format!("{scope}\n{name}");
        if let Some(epoch) = epochs.get(&key) {
            return *epoch;
        }
        if epochs.len() >= LOCAL_EPOCHS_MAX {
            epochs.clear();
        }
        let made = next_local_epoch();
        epochs.insert(key, made);
        made
    }

    /// Whether lookups may be answered from the cache: false after a Redis outage until
    /// every entry is flushed, and while Redis refuses the writes an invalidation needs.
    pub fn is_serving(&self) -> bool {
        self.is_local() || self.ready.load(Ordering::Acquire)
    }

    /// Records the scope of every invalidation, for [`active_scopes`](Self::active_scopes)
    /// (a scheduled warm-up asks which scopes wrote lately). Off by default: it costs every
    /// write three more Redis commands, for a caller that never asks. Every instance whose
    /// writes a warm-up should know of must turn it on.
    pub fn track_activity(&self) {
        self.tracks_activity.store(true, Ordering::Relaxed);
    }

    /// Scopes that wrote (invalidated anything) within `window`, most recent first, at most
    /// `limit`; older records are trimmed on the way; empty unless
    /// [`track_activity`](Self::track_activity) is on, and when Redis cannot be asked.
    pub async fn active_scopes(&self, window: Duration, limit: usize) -> Vec<String> {
        let Some(last) = limit.checked_sub(1) else {
            return Vec::new();
        };
        let key = self.redis.key(ACTIVE);
        let since = unix_millis().saturating_sub(window.as_millis() as u64);
        self.redis
            .connection()
            .run(|mut c| async move {
                redis::pipe()
                    .cmd("ZREMRANGEBYSCORE")
                    .arg(&key)
                    .arg("-inf")
                    .arg(format!("({since}"))
                    .ignore()
                    .cmd("ZREVRANGE")
                    .arg(&key)
                    .arg(0)
                    .arg(last)
                    .query_async::<(Vec<String>,)>(&mut c)
                    .await
            })
            .await
            .map(|(scopes,)| scopes)
            .unwrap_or_default()
    }

    /// Whether `scope` has a live entry under `key_prefix` and `rest` (as built by the
    /// layer: `GET:{path}:{queryHash}`).
    pub async fn is_cached(&self, scope: &str, key_prefix: &str, rest: &str) -> bool {
        matches!(
            self.lookup(scope, key_prefix, rest, None).await,
            Lookup::Hit(..)
        )
    }

    /// The pub/sub channel of invalidations.
    fn channel(&self) -> String {
        self.redis.key("cache:invalidate")
    }

    /// An L1 hit for `key` on a route whose bound is `max_stale`.
    /// Whether the in-process tier may hold entries at all (Redis in use, and a non-zero
    /// staleness bound).
    pub(crate) fn l1_serves(&self) -> bool {
        !self.is_local() && self.l1.serves()
    }

    pub(crate) fn l1_get(&self, key: &str, max_stale: Duration) -> Option<(Arc<Cached>, Duration)> {
        self.l1.get(key, max_stale, self.redis.is_connected())
    }

    /// Records an entry in L1 whose content was current at `fresh_at`.
    pub(crate) fn l1_insert(
        &self,
        key: String,
        scope: &str,
        key_prefix: &str,
        cached: Arc<Cached>,
        fresh_at: std::time::Instant,
        ttl: Duration,
    ) {
        // L1 routes carry no entity tags.
        self.l1.insert(
            key,
            scope,
            memberships(key_prefix, None),
            cached,
            fresh_at,
            ttl,
        );
    }

    /// The tenant of a request, if it may be cached.
    pub fn scope_of(&self, parts: &http::request::Parts) -> Option<String> {
        (self.scope)(parts)
    }

    /// Writes made while Redis was unreachable could not invalidate anything, and Redis may
    /// have kept its data (a partition rather than a restart). Until every entry is gone,
    /// reads bypass the cache; the generation bump stops in-flight misses from storing.
    /// Retried until it succeeds while Redis is up: on a cluster, a slot whose master just
    /// died fails the bump until its replica takes over, and the cache must then come back
    /// by itself.
    /// True once flushed; false when Redis went away first (its return recovers).
    async fn recover(&self) -> bool {
        self.ready.store(false, Ordering::Release);
        // A Redis that restarted may run another policy.
        self.read_eviction_policy().await;
        // Doubling up to 5 s: a Redis that keeps refusing writes (a read-only replica, a
        // user without `INCR`) is asked a few times a minute, not five times a second (on
        // a cluster, a flush attempt is one `INCR` per slot).
        let mut pause = RECOVERY_RETRY;
        while self.redis.is_connected() {
            if self.flush_all().await {
                self.ready.store(true, Ordering::Release);
                return true;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(5));
        }
        false
    }

    /// Bumps every generation, then deletes every entry; true when all of it succeeded.
    /// The indexes are left: another instance that has already recovered may store an
    /// entry (and index it) while this one scans, and an index deleted after that store
    /// would leave the entry where no invalidation finds it, stale for its whole TTL (a
    /// black-box probe saw exactly that when the indexes were flushed too). An index member
    /// whose entry is gone costs nothing: invalidation unlinks it as a no-op, and stores
    /// trim members past their expiry.
    async fn flush_all(&self) -> bool {
        use futures::StreamExt;
        // One key on a server, one per slot (16,384) on a cluster, sent a few hundred at a
        // time over the multiplexed connections: each stays far inside the command time-out.
        let generations = self.layout.generations();
        let failed = futures::stream::iter(generations)
            .map(|generation| {
                let generation = self.redis.key(&generation);
                self.redis.connection().run(|mut c| async move {
                    redis::cmd("INCR")
                        .arg(generation)
                        .query_async::<i64>(&mut c)
                        .await
                })
            })
            .buffer_unordered(256)
            .filter(|bumped| std::future::ready(bumped.is_err()))
            .count()
            .await;
        if failed > 0 {
            return false;
        }
        let removed = self.redis.flush_by_prefix("cache:").await;
        if !self.redis.is_connected() {
            return false;
        }
        tracing::info!(removed, "response cache flushed after the Redis outage");
        true
    }

    fn ttl_with_jitter(&self, ttl: Duration) -> Duration {
        if self.jitter <= 0.0 {
            return ttl;
        }
        let cut = rand::random::<f64>() * self.jitter;
        ttl.mul_f64(1.0 - cut).max(Duration::from_millis(1))
    }

    /// Looks up an entry. A hit is one `MGET` of the entry and its memberships' epochs (in
    /// the scope's slot), served only if the epochs it was stored under are those (see
    /// [Eviction](self#eviction)); it carries its own expiry, so no `PTTL` either. A miss
    /// then reads what a later store must find unchanged, the epochs and the generation, in
    /// a second round trip before the handler runs: anything invalidated after that read is
    /// caught when the store compares them.
    pub async fn lookup(
        &self,
        scope: &str,
        key_prefix: &str,
        rest: &str,
        tag: Option<&str>,
    ) -> Lookup {
        if self.is_local() {
            if let Some((cached, ttl)) = self.l1.get_local(&l1_key(scope, key_prefix, rest)) {
                return Lookup::Hit((*cached).clone(), ttl);
            }
            return Lookup::Miss(self.local_seen(scope, key_prefix, tag));
        }
        if !self.ready.load(Ordering::Acquire) {
            return Lookup::Unavailable;
        }
        let checks_epochs = self.checks_epochs.load(Ordering::Relaxed);
        let mut get = redis::cmd(if checks_epochs { "MGET" } else { "GET" });
        get.arg(
            self.redis
                .key_of(&self.layout.entry_parts(scope, key_prefix, rest)),
        );
        if checks_epochs {
            for name in membership_parts(key_prefix, tag) {
                get.arg(self.redis.key_of(&self.layout.epoch_parts(scope, name)));
            }
        }
        let reply = self
            .redis
            .connection()
            .run(|mut c| async move { get.query_async::<redis::Value>(&mut c).await })
            .await;
        let Ok(reply) = reply else {
            return self.lookup_failed();
        };
        // The entry, then (when checked) the epochs, as they are: no copy.
        let bulk = |value: redis::Value| match value {
            redis::Value::BulkString(bytes) => Some(bytes),
            _ => None,
        };
        let (entry, epochs): (_, SmallVec<[Option<Vec<u8>>; 3]>) = match reply {
            redis::Value::Array(values) => {
                let mut values = values.into_iter().map(bulk);
                (values.next().flatten(), values.collect())
            }
            single => (bulk(single), SmallVec::new()),
        };
        let now = unix_millis();
        let stale = match entry.and_then(Cached::decode) {
            // Stored under other epochs: invalidated since (its index may have been
            // evicted, so the write could not delete it). Never a hit, never stale.
            Some((.., stamped)) if checks_epochs && !epochs_match(&stamped, &epochs) => None,
            Some((cached, stamp, _)) if stamp.expires > now => {
                return Lookup::Hit(cached, Duration::from_millis(stamp.expires - now));
            }
            // Expired but within the grace period (the key's own TTL covers it): usable
            // only if the handler fails.
            Some((cached, stamp, _))
                if now
                    < stamp
                        .expires
                        .saturating_add(self.grace.load(Ordering::Relaxed)) =>
            {
                Some((
                    Arc::new(cached),
                    Duration::from_millis(now.saturating_sub(stamp.stored)),
                ))
            }
            _ => None,
        };
        // A miss: what the store will be checked against, read before the handler runs
        // (boxed: a hit's future need not have room for it).
        match Box::pin(self.observe(scope, key_prefix, rest, tag)).await {
            Some(seen) => Lookup::Miss(Seen { stale, ..seen }),
            None => self.lookup_failed(),
        }
    }

    /// A lookup Redis did not answer: counted, and served as if there were no cache.
    fn lookup_failed(&self) -> Lookup {
        self.counters.errors.fetch_add(1, Ordering::Relaxed);
        Lookup::Unavailable
    }

    /// The full keys of the epochs of `names` in `scope`.
    fn epoch_keys(&self, scope: &str, names: &[String]) -> Vec<String> {
        names
            .iter()
            .map(|name| self.redis.key(&self.layout.epoch(scope, name)))
            .collect()
    }

    /// The in-process engine's epochs of an entry's memberships now (`REDIS_ENABLED=false`).
    fn local_seen(&self, scope: &str, key_prefix: &str, tag: Option<&str>) -> Seen {
        let mut epochs = match self.local_epochs.lock() {
            Ok(epochs) => epochs,
            Err(poisoned) => poisoned.into_inner(),
        };
        Seen {
            epochs: memberships(key_prefix, tag)
                .iter()
                .map(|name| Self::local_epoch(&mut epochs, scope, name).to_string())
                .collect(),
            generation: String::new(),
            after_one: false,
            stale: None,
        }
    }

    /// What a store of this key would be checked against now (its group's epoch and the
    /// entry's generation), without reading the entry. `None` when Redis cannot be asked
    /// (with the in-process engine, its own epochs).
    pub async fn observe(
        &self,
        scope: &str,
        key_prefix: &str,
        rest: &str,
        tag: Option<&str>,
    ) -> Option<Seen> {
        if self.is_local() {
            return Some(self.local_seen(scope, key_prefix, tag));
        }
        if !self.ready.load(Ordering::Acquire) {
            return None;
        }
        let entry = self
            .redis
            .key_of(&self.layout.entry_parts(scope, key_prefix, rest));
        let generation = self.redis.key(&self.layout.generation(&entry));
        let epoch_keys = self.epoch_keys(scope, &memberships(key_prefix, tag));
        let (read_generation, read_epochs) = (generation.clone(), epoch_keys.clone());
        let values = self
            .redis
            .connection()
            .run(|mut c| async move {
                redis::cmd("MGET")
                    .arg(&read_generation)
                    .arg(&read_epochs)
                    .query_async::<Vec<Option<String>>>(&mut c)
                    .await
            })
            .await
            .ok()?;
        let mut values: Vec<String> = if values.iter().skip(1).any(Option::is_none) {
            // An epoch never bumped, expired or evicted: made now, so that the store has
            // something to compare and the entry something to be stamped with.
            self.redis
                .connection()
                .run(|mut c| async move {
                    let mut invocation = ENSURE.prepare_invoke();
                    invocation.key(&generation);
                    for key in &epoch_keys {
                        invocation.key(key);
                    }
                    invocation
                        .arg(MADE_EPOCH_TTL.as_millis() as u64)
                        .invoke_async::<Vec<String>>(&mut c)
                        .await
                })
                .await
                .ok()?
        } else {
            values.into_iter().map(Option::unwrap_or_default).collect()
        };
        if values.is_empty() {
            return None;
        }
        let generation = values.remove(0);
        Some(Seen {
            epochs: values,
            generation,
            after_one: false,
            stale: None,
        })
    }

    /// Stores `cached` if no invalidation of its group happened since `seen` was read.
    /// Returns the TTL it was stored with, or `None` when it was not stored.
    #[allow(clippy::too_many_arguments)]
    pub async fn store(
        &self,
        scope: &str,
        key_prefix: &str,
        rest: &str,
        tag: Option<&str>,
        cached: &Cached,
        ttl: Duration,
        seen: &Seen,
    ) -> Option<Duration> {
        let group = group_of(key_prefix);
        let names = memberships(key_prefix, tag);
        let ttl = self.ttl_with_jitter(ttl);
        if let Ok(mut groups) = self.groups_seen.lock() {
            if !groups.contains(group) {
                groups.insert(group.to_string());
            }
        }
        if self.is_local() {
            // The epoch check and the insert under one lock: an invalidation is either
            // before both (the store is refused) or after both (it removes the entry).
            let Ok(epochs) = self.local_epochs.lock() else {
                return None;
            };
            // A missing epoch (the bounded map was emptied) matches nothing.
            let drift: Vec<u64> = names
                .iter()
                .zip(&seen.epochs)
                .map(|(name, seen)| {
                    match (epochs.get(&format!("{scope}\n{name}")), seen.parse::<u64>()) {
                        (Some(now), Ok(seen)) if *now >= seen => now - seen,
                        _ => u64::MAX,
                    }
                })
                .collect();
            if !epochs_allow(&drift, seen.after_one) {
                self.counters.stale_refused.fetch_add(1, Ordering::Relaxed);
                return None;
            }
            self.l1.insert_local(
                l1_key(scope, key_prefix, rest),
                scope,
                names.clone(),
                Arc::new(cached.clone()),
                ttl,
            );
            drop(epochs);
            self.counters.stores.fetch_add(1, Ordering::Relaxed);
            return Some(ttl);
        }
        let entry = self
            .redis
            .key_of(&self.layout.entry_parts(scope, key_prefix, rest));
        let generation = self.redis.key(&self.layout.generation(&entry));
        let mut keys = vec![entry, generation];
        for name in &names {
            keys.push(self.redis.key(&self.layout.epoch(scope, name)));
            keys.push(self.redis.key(&self.layout.index(scope, name)));
        }
        let ttl_ms = ttl.as_millis().max(1) as u64;
        let now = unix_millis();
        let value = cached.encode(Stamp {
            expires: now + ttl_ms,
            stored: now,
        });
        // Redis keeps the entry (and its index membership, so an invalidation still finds
        // it) for the grace period past its freshness.
        let ttl_ms = ttl_ms + self.grace.load(Ordering::Relaxed);
        let generation = seen.generation.clone();
        let mode = if seen.after_one { "after-one" } else { "exact" };
        let epochs = seen.epochs.clone();
        let stored = self
            .redis
            .connection()
            .run(|mut c| async move {
                let mut invocation = STORE.prepare_invoke();
                for key in &keys {
                    invocation.key(key);
                }
                invocation.arg(generation).arg(value).arg(ttl_ms).arg(mode);
                for epoch in &epochs {
                    invocation.arg(epoch);
                }
                invocation.invoke_async::<i64>(&mut c).await
            })
            .await;
        match stored {
            Ok(1) => {
                self.counters.stores.fetch_add(1, Ordering::Relaxed);
                Some(ttl)
            }
            Ok(_) => {
                self.counters.stale_refused.fetch_add(1, Ordering::Relaxed);
                None
            }
            Err(e) => {
                self.counters.errors.fetch_add(1, Ordering::Relaxed);
                warn_store_failed(&e);
                None
            }
        }
    }

    /// Deletes every entry of `groups` (e.g. `["posts", "feed"]`) in `scope`, and bumps
    /// their epochs so that no response computed before now can be stored afterwards.
    /// Returns the number of entries deleted, or `None` if Redis could not be asked.
    pub async fn invalidate(&self, scope: &str, groups: &[&str]) -> Option<u64> {
        if groups.is_empty() {
            return Some(0);
        }
        // This instance's L1 first, so the writer's own next read is current; then Redis;
        // then this instance's L1 again (below); then the other instances' L1, through the
        // channel.
        let owned: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
        if self.is_local() {
            if let Ok(mut epochs) = self.local_epochs.lock() {
                for group in groups {
                    let key = format!("{scope}\n{group}");
                    match epochs.get_mut(&key) {
                        Some(epoch) => *epoch += 1,
                        None => {
                            Self::local_epoch(&mut epochs, scope, group);
                        }
                    }
                }
                self.l1.invalidate(scope, &owned);
            }
            self.counters
                .invalidations
                .fetch_add(groups.len() as u64, Ordering::Relaxed);
            return Some(0);
        }
        self.l1.invalidate(scope, &owned);
        let message = self.l1.message(scope, groups).encode();
        let channel = self.channel();
        let mut keys = Vec::with_capacity(groups.len() * 2);
        for group in groups {
            keys.push(self.redis.key(&self.layout.epoch(scope, group)));
            keys.push(self.redis.key(&self.layout.index(scope, group)));
        }
        let epoch_ttl = EPOCH_TTL.as_millis() as u64;
        let entry_base = self
            .redis
            .key_of(&self.layout.entry_parts(scope, "", "")[..5]);
        let index_base = self.redis.key(&self.layout.index(scope, ""));
        // A group's name is a key prefix's first segment; tags and key prefixes have more.
        let is_group: Vec<&str> = groups
            .iter()
            .map(|name| {
                if name.contains(':') || name.starts_with('#') {
                    "0"
                } else {
                    "1"
                }
            })
            .collect();
        let removed = self
            .redis
            .connection()
            .run(|mut c| async move {
                let mut invocation = INVALIDATE.prepare_invoke();
                for key in &keys {
                    invocation.key(key);
                }
                invocation.arg(epoch_ttl).arg(&entry_base).arg(&index_base);
                for flag in &is_group {
                    invocation.arg(*flag);
                }
                invocation.invoke_async::<u64>(&mut c).await
            })
            .await;
        // And again now that Redis has run the script (or given up on it). A read that
        // missed L1 after the first mark but reached Redis before the script read the old
        // entry, and L1 would have kept it as fresh from after the write for the whole
        // bound: a probe saw writes served stale for 296 ms at a 200 ms bound. Every read
        // whose content was taken before this moment is refused from L1 now; a read that
        // starts after it is sent behind the script on the connection, and sees its effect.
        self.l1.invalidate(scope, &owned);
        let active = self.redis.key(ACTIVE);
        let (scope_owned, now_ms) = (scope.to_string(), unix_millis());
        // Two commands, sent together (the multiplexed connection pipelines them), not one
        // pipeline: on a cluster a pipeline goes to one node, and `PUBLISH` has no key to
        // route by beside the activity record's, so the pipeline failed there and no
        // instance ever heard of an invalidation (each L1 then lagged its whole bound).
        let publish = self.redis.connection().run(|mut c| async move {
            redis::cmd("PUBLISH")
                .arg(channel)
                .arg(message)
                .query_async::<i64>(&mut c)
                .await
        });
        // Scheduled warm-ups read the organizations that wrote lately. Records older than
        // a day are trimmed here too, and the set expires a day after the last write: only
        // a warm-up trimmed it before, so with warm-ups off it grew by every organization
        // that ever wrote, without a TTL (found by a probe).
        let tracked = self.tracks_activity.load(Ordering::Relaxed);
        let record = async move {
            if !tracked {
                return;
            }
            // Best effort: a lost record only makes a warm-up skip the scope once.
            let _ = self
                .redis
                .connection()
                .run(|mut c| async move {
                    let keep = ACTIVE_KEPT.as_millis() as u64;
                    redis::pipe()
                        .cmd("ZADD")
                        .arg(&active)
                        .arg(now_ms)
                        .arg(scope_owned)
                        .ignore()
                        .cmd("ZREMRANGEBYSCORE")
                        .arg(&active)
                        .arg("-inf")
                        .arg(format!("({}", now_ms.saturating_sub(keep)))
                        .ignore()
                        .cmd("PEXPIRE")
                        .arg(&active)
                        .arg(keep)
                        .ignore()
                        .query_async::<()>(&mut c)
                        .await
                })
                .await;
        };
        let (published, ()) = tokio::join!(publish, record);
        if published.is_ok() {
            self.l1.published.fetch_add(1, Ordering::Relaxed);
        }
        match removed {
            Ok(n) => {
                self.counters
                    .invalidations
                    .fetch_add(groups.len() as u64, Ordering::Relaxed);
                self.counters
                    .invalidated_keys
                    .fetch_add(n, Ordering::Relaxed);
                Some(n)
            }
            Err(e) => {
                self.counters.errors.fetch_add(1, Ordering::Relaxed);
                // A refusal that lasts (`RedisError::refused_write`), not a time-out, a lost
                // connection or a moved slot: the breaker and the cluster link handle those,
                // and the outbox applies the invalidation once it passes (suspending the
                // cache for them turned a planned failover into a whole-cache flush).
                if e.refused_write().is_some() {
                    self.suspend(&e);
                }
                None
            }
        }
    }

    /// Redis answered an invalidation with a refusal that lasts until an operator acts
    /// ([`RedisError::refused_write`]), while still serving reads: the entries it should have deleted would be served stale until their
    /// TTL (a probe saw minutes of it). Lookups bypass the cache from here until a flush of
    /// every entry succeeds, as after an outage ([`recover`](Self::recover)); the write's
    /// outbox record is applied again meanwhile. Every instance retrying that record meets
    /// the same refusal, and so stops serving from the cache too. One warning per episode.
    fn suspend(&self, error: &RedisError) {
        if self.ready.swap(false, Ordering::AcqRel) {
            tracing::warn!(
                "Redis did not apply a cache invalidation ({error}); serving no cached \
                 response until the whole cache can be flushed"
            );
        }
        self.refused.notify_one();
    }

    /// Cache-aside for code that is not an HTTP handler: returns the cached value of
    /// `name` under `key_prefix` in `scope`, or computes, stores (with the same race
    /// protection as responses) and returns it. Redis down: computes every time.
    pub async fn get_or_set<T, F, Fut>(
        &self,
        scope: &str,
        key_prefix: &str,
        name: &str,
        ttl: Duration,
        compute: F,
    ) -> T
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = T>,
    {
        let seen = match self.lookup(scope, key_prefix, name, None).await {
            Lookup::Hit(cached, _) => {
                if let Ok(value) = serde_json::from_slice(&cached.body) {
                    self.counters.hits.fetch_add(1, Ordering::Relaxed);
                    return value;
                }
                None
            }
            Lookup::Miss(seen) => Some(seen),
            Lookup::Unavailable => None,
        };
        self.counters.misses.fetch_add(1, Ordering::Relaxed);
        let value = compute().await;
        if let (Some(seen), Ok(body)) = (seen, serde_json::to_vec(&value)) {
            let cached = Cached::new("application/json".into(), Bytes::from(body));
            self.store(scope, key_prefix, name, None, &cached, ttl, &seen)
                .await;
        }
        value
    }
}

impl std::fmt::Debug for ResponseCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseCache")
            .field("redis", &self.redis)
            .field("jitter", &self.jitter)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_process_epochs_are_bounded_and_never_repeat_a_value() {
        let mut epochs = HashMap::new();
        let first = ResponseCache::local_epoch(&mut epochs, "org", "#item:0");
        assert_eq!(
            ResponseCache::local_epoch(&mut epochs, "org", "#item:0"),
            first
        );
        for i in 1..LOCAL_EPOCHS_MAX {
            ResponseCache::local_epoch(&mut epochs, "org", &format!("#item:{i}"));
        }
        assert_eq!(epochs.len(), LOCAL_EPOCHS_MAX);
        // One name more empties the map: it holds only the new one.
        ResponseCache::local_epoch(&mut epochs, "org", "#item:new");
        assert_eq!(epochs.len(), 1);
        // Made again, the first name's epoch is above anything it was, bumps included.
        let again = ResponseCache::local_epoch(&mut epochs, "org", "#item:0");
        assert!(again > first + u64::from(u32::MAX), "{again} vs {first}");
        // A store that saw a value the map no longer has, or a greater one, drifts.
        assert!(!epochs_allow(&[u64::MAX, 0], false));
        assert!(!epochs_allow(&[u64::MAX, u64::MAX], true));
    }
}
