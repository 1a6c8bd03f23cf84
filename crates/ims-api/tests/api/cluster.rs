//! The API on a real Redis Cluster (3 masters, 3 replicas, started per test): sessions,
//! the response cache with its cluster key layout, exact rate limits across processes, a
//! prefix flush over every master, `/health`, and a master killed under load.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ims_testkit::RedisCluster;
use md5::{Digest, Md5};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{header, id, org, sha256, spawn_app_with, Org, ServerProcess, TestApp};

/// A server on `cluster`, with `vars` on top.
async fn spawn_on(cluster: &RedisCluster, vars: &[(&str, &str)]) -> TestApp {
    let seeds = cluster.seeds();
    let mut all = vec![("REDIS_CLUSTER_NODES", seeds.as_str())];
    all.extend_from_slice(vars);
    let app = spawn_app_with(&all).await;
    assert!(app.state.redis.connection().is_cluster());
    wait_until_up(&app).await;
    app
}

async fn wait_until_up(app: &TestApp) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !app.state.redis.is_connected() {
        assert!(Instant::now() < deadline, "the cluster never came up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A synchronous cluster client for looking at keys the way an operator would.
fn cluster_conn(cluster: &RedisCluster) -> redis::cluster::ClusterConnection {
    let nodes: Vec<String> = cluster
        .seeds()
        .split(',')
        .map(|node| format!("redis://{node}"))
        .collect();
    redis::cluster::ClusterClient::new(nodes)
        .expect("cluster client")
        .get_connection()
        .expect("cluster connection")
}

fn exists(cluster: &RedisCluster, key: &str) -> bool {
    redis::cmd("EXISTS")
        .arg(key)
        .query::<i64>(&mut cluster_conn(cluster))
        .expect("exists")
        == 1
}

/// Keys matching `pattern` on each master, by port.
fn keys_per_master(cluster: &RedisCluster, pattern: &str) -> Vec<(u16, usize)> {
    cluster
        .masters()
        .into_iter()
        .map(|port| {
            let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).expect("client");
            let mut conn = client.get_connection().expect("connection");
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(pattern)
                .query(&mut conn)
                .expect("keys");
            (port, keys.len())
        })
        .collect()
}

/// A second API process beside `app` on the same cluster, with a global limit no test
/// reaches.
async fn second_on(cluster: &RedisCluster, app: &TestApp) -> ServerProcess {
    let seeds = cluster.seeds();
    let vars = [
        ("REDIS_CLUSTER_NODES", seeds.as_str()),
        ("RATE_LIMIT_GLOBAL", "1000000/60"),
    ];
    ServerProcess::beside_with(app, &vars).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sessions_rotate_detect_reuse_and_log_out_on_a_cluster() {
    let cluster = RedisCluster::start();
    let app = spawn_on(&cluster, &[("REFRESH_REUSE_GRACE", "0")]).await;
    let pair = app.register("session@example.com").await;
    let first = pair["refreshToken"].as_str().expect("refresh").to_string();
    // The hash is the key's hash tag, so the token and its tombstone share a slot.
    let live = format!("ims:session:refresh:{{{}}}", sha256(&first));
    assert!(exists(&cluster, &live), "{live}");

    let rotated = app.refresh(&first).await;
    assert_eq!(rotated.status, StatusCode::OK);
    let second: Value = rotated.json();
    let second = second["refreshToken"]
        .as_str()
        .expect("refresh")
        .to_string();
    assert!(!exists(&cluster, &live), "the old token is dead");
    assert!(exists(
        &cluster,
        &format!("ims:session:rotated:{{{}}}", sha256(&first))
    ));

    // Replaying the rotated token revokes the whole session: the new one dies too.
    assert_eq!(app.refresh(&first).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(app.refresh(&second).await.status, StatusCode::UNAUTHORIZED);

    let pair = app.login("session@example.com").await;
    let token = pair["refreshToken"].as_str().expect("refresh").to_string();
    let access = pair["accessToken"].as_str().expect("access").to_string();
    let out = app
        .caller(&access)
        .post("/auth/logout", json!({"refreshToken": token}))
        .await;
    assert_eq!(out.status, StatusCode::NO_CONTENT);
    assert_eq!(app.refresh(&token).await.status, StatusCode::UNAUTHORIZED);
    assert!(!exists(
        &cluster,
        &format!("ims:session:refresh:{{{}}}", sha256(&token))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cache_on_a_cluster_keeps_keys_headers_invalidation_and_tenants_apart() {
    let cluster = RedisCluster::start();
    let app = spawn_on(&cluster, &[]).await;
    let a = org(&app, "a@example.com").await;
    let b = org(&app, "b@example.com").await;

    let empty = hex::encode(Md5::digest(b""));
    let key_of = |org: &Org| format!("ims:cache:{{{}}}:items:list:GET:/items:{empty}", org.org_id);
    for org in [&a, &b] {
        let first = app.caller(&org.token).get("/items").await;
        assert_eq!(first.header("x-cache"), "MISS");
        let second = app.caller(&org.token).get("/items").await;
        assert_eq!(second.header("x-cache"), "HIT");
        let ttl: u64 = second.header("x-cache-ttl").parse().expect("ttl");
        assert!((1..=60).contains(&ttl), "{ttl}");
        assert!(!second.header("etag").is_empty());
        assert!(exists(&cluster, &key_of(org)), "{}", key_of(org));
    }
    // The two organizations' entries live wherever their tags hash; each group's epoch
    // and index are in its entry's slot, or the store script would have been refused.
    let slot = |key: &str| -> i64 {
        redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut cluster_conn(&cluster))
            .expect("keyslot")
    };
    assert_eq!(
        slot(&key_of(&a)),
        slot(&format!("ims:cacheidx:{{{}}}:items", a.org_id))
    );

    // A write in A invalidates A's list and nothing of B's.
    id(&app
        .caller(&a.token)
        .create(
            "/items",
            json!({"name": "Saw", "sku": "S-1", "priceCents": 900}),
        )
        .await);
    assert!(!exists(&cluster, &key_of(&a)));
    assert!(exists(&cluster, &key_of(&b)));
    let after = app.caller(&a.token).get("/items").await;
    assert_eq!(after.header("x-cache"), "MISS");
    let body = after.json();
    assert_eq!(body["total"], 2, "the new item is there");
    let other = app.caller(&b.token).get("/items").await;
    assert_eq!(other.header("x-cache"), "HIT");
    let body = other.json();
    assert_eq!(body["total"], 1, "B never sees A's item");

    // `/health` and `/health/cache` see the cluster.
    let health: Value = app.anonymous().get("/health").await.json();
    assert_eq!(health["services"]["redis"]["status"], "up", "{health}");
    let stats: Value = app.cache_stats().await;
    let masters = stats["cluster"]["masters"].as_array().expect("masters");
    assert_eq!(masters.len(), 3, "{stats}");
    assert!(masters.iter().all(|m| m["status"] == "up"), "{stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_read_started_after_a_write_returned_sees_older_data_on_a_cluster() {
    let cluster = RedisCluster::start();
    let app = spawn_on(&cluster, &[]).await;
    let second = second_on(&cluster, &app).await;
    let org = org(&app, "linear@example.com").await;
    let writes_done = AtomicI64::new(0);
    let stale = AtomicI64::new(0);
    let reads = AtomicI64::new(0);
    let path = format!("/items/{}", org.item);
    let writer = async {
        for _ in 0..40 {
            let body = json!({"itemId": org.item, "warehouseId": org.warehouse, "quantityDelta": 1, "reason": "count"});
            let response = app
                .caller(&org.token)
                .post("/inventory/adjustments", body)
                .await;
            assert_eq!(response.status, StatusCode::CREATED);
            writes_done.fetch_add(1, Ordering::SeqCst);
        }
    };
    let reader = |base: String| {
        let (api, path, writes_done, stale, reads) =
            (app.caller(&org.token), &path, &writes_done, &stale, &reads);
        async move {
            while writes_done.load(Ordering::SeqCst) < 40 {
                let floor = writes_done.load(Ordering::SeqCst);
                let response = api.at(&base).get(path).await;
                assert_eq!(response.status, StatusCode::OK);
                let body = response.json();
                if body["stockOnHand"].as_i64().expect("stock") < floor {
                    stale.fetch_add(1, Ordering::SeqCst);
                }
                reads.fetch_add(1, Ordering::SeqCst);
            }
        }
    };
    let readers = (0..4).map(|i| {
        reader(if i % 2 == 0 {
            app.address.clone()
        } else {
            second.address.clone()
        })
    });
    tokio::join!(writer, futures::future::join_all(readers));
    assert_eq!(
        stale.load(Ordering::SeqCst),
        0,
        "a read returned older data"
    );
    assert!(
        reads.load(Ordering::SeqCst) > 40,
        "the readers raced the writer"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rate_limits_are_exact_across_three_processes_on_a_cluster() {
    let cluster = RedisCluster::start();
    let seeds = cluster.seeds();
    let vars = [
        ("REDIS_CLUSTER_NODES", seeds.as_str()),
        ("RATE_LIMIT_GLOBAL", "10/60"),
    ];
    let app = spawn_on(&cluster, &vars[1..]).await;
    let token = app.token("limits@example.com").await;
    let others = [
        ServerProcess::beside_with(&app, &vars).await,
        ServerProcess::beside_with(&app, &vars).await,
    ];
    let bases = [
        app.address.clone(),
        others[0].address.clone(),
        others[1].address.clone(),
    ];
    let api = app.caller(&token);
    let requests = (0..30).map(|i| api.at(&bases[i % 3]).get("/items"));
    let statuses: Vec<StatusCode> = futures::future::join_all(requests)
        .await
        .into_iter()
        .map(|r| r.status)
        .collect();
    let ok = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    let refused = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!((ok, refused), (10, 20), "{statuses:?}");
    let mut conn = cluster_conn(&cluster);
    // The log's head holds the admissions it counts.
    let head: String = redis::cmd("LINDEX")
        .arg("ims:ratelimit:127.0.0.1:/items")
        .arg(0)
        .query(&mut conn)
        .expect("lindex");
    assert_eq!(head, "#10", "one shared log on the cluster");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_prefix_flush_visits_every_master() {
    let cluster = RedisCluster::start();
    let app = spawn_on(&cluster, &[]).await;
    let redis = &app.state.redis;
    // A few hundred at a time, as a real writer would: all at once would queue past the
    // command time-out on this small machine.
    for chunk in (0..12_000).collect::<Vec<u32>>().chunks(300) {
        let writes = chunk.iter().map(|i| async move {
            assert!(
                redis
                    .set(&format!("flushme:{i}"), i, Some(Duration::from_secs(600)))
                    .await
            );
        });
        futures::future::join_all(writes).await;
    }
    redis.set("keepme:1", &1, None).await;
    let spread = keys_per_master(&cluster, "ims:flushme:*");
    assert_eq!(spread.len(), 3);
    assert!(spread.iter().all(|(_, n)| *n > 1_000), "{spread:?}");
    assert_eq!(spread.iter().map(|(_, n)| n).sum::<usize>(), 12_000);
    assert_eq!(redis.keys("flushme:*").await.len(), 12_000);

    assert_eq!(redis.flush_by_prefix("flushme:").await, 12_000);
    assert!(keys_per_master(&cluster, "ims:flushme:*")
        .iter()
        .all(|(_, n)| *n == 0));
    assert!(redis.keys("flushme:*").await.is_empty());
    assert_eq!(redis.keys("keepme:*").await, ["keepme:1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn losing_a_master_under_load_fails_no_request_and_caching_resumes() {
    let cluster = std::sync::Arc::new(RedisCluster::start());
    let app = spawn_on(&cluster, &[]).await;
    let second = second_on(&cluster, &app).await;
    // Several organizations, so their keys spread over every master.
    let mut orgs = Vec::new();
    for i in 0..6 {
        orgs.push(org(&app, &format!("load{i}@example.com")).await);
    }
    let stop = AtomicBool::new(false);
    let failed = AtomicU64::new(0);
    let requests = AtomicU64::new(0);
    let misses_after_kill = AtomicU64::new(0);
    let killed_at: std::sync::Mutex<Option<Instant>> = std::sync::Mutex::new(None);
    let slowest = std::sync::Mutex::new(Duration::ZERO);
    let worker = |n: usize| {
        let (app, orgs, stop, failed, requests, misses, killed_at, slowest) = (
            &app,
            &orgs,
            &stop,
            &failed,
            &requests,
            &misses_after_kill,
            &killed_at,
            &slowest,
        );
        let base = if n.is_multiple_of(2) {
            app.address.clone()
        } else {
            second.address.clone()
        };
        async move {
            let mut i = 0usize;
            while !stop.load(Ordering::SeqCst) {
                let org = &orgs[(n + i) % orgs.len()];
                i += 1;
                let started = Instant::now();
                let response = if i.is_multiple_of(10) {
                    app.client
                        .patch(format!("{base}/items/{}", org.item))
                        .bearer_auth(&org.token)
                        .json(&json!({"priceCents": 1000 + i}))
                        .send()
                        .await
                } else {
                    app.client
                        .get(format!("{base}/items"))
                        .bearer_auth(&org.token)
                        .send()
                        .await
                };
                requests.fetch_add(1, Ordering::SeqCst);
                match response {
                    Ok(r) if r.status() == StatusCode::OK => {
                        if header(&r, "x-cache") == "MISS"
                            && killed_at.lock().map(|k| k.is_some()).unwrap_or(false)
                        {
                            misses.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    _ => {
                        failed.fetch_add(1, Ordering::SeqCst);
                    }
                }
                // Reads only: writes also wait for SQLite's write lock, shared by two
                // processes, which says nothing about Redis.
                let took = started.elapsed();
                if !i.is_multiple_of(10) {
                    if let Ok(mut slowest) = slowest.lock() {
                        *slowest = (*slowest).max(took);
                    }
                }
            }
        }
    };
    let outages = app.state.redis.connection().outages();
    let chaos = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let killed = cluster.kill_master();
        if let Ok(mut at) = killed_at.lock() {
            *at = Some(Instant::now());
        }
        // While the cluster fails over, `/health/cache` still lists its masters, the dead
        // one down (the list was empty whenever the breaker was open).
        tokio::time::sleep(Duration::from_millis(700)).await;
        let stats: Value = app.cache_stats().await;
        let masters = stats["cluster"]["masters"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(
            masters.iter().any(|m| m["status"] == "down")
                && masters.iter().any(|m| m["status"] == "up"),
            "{stats}"
        );
        // Off the runtime's threads, so the load keeps running (and is timed) meanwhile.
        let waiting = cluster.clone();
        let took = tokio::task::spawn_blocking(move || waiting.wait_for_failover(killed))
            .await
            .expect("failover wait");
        eprintln!("failover took {took:?}");
        tokio::time::sleep(Duration::from_secs(2)).await;
        stop.store(true, Ordering::SeqCst);
    };
    tokio::join!(chaos, futures::future::join_all((0..8).map(worker)));
    let total = requests.load(Ordering::SeqCst);
    eprintln!(
        "{total} requests, {} misses after the kill, slowest read {:?}",
        misses_after_kill.load(Ordering::SeqCst),
        slowest.lock().map(|s| *s).unwrap_or_default()
    );
    assert!(total > 100, "the load ran ({total})");
    // The failover takes seconds; a request bounded by the command time-out (250 ms) plus
    // its handler never comes near that.
    let slowest_read = slowest.lock().map(|s| *s).unwrap_or_default();
    assert!(
        slowest_read < Duration::from_secs(2),
        "a read waited on the failover: {slowest_read:?}"
    );
    assert_eq!(failed.load(Ordering::SeqCst), 0, "no request failed");
    // One outage, lost once and back once: the dead master's slots count as unserved from
    // the moment its link drops, not only once the cluster flags it (before, the breaker
    // closed and opened again every half second until the failover).
    assert_eq!(
        app.state.redis.connection().outages(),
        outages + 1,
        "the breaker flapped during the failover"
    );

    // Caching resumes by itself on every organization, whatever slot it lives in.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut hit: HashSet<usize> = HashSet::new();
    while hit.len() < orgs.len() {
        assert!(Instant::now() < deadline, "caching never resumed: {hit:?}");
        for (i, org) in orgs.iter().enumerate() {
            let response = app.caller(&org.token).get("/items").await;
            assert_eq!(response.status, StatusCode::OK);
            if response.header("x-cache") == "HIT" {
                hit.insert(i);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// L1 invalidations travel over the cluster's pub/sub as over a single server's: a write
/// on one instance is published, heard by the other, and its L1 drops the entry at once
/// (until this was tested, the message was pipelined with a keyed command, which a cluster
/// refuses, and every L1 lagged its whole bound).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn l1_invalidations_reach_the_other_instance_on_a_cluster() {
    let cluster = RedisCluster::start();
    let app = spawn_on(&cluster, &[]).await;
    let other = second_on(&cluster, &app).await;
    let token = app.token("l1-cluster@example.com").await;
    let api = app.caller(&token);
    let rate = api
        .create("/tax-rates", json!({"name": "v0", "rateBps": 100}))
        .await;
    let path = format!("/tax-rates/{}", id(&rate));
    for i in 1..=5 {
        // The reader holds the list in L1 (which it only does once subscribed).
        let deadline = Instant::now() + Duration::from_secs(10);
        while api.get("/tax-rates").await.header("x-cache-tier") != "L1" {
            assert!(Instant::now() < deadline, "never an L1 hit");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let name = format!("v{i}");
        let renamed = api
            .at(&other.address)
            .patch(&path, json!({"name": name}))
            .await;
        assert_eq!(renamed.status, StatusCode::OK);
        // Heard long before the 1 s bound would have let the entry expire by itself.
        let deadline = Instant::now() + Duration::from_millis(500);
        loop {
            let list = api.get("/tax-rates").await.json();
            if list["data"][0]["name"] == json!(name) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "write {i} not heard within 500 ms"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let reader: Value = app.cache_stats().await;
    assert!(
        reader["invalidationsReceived"].as_u64() >= Some(5),
        "{reader}"
    );
    let writer: Value = app.cache_stats_at(&other.address).await;
    assert!(
        writer["invalidationsPublished"].as_u64() >= Some(5),
        "{writer}"
    );
}

/// `CLUSTER INFO`'s `cluster_state` as the node on `port` sees it.
fn cluster_state(port: u16) -> String {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).expect("client");
    let info: String = redis::cmd("CLUSTER")
        .arg("INFO")
        .query(&mut client.get_connection().expect("connection"))
        .expect("cluster info");
    info.lines()
        .find_map(|l| l.trim().strip_prefix("cluster_state:"))
        .unwrap_or_default()
        .to_string()
}

/// A master can report `cluster_state:fail` while the other masters report `ok` (a probe
/// got there with stale slot-migration marks: the master refused its own slots). Redis then
/// stays down, steadily, until that master is whole again: asking one node at random, as
/// the health probe did, flipped the state with the node asked, twice a second, each flip
/// flushing the in-process tier and logging a line.
#[tokio::test]
async fn one_master_reporting_the_cluster_failed_keeps_redis_down_without_flapping() {
    let cluster = RedisCluster::start();
    let app = spawn_on(&cluster, &[]).await;
    let master = cluster.masters()[0];
    let client = redis::Client::open(format!("redis://127.0.0.1:{master}")).expect("client");
    let mut conn = client.get_connection().expect("connection");
    let nodes: String = redis::cmd("CLUSTER")
        .arg("NODES")
        .query(&mut conn)
        .expect("cluster nodes");
    let own = nodes
        .lines()
        .find(|l| l.contains("myself"))
        .and_then(|l| l.split_whitespace().nth(8))
        .and_then(|range| range.split('-').next())
        .and_then(|first| first.parse::<u16>().ok())
        .expect("a slot of the master");
    // The master gives up one of its slots: it sees that slot unserved and reports `fail`;
    // the others still map the slot to it and report `ok`.
    let () = redis::cmd("CLUSTER")
        .arg("DELSLOTS")
        .arg(own)
        .query(&mut conn)
        .expect("delslots");
    let deadline = Instant::now() + Duration::from_secs(10);
    while cluster_state(master) != "fail" {
        assert!(Instant::now() < deadline, "the master never reported fail");
        std::thread::sleep(Duration::from_millis(50));
    }
    let others: Vec<String> = cluster.masters()[1..]
        .iter()
        .map(|p| cluster_state(*p))
        .collect();
    assert!(others.iter().all(|s| s == "ok"), "{others:?}");

    let redis = &app.state.redis;
    let deadline = Instant::now() + Duration::from_secs(10);
    while redis.is_connected() {
        assert!(Instant::now() < deadline, "Redis never counted down");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let outages = redis.connection().outages();
    // Several probe periods: down on every look.
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!redis.is_connected(), "Redis counted up again");
    }
    assert_eq!(redis.connection().outages(), outages);

    // The slot back: up again.
    let () = redis::cmd("CLUSTER")
        .arg("ADDSLOTS")
        .arg(own)
        .query(&mut conn)
        .expect("addslots");
    wait_until_up(&app).await;
}

/// A planned `CLUSTER FAILOVER` (a replica takes over its master's slots, nothing lost)
/// under reads and writes: Redis was never down, so no instance may count an outage.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_planned_failover_under_load_is_not_an_outage() {
    let cluster = RedisCluster::start();
    let app = spawn_on(&cluster, &[]).await;
    let mut orgs = Vec::new();
    for n in 0..6 {
        orgs.push(org(&app, &format!("planned{n}@example.com")).await);
    }
    let stop = AtomicBool::new(false);
    let load = |o: &Org| {
        let (app, stop) = (&app, &stop);
        let (token, item) = (o.token.clone(), o.item.clone());
        async move {
            let api = app.caller(&token);
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let read = api.get(&format!("/items/{item}")).await;
                assert_eq!(read.status, StatusCode::OK);
                let write = api
                    .patch(&format!("/items/{item}"), json!({"priceCents": 100 + n}))
                    .await;
                assert_eq!(write.status, StatusCode::OK);
            }
        }
    };
    let failover = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let replica = cluster.replicas()[0];
        let client = redis::Client::open(format!("redis://127.0.0.1:{replica}")).expect("client");
        let mut conn = client.get_connection().expect("connection");
        let () = redis::cmd("CLUSTER")
            .arg("FAILOVER")
            .query(&mut conn)
            .expect("cluster failover");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !cluster.masters().contains(&replica) {
            assert!(Instant::now() < deadline, "the replica never took over");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        stop.store(true, Ordering::SeqCst);
    };
    futures::future::join(failover, futures::future::join_all(orgs.iter().map(load))).await;
    assert_eq!(
        app.state.redis.connection().outages(),
        0,
        "a planned failover counted as an outage"
    );
}
