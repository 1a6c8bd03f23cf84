//! SQL queries of the auth area: organizations, users, sessions and fallback refresh tokens.

use serde::Serialize;
use sqlx::{Any, AnyConnection, Executor, FromRow};
use uuid::Uuid;

use crate::db::{self, Db};
use crate::error::{ApiError, ApiResult};

/// A user row.
#[derive(Debug, Clone, FromRow)]
pub struct UserRow {
    pub id: String,
    pub organization_id: String,
    pub email: String,
    pub password_hash: String,
    pub name: String,
    pub role: String,
    pub created_at: String,
}

/// A session as listed to its owner.
#[derive(Debug, Clone, FromRow, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionRow {
    pub id: String,
    pub created_at: String,
    pub last_used_at: String,
    pub expires_at: String,
    pub user_agent: Option<String>,
    pub ip: Option<String>,
}

/// A fallback refresh token that was just consumed.
#[derive(Debug, Clone, FromRow)]
pub struct ConsumedToken {
    pub user_id: String,
    pub session_id: String,
    pub expires_at: String,
}

const USER_COLUMNS: &str = "id, organization_id, email, password_hash, name, role, created_at";

/// Creates an organization and its first user (an admin) in one transaction.
/// A taken email is a 409 and leaves nothing behind.
pub async fn create_org_with_admin(
    db: &Db,
    organization_name: &str,
    email: &str,
    password_hash: &str,
    name: &str,
) -> ApiResult<UserRow> {
    let now = db::now();
    let org_id = Uuid::new_v4().to_string();
    let user = UserRow {
        id: Uuid::new_v4().to_string(),
        organization_id: org_id.clone(),
        email: email.into(),
        password_hash: password_hash.into(),
        name: name.into(),
        role: "admin".into(),
        created_at: now.clone(),
    };
    let mut tx = db.begin().await?;
    sqlx::query("INSERT INTO organizations (id, name, created_at) VALUES ($1, $2, $3)")
        .bind(&org_id)
        .bind(organization_name)
        .bind(&now)
        .execute(&mut *tx)
        .await?;
    let inserted = sqlx::query(
        "INSERT INTO users (id, organization_id, email, password_hash, name, role, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&user.id)
    .bind(&user.organization_id)
    .bind(&user.email)
    .bind(&user.password_hash)
    .bind(&user.name)
    .bind(&user.role)
    .bind(&user.created_at)
    .execute(&mut *tx)
    .await;
    match inserted {
        Err(e) if db::is_unique_violation(&e) => {
            return Err(ApiError::Conflict(
                "this email is already registered".into(),
            ))
        }
        other => other?,
    };
    crate::db::commit(tx).await?;
    Ok(user)
}

pub async fn find_user_by_email(db: &Db, email: &str) -> ApiResult<Option<UserRow>> {
    Ok(sqlx::query_as(&format!(
        "SELECT {USER_COLUMNS} FROM users WHERE email = $1"
    ))
    .bind(email)
    .fetch_optional(db.pool())
    .await?)
}

pub async fn find_user<'c>(
    db: impl Executor<'c, Database = Any>,
    id: &str,
) -> ApiResult<Option<UserRow>> {
    Ok(
        sqlx::query_as(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"))
            .bind(id)
            .fetch_optional(db)
            .await?,
    )
}

/// Starts a session for `user`; returns its id.
pub async fn create_session<'c>(
    db: impl Executor<'c, Database = Any>,
    user: &UserRow,
    expires_at: &str,
    user_agent: Option<&str>,
    ip: Option<&str>,
) -> ApiResult<String> {
    let id = Uuid::new_v4().to_string();
    let now = db::now();
    sqlx::query(
        "INSERT INTO sessions (id, user_id, organization_id, created_at, last_used_at, expires_at, user_agent, ip)
         VALUES ($1, $2, $3, $4, $4, $5, $6, $7)",
    )
    .bind(&id)
    .bind(&user.id)
    .bind(&user.organization_id)
    .bind(&now)
    .bind(expires_at)
    .bind(user_agent)
    .bind(ip)
    .execute(db)
    .await?;
    Ok(id)
}

/// Ends the user's least recently used live sessions (by their last login or refresh) so
/// that `keep` (`SESSION_MAX_PER_USER`) are left, `current` (the one just opened) and the
/// most recently used others; returns how many ended. Only session rows are written, one at
/// a time in id order: a refresh takes its token's row and then its session's, and two
/// logins end sessions in the same order, so none of them waits on the other in a cycle (a
/// revocation that took token rows after session rows let PostgreSQL break a deadlock with
/// a 500, found by a probe). The ended sessions' tokens are refused from now on (the session
/// row is the authority) and purged with the other expired tokens.
pub async fn end_sessions_past(
    conn: &mut AnyConnection,
    user_id: &str,
    current: &str,
    keep: u64,
) -> ApiResult<u64> {
    let now = db::now();
    // At most a thousand at a time: the next login ends the rest.
    let past: Vec<(String,)> = sqlx::query_as(
        "SELECT id FROM sessions
         WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > $2 AND id <> $3
         ORDER BY last_used_at DESC, created_at DESC, id DESC LIMIT 1000 OFFSET $4",
    )
    .bind(user_id)
    .bind(&now)
    .bind(current)
    .bind(i64::try_from(keep.saturating_sub(1)).unwrap_or(i64::MAX))
    .fetch_all(&mut *conn)
    .await?;
    end_in_id_order(conn, past, &now, "session limit").await
}

/// Makes a login wait for the user's other logins in flight, so that the sessions it counts
/// against `SESSION_MAX_PER_USER` include theirs. On PostgreSQL each login saw the others'
/// new sessions uncommitted and kept all of them: eight logins at once left a user with a
/// cap of two holding three or more (`logins_at_the_same_instant_stay_within_the_session_cap`).
/// The user's row is taken `FOR NO KEY UPDATE`, which the foreign-key checks of a refresh
/// (`FOR KEY SHARE`) do not wait for; nothing else locks user rows. SQLite runs one write
/// transaction at a time, and a login writes first.
pub async fn take_turns_at_login(
    conn: &mut AnyConnection,
    backend: db::Backend,
    user_id: &str,
) -> ApiResult<()> {
    if backend == db::Backend::Postgres {
        sqlx::query("SELECT id FROM users WHERE id = $1 FOR NO KEY UPDATE")
            .bind(user_id)
            .fetch_optional(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Revokes the sessions `ids` (those still live) with `reason`, one row at a time in id
/// order: the order every writer that ends several sessions takes them in (a login past the
/// cap, a revocation of all of a user's sessions), so that no two of them wait on each
/// other in a cycle. Returns how many it revoked.
async fn end_in_id_order(
    conn: &mut AnyConnection,
    mut ids: Vec<(String,)>,
    now: &str,
    reason: &str,
) -> ApiResult<u64> {
    ids.sort_unstable();
    let mut ended = 0;
    for (id,) in &ids {
        ended += sqlx::query(
            "UPDATE sessions SET revoked_at = $1, revoked_reason = $2, replaced_answer = NULL
             WHERE id = $3 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(reason)
        .bind(id)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    }
    Ok(ended)
}

/// Marks a live session as used now and slides its expiry; `false` when the session is
/// revoked, expired, older than its absolute lifetime (started before `started_after`),
/// unknown, or when `presented` (the refresh token's hash) is no longer the session's live
/// token (rows from before that column existed have none and pass). Checking and touching
/// in one statement means a revocation that commits first always wins.
pub async fn touch_session<'c>(
    db: impl Executor<'c, Database = Any>,
    session_id: &str,
    user_id: &str,
    expires_at: &str,
    started_after: &str,
    presented: Option<&str>,
) -> ApiResult<bool> {
    const LIVE: &str = "UPDATE sessions SET last_used_at = $1, expires_at = $2
         WHERE id = $3 AND user_id = $4 AND revoked_at IS NULL AND expires_at > $1
           AND created_at > $5";
    let now = db::now();
    let sql = match presented {
        Some(_) => format!("{LIVE} AND (token_hash IS NULL OR token_hash = $6)"),
        None => LIVE.to_string(),
    };
    let mut query = sqlx::query(&sql)
        .bind(&now)
        .bind(expires_at)
        .bind(session_id)
        .bind(user_id)
        .bind(started_after);
    if let Some(hash) = presented {
        query = query.bind(hash);
    }
    let result = query.execute(db).await?;
    Ok(result.rows_affected() == 1)
}

/// Records `token_hash` as the session's live refresh token (the durable copy of what
/// Redis holds).
pub async fn set_session_token<'c>(
    db: impl Executor<'c, Database = Any>,
    session_id: &str,
    token_hash: &str,
) -> ApiResult<()> {
    sqlx::query("UPDATE sessions SET token_hash = $1 WHERE id = $2")
        .bind(token_hash)
        .bind(session_id)
        .execute(db)
        .await?;
    Ok(())
}

/// Records `token_hash` as the session's live refresh token in place of `replaced` (a
/// rotation): the replaced token's hash, and the rotation's sealed `answer` until `until`.
pub async fn rotate_session_token<'c>(
    db: impl Executor<'c, Database = Any>,
    session_id: &str,
    token_hash: &str,
    replaced: &str,
    answer: Option<&str>,
    until: &str,
) -> ApiResult<()> {
    sqlx::query(
        "UPDATE sessions SET token_hash = $1, replaced_token_hash = $2, replaced_answer = $3,
             replaced_until = $4
         WHERE id = $5",
    )
    .bind(token_hash)
    .bind(replaced)
    .bind(answer)
    .bind(until)
    .bind(session_id)
    .execute(db)
    .await?;
    Ok(())
}

/// The sealed answer of the rotation that replaced `token_hash` in a live session, while
/// its grace period runs.
pub async fn replaced_answer(db: &Db, token_hash: &str) -> ApiResult<Option<String>> {
    let kept: Option<(Option<String>,)> = sqlx::query_as(
        "SELECT replaced_answer FROM sessions
         WHERE replaced_token_hash = $1 AND revoked_at IS NULL AND replaced_until > $2",
    )
    .bind(token_hash)
    .bind(db::now())
    .fetch_optional(db.pool())
    .await?;
    Ok(kept.and_then(|(answer,)| answer))
}

/// The live session (user id, session id) whose last rotation replaced `token_hash`.
pub async fn session_replacing(db: &Db, token_hash: &str) -> ApiResult<Option<(String, String)>> {
    Ok(sqlx::query_as(
        "SELECT user_id, id FROM sessions WHERE replaced_token_hash = $1 AND revoked_at IS NULL",
    )
    .bind(token_hash)
    .fetch_optional(db.pool())
    .await?)
}

/// Whether `token_hash` is the live refresh token of a live session.
pub async fn is_live_token(db: &Db, token_hash: &str) -> ApiResult<bool> {
    let found: Option<(String,)> = sqlx::query_as(
        "SELECT id FROM sessions WHERE token_hash = $1 AND revoked_at IS NULL AND expires_at > $2",
    )
    .bind(token_hash)
    .bind(db::now())
    .fetch_optional(db.pool())
    .await?;
    Ok(found.is_some())
}

/// Claims the live session whose current refresh token is `token_hash` (its Redis key is
/// gone: evicted, or Redis was flushed): clears the hash so a concurrent refresh of the
/// same token finds nothing, and returns (user id, session id).
pub async fn claim_session_by_token<'c>(
    db: impl Executor<'c, Database = Any>,
    token_hash: &str,
) -> ApiResult<Option<(String, String)>> {
    Ok(sqlx::query_as(
        "UPDATE sessions SET token_hash = NULL
         WHERE token_hash = $1 AND revoked_at IS NULL AND expires_at > $2
         RETURNING user_id, id",
    )
    .bind(token_hash)
    .bind(db::now())
    .fetch_optional(db)
    .await?)
}

/// Revokes the user's live sessions (all of them, or only `session_id`) and drops their
/// fallback tokens; returns how many sessions were revoked.
pub async fn revoke_sessions(
    db: &Db,
    user_id: &str,
    session_id: Option<&str>,
    reason: &str,
) -> ApiResult<u64> {
    let now = db::now();
    let mut tx = db.begin().await?;
    // Fallback tokens first, then sessions: the order a refresh takes them in (it consumes
    // its token's row, then updates its session's). In the other order a revocation and a
    // refresh of a token held in SQL each waited for the other's row, and PostgreSQL broke
    // the deadlock with a 500 for one of them (found by a black-box probe).
    sqlx::query(
        "DELETE FROM refresh_tokens WHERE user_id = $1 AND ($2 IS NULL OR session_id = $2)",
    )
    .bind(user_id)
    .bind(session_id)
    .execute(&mut *tx)
    .await?;
    // Then the sessions one at a time in id order, the order a login past the cap ends them
    // in (`end_sessions_past`): one statement for all of them took their rows in the
    // table's scan order, and on PostgreSQL a revocation and such a login each waited for a
    // row the other held; "deadlock detected" answered one of them 500 (a test reproduced it
    // in four runs of five: `revoking_every_session_while_a_login_ends_sessions_past_the_cap_…`).
    let ids: Vec<(String,)> = sqlx::query_as(
        "SELECT id FROM sessions
         WHERE user_id = $1 AND revoked_at IS NULL AND ($2 IS NULL OR id = $2)",
    )
    .bind(user_id)
    .bind(session_id)
    .fetch_all(&mut *tx)
    .await?;
    let revoked = end_in_id_order(&mut tx, ids, &now, reason).await?;
    crate::db::commit(tx).await?;
    Ok(revoked)
}

/// The user's live sessions, newest first: not revoked, not expired, and started after
/// `started_after` (`SESSION_MAX_AGE` ago; an older one refreshes no more, so it is over
/// whatever its sliding expiry says).
pub async fn list_sessions(
    db: &Db,
    user_id: &str,
    started_after: &str,
    page: crate::pagination::Page,
) -> ApiResult<crate::pagination::Paginated<SessionRow>> {
    let mut filter = crate::pagination::Filter::default();
    let user = filter.bind(user_id);
    filter.and(format!("user_id = {user}"));
    filter.and("revoked_at IS NULL");
    let now = filter.bind(db::now());
    filter.and(format!("expires_at > {now}"));
    let started = filter.bind(started_after);
    filter.and(format!("created_at > {started}"));
    crate::pagination::fetch_page(
        db,
        "SELECT id, created_at, last_used_at, expires_at, user_agent, ip FROM sessions",
        "sessions",
        &filter,
        "created_at DESC, id",
        page,
    )
    .await
}

/// The (user, session) of the unrevoked session whose current refresh token is
/// `token_hash`: the session row's copy, which answers also when Redis has lost the token or
/// cannot be asked.
pub async fn session_of_token(db: &Db, token_hash: &str) -> ApiResult<Option<(String, String)>> {
    Ok(sqlx::query_as(
        "SELECT user_id, id FROM sessions WHERE token_hash = $1 AND revoked_at IS NULL",
    )
    .bind(token_hash)
    .fetch_optional(db.pool())
    .await?)
}

/// Whether `id` is a live session of `user_id` (as [`list_sessions`] counts them).
pub async fn is_live_session(
    db: &Db,
    user_id: &str,
    id: &str,
    started_after: &str,
) -> ApiResult<bool> {
    let found: Option<(String,)> = sqlx::query_as(
        "SELECT id FROM sessions
         WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL AND expires_at > $3
           AND created_at > $4",
    )
    .bind(id)
    .bind(user_id)
    .bind(db::now())
    .bind(started_after)
    .fetch_optional(db.pool())
    .await?;
    Ok(found.is_some())
}

/// Stores a refresh token's hash in SQL: a live one while Redis is down, or (`rotated`) one
/// already rotated, whose row then reveals a replay ([`rotated_token_session`]): a token
/// rotated through its session row (its Redis key gone, or Redis away), so that presenting
/// it again is seen as reuse wherever Redis is.
pub async fn insert_refresh_token<'c>(
    db: impl Executor<'c, Database = Any>,
    token_hash: &str,
    user_id: &str,
    session_id: &str,
    expires_at: &str,
    rotated: bool,
) -> ApiResult<()> {
    let now = db::now();
    sqlx::query(
        "INSERT INTO refresh_tokens (token_hash, user_id, session_id, created_at, expires_at, rotated_at)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (token_hash) DO NOTHING",
    )
    .bind(token_hash)
    .bind(user_id)
    .bind(session_id)
    .bind(&now)
    .bind(expires_at)
    .bind(rotated.then_some(&now))
    .execute(db)
    .await?;
    Ok(())
}

/// Atomically marks a live fallback token as rotated and returns it; `None` when there is
/// no such unrotated token. Of two concurrent calls with one token, only one gets it.
pub async fn consume_refresh_token<'c>(
    db: impl Executor<'c, Database = Any>,
    token_hash: &str,
) -> ApiResult<Option<ConsumedToken>> {
    Ok(sqlx::query_as(
        "UPDATE refresh_tokens SET rotated_at = $1
         WHERE token_hash = $2 AND rotated_at IS NULL
         RETURNING user_id, session_id, expires_at",
    )
    .bind(db::now())
    .bind(token_hash)
    .fetch_optional(db)
    .await?)
}

/// Whether the live session `session_id` names a live refresh token other than
/// `token_hash`: then `token_hash` was rotated, and presenting it is a replay.
pub async fn rotated_past<'c>(
    db: impl Executor<'c, Database = Any>,
    session_id: &str,
    token_hash: &str,
) -> ApiResult<bool> {
    let live: Option<(Option<String>,)> = sqlx::query_as(
        "SELECT token_hash FROM sessions WHERE id = $1 AND revoked_at IS NULL AND expires_at > $2",
    )
    .bind(session_id)
    .bind(db::now())
    .fetch_optional(db)
    .await?;
    Ok(matches!(live, Some((Some(live),)) if live != token_hash))
}

/// The session of a fallback token that was already rotated, if any.
pub async fn rotated_token_session(
    db: &Db,
    token_hash: &str,
) -> ApiResult<Option<(String, String)>> {
    Ok(sqlx::query_as(
        "SELECT user_id, session_id FROM refresh_tokens WHERE token_hash = $1 AND rotated_at IS NOT NULL",
    )
    .bind(token_hash)
    .fetch_optional(db.pool())
    .await?)
}

/// Deletes a fallback token; returns its (user id, session id).
pub async fn delete_refresh_token(
    db: &Db,
    token_hash: &str,
) -> ApiResult<Option<(String, String)>> {
    Ok(sqlx::query_as(
        "DELETE FROM refresh_tokens WHERE token_hash = $1 RETURNING user_id, session_id",
    )
    .bind(token_hash)
    .fetch_optional(db.pool())
    .await?)
}

/// Removes fallback tokens past their expiry, and the sealed answers of rotations past their
/// grace period (a database dump and an old rotated token together would open one), a
/// batch at a time.
///
/// On PostgreSQL it never waits for a row: each batch takes only rows no one holds (`FOR
/// UPDATE SKIP LOCKED`), and a row a request holds is left for the next purge. One
/// statement over every such row took them in the table's scan order while a revocation
/// took the same sessions one at a time in id order; each waited for a row the other held
/// and PostgreSQL rolled one back, the revocation's `DELETE /auth/sessions` answering 409
/// or the purge failing, in every run of
/// `revoking_every_session_while_expired_tokens_are_purged_never_fails`. SQLite runs one
/// write transaction at a time and has no row locks to skip.
pub async fn delete_expired_tokens(db: &Db) -> ApiResult<u64> {
    let now = db::now();
    let unheld = match db.backend() {
        db::Backend::Postgres => " FOR UPDATE SKIP LOCKED",
        db::Backend::Sqlite => "",
    };
    in_batches(
        db,
        &now,
        &format!(
            "UPDATE sessions SET replaced_answer = NULL WHERE id IN (
                 SELECT id FROM sessions WHERE replaced_answer IS NOT NULL AND replaced_until <= $1
                 ORDER BY id LIMIT $2{unheld})"
        ),
    )
    .await?;
    in_batches(
        db,
        &now,
        &format!(
            "DELETE FROM refresh_tokens WHERE token_hash IN (
                 SELECT token_hash FROM refresh_tokens WHERE expires_at <= $1
                 ORDER BY token_hash LIMIT $2{unheld})"
        ),
    )
    .await
}

/// Runs `sql` (bound to `now` and a batch size) until a batch finds fewer rows than it may
/// take; returns the rows it changed.
async fn in_batches(db: &Db, now: &str, sql: &str) -> ApiResult<u64> {
    const BATCH: u64 = 1000;
    let mut changed = 0;
    loop {
        let batch = sqlx::query(sql)
            .bind(now)
            .bind(BATCH as i64)
            .execute(db.pool())
            .await?
            .rows_affected();
        changed += batch;
        if batch < BATCH {
            return Ok(changed);
        }
    }
}
