//! The `ims-api` binary as an operator runs it: configuration errors and signals.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ims_testkit::{free_port, RedisServer};

/// A `JWT_SECRET` the server accepts (32 characters or more).
const SECRET: &str = "a-secret-of-at-least-thirty-two-characters";

fn ims_api() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ims-api"));
    // Nothing from the developer's environment or a .env file may leak in.
    command.env_clear().current_dir(std::env::temp_dir());
    command
}

/// [`ims_api`] serving on `port` with a new SQLite database in `dir`.
fn ims_api_on_sqlite(dir: &tempfile::TempDir, port: u16) -> Command {
    let mut command = ims_api();
    command.env("IMS_BIND", format!("127.0.0.1:{port}")).env(
        "DATABASE_URL",
        format!("sqlite://{}?mode=rwc", dir.path().join("ims.db").display()),
    );
    command
}

#[test]
fn a_bad_variable_stops_start_up_with_one_line_naming_it() {
    for (var, value) in [
        ("REDIS_PORT", "sixty"),
        ("DATABASE_URL", "mysql://x/y"),
        ("RATE_LIMIT_AUTH", "5"),
        ("REDIS_CLUSTER_NODES", "foo:bar"),
    ] {
        let output = ims_api().env(var, value).output().expect("run ims-api");
        assert_eq!(output.status.code(), Some(2), "{var}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(stderr.contains(&format!("invalid {var}")), "{stderr}");
    }
}

/// Waits until the server on `port` answers `/health` with 200: ready, not merely
/// accepting connections (the socket is bound before migrations run).
fn wait_until_ready(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !health_ok(port) {
        assert!(Instant::now() < deadline, "server never became ready");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Sends SIGTERM to `child`; how it exited, or `None` if it still runs after `limit`.
fn terminate(child: &mut std::process::Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let deadline = Instant::now() + limit;
    loop {
        if let Some(exit) = child.try_wait().expect("wait") {
            return Some(exit);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn health_ok(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = "GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    let mut response = String::new();
    stream.write_all(request.as_bytes()).is_ok()
        && stream.read_to_string(&mut response).is_ok()
        && response.starts_with("HTTP/1.1 200")
}

#[test]
fn sigterm_drains_and_exits_cleanly() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let mut child = ims_api_on_sqlite(&dir, port)
        .env("REDIS_URL", redis.url())
        .env("LOG_FORMAT", "json")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn ims-api");
    wait_until_ready(port);
    let exit = terminate(&mut child, Duration::from_secs(10)).expect("stopped on SIGTERM");
    assert!(exit.success(), "{exit:?}");
    let mut logs = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().expect("stdout"), &mut logs)
        .expect("read logs");
    // JSON logs: every line is an object, and the shutdown was orderly.
    for line in logs.lines() {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}"));
        assert!(value["level"].is_string());
    }
    assert!(logs.contains("IMS API stopped"), "{logs}");
}

/// A `.env` that does not parse stops start-up: read up to its bad line, it would leave
/// every later setting at its default without a word.
#[test]
fn a_malformed_env_file_stops_start_up() {
    let dir = std::env::temp_dir().join(format!("ims-env-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(
        dir.join(".env"),
        "IMS_BIND=127.0.0.1:0\nBROKEN LINE\nJWT_SECRET=x\n",
    )
    .expect(".env");
    let output = ims_api().current_dir(&dir).output().expect("run ims-api");
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains(".env"), "{stderr}");
}

/// A TCP relay to `target` that can go silent: while `open` is false it forwards nothing
/// and answers nothing, as a cut network does.
fn relay(target: std::net::SocketAddr, open: std::sync::Arc<std::sync::atomic::AtomicBool>) -> u16 {
    use std::io::{Read, Write};
    use std::sync::atomic::Ordering;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind relay");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let Ok(server) = std::net::TcpStream::connect(target) else {
                continue;
            };
            for (mut from, mut to) in [
                (
                    client.try_clone().expect("clone"),
                    server.try_clone().expect("clone"),
                ),
                (server, client),
            ] {
                let open = open.clone();
                std::thread::spawn(move || {
                    let mut buffer = [0u8; 16 * 1024];
                    loop {
                        while !open.load(Ordering::Relaxed) {
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        match from.read(&mut buffer) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => {
                                while !open.load(Ordering::Relaxed) {
                                    std::thread::sleep(Duration::from_millis(20));
                                }
                                if to.write_all(&buffer[..n]).is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        }
    });
    port
}

/// SIGTERM ends the process even when the database went silent while a query ran: closing
/// the pool waits for that connection's goodbye, which never comes, so it is bounded (it
/// hung for as long as the network was cut, found by a probe). PostgreSQL only: SQLite has
/// no network to cut.
#[tokio::test]
async fn sigterm_exits_even_when_the_database_went_silent_mid_query() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    if std::env::var("IMS_TEST_POSTGRES_URL").is_err() {
        eprintln!("needs PostgreSQL (IMS_TEST_POSTGRES_URL)");
        return;
    }
    let (url, _db) = crate::helpers::fresh_database().await;
    let target: std::net::SocketAddr = "127.0.0.1:5432".parse().expect("addr");
    let open = Arc::new(AtomicBool::new(true));
    let relayed = url.replace(
        "127.0.0.1:5432",
        &format!("127.0.0.1:{}", relay(target, open.clone())),
    );
    assert_ne!(relayed, url, "the test database is on 127.0.0.1:5432");
    let redis = RedisServer::start();
    let port = free_port();
    let mut child = ims_api()
        .env("IMS_BIND", format!("127.0.0.1:{port}"))
        .env("DATABASE_URL", &relayed)
        .env("REDIS_URL", redis.url())
        .env("REQUEST_TIMEOUT_MS", "1000")
        .env("JWT_SECRET", SECRET)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn ims-api");
    wait_until_ready(port);
    // A registration waits on a lock the test holds, so its statement is in flight when the
    // network goes silent; the request then times out (503) and its connection is stuck.
    use sqlx::Connection;
    let mut locker = sqlx::AnyConnection::connect(&url).await.expect("connect");
    let mut lock = locker.begin().await.expect("begin");
    sqlx::query("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .expect("lock");
    let register = tokio::spawn(async move {
        reqwest::Client::new()
            .post(format!("http://127.0.0.1:{port}/auth/register"))
            .json(&serde_json::json!({"email": "stuck@example.com", "password": "correct horse battery", "name": "S", "organizationName": "S"}))
            .send()
            .await
            .map(|r| r.status())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    open.store(false, Ordering::Relaxed);
    let status = register.await.expect("join").expect("answer");
    assert_eq!(status, reqwest::StatusCode::SERVICE_UNAVAILABLE);
    let exited = terminate(&mut child, Duration::from_secs(15));
    if exited.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    open.store(true, Ordering::Relaxed);
    drop(lock);
    assert!(
        exited.is_some_and(|e| e.success()),
        "{exited:?}: still running 15 s after SIGTERM"
    );
}

/// Contract §8: one warning when Redis is lost, one when it is back. On a cluster the Redis
/// client logs every failed reconnection itself, several lines a second (a probe counted
/// about 1,000 per instance in a 30 s outage, at WARN and ERROR); those stay out of the
/// log unless `RUST_LOG` names the client's target.
#[test]
fn the_redis_clients_own_lines_stay_out_of_the_log_unless_asked_for() {
    // A cluster seed where nothing listens: the client retries it over and over.
    let dead = free_port();
    let library_lines = |rust_log: &str| {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let mut child = ims_api_on_sqlite(&dir, port)
            .env("REDIS_CLUSTER_NODES", format!("127.0.0.1:{dead}"))
            .env("JWT_SECRET", SECRET)
            .env("RUST_LOG", rust_log)
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ims-api");
        wait_until_ready(port);
        std::thread::sleep(Duration::from_secs(3));
        let _ = child.kill();
        let output = child.wait_with_output().expect("output");
        let log = [output.stdout, output.stderr].concat();
        let log = String::from_utf8_lossy(&log).into_owned();
        let ours = log.lines().filter(|l| l.contains("ims_redis::")).count();
        assert!(
            ours >= 1,
            "the server's own line about Redis is missing:\n{log}"
        );
        log.lines().filter(|l| l.contains(" redis::")).count()
    };
    assert_eq!(library_lines("info"), 0);
    assert!(
        library_lines("info,redis=warn") > 0,
        "the test sees no client lines"
    );
}

/// With `MIGRATE_ON_START=false`, a database without this version's migrations stops
/// start-up with one line saying what to run (it reported ready and answered every request
/// with a 500 on a missing table; a probe); once `ims-api migrate` has run, it serves.
#[test]
fn an_unmigrated_database_stops_start_up_when_migrations_are_left_to_a_separate_step() {
    let dir = tempfile::tempdir().expect("dir");
    let port = free_port();
    let output = ims_api_on_sqlite(&dir, port)
        .env("MIGRATE_ON_START", "false")
        .env("REDIS_ENABLED", "false")
        .output()
        .expect("run ims-api");
    assert!(!output.status.success(), "it started");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("MIGRATE_ON_START") && stderr.contains("ims-api migrate"),
        "{stderr}"
    );

    let migrated = ims_api_on_sqlite(&dir, port)
        .env("REDIS_ENABLED", "false")
        .arg("migrate")
        .output()
        .expect("run ims-api migrate");
    assert!(migrated.status.success(), "{migrated:?}");
    let mut child = ims_api_on_sqlite(&dir, port)
        .env("MIGRATE_ON_START", "false")
        .env("REDIS_ENABLED", "false")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    wait_until_ready(port);
    assert!(terminate(&mut child, Duration::from_secs(10)).is_some_and(|exit| exit.success()));
}

/// A log reader that stops reading (a full pipe: a stalled log shipper) does not stop the
/// server: with lines written in place, every worker thread blocked on stdout after about
/// 140 requests, `/health/live` included (measured on the release binary before the
/// writer got a thread of its own). Here 2,000 requests, each with its access line, all
/// answer while nobody reads the 64 KB pipe.
#[test]
fn a_log_reader_that_stops_reading_does_not_stop_the_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let mut child = ims_api_on_sqlite(&dir, port)
        .env("JWT_SECRET", SECRET)
        .env("REDIS_ENABLED", "false")
        .env("RUST_LOG", "info")
        // Piped and never read.
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn ims-api");
    wait_until_ready(port);
    let answered = (0..2_000).take_while(|_| health_ok(port)).count();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(answered, 2_000, "the server stopped answering");
}
