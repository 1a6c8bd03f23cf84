//! `/dashboard`: the organization's key figures, computed from its own rows on every request.
//!
//! # Definitions
//!
//! - **Sales** are sales orders with status `fulfilled`, dated by `fulfilled_at`. Open and
//!   cancelled orders never count, and an order counts on the day it was fulfilled, not the
//!   day it was entered.
//! - **Revenue** is the sum of the orders' `subtotal_cents`: before tax, since tax is owed to
//!   the authorities rather than earned.
//! - `from`/`to` are optional inclusive dates (`YYYY-MM-DD`, UTC); a bad date, or `to` before
//!   `from`, is a 422 naming the field. Absent means unbounded on that side, except for the
//!   sales chart (below). Only dated figures (sales) are restricted; stock and receivables
//!   are always as of now.
//! - **Stock on hand** of an item is the sum of its `stock_levels` over all warehouses (0 when
//!   it has none). An item is **low on stock** when it has a `reorder_level` and its stock on
//!   hand is at or below it; **out of stock** when its stock on hand is 0 (whether or not it is
//!   watched). **Inventory value** is the sum of quantity × `cost_cents`, an item without a
//!   cost counting as 0.
//! - **Receivables outstanding** is `total_cents - paid_cents` summed over invoices whose
//!   status is not `paid`, whenever they were issued.
//!
//! # Routes
//!
//! - `GET /dashboard/kpis?from&to` → `{revenueCents, orderCount, averageOrderCents,
//!   receivablesOutstandingCents, lowStockCount, inventoryValueCents, from, to}`.
//!   `averageOrderCents` is revenue ÷ orders rounded to the nearest cent (halves up), 0 when
//!   there are no orders.
//! - `GET /dashboard/sales-chart?interval=day|month&from&to` → `{interval, from, to, series:
//!   [{period, revenueCents, orderCount}]}`. `interval` defaults to `day`. Every day
//!   (`2026-01-05`) or month (`2026-01`) of the range is present, zero-filled. A missing `to`
//!   is today (UTC); a missing `from` is 29 days before `to` (30 days in all) for days, or
//!   the first of the month 11 months before `to`'s month (12 months in all) for months.
//!   At most 366 days or 120 months, else 422. With months, the first and last month only
//!   count the days inside the range.
//! - `GET /dashboard/top-customers?limit&from&to` → `{data: [{customerId, name, revenueCents,
//!   orderCount}]}`; `limit` 1..=50, default 5.
//! - `GET /dashboard/top-products?limit&from&to` → `{data: [{itemId, name, sku, quantity,
//!   revenueCents}]}` from the lines of fulfilled orders (revenue = line subtotals).
//! - `GET /dashboard/inventory-status` → `{itemCount, totalQuantity, inventoryValueCents,
//!   lowStockCount, outOfStockCount, warehouses: [{warehouseId, name, code, quantity,
//!   valueCents}]}`, every warehouse listed (zeros when empty), by name.
//!
//! Rankings are by revenue descending, then by name ignoring case, then by id, so equal
//! figures always come back in the same order.
//!
//! Every query is scoped to the caller's organization and starts from an index whose first
//! column is `organization_id`. Sums are cast to BIGINT: PostgreSQL's `SUM(BIGINT)` is
//! NUMERIC, which the `Any` driver cannot decode.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::FromRow;
use time::{OffsetDateTime, Time};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Org;
use crate::db::{self, Db};
use crate::error::{ApiResult, Json, Query, Validator};
use crate::fairness::TenantSlot;
use crate::money::{Cents, ExactProductSum, ExactSum};
use crate::pagination::Filter;
use crate::period::Period;
use crate::policy::{cached_expensive, RoutePolicy};
use crate::state::AppState;

/// Ranking size when the client does not ask for one.
const DEFAULT_TOP: u32 = 5;
/// Largest ranking a client may ask for.
const MAX_TOP: u32 = 50;
mod calendar;

pub(crate) use calendar::date_text;
use calendar::{chart_range, labels, Interval};

/// The dashboard routes.
pub fn router() -> OpenApiRouter<AppState> {
    crate::openapi::tagged(
        "dashboard",
        OpenApiRouter::new()
            .routes(
                routes!(kpis)
                    .runs_to_end()
                    .cache(cached_expensive("dashboard:kpis", 300)),
            )
            .routes(
                routes!(sales_chart)
                    .runs_to_end()
                    .cache(cached_expensive("dashboard:sales", 300)),
            )
            .routes(
                routes!(top_customers)
                    .runs_to_end()
                    .cache(cached_expensive("dashboard:customers", 300)),
            )
            .routes(
                routes!(top_products)
                    .runs_to_end()
                    .cache(cached_expensive("dashboard:products", 300)),
            )
            .routes(
                routes!(inventory_status)
                    .runs_to_end()
                    .cache(cached_expensive("dashboard:inventory", 300)),
            ),
    )
}

/// The query parameters of every dashboard route; each route reads the ones it knows. Kept
/// as text so a bad value is a 422 naming the parameter rather than a generic query error.
#[derive(Debug, Default, Deserialize)]
struct Params {
    from: Option<String>,
    to: Option<String>,
    limit: Option<String>,
    interval: Option<String>,
}

/// `WHERE` conditions selecting the caller's sales (fulfilled orders of `org_id` fulfilled in
/// `period`) from `sales_orders {alias}`. The organization is `$1`. With the
/// `(organization_id, status, fulfilled_at)` index this is one range scan.
pub(crate) fn sales_filter(org_id: &str, period: &Period, alias: &str) -> Filter {
    let mut filter = Filter::default();
    let org = filter.bind(org_id);
    filter.and(format!("{alias}.organization_id = {org}"));
    // A constant, not a bind (`SalesOrderStatus::Fulfilled`'s stored name): the planner
    // sees it and picks the index whatever plan a prepared statement is given.
    filter.and(format!("{alias}.status = 'fulfilled'"));
    period.restrict(&mut filter, &format!("{alias}.fulfilled_at"));
    filter
}

/// The placeholder of the first bind after `filter`'s own, for a `LIMIT`.
pub(crate) fn next_placeholder(filter: &Filter) -> String {
    format!("${}", filter.binds().len() + 1)
}

/// Parses `from`/`to` (both optional).
fn parse_period(params: &Params, v: &mut Validator) -> Period {
    Period::parse(params.from.as_deref(), params.to.as_deref(), v)
}

/// Parses `limit` for the rankings.
fn parse_top(raw: Option<&str>, v: &mut Validator) -> u32 {
    match raw {
        None => DEFAULT_TOP,
        Some(raw) => {
            let parsed = raw
                .parse::<u32>()
                .ok()
                .filter(|l| (1..=MAX_TOP).contains(l));
            v.check(
                parsed.is_some(),
                "limit",
                "must be a whole number from 1 to 50",
            );
            parsed.unwrap_or(DEFAULT_TOP)
        }
    }
}

#[derive(Debug, FromRow)]
struct SalesTotals {
    #[sqlx(try_from = "String")]
    revenue_cents: Cents,
    order_count: i64,
}

/// Revenue and number of orders in `period`.
async fn sales_totals(db: &Db, org_id: &str, period: &Period) -> ApiResult<SalesTotals> {
    let filter = sales_filter(org_id, period, "o");
    let sql = format!(
        "SELECT {}, COUNT(*) AS order_count FROM sales_orders o {}",
        ExactSum("o.subtotal_cents").select("revenue_cents"),
        filter.sql()
    );
    let mut query = sqlx::query_as::<_, SalesTotals>(&sql);
    for b in filter.binds() {
        query = query.bind(b);
    }
    Ok(query.fetch_one(db.pool()).await?)
}

/// Stock figures over all of an organization's items, as of now.
#[derive(Debug, FromRow)]
struct StockSummary {
    item_count: i64,
    total_quantity: i64,
    low_stock_count: i64,
    out_of_stock_count: i64,
}

/// One pass over the items, each joined to its stock on hand (summed per item first, so an
/// item with no stock rows is there with 0).
async fn stock_summary(db: &Db, org_id: &str) -> ApiResult<StockSummary> {
    let summary = sqlx::query_as::<_, StockSummary>(
        "SELECT COUNT(*) AS item_count,
                CAST(COALESCE(SUM(COALESCE(q.on_hand, 0)), 0) AS BIGINT) AS total_quantity,
                CAST(COALESCE(SUM(CASE WHEN i.reorder_level IS NOT NULL
                                        AND COALESCE(q.on_hand, 0) <= i.reorder_level
                                       THEN 1 ELSE 0 END), 0) AS BIGINT) AS low_stock_count,
                CAST(COALESCE(SUM(CASE WHEN COALESCE(q.on_hand, 0) = 0 THEN 1 ELSE 0 END), 0)
                     AS BIGINT) AS out_of_stock_count
         FROM items i
         LEFT JOIN (SELECT s.item_id, CAST(SUM(s.quantity) AS BIGINT) AS on_hand
                    FROM stock_levels s
                    WHERE s.organization_id = $1
                    GROUP BY s.item_id) q ON q.item_id = i.id
         WHERE i.organization_id = $1",
    )
    .bind(org_id)
    .fetch_one(db.pool())
    .await?;
    Ok(summary)
}

#[derive(Debug, FromRow)]
struct Value {
    #[sqlx(try_from = "String")]
    value_cents: Cents,
}

/// Stock on hand valued at cost, exactly: summed per stock level (whose quantity is
/// bounded), not per item (whose total over warehouses is not).
async fn inventory_value(db: &Db, org_id: &str) -> ApiResult<Cents> {
    let sql = format!(
        "SELECT {} FROM stock_levels s
         JOIN items i ON i.organization_id = s.organization_id AND i.id = s.item_id
         WHERE s.organization_id = $1",
        ExactProductSum {
            quantity: "s.quantity",
            cents: "COALESCE(i.cost_cents, 0)"
        }
        .select("value_cents")
    );
    let value: Value = sqlx::query_as(&sql)
        .bind(org_id)
        .fetch_one(db.pool())
        .await?;
    Ok(value.value_cents)
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct Kpis {
    revenue_cents: Cents,
    order_count: i64,
    average_order_cents: Cents,
    receivables_outstanding_cents: Cents,
    low_stock_count: i64,
    inventory_value_cents: Cents,
    from: Option<String>,
    to: Option<String>,
}

/// `revenue / orders` rounded to the nearest cent, halves up; 0 without orders. Revenue is
/// never negative (subtotals are sums of non-negative prices), so integer arithmetic does it.
fn average(revenue: Cents, orders: i64) -> Cents {
    if orders <= 0 {
        Cents(0)
    } else {
        let orders = i128::from(orders);
        Cents((revenue.0 + orders / 2) / orders)
    }
}

#[utoipa::path(
    get, path = "/dashboard/kpis", operation_id = "getKpis", summary = "Key figures",
    params(
        ("from" = Option<String>, Query, format = Date, description = "First day, inclusive (`YYYY-MM-DD`, UTC); absent: unbounded"),
        ("to" = Option<String>, Query, format = Date, description = "Last day, inclusive (`YYYY-MM-DD`, UTC); absent: unbounded"),
    ),
    responses((status = 200, description = "Revenue, orders, receivables and stock figures", body = Kpis)),
)]
async fn kpis(org: Org, Query(params): Query<Params>, _share: TenantSlot) -> ApiResult<Json<Kpis>> {
    let mut v = Validator::default();
    let period = parse_period(&params, &mut v);
    v.finish()?;
    let db = &org.db;
    let sales = sales_totals(db, &org.id, &period).await?;
    let stock = stock_summary(db, &org.id).await?;
    // Any unpaid remainder counts, however old: receivables are a balance, not a flow.
    let receivables: Value = sqlx::query_as(&format!(
        "SELECT {} FROM invoices WHERE organization_id = $1 AND status <> 'paid'",
        ExactSum("total_cents - paid_cents").select("value_cents")
    ))
    .bind(&org.id)
    .fetch_one(db.pool())
    .await?;
    Ok(Json(Kpis {
        revenue_cents: sales.revenue_cents,
        order_count: sales.order_count,
        average_order_cents: average(sales.revenue_cents, sales.order_count),
        receivables_outstanding_cents: receivables.value_cents,
        low_stock_count: stock.low_stock_count,
        inventory_value_cents: inventory_value(db, &org.id).await?,
        from: period.from.map(date_text),
        to: period.to.map(date_text),
    }))
}

#[derive(Debug, FromRow)]
struct Bucket {
    period: String,
    #[sqlx(try_from = "String")]
    revenue_cents: Cents,
    order_count: i64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct ChartPoint {
    period: String,
    revenue_cents: Cents,
    order_count: i64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct SalesChart {
    interval: &'static str,
    from: String,
    to: String,
    series: Vec<ChartPoint>,
}

#[utoipa::path(
    get, path = "/dashboard/sales-chart", operation_id = "getSalesChart",
    summary = "Sales per day or month",
    params(
        ("interval" = Option<String>, Query, pattern = "^(day|month)$", description = "`day` (default) or `month`"),
        ("from" = Option<String>, Query, format = Date, description = "First day, inclusive (`YYYY-MM-DD`, UTC); absent: 29 days before `to` (30 days in all) with `day`, the first of the month 11 months before `to`'s (12 months in all) with `month`"),
        ("to" = Option<String>, Query, format = Date, description = "Last day, inclusive (`YYYY-MM-DD`, UTC); absent: today"),
    ),
    description = "A chart is bounded: at most 366 days or 120 months, else 422 (so a `from` more than a year before today needs a `to`). The answer's `from` and `to` say which range was charted.",
    responses((status = 200, description = "Every day or month of the range, zero-filled", body = SalesChart)),
)]
async fn sales_chart(
    org: Org,
    Query(params): Query<Params>,
    _share: TenantSlot,
) -> ApiResult<Json<SalesChart>> {
    let mut v = Validator::default();
    let period = parse_period(&params, &mut v);
    // Present means given: an empty value is refused, as the document's pattern says.
    let interval = match params.interval.as_deref() {
        None | Some("day") => Interval::Day,
        Some("month") => Interval::Month,
        Some(_) => {
            v.check(false, "interval", "must be day or month");
            Interval::Day
        }
    };
    v.finish()?;
    let today = OffsetDateTime::now_utc().date();
    let range = chart_range(interval, &period, today, &mut v);
    v.finish()?;
    let Some((from, to)) = range else {
        // Without a recorded error this only happens when a default `from` would fall
        // before the calendar's first year.
        return Err(crate::error::ApiError::field("from", "is out of range"));
    };
    let bounded = Period {
        start: Some(db::timestamp(OffsetDateTime::new_utc(from, Time::MIDNIGHT))),
        end: to
            .next_day()
            .map(|d| db::timestamp(OffsetDateTime::new_utc(d, Time::MIDNIGHT))),
        from: Some(from),
        to: Some(to),
    };

    let filter = sales_filter(&org.id, &bounded, "o");
    let len = interval.prefix_len();
    let sql = format!(
        "SELECT substr(o.fulfilled_at, 1, {len}) AS period, {}, COUNT(*) AS order_count
         FROM sales_orders o {}
         GROUP BY substr(o.fulfilled_at, 1, {len})",
        ExactSum("o.subtotal_cents").select("revenue_cents"),
        filter.sql()
    );
    let mut query = sqlx::query_as::<_, Bucket>(&sql);
    for b in filter.binds() {
        query = query.bind(b);
    }
    let mut found: HashMap<String, Bucket> = query
        .fetch_all(org.db.pool())
        .await?
        .into_iter()
        .map(|b| (b.period.clone(), b))
        .collect();
    // Zero-filled here rather than in SQL: generating a calendar portably (recursive CTEs
    // differ in date arithmetic between the engines) is harder than a loop.
    let series = labels(interval, from, to)
        .into_iter()
        .map(|label| match found.remove(&label) {
            Some(b) => ChartPoint {
                period: label,
                revenue_cents: b.revenue_cents,
                order_count: b.order_count,
            },
            None => ChartPoint {
                period: label,
                revenue_cents: Cents(0),
                order_count: 0,
            },
        })
        .collect();
    Ok(Json(SalesChart {
        interval: interval.as_str(),
        from: date_text(from),
        to: date_text(to),
        series,
    }))
}

/// `{data: [...]}`: rankings are short and unpaginated.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Ranking<T> {
    data: Vec<T>,
}

#[derive(Debug, FromRow, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct TopCustomer {
    customer_id: String,
    name: String,
    #[sqlx(try_from = "String")]
    revenue_cents: Cents,
    order_count: i64,
}

#[utoipa::path(
    get, path = "/dashboard/top-customers", operation_id = "getTopCustomers",
    summary = "Customers by revenue",
    params(
        ("from" = Option<String>, Query, format = Date, description = "First day, inclusive (`YYYY-MM-DD`, UTC); absent: unbounded"),
        ("to" = Option<String>, Query, format = Date, description = "Last day, inclusive (`YYYY-MM-DD`, UTC); absent: unbounded"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 50, description = "Rows, 1 to 50; default 5"),
    ),
    responses((status = 200, description = "Customers, highest revenue first", body = Ranking<TopCustomer>)),
)]
async fn top_customers(
    org: Org,
    Query(params): Query<Params>,
    _share: TenantSlot,
) -> ApiResult<Json<Ranking<TopCustomer>>> {
    let (filter, limit) = ranked_sales(&org.id, &params)?;
    let revenue = ExactSum("o.subtotal_cents");
    let sql = format!(
        "SELECT o.customer_id, c.name, {}, COUNT(*) AS order_count
         FROM sales_orders o
         JOIN contacts c ON c.organization_id = o.organization_id AND c.id = o.customer_id
         {}
         GROUP BY o.customer_id, c.name
         ORDER BY {}, LOWER(c.name), c.name, o.customer_id
         LIMIT {}",
        revenue.select("revenue_cents"),
        filter.sql(),
        revenue.order_desc(),
        next_placeholder(&filter)
    );
    ranking(&org.db, &sql, &filter, limit).await
}

#[derive(Debug, FromRow, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct TopProduct {
    item_id: String,
    name: String,
    sku: String,
    quantity: i64,
    #[sqlx(try_from = "String")]
    revenue_cents: Cents,
}

#[utoipa::path(
    get, path = "/dashboard/top-products", operation_id = "getTopProducts",
    summary = "Items by revenue",
    params(
        ("from" = Option<String>, Query, format = Date, description = "First day, inclusive (`YYYY-MM-DD`, UTC); absent: unbounded"),
        ("to" = Option<String>, Query, format = Date, description = "Last day, inclusive (`YYYY-MM-DD`, UTC); absent: unbounded"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 50, description = "Rows, 1 to 50; default 5"),
    ),
    responses((status = 200, description = "Items, highest revenue first", body = Ranking<TopProduct>)),
)]
async fn top_products(
    org: Org,
    Query(params): Query<Params>,
    _share: TenantSlot,
) -> ApiResult<Json<Ranking<TopProduct>>> {
    let (filter, limit) = ranked_sales(&org.id, &params)?;
    // Aggregate the lines of the period's orders first, then name the items. CROSS JOIN
    // fixes SQLite's loop order (orders by the status/date index, then their lines); left to
    // itself it starts from items and looks up every line and its order, 4x slower on the
    // 100,000-order demo data. PostgreSQL plans it like the inner join it is.
    let revenue = ExactSum("l.subtotal_cents");
    let sql = format!(
        "SELECT t.item_id, i.name, i.sku, t.quantity, t.revenue_cents
         FROM (SELECT l.item_id,
                      CAST(COALESCE(SUM(l.quantity), 0) AS BIGINT) AS quantity,
                      {}, {}
               FROM sales_orders o
               CROSS JOIN sales_order_lines l
               {} AND l.organization_id = o.organization_id AND l.sales_order_id = o.id
               GROUP BY l.item_id) t
         JOIN items i ON i.id = t.item_id
         ORDER BY t.revenue_k1 DESC, t.revenue_k2 DESC, LOWER(i.name), i.name, t.item_id
         LIMIT {}",
        revenue.select("revenue_cents"),
        revenue.order_keys("revenue"),
        filter.sql(),
        next_placeholder(&filter)
    );
    ranking(&org.db, &sql, &filter, limit).await
}

/// The sales of a ranking's period (`from`, `to`) and its length (`limit`), validated
/// together so that every bad parameter is named in one 422.
fn ranked_sales(org_id: &str, params: &Params) -> ApiResult<(Filter, u32)> {
    let mut v = Validator::default();
    let period = parse_period(params, &mut v);
    let limit = parse_top(params.limit.as_deref(), &mut v);
    v.finish()?;
    Ok((sales_filter(org_id, &period, "o"), limit))
}

/// Runs a ranking's `sql`: `filter`'s binds, then `limit` as the last placeholder.
async fn ranking<R>(db: &Db, sql: &str, filter: &Filter, limit: u32) -> ApiResult<Json<Ranking<R>>>
where
    R: for<'r> FromRow<'r, AnyRow> + Send + Unpin,
{
    let mut query = sqlx::query_as::<_, R>(sql);
    for b in filter.binds() {
        query = query.bind(b);
    }
    let data = query.bind(i64::from(limit)).fetch_all(db.pool()).await?;
    Ok(Json(Ranking { data }))
}

#[derive(Debug, FromRow, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct WarehouseStock {
    warehouse_id: String,
    name: String,
    code: String,
    quantity: i64,
    #[sqlx(try_from = "String")]
    value_cents: Cents,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct InventoryStatus {
    item_count: i64,
    total_quantity: i64,
    inventory_value_cents: Cents,
    low_stock_count: i64,
    out_of_stock_count: i64,
    warehouses: Vec<WarehouseStock>,
}

#[utoipa::path(
    get, path = "/dashboard/inventory-status", operation_id = "getInventoryStatus",
    summary = "Stock totals, overall and per warehouse",
    responses((status = 200, description = "Stock totals", body = InventoryStatus)),
)]
async fn inventory_status(org: Org, _share: TenantSlot) -> ApiResult<Json<InventoryStatus>> {
    let stock = stock_summary(&org.db, &org.id).await?;
    // LEFT JOINs so that an empty warehouse is listed with zeros.
    let sql = format!(
        "SELECT w.id AS warehouse_id, w.name, w.code,
                CAST(COALESCE(SUM(s.quantity), 0) AS BIGINT) AS quantity, {}
         FROM warehouses w
         LEFT JOIN stock_levels s
           ON s.organization_id = w.organization_id AND s.warehouse_id = w.id
         LEFT JOIN items i ON i.organization_id = s.organization_id AND i.id = s.item_id
         WHERE w.organization_id = $1
         GROUP BY w.id, w.name, w.code
         ORDER BY LOWER(w.name), w.name, w.id",
        ExactProductSum {
            quantity: "COALESCE(s.quantity, 0)",
            cents: "COALESCE(i.cost_cents, 0)"
        }
        .select("value_cents")
    );
    let warehouses = sqlx::query_as::<_, WarehouseStock>(&sql)
        .bind(&org.id)
        .fetch_all(org.db.pool())
        .await?;
    Ok(Json(InventoryStatus {
        item_count: stock.item_count,
        total_quantity: stock.total_quantity,
        inventory_value_cents: inventory_value(&org.db, &org.id).await?,
        low_stock_count: stock.low_stock_count,
        out_of_stock_count: stock.out_of_stock_count,
        warehouses,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn averages_round_half_up() {
        let average = |revenue: i128, orders| average(Cents(revenue), orders).0;
        assert_eq!(average(0, 0), 0);
        assert_eq!(average(10, 4), 3); // 2.5 → 3
        assert_eq!(average(9, 4), 2); // 2.25 → 2
        assert_eq!(average(11, 4), 3); // 2.75 → 3
        assert_eq!(average(i128::from(i64::MAX) * 3, 3), i128::from(i64::MAX));
    }
}
