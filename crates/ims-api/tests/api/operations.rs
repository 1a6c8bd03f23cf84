//! What an operator relies on, over HTTP: probes (also while draining and with the database
//! down), request ids in responses, problem bodies and the access log, CORS, the request
//! time-out, the container health check, and several instances migrating one new SQLite
//! file at once.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ims_testkit::{free_port, RedisServer};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, spawn_app_with};

#[tokio::test]
async fn live_is_always_200_and_ready_follows_the_database() {
    let app = spawn_app().await;
    for path in ["/health/live", "/health/ready"] {
        let response = app.anonymous().get(path).await;
        assert_eq!(response.status, StatusCode::OK, "{path}");
        assert!(response.headers.get("ratelimit-limit").is_none());
    }
    // Redis down: still ready (the API degrades without it).
    app.redis.stop();
    assert_eq!(
        app.anonymous().get("/health/ready").await.status,
        StatusCode::OK
    );
    app.state.db.close().await;
    let ready = app.anonymous().get("/health/ready").await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    let body = ready.json();
    assert_eq!(body["status"], "database unavailable");
    assert_eq!(
        app.anonymous().get("/health/live").await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn every_response_has_a_request_id_and_problems_carry_it() {
    let app = spawn_app().await;
    // A sane incoming id is kept.
    let response = app
        .anonymous()
        .with(&[("x-request-id", "client-abc.123")])
        .get("/items")
        .await;
    assert_eq!(response.header("x-request-id"), "client-abc.123");
    let problem = response.problem(StatusCode::UNAUTHORIZED);
    assert_eq!(problem["requestId"], "client-abc.123");
    // Anything else is replaced by a fresh UUID.
    for bad in ["has space", &"x".repeat(200)] {
        let response = app
            .anonymous()
            .with(&[("x-request-id", bad)])
            .get("/health/live")
            .await;
        let id = response.header("x-request-id");
        assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
    }
    // Successful responses have one too, a different one each time.
    let a = app.anonymous().get("/health").await.header("x-request-id");
    let b = app.anonymous().get("/health").await.header("x-request-id");
    assert!(!a.is_empty() && a != b);
}

#[tokio::test]
async fn cors_answers_preflights_for_configured_origins_only() {
    let app = spawn_app_with(&[("CORS_ALLOWED_ORIGINS", "https://app.example.com")]).await;
    let anonymous = app.anonymous();
    let preflight = |origin: &'static str| async move {
        let headers = [
            ("origin", origin),
            ("access-control-request-method", "POST"),
            (
                "access-control-request-headers",
                "authorization, content-type",
            ),
        ];
        anonymous
            .with(&headers)
            .send(reqwest::Method::OPTIONS, "/items", None)
            .await
    };
    let allowed = preflight("https://app.example.com").await;
    assert!(allowed.status.is_success(), "{}", allowed.status);
    assert!(!allowed.header("x-request-id").is_empty());
    assert_eq!(
        allowed.header("access-control-allow-origin"),
        "https://app.example.com"
    );
    let methods = allowed.header("access-control-allow-methods");
    assert!(methods.contains("POST"), "{methods}");
    let headers = allowed
        .header("access-control-allow-headers")
        .to_lowercase();
    assert!(headers.contains("authorization"), "{headers}");
    assert!(allowed
        .headers
        .get("access-control-allow-credentials")
        .is_none());
    let other = preflight("https://evil.example.net").await;
    assert!(other.headers.get("access-control-allow-origin").is_none());
    // A simple request from the allowed origin sees the cache and rate-limit headers.
    let response = app
        .anonymous()
        .with(&[("origin", "https://app.example.com")])
        .get("/health")
        .await;
    let exposed = response
        .header("access-control-expose-headers")
        .to_lowercase();
    for name in [
        "x-cache",
        "x-cache-ttl",
        "etag",
        "ratelimit-remaining",
        "retry-after",
        "x-request-id",
        "x-report-truncated",
        "content-disposition",
        "age",
        "www-authenticate",
        "location",
    ] {
        assert!(exposed.contains(name), "{name} not in {exposed}");
    }
    // No origins configured: no CORS headers at all.
    let plain = spawn_app().await;
    let response = plain
        .anonymous()
        .with(&[
            ("origin", "https://app.example.com"),
            ("access-control-request-method", "GET"),
        ])
        .send(reqwest::Method::OPTIONS, "/items", None)
        .await;
    assert!(response
        .headers
        .get("access-control-allow-origin")
        .is_none());
}

/// A body that stops short of its `Content-Length`, or a chunked body that never ends, gets
/// the contract's 503 for a request over the time-out, but saying what is missing instead
/// of inviting a retry, and with `Connection: close`.
#[tokio::test]
async fn a_body_that_never_arrives_is_named_and_closes_the_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let app = spawn_app_with(&[("REQUEST_TIMEOUT_MS", "500")]).await;
    let address = app.address.trim_start_matches("http://").to_string();
    for request in [
        "POST /auth/login HTTP/1.1\r\nHost: ims\r\nContent-Type: application/json\r\n\
         Content-Length: 50\r\n\r\n{\"email\":\"a@b.c\",",
        "POST /auth/login HTTP/1.1\r\nHost: ims\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\n\r\n5\r\n{\"ema\r\n",
    ] {
        let mut stream = tokio::net::TcpStream::connect(&address)
            .await
            .expect("connect");
        stream.write_all(request.as_bytes()).await.expect("send");
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
            .await
            .expect("the server closes the connection")
            .expect("read");
        let answer = String::from_utf8_lossy(&answer).to_lowercase();
        assert!(answer.starts_with("http/1.1 503"), "{answer}");
        assert!(answer.contains("connection: close"), "{answer}");
        assert!(
            answer.contains("the request's body did not arrive within 500 ms"),
            "{answer}"
        );
        assert!(!answer.contains("try again"), "{answer}");
    }
}

/// A body over 1 MiB sent without a `Content-Length` (chunked) is refused as one with a
/// length over it: the limit is applied while the body is read, not only to its declared
/// length.
#[tokio::test]
async fn a_chunked_body_over_the_limit_is_a_413_problem() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let app = spawn_app().await;
    let address = app.address.trim_start_matches("http://").to_string();
    let mut stream = tokio::net::TcpStream::connect(&address)
        .await
        .expect("connect");
    let head = "POST /auth/login HTTP/1.1\r\nHost: ims\r\nContent-Type: application/json\r\n\
                Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
    stream.write_all(head.as_bytes()).await.expect("head");
    // 1 MiB in 16 chunks of 64 KiB, then one byte more.
    let chunk = format!("10000\r\n{}\r\n", "x".repeat(0x10000));
    let mut body = chunk.repeat(16);
    body.push_str("1\r\nx\r\n0\r\n\r\n");
    // The server may answer and close before it has read it all.
    let _ = stream.write_all(body.as_bytes()).await;
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    let read = async {
        while let Ok(n) = stream.read(&mut buffer).await {
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buffer[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("answered");
    let answer = String::from_utf8_lossy(&answer).to_lowercase();
    assert!(answer.starts_with("http/1.1 413"), "{answer}");
    // The rest of the body is left unread: the connection is said to close.
    assert!(answer.contains("connection: close"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
    assert!(answer.contains("/problems/payload-too-large"), "{answer}");
}

#[tokio::test]
async fn a_request_over_the_time_out_is_a_503_problem() {
    // Registering hashes a password with argon2: far longer than a millisecond.
    let app = spawn_app_with(&[("REQUEST_TIMEOUT_MS", "1")]).await;
    let response = app
        .anonymous()
        .post(
            "/auth/register",
            json!({
                "email": "slow@example.com",
                "password": "correct horse battery",
                "name": "Slow User",
                "organizationName": "Slow"
            }),
        )
        .await;
    let id = response.header("x-request-id");
    let problem = response.problem(StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(problem["requestId"], id.as_str());
    assert!(
        problem["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("1 ms"),
        "{problem}"
    );
    // Counted with its 503 (the count used to be dropped with the timed-out request).
    let metrics = app.anonymous().get("/metrics").await.text;
    assert!(
        metrics.contains(
            r#"ims_http_requests_total{method="POST",route="/auth/register",status="503"} 1"#
        ),
        "{metrics}"
    );
}

/// A request whose client goes away before the answer is counted as 499 ("client closed
/// request"); it left no trace at all before.
#[tokio::test]
async fn a_request_its_client_abandons_is_counted_as_499() {
    use tokio::io::AsyncWriteExt;
    let app = spawn_app().await;
    let body = json!({"email": "gone@example.com", "password": "correct horse battery",
                      "name": "Gone", "organizationName": "Gone"})
    .to_string();
    let request = format!(
        "POST /auth/register HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let address = app.address.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    stream.write_all(request.as_bytes()).await.expect("send");
    // Gone while the password is hashed (argon2: far longer than this).
    tokio::time::sleep(Duration::from_millis(5)).await;
    drop(stream);
    let line = r#"ims_http_requests_total{method="POST",route="/auth/register",status="499"} 1"#;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = app.anonymous().get("/metrics").await.text;
        if metrics.contains(line) {
            break;
        }
        assert!(Instant::now() < deadline, "no 499 counted: {metrics}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn ims_api() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ims-api"));
    command.env_clear().current_dir(std::env::temp_dir());
    command
}

fn get(port: u16, path: &str, request_id: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nX-Request-Id: {request_id}\r\n\
         Connection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response.get(9..12)?.parse().ok()
}

/// Kills the child if the test fails before it ends the process itself.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_until_live(port: u16) {
    wait_until_live_checking(port, || {});
}

/// [`wait_until_live`], running `check` (which may panic) between attempts.
fn wait_until_live_checking(port: u16, mut check: impl FnMut()) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while get(port, "/health/live", "wait") != Some(200) {
        check();
        assert!(Instant::now() < deadline, "server on {port} never answered");
        std::thread::sleep(Duration::from_millis(25));
    }
}

#[test]
fn draining_is_not_ready_but_live_and_the_access_log_has_the_request_id() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let bind = format!("127.0.0.1:{port}");
    let child = ims_api()
        .env("IMS_BIND", &bind)
        .env(
            "DATABASE_URL",
            format!("sqlite://{}?mode=rwc", dir.path().join("ims.db").display()),
        )
        .env("REDIS_URL", redis.url())
        .env("LOG_FORMAT", "json")
        .env("SHUTDOWN_DELAY_MS", "1500")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn ims-api");
    let mut child = KillOnDrop(child);
    wait_until_live(port);
    // The container health check.
    let healthcheck = || {
        ims_api()
            .arg("healthcheck")
            .env("IMS_BIND", &bind)
            .status()
            .expect("healthcheck")
    };
    assert!(healthcheck().success());
    assert_eq!(get(port, "/health/ready", "ready-before"), Some(200));
    assert_eq!(get(port, "/categories", "logged-request-1"), Some(401));
    let status = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(get(port, "/health/ready", "ready-draining"), Some(503));
    assert_eq!(get(port, "/health/live", "live-draining"), Some(200));
    let deadline = Instant::now() + Duration::from_secs(15);
    let exit = loop {
        if let Some(exit) = child.0.try_wait().expect("wait") {
            break exit;
        }
        assert!(Instant::now() < deadline, "server did not stop");
        std::thread::sleep(Duration::from_millis(25));
    };
    assert!(exit.success(), "{exit:?}");
    assert!(!healthcheck().success(), "nothing answers any more");
    let mut logs = String::new();
    std::io::Read::read_to_string(&mut child.0.stdout.take().expect("stdout"), &mut logs)
        .expect("read logs");
    let access: Vec<Value> = logs
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["target"] == "ims_api::access")
        .collect();
    let line = access
        .iter()
        .find(|line| line["request_id"] == "logged-request-1")
        .unwrap_or_else(|| panic!("no access line for the request: {logs}"));
    assert_eq!(line["level"], "INFO");
    assert_eq!(line["method"], "GET");
    assert_eq!(line["route"], "/categories");
    assert_eq!(line["path"], "/categories");
    assert_eq!(line["status"], 401);
    assert_eq!(line["client"], "127.0.0.1");
    assert!(line["latency_ms"].is_string() || line["latency_ms"].is_number());
    assert!(access
        .iter()
        .any(|line| line["request_id"] == "ready-draining" && line["status"] == 503));
}

#[test]
fn three_instances_starting_together_on_a_new_sqlite_file_all_come_up() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("new.db").display());
    let ports = [free_port(), free_port(), free_port()];
    let logs: Vec<_> = ports
        .iter()
        .map(|port| dir.path().join(format!("{port}.log")))
        .collect();
    let mut children: Vec<KillOnDrop> = ports
        .iter()
        .zip(&logs)
        .map(|(port, log)| {
            KillOnDrop(
                ims_api()
                    .env("IMS_BIND", format!("127.0.0.1:{port}"))
                    .env("DATABASE_URL", &url)
                    .env("REDIS_URL", redis.url())
                    .stdout(Stdio::null())
                    .stderr(std::fs::File::create(log).expect("log file"))
                    .spawn()
                    .expect("spawn"),
            )
        })
        .collect();
    // An instance that exits is a failure, shown with its log.
    let died = |children: &mut Vec<KillOnDrop>| {
        for (child, log) in children.iter_mut().zip(&logs) {
            if let Some(status) = child.0.try_wait().expect("wait") {
                let log = std::fs::read_to_string(log).unwrap_or_default();
                panic!("an instance exited ({status}):\n{log}");
            }
        }
    };
    for port in ports {
        wait_until_live_checking(port, || died(&mut children));
        assert_eq!(get(port, "/health/ready", "ready"), Some(200));
    }
    died(&mut children);
}

/// A write whose `COMMIT` was already sent when the time-out ran out is answered with its
/// own result, never the 503 "try again": the change may be made, and a client that tries
/// again applies it twice (probe 13: 3 of 60 stock adjustments saved behind a 503 with a
/// 4 ms time-out). So every adjustment the stock shows was answered as made, or as of an
/// unknown outcome; none as abandoned.
#[tokio::test]
async fn a_write_whose_commit_was_sent_is_not_answered_try_again() {
    let app = spawn_app().await;
    let org = crate::helpers::org(&app, "committed@example.com").await;
    // A second process with a time-out that a write often runs past.
    let hurried =
        crate::helpers::ServerProcess::beside_with(&app, &[("REQUEST_TIMEOUT_MS", "3")]).await;
    let api = app.caller(&org.token).at(&hurried.address);
    let (mut made, mut abandoned, mut unknown, mut late) = (0, 0, 0, 0);
    for _ in 0..150 {
        let started = Instant::now();
        let reply = api
            .post(
                "/inventory/adjustments",
                json!({"itemId": org.item, "warehouseId": org.warehouse,
                       "quantityDelta": 1, "reason": "count"}),
            )
            .await;
        match reply.status {
            StatusCode::CREATED => {
                made += 1;
                if started.elapsed() > Duration::from_millis(3) {
                    late += 1;
                }
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                let detail = reply.json()["detail"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                if detail.contains("unknown") {
                    unknown += 1;
                } else {
                    assert!(detail.contains("try again"), "{detail}");
                    abandoned += 1;
                }
            }
            other => panic!("unexpected {other}"),
        }
    }
    let item = app
        .caller(&org.token)
        .with(&[("cache-control", "no-cache")])
        .get(&format!("/items/{}", org.item))
        .await
        .expect(StatusCode::OK);
    let stock = item["stockOnHand"].as_i64().expect("stock");
    assert!(
        made <= stock && stock <= made + unknown,
        "stock {stock}: {made} answered made, {unknown} unknown, {abandoned} abandoned"
    );
    // The time-out was reached at all (else this shows nothing).
    assert!(
        abandoned + unknown + late > 0,
        "no request reached the time-out"
    );
}

/// Writes abandoned half-way, by their time-out or by a client that hangs up, leave no
/// transaction behind: a `BEGIN` dropped before it returned left its pooled connection
/// inside a transaction nobody owned. On SQLite that kept the write lock for minutes, and
/// later writes on this process and others failed with 500 ("begin_with at non-zero
/// transaction depth", "database is locked"); on PostgreSQL later requests' statements ran
/// inside it (probe 16). Here: a burst of writes that mostly time out, and writes whose
/// clients hang up at once; then every answer was a documented one, and a write on another
/// process of the same database succeeds at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn abandoned_writes_leave_no_transaction_behind() {
    use std::io::Write;

    let app = spawn_app().await;
    let org = crate::helpers::org(&app, "abandoned@example.com").await;
    let hurried =
        crate::helpers::ServerProcess::beside_with(&app, &[("REQUEST_TIMEOUT_MS", "3")]).await;
    let body = json!({"vendorId": org.vendor, "warehouseId": org.warehouse,
                      "lines": [{"itemId": org.item, "quantity": 1, "unitCostCents": 100}]});
    let burst = (0..6).map(|_| {
        let api = app.caller(&org.token).at(&hurried.address);
        let body = body.clone();
        async move {
            let mut statuses = Vec::new();
            for _ in 0..25 {
                statuses.push(api.post("/purchase-orders", body.clone()).await.status);
            }
            statuses
        }
    });
    let statuses: Vec<StatusCode> = futures::future::join_all(burst)
        .await
        .into_iter()
        .flatten()
        .collect();
    // Clients that send a write and hang up before the answer.
    let port: u16 = hurried
        .address
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    let text = body.to_string();
    for _ in 0..40 {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        let request = format!(
            "POST /purchase-orders HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{text}",
            org.token,
            text.len()
        );
        stream.write_all(request.as_bytes()).expect("send");
        drop(stream);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::CREATED || *s == StatusCode::SERVICE_UNAVAILABLE),
        "{statuses:?}"
    );
    // The database takes writes from elsewhere, at once.
    let started = Instant::now();
    let reply = app
        .caller(&org.token)
        .post("/purchase-orders", body.clone())
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "a write waited {:?}",
        started.elapsed()
    );
    // And the hurried process itself, given time.
    let patient = crate::helpers::ServerProcess::beside(&app).await;
    drop(hurried);
    let reply = app
        .caller(&org.token)
        .at(&patient.address)
        .post("/purchase-orders", body)
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
}
