//! The `ims-api` binary as an operator runs it: configuration errors and signals.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ims_testkit::{free_port, RedisServer};

fn ims_api() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ims-api"));
    // Nothing from the developer's environment or a .env file may leak in.
    command.env_clear().current_dir(std::env::temp_dir());
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
    let mut child = ims_api()
        .env("IMS_BIND", format!("127.0.0.1:{port}"))
        .env(
            "DATABASE_URL",
            format!("sqlite://{}?mode=rwc", dir.path().join("ims.db").display()),
        )
        .env("REDIS_URL", redis.url())
        .env("LOG_FORMAT", "json")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn ims-api");
    // Ready means answering /health, not merely accepting connections: the socket is bound
    // before migrations run.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !health_ok(port) {
        assert!(Instant::now() < deadline, "server never became ready");
        std::thread::sleep(Duration::from_millis(25));
    }
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(exit) = child.try_wait().expect("wait") {
            break exit;
        }
        assert!(Instant::now() < deadline, "server did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(25));
    };
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
