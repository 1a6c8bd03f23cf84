//! RedisService and RedisConnection against a private, real redis-server.

use std::io::Write;
mod common;

use common::{config_for, service_for};

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ims_redis::session::{hash_token, RefreshTokenStore, Taken};
use ims_redis::{RedisConfig, RedisConnection, RedisService};
use ims_testkit::RedisServer;
use serde::{Deserialize, Serialize};

fn raw(server: &RedisServer) -> redis::Connection {
    redis::Client::open(server.url())
        .and_then(|c| c.get_connection())
        .expect("raw connection")
}

async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Thing {
    name: String,
    count: u32,
}

#[tokio::test]
async fn typed_round_trips_with_the_prefix() {
    let server = RedisServer::start();
    let redis = service_for(&server).await;
    let thing = Thing {
        name: "widget".into(),
        count: 3,
    };
    assert!(redis.set("things:1", &thing, None).await);
    assert_eq!(redis.get::<Thing>("things:1").await, Some(thing));
    assert!(redis.exists("things:1").await);
    assert_eq!(redis.ttl("things:1").await, -1);
    assert_eq!(redis.ttl("missing").await, -2);

    // The prefix is on the real key and nowhere else.
    let mut conn = raw(&server);
    let stored: Option<String> = redis::cmd("GET")
        .arg("test:things:1")
        .query(&mut conn)
        .expect("get");
    assert_eq!(stored.as_deref(), Some(r#"{"name":"widget","count":3}"#));

    assert_eq!(redis.incr("counter").await, Some(1));
    assert_eq!(redis.incr("counter").await, Some(2));
    assert!(redis.expire("counter", Duration::from_secs(100)).await);
    let ttl = redis.ttl("counter").await;
    assert!((99..=100).contains(&ttl), "ttl {ttl}");
    assert!(!redis.expire("missing", Duration::from_secs(1)).await);

    let mut keys = redis.keys("*").await;
    keys.sort();
    assert_eq!(keys, vec!["counter".to_string(), "things:1".to_string()]);
    assert_eq!(redis.del(&["things:1", "counter", "missing"]).await, 2);
    assert!(!redis.exists("things:1").await);

    // A value of the wrong shape is a miss, not a panic.
    assert!(redis.set("shape", &"text", None).await);
    assert_eq!(redis.get::<Thing>("shape").await, None);
}

#[tokio::test]
async fn values_expire_after_their_ttl() {
    let server = RedisServer::start();
    let redis = service_for(&server).await;
    assert!(
        redis
            .set("short", &1, Some(Duration::from_millis(200)))
            .await
    );
    assert_eq!(redis.get::<i32>("short").await, Some(1));
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(redis.get::<i32>("short").await, None);
    assert!(!redis.exists("short").await);
}

#[tokio::test]
async fn flush_by_prefix_removes_only_matching_keys_over_a_large_keyspace() {
    let server = RedisServer::start();
    let redis = service_for(&server).await;
    let mut conn = raw(&server);
    let mut pipe = redis::pipe();
    for i in 0..12_000 {
        pipe.cmd("SET")
            .arg(format!("test:cache:org1:{i}"))
            .arg(i)
            .ignore();
    }
    for i in 0..500 {
        pipe.cmd("SET")
            .arg(format!("test:cache:org2:{i}"))
            .arg(i)
            .ignore();
        // Same text without the service prefix: must survive.
        pipe.cmd("SET")
            .arg(format!("cache:org1:{i}"))
            .arg(i)
            .ignore();
    }
    // A key whose literal text contains glob characters.
    pipe.cmd("SET").arg("test:cache:org*:x").arg(1).ignore();
    let () = pipe.query(&mut conn).expect("pipeline");

    assert_eq!(redis.flush_by_prefix("cache:org1:").await, 12_000);
    assert!(redis.keys("cache:org1:*").await.is_empty());
    assert_eq!(redis.keys("cache:org2:*").await.len(), 500);
    let untouched: u64 = redis::cmd("DBSIZE").query(&mut conn).expect("dbsize");
    assert_eq!(untouched, 500 + 500 + 1);

    // `org*` is literal: it removes only the key that really starts with it.
    assert_eq!(redis.flush_by_prefix("cache:org*").await, 1);
    assert_eq!(redis.keys("cache:org2:*").await.len(), 500);
}

#[tokio::test]
async fn a_stopped_redis_gives_degraded_defaults_quickly_and_reconnects() {
    let server = RedisServer::start();
    let redis = service_for(&server).await;
    assert!(redis.set("kept", &"before", None).await);
    server.stop();

    // The first command after the crash finds out (and opens the breaker).
    let started = Instant::now();
    assert_eq!(redis.get::<String>("kept").await, None);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "first failure took {:?}",
        started.elapsed()
    );
    wait_until("breaker to open", || !redis.is_connected()).await;

    // Every method answers its degraded default, each well inside the command time-out.
    let bound = redis.connection().command_timeout();
    macro_rules! quick {
        ($call:expr, $expected:expr) => {{
            let started = Instant::now();
            let value = $call.await;
            let took = started.elapsed();
            assert_eq!(value, $expected, stringify!($call));
            assert!(took <= bound, "{} took {took:?}", stringify!($call));
        }};
    }
    quick!(redis.get::<String>("kept"), None);
    quick!(redis.set("k", &"v", Some(Duration::from_secs(5))), false);
    quick!(redis.del(&["k"]), 0);
    quick!(redis.ttl("k"), -2);
    quick!(redis.exists("k"), false);
    quick!(redis.keys("*"), Vec::<String>::new());
    quick!(redis.flush_by_prefix("k"), 0);
    quick!(redis.incr("k"), None);
    quick!(redis.expire("k", Duration::from_secs(1)), false);

    // Back without recreating anything: the probe notices and commands flow again.
    server.restart();
    wait_until("reconnection", || redis.is_connected()).await;
    assert!(redis.set("after", &"restart", None).await);
    assert_eq!(
        redis.get::<String>("after").await.as_deref(),
        Some("restart")
    );
    assert_eq!(redis.connection().outages(), 1);
}

/// A Redis that pauses writes (`CLIENT PAUSE … WRITE`: Redis' `FAILOVER`, Sentinel, an
/// operator) answers other clients' `PING`s at once, so a probe could take the pause for a
/// recovery while writes still wait, and flap. It does not: the probe's `PING` travels on
/// the same multiplexed connection as the write the pause holds, and Redis answers one
/// client's commands in order, so it waits too. One pause is one outage, over about the
/// recovery rule's three ticks after the pause (checked for a probe that saw the cache
/// off for longer: that was the hold-down of earlier flaps).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_pause_is_one_outage_that_ends_with_the_pause() {
    let server = RedisServer::start();
    let redis = service_for(&server).await;
    let pause = Duration::from_millis(2500);
    let () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(pause.as_millis() as u64)
        .arg("WRITE")
        .query(&mut raw(&server))
        .expect("pause");
    let paused = Instant::now();
    // A write waits behind the pause past its time-out, which opens the breaker.
    while redis.is_connected() {
        assert!(
            paused.elapsed() < pause,
            "a paused Redis must count as down"
        );
        redis.set("paused", &"value", None).await;
    }
    // Reads still answer during the pause; the probe must not take that for a recovery.
    while paused.elapsed() < pause - Duration::from_millis(200) {
        assert!(!redis.is_connected(), "back while writes were still paused");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    wait_until("the connection to be back", || redis.is_connected()).await;
    assert!(redis.set("after", &"value", None).await);
    assert_eq!(redis.connection().outages(), 1, "one pause, one outage");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_redis_counts_as_down_until_it_is_fast_again() {
    let server = RedisServer::start();
    let redis = service_for(&server).await;
    assert!(redis.set("kept", &"value", None).await);

    // Every command now waits behind a 200 ms script: slow, but under the 250 ms time-out.
    let busy = server.slow_down(200);
    let slow_since = Instant::now();
    let mut slow_answers = 0;
    while redis.is_connected() {
        assert!(
            slow_since.elapsed() < Duration::from_secs(5),
            "a Redis this slow must count as down"
        );
        // A command that waits behind two scripts times out (and opens the breaker too).
        let started = Instant::now();
        let _ = redis.get::<String>("kept").await;
        slow_answers += u32::from(started.elapsed() >= Duration::from_millis(50));
    }
    assert!(slow_answers >= 1, "the commands were slow: {slow_answers}");
    assert_eq!(redis.connection().outages(), 1);

    // From then on no command waits, and the connection stays down while Redis is slow:
    // its probe's occasional fast PING does not bring it back.
    let watched = Instant::now();
    while watched.elapsed() < Duration::from_millis(1500) {
        let started = Instant::now();
        assert_eq!(redis.get::<String>("kept").await, None);
        // Not behind a 200 ms script; the margin is for a busy machine's scheduling (5 ms
        // failed once while the whole suite ran beside other work).
        assert!(
            started.elapsed() < Duration::from_millis(100),
            "{:?}",
            started.elapsed()
        );
        assert!(!redis.is_connected(), "came back while still slow");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    redis.connection().ping().await.expect("it answers");
    assert!(
        !redis.is_connected(),
        "a slow PING does not close the breaker"
    );

    drop(busy);
    wait_until("the connection to be back", || redis.is_connected()).await;
    assert_eq!(redis.get::<String>("kept").await.as_deref(), Some("value"));
    assert_eq!(
        redis.connection().outages(),
        1,
        "one slow period, one outage"
    );
}

/// Scripts of 80 ms back to back: a command sent as the last one's answer comes waits about
/// 75 ms, so Redis counts as down, but a lone `PING` lands at a random moment and often
/// answers under 50 ms (a probe saw this between 55 and 100 ms). Recovering on a few such `PING`s, and on
/// `/health`'s, made a probe's instance flap 68 times a minute (each recovery flushes the
/// cache). Now each `PING` must answer under half the threshold on ticks in a row, and an
/// outage soon after a recovery is held down longer each time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_slow_now_and_then_does_not_flap() {
    let server = RedisServer::start();
    let redis = service_for(&server).await;
    let busy = server.slow_down(80);
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(6) {
        let _ = redis.get::<String>("kept").await;
        // Health checks as a monitor would poll them: they close nothing.
        let _ = redis.connection().ping().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(busy);
    let outages = redis.connection().outages();
    assert!((1..=3).contains(&outages), "{outages} outages in 6 s");
}

#[tokio::test]
async fn a_zero_slow_threshold_waits_on_a_slow_redis() {
    let server = RedisServer::start();
    let config = RedisConfig {
        slow_threshold: Duration::ZERO,
        ..config_for(&server)
    };
    let redis = RedisService::new(RedisConnection::connect(config).await, "test:");
    assert!(redis.set("kept", &"value", None).await);
    let busy = server.slow_down(100);
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(1500) {
        assert_eq!(redis.get::<String>("kept").await.as_deref(), Some("value"));
    }
    assert!(
        redis.is_connected(),
        "REDIS_SLOW_MS=0: slowness alone never opens it"
    );
    drop(busy);
}

#[tokio::test]
async fn unreachable_at_start_then_up_later() {
    let server = RedisServer::start();
    server.stop();
    let config = config_for(&server);
    let connection = RedisConnection::connect(config.clone()).await;
    assert!(!connection.is_connected());
    let redis = RedisService::new(connection, config.key_prefix);
    assert!(!redis.set("k", &1, None).await);
    server.restart();
    wait_until("first connection", || redis.is_connected()).await;
    assert!(redis.set("k", &1, None).await);
}

#[tokio::test]
async fn disabled_never_connects() {
    let server = RedisServer::start();
    let config = RedisConfig {
        enabled: false,
        ..config_for(&server)
    };
    let connection = RedisConnection::connect(config).await;
    assert!(!connection.is_enabled() && !connection.is_connected());
    let redis = RedisService::new(connection, "test:");
    assert!(!redis.set("k", &1, None).await);
    let clients: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query(&mut raw(&server))
        .expect("client list");
    assert_eq!(
        clients.lines().count(),
        1,
        "only our inspection connection: {clients}"
    );
}

/// A `tracing` writer that keeps everything in memory.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn count(&self, needle: &str) -> usize {
        String::from_utf8_lossy(&self.0.lock().expect("lock"))
            .matches(needle)
            .count()
    }
}

// current_thread runtime: the probe task runs on this thread, under this subscriber.
#[tokio::test(flavor = "current_thread")]
async fn one_warning_per_outage_not_one_per_operation() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let server = RedisServer::start();
    let redis = service_for(&server).await;
    for outage in 1..=2 {
        server.stop();
        for _ in 0..200 {
            let _ = redis.get::<String>("k").await;
            let _ = redis.set("k", &1, None).await;
        }
        wait_until("breaker to open", || !redis.is_connected()).await;
        tokio::time::sleep(Duration::from_millis(300)).await; // several probe rounds
        assert_eq!(captured.count("Redis connection lost"), outage);
        server.restart();
        wait_until("reconnection", || redis.is_connected()).await;
        assert_eq!(captured.count("Redis connection is back"), outage);
    }
    assert_eq!(captured.count("WARN"), 2, "only the two outage warnings");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_token_is_taken_exactly_once() {
    let server = RedisServer::start();
    let redis = service_for(&server).await;
    let store = RefreshTokenStore::new(redis.clone());
    let hash = hash_token("token-1");
    let record = serde_json::json!({"userId": "u1", "createdAt": "2026-01-01T00:00:00.000Z"});
    assert!(store.put(&hash, &record, Duration::from_secs(60)).await);
    assert!(redis.exists(&format!("session:refresh:{hash}")).await);
    let ttl = redis.ttl(&format!("session:refresh:{hash}")).await;
    assert!((59..=60).contains(&ttl));

    let takers: Vec<_> = (0..16)
        .map(|_| {
            let store = store.clone();
            let hash = hash.clone();
            tokio::spawn(async move {
                store
                    .take::<serde_json::Value>(&hash, Duration::from_secs(60))
                    .await
            })
        })
        .collect();
    let mut found = 0;
    for taker in takers {
        match taker.await.expect("join") {
            Taken::Found(value) => {
                assert_eq!(value, record);
                found += 1;
            }
            Taken::Missing => {}
            Taken::Unavailable => panic!("redis is up"),
        }
    }
    assert_eq!(found, 1, "exactly one concurrent taker wins");
    assert!(!redis.exists(&format!("session:refresh:{hash}")).await);
    assert_eq!(
        store.rotated::<serde_json::Value>(&hash).await,
        Some(record)
    );
}

#[tokio::test]
async fn rediss_urls_speak_tls_and_verify_the_server() {
    let server = RedisServer::start_tls();
    // Trust comes from the platform store, which SSL_CERT_FILE replaces (nextest runs each
    // test in its own process, so this touches no other test).
    // A client that trusts another CA refuses the server.
    let stranger = RedisServer::start_tls();
    std::env::set_var("SSL_CERT_FILE", stranger.ca_file());
    assert!(!RedisConnection::connect(config_for(&server))
        .await
        .is_connected());

    std::env::set_var("SSL_CERT_FILE", server.ca_file());
    let redis = service_for(&server).await;
    assert!(redis.set("secure", &"yes", None).await);
    assert_eq!(redis.get::<String>("secure").await.as_deref(), Some("yes"));
}

async fn exercise_batches(redis: &RedisService) {
    // Keys chosen to fall in different cluster slots.
    let keys = ["batch:alpha", "batch:beta", "batch:gamma", "batch:delta"];
    let values = [1u32, 2, 3, 4];
    let entries: Vec<(&str, &u32)> = keys.iter().copied().zip(values.iter()).collect();
    assert!(
        redis
            .set_many(&entries, Some(Duration::from_secs(60)))
            .await
    );
    let mut wanted: Vec<&str> = keys.to_vec();
    wanted.push("batch:missing");
    let got: Vec<Option<u32>> = redis.get_many(&wanted).await;
    assert_eq!(got, vec![Some(1), Some(2), Some(3), Some(4), None]);
    assert!(
        redis.ttl("batch:gamma").await > 0,
        "the TTL applies to each"
    );

    assert_eq!(redis.incr_by("counter", 5).await, Some(5));
    assert_eq!(redis.incr_by("counter", -7).await, Some(-2));
    assert_eq!(redis.decr("counter").await, Some(-3));

    assert_eq!(redis.set_nx("once", &"first", None).await, Some(true));
    assert_eq!(redis.set_nx("once", &"second", None).await, Some(false));
    assert_eq!(redis.get::<String>("once").await.as_deref(), Some("first"));

    assert_eq!(redis.version("blog").await, Some(0));
    let old = redis.versioned_key("blog", "post:1").await.expect("key");
    assert_eq!(old, "blog:v0:post:1");
    assert!(redis.set(&old, &"old value", None).await);
    assert_eq!(redis.bump_version("blog").await, Some(1));
    let new = redis.versioned_key("blog", "post:1").await.expect("key");
    assert_eq!(new, "blog:v1:post:1");
    assert_eq!(
        redis.get::<String>(&new).await,
        None,
        "the old value is unreachable"
    );
}

#[tokio::test]
async fn batches_counters_set_nx_and_versions_on_one_server_and_degrade_without_it() {
    let server = RedisServer::start();
    let redis = service_for(&server).await;
    exercise_batches(&redis).await;
    // Keys carry the prefix like every other method.
    let raw_value: Option<String> = redis::cmd("GET")
        .arg("test:batch:alpha")
        .query(&mut raw(&server))
        .expect("raw get");
    assert_eq!(raw_value.as_deref(), Some("1"));

    server.stop();
    let started = Instant::now();
    assert_eq!(
        redis.get_many::<u32>(&["batch:alpha", "batch:beta"]).await,
        vec![None, None]
    );
    assert!(!redis.set_many(&[("batch:alpha", &9)], None).await);
    assert_eq!(redis.incr_by("counter", 1).await, None);
    assert_eq!(redis.set_nx("once", &"x", None).await, None);
    assert_eq!(redis.versioned_key("blog", "post:1").await, None);
    assert_eq!(redis.bump_version("blog").await, None);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "degraded answers are quick"
    );
}

#[tokio::test]
async fn batches_span_slots_on_a_cluster() {
    let cluster = ims_testkit::RedisCluster::start();
    let config = common::cluster_config(&cluster);
    let connection = RedisConnection::connect(config.clone()).await;
    assert!(connection.is_connected() && connection.is_cluster());
    let redis = RedisService::new(connection, config.key_prefix);
    exercise_batches(&redis).await;
}
