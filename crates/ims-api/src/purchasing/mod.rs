//! `/purchase-orders`: buying from vendors. An order is `open` until it is received (its
//! lines' stock enters its warehouse, all in one transaction) or cancelled.

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
use crate::orders::{self, Completion, NewOrder, OrderKind, OrderPatch, Refs, PURCHASE};
use crate::pagination::{DocumentFilter, DocumentQuery, Paginated};
use crate::policy::{invalidates, Group};
use crate::state::AppState;
use crate::status::{PurchaseOrderStatus, Status};

/// The purchasing routes.
pub fn router() -> OpenApiRouter<AppState> {
    let writes = || invalidates(&[Group::Dashboard, Group::Reports]);
    crate::openapi::tagged(
        "purchasing",
        OpenApiRouter::new()
            .routes(routes!(list))
            .routes(routes!(create).layer(writes()))
            .routes(routes!(read))
            .routes(routes!(patch).layer(writes()))
            // Receiving puts stock in: stock levels and item stock-on-hand change too.
            .routes(routes!(receive).layer(invalidates(&[
                Group::Stock,
                Group::Items,
                Group::Dashboard,
                Group::Reports,
            ]))),
    )
}

#[derive(Debug, Clone, FromRow, Serialize, utoipa::ToSchema)]
#[schema(as = PurchaseOrderSummary)]
#[serde(rename_all = "camelCase")]
struct OrderRow {
    id: String,
    vendor_id: String,
    warehouse_id: String,
    #[sqlx(try_from = "String")]
    status: PurchaseOrderStatus,
    notes: Option<String>,
    total_cents: i64,
    received_at: Option<String>,
    created_at: String,
    updated_at: String,
}

#[derive(Debug, Clone, FromRow, Serialize, utoipa::ToSchema)]
#[schema(as = PurchaseOrderLine)]
#[serde(rename_all = "camelCase")]
struct LineRow {
    id: String,
    item_id: String,
    quantity: i64,
    unit_cost_cents: i64,
    total_cents: i64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = PurchaseOrder)]
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
    type Status = PurchaseOrderStatus;
    const OPEN: PurchaseOrderStatus = PurchaseOrderStatus::Open;
    const CANCELLED: PurchaseOrderStatus = PurchaseOrderStatus::Cancelled;

    fn editable(
        &mut self,
    ) -> (
        &mut PurchaseOrderStatus,
        &mut String,
        &mut String,
        &mut Option<String>,
    ) {
        (
            &mut self.status,
            &mut self.vendor_id,
            &mut self.warehouse_id,
            &mut self.notes,
        )
    }
}

impl orders::OrderType for OrderRow {
    type Line = LineRow;
    /// The total.
    type Figures = i64;
    const KIND: OrderKind = PURCHASE;
    const COMPLETION: Completion<PurchaseOrderStatus> = Completion {
        done: PurchaseOrderStatus::Received,
        stamped: "received_at",
        verb: "received",
        direction: 1,
        source: Source::Purchase,
    };

    /// A unit cost is required on each line; the items must exist.
    async fn price(
        db: &Db,
        org_id: &str,
        lines: &[LineBody],
        v: &mut Validator,
    ) -> ApiResult<(Vec<LineRow>, i64)> {
        let valid = lines::validate(lines, "unitCostCents", true, v);
        lines::load_items(db, org_id, &valid, v).await?;
        let rows: Vec<LineRow> = valid
            .into_iter()
            .enumerate()
            .map(|(i, line)| {
                let unit = line.unit_cents.unwrap_or(0);
                LineRow {
                    id: Uuid::new_v4().to_string(),
                    item_id: line.item_id,
                    quantity: line.quantity,
                    unit_cost_cents: unit,
                    total_cents: lines::amounts(i, line.quantity, unit, 0, v).total,
                }
            })
            .collect();
        let total = lines::order_total(rows.iter().map(|l| l.total_cents), v);
        Ok((rows, total))
    }

    fn open(id: String, refs: Refs, total: i64, now: String) -> Self {
        Self {
            id,
            vendor_id: refs.party,
            warehouse_id: refs.warehouse,
            status: PurchaseOrderStatus::Open,
            notes: refs.notes,
            total_cents: total,
            received_at: None,
            created_at: now.clone(),
            updated_at: now,
        }
    }

    fn refigure(&mut self, total: i64) {
        self.total_cents = total;
    }

    async fn insert(&self, conn: &mut AnyConnection, org_id: &str) -> ApiResult<()> {
        sqlx::query(
            "INSERT INTO purchase_orders (id, organization_id, vendor_id, warehouse_id, status, notes, total_cents, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&self.id)
        .bind(org_id)
        .bind(&self.vendor_id)
        .bind(&self.warehouse_id)
        .bind(self.status.as_str())
        .bind(&self.notes)
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
            "UPDATE purchase_orders SET vendor_id = $1, warehouse_id = $2, notes = $3, status = $4,
               total_cents = $5, updated_at = $6
             WHERE organization_id = $7 AND id = $8",
        )
        .bind(&self.vendor_id)
        .bind(&self.warehouse_id)
        .bind(&self.notes)
        .bind(self.status.as_str())
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
                "INSERT INTO purchase_order_lines
                   (id, organization_id, purchase_order_id, line_no, item_id, quantity, unit_cost_cents, total_cents)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(&line.id)
            .bind(org_id)
            .bind(order_id)
            .bind(line_no as i64 + 1)
            .bind(&line.item_id)
            .bind(line.quantity)
            .bind(line.unit_cost_cents)
            .bind(line.total_cents)
            .execute(&mut *conn)
            .await
            .map_err(fields::reference_gone)?;
        }
        Ok(())
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(as = PurchaseOrderBody)]
#[serde(rename_all = "camelCase")]
struct CreateBody {
    #[schema(format = Uuid)]
    vendor_id: String,
    #[schema(format = Uuid)]
    warehouse_id: String,
    #[schema(min_items = 1, max_items = 500)]
    lines: Vec<LineBody>,
    #[schema(max_length = 2000)]
    notes: Option<String>,
}

#[utoipa::path(
    post, path = "/purchase-orders", operation_id = "createPurchaseOrder",
    summary = "Create a purchase order",
    request_body = CreateBody,
    responses((status = 201, description = "The new purchase order, status `open`", body = Order)),
)]
async fn create(org: Org, Json(body): Json<CreateBody>) -> ApiResult<(StatusCode, Json<Order>)> {
    let new = NewOrder {
        party: body.vendor_id,
        warehouse: body.warehouse_id,
        notes: body.notes,
        lines: body.lines,
    };
    let created = orders::create::<OrderRow>(&org.db, &org.id, new).await?;
    Ok((StatusCode::CREATED, Json(created.into())))
}

#[utoipa::path(
    get, path = "/purchase-orders/{id}", operation_id = "getPurchaseOrder",
    summary = "Get a purchase order with its lines",
    responses((status = 200, description = "The purchase order", body = Order)),
)]
async fn read(org: Org, Id(id): Id) -> ApiResult<Json<Order>> {
    let read = orders::read::<OrderRow>(&org.db, &org.id, &id).await?;
    Ok(Json(read.into()))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListQuery {
    vendor_id: Option<String>,
    #[serde(flatten)]
    document: DocumentQuery,
}

#[utoipa::path(
    get, path = "/purchase-orders", operation_id = "listPurchaseOrders",
    summary = "List purchase orders",
    params(
        crate::pagination::PageParams,
        ("status" = Option<String>, Query, pattern = "^(open|received|cancelled)$", description = "`open`, `received` or `cancelled`"),
        ("vendorId" = Option<String>, Query, format = Uuid, description = "Only this vendor"),
        ("from" = Option<String>, Query, format = Date, description = "Created on or after this date (`YYYY-MM-DD`, UTC)"),
        ("to" = Option<String>, Query, format = Date, description = "Created on or before this date (`YYYY-MM-DD`, UTC)"),
    ),
    responses((status = 200, description = "One page of purchase orders (without lines)", body = crate::pagination::Paginated<OrderRow>)),
)]
async fn list(org: Org, Query(query): Query<ListQuery>) -> ApiResult<Json<Paginated<OrderRow>>> {
    let (filter, page) = DocumentFilter {
        statuses: PurchaseOrderStatus::NAMES,
        party: ("vendorId", "vendor_id"),
        date_column: "created_at",
    }
    .build(&org.id, query.document, query.vendor_id)?;
    Ok(Json(
        crate::pagination::newest_first(&org.db, PURCHASE.table.1, PURCHASE.table.0, filter, page)
            .await?,
    ))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(as = PurchaseOrderPatch)]
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
    vendor_id: Option<Option<String>>,
    #[serde(default, deserialize_with = "fields::patch")]
    #[schema(format = Uuid, nullable = false)]
    warehouse_id: Option<Option<String>>,
    #[serde(default, deserialize_with = "fields::patch")]
    #[schema(min_items = 1, max_items = 500, nullable = false)]
    lines: Option<Option<Vec<LineBody>>>,
}

/// Changes an open order (notes, vendor, warehouse, lines) or cancels it. Received and
/// cancelled orders are history: 409.
#[utoipa::path(
    patch, path = "/purchase-orders/{id}", operation_id = "updatePurchaseOrder",
    summary = "Update or cancel an open purchase order",
    description = "Fields left out are kept; `status: \"cancelled\"` cancels.",
    request_body = PatchBody,
    responses(
        (status = 200, description = "The updated purchase order", body = Order),
        (status = 409, description = "The purchase order is no longer open", body = crate::error::Problem, content_type = "application/problem+json"),
    ),
)]
async fn patch(org: Org, Id(id): Id, Json(body): Json<PatchBody>) -> ApiResult<Json<Order>> {
    let patch = OrderPatch {
        status: body.status,
        party: body.vendor_id,
        warehouse: body.warehouse_id,
        notes: body.notes,
        lines: body.lines,
    };
    let patched = orders::patch::<OrderRow>(&org.db, &org.id, &id, patch).await?;
    Ok(Json(patched.into()))
}

/// Puts every line's stock into the order's warehouse and marks the order received; a
/// second receive is a 409, never a second delivery.
#[utoipa::path(
    post, path = "/purchase-orders/{id}/receive", operation_id = "receivePurchaseOrder",
    summary = "Receive a purchase order: put its stock in",
    responses(
        (status = 200, description = "The purchase order, with its new status", body = Order),
        (status = 409, description = "The order is not open", body = crate::error::Problem, content_type = "application/problem+json"),
    ),
)]
async fn receive(org: Org, Id(id): Id) -> ApiResult<Json<Order>> {
    let received = orders::complete::<OrderRow>(&org, &id).await?;
    Ok(Json(received.into()))
}
