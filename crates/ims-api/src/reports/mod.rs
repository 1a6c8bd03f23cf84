//! `/reports/{type}`: date-ranged aggregate reports.
//!
//! `GET /reports/{type}?from&to` answers `{type, from, to, generatedAt, rows, totals,
//! truncated}`. An unknown type is a 404. `from`/`to` are optional inclusive dates
//! (`YYYY-MM-DD`, UTC; see [`crate::period`]); a bad date or `to` before `from` is a 422
//! naming the field, absent means unbounded on that side.
//!
//! # Definitions
//!
//! Sales are fulfilled sales orders dated by `fulfilled_at`, as on the dashboard (see
//! [`crate::dashboard`]); open and cancelled orders never count.
//!
//! | type | rows (one per …) | ordered by | totals |
//! |---|---|---|---|
//! | `sales-by-item` | item sold: `{itemId, name, sku, quantity, subtotalCents, taxCents, totalCents}` from the lines of sales in the period | `subtotalCents` | the same sums |
//! | `sales-by-customer` | customer: `{customerId, name, orderCount, subtotalCents, taxCents, totalCents}` from the sales in the period | `subtotalCents` | the same sums |
//! | `inventory-valuation` | item with stock: `{itemId, name, sku, quantity, unitCostCents, valueCents}` | `valueCents` | `{quantity, valueCents}` |
//! | `stock-movements` | item moved: `{itemId, name, sku, inQuantity, outQuantity, netQuantity, movementCount}` from the ledger rows created in the period | `netQuantity` | the same sums |
//! | `purchases-by-vendor` | vendor: `{vendorId, name, orderCount, totalCents}` from purchase orders with status `received`, dated by `received_at` | `totalCents` | the same sums |
//!
//! - Ties are broken by name ignoring case, then by id, so the order is stable.
//! - `inventory-valuation` is as of now: it validates but ignores `from`/`to` and echoes them
//!   as `null`. `quantity` is stock on hand over all warehouses; `unitCostCents` is the
//!   item's `costCents`, `null` when it has none, and such stock is valued at 0.
//! - `stock-movements` sums the whole ledger, so a transfer between two warehouses counts
//!   once in `inQuantity` and once in `outQuantity` (net 0) and as two movements.
//! - At most 10,000 rows are returned; `truncated` says whether there were more. `totals`
//!   always cover every matching row, and rows and totals are read from one snapshot
//!   (one transaction, REPEATABLE READ on PostgreSQL) so they agree.

use std::marker::PhantomData;

use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, FromRow};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Org;
use crate::dashboard::{date_text, next_placeholder, sales_filter};
use crate::db::{self, Backend, Db};
use crate::error::{ApiError, ApiResult, Json, Path, Query, Validator};
use crate::fairness::TenantSlot;
use crate::money::{Cents, ExactProductSum, ExactSum};
use crate::pagination::Filter;
use crate::period::Period;
use crate::policy::{cached_per_type_expensive, RoutePolicy};
use crate::state::AppState;

/// Most rows one report returns; protects the server and the client from unbounded output.
pub const MAX_ROWS: usize = 10_000;

/// The report routes.
pub fn router() -> OpenApiRouter<AppState> {
    crate::openapi::tagged(
        "reports",
        OpenApiRouter::new().routes(
            routes!(report).runs_to_end().cache(
                cached_per_type_expensive("reports", 900)
                    // CSV and JSON are cached apart (the JSON key is the contract's plain one).
                    .vary_with(std::sync::Arc::new(|parts: &axum::http::request::Parts| {
                        Format::of(&parts.headers)
                            .is_csv()
                            .then(|| "csv".to_string())
                    })),
            ),
        ),
    )
}

/// The representation a request asks for: CSV when its `Accept` ranks `text/csv` above
/// JSON (and any `*/*`), JSON otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Csv,
}

impl Format {
    fn of(headers: &axum::http::HeaderMap) -> Self {
        // `text/csv` itself ranks CSV; failing that, `text/*` does (the more specific range
        // wins, RFC 9110 §12.5.1). Parameter names are case-insensitive (`Q=0`).
        let mut csv: Option<f32> = None;
        let mut any_text = 0.0_f32;
        let mut json = 0.0_f32;
        for accept in headers.get_all(axum::http::header::ACCEPT) {
            let Ok(accept) = accept.to_str() else {
                continue;
            };
            for range in accept.split(',') {
                let mut parts = range.split(';');
                let media = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
                let q = parts
                    .filter_map(|p| p.split_once('='))
                    .filter(|(name, _)| name.trim().eq_ignore_ascii_case("q"))
                    .find_map(|(_, q)| q.trim().parse::<f32>().ok())
                    .unwrap_or(1.0);
                match media.as_str() {
                    "text/csv" => csv = Some(csv.unwrap_or(0.0).max(q)),
                    "text/*" => any_text = any_text.max(q),
                    "application/json" | "application/*" | "*/*" => json = json.max(q),
                    _ => {}
                }
            }
        }
        let csv = csv.unwrap_or(any_text);
        if csv > 0.0 && csv > json {
            Self::Csv
        } else {
            Self::Json
        }
    }

    fn is_csv(self) -> bool {
        self == Self::Csv
    }
}

/// The reports there are; a closed set, so only fixed SQL ever runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReportType {
    SalesByItem,
    SalesByCustomer,
    InventoryValuation,
    StockMovements,
    PurchasesByVendor,
}

impl ReportType {
    const ALL: [Self; 5] = [
        Self::SalesByItem,
        Self::SalesByCustomer,
        Self::InventoryValuation,
        Self::StockMovements,
        Self::PurchasesByVendor,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Self::SalesByItem => "sales-by-item",
            Self::SalesByCustomer => "sales-by-customer",
            Self::InventoryValuation => "inventory-valuation",
            Self::StockMovements => "stock-movements",
            Self::PurchasesByVendor => "purchases-by-vendor",
        }
    }

    fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == raw)
    }
}

#[derive(Debug, Default, Deserialize)]
struct Params {
    from: Option<String>,
    to: Option<String>,
}

/// A report's answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct Report<R, T> {
    #[serde(rename = "type")]
    kind: &'static str,
    from: Option<String>,
    to: Option<String>,
    generated_at: String,
    rows: Vec<R>,
    totals: T,
    truncated: bool,
}

// Documentation only: the rows of each report type, for the OpenAPI document.
/// A report row; its shape depends on the report type.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum ReportRow {
    SalesByItem(SalesByItem),
    SalesByCustomer(SalesByCustomer),
    InventoryValuation(Valuation),
    StockMovements(Movements),
    PurchasesByVendor(Purchases),
}

// Documentation only: the totals of each report type, for the OpenAPI document. Each
// type's totals are a closed object (`additionalProperties: false`, from
// `deny_unknown_fields`): open, a sales-by-customer total also matched the purchases one
// (a subset of its fields), and this `oneOf` failed validation (a probe).
/// A report's totals; their shape depends on the report type.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum ReportTotals {
    SalesByItem(SalesByItemTotals),
    SalesByCustomer(SalesByCustomerTotals),
    InventoryValuation(ValuationTotals),
    StockMovements(MovementsTotals),
    PurchasesByVendor(PurchasesTotals),
}

/// The SQL of one report: the grouped rows `R` (without `LIMIT`) and the totals `T` over the
/// same rows, both using `filter`'s placeholders.
struct Spec<R, T> {
    rows_sql: String,
    totals_sql: String,
    filter: Filter,
    /// For an order SQL cannot compute exactly: every row is read and this stable sort
    /// puts them in order (ties keep the SQL's order) before the cap is applied.
    sort: Option<fn(&mut [R])>,
    totals: PhantomData<fn() -> T>,
}

/// Starts a read-only transaction whose reads all see one snapshot. SQLite in WAL mode gives
/// that to any transaction; PostgreSQL's default (READ COMMITTED) takes a new snapshot per
/// statement, so it has to be asked for.
async fn begin_snapshot(db: &Db) -> Result<sqlx::Transaction<'static, sqlx::Any>, sqlx::Error> {
    match db.backend() {
        Backend::Postgres => {
            db.begin_with(Some("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"))
                .await
        }
        Backend::Sqlite => db.begin().await,
    }
}

async fn fetch<R, T>(db: &Db, spec: &Spec<R, T>) -> ApiResult<(Vec<R>, T, bool)>
where
    R: for<'r> FromRow<'r, AnyRow> + Send + Unpin,
    T: for<'r> FromRow<'r, AnyRow> + Send + Unpin,
{
    let mut tx = begin_snapshot(db).await?;
    let conn: &mut AnyConnection = &mut tx;
    let mut rows = match spec.sort {
        Some(sort) => {
            let mut query = sqlx::query_as::<_, R>(&spec.rows_sql);
            for b in spec.filter.binds() {
                query = query.bind(b);
            }
            let mut rows = query.fetch_all(&mut *conn).await?;
            sort(&mut rows);
            rows
        }
        None => {
            // One row more than the cap tells whether there were more.
            let sql = format!("{} LIMIT {}", spec.rows_sql, next_placeholder(&spec.filter));
            let mut query = sqlx::query_as::<_, R>(&sql);
            for b in spec.filter.binds() {
                query = query.bind(b);
            }
            let limit = i64::try_from(MAX_ROWS + 1).unwrap_or(i64::MAX);
            query.bind(limit).fetch_all(&mut *conn).await?
        }
    };
    let truncated = rows.len() > MAX_ROWS;
    rows.truncate(MAX_ROWS);
    let mut totals = sqlx::query_as::<_, T>(&spec.totals_sql);
    for b in spec.filter.binds() {
        totals = totals.bind(b);
    }
    let totals = totals.fetch_one(&mut *conn).await?;
    tx.commit().await?;
    Ok((rows, totals, truncated))
}

/// The CSV with every text cell that a spreadsheet would run as a formula (one starting
/// with `=`, `+`, `-`, `@`, a tab or a carriage return: OWASP's "CSV injection") prefixed
/// with `'`, which spreadsheets show as text. Names are the users'; numbers (`-12`) stay
/// numbers. The `csv` crate has no hook per cell, so the written file is read back.
fn defuse_formulas(csv: &[u8]) -> Result<Vec<u8>, csv::Error> {
    let risky = |cell: &str| {
        cell.starts_with(['=', '+', '-', '@', '\t', '\r']) && cell.parse::<f64>().is_err()
    };
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(csv);
    let mut writer = csv::Writer::from_writer(Vec::with_capacity(csv.len()));
    for record in reader.records() {
        let record = record?;
        writer.write_record(record.iter().map(|cell| {
            if risky(cell) {
                std::borrow::Cow::Owned(format!("'{cell}").into_bytes())
            } else {
                std::borrow::Cow::Borrowed(cell.as_bytes())
            }
        }))?;
    }
    writer.into_inner().map_err(|e| e.into_error().into())
}

/// `R`'s CSV header row alone. The writer takes the header from the first row it writes,
/// so a report without rows had none (found by a probe); it is cut from a default row's.
fn header_row<R: Serialize + Default>() -> Result<Vec<u8>, csv::Error> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer.serialize(R::default())?;
    let mut bytes = writer.into_inner().map_err(|e| e.into_error())?;
    let end = bytes
        .iter()
        .position(|b| *b == b'\n')
        .map_or(bytes.len(), |i| i + 1);
    bytes.truncate(end);
    Ok(bytes)
}

/// Runs `spec` and wraps the result: JSON, or CSV (a header row of the row fields, then one
/// line per row; the totals are left out, and `X-Report-Truncated: true` says when more
/// rows matched than were returned).
async fn run<R, T>(
    db: &Db,
    kind: ReportType,
    period: Option<&Period>,
    spec: Spec<R, T>,
    format: Format,
) -> ApiResult<Response>
where
    R: for<'r> FromRow<'r, AnyRow> + Send + Unpin + Serialize + Default,
    T: for<'r> FromRow<'r, AnyRow> + Send + Unpin + Serialize,
{
    use axum::http::header;
    let generated_at = db::now();
    let (rows, totals, truncated) = fetch::<R, T>(db, &spec).await?;
    let vary = (header::VARY, "Accept");
    if format.is_csv() {
        let csv_error = |e: csv::Error| ApiError::Internal(anyhow::anyhow!("CSV: {e}"));
        let mut writer = csv::Writer::from_writer(Vec::new());
        for row in &rows {
            writer.serialize(row).map_err(csv_error)?;
        }
        let written = if rows.is_empty() {
            header_row::<R>().map_err(csv_error)
        } else {
            writer
                .into_inner()
                .map_err(|e| csv_error(e.into_error().into()))
        };
        let body = written.and_then(|csv| {
            defuse_formulas(&csv).map_err(|e| ApiError::Internal(anyhow::anyhow!("CSV: {e}")))
        })?;
        let disposition = format!("inline; filename=\"{}.csv\"", kind.as_str());
        let mut response = (
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
                (header::CONTENT_DISPOSITION, disposition),
                (vary.0, vary.1.to_string()),
            ],
            body,
        )
            .into_response();
        if truncated {
            response.headers_mut().insert(
                "x-report-truncated",
                axum::http::HeaderValue::from_static("true"),
            );
        }
        return Ok(response);
    }
    Ok((
        [vary],
        Json(Report {
            kind: kind.as_str(),
            from: period.and_then(|p| p.from).map(date_text),
            to: period.and_then(|p| p.to).map(date_text),
            generated_at,
            rows,
            totals,
            truncated,
        }),
    )
        .into_response())
}

#[utoipa::path(
    get, path = "/reports/{type}", operation_id = "getReport", summary = "Run a report",
    description = "At most 10,000 rows (`truncated` says when more matched); `totals` are over all matching rows.",
    params(
        ("type" = String, Path, description = "`sales-by-item`, `sales-by-customer`, `inventory-valuation`, `stock-movements` or `purchases-by-vendor`"),
        ("from" = Option<String>, Query, format = Date, description = "First day, inclusive (`YYYY-MM-DD`, UTC); absent: unbounded"),
        ("to" = Option<String>, Query, format = Date, description = "Last day, inclusive (`YYYY-MM-DD`, UTC); absent: unbounded"),
    ),
    responses(
        (status = 200, description = "The report; the shape of `rows` and `totals` depends on the type. With `Accept: text/csv` (ranked above JSON): CSV, a header row of the row fields and one line per row, without the totals (`X-Report-Truncated: true` when more rows matched). Both representations are cached apart (`Vary: Accept`).", content((Report<ReportRow, ReportTotals> = "application/json"), (String = "text/csv")), headers(("Vary" = String, description = "`Accept`: JSON and CSV are different representations"))),
        (status = 404, description = "No report of this type", body = crate::error::Problem, content_type = "application/problem+json"),
    ),
)]
async fn report(
    org: Org,
    headers: axum::http::HeaderMap,
    Path(kind): Path<String>,
    Query(params): Query<Params>,
    _share: TenantSlot,
) -> ApiResult<Response> {
    let format = Format::of(&headers);
    let kind = ReportType::parse(&kind).ok_or_else(|| {
        let known: Vec<&str> = ReportType::ALL.iter().map(|t| t.as_str()).collect();
        ApiError::NotFound(format!(
            "no such report; the reports are {}",
            known.join(", ")
        ))
    })?;
    let mut v = Validator::default();
    let period = Period::parse(params.from.as_deref(), params.to.as_deref(), &mut v);
    v.finish()?;
    let db = &org.db;
    let org = org.id.as_str();
    let dated = Some(&period);
    match kind {
        ReportType::SalesByItem => run(db, kind, dated, sales_by_item(org, &period), format).await,
        ReportType::SalesByCustomer => {
            run(db, kind, dated, sales_by_customer(org, &period), format).await
        }
        ReportType::InventoryValuation => {
            run(db, kind, None, inventory_valuation(org), format).await
        }
        ReportType::StockMovements => {
            run(db, kind, dated, stock_movements(org, &period), format).await
        }
        ReportType::PurchasesByVendor => {
            run(db, kind, dated, purchases_by_vendor(org, &period), format).await
        }
    }
}

#[derive(Debug, Default, FromRow, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct SalesByItem {
    item_id: String,
    name: String,
    sku: String,
    quantity: i64,
    #[sqlx(try_from = "String")]
    subtotal_cents: Cents,
    #[sqlx(try_from = "String")]
    tax_cents: Cents,
    #[sqlx(try_from = "String")]
    total_cents: Cents,
}

#[derive(Debug, Default, FromRow, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SalesByItemTotals {
    quantity: i64,
    #[sqlx(try_from = "String")]
    subtotal_cents: Cents,
    #[sqlx(try_from = "String")]
    tax_cents: Cents,
    #[sqlx(try_from = "String")]
    total_cents: Cents,
}

/// The exact sums of a sales report: subtotal, tax and total of `alias`'s rows.
fn sales_sums(alias: &str) -> String {
    ["subtotal_cents", "tax_cents", "total_cents"]
        .map(|column| ExactSum(&format!("{alias}.{column}")).select(column))
        .join(", ")
}

/// Lines of the sales in `period`; joined through the order because the order carries the
/// status and date (and the `(organization_id, status, fulfilled_at)` index).
fn sales_by_item(org_id: &str, period: &Period) -> Spec<SalesByItem, SalesByItemTotals> {
    let filter = sales_filter(org_id, period, "o");
    // CROSS JOIN fixes SQLite's loop order: orders by the status/date index, then their
    // lines, aggregated before the items are named (see `dashboard::top_products`, 4x faster
    // on the demo data). PostgreSQL plans it like the inner join it is.
    let from = "FROM sales_orders o CROSS JOIN sales_order_lines l";
    let sums = format!(
        "CAST(COALESCE(SUM(l.quantity), 0) AS BIGINT) AS quantity, {}",
        sales_sums("l")
    );
    let order_keys = ExactSum("l.subtotal_cents").order_keys("subtotal");
    let where_sql = format!(
        "{} AND l.organization_id = o.organization_id AND l.sales_order_id = o.id",
        filter.sql()
    );
    Spec {
        rows_sql: format!(
            "SELECT t.item_id, i.name, i.sku, t.quantity, t.subtotal_cents, t.tax_cents, t.total_cents
             FROM (SELECT l.item_id, {sums}, {order_keys} {from} {where_sql} GROUP BY l.item_id) t
             JOIN items i ON i.id = t.item_id
             ORDER BY t.subtotal_k1 DESC, t.subtotal_k2 DESC, LOWER(i.name), i.name, t.item_id"
        ),
        totals_sql: format!("SELECT {sums} {from} {where_sql}"),
        filter,
        sort: None,
        totals: PhantomData,
    }
}

#[derive(Debug, Default, FromRow, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct SalesByCustomer {
    customer_id: String,
    name: String,
    order_count: i64,
    #[sqlx(try_from = "String")]
    subtotal_cents: Cents,
    #[sqlx(try_from = "String")]
    tax_cents: Cents,
    #[sqlx(try_from = "String")]
    total_cents: Cents,
}

#[derive(Debug, Default, FromRow, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SalesByCustomerTotals {
    order_count: i64,
    #[sqlx(try_from = "String")]
    subtotal_cents: Cents,
    #[sqlx(try_from = "String")]
    tax_cents: Cents,
    #[sqlx(try_from = "String")]
    total_cents: Cents,
}

fn sales_by_customer(
    org_id: &str,
    period: &Period,
) -> Spec<SalesByCustomer, SalesByCustomerTotals> {
    let filter = sales_filter(org_id, period, "o");
    let sums = format!("COUNT(*) AS order_count, {}", sales_sums("o"));
    let order = ExactSum("o.subtotal_cents").order_desc();
    let where_sql = filter.sql();
    Spec {
        rows_sql: format!(
            "SELECT o.customer_id, c.name, {sums}
             FROM sales_orders o
             JOIN contacts c ON c.organization_id = o.organization_id AND c.id = o.customer_id
             {where_sql}
             GROUP BY o.customer_id, c.name
             ORDER BY {order}, LOWER(c.name), c.name, o.customer_id"
        ),
        totals_sql: format!("SELECT {sums} FROM sales_orders o {where_sql}"),
        filter,
        sort: None,
        totals: PhantomData,
    }
}

#[derive(Debug, Default, FromRow, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct Valuation {
    item_id: String,
    name: String,
    sku: String,
    quantity: i64,
    unit_cost_cents: Option<i64>,
    #[sqlx(try_from = "String")]
    value_cents: Cents,
}

#[derive(Debug, Default, FromRow, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ValuationTotals {
    quantity: i64,
    #[sqlx(try_from = "String")]
    value_cents: Cents,
}

/// Values are exact sums of products (see [`ExactProductSum`]), which SQL cannot order
/// exactly, so the rows come in name order and are sorted by value here, stably.
fn inventory_valuation(org_id: &str) -> Spec<Valuation, ValuationTotals> {
    let mut filter = Filter::default();
    let org = filter.bind(org_id);
    filter.and(format!("s.organization_id = {org}"));
    let from = "FROM stock_levels s
         JOIN items i ON i.organization_id = s.organization_id AND i.id = s.item_id";
    let value = ExactProductSum {
        quantity: "s.quantity",
        cents: "COALESCE(i.cost_cents, 0)",
    }
    .select("value_cents");
    let where_sql = filter.sql();
    Spec {
        rows_sql: format!(
            "SELECT s.item_id, i.name, i.sku,
                    CAST(SUM(s.quantity) AS BIGINT) AS quantity,
                    i.cost_cents AS unit_cost_cents,
                    {value}
             {from} {where_sql}
             GROUP BY s.item_id, i.name, i.sku, i.cost_cents
             HAVING SUM(s.quantity) > 0
             ORDER BY LOWER(i.name), i.name, s.item_id"
        ),
        // Items without stock add 0 to both sums, so no HAVING is needed here.
        totals_sql: format!(
            "SELECT CAST(COALESCE(SUM(s.quantity), 0) AS BIGINT) AS quantity, {value}
             {from} {where_sql}"
        ),
        filter,
        sort: Some(|rows| rows.sort_by_key(|row| std::cmp::Reverse(row.value_cents))),
        totals: PhantomData,
    }
}

#[derive(Debug, Default, FromRow, Serialize, utoipa::ToSchema)]
#[schema(as = StockMovements)]
#[serde(rename_all = "camelCase")]
struct Movements {
    item_id: String,
    name: String,
    sku: String,
    in_quantity: i64,
    out_quantity: i64,
    net_quantity: i64,
    movement_count: i64,
}

#[derive(Debug, Default, FromRow, Serialize, utoipa::ToSchema)]
#[schema(as = StockMovementsTotals)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct MovementsTotals {
    in_quantity: i64,
    out_quantity: i64,
    net_quantity: i64,
    movement_count: i64,
}

fn stock_movements(org_id: &str, period: &Period) -> Spec<Movements, MovementsTotals> {
    let mut filter = Filter::default();
    let org = filter.bind(org_id);
    filter.and(format!("m.organization_id = {org}"));
    period.restrict(&mut filter, "m.created_at");
    let sums = "CAST(COALESCE(SUM(CASE WHEN m.quantity_delta > 0 THEN m.quantity_delta ELSE 0 END), 0)
                     AS BIGINT) AS in_quantity,
                CAST(COALESCE(SUM(CASE WHEN m.quantity_delta < 0 THEN -m.quantity_delta ELSE 0 END), 0)
                     AS BIGINT) AS out_quantity,
                CAST(COALESCE(SUM(m.quantity_delta), 0) AS BIGINT) AS net_quantity,
                COUNT(*) AS movement_count";
    let where_sql = filter.sql();
    Spec {
        rows_sql: format!(
            "SELECT m.item_id, i.name, i.sku, {sums}
             FROM stock_movements m
             JOIN items i ON i.organization_id = m.organization_id AND i.id = m.item_id
             {where_sql}
             GROUP BY m.item_id, i.name, i.sku
             ORDER BY SUM(m.quantity_delta) DESC, LOWER(i.name), i.name, m.item_id"
        ),
        totals_sql: format!("SELECT {sums} FROM stock_movements m {where_sql}"),
        filter,
        sort: None,
        totals: PhantomData,
    }
}

#[derive(Debug, Default, FromRow, Serialize, utoipa::ToSchema)]
#[schema(as = PurchasesByVendor)]
#[serde(rename_all = "camelCase")]
struct Purchases {
    vendor_id: String,
    name: String,
    order_count: i64,
    #[sqlx(try_from = "String")]
    total_cents: Cents,
}

#[derive(Debug, Default, FromRow, Serialize, utoipa::ToSchema)]
#[schema(as = PurchasesByVendorTotals)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PurchasesTotals {
    order_count: i64,
    #[sqlx(try_from = "String")]
    total_cents: Cents,
}

fn purchases_by_vendor(org_id: &str, period: &Period) -> Spec<Purchases, PurchasesTotals> {
    let mut filter = Filter::default();
    let org = filter.bind(org_id);
    filter.and(format!("p.organization_id = {org}"));
    filter.and("p.status = 'received'");
    period.restrict(&mut filter, "p.received_at");
    let total = ExactSum("p.total_cents");
    let sums = format!("COUNT(*) AS order_count, {}", total.select("total_cents"));
    let order = total.order_desc();
    let where_sql = filter.sql();
    Spec {
        rows_sql: format!(
            "SELECT p.vendor_id, c.name, {sums}
             FROM purchase_orders p
             JOIN contacts c ON c.organization_id = p.organization_id AND c.id = p.vendor_id
             {where_sql}
             GROUP BY p.vendor_id, c.name
             ORDER BY {order}, LOWER(c.name), c.name, p.vendor_id"
        ),
        totals_sql: format!("SELECT {sums} FROM purchase_orders p {where_sql}"),
        filter,
        sort: None,
        totals: PhantomData,
    }
}
