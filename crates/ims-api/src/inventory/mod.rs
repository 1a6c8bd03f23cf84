//! `/inventory`: stock levels per item and warehouse, adjustments, transfers and the
//! movement ledger.
//!
//! Stock never goes negative: every decrement is conditional (see [`stock`]) and a request
//! that would need more than is there is a 409 with nothing of it applied.

pub mod stock;

use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use sqlx::FromRow;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;
use uuid::Uuid;

use crate::auth::Org;
use crate::db::{self, Db};
use crate::error::{ApiResult, Json, Query, Validator};
use crate::fields::{self, Table};
use crate::pagination::{Filter, PageParams, Paginated};
use crate::policy::{cached, invalidates, Group, RoutePolicy};
use crate::state::AppState;
use stock::{Movement, Source};

const MAX_REASON_CHARS: usize = 500;

/// An adjustment's reason in the document: 1 to [`MAX_REASON_CHARS`] characters, not blank.
fn reason_schema() -> utoipa::openapi::Object {
    fields::not_blank(MAX_REASON_CHARS)
}

/// The inventory routes.
pub fn router() -> OpenApiRouter<AppState> {
    crate::openapi::tagged(
        "inventory",
        OpenApiRouter::new()
            .routes(routes!(stock_levels).cache(cached("stock:levels", 30)))
            // Stock changes show in item stock-on-hand, the dashboard and the stock reports.
            .routes(routes!(list_adjustments))
            .routes(routes!(adjust).layer(invalidates(&[
                Group::Stock,
                Group::Items,
                Group::Dashboard,
                Group::Reports,
            ])))
            .routes(routes!(list_transfers))
            .routes(routes!(transfer).layer(invalidates(&[
                Group::Stock,
                Group::Dashboard,
                Group::Reports,
            ])))
            .routes(routes!(list_movements)),
    )
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StockLevelQuery {
    warehouse_id: Option<String>,
    item_id: Option<String>,
    low_stock: Option<String>,
    #[serde(flatten)]
    page: PageParams,
}

#[derive(Debug, FromRow, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct StockLevel {
    item_id: String,
    item_name: String,
    sku: String,
    warehouse_id: String,
    warehouse_name: String,
    quantity: i64,
    reorder_level: Option<i64>,
    updated_at: String,
}

/// Parses an optional `true`/`false` query flag.
fn flag(raw: Option<&str>, field: &str, v: &mut Validator) -> bool {
    match raw.map(str::trim) {
        None | Some("false") | Some("0") => false,
        Some("true") | Some("1") => true,
        Some(_) => {
            v.check(false, field, "must be true or false");
            false
        }
    }
}

#[utoipa::path(
    get, path = "/inventory/stock-levels", operation_id = "listStockLevels",
    summary = "Stock per item and warehouse",
    params(
        crate::pagination::PageParams,
        ("warehouseId" = Option<String>, Query, format = Uuid, description = "Only this warehouse"),
        ("itemId" = Option<String>, Query, format = Uuid, description = "Only this item"),
        ("lowStock" = Option<bool>, Query, description = "`true`: only rows at or below the item's reorder level"),
    ),
    responses((status = 200, description = "One page of stock levels", body = crate::pagination::Paginated<StockLevel>)),
)]
async fn stock_levels(
    org: Org,
    Query(query): Query<StockLevelQuery>,
) -> ApiResult<Json<Paginated<StockLevel>>> {
    let mut v = Validator::default();
    let page = query.page.parse(&mut v);
    let warehouse_id = fields::reference(query.warehouse_id, "warehouseId", &mut v);
    let item_id = fields::reference(query.item_id, "itemId", &mut v);
    let low_stock = flag(query.low_stock.as_deref(), "lowStock", &mut v);
    v.finish()?;

    let mut filter = Filter::default();
    let scope = filter.bind(&org.id);
    filter.and(format!("s.organization_id = {scope}"));
    if let Some(id) = warehouse_id {
        let p = filter.bind(id);
        filter.and(format!("s.warehouse_id = {p}"));
    }
    if let Some(id) = item_id {
        let p = filter.bind(id);
        filter.and(format!("s.item_id = {p}"));
    }
    if low_stock {
        filter.and("i.reorder_level IS NOT NULL AND s.quantity <= i.reorder_level");
    }
    let from = "stock_levels s
         JOIN items i ON i.id = s.item_id
         JOIN warehouses w ON w.id = s.warehouse_id";
    let select = format!(
        "SELECT s.item_id, i.name AS item_name, i.sku, s.warehouse_id, w.name AS warehouse_name,
                s.quantity, i.reorder_level, s.updated_at
         FROM {from}"
    );
    let order = "i.name, w.name, s.item_id, s.warehouse_id";
    Ok(Json(
        crate::pagination::fetch_page(&org.db, &select, from, &filter, order, page).await?,
    ))
}

/// `quantityDelta`: an integer from -10^9 to -1 or from 1 to 10^9 (utoipa's field
/// attributes cannot say "not zero", a `oneOf` of the two ranges can).
fn non_zero_delta() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
    let range = |from: i64, to: i64| {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(from))
            .maximum(Some(to))
            .build()
    };
    OneOfBuilder::new()
        .item(range(-1_000_000_000, -1))
        .item(range(1, 1_000_000_000))
        .description(Some("Non-zero; at most 10^9 either way."))
        .build()
        .into()
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct AdjustmentBody {
    #[schema(format = Uuid)]
    item_id: String,
    #[schema(format = Uuid)]
    warehouse_id: String,
    /// Non-zero; at most 10^9 either way.
    #[schema(schema_with = non_zero_delta)]
    quantity_delta: i64,
    #[schema(schema_with = reason_schema)]
    reason: String,
}

#[derive(Debug, FromRow, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct Adjustment {
    id: String,
    item_id: String,
    warehouse_id: String,
    quantity_delta: i64,
    reason: String,
    created_by: Option<String>,
    created_at: String,
}

/// Validates that `item_id` and `warehouse_id` name rows of the caller's organization.
async fn check_item_and_warehouses(
    db: &Db,
    org_id: &str,
    item: &Option<String>,
    warehouses: &[(&Option<String>, &str)],
    v: &mut Validator,
) -> ApiResult<()> {
    fields::check_reference(db, Table::Items, org_id, item.as_deref(), "itemId", v).await?;
    for (id, field) in warehouses {
        fields::check_reference(db, Table::Warehouses, org_id, id.as_deref(), field, v).await?;
    }
    Ok(())
}

#[utoipa::path(
    post, path = "/inventory/adjustments", operation_id = "createAdjustment",
    summary = "Adjust the stock of an item in a warehouse",
    request_body = AdjustmentBody,
    responses(
        (status = 201, description = "The recorded adjustment", body = Adjustment),
        (status = 409, description = "Not enough stock: stock never goes negative, and nothing of the request is applied", body = crate::error::Problem, content_type = "application/problem+json"),
    ),
)]
async fn adjust(
    org: Org,
    Json(body): Json<AdjustmentBody>,
) -> ApiResult<(StatusCode, Json<Adjustment>)> {
    let mut v = Validator::default();
    let item_id = fields::reference(Some(body.item_id), "itemId", &mut v);
    let warehouse_id = fields::reference(Some(body.warehouse_id), "warehouseId", &mut v);
    let reason = fields::required_text(&body.reason, "reason", MAX_REASON_CHARS, &mut v);
    v.check(
        body.quantity_delta != 0,
        "quantityDelta",
        "must not be zero",
    );
    v.check(
        body.quantity_delta.unsigned_abs() <= 1_000_000_000,
        "quantityDelta",
        "must be at most 1,000,000,000 in size",
    );
    check_item_and_warehouses(
        &org.db,
        &org.id,
        &item_id,
        &[(&warehouse_id, "warehouseId")],
        &mut v,
    )
    .await?;
    v.finish()?;
    let (item_id, warehouse_id) = (
        item_id.unwrap_or_default(),
        warehouse_id.unwrap_or_default(),
    );

    let adjustment = Adjustment {
        id: Uuid::new_v4().to_string(),
        item_id,
        warehouse_id,
        quantity_delta: body.quantity_delta,
        reason,
        created_by: Some(org.user_id.clone()),
        created_at: db::now(),
    };
    let mut tx = org.db.begin_write().await?;
    stock::apply(
        &mut tx,
        &Movement {
            org_id: &org.id,
            item_id: &adjustment.item_id,
            warehouse_id: &adjustment.warehouse_id,
            delta: adjustment.quantity_delta,
            source: Source::Adjustment,
            source_id: &adjustment.id,
            reason: Some(&adjustment.reason),
            user_id: Some(&org.user_id),
        },
    )
    .await?;
    sqlx::query(
        "INSERT INTO stock_adjustments (id, organization_id, item_id, warehouse_id, quantity_delta, reason, created_by, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&adjustment.id)
    .bind(&org.id)
    .bind(&adjustment.item_id)
    .bind(&adjustment.warehouse_id)
    .bind(adjustment.quantity_delta)
    .bind(&adjustment.reason)
    .bind(&adjustment.created_by)
    .bind(&adjustment.created_at)
    .execute(&mut *tx)
    .await
    .map_err(fields::reference_gone)?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(adjustment)))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LedgerQuery {
    item_id: Option<String>,
    warehouse_id: Option<String>,
    #[serde(flatten)]
    page: PageParams,
}

impl LedgerQuery {
    /// The organization, item and warehouse conditions shared by the ledger-like lists.
    fn filter(
        self,
        org_id: &str,
        item_column: &str,
        warehouse_columns: &[&str],
    ) -> ApiResult<(Filter, crate::pagination::Page)> {
        let mut v = Validator::default();
        let page = self.page.parse(&mut v);
        let item_id = fields::reference(self.item_id, "itemId", &mut v);
        let warehouse_id = fields::reference(self.warehouse_id, "warehouseId", &mut v);
        v.finish()?;
        let mut filter = Filter::default();
        let org = filter.bind(org_id);
        filter.and(format!("organization_id = {org}"));
        if let Some(id) = item_id {
            let p = filter.bind(id);
            filter.and(format!("{item_column} = {p}"));
        }
        if let Some(id) = warehouse_id {
            let p = filter.bind(id);
            let any: Vec<String> = warehouse_columns
                .iter()
                .map(|c| format!("{c} = {p}"))
                .collect();
            filter.and(format!("({})", any.join(" OR ")));
        }
        Ok((filter, page))
    }
}

#[utoipa::path(
    get, path = "/inventory/adjustments", operation_id = "listAdjustments",
    summary = "List stock adjustments",
    params(
        crate::pagination::PageParams,
        ("itemId" = Option<String>, Query, format = Uuid, description = "Only this item"),
        ("warehouseId" = Option<String>, Query, format = Uuid, description = "Only this warehouse"),
    ),
    responses((status = 200, description = "One page of adjustments, newest first", body = crate::pagination::Paginated<Adjustment>)),
)]
async fn list_adjustments(
    org: Org,
    Query(query): Query<LedgerQuery>,
) -> ApiResult<Json<Paginated<Adjustment>>> {
    let (filter, page) = query.filter(&org.id, "item_id", &["warehouse_id"])?;
    let columns = "id, item_id, warehouse_id, quantity_delta, reason, created_by, created_at";
    Ok(Json(
        crate::pagination::newest_first(&org.db, columns, "stock_adjustments", filter, page)
            .await?,
    ))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct TransferBody {
    #[schema(format = Uuid)]
    item_id: String,
    #[schema(format = Uuid)]
    from_warehouse_id: String,
    #[schema(format = Uuid)]
    to_warehouse_id: String,
    #[schema(minimum = 1, maximum = 1_000_000_000)]
    quantity: i64,
}

#[derive(Debug, FromRow, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct Transfer {
    id: String,
    item_id: String,
    from_warehouse_id: String,
    to_warehouse_id: String,
    quantity: i64,
    created_by: Option<String>,
    created_at: String,
}

#[utoipa::path(
    post, path = "/inventory/transfers", operation_id = "createTransfer",
    summary = "Move stock between warehouses",
    request_body = TransferBody,
    responses(
        (status = 201, description = "The recorded transfer", body = Transfer),
        (status = 409, description = "Not enough stock: stock never goes negative, and nothing of the request is applied", body = crate::error::Problem, content_type = "application/problem+json"),
    ),
)]
async fn transfer(
    org: Org,
    Json(body): Json<TransferBody>,
) -> ApiResult<(StatusCode, Json<Transfer>)> {
    let mut v = Validator::default();
    let item_id = fields::reference(Some(body.item_id), "itemId", &mut v);
    let from = fields::reference(Some(body.from_warehouse_id), "fromWarehouseId", &mut v);
    let to = fields::reference(Some(body.to_warehouse_id), "toWarehouseId", &mut v);
    v.check(
        (1..=1_000_000_000).contains(&body.quantity),
        "quantity",
        "must be a whole number from 1 to 1,000,000,000",
    );
    v.check(
        from.is_none() || from != to,
        "toWarehouseId",
        "must differ from fromWarehouseId",
    );
    check_item_and_warehouses(
        &org.db,
        &org.id,
        &item_id,
        &[(&from, "fromWarehouseId"), (&to, "toWarehouseId")],
        &mut v,
    )
    .await?;
    v.finish()?;

    let transfer = Transfer {
        id: Uuid::new_v4().to_string(),
        item_id: item_id.unwrap_or_default(),
        from_warehouse_id: from.unwrap_or_default(),
        to_warehouse_id: to.unwrap_or_default(),
        quantity: body.quantity,
        created_by: Some(org.user_id.clone()),
        created_at: db::now(),
    };
    // Both sides in one transaction: either the stock moves or nothing happens. Their
    // levels are locked in warehouse order, not from-then-to: two opposite transfers of
    // one item then lock in the same order instead of each holding the level the other
    // waits for (PostgreSQL broke that deadlock by failing one with a 500; found by a
    // probe). Orders lock their levels in item order within one warehouse, the same
    // (item, warehouse) order.
    let mut sides = [
        (&transfer.from_warehouse_id, -transfer.quantity),
        (&transfer.to_warehouse_id, transfer.quantity),
    ];
    sides.sort_by_key(|(warehouse_id, _)| *warehouse_id);
    let mut tx = org.db.begin_write().await?;
    for (warehouse_id, delta) in sides {
        stock::apply(
            &mut tx,
            &Movement {
                org_id: &org.id,
                item_id: &transfer.item_id,
                warehouse_id,
                delta,
                source: Source::Transfer,
                source_id: &transfer.id,
                reason: None,
                user_id: Some(&org.user_id),
            },
        )
        .await?;
    }
    sqlx::query(
        "INSERT INTO stock_transfers (id, organization_id, item_id, from_warehouse_id, to_warehouse_id, quantity, created_by, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&transfer.id)
    .bind(&org.id)
    .bind(&transfer.item_id)
    .bind(&transfer.from_warehouse_id)
    .bind(&transfer.to_warehouse_id)
    .bind(transfer.quantity)
    .bind(&transfer.created_by)
    .bind(&transfer.created_at)
    .execute(&mut *tx)
    .await
    .map_err(fields::reference_gone)?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(transfer)))
}

#[utoipa::path(
    get, path = "/inventory/transfers", operation_id = "listTransfers",
    summary = "List stock transfers",
    params(
        crate::pagination::PageParams,
        ("itemId" = Option<String>, Query, format = Uuid, description = "Only this item"),
        ("warehouseId" = Option<String>, Query, format = Uuid, description = "Only this warehouse"),
    ),
    responses((status = 200, description = "One page of transfers, newest first", body = crate::pagination::Paginated<Transfer>)),
)]
async fn list_transfers(
    org: Org,
    Query(query): Query<LedgerQuery>,
) -> ApiResult<Json<Paginated<Transfer>>> {
    let (filter, page) = query.filter(
        &org.id,
        "item_id",
        &["from_warehouse_id", "to_warehouse_id"],
    )?;
    let columns =
        "id, item_id, from_warehouse_id, to_warehouse_id, quantity, created_by, created_at";
    Ok(Json(
        crate::pagination::newest_first(&org.db, columns, "stock_transfers", filter, page).await?,
    ))
}

#[derive(Debug, FromRow, Serialize, utoipa::ToSchema)]
#[schema(as = Movement)]
#[serde(rename_all = "camelCase")]
struct MovementRow {
    id: String,
    item_id: String,
    warehouse_id: String,
    quantity_delta: i64,
    source: String,
    source_id: String,
    reason: Option<String>,
    created_by: Option<String>,
    created_at: String,
}

#[utoipa::path(
    get, path = "/inventory/movements", operation_id = "listMovements",
    summary = "The stock ledger: every change of stock",
    params(
        crate::pagination::PageParams,
        ("itemId" = Option<String>, Query, format = Uuid, description = "Only this item"),
        ("warehouseId" = Option<String>, Query, format = Uuid, description = "Only this warehouse"),
    ),
    responses((status = 200, description = "One page of movements, newest first", body = crate::pagination::Paginated<MovementRow>)),
)]
async fn list_movements(
    org: Org,
    Query(query): Query<LedgerQuery>,
) -> ApiResult<Json<Paginated<MovementRow>>> {
    let (filter, page) = query.filter(&org.id, "item_id", &["warehouse_id"])?;
    let columns =
        "id, item_id, warehouse_id, quantity_delta, source, source_id, reason, created_by, created_at";
    Ok(Json(
        crate::pagination::newest_first(&org.db, columns, "stock_movements", filter, page).await?,
    ))
}
