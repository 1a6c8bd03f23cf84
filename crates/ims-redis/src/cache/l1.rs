//! The in-process tier (L1) in front of Redis, kept coherent across instances.
//!
//! An L1 hit costs no Redis round trip, so it is reserved for routes that declare how stale
//! they may be (`CacheLayer::with_l1`). Three rules bound that staleness, also when
//! invalidation messages are lost:
//!
//! - every entry is served for at most `max_stale` after the moment its content was read
//!   from Redis or computed (the start of the lookup, not the insert, so a read that raced a
//!   write counts from before the write); after that the next request revalidates it
//!   against Redis;
//! - invalidations are applied to the local L1 before the write's response is sent (before
//!   and again after Redis ran them, so that a read that reached Redis first is refused), and
//!   published on `{prefix}cache:invalidate` with a per-instance sequence number; a
//!   subscriber that sees a gap in a sender's sequence, or loses its subscription, drops its
//!   whole L1 and serves nothing from it until it is subscribed again;
//! - while Redis is unreachable the L1 serves nothing (another instance may be writing).
//!
//! moka bounds the tier in bytes (`CACHE_L1_MAX_BYTES`) with its TinyLFU eviction; this
//! module adds only the freshness and coherence rules, which no crate offers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::Cached;

/// The most senders whose last sequence number is kept for the gap check.
const LAST_SEEN_MAX: usize = 1024;

/// Invalidations of the last `max_stale` or so (see `L1::recent`).
#[derive(Debug)]
struct Recent {
    /// scope → name → when.
    names: HashMap<String, HashMap<String, Instant>>,
    /// When records older than `max_stale` were last dropped: at most once per `max_stale`,
    /// since dropping walks every record (on every invalidation, a thousand organizations
    /// writing each second made each write walk thousands of records).
    pruned_at: Instant,
}

/// One L1 entry.
#[derive(Debug)]
struct Entry {
    cached: Arc<Cached>,
    scope: String,
    /// The names the entry is indexed under (group, key prefix, tag): an invalidation of
    /// any of them drops it.
    names: Vec<String>,
    /// When the content was read from Redis or computed (before, to be safe).
    fresh_at: Instant,
    /// When the Redis entry expires.
    expires_at: Instant,
}

/// An invalidation message: `<instance>:<seq>:<scope>|<name>,<name>…`. The scope and the
/// names (groups, key prefixes such as `posts:list`, tags such as `#post:42`) may contain
/// `:`, so the scope ends at the last `|`; names never contain `|` or `,`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Message {
    pub instance: u64,
    pub seq: u64,
    pub scope: String,
    pub groups: Vec<String>,
}

impl Message {
    pub fn encode(&self) -> String {
        format!(
            "{}:{}:{}|{}",
            self.instance,
            self.seq,
            self.scope,
            self.groups.join(",")
        )
    }

    pub fn decode(text: &str) -> Option<Self> {
        let (instance, rest) = text.split_once(':')?;
        let (seq, rest) = rest.split_once(':')?;
        let (scope, groups) = rest.rsplit_once('|')?;
        Some(Self {
            instance: instance.parse().ok()?,
            seq: seq.parse().ok()?,
            scope: scope.to_string(),
            groups: groups.split(',').map(str::to_string).collect(),
        })
    }
}

/// The in-process tier.
pub(crate) struct L1 {
    entries: moka::sync::Cache<String, Arc<Entry>>,
    max_stale: Duration,
    /// True while subscribed to invalidations (and nothing was missed since).
    subscribed: AtomicBool,
    /// This process's id in invalidation messages.
    pub instance: u64,
    seq: AtomicU64,
    /// The last sequence number seen from each other instance.
    last_seen: Mutex<HashMap<u64, u64>>,
    /// Invalidations of the last `max_stale`: scope → name → when. An entry whose content
    /// was read before an invalidation of one of its names is not served. Older ones need
    /// no record, since an entry read before them is past `max_stale` and not served
    /// anyway, so this holds at most a `max_stale`'s worth of writes. It replaces moka's
    /// `invalidate_entries_if`, whose predicates every `get` checked until a background scan
    /// of the whole tier retired them: under a steady stream of writes each hit cost more
    /// the more writes were pending (a code review). Not for the process-only cache, whose
    /// entries live their TTL: it keeps the predicates.
    recent: Mutex<Recent>,
    /// The process-only cache (`REDIS_ENABLED=false`): invalidation by predicate.
    local: bool,
    pub hits: AtomicU64,
    pub flushes: AtomicU64,
    pub published: AtomicU64,
    pub received: AtomicU64,
    /// Kept here with the other per-engine counters of the cluster features.
    pub lock_waits: AtomicU64,
}

impl L1 {
    pub fn new(max_bytes: u64, max_stale: Duration, local: bool) -> Self {
        let builder = moka::sync::Cache::builder()
            .max_capacity(max_bytes)
            // Body plus key plus bookkeeping; a zero weight would escape the bound.
            .weigher(|key: &String, entry: &Arc<Entry>| {
                let bytes = key.len()
                    + entry.cached.body.len()
                    + entry.cached.etag.len()
                    + entry.cached.content_type.len()
                    + entry.scope.len()
                    + entry.names.iter().map(String::len).sum::<usize>()
                    + 128;
                u32::try_from(bytes).unwrap_or(u32::MAX)
            });
        let entries = if local {
            builder.support_invalidation_closures().build()
        } else {
            builder.build()
        };
        Self {
            entries,
            max_stale,
            subscribed: AtomicBool::new(false),
            instance: rand::random::<u64>() >> 1,
            seq: AtomicU64::new(0),
            last_seen: Mutex::new(HashMap::new()),
            recent: Mutex::new(Recent {
                names: HashMap::new(),
                pruned_at: Instant::now(),
            }),
            local,
            hits: AtomicU64::new(0),
            flushes: AtomicU64::new(0),
            published: AtomicU64::new(0),
            received: AtomicU64::new(0),
            lock_waits: AtomicU64::new(0),
        }
    }

    /// Whether the tier is on (`max_stale` above zero).
    pub fn serves(&self) -> bool {
        !self.max_stale.is_zero()
    }

    /// A fresh entry for `key` and its remaining TTL, if the tier may serve at all
    /// (`usable`: subscribed and Redis reachable, decided by the caller).
    pub fn get(
        &self,
        key: &str,
        max_stale: Duration,
        usable: bool,
    ) -> Option<(Arc<Cached>, Duration)> {
        if !usable || !self.subscribed.load(Ordering::Acquire) {
            return None;
        }
        let bound = max_stale.min(self.max_stale);
        if bound.is_zero() {
            return None;
        }
        let entry = self.entries.get(key)?;
        let now = Instant::now();
        if now.duration_since(entry.fresh_at) > bound || now >= entry.expires_at {
            return None;
        }
        if self.invalidated_since(&entry) {
            self.entries.invalidate(key);
            return None;
        }
        self.hits.fetch_add(1, Ordering::Relaxed);
        Some((entry.cached.clone(), entry.expires_at - now))
    }

    /// Records `cached`, whose content was current at `fresh_at`, living `ttl` in Redis.
    pub fn insert(
        &self,
        key: String,
        scope: &str,
        names: Vec<String>,
        cached: Arc<Cached>,
        fresh_at: Instant,
        ttl: Duration,
    ) {
        if !self.serves() || !self.subscribed.load(Ordering::Acquire) {
            return;
        }
        let entry = Entry {
            cached,
            scope: scope.to_string(),
            names,
            fresh_at,
            expires_at: Instant::now() + ttl,
        };
        self.entries.insert(key, Arc::new(entry));
    }

    /// An entry of the process-only cache (`REDIS_ENABLED=false`): there is no other
    /// instance, so only its TTL limits it.
    pub fn get_local(&self, key: &str) -> Option<(Arc<Cached>, Duration)> {
        let entry = self.entries.get(key)?;
        let left = entry.expires_at.checked_duration_since(Instant::now())?;
        if left.is_zero() {
            return None;
        }
        self.hits.fetch_add(1, Ordering::Relaxed);
        Some((entry.cached.clone(), left))
    }

    /// Stores into the process-only cache (see [`get_local`](Self::get_local)).
    pub fn insert_local(
        &self,
        key: String,
        scope: &str,
        names: Vec<String>,
        cached: Arc<Cached>,
        ttl: Duration,
    ) {
        let now = Instant::now();
        let entry = Entry {
            cached,
            scope: scope.to_string(),
            names,
            fresh_at: now,
            expires_at: now + ttl,
        };
        self.entries.insert(key, Arc::new(entry));
    }

    /// Whether one of `entry`'s names was invalidated at or after its content was read.
    fn invalidated_since(&self, entry: &Entry) -> bool {
        let Ok(recent) = self.recent.lock() else {
            // Poisoned by a panic elsewhere: serve nothing rather than risk a stale entry.
            return true;
        };
        let Some(names) = recent.names.get(&entry.scope) else {
            return false;
        };
        entry
            .names
            .iter()
            .any(|name| names.get(name).is_some_and(|at| entry.fresh_at <= *at))
    }

    /// Drops the entries of `scope` indexed under any of `names` (groups, key prefixes,
    /// tags): every later `get` of them misses.
    pub fn invalidate(&self, scope: &str, names: &[String]) {
        if self.local {
            let (scope, names) = (scope.to_string(), names.to_vec());
            // Applied to every later read at once; moka removes the entries in the
            // background.
            let _ = self.entries.invalidate_entries_if(move |_, entry| {
                entry.scope == scope && entry.names.iter().any(|name| names.contains(name))
            });
            return;
        }
        let now = Instant::now();
        let Ok(mut recent) = self.recent.lock() else {
            self.flush();
            return;
        };
        // What `max_stale` already refuses needs no record.
        if now.duration_since(recent.pruned_at) >= self.max_stale {
            let max_stale = self.max_stale;
            recent.names.retain(|_, names| {
                names.retain(|_, at| now.duration_since(*at) <= max_stale);
                !names.is_empty()
            });
            recent.pruned_at = now;
        }
        let names_of_scope = recent.names.entry(scope.to_string()).or_default();
        for name in names {
            names_of_scope.insert(name.clone(), now);
        }
    }

    /// Drops everything.
    pub fn flush(&self) {
        self.entries.invalidate_all();
        self.flushes.fetch_add(1, Ordering::Relaxed);
    }

    /// The next message to publish for an invalidation of `groups` in `scope`.
    pub fn message(&self, scope: &str, groups: &[&str]) -> Message {
        Message {
            instance: self.instance,
            seq: self.seq.fetch_add(1, Ordering::Relaxed) + 1,
            scope: scope.to_string(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    /// Subscribed (`true`) or not: losing the subscription empties the tier, since whatever
    /// was published meanwhile is lost.
    pub fn set_subscribed(&self, subscribed: bool) {
        let was = self.subscribed.swap(subscribed, Ordering::AcqRel);
        if was && !subscribed {
            self.flush();
        }
        if subscribed {
            if let Ok(mut seen) = self.last_seen.lock() {
                seen.clear();
            }
        }
    }

    /// Applies a received message. A gap in a sender's sequence means messages were lost:
    /// the whole tier is dropped.
    pub fn receive(&self, message: &Message) {
        if message.instance == self.instance {
            return;
        }
        self.received.fetch_add(1, Ordering::Relaxed);
        let gap = match self.last_seen.lock() {
            Ok(mut seen) => {
                // Every restart is a new instance id: forgetting them all now and then keeps
                // the map bounded, and costs only the gap check of each sender's next
                // message (`max_stale` bounds staleness without it).
                if seen.len() >= LAST_SEEN_MAX && !seen.contains_key(&message.instance) {
                    seen.clear();
                }
                let previous = seen.insert(message.instance, message.seq);
                previous.is_some_and(|p| message.seq != p + 1)
            }
            Err(_) => true,
        };
        if gap {
            self.flush();
        } else {
            self.invalidate(&message.scope, &message.groups);
        }
    }

    /// Entries of `scope` now (a walk over the tier: for statistics, not hot paths).
    pub fn count_scope(&self, scope: &str) -> u64 {
        let now = Instant::now();
        self.entries
            .iter()
            .filter(|(_, entry)| entry.scope == scope && entry.expires_at > now)
            .count() as u64
    }

    /// Entries and weighed bytes (approximate until moka's pending tasks run).
    pub fn size(&self) -> (u64, u64) {
        self.entries.run_pending_tasks();
        (self.entries.entry_count(), self.entries.weighted_size())
    }
}

/// Size and staleness bound of the in-process tier (`CACHE_L1_MAX_BYTES`,
/// `CACHE_L1_MAX_STALE_MS`).
#[derive(Debug, Clone, Copy)]
pub struct L1Settings {
    /// Bytes of responses (and their keys) kept in process at most.
    pub max_bytes: u64,
    /// The most an L1 entry may lag behind Redis; routes may declare less.
    pub max_stale: Duration,
}

impl Default for L1Settings {
    fn default() -> Self {
        Self {
            max_bytes: 64 * 1024 * 1024,
            max_stale: Duration::from_millis(1000),
        }
    }
}

/// Keeps `cache`'s L1 subscribed to invalidations for as long as the cache lives: while
/// not subscribed, the tier is empty and serves nothing.
pub(super) async fn subscribe(cache: std::sync::Weak<super::ResponseCache>) {
    use futures::StreamExt;
    loop {
        let Some(engine) = cache.upgrade() else {
            return;
        };
        let connection = engine.redis.connection().clone();
        let channel = engine.channel();
        drop(engine);
        if let Some(mut pubsub) = connection.pubsub().await {
            if pubsub.subscribe(&channel).await.is_ok() {
                if let Some(engine) = cache.upgrade() {
                    engine.l1.set_subscribed(true);
                }
                let mut messages = pubsub.on_message();
                while let Some(message) = messages.next().await {
                    let Some(engine) = cache.upgrade() else {
                        return;
                    };
                    let payload: Option<String> = message.get_payload().ok();
                    match payload.as_deref().and_then(Message::decode) {
                        Some(message) => engine.l1.receive(&message),
                        None => engine.l1.flush(),
                    }
                }
            }
        }
        let Some(engine) = cache.upgrade() else {
            return;
        };
        engine.l1.set_subscribed(false);
        drop(engine);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn cached(body: &str) -> Arc<Cached> {
        Arc::new(Cached::new(
            "text/plain".into(),
            Bytes::from(body.to_string()),
        ))
    }

    fn tier() -> L1 {
        let l1 = L1::new(1 << 20, Duration::from_millis(200), false);
        l1.set_subscribed(true);
        l1
    }

    #[test]
    fn messages_round_trip_with_colons_in_the_scope() {
        let m = Message {
            instance: 7,
            seq: 3,
            scope: "a:b".into(),
            groups: vec!["posts".into(), "feed".into()],
        };
        assert_eq!(Message::decode(&m.encode()), Some(m));
        assert_eq!(Message::decode("x:1:s|g"), None);
        let tagged = Message {
            instance: 7,
            seq: 3,
            scope: "org:with:colons".into(),
            groups: vec!["posts:list".into(), "#post:42".into()],
        };
        assert_eq!(Message::decode(&tagged.encode()), Some(tagged));
    }

    #[test]
    fn entries_are_served_only_while_fresh_and_usable() {
        let l1 = tier();
        let fresh = Instant::now();
        l1.insert(
            "k".into(),
            "o",
            vec!["posts".into()],
            cached("a"),
            fresh,
            Duration::from_secs(60),
        );
        assert!(l1.get("k", Duration::from_secs(1), true).is_some());
        assert!(
            l1.get("k", Duration::from_secs(1), false).is_none(),
            "Redis down"
        );
        let old = Instant::now() - Duration::from_millis(300);
        l1.insert(
            "old".into(),
            "o",
            vec!["posts".into()],
            cached("a"),
            old,
            Duration::from_secs(60),
        );
        assert!(
            l1.get("old", Duration::from_secs(1), true).is_none(),
            "past max_stale"
        );
        l1.set_subscribed(false);
        assert!(
            l1.get("k", Duration::from_secs(1), true).is_none(),
            "unsubscribed"
        );
    }

    #[test]
    fn invalidations_hit_their_scope_and_groups_and_gaps_flush_everything() {
        let l1 = tier();
        let now = Instant::now();
        let ttl = Duration::from_secs(60);
        l1.insert(
            "a1".into(),
            "a",
            vec!["posts".into()],
            cached("1"),
            now,
            ttl,
        );
        l1.insert(
            "a2".into(),
            "a",
            vec!["authors".into()],
            cached("2"),
            now,
            ttl,
        );
        l1.insert(
            "b1".into(),
            "b",
            vec!["posts".into()],
            cached("3"),
            now,
            ttl,
        );
        let other = |seq| Message {
            instance: l1.instance + 1,
            seq,
            scope: "a".into(),
            groups: vec!["posts".into()],
        };
        l1.receive(&other(1));
        let bound = Duration::from_secs(1);
        assert!(l1.get("a1", bound, true).is_none());
        assert!(l1.get("a2", bound, true).is_some());
        assert!(l1.get("b1", bound, true).is_some());
        // Message 2 was lost: 3 arrives, the whole tier goes.
        l1.receive(&other(3));
        assert!(l1.get("a2", bound, true).is_none());
        assert!(l1.get("b1", bound, true).is_none());
        assert_eq!(l1.flushes.load(Ordering::Relaxed), 1);
    }

    /// An entry read before an invalidation of one of its names is not served, even when
    /// inserted after it (a read that raced the write); one read after it is. The record of
    /// invalidations keeps only the last `max_stale`.
    #[test]
    fn invalidations_drop_what_was_read_before_them_and_are_forgotten_after_max_stale() {
        let l1 = tier();
        let names = || vec!["posts".to_string(), "#post:1".to_string()];
        let before = Instant::now();
        std::thread::sleep(Duration::from_millis(2));
        l1.invalidate("org", &["#post:1".to_string()]);
        l1.insert(
            "raced".into(),
            "org",
            names(),
            cached("old"),
            before,
            Duration::from_secs(60),
        );
        assert!(l1.get("raced", Duration::MAX, true).is_none());
        std::thread::sleep(Duration::from_millis(2));
        l1.insert(
            "after".into(),
            "org",
            names(),
            cached("new"),
            Instant::now(),
            Duration::from_secs(60),
        );
        assert!(l1.get("after", Duration::MAX, true).is_some());
        // Another scope, or a name it does not have: untouched.
        l1.insert(
            "other".into(),
            "org2",
            names(),
            cached("x"),
            before,
            Duration::from_secs(60),
        );
        assert!(l1.get("other", Duration::MAX, true).is_some());
        // Past max_stale (200 ms), the next invalidation forgets this one.
        std::thread::sleep(Duration::from_millis(250));
        l1.invalidate("org", &["tags".to_string()]);
        let recent = l1.recent.lock().expect("lock");
        assert_eq!(recent.names.len(), 1);
        assert_eq!(recent.names["org"].keys().collect::<Vec<_>>(), ["tags"]);
    }
}
