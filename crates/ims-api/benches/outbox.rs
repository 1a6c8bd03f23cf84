//! The invalidation outbox's cost, in one run: `cargo bench -p ims-api --bench outbox`
//! (SQLite), plus PostgreSQL when `IMS_BENCH_POSTGRES_URL` names a server (e.g.
//! `postgres://postgres@127.0.0.1:5432/test`; two fresh databases are created there and
//! dropped at the end).
//!
//! Per engine: one private `redis-server`, two in-process servers on it, each with its own
//! fresh database, one with `CACHE_OUTBOX=true`, one with `false`. Each registers an
//! organization and creates [`ITEMS`] items; the load is `PATCH /items/{id}` (a price change,
//! which invalidates `items`, `stock`, `dashboard` and `reports`), 1 and 8 in flight, in
//! rounds that alternate between the two servers (rotating order); each row is the round
//! with the median throughput. CPU per request is this process's CPU outside the load
//! generator's threads (`ims-load`): server runtime and SQLite worker threads
//! (`/proc/self/task/*/schedstat`); PostgreSQL's backends are not counted.
//!
//! The idle cost: the outbox server's poll query, run directly [`POLLS`] times against its
//! database after the load (applied records are deleted, so this is the steady state),
//! and the whole process's CPU over [`IDLE`] with both servers idle (an upper bound:
//! it holds every background task of both servers).
//! Sizes: IMS_BENCH_REQUESTS (default 2000 per case and round), IMS_BENCH_ROUNDS (default 5).

mod support;

use support::{application, base_url, env_number, task_cpu_ns, until_redis, UNREACHED_LIMITS};

use std::time::{Duration, Instant};

use ims_api::outbox::POLL_SQL;
use ims_api::state::AppState;
use ims_testkit::RedisServer;
use serde_json::{json, Value};
use tokio::sync::oneshot;

const ITEMS: usize = 20;
const POLLS: usize = 200;
const IDLE: Duration = Duration::from_secs(5);

#[derive(Clone, Copy)]
struct Run {
    rps: f64,
    p50: Duration,
    p99: Duration,
    /// CPU µs per request of this process outside the load generator.
    cpu: f64,
}

/// CPU ns of this process's threads whose name does not start with `ims-load`.
fn server_cpu_ns() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .flatten()
        .filter(|task| {
            !std::fs::read_to_string(task.path().join("comm"))
                .unwrap_or_default()
                .starts_with("ims-load")
        })
        .map(|task| task_cpu_ns(&task.path()))
        .sum()
}

/// A running in-process server.
struct Server {
    base: String,
    state: AppState,
    stop: oneshot::Sender<()>,
    done: tokio::task::JoinHandle<()>,
}

async fn server(
    srv: &tokio::runtime::Handle,
    database_url: &str,
    redis_url: &str,
    outbox: bool,
) -> Server {
    let mut vars = vec![
        ("DATABASE_URL", database_url.to_string()),
        ("REDIS_URL", redis_url.to_string()),
        ("CACHE_OUTBOX", outbox.to_string()),
        ("RUST_LOG", "warn".into()),
    ];
    vars.extend(UNREACHED_LIMITS.map(|(name, value)| (name, value.to_string())));
    let (stop, stopped) = oneshot::channel::<()>();
    let (base, state, done) = srv
        .spawn(async move {
            let app = application(vars).await;
            let base = base_url(&app);
            let state = app.state().clone();
            let done = tokio::spawn(async move {
                let _ = app
                    .run_until(async {
                        let _ = stopped.await;
                    })
                    .await;
            });
            until_redis(&state).await;
            (base, state, done)
        })
        .await
        .expect("server");
    Server {
        base,
        state,
        stop,
        done,
    }
}

async fn send(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    token: Option<&str>,
    body: Value,
) -> Value {
    let mut request = client.request(method, &url).json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("send");
    let status = response.status();
    let text = response.text().await.expect("body");
    assert!(status.is_success(), "{url}: {status} {text}");
    serde_json::from_str(&text).expect("json")
}

/// An organization with [`ITEMS`] items on `base`: (token, item ids).
async fn seed(client: &reqwest::Client, base: &str) -> (String, Vec<String>) {
    let pair = send(
        client,
        reqwest::Method::POST,
        format!("{base}/auth/register"),
        None,
        json!({"email": "bench@example.com", "password": "bench password",
               "name": "Bench", "organizationName": "Bench"}),
    )
    .await;
    let token = pair["accessToken"].as_str().expect("token").to_string();
    let mut ids = Vec::new();
    for i in 0..ITEMS {
        let item = send(
            client,
            reqwest::Method::POST,
            format!("{base}/items"),
            Some(&token),
            json!({"name": format!("Bench item {i:02}"), "sku": format!("BENCH-{i:02}"),
                   "priceCents": 1000 + i}),
        )
        .await;
        ids.push(item["id"].as_str().expect("id").to_string());
    }
    (token, ids)
}

/// `count` price changes on `base`'s items, `in_flight` at a time.
async fn measure(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    ids: &[String],
    count: usize,
    in_flight: usize,
) -> Run {
    let cpu_before = server_cpu_ns();
    let (timing, _) = support::timed(count, in_flight, |i| {
        let url = format!("{base}/items/{}", ids[i % ids.len()]);
        async move {
            let response = client
                .patch(&url)
                .bearer_auth(token)
                .json(&json!({"priceCents": 1000 + (i % 9973)}))
                .send()
                .await
                .expect("patch");
            let status = response.status();
            response.bytes().await.expect("body");
            assert!(status.is_success(), "PATCH {url}: {status}");
        }
    })
    .await;
    let cpu = server_cpu_ns().saturating_sub(cpu_before);
    Run {
        rps: timing.rps,
        p50: timing.p50,
        p99: timing.p99,
        cpu: cpu as f64 / 1000.0 / count as f64,
    }
}

/// The poll's cutoff `duration` ago.
fn ago(duration: Duration) -> String {
    ims_redis::invalidate::record_id_cutoff(std::time::SystemTime::now() - duration)
}

async fn count(state: &AppState, sql: &str) -> i64 {
    sqlx::query_scalar::<_, i64>(sql)
        .fetch_one(state.db.pool())
        .await
        .unwrap_or(-1)
}

/// Databases made for this run on a PostgreSQL server; dropped when this is.
struct PgDatabases {
    admin_url: String,
    names: Vec<String>,
}

impl PgDatabases {
    async fn create(admin_url: &str, count: usize) -> (Self, Vec<String>) {
        use sqlx::Connection;
        sqlx::any::install_default_drivers();
        let mut conn = sqlx::AnyConnection::connect(admin_url)
            .await
            .expect("connect to IMS_BENCH_POSTGRES_URL");
        let (base, query) = match admin_url.split_once('?') {
            Some((base, query)) => (base, format!("?{query}")),
            None => (admin_url, String::new()),
        };
        let server = base
            .rsplit_once('/')
            .map(|(server, _)| server)
            .unwrap_or(base);
        let mut dbs = Self {
            admin_url: admin_url.to_string(),
            names: Vec::new(),
        };
        let mut urls = Vec::new();
        for _ in 0..count {
            let name = format!("ims_bench_outbox_{}", uuid::Uuid::new_v4().simple());
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&mut conn)
                .await
                .expect("create database");
            urls.push(format!("{server}/{name}{query}"));
            dbs.names.push(name);
        }
        (dbs, urls)
    }
}

impl Drop for PgDatabases {
    fn drop(&mut self) {
        let (admin_url, names) = (self.admin_url.clone(), std::mem::take(&mut self.names));
        // Possibly inside a runtime: a thread with its own runtime can block on the cleanup.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                use sqlx::Connection;
                let Ok(mut conn) = sqlx::AnyConnection::connect(&admin_url).await else {
                    eprintln!("cannot connect to drop {names:?}");
                    return;
                };
                for name in names {
                    if let Err(e) =
                        sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                            .execute(&mut conn)
                            .await
                    {
                        eprintln!("drop {name}: {e}");
                    }
                }
            });
        })
        .join();
    }
}

async fn engine(
    srv: &tokio::runtime::Handle,
    label: &str,
    urls: [String; 2],
    requests: usize,
    rounds: usize,
) {
    let started = Instant::now();
    let redis = RedisServer::start();
    let [on_url, off_url] = urls;
    let on = server(srv, &on_url, &redis.url(), true).await;
    let off = server(srv, &off_url, &redis.url(), false).await;
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let (on_token, on_ids) = seed(&client, &on.base).await;
    let (off_token, off_ids) = seed(&client, &off.base).await;
    let targets = [
        ("outbox on", &on.base, &on_token, &on_ids),
        ("outbox off", &off.base, &off_token, &off_ids),
    ];
    // Warm-up: connections open, code paths hot.
    for (_, base, token, ids) in &targets {
        for in_flight in [1, 8] {
            measure(&client, base, token, ids, 200, in_flight).await;
        }
    }
    println!("\n== {label}: setup {:.1?}", started.elapsed());
    // runs[c][s]: concurrency c, server s (0 on, 1 off), one Run per round.
    let concurrencies = [1usize, 8];
    let mut runs: Vec<Vec<Vec<Run>>> = vec![vec![Vec::new(); 2]; concurrencies.len()];
    for round in 0..rounds {
        for (c, &in_flight) in concurrencies.iter().enumerate() {
            for k in 0..2 {
                let s = (k + round) % 2;
                let (_, base, token, ids) = targets[s];
                runs[c][s].push(measure(&client, base, token, ids, requests, in_flight).await);
            }
        }
    }
    let median = |runs: &[Run]| {
        let mut r = runs.to_vec();
        r.sort_by(|a, b| a.rps.total_cmp(&b.rps));
        r[r.len() / 2]
    };
    println!("PATCH /items/{{id}} (price), {requests} requests x {rounds} rounds; median round");
    println!(
        "{:<10} {:<11} {:>8} {:>9} {:>9} {:>11}",
        "in flight", "server", "req/s", "p50", "p99", "CPU us/req"
    );
    for (c, &in_flight) in concurrencies.iter().enumerate() {
        for (s, (name, ..)) in targets.iter().enumerate() {
            let run = median(&runs[c][s]);
            println!(
                "{:<10} {:<11} {:>8.0} {:>9.3?} {:>9.3?} {:>11.1}",
                in_flight, name, run.rps, run.p50, run.p99, run.cpu
            );
        }
    }
    for (c, &in_flight) in concurrencies.iter().enumerate() {
        let (a, b) = (median(&runs[c][0]), median(&runs[c][1]));
        let p50 = a.p50.as_secs_f64() / b.p50.as_secs_f64();
        let p99 = a.p99.as_secs_f64() / b.p99.as_secs_f64();
        // Per-round p50 ratios (both servers of a round ran back to back).
        let mut per_round: Vec<f64> = (0..rounds)
            .map(|r| runs[c][0][r].p50.as_secs_f64() / runs[c][1][r].p50.as_secs_f64())
            .collect();
        let listed: Vec<String> = per_round.iter().map(|r| format!("{r:.2}")).collect();
        per_round.sort_by(f64::total_cmp);
        let verdict = if p50 <= 1.10 {
            "<= 1.10: ok"
        } else {
            "> 1.10: OVER"
        };
        println!(
            "on/off, {in_flight} in flight: p50 {p50:.2} {verdict}; p99 {p99:.2}; req/s {:.2}; \
             p50 per round {} (median {:.2})",
            a.rps / b.rps,
            listed.join(" "),
            per_round[per_round.len() / 2]
        );
    }

    // Idle: let the spawned done-marks land, then the poll query against the outbox table.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rows = count(&on.state, "SELECT COUNT(*) FROM cache_outbox").await;
    let pool = on.state.db.pool().clone();
    let mut samples = Vec::with_capacity(POLLS);
    let mut returned = 0;
    let cpu_before = server_cpu_ns();
    for _ in 0..POLLS {
        let t = Instant::now();
        let found: Vec<(String, String, String)> = sqlx::query_as(POLL_SQL)
            .bind(ago(Duration::from_millis(250)))
            .bind(500_i64)
            .fetch_all(&pool)
            .await
            .expect("poll query");
        samples.push(t.elapsed());
        returned = found.len();
    }
    let poll_cpu = server_cpu_ns().saturating_sub(cpu_before) as f64 / 1000.0 / POLLS as f64;
    samples.sort();
    let mean = samples.iter().sum::<Duration>() / POLLS as u32;
    let p50 = samples[POLLS / 2];
    let p99 = samples[(POLLS - 1) * 99 / 100];
    println!(
        "cache_outbox after the load: {rows} rows left of {} written (applied records are \
         deleted); run {:.0?} so far",
        rounds * 2 * requests + 2 * 200 + ITEMS,
        started.elapsed()
    );
    let cpu_note = match on.state.db.backend() {
        ims_api::db::Backend::Sqlite => format!("in-process CPU {poll_cpu:.0} us/poll"),
        ims_api::db::Backend::Postgres => {
            format!("in-process CPU {poll_cpu:.0} us/poll, PostgreSQL backend not counted")
        }
    };
    println!(
        "poll query x{POLLS}: mean {mean:.1?}, p50 {p50:.1?}, p99 {p99:.1?}, {returned} rows \
         returned; {cpu_note}; at 4 polls/s: {:.2} ms/s per instance ({:.3} % of a core)",
        mean.as_secs_f64() * 4e3,
        mean.as_secs_f64() * 4.0 * 100.0
    );
    let plan_sql = match on.state.db.backend() {
        ims_api::db::Backend::Sqlite => format!("EXPLAIN QUERY PLAN {POLL_SQL}"),
        ims_api::db::Backend::Postgres => format!("EXPLAIN {POLL_SQL}"),
    };
    let plan = sqlx::query(&plan_sql)
        .bind(ago(Duration::from_millis(250)))
        .bind(500_i64)
        .fetch_all(&pool)
        .await;
    match plan {
        Ok(rows) => {
            use sqlx::Row;
            let lines: Vec<String> = rows
                .iter()
                .map(|row| {
                    let last = row.len() - 1;
                    row.try_get::<String, _>(last).unwrap_or_default()
                })
                .collect();
            println!("poll plan: {}", lines.join(" | "));
        }
        Err(e) => println!("poll plan: {e}"),
    }
    let cpu_before = server_cpu_ns();
    tokio::time::sleep(IDLE).await;
    let idle = server_cpu_ns().saturating_sub(cpu_before) as f64 / IDLE.as_secs_f64() / 1e6;
    println!(
        "both servers idle {IDLE:?}: process CPU {idle:.2} ms/s (every background task of both \
         servers; an upper bound for the poll)"
    );
    for server in [on, off] {
        let _ = server.stop.send(());
        let _ = server.done.await;
    }
    println!("{label} total {:.1?}", started.elapsed());
}

fn main() {
    let requests = env_number("IMS_BENCH_REQUESTS", 2000);
    let rounds = env_number("IMS_BENCH_ROUNDS", 5).max(1);
    let (srv, load) = support::runtimes();
    let handle = srv.handle().clone();
    load.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let sqlite = |name: &str| format!("sqlite://{}?mode=rwc", dir.path().join(name).display());
        engine(
            &handle,
            "SQLite",
            [sqlite("on.db"), sqlite("off.db")],
            requests,
            rounds,
        )
        .await;
        if let Some(admin) = std::env::var("IMS_BENCH_POSTGRES_URL")
            .ok()
            .filter(|v| !v.is_empty())
        {
            let (dbs, urls) = PgDatabases::create(&admin, 2).await;
            let urls: [String; 2] = urls.try_into().expect("two databases");
            engine(&handle, "PostgreSQL", urls, requests, rounds).await;
            drop(dbs);
        }
    });
    srv.shutdown_background();
}
