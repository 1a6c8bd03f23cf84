//! The invalidation outbox over HTTP with two server processes: a write whose writer cannot
//! reach Redis, or dies right after its commit, still reaches every other instance's cache
//! within about a second.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};

use crate::helpers::{spawn_app, until_seen, ServerProcess, TestApp};

/// The bound the outbox promises: its delay plus a poll, with room for a loaded machine.
const BOUND: Duration = Duration::from_millis(1500);

/// A TCP proxy to Redis whose link the test can cut: open connections are dropped and new
/// ones are closed at once, like a partition seen from one instance.
struct CuttableProxy {
    port: u16,
    cut: Arc<AtomicBool>,
    links: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl CuttableProxy {
    async fn start(target: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let cut = Arc::new(AtomicBool::new(false));
        let links: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let (cut_flag, registry) = (cut.clone(), links.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if cut_flag.load(Ordering::SeqCst) {
                    continue; // dropped: the connection closes at once
                }
                let link = tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(("127.0.0.1", target)).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                if let Ok(mut links) = registry.lock() {
                    links.push(link.abort_handle());
                }
            }
        });
        Self { port, cut, links }
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        if let Ok(mut links) = self.links.lock() {
            for link in links.drain(..) {
                link.abort();
            }
        }
    }
}

struct Fixture {
    token: String,
    item: String,
}

async fn fixture(app: &TestApp) -> Fixture {
    let token = app.token("outbox@example.com").await;
    let item = app
        .caller(&token)
        .create(
            "/items",
            json!({"name": "Hammer", "sku": "H-1", "priceCents": 100}),
        )
        .await;
    Fixture {
        token,
        item: item["id"].as_str().expect("id").to_string(),
    }
}

/// The price the reader instance serves for the item, and its `X-Cache`.
async fn price_on(app: &TestApp, f: &Fixture) -> (i64, String) {
    let response = app
        .caller(&f.token)
        .get(&format!("/items/{}", f.item))
        .await;
    assert_eq!(response.status, StatusCode::OK);
    let cache = response.header("x-cache");
    let body = response.json();
    (body["priceCents"].as_i64().expect("price"), cache)
}

/// Caches the item on the reader, checking that it is a hit.
async fn cache_on_reader(app: &TestApp, f: &Fixture) {
    price_on(app, f).await;
    let (price, cache) = price_on(app, f).await;
    assert_eq!((price, cache.as_str()), (100, "HIT"));
}

async fn shows_within_bound(app: &TestApp, f: &Fixture, price: i64, since: Instant) -> Duration {
    let read = || async { price_on(app, f).await.0 };
    until_seen(price, since, BOUND * 10, Duration::from_millis(20), read).await
}

/// Until `writer` says its Redis is down.
async fn until_redis_down_on(reader: &TestApp, writer: &ServerProcess) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let health = reader
            .anonymous()
            .at(&writer.address)
            .get("/health")
            .await
            .json();
        if health["services"]["redis"]["status"] == "down" {
            return;
        }
        assert!(Instant::now() < deadline, "the writer never saw Redis go");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Contract §5: on an L1 route another instance serves older data for at most
/// `CACHE_L1_MAX_STALE_MS`, also when the writer's invalidation never reaches Redis. The
/// outbox applied such a write 250–500 ms after it, whatever the L1 bound: at 300 ms a
/// probe saw 7 of 15 writes served stale for longer (up to 485 ms). Now the outbox's pace
/// follows the bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_l1_route_keeps_its_bound_when_the_writer_is_cut_off_from_redis() {
    const L1_BOUND: &str = "400";
    let reader = crate::helpers::spawn_app_with(&[("CACHE_L1_MAX_STALE_MS", L1_BOUND)]).await;
    let proxy = CuttableProxy::start(reader.redis.port()).await;
    let redis_via_proxy = format!("redis://127.0.0.1:{}", proxy.port);
    let writer = ServerProcess::beside_with(
        &reader,
        &[
            ("REDIS_URL", redis_via_proxy.as_str()),
            ("CACHE_L1_MAX_STALE_MS", L1_BOUND),
        ],
    )
    .await;
    let token = reader.token("l1-outbox@example.com").await;
    let rate = reader
        .caller(&token)
        .create("/tax-rates", json!({"name": "VAT", "rateBps": 100}))
        .await;
    let rate = rate["id"].as_str().expect("id").to_string();
    let served = || async {
        let response = reader.caller(&token).get("/tax-rates").await;
        let tier = response.header("x-cache-tier");
        let body = response.json();
        (body["data"][0]["rateBps"].as_i64().expect("rate"), tier)
    };
    served().await;
    served().await;
    assert_eq!(served().await, (100, "L1".to_string()), "served from L1");

    proxy.cut();
    until_redis_down_on(&reader, &writer).await;
    let mut worst = Duration::ZERO;
    for bps in 101..=106 {
        reader
            .caller(&token)
            .at(&writer.address)
            .patch(&format!("/tax-rates/{rate}"), json!({"rateBps": bps}))
            .await
            .expect(StatusCode::OK);
        let written = Instant::now();
        let read = || async { served().await.0 };
        let lag = until_seen(bps, written, BOUND * 10, Duration::from_millis(10), read).await;
        worst = worst.max(lag);
    }
    eprintln!("partitioned writer, L1 route: stale for at most {worst:?}");
    assert!(worst <= Duration::from_millis(400), "stale for {worst:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_by_an_instance_cut_off_from_redis_reaches_the_others_within_the_bound() {
    let reader = spawn_app().await;
    let proxy = CuttableProxy::start(reader.redis.port()).await;
    let redis_via_proxy = format!("redis://127.0.0.1:{}", proxy.port);
    let writer =
        ServerProcess::beside_with(&reader, &[("REDIS_URL", redis_via_proxy.as_str())]).await;
    let f = fixture(&reader).await;
    cache_on_reader(&reader, &f).await;

    proxy.cut();
    until_redis_down_on(&reader, &writer).await;
    reader
        .caller(&f.token)
        .at(&writer.address)
        .patch(&format!("/items/{}", f.item), json!({"priceCents": 200}))
        .await
        .expect(StatusCode::OK);
    let written = Instant::now();
    let lag = shows_within_bound(&reader, &f, 200, written).await;
    eprintln!("partitioned writer: the reader served the new price {lag:?} after the write");
    assert!(lag <= BOUND, "stale for {lag:?}");
}

/// PATCHes the item's price through a writer started with `IMS_FAULT_ABORT_AFTER_COMMIT`:
/// it commits, then dies before telling Redis, so no response comes back. Returns when.
async fn price_through_dying_writer(
    reader: &TestApp,
    writer: &ServerProcess,
    f: &Fixture,
    price: i64,
) -> Instant {
    let patched = reader
        .client
        .patch(format!("{}/items/{}", writer.address, f.item))
        .bearer_auth(&f.token)
        .json(&json!({"priceCents": price}))
        .send()
        .await;
    let died = Instant::now();
    assert!(patched.is_err(), "the writer should have died: {patched:?}");
    died
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_whose_writer_dies_after_committing_reaches_the_others_within_the_bound() {
    let reader = spawn_app().await;
    let writer =
        ServerProcess::beside_with(&reader, &[("IMS_FAULT_ABORT_AFTER_COMMIT", "1")]).await;
    let f = fixture(&reader).await;
    cache_on_reader(&reader, &f).await;

    let died = price_through_dying_writer(&reader, &writer, &f, 300).await;
    let committed = reader
        .caller(&f.token)
        .with(&[("Cache-Control", "no-cache")])
        .get(&format!("/items/{}", f.item))
        .await
        .expect(StatusCode::OK);
    assert_eq!(committed["priceCents"], 300, "the write committed");
    let lag = shows_within_bound(&reader, &f, 300, died).await;
    eprintln!("dead writer: the reader served the new price {lag:?} after the crash");
    assert!(lag <= BOUND, "stale for {lag:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_a_cluster_a_write_whose_writer_dies_after_committing_reaches_the_others() {
    let cluster = ims_testkit::RedisCluster::start();
    let seeds = cluster.seeds();
    let reader = crate::helpers::spawn_app_with(&[("REDIS_CLUSTER_NODES", seeds.as_str())]).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !reader.state.redis.is_connected() {
        assert!(Instant::now() < deadline, "the cluster never came up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let writer = ServerProcess::beside_with(
        &reader,
        &[
            ("REDIS_CLUSTER_NODES", seeds.as_str()),
            ("IMS_FAULT_ABORT_AFTER_COMMIT", "1"),
        ],
    )
    .await;
    let f = fixture(&reader).await;
    cache_on_reader(&reader, &f).await;
    let died = price_through_dying_writer(&reader, &writer, &f, 400).await;
    let lag = shows_within_bound(&reader, &f, 400, died).await;
    eprintln!("dead writer on a cluster: new price served {lag:?} after the crash");
    assert!(lag <= BOUND, "stale for {lag:?}");
}

/// A write refused by the database (a duplicate SKU) rolls back with its record: on SQLite
/// write and record go to the engine as one script, which stops inside its transaction on
/// the failing statement; the connection must not go back to the pool still inside it.
/// Later writes on every pooled connection commit and are seen by others.
#[tokio::test]
async fn a_refused_write_leaves_no_transaction_open() {
    let app = spawn_app().await;
    let f = fixture(&app).await;
    let api = app.caller(&f.token);
    api.create(
        "/items",
        json!({"name": "Saw", "sku": "S-1", "priceCents": 100}),
    )
    .await;
    let path = format!("/items/{}", f.item);
    for _ in 0..12 {
        let refused = api.patch(&path, json!({"sku": "S-1"})).await;
        assert_eq!(refused.status, StatusCode::CONFLICT);
    }
    for price in 200..220 {
        let written = api.patch(&path, json!({"priceCents": price})).await;
        assert_eq!(written.status, StatusCode::OK, "price {price}");
        let read = api.get(&path).await;
        let body = read.json();
        assert_eq!(body["priceCents"], price);
        assert_eq!(body["sku"], "H-1");
    }
}

/// Every instance dies with an invalidation left undone (its writer died after committing,
/// and nobody else polls): an instance started afterwards applies it before it serves, so
/// its very first read shows the write. It served the old entry from Redis until its first
/// poll before (probe 13: nine reads, 3.2 s after the write's answer).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_instance_started_after_every_writer_died_applies_their_left_over_records_first() {
    // The in-process server only provides the database and Redis: it runs no outbox.
    let reader = crate::helpers::spawn_app_with(&[("CACHE_OUTBOX", "false")]).await;
    let writer =
        ServerProcess::beside_with(&reader, &[("IMS_FAULT_ABORT_AFTER_COMMIT", "1")]).await;
    let f = fixture(&reader).await;
    cache_on_reader(&reader, &f).await;
    price_through_dying_writer(&reader, &writer, &f, 500).await;
    drop(writer);
    // The old entry is still in Redis: nobody applied the record.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(price_on(&reader, &f).await, (100, "HIT".to_string()));

    let restarted = ServerProcess::beside(&reader).await;
    let (price, cache) = price_on_at(&reader, &f, &restarted.address).await;
    assert_eq!(
        price, 500,
        "the restarted instance served the old entry ({cache})"
    );
}

/// [`price_on`] at another server.
async fn price_on_at(app: &TestApp, f: &Fixture, base: &str) -> (i64, String) {
    let response = app
        .caller(&f.token)
        .at(base)
        .get(&format!("/items/{}", f.item))
        .await;
    assert_eq!(response.status, StatusCode::OK);
    let cache = response.header("x-cache");
    (
        response.json()["priceCents"].as_i64().expect("price"),
        cache,
    )
}
