//! Sessions against a Redis that evicts (`maxmemory` + `allkeys-lru`, as the seeds
//! recommend for a cache): a refresh token whose key was evicted still refreshes, once, and
//! the cache can live in its own Redis (`REDIS_CACHE_URL`).

use ims_testkit::RedisServer;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{spawn_app, spawn_app_with, Reply, TestApp};

/// `CONFIG SET` of each `(name, value)`.
fn config_set(conn: &mut redis::Connection, settings: &[(&str, &str)]) {
    let mut cmd = redis::cmd("CONFIG");
    cmd.arg("SET");
    for (name, value) in settings {
        cmd.arg(*name).arg(*value);
    }
    let () = cmd.query(conn).expect("config set");
}

/// Deletes every key matching `pattern` (as an eviction would).
fn delete_matching(conn: &mut redis::Connection, pattern: &str) {
    let keys: Vec<String> = redis::cmd("KEYS").arg(pattern).query(conn).expect("keys");
    if !keys.is_empty() {
        let () = redis::cmd("DEL").arg(&keys).query(conn).expect("del");
    }
}

/// Fills the app's Redis with ordinary keys until `key` has been evicted.
fn flood_until_evicted(app: &TestApp, key: &str) {
    let mut conn = app.redis_conn();
    config_set(
        &mut conn,
        &[("maxmemory", "4mb"), ("maxmemory-policy", "allkeys-lru")],
    );
    let filler = "x".repeat(1024);
    for batch in 0..200 {
        let mut pipe = redis::pipe();
        for i in 0..200 {
            pipe.cmd("SET")
                .arg(format!("flood:{batch}:{i}"))
                .arg(&filler)
                .ignore();
        }
        let _: () = pipe.query(&mut conn).expect("flood");
        let exists: bool = redis::cmd("EXISTS")
            .arg(key)
            .query(&mut conn)
            .expect("exists");
        if !exists {
            return;
        }
    }
    panic!("{key} was never evicted");
}

fn token_key(refresh_token: &str) -> String {
    format!(
        "ims:session:refresh:{}",
        ims_redis::session::hash_token(refresh_token)
    )
}

async fn refresh(app: &TestApp, token: &str) -> Reply {
    app.anonymous()
        .post("/auth/refresh", json!({ "refreshToken": token }))
        .await
}

#[tokio::test]
async fn refresh_tokens_evicted_from_redis_still_refresh_once() {
    let app = spawn_app().await;
    let pair = app.register("evicted@example.com").await;
    let first = pair["refreshToken"].as_str().expect("token").to_string();
    assert!(
        !app.redis_keys(&token_key(&first)).is_empty(),
        "in Redis first"
    );
    flood_until_evicted(&app, &token_key(&first));

    let response = refresh(&app, &first).await;
    assert_eq!(response.status, StatusCode::OK, "the session row vouches");
    let second = response.json();
    let second = second["refreshToken"].as_str().expect("token").to_string();
    // The new token is the session's live one; evicted in turn, it refreshes too.
    flood_until_evicted(&app, &token_key(&second));
    let response = refresh(&app, &second).await;
    assert_eq!(response.status, StatusCode::OK);
    // A rotated token never refreshes again.
    assert_eq!(refresh(&app, &first).await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_cache_can_live_in_its_own_redis() {
    let cache = RedisServer::start();
    let app = spawn_app_with(&[("REDIS_CACHE_URL", &cache.url())]).await;
    let pair = app.register("split@example.com").await;
    let token = pair["accessToken"].as_str().expect("token").to_string();
    let api = app.caller(&token);
    for _ in 0..2 {
        assert_eq!(api.get("/items").await.status, StatusCode::OK);
    }
    let hit = api.get("/items").await;
    assert_eq!(hit.header("x-cache"), "HIT");
    let mut cache_conn = redis::Client::open(cache.url())
        .expect("client")
        .get_connection()
        .expect("connection");
    let entries: Vec<String> = redis::cmd("KEYS")
        .arg("ims:cache:*")
        .query(&mut cache_conn)
        .expect("keys");
    assert!(!entries.is_empty(), "entries in the cache Redis");
    assert!(
        app.redis_keys("ims:cache:*").is_empty(),
        "none in the main one"
    );
    assert!(
        !app.redis_keys("ims:session:refresh:*").is_empty(),
        "sessions stay in the main Redis"
    );
    let health = app.anonymous().get("/health").await.json();
    assert_eq!(health["services"]["redisCache"]["status"], "up", "{health}");
    // Losing the cache Redis loses nothing else, and health says which one went: both
    // said "up" with the cache Redis stopped (a black-box probe).
    cache.stop();
    let response = refresh(&app, pair["refreshToken"].as_str().expect("token")).await;
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(api.get("/items").await.status, StatusCode::OK);
    let health = app.anonymous().get("/health").await;
    assert_eq!(health.status, StatusCode::OK);
    let health = health.json();
    assert_eq!(health["status"], "healthy");
    assert_eq!(health["services"]["redis"]["status"], "up", "{health}");
    assert_eq!(
        health["services"]["redisCache"]["status"], "down",
        "{health}"
    );
    let report = app.anonymous().get("/health/cache").await.json();
    assert_eq!(report["redis"], "down", "{report}");
    assert!(report.get("redisInfo").is_none(), "{report}");
    let metrics = app.anonymous().get("/metrics").await.text;
    assert!(metrics.contains("ims_redis_up 1"), "{metrics}");
    assert!(metrics.contains("ims_redis_cache_up 0"), "{metrics}");
}

/// A cache Redis run as contract §1 says (`allkeys-lru`; here at 3 MB) evicts whatever it
/// likes, a hot entry's index and epochs included. A write then found nothing to delete and
/// the entry was served stale until its TTL (a black-box probe: stale in 8 rounds of 8, up to
/// 118 s); now a hit checks the epochs the entry was stored under.
#[tokio::test]
async fn a_cache_redis_run_allkeys_lru_serves_nothing_older_than_a_write() {
    let cache = RedisServer::start();
    let mut conn = redis::Client::open(cache.url())
        .expect("client")
        .get_connection()
        .expect("connection");
    config_set(
        &mut conn,
        &[("maxmemory", "3mb"), ("maxmemory-policy", "allkeys-lru")],
    );
    let app = spawn_app_with(&[("REDIS_CACHE_URL", &cache.url())]).await;
    let token = app.token("evict-cache@example.com").await;
    let api = app.caller(&token);
    let warehouse = api
        .create("/warehouses", json!({"name": "Main", "code": "M"}))
        .await;
    let item = api
        .create(
            "/items",
            json!({"name": "Hot", "sku": "HOT", "priceCents": 100}),
        )
        .await;
    let path = format!("/items/{}", item["id"].as_str().expect("id"));
    let adjust = json!({"itemId": item["id"], "warehouseId": warehouse["id"], "quantityDelta": 1, "reason": "count"});
    let filler = "x".repeat(2048);
    for round in 1..=6 {
        api.create("/inventory/adjustments", adjust.clone()).await;
        // The entry is stored and read often (hot); other keys fill the cache Redis past
        // its budget, so that its bookkeeping, read only by writes and misses, goes first.
        for batch in 0..30 {
            let mut pipe = redis::pipe();
            for i in 0..50 {
                pipe.cmd("SET")
                    .arg(format!("filler:{round}:{batch}:{i}"))
                    .arg(&filler)
                    .ignore();
            }
            let _: () = pipe.query(&mut conn).expect("fill");
            let read = api.get(&path).await;
            assert_eq!(read.json()["stockOnHand"], round, "round {round}");
        }
    }
    let info: String = redis::cmd("INFO")
        .arg("stats")
        .query(&mut conn)
        .expect("info");
    assert!(
        !info.contains("evicted_keys:0\r"),
        "the budget was never reached"
    );
    // The same, made certain: the entry cached, its indexes gone, a write finds nothing to
    // delete, and the next read is still fresh.
    api.get(&path).await;
    assert_eq!(api.get(&path).await.header("x-cache"), "HIT");
    delete_matching(&mut conn, "ims:cacheidx:*");
    api.create("/inventory/adjustments", adjust.clone()).await;
    let read = api.get(&path).await;
    assert_eq!(read.header("x-cache"), "MISS");
    assert_eq!(read.json()["stockOnHand"], 7);
    // Switched to `noeviction` now (with room to write), the cache Redis still holds what
    // it evicted around: hits stay checked (a probe was served an orphaned entry until its
    // TTL).
    config_set(
        &mut conn,
        &[("maxmemory-policy", "noeviction"), ("maxmemory", "64mb")],
    );
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert_eq!(api.get(&path).await.header("x-cache"), "HIT");
    delete_matching(&mut conn, "ims:cacheidx:*");
    api.create("/inventory/adjustments", adjust).await;
    let read = api.get(&path).await;
    assert_eq!(read.header("x-cache"), "MISS");
    assert_eq!(read.json()["stockOnHand"], 8);
}
