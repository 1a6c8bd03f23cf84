//! Redis Cluster against one Redis node, in one run: `cargo bench -p ims-api --bench cluster`.
//!
//! Two in-process servers on one SQLite file, one on a single `redis-server` and one on a
//! local Redis Cluster (3 masters, 3 replicas). With 16 requests in flight, measures cached
//! `GET /items` hits on both (round robin over several organizations, so the cluster's
//! entries spread over every master) and two ceilings: a bare axum handler answering the same
//! bytes after one Redis GET, on the single node and on the cluster. The cases run in
//! rounds of rotating order; each row is the round with the median throughput. CPU per
//! request: this process (load generator and servers together) and the redis-server
//! processes, from `/proc/<pid>/stat`.
//!
//! Then a master of the cluster is killed under a steady mixed load on the cluster server
//! (90 % `GET /items`, 10 % `PATCH /items/{id}`): failed requests, the GETs answered `MISS`
//! from the kill until caching resumed against an equal window before it, and the slowest
//! requests before, during and after the failover.
//! Sizes: IMS_BENCH_REQUESTS (default 10000 per case and round), IMS_BENCH_ROUNDS (default 3).

mod support;

use support::{
    application, base_url, ceiling, env_number, post, redis_pids, until_redis, UNREACHED_LIMITS,
};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ims_api::state::AppState;
use ims_testkit::{RedisCluster, RedisServer};
use serde_json::json;

const CONCURRENCY: usize = 16;
/// Organizations at least; more (up to `MAX_ORGS`) while the master that will be killed
/// holds none of their entries.
const ORGS: usize = 6;
const MAX_ORGS: usize = 12;
const ITEMS: usize = 50;
const BEFORE_KILL: Duration = Duration::from_secs(4);
const AFTER_FAILOVER: Duration = Duration::from_secs(3);
/// `/proc/<pid>/stat` counts CPU time in USER_HZ ticks, 100 per second on Linux.
const TICK_US: f64 = 10_000.0;

struct Org {
    id: String,
    token: String,
    item: String,
}

#[derive(Clone, Copy)]
struct Run {
    rps: f64,
    p50: Duration,
    p99: Duration,
    non_hits: usize,
    /// CPU µs per request of this process (load generator and both servers).
    cpu_self: f64,
    /// CPU µs per request of the redis-server processes behind the case.
    cpu_redis: f64,
}

/// A measured case: name, (url, token) targets, whether answers must be HITs, the
/// redis-server pids behind it.
type Case<'a> = (&'a str, Vec<(String, String)>, bool, &'a [u32]);

/// One request of the failover phase.
struct Sample {
    /// Since the load started.
    start: Duration,
    took: Duration,
    patch: bool,
    org: usize,
    ok: bool,
    cache: String,
    ttl: u64,
    note: String,
}

/// utime + stime of a process, in ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // The command name may hold spaces; the fields after it start at `state` (field 3).
    let Some(rest) = stat.rfind(')').map(|at| &stat[at + 2..]) else {
        return 0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(11) + field(12)
}

async fn server(database_url: &str, redis_var: &str, redis_value: String) -> (String, AppState) {
    let mut vars = vec![
        ("DATABASE_URL", database_url.to_string()),
        (redis_var, redis_value),
        ("CACHE_TTL_JITTER", "0".into()),
        ("RUST_LOG", "warn".into()),
    ];
    vars.extend(UNREACHED_LIMITS.map(|(name, value)| (name, value.to_string())));
    let app = application(vars).await;
    let base = base_url(&app);
    let state = app.state().clone();
    tokio::spawn(app.run_until(std::future::pending()));
    until_redis(&state).await;
    (base, state)
}

async fn new_org(client: &reqwest::Client, base: &str, n: usize) -> Org {
    let pair = post(
        client,
        format!("{base}/auth/register"),
        None,
        json!({"email": format!("bench{n}@example.com"), "password": "bench password",
               "name": "Bench", "organizationName": format!("Bench {n}")}),
    )
    .await;
    let token = pair["accessToken"].as_str().expect("token").to_string();
    let id = pair["user"]["organizationId"]
        .as_str()
        .expect("org")
        .to_string();
    let mut item = String::new();
    for i in 0..ITEMS {
        let created = post(
            client,
            format!("{base}/items"),
            Some(&token),
            json!({"name": format!("Item {i}"), "sku": format!("SKU-{i}"), "priceCents": 100 + i}),
        )
        .await;
        if i == 0 {
            item = created["id"].as_str().expect("id").to_string();
        }
    }
    Org { id, token, item }
}

/// `GET /items` for every organization until each answers a HIT; returns the bodies.
async fn warm(client: &reqwest::Client, base: &str, orgs: &[Org]) -> Vec<Vec<u8>> {
    let mut bodies = Vec::new();
    for org in orgs {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let response = client
                .get(format!("{base}/items"))
                .bearer_auth(&org.token)
                .send()
                .await
                .expect("warm");
            assert!(response.status().is_success(), "{}", response.status());
            let hit = response
                .headers()
                .get("x-cache")
                .is_some_and(|v| v == "HIT");
            let body = response.bytes().await.expect("body");
            if hit {
                bodies.push(body.to_vec());
                break;
            }
            assert!(Instant::now() < deadline, "{base}/items never became a HIT");
        }
    }
    bodies
}

/// Keys matching `pattern` on each master, by port.
async fn keys_per_master(cluster: &RedisCluster, pattern: &str) -> Vec<(u16, Vec<String>)> {
    let mut out = Vec::new();
    for port in cluster.masters() {
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).expect("client");
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .expect("master");
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(pattern)
            .query_async(&mut conn)
            .await
            .expect("keys");
        out.push((port, keys));
    }
    out
}

/// `count` GETs, `CONCURRENCY` in flight, request `i` to `targets[i % len]` (url, token).
async fn measure(
    client: &reqwest::Client,
    targets: &[(String, String)],
    count: usize,
    expect_hit: bool,
    redis_pids: &[u32],
) -> Run {
    let me = std::process::id();
    let redis_cpu = || redis_pids.iter().map(|p| cpu_ticks(*p)).sum::<u64>();
    let (self_before, redis_before) = (cpu_ticks(me), redis_cpu());
    let (timing, hits) = support::timed(count, CONCURRENCY, |i| {
        let (url, token) = &targets[i % targets.len()];
        async move {
            let response = support::success(client.get(url).bearer_auth(token)).await;
            let hit = response
                .headers()
                .get("x-cache")
                .is_some_and(|v| v == "HIT");
            response.bytes().await.expect("body");
            hit
        }
    })
    .await;
    let (self_after, redis_after) = (cpu_ticks(me), redis_cpu());
    let non_hits = if expect_hit {
        hits.iter().filter(|hit| !**hit).count()
    } else {
        0
    };
    let per_request = |ticks: u64| ticks as f64 * TICK_US / count as f64;
    Run {
        rps: timing.rps,
        p50: timing.p50,
        p99: timing.p99,
        non_hits,
        cpu_self: per_request(self_after - self_before),
        cpu_redis: per_request(redis_after - redis_before),
    }
}

async fn worker(
    n: usize,
    client: reqwest::Client,
    base: String,
    orgs: Arc<Vec<Org>>,
    stop: Arc<AtomicBool>,
    t0: Instant,
) -> Vec<Sample> {
    let mut samples = Vec::new();
    let mut i = 0usize;
    while !stop.load(Ordering::SeqCst) {
        let org = (n + i) % orgs.len();
        i += 1;
        let patch = i.is_multiple_of(10);
        let start = t0.elapsed();
        let t = Instant::now();
        let response = if patch {
            client
                .patch(format!("{base}/items/{}", orgs[org].item))
                .bearer_auth(&orgs[org].token)
                .json(&json!({"priceCents": 1000 + i}))
                .send()
                .await
        } else {
            client
                .get(format!("{base}/items"))
                .bearer_auth(&orgs[org].token)
                .send()
                .await
        };
        let (ok, cache, ttl, note) = match response {
            Ok(r) => {
                let status = r.status();
                let header = |name: &str| {
                    r.headers()
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string()
                };
                let (cache, ttl) = (header("x-cache"), header("x-cache-ttl"));
                let body = r.bytes().await;
                (
                    status.is_success() && body.is_ok(),
                    cache,
                    ttl.parse().unwrap_or(0),
                    match body {
                        Ok(_) => status.to_string(),
                        Err(e) => format!("{status}, body: {e}"),
                    },
                )
            }
            Err(e) => (false, String::new(), 0, format!("transport: {e}")),
        };
        samples.push(Sample {
            start,
            took: t.elapsed(),
            patch,
            org,
            ok,
            cache,
            ttl,
            note,
        });
    }
    samples
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Milliseconds from `at` to `t`, signed.
fn rel(t: Duration, at: Duration) -> f64 {
    ms(t) - ms(at)
}

#[tokio::main]
async fn main() {
    let requests = env_number("IMS_BENCH_REQUESTS", 10_000);
    let rounds = env_number("IMS_BENCH_ROUNDS", 3).max(1);
    let started = Instant::now();
    let redis = RedisServer::start();
    let cluster = Arc::new(RedisCluster::start());
    let pids = redis_pids();
    let single_pids: Vec<u32> = pids.get(&redis.port()).copied().into_iter().collect();
    let cluster_pids: Vec<u32> = cluster
        .ports()
        .iter()
        .filter_map(|p| pids.get(p).copied())
        .collect();
    if single_pids.len() != 1 || cluster_pids.len() != 6 {
        println!(
            "(redis-server pids not all found: {} + {} of 1 + 6; Redis CPU figures are partial)",
            single_pids.len(),
            cluster_pids.len()
        );
    }

    let dir = tempfile::tempdir().expect("tempdir");
    let database_url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("bench.db").display()
    );
    let (single, _) = server(&database_url, "REDIS_URL", redis.url()).await;
    let (clustered, cluster_state) =
        server(&database_url, "REDIS_CLUSTER_NODES", cluster.seeds()).await;
    let client = reqwest::Client::new();

    // The master `kill_master` will pick; enough organizations that it holds some entries.
    let victim = *cluster.masters().first().expect("masters");
    let mut orgs = Vec::new();
    let placement = loop {
        orgs.push(new_org(&client, &clustered, orgs.len()).await);
        if orgs.len() < ORGS {
            continue;
        }
        warm(&client, &clustered, &orgs).await;
        let placement = keys_per_master(&cluster, "*items:list*").await;
        let on_victim = placement
            .iter()
            .any(|(port, keys)| *port == victim && !keys.is_empty());
        if on_victim || orgs.len() >= MAX_ORGS {
            break placement;
        }
    };
    let orgs = Arc::new(orgs);
    let victim_keys: Vec<String> = placement
        .iter()
        .filter(|(port, _)| *port == victim)
        .flat_map(|(_, keys)| keys.clone())
        .collect();
    let on_victim: Vec<bool> = orgs
        .iter()
        .map(|o| victim_keys.iter().any(|k| k.contains(&o.id)))
        .collect();
    // Every request also runs the rate limiter, whose keys (one per client and route) live
    // wherever they hash; one PATCH makes the key of `PATCH /items/{id}` exist.
    let response = client
        .patch(format!("{clustered}/items/{}", orgs[0].item))
        .bearer_auth(&orgs[0].token)
        .json(&json!({"priceCents": 999}))
        .send()
        .await
        .expect("patch");
    assert!(response.status().is_success(), "{}", response.status());
    let limiter_keys: Vec<String> = keys_per_master(&cluster, "*ratelimit*")
        .await
        .into_iter()
        .filter(|(port, _)| *port == victim)
        .flat_map(|(_, keys)| keys)
        .collect();
    println!(
        "rate-limit keys on master {victim}: {}",
        if limiter_keys.is_empty() {
            "none".to_string()
        } else {
            limiter_keys.join(", ")
        }
    );
    println!(
        "{} organizations x {ITEMS} items; /items entries per master {:?}; master {victim} (to be killed) holds {}; setup {:.1?}",
        orgs.len(),
        placement
            .iter()
            .map(|(port, keys)| (*port, keys.len()))
            .collect::<Vec<_>>(),
        on_victim.iter().filter(|v| **v).count(),
        started.elapsed()
    );

    // Ceilings: the bytes of each organization's hit, after one GET on either Redis.
    let bodies = warm(&client, &single, &orgs).await;
    let mut single_conn = redis::Client::open(redis.url())
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let nodes: Vec<String> = cluster
        .seeds()
        .split(',')
        .map(|node| format!("redis://{node}"))
        .collect();
    let mut cluster_conn = redis::cluster::ClusterClient::new(nodes)
        .expect("cluster client")
        .get_async_connection()
        .await
        .expect("cluster connection");
    for (i, body) in bodies.iter().enumerate() {
        let key = format!("bench:ceiling:{i}");
        let () = redis::cmd("SET")
            .arg(&key)
            .arg(body)
            .query_async(&mut single_conn)
            .await
            .expect("set");
        let () = redis::cmd("SET")
            .arg(&key)
            .arg(body)
            .query_async(&mut cluster_conn)
            .await
            .expect("set");
    }
    let ceiling_single = support::serve(ceiling(single_conn)).await;
    let ceiling_cluster = support::serve(ceiling(cluster_conn)).await;

    let targets = |base: &str, path: &dyn Fn(usize) -> String| -> Vec<(String, String)> {
        orgs.iter()
            .enumerate()
            .map(|(i, o)| (format!("{base}{}", path(i)), o.token.clone()))
            .collect()
    };
    let items = |_: usize| "/items".to_string();
    let key = |i: usize| format!("/ceiling/bench:ceiling:{i}");
    let cases: [Case; 4] = [
        (
            "single node  GET /items",
            targets(&single, &items),
            true,
            &single_pids,
        ),
        (
            "cluster      GET /items",
            targets(&clustered, &items),
            true,
            &cluster_pids,
        ),
        (
            "ceiling single (1 GET)",
            targets(&ceiling_single, &key),
            false,
            &single_pids,
        ),
        (
            "ceiling cluster (1 GET)",
            targets(&ceiling_cluster, &key),
            false,
            &cluster_pids,
        ),
    ];
    // Warm-up: connections open, code paths hot.
    for (_, t, hit, p) in &cases {
        measure(&client, t, 500, *hit, p).await;
    }
    let mut runs: Vec<Vec<Run>> = vec![Vec::new(); cases.len()];
    for round in 0..rounds {
        // Entries live 60 s; rewarm so no round crosses an expiry.
        warm(&client, &single, &orgs).await;
        warm(&client, &clustered, &orgs).await;
        for k in 0..cases.len() {
            let c = (k + round) % cases.len();
            let (_, t, hit, p) = &cases[c];
            runs[c].push(measure(&client, t, requests, *hit, p).await);
        }
    }
    let per_round: Vec<f64> = (0..rounds)
        .map(|r| runs[1][r].rps / runs[0][r].rps)
        .collect();
    let median: Vec<Run> = runs
        .iter()
        .map(|r| {
            let mut r = r.clone();
            r.sort_by(|a, b| a.rps.total_cmp(&b.rps));
            r[r.len() / 2]
        })
        .collect();
    println!(
        "\n{requests} requests x {rounds} rounds, {CONCURRENCY} in flight, {} organizations; median round",
        orgs.len()
    );
    println!(
        "{:<25} {:>8} {:>10} {:>10} {:>8} {:>14} {:>14}",
        "case", "req/s", "p50", "p99", "non-HIT", "proc CPU us/req", "redis us/req"
    );
    for ((name, ..), run) in cases.iter().zip(&median) {
        println!(
            "{name:<25} {:>8.0} {:>10.3?} {:>10.3?} {:>8} {:>14.1} {:>14.1}",
            run.rps, run.p50, run.p99, run.non_hits, run.cpu_self, run.cpu_redis
        );
    }
    let [one, many, ceil_one, ceil_many] = [median[0], median[1], median[2], median[3]];
    let p = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    println!(
        "cluster/single: req/s {:.2}, p50 {:.2}, p99 {:.2} (req/s per round {})",
        many.rps / one.rps,
        p(many.p50, one.p50),
        p(many.p99, one.p99),
        per_round
            .iter()
            .map(|r| format!("{r:.2}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "req/s / ceiling single: single {:.2}, cluster {:.2}, ceiling cluster {:.2}; cluster / ceiling cluster {:.2}",
        one.rps / ceil_one.rps,
        many.rps / ceil_one.rps,
        ceil_many.rps / ceil_one.rps,
        many.rps / ceil_many.rps
    );
    let total_non_hits: usize = runs.iter().flatten().map(|r| r.non_hits).sum();

    // Failover under load, on the cluster server.
    warm(&client, &clustered, &orgs).await;
    let outages_before = cluster_state.redis.connection().outages();
    let t0 = Instant::now();
    let transitions: Arc<Mutex<Vec<(Duration, bool)>>> = Arc::default();
    let mut changes = cluster_state.redis.connection().subscribe();
    let watcher = {
        let transitions = transitions.clone();
        tokio::spawn(async move {
            while changes.changed().await.is_ok() {
                let up = *changes.borrow_and_update();
                if let Ok(mut t) = transitions.lock() {
                    t.push((t0.elapsed(), up));
                }
            }
        })
    };
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..CONCURRENCY)
        .map(|n| {
            tokio::spawn(worker(
                n,
                client.clone(),
                clustered.clone(),
                orgs.clone(),
                stop.clone(),
                t0,
            ))
        })
        .collect();
    tokio::time::sleep(BEFORE_KILL).await;
    // Blocking calls on the blocking pool: the load keeps running on the workers.
    let c = cluster.clone();
    let killed = tokio::task::spawn_blocking(move || c.kill_master())
        .await
        .expect("kill");
    let kill = t0.elapsed();
    let c = cluster.clone();
    let failover = tokio::task::spawn_blocking(move || c.wait_for_failover(killed))
        .await
        .expect("failover");
    let failed_over = kill + failover;
    tokio::time::sleep(AFTER_FAILOVER).await;
    stop.store(true, Ordering::SeqCst);
    let mut samples = Vec::new();
    for w in workers {
        samples.extend(w.await.expect("worker"));
    }
    let load_end = t0.elapsed();
    watcher.abort();
    let transitions = transitions.lock().map(|t| t.clone()).unwrap_or_default();
    samples.sort_by_key(|s| s.start);

    // Caching resumed: every organization answered a HIT after the breaker last closed (or,
    // had it never opened, after its last unstored miss since the kill).
    let last_up = transitions
        .iter()
        .filter(|(t, up)| *up && *t >= kill)
        .map(|(t, _)| *t)
        .next_back();
    let resumed_per_org: Vec<Option<Duration>> = (0..orgs.len())
        .map(|o| {
            let mine = || {
                samples
                    .iter()
                    .filter(move |s| s.org == o && !s.patch && s.ok)
            };
            let from = last_up.unwrap_or_else(|| {
                mine()
                    .filter(|s| s.start >= kill && s.cache == "MISS" && s.ttl == 0)
                    .map(|s| s.start)
                    .next_back()
                    .unwrap_or(kill)
            });
            mine()
                .find(|s| s.start >= from && s.cache == "HIT")
                .map(|s| s.start)
        })
        .collect();
    let resumed = if resumed_per_org.iter().all(Option::is_some) {
        resumed_per_org.iter().flatten().max().copied()
    } else {
        None
    };
    let gets = |from: Duration, to: Duration| {
        samples
            .iter()
            .filter(move |s| !s.patch && s.start >= from && s.start < to)
    };
    let total = samples.len();
    let failed: Vec<&Sample> = samples.iter().filter(|s| !s.ok).collect();
    let patches = samples.iter().filter(|s| s.patch).count();
    println!(
        "\nfailover under load ({CONCURRENCY} in flight, 90 % GET /items over {} organizations, 10 % PATCH /items/{{id}}, cluster server)",
        orgs.len()
    );
    println!(
        "requests {total} ({patches} PATCH) in {:.1?}, {:.0} req/s; failed {}; master {killed} killed at +{:.2} s; failover took {:.0} ms",
        load_end,
        total as f64 / load_end.as_secs_f64(),
        failed.len(),
        kill.as_secs_f64(),
        ms(failover)
    );
    for s in failed.iter().take(5) {
        println!(
            "  failed: {} at {:+.0} ms after the kill, {:.1?}: {}",
            if s.patch { "PATCH" } else { "GET" },
            rel(s.start, kill),
            s.took,
            s.note
        );
    }
    println!(
        "breaker (cluster server) transitions, ms after the kill: {}; outages counted {}",
        transitions
            .iter()
            .map(|(t, up)| format!("{} {:+.0}", if *up { "up" } else { "down" }, rel(*t, kill)))
            .collect::<Vec<_>>()
            .join(", "),
        cluster_state.redis.connection().outages() - outages_before
    );
    match resumed {
        Some(resumed) => {
            let window = resumed - kill;
            let during: Vec<&Sample> = gets(kill, resumed).collect();
            let misses = during.iter().filter(|s| s.cache == "MISS").count();
            let unstored = during
                .iter()
                .filter(|s| s.cache == "MISS" && s.ttl == 0)
                .count();
            let victims = during
                .iter()
                .filter(|s| s.cache == "MISS" && on_victim[s.org])
                .count();
            let from = kill.saturating_sub(window);
            let before: Vec<&Sample> = gets(from, kill).collect();
            let misses_before = before.iter().filter(|s| s.cache == "MISS").count();
            let scale = window.as_secs_f64() / (kill - from).as_secs_f64();
            println!(
                "caching resumed {:.0} ms after the kill: {misses} of {} GETs were MISS in that window ({unstored} not stored, {victims} of organizations on the killed master); before the kill, equal window: {misses_before} of {} ({}){}",
                ms(window),
                during.len(),
                before.len(),
                if misses_before == 0 {
                    "n/a".to_string()
                } else {
                    format!("x{:.1}", misses as f64 / (misses_before as f64 * scale))
                },
                if from == Duration::ZERO && scale > 1.0 {
                    format!(" (window before truncated to {:.0} ms)", ms(kill))
                } else {
                    String::new()
                }
            );
        }
        None => {
            let misses = gets(kill, load_end).filter(|s| s.cache == "MISS").count();
            println!(
                "caching had NOT resumed for every organization by the end of the load: {misses} MISS since the kill; per organization {:?}",
                resumed_per_org
                    .iter()
                    .map(|r| r.map(|t| rel(t, kill) as i64))
                    .collect::<Vec<_>>()
            );
        }
    }
    let step = Duration::from_millis(500);
    let mut timeline = Vec::new();
    let mut at = kill.saturating_sub(Duration::from_secs(2));
    while at < load_end {
        let window: Vec<&Sample> = gets(at, at + step).collect();
        let misses = window.iter().filter(|s| s.cache == "MISS").count();
        timeline.push(format!(
            "{}{misses}/{}",
            if at < kill && at + step > kill {
                "|"
            } else {
                ""
            },
            window.len()
        ));
        at += step;
    }
    println!(
        "MISS/GET per 0.5 s from 2 s before the kill (| = kill): {}",
        timeline.join(" ")
    );
    let slowest = |patch: bool, from: Duration, to: Duration| {
        samples
            .iter()
            .filter(|s| s.patch == patch && s.start >= from && s.start < to)
            .max_by_key(|s| s.took)
    };
    let describe = |s: Option<&Sample>| match s {
        Some(s) => format!(
            "{:>8.1?} (start {:+.0} ms, org {}{}, {})",
            s.took,
            rel(s.start, kill),
            s.org,
            if on_victim[s.org] {
                " on killed master"
            } else {
                ""
            },
            if s.cache.is_empty() {
                "-"
            } else {
                s.cache.as_str()
            }
        ),
        None => "-".to_string(),
    };
    for (label, from, to) in [
        ("before the kill", Duration::ZERO, kill),
        ("kill..failed over", kill, failed_over),
        ("after failover", failed_over, load_end),
    ] {
        println!(
            "slowest {label:<18} GET {}  PATCH {}",
            describe(slowest(false, from, to)),
            describe(slowest(true, from, to))
        );
    }
    let mut by_time: Vec<&Sample> = samples.iter().collect();
    by_time.sort_by_key(|s| std::cmp::Reverse(s.took));
    println!(
        "5 slowest requests: {}",
        by_time
            .iter()
            .take(5)
            .map(|s| format!(
                "{} {:.1?} at {:+.0} ms (org {}{})",
                if s.patch { "PATCH" } else { "GET" },
                s.took,
                rel(s.start, kill),
                s.org,
                if on_victim[s.org] {
                    ", killed master"
                } else {
                    ""
                }
            ))
            .collect::<Vec<_>>()
            .join("; ")
    );
    println!("total {:.1?}", started.elapsed());

    assert_eq!(total_non_hits, 0, "a measured hit phase answered a non-HIT");
    assert!(
        failed.is_empty(),
        "{} requests failed during the failover",
        failed.len()
    );
}
