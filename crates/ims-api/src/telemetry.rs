//! Logging and metrics. Logs: readable lines by default, JSON with `LOG_FORMAT=json`,
//! filtered by `RUST_LOG` (default `info`). Metrics: a Prometheus recorder whose text is
//! served at `GET /metrics`, fed by [`Track`] (every request) and by gauges read at scrape
//! time (cache counters, Redis state, database pool).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{LazyLock, OnceLock, RwLock};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::response::Response;
use metrics::{Counter, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::{fmt, EnvFilter};

use crate::around::Around;

/// The log filter when `RUST_LOG` is unset.
pub const DEFAULT_LOG_FILTER: &str = "info,sqlx=warn,tower_http=info";

/// Installs the global subscriber. Calling it twice is harmless (the second call is ignored).
///
/// Lines go to stdout through a thread of their own (`tracing-appender`): a request formats
/// its line and hands it over, and never waits on the write. Written in place, a log
/// reader that stopped reading (a full pipe) stopped every worker thread after some 140
/// requests, `/health/live` included. Up to 128,000 lines wait for a slow reader; past that, lines
/// are dropped rather than requests held. The returned guard writes what is still queued
/// when it is dropped: keep it until the process ends.
#[must_use = "dropping the guard stops the log writer"]
pub fn init(json: bool) -> tracing_appender::non_blocking::WorkerGuard {
    // RUST_LOG was checked with the settings (a bad one stops start-up); unset, the
    // default.
    let configured = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty());
    let mut filter = configured
        .as_deref()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| EnvFilter::new(DEFAULT_LOG_FILTER));
    // The Redis client's own lines are left out unless RUST_LOG names them: on a cluster
    // it logs every failed reconnection to a lost node, at WARN and ERROR, several lines a
    // second for as long as the node is gone (a probe counted about 1,000 per instance in
    // a 30 s outage), where the server logs one line when Redis is lost and one when it
    // is back, with the reason (contract §8).
    if !configured.as_deref().is_some_and(names_redis_client) {
        if let Ok(directive) = "redis=off".parse() {
            filter = filter.add_directive(directive);
        }
    }
    // Batched: the writer thread drains every queued line into one buffer, then writes it
    // with one call (stdout alone would make a call of every line).
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(true)
        .thread_name("ims-log")
        .finish(std::io::BufWriter::new(std::io::stdout()));
    // Colour codes only for a person at a terminal (and not with NO_COLOR): in a container's
    // or a collector's log they are noise.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    // Both formats: the clock formats each second once (`log_format`).
    let builder = fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi)
        .with_timer(crate::log_format::Timestamps);
    let _ = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.fmt_fields(crate::log_format::fields()).try_init()
    };
    guard
}

/// Whether a `RUST_LOG` value has a directive for the Redis client's targets (`redis`,
/// `redis::…`), which then decides what of it is logged.
fn names_redis_client(filter: &str) -> bool {
    filter.split(',').any(|directive| {
        let target = directive
            .split(['=', '['])
            .next()
            .unwrap_or_default()
            .trim();
        target == "redis" || target.starts_with("redis::")
    })
}

/// Latency buckets in seconds: a cache hit is well under a millisecond, an uncached report
/// can take seconds.
const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The process-wide Prometheus recorder. The `metrics` facade has one global recorder, so
/// several servers in one process (tests) share it.
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full("ims_http_request_duration_seconds".into()),
                &LATENCY_BUCKETS,
            )
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        // Fails only if another recorder was installed first; metrics then go there.
        let _ = metrics::set_global_recorder(recorder);
        describe();
        handle
    })
}

/// How often the recorder folds recorded latencies into its histograms.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Folds the latencies recorded since the last time into the histograms, every few seconds.
/// The recorder keeps each sample until then, and it did so only when `/metrics` was
/// scraped: an instance nobody scraped grew by 13–20 bytes per request without bound
/// (found by a probe; the stock compose file runs no scraper).
pub async fn upkeep() {
    let mut every = tokio::time::interval(UPKEEP_INTERVAL);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        prometheus().run_upkeep();
    }
}

/// The standard `process_*` metrics (CPU, memory, descriptors, threads), read from the OS
/// at scrape time.
pub fn process_collector() -> &'static metrics_process::Collector {
    static COLLECTOR: OnceLock<metrics_process::Collector> = OnceLock::new();
    COLLECTOR.get_or_init(|| {
        let collector = metrics_process::Collector::default();
        collector.describe();
        collector
    })
}

/// `# HELP` lines: what each of our metrics means.
fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        "ims_http_requests_total",
        "HTTP requests by method, route template and status"
    );
    describe_histogram!(
        "ims_http_request_duration_seconds",
        Unit::Seconds,
        "HTTP request latency by method and route template"
    );
    describe_counter!(
        "ims_http_request_timeouts_total",
        "Requests answered 503 after REQUEST_TIMEOUT_MS"
    );
    describe_counter!(
        "ims_http_panics_total",
        "Handlers that panicked (answered 500)"
    );
    describe_counter!(
        "ims_http_header_timeouts_total",
        "Connections closed for not sending a request head in time"
    );
    describe_gauge!("ims_http_connections_open", "Open client connections");
    describe_gauge!(
        "ims_http_connections_max",
        "The connection cap (HTTP_MAX_CONNECTIONS)"
    );
    describe_counter!("ims_cache_hits_total", "Response-cache hits (L1 and L2)");
    describe_counter!(
        "ims_cache_misses_total",
        "Response-cache misses (the handler ran)"
    );
    describe_counter!(
        "ims_cache_bypasses_total",
        "Requests that skipped the cache (Cache-Control: no-cache)"
    );
    describe_counter!(
        "ims_cache_coalesced_total",
        "Misses answered by another request's handler run"
    );
    describe_counter!("ims_cache_stores_total", "Responses stored");
    describe_counter!(
        "ims_cache_stale_stores_refused_total",
        "Stores refused because an invalidation happened while the handler ran"
    );
    describe_counter!(
        "ims_cache_invalidations_total",
        "Group invalidations performed"
    );
    describe_counter!(
        "ims_cache_invalidated_keys_total",
        "Entries deleted by invalidations"
    );
    describe_counter!(
        "ims_cache_errors_total",
        "Lookups, stores or invalidations Redis could not serve"
    );
    describe_counter!(
        "ims_cache_l1_hits_total",
        "Hits served from process memory (L1)"
    );
    describe_counter!(
        "ims_cache_invalidations_published_total",
        "Invalidation messages published to other instances"
    );
    describe_counter!(
        "ims_cache_invalidations_received_total",
        "Invalidation messages received from other instances"
    );
    describe_counter!(
        "ims_cache_l1_flushes_total",
        "Whole-L1 flushes (a gap in a sender's sequence or a lost subscription)"
    );
    describe_counter!(
        "ims_cache_lock_waits_total",
        "Misses that waited for another instance's run of the same handler"
    );
    describe_counter!(
        "ims_cache_warmups_total",
        "Dashboard entries stored by the warm-up"
    );
    describe_gauge!("ims_cache_l1_entries", "Entries in the L1 tier");
    describe_gauge!("ims_cache_l1_bytes", Unit::Bytes, "Bytes in the L1 tier");
    describe_counter!(
        "ims_redis_outages_total",
        "Times the Redis connection was lost"
    );
    describe_gauge!("ims_redis_up", "1 while Redis answers, else 0");
    describe_gauge!(
        "ims_redis_cache_up",
        "1 while the cache's Redis answers (REDIS_CACHE_URL's, else the main one), else 0"
    );
    describe_gauge!("ims_db_pool_connections", "Open database connections");
    describe_gauge!("ims_db_pool_idle_connections", "Idle database connections");
    describe_gauge!(
        "ims_uptime_seconds",
        Unit::Seconds,
        "Seconds since the server started"
    );
}

/// Counts every request and its latency by method, matched route template (never the raw
/// path, so ids do not explode the label set) and status.
#[derive(Clone, Copy, Debug)]
pub struct Track;

impl Around for Track {
    type Carry = (Instant, Method, Option<MatchedPath>);

    fn before(&self, request: &mut Request) -> Self::Carry {
        let route = request.extensions().get::<MatchedPath>().cloned();
        (Instant::now(), known(request.method()), route)
    }

    async fn after<F>((started, method, route): Self::Carry, response: F) -> Response
    where
        F: Future<Output = Response> + Send + 'static,
    {
        let mut pending = Uncounted(Some((started, method, route)));
        let response = response.await;
        if let Some(request) = pending.0.take() {
            count(request, response.status().as_u16());
        }
        response
    }
}

/// A request whose client went away before its answer: hyper drops the request's future
/// mid-await, and it was not counted at all (found by a probe). It is counted on drop with
/// status 499, nginx's "client closed request".
struct Uncounted(Option<(Instant, Method, Option<MatchedPath>)>);

impl Drop for Uncounted {
    fn drop(&mut self) {
        if let Some(request) = self.0.take() {
            count(request, 499);
        }
    }
}

fn count((started, method, route): (Instant, Method, Option<MatchedPath>), status: u16) {
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    let (requests, latency) = handles(&method, route, status);
    requests.increment(1);
    latency.record(started.elapsed().as_secs_f64());
}

/// The method as a label: RFC 9110's methods and PATCH are themselves, any other is `OTHER`.
/// A client may send any token as a method (a 405 answers it), and every new label value
/// would be a new series kept for the life of the process.
fn known(method: &Method) -> Method {
    const KNOWN: [Method; 9] = [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::CONNECT,
        Method::OPTIONS,
        Method::TRACE,
        Method::PATCH,
    ];
    if KNOWN.contains(method) {
        method.clone()
    } else {
        static OTHER: LazyLock<Method> =
            LazyLock::new(|| Method::from_bytes(b"OTHER").unwrap_or(Method::GET));
        OTHER.clone()
    }
}

/// The metric handles of one (route, method, status).
type Handles = (Method, u16, Counter, Histogram);

/// [`Track`]'s handles, kept per route: building the label strings and looking the metric
/// up in the registry on every request costs more than the rest of a cache hit's
/// bookkeeping. The set is bounded by routes × methods × statuses.
fn handles(method: &Method, route: &str, status: u16) -> (Counter, Histogram) {
    static HANDLES: LazyLock<RwLock<HashMap<String, Vec<Handles>>>> =
        LazyLock::new(Default::default);
    let find = |known: &[Handles]| {
        known
            .iter()
            .find(|(m, s, _, _)| m == method && *s == status)
            .map(|(_, _, c, h)| (c.clone(), h.clone()))
    };
    if let Some(found) = HANDLES
        .read()
        .ok()
        .and_then(|map| map.get(route).and_then(|known| find(known)))
    {
        return found;
    }
    let labels = [
        ("method", method.to_string()),
        ("route", route.to_string()),
        ("status", status.to_string()),
    ];
    let made = (
        metrics::counter!("ims_http_requests_total", &labels),
        metrics::histogram!("ims_http_request_duration_seconds", &labels[..2]),
    );
    if let Ok(mut map) = HANDLES.write() {
        let known = map.entry(route.to_string()).or_default();
        if find(known).is_none() {
            known.push((method.clone(), status, made.0.clone(), made.1.clone()));
        }
    }
    made
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_directive_for_the_redis_client_lets_its_lines_through() {
        assert!(names_redis_client("info,redis=warn"));
        assert!(names_redis_client("redis::cluster_handling=debug"));
        assert!(names_redis_client(" redis[span]=info"));
        assert!(!names_redis_client("info"));
        assert!(!names_redis_client("info,ims_redis=debug"));
        assert!(!names_redis_client("warn,sqlx=info"));
    }
}
