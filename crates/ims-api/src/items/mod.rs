//! `/items`: the things an organization stocks and sells.
//!
//! `{name, sku, priceCents, costCents?, description?, categoryId?, taxRateId?,
//! reorderLevel?, unit?}`. The SKU is unique within an organization. Every read carries
//! `stockOnHand`, the sum of the item's `stock_levels` over all warehouses (0 when it has
//! none), computed in the same query so it is never stale.
//!
//! The list filters by `search` (case-insensitive substring of name or SKU), `categoryId`
//! and `lowStock=true` (items with a reorder level whose stock is at or below it), and sorts
//! by a fixed set of keys.

use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use sqlx::any::AnyQueryResult;
use sqlx::FromRow;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;
use uuid::Uuid;

use crate::auth::Org;
use crate::db::{self, AnyQuery, Db, Writer};
use crate::error::{ApiError, ApiResult, Json, Query, Validator};
use crate::fields::{self, Id, Table};
use crate::money;
use crate::owned::Owned;
use crate::pagination::{PageParams, Paginated};
use crate::policy::{cached, invalidates, writes_through, Group, RoutePolicy};
use crate::state::AppState;

const MAX_SKU_CHARS: usize = 100;
const MAX_DESCRIPTION_CHARS: usize = 5000;
const MAX_UNIT_CHARS: usize = 50;
const MAX_SEARCH_CHARS: usize = 200;

/// An item's SKU in the document: 1 to [`MAX_SKU_CHARS`] characters, not blank.
fn sku_schema() -> utoipa::openapi::Object {
    fields::not_blank(MAX_SKU_CHARS)
}

/// The item routes.
pub fn router() -> OpenApiRouter<AppState> {
    crate::openapi::tagged(
        "items",
        OpenApiRouter::new()
            .routes(routes!(list).cache(cached("items:list", 60)))
            // A new item changes the lists, not the other items' details.
            .routes(routes!(create).layer(invalidates(&[
                Group::ItemsList,
                Group::Stock,
                Group::Dashboard,
                Group::Reports,
            ])))
            // Tagged `item:{id}`: a write to this item drops its entry, not its siblings'.
            .routes(routes!(read).cache(cached("items:detail", 120).tag_by_last_segment("item")))
            .routes(
                routes!(replace, patch, remove).layer(
                    tower::ServiceBuilder::new()
                        // Outside the invalidation: stores the written item as its detail
                        // entry once the write's own invalidation has run.
                        .layer(writes_through("items:detail", 120).tag_by_last_segment("item"))
                        // The lists, this item's own entries, and what its price and stock
                        // feed; other items' details stay.
                        .layer(
                            invalidates(&[
                                Group::ItemsList,
                                Group::Stock,
                                Group::Dashboard,
                                Group::Reports,
                            ])
                            .tag_by_last_segment("item"),
                        ),
                ),
            ),
    )
}

#[derive(Debug, Clone, PartialEq, FromRow, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct Item {
    id: String,
    name: String,
    sku: String,
    description: Option<String>,
    price_cents: i64,
    cost_cents: Option<i64>,
    category_id: Option<String>,
    tax_rate_id: Option<String>,
    reorder_level: Option<i64>,
    unit: Option<String>,
    stock_on_hand: i64,
    created_at: String,
    updated_at: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct ItemBody {
    #[schema(schema_with = fields::name_schema)]
    name: String,
    #[schema(schema_with = sku_schema)]
    sku: String,
    #[schema(minimum = 0, maximum = 10_000_000_000_000_i64)]
    price_cents: i64,
    #[serde(default)]
    #[schema(minimum = 0, maximum = 10_000_000_000_000_i64)]
    cost_cents: Option<i64>,
    #[serde(default)]
    #[schema(max_length = 5000)]
    description: Option<String>,
    #[serde(default)]
    #[schema(format = Uuid)]
    category_id: Option<String>,
    #[serde(default)]
    #[schema(format = Uuid)]
    tax_rate_id: Option<String>,
    #[serde(default)]
    #[schema(minimum = 0, maximum = 1_000_000_000_000_i64)]
    reorder_level: Option<i64>,
    #[serde(default)]
    #[schema(max_length = 50)]
    unit: Option<String>,
}

#[derive(Clone, Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct ItemPatch {
    #[serde(default, deserialize_with = "fields::patch")]
    #[schema(schema_with = fields::name_schema)]
    name: Option<Option<String>>,
    #[serde(default, deserialize_with = "fields::patch")]
    #[schema(schema_with = sku_schema)]
    sku: Option<Option<String>>,
    #[serde(default, deserialize_with = "fields::patch")]
    #[schema(minimum = 0, maximum = 10_000_000_000_000_i64, nullable = false)]
    price_cents: Option<Option<i64>>,
    #[serde(default, deserialize_with = "fields::patch")]
    #[schema(minimum = 0, maximum = 10_000_000_000_000_i64)]
    cost_cents: Option<Option<i64>>,
    #[serde(default, deserialize_with = "fields::patch")]
    #[schema(max_length = 5000)]
    description: Option<Option<String>>,
    #[serde(default, deserialize_with = "fields::patch")]
    #[schema(format = Uuid)]
    category_id: Option<Option<String>>,
    #[serde(default, deserialize_with = "fields::patch")]
    #[schema(format = Uuid)]
    tax_rate_id: Option<Option<String>>,
    #[serde(default, deserialize_with = "fields::patch")]
    #[schema(minimum = 0, maximum = 1_000_000_000_000_i64)]
    reorder_level: Option<Option<i64>>,
    #[serde(default, deserialize_with = "fields::patch")]
    #[schema(max_length = 50)]
    unit: Option<Option<String>>,
}

/// The item columns plus `stock_on_hand`, for `FROM items i`. The sum is cast because
/// PostgreSQL's `SUM(BIGINT)` is NUMERIC, which the `Any` driver cannot decode.
const SELECT: &str = "SELECT i.id, i.name, i.sku, i.description, i.price_cents, i.cost_cents,
       i.category_id, i.tax_rate_id, i.reorder_level, i.unit, i.created_at, i.updated_at,
       CAST(COALESCE((SELECT SUM(s.quantity) FROM stock_levels s WHERE s.item_id = i.id), 0)
            AS BIGINT) AS stock_on_hand
     FROM items i";

const ROWS: Owned<Item> = Owned::new("items", "i", SELECT, "item");

/// Checks a body's shape, then that its references are rows of the caller's organization.
async fn validate(db: &Db, org_id: &str, body: ItemBody, mut v: Validator) -> ApiResult<ItemBody> {
    let name = fields::name(&body.name, "name", &mut v);
    let sku = fields::required_text(&body.sku, "sku", MAX_SKU_CHARS, &mut v);
    money::check_cents(body.price_cents, "priceCents", &mut v);
    if let Some(cost) = body.cost_cents {
        money::check_cents(cost, "costCents", &mut v);
    }
    if let Some(level) = body.reorder_level {
        money::check_stock(level, "reorderLevel", &mut v);
    }
    let description = fields::optional_text(
        body.description,
        "description",
        MAX_DESCRIPTION_CHARS,
        &mut v,
    );
    let unit = fields::optional_text(body.unit, "unit", MAX_UNIT_CHARS, &mut v);
    let category_id = fields::reference(body.category_id, "categoryId", &mut v);
    let tax_rate_id = fields::reference(body.tax_rate_id, "taxRateId", &mut v);
    v.finish()?;
    fields::check_reference(
        db,
        Table::Categories,
        org_id,
        category_id.as_deref(),
        "categoryId",
        &mut v,
    )
    .await?;
    fields::check_reference(
        db,
        Table::TaxRates,
        org_id,
        tax_rate_id.as_deref(),
        "taxRateId",
        &mut v,
    )
    .await?;
    v.finish()?;
    Ok(ItemBody {
        name,
        sku,
        price_cents: body.price_cents,
        cost_cents: body.cost_cents,
        description,
        category_id,
        tax_rate_id,
        reorder_level: body.reorder_level,
        unit,
    })
}

/// 409 for a duplicate SKU; a vanished reference is 409 too (see [`fields::reference_gone`]).
fn write_error(e: sqlx::Error) -> ApiError {
    if db::is_unique_violation(&e) {
        ApiError::Conflict("an item with this SKU already exists".into())
    } else {
        fields::reference_gone(e)
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListParams {
    #[serde(flatten)]
    page: PageParams,
    search: Option<String>,
    category_id: Option<String>,
    sort: Option<String>,
    low_stock: Option<String>,
}

/// `ORDER BY` for each accepted `sort` value. Only these fixed strings ever reach the SQL;
/// the id breaks ties so pages never overlap or skip rows. Names sort by `LOWER(name)` so
/// the order ignores case on both engines (SQLite's default collation is bytewise, and
/// PostgreSQL's depends on the database's locale).
const DEFAULT_ORDER: &str = "LOWER(i.name) ASC, i.name ASC, i.id ASC";

fn order_by(sort: &str) -> Option<&'static str> {
    Some(match sort {
        "name" => "LOWER(i.name) ASC, i.name ASC, i.id ASC",
        "-name" => "LOWER(i.name) DESC, i.name DESC, i.id DESC",
        "sku" => "i.sku ASC, i.id ASC",
        "-sku" => "i.sku DESC, i.id DESC",
        "priceCents" => "i.price_cents ASC, i.id ASC",
        "-priceCents" => "i.price_cents DESC, i.id DESC",
        "createdAt" => "i.created_at ASC, i.id ASC",
        "-createdAt" => "i.created_at DESC, i.id DESC",
        _ => return None,
    })
}

#[utoipa::path(
    get, path = "/items", operation_id = "listItems", summary = "List items",
    params(
        crate::pagination::PageParams,
        ("search" = Option<String>, Query, max_length = 200, description = "Case-insensitive match on name or SKU (on SQLite, only ASCII letters are matched regardless of case; PostgreSQL folds every letter)"),
        ("categoryId" = Option<String>, Query, format = Uuid, description = "Only items of this category"),
        ("sort" = Option<String>, Query, pattern = "^-?(name|sku|priceCents|createdAt)$", description = "`name`, `sku`, `priceCents` or `createdAt`; a leading `-` sorts descending. Default `name`"),
        ("lowStock" = Option<bool>, Query, description = "`true`: only items at or below their reorder level"),
    ),
    responses((status = 200, description = "One page of items", body = crate::pagination::Paginated<Item>)),
)]
async fn list(org: Org, Query(params): Query<ListParams>) -> ApiResult<Json<Paginated<Item>>> {
    let mut v = Validator::default();
    let page = params.page.parse(&mut v);
    let mut filter = ROWS.of_organization(&org.id);
    if let Some(raw) = params.search.as_deref() {
        let search = raw.trim();
        v.check(
            raw.chars().count() <= MAX_SEARCH_CHARS,
            "search",
            "must be at most 200 characters",
        );
        if !search.is_empty() {
            let p = filter.bind(fields::like_pattern(search));
            filter.and(format!(
                "(LOWER(i.name) LIKE LOWER({p}) ESCAPE '\\' OR LOWER(i.sku) LIKE LOWER({p}) ESCAPE '\\')"
            ));
        }
    }
    if let Some(raw) = params.category_id {
        if let Some(category_id) = fields::reference(Some(raw), "categoryId", &mut v) {
            let p = filter.bind(category_id);
            filter.and(format!("i.category_id = {p}"));
        }
    }
    // A parameter that is present must be valid (as the document says), empty included.
    let order = match params.sort.as_deref() {
        None => DEFAULT_ORDER,
        Some(sort) => {
            let order = order_by(sort);
            v.check(
                order.is_some(),
                "sort",
                "must be one of name, -name, sku, -sku, priceCents, -priceCents, createdAt, \
                 -createdAt",
            );
            order.unwrap_or(DEFAULT_ORDER)
        }
    };
    match params.low_stock.as_deref() {
        None | Some("false") => {}
        Some("true") => filter.and(
            "i.reorder_level IS NOT NULL AND COALESCE((SELECT SUM(s.quantity) FROM stock_levels s \
             WHERE s.item_id = i.id), 0) <= i.reorder_level",
        ),
        Some(_) => {
            v.check(false, "lowStock", "must be true or false");
        }
    }
    v.finish()?;

    ROWS.page(&org.db, &filter, order, page).await
}

#[utoipa::path(
    post, path = "/items", operation_id = "createItem", summary = "Create an item",
    request_body = ItemBody,
    responses(
        (status = 201, description = "The new item", body = Item),
        (status = 409, description = "Another item of the organization has this SKU", body = crate::error::Problem, content_type = "application/problem+json"),
    ),
)]
async fn create(org: Org, Json(body): Json<ItemBody>) -> ApiResult<(StatusCode, Json<Item>)> {
    let input = validate(&org.db, &org.id, body, Validator::default()).await?;
    let id = Uuid::new_v4().to_string();
    let now = db::now();
    let write = bind_fields(
        sqlx::query(
            "INSERT INTO items (name, sku, description, price_cents, cost_cents, category_id,
               tax_rate_id, reorder_level, unit, created_at, updated_at, organization_id, id)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10, $11, $12)",
        ),
        &input,
    )
    .bind(&now)
    .bind(&org.id)
    .bind(&id);
    org.db.execute_write(write).await.map_err(write_error)?;
    Ok((
        StatusCode::CREATED,
        Json(ROWS.find(&org.db, &org.id, &id).await?),
    ))
}

#[utoipa::path(
    get, path = "/items/{id}", operation_id = "getItem", summary = "Get an item",
    responses((status = 200, description = "The item", body = Item)),
)]
async fn read(org: Org, Id(id): Id) -> ApiResult<Json<Item>> {
    Ok(Json(ROWS.find(&org.db, &org.id, &id).await?))
}

#[utoipa::path(
    put, path = "/items/{id}", operation_id = "replaceItem", summary = "Replace an item",
    request_body = ItemBody,
    responses(
        (status = 200, description = "The updated item", body = Item),
        (status = 409, description = "Another item of the organization has this SKU", body = crate::error::Problem, content_type = "application/problem+json"),
    ),
)]
async fn replace(org: Org, Id(id): Id, Json(body): Json<ItemBody>) -> ApiResult<Json<Item>> {
    ROWS.find(&org.db, &org.id, &id).await?;
    let input = validate(&org.db, &org.id, body, Validator::default()).await?;
    let written = update(Writer::Alone(&org.db), &org.id, &id, input).await?;
    ROWS.read_back(&org.db, &org.id, &id, written).await
}

#[utoipa::path(
    patch, path = "/items/{id}", operation_id = "updateItem",
    summary = "Update some fields of an item",
    request_body = ItemPatch,
    responses(
        (status = 200, description = "The updated item", body = Item),
        (status = 409, description = "Another item of the organization has this SKU", body = crate::error::Problem, content_type = "application/problem+json"),
    ),
)]
async fn patch(org: Org, Id(id): Id, Json(body): Json<ItemPatch>) -> ApiResult<Json<Item>> {
    let (mut tx, input) = ROWS
        .patch(&org.db, &org.id, &id, |current| {
            let (body, org) = (body.clone(), &org);
            async move {
                let mut v = Validator::default();
                let merged = ItemBody {
                    name: fields::merge_required(body.name, current.name, "name", &mut v),
                    sku: fields::merge_required(body.sku, current.sku, "sku", &mut v),
                    price_cents: fields::merge_required(
                        body.price_cents,
                        current.price_cents,
                        "priceCents",
                        &mut v,
                    ),
                    cost_cents: fields::merge_nullable(body.cost_cents, current.cost_cents),
                    description: fields::merge_nullable(body.description, current.description),
                    category_id: fields::merge_nullable(body.category_id, current.category_id),
                    tax_rate_id: fields::merge_nullable(body.tax_rate_id, current.tax_rate_id),
                    reorder_level: fields::merge_nullable(
                        body.reorder_level,
                        current.reorder_level,
                    ),
                    unit: fields::merge_nullable(body.unit, current.unit),
                };
                validate(&org.db, &org.id, merged, v).await
            }
        })
        .await?;
    let written = update(Writer::In(&mut tx), &org.id, &id, input).await?;
    tx.commit().await?;
    ROWS.read_back(&org.db, &org.id, &id, written).await
}

async fn update(
    to: Writer<'_>,
    org_id: &str,
    id: &str,
    input: ItemBody,
) -> ApiResult<AnyQueryResult> {
    let write = bind_fields(
        sqlx::query(
            "UPDATE items SET name = $1, sku = $2, description = $3, price_cents = $4,
               cost_cents = $5, category_id = $6, tax_rate_id = $7, reorder_level = $8,
               unit = $9, updated_at = $10
             WHERE organization_id = $11 AND id = $12",
        ),
        &input,
    )
    .bind(db::now())
    .bind(org_id)
    .bind(id);
    to.execute(write).await.map_err(write_error)
}

/// Binds an item's fields as `$1`..`$9`, in the order the `INSERT` and `UPDATE` name them
/// (a new field is added here once, for both).
fn bind_fields<'q>(query: AnyQuery<'q>, input: &'q ItemBody) -> AnyQuery<'q> {
    query
        .bind(&input.name)
        .bind(&input.sku)
        .bind(&input.description)
        .bind(input.price_cents)
        .bind(input.cost_cents)
        .bind(&input.category_id)
        .bind(&input.tax_rate_id)
        .bind(input.reorder_level)
        .bind(&input.unit)
}

#[utoipa::path(
    delete, path = "/items/{id}", operation_id = "deleteItem", summary = "Delete an item",
    responses((status = 409, description = "Stock, orders or movements refer to the item", body = crate::error::Problem, content_type = "application/problem+json")),
)]
async fn remove(org: Org, Id(id): Id) -> ApiResult<StatusCode> {
    ROWS.delete(&org.db, &org.id, &id).await
}
