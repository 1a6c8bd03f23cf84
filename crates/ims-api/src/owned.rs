//! Rows an organization owns (categories, tax rates, warehouses, contacts, items): reading
//! one, listing them by name, reading one back after an update and deleting one are the
//! same for each, so they are written once here over a description of the table
//! ([`Owned`]) and each area keeps only what is its own (fields, validation, the update's
//! columns).

use std::marker::PhantomData;

use axum::http::StatusCode;
use sqlx::any::{AnyQueryResult, AnyRow};

use crate::db::{Db, WriteTx};
use crate::error::{ApiError, ApiResult, Json};
use crate::fields;
use crate::pagination::{Filter, Page, Paginated};

/// A row type read with [`Owned`] queries.
pub trait Row: for<'r> sqlx::FromRow<'r, AnyRow> + Send + Unpin {}

impl<T> Row for T where T: for<'r> sqlx::FromRow<'r, AnyRow> + Send + Unpin {}

/// A table of rows owned by an organization, read as `T`. Every string is fixed SQL (or
/// words) from the code, never input.
pub struct Owned<T> {
    /// The table (`tax_rates`).
    table: &'static str,
    /// The alias `select` gives it (`i` for `FROM items i`), or `""`.
    alias: &'static str,
    /// `SELECT …columns… FROM table [alias] [joins]`, without a `WHERE`.
    select: &'static str,
    /// One row in words, for problems (`tax rate`).
    noun: &'static str,
    row: PhantomData<fn() -> T>,
}

/// How often a PATCH merges again when its row changed under it ([`Owned::patch`]): a few
/// concurrent writers of one row are all served; a crowd gets some 409s to retry.
pub const PATCH_TRIES: usize = 10;

/// The order of the lists by name: case-insensitive, then exact, then by id (stable pages).
pub const BY_NAME: &str = "LOWER(name), name, id";

impl<T: Row> Owned<T> {
    /// `table` (aliased `alias`, or `""`) read with `select` (`SELECT … FROM table [alias]
    /// [joins]`, no `WHERE`); `noun` names one row in problems.
    pub const fn new(
        table: &'static str,
        alias: &'static str,
        select: &'static str,
        noun: &'static str,
    ) -> Self {
        Self {
            table,
            alias,
            select,
            noun,
            row: PhantomData,
        }
    }

    fn column(&self, name: &str) -> String {
        if self.alias.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.alias)
        }
    }

    /// The caller's row `id`, or `404`.
    pub async fn find(&self, db: &Db, org_id: &str, id: &str) -> ApiResult<T> {
        self.find_on(db.pool(), org_id, id).await
    }

    async fn find_on<'c, E>(&self, on: E, org_id: &str, id: &str) -> ApiResult<T>
    where
        E: sqlx::Executor<'c, Database = sqlx::Any>,
    {
        let sql = format!(
            "{} WHERE {} = $1 AND {} = $2",
            self.select,
            self.column("organization_id"),
            self.column("id")
        );
        sqlx::query_as(&sql)
            .bind(org_id)
            .bind(id)
            .fetch_optional(on)
            .await?
            .ok_or_else(|| fields::not_found(self.noun))
    }

    /// A PATCH of the caller's row `id`, up to the open transaction its write goes into.
    /// `merge` makes the validated input from the row as it is now (it may read the
    /// database); the transaction then locks the row (a no-op `UPDATE`: PostgreSQL's row
    /// lock; SQLite's write transaction holds the database already) and reads it again. If
    /// it is no longer the row `merge` saw, another write came between, and `merge` runs
    /// again on the new row, at most [`PATCH_TRIES`] times, then 409. The whole row is
    /// compared, not its `updated_at`: two writes of one row within a millisecond (common on
    /// SQLite) leave the same stamp, and a test saw a field lost that way.
    ///
    /// The merged row is written back whole: without this, two concurrent PATCHes of
    /// different fields each wrote the other's old values back (a probe lost fields in 14
    /// of 15 tries). The merge runs before the transaction, not inside it under the lock:
    /// its validation would wait for a second connection while the transaction held one,
    /// and with every connection held by such a PATCH all of them timed out.
    pub async fn patch<I, M, Fut>(
        &self,
        db: &Db,
        org_id: &str,
        id: &str,
        merge: M,
    ) -> ApiResult<(WriteTx, I)>
    where
        T: Clone + PartialEq,
        M: Fn(T) -> Fut,
        Fut: std::future::Future<Output = ApiResult<I>>,
    {
        for _ in 0..PATCH_TRIES {
            let seen = self.find(db, org_id, id).await?;
            let input = merge(seen.clone()).await?;
            let mut tx = db.begin_write().await?;
            self.lock(&mut tx, org_id, id).await?;
            if self.find_on(&mut *tx, org_id, id).await? == seen {
                return Ok((tx, input));
            }
            // Lost to another write of the row: merge again after a short random pause, so
            // that writers racing for one row do not keep colliding in step.
            drop(tx);
            let pause = rand::random::<u64>() % 4 + 1;
            tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
        }
        Err(ApiError::Conflict(format!(
            "the {} kept changing while this update was made; try again",
            self.noun
        )))
    }

    /// Locks the caller's row `id` until `tx` ends (a no-op `UPDATE`: PostgreSQL's row lock;
    /// SQLite's write transaction holds the database already), or `404`.
    pub async fn lock(&self, tx: &mut WriteTx, org_id: &str, id: &str) -> ApiResult<()> {
        let lock = format!(
            "UPDATE {} SET updated_at = updated_at WHERE organization_id = $1 AND id = $2",
            self.table
        );
        let locked = sqlx::query(&lock)
            .bind(org_id)
            .bind(id)
            .execute(&mut **tx)
            .await?;
        if locked.rows_affected() == 0 {
            return Err(fields::not_found(self.noun));
        }
        Ok(())
    }

    /// A filter holding the caller's organization, for more conditions to be added.
    pub fn of_organization(&self, org_id: &str) -> Filter {
        let mut filter = Filter::default();
        let org = filter.bind(org_id);
        filter.and(format!("{} = {org}", self.column("organization_id")));
        filter
    }

    /// One page of the rows `filter` keeps, in `order`, with their total.
    pub async fn page(
        &self,
        db: &Db,
        filter: &Filter,
        order: &str,
        page: Page,
    ) -> ApiResult<Json<Paginated<T>>> {
        let from = format!("{} {}", self.table, self.alias);
        crate::pagination::fetch_page(db, self.select, &from, filter, order, page)
            .await
            .map(Json)
    }

    /// After an `UPDATE` of the caller's row `id`: `404` if it changed no row, else the row
    /// as it is now.
    pub async fn read_back(
        &self,
        db: &Db,
        org_id: &str,
        id: &str,
        written: AnyQueryResult,
    ) -> ApiResult<Json<T>> {
        if written.rows_affected() == 0 {
            return Err(fields::not_found(self.noun));
        }
        Ok(Json(self.find(db, org_id, id).await?))
    }

    /// Deletes the caller's row `raw_id` (`404` if there is none, `409` if others refer
    /// to it).
    pub async fn delete(&self, db: &Db, org_id: &str, raw_id: &str) -> ApiResult<StatusCode> {
        let sql = format!(
            "DELETE FROM {} WHERE organization_id = $1 AND id = $2",
            self.table
        );
        fields::delete_owned(db, &sql, org_id, raw_id, self.noun).await?;
        Ok(StatusCode::NO_CONTENT)
    }
}
