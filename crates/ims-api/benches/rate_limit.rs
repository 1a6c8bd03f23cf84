//! Rate-limiter overhead, in one run: `cargo bench -p ims-api --bench rate_limit`.
//!
//! Two servers on the same database and Redis, one with the limiter (limits raised so that
//! nothing is refused) and one with `RATE_LIMIT_ENABLED=false`; requests per second and
//! p50/p99 on a plain route and on a cached route that hits.

mod support;

use support::{application, base_url, Timing, UNREACHED_LIMITS};

use ims_testkit::RedisServer;
use serde_json::{json, Value};

const REQUESTS: usize = 4000;
const CONCURRENCY: usize = 8;

async fn run(client: &reqwest::Client, url: &str, token: &str) -> Timing {
    // Warm up (and, on the cached route, make the entry exist).
    for _ in 0..50 {
        let _ = client
            .get(url)
            .bearer_auth(token)
            .send()
            .await
            .expect("get")
            .bytes()
            .await;
    }
    let (timing, _) = support::timed(REQUESTS, CONCURRENCY, |_| async {
        let response = support::success(client.get(url).bearer_auth(token)).await;
        response.bytes().await.expect("body");
    })
    .await;
    timing
}

async fn server(database_url: &str, redis_url: &str, limiter: bool) -> String {
    let mut vars = vec![
        ("DATABASE_URL", database_url.to_string()),
        ("REDIS_URL", redis_url.to_string()),
        ("RATE_LIMIT_ENABLED", limiter.to_string()),
    ];
    vars.extend(UNREACHED_LIMITS.map(|(name, value)| (name, value.to_string())));
    let app = application(vars).await;
    let base = base_url(&app);
    tokio::spawn(app.run_until(std::future::pending()));
    base
}

#[tokio::main]
async fn main() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let database_url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("bench.db").display()
    );
    let with = server(&database_url, &redis.url(), true).await;
    let without = server(&database_url, &redis.url(), false).await;
    let client = reqwest::Client::new();
    let pair: Value = client
        .post(format!("{with}/auth/register"))
        .json(&json!({"email": "bench@example.com", "password": "bench password", "name": "B", "organizationName": "B"}))
        .send()
        .await
        .expect("register")
        .json()
        .await
        .expect("json");
    let token = pair["accessToken"].as_str().expect("token").to_string();
    let category: Value = client
        .post(format!("{with}/categories"))
        .bearer_auth(&token)
        .json(&json!({"name": "Tools"}))
        .send()
        .await
        .expect("category")
        .json()
        .await
        .expect("json");
    for i in 0..20 {
        let _ = client
            .post(format!("{with}/items"))
            .bearer_auth(&token)
            .json(&json!({"name": format!("Item {i}"), "sku": format!("SKU-{i}"), "priceCents": 100 + i}))
            .send()
            .await
            .expect("item");
    }
    let plain = format!("/categories/{}", category["id"].as_str().expect("id"));
    println!("route                    limiter   req/s      p50        p99");
    for (name, path) in [("plain", plain.as_str()), ("cached hit", "/items")] {
        let off = run(&client, &format!("{without}{path}"), &token).await;
        let on = run(&client, &format!("{with}{path}"), &token).await;
        for (label, r) in [("off", &off), ("on", &on)] {
            println!(
                "{name:<24} {label:<8} {:>8.0} {:>10.3?} {:>10.3?}",
                r.rps, r.p50, r.p99
            );
        }
        println!(
            "{name}: throughput on/off {:.2}, p99 on/off {:.2}",
            on.rps / off.rps,
            on.p99.as_secs_f64() / off.p99.as_secs_f64()
        );
    }
}
