//! The invalidation outbox: no acknowledged write is hidden behind a stale cache entry for
//! longer than about a second on any instance that can reach Redis, whatever happens to the
//! instance that wrote it.
//!
//! The in-request invalidation (`ims_redis::invalidate`) is the fast path. It is lost when
//! the writer dies between its commit and the invalidation, or cannot reach Redis while
//! other instances can. So every invalidating write records what it invalidates in SQL,
//! inside its own transaction ([`record_in`], called by `Db::begin_write`): the record
//! commits with the write or not at all, at the price of one small `INSERT` and no extra
//! commit. The writer marks the record done once Redis applied it. Every instance polls for
//! records left undone ([`run`]) and applies them once they are [`APPLY_DELAY`] old (the
//! fast path normally won by then; less when the L1 bound is shorter, [`pace`]). A record
//! is visible only once its write has committed, so one application after that suffices;
//! applying twice (the writer and a poll) is harmless: invalidation bumps epochs and
//! deletes, nothing else.

use std::time::Duration;

use ims_redis::invalidate::{InvalidationJournal, JournalFuture as BoxFuture, PendingInvalidation};

use crate::db::{self, Db};
use crate::state::AppState;

/// Records younger than this are left to their writer's fast path (at most; see [`pace`]).
pub const APPLY_DELAY: Duration = Duration::from_millis(250);

/// How often every instance looks for records left undone (at most; see [`pace`]).
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// The shortest [`pace`]: four polls of an index range, a few hundred microseconds each, in
/// every 100 ms per instance.
pub const MIN_PACE: Duration = Duration::from_millis(25);

/// How long a record is left to its writer, and how often the poll looks: 250 ms, or a
/// quarter of `CACHE_L1_MAX_STALE_MS` when that is shorter (at least [`MIN_PACE`]). A record
/// left by a writer cut off from Redis is applied within two paces of its commit, so an L1
/// route's bound holds then too: at 250 ms a pace, a `CACHE_L1_MAX_STALE_MS` of 300 was
/// exceeded by up to 185 ms (a black-box probe).
pub fn pace(l1_max_stale: Duration) -> Duration {
    if l1_max_stale.is_zero() {
        return POLL_INTERVAL;
    }
    (l1_max_stale / 4).clamp(MIN_PACE, POLL_INTERVAL)
}

/// The poll: records made [`APPLY_DELAY`] ago or earlier, oldest first, found by their
/// time-ordered ids on the primary key (`$1` is the cutoff, `$2` the batch).
pub const POLL_SQL: &str = "SELECT id, organization_id, cache_groups FROM cache_outbox
     WHERE id < $1
     ORDER BY id
     LIMIT $2";

/// Records applied per poll at most.
const BATCH: i64 = 500;

/// The outbox in the application's SQL database.
pub struct SqlJournal {
    db: Db,
    /// Records this instance's writers applied, marked done in one statement per poll
    /// rather than one commit per write (SQLite has one write lock).
    completed: std::sync::Mutex<Vec<String>>,
    /// Test fault point (`IMS_FAULT_ABORT_AFTER_COMMIT=1`): abort the process after a
    /// write committed and before Redis hears of it, as a crash would. Only in debug builds
    /// (the tests'): a stray variable must not be able to crash a release server.
    abort_after_commit: bool,
}

impl SqlJournal {
    /// The journal over `db`.
    pub fn new(db: Db) -> Self {
        let abort_after_commit = cfg!(debug_assertions)
            && std::env::var("IMS_FAULT_ABORT_AFTER_COMMIT").is_ok_and(|v| v == "1");
        Self {
            db,
            completed: std::sync::Mutex::new(Vec::new()),
            abort_after_commit,
        }
    }
}

/// Records `pending` in the write transaction `tx`.
pub async fn record_in(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    pending: &PendingInvalidation,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO cache_outbox (id, organization_id, cache_groups, created_at)
         VALUES ($1, $2, $3, $4)",
    )
    .bind(pending.id())
    .bind(pending.scope())
    .bind(pending.groups().join(","))
    .bind(db::now())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

impl InvalidationJournal for SqlJournal {
    fn records_in_write(&self) -> bool {
        true
    }

    /// The fallback for a write that opened no recording transaction: its own commit.
    fn record<'a>(&'a self, scope: &'a str, groups: &'a [String]) -> BoxFuture<'a, Option<String>> {
        Box::pin(async move {
            let id = ims_redis::invalidate::record_id();
            let recorded = sqlx::query(
                "INSERT INTO cache_outbox (id, organization_id, cache_groups, created_at)
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(&id)
            .bind(scope)
            .bind(groups.join(","))
            .bind(db::now())
            .execute(self.db.pool())
            .await;
            match recorded {
                Ok(_) => Some(id),
                Err(e) => {
                    tracing::warn!("invalidation outbox: cannot record: {e}");
                    None
                }
            }
        })
    }

    fn committed<'a>(&'a self, _id: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if self.abort_after_commit {
                tracing::error!("IMS_FAULT_ABORT_AFTER_COMMIT: aborting after a commit");
                std::process::abort();
            }
        })
    }

    fn done<'a>(&'a self, id: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if let Ok(mut completed) = self.completed.lock() {
                completed.push(id.to_string());
            }
        })
    }
}

impl SqlJournal {
    /// Deletes the records completed since the last call, a few hundred per statement.
    /// Runs at the start of every poll, so a record applied by its writer is gone before
    /// any instance would consider re-applying it.
    async fn flush_completed(&self) -> Result<(), sqlx::Error> {
        let ids = match self.completed.lock() {
            Ok(mut completed) => std::mem::take(&mut *completed),
            Err(_) => return Ok(()),
        };
        for (at, chunk) in ids.chunks(200).enumerate() {
            let sql = format!(
                "DELETE FROM cache_outbox WHERE id IN ({})",
                crate::db::placeholders(1, chunk.len())
            );
            let mut query = sqlx::query(&sql);
            for id in chunk {
                query = query.bind(id);
            }
            let _turn = self.db.write_turn().await;
            if let Err(e) = query.execute(self.db.pool()).await {
                // The ids not deleted yet go back, for the next poll: dropped, their
                // records stayed until a poll applied them once more, on every instance
                // (a code review).
                if let Ok(mut completed) = self.completed.lock() {
                    completed.extend_from_slice(&ids[at * 200..]);
                }
                return Err(e);
            }
        }
        Ok(())
    }
}

#[derive(sqlx::FromRow)]
struct Pending {
    id: String,
    organization_id: String,
    cache_groups: String,
}

/// Applies records left undone, every [`pace`], while Redis is reachable. Runs on every
/// instance until the process ends.
pub async fn run(state: AppState, journal: std::sync::Arc<SqlJournal>) {
    let pace = pace(state.settings.cache_l1.max_stale);
    let mut failing = Failing::default();
    loop {
        tokio::time::sleep(pace).await;
        // At the same pace (nothing to delete, no statement): records this instance applied
        // but had not deleted yet look undone to the others, who would apply them again.
        let marked = journal.flush_completed().await;
        if let Err(e) = &marked {
            failing.failed(&format!("marking records done: {e}"));
        }
        if !state.redis.is_connected() {
            if marked.is_ok() {
                failing.recovered();
            }
            continue;
        }
        match apply_pending(&state).await {
            Err(e) => failing.failed(&e.to_string()),
            Ok(_) if marked.is_ok() => failing.recovered(),
            Ok(_) => {}
        }
    }
}

/// The poll's failures, logged as the Redis connection's are: one warning when they start
/// and one line when they stop. Every poll while the database was away logged a warning,
/// four a second per instance for as long as the outage lasted (a black-box probe).
#[derive(Default)]
struct Failing {
    since: Option<std::time::Instant>,
    polls: u64,
}

impl Failing {
    fn failed(&mut self, what: &str) {
        self.polls += 1;
        if self.since.is_none() {
            self.since = Some(std::time::Instant::now());
            tracing::warn!(
                "invalidation outbox: {what}; retrying every poll, logged again when it works"
            );
        } else {
            tracing::debug!("invalidation outbox: {what}");
        }
    }

    fn recovered(&mut self) {
        if let Some(since) = self.since.take() {
            tracing::info!(
                failed_polls = self.polls,
                "invalidation outbox works again after {:.1} s",
                since.elapsed().as_secs_f64()
            );
            self.polls = 0;
        }
    }
}

/// Applies every record left undone, however young, before the server takes its first
/// request (when Redis is reachable then), bounded by `limit`. Left-over records at start
/// are writes whose writers died before telling Redis; when every instance died with them,
/// nobody applied them, and without this a restarted instance served the entries they
/// invalidate until its first poll (a probe saw 9 such reads, 3.2 s after the write's
/// answer). A young record may be a live writer's on another instance: applying it early
/// is harmless (invalidating twice only bumps and deletes again).
pub async fn apply_left_over(state: &AppState, limit: Duration) {
    if !state.redis.is_connected() {
        return;
    }
    let drain = async {
        loop {
            match apply_batch(state, std::time::SystemTime::now()).await {
                Ok(applied) if applied < BATCH as usize => return Ok(()),
                Ok(_) => continue,
                Err(e) => return Err(e),
            }
        }
    };
    match tokio::time::timeout(limit, drain).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!("invalidation outbox at start: {e}"),
        Err(_) => tracing::warn!(
            "invalidation outbox at start: records still left after {} ms; the polls go on",
            limit.as_millis()
        ),
    }
}

async fn apply_pending(state: &AppState) -> Result<(), sqlx::Error> {
    let delay = pace(state.settings.cache_l1.max_stale);
    apply_batch(state, std::time::SystemTime::now() - delay)
        .await
        .map(|_| ())
}

/// Applies up to [`BATCH`] records made before `cutoff`, oldest first; how many it applied
/// (fewer than it found when Redis went away meanwhile).
async fn apply_batch(
    state: &AppState,
    cutoff: std::time::SystemTime,
) -> Result<usize, sqlx::Error> {
    let pending: Vec<Pending> = sqlx::query_as(POLL_SQL)
        .bind(ims_redis::invalidate::record_id_cutoff(cutoff))
        .bind(BATCH)
        .fetch_all(state.db.pool())
        .await?;
    let mut applied = 0;
    for record in pending {
        let groups: Vec<&str> = record.cache_groups.split(',').collect();
        if state
            .cache
            .invalidate(&record.organization_id, &groups)
            .await
            .is_none()
        {
            // Redis went away: the record stays for the next poll.
            return Ok(0);
        }
        let _turn = state.db.write_turn().await;
        sqlx::query("DELETE FROM cache_outbox WHERE id = $1")
            .bind(&record.id)
            .execute(state.db.pool())
            .await?;
        applied += 1;
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::{pace, Duration, Failing};

    #[test]
    fn failures_are_one_outage_until_a_poll_works() {
        let mut failing = Failing::default();
        failing.recovered();
        assert!(failing.since.is_none(), "nothing failed");
        failing.failed("the database is away");
        let since = failing.since;
        assert!(since.is_some());
        failing.failed("the database is away");
        failing.failed("the database is away");
        assert_eq!(failing.since, since, "one outage, not three");
        assert_eq!(failing.polls, 3);
        failing.recovered();
        assert!(failing.since.is_none());
        assert_eq!(failing.polls, 0);
    }

    #[test]
    fn a_quarter_of_the_l1_bound_between_25_and_250_ms() {
        let ms = Duration::from_millis;
        assert_eq!(pace(ms(1000)), ms(250));
        assert_eq!(pace(ms(60_000)), ms(250));
        assert_eq!(pace(ms(300)), ms(75));
        assert_eq!(pace(ms(40)), ms(25));
        assert_eq!(pace(Duration::ZERO), ms(250), "L1 off");
    }
}
