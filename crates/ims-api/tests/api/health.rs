use reqwest::StatusCode;
use serde_json::Value;

use std::time::{Duration, Instant};

use crate::helpers::{spawn_app, spawn_app_with};

#[tokio::test]
async fn health_reports_both_services_with_real_round_trips() {
    let app = spawn_app().await;
    let response = app.anonymous().get("/health").await;
    assert_eq!(response.status, StatusCode::OK);
    let body = response.json();
    assert_eq!(body["status"], "healthy");
    assert!(body["timestamp"]
        .as_str()
        .expect("timestamp")
        .ends_with('Z'));
    assert!(body["uptime"].as_f64().expect("uptime") >= 0.0);
    assert!(body["memory"]["rss"].as_u64().expect("rss") > 0);
    for service in ["database", "redis"] {
        assert_eq!(body["services"][service]["status"], "up", "{body}");
        let ms = body["services"][service]["responseTime"]
            .as_f64()
            .expect("ms");
        assert!(ms > 0.0 && ms < 1000.0, "{service} {ms}");
    }
}

#[tokio::test]
async fn redis_down_is_degraded_but_healthy_and_seen_in_one_request() {
    let app = spawn_app().await;
    app.redis.stop();
    // The very first request after the crash already reports it.
    let response = app.anonymous().get("/health").await;
    assert_eq!(response.status, StatusCode::OK);
    let body = response.json();
    assert_eq!(body["status"], "healthy");
    assert_eq!(body["services"]["redis"]["status"], "down");
    assert_eq!(body["services"]["database"]["status"], "up");

    app.redis.restart();
    app.wait_for_redis(true).await;
    let body: Value = app.anonymous().get("/health").await.json();
    assert_eq!(body["services"]["redis"]["status"], "up");
}

#[tokio::test]
async fn redis_disabled_is_reported_down() {
    let app = spawn_app_with(&[("REDIS_ENABLED", "false")]).await;
    let response = app.anonymous().get("/health").await;
    assert_eq!(response.status, StatusCode::OK);
    let body = response.json();
    assert_eq!(body["services"]["redis"]["status"], "down");
    assert_eq!(app.redis_keys("*").len(), 0);
}

#[tokio::test]
async fn database_down_is_unhealthy_503() {
    let app = spawn_app().await;
    app.state.db.close().await;
    let response = app.anonymous().get("/health").await;
    assert_eq!(response.status, StatusCode::SERVICE_UNAVAILABLE);
    let body = response.json();
    assert_eq!(body["status"], "unhealthy");
    assert_eq!(body["services"]["database"]["status"], "down");
    assert_eq!(body["services"]["redis"]["status"], "up");
}

#[tokio::test]
async fn unknown_routes_and_methods_are_problems() {
    let app = spawn_app().await;
    app.anonymous()
        .get("/no/such/route")
        .await
        .problem(StatusCode::NOT_FOUND);
    let response = app
        .anonymous()
        .send(reqwest::Method::DELETE, "/health", None)
        .await;
    response.problem(StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn metrics_are_prometheus_text_labelled_by_route_template() {
    let app = spawn_app().await;
    let pair = app.register("metrics@example.com").await;
    let token = pair["accessToken"].as_str().expect("token");
    let api = app.caller(token);
    for _ in 0..3 {
        assert_eq!(api.get("/items").await.status, StatusCode::OK);
    }
    let unknown = "/items/00000000-0000-0000-0000-000000000000";
    assert_eq!(api.get(unknown).await.status, StatusCode::NOT_FOUND);
    let response = app.anonymous().get("/metrics").await;
    assert_eq!(response.status, StatusCode::OK);
    assert!(response
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/plain")));
    let text = response.text;
    let line = |needle: &str| {
        text.lines()
            .find(|l| l.starts_with(needle))
            .unwrap_or_else(|| panic!("no {needle} in\n{text}"))
            .to_string()
    };
    // The route template, not the raw path: ids never become label values.
    let items = line(r#"ims_http_requests_total{method="GET",route="/items",status="200"}"#);
    assert!(items.ends_with(" 3"), "{items}");
    line(r#"ims_http_requests_total{method="GET",route="/items/{id}",status="404"}"#);
    assert!(!text.contains("00000000-0000-0000-0000-000000000000"));
    line("ims_http_request_duration_seconds_bucket");
    assert!(line("ims_cache_hits_total").ends_with(" 2"));
    // The list (first request) and the unknown item (a 404 is never stored).
    assert!(line("ims_cache_misses_total").ends_with(" 2"));
    assert!(line("ims_redis_up").ends_with(" 1"));
    line("ims_db_pool_connections");
    // Described metrics, and the standard process metrics.
    line("# HELP ims_http_requests_total ");
    line("# HELP ims_cache_hits_total ");
    line("# TYPE ims_http_request_duration_seconds histogram");
    for name in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_threads",
    ] {
        line(&format!("# HELP {name} "));
        let value: f64 = line(&format!("{name} "))
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .expect("a number");
        // CPU seconds are a whole-second counter: 0 this early.
        assert!(
            value > 0.0 || name == "process_cpu_seconds_total",
            "{name} {value}"
        );
    }
}

/// Any token is a method to HTTP, and each method label value would be a new series kept for
/// the life of the process: methods RFC 9110 does not name are counted as `OTHER`.
#[tokio::test]
async fn unknown_methods_share_one_metric_label() {
    let app = spawn_app().await;
    let client = reqwest::Client::new();
    for n in 0..20 {
        let method =
            reqwest::Method::from_bytes(format!("X{n:04}ABCDEF").as_bytes()).expect("method");
        let response = client
            .request(method, format!("{}/health/live", app.address))
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    }
    let metrics = app.anonymous().get("/metrics").await.text;
    assert!(!metrics.contains("X0001ABCDEF"), "{metrics}");
    let line = metrics
        .lines()
        .find(|l| {
            l.starts_with(
                r#"ims_http_requests_total{method="OTHER",route="/health/live",status="405"}"#,
            )
        })
        .unwrap_or_else(|| panic!("no OTHER series in\n{metrics}"));
    assert!(line.ends_with(" 20"), "{line}");
}

/// A pool busy with slow requests is not a database down: health and readiness have a
/// connection of their own. They waited two seconds for a pooled one and answered 503
/// "database unavailable" (probe 24), which behind a load balancer takes every busy
/// instance out of service.
#[tokio::test]
async fn a_busy_pool_is_not_a_database_down() {
    let app = spawn_app_with(&[("DATABASE_MAX_CONNECTIONS", "2")]).await;
    let pool = app.state.db.pool();
    let held = (
        pool.acquire().await.expect("one"),
        pool.acquire().await.expect("two"),
    );
    let ready = app.anonymous().get("/health/ready").await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.text);
    let health = app.anonymous().get("/health").await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(health.json()["services"]["database"]["status"], "up");
    drop(held);
}

/// On PostgreSQL no statement outlives the request time-out: a request given up at its
/// time-out left its query running to the end (a report 25 s past its 503, another with
/// every "try again"; probe 24). SQLite runs in-process and has no such setting: there the
/// test has nothing to check.
#[tokio::test]
async fn no_statement_outlives_the_request_time_out() {
    let app = spawn_app_with(&[("REQUEST_TIMEOUT_MS", "1000")]).await;
    if app.state.db.backend() != ims_api::db::Backend::Postgres {
        return;
    }
    let error = sqlx::query("SELECT pg_sleep(10)")
        .execute(app.state.db.pool())
        .await
        .expect_err("cancelled");
    assert!(error.to_string().contains("statement timeout"), "{error}");
}

/// Contract §8 for a Redis that answers, but slowly: every command waits behind a 200 ms
/// busy script, mostly under the 250 ms command time-out, so little fails. Requests waited
/// for each of their Redis commands in turn (a probe measured medians of 200–600 ms) for as
/// long as it lasted; now it counts as down within about a second and requests take their
/// degraded paths at once.
#[tokio::test]
async fn a_slow_redis_holds_up_no_request() {
    let app = spawn_app().await;
    let (token, _) = crate::helpers::user(&app, "slow@example.com").await;
    let caller = || app.caller(&token);
    caller().get("/items").await.expect(StatusCode::OK);
    assert_eq!(caller().get("/items").await.header("x-cache"), "HIT");

    let busy = app.redis.slow_down(200);
    let deadline = Instant::now() + Duration::from_secs(5);
    while app.state.redis.is_connected() {
        assert!(Instant::now() < deadline, "still waiting on a slow Redis");
        caller().get("/items").await.expect(StatusCode::OK);
    }
    // A read and a write (which invalidates), each without waiting on Redis; a login too.
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    for n in 0.. {
        if started.elapsed() >= Duration::from_millis(1500) {
            break;
        }
        let one = Instant::now();
        caller().get("/items").await.expect(StatusCode::OK);
        let name = format!("slow {n}");
        let created = caller().post("/categories", serde_json::json!({ "name": name }));
        created.await.expect(StatusCode::CREATED);
        slowest = slowest.max(one.elapsed());
        assert!(!app.state.redis.is_connected(), "back while still slow");
    }
    assert!(
        slowest < Duration::from_millis(100),
        "slowest read and write: {slowest:?}"
    );
    app.login("slow@example.com").await;
    let body = app.anonymous().get("/health").await.expect(StatusCode::OK);
    assert_eq!(body["status"], "healthy");
    assert_eq!(body["services"]["redis"]["status"], "down", "{body}");

    drop(busy);
    app.wait_for_redis(true).await;
    let body = app.anonymous().get("/health").await.expect(StatusCode::OK);
    assert_eq!(body["services"]["redis"]["status"], "up", "{body}");
}

/// `/health/cache` answers anyone, unlimited (monitoring must always answer), and each
/// answer ran `INFO` on Redis (on a cluster also a `PING` per master): a client could make
/// Redis work as fast as it sent requests. Its Redis figures are now reused for a second.
#[tokio::test]
async fn health_cache_asks_redis_at_most_about_once_a_second() {
    let app = spawn_app().await;
    let info_calls = || {
        let stats: String = redis::cmd("INFO")
            .arg("commandstats")
            .query(&mut app.redis_conn())
            .expect("info");
        stats
            .lines()
            .find_map(|line| line.strip_prefix("cmdstat_info:calls="))
            .and_then(|rest| rest.split(',').next())
            .and_then(|calls| calls.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let before = info_calls();
    let started = Instant::now();
    for _ in 0..100 {
        let report = app
            .anonymous()
            .get("/health/cache")
            .await
            .expect(StatusCode::OK);
        assert!(
            report["redisInfo"]["usedMemory"].as_u64() > Some(0),
            "{report}"
        );
    }
    let seconds = started.elapsed().as_secs() + 1;
    // Our own `INFO commandstats` calls count too (two), and the cache reads `INFO` once a
    // second for its eviction check.
    let calls = info_calls() - before;
    assert!(
        calls <= 2 + 2 * seconds + 1,
        "{calls} INFO calls in {seconds} s"
    );
}

/// A Redis that answers but refuses every write (here `min-replicas-to-write` unmet, as a
/// replica's URL or a user without the scripts would) kept `/health` at "up", since a
/// `PING` still answers, while sessions, limits and the cache all ran on their fallbacks.
#[tokio::test]
async fn a_redis_refusing_writes_is_reported_down_and_counted() {
    let app = spawn_app().await;
    let replicas = |n: &str| {
        let () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("min-replicas-to-write")
            .arg(n)
            .query(&mut app.redis_conn())
            .expect("config set");
    };
    let redis_health = || async {
        let body = app.anonymous().get("/health").await.expect(StatusCode::OK);
        assert_eq!(body["status"], "healthy", "{body}");
        body["services"]["redis"].clone()
    };
    replicas("1");
    // Logging in writes a session: refused, it goes to SQL, and the refusal is seen.
    crate::helpers::user(&app, "refused@example.com").await;
    let redis = redis_health().await;
    assert_eq!(redis["status"], "down", "{redis}");
    let error = redis["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("refuses writes") && error.contains("NOREPLICAS"),
        "{redis}"
    );
    let metrics = app.anonymous().get("/metrics").await.text;
    let refusals = metrics
        .lines()
        .find_map(|line| line.strip_prefix("ims_redis_write_refusals_total "))
        .and_then(|n| n.parse::<f64>().ok());
    assert!(refusals >= Some(1.0), "{metrics}");

    // Writable again: up at once, though the last refusal is recent.
    replicas("0");
    assert_eq!(redis_health().await["status"], "up");
}
