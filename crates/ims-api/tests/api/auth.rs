use std::time::Duration;

use ims_api::auth::tokens::{Claims, TokenKeys};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{
    assert_problem, replay_ends_the_session, sessions, sha256, spawn_app, spawn_app_with,
    text_field as s, Reply, TestApp, TEST_JWT_SECRET,
};

#[tokio::test]
async fn register_creates_an_admin_and_stores_only_the_token_hash_in_redis() {
    let app = spawn_app().await;
    let pair = app.register("Ann@Example.com").await;
    assert_eq!(pair["tokenType"], "Bearer");
    assert_eq!(pair["expiresIn"], 900);
    assert_eq!(pair["user"]["email"], "ann@example.com");
    assert_eq!(pair["user"]["role"], "admin");
    assert!(pair["user"]["organizationId"].is_string());

    let refresh = s(&pair, "refreshToken");
    let key = format!("ims:session:refresh:{}", sha256(&refresh));
    assert_eq!(app.redis_keys("ims:session:refresh:*"), vec![key.clone()]);
    let mut conn = app.redis_conn();
    let stored: String = redis::cmd("GET").arg(&key).query(&mut conn).expect("get");
    let record: Value = serde_json::from_str(&stored).expect("json record");
    assert_eq!(record["userId"], pair["user"]["id"]);
    assert!(record["createdAt"]
        .as_str()
        .expect("createdAt")
        .ends_with('Z'));
    assert!(
        !stored.contains(&refresh),
        "the token itself is never stored"
    );
    let ttl: i64 = redis::cmd("TTL").arg(&key).query(&mut conn).expect("ttl");
    assert!((604_790..=604_800).contains(&ttl), "ttl {ttl}");
    assert_eq!(
        app.sql_refresh_tokens().await,
        0,
        "Redis up: nothing in SQL"
    );

    // The access token's claims carry sub and org.
    let keys = TokenKeys::new(TEST_JWT_SECRET);
    let claims = keys
        .verify(&s(&pair, "accessToken"))
        .expect("valid access token");
    assert_eq!(claims.sub, s(&pair["user"], "id"));
    assert_eq!(claims.org, s(&pair["user"], "organizationId"));
}

#[tokio::test]
async fn login_me_and_wrong_credentials() {
    let app = spawn_app().await;
    app.register("bob@example.com").await;
    let pair = app.login("BOB@example.com").await;
    let me = app.caller(&s(&pair, "accessToken")).get("/auth/me").await;
    assert_eq!(me.status, StatusCode::OK);
    let me = me.json();
    assert_eq!(me["email"], "bob@example.com");
    assert_eq!(me["name"], "Test User");

    for body in [
        json!({"email": "bob@example.com", "password": "wrong password"}),
        json!({"email": "nobody@example.com", "password": "correct horse battery"}),
    ] {
        let problem = app
            .anonymous()
            .post("/auth/login", body)
            .await
            .problem(StatusCode::UNAUTHORIZED);
        assert_eq!(problem["detail"], "invalid email or password");
    }
    let duplicate = app.anonymous().post("/auth/register", json!({"email": "bob@example.com", "password": "another password", "name": "B", "organizationName": "O"})).await;
    duplicate.problem(StatusCode::CONFLICT);
}

/// Tokens and the user's own record are never for a cache to keep (RFC 6749 §5.1).
#[tokio::test]
async fn token_answers_say_no_store() {
    let app = spawn_app().await;
    let register = app.anonymous().post("/auth/register", json!({"email": "dora@example.com", "password": "correct horse battery", "name": "Dora", "organizationName": "D"})).await;
    assert_eq!(register.status, StatusCode::CREATED);
    assert_eq!(register.header("cache-control"), "no-store");
    let login = app
        .anonymous()
        .post(
            "/auth/login",
            json!({"email": "dora@example.com", "password": "correct horse battery"}),
        )
        .await;
    assert_eq!(login.header("cache-control"), "no-store");
    let pair = login.expect(StatusCode::OK);
    let refreshed = app.refresh(&s(&pair, "refreshToken")).await;
    assert_eq!(refreshed.status, StatusCode::OK);
    assert_eq!(refreshed.header("cache-control"), "no-store");
    let me = app.caller(&s(&pair, "accessToken")).get("/auth/me").await;
    assert_eq!(me.header("cache-control"), "no-store");
}

#[tokio::test]
async fn refresh_rotates_and_a_replayed_token_revokes_the_session() {
    // Strict reuse detection: no grace period for a second presentation.
    let app = spawn_app_with(&[("REFRESH_REUSE_GRACE", "0")]).await;
    let first = app.register("carol@example.com").await;
    let old = s(&first, "refreshToken");

    let response = app.refresh(&old).await;
    assert_eq!(response.status, StatusCode::OK);
    let second: Value = response.json();
    let new = s(&second, "refreshToken");
    assert_ne!(old, new);
    assert_eq!(
        app.redis_keys("ims:session:refresh:*"),
        vec![format!("ims:session:refresh:{}", sha256(&new))],
        "old key deleted, new key created"
    );

    // The old token is dead, and presenting it again means it was stolen: the whole session
    // (including the legitimately rotated new token) is revoked.
    let replay = app.refresh(&old).await.problem(StatusCode::UNAUTHORIZED);
    assert!(replay["detail"]
        .as_str()
        .expect("detail")
        .contains("already used"));
    app.refresh(&new).await.problem(StatusCode::UNAUTHORIZED);
    assert_eq!(sessions(&app, &s(&second, "accessToken")).await.len(), 0);

    // A token nobody ever issued is simply invalid.
    let unknown = app
        .refresh("not-a-real-token")
        .await
        .problem(StatusCode::UNAUTHORIZED);
    assert!(unknown["detail"]
        .as_str()
        .expect("detail")
        .contains("invalid"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_refreshes_of_one_token_never_fork_the_session() {
    let app = spawn_app_with(&[("REFRESH_REUSE_GRACE", "0")]).await;
    let pair = app.register("race@example.com").await;
    let token = s(&pair, "refreshToken");
    let attempts = (0..8).map(|_| app.refresh(&token));
    let responses = futures::future::join_all(attempts).await;
    let statuses: Vec<StatusCode> = responses.iter().map(|r| r.status).collect();
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::OK || *s == StatusCode::UNAUTHORIZED),
        "{statuses:?}"
    );
    let mut issued = Vec::new();
    for response in responses {
        if response.status == StatusCode::OK {
            let pair = response.json();
            issued.push(s(&pair, "refreshToken"));
        }
    }
    // At most one presentation wins the rotation. The others are replays of a rotated token,
    // so the session is revoked (reuse detection): depending on timing that happens before or
    // after the winner's rotation commits, but either way no token of this session works now.
    assert!(issued.len() <= 1, "{statuses:?}");
    for token in issued.iter().chain(std::iter::once(&token)) {
        app.refresh(token).await.problem(StatusCode::UNAUTHORIZED);
    }
    assert_eq!(sessions(&app, &s(&pair, "accessToken")).await.len(), 0);
}

/// Two presentations of one refresh token, the second sent while the first's rotation is
/// still being written: the first's database work waits on a lock the test holds on the
/// session row, so the second finds the token gone from Redis and the row still naming it,
/// the state a rotation that never committed leaves. Returns the app, the registered pair
/// and both replies.
async fn present_twice_during_a_rotation(grace: &str) -> (TestApp, Value, [Reply; 2]) {
    let app = spawn_app_with(&[("REFRESH_REUSE_GRACE", grace)]).await;
    let pair = app.register("slow-race@example.com").await;
    let token = s(&pair, "refreshToken");
    let mut lock = app.state.db.begin().await.expect("begin");
    sqlx::query("UPDATE sessions SET last_used_at = last_used_at WHERE token_hash = $1")
        .bind(sha256(&token))
        .execute(&mut *lock)
        .await
        .expect("lock the session row");
    let first = app.refresh(&token);
    let second = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        app.refresh(&token).await
    };
    let release = async {
        // Past the half second a presentation within the grace period waits for the
        // winner's pair before it looks at the row.
        tokio::time::sleep(Duration::from_millis(1000)).await;
        lock.commit().await.expect("release the row");
    };
    let (first, second, ()) = tokio::join!(first, second, release);
    (app, pair, [first, second])
}

/// Without a grace period the second presentation is a replay, and the session dies. It
/// used to be taken for a client retrying a rotation that never committed: it waited for the
/// row, found it moved on and answered 401 without revoking, so the winner's new token kept
/// working (seen once in a full PostgreSQL run of the test above, where 8 presentations
/// race; on SQLite writers queue and the second finds the rotation committed).
#[tokio::test]
async fn a_replay_during_the_winning_rotation_still_revokes_the_session() {
    let (app, pair, replies) = present_twice_during_a_rotation("0").await;
    let statuses = replies.each_ref().map(|r| r.status);
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::OK || *s == StatusCode::UNAUTHORIZED),
        "{statuses:?}"
    );
    let issued: Vec<String> = replies
        .iter()
        .filter(|r| r.status == StatusCode::OK)
        .map(|r| s(&r.json(), "refreshToken"))
        .collect();
    assert!(issued.len() <= 1, "{statuses:?}");
    for token in issued
        .iter()
        .chain(std::iter::once(&s(&pair, "refreshToken")))
    {
        app.refresh(token).await.problem(StatusCode::UNAUTHORIZED);
    }
    assert_eq!(sessions(&app, &s(&pair, "accessToken")).await.len(), 0);
}

/// Within the grace period the same race is two tabs refreshing at once, and the second tab
/// gets the winner's pair: it used to get a 401 on a session that lived on. Once the row is
/// free, the two presentations' writes may reach it in either order: when the second's claim
/// comes first, the winner finds its token replaced and the session ends (the state a slow
/// rotation cannot be told apart from: a dead one, which the second must be able to take
/// over). Never a 401 on a live session, never two pairs.
#[tokio::test]
async fn two_tabs_during_a_slow_rotation_share_its_pair_within_the_grace_period() {
    let (app, pair, replies) = present_twice_during_a_rotation("30").await;
    let statuses = replies.each_ref().map(|r| r.status);
    let alive = sessions(&app, &s(&pair, "accessToken")).await.len();
    if alive == 0 {
        // The second's claim went first: it got a pair, the winner found the row moved on.
        assert_eq!(statuses, [StatusCode::UNAUTHORIZED, StatusCode::OK]);
        let second = s(&replies[1].json(), "refreshToken");
        app.refresh(&second).await.problem(StatusCode::UNAUTHORIZED);
        return;
    }
    assert_eq!(statuses, [StatusCode::OK, StatusCode::OK]);
    let [first, second] = replies.map(|r| r.json());
    assert_eq!(s(&first, "refreshToken"), s(&second, "refreshToken"));
    let next = app
        .refresh(&s(&first, "refreshToken"))
        .await
        .expect(StatusCode::OK);
    assert_eq!(sessions(&app, &s(&next, "accessToken")).await.len(), 1);
}

/// Logging out with the token a refresh just replaced ends the session: the client's own
/// refresh and logout crossed, or it kept the old token. The 204 used to end nothing when
/// the token had been rotated through Redis (its key gone, the session row naming the
/// successor), and the successor kept working (a black-box probe).
#[tokio::test]
async fn logging_out_with_the_token_a_refresh_just_replaced_ends_the_session() {
    let app = spawn_app().await;
    let pair = app.register("crossed@example.com").await;
    let token = s(&pair, "refreshToken");
    let next = app.refresh(&token).await.expect(StatusCode::OK);
    let response = app
        .caller(&s(&pair, "accessToken"))
        .post("/auth/logout", json!({"refreshToken": token}))
        .await;
    assert_eq!(response.status, StatusCode::NO_CONTENT);
    app.refresh(&s(&next, "refreshToken"))
        .await
        .problem(StatusCode::UNAUTHORIZED);
    assert_eq!(sessions(&app, &s(&next, "accessToken")).await.len(), 0);
}

/// A refresh and a revocation of the same session, with its token in SQL (issued while
/// Redis was away): never a 5xx. The revocation took the session row and then the token's,
/// the refresh the other way round, and on PostgreSQL one of them failed with "deadlock
/// detected" as a 500 in about a quarter of such races (a black-box probe).
#[tokio::test]
async fn revoking_a_session_while_its_sql_token_is_refreshed_never_answers_5xx() {
    let app = spawn_app_with(&[("REFRESH_REUSE_GRACE", "0")]).await;
    app.register("deadlock@example.com").await;
    app.redis.stop();
    app.wait_for_redis(false).await;
    for _ in 0..20 {
        let pair = app.login("deadlock@example.com").await;
        let access = s(&pair, "accessToken");
        let current = sessions(&app, &access)
            .await
            .into_iter()
            .find(|session| session["current"] == true)
            .expect("the current session");
        let id = current["id"].as_str().expect("id").to_string();
        let (token, path) = (s(&pair, "refreshToken"), format!("/auth/sessions/{id}"));
        let api = app.caller(&access);
        let (refreshed, revoked) = tokio::join!(app.refresh(&token), api.delete(&path));
        assert!(
            !refreshed.status.is_server_error() && !revoked.status.is_server_error(),
            "refresh {} {}, revoke {} {}",
            refreshed.status,
            refreshed.text,
            revoked.status,
            revoked.text
        );
        // Revoked whichever went first: no token of it works.
        if refreshed.status == StatusCode::OK {
            app.refresh(&s(&refreshed.json(), "refreshToken"))
                .await
                .problem(StatusCode::UNAUTHORIZED);
        }
    }
}

/// Two tabs refreshing at once a token whose Redis key is gone (evicted; here deleted), so
/// that the session row vouches for it: both get one pair, the session lives on. The second
/// tab looked only for Redis' tombstone of a rotation, found none (the rotation went through
/// SQL), and within a millisecond or two of the first was taken for a replay: the session
/// was revoked in about a third of such races (a black-box probe).
#[tokio::test]
async fn two_tabs_refreshing_a_token_held_in_sql_share_its_pair() {
    let app = spawn_app().await; // REFRESH_REUSE_GRACE defaults to 10 s
    app.register("sqltabs@example.com").await;
    for round in 0..15 {
        let pair = app.login("sqltabs@example.com").await;
        let token = s(&pair, "refreshToken");
        let () = redis::cmd("DEL")
            .arg(format!("ims:session:refresh:{}", sha256(&token)))
            .query(&mut app.redis_conn())
            .expect("del");
        let (first, second) = tokio::join!(app.refresh(&token), app.refresh(&token));
        let (first, second) = (first.expect(StatusCode::OK), second.expect(StatusCode::OK));
        assert_eq!(
            s(&first, "refreshToken"),
            s(&second, "refreshToken"),
            "round {round}"
        );
        let next = app.refresh(&s(&first, "refreshToken")).await;
        assert_eq!(next.status, StatusCode::OK, "round {round}: {}", next.text);
    }
}

#[tokio::test]
async fn logout_deletes_the_token_and_ends_the_session() {
    let app = spawn_app().await;
    let pair = app.register("dave@example.com").await;
    let access = s(&pair, "accessToken");
    let refresh = s(&pair, "refreshToken");

    // Logout needs the bearer token.
    let anonymous = app
        .anonymous()
        .post("/auth/logout", json!({"refreshToken": refresh}))
        .await;
    anonymous.problem(StatusCode::UNAUTHORIZED);

    // Another user cannot end Dave's session with Dave's token.
    let eve = app.register("eve@example.com").await;
    let response = app
        .caller(&s(&eve, "accessToken"))
        .post("/auth/logout", json!({"refreshToken": refresh}))
        .await;
    assert_eq!(response.status, StatusCode::NO_CONTENT);
    assert!(app
        .redis_keys("ims:session:refresh:*")
        .contains(&format!("ims:session:refresh:{}", sha256(&refresh))));

    let response = app
        .caller(&access)
        .post("/auth/logout", json!({"refreshToken": refresh}))
        .await;
    assert_eq!(response.status, StatusCode::NO_CONTENT);
    assert!(!app
        .redis_keys("ims:session:refresh:*")
        .contains(&format!("ims:session:refresh:{}", sha256(&refresh))));
    app.refresh(&refresh)
        .await
        .problem(StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn sessions_are_listed_and_revoked() {
    let app = spawn_app().await;
    let first = app.register("fay@example.com").await;
    let second = app.login("fay@example.com").await;
    let third = app.login("fay@example.com").await;
    let access = s(&third, "accessToken");
    let api = app.caller(&access);

    let open = sessions(&app, &access).await;
    assert_eq!(open.len(), 3);
    assert_eq!(open.iter().filter(|s| s["current"] == true).count(), 1);
    assert!(open
        .iter()
        .all(|s| s["createdAt"].is_string() && s["expiresAt"].is_string()));

    // Revoke the second login: its refresh token dies, the others live.
    let keys = TokenKeys::new(TEST_JWT_SECRET);
    let second_sid = keys.verify(&s(&second, "accessToken")).expect("claims").sid;
    let response = api.delete(&format!("/auth/sessions/{second_sid}")).await;
    assert_eq!(response.status, StatusCode::NO_CONTENT);
    app.refresh(&s(&second, "refreshToken"))
        .await
        .problem(StatusCode::UNAUTHORIZED);
    let first_refreshed = app.refresh(&s(&first, "refreshToken")).await;
    assert_eq!(first_refreshed.status, StatusCode::OK);

    // Unknown or someone else's session: 404.
    let other = app.register("gus@example.com").await;
    let other_sid = keys.verify(&s(&other, "accessToken")).expect("claims").sid;
    for id in [other_sid.as_str(), "not-a-uuid", second_sid.as_str()] {
        let response = api.delete(&format!("/auth/sessions/{id}")).await;
        response.problem(StatusCode::NOT_FOUND);
    }

    // Revoke all.
    let response = api.delete("/auth/sessions").await;
    assert_eq!(response.status, StatusCode::NO_CONTENT);
    assert_eq!(sessions(&app, &access).await.len(), 0);
    app.refresh(&s(&third, "refreshToken"))
        .await
        .problem(StatusCode::UNAUTHORIZED);
    // Gus is untouched.
    assert_eq!(
        app.refresh(&s(&other, "refreshToken")).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn redis_down_login_and_refresh_use_sql_then_redis_again_when_back() {
    let app = spawn_app().await;
    app.register("hal@example.com").await;
    app.redis.stop();

    // Login during the outage: the token goes to SQL.
    let during = app.login("hal@example.com").await;
    assert_eq!(app.sql_refresh_tokens().await, 1);
    // Refresh during the outage finds it in SQL and rotates it (still in SQL).
    let response = app.refresh(&s(&during, "refreshToken")).await;
    assert_eq!(response.status, StatusCode::OK);
    let rotated: Value = response.json();
    assert_eq!(
        app.sql_refresh_tokens().await,
        2,
        "rotated row kept for reuse detection"
    );
    let me = app
        .caller(&s(&rotated, "accessToken"))
        .get("/auth/me")
        .await;
    assert_eq!(me.status, StatusCode::OK);

    // Redis comes back without a server restart.
    app.redis.restart();
    app.wait_for_redis(true).await;

    // The token written to SQL during the outage still works; its successor goes to Redis.
    let response = app.refresh(&s(&rotated, "refreshToken")).await;
    assert_eq!(response.status, StatusCode::OK);
    let after: Value = response.json();
    assert_eq!(
        app.redis_keys("ims:session:refresh:*"),
        vec![format!(
            "ims:session:refresh:{}",
            sha256(&s(&after, "refreshToken"))
        )]
    );
    // A new login lands in Redis too.
    let fresh = app.login("hal@example.com").await;
    assert!(app.redis_keys("ims:session:refresh:*").contains(&format!(
        "ims:session:refresh:{}",
        sha256(&s(&fresh, "refreshToken"))
    )));

    // Replaying the SQL token rotated during the outage is detected as reuse.
    let replay = app
        .refresh(&s(&during, "refreshToken"))
        .await
        .problem(StatusCode::UNAUTHORIZED);
    assert!(replay["detail"]
        .as_str()
        .expect("detail")
        .contains("already used"));
    app.refresh(&s(&after, "refreshToken"))
        .await
        .problem(StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn redis_disabled_runs_everything_on_sql() {
    let app = spawn_app_with(&[("REDIS_ENABLED", "false")]).await;
    let pair = app.register("ida@example.com").await;
    assert_eq!(app.sql_refresh_tokens().await, 1);
    let response = app.refresh(&s(&pair, "refreshToken")).await;
    assert_eq!(response.status, StatusCode::OK);
    assert!(app.redis_keys("*").is_empty());
}

#[tokio::test]
async fn bearer_tokens_that_are_missing_malformed_forged_or_expired_get_401() {
    let app = spawn_app().await;
    let pair = app.register("jim@example.com").await;
    let valid = TokenKeys::new(TEST_JWT_SECRET)
        .verify(&s(&pair, "accessToken"))
        .expect("claims");

    let forged = TokenKeys::new("some-other-secret-that-is-long-enough!!")
        .sign(&valid)
        .expect("sign");
    let expired = TokenKeys::new(TEST_JWT_SECRET)
        .sign(&Claims {
            iat: valid.iat - 3600,
            exp: valid.iat - 60,
            ..valid.clone()
        })
        .expect("sign");
    let cases: Vec<(&str, Option<String>)> = vec![
        ("missing", None),
        ("garbage", Some("Bearer not.a.jwt".into())),
        (
            "wrong scheme",
            Some(format!("Basic {}", s(&pair, "accessToken"))),
        ),
        ("forged", Some(format!("Bearer {forged}"))),
        ("expired", Some(format!("Bearer {expired}"))),
        ("empty", Some("Bearer ".into())),
    ];
    for (case, header) in cases {
        for path in ["/auth/me", "/auth/sessions"] {
            let mut request = app.client.get(format!("{}{path}", app.address));
            if let Some(header) = &header {
                request = request.header("authorization", header);
            }
            let response = request.send().await.expect("request");
            assert_eq!(
                response
                    .headers()
                    .get("www-authenticate")
                    .map(|v| v.as_bytes()),
                Some(&b"Bearer"[..]),
                "{case}"
            );
            let problem = assert_problem(response, StatusCode::UNAUTHORIZED).await;
            if case == "expired" {
                assert!(problem["detail"]
                    .as_str()
                    .expect("detail")
                    .contains("expired"));
            }
        }
    }
}

#[tokio::test]
async fn bad_input_on_every_auth_route_is_a_4xx_problem_and_writes_nothing() {
    let app = spawn_app().await;
    let pair = app.register("kim@example.com").await;
    let access = s(&pair, "accessToken");
    let routes = [
        "/auth/register",
        "/auth/login",
        "/auth/refresh",
        "/auth/logout",
    ];

    for path in routes {
        let token = (path == "/auth/logout").then_some(access.as_str());
        let send = |body: &'static str, content_type: &'static str| {
            let mut request = app
                .client
                .post(format!("{}{path}", app.address))
                .header("content-type", content_type)
                .body(body);
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            request.send()
        };
        assert_problem(
            send("{not json", "application/json").await.expect("send"),
            StatusCode::BAD_REQUEST,
        )
        .await;
        assert_problem(
            send("{}", "application/json").await.expect("send"),
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        assert_problem(
            send("[1,2]", "application/json").await.expect("send"),
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        assert_problem(
            send("{}", "text/plain").await.expect("send"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        )
        .await;
        let huge = format!("{{\"email\":\"{}\"}}", "x".repeat(1024 * 1024 + 10));
        let mut request = app
            .client
            .post(format!("{}{path}", app.address))
            .header("content-type", "application/json")
            .body(huge);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("send");
        assert_eq!(response.headers()["connection"], "close");
        assert_problem(response, StatusCode::PAYLOAD_TOO_LARGE).await;
    }

    // Field-level validation names the fields.
    let response = app.anonymous().post("/auth/register", json!({"email": "not-an-email", "password": "short", "name": " ", "organizationName": ""})).await;
    let problem = response.problem(StatusCode::UNPROCESSABLE_ENTITY);
    for field in ["email", "password", "name", "organizationName"] {
        assert!(problem["errors"][field].is_array(), "{field}: {problem}");
    }
    let response = app
        .anonymous()
        .post("/auth/register", json!({"email": "lee@example.com"}))
        .await;
    let problem = response.problem(StatusCode::UNPROCESSABLE_ENTITY);
    assert!(problem["errors"].is_object());
    let response = app
        .anonymous()
        .post(
            "/auth/register",
            json!({"email": 5, "password": true, "name": [], "organizationName": {}}),
        )
        .await;
    response.problem(StatusCode::UNPROCESSABLE_ENTITY);
    let response = app
        .anonymous()
        .post("/auth/refresh", json!({"refreshToken": ""}))
        .await;
    response.problem(StatusCode::UNPROCESSABLE_ENTITY);

    // Nothing of the rejected registrations was written.
    let users: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
        .fetch_one(app.state.db.pool())
        .await
        .expect("count");
    let orgs: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM organizations")
        .fetch_one(app.state.db.pool())
        .await
        .expect("count");
    assert_eq!((users, orgs), (1, 1));
}

#[tokio::test]
async fn with_redis_stopped_auth_requests_do_not_wait_on_it() {
    let app = spawn_app().await;
    app.register("max@example.com").await;
    app.redis.stop();
    // Whatever the first request pays to discover the outage is bounded by the command
    // time-out; after that the breaker is open and Redis costs nothing.
    let bound = app.state.redis.connection().command_timeout() + Duration::from_secs(2);
    for _ in 0..3 {
        let started = std::time::Instant::now();
        let pair = app.login("max@example.com").await;
        let response = app.refresh(&s(&pair, "refreshToken")).await;
        assert_eq!(response.status, StatusCode::OK);
        assert!(
            started.elapsed() < bound,
            "login+refresh took {:?}",
            started.elapsed()
        );
    }
    assert!(!app.state.redis.is_connected());
}

#[tokio::test]
async fn logout_during_a_redis_outage_still_ends_the_session() {
    let app = spawn_app().await;
    let pair = app.register("ned@example.com").await;
    let refresh = s(&pair, "refreshToken");
    app.redis.stop();
    let response = app
        .caller(&s(&pair, "accessToken"))
        .post("/auth/logout", json!({"refreshToken": refresh}))
        .await;
    assert_eq!(response.status, StatusCode::NO_CONTENT);
    app.redis.restart();
    app.wait_for_redis(true).await;
    // Redis restarted empty here, but the session is revoked in SQL either way.
    app.refresh(&refresh)
        .await
        .problem(StatusCode::UNAUTHORIZED);
    assert_eq!(sessions(&app, &s(&pair, "accessToken")).await.len(), 0);
}

#[tokio::test]
async fn two_tabs_refreshing_at_once_get_the_same_pair_within_the_grace_period() {
    let app = spawn_app().await; // REFRESH_REUSE_GRACE defaults to 10 s
    let pair = app.register("tabs@example.com").await;
    let token = s(&pair, "refreshToken");
    let attempts = (0..6).map(|_| app.refresh(&token));
    let responses = futures::future::join_all(attempts).await;
    let mut issued = Vec::new();
    for response in responses {
        let pair = response.expect(StatusCode::OK);
        issued.push((s(&pair, "refreshToken"), s(&pair, "accessToken")));
    }
    issued.dedup();
    assert_eq!(issued.len(), 1, "one new pair for every tab: {issued:?}");
    let (next, access) = issued.remove(0);
    // Only hashes are stored, never a token: the remembered pair is sealed.
    let grace = app.redis_keys("ims:session:grace:*");
    assert_eq!(grace, vec![format!("ims:session:grace:{}", sha256(&token))]);
    let stored: String = redis::cmd("GET")
        .arg(&grace[0])
        .query(&mut app.redis_conn())
        .expect("grace value");
    assert!(
        !stored.contains(&next) && !stored.contains(&access),
        "{stored}"
    );
    // The session lives on: the new token refreshes, and then the old one is a replay
    // (its successor was used), which revokes the session.
    let third = app.refresh(&next).await;
    assert_eq!(third.status, StatusCode::OK);
    let third: Value = third.json();
    replay_ends_the_session(&app, &token, &third).await;
    assert_eq!(sessions(&app, &access).await.len(), 0, "revoked");
}

#[tokio::test]
async fn a_replay_after_the_grace_period_revokes_the_session() {
    let app = spawn_app_with(&[("REFRESH_REUSE_GRACE", "1")]).await;
    let pair = app.register("late@example.com").await;
    let token = s(&pair, "refreshToken");
    let next = app.refresh(&token).await;
    assert_eq!(next.status, StatusCode::OK);
    let next: Value = next.json();
    // Within the second: the same pair again.
    let again = app.refresh(&token).await.json();
    assert_eq!(s(&again, "refreshToken"), s(&next, "refreshToken"));
    tokio::time::sleep(Duration::from_millis(1200)).await;
    replay_ends_the_session(&app, &token, &next).await;
}

#[tokio::test]
async fn sessions_end_at_their_absolute_age_however_often_refreshed() {
    let app = spawn_app_with(&[("SESSION_MAX_AGE", "2")]).await;
    let pair = app.register("aged@example.com").await;
    let mut token = s(&pair, "refreshToken");
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(600)).await;
        let next = app.refresh(&token).await;
        assert_eq!(next.status, StatusCode::OK);
        token = s(&next.json(), "refreshToken");
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    app.refresh(&token).await.problem(StatusCode::UNAUTHORIZED);
}

/// A token that lives in Redis and is rotated while Redis is away (through its session row)
/// keeps its Redis key, which Redis still holds when it returns. Presenting it again is a
/// replay all the same, during the outage and after it: the session is revoked, and its
/// successor with it. (Strict reuse detection: within a grace period a second presentation
/// gets the first one's pair, `auth_without_redis.rs`.)
#[tokio::test]
async fn a_token_rotated_during_an_outage_is_a_replay_when_presented_again() {
    let app = spawn_app_with(&[("REFRESH_REUSE_GRACE", "0")]).await;
    app.register("pause@example.com").await;
    let during = app.login("pause@example.com").await;
    let after = app.login("pause@example.com").await;
    app.redis.pause();
    app.wait_for_redis(false).await;
    let mut successors = Vec::new();
    for pair in [&during, &after] {
        let rotated = app.refresh(&s(pair, "refreshToken")).await;
        successors.push(s(&rotated.expect(StatusCode::OK), "refreshToken"));
    }
    // A replay is refused as reuse, and the session's successor with it.
    let replayed = |token: String, successor: String| {
        let app = &app;
        async move {
            let replay = app.refresh(&token).await.problem(StatusCode::UNAUTHORIZED);
            let detail = replay["detail"].as_str().unwrap_or_default();
            assert!(detail.contains("already used"), "{replay}");
            app.refresh(&successor)
                .await
                .problem(StatusCode::UNAUTHORIZED);
        }
    };
    replayed(s(&during, "refreshToken"), successors[0].clone()).await;
    app.redis.resume();
    app.wait_for_redis(true).await;
    replayed(s(&after, "refreshToken"), successors[1].clone()).await;
}

/// Logout ends the session of the token it is given, also when Redis has lost that token or
/// cannot be asked (the session row knows it); a token found nowhere ends nothing. Before,
/// both ended the caller's own session instead and left the named one refreshing (a
/// black-box probe).
#[tokio::test]
async fn logout_ends_the_named_session_even_when_redis_lost_or_cannot_find_the_token() {
    let app = spawn_app().await;
    let first = app.register("lena@example.com").await;
    let access = s(&first, "accessToken");
    let caller = app.caller(&access);
    let logout = move |token: String| async move {
        let reply = caller
            .post("/auth/logout", json!({"refreshToken": token}))
            .await;
        assert_eq!(reply.status, StatusCode::NO_CONTENT);
    };

    // A token found nowhere: nothing ends, the caller's session included.
    logout("0".repeat(64)).await;
    let first = app.refresh(&s(&first, "refreshToken")).await;
    assert_eq!(first.status, StatusCode::OK, "the caller's session ended");
    let first: Value = first.json();

    // Redis lost the second session's token (eviction, a restart without data).
    let second = app.login("lena@example.com").await;
    let mut conn = app.redis_conn();
    redis::cmd("FLUSHALL")
        .query::<()>(&mut conn)
        .expect("flush");
    logout(s(&second, "refreshToken")).await;
    app.refresh(&s(&second, "refreshToken"))
        .await
        .problem(StatusCode::UNAUTHORIZED);
    let first = app.refresh(&s(&first, "refreshToken")).await;
    assert_eq!(first.status, StatusCode::OK, "the caller's session ended");
    let first: Value = first.json();

    // Redis cannot be asked at all.
    let third = app.login("lena@example.com").await;
    app.redis.stop();
    logout(s(&third, "refreshToken")).await;
    app.redis.restart();
    app.wait_for_redis(true).await;
    app.refresh(&s(&third, "refreshToken"))
        .await
        .problem(StatusCode::UNAUTHORIZED);
    assert_eq!(
        app.refresh(&s(&first, "refreshToken")).await.status,
        StatusCode::OK,
        "the caller's session ended"
    );
}

/// A session past SESSION_MAX_AGE is over, however recently it was refreshed: it is not
/// listed, cannot be revoked (404), and a live one's `expiresAt` is no later than its
/// start plus that age (the list showed dead sessions with their sliding expiry).
#[tokio::test]
async fn sessions_past_their_maximum_age_are_not_listed_as_live() {
    let app = spawn_app_with(&[("SESSION_MAX_AGE", "2"), ("REFRESH_TOKEN_TTL", "3600")]).await;
    let pair = app.register("max@example.com").await;
    let listed = app
        .caller(&s(&pair, "accessToken"))
        .get("/auth/sessions")
        .await
        .expect(StatusCode::OK);
    let session = &listed["data"][0];
    let at = |field: &str| {
        time::OffsetDateTime::parse(
            session[field].as_str().expect("stamp"),
            &time::format_description::well_known::Rfc3339,
        )
        .expect("parse")
    };
    assert_eq!(
        at("expiresAt") - at("createdAt"),
        time::Duration::seconds(2)
    );
    let id = session["id"].as_str().expect("id").to_string();

    tokio::time::sleep(std::time::Duration::from_millis(2200)).await;
    let listed = app
        .caller(&s(&pair, "accessToken"))
        .get("/auth/sessions")
        .await
        .expect(StatusCode::OK);
    assert_eq!(listed["data"], json!([]), "{listed}");
    app.caller(&s(&pair, "accessToken"))
        .delete(&format!("/auth/sessions/{id}"))
        .await
        .problem(StatusCode::NOT_FOUND);
}

/// A session id written in upper case is redirected (308) to the session's URL, as for
/// every row's `{id}` and as the document says; the client, following it, revokes the
/// session (this route answered 404; a probe).
#[tokio::test]
async fn a_session_id_in_another_spelling_is_redirected_to_its_url() {
    let app = spawn_app().await;
    let first = app.register("spell@example.com").await;
    let second = app.login("spell@example.com").await;
    let listed = app
        .caller(&s(&first, "accessToken"))
        .get("/auth/sessions")
        .await
        .expect(StatusCode::OK);
    let other = listed["data"]
        .as_array()
        .expect("sessions")
        .iter()
        .find(|session| session["current"] == false)
        .expect("the other session")["id"]
        .as_str()
        .expect("id")
        .to_uppercase();
    let reply = app
        .caller(&s(&first, "accessToken"))
        .delete(&format!("/auth/sessions/{other}"))
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.text);
    app.refresh(&s(&second, "refreshToken"))
        .await
        .problem(StatusCode::UNAUTHORIZED);
}

/// Makes every `UPDATE` of `sessions` fail (`on`) or work again: a database that fails in
/// the middle of a rotation, after the token was taken from Redis.
async fn sessions_updates_fail(app: &TestApp, on: bool) {
    use ims_api::db::Backend;
    let statements: &[&str] = match (app.state.db.backend(), on) {
        (Backend::Sqlite, true) => &["CREATE TRIGGER fail_updates BEFORE UPDATE ON sessions \
              BEGIN SELECT RAISE(ABORT, 'the database is failing'); END"],
        (Backend::Sqlite, false) => &["DROP TRIGGER fail_updates"],
        (Backend::Postgres, true) => &[
            "CREATE FUNCTION fail_updates() RETURNS trigger AS \
             $$ BEGIN RAISE EXCEPTION 'the database is failing'; END $$ LANGUAGE plpgsql",
            "CREATE TRIGGER fail_updates BEFORE UPDATE ON sessions \
             FOR EACH ROW EXECUTE FUNCTION fail_updates()",
        ],
        (Backend::Postgres, false) => &[
            "DROP TRIGGER fail_updates ON sessions",
            "DROP FUNCTION fail_updates()",
        ],
    };
    for statement in statements {
        sqlx::query(statement)
            .execute(app.state.db.pool())
            .await
            .expect(statement);
    }
}

/// A rotation whose database work fails after it took the token from Redis leaves a
/// tombstone there. The client's retry with the same token was taken for a replay: 401
/// "already used" and the session revoked, logging the user out over a database hiccup
/// (found by a code review). The session row still names the token as live, so the retry
/// rotates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_a_rotation_failed_in_the_database_is_not_a_replay() {
    for grace in ["0", "5"] {
        let app = spawn_app_with(&[("REFRESH_REUSE_GRACE", grace)]).await;
        let pair = app.register("retry@example.com").await;
        let token = s(&pair, "refreshToken");

        sessions_updates_fail(&app, true).await;
        let failed = app.refresh(&token).await;
        assert!(
            failed.status.is_server_error(),
            "grace {grace}: {}",
            failed.status
        );
        sessions_updates_fail(&app, false).await;

        let retried = app.refresh(&token).await;
        assert_eq!(retried.status, StatusCode::OK, "grace {grace}: the retry");
        let next: Value = retried.json();
        assert_ne!(s(&next, "refreshToken"), token);
        // The session lives on: the new token refreshes, and the old one is now a replay.
        let after = app.refresh(&s(&next, "refreshToken")).await;
        assert_eq!(after.status, StatusCode::OK, "grace {grace}: the next one");
        let live = sessions(&app, &s(&after.json(), "accessToken")).await;
        assert_eq!(live.len(), 1, "grace {grace}");
    }
}

/// The sessions list is paged like every other list (`page`, `limit` ≤ 100, `total`),
/// newest first: it listed every session at once, and 3,000 logins made a 1.4 MB answer (a
/// probe).
#[tokio::test]
async fn sessions_are_listed_a_page_at_a_time() {
    let app = spawn_app().await;
    app.register("many@example.com").await;
    let mut last = Value::Null;
    for _ in 0..24 {
        last = app.login("many@example.com").await;
    }
    let access = s(&last, "accessToken");
    let api = app.caller(&access);
    let first: Value = api.get("/auth/sessions").await.json();
    assert_eq!(
        (&first["page"], &first["limit"], &first["total"]),
        (&json!(1), &json!(20), &json!(25))
    );
    let data = first["data"].as_array().expect("data");
    assert_eq!(data.len(), 20);
    assert_eq!(data[0]["current"], true, "newest first: {}", data[0]);
    let second: Value = api.get("/auth/sessions?page=2&limit=20").await.json();
    assert_eq!(second["data"].as_array().expect("data").len(), 5);
    let ids = |page: &Value| -> Vec<String> {
        page["data"]
            .as_array()
            .expect("data")
            .iter()
            .map(|session| session["id"].as_str().expect("id").to_string())
            .collect()
    };
    let mut all = ids(&first);
    all.extend(ids(&second));
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 25, "every session once");
    let refused = api.get("/auth/sessions?limit=101").await;
    let problem = refused.problem(StatusCode::UNPROCESSABLE_ENTITY);
    assert!(problem.to_string().contains("limit"), "{problem}");
}

/// `SESSION_MAX_PER_USER`: a login past the cap ends the user's least recently used
/// sessions (by last login or refresh), and only those; their refresh tokens stop working,
/// the others and the new session live on. Without a cap every login added a session for
/// as long as `SESSION_MAX_AGE` (a probe made 3,000).
#[tokio::test]
async fn a_login_past_the_session_cap_ends_the_least_recently_used_sessions() {
    let app = spawn_app_with(&[("SESSION_MAX_PER_USER", "3")]).await;
    let first = app.register("capped@example.com").await;
    let second = app.login("capped@example.com").await;
    let third = app.login("capped@example.com").await;
    // The first session is used again: now the second is the least recently used.
    let first = app
        .refresh(&s(&first, "refreshToken"))
        .await
        .expect(StatusCode::OK);
    let fourth = app.login("capped@example.com").await;
    let fifth = app.login("capped@example.com").await;
    let listed = sessions(&app, &s(&fifth, "accessToken")).await;
    assert_eq!(listed.len(), 3, "{listed:?}");
    assert_eq!(
        listed[0]["current"], true,
        "the new session lives: {listed:?}"
    );
    for (name, pair, lives) in [
        ("first", &first, true),
        ("second", &second, false),
        ("third", &third, false),
        ("fourth", &fourth, true),
        ("fifth", &fifth, true),
    ] {
        let answer = app.refresh(&s(pair, "refreshToken")).await;
        if lives {
            answer.expect(StatusCode::OK);
        } else {
            let problem = answer.problem(StatusCode::UNAUTHORIZED);
            assert!(
                !problem.to_string().contains("already used"),
                "{name}: {problem}"
            );
        }
    }
    let reasons: Vec<(Option<String>,)> =
        sqlx::query_as("SELECT revoked_reason FROM sessions WHERE revoked_at IS NOT NULL")
            .fetch_all(app.state.db.pool())
            .await
            .expect("ended sessions");
    assert_eq!(
        reasons,
        vec![(Some("session limit".to_string()),); 2],
        "exactly two ended, by the cap"
    );
}

/// How many of `user`'s sessions are live (not revoked), read from the database.
async fn live_sessions(app: &TestApp, user: &str) -> i64 {
    let (live,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM sessions WHERE user_id = $1 AND revoked_at IS NULL")
            .bind(user)
            .fetch_one(app.state.db.pool())
            .await
            .expect("live sessions");
    live
}

/// Logins at the same instant never leave more than `SESSION_MAX_PER_USER` sessions live:
/// each login counts the others' sessions, so none of them may end its count before
/// another's new session is in it. On PostgreSQL each login saw the others' new sessions
/// uncommitted, kept them all, and the user was left past the cap until a later login.
#[tokio::test]
async fn logins_at_the_same_instant_stay_within_the_session_cap() {
    let app = spawn_app_with(&[("SESSION_MAX_PER_USER", "2")]).await;
    let email = "capped-together@example.com";
    let pair = app.register(email).await;
    let user = s(&pair["user"], "id");
    let credentials = json!({"email": email, "password": "correct horse battery"});
    for round in 0..3 {
        let logins = futures::future::join_all(
            (0..8).map(|_| app.anonymous().post("/auth/login", credentials.clone())),
        )
        .await;
        assert!(
            logins.iter().all(|login| login.status == StatusCode::OK),
            "round {round}: {:?}",
            logins.iter().map(|l| l.status).collect::<Vec<_>>()
        );
        let live = live_sessions(&app, &user).await;
        assert!(live <= 2, "round {round}: {live} sessions live");
    }
}

/// `DELETE /auth/sessions` while a login past the cap ends the user's older sessions: both
/// land, never a 5xx. The login writes the rows it ends one at a time in id order; the revocation wrote
/// all of them in one statement, in the table's scan order, so on PostgreSQL each could hold
/// a row the other waited for and "deadlock detected" answered one of them 500. Sessions
/// past the cap are made in SQL (as a cap lowered since they began leaves them), so that the
/// login has many rows to end; the revocation is sent at times spread over the login's
/// answer, after its password check, when its transaction runs.
#[tokio::test]
async fn revoking_every_session_while_a_login_ends_sessions_past_the_cap_never_answers_5xx() {
    let app = spawn_app_with(&[("SESSION_MAX_PER_USER", "2")]).await;
    let email = "capped-revoke@example.com";
    let pair = app.register(email).await;
    let user = s(&pair["user"], "id");
    let credentials = json!({"email": email, "password": "correct horse battery"});
    let started = std::time::Instant::now();
    app.login(email).await;
    let plain_login = started.elapsed();
    for round in 0..10u32 {
        let caller = app.login(email).await;
        let (source,): (String,) = sqlx::query_as(
            "SELECT MIN(id) FROM sessions WHERE user_id = $1 AND revoked_at IS NULL",
        )
        .bind(&user)
        .fetch_one(app.state.db.pool())
        .await
        .expect("a live session");
        for _ in 0..150 {
            sqlx::query(
                "INSERT INTO sessions
                     (id, user_id, organization_id, created_at, last_used_at, expires_at)
                 SELECT $1, user_id, organization_id, created_at, last_used_at, expires_at
                 FROM sessions WHERE id = $2",
            )
            .bind(uuid::Uuid::new_v4().to_string())
            .bind(&source)
            .execute(app.state.db.pool())
            .await
            .expect("a session past the cap");
        }
        let access = s(&caller, "accessToken");
        let api = app.caller(&access);
        let delay = plain_login.mul_f64(0.5 + 0.1 * f64::from(round));
        let (login, revoked) = tokio::join!(
            app.anonymous().post("/auth/login", credentials.clone()),
            async {
                tokio::time::sleep(delay).await;
                api.delete("/auth/sessions").await
            }
        );
        // The login always lands; the revocation too, unless the login ended the caller's
        // own session first (401). A deadlock would be a 500, or the 409 that a write
        // rolled back for a concurrent one gets.
        assert!(
            login.status == StatusCode::OK
                && [StatusCode::NO_CONTENT, StatusCode::UNAUTHORIZED].contains(&revoked.status),
            "round {round}: login {} {}, revoke {} {}",
            login.status,
            login.text,
            revoked.status,
            revoked.text
        );
        let live = live_sessions(&app, &user).await;
        assert!(live <= 2, "round {round}: {live} sessions left live");
    }
}

/// The hourly purge (answers past their reuse grace, expired fallback tokens) never makes
/// a revocation of every session fail, nor fails itself: a statement that took many
/// sessions' rows in the table's scan order could wait for a row the revocation held while
/// the revocation, taking them one at a time in id order, waited for one the purge held.
#[tokio::test]
async fn revoking_every_session_while_expired_tokens_are_purged_never_fails() {
    let app = spawn_app().await;
    let email = "purged-revoke@example.com";
    let pair = app.register(email).await;
    let user = s(&pair["user"], "id");
    let long_ago = "2000-01-01T00:00:00.000Z";
    // Sessions holding an answer past its grace, each with an expired fallback token: all
    // of them the purge's to clear, and the revocation's to end.
    let seed = |caller: Value| {
        let (db, user) = (app.state.db.clone(), user.clone());
        async move {
            let (source,): (String,) = sqlx::query_as(
                "SELECT MIN(id) FROM sessions WHERE user_id = $1 AND revoked_at IS NULL",
            )
            .bind(&user)
            .fetch_one(db.pool())
            .await
            .expect("a live session");
            for n in 0..200 {
                let id = uuid::Uuid::new_v4().to_string();
                sqlx::query(
                    "INSERT INTO sessions (id, user_id, organization_id, created_at,
                         last_used_at, expires_at, replaced_answer, replaced_until)
                     SELECT $1, user_id, organization_id, created_at, last_used_at,
                         expires_at, 'sealed', $2
                     FROM sessions WHERE id = $3",
                )
                .bind(&id)
                .bind(long_ago)
                .bind(&source)
                .execute(db.pool())
                .await
                .expect("a session");
                sqlx::query(
                    "INSERT INTO refresh_tokens
                         (token_hash, user_id, session_id, created_at, expires_at)
                     VALUES ($1, $2, $3, $4, $4)",
                )
                .bind(format!("expired-{n}-{id}"))
                .bind(&user)
                .bind(&id)
                .bind(long_ago)
                .execute(db.pool())
                .await
                .expect("an expired token");
            }
            s(&caller, "accessToken")
        }
    };
    // How long a revocation of them all takes alone, to spread the purge over it.
    let access = seed(app.login(email).await).await;
    let started = std::time::Instant::now();
    let alone = app.caller(&access).delete("/auth/sessions").await;
    assert_eq!(alone.status, StatusCode::NO_CONTENT, "{}", alone.text);
    let revocation = started.elapsed();
    for round in 0..10u32 {
        let access = seed(app.login(email).await).await;
        let api = app.caller(&access);
        let delay = revocation.mul_f64(0.1 * f64::from(round));
        let (revoked, purged) = tokio::join!(api.delete("/auth/sessions"), async {
            tokio::time::sleep(delay).await;
            ims_api::auth::purge_expired_tokens(&app.state).await
        });
        // A deadlock PostgreSQL broke would be the revocation's 409 (a write rolled back for
        // a concurrent one) or the purge's error.
        assert!(
            revoked.status == StatusCode::NO_CONTENT && purged.is_ok(),
            "round {round}: revoke {} {}, purge {purged:?}",
            revoked.status,
            revoked.text
        );
    }
    let live = live_sessions(&app, &user).await;
    assert_eq!(live, 0, "every session revoked");
    // Alone, the purge goes on past its first batches (1,000 rows each on PostgreSQL).
    sqlx::query(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2100)
         INSERT INTO refresh_tokens (token_hash, user_id, session_id, created_at, expires_at)
         SELECT 'bulk-' || i, $1, (SELECT MIN(id) FROM sessions WHERE user_id = $1), $2, $2
         FROM n",
    )
    .bind(&user)
    .bind(long_ago)
    .execute(app.state.db.pool())
    .await
    .expect("expired tokens");
    let purged = ims_api::auth::purge_expired_tokens(&app.state)
        .await
        .expect("purge");
    let (left,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM refresh_tokens WHERE expires_at <= $1")
            .bind(long_ago)
            .fetch_one(app.state.db.pool())
            .await
            .expect("expired tokens left");
    assert_eq!((purged, left), (2100, 0));
}

/// A rotated token presented after its session was ended by a logout is refused as invalid,
/// not as reuse that "has revoked the session": nothing live was reused, and the message
/// misled clients (a probe).
#[tokio::test]
async fn a_rotated_token_after_logout_is_invalid_not_reused() {
    let app = spawn_app().await;
    let pair = app.register("ended@example.com").await;
    let token = s(&pair, "refreshToken");
    let next = app.refresh(&token).await.expect(StatusCode::OK);
    let logout = app
        .caller(&s(&next, "accessToken"))
        .post(
            "/auth/logout",
            json!({"refreshToken": s(&next, "refreshToken")}),
        )
        .await;
    assert_eq!(logout.status, StatusCode::NO_CONTENT);
    let refused = app.refresh(&token).await.problem(StatusCode::UNAUTHORIZED);
    assert_eq!(
        refused["detail"], "the refresh token is invalid or expired",
        "{refused}"
    );
}
