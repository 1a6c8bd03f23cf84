//! `/warehouses`: `{name, code}`. The code is the short handle people use on labels and in
//! transfers, so it is unique within an organization (another organization may reuse it).

use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use sqlx::any::AnyQueryResult;
use sqlx::FromRow;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;
use uuid::Uuid;

use crate::auth::Org;
use crate::db::{self, Writer};
use crate::error::{ApiError, ApiResult, Json, Query, Validator};
use crate::fields::{self, Id};
use crate::owned::{Owned, BY_NAME};
use crate::pagination::{PageParams, Paginated};
use crate::policy::{invalidates, Group};
use crate::state::AppState;

const MAX_CODE_CHARS: usize = 50;

/// A warehouse code in the document: 1 to [`MAX_CODE_CHARS`] characters, not blank.
fn code_schema() -> utoipa::openapi::Object {
    fields::not_blank(MAX_CODE_CHARS)
}

pub fn router() -> OpenApiRouter<AppState> {
    // Warehouse names and codes appear in stock levels and the inventory status.
    let writes = || invalidates(&[Group::Stock, Group::Dashboard]);
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(create).layer(writes()))
        .routes(routes!(read))
        .routes(routes!(replace, patch, remove).layer(writes()))
}

#[derive(Debug, Clone, PartialEq, FromRow, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct Warehouse {
    id: String,
    name: String,
    code: String,
    created_at: String,
    updated_at: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
struct WarehouseBody {
    #[schema(schema_with = fields::name_schema)]
    name: String,
    #[schema(schema_with = code_schema)]
    code: String,
}

#[derive(Clone, Debug, Deserialize, utoipa::ToSchema)]
struct WarehousePatch {
    #[serde(default, deserialize_with = "fields::patch")]
    #[schema(schema_with = fields::name_schema)]
    name: Option<Option<String>>,
    #[serde(default, deserialize_with = "fields::patch")]
    #[schema(schema_with = code_schema)]
    code: Option<Option<String>>,
}

const ROWS: Owned<Warehouse> = Owned::new(
    "warehouses",
    "",
    "SELECT id, name, code, created_at, updated_at FROM warehouses",
    "warehouse",
);

fn validate(body: WarehouseBody, mut v: Validator) -> ApiResult<WarehouseBody> {
    let name = fields::name(&body.name, "name", &mut v);
    let code = fields::required_text(&body.code, "code", MAX_CODE_CHARS, &mut v);
    v.finish()?;
    Ok(WarehouseBody { name, code })
}

fn duplicate_code(e: sqlx::Error) -> ApiError {
    if db::is_unique_violation(&e) {
        ApiError::Conflict("a warehouse with this code already exists".into())
    } else {
        fields::reference_gone(e)
    }
}

#[utoipa::path(
    get, path = "/warehouses", operation_id = "listWarehouses", summary = "List warehouses",
    params(crate::pagination::PageParams),
    responses((status = 200, description = "One page of warehouses", body = crate::pagination::Paginated<Warehouse>)),
)]
async fn list(org: Org, Query(page): Query<PageParams>) -> ApiResult<Json<Paginated<Warehouse>>> {
    let filter = ROWS.of_organization(&org.id);
    ROWS.page(&org.db, &filter, BY_NAME, page.validated()?)
        .await
}

#[utoipa::path(
    post, path = "/warehouses", operation_id = "createWarehouse", summary = "Create a warehouse",
    request_body = WarehouseBody,
    responses(
        (status = 201, description = "The new warehouse", body = Warehouse),
        (status = 409, description = "Another warehouse has this code", body = crate::error::Problem, content_type = "application/problem+json"),
    ),
)]
async fn create(
    org: Org,
    Json(body): Json<WarehouseBody>,
) -> ApiResult<(StatusCode, Json<Warehouse>)> {
    let input = validate(body, Validator::default())?;
    let now = db::now();
    let row = Warehouse {
        id: Uuid::new_v4().to_string(),
        name: input.name,
        code: input.code,
        created_at: now.clone(),
        updated_at: now,
    };
    org.db
        .execute_write(
            sqlx::query(
                "INSERT INTO warehouses (id, organization_id, name, code, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&row.id)
            .bind(&org.id)
            .bind(&row.name)
            .bind(&row.code)
            .bind(&row.created_at)
            .bind(&row.updated_at),
        )
        .await
        .map_err(duplicate_code)?;
    Ok((StatusCode::CREATED, Json(row)))
}

#[utoipa::path(
    get, path = "/warehouses/{id}", operation_id = "getWarehouse", summary = "Get a warehouse",
    responses((status = 200, description = "The warehouse", body = Warehouse)),
)]
async fn read(org: Org, Id(id): Id) -> ApiResult<Json<Warehouse>> {
    Ok(Json(ROWS.find(&org.db, &org.id, &id).await?))
}

#[utoipa::path(
    put, path = "/warehouses/{id}", operation_id = "replaceWarehouse",
    summary = "Replace a warehouse",
    request_body = WarehouseBody,
    responses(
        (status = 200, description = "The updated warehouse", body = Warehouse),
        (status = 409, description = "Another warehouse has this code", body = crate::error::Problem, content_type = "application/problem+json"),
    ),
)]
async fn replace(
    org: Org,
    Id(id): Id,
    Json(body): Json<WarehouseBody>,
) -> ApiResult<Json<Warehouse>> {
    ROWS.find(&org.db, &org.id, &id).await?;
    let input = validate(body, Validator::default())?;
    let written = update(Writer::Alone(&org.db), &org.id, &id, input).await?;
    ROWS.read_back(&org.db, &org.id, &id, written).await
}

#[utoipa::path(
    patch, path = "/warehouses/{id}", operation_id = "updateWarehouse",
    summary = "Update some fields of a warehouse",
    request_body = WarehousePatch,
    responses(
        (status = 200, description = "The updated warehouse", body = Warehouse),
        (status = 409, description = "Another warehouse has this code", body = crate::error::Problem, content_type = "application/problem+json"),
    ),
)]
async fn patch(
    org: Org,
    Id(id): Id,
    Json(body): Json<WarehousePatch>,
) -> ApiResult<Json<Warehouse>> {
    let (mut tx, input) = ROWS
        .patch(&org.db, &org.id, &id, |current| {
            let body = body.clone();
            async move {
                let mut v = Validator::default();
                let merged = WarehouseBody {
                    name: fields::merge_required(body.name, current.name, "name", &mut v),
                    code: fields::merge_required(body.code, current.code, "code", &mut v),
                };
                validate(merged, v)
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
    input: WarehouseBody,
) -> ApiResult<AnyQueryResult> {
    to.execute(
        sqlx::query(
            "UPDATE warehouses SET name = $1, code = $2, updated_at = $3
         WHERE organization_id = $4 AND id = $5",
        )
        .bind(&input.name)
        .bind(&input.code)
        .bind(db::now())
        .bind(org_id)
        .bind(id),
    )
    .await
    .map_err(duplicate_code)
}

#[utoipa::path(
    delete, path = "/warehouses/{id}", operation_id = "deleteWarehouse",
    summary = "Delete a warehouse",
    responses((status = 409, description = "The warehouse holds stock or orders refer to it", body = crate::error::Problem, content_type = "application/problem+json")),
)]
async fn remove(org: Org, Id(id): Id) -> ApiResult<StatusCode> {
    ROWS.delete(&org.db, &org.id, &id).await
}
