//! `page`/`limit` query parameters and the `{data, page, limit, total}` envelope every list
//! route answers with (contract §4).
//!
//! Parameters arrive as text and are parsed here rather than by serde, so that a bad value
//! is a 422 naming the parameter instead of a generic query-string error.

use serde::{Deserialize, Serialize};

use crate::error::Validator;

/// Page size when the client does not ask for one.
pub const DEFAULT_LIMIT: u32 = 20;
/// Largest page a client may ask for.
pub const MAX_LIMIT: u32 = 100;
/// Highest page number: the largest 32-bit signed integer, the most clients generated from
/// the document's `int32` can send. `OFFSET` then stays far inside `i64`.
pub const MAX_PAGE: u32 = i32::MAX as u32;

/// The raw `page` and `limit` parameters; flatten into a route's query struct.
///
/// Documented as integers (what clients send), though read as text to report bad values.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// 1-based page number, at most 2147483647; default 1.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 2147483647)]
    page: Option<String>,
    /// Rows per page, 1 to 100; default 20.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100)]
    limit: Option<String>,
}

/// A validated page request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    /// 1-based page number.
    pub page: u32,
    /// Rows per page, `1..=MAX_LIMIT`.
    pub limit: u32,
}

impl PageParams {
    /// The page asked for, when it is the only parameter: bad values are a 422.
    pub fn validated(&self) -> crate::error::ApiResult<Page> {
        let mut v = Validator::default();
        let page = self.parse(&mut v);
        v.finish()?;
        Ok(page)
    }

    /// The page asked for; bad values are recorded in `v` (and the defaults returned).
    pub fn parse(&self, v: &mut Validator) -> Page {
        let page = match self.page.as_deref() {
            None => 1,
            Some(raw) => {
                let parsed = raw
                    .parse::<u32>()
                    .ok()
                    .filter(|p| (1..=MAX_PAGE).contains(p));
                v.check(
                    parsed.is_some(),
                    "page",
                    &format!("must be a whole number from 1 to {MAX_PAGE}"),
                );
                parsed.unwrap_or(1)
            }
        };
        let limit = match self.limit.as_deref() {
            None => DEFAULT_LIMIT,
            Some(raw) => {
                let parsed = raw
                    .parse::<u32>()
                    .ok()
                    .filter(|l| (1..=MAX_LIMIT).contains(l));
                v.check(
                    parsed.is_some(),
                    "limit",
                    "must be a whole number from 1 to 100",
                );
                parsed.unwrap_or(DEFAULT_LIMIT)
            }
        };
        Page { page, limit }
    }
}

impl Page {
    /// Rows to skip, for SQL `OFFSET`.
    pub fn offset(&self) -> i64 {
        (i64::from(self.page) - 1) * i64::from(self.limit)
    }

    /// Rows to return, for SQL `LIMIT`.
    pub fn limit(&self) -> i64 {
        i64::from(self.limit)
    }

    /// Wraps one page of rows and the total row count.
    pub fn wrap<T>(self, data: Vec<T>, total: i64) -> Paginated<T> {
        Paginated {
            data,
            page: self.page,
            limit: self.limit,
            total,
        }
    }
}

/// One page of a list.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Paginated<T> {
    /// The rows of this page.
    pub data: Vec<T>,
    /// The page number that was asked for.
    pub page: u32,
    /// The page size that was asked for.
    pub limit: u32,
    /// Rows matching the filters over all pages.
    pub total: i64,
}

/// A list's `WHERE` clause, built from fixed SQL fragments with every client-supplied value
/// bound as a parameter (`$1`, `$2`, … in order), so the same clauses serve the count and
/// the page queries.
#[derive(Debug, Default)]
pub struct Filter {
    clauses: Vec<String>,
    binds: Vec<String>,
}

impl Filter {
    /// Binds `value`; returns its placeholder for the clause that uses it.
    pub fn bind(&mut self, value: impl Into<String>) -> String {
        self.binds.push(value.into());
        format!("${}", self.binds.len())
    }

    /// Adds a condition (ANDed with the others).
    pub fn and(&mut self, clause: impl Into<String>) {
        self.clauses.push(clause.into());
    }

    /// `WHERE …`, or nothing when there are no conditions.
    pub fn sql(&self) -> String {
        if self.clauses.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", self.clauses.join(" AND "))
        }
    }

    /// The placeholders for `LIMIT` and `OFFSET`, numbered after the filter's own.
    pub fn page_placeholders(&self) -> (String, String) {
        let n = self.binds.len();
        (format!("${}", n + 1), format!("${}", n + 2))
    }

    /// The bound values, in placeholder order.
    pub fn binds(&self) -> &[String] {
        &self.binds
    }
}

/// The shape shared by the order-like lists (sales orders, purchase orders, invoices): the
/// caller's organization, an optional `status` out of a fixed set, an optional
/// counterparty id, and a `from`/`to` period on one date column.
pub struct DocumentFilter<'a> {
    /// Accepted `status` values.
    pub statuses: &'a [&'a str],
    /// Query parameter and column of the counterparty (`customerId`, `customer_id`).
    pub party: (&'a str, &'a str),
    /// Column the period restricts.
    pub date_column: &'a str,
}

/// The query parameters of the order-like lists but the counterparty's, whose name differs
/// (`customerId`, `vendorId`): each list flattens this beside its own.
#[derive(Debug, serde::Deserialize)]
pub struct DocumentQuery {
    status: Option<String>,
    from: Option<String>,
    to: Option<String>,
    #[serde(flatten)]
    page: PageParams,
}

impl DocumentFilter<'_> {
    /// Validates the parameters (every problem goes into one 422) and builds the filter.
    pub fn build(
        &self,
        org_id: &str,
        query: DocumentQuery,
        party: Option<String>,
    ) -> crate::error::ApiResult<(Filter, Page)> {
        let DocumentQuery {
            status,
            from,
            to,
            page,
        } = query;
        let (from, to) = (from.as_deref(), to.as_deref());
        let mut v = Validator::default();
        let page = page.parse(&mut v);
        let party = crate::fields::reference(party, self.party.0, &mut v);
        v.check(
            status.as_deref().is_none_or(|s| self.statuses.contains(&s)),
            "status",
            &format!("must be one of {}", self.statuses.join(", ")),
        );
        let period = crate::period::Period::parse(from, to, &mut v);
        v.finish()?;
        let mut filter = Filter::default();
        let org = filter.bind(org_id);
        filter.and(format!("organization_id = {org}"));
        if let Some(status) = status {
            let p = filter.bind(status);
            filter.and(format!("status = {p}"));
        }
        if let Some(party) = party {
            let p = filter.bind(party);
            filter.and(format!("{} = {p}", self.party.1));
        }
        period.restrict(&mut filter, self.date_column);
        Ok((filter, page))
    }
}

/// A newest-first page (by `created_at`, then `id`) of `table` rows matching `filter`, with
/// the total count. `columns` and `table` are fixed SQL from the caller, never input.
pub async fn newest_first<T>(
    db: &crate::db::Db,
    columns: &str,
    table: &str,
    filter: Filter,
    page: Page,
) -> crate::error::ApiResult<Paginated<T>>
where
    T: for<'r> sqlx::FromRow<'r, sqlx::any::AnyRow> + Send + Unpin,
{
    let select = format!("SELECT {columns} FROM {table}");
    fetch_page(
        db,
        &select,
        table,
        &filter,
        "created_at DESC, id DESC",
        page,
    )
    .await
}

/// One page of what `select` (`SELECT … FROM …`, no `WHERE`) reads under `filter`, in
/// `order`, with the total count of rows in `from` (the table, with its alias) that
/// `filter` keeps. Every SQL string is fixed by the caller, never input.
pub async fn fetch_page<T>(
    db: &crate::db::Db,
    select: &str,
    from: &str,
    filter: &Filter,
    order: &str,
    page: Page,
) -> crate::error::ApiResult<Paginated<T>>
where
    T: for<'r> sqlx::FromRow<'r, sqlx::any::AnyRow> + Send + Unpin,
{
    let (limit, offset) = filter.page_placeholders();
    let sql = format!(
        "{select} {} ORDER BY {order} LIMIT {limit} OFFSET {offset}",
        filter.sql()
    );
    let count_sql = format!("SELECT COUNT(*) FROM {from} {}", filter.sql());
    let mut rows = sqlx::query_as::<_, T>(&sql);
    let mut count = sqlx::query_scalar::<_, i64>(&count_sql);
    for b in filter.binds() {
        rows = rows.bind(b);
        count = count.bind(b);
    }
    // The count first: a page past the end is empty without its `OFFSET` scan, which reads
    // every matching row to skip them (a probe's `page=2147483647` paid for both).
    let total = count.fetch_one(db.pool()).await?;
    if page.offset() >= total {
        return Ok(page.wrap(Vec::new(), total));
    }
    let data = rows
        .bind(page.limit())
        .bind(page.offset())
        .fetch_all(db.pool())
        .await?;
    Ok(page.wrap(data, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(page: Option<&str>, limit: Option<&str>) -> (Page, bool) {
        let params = PageParams {
            page: page.map(String::from),
            limit: limit.map(String::from),
        };
        let mut v = Validator::default();
        let parsed = params.parse(&mut v);
        (parsed, v.finish().is_ok())
    }

    #[test]
    fn defaults_and_bounds() {
        assert_eq!(parse(None, None), (Page { page: 1, limit: 20 }, true));
        assert_eq!(
            parse(Some("3"), Some("100")).0,
            Page {
                page: 3,
                limit: 100
            }
        );
        assert!(!parse(Some("0"), None).1);
        assert!(!parse(None, Some("0")).1);
        assert!(!parse(None, Some("101")).1);
        assert!(!parse(Some("x"), None).1);
        assert!(!parse(Some("-1"), None).1);
        assert_eq!(Page { page: 3, limit: 20 }.offset(), 40);
    }
}
