//! The HTTP/1 accept loop, on hyper directly instead of `axum::serve`.
//!
//! `axum::serve` sets no header-read time-out and no connection cap: a client that opens a
//! connection and sends half a request line (or nothing, or one request and then nothing)
//! holds a socket, a file descriptor and a task for as long as it likes, and a few thousand
//! such clients exhaust the process's file descriptors (contract §2: "slow or idle clients
//! are disconnected after a header-read time-out; a connection cap keeps the process
//! answering"). This loop keeps what `axum::serve` provided (the peer address as
//! `ConnectInfo<SocketAddr>`, graceful shutdown, surviving `accept()` errors) and adds:
//!
//! - hyper's header-read time-out (`HTTP_HEADER_TIMEOUT_MS`). hyper arms the same timer
//!   whenever it waits for a request head, which includes a keep-alive connection waiting
//!   for its next request, so it is the idle keep-alive time-out as well;
//! - a cap on open connections (`HTTP_MAX_CONNECTIONS`): one semaphore permit per
//!   connection, taken *before* `accept()`. Past the cap, new connections wait in the
//!   kernel's listen backlog until one closes; none is refused, and the process never runs
//!   out of descriptors for its database and Redis sockets.
//!
//! The design notes are in `docs/http.md`.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;

/// Upper end of the default connection cap.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

/// File descriptors kept out of the default cap for everything that is not a client
/// connection: the database pool, Redis, the listener, log files, SQLite's journal.
pub const FD_RESERVE: u64 = 256;

/// Pause after an `accept()` error such as `EMFILE`, so the loop does not spin while the
/// condition lasts; a closing connection usually ends it.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// A lasting `accept()` error is logged at most this often.
const ACCEPT_WARN_INTERVAL: Duration = Duration::from_secs(10);

/// How the loop treats connections.
#[derive(Clone, Copy, Debug)]
pub struct ServeOptions {
    /// hyper's header-read time-out; also the idle keep-alive time-out.
    pub header_timeout: Duration,
    /// Open connections at most.
    pub max_connections: usize,
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and returns the connection cap:
/// `configured` if set, otherwise `min(10_000, nofile - 256)`.
///
/// Many distributions start services with a soft limit of 1,024, which a modest burst of
/// clients exhausts; the hard limit is what the administrator actually allows.
pub fn max_connections(configured: Option<usize>) -> usize {
    let nofile = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => Some(limit),
        Err(e) => {
            tracing::warn!("cannot raise the open-file limit (RLIMIT_NOFILE): {e}");
            rlimit::getrlimit(rlimit::Resource::NOFILE)
                .ok()
                .map(|(soft, _)| soft)
        }
    };
    match (configured, nofile) {
        (Some(cap), Some(nofile)) => {
            if cap as u64 > nofile.saturating_sub(FD_RESERVE) {
                tracing::warn!(
                    "HTTP_MAX_CONNECTIONS={cap} is above the {nofile} file descriptors this \
                     process may open less {FD_RESERVE} kept for the database, Redis and files; \
                     when they run out, accept() fails and new connections wait until some close"
                );
            }
            cap
        }
        (Some(cap), None) => cap,
        (None, Some(nofile)) => default_max_connections(nofile),
        (None, None) => DEFAULT_MAX_CONNECTIONS,
    }
}

/// The default cap under a soft file-descriptor limit of `nofile`. A tiny limit (under 512)
/// still gets half of it rather than nothing.
pub fn default_max_connections(nofile: u64) -> usize {
    let room = nofile.saturating_sub(FD_RESERVE).max(nofile / 2).max(1);
    usize::try_from(room)
        .unwrap_or(usize::MAX)
        .min(DEFAULT_MAX_CONNECTIONS)
}

/// Serves `app` on `listener` until `shutdown` completes; then stops accepting and waits for
/// open connections to finish their requests (idle ones close at once, slow ones within the
/// header time-out).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    options: ServeOptions,
    shutdown: impl Future<Output = ()>,
) {
    let permits = Arc::new(Semaphore::new(options.max_connections));
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_timeout);
    metrics::gauge!("ims_http_connections_max").set(options.max_connections as f64);
    // Exported from the start at 0, so that `increase()` sees the first time-out too.
    metrics::counter!("ims_http_header_timeouts_total").increment(0);
    let mut accept_errors = AcceptErrors::default();
    let mut shutdown = std::pin::pin!(shutdown);

    'serve: loop {
        // The permit comes first: past the cap the loop stops calling accept(), so new
        // connections queue in the kernel's backlog instead of costing a descriptor here.
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                // The semaphore is never closed.
                Err(_) => break 'serve,
            },
            () = &mut shutdown => break 'serve,
        };
        let (stream, peer) = loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => break accepted,
                    Err(e) => accept_errors.handle(e).await,
                },
                () = &mut shutdown => break 'serve,
            }
        };
        // Rate limiting and sessions read the client address from the request, as
        // `into_make_service_with_connect_info` provided it.
        let service = TowerToHyperService::new(app.clone().map_request(
            move |mut request: axum::http::Request<Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                request
            },
        ));
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        metrics::gauge!("ims_http_connections_open").increment(1.0);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                if e.is_timeout() {
                    // Expected for idle keep-alive connections; a flood of them is visible
                    // in the metric, not in the log.
                    metrics::counter!("ims_http_header_timeouts_total").increment(1);
                    tracing::debug!(%peer, "connection closed: header read time-out");
                } else {
                    tracing::debug!(%peer, "connection ended with an error: {e}");
                }
            }
            metrics::gauge!("ims_http_connections_open").decrement(1.0);
            drop(permit);
        });
    }

    drop(listener);
    tracing::debug!("draining {} open connection(s)", graceful.count());
    graceful.shutdown().await;
}

/// `accept()` failures. Per-connection ones (the peer reset before we accepted) are
/// ignored; the others (`EMFILE`, `ENFILE`, `ENOBUFS`) mean the process or the machine is
/// out of something, and last until connections close, so the loop backs off and logs them
/// now and then rather than on every try.
#[derive(Default)]
struct AcceptErrors {
    last_warning: Option<Instant>,
    suppressed: u64,
}

impl AcceptErrors {
    async fn handle(&mut self, e: io::Error) {
        if matches!(
            e.kind(),
            io::ErrorKind::ConnectionRefused
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::ConnectionReset
        ) {
            return;
        }
        let due = self
            .last_warning
            .is_none_or(|at| at.elapsed() >= ACCEPT_WARN_INTERVAL);
        if due {
            let since = match self.suppressed {
                0 => String::new(),
                n => format!(" ({n} more since the last warning)"),
            };
            tracing::warn!(
                "accept() failed: {e}; retrying every {} ms{since}",
                ACCEPT_BACKOFF.as_millis()
            );
            self.last_warning = Some(Instant::now());
            self.suppressed = 0;
        } else {
            self.suppressed += 1;
        }
        tokio::time::sleep(ACCEPT_BACKOFF).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_cap_leaves_room_for_other_descriptors() {
        assert_eq!(default_max_connections(1_024), 768);
        assert_eq!(default_max_connections(4_096), 3_840);
        assert_eq!(default_max_connections(10_256), 10_000);
        assert_eq!(default_max_connections(1_048_576), 10_000);
        assert_eq!(default_max_connections(u64::MAX), 10_000);
        assert_eq!(default_max_connections(300), 150);
        assert_eq!(default_max_connections(0), 1);
    }
}
