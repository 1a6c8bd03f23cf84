//! The rate limiter's leases against a private, real redis-server: a busy key is decided
//! mostly in process, and the limit stays exact (never more than the limit in any window)
//! across instances; a single instance still admits exactly the limit.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ims_redis::rate_limit::{Quota, RateLimiter};
use ims_redis::{RedisConfig, RedisConnection, RedisService};
use ims_testkit::RedisServer;

async fn limiter(server: &RedisServer) -> Arc<RateLimiter> {
    let config = RedisConfig {
        url: Some(server.url()),
        key_prefix: "test:".into(),
        probe_interval: Duration::from_millis(100),
        ..RedisConfig::default()
    };
    let connection = RedisConnection::connect(config.clone()).await;
    assert!(connection.is_connected());
    RateLimiter::new(
        RedisService::new(connection, config.key_prefix),
        Arc::new(|_| Some("client".into())),
        Arc::new(|_| Some("route".into())),
        1000,
    )
}

fn redis(server: &RedisServer) -> redis::Connection {
    redis::Client::open(server.url())
        .expect("client")
        .get_connection()
        .expect("connection")
}

/// Script calls Redis has served so far.
fn script_calls(server: &RedisServer) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut redis(server))
        .expect("INFO");
    info.lines()
        .filter(|line| line.starts_with("cmdstat_evalsha:") || line.starts_with("cmdstat_eval:"))
        .filter_map(|line| {
            let calls = line.split("calls=").nth(1)?;
            calls.split(',').next()?.parse::<u64>().ok()
        })
        .sum()
}

/// The shortest time that `limit + 1` admissions certainly spanned: each admission is
/// known only as the interval (sent, answered) in which it was decided, so a group of them
/// certainly fits in a window only if its first sending and last answer do. `times` is
/// sorted by sending time.
fn shortest_span_of(times: &[(Instant, Instant)], limit: usize) -> Duration {
    times
        .windows(limit + 1)
        .map(|group| {
            let last = group.iter().map(|(_, answered)| *answered).max();
            last.map_or(Duration::MAX, |last| last.duration_since(group[0].0))
        })
        .min()
        .unwrap_or(Duration::MAX)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_hammering_one_key_never_admit_more_than_the_limit_in_any_window() {
    let server = RedisServer::start();
    let instances = [limiter(&server).await, limiter(&server).await];
    let quota = Quota {
        limit: 100,
        window: Duration::from_millis(500),
    };
    let until = Instant::now() + Duration::from_secs(3);
    let tasks = instances.iter().flat_map(|limiter| {
        (0..8).map(move |_| {
            let limiter = limiter.clone();
            tokio::spawn(async move {
                let mut admitted = Vec::new();
                let mut checks = 0u64;
                while Instant::now() < until {
                    let checks_of = [("ratelimit:hot".to_string(), quota)];
                    let sent = Instant::now();
                    let decision = limiter.check_all(&checks_of).await.remove(0);
                    checks += 1;
                    if decision.allowed {
                        admitted.push((sent, Instant::now()));
                    }
                    // A little pacing so the load spans several windows.
                    tokio::time::sleep(Duration::from_micros(200)).await;
                }
                (admitted, checks)
            })
        })
    });
    let results = futures::future::join_all(tasks).await;
    let mut times = Vec::new();
    let mut checks = 0;
    for result in results {
        let (admitted, n) = result.expect("task");
        times.extend(admitted);
        checks += n;
    }
    times.sort();
    let span = shortest_span_of(&times, 100);
    assert!(
        span >= quota.window,
        "101 admissions certainly within {span:?}"
    );
    // Six windows' worth of quota, most of it used (leases only make it stricter).
    assert!(times.len() >= 300, "only {} admitted", times.len());
    assert!(checks > times.len() as u64, "the limit was reached");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_busy_key_costs_a_script_call_per_many_requests() {
    let server = RedisServer::start();
    let limiter = limiter(&server).await;
    let quota = Quota {
        limit: 1_000_000,
        window: Duration::from_secs(60),
    };
    let before = script_calls(&server);
    let requests = 4000;
    let tasks = (0..8).map(|_| {
        let limiter = limiter.clone();
        tokio::spawn(async move {
            for _ in 0..requests / 8 {
                let checks = [("ratelimit:busy".to_string(), quota)];
                assert!(limiter.check_all(&checks).await[0].allowed);
            }
        })
    });
    for task in futures::future::join_all(tasks).await {
        task.expect("task");
    }
    let calls = script_calls(&server) - before;
    assert!(
        calls * 40 < requests,
        "{calls} script calls for {requests} requests"
    );
    // Every admission has its entry in the shared log (plus at most one unused lease).
    let entries: u64 = redis::cmd("LLEN")
        .arg("test:ratelimit:busy")
        .query(&mut redis(&server))
        .expect("LLEN");
    assert!(
        (requests..=requests + 64).contains(&entries),
        "{entries} entries"
    );
}

#[tokio::test]
async fn one_instance_still_admits_exactly_the_limit_and_gives_unused_slots_back() {
    let server = RedisServer::start();
    let limiter = limiter(&server).await;
    let quota = Quota {
        limit: 64,
        window: Duration::from_secs(30),
    };
    let check = || async {
        let checks = [("ratelimit:exact".to_string(), quota)];
        limiter.check_all(&checks).await.remove(0)
    };
    let mut admitted = 0;
    for _ in 0..40 {
        admitted += usize::from(check().await.allowed);
    }
    assert_eq!(admitted, 40);
    // Past the lease's term (half a second here): its unused slots go back to Redis with
    // the next reservation, so the rest of the quota is all there.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let mut last = None;
    for _ in 0..30 {
        let decision = check().await;
        admitted += usize::from(decision.allowed);
        last = Some(decision);
    }
    assert_eq!(admitted, 64, "exactly the limit");
    let last = last.expect("decisions");
    assert!(!last.allowed);
    assert_eq!(last.remaining, 0);
    assert!(last.reset <= quota.window + Duration::from_millis(500));
}
