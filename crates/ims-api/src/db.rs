//! The SQL store: one pool and one code path for SQLite (embedded default) and PostgreSQL.
//!
//! Queries go through sqlx's `Any` driver with `$1` placeholders, which both engines accept,
//! and the schema uses only portable types (TEXT ids and timestamps, BIGINT numbers), so the
//! same migrations and queries run on both and the same test suite covers both.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::any::{AnyPoolOptions, AnyQueryResult};
use sqlx::AnyPool;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// The migrations this binary carries (`migrations/`).
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Which engine a URL points at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// `sqlite:` URLs.
    Sqlite,
    /// `postgres:` and `postgresql:` URLs.
    Postgres,
}

impl Backend {
    /// The engine named by `url`'s scheme, if it is one we support.
    pub fn from_url(url: &str) -> Option<Self> {
        let scheme = url.split(':').next()?;
        match scheme {
            "sqlite" => Some(Self::Sqlite),
            "postgres" | "postgresql" => Some(Self::Postgres),
            _ => None,
        }
    }
}

/// A statement for either engine, with its arguments bound.
pub type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

/// A connection pool plus the engine it talks to.
#[derive(Clone, Debug)]
pub struct Db {
    pool: AnyPool,
    /// One connection of its own for `ping` (health and readiness): a pool busy with slow
    /// reports made them wait two seconds for a connection and call the database down
    /// (probe 24), while it was only busy. Opened on first use, reopened when lost.
    probe: AnyPool,
    /// For the migrations' own connection.
    url: Secret,
    backend: Backend,
    /// SQLite only: write transactions queue here, in order, instead of polling the file
    /// lock (SQLite's busy handler sleeps up to 100 ms between tries, which made the
    /// slowest writes under concurrency tens of milliseconds).
    writers: Option<Arc<tokio::sync::Mutex<()>>>,
}

/// The database URL, which may hold a password: never in a `Debug` print of the state.
#[derive(Clone)]
struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<DATABASE_URL>")
    }
}

/// A write transaction from [`Db::begin_write`]: use it as the connection (`&mut *tx`) and
/// end it with [`commit`](Self::commit); dropped, it rolls back.
pub struct WriteTx {
    tx: sqlx::Transaction<'static, sqlx::Any>,
    _turn: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl WriteTx {
    /// Commits; the next writer's turn comes after. Runs to its end even if the request is
    /// abandoned meanwhile ([`finish`]).
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        durable();
        let Self { tx, _turn: turn } = self;
        finish(async move {
            let committed = tx.commit().await;
            drop(turn);
            committed
        })
        .await
    }
}

/// A pooled connection that is closed rather than returned to the pool when dropped while
/// still held (its holder was abandoned with a script half-run); taken out, it returns.
struct CloseIfAbandoned(Option<sqlx::pool::PoolConnection<sqlx::Any>>);

impl CloseIfAbandoned {
    /// Done with it: the connection goes back to the pool.
    fn release(&mut self) {
        self.0.take();
    }
}

impl std::ops::Deref for CloseIfAbandoned {
    type Target = sqlx::pool::PoolConnection<sqlx::Any>;

    fn deref(&self) -> &Self::Target {
        // Set from construction until the last use; `take` comes after it.
        self.0
            .as_ref()
            .unwrap_or_else(|| unreachable!("used after it was released"))
    }
}

impl std::ops::DerefMut for CloseIfAbandoned {
    fn deref_mut(&mut self) -> &mut Self::Target {
        self.0
            .as_mut()
            .unwrap_or_else(|| unreachable!("used after it was released"))
    }
}

impl Drop for CloseIfAbandoned {
    fn drop(&mut self) {
        if let Some(conn) = self.0.take() {
            drop(conn.detach());
        }
    }
}

/// Runs `work` (a `BEGIN`, a `COMMIT`) in a task of its own and waits for it. A request
/// abandoned at its time-out drops the future that waits, not the work: the work
/// finishes, and a transaction it began is dropped whole and rolled back. Dropped half-way, a `BEGIN` left its pooled connection inside a
/// transaction nobody owned: on PostgreSQL the next requests' statements ran inside it (a
/// `DELETE` answered 204 and was never applied), on SQLite it kept the write lock for
/// minutes and the next `BEGIN` on that connection failed (found by a black-box probe with
/// a 2–10 ms `REQUEST_TIMEOUT_MS`).
async fn finish<T: Send + 'static>(
    work: impl std::future::Future<Output = Result<T, sqlx::Error>> + Send + 'static,
) -> Result<T, sqlx::Error> {
    tokio::spawn(work)
        .await
        .map_err(|e| sqlx::Error::Protocol(format!("a database step failed to finish: {e}")))?
}

tokio::task_local! {
    /// Set once the request running in this task has sent something that may take effect
    /// in the database (a `COMMIT`, an autocommitted statement), scoped per write request by
    /// [`crate::error::RequestTimeout`].
    static DURABLE: Arc<AtomicBool>;
}

/// Runs `request` with its own durability flag, which [`durable`] sets.
pub fn watch_durable<F: std::future::Future>(
    flag: Arc<AtomicBool>,
    request: F,
) -> tokio::task::futures::TaskLocalFuture<Arc<AtomicBool>, F> {
    DURABLE.scope(flag, request)
}

/// Marks the running request as having sent a write that may already have taken effect:
/// from here on, abandoning it at its time-out would answer "try again" for a change that
/// was made (a probe saw 3 of 60 adjustments saved that way with a tiny time-out), so the
/// time-out waits for its outcome instead. Outside a watched request, nothing happens.
pub fn durable() {
    let _ = DURABLE.try_with(|flag| flag.store(true, Ordering::Relaxed));
}

/// Commits `tx`, a transaction from [`Db::begin`] (the auth tables), as
/// [`WriteTx::commit`] does.
pub async fn commit(tx: sqlx::Transaction<'static, sqlx::Any>) -> Result<(), sqlx::Error> {
    durable();
    finish(tx.commit()).await
}

impl std::ops::Deref for WriteTx {
    type Target = sqlx::AnyConnection;

    fn deref(&self) -> &Self::Target {
        &self.tx
    }
}

impl std::ops::DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.tx
    }
}

/// Where a write goes: on its own ([`Db::execute_write`]: autocommit, with the request's
/// outbox record) or into a transaction the caller holds open (a PATCH holds its row's lock
/// from the read it merges into to the write).
pub enum Writer<'a> {
    /// A statement of its own.
    Alone(&'a Db),
    /// A statement of an open transaction.
    In(&'a mut WriteTx),
}

impl Writer<'_> {
    /// Runs `query` where this writer writes.
    pub async fn execute(self, query: AnyQuery<'_>) -> Result<AnyQueryResult, sqlx::Error> {
        match self {
            Self::Alone(db) => db.execute_write(query).await,
            Self::In(tx) => query.execute(&mut **tx).await,
        }
    }
}

/// A pool on `url`; on SQLite, each connection with `synchronous = NORMAL` and the file in
/// WAL mode.
async fn open(
    url: &str,
    backend: Backend,
    max_connections: u32,
    statement_timeout: Option<Duration>,
) -> Result<AnyPool, sqlx::Error> {
    let pool = AnyPoolOptions::new()
        .max_connections(max_connections)
        // A database that refuses connections is noticed within two seconds (and cached
        // routes may then answer stale, see CACHE_GRACE), not after sqlx's default 30 s.
        .acquire_timeout(Duration::from_secs(2))
        .after_connect(move |conn, _meta| {
            Box::pin(async move {
                if backend == Backend::Sqlite {
                    // In WAL mode NORMAL only syncs at checkpoints: a commit stays atomic
                    // and survives an application crash; only an OS crash or power cut
                    // can lose the last commits. FULL would fsync every commit.
                    sqlx::query("PRAGMA synchronous = NORMAL")
                        .execute(&mut *conn)
                        .await?;
                }
                if let (Backend::Postgres, Some(limit)) = (backend, statement_timeout) {
                    // A request given up at its time-out drops its query's future, but
                    // PostgreSQL runs the statement to its end: a probe saw reports run
                    // 25 s past their 503, and each "try again" add another. No statement
                    // may outlast the request that asked for it.
                    // At least a second: a request cut short at a few milliseconds still
                    // finishes the rotation or commit it had begun (`durable`, `finish`).
                    let ms = limit.as_millis().max(1000);
                    sqlx::query(&format!("SET statement_timeout = {ms}"))
                        .execute(&mut *conn)
                        .await?;
                }
                Ok(())
            })
        })
        .connect(url)
        .await?;
    if backend == Backend::Sqlite {
        // WAL lets readers proceed while one writer commits; the setting is stored in
        // the file, so once is enough.
        sqlx::query("PRAGMA journal_mode = WAL")
            .execute(&pool)
            .await?;
    }
    Ok(pool)
}

/// SQLite's "busy" or "locked" (primary codes 5 and 6, with their extended codes).
fn busy(error: &sqlx::Error) -> bool {
    let sqlx::Error::Database(e) = error else {
        return false;
    };
    e.code()
        .and_then(|code| code.parse::<i32>().ok())
        .is_some_and(|code| matches!(code & 0xff, 5 | 6))
}

impl Db {
    /// Connects to `url` (creating the SQLite file when the URL says `mode=rwc`) with the
    /// engine's default pool size.
    pub async fn connect(url: &str) -> Result<Self, sqlx::Error> {
        Self::connect_with(url, None, None).await
    }

    /// Connects with at most `max_connections` (`DATABASE_MAX_CONNECTIONS`; `None`: 8 for
    /// SQLite, 16 for PostgreSQL). On PostgreSQL, no statement runs longer than
    /// `statement_timeout` (the server's request time-out), but migrations.
    pub async fn connect_with(
        url: &str,
        max_connections: Option<u32>,
        statement_timeout: Option<Duration>,
    ) -> Result<Self, sqlx::Error> {
        sqlx::any::install_default_drivers();
        let backend = Backend::from_url(url)
            .ok_or_else(|| sqlx::Error::Configuration(format!("unsupported URL {url}").into()))?;
        let max_connections = max_connections.unwrap_or(match backend {
            // SQLite serialises writers anyway; a few readers in WAL mode are plenty.
            Backend::Sqlite => 8,
            Backend::Postgres => 16,
        });
        // Instances starting together on one new SQLite file contend for it while one
        // creates it, switches it to WAL or migrates it, and SQLite answers some of those
        // contentions "database is locked" at once instead of through the busy time-out
        // (seen about once in 30 starts of three instances). Opening is tried again until
        // the file is free, for at most ten seconds; so is a first connection slower than
        // the pool's two-second acquire time-out (a start under valgrind, a database that
        // is itself starting), which is meant for requests, not for start-up.
        let deadline = Instant::now() + Duration::from_secs(10);
        let pool = loop {
            match open(url, backend, max_connections, statement_timeout).await {
                Err(e)
                    if (backend == Backend::Sqlite && busy(&e)
                        || matches!(e, sqlx::Error::PoolTimedOut))
                        && Instant::now() < deadline =>
                {
                    tracing::debug!("the SQLite file is busy ({e}); opening it again");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                result => break result?,
            }
        };
        let writers = (backend == Backend::Sqlite).then(Arc::default);
        let probe = AnyPoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .acquire_timeout(Duration::from_secs(2))
            .connect_lazy(url)?;
        Ok(Self {
            pool,
            probe,
            url: Secret(url.to_string()),
            backend,
            writers,
        })
    }

    /// Applies the embedded migrations that have not run yet.
    ///
    /// PostgreSQL serialises concurrent migrators with an advisory lock. sqlx takes no lock
    /// on SQLite, so several processes starting at once on a new file race: the losers
    /// fail on a table the winner just created (each migration is its own transaction, so
    /// nothing half-applied stays). They try again, and find the migrations applied.
    pub async fn migrate(&self) -> Result<(), sqlx::migrate::MigrateError> {
        let mut attempt = 0;
        loop {
            match self.run_migrations().await {
                Err(e) if self.backend == Backend::Sqlite && attempt < 20 => {
                    attempt += 1;
                    tracing::debug!("migration attempt {attempt} failed ({e}); retrying");
                    tokio::time::sleep(Duration::from_millis(100 * attempt.min(5))).await;
                }
                result => return result,
            }
        }
    }

    /// Runs the migrator; on PostgreSQL on a connection of its own, without the pool's
    /// statement time-out (building an index on a large table may take longer than any
    /// request).
    async fn run_migrations(&self) -> Result<(), sqlx::migrate::MigrateError> {
        if self.backend != Backend::Postgres {
            return MIGRATOR.run(&self.pool).await;
        }
        let own = AnyPoolOptions::new()
            .max_connections(1)
            .connect(&self.url.0)
            .await?;
        let result = MIGRATOR.run(&own).await;
        own.close().await;
        result
    }

    /// How many of this version's migrations the database has not applied (all of them
    /// when it has no migration table yet): with `MIGRATE_ON_START=false`, start-up refuses
    /// a database that lacks any, rather than report ready and answer every request with a
    /// 500 on a missing table (a black-box probe).
    pub async fn missing_migrations(&self) -> usize {
        let applied: Vec<i64> =
            sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success = TRUE")
                .fetch_all(&self.pool)
                .await
                .unwrap_or_default();
        MIGRATOR
            .iter()
            .filter(|m| !m.migration_type.is_down_migration() && !applied.contains(&m.version))
            .count()
    }

    /// The pool, for queries.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Starts a transaction that will write. On SQLite it takes the write lock up front
    /// (`BEGIN IMMEDIATE`): a deferred transaction that reads and then writes can fail with
    /// SQLITE_BUSY_SNAPSHOT under concurrency, which no busy time-out cures. PostgreSQL's row
    /// locks make a plain `BEGIN` right there.
    ///
    /// When the request runs under an `invalidates` policy with the outbox on, the
    /// transaction starts by recording the invalidation (`crate::outbox`): the record
    /// commits with the write, or neither does.
    pub async fn begin_write(&self) -> Result<WriteTx, sqlx::Error> {
        let turn = self.write_turn().await;
        let mut tx = match self.backend {
            Backend::Sqlite => self.begin_with(Some("BEGIN IMMEDIATE")).await?,
            Backend::Postgres => self.begin().await?,
        };
        if let Some(pending) = ims_redis::invalidate::pending() {
            if pending.mark_recorded() {
                crate::outbox::record_in(&mut tx, &pending).await?;
            }
        }
        Ok(WriteTx { tx, _turn: turn })
    }

    /// Runs one writing statement: alone (autocommit) when there is nothing to record, else
    /// together with the invalidation's record, atomically and in one hand-off to the
    /// engine (see `Self::execute_recorded`).
    pub async fn execute_write<'q>(
        &self,
        query: AnyQuery<'q>,
    ) -> Result<AnyQueryResult, sqlx::Error> {
        let Some(pending) = ims_redis::invalidate::pending() else {
            // Durable once it has a connection to go out on, not while it waits for one
            // (a request abandoned in the pool's queue wrote nothing).
            let mut conn = self.pool.acquire().await?;
            durable();
            return query.execute(&mut *conn).await;
        };
        if pending.mark_recorded() {
            return self.execute_recorded(query, &pending).await;
        }
        // Recorded already by an earlier write of this request.
        let mut tx = self.begin_write().await?;
        let done = query.execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(done)
    }

    /// A write and its outbox record as one unit sent at once. A transaction of separate
    /// statements (`BEGIN`, record, write, `COMMIT`) costs four round trips to PostgreSQL
    /// or four hand-offs to SQLite's worker thread, each a wake-up on both sides, and made
    /// a one-statement write 20 to 80 % slower.
    ///
    /// - PostgreSQL: one statement, the record in a data-modifying `WITH` before the write
    ///   (atomic like any statement; the count is the write's).
    /// - SQLite: one script, `BEGIN IMMEDIATE; record; write; COMMIT`. sqlx-sqlite runs
    ///   every statement of a query string and numbers `$N` parameters across them. A
    ///   failure stops the script inside its transaction, which is rolled back before the
    ///   connection goes back to the pool.
    ///
    /// Either way the record's values are bound after the write's, as `$n+1` to `$n+4`.
    async fn execute_recorded<'q>(
        &self,
        mut query: AnyQuery<'q>,
        pending: &ims_redis::invalidate::PendingInvalidation,
    ) -> Result<AnyQueryResult, sqlx::Error> {
        use sqlx::{Arguments, Execute};
        let sql = query.sql();
        let mut arguments = query
            .take_arguments()
            .map_err(sqlx::Error::Encode)?
            .unwrap_or_default();
        let n = arguments.len();
        arguments.add(pending.id()).map_err(sqlx::Error::Encode)?;
        arguments
            .add(pending.scope())
            .map_err(sqlx::Error::Encode)?;
        arguments
            .add(pending.groups().join(","))
            .map_err(sqlx::Error::Encode)?;
        arguments.add(now()).map_err(sqlx::Error::Encode)?;
        let record = format!(
            "INSERT INTO cache_outbox (id, organization_id, cache_groups, created_at)
             VALUES (${}, ${}, ${}, ${})",
            n + 1,
            n + 2,
            n + 3,
            n + 4
        );
        if self.backend == Backend::Postgres {
            let statement = format!("WITH recorded AS ({record}) {sql}");
            let mut conn = self.pool.acquire().await?;
            durable();
            return sqlx::query_with(&statement, arguments)
                .execute(&mut *conn)
                .await;
        }
        let script = format!("BEGIN IMMEDIATE; {record}; {sql}; COMMIT");
        let _turn = self.write_turn().await;
        // The script opens and closes its transaction; abandoned half-way (the request's
        // time-out), its connection must not go back to the pool inside it (see `finish`):
        // it is closed instead, and SQLite rolls back what it had not committed.
        let mut conn = CloseIfAbandoned(Some(self.pool.acquire().await?));
        durable();
        let results = {
            use futures::TryStreamExt;
            sqlx::Executor::execute_many(&mut **conn, sqlx::query_with(&script, arguments))
                .try_collect::<Vec<AnyQueryResult>>()
                .await
        };
        let answer = match results {
            // One result per statement: the write's is the third (SQLite's change count
            // after `COMMIT` repeats the last write's, so the sum would be wrong).
            Ok(results) => results.into_iter().nth(2).ok_or_else(|| {
                sqlx::Error::Protocol("the write script returned too few results".into())
            }),
            Err(e) => {
                if sqlx::query("ROLLBACK").execute(&mut **conn).await.is_err() {
                    // Nothing to roll back (it failed at BEGIN) or a connection in doubt:
                    // rare either way, and a closed connection cannot leak a transaction.
                    if let Some(conn) = conn.0.take() {
                        let _ = conn.close().await;
                    }
                }
                Err(e)
            }
        };
        conn.release();
        answer
    }

    /// A transaction on the pool, begun whole even if the request is abandoned meanwhile
    /// ([`finish`]).
    pub async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, sqlx::Error> {
        self.begin_with(None).await
    }

    /// [`Self::begin`] with `statement` instead of `BEGIN`.
    pub async fn begin_with(
        &self,
        statement: Option<&'static str>,
    ) -> Result<sqlx::Transaction<'static, sqlx::Any>, sqlx::Error> {
        let pool = self.pool.clone();
        finish(async move {
            match statement {
                Some(statement) => pool.begin_with(statement).await,
                None => pool.begin().await,
            }
        })
        .await
    }

    /// On SQLite, this process's turn to write, held until dropped: writers queue here
    /// instead of meeting at SQLite's lock, whose busy handler sleeps for milliseconds.
    /// Nothing to wait for on PostgreSQL.
    pub async fn write_turn(&self) -> Option<tokio::sync::OwnedMutexGuard<()>> {
        match &self.writers {
            Some(writers) => Some(writers.clone().lock_owned().await),
            None => None,
        }
    }

    /// The engine behind the pool.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// A real `SELECT 1` round trip; its duration.
    pub async fn ping(&self) -> Result<Duration, sqlx::Error> {
        let started = Instant::now();
        let _: AnyQueryResult = sqlx::query("SELECT 1").execute(&self.probe).await?;
        Ok(started.elapsed())
    }

    /// Closes every connection; later queries fail. Used on shutdown.
    pub async fn close(&self) {
        self.probe.close().await;
        self.pool.close().await;
    }
}

/// `count` numbered placeholders from `$first` on, comma-separated: the inside of an
/// `IN (…)` list (both engines take `$N`).
pub fn placeholders(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|n| format!("${n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The current time as stored in the database: RFC 3339 UTC with milliseconds, fixed width,
/// so text comparison orders it correctly on both engines.
pub fn now() -> String {
    timestamp(OffsetDateTime::now_utc())
}

/// `at` in the stored timestamp format.
pub fn timestamp(at: OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    let millis = at.millisecond();
    let at = at.replace_nanosecond(0).unwrap_or(at);
    let base = at
        .format(&Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into());
    // Rfc3339 prints `...:SSZ` without fractions when they are zero; add fixed milliseconds.
    format!("{}.{millis:03}Z", base.trim_end_matches('Z'))
}

/// True when `e` is a unique-constraint violation (on either engine).
pub fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// True when `e` is a foreign-key violation (on either engine): a delete of a row others
/// still refer to, or a write pointing at a row that is gone.
pub fn is_foreign_key_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_foreign_key_violation())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_fixed_width_and_sortable() {
        let a = timestamp(time::macros::datetime!(2026-01-02 03:04:05 UTC));
        let b = timestamp(time::macros::datetime!(2026-01-02 03:04:05.5 UTC));
        assert_eq!(a, "2026-01-02T03:04:05.000Z");
        assert_eq!(b, "2026-01-02T03:04:05.500Z");
        assert!(a < b);
    }

    #[test]
    fn backends_by_scheme() {
        assert_eq!(Backend::from_url("sqlite://x.db"), Some(Backend::Sqlite));
        assert_eq!(
            Backend::from_url("postgres://h/db"),
            Some(Backend::Postgres)
        );
        assert_eq!(Backend::from_url("mysql://h/db"), None);
    }
}
