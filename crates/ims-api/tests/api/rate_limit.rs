//! Rate limiting as clients and operators see it (contract §6).

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{spawn_app_with, Caller, Reply, ServerProcess, TestApp};

/// Parses the first member of an RFC 8941 list: a string with integer parameters,
/// `"name";a=1;b=2` (members are separated by `,` and optional spaces).
fn structured(response: &Reply, name: &str) -> (String, Vec<(String, u64)>) {
    let text = response
        .headers
        .get(name)
        .unwrap_or_else(|| panic!("{name} missing"))
        .to_str()
        .expect("ascii");
    let first = text.split(',').next().unwrap_or_default().trim();
    let mut parts = first.split(';');
    let item = parts.next().expect("item");
    let item = item
        .strip_prefix('"')
        .and_then(|i| i.strip_suffix('"'))
        .unwrap_or_else(|| panic!("{name}: {text:?} is not a string item"));
    let params = parts
        .map(|p| {
            let (key, value) = p.split_once('=').expect("key=value");
            (key.to_string(), value.parse().expect("integer"))
        })
        .collect();
    (item.to_string(), params)
}

fn number(headers: &reqwest::header::HeaderMap, name: &str) -> u64 {
    headers
        .get(name)
        .unwrap_or_else(|| panic!("{name} missing"))
        .to_str()
        .expect("ascii")
        .parse()
        .expect("number")
}

/// `n` concurrent `GET path`s of `api`.
async fn burst(api: Caller<'_>, path: &str, n: usize) -> Vec<Reply> {
    futures::future::join_all((0..n).map(|_| api.get(path))).await
}

fn admitted(responses: &[Reply]) -> usize {
    responses
        .iter()
        .filter(|r| r.status == StatusCode::OK)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_concurrent_burst_admits_exactly_the_limit_with_headers() {
    let app = spawn_app_with(&[("RATE_LIMIT_GLOBAL", "10/60")]).await;
    let token = app.token("burst@example.com").await;
    // One plain route and one cached route (where the decision rides with the lookup).
    for path in ["/categories/00000000-0000-0000-0000-000000000000", "/items"] {
        let responses = burst(app.caller(&token), path, 30).await;
        let ok_status = if path == "/items" {
            StatusCode::OK
        } else {
            StatusCode::NOT_FOUND
        };
        let passed = responses.iter().filter(|r| r.status == ok_status).count();
        let refused = responses
            .iter()
            .filter(|r| r.status == StatusCode::TOO_MANY_REQUESTS)
            .count();
        assert_eq!((passed, refused), (10, 20), "{path}: never 11");
        for response in &responses {
            assert_eq!(number(&response.headers, "ratelimit-limit"), 10);
            assert!(number(&response.headers, "ratelimit-reset") <= 60);
            // The IETF draft's structured fields (RFC 8941 lists of one item).
            let policy = structured(response, "ratelimit-policy");
            assert_eq!(
                policy,
                (
                    "ip-route".to_string(),
                    vec![("q".into(), 10), ("w".into(), 60)]
                )
            );
            let state = structured(response, "ratelimit");
            assert_eq!(state.0, "ip-route");
            assert_eq!(
                state.1[0],
                ("r".into(), number(&response.headers, "ratelimit-remaining"))
            );
            assert_eq!(
                state.1[1],
                ("t".into(), number(&response.headers, "ratelimit-reset"))
            );
        }
        let mut remaining: Vec<u64> = responses
            .iter()
            .filter(|r| r.status != StatusCode::TOO_MANY_REQUESTS)
            .map(|r| number(&r.headers, "ratelimit-remaining"))
            .collect();
        remaining.sort();
        assert_eq!(remaining, (0..10).collect::<Vec<u64>>());
        let refused = responses
            .into_iter()
            .find(|r| r.status == StatusCode::TOO_MANY_REQUESTS)
            .expect("a refusal");
        let retry = number(&refused.headers, "retry-after");
        assert!((1..=60).contains(&retry), "{retry}");
        assert_eq!(number(&refused.headers, "ratelimit-remaining"), 0);
        let problem = refused.problem(StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(problem["type"], "/problems/too-many-requests");
        // The exact key of the contract: ims:ratelimit:{ip}:{route template}.
        let template = if path == "/items" {
            "/items"
        } else {
            "/categories/{id}"
        };
        assert_eq!(
            app.redis_keys(&format!("ims:ratelimit:127.0.0.1:{template}"))
                .len(),
            1
        );
    }
    // Other routes have their own count; health is never limited.
    let health = burst(app.caller(&token), "/health", 15).await;
    assert_eq!(admitted(&health), 15);
    assert!(health[0].headers.get("ratelimit-limit").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_server_processes_sharing_redis_admit_the_limit_in_total() {
    let limit = [("RATE_LIMIT_GLOBAL", "12/60")];
    let app = spawn_app_with(&limit).await;
    let token = app.token("shared@example.com").await;
    let second = ServerProcess::beside_with(&app, &limit).await;
    let third = ServerProcess::beside_with(&app, &limit).await;
    let bases = [
        app.address.clone(),
        second.address.clone(),
        third.address.clone(),
    ];
    let api = app.caller(&token);
    let requests = (0..36).map(|i| api.at(&bases[i % 3]).get("/categories"));
    let responses = futures::future::join_all(requests).await;
    assert_eq!(admitted(&responses), 12, "12 in total, not 36");
}

#[tokio::test]
async fn the_window_slides_and_admits_again() {
    let app = spawn_app_with(&[("RATE_LIMIT_GLOBAL", "3/1")]).await;
    let token = app.token("window@example.com").await;
    let first = burst(app.caller(&token), "/categories", 4).await;
    assert_eq!(admitted(&first), 3);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let again = burst(app.caller(&token), "/categories", 4).await;
    assert_eq!(admitted(&again), 3);
}

fn rand_octet() -> u8 {
    use std::sync::atomic::{AtomicU8, Ordering};
    static NEXT: AtomicU8 = AtomicU8::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

#[tokio::test]
async fn forwarded_for_is_ignored_unless_the_proxy_is_trusted() {
    let app = spawn_app_with(&[("RATE_LIMIT_GLOBAL", "3/60")]).await;
    let token = app.token("spoof@example.com").await;
    let api = app.caller(&token);
    let mut statuses = Vec::new();
    for ip in ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5"] {
        let forwarded = [("x-forwarded-for", ip)];
        statuses.push(api.with(&forwarded).get("/categories").await.status);
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == StatusCode::OK).count(),
        3,
        "{statuses:?}"
    );
    assert!(app.redis_keys("ims:ratelimit:10.*").is_empty());

    let trusted = spawn_app_with(&[("RATE_LIMIT_GLOBAL", "3/60"), ("TRUST_PROXY", "true")]).await;
    let token = trusted.token("proxy@example.com").await;
    for ip in ["10.0.0.1", "10.0.0.2"] {
        let api = trusted.caller(&token);
        let responses: Vec<StatusCode> = futures::future::join_all((0..4).map(|_| async move {
            // The proxy appends what it saw; the left part is the client's own text.
            let forwarded = format!("192.0.2.{}, {ip}", rand_octet());
            api.with(&[("x-forwarded-for", &forwarded)])
                .get("/categories")
                .await
                .status
        }))
        .await;
        assert_eq!(
            responses.iter().filter(|s| **s == StatusCode::OK).count(),
            3,
            "{ip}"
        );
        assert_eq!(
            trusted
                .redis_keys(&format!("ims:ratelimit:{ip}:/categories"))
                .len(),
            1
        );
    }
}

#[tokio::test]
async fn limits_hold_in_memory_while_redis_is_down_and_go_back_to_redis() {
    let app = spawn_app_with(&[("RATE_LIMIT_GLOBAL", "5/60")]).await;
    let token = app.token("fallback@example.com").await;
    app.redis.stop();
    let during = burst(app.caller(&token), "/categories", 8).await;
    assert_eq!(admitted(&during), 5, "the in-memory store keeps the limit");
    assert!(during
        .iter()
        .all(|r| r.headers.contains_key("ratelimit-limit")));
    app.redis.restart();
    app.wait_for_redis(true).await;
    let after = burst(app.caller(&token), "/tax-rates", 7).await;
    assert_eq!(admitted(&after), 5);
    assert_eq!(
        app.redis_keys("ims:ratelimit:*:/tax-rates").len(),
        1,
        "counting in Redis again"
    );
}

#[tokio::test]
async fn credential_routes_allow_five_per_fifteen_minutes() {
    // The contract's defaults for the credential routes; the rest stays generous.
    let app = spawn_app_with(&[("RATE_LIMIT_AUTH", "5/900")]).await;
    let body = json!({"email": "nobody@example.com", "password": "wrong password"});
    let mut statuses = Vec::new();
    let mut last = None;
    for _ in 0..6 {
        let response = app.anonymous().post("/auth/login", body.clone()).await;
        statuses.push(response.status);
        last = Some(response);
    }
    assert_eq!(statuses[..5], [StatusCode::UNAUTHORIZED; 5]);
    let refused = last.expect("sixth");
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(number(&refused.headers, "ratelimit-limit"), 5);
    let retry = number(&refused.headers, "retry-after");
    assert!((895..=900).contains(&retry), "{retry}");
    let mut conn = app.redis_conn();
    let ttl: i64 = redis::cmd("TTL")
        .arg("ims:ratelimit:127.0.0.1:/auth/login")
        .query(&mut conn)
        .expect("ttl");
    assert!((890..=900).contains(&ttl), "{ttl}");
    // Registration has its own count; other routes are not affected.
    let registered = app.anonymous().create("/auth/register", json!({"email": "new@example.com", "password": "long enough", "name": "N", "organizationName": "O"})).await;
    let token = registered["accessToken"]
        .as_str()
        .expect("token")
        .to_string();
    assert_eq!(
        app.caller(&token).get("/auth/me").await.status,
        StatusCode::OK
    );
}

/// Logs in `n` times from behind a proxy, with `forwarded` as `X-Forwarded-For` for try `i`;
/// returns the statuses.
async fn logins_via_proxy(
    app: &TestApp,
    n: usize,
    forwarded: impl Fn(usize) -> String,
) -> Vec<StatusCode> {
    let mut statuses = Vec::new();
    for i in 0..n {
        let forwarded = forwarded(i);
        let response = app
            .anonymous()
            .with(&[("x-forwarded-for", &forwarded)])
            .post(
                "/auth/login",
                json!({"email": "nobody@example.com", "password": "wrong"}),
            )
            .await;
        statuses.push(response.status);
    }
    statuses
}

#[tokio::test]
async fn a_client_rotating_the_left_of_forwarded_for_stays_limited() {
    // One proxy appends what it saw (203.0.113.5); the client writes a new left part each
    // time. The credential limit (5 per 15 minutes) must hold.
    let app = spawn_app_with(&[("TRUST_PROXY", "true"), ("RATE_LIMIT_AUTH", "5/900")]).await;
    let statuses = logins_via_proxy(&app, 8, |i| format!("198.51.100.{i}, 203.0.113.5")).await;
    assert_eq!(statuses[..5], [StatusCode::UNAUTHORIZED; 5]);
    assert_eq!(
        statuses[5..],
        [StatusCode::TOO_MANY_REQUESTS; 3],
        "{statuses:?}"
    );
    assert_eq!(app.redis_keys("ims:ratelimit:203.0.113.5:*").len(), 1);
    assert!(app.redis_keys("ims:ratelimit:198.51.100.*").is_empty());
    // Garbage never becomes the client, nor does what the client wrote to its left (an
    // empty entry included): the proxy's own address is counted instead.
    for header in ["not-an-address", "198.51.100.77, ", "198.51.100.77,"] {
        let garbage = logins_via_proxy(&app, 1, |_| header.into()).await;
        assert_eq!(garbage, [StatusCode::UNAUTHORIZED], "{header}");
    }
    assert_eq!(app.redis_keys("ims:ratelimit:127.0.0.1:*").len(), 1);
    assert!(app.redis_keys("ims:ratelimit:198.51.100.*").is_empty());
}

#[tokio::test]
async fn n_hops_and_trusted_networks_find_the_client_from_the_right() {
    let two_hops = spawn_app_with(&[("TRUST_PROXY", "2"), ("RATE_LIMIT_AUTH", "5/900")]).await;
    let statuses = logins_via_proxy(&two_hops, 6, |i| {
        format!("198.51.100.{i}, 203.0.113.7, 10.0.0.2")
    })
    .await;
    assert_eq!(statuses[5], StatusCode::TOO_MANY_REQUESTS, "{statuses:?}");
    assert_eq!(two_hops.redis_keys("ims:ratelimit:203.0.113.7:*").len(), 1);

    let networks = spawn_app_with(&[
        ("TRUSTED_PROXIES", "127.0.0.0/8, 10.0.0.0/8"),
        ("RATE_LIMIT_AUTH", "5/900"),
    ])
    .await;
    let statuses = logins_via_proxy(&networks, 6, |i| {
        format!("198.51.100.{i}, 203.0.113.9, 10.1.2.3, 10.0.0.2")
    })
    .await;
    assert_eq!(statuses[5], StatusCode::TOO_MANY_REQUESTS, "{statuses:?}");
    assert_eq!(networks.redis_keys("ims:ratelimit:203.0.113.9:*").len(), 1);

    // The session remembers the same address the limits count.
    let pair = networks
        .anonymous()
        .with(&[("x-forwarded-for", "6.6.6.6, 203.0.113.10, 10.9.9.9")])
        .create(
            "/auth/register",
            json!({"email": "who@example.com", "password": "correct horse battery", "name": "W", "organizationName": "O"}),
        )
        .await;
    let access = pair["accessToken"].as_str().expect("token");
    let sessions = networks.caller(access).get("/auth/sessions").await.json();
    assert_eq!(sessions["data"][0]["ip"], "203.0.113.10", "{sessions}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_user_tier_holds_across_processes_and_addresses_and_refusals_consume_nothing_else() {
    // Both quotas under 32, so neither leases: every log holds exactly its admissions
    // (leases, which hold unused reservations too, are tested in ims-redis).
    let vars = [
        ("RATE_LIMIT_GLOBAL", "30/60"),
        ("RATE_LIMIT_USER", "6/60"),
        ("TRUST_PROXY", "true"),
    ];
    let app = spawn_app_with(&vars).await;
    let other = ServerProcess::beside_with(&app, &vars).await;
    let token = app.token("tier@example.com").await;
    let bases = [app.address.clone(), other.address.clone()];
    let mut statuses = Vec::new();
    for i in 0..10 {
        // Two processes, two client addresses: one user.
        let forwarded = format!("203.0.113.{}", i % 2 + 1);
        let response = app
            .caller(&token)
            .at(&bases[i % 2])
            .with(&[("x-forwarded-for", &forwarded)])
            .get("/categories")
            .await;
        if i == 0 {
            let policy = structured(&response, "ratelimit-policy");
            assert_eq!(policy.0, "ip-route");
            let all = response.header("ratelimit-policy");
            assert_eq!(all, "\"ip-route\";q=30;w=60, \"user\";q=6;w=60");
            // The binding policy is the one closest to its limit: the user's.
            assert_eq!(structured(&response, "ratelimit").0, "user");
        }
        if response.status == StatusCode::TOO_MANY_REQUESTS {
            // The headers name the policy that refused, not the address's, which had room.
            assert_eq!(structured(&response, "ratelimit").0, "user");
            assert_eq!(response.header("ratelimit-limit"), "6");
            assert_eq!(response.header("ratelimit-remaining"), "0");
        }
        statuses.push(response.status);
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == StatusCode::OK).count(),
        6,
        "{statuses:?}"
    );
    let user_keys = app.redis_keys("ims:ratelimit:user:*");
    assert_eq!(user_keys.len(), 1, "{user_keys:?}");
    // The four refused requests were taken back from the per-address logs.
    let mut conn = app.redis_conn();
    let mut counted = 0;
    for ip in ["203.0.113.1", "203.0.113.2"] {
        counted += admissions(&mut conn, &format!("ims:ratelimit:{ip}:/categories"));
    }
    assert_eq!(counted, 6, "only admitted requests are counted per address");

    // An address-refused request consumes nothing of the user's quota. (A user quota under
    // 32 is counted request by request; a larger one reserves entries a few at a time,
    // and then the log also holds this instance's unused reservation.)
    let strict =
        spawn_app_with(&[("RATE_LIMIT_GLOBAL", "2/60"), ("RATE_LIMIT_USER", "20/60")]).await;
    let token = strict.token("strict@example.com").await;
    for _ in 0..5 {
        strict.caller(&token).get("/categories").await;
    }
    let user_key = strict.redis_keys("ims:ratelimit:user:*");
    let n = admissions(&mut strict.redis_conn(), &user_key[0]);
    assert_eq!(
        n, 2,
        "three refused requests never reached the user's count"
    );

    // Redis down: every tier keeps its limit in memory.
    app.redis.stop();
    app.wait_for_redis(false).await;
    let fresh = app.token("tier2@example.com").await;
    let mut admitted = 0;
    for _ in 0..9 {
        if app.caller(&fresh).get("/categories").await.status == StatusCode::OK {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 6, "the user tier holds in memory");
}

/// The admissions a limiter log counts (checked against its runs).
fn admissions(conn: &mut redis::Connection, key: &str) -> u64 {
    let items: Vec<String> = redis::cmd("LRANGE")
        .arg(key)
        .arg(0)
        .arg(-1)
        .query(conn)
        .expect("LRANGE");
    ims_testkit::limiter_log(&items).0
}

/// One IPv6 host holds a whole /64: rotating through its addresses must not escape the
/// credential limit (each address was a new key; found by a code review). Another /64 is
/// another client.
#[tokio::test]
async fn an_ipv6_client_rotating_through_its_64_stays_limited() {
    let app = spawn_app_with(&[("TRUST_PROXY", "true"), ("RATE_LIMIT_AUTH", "5/900")]).await;
    let statuses = logins_via_proxy(&app, 8, |i| format!("2001:db8:7:1::{:x}", i + 1)).await;
    assert_eq!(statuses[..5], [StatusCode::UNAUTHORIZED; 5]);
    assert_eq!(
        statuses[5..],
        [StatusCode::TOO_MANY_REQUESTS; 3],
        "{statuses:?}"
    );
    let other = logins_via_proxy(&app, 1, |_| "2001:db8:7:2::1".into()).await;
    assert_eq!(other, [StatusCode::UNAUTHORIZED]);
    let mut keys = app.redis_keys("ims:ratelimit:2001:db8:7:*");
    keys.sort();
    assert_eq!(
        keys,
        [
            "ims:ratelimit:2001:db8:7:1::/64:/auth/login",
            "ims:ratelimit:2001:db8:7:2::/64:/auth/login"
        ]
    );
}
