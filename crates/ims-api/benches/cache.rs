//! Response-cache benchmark on seeded demo data, in one run:
//! `cargo bench -p ims-api --bench cache`.
//!
//! Measures, for `/dashboard/kpis` and `/items`, with 8 requests in flight: a cache hit, a
//! miss (a fresh query string per request, so the handler runs and stores), and a ceiling — a bare axum
//! handler answering the same bytes after one Redis GET. Then the latency of a write
//! (item update, which invalidates four groups) with 1,000 and with 1,000,000 unrelated
//! keys in Redis, and for contrast a SCAN-based prefix flush at both sizes.
//! Sizes: IMS_BENCH_ITEMS (default 10000), IMS_BENCH_ORDERS (default 100000).

mod support;

use support::{application, base_url, ceiling, seed, Timing, UNREACHED_LIMITS};

use std::time::{Duration, Instant};

use futures::StreamExt;
use ims_testkit::RedisServer;
use serde_json::{json, Value};

const CONCURRENCY: usize = 8;

/// `count` GETs of `url`, `CONCURRENCY` in flight; `before` runs (untimed) before each.
async fn load<B, BF>(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    count: usize,
    before: B,
    expect: &str,
) -> Timing
where
    B: Fn() -> BF,
    BF: std::future::Future<Output = ()>,
{
    let started = Instant::now();
    let requests = futures::stream::iter(0..count).map(|i| {
        let before = &before;
        async move {
            // A miss needs an entry that does not exist yet: each request gets its own
            // query string (an ignored parameter), so misses can run concurrently too.
            let url = if expect == "MISS" {
                before().await;
                format!("{url}?nonce={i}")
            } else {
                url.to_string()
            };
            let t = Instant::now();
            let response = client
                .get(&url)
                .bearer_auth(token)
                .send()
                .await
                .expect("get");
            if !expect.is_empty() {
                assert_eq!(response.headers()["x-cache"], expect, "{url}");
            }
            response.bytes().await.expect("body");
            t.elapsed()
        }
    });
    let samples: Vec<Duration> = requests.buffer_unordered(CONCURRENCY).collect().await;
    support::timing(samples, started.elapsed())
}

#[tokio::main]
async fn main() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let database_url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("bench.db").display()
    );
    seed("SQLite", &database_url);

    let mut vars = vec![
        ("DATABASE_URL", database_url.clone()),
        ("REDIS_URL", redis.url()),
        ("CACHE_TTL_JITTER", "0".into()),
        ("RUST_LOG", "warn".into()),
    ];
    vars.extend(UNREACHED_LIMITS.map(|(name, value)| (name, value.to_string())));
    let app = application(vars).await;
    let base = base_url(&app);
    tokio::spawn(app.run_until(std::future::pending()));
    let client = reqwest::Client::new();
    let login = support::demo_login(&client, &base).await;
    let token = login["accessToken"].as_str().expect("token").to_string();
    let org = login["user"]["organizationId"]
        .as_str()
        .expect("org")
        .to_string();
    let redis_client = redis::Client::open(redis.url()).expect("client");
    let mut raw = redis_client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");

    // The ceiling: the same bytes after one Redis GET, from a bare axum handler.
    let ceiling = ceiling(raw.clone());
    let ceiling_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let ceiling_base = format!("http://{}", ceiling_listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(ceiling_listener, ceiling).await });

    println!("\nroute                    case      req/s      p50        p99");
    let empty_hash = "d41d8cd98f00b204e9800998ecf8427e";
    for (path, prefix, misses) in [
        ("/dashboard/kpis", "dashboard:kpis", 30),
        ("/items", "items:list", 200),
    ] {
        let url = format!("{base}{path}");
        let key = format!("ims:cache:{org}:{prefix}:GET:{path}:{empty_hash}");
        let del = || {
            let mut conn = raw.clone();
            let key = key.clone();
            async move {
                let _: i64 = redis::cmd("DEL")
                    .arg(&key)
                    .query_async(&mut conn)
                    .await
                    .expect("del");
            }
        };
        let miss = load(&client, &url, &token, misses, del, "MISS").await;
        let _ = client
            .get(&url)
            .bearer_auth(&token)
            .send()
            .await
            .expect("prime");
        let hit = load(&client, &url, &token, 3000, || async {}, "HIT").await;
        // The stored entry is "content-type\netag\nbody"; the ceiling serves a plain copy of
        // the body, as many bytes as a hit returns.
        let stored: Vec<u8> = redis::cmd("GET")
            .arg(&key)
            .query_async(&mut raw)
            .await
            .expect("get");
        let body_at = stored
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == b'\n')
            .nth(1)
            .map(|(i, _)| i + 1)
            .unwrap_or(0);
        let plain_key = format!("bench:ceiling:{prefix}");
        let _: () = redis::cmd("SET")
            .arg(&plain_key)
            .arg(&stored[body_at..])
            .query_async(&mut raw)
            .await
            .expect("set");
        let ceiling_run = load(
            &client,
            &format!("{ceiling_base}/ceiling/{plain_key}"),
            &token,
            3000,
            || async {},
            "",
        )
        .await;
        for (case, run) in [("miss", &miss), ("hit", &hit), ("ceiling", &ceiling_run)] {
            println!(
                "{path:<24} {case:<8} {:>8.0} {:>10.3?} {:>10.3?}",
                run.rps, run.p50, run.p99
            );
        }
        println!(
            "{path}: hit/miss throughput x{:.1} (p50 miss/hit x{:.1}); hit/ceiling throughput {:.2}",
            hit.rps / miss.rps,
            miss.p50.as_secs_f64() / hit.p50.as_secs_f64(),
            hit.rps / ceiling_run.rps
        );
    }

    // Writes with 1,000 and 1,000,000 unrelated keys in Redis.
    let items_page: Value = client
        .get(format!("{base}/items?limit=1"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("items")
        .json()
        .await
        .expect("json");
    let item = items_page["data"][0]["id"]
        .as_str()
        .expect("item")
        .to_string();
    let cache = ims_redis::RedisService::new(
        ims_redis::RedisConnection::connect(ims_redis::RedisConfig {
            url: Some(redis.url()),
            command_timeout: Duration::from_secs(30),
            ..Default::default()
        })
        .await,
        "ims:",
    );
    let mut write_p50 = Vec::new();
    let mut filled = 0u64;
    for target in [1_000u64, 1_000_000] {
        while filled < target {
            let mut pipe = redis::pipe();
            for i in filled..(filled + 10_000).min(target) {
                pipe.cmd("SET")
                    .arg(format!("unrelated:{i}"))
                    .arg("x")
                    .ignore();
            }
            let () = pipe.query_async(&mut raw).await.expect("fill");
            filled = (filled + 10_000).min(target);
        }
        let mut samples = Vec::new();
        for i in 0..100 {
            // Prime a few entries so each write has something to invalidate.
            for path in ["/items", "/dashboard/kpis", "/inventory/stock-levels"] {
                let _ = client
                    .get(format!("{base}{path}"))
                    .bearer_auth(&token)
                    .send()
                    .await;
            }
            let t = Instant::now();
            let response = client
                .patch(format!("{base}/items/{item}"))
                .bearer_auth(&token)
                .json(&json!({"description": format!("rev {i}")}))
                .send()
                .await
                .expect("patch");
            assert!(response.status().is_success());
            samples.push(t.elapsed());
        }
        let run = support::timing(samples, Duration::from_secs(1));
        let t = Instant::now();
        cache.flush_by_prefix(&format!("cache:{org}:items:")).await;
        let scan = t.elapsed();
        println!(
            "write with {target:>9} unrelated keys: p50 {:>9.3?} p99 {:>9.3?}; SCAN-based prefix flush would take {scan:.3?}",
            run.p50, run.p99
        );
        write_p50.push((run.p50, scan));
    }
    println!(
        "write 1M/1k (p50): {:.2}; SCAN flush 1M/1k: {:.0}",
        write_p50[1].0.as_secs_f64() / write_p50[0].0.as_secs_f64(),
        write_p50[1].1.as_secs_f64() / write_p50[0].1.as_secs_f64()
    );
}
