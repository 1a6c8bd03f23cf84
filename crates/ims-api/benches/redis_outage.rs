//! Auth latency with Redis up, killed (breaker open) and disabled, measured in one run:
//! `cargo bench -p ims-api --bench redis_outage`.
//!
//! The claim under test is "Redis down never slows a request": the ratios down/up and
//! disabled/up of each route's p50 and p99 should be about 1 or below.

mod support;

use support::{application, base_url};

use std::time::{Duration, Instant};

use ims_testkit::RedisServer;
use serde_json::{json, Value};

const REFRESHES: usize = 300;
const LOGINS: usize = 40;

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Up,
    Down,
    Disabled,
}

struct Stats {
    p50: Duration,
    p99: Duration,
}

fn stats(mut samples: Vec<Duration>) -> Stats {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    Stats {
        p50: at(0.50),
        p99: at(0.99),
    }
}

async fn measure(mode: Mode) -> (Stats, Stats) {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let app = application(vec![
        (
            "DATABASE_URL",
            format!("sqlite://{}?mode=rwc", dir.path().join("b.db").display()),
        ),
        ("REDIS_URL", redis.url()),
        ("REDIS_ENABLED", (mode != Mode::Disabled).to_string()),
        // The limiter stays on (its in-memory fallback is part of the outage path) with
        // limits this run never reaches.
        ("RATE_LIMIT_GLOBAL", "1000000000/60".into()),
        ("RATE_LIMIT_AUTH", "1000000000/60".into()),
    ])
    .await;
    let base = base_url(&app);
    tokio::spawn(app.run_until(std::future::pending()));
    let client = reqwest::Client::new();
    let post = |path: &str, body: Value| client.post(format!("{base}{path}")).json(&body).send();

    if mode == Mode::Down {
        redis.stop();
        // Tokens issued before the outage live only in Redis; this run measures tokens
        // issued during it. The first request discovers the outage, as traffic would.
        let _ = client.get(format!("{base}/health")).send().await;
    }

    let credentials = json!({"email": "bench@example.com", "password": "correct horse battery"});
    let mut registration = credentials.clone();
    registration["name"] = "Bench".into();
    registration["organizationName"] = "Bench".into();
    let pair: Value = post("/auth/register", registration)
        .await
        .expect("register")
        .json()
        .await
        .expect("json");
    let mut token = pair["refreshToken"].as_str().expect("token").to_string();
    let mut refreshes = Vec::with_capacity(REFRESHES);
    for i in 0..REFRESHES + 20 {
        let started = Instant::now();
        let pair: Value = post("/auth/refresh", json!({"refreshToken": token}))
            .await
            .expect("refresh")
            .error_for_status()
            .expect("refresh succeeds")
            .json()
            .await
            .expect("json");
        if i >= 20 {
            refreshes.push(started.elapsed());
        }
        token = pair["refreshToken"]
            .as_str()
            .expect("rotated token")
            .to_string();
    }
    let mut logins = Vec::with_capacity(LOGINS);
    for _ in 0..LOGINS {
        let started = Instant::now();
        let response = post("/auth/login", credentials.clone())
            .await
            .expect("login");
        assert!(response.status().is_success());
        logins.push(started.elapsed());
    }
    (stats(refreshes), stats(logins))
}

fn main() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let (refresh_up, login_up) = measure(Mode::Up).await;
        let (refresh_down, login_down) = measure(Mode::Down).await;
        let (refresh_off, login_off) = measure(Mode::Disabled).await;
        println!("route          mode      p50        p99");
        for (route, rows) in [
            (
                "POST /refresh",
                [
                    (&refresh_up, "up"),
                    (&refresh_down, "down"),
                    (&refresh_off, "disabled"),
                ],
            ),
            (
                "POST /login",
                [
                    (&login_up, "up"),
                    (&login_down, "down"),
                    (&login_off, "disabled"),
                ],
            ),
        ] {
            for (s, mode) in rows {
                println!("{route:<14} {mode:<9} {:>9.3?} {:>9.3?}", s.p50, s.p99);
            }
        }
        let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
        println!(
            "ratios down/up: refresh p50 {:.2} p99 {:.2}; login p50 {:.2} p99 {:.2}",
            ratio(refresh_down.p50, refresh_up.p50),
            ratio(refresh_down.p99, refresh_up.p99),
            ratio(login_down.p50, login_up.p50),
            ratio(login_down.p99, login_up.p99),
        );
        println!(
            "ratios disabled/up: refresh p50 {:.2} p99 {:.2}",
            ratio(refresh_off.p50, refresh_up.p50),
            ratio(refresh_off.p99, refresh_up.p99),
        );
    });
}
