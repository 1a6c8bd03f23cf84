//! `/sales-orders` and `/invoices`: selling to customers.
//!
//! An order is `open` until it is fulfilled (stock leaves its warehouse, atomically for all
//! lines) or cancelled. Prices default to the item's price and tax to the item's tax rate,
//! both captured on the line when the order is written, so later catalog changes do not
//! rewrite history. Invoices are in [`invoices`].

pub mod invoices;

use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use sqlx::{AnyConnection, FromRow};
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;
use uuid::Uuid;

use crate::auth::Org;
use crate::db::Db;
use crate::error::{ApiResult, Json, Query, Validator};
use crate::fields::{self, Id};
use crate::inventory::stock::Source;
use crate::orders::lines::{self, LineBody};
use crate::orders::{self, Completion, NewOrder, OrderKind, OrderPatch, Refs, SALES};
use crate::pagination::{DocumentFilter, DocumentQuery, Paginated};
use crate::policy::{invalidates, Group};
use crate::state::AppState;
use crate::status::{SalesOrderStatus, Status};

/// The sales routes.
pub fn router() -> OpenApiRouter<AppState> {
    let writes = || invalidates(&[Group::Dashboard, Group::Reports]);
    crate::openapi::tagged(
        "sales",
        OpenApiRouter::new()
            .routes(routes!(list))
            .routes(routes!(create).layer(writes()))
            .routes(routes!(read))
            .routes(routes!(patch).layer(writes()))
            // Fulfilment takes stock out: stock levels and item stock-on-hand change too.
            .routes(routes!(fulfil).layer(invalidates(&[
                Group::Stock,
                Group::Items,
                Group::Dashboard,
                Group::Reports,
            ])))
            .merge(invoices::router()),
    )
}

#[derive(Debug, Clone, FromRow, Serialize, utoipa::ToSchema)]
#[schema(as = SalesOrderSummary)]
#[serde(rename_all = "camelCase")]
struct OrderRow {
    id: String,
    customer_id: String,
    warehouse_id: String,
    #[sqlx(try_from = "String")]
    status: SalesOrderStatus,
    notes: Option<String>,
    subtotal_cents: i64,
    tax_cents: i64,
    total_cents: i64,
    fulfilled_at: Option<String>,
    created_at: String,
    updated_at: String,
}

#[derive(Debug, Clone, FromRow, Serialize, utoipa::ToSchema)]
#[schema(as = SalesOrderLine)]
#[serde(rename_all = "camelCase")]
struct LineRow {
    id: String,
    item_id: String,
    quantity: i64,
    unit_price_cents: i64,
    tax_rate_bps: i64,
    subtotal_cents: i64,
    tax_cents: i64,
    total_cents: i64,
}

/// An order with its lines, as `GET /sales-orders/{id}` shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = SalesOrder)]
struct Order {
    #[serde(flatten)]
    order: OrderRow,
    lines: Vec<LineRow>,
}

impl From<(OrderRow, Vec<LineRow>)> for Order {
    fn from((order, lines): (OrderRow, Vec<LineRow>)) -> Self {
        Self { order, lines }
    }
}

impl orders::Quantity for LineRow {
    fn item_and_quantity(&self) -> (&str, i64) {
        (&self.item_id, self.quantity)
    }
}

impl orders::Editable for OrderRow {
    type Status = SalesOrderStatus;
    const OPEN: SalesOrderStatus = SalesOrderStatus::Open;
    const CANCELLED: SalesOrderStatus = SalesOrderStatus::Cancelled;

    fn editable(
        &mut self,
    ) -> (
        &mut SalesOrderStatus,
        &mut String,
        &mut String,
        &mut Option<String>,
    ) {
        (
            &mut self.status,
            &mut self.customer_id,
            &mut self.warehouse_id,
            &mut self.notes,
        )
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(as = SalesOrderBody)]
#[serde(rename_all = "camelCase")]
struct CreateBody {
    #[schema(format = Uuid)]
    customer_id: String,
    #[schema(format = Uuid)]
    warehouse_id: String,
    #[schema(min_items = 1, max_items = 500)]
    lines: Vec<LineBody>,
    #[schema(max_length = 2000)]
    notes: Option<String>,
}

/// What a sales order's lines add up to.
struct Figures {
    subtotal: i64,
    tax: i64,
    total: i64,
}

impl orders::OrderType for OrderRow {
    type Line = LineRow;
    type Figures = Figures;
    const KIND: OrderKind = SALES;
    const COMPLETION: Completion<SalesOrderStatus> = Completion {
        done: SalesOrderStatus::Fulfilled,
        stamped: "fulfilled_at",
        verb: "fulfilled",
        direction: -1,
        source: Source::Sale,
    };

    /// Prices default to the item's price, tax to its rate, both captured on the line.
    async fn price(
        db: &Db,
        org_id: &str,
        lines: &[LineBody],
        v: &mut Validator,
    ) -> ApiResult<(Vec<LineRow>, Figures)> {
        let valid = lines::validate(lines, "unitPriceCents", false, v);
        let items = lines::load_items(db, org_id, &valid, v).await?;
        let mut rows = Vec::new();
        for (i, line) in valid.into_iter().enumerate() {
            let Some(item) = items.get(&line.item_id) else {
                continue;
            };
            let unit = line.unit_cents.unwrap_or(item.price_cents);
            let amounts = lines::amounts(i, line.quantity, unit, item.tax_rate_bps, v);
            rows.push(LineRow {
                id: Uuid::new_v4().to_string(),
                item_id: line.item_id,
                quantity: line.quantity,
                unit_price_cents: unit,
                tax_rate_bps: item.tax_rate_bps,
                subtotal_cents: amounts.subtotal,
                tax_cents: amounts.tax,
                total_cents: amounts.total,
            });
        }
        // Each of the three order figures must fit, the total (the largest) included.
        let figures = Figures {
            subtotal: lines::order_total(rows.iter().map(|l| l.subtotal_cents), v),
            tax: lines::order_total(rows.iter().map(|l| l.tax_cents), v),
            total: lines::order_total(rows.iter().map(|l| l.total_cents), v),
        };
        Ok((rows, figures))
    }

    fn open(id: String, refs: Refs, figures: Figures, now: String) -> Self {
        Self {
            id,
            customer_id: refs.party,
            warehouse_id: refs.warehouse,
            status: SalesOrderStatus::Open,
            notes: refs.notes,
            subtotal_cents: figures.subtotal,
            tax_cents: figures.tax,
            total_cents: figures.total,
            fulfilled_at: None,
            created_at: now.clone(),
            updated_at: now,
        }
    }

    fn refigure(&mut self, figures: Figures) {
        self.subtotal_cents = figures.subtotal;
        self.tax_cents = figures.tax;
        self.total_cents = figures.total;
    }

    async fn insert(&self, conn: &mut AnyConnection, org_id: &str) -> ApiResult<()> {
        sqlx::query(
            "INSERT INTO sales_orders (id, organization_id, customer_id, warehouse_id, status, notes, subtotal_cents, tax_cents, total_cents, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(&self.id)
        .bind(org_id)
        .bind(&self.customer_id)
        .bind(&self.warehouse_id)
        .bind(self.status.as_str())
        .bind(&self.notes)
        .bind(self.subtotal_cents)
        .bind(self.tax_cents)
        .bind(self.total_cents)
        .bind(&self.created_at)
        .bind(&self.updated_at)
        .execute(conn)
        .await
        .map_err(fields::reference_gone)?;
        Ok(())
    }

    async fn update(
        &mut self,
        conn: &mut AnyConnection,
        org_id: &str,
        now: String,
    ) -> ApiResult<()> {
        self.updated_at = now;
        sqlx::query(
            "UPDATE sales_orders SET customer_id = $1, warehouse_id = $2, notes = $3, status = $4,
               subtotal_cents = $5, tax_cents = $6, total_cents = $7, updated_at = $8
             WHERE organization_id = $9 AND id = $10",
        )
        .bind(&self.customer_id)
        .bind(&self.warehouse_id)
        .bind(&self.notes)
        .bind(self.status.as_str())
        .bind(self.subtotal_cents)
        .bind(self.tax_cents)
        .bind(self.total_cents)
        .bind(&self.updated_at)
        .bind(org_id)
        .bind(&self.id)
        .execute(conn)
        .await
        .map_err(fields::reference_gone)?;
        Ok(())
    }

    async fn insert_lines(
        conn: &mut AnyConnection,
        org_id: &str,
        order_id: &str,
        lines: &[LineRow],
    ) -> ApiResult<()> {
        for (line_no, line) in lines.iter().enumerate() {
            sqlx::query(
                "INSERT INTO sales_order_lines
                   (id, organization_id, sales_order_id, line_no, item_id, quantity, unit_price_cents, tax_rate_bps, subtotal_cents, tax_cents, total_cents)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            )
            .bind(&line.id)
            .bind(org_id)
            .bind(order_id)
            .bind(line_no as i64 + 1)
            .bind(&line.item_id)
            .bind(line.quantity)
            .bind(line.unit_price_cents)
            .bind(line.tax_rate_bps)
            .bind(line.subtotal_cents)
            .bind(line.tax_cents)
            .bind(line.total_cents)
            .execute(&mut *conn)
            .await
            .map_err(fields::reference_gone)?;
        }
        Ok(())
    }
}

#[utoipa::path(
    post, path = "/sales-orders", operation_id = "createSalesOrder",
    summary = "Create a sales order",
    request_body = CreateBody,
    responses((status = 201, description = "The new sales order, status `open`", body = Order)),
)]
async fn create(org: Org, Json(body): Json<CreateBody>) -> ApiResult<(StatusCode, Json<Order>)> {
    let new = NewOrder {
        party: body.customer_id,
        warehouse: body.warehouse_id,
        notes: body.notes,
        lines: body.lines,
    };
    let created = orders::create::<OrderRow>(&org.db, &org.id, new).await?;
    Ok((StatusCode::CREATED, Json(created.into())))
}

#[utoipa::path(
    get, path = "/sales-orders/{id}", operation_id = "getSalesOrder",
    summary = "Get a sales order with its lines",
    responses((status = 200, description = "The sales order", body = Order)),
)]
async fn read(org: Org, Id(id): Id) -> ApiResult<Json<Order>> {
    let read = orders::read::<OrderRow>(&org.db, &org.id, &id).await?;
    Ok(Json(read.into()))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListQuery {
    customer_id: Option<String>,
    #[serde(flatten)]
    document: DocumentQuery,
}

#[utoipa::path(
    get, path = "/sales-orders", operation_id = "listSalesOrders", summary = "List sales orders",
    params(
        crate::pagination::PageParams,
        ("status" = Option<String>, Query, pattern = "^(open|fulfilled|cancelled)$", description = "`open`, `fulfilled` or `cancelled`"),
        ("customerId" = Option<String>, Query, format = Uuid, description = "Only this customer"),
        ("from" = Option<String>, Query, format = Date, description = "Created on or after this date (`YYYY-MM-DD`, UTC)"),
        ("to" = Option<String>, Query, format = Date, description = "Created on or before this date (`YYYY-MM-DD`, UTC)"),
    ),
    responses((status = 200, description = "One page of sales orders (without lines)", body = crate::pagination::Paginated<OrderRow>)),
)]
async fn list(org: Org, Query(query): Query<ListQuery>) -> ApiResult<Json<Paginated<OrderRow>>> {
    let (filter, page) = DocumentFilter {
        statuses: SalesOrderStatus::NAMES,
        party: ("customerId", "customer_id"),
        date_column: "created_at",
    }
    .build(&org.id, query.document, query.customer_id)?;
    Ok(Json(
        crate::pagination::newest_first(&org.db, SALES.table.1, SALES.table.0, filter, page)
            .await?,
    ))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(as = SalesOrderPatch)]
#[serde(rename_all = "camelCase")]
struct PatchBody {
    #[serde(default, deserialize_with = "fields::patch")]
    #[schema(pattern = "^cancelled$", nullable = false)]
    status: Option<Option<String>>,
    #[serde(default, deserialize_with = "fields::patch")]
    #[schema(max_length = 2000)]
    notes: Option<Option<String>>,
    #[serde(default, deserialize_with = "fields::patch")]
    #[schema(format = Uuid, nullable = false)]
    customer_id: Option<Option<String>>,
    #[serde(default, deserialize_with = "fields::patch")]
    #[schema(format = Uuid, nullable = false)]
    warehouse_id: Option<Option<String>>,
    #[serde(default, deserialize_with = "fields::patch")]
    #[schema(min_items = 1, max_items = 500, nullable = false)]
    lines: Option<Option<Vec<LineBody>>>,
}

/// Changes an open order: notes, customer, warehouse, lines (replaced whole, re-priced), or
/// `status: "cancelled"`. Fulfilled and cancelled orders are history: 409.
#[utoipa::path(
    patch, path = "/sales-orders/{id}", operation_id = "updateSalesOrder",
    summary = "Update or cancel an open sales order",
    description = "Fields left out are kept; `status: \"cancelled\"` cancels.",
    request_body = PatchBody,
    responses(
        (status = 200, description = "The updated sales order", body = Order),
        (status = 409, description = "The sales order is no longer open", body = crate::error::Problem, content_type = "application/problem+json"),
    ),
)]
async fn patch(org: Org, Id(id): Id, Json(body): Json<PatchBody>) -> ApiResult<Json<Order>> {
    let patch = OrderPatch {
        status: body.status,
        party: body.customer_id,
        warehouse: body.warehouse_id,
        notes: body.notes,
        lines: body.lines,
    };
    let patched = orders::patch::<OrderRow>(&org.db, &org.id, &id, patch).await?;
    Ok(Json(patched.into()))
}

/// Takes every line's stock out of the order's warehouse, or none of it (409 naming the
/// short item), and marks the order fulfilled. A second fulfil is a 409, never a second
/// withdrawal: the status change is the transaction's first write and is conditional.
#[utoipa::path(
    post, path = "/sales-orders/{id}/fulfil", operation_id = "fulfilSalesOrder",
    summary = "Fulfil a sales order: take its stock out",
    responses(
        (status = 200, description = "The sales order, with its new status", body = Order),
        (status = 409, description = "The order is not open, or there is not enough stock (nothing is applied)", body = crate::error::Problem, content_type = "application/problem+json"),
    ),
)]
async fn fulfil(org: Org, Id(id): Id) -> ApiResult<Json<Order>> {
    let fulfilled = orders::complete::<OrderRow>(&org, &id).await?;
    Ok(Json(fulfilled.into()))
}
