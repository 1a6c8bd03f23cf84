//! Helpers the benches share. Each bench is its own crate and uses a subset of them.
#![allow(dead_code)]

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
