//! The in-process cache tier (L1) against its ceilings, in one run:
//! `cargo bench -p ims-api --bench l1`.
//!
//! One SQLite file and one private `redis-server`; four in-process servers on them:
//! rate limiter off or on (limits nothing here reaches), each with the L1 tier on
//! (`CACHE_L1_MAX_STALE_MS` default, 1000 ms) or off (`CACHE_L1_MAX_STALE_MS=0`, so the same
//! route is served from Redis: an L2 hit). Every request carries the same access token and
//! asks for the same ~2 KB body, `GET /tax-rates?limit=100`. Three ceilings, bare axum
//! handlers that verify the token as the server does (`TokenKeys::verify_shared`, which
//! keeps verified tokens): the same bytes from memory, the same bytes after one Redis
//! `GET`, and that `GET` answered with the headers of an L2 hit (fixed values), which shows
//! what the contract's headers alone cost.
//!
//! Cases run with 16 requests in flight, in rounds of rotating order, each round after
//! 500 unmeasured requests of its case; each row is the round with the median throughput.
//! The servers run on their own runtime (threads `ims-srv`), the load generator on another
//! (`ims-load`), so CPU per request is reported
//! apart for the servers, the load generator and redis-server (`/proc/.../schedstat`).
//! Every response's `X-Cache-Tier` is checked: L1 cases must answer L1 (bar the
//! once-per-second revalidations, which go to Redis), L2 cases L2.
//! Sizes: IMS_BENCH_REQUESTS (default 10000 per case and round), IMS_BENCH_ROUNDS (default 7:
//! short rounds, so that a burst of other work on the machine skews few of them).
//! Then the two targets (L2 hit with the limiter ÷ one-`GET` ceiling, limiter on ÷ off) are
//! measured in pairs of short slices taken in turn, IMS_BENCH_PAIRS pairs (default 40; 0
//! skips them) of IMS_BENCH_SLICE requests (default 1000), and the median of the pairs'
//! ratios is printed with its quartiles: the figure to quote on a noisy machine.
//! A fourth ceiling does its `GET` through ims-redis' command path (breaker, command
//! time-out, connection manager). The pairs also measure, for information, how the gap
//! splits: IMS without the limiter, the headers alone, IMS against the header-matched
//! ceiling, and ims-redis' command path against a bare multiplexed connection.
//! IMS_BENCH_CONCURRENCY sets the requests in flight (default 16), IMS_BENCH_SERVER_THREADS
//! the servers' runtime threads (default 2), and IMS_BENCH_HOLD_SECONDS=<n> skips the cases
//! and keeps the servers up for n seconds, printing their URLs and a token, for an external
//! load generator such as wrk.
//! IMS_BENCH_ONLY=<part of a case name>[|<another>] runs only the matching cases (for
//! profiling, or pairing two cases). IMS_BENCH_REDIS_POLICY=allkeys-lru runs the Redis with
//! that `maxmemory-policy` under a 1 GB `maxmemory` (nothing is evicted), so that the
//! servers' cache hits check their entries' epochs as they do against a Redis that may
//! evict (the default, `noeviction`, spares them the check).

mod support;

use support::{
    application, base_url, env_number, post, redis_pids, task_cpu_ns, until_redis, SECRET,
    UNREACHED_LIMITS,
};

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use ims_api::auth::bearer_token;
use ims_api::auth::tokens::TokenKeys;
use ims_testkit::RedisServer;
use serde_json::json;

/// Requests in flight (IMS_BENCH_CONCURRENCY, default 16).
fn concurrency() -> usize {
    env_number("IMS_BENCH_CONCURRENCY", 16).max(1)
}
const ROUTE: &str = "/tax-rates?limit=100";
/// The body size aimed at.
const BODY_BYTES: usize = 2048;
const CEILING_KEY: &str = "bench:l1:body";
/// Client addresses the requests rotate through (`X-Forwarded-For`, one trusted proxy).
const ADDRESSES: usize = 64;
/// Unmeasured requests before each measured round (about eight per client address).
const ROUND_WARM_UP: usize = 500;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Expect {
    L1,
    L2,
    Bare,
}

struct Case {
    name: &'static str,
    url: String,
    expect: Expect,
}

#[derive(Clone, Copy)]
struct Run {
    rps: f64,
    p50: Duration,
    p99: Duration,
    /// Responses that carried the expected tier (all of them for a ceiling).
    as_expected: usize,
    /// CPU µs per request: server runtime threads, everything else in this process (the
    /// load generator), redis-server.
    cpu_server: f64,
    cpu_load: f64,
    cpu_redis: f64,
}

/// CPU ns of the threads of `pid`, split by whether their name starts with `prefix`.
fn cpu_split(pid: &str, prefix: &str) -> (u64, u64) {
    let (mut matching, mut other) = (0, 0);
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return (0, 0);
    };
    for task in tasks.flatten() {
        let path = task.path();
        let name = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        let ns = task_cpu_ns(&path);
        if name.starts_with(prefix) {
            matching += ns;
        } else {
            other += ns;
        }
    }
    (matching, other)
}

/// An IMS server on the server runtime; returns its base URL once Redis is connected.
async fn server(
    srv: &tokio::runtime::Handle,
    database_url: &str,
    redis_url: &str,
    limiter: bool,
    l1: bool,
) -> String {
    let mut vars = vec![
        ("DATABASE_URL", database_url.to_string()),
        ("REDIS_URL", redis_url.to_string()),
        ("CACHE_TTL_JITTER", "0".into()),
        ("RATE_LIMIT_ENABLED", limiter.to_string()),
        ("TRUST_PROXY", "true".into()),
        ("RUST_LOG", "warn".into()),
    ];
    vars.extend(UNREACHED_LIMITS.map(|(name, value)| (name, value.to_string())));
    if !l1 {
        vars.push(("CACHE_L1_MAX_STALE_MS", "0".into()));
    }
    srv.spawn(async move {
        let app = application(vars).await;
        let base = base_url(&app);
        let state = app.state().clone();
        tokio::spawn(app.run_until(std::future::pending()));
        until_redis(&state).await;
        base
    })
    .await
    .expect("server")
}

/// The ceilings: the same bytes from memory, and after one Redis GET; both verify the
/// bearer token first, as the cache layer does before a hit.
async fn ceilings(srv: &tokio::runtime::Handle, redis_url: String, body: Bytes) -> String {
    srv.spawn(async move {
        let keys = Arc::new(TokenKeys::new(SECRET));
        let conn = redis::Client::open(redis_url.clone())
            .expect("client")
            .get_multiplexed_async_connection()
            .await
            .expect("redis");
        let authorized = move |headers: &HeaderMap| {
            bearer_token(headers).is_some_and(|token| keys.verify_shared(token).is_ok())
        };
        let memory = {
            let authorized = authorized.clone();
            move |headers: HeaderMap| {
                let body = body.clone();
                let ok = authorized(&headers);
                async move {
                    if !ok {
                        return StatusCode::UNAUTHORIZED.into_response();
                    }
                    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
                }
            }
        };
        // The same GET through ims-redis' command path (breaker, command time-out, the
        // connection manager): what that path costs over a bare multiplexed connection.
        let ims_redis = {
            let url = redis_url.clone();
            ims_redis::RedisService::new(
                ims_redis::RedisConnection::connect(
                    ims_redis::RedisConfig::from_lookup(|name| {
                        (name == "REDIS_URL").then(|| url.clone())
                    })
                    .expect("config"),
                )
                .await,
                "bench:",
            )
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !ims_redis.is_connected() {
            assert!(Instant::now() < deadline, "ims-redis never connected");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let via_ims = {
            let authorized = authorized.clone();
            move |headers: HeaderMap| {
                let redis = ims_redis.clone();
                let ok = authorized(&headers);
                async move {
                    if !ok {
                        return StatusCode::UNAUTHORIZED.into_response();
                    }
                    let bytes: Vec<u8> = redis
                        .connection()
                        .run(|mut c| async move {
                            redis::cmd("GET").arg(CEILING_KEY).query_async(&mut c).await
                        })
                        .await
                        .unwrap_or_default();
                    ([(header::CONTENT_TYPE, "application/json")], bytes).into_response()
                }
            }
        };
        let one_get = move |headers: HeaderMap| {
            let mut conn = conn.clone();
            let ok = authorized(&headers);
            async move {
                if !ok {
                    return StatusCode::UNAUTHORIZED.into_response();
                }
                let bytes: Vec<u8> = redis::cmd("GET")
                    .arg(CEILING_KEY)
                    .query_async(&mut conn)
                    .await
                    .unwrap_or_default();
                ([(header::CONTENT_TYPE, "application/json")], bytes).into_response()
            }
        };
        // The same GET answered with the headers an L2 hit carries (fixed values): what
        // the contract's headers cost the server's encoder and the client's parser, apart
        // from the work that produces them.
        let with_headers = {
            let one_get = one_get.clone();
            move |headers: HeaderMap| {
                let get = one_get(headers);
                async move {
                    let mut response = get.await;
                    let headers = response.headers_mut();
                    headers.reserve(HIT_HEADERS.len());
                    for (name, value) in HIT_HEADERS {
                        headers.insert(name, value);
                    }
                    response
                }
            }
        };
        // Asked for with the cached route's path and query behind a prefix, so that the load
        // generator builds and the server parses the same request line for every case.
        let path = ROUTE.split('?').next().unwrap_or(ROUTE);
        let router = axum::Router::new()
            .route(&format!("/memory{path}"), get(memory))
            .route(&format!("/get{path}"), get(one_get))
            .route(&format!("/get-headers{path}"), get(with_headers))
            .route(&format!("/get-ims{path}"), get(via_ims));
        support::serve(router).await
    })
    .await
    .expect("ceilings")
}

/// The headers of an L2 hit with the limiter on, but content type and length (the
/// ceilings set those): values of the same length as the server's, made at compile time as
/// the server's names are, so that the ceiling pays only for inserting and sending them.
const HIT_HEADERS: [(header::HeaderName, header::HeaderValue); 11] = {
    use header::{HeaderName as N, HeaderValue as V};
    [
        (
            header::ETAG,
            V::from_static("\"84d449711b74c88904891014f4c70a3f\""),
        ),
        (header::CACHE_CONTROL, V::from_static("private, no-cache")),
        (N::from_static("x-cache"), V::from_static("HIT")),
        (N::from_static("x-cache-ttl"), V::from_static("588")),
        (N::from_static("x-cache-tier"), V::from_static("L2")),
        (N::from_static("ratelimit-limit"), V::from_static("1000000")),
        (
            N::from_static("ratelimit-remaining"),
            V::from_static("999998"),
        ),
        (N::from_static("ratelimit-reset"), V::from_static("60")),
        (
            N::from_static("ratelimit-policy"),
            V::from_static("\"ip-route\";q=1000000;w=60, \"user\";q=1000000;w=3600"),
        ),
        (
            N::from_static("ratelimit"),
            V::from_static("\"ip-route\";r=999998;t=60"),
        ),
        (
            N::from_static("x-request-id"),
            V::from_static("3e843985-94ed-4900-9ad0-49bf82cf72eb"),
        ),
    ]
};

/// Commands Redis has served so far: (scripts, all commands).
fn script_calls(url: &str) -> (u64, u64) {
    let Ok(mut conn) = redis::Client::open(url).and_then(|c| c.get_connection()) else {
        return (0, 0);
    };
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut conn)
        .unwrap_or_default();
    let calls = |l: &str| {
        l.split("calls=")
            .nth(1)?
            .split(',')
            .next()?
            .parse::<u64>()
            .ok()
    };
    let all = info.lines().filter_map(calls).sum();
    let scripts = info
        .lines()
        .filter(|l| l.starts_with("cmdstat_evalsha:") || l.starts_with("cmdstat_eval:"))
        .filter_map(calls)
        .sum();
    (scripts, all)
}

/// `count` GETs of `case.url`, [`concurrency`] in flight.
async fn measure(
    client: &reqwest::Client,
    case: &Case,
    token: &str,
    body: &Bytes,
    count: usize,
    redis: Option<u32>,
) -> Run {
    let me = std::process::id().to_string();
    let redis_cpu = || redis.map(|p| cpu_split(&p.to_string(), "").0).unwrap_or(0);
    let ((srv_before, load_before), redis_before) = (cpu_split(&me, "ims-srv"), redis_cpu());
    let (timing, answers) = support::timed(count, concurrency(), |i| async move {
        let request = client
            .get(&case.url)
            .bearer_auth(token)
            // Many clients behind one trusted proxy: each address has its own
            // per-route log (the user's log is shared by all).
            .header(
                "x-forwarded-for",
                format!("198.51.100.{}", i % ADDRESSES + 1),
            );
        let response = support::success(request).await;
        let tier = response
            .headers()
            .get("x-cache-tier")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let hit = response
            .headers()
            .get("x-cache")
            .is_some_and(|v| v == "HIT");
        let got = response.bytes().await.expect("body");
        assert_eq!(got.len(), body.len(), "{}: another body", case.url);
        match case.expect {
            Expect::L1 => hit && tier.as_deref() == Some("L1"),
            Expect::L2 => hit && tier.as_deref() == Some("L2"),
            Expect::Bare => tier.is_none(),
        }
    })
    .await;
    let ((srv_after, load_after), redis_after) = (cpu_split(&me, "ims-srv"), redis_cpu());
    let per_request = |ns: u64| ns as f64 / 1000.0 / count as f64;
    Run {
        rps: timing.rps,
        p50: timing.p50,
        p99: timing.p99,
        as_expected: answers.iter().filter(|ok| **ok).count(),
        cpu_server: per_request(srv_after.saturating_sub(srv_before)),
        cpu_load: per_request(load_after.saturating_sub(load_before)),
        cpu_redis: per_request(redis_after.saturating_sub(redis_before)),
    }
}

async fn bench(srv: tokio::runtime::Handle) {
    let requests = env_number("IMS_BENCH_REQUESTS", 10_000);
    let rounds = env_number("IMS_BENCH_ROUNDS", 7).max(1);
    let started = Instant::now();
    let redis = RedisServer::start();
    if let Ok(policy) = std::env::var("IMS_BENCH_REDIS_POLICY") {
        let mut conn = redis::Client::open(redis.url())
            .and_then(|client| client.get_connection())
            .expect("redis");
        let () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("maxmemory-policy")
            .arg(&policy)
            .arg("maxmemory")
            .arg("1gb")
            .query(&mut conn)
            .expect("config set");
        println!("Redis maxmemory-policy {policy}: cache hits check their epochs");
    }
    let redis_pid = redis_pids().get(&redis.port()).copied();
    if redis_pid.is_none() {
        println!("(redis-server pid not found: no Redis CPU figures)");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let database_url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("bench.db").display()
    );
    let off_l1 = server(&srv, &database_url, &redis.url(), false, true).await;
    let off_l2 = server(&srv, &database_url, &redis.url(), false, false).await;
    let on_l1 = server(&srv, &database_url, &redis.url(), true, true).await;
    let on_l2 = server(&srv, &database_url, &redis.url(), true, false).await;
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");

    let pair = post(
        &client,
        format!("{off_l1}/auth/register"),
        None,
        json!({"email": "bench@example.com", "password": "bench password",
               "name": "Bench", "organizationName": "Bench"}),
    )
    .await;
    let token = pair["accessToken"].as_str().expect("token").to_string();
    // Tax rates until the page is about 2 KB.
    let fetch = |base: String, no_cache: bool| {
        let (client, token) = (client.clone(), token.clone());
        async move {
            let mut request = client.get(format!("{base}{ROUTE}")).bearer_auth(&token);
            if no_cache {
                request = request.header(header::CACHE_CONTROL, "no-cache");
            }
            let response = request.send().await.expect("get");
            assert!(response.status().is_success(), "{}", response.status());
            let tier = response
                .headers()
                .get("x-cache-tier")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_string();
            (tier, response.bytes().await.expect("body"))
        }
    };
    let mut rates = 0;
    while fetch(off_l1.clone(), true).await.1.len() < BODY_BYTES - 100 {
        post(
            &client,
            format!("{off_l1}/tax-rates"),
            Some(&token),
            json!({"name": format!("Bench tax rate {rates:03}"), "rateBps": 500 + rates}),
        )
        .await;
        rates += 1;
    }
    // Stored in Redis, then in each L1-serving server's memory.
    let mut body = Bytes::new();
    for base in [&off_l1, &off_l2, &on_l1, &on_l2] {
        let want = if base == &off_l2 || base == &on_l2 {
            "L2"
        } else {
            "L1"
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (tier, bytes) = fetch(base.clone(), false).await;
            if tier == want {
                body = bytes;
                break;
            }
            assert!(Instant::now() < deadline, "{base}: never an {want} hit");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let mut conn = redis::Client::open(redis.url())
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let () = redis::cmd("SET")
        .arg(CEILING_KEY)
        .arg(body.as_ref())
        .query_async(&mut conn)
        .await
        .expect("set");
    let ceiling = ceilings(&srv, redis.url(), body.clone()).await;
    println!(
        "GET {ROUTE}: {} tax rates, body {} bytes; setup {:.1?}",
        rates,
        body.len(),
        started.elapsed()
    );

    // IMS_BENCH_HOLD_SECONDS: no cases; the servers stay up that long for another load
    // generator (wrk, as the issue measured), which must send the token and an
    // `X-Forwarded-For` per request itself.
    if let Some(seconds) = std::env::var("IMS_BENCH_HOLD_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        println!("token {token}");
        println!("redis {}", redis.url());
        println!("ceiling {ceiling}/get{ROUTE}");
        println!("headers {ceiling}/get-headers{ROUTE}");
        println!("l2-off {off_l2}{ROUTE}");
        println!("l2-on {on_l2}{ROUTE}");
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        return;
    }
    let cases = [
        Case {
            name: "L1 hit, limiter off",
            url: format!("{off_l1}{ROUTE}"),
            expect: Expect::L1,
        },
        Case {
            name: "L2 hit, limiter off",
            url: format!("{off_l2}{ROUTE}"),
            expect: Expect::L2,
        },
        Case {
            name: "ceiling: memory",
            url: format!("{ceiling}/memory{ROUTE}"),
            expect: Expect::Bare,
        },
        Case {
            name: "ceiling: one GET",
            url: format!("{ceiling}/get{ROUTE}"),
            expect: Expect::Bare,
        },
        Case {
            name: "ceiling: GET+headers",
            url: format!("{ceiling}/get-headers{ROUTE}"),
            // It answers an L2 hit's headers.
            expect: Expect::L2,
        },
        Case {
            name: "L1 hit, limiter on",
            url: format!("{on_l1}{ROUTE}"),
            expect: Expect::L1,
        },
        Case {
            name: "L2 hit, limiter on",
            url: format!("{on_l2}{ROUTE}"),
            expect: Expect::L2,
        },
        Case {
            name: "ceiling: ims-redis GET",
            url: format!("{ceiling}/get-ims{ROUTE}"),
            expect: Expect::Bare,
        },
    ];
    // IMS_BENCH_ONLY=<part of a case name>[|<another>] runs only the matching cases.
    let only = std::env::var("IMS_BENCH_ONLY").ok();
    let active: Vec<usize> = (0..cases.len())
        .filter(|i| {
            only.as_deref()
                .is_none_or(|o| o.split('|').any(|part| cases[*i].name.contains(part)))
        })
        .collect();
    // Warm-up: connections open, code paths hot.
    for &c in &active {
        measure(&client, &cases[c], &token, &body, 1000, redis_pid).await;
    }
    let mut runs: Vec<Vec<Run>> = vec![Vec::new(); cases.len()];
    // Redis scripts (the limiter's reservations; cache stores would be scripts too, but
    // every case here hits) per request, over all rounds.
    let mut scripts = vec![(0u64, 0u64); cases.len()];
    for round in 0..rounds {
        for k in 0..active.len() {
            let c = active[(k + round) % active.len()];
            // Each case is measured warm: the other cases ran for seconds since its last
            // round, longer than the limiter's lease terms, so its first requests would
            // size leases again (and re-open idle connections) inside the measurement.
            measure(&client, &cases[c], &token, &body, ROUND_WARM_UP, redis_pid).await;
            let before = script_calls(&redis.url());
            runs[c].push(measure(&client, &cases[c], &token, &body, requests, redis_pid).await);
            let after = script_calls(&redis.url());
            scripts[c].0 += after.0.saturating_sub(before.0);
            // Less this INFO call itself.
            scripts[c].1 += after.1.saturating_sub(before.1 + 1);
        }
    }
    for &c in &active {
        let per_request = |n: u64| n as f64 / (rounds * requests) as f64;
        println!(
            "{:<24} Redis commands per request: {:.3}, of which scripts {:.4}",
            cases[c].name,
            per_request(scripts[c].1),
            per_request(scripts[c].0)
        );
    }
    let median: Vec<Option<Run>> = runs
        .iter()
        .map(|r| {
            let mut r = r.clone();
            r.sort_by(|a, b| a.rps.total_cmp(&b.rps));
            r.get(r.len() / 2).copied()
        })
        .collect();
    println!(
        "\n{requests} requests x {rounds} rounds, {} in flight, JWT on every request; median round",
        concurrency()
    );
    println!(
        "{:<22} {:>8} {:>9} {:>9} {:>13} {:>10} {:>10} {:>10}",
        "case", "req/s", "p50", "p99", "tier as meant", "srv us/req", "load us/rq", "redis us/r"
    );
    for (case, run) in cases.iter().zip(&median) {
        let Some(run) = run else { continue };
        println!(
            "{:<22} {:>8.0} {:>9.3?} {:>9.3?} {:>13} {:>10.1} {:>10.1} {:>10.1}",
            case.name,
            run.rps,
            run.p50,
            run.p99,
            format!("{}/{}", run.as_expected, requests),
            run.cpu_server,
            run.cpu_load,
            run.cpu_redis
        );
    }
    // Throughput ratio of the median rounds, the median of the per-round ratios (both
    // cases of a round ran back to back), and the inverse ratio of server CPU per request.
    let ratio = |label: &str, a: usize, b: usize, target: Option<f64>| {
        let (Some(ma), Some(mb)) = (median[a], median[b]) else {
            return;
        };
        let mut per_round: Vec<f64> = (0..rounds)
            .map(|r| runs[a][r].rps / runs[b][r].rps)
            .collect();
        let listed: Vec<String> = per_round.iter().map(|r| format!("{r:.2}")).collect();
        per_round.sort_by(f64::total_cmp);
        let ratio = ma.rps / mb.rps;
        let verdict = match target {
            Some(t) if ratio >= t => format!(" >= {t}: ok"),
            Some(t) => format!(" < {t}: BELOW"),
            None => String::new(),
        };
        println!(
            "{label}: req/s {ratio:.2}{verdict}; per round {} (median {:.2}); server CPU/req {:.2}",
            listed.join(" "),
            per_round[per_round.len() / 2],
            mb.cpu_server / ma.cpu_server
        );
    };
    ratio("L1(off) / memory ceiling ", 0, 2, Some(0.85));
    ratio("L1(on)  / one-GET ceiling", 5, 3, Some(0.85));
    ratio("L2(off) / one-GET ceiling", 1, 3, None);
    ratio("L2(on)  / one-GET ceiling", 6, 3, Some(0.85));
    ratio("L2 limiter on / off       ", 6, 1, Some(0.90));
    ratio("L1 limiter on / off       ", 5, 0, Some(0.90));
    // How much of the gap is the contract's headers alone (encoding and parsing them).
    ratio("GET+headers / one-GET     ", 4, 3, None);
    ratio("L2(on)  / GET+headers     ", 6, 4, None);

    // The two targets again, in pairs of short slices run back to back (A then B, then B
    // then A, so that a drift in the machine's speed favours neither). A round above takes
    // about half a second a case, and the machine's speed moves within that (single rounds
    // of the same pair ran from 0.62 to 1.28); a slice takes a few tens of milliseconds,
    // so the two halves of a pair see nearly the same machine, and the median of many
    // pairs is what the code costs rather than what the neighbours did.
    let pairs = env_number("IMS_BENCH_PAIRS", 40);
    let slice = env_number("IMS_BENCH_SLICE", 1_000);
    if pairs > 0 {
        println!("\nin pairs of slices: {pairs} pairs of {slice} requests each, alternating order");
    }
    // The other four say how the gap splits: IMS without the limiter, the contract's
    // headers alone (a bare handler answering them), the rest of IMS's work against that
    // handler, and ims-redis' command path alone against a bare multiplexed connection.
    for (label, a, b, target) in [
        ("L2(on)  / one-GET ceiling", 6, 3, Some(0.85)),
        ("L2 limiter on / off       ", 6, 1, Some(0.90)),
        ("L2(off) / one-GET ceiling", 1, 3, None),
        ("GET+headers / one-GET     ", 4, 3, None),
        ("L2(on)  / GET+headers     ", 6, 4, None),
        ("ims-redis GET / one-GET   ", 7, 3, None),
    ] {
        if pairs == 0 || !active.contains(&a) || !active.contains(&b) {
            continue;
        }
        for c in [a, b] {
            measure(&client, &cases[c], &token, &body, ROUND_WARM_UP, None).await;
        }
        let mut ratios = Vec::with_capacity(pairs);
        for i in 0..pairs {
            let order = if i % 2 == 0 { [a, b] } else { [b, a] };
            let mut rps = [0.0; 2];
            for c in order {
                let run = measure(&client, &cases[c], &token, &body, slice, None).await;
                assert_eq!(
                    run.as_expected, slice,
                    "{}: not the intended tier",
                    cases[c].name
                );
                rps[usize::from(c == b)] = run.rps;
            }
            ratios.push(rps[0] / rps[1]);
        }
        ratios.sort_by(f64::total_cmp);
        let at = |q: f64| ratios[((ratios.len() - 1) as f64 * q).round() as usize];
        let median = at(0.5);
        let verdict = match target {
            Some(target) => format!(
                " {} {target}; {} of {pairs} pairs at or above",
                if median >= target { ">=" } else { "< " },
                ratios.iter().filter(|r| **r >= target).count()
            ),
            None => String::new(),
        };
        println!(
            "{label}: median of pairs {median:.2}{verdict} (quartiles {:.2}-{:.2}, range {:.2}-{:.2})",
            at(0.25),
            at(0.75),
            at(0.0),
            at(1.0),
        );
    }
    println!("total {:.1?}", started.elapsed());

    // Tiers as intended: L2 cases all from Redis; L1 cases from memory but for the
    // revalidation once per CACHE_L1_MAX_STALE_MS (up to `concurrency()` requests each).
    for (case, runs) in cases.iter().zip(&runs) {
        for run in runs {
            let allowed = match case.expect {
                Expect::L1 => requests / 100,
                Expect::L2 | Expect::Bare => 0,
            };
            assert!(
                requests - run.as_expected <= allowed,
                "{}: {} of {requests} answers not from the intended tier",
                case.name,
                requests - run.as_expected
            );
        }
    }
}

fn main() {
    let (srv, load) = support::runtimes();
    load.block_on(bench(srv.handle().clone()));
    srv.shutdown_background();
}
