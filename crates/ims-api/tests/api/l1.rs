//! The in-process tier (L1) across instances sharing one Redis: hits that touch no Redis,
//! invalidations reaching the other instance, and the staleness bound when messages are lost
//! (subscription killed) or Redis is paused.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{spawn_app_with, until_seen, ServerProcess, TestApp};

/// `CACHE_L1_MAX_STALE_MS` of these tests.
const BOUND: Duration = Duration::from_millis(1000);

/// Calls of each Redis command so far, from `INFO commandstats`.
fn command_calls(app: &TestApp) -> std::collections::HashMap<String, u64> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut app.redis_conn())
        .expect("info");
    info.lines()
        .filter_map(|line| {
            let (name, rest) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest.split(',').next()?.strip_prefix("calls=")?;
            Some((name.to_string(), calls.parse().ok()?))
        })
        .collect()
}

/// The server under test (in process, so its Redis can be paused) and a second instance
/// (the real binary) that writes.
async fn two_instances() -> (TestApp, ServerProcess, String, String) {
    let app = spawn_app_with(&[("RATE_LIMIT_ENABLED", "false")]).await;
    let writer = ServerProcess::beside_with(&app, &[("RATE_LIMIT_ENABLED", "false")]).await;
    let token = app.token("l1@example.com").await;
    let rate = app
        .caller(&token)
        .create("/tax-rates", json!({"name": "v0", "rateBps": 100}))
        .await;
    let rate = rate["id"].as_str().expect("id").to_string();
    (app, writer, token, rate)
}

/// Renames the tax rate on the writer instance; returns when its response arrived.
async fn rename_on(
    writer: &ServerProcess,
    app: &TestApp,
    token: &str,
    rate: &str,
    name: &str,
) -> Instant {
    app.caller(token)
        .at(&writer.address)
        .patch(&format!("/tax-rates/{rate}"), json!({"name": name}))
        .await
        .expect(StatusCode::OK);
    Instant::now()
}

async fn name_on(app: &TestApp, token: &str) -> (String, String) {
    let response = app.caller(token).get("/tax-rates").await;
    assert_eq!(response.status, StatusCode::OK);
    let tier = response.header("x-cache-tier");
    let body = response.json();
    (
        body["data"][0]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        tier,
    )
}

/// Reads until the new name shows; returns how long after the write's response it did.
async fn visible_after(app: &TestApp, token: &str, name: &str, written: Instant) -> Duration {
    let read = || async { name_on(app, token).await.0 };
    until_seen(
        name.to_string(),
        written,
        BOUND * 5,
        Duration::from_millis(2),
        read,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_l1_hit_sends_nothing_to_redis() {
    let (app, _writer, token, _) = two_instances().await;
    let api = app.caller(&token);
    let first = api.get("/tax-rates").await;
    assert_eq!(first.header("x-cache"), "MISS");
    let second = api.get("/tax-rates").await;
    assert_eq!(second.header("x-cache"), "HIT");
    assert_eq!(second.header("x-cache-tier"), "L1");
    let ttl: u64 = second.header("x-cache-ttl").parse().expect("ttl");
    assert!((1..=600).contains(&ttl), "{ttl}");
    let etag = second.header("etag");
    let before = command_calls(&app);
    for _ in 0..20 {
        let hit = api.get("/tax-rates").await;
        assert_eq!(hit.header("x-cache-tier"), "L1");
    }
    let weak = format!("W/{etag}");
    let not_modified = api
        .with(&[("If-None-Match", &weak)])
        .get("/tax-rates")
        .await;
    assert_eq!(not_modified.status, StatusCode::NOT_MODIFIED);
    let after = command_calls(&app);
    for command in ["get", "mget", "pttl", "evalsha", "eval"] {
        assert_eq!(
            before.get(command),
            after.get(command),
            "{command}: an L1 hit must not reach Redis"
        );
    }
    let stats: Value = app.cache_stats().await;
    assert!(stats["l1Hits"].as_u64().expect("l1Hits") >= 21, "{stats}");
    assert!(
        stats["l1Entries"].as_u64().expect("l1Entries") >= 1,
        "{stats}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_on_one_instance_reaches_the_others_l1_within_the_bound() {
    let (app, writer, token, rate) = two_instances().await;
    let mut lags = Vec::new();
    for i in 1..=20 {
        // B holds the current name in L1.
        name_on(&app, &token).await;
        let (_, tier) = name_on(&app, &token).await;
        assert_eq!(tier, "L1");
        let name = format!("v{i}");
        let written = rename_on(&writer, &app, &token, &rate, &name).await;
        let lag = visible_after(&app, &token, &name, written).await;
        assert!(lag <= BOUND, "write {i} showed after {lag:?}");
        lags.push(lag);
    }
    lags.sort();
    eprintln!(
        "L1 staleness with pub/sub healthy: p50 {:?}, max {:?}",
        lags[lags.len() / 2],
        lags[lags.len() - 1]
    );
    let stats: Value = app.cache_stats().await;
    assert!(
        stats["invalidationsReceived"].as_u64().expect("received") >= 20,
        "{stats}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_bound_holds_when_the_subscription_is_killed() {
    let (app, writer, token, rate) = two_instances().await;
    for i in 1..=5 {
        name_on(&app, &token).await;
        let (_, tier) = name_on(&app, &token).await;
        assert_eq!(tier, "L1");
        // Every subscriber connection goes, with whatever would have been delivered.
        let _: i64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("pubsub")
            .query(&mut app.redis_conn())
            .expect("client kill");
        let name = format!("k{i}");
        let written = rename_on(&writer, &app, &token, &rate, &name).await;
        let lag = visible_after(&app, &token, &name, written).await;
        assert!(lag <= BOUND, "write {i} showed after {lag:?}");
        // The tier comes back once subscribed again.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (_, tier) = name_on(&app, &token).await;
            if tier == "L1" {
                break;
            }
            assert!(Instant::now() < deadline, "L1 never came back");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let stats: Value = app.cache_stats().await;
    assert!(
        stats["l1Flushes"].as_u64().expect("flushes") >= 5,
        "{stats}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_bound_holds_while_redis_is_paused() {
    let (app, writer, token, rate) = two_instances().await;
    name_on(&app, &token).await;
    let (_, tier) = name_on(&app, &token).await;
    assert_eq!(tier, "L1");
    // Redis hangs: no message can be delivered, and the writer cannot invalidate.
    app.redis.pause();
    let written = rename_on(&writer, &app, &token, &rate, "paused").await;
    let lag = visible_after(&app, &token, "paused", written).await;
    app.redis.resume();
    assert!(lag <= BOUND, "showed after {lag:?}");
}

async fn misses(app: &TestApp, base: &str) -> u64 {
    let stats: Value = app.cache_stats_at(base).await;
    stats["misses"].as_u64().expect("misses")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_concurrent_misses_of_one_report_over_three_processes_run_it_once() {
    let app = spawn_app_with(&[("RATE_LIMIT_ENABLED", "false")]).await;
    let others = [
        ServerProcess::beside_with(&app, &[("RATE_LIMIT_ENABLED", "false")]).await,
        ServerProcess::beside_with(&app, &[("RATE_LIMIT_ENABLED", "false")]).await,
    ];
    let token = app.token("flight@example.com").await;
    let api = app.caller(&token);
    let bases = [
        app.address.clone(),
        others[0].address.clone(),
        others[1].address.clone(),
    ];
    for round in 0..3 {
        let path = format!("/reports/sales-by-customer?from=2020-01-0{}", round + 1);
        let mut before = 0;
        for base in &bases {
            before += misses(&app, base).await;
        }
        let requests = (0..30).map(|i| api.at(&bases[i % 3]).get(&path));
        let mut bodies = std::collections::HashSet::new();
        for response in futures::future::join_all(requests).await {
            let body = response.expect(StatusCode::OK);
            bodies.insert(body["generatedAt"].to_string());
        }
        let mut after = 0;
        for base in &bases {
            after += misses(&app, base).await;
        }
        assert_eq!(
            after - before,
            1,
            "round {round}: the report ran once in total"
        );
        assert_eq!(bodies.len(), 1, "everyone got that one run's answer");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_redis_the_whole_cache_runs_in_process() {
    let app = spawn_app_with(&[("REDIS_ENABLED", "false")]).await;
    let token = app.token("local@example.com").await;
    app.caller(&token)
        .create(
            "/items",
            json!({"name": "Hammer", "sku": "H-1", "priceCents": 100}),
        )
        .await;
    // Every cached route, not only the L1 ones: items is a Redis-only route otherwise.
    let first = app.caller(&token).get("/items").await;
    assert_eq!(first.header("x-cache"), "MISS");
    let ttl: u64 = first.header("x-cache-ttl").parse().expect("ttl");
    assert!(
        (55..=60).contains(&ttl),
        "stored with the route's TTL: {ttl}"
    );
    let second = app.caller(&token).get("/items").await;
    assert_eq!(second.header("x-cache"), "HIT");
    assert_eq!(second.header("x-cache-tier"), "L1");
    let etag = second.header("etag");
    let not_modified = app
        .caller(&token)
        .with(&[("If-None-Match", &etag)])
        .get("/items")
        .await;
    assert_eq!(not_modified.status, StatusCode::NOT_MODIFIED);
    // The invalidation mapping holds: a write drops the list, the next read is current.
    app.caller(&token)
        .create(
            "/items",
            json!({"name": "Saw", "sku": "S-1", "priceCents": 200}),
        )
        .await;
    let after = app.caller(&token).get("/items").await;
    assert_eq!(after.header("x-cache"), "MISS");
    let body = after.json();
    assert_eq!(body["total"], 2);
    // Another organization never sees this one's entry.
    let other = app.token("other-local@example.com").await;
    let theirs = app.caller(&other).get("/items").await;
    assert_eq!(theirs.header("x-cache"), "MISS");
    let body = theirs.json();
    assert_eq!(body["total"], 0);
}

#[tokio::test]
async fn cache_stats_are_per_organization_and_redis_figures_are_reported() {
    let app = crate::helpers::spawn_app().await;
    let token = |pair: Value| pair["accessToken"].as_str().expect("token").to_string();
    let a = token(app.register("stats-a@example.com").await);
    let b = token(app.register("stats-b@example.com").await);
    for path in ["/tax-rates", "/tax-rates", "/items"] {
        assert_eq!(app.caller(&a).get(path).await.status, StatusCode::OK);
    }
    let stats = |token: String| {
        let app = &app;
        async move {
            let response = app.caller(&token).get("/cache/stats").await;
            assert_eq!(response.status, StatusCode::OK);
            response.json()
        }
    };
    // Another instance on the same Redis, which stored nothing, counts the same entries
    // (it counted only the groups it had stored under itself: 0; a probe).
    let second = crate::helpers::ServerProcess::beside(&app).await;
    let seen_there: Value = app
        .caller(&a)
        .at(&second.address)
        .get("/cache/stats")
        .await
        .expect(StatusCode::OK);
    assert_eq!(seen_there["entries"], json!(2), "{seen_there}");
    let mine = stats(a).await;
    assert_eq!(
        (
            mine["hits"].clone(),
            mine["misses"].clone(),
            mine["entries"].clone()
        ),
        (json!(1), json!(2), json!(2)),
        "{mine}"
    );
    assert_eq!(mine["hitRate"].as_f64(), Some(1.0 / 3.0));
    let theirs = stats(b).await;
    assert_eq!(
        (
            theirs["hits"].clone(),
            theirs["misses"].clone(),
            theirs["entries"].clone()
        ),
        (json!(0), json!(0), json!(0)),
        "another organization's figures never show: {theirs}"
    );
    assert_eq!(
        app.anonymous().get("/cache/stats").await.status,
        StatusCode::UNAUTHORIZED
    );
    let health: Value = app.cache_stats().await;
    let info = &health["redisInfo"];
    assert!(info["keys"].as_u64().expect("keys") >= 2, "{health}");
    assert!(info["usedMemory"].as_u64().expect("memory") > 0, "{health}");
    assert!(
        info["connectedClients"].as_u64().expect("clients") >= 1,
        "{health}"
    );
    assert!(info["evictedKeys"].is_u64(), "{health}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn warm_up_runs_once_per_interval_across_three_instances_and_refills_dashboards() {
    let vars = [
        ("RATE_LIMIT_ENABLED", "false"),
        ("CACHE_WARM_INTERVAL", "1"),
    ];
    let app = spawn_app_with(&vars).await;
    let others = [
        ServerProcess::beside_with(&app, &vars).await,
        ServerProcess::beside_with(&app, &vars).await,
    ];
    let token = app.token("warm@example.com").await;
    let api = app.caller(&token);
    let warmups = |base: String| {
        let app = &app;
        async move {
            let stats: Value = app.cache_stats_at(&base).await;
            stats["warmups"].as_u64().expect("warmups")
        }
    };
    let bases = [
        app.address.clone(),
        others[0].address.clone(),
        others[1].address.clone(),
    ];
    let total = |bases: [String; 3]| async move {
        let mut sum = 0;
        for base in bases {
            sum += warmups(base).await;
        }
        sum
    };
    let before = total(bases.clone()).await;
    let started = Instant::now();
    // A write: the organization is active, its dashboard invalidated.
    api.create("/categories", json!({"name": "Tools"})).await;
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let runs = total(bases.clone()).await - before;
    let intervals = started.elapsed().as_secs();
    assert!(
        (intervals.saturating_sub(1)..=intervals + 1).contains(&runs),
        "{runs} warm-ups in {intervals} intervals over three instances: once per interval"
    );
    // Nobody read the dashboard since the write, yet it is cached.
    let kpis = api.get("/dashboard/kpis").await;
    assert_eq!(kpis.status, StatusCode::OK);
    assert_eq!(kpis.header("x-cache"), "HIT");
}
