//! Helpers the benches share. Each bench is its own crate and uses a subset of them.
#![allow(dead_code)]

/// Throughput and latency of one timed run.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// Requests per second over the whole run.
    pub rps: f64,
    pub p50: std::time::Duration,
    pub p99: std::time::Duration,
}

/// Runs `count` requests, `in_flight` at a time: `request(i)` makes the `i`-th and returns
/// what the bench makes of its answer; each is timed from its start to its end (its body
/// read). Returns the timing and the answers, in completion order.
pub async fn timed<F, Fut, T>(count: usize, in_flight: usize, request: F) -> (Timing, Vec<T>)
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    use futures::StreamExt;
    let started = std::time::Instant::now();
    let results: Vec<(std::time::Duration, T)> = futures::stream::iter(0..count)
        .map(|i| {
            let answer = request(i);
            async move {
                let t = std::time::Instant::now();
                let answer = answer.await;
                (t.elapsed(), answer)
            }
        })
        .buffer_unordered(in_flight)
        .collect()
        .await;
    let elapsed = started.elapsed();
    let (samples, answers): (Vec<_>, Vec<_>) = results.into_iter().unzip();
    (timing(samples, elapsed), answers)
}

/// `request` sent; its response, which must be a success (the body is left to read).
pub async fn success(request: reqwest::RequestBuilder) -> reqwest::Response {
    let response = request.send().await.expect("send");
    assert!(
        response.status().is_success(),
        "{}: {}",
        response.url(),
        response.status()
    );
    response
}

/// Requests per second and percentiles of `samples` taken over `elapsed`.
pub fn timing(mut samples: Vec<std::time::Duration>, elapsed: std::time::Duration) -> Timing {
    samples.sort();
    let at = |q: f64| {
        samples
            .get(((samples.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or_default()
    };
    Timing {
        rps: samples.len() as f64 / elapsed.as_secs_f64(),
        p50: at(0.5),
        p99: at(0.99),
    }
}

/// `name` from the environment as a number, else `default`.
pub fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CPU time of a thread in ns: `schedstat` (ns), else `stat` utime + stime (10 ms ticks).
pub fn task_cpu_ns(task: &std::path::Path) -> u64 {
    if let Some(ns) = std::fs::read_to_string(task.join("schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
    {
        return ns;
    }
    let Ok(stat) = std::fs::read_to_string(task.join("stat")) else {
        return 0;
    };
    let Some(rest) = stat.rfind(')').map(|at| &stat[at + 2..]) else {
        return 0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    (field(11).unwrap_or(0) + field(12).unwrap_or(0)) * 10_000_000
}

/// The token secret of every bench server.
pub const SECRET: &str = "bench-secret-bench-secret-bench-secret!!";

/// Limits no bench reaches: the limiter stays on, as in production, and refuses nothing.
pub const UNREACHED_LIMITS: [(&str, &str); 3] = [
    ("RATE_LIMIT_GLOBAL", "1000000000/60"),
    ("RATE_LIMIT_USER", "1000000000/60"),
    ("RATE_LIMIT_AUTH", "1000000000/60"),
];

/// An IMS server configured by `vars` (over the bench secret and a free local port), built
/// and bound, not yet running; its base URL is [`base_url`].
pub async fn application(vars: Vec<(&str, String)>) -> ims_api::startup::Application {
    let mut env: std::collections::HashMap<String, String> = [
        ("JWT_SECRET".to_string(), SECRET.to_string()),
        ("IMS_BIND".to_string(), "127.0.0.1:0".to_string()),
    ]
    .into();
    env.extend(
        vars.into_iter()
            .map(|(name, value)| (name.to_string(), value)),
    );
    let settings =
        ims_api::config::Settings::from_lookup(|k| env.get(k).cloned()).expect("settings");
    let listener = tokio::net::TcpListener::bind(settings.bind)
        .await
        .expect("bind");
    ims_api::startup::Application::build_with_listener(settings, listener)
        .await
        .expect("build")
}

/// Where `app` answers.
pub fn base_url(app: &ims_api::startup::Application) -> String {
    format!("http://127.0.0.1:{}", app.port())
}

/// Waits until `state`'s Redis connection is up (20 s at most).
pub async fn until_redis(state: &ims_api::state::AppState) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !state.redis.is_connected() {
        assert!(std::time::Instant::now() < deadline, "Redis never came up");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// POSTs `body` as JSON (with `token` as bearer, if any) and returns the JSON answer;
/// panics unless the status is a success.
pub async fn post(
    client: &reqwest::Client,
    url: String,
    token: Option<&str>,
    body: serde_json::Value,
) -> serde_json::Value {
    let mut request = client.post(&url).json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("post");
    assert!(
        response.status().is_success(),
        "POST {url}: {}",
        response.status()
    );
    response.json().await.expect("json")
}

/// Logs in as the seed's demo user; returns the answer (tokens and user).
pub async fn demo_login(client: &reqwest::Client, base: &str) -> serde_json::Value {
    let credentials = serde_json::json!({"email": "demo@ims.example", "password": "demo-password"});
    post(client, format!("{base}/auth/login"), None, credentials).await
}

/// Serves `router` on a free local port; returns its base URL.
pub async fn serve(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, router).await });
    base
}

/// Two runtimes of two threads each, so that CPU can be told apart by thread name: the
/// servers' (`ims-srv`) and the load generator's (`ims-load`).
pub fn runtimes() -> (tokio::runtime::Runtime, tokio::runtime::Runtime) {
    let runtime = |name: &str| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(if name == "ims-srv" {
                env_number("IMS_BENCH_SERVER_THREADS", 2)
            } else {
                2
            })
            .thread_name(name)
            .enable_all()
            .build()
            .expect("runtime")
    };
    (runtime("ims-srv"), runtime("ims-load"))
}

/// Seeds `database_url` with the server binary's `seed` command (IMS_BENCH_ITEMS items,
/// IMS_BENCH_ORDERS orders; Redis off) and prints how long it took under `label`.
pub fn seed(label: &str, database_url: &str) {
    let (items, orders) = (
        env_number("IMS_BENCH_ITEMS", 10_000),
        env_number("IMS_BENCH_ORDERS", 100_000),
    );
    let started = std::time::Instant::now();
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_ims-api"))
        .args([
            "seed",
            "--items",
            &items.to_string(),
            "--orders",
            &orders.to_string(),
        ])
        .env_clear()
        .env("DATABASE_URL", database_url)
        .env("REDIS_ENABLED", "false")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("seed");
    assert!(status.success(), "seeding {label} failed");
    println!(
        "{label}: seeded {items} items, {orders} orders in {:.1?}",
        started.elapsed()
    );
}

/// The ceiling the benches compare with: a bare axum handler answering the bytes of one
/// Redis `GET` of the key in its path, `GET /ceiling/{key}`.
pub fn ceiling<C>(conn: C) -> axum::Router
where
    C: redis::aio::ConnectionLike + Clone + Send + Sync + 'static,
{
    axum::Router::new().route(
        "/ceiling/{key}",
        axum::routing::get(
            move |axum::extract::Path(key): axum::extract::Path<String>| {
                let mut conn = conn.clone();
                async move {
                    let bytes: Vec<u8> = redis::cmd("GET")
                        .arg(key)
                        .query_async(&mut conn)
                        .await
                        .unwrap_or_default();
                    ([("content-type", "application/json")], bytes)
                }
            },
        ),
    )
}

/// The redis-server children of this process, by port (from their process title,
/// `redis-server 127.0.0.1:<port> …`, or their `--port` argument).
pub fn redis_pids() -> std::collections::HashMap<u16, u32> {
    let me = std::process::id().to_string();
    let mut pids = std::collections::HashMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((name, rest)) = stat.split_once(" (").and_then(|(_, r)| r.rsplit_once(") "))
        else {
            continue;
        };
        if name != "redis-server" || rest.split_whitespace().nth(1) != Some(me.as_str()) {
            continue;
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
            .unwrap_or_default();
        let words: Vec<&str> = cmdline.split_whitespace().collect();
        let port = words
            .iter()
            .find_map(|w| w.rsplit_once(':').and_then(|(_, p)| p.parse::<u16>().ok()))
            .or_else(|| {
                words
                    .iter()
                    .position(|w| *w == "--port")
                    .and_then(|i| words.get(i + 1))
                    .and_then(|p| p.parse().ok())
            });
        if let Some(port) = port {
            pids.insert(port, pid);
        }
    }
    pids
}
