//! The response-cache engine against a private redis-server: race protection, index-based
//! invalidation cost, and bounded bookkeeping.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ims_redis::cache::{CacheLayer, Cached, L1Settings, Lookup, ResponseCache, Seen};
use ims_redis::{RedisConfig, RedisConnection, RedisService};
use ims_testkit::RedisServer;

/// The service the engines run on: `server`, probed every 100 ms, keys under `ims:`.
async fn service(server: &RedisServer) -> RedisService {
    let config = RedisConfig {
        url: Some(server.url()),
        probe_interval: Duration::from_millis(100),
        ..RedisConfig::default()
    };
    let connection = RedisConnection::connect(config).await;
    assert!(connection.is_connected());
    RedisService::new(connection, "ims:")
}

async fn engine(server: &RedisServer) -> (Arc<ResponseCache>, redis::Connection) {
    let redis = service(server).await;
    // Scope from a header, as an application would from a verified token.
    let cache = ResponseCache::new(
        redis,
        Arc::new(|parts: &http::request::Parts| {
            parts
                .headers
                .get("x-tenant")?
                .to_str()
                .ok()
                .map(str::to_string)
        }),
        0.0,
    );
    let raw = redis::Client::open(server.url())
        .and_then(|c| c.get_connection())
        .expect("raw connection");
    (cache, raw)
}

/// `CONFIG SET` of each `(name, value)`.
fn config_set(raw: &mut redis::Connection, settings: &[(&str, &str)]) {
    let mut cmd = redis::cmd("CONFIG");
    cmd.arg("SET");
    for (name, value) in settings {
        cmd.arg(*name).arg(*value);
    }
    let () = cmd.query(raw).expect("config set");
}

/// An engine over a Redis that may evict any key (`allkeys-lru` under a `maxmemory`, as
/// contract §1 runs a cache Redis of its own).
async fn evicting_engine(server: &RedisServer) -> (Arc<ResponseCache>, redis::Connection) {
    let mut raw = redis::Client::open(server.url())
        .and_then(|c| c.get_connection())
        .expect("raw connection");
    config_set(
        &mut raw,
        &[("maxmemory-policy", "allkeys-lru"), ("maxmemory", "64mb")],
    );
    let (cache, raw) = engine(server).await;
    assert!(cache.checks_epochs());
    (cache, raw)
}

/// Calls of `command` so far, from `INFO commandstats`.
fn calls(raw: &mut redis::Connection, command: &str) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(raw)
        .expect("info");
    info.lines()
        .find_map(|line| line.strip_prefix(&format!("cmdstat_{command}:calls=")))
        .and_then(|rest| rest.split(',').next()?.parse().ok())
        .unwrap_or(0)
}

fn body(text: &'static str) -> Cached {
    Cached::new(
        "application/json".into(),
        Bytes::from_static(text.as_bytes()),
    )
}

/// The one entry the race test reads and writes: `org1`'s `posts:list` for `GET /posts?x`.
const ENTRY: (&str, &str, &str) = ("org1", "posts:list", "GET:/posts:x");

async fn lookup(cache: &ResponseCache) -> Lookup {
    cache.lookup(ENTRY.0, ENTRY.1, ENTRY.2, None).await
}

/// Stores `text` for 60 s against what the miss saw; the TTL it got, `None` if refused.
async fn store(cache: &ResponseCache, text: &'static str, seen: &Seen) -> Option<Duration> {
    let ttl = Duration::from_secs(60);
    let (scope, prefix, rest) = ENTRY;
    cache
        .store(scope, prefix, rest, None, &body(text), ttl, seen)
        .await
}

#[tokio::test]
async fn a_miss_that_began_before_an_invalidation_cannot_store() {
    let server = RedisServer::start();
    let (cache, _) = engine(&server).await;
    let Lookup::Miss(seen) = lookup(&cache).await else {
        panic!("empty cache must miss");
    };
    // A write lands while the handler runs.
    cache
        .invalidate("org1", &["posts"])
        .await
        .expect("invalidated");
    assert_eq!(
        store(&cache, "old", &seen).await,
        None,
        "the older response is refused"
    );
    assert!(matches!(lookup(&cache).await, Lookup::Miss(_)));
    assert_eq!(cache.stats().stale_stores_refused, 1);

    // Another group's invalidation does not refuse it; the same group's does.
    let Lookup::Miss(seen) = lookup(&cache).await else {
        panic!("miss");
    };
    cache
        .invalidate("org1", &["contacts"])
        .await
        .expect("invalidated");
    cache
        .invalidate("org2", &["posts"])
        .await
        .expect("invalidated");
    assert_eq!(
        store(&cache, "new", &seen).await,
        Some(Duration::from_secs(60))
    );
    match lookup(&cache).await {
        Lookup::Hit(cached, ttl) => {
            assert_eq!(cached.body, Bytes::from_static(b"new"));
            assert!(ttl <= Duration::from_secs(60) && ttl > Duration::from_secs(58));
        }
        other => panic!("expected a hit, got {other:?}"),
    }
}

#[tokio::test]
async fn invalidation_touches_only_the_groups_entries_whatever_else_is_in_redis() {
    let server = RedisServer::start();
    let (cache, mut raw) = engine(&server).await;
    // 50,000 unrelated keys, some of them looking like cache entries of other tenants.
    let mut pipe = redis::pipe();
    for i in 0..50_000 {
        pipe.cmd("SET")
            .arg(format!(
                "ims:cache:other{}:posts:list:GET:/posts:{i}",
                i % 7
            ))
            .arg(1)
            .ignore();
    }
    let () = pipe.query(&mut raw).expect("fill");
    for i in 0..20 {
        let rest = format!("GET:/posts:{i}");
        let Lookup::Miss(seen) = cache.lookup("org1", "posts:list", &rest, None).await else {
            panic!("miss")
        };
        cache
            .store(
                "org1",
                "posts:list",
                &rest,
                None,
                &body("x"),
                Duration::from_secs(60),
                &seen,
            )
            .await
            .expect("stored");
    }
    let Lookup::Miss(seen) = cache.lookup("org1", "tags:list", "GET:/tags:h", None).await else {
        panic!("miss")
    };
    cache
        .store(
            "org1",
            "tags:list",
            "GET:/tags:h",
            None,
            &body("t"),
            Duration::from_secs(60),
            &seen,
        )
        .await
        .expect("stored");

    let removed = cache
        .invalidate("org1", &["posts"])
        .await
        .expect("invalidated");
    assert_eq!(removed, 20);
    let size: u64 = redis::cmd("DBSIZE").query(&mut raw).expect("dbsize");
    // The 50,000 others, the tags entry and its two indexes (group `tags`, key prefix
    // `tags:list`) and the four epochs the misses made (`posts`, `posts:list`, `tags`,
    // `tags:list`; the first one bumped since); no record of org1's activity (only a
    // cache told to `track_activity`, for warm-ups, keeps one). The `posts:list` index
    // went with its entries: a group's invalidation drops the indexes of its key prefixes
    // (left, it held a member per deleted entry for an hour).
    assert_eq!(size, 50_000 + 3 + 4);
    assert!(matches!(
        cache.lookup("org1", "tags:list", "GET:/tags:h", None).await,
        Lookup::Hit(..)
    ));
}

#[tokio::test]
async fn bookkeeping_stays_bounded_under_distinct_misses_without_writes() {
    let server = RedisServer::start();
    let (cache, mut raw) = engine(&server).await;
    let ttl = Duration::from_millis(150);
    let started = Instant::now();
    let mut largest_index = 0u64;
    let mut i = 0;
    // Distinct misses for a while, with no invalidation ever: entries expire by TTL, and
    // each store trims the index of members that have expired.
    while started.elapsed() < Duration::from_millis(1200) {
        let rest = format!("GET:/posts:{i}");
        i += 1;
        let Lookup::Miss(seen) = cache.lookup("org1", "posts:list", &rest, None).await else {
            panic!("miss")
        };
        cache
            .store("org1", "posts:list", &rest, None, &body("x"), ttl, &seen)
            .await
            .expect("stored");
        let size: u64 = redis::cmd("ZCARD")
            .arg("ims:cacheidx:org1:posts")
            .query(&mut raw)
            .expect("zcard");
        largest_index = largest_index.max(size);
    }
    assert!(i > 200, "enough distinct misses to matter ({i})");
    let live: Vec<String> = redis::cmd("KEYS")
        .arg("ims:cache:*")
        .query(&mut raw)
        .expect("keys");
    let index: u64 = redis::cmd("ZCARD")
        .arg("ims:cacheidx:org1:posts")
        .query(&mut raw)
        .expect("zcard");
    // Entries keep expiring between the last store (which trims) and these reads; at
    // thousands of stores a second that is more than a fixed handful, hence the 10 %.
    let live_count = live.len() as u64;
    assert!(
        index <= live_count + 50 + live_count / 10,
        "index {index} vs {} live entries",
        live.len()
    );
    assert!(
        largest_index < i / 2,
        "the index never held most of the {i} entries ({largest_index})"
    );
    // Idle, everything goes: entries and the index expire on their own. What stays is one
    // epoch per name (here the group and the key prefix), for minutes, whatever the number
    // of entries.
    tokio::time::sleep(Duration::from_millis(400)).await;
    // KEYS skips logically expired keys that Redis' active expiry has not reclaimed yet.
    let mut left: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut raw).expect("keys");
    left.sort();
    assert_eq!(
        left,
        [
            "ims:cacheepoch:org1:posts",
            "ims:cacheepoch:org1:posts:list"
        ],
        "nothing else left behind"
    );
}

#[tokio::test]
async fn get_or_set_computes_once_then_serves_until_invalidated() {
    let server = RedisServer::start();
    let (cache, _) = engine(&server).await;
    let runs = std::sync::atomic::AtomicU32::new(0);
    let compute = || async {
        runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        vec![1, 2, 3]
    };
    let ttl = Duration::from_secs(60);
    let first: Vec<i32> = cache
        .get_or_set("org1", "stats:nightly", "totals", ttl, compute)
        .await;
    let second: Vec<i32> = cache
        .get_or_set("org1", "stats:nightly", "totals", ttl, compute)
        .await;
    assert_eq!((first, second), (vec![1, 2, 3], vec![1, 2, 3]));
    assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 1);
    // Other tenants compute their own; invalidating the group recomputes.
    let _: Vec<i32> = cache
        .get_or_set("org2", "stats:nightly", "totals", ttl, compute)
        .await;
    assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 2);
    cache
        .invalidate("org1", &["stats"])
        .await
        .expect("invalidated");
    let _: Vec<i32> = cache
        .get_or_set("org1", "stats:nightly", "totals", ttl, compute)
        .await;
    assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 3);
    // Redis gone: computed every time, never an error.
    server.stop();
    let _: Vec<i32> = cache
        .get_or_set("org1", "stats:nightly", "totals", ttl, compute)
        .await;
    let _: Vec<i32> = cache
        .get_or_set("org1", "stats:nightly", "totals", ttl, compute)
        .await;
    assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 5);
}

#[tokio::test]
async fn a_tag_invalidation_drops_exactly_its_entries_and_refuses_older_stores() {
    let server = RedisServer::start();
    let (cache, _raw) = engine(&server).await;
    let ttl = Duration::from_secs(60);
    // Two tagged details and a list in one group.
    for (rest, tag) in [
        ("GET:/things/1:h", Some("thing:1")),
        ("GET:/things/2:h", Some("thing:2")),
    ] {
        let Lookup::Miss(seen) = cache.lookup("org1", "things:detail", rest, tag).await else {
            panic!("miss")
        };
        cache
            .store("org1", "things:detail", rest, tag, &body("d"), ttl, &seen)
            .await
            .expect("stored");
    }
    let Lookup::Miss(list_seen) = cache
        .lookup("org1", "things:list", "GET:/things:h", None)
        .await
    else {
        panic!("miss")
    };
    cache
        .store(
            "org1",
            "things:list",
            "GET:/things:h",
            None,
            &body("l"),
            ttl,
            &list_seen,
        )
        .await
        .expect("stored");
    // A miss of thing 1 that began before thing 1's write...
    cache
        .invalidate("org1", &["#thing:1"])
        .await
        .expect("invalidated");
    let Lookup::Miss(seen) = cache
        .lookup("org1", "things:detail", "GET:/things/1:h", Some("thing:1"))
        .await
    else {
        panic!("thing 1 is gone")
    };
    let before = seen.clone();
    cache
        .invalidate("org1", &["#thing:1", "things:list"])
        .await
        .expect("invalidated");
    // ...cannot store afterwards; thing 2 and nothing else of the group was touched.
    assert_eq!(
        cache
            .store(
                "org1",
                "things:detail",
                "GET:/things/1:h",
                Some("thing:1"),
                &body("old"),
                ttl,
                &before
            )
            .await,
        None
    );
    assert!(matches!(
        cache
            .lookup("org1", "things:detail", "GET:/things/2:h", Some("thing:2"))
            .await,
        Lookup::Hit(..)
    ));
    assert!(matches!(
        cache
            .lookup("org1", "things:list", "GET:/things:h", None)
            .await,
        Lookup::Miss(..)
    ));
    // The group still drops everything, tagged or not.
    cache
        .invalidate("org1", &["things"])
        .await
        .expect("invalidated");
    assert!(matches!(
        cache
            .lookup("org1", "things:detail", "GET:/things/2:h", Some("thing:2"))
            .await,
        Lookup::Miss(..)
    ));
}

/// A Redis run `allkeys-lru` (as contract §1 says for a cache Redis of its own) may evict an
/// entry's index or epochs and keep the entry. The write then finds nothing to delete; the
/// entry must still not be served, because a hit checks the epochs it was stored under.
#[tokio::test]
async fn an_entry_whose_bookkeeping_was_evicted_is_not_served_after_a_write() {
    let server = RedisServer::start();
    let (cache, mut raw) = evicting_engine(&server).await;
    let stored = |cache: Arc<ResponseCache>, text: &'static str| async move {
        let Lookup::Miss(seen) = lookup(&cache).await else {
            panic!("miss");
        };
        store(&cache, text, &seen).await.expect("stored");
        assert!(matches!(lookup(&cache).await, Lookup::Hit(..)));
    };
    let evict = |raw: &mut redis::Connection, pattern: &str| {
        let keys: Vec<String> = redis::cmd("KEYS").arg(pattern).query(raw).expect("keys");
        assert!(!keys.is_empty(), "nothing matches {pattern}");
        let () = redis::cmd("DEL").arg(&keys).query(raw).expect("del");
    };
    // The indexes go: the write deletes nothing, and the entry is still a miss.
    stored(cache.clone(), "before").await;
    evict(&mut raw, "ims:cacheidx:*");
    assert_eq!(cache.invalidate("org1", &["posts"]).await, Some(0));
    assert!(
        redis::cmd("EXISTS")
            .arg("ims:cache:org1:posts:list:GET:/posts:x")
            .query::<bool>(&mut raw)
            .expect("exists"),
        "the entry outlived its index"
    );
    assert!(matches!(lookup(&cache).await, Lookup::Miss(_)));
    // The epochs go too, before and after the write: each made again is a value the
    // entry was never stamped with (an `INCR` from nothing would give 1 again).
    stored(cache.clone(), "before").await;
    evict(&mut raw, "ims:cacheidx:*");
    evict(&mut raw, "ims:cacheepoch:*");
    assert!(matches!(lookup(&cache).await, Lookup::Miss(_)));
    cache.invalidate("org1", &["posts"]).await.expect("bumped");
    assert!(matches!(lookup(&cache).await, Lookup::Miss(_)));
    evict(&mut raw, "ims:cacheepoch:*");
    assert!(matches!(lookup(&cache).await, Lookup::Miss(_)));
    // Stored again under the epochs made since, it is a hit again.
    stored(cache.clone(), "after").await;
    let Lookup::Hit(cached, _) = lookup(&cache).await else {
        panic!("hit");
    };
    assert_eq!(cached.body, Bytes::from_static(b"after"));
}

/// A miss whose epoch is evicted before it stores is refused: the epoch made again cannot be
/// told from one bumped by a write meanwhile.
#[tokio::test]
async fn a_store_whose_epoch_was_evicted_meanwhile_is_refused() {
    let server = RedisServer::start();
    let (cache, mut raw) = engine(&server).await;
    let Lookup::Miss(seen) = lookup(&cache).await else {
        panic!("miss");
    };
    let () = redis::cmd("DEL")
        .arg("ims:cacheepoch:org1:posts")
        .query(&mut raw)
        .expect("del");
    assert_eq!(store(&cache, "old", &seen).await, None);
    assert!(matches!(lookup(&cache).await, Lookup::Miss(_)));
}

/// Where Redis cannot evict (`noeviction`, the default), a hit is one `GET` of the entry; where
/// it can, one `MGET` of the entry and its epochs.
#[tokio::test]
async fn a_hit_checks_epochs_only_where_redis_may_evict() {
    for (evicting, command) in [(false, "get"), (true, "mget")] {
        let server = RedisServer::start();
        let (cache, mut raw) = if evicting {
            evicting_engine(&server).await
        } else {
            engine(&server).await
        };
        let started = Instant::now();
        while cache.checks_epochs() != evicting {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "policy never read"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let Lookup::Miss(seen) = lookup(&cache).await else {
            panic!("miss");
        };
        store(&cache, "x", &seen).await.expect("stored");
        let (gets, mgets) = (calls(&mut raw, "get"), calls(&mut raw, "mget"));
        for _ in 0..10 {
            assert!(matches!(lookup(&cache).await, Lookup::Hit(..)));
        }
        let made = calls(&mut raw, command) - if evicting { mgets } else { gets };
        assert_eq!(made, 10, "{command} per hit");
        let other = if evicting { "get" } else { "mget" };
        let before = if evicting { gets } else { mgets };
        assert_eq!(calls(&mut raw, other), before, "no {other} on a hit");
    }
}

/// A Redis that has evicted may hold entries whose bookkeeping it evicted; switched to
/// `noeviction` afterwards, it must still have its hits checked (a probe was served such an
/// entry until its TTL after the switch).
#[tokio::test]
async fn a_redis_that_has_evicted_keeps_its_hits_checked_under_noeviction() {
    let server = RedisServer::start();
    let (cache, mut raw) = evicting_engine(&server).await;
    config_set(&mut raw, &[("maxmemory", "2mb")]);
    let filler = "x".repeat(1024);
    for i in 0..4000 {
        let () = redis::cmd("SET")
            .arg(format!("filler:{i}"))
            .arg(&filler)
            .query(&mut raw)
            .expect("set");
    }
    config_set(&mut raw, &[("maxmemory-policy", "noeviction")]);
    // Several policy reads later, hits are still checked.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(cache.checks_epochs());
    // On a fresh Redis that never evicted, the same settings turn the check off.
    let fresh = RedisServer::start();
    let (cache, mut raw) = engine(&fresh).await;
    config_set(&mut raw, &[("maxmemory", "2mb")]);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(!cache.checks_epochs());
}

/// An engine with the in-process tier on, bounded at `max_stale`.
async fn l1_engine(server: &RedisServer, max_stale: Duration) -> Arc<ResponseCache> {
    ResponseCache::with_l1(
        service(server).await,
        Arc::new(|parts: &http::request::Parts| {
            Some(parts.headers.get("x-tenant")?.to_str().ok()?.to_string())
        }),
        0.0,
        L1Settings {
            max_bytes: 1 << 20,
            max_stale,
        },
    )
}

/// A read that misses L1 just after a write cleared it, but reaches Redis before the
/// invalidation's script has run there, reads the old entry. L1 must not keep it as
/// fresh: before the fix it did, and served it for the whole bound after the write had
/// returned (a probe: writes served stale for 296 ms at a 200 ms bound). `SCRIPT FLUSH`
/// before each write widens that window to the round trips of reloading the script, so
/// that readers land in it every round, as they did by chance under the probe's load.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_read_that_reached_redis_before_an_invalidation_is_not_kept_in_l1() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
    use tower::{Layer, ServiceExt};

    let server = RedisServer::start();
    let cache = l1_engine(&server, Duration::from_secs(2)).await;
    let mut raw = redis::Client::open(server.url())
        .and_then(|c| c.get_connection())
        .expect("raw connection");
    // The "database": the version a handler reads; a write bumps it, then invalidates.
    let version = Arc::new(AtomicU64::new(1));
    let handler = {
        let version = version.clone();
        tower::service_fn(move |_: http::Request<String>| {
            let body = version.load(SeqCst).to_string();
            async move { Ok::<_, std::convert::Infallible>(http::Response::new(body)) }
        })
    };
    let service = CacheLayer::new("posts:list", Duration::from_secs(60))
        .with_l1()
        .layer(handler);
    // (version read, tier) of one `GET /posts`.
    let read = {
        let cache = cache.clone();
        move || {
            let (service, cache) = (service.clone(), cache.clone());
            async move {
                let mut request = http::Request::get("/posts")
                    .header("x-tenant", "org1")
                    .body(String::new())
                    .expect("request");
                request.extensions_mut().insert(cache);
                let response = service.oneshot(request).await.expect("response");
                let tier = response
                    .headers()
                    .get("x-cache-tier")
                    .map(|v| v.to_str().unwrap_or_default().to_string());
                let body = http_body_util::BodyExt::collect(response.into_body())
                    .await
                    .expect("body")
                    .to_bytes();
                let seen: u64 = std::str::from_utf8(&body)
                    .expect("utf-8")
                    .parse()
                    .expect("version");
                (seen, tier)
            }
        }
    };
    // Stored, then served from L1 (the tier serves once it is subscribed).
    let deadline = Instant::now() + Duration::from_secs(10);
    while read().await.1.as_deref() != Some("L1") {
        assert!(Instant::now() < deadline, "never an L1 hit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Readers check that nothing older than the last write that had returned before they
    // asked is served.
    let (committed, done) = (
        Arc::new(AtomicU64::new(1)),
        Arc::new(AtomicBool::new(false)),
    );
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let (read, committed, done) = (read.clone(), committed.clone(), done.clone());
            tokio::spawn(async move {
                let (mut reads, mut stale) = (0u64, Vec::new());
                while !done.load(SeqCst) {
                    let floor = committed.load(SeqCst);
                    let (seen, tier) = read().await;
                    reads += 1;
                    if seen < floor {
                        stale.push((floor, seen, tier));
                    }
                    // Reads a millisecond apart: spinning on L1 hits starved the writer
                    // of the two cores until its script timed out.
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                (reads, stale)
            })
        })
        .collect();
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(30)).await;
        let written = version.fetch_add(1, SeqCst) + 1;
        let () = redis::cmd("SCRIPT")
            .arg("FLUSH")
            .query(&mut raw)
            .expect("script flush");
        cache
            .invalidate("org1", &["posts"])
            .await
            .expect("invalidated");
        committed.store(written, SeqCst);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    done.store(true, SeqCst);
    let (mut reads, mut stale) = (0, Vec::new());
    for reader in readers {
        let (n, s) = reader.await.expect("reader");
        reads += n;
        stale.extend(s);
    }
    assert!(reads > 100, "the readers ran ({reads} reads)");
    assert!(
        stale.is_empty(),
        "{} of {reads} reads served a version older than a write that had returned \
         (floor, seen, tier), first ones: {:?}",
        stale.len(),
        &stale[..stale.len().min(5)]
    );
}
