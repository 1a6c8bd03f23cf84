//! The rate limiter's leases against a private, real redis-server: a busy key is decided
//! mostly in process, and the limit stays exact (never more than the limit in any window)
//! across instances; a single instance still admits exactly the limit.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::service_for;
use ims_redis::rate_limit::{lease, Decision, Quota, RateLimiter, Store};
use ims_redis::{RedisConnection, RedisService};
use ims_testkit::RedisServer;

async fn limiter(server: &RedisServer) -> Arc<RateLimiter> {
    limiter_on(service_for(server).await)
}

/// A limiter on `service`, every request from one client to one route.
fn limiter_on(service: RedisService) -> Arc<RateLimiter> {
    RateLimiter::new(
        service,
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

/// The admissions a log counts (its head) and its runs, checking that the head is the sum
/// of the runs and that stamps never decrease.
fn log_of(server: &RedisServer, key: &str) -> (u64, u64) {
    log_on(&mut redis(server), key)
}

fn log_on(conn: &mut impl redis::ConnectionLike, key: &str) -> (u64, u64) {
    let items: Vec<String> = redis::cmd("LRANGE")
        .arg(key)
        .arg(0)
        .arg(-1)
        .query(conn)
        .expect("LRANGE");
    ims_testkit::limiter_log(&items)
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

/// How a request is decided: through `check_all` alone, or as the layer does it (in
/// process from a lease's slots when it can, else `check_all`).
#[derive(Clone, Copy)]
enum Path {
    CheckAll,
    InProcessFirst,
}

async fn decide(limiter: &RateLimiter, checks: &[(String, Quota)], path: Path) -> Decision {
    let decided = match path {
        Path::InProcessFirst => limiter.decide_now(checks),
        Path::CheckAll => None,
    };
    match decided {
        Some(decisions) => decisions,
        None => limiter.check_all(checks).await,
    }
    .remove(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_hammering_one_key_never_admit_more_than_the_limit_in_any_window() {
    hammer(Path::CheckAll).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deciding_in_process_first_never_admits_more_than_the_limit_in_any_window() {
    hammer(Path::InProcessFirst).await;
}

/// Two instances, eight tasks each, on one key for three seconds.
async fn hammer(path: Path) {
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
                    let decision = decide(&limiter, &checks_of, path).await;
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
    let requests: u64 = 4000;
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
    // Every admission is counted in the shared log (plus at most the unused part of the
    // current lease and of the one reserved ahead), in far fewer elements than admissions:
    // one run per reservation.
    let (entries, runs) = log_of(&server, "test:ratelimit:busy");
    let unused = 2 * u64::from(lease::MAX_LEASE);
    assert!(
        (requests..=requests + unused).contains(&entries),
        "{entries} entries"
    );
    assert!(runs * 10 < requests, "{runs} runs for {requests} requests");
}

#[tokio::test]
async fn what_cannot_be_decided_in_process_takes_no_slot_from_the_other_policy() {
    let server = RedisServer::start();
    let limiter = limiter(&server).await;
    let leased = (
        "ratelimit:leased".to_string(),
        Quota {
            limit: 1000,
            window: Duration::from_secs(60),
        },
    );
    // Below the leasing threshold: always decided by Redis, never in process.
    let unleased = (
        "ratelimit:small".to_string(),
        Quota {
            limit: lease::MIN_LEASED_LIMIT - 1,
            window: Duration::from_secs(60),
        },
    );
    // Two quick requests: the second reserves slots for the leased key at their pace.
    for _ in 0..2 {
        assert!(limiter.check_all(std::slice::from_ref(&leased)).await[0].allowed);
    }
    let remaining = |decisions: Option<smallvec::SmallVec<[Decision; 2]>>| {
        decisions.expect("decided in process")[0].remaining
    };
    let first = remaining(limiter.decide_now(std::slice::from_ref(&leased)));
    let both = [leased.clone(), unleased.clone()];
    assert!(
        limiter.decide_now(&both).is_none(),
        "the small quota needs Redis"
    );
    let next = remaining(limiter.decide_now(std::slice::from_ref(&leased)));
    assert_eq!(next, first - 1, "the undecided request kept no slot");
    // Decided the long way, the same request is admitted by both and counted once each.
    let decisions = limiter.check_all(&both).await;
    assert!(decisions.iter().all(|d| d.allowed), "{decisions:?}");
    assert_eq!(decisions[0].remaining, next - 1);
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
    assert_eq!(log_of(&server, "test:ratelimit:exact").0, 64);
}

#[tokio::test]
async fn a_log_of_bare_stamps_from_the_previous_release_keeps_its_count() {
    let server = RedisServer::start();
    let limiter = limiter(&server).await;
    let mut conn = redis(&server);
    let (seconds, micros): (u64, u64) = redis::cmd("TIME").query(&mut conn).expect("TIME");
    let now = seconds * 1_000_000 + micros;
    // Ten admissions as the previous release wrote them: one bare stamp each.
    let stamps: Vec<u64> = (0..10).map(|i| now - 1_000 + i).collect();
    let _: () = redis::cmd("RPUSH")
        .arg("test:ratelimit:old")
        .arg(&stamps)
        .query(&mut conn)
        .expect("RPUSH");
    let quota = Quota {
        limit: 12,
        window: Duration::from_secs(60),
    };
    let checks = [("ratelimit:old".to_string(), quota)];
    let mut allowed = Vec::new();
    for _ in 0..3 {
        allowed.push(limiter.check_all(&checks).await[0].allowed);
    }
    assert_eq!(allowed, [true, true, false]);
    assert_eq!(log_of(&server, "test:ratelimit:old").0, 12);
}

/// On a cluster each policy's log is its own call (its own slot), so an admission by one
/// that another refused is taken back afterwards (the refund script).
#[tokio::test]
async fn on_a_cluster_a_request_refused_by_one_policy_is_taken_back_from_the_other() {
    let cluster = ims_testkit::RedisCluster::start();
    let config = common::cluster_config(&cluster);
    let connection = RedisConnection::connect(config.clone()).await;
    assert!(connection.is_connected() && connection.is_cluster());
    let limiter = limiter_on(RedisService::new(connection, config.key_prefix));
    let roomy = Quota {
        limit: 10,
        window: Duration::from_secs(60),
    };
    let tight = Quota {
        limit: 2,
        window: Duration::from_secs(60),
    };
    let checks = [
        ("ratelimit:roomy".to_string(), roomy),
        ("ratelimit:tight".to_string(), tight),
    ];
    let mut allowed = Vec::new();
    for _ in 0..5 {
        let decisions = limiter.check_all(&checks).await;
        allowed.push(decisions.iter().all(|d| d.allowed));
    }
    assert_eq!(allowed, [true, true, false, false, false]);
    let nodes: Vec<String> = cluster
        .seeds()
        .split(',')
        .map(|seed| format!("redis://{seed}"))
        .collect();
    let mut conn = redis::cluster::ClusterClient::new(nodes)
        .expect("cluster client")
        .get_connection()
        .expect("cluster connection");
    assert_eq!(log_on(&mut conn, "test:ratelimit:tight").0, 2);
    assert_eq!(
        log_on(&mut conn, "test:ratelimit:roomy").0,
        2,
        "the three refused requests were taken back"
    );
}

/// Contract §8: once Redis counts as down, no request waits on it, not even for its key's
/// reservation that was sent before the outage was noticed (that one can take the whole
/// command time-out). Redis hangs behind a busy script; a plain command sent first times
/// out and marks it down while a reservation sent later is still in flight. Before, the
/// next request of that key waited for the reservation (about 190 ms here).
#[tokio::test]
async fn no_request_waits_for_a_reservation_once_redis_is_down() {
    let server = RedisServer::start();
    let service = service_for(&server).await;
    let limiter = limiter_on(service.clone());
    let quota = Quota {
        limit: 1000,
        window: Duration::from_secs(60),
    };
    let checks = [("ratelimit:hung".to_string(), quota)];
    assert_eq!(limiter.check_all(&checks).await[0].store, Store::Redis);

    let _busy = server.slow_down(3000);
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Sent first, times out first: Redis is marked down about 250 ms from now.
    let first = tokio::spawn({
        let service = service.clone();
        async move { service.get::<String>("anything").await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(service.is_connected(), "not down yet");
    // The key's reservation, in flight until about 450 ms from the first command.
    let reserving = tokio::spawn({
        let (limiter, checks) = (limiter.clone(), checks.clone());
        async move { limiter.check_all(&checks).await }
    });
    let _ = first.await;
    assert!(!service.is_connected(), "the time-out marks Redis down");
    let started = Instant::now();
    let decided = limiter.check_all(&checks).await;
    let waited = started.elapsed();
    assert_eq!(decided[0].store, Store::Memory);
    assert!(
        waited < Duration::from_millis(60),
        "waited {waited:?} on a Redis that is down"
    );
    let _ = reserving.await;
}
