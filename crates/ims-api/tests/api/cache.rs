//! The response cache as a client and an operator see it: headers, exact Redis keys,
//! invalidation per write, tenant isolation, races, and Redis going away.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use md5::{Digest, Md5};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{header, id, org, spawn_app, spawn_app_with, Org, TestApp};

/// The key contract §5 promises, computed here independently of the server.
fn key(org_id: &str, prefix: &str, path: &str, sorted_query: &str) -> String {
    let hash = hex::encode(Md5::digest(sorted_query.as_bytes()));
    format!("ims:cache:{org_id}:{prefix}:GET:{path}:{hash}")
}

fn exists(app: &TestApp, key: &str) -> bool {
    let mut conn = app.redis_conn();
    redis::cmd("EXISTS")
        .arg(key)
        .query::<i64>(&mut conn)
        .expect("exists")
        == 1
}

#[tokio::test]
async fn miss_then_hit_with_ttl_etag_and_bypass_at_the_exact_key() {
    let app = spawn_app().await;
    let org = org(&app, "cache@example.com").await;
    let api = app.caller(&org.token);
    let expected_key = key(&org.org_id, "items:list", "/items", "");
    assert!(!exists(&app, &expected_key));

    let first = api.get("/items").await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.header("x-cache"), "MISS");
    let ttl: u64 = first.header("x-cache-ttl").parse().expect("ttl");
    assert!(
        (57..=60).contains(&ttl),
        "jittered TTL within 5 % of 60: {ttl}"
    );
    let etag = first.header("etag");
    assert!(etag.starts_with('"') && etag.len() == 34, "{etag}");
    let first_body = first.text;
    assert!(exists(&app, &expected_key), "stored at the contract's key");
    let mut conn = app.redis_conn();
    let pttl: i64 = redis::cmd("PTTL")
        .arg(&expected_key)
        .query(&mut conn)
        .expect("pttl");
    // Redis keeps it CACHE_GRACE (3600 s by default) longer, for stale-if-error; its
    // freshness is the route's TTL (X-Cache-TTL above, and the hit below).
    assert!(pttl > 3_656_000 && pttl <= 3_660_000, "{pttl}");

    let second = api.get("/items").await;
    assert_eq!(second.header("x-cache"), "HIT");
    let left: u64 = second.header("x-cache-ttl").parse().expect("ttl");
    assert!(
        left <= ttl && left >= ttl - 2,
        "real remaining time: {left} vs {ttl}"
    );
    assert_eq!(second.header("etag"), etag);
    assert_eq!(second.header("content-type"), "application/json");
    assert_eq!(second.text, first_body);

    // A client that has it gets 304 without a body.
    let revalidate = api.with(&[("if-none-match", &etag)]).get("/items").await;
    assert_eq!(revalidate.status, StatusCode::NOT_MODIFIED);
    assert_eq!(revalidate.header("x-cache"), "HIT");
    assert!(revalidate.text.is_empty());

    // no-cache: the handler runs, nothing is read or written.
    let detail_key = key(
        &org.org_id,
        "items:detail",
        &format!("/items/{}", org.item),
        "",
    );
    let bypass = api
        .with(&[("cache-control", "no-cache")])
        .get(&format!("/items/{}", org.item))
        .await;
    assert_eq!(bypass.status, StatusCode::OK);
    assert_eq!(bypass.header("x-cache"), "BYPASS");
    assert!(!exists(&app, &detail_key));
    let stats: Value = app.cache_stats().await;
    assert_eq!(stats["hits"], 2);
    assert_eq!(stats["bypasses"], 1);
    assert!(stats["hitRate"].as_f64().expect("rate") > 0.0);
}

/// HTTP's finer points on a cached read: `If-None-Match` on several lines is one list (RFC
/// 9110 §5.3), and HTTP/1.0's `Pragma: no-cache` bypasses the cache like `Cache-Control:
/// no-cache` when that header is absent (RFC 9111 §5.4); present, `Cache-Control` decides.
#[tokio::test]
async fn if_none_match_lines_are_one_list_and_pragma_no_cache_bypasses() {
    let app = spawn_app().await;
    let org = org(&app, "finer-points@example.com").await;
    let api = app.caller(&org.token);
    let etag = api.get("/items").await.header("etag");
    for (second, status) in [
        (etag.as_str(), StatusCode::NOT_MODIFIED),
        ("*", StatusCode::NOT_MODIFIED),
        ("\"yyy\"", StatusCode::OK),
    ] {
        let answer = api
            .with(&[("if-none-match", "\"zzz\""), ("if-none-match", second)])
            .get("/items")
            .await;
        assert_eq!(answer.status, status, "{second}");
        assert_eq!(answer.header("x-cache"), "HIT");
    }
    let pragma = api.with(&[("pragma", "no-cache")]).get("/items").await;
    assert_eq!(pragma.header("x-cache"), "BYPASS");
    let decided = api
        .with(&[("pragma", "no-cache"), ("cache-control", "max-age=60")])
        .get("/items")
        .await;
    assert_eq!(decided.header("x-cache"), "HIT");
}

/// A HEAD is answered as its GET: from the cache, with the same headers and no body; its
/// miss stores the GET's entry; a client that has the entry gets a 304.
#[tokio::test]
async fn head_answers_from_the_cache_with_the_headers_of_its_get() {
    let app = spawn_app().await;
    let org = org(&app, "head@example.com").await;
    let api = app.caller(&org.token);
    let path = format!("/items/{}", org.item);
    let head = api.send(reqwest::Method::HEAD, &path, None).await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.header("x-cache"), "MISS");
    assert!(head.text.is_empty());
    let get = api.get(&path).await;
    assert_eq!(
        get.header("x-cache"),
        "HIT",
        "the HEAD stored the GET's entry"
    );
    let head = api.send(reqwest::Method::HEAD, &path, None).await;
    assert_eq!(head.header("x-cache"), "HIT");
    assert!(!head.header("x-cache-tier").is_empty());
    for name in ["etag", "cache-control", "content-type", "content-length"] {
        assert_eq!(head.header(name), get.header(name), "{name}");
    }
    assert!(head.text.is_empty());
    let etag = get.header("etag");
    let revalidate = api
        .with(&[("if-none-match", &etag)])
        .send(reqwest::Method::HEAD, &path, None)
        .await;
    assert_eq!(revalidate.status, StatusCode::NOT_MODIFIED);
    let stats: Value = app.cache_stats().await;
    assert_eq!(stats["hits"], 3);
    assert_eq!(stats["misses"], 1);
}

/// A write while Redis is full (`maxmemory` reached, `noeviction`) still drops the entries
/// it invalidates: the next read shows it. Redis refuses the epoch's INCR then, and the
/// entries used to stay, served stale for their whole TTL.
#[tokio::test]
async fn a_write_while_redis_is_full_leaves_no_stale_read() {
    let app = spawn_app().await;
    let org = org(&app, "full@example.com").await;
    let api = app.caller(&org.token);
    let path = format!("/items/{}", org.item);
    api.get(&path).await.expect(StatusCode::OK);
    assert_eq!(api.get(&path).await.header("x-cache"), "HIT");
    let list = api.get("/items").await.expect(StatusCode::OK);
    assert_eq!(list["data"][0]["priceCents"], 1500);
    let mut conn = app.redis_conn();
    let full = |conn: &mut redis::Connection, maxmemory: &str| {
        let () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("maxmemory-policy")
            .arg("noeviction")
            .arg("maxmemory")
            .arg(maxmemory)
            .query(conn)
            .expect("config set");
    };
    full(&mut conn, "1");
    let refused = redis::cmd("INCR").arg("probe").query::<i64>(&mut conn);
    assert!(refused.is_err(), "Redis is not full: {refused:?}");
    api.patch(&path, json!({"priceCents": 1999}))
        .await
        .expect(StatusCode::OK);
    let item = api.get(&path).await.expect(StatusCode::OK);
    assert_eq!(item["priceCents"], 1999, "{item}");
    let list = api.get("/items").await.expect(StatusCode::OK);
    assert_eq!(list["data"][0]["priceCents"], 1999, "{list}");
    full(&mut conn, "0");
}

/// A Redis that answers reads but refuses writes (`NOREPLICAS` here; a read-only replica
/// or a user without `EVALSHA` alike) cannot apply an invalidation. The entry was then
/// served stale until its TTL (a probe saw minutes of it); now the cache stops serving
/// until it can flush, and serves again once Redis takes writes.
#[tokio::test]
async fn a_redis_refusing_writes_serves_no_stale_entry() {
    let app = spawn_app().await;
    let org = org(&app, "replicas@example.com").await;
    let api = app.caller(&org.token);
    let path = format!("/items/{}", org.item);
    api.get(&path).await.expect(StatusCode::OK);
    assert_eq!(api.get(&path).await.header("x-cache"), "HIT");
    let mut conn = app.redis_conn();
    let replicas = |conn: &mut redis::Connection, n: &str| {
        let () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("min-replicas-to-write")
            .arg(n)
            .query(conn)
            .expect("config set");
    };
    replicas(&mut conn, "1");
    // A route with cluster-wide single flight: its lock's script is refused too, and the
    // miss waited 15 s for a holder that could never be (probe 22). It runs alone.
    api.get("/dashboard/kpis").await.expect(StatusCode::OK);
    assert_eq!(app.cache_stats().await["lockWaits"], 0);
    api.patch(&path, json!({"priceCents": 2999}))
        .await
        .expect(StatusCode::OK);
    for _ in 0..3 {
        let read = api.get(&path).await;
        assert_ne!(read.header("x-cache"), "HIT");
        assert_eq!(read.expect(StatusCode::OK)["priceCents"], 2999);
    }
    // An operator sees why: Redis is up, the cache is not serving.
    let health = app.cache_stats().await;
    assert_eq!(
        (health["redis"].as_str(), health["serving"].as_bool()),
        (Some("up"), Some(false))
    );
    replicas(&mut conn, "0");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let read = api.get(&path).await;
        let hit = read.header("x-cache") == "HIT";
        assert_eq!(read.expect(StatusCode::OK)["priceCents"], 2999);
        if hit {
            assert_eq!(app.cache_stats().await["serving"], true);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the cache never served again"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// The record of organizations that wrote lately (for warm-ups) keeps a day and expires: it
/// had no TTL and, with warm-ups off, kept every organization that ever wrote. With
/// warm-ups off nothing is recorded at all (it cost every write three Redis commands).
#[tokio::test]
async fn the_record_of_recent_writers_is_kept_for_warm_ups_only_trimmed_and_expiring() {
    let quiet = spawn_app().await;
    let writer = org(&quiet, "quiet@example.com").await;
    quiet
        .caller(&writer.token)
        .post("/tax-rates", json!({"name": "Reduced", "rateBps": 700}))
        .await
        .expect(StatusCode::CREATED);
    assert!(quiet.redis_keys("ims:cacheactive").is_empty());

    let app = spawn_app_with(&[("CACHE_WARM_INTERVAL", "3600")]).await;
    let org = org(&app, "active@example.com").await;
    let mut conn = app.redis_conn();
    let () = redis::cmd("ZADD")
        .arg("ims:cacheactive")
        .arg(1000)
        .arg("an-organization-of-1970")
        .query(&mut conn)
        .expect("zadd");
    app.caller(&org.token)
        .post("/tax-rates", json!({"name": "Reduced", "rateBps": 700}))
        .await
        .expect(StatusCode::CREATED);
    let members: Vec<String> = redis::cmd("ZRANGE")
        .arg("ims:cacheactive")
        .arg(0)
        .arg(-1)
        .query(&mut conn)
        .expect("zrange");
    assert_eq!(members, [org.org_id.as_str()]);
    let ttl: i64 = redis::cmd("TTL")
        .arg("ims:cacheactive")
        .query(&mut conn)
        .expect("ttl");
    assert!((86_000..=86_400).contains(&ttl), "{ttl}");
}

#[tokio::test]
async fn the_query_hash_ignores_parameter_order() {
    let app = spawn_app().await;
    let org = org(&app, "order@example.com").await;
    let api = app.caller(&org.token);
    let a = api.get("/items?limit=5&page=1&sort=name").await;
    assert_eq!(a.header("x-cache"), "MISS");
    let b = api.get("/items?sort=name&page=1&limit=5").await;
    assert_eq!(b.header("x-cache"), "HIT");
    assert!(exists(
        &app,
        &key(
            &org.org_id,
            "items:list",
            "/items",
            "limit=5&page=1&sort=name"
        )
    ));
    let c = api.get("/items?limit=6&page=1&sort=name").await;
    assert_eq!(c.header("x-cache"), "MISS");
}

#[tokio::test]
async fn only_authenticated_200_gets_are_stored() {
    let app = spawn_app().await;
    let org = org(&app, "only200@example.com").await;
    let unknown = "/items/00000000-0000-0000-0000-000000000000";
    for _ in 0..2 {
        let response = app.caller(&org.token).get(unknown).await;
        assert_eq!(response.status, StatusCode::NOT_FOUND);
        assert_eq!(response.header("x-cache"), "MISS");
        assert_eq!(response.header("x-cache-ttl"), "0");
    }
    let bad = app.caller(&org.token).get("/items?limit=1000").await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    let anonymous = app.anonymous().get("/items").await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    let forged = app.caller("not.a.token").get("/items").await;
    assert_eq!(forged.status, StatusCode::UNAUTHORIZED);
    assert!(
        app.redis_keys("ims:cache:*").is_empty(),
        "{:?}",
        app.redis_keys("ims:cache:*")
    );
    // Writes are never cached, and a write answers without cache headers.
    let created = app
        .caller(&org.token)
        .post("/categories", json!({"name": "New"}))
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    assert!(created.headers.get("x-cache").is_none());
    assert!(app.redis_keys("ims:cache:*").is_empty());
}

#[tokio::test]
async fn tenants_never_read_write_or_delete_each_others_entries() {
    let app = spawn_app().await;
    let a = org(&app, "tenant-a@example.com").await;
    let b = org(&app, "tenant-b@example.com").await;
    let bob = app.caller(&b.token);
    let adversarial = [
        "/items?search=*",
        "/items?search=%3A%2A%3F%5B%7B",
        "/items?search=a:b&sort=name",
        "/items?search=%7Bx%7D%5Bx%5D&sort=-name",
        "/items?search=?",
    ];
    for path in adversarial.iter().chain(["/items"].iter()) {
        for org in [&a, &b] {
            let response = app.caller(&org.token).get(path).await;
            assert_eq!(response.status, StatusCode::OK, "{path}");
            assert_eq!(
                response.header("x-cache"),
                "MISS",
                "{path}: never another tenant's entry"
            );
        }
    }
    let a_keys = app.redis_keys(&format!("ims:cache:{}:*", a.org_id));
    let b_keys = app.redis_keys(&format!("ims:cache:{}:*", b.org_id));
    assert_eq!(a_keys.len(), adversarial.len() + 1);
    assert_eq!(b_keys.len(), adversarial.len() + 1);

    // A's write removes A's item entries only.
    let response = app
        .caller(&a.token)
        .patch(&format!("/items/{}", a.item), json!({"name": "Mallet"}))
        .await;
    assert_eq!(response.status, StatusCode::OK);
    // All gone but the patched item's detail, written through with the change.
    assert_eq!(
        app.redis_keys(&format!("ims:cache:{}:*", a.org_id)),
        vec![key(
            &a.org_id,
            "items:detail",
            &format!("/items/{}", a.item),
            ""
        )]
    );
    assert_eq!(
        app.redis_keys(&format!("ims:cache:{}:*", b.org_id)).len(),
        b_keys.len()
    );
    let b_again = bob.get("/items").await;
    assert_eq!(b_again.header("x-cache"), "HIT");
    let body = b_again.json();
    assert_eq!(body["data"][0]["name"], "Hammer", "B never sees A's rename");

    // Ids containing glob and separator characters are just unknown ids (404, not cached).
    for id in ["*", "a:b", "%7B%7D", "%5B"] {
        let response = bob.get(&format!("/items/{id}")).await;
        assert_eq!(response.status, StatusCode::NOT_FOUND);
    }
    assert_eq!(
        app.redis_keys(&format!("ims:cache:{}:*", b.org_id)).len(),
        b_keys.len()
    );
}

/// The cached reads every mapping row is checked against: (name, path, key prefix).
fn reads(org: &Org) -> Vec<(&'static str, String, &'static str)> {
    vec![
        ("items", "/items".into(), "items:list"),
        ("items", format!("/items/{}", org.item), "items:detail"),
        ("stock", "/inventory/stock-levels".into(), "stock:levels"),
        ("dashboard", "/dashboard/kpis".into(), "dashboard:kpis"),
        (
            "dashboard",
            "/dashboard/inventory-status".into(),
            "dashboard:inventory",
        ),
        (
            "reports",
            "/reports/sales-by-item".into(),
            "reports:sales-by-item",
        ),
        ("categories", "/categories".into(), "categories:list"),
        ("contacts", "/contacts".into(), "contacts:list"),
        ("tax", "/tax-rates".into(), "tax:rates"),
    ]
}

async fn prime(app: &TestApp, org: &Org) {
    for (_, path, _) in reads(org) {
        let response = app.caller(&org.token).get(&path).await;
        assert_eq!(response.status, StatusCode::OK, "{path}");
    }
    assert_eq!(
        app.redis_keys(&format!("ims:cache:{}:*", org.org_id)).len(),
        reads(org).len()
    );
}

/// After `write`, exactly the reads of `groups` must be gone (and answer MISS).
async fn check_row(app: &TestApp, org: &Org, name: &str, groups: &[&str]) {
    for (group, path, prefix) in reads(org) {
        // A row names groups (`items`: every item read) or key prefixes (`items:list`).
        let gone = groups.contains(&group) || groups.contains(&prefix);
        let cached = exists(app, &key(&org.org_id, prefix, &path, ""));
        assert_eq!(
            cached,
            !gone,
            "{name}: {prefix} should be {}",
            if gone { "invalidated" } else { "kept" }
        );
    }
}

#[tokio::test]
async fn every_write_invalidates_its_groups_and_nothing_else() {
    // This test clears Redis behind the cache's back between rows; the in-process tier
    // (which serves for up to its bound after such a change) is off so every read reaches
    // Redis, whose mapping is what is checked here.
    let app = spawn_app_with(&[("CACHE_L1_MAX_STALE_MS", "0")]).await;
    let org = org(&app, "mapping@example.com").await;
    let t = org.token.clone();
    let api = app.caller(&t);
    // Stock to sell, and an order to fulfil and invoice.
    let stock = json!({"itemId": org.item, "warehouseId": org.warehouse, "quantityDelta": 50, "reason": "initial"});
    assert_eq!(
        api.post("/inventory/adjustments", stock).await.status,
        StatusCode::CREATED
    );
    let order = id(&api.create("/sales-orders", json!({"customerId": org.customer, "warehouseId": org.warehouse, "lines": [{"itemId": org.item, "quantity": 1}]})).await);
    let purchase = id(&api.create("/purchase-orders", json!({"vendorId": org.vendor, "warehouseId": org.warehouse, "lines": [{"itemId": org.item, "quantity": 2, "unitCostCents": 500}]})).await);

    let all = [
        "items",
        "stock",
        "dashboard",
        "reports",
        "categories",
        "contacts",
        "tax",
    ];
    let _ = all;
    type Case = (&'static str, Method, String, Value, &'static [&'static str]);
    let cases: Vec<Case> = vec![
        (
            "create item",
            Method::POST,
            "/items".into(),
            json!({"name": "Saw", "sku": "S-1", "priceCents": 900}),
            // The lists, not the existing items' details.
            &["items:list", "stock", "dashboard", "reports"],
        ),
        (
            "update item",
            Method::PATCH,
            format!("/items/{}", org.item),
            json!({"priceCents": 1600}),
            &["items", "stock", "dashboard", "reports"],
        ),
        (
            "create contact",
            Method::POST,
            "/contacts".into(),
            json!({"type": "customer", "name": "Bob"}),
            &["contacts", "dashboard", "reports"],
        ),
        (
            "update contact",
            Method::PATCH,
            format!("/contacts/{}", org.customer),
            json!({"name": "Ann B"}),
            &["contacts", "dashboard", "reports"],
        ),
        (
            "create sales order",
            Method::POST,
            "/sales-orders".into(),
            json!({"customerId": org.customer, "warehouseId": org.warehouse, "lines": [{"itemId": org.item, "quantity": 1}]}),
            &["dashboard", "reports"],
        ),
        (
            "update sales order",
            Method::PATCH,
            format!("/sales-orders/{order}"),
            json!({"notes": "rush"}),
            &["dashboard", "reports"],
        ),
        (
            "fulfil sales order",
            Method::POST,
            format!("/sales-orders/{order}/fulfil"),
            json!({}),
            &["stock", "items", "dashboard", "reports"],
        ),
        (
            "create invoice",
            Method::POST,
            "/invoices".into(),
            json!({"salesOrderId": order}),
            &["dashboard", "reports"],
        ),
        (
            "create purchase order",
            Method::POST,
            "/purchase-orders".into(),
            json!({"vendorId": org.vendor, "warehouseId": org.warehouse, "lines": [{"itemId": org.item, "quantity": 1, "unitCostCents": 1}]}),
            &["dashboard", "reports"],
        ),
        (
            "update purchase order",
            Method::PATCH,
            format!("/purchase-orders/{purchase}"),
            json!({"notes": "soon"}),
            &["dashboard", "reports"],
        ),
        (
            "receive purchase order",
            Method::POST,
            format!("/purchase-orders/{purchase}/receive"),
            json!({}),
            &["stock", "items", "dashboard", "reports"],
        ),
        (
            "stock adjustment",
            Method::POST,
            "/inventory/adjustments".into(),
            json!({"itemId": org.item, "warehouseId": org.warehouse, "quantityDelta": -1, "reason": "damaged"}),
            &["stock", "items", "dashboard", "reports"],
        ),
        (
            "category change",
            Method::PATCH,
            format!("/categories/{}", org.category),
            json!({"name": "Hand tools"}),
            &["categories", "items"],
        ),
        (
            "tax rate change",
            Method::PATCH,
            format!("/tax-rates/{}", org.tax),
            json!({"rateBps": 2100}),
            &["tax"],
        ),
        (
            "warehouse change",
            Method::PATCH,
            format!("/warehouses/{}", org.warehouse),
            json!({"name": "Central"}),
            &["stock", "dashboard"],
        ),
    ];
    for (name, method, path, body, groups) in cases {
        prime(&app, &org).await;
        let response = api.send(method, &path, Some(body)).await;
        assert!(response.status.is_success(), "{name}: {}", response.status);
        if name == "update item" {
            // Write-through: the item's own detail entry was stored again, with the change
            // (the rest of `items` is gone, as checked below).
            let detail = key(&org.org_id, "items:detail", &path, "");
            assert!(exists(&app, &detail), "{name}: written through");
            let read = api.get(&path).await;
            assert_eq!(read.header("x-cache"), "HIT");
            assert_eq!(read.json()["priceCents"], 1600);
            let _: i64 = redis::cmd("DEL")
                .arg(&detail)
                .query(&mut app.redis_conn())
                .expect("del");
        }
        check_row(&app, &org, name, groups).await;
        // Clear the rest so the next row starts from a fully primed cache.
        api.patch(
            &format!("/categories/{}", org.category),
            json!({"name": "Tools"}),
        )
        .await;
        let mut conn = app.redis_conn();
        let keys = app.redis_keys("ims:cache:*");
        if !keys.is_empty() {
            let _: i64 = redis::cmd("DEL").arg(&keys).query(&mut conn).expect("del");
        }
    }

    // The transfer needs a second warehouse: stock and dashboard (and reports) change.
    let other = id(&api
        .create("/warehouses", json!({"name": "Side", "code": "S"}))
        .await);
    prime(&app, &org).await;
    let transfer = json!({"itemId": org.item, "fromWarehouseId": org.warehouse, "toWarehouseId": other, "quantity": 1});
    assert_eq!(
        api.post("/inventory/transfers", transfer).await.status,
        StatusCode::CREATED
    );
    check_row(&app, &org, "transfer", &["stock", "dashboard", "reports"]).await;

    // A failed write invalidates nothing.
    prime(&app, &org).await;
    let refused = api.post("/inventory/adjustments", json!({"itemId": org.item, "warehouseId": org.warehouse, "quantityDelta": -100000, "reason": "x"})).await;
    assert_eq!(refused.status, StatusCode::CONFLICT);
    check_row(&app, &org, "refused write", &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_misses_of_one_key_run_the_handler_once() {
    let app = spawn_app().await;
    let org = org(&app, "stampede@example.com").await;
    let before: Value = app.cache_stats().await;
    let api = app.caller(&org.token);
    let requests = (0..24).map(|_| api.get("/dashboard/kpis"));
    let responses = futures::future::join_all(requests).await;
    // Every hit says its tier and at most the TTL the miss stored the entry with: those that
    // waited for the one handler run said the route's nominal TTL (above the stored one by
    // its jitter) and no tier (a probe).
    let stored: u64 = responses
        .iter()
        .find(|r| r.header("x-cache") == "MISS")
        .expect("one miss")
        .header("x-cache-ttl")
        .parse()
        .expect("ttl");
    let mut bodies = std::collections::HashSet::new();
    for response in responses {
        assert_eq!(response.status, StatusCode::OK);
        if response.header("x-cache") == "HIT" {
            assert!(
                ["L1", "L2"].contains(&response.header("x-cache-tier").as_str()),
                "a hit without its tier"
            );
            let ttl: u64 = response.header("x-cache-ttl").parse().expect("ttl");
            assert!(
                ttl <= stored,
                "a hit says {ttl} s, the entry was stored for {stored} s"
            );
        }
        bodies.insert(response.text);
    }
    assert_eq!(bodies.len(), 1);
    let after: Value = app.cache_stats().await;
    let misses =
        after["misses"].as_u64().expect("misses") - before["misses"].as_u64().expect("misses");
    let hits = after["hits"].as_u64().expect("hits") - before["hits"].as_u64().expect("hits");
    assert_eq!(misses, 1, "one handler run for 24 concurrent requests");
    assert_eq!(hits, 23);
}

#[tokio::test]
async fn redis_down_is_a_plain_miss_and_caching_resumes_when_it_is_back() {
    let app = spawn_app().await;
    let org = org(&app, "down@example.com").await;
    let api = app.caller(&org.token);
    app.redis.stop();
    for _ in 0..3 {
        let started = Instant::now();
        let response = api.get("/items").await;
        assert_eq!(response.status, StatusCode::OK);
        assert_eq!(response.header("x-cache"), "MISS");
        assert!(started.elapsed() < Duration::from_secs(1));
    }
    // Writes still succeed (their invalidation is skipped).
    let response = api
        .patch(
            &format!("/items/{}", org.item),
            json!({"name": "Claw hammer"}),
        )
        .await;
    assert_eq!(response.status, StatusCode::OK);
    app.redis.restart();
    app.wait_for_redis(true).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let response = api.get("/items").await;
        if response.header("x-cache") == "HIT" {
            let body = response.json();
            assert_eq!(body["data"][0]["name"], "Claw hammer");
            break;
        }
        assert!(Instant::now() < deadline, "caching never resumed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn writes_during_a_partition_cannot_leave_stale_entries() {
    let app = spawn_app().await;
    let org = org(&app, "partition@example.com").await;
    let api = app.caller(&org.token);
    let path = format!("/items/{}", org.item);
    let cached = api.get(&path).await;
    assert_eq!(cached.header("x-cache"), "MISS");
    assert_eq!(api.get(&path).await.header("x-cache"), "HIT");

    // Redis stops answering but keeps its data, like a partition. Once the server has
    // noticed, a write cannot invalidate anything: no command is even sent.
    app.redis.pause();
    app.wait_for_redis(false).await;
    let response = api.patch(&path, json!({"name": "Sledgehammer"})).await;
    assert_eq!(response.status, StatusCode::OK);
    app.redis.resume();
    app.wait_for_redis(true).await;

    // The entry from before the write must never be served again.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let response = api.get(&path).await;
        let status = response.header("x-cache");
        let body = response.json();
        assert_eq!(
            body["name"], "Sledgehammer",
            "stale entry served ({status})"
        );
        if status == "HIT" {
            break;
        }
        assert!(Instant::now() < deadline, "caching never resumed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_read_started_after_a_write_returned_sees_older_data() {
    let app = spawn_app().await;
    let org = org(&app, "linear@example.com").await;
    let api = app.caller(&org.token);
    let writes_done = AtomicI64::new(0);
    let stale = AtomicI64::new(0);
    let reads_done = AtomicI64::new(0);
    let item_path = format!("/items/{}", org.item);
    let level_path = format!("/inventory/stock-levels?itemId={}", org.item);

    let writer = async {
        for i in 0..60 {
            let body = json!({"itemId": org.item, "warehouseId": org.warehouse, "quantityDelta": 1, "reason": "count"});
            let response = api.post("/inventory/adjustments", body).await;
            assert_eq!(response.status, StatusCode::CREATED);
            writes_done.fetch_add(1, Ordering::SeqCst);
            if i == 30 {
                // Redis dies in the middle of the run and comes back.
                app.redis.stop();
            }
            if i == 40 {
                app.redis.restart();
            }
        }
    };
    let reader = |path: String| {
        let (writes_done, stale, reads_done) = (&writes_done, &stale, &reads_done);
        async move {
            while writes_done.load(Ordering::SeqCst) < 60 {
                let floor = writes_done.load(Ordering::SeqCst);
                let response = api.get(&path).await;
                assert_eq!(response.status, StatusCode::OK);
                let body = response.json();
                let seen = if path.starts_with("/items/") {
                    body["stockOnHand"].as_i64().expect("stock")
                } else {
                    body["data"][0]["quantity"].as_i64().unwrap_or(0)
                };
                if seen < floor {
                    stale.fetch_add(1, Ordering::SeqCst);
                }
                reads_done.fetch_add(1, Ordering::SeqCst);
            }
        }
    };
    let readers = (0..6).map(|i| {
        reader(if i % 2 == 0 {
            item_path.clone()
        } else {
            level_path.clone()
        })
    });
    tokio::join!(writer, futures::future::join_all(readers));
    assert_eq!(
        stale.load(Ordering::SeqCst),
        0,
        "a read returned data older than a completed write"
    );
    assert!(
        reads_done.load(Ordering::SeqCst) > 60,
        "the readers actually raced the writer"
    );
}

#[tokio::test]
async fn cached_responses_are_private_and_large_ones_are_served_but_not_stored() {
    let app = spawn_app().await;
    let org = org(&app, "private@example.com").await;
    for expected in ["MISS", "HIT"] {
        let response = app.caller(&org.token).get("/items").await;
        assert_eq!(response.header("x-cache"), expected);
        // Per tenant: never for a shared cache; revalidate (ETag) before reuse.
        assert_eq!(response.header("cache-control"), "private, no-cache");
    }
    // CACHE_MAX_ENTRY_BYTES: the item list (well over 64 bytes) is served every time and
    // never stored.
    let small = spawn_app_with(&[("CACHE_MAX_ENTRY_BYTES", "64")]).await;
    let org = self::org(&small, "large@example.com").await;
    for _ in 0..3 {
        let response = small.caller(&org.token).get("/items").await;
        assert_eq!(response.status, StatusCode::OK);
        assert_eq!(response.header("x-cache"), "MISS");
        let body = response.json();
        assert_eq!(body["data"].as_array().expect("data").len(), 1);
    }
    assert!(small
        .redis_keys(&format!("ims:cache:{}:items:*", org.org_id))
        .is_empty());
}

/// Makes a stored entry look `age` old and past its freshness, as if its TTL had run out
/// (the entry's value carries `expires:stored` in ms on its fourth line, after its epochs,
/// content type and ETag).
fn expire_entry(app: &TestApp, pattern: &str, age: Duration) -> usize {
    let mut conn = app.redis_conn();
    let keys = app.redis_keys(pattern);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    for key in &keys {
        let raw: Vec<u8> = redis::cmd("GET").arg(key).query(&mut conn).expect("get");
        let mut lines = raw.splitn(5, |b| *b == b'\n');
        let (epochs, ty, tag, _stamp, rest) = (
            lines.next().expect("epochs"),
            lines.next().expect("type"),
            lines.next().expect("tag"),
            lines.next().expect("stamp"),
            lines.next().expect("rest"),
        );
        let stamp = format!("{}:{}", now - 1000, now - age.as_millis() as u64);
        let value = [epochs, ty, tag, stamp.as_bytes(), rest].join(&b'\n');
        let _: () = redis::cmd("SET")
            .arg(key)
            .arg(value)
            .arg("KEEPTTL")
            .query(&mut conn)
            .expect("set");
    }
    keys.len()
}

/// Takes the app's database away: on PostgreSQL it refuses new connections and its
/// backends are terminated; on SQLite the pool is closed.
async fn database_down(app: &TestApp) {
    if app.database_url.starts_with("postgres") {
        use sqlx::Connection;
        let admin = std::env::var("IMS_TEST_POSTGRES_URL").expect("admin url");
        let name = app
            .database_url
            .rsplit('/')
            .next()
            .and_then(|n| n.split('?').next())
            .expect("name")
            .to_string();
        let mut conn = sqlx::AnyConnection::connect(&admin).await.expect("admin");
        sqlx::query(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false"))
            .execute(&mut conn)
            .await
            .expect("refuse connections");
        sqlx::query(&format!(
            "SELECT pg_terminate_backend(pid)::text FROM pg_stat_activity WHERE datname = '{name}'"
        ))
        .fetch_all(&mut conn)
        .await
        .expect("terminate");
    } else {
        app.state.db.close().await;
    }
}

#[tokio::test]
async fn with_the_database_down_cached_routes_answer_stale_within_the_grace_period() {
    let app = spawn_app().await; // CACHE_GRACE defaults to 3600 s
    let kept = org(&app, "stale@example.com").await;
    let invalidated = org(&app, "fresh@example.com").await;
    for org in [&kept, &invalidated] {
        assert_eq!(
            app.caller(&org.token).get("/items").await.header("x-cache"),
            "MISS"
        );
    }
    let pattern = |org: &Org| format!("ims:cache:{}:items:list:*", org.org_id);
    assert_eq!(
        expire_entry(&app, &pattern(&kept), Duration::from_secs(90)),
        1
    );
    // An expired entry is a miss while the database answers: freshness is unchanged.
    let response = app.caller(&kept.token).get("/items").await;
    assert_eq!(response.header("x-cache"), "MISS");
    assert_eq!(
        expire_entry(&app, &pattern(&kept), Duration::from_secs(90)),
        1
    );
    // The other organization writes: its entry is invalidated (deleted), never stale.
    assert_eq!(
        expire_entry(&app, &pattern(&invalidated), Duration::from_secs(90)),
        1
    );
    app.caller(&invalidated.token)
        .create(
            "/items",
            json!({"name": "Saw", "sku": "S-1", "priceCents": 900}),
        )
        .await;

    database_down(&app).await;
    let started = Instant::now();
    let response = app.caller(&kept.token).get("/items").await;
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "noticed quickly"
    );
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(response.header("x-cache"), "STALE");
    let age: u64 = response.header("age").parse().expect("age");
    assert!((90..100).contains(&age), "{age}");
    let body = response.json();
    assert_eq!(body["data"][0]["name"], "Hammer");
    // Invalidated: the error, not stale data.
    let response = app.caller(&invalidated.token).get("/items").await;
    assert_eq!(response.status, StatusCode::SERVICE_UNAVAILABLE);
    // A route with nothing cached: the error too.
    let response = app.caller(&kept.token).get("/contacts").await;
    assert_eq!(response.status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn without_a_grace_period_the_error_is_passed_on() {
    let app = spawn_app_with(&[("CACHE_GRACE", "0")]).await;
    let org = org(&app, "nograce@example.com").await;
    let api = app.caller(&org.token);
    assert_eq!(api.get("/items").await.header("x-cache"), "MISS");
    let pattern = format!("ims:cache:{}:items:list:*", org.org_id);
    assert_eq!(expire_entry(&app, &pattern, Duration::from_secs(90)), 1);
    database_down(&app).await;
    let response = api.get("/items").await;
    assert_eq!(response.status, StatusCode::SERVICE_UNAVAILABLE);
    // Says when to try again (probe 24: clients retried at once).
    assert_eq!(response.header("retry-after"), "5");
}

#[tokio::test]
async fn an_item_update_writes_its_new_representation_through_to_its_detail_entry() {
    writes_through(spawn_app().await).await;
}

/// The in-process engine writes through as well (contract §5: "the same cache runs in
/// process memory"; the next read was a miss, found by a probe).
#[tokio::test]
async fn without_redis_an_item_update_writes_through_too() {
    writes_through(spawn_app_with(&[("REDIS_ENABLED", "false")]).await).await;
}

async fn writes_through(app: TestApp) {
    let org = org(&app, "through@example.com").await;
    let api = app.caller(&org.token);
    let path = format!("/items/{}", org.item);
    assert_eq!(api.get(&path).await.header("x-cache"), "MISS");
    for (method, body, price) in [
        (Method::PATCH, json!({"priceCents": 1700}), 1700),
        (
            Method::PUT,
            json!({"name": "Hammer", "sku": "H-1", "priceCents": 1800}),
            1800,
        ),
    ] {
        let response = api.send(method, &path, Some(body)).await;
        assert_eq!(response.status, StatusCode::OK);
        let written = response.json();
        // The next read is a hit that already shows the change, with the same body.
        let read = api.get(&path).await;
        assert_eq!(read.header("x-cache"), "HIT");
        let read = read.json();
        assert_eq!(read["priceCents"], price);
        assert_eq!(read, written);
    }
    // Lists were invalidated, not written through.
    assert_eq!(api.get("/items").await.header("x-cache"), "MISS");
    // A failed update writes nothing through.
    let refused = api.patch(&path, json!({"priceCents": -1})).await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    let read = api.get(&path).await.json();
    assert_eq!(read["priceCents"], 1800);
}

#[tokio::test]
async fn reports_answer_csv_when_asked_and_the_two_representations_are_cached_apart() {
    let app = spawn_app().await;
    let org = org(&app, "csv@example.com").await;
    let api = app.caller(&org.token);
    let stock = json!({"itemId": org.item, "warehouseId": org.warehouse, "quantityDelta": 5, "reason": "initial"});
    assert_eq!(
        api.post("/inventory/adjustments", stock.clone())
            .await
            .status,
        StatusCode::CREATED
    );
    let path = "/reports/inventory-valuation";
    let get = |accept: &'static str| async move {
        let accept = [("accept", accept)];
        api.with(&accept).get(path).await
    };
    let csv = get("text/csv").await;
    assert_eq!(csv.status, StatusCode::OK);
    assert!(csv.header("content-type").starts_with("text/csv"));
    assert_eq!(csv.header("vary"), "Accept");
    assert_eq!(csv.header("x-cache"), "MISS");
    let text = csv.text;
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "a header row and one item: {text}");
    assert!(
        lines[0].contains("itemId") && lines[0].contains("sku"),
        "{text}"
    );
    assert!(lines[1].contains("H-1"), "{text}");
    // JSON is another entry: a miss the first time, whatever was cached for CSV.
    let json = get("application/json").await;
    assert_eq!(json.header("x-cache"), "MISS");
    assert_eq!(json.header("vary"), "Accept");
    let body = json.json();
    assert_eq!(body["rows"].as_array().expect("rows").len(), 1);
    // Both are hits now, each with its own body; JSON ranked higher wins.
    let again = get("text/csv;q=0.5, application/json").await;
    assert_eq!(again.header("x-cache"), "HIT");
    assert!(again.header("content-type").starts_with("application/json"));
    let again = get("text/csv").await;
    assert_eq!(again.header("x-cache"), "HIT");
    assert_eq!(again.text, text);
    // A 304 says what it varies by, as the 200 did (RFC 9110 §15.4.5).
    let etag = again.header("etag");
    let revalidate = api
        .with(&[("accept", "text/csv"), ("if-none-match", &etag)])
        .get(path)
        .await;
    assert_eq!(revalidate.status, StatusCode::NOT_MODIFIED);
    assert_eq!(revalidate.header("vary"), "Accept");
    // A write that touches reports invalidates both.
    assert_eq!(
        api.post("/inventory/adjustments", stock).await.status,
        StatusCode::CREATED
    );
    for accept in ["text/csv", "application/json"] {
        let response = get(accept).await;
        assert_eq!(response.header("x-cache"), "MISS", "{accept}");
    }
}

#[tokio::test]
async fn updating_or_deleting_one_item_leaves_the_other_items_details_cached() {
    let app = spawn_app().await;
    let org = org(&app, "tags@example.com").await;
    let api = app.caller(&org.token);
    let other = id(&api
        .create(
            "/items",
            json!({"name": "Wrench", "sku": "W-1", "priceCents": 900}),
        )
        .await);
    let (a, b) = (format!("/items/{}", org.item), format!("/items/{other}"));
    for path in [&a, &b, &"/items".to_string()] {
        assert_eq!(api.get(path).await.header("x-cache"), "MISS");
    }
    let updated = api.patch(&a, json!({"priceCents": 2500})).await;
    assert_eq!(updated.status, StatusCode::OK);
    // B's detail is still a hit; the list is not; A's is the written-through new one.
    assert_eq!(api.get(&b).await.header("x-cache"), "HIT");
    assert_eq!(api.get("/items").await.header("x-cache"), "MISS");
    let read = api.get(&a).await;
    assert_eq!(read.header("x-cache"), "HIT");
    assert_eq!(read.json()["priceCents"], 2500);
    // Deleting B drops B's entry (a 404 now) and keeps A's.
    let created = api
        .post(
            "/items",
            json!({"name": "Saw", "sku": "S-9", "priceCents": 100}),
        )
        .await;
    let saw = created.json();
    let c = format!("/items/{}", saw["id"].as_str().expect("id"));
    assert_eq!(api.get(&c).await.header("x-cache"), "MISS");
    assert_eq!(api.get(&a).await.header("x-cache"), "HIT");
    let deleted = api.delete(&c).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert_eq!(api.get(&c).await.status, StatusCode::NOT_FOUND);
    assert_eq!(api.get(&a).await.header("x-cache"), "HIT");
    // A write that concerns every item (a stock adjustment) still drops every detail.
    let stock = json!({"itemId": other, "warehouseId": org.warehouse, "quantityDelta": 3, "reason": "count"});
    assert_eq!(
        api.post("/inventory/adjustments", stock).await.status,
        StatusCode::CREATED
    );
    for path in [&a, &b] {
        assert_eq!(api.get(path).await.header("x-cache"), "MISS");
    }
}

#[tokio::test]
async fn tag_bookkeeping_does_not_grow_with_writes() {
    let app = spawn_app().await;
    let org = org(&app, "bookkeeping@example.com").await;
    let api = app.caller(&org.token);
    let path = format!("/items/{}", org.item);
    for price in 0..40 {
        let response = api.patch(&path, json!({"priceCents": 100 + price})).await;
        assert_eq!(response.status, StatusCode::OK);
        assert_eq!(api.get(&path).await.header("x-cache"), "HIT");
        api.get("/items").await;
    }
    let mut conn = app.redis_conn();
    let mut card = |index: &str| -> u64 {
        redis::cmd("ZCARD")
            .arg(index)
            .query(&mut conn)
            .expect("zcard")
    };
    // One entry per distinct key, however many writes: the item's detail under its tag, its
    // group and its key prefix, and the one list.
    let org_id = &org.org_id;
    assert!(card(&format!("ims:cacheidx:{org_id}:#item:{}", org.item)) <= 1);
    assert!(card(&format!("ims:cacheidx:{org_id}:items:detail")) <= 1);
    assert!(card(&format!("ims:cacheidx:{org_id}:items:list")) <= 1);
    assert!(card(&format!("ims:cacheidx:{org_id}:items")) <= 2);
    // One epoch per name written (the set-up's groups, the list, the item's tag), not one
    // per write: forty updates, nine epochs.
    let epochs = app.redis_keys(&format!("ims:cacheepoch:{org_id}:*"));
    assert!(epochs.len() <= 10, "{epochs:?}");
}

/// A row has one URL. Another spelling of its id that is still a UUID (upper case,
/// `urn:uuid:`, no hyphens) is redirected there (308, the same method and body), and one
/// that is not (percent-encoded, padded) names no row: nothing is ever cached, changed or
/// deleted under a URL that the row's writes do not invalidate, and a client that follows
/// redirects (as reqwest does) reads the row through either.
#[tokio::test]
async fn a_row_has_one_url_so_no_other_spelling_of_its_id_outlives_a_write() {
    let app = spawn_app().await;
    let org = org(&app, "spellings@example.com").await;
    let api = app.caller(&org.token);
    let id = org.item.clone();
    let path = format!("/items/{id}");
    let upper = id.to_uppercase();
    let unfollowed = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let send = |method: reqwest::Method, target: String| {
        unfollowed
            .request(method, format!("{}{target}", app.address))
            .bearer_auth(&org.token)
            .json(&json!({"priceCents": 1}))
            .send()
    };
    let price = api.get(&path).await.json()["priceCents"].clone();
    for spelling in [upper.clone(), format!("urn:uuid:{id}"), id.replace('-', "")] {
        for method in [
            reqwest::Method::GET,
            reqwest::Method::GET,
            reqwest::Method::PATCH,
            reqwest::Method::DELETE,
        ] {
            let moved = send(method.clone(), format!("/items/{spelling}?a=1"))
                .await
                .expect("request");
            assert_eq!(
                moved.status(),
                StatusCode::PERMANENT_REDIRECT,
                "{method} {spelling}"
            );
            assert_eq!(header(&moved, "location"), format!("{path}?a=1"));
            assert!(header(&moved, "x-cache") != "HIT", "{method} {spelling}");
            assert_eq!(header(&moved, "content-type"), "application/problem+json");
        }
        // Followed, the redirect reads the row itself.
        let read = api.get(&format!("/items/{spelling}")).await;
        assert_eq!(read.status, StatusCode::OK, "{spelling}");
        assert_eq!(read.json()["id"], id.as_str());
    }
    // Neither the PATCHes nor the DELETEs reached the row.
    assert_eq!(api.get(&path).await.json()["priceCents"], price);
    let encoded = format!("%{:02x}{}", id.as_bytes()[0], &id[1..]);
    // reqwest sends braces percent-encoded, as the URL standard has it.
    for spelling in [
        encoded,
        format!("{id}%20"),
        format!("%20{id}"),
        format!("{{{id}}}"),
    ] {
        for _ in 0..2 {
            let read = api.get(&format!("/items/{spelling}")).await;
            assert_eq!(
                read.problem(StatusCode::NOT_FOUND)["detail"],
                "no such item"
            );
        }
        let write = api
            .patch(&format!("/items/{spelling}"), json!({"priceCents": 1}))
            .await;
        write.problem(StatusCode::NOT_FOUND);
        let delete = api.delete(&format!("/items/{spelling}")).await;
        delete.problem(StatusCode::NOT_FOUND);
    }
    // The one URL is cached (every read above, followed redirects included, went there),
    // and a delete through it leaves nothing to serve under any spelling.
    assert_eq!(api.get(&path).await.header("x-cache"), "HIT");
    assert_eq!(api.delete(&path).await.status, StatusCode::NO_CONTENT);
    for path in [path, format!("/items/{upper}")] {
        api.get(&path).await.problem(StatusCode::NOT_FOUND);
    }
}

/// A group's invalidation leaves no index of its key prefixes behind: each kept a member
/// per deleted entry for an hour, and in a cache Redis, where the indexes have no TTL, a
/// flood of distinct misses between writes filled it until every store was refused (a
/// probe). An entity's invalidation (a tag) keeps the prefix's index, whose other entries
/// live on.
#[tokio::test]
async fn a_group_invalidation_drops_the_indexes_of_its_key_prefixes() {
    let app = spawn_app().await;
    let org = org(&app, "indexes@example.com").await;
    let api = app.caller(&org.token);
    let list_index = format!("ims:cacheidx:{}:items:list", org.org_id);
    let detail_index = format!("ims:cacheidx:{}:items:detail", org.org_id);
    for page in 1..=3 {
        api.get(&format!("/items?page={page}")).await;
    }
    api.get(&format!("/items/{}", org.item)).await;
    assert_eq!(app.redis_keys(&list_index), vec![list_index.clone()]);
    assert_eq!(app.redis_keys(&detail_index), vec![detail_index.clone()]);

    // A new item invalidates the item lists only (a key prefix): the details' index stays.
    api.create(
        "/items",
        json!({"name": "Saw", "sku": "S-9", "priceCents": 200}),
    )
    .await;
    assert!(
        app.redis_keys(&list_index).is_empty(),
        "the list entries' index"
    );
    assert_eq!(app.redis_keys(&detail_index), vec![detail_index.clone()]);

    // A stock adjustment invalidates the whole `items` group: no prefix index stays.
    for page in 1..=3 {
        api.get(&format!("/items?page={page}")).await;
    }
    api.post(
        "/inventory/adjustments",
        json!({"itemId": org.item, "warehouseId": org.warehouse, "quantityDelta": 1, "reason": "count"}),
    )
    .await;
    assert!(
        app.redis_keys(&format!("ims:cacheidx:{}:items:*", org.org_id))
            .is_empty(),
        "{:?}",
        app.redis_keys(&format!("ims:cacheidx:{}:*", org.org_id))
    );
}

/// A warm-up run takes the organizations that wrote most recently first, and at most its
/// cap (`warmup::MAX_ORGANIZATIONS`): it took every one, however many there were.
#[tokio::test]
async fn a_warm_up_takes_the_latest_writers_first_and_at_most_its_cap() {
    let app = spawn_app_with(&[("CACHE_WARM_INTERVAL", "3600")]).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    let mut conn = app.redis_conn();
    for i in 0..5_u64 {
        let () = redis::cmd("ZADD")
            .arg("ims:cacheactive")
            .arg(now - i * 1000)
            .arg(format!("org-{i}"))
            .query(&mut conn)
            .expect("zadd");
    }
    let hour = std::time::Duration::from_secs(3600);
    let cache = &app.state.cache;
    assert_eq!(cache.active_scopes(hour, 2).await, ["org-0", "org-1"]);
    assert_eq!(cache.active_scopes(hour, 10).await.len(), 5);
    assert!(cache.active_scopes(hour, 0).await.is_empty());
    assert_eq!(ims_api::warmup::MAX_ORGANIZATIONS, 1000);
}
