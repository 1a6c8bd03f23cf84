//! Refresh-token rotation while Redis is away: the tokens, their rotations and the answers a
//! second tab is given again all come from SQL then (docs/auth.md, "Two tabs").

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{
    replay_ends_the_session, sessions, sha256, spawn_app, spawn_app_with, text_field as s, TestApp,
};

/// The sealed answer the session row keeps for the rotated `token`.
async fn replaced_answer(app: &TestApp, token: &str) -> Option<String> {
    let (kept,): (Option<String>,) =
        sqlx::query_as("SELECT replaced_answer FROM sessions WHERE replaced_token_hash = $1")
            .bind(sha256(token))
            .fetch_one(app.state.db.pool())
            .await
            .expect("the session that replaced the token");
    kept
}

/// A signed-in user on an instance that has lost Redis.
async fn signed_in_without_redis(app: &TestApp, email: &str) -> Value {
    app.register(email).await;
    app.redis.stop();
    app.wait_for_redis(false).await;
    app.login(email).await
}

/// Two tabs refreshing at once with Redis away: both get one pair and the session lives on.
/// The pairs were remembered in Redis only, so the second tab's presentation was a replay
/// and ended the session of a user who had done nothing wrong, for as long as Redis was
/// away. The answer the session row keeps is sealed, as in Redis: the database holds no
/// usable token.
#[tokio::test]
async fn two_tabs_without_redis_share_one_pair_within_the_grace_period() {
    let app = spawn_app().await; // REFRESH_REUSE_GRACE defaults to 10 s
    signed_in_without_redis(&app, "tabs-sql@example.com").await;
    for round in 0..8 {
        let pair = app.login("tabs-sql@example.com").await;
        let token = s(&pair, "refreshToken");
        let (first, second) = tokio::join!(app.refresh(&token), app.refresh(&token));
        let (first, second) = (first.expect(StatusCode::OK), second.expect(StatusCode::OK));
        let next = s(&first, "refreshToken");
        assert_eq!(next, s(&second, "refreshToken"), "round {round}");
        assert_eq!(
            s(&first, "accessToken"),
            s(&second, "accessToken"),
            "round {round}"
        );
        let kept = replaced_answer(&app, &token)
            .await
            .expect("the answer kept for a second tab");
        assert!(
            !kept.contains(&next) && !kept.contains(&hex::encode(&next)),
            "round {round}: {kept}"
        );
        // The session lives on: the successor refreshes. Then the rotated token is a
        // replay (its successor was used), which revokes the session.
        let third = app.refresh(&next).await.expect(StatusCode::OK);
        app.refresh(&token).await.problem(StatusCode::UNAUTHORIZED);
        app.refresh(&s(&third, "refreshToken"))
            .await
            .problem(StatusCode::UNAUTHORIZED);
    }
}

/// A replay without Redis is answered at once, not after the half second a presentation
/// within the grace period may wait for a pair being remembered in Redis (a probe saw the
/// wait once it also started on SQL's record of a rotation), and it ends the session.
#[tokio::test]
async fn without_redis_a_replay_is_refused_without_waiting() {
    let app = spawn_app().await;
    let pair = signed_in_without_redis(&app, "replay-sql@example.com").await;
    let token = s(&pair, "refreshToken");
    let access = s(&pair, "accessToken");
    assert_eq!(
        sessions(&app, &access).await.len(),
        2,
        "registration and login"
    );
    let next = app.refresh(&token).await.expect(StatusCode::OK);
    let third = app
        .refresh(&s(&next, "refreshToken"))
        .await
        .expect(StatusCode::OK);
    let started = std::time::Instant::now();
    app.refresh(&token).await.problem(StatusCode::UNAUTHORIZED);
    let took = started.elapsed();
    assert!(took < Duration::from_millis(400), "{took:?}");
    app.refresh(&s(&third, "refreshToken"))
        .await
        .problem(StatusCode::UNAUTHORIZED);
    assert_eq!(
        sessions(&app, &access).await.len(),
        1,
        "the login's is revoked"
    );
    // A revoked session keeps no sealed answer.
    let (kept,): (Option<String>,) =
        sqlx::query_as("SELECT replaced_answer FROM sessions WHERE replaced_token_hash = $1")
            .bind(sha256(&s(&next, "refreshToken")))
            .fetch_one(app.state.db.pool())
            .await
            .expect("the revoked session");
    assert_eq!(kept, None);
}

/// The kept answer lasts the grace period only: a presentation after it is a replay.
#[tokio::test]
async fn without_redis_a_replay_after_the_grace_period_revokes_the_session() {
    let app = spawn_app_with(&[("REFRESH_REUSE_GRACE", "2")]).await;
    let pair = signed_in_without_redis(&app, "late-sql@example.com").await;
    let token = s(&pair, "refreshToken");
    let next = app.refresh(&token).await.expect(StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let again = app.refresh(&token).await.expect(StatusCode::OK);
    assert_eq!(s(&again, "refreshToken"), s(&next, "refreshToken"));
    // What its access token has left now, not the first answer's figure (a probe).
    let left = |pair: &Value| pair["expiresIn"].as_u64().expect("expiresIn");
    assert!(left(&again) < left(&next), "{again} after {next}");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    replay_ends_the_session(&app, &token, &next).await;
}

/// Without a grace period, a second presentation without Redis is a replay, as with it.
#[tokio::test]
async fn without_redis_and_without_grace_a_second_presentation_revokes_the_session() {
    let app = spawn_app_with(&[("REFRESH_REUSE_GRACE", "0")]).await;
    let pair = signed_in_without_redis(&app, "strict-sql@example.com").await;
    let token = s(&pair, "refreshToken");
    let next = app.refresh(&token).await.expect(StatusCode::OK);
    assert_eq!(
        replaced_answer(&app, &token).await,
        None,
        "nothing kept without a grace period"
    );
    replay_ends_the_session(&app, &token, &next).await;
}

/// A token that lives in Redis, rotated while Redis is away (through its session row), and
/// presented again by a second tab once Redis is back, within the grace period: Redis still
/// holds the token's key, the session has moved on, and the second tab gets the first one's
/// pair instead of ending the session.
#[tokio::test]
async fn a_second_tab_after_redis_returns_gets_the_pair_kept_in_sql() {
    let app = spawn_app().await;
    app.register("back@example.com").await;
    let pair = app.login("back@example.com").await;
    let token = s(&pair, "refreshToken");
    app.redis.pause();
    app.wait_for_redis(false).await;
    let first = app.refresh(&token).await.expect(StatusCode::OK);
    app.redis.resume();
    app.wait_for_redis(true).await;
    let second = app.refresh(&token).await.expect(StatusCode::OK);
    assert_eq!(s(&first, "refreshToken"), s(&second, "refreshToken"));
    let next = app
        .refresh(&s(&first, "refreshToken"))
        .await
        .expect(StatusCode::OK);
    // Its successor used, the rotated token is a replay now.
    replay_ends_the_session(&app, &token, &next).await;
}

/// A token rotated through Redis, then presented again to an instance that has lost Redis:
/// within the grace period the second tab gets the first one's pair (the session row keeps
/// it), after it the presentation is a replay and ends the session. Both used to depend on
/// Redis: the second tab got a plain 401, and so did the replay, which ended nothing and
/// left the successor working (a black-box probe).
#[tokio::test]
async fn a_token_rotated_through_redis_is_known_to_an_instance_without_it() {
    let app = spawn_app_with(&[("REFRESH_REUSE_GRACE", "3")]).await;
    let pair = app.register("cut-off@example.com").await;
    let token = s(&pair, "refreshToken");
    let next = app.refresh(&token).await.expect(StatusCode::OK);
    let rotated = std::time::Instant::now();
    app.redis.stop();
    app.wait_for_redis(false).await;
    let again = app.refresh(&token).await.expect(StatusCode::OK);
    assert!(
        rotated.elapsed() < Duration::from_secs(3),
        "the test was too slow"
    );
    assert_eq!(s(&again, "refreshToken"), s(&next, "refreshToken"));
    tokio::time::sleep(Duration::from_millis(3100).saturating_sub(rotated.elapsed())).await;
    let replay = app.refresh(&token).await.problem(StatusCode::UNAUTHORIZED);
    let detail = replay["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("already used"), "{replay}");
    app.refresh(&s(&next, "refreshToken"))
        .await
        .problem(StatusCode::UNAUTHORIZED);
}

/// A token from before the last rotation, rotated through Redis, replayed to an instance
/// that has lost Redis: reuse, and the session ends. Only the token the last rotation
/// replaced was known in SQL, so this replay was a plain 401 that ended nothing, and whoever
/// held the session's live token kept it (the OAuth BCP case of a thief who refreshed
/// first, several times).
#[tokio::test]
async fn an_older_generation_replayed_without_redis_revokes_the_session() {
    let app = spawn_app_with(&[("REFRESH_REUSE_GRACE", "0")]).await;
    let pair = app.register("generations@example.com").await;
    let first = s(&pair, "refreshToken");
    let second = s(
        &app.refresh(&first).await.expect(StatusCode::OK),
        "refreshToken",
    );
    let third = s(
        &app.refresh(&second).await.expect(StatusCode::OK),
        "refreshToken",
    );
    app.redis.stop();
    app.wait_for_redis(false).await;
    let replay = app.refresh(&first).await.problem(StatusCode::UNAUTHORIZED);
    let detail = replay["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("already used"), "{replay}");
    app.refresh(&third).await.problem(StatusCode::UNAUTHORIZED);
}

/// A rotation's sealed answer is cleared by the hourly purge once its grace period is over:
/// it stayed until the session's next rotation, so a database dump and an old rotated token
/// together could open it long after (a black-box probe).
#[tokio::test]
async fn answers_past_their_grace_period_are_purged() {
    let app = spawn_app_with(&[("REFRESH_REUSE_GRACE", "1")]).await;
    let pair = app.register("purged@example.com").await;
    let token = s(&pair, "refreshToken");
    app.refresh(&token).await.expect(StatusCode::OK);
    ims_api::auth::purge_expired_tokens(&app.state)
        .await
        .expect("purge");
    assert!(
        replaced_answer(&app, &token).await.is_some(),
        "kept within its grace period"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    ims_api::auth::purge_expired_tokens(&app.state)
        .await
        .expect("purge");
    assert_eq!(replaced_answer(&app, &token).await, None);
}
