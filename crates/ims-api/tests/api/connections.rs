//! Slow and idle clients (contract §2), over raw TCP against the real server: the
//! header-read time-out closes half-sent requests and idle keep-alive connections, and the
//! connection cap holds without the process ceasing to answer.
//!
//! Timings are loose on purpose (the machine may be loaded): every "closed" assertion allows
//! the time-out plus several seconds, and every "not yet" assertion stays well inside the
//! time-out, which runs from a moment after the check's own start.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{spawn_app_with, TestApp};

/// Slack on top of the header time-out before "the server never closed it" is declared.
const MARGIN: Duration = Duration::from_secs(5);

fn socket_address(app: &TestApp) -> SocketAddr {
    app.address
        .trim_start_matches("http://")
        .parse()
        .expect("socket address")
}

/// One `GET` on a fresh connection (`Connection: close`); the status code.
async fn get_status(address: SocketAddr, path: &str) -> u16 {
    let mut stream = TcpStream::connect(address).await.expect("connect");
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .expect("write");
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .await
        .expect("read response");
    status_of(&response)
}

fn status_of(response: &[u8]) -> u16 {
    std::str::from_utf8(response.get(9..12).unwrap_or_default())
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "not an HTTP response: {:?}",
                String::from_utf8_lossy(response)
            )
        })
}

/// Reads one response with a `Content-Length` body off a keep-alive connection.
async fn read_response(stream: &mut TcpStream) -> u16 {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .expect("content-length");
            if buf.len() >= end + 4 + length {
                assert_eq!(buf.len(), end + 4 + length, "one response at a time");
                return status_of(&buf);
            }
        }
        let n = stream.read(&mut chunk).await.expect("read");
        assert!(n > 0, "connection closed mid-response");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A connection that sent half a request line and then nothing.
async fn slow_socket(address: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(address).await.expect("connect");
    stream.write_all(b"GET /health HTT").await.expect("write");
    stream
}

/// Waits up to `limit` for the server to close `stream` (end of stream or a reset); true if
/// it did. Whatever the server sends first is read and ignored.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    tokio::time::timeout(limit, async {
        let mut buf = [0u8; 1024];
        while let Ok(1..) = stream.read(&mut buf).await {}
    })
    .await
    .is_ok()
}

/// True while the server has neither closed `stream` nor sent anything on it.
fn still_open(stream: &TcpStream) -> bool {
    let mut buf = [0u8; 1];
    matches!(stream.try_read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

#[tokio::test]
async fn a_half_sent_request_line_is_closed_after_the_header_timeout() {
    let timeout = Duration::from_millis(1000);
    let app = spawn_app_with(&[("HTTP_HEADER_TIMEOUT_MS", "1000")]).await;
    let address = socket_address(&app);
    assert_eq!(get_status(address, "/health").await, 200, "warm-up");

    let started = Instant::now();
    let mut slow = slow_socket(address).await;
    let closing = tokio::spawn(async move {
        let closed = closed_within(&mut slow, timeout + MARGIN).await;
        (closed, started.elapsed())
    });

    // Another client is not held up by the slow one.
    let asked = Instant::now();
    assert_eq!(get_status(address, "/health").await, 200);
    let answered_in = asked.elapsed();
    assert!(answered_in < MARGIN, "/health took {answered_in:?}");

    let (closed, after) = closing.await.expect("join");
    assert!(
        closed,
        "the half-sent request was still open after {after:?}"
    );
    // The time-out closed it, not something else: the timer starts after `started`.
    assert!(after >= timeout / 2, "closed after only {after:?}");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_header_timeout() {
    let timeout = Duration::from_millis(1000);
    let app = spawn_app_with(&[("HTTP_HEADER_TIMEOUT_MS", "1000")]).await;
    let mut stream = TcpStream::connect(socket_address(&app))
        .await
        .expect("connect");
    // Two requests on one connection: it is kept alive between them.
    for _ in 0..2 {
        stream
            .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .expect("write");
        assert_eq!(read_response(&mut stream).await, 200);
    }
    let idle_since = Instant::now();
    assert!(
        closed_within(&mut stream, timeout + MARGIN).await,
        "the idle keep-alive connection was still open after {:?}",
        idle_since.elapsed()
    );
    let after = idle_since.elapsed();
    assert!(after >= timeout / 2, "closed after only {after:?}");
}

#[tokio::test]
async fn a_thousand_slow_sockets_do_not_stop_the_server_answering() {
    let timeout = Duration::from_secs(5);
    let app = spawn_app_with(&[("HTTP_HEADER_TIMEOUT_MS", "5000")]).await;
    let address = socket_address(&app);
    assert_eq!(get_status(address, "/health").await, 200, "warm-up");

    let started = Instant::now();
    let mut slow = Vec::with_capacity(1000);
    for _ in 0..1000 {
        slow.push(slow_socket(address).await);
    }
    let opened_in = started.elapsed();

    let asked = Instant::now();
    assert_eq!(get_status(address, "/health").await, 200);
    let answered_in = asked.elapsed();
    assert!(answered_in < MARGIN, "/health took {answered_in:?}");
    // Accepted and held by the server, not waiting in the backlog.
    let metrics = app.anonymous().get("/metrics").await.text;
    let open: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("ims_http_connections_open "))
        .and_then(|v| v.trim().parse().ok())
        .expect("ims_http_connections_open");
    assert!(open >= 1000.0, "{open} connections open");
    let still = slow.iter().filter(|s| still_open(s)).count();
    assert_eq!(still, 1000, "slow sockets opened in {opened_in:?}");

    // And the time-out clears all of them.
    let deadline = started + timeout + MARGIN + opened_in;
    for (i, mut stream) in slow.into_iter().enumerate() {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            closed_within(&mut stream, left).await,
            "slow socket {i} still open after {:?}",
            started.elapsed()
        );
    }
    assert_eq!(get_status(address, "/health").await, 200);
}

#[tokio::test]
async fn past_the_cap_new_connections_wait_until_one_closes() {
    let timeout = Duration::from_millis(2000);
    let app = spawn_app_with(&[
        ("HTTP_HEADER_TIMEOUT_MS", "2000"),
        ("HTTP_MAX_CONNECTIONS", "20"),
    ])
    .await;
    let address = socket_address(&app);
    assert_eq!(get_status(address, "/health").await, 200, "warm-up");

    let started = Instant::now();
    let mut slow = Vec::new();
    for _ in 0..20 {
        slow.push(slow_socket(address).await);
    }
    // The 21st connection queues behind the 20 slow ones in the listen backlog: it is
    // accepted only when the time-out frees a permit, no sooner than `timeout` after
    // `started`.
    let waiting = tokio::spawn(async move {
        let status = get_status(address, "/health").await;
        (status, started.elapsed())
    });
    let (status, after) = tokio::time::timeout(timeout + MARGIN * 2, waiting)
        .await
        .expect("the request past the cap was never served")
        .expect("join");
    assert_eq!(status, 200);
    assert!(
        after >= timeout / 2,
        "served after {after:?}, while 20 slow connections held the cap"
    );
    for (i, mut stream) in slow.into_iter().enumerate() {
        assert!(
            closed_within(&mut stream, MARGIN).await,
            "slow socket {i} still open"
        );
    }
    // Still answering once the slow clients are gone.
    assert_eq!(get_status(address, "/health").await, 200);
    let asked = Instant::now();
    assert_eq!(get_status(address, "/health").await, 200);
    assert!(asked.elapsed() < MARGIN);
}
