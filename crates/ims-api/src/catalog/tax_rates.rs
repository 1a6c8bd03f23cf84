//! `/tax-rates`: `{name, rateBps}`, in basis points (825 = 8.25 %).

use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use sqlx::any::AnyQueryResult;
use sqlx::FromRow;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;
use uuid::Uuid;

use crate::auth::Org;
use crate::db::{self, Writer};
use crate::error::{ApiResult, Json, Query, Validator};
use crate::fields::{self, Id};
use crate::owned::{Owned, BY_NAME};
use crate::pagination::{PageParams, Paginated};
use crate::policy::{cached_l1, invalidates, Group, RoutePolicy};
use crate::state::AppState;

// Highest rate accepted: 1000 %. Generous, but it catches rates sent as percent × 10 000.
use crate::money::MAX_RATE_BPS;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list).cache(cached_l1("tax:rates", 600)))
        .routes(routes!(create).layer(invalidates(&[Group::Tax])))
        .routes(routes!(read))
        .routes(routes!(replace, patch, remove).layer(invalidates(&[Group::Tax])))
}

#[derive(Debug, Clone, PartialEq, FromRow, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct TaxRate {
    id: String,
    name: String,
    rate_bps: i64,
    created_at: String,
    updated_at: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct TaxRateBody {
    #[schema(schema_with = fields::name_schema)]
    name: String,
    #[schema(minimum = 0, maximum = 100_000)]
    rate_bps: i64,
}

#[derive(Clone, Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct TaxRatePatch {
    #[serde(default, deserialize_with = "fields::patch")]
    #[schema(schema_with = fields::name_schema)]
    name: Option<Option<String>>,
    #[serde(default, deserialize_with = "fields::patch")]
    #[schema(minimum = 0, maximum = 100_000, nullable = false)]
    rate_bps: Option<Option<i64>>,
}

const ROWS: Owned<TaxRate> = Owned::new(
    "tax_rates",
    "",
    "SELECT id, name, rate_bps, created_at, updated_at FROM tax_rates",
    "tax rate",
);

fn validate(body: TaxRateBody, mut v: Validator) -> ApiResult<TaxRateBody> {
    let name = fields::name(&body.name, "name", &mut v);
    v.check(
        (0..=MAX_RATE_BPS).contains(&body.rate_bps),
        "rateBps",
        "must be from 0 to 100000 basis points",
    );
    v.finish()?;
    Ok(TaxRateBody {
        name,
        rate_bps: body.rate_bps,
    })
}

#[utoipa::path(
    get, path = "/tax-rates", operation_id = "listTaxRates", summary = "List tax rates",
    params(crate::pagination::PageParams),
    responses((status = 200, description = "One page of tax rates", body = crate::pagination::Paginated<TaxRate>)),
)]
async fn list(org: Org, Query(page): Query<PageParams>) -> ApiResult<Json<Paginated<TaxRate>>> {
    let filter = ROWS.of_organization(&org.id);
    ROWS.page(&org.db, &filter, BY_NAME, page.validated()?)
        .await
}

#[utoipa::path(
    post, path = "/tax-rates", operation_id = "createTaxRate", summary = "Create a tax rate",
    request_body = TaxRateBody,
    responses((status = 201, description = "The new tax rate", body = TaxRate)),
)]
async fn create(org: Org, Json(body): Json<TaxRateBody>) -> ApiResult<(StatusCode, Json<TaxRate>)> {
    let input = validate(body, Validator::default())?;
    let now = db::now();
    let row = TaxRate {
        id: Uuid::new_v4().to_string(),
        name: input.name,
        rate_bps: input.rate_bps,
        created_at: now.clone(),
        updated_at: now,
    };
    let write = sqlx::query(
        "INSERT INTO tax_rates (id, organization_id, name, rate_bps, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&row.id)
    .bind(&org.id)
    .bind(&row.name)
    .bind(row.rate_bps)
    .bind(&row.created_at)
    .bind(&row.updated_at);
    org.db
        .execute_write(write)
        .await
        .map_err(fields::reference_gone)?;
    Ok((StatusCode::CREATED, Json(row)))
}

#[utoipa::path(
    get, path = "/tax-rates/{id}", operation_id = "getTaxRate", summary = "Get a tax rate",
    responses((status = 200, description = "The tax rate", body = TaxRate)),
)]
async fn read(org: Org, Id(id): Id) -> ApiResult<Json<TaxRate>> {
    Ok(Json(ROWS.find(&org.db, &org.id, &id).await?))
}

#[utoipa::path(
    put, path = "/tax-rates/{id}", operation_id = "replaceTaxRate", summary = "Replace a tax rate",
    request_body = TaxRateBody,
    responses((status = 200, description = "The updated tax rate", body = TaxRate)),
)]
async fn replace(org: Org, Id(id): Id, Json(body): Json<TaxRateBody>) -> ApiResult<Json<TaxRate>> {
    ROWS.find(&org.db, &org.id, &id).await?;
    let input = validate(body, Validator::default())?;
    let written = update(Writer::Alone(&org.db), &org.id, &id, input).await?;
    ROWS.read_back(&org.db, &org.id, &id, written).await
}

#[utoipa::path(
    patch, path = "/tax-rates/{id}", operation_id = "updateTaxRate",
    summary = "Update some fields of a tax rate",
    request_body = TaxRatePatch,
    responses((status = 200, description = "The updated tax rate", body = TaxRate)),
)]
async fn patch(org: Org, Id(id): Id, Json(body): Json<TaxRatePatch>) -> ApiResult<Json<TaxRate>> {
    let (mut tx, input) = ROWS
        .patch(&org.db, &org.id, &id, |current| {
            let body = body.clone();
            async move {
                let mut v = Validator::default();
                let merged = TaxRateBody {
                    name: fields::merge_required(body.name, current.name, "name", &mut v),
                    rate_bps: fields::merge_required(
                        body.rate_bps,
                        current.rate_bps,
                        "rateBps",
                        &mut v,
                    ),
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
    input: TaxRateBody,
) -> ApiResult<AnyQueryResult> {
    Ok(to
        .execute(
            sqlx::query(
                "UPDATE tax_rates SET name = $1, rate_bps = $2, updated_at = $3
         WHERE organization_id = $4 AND id = $5",
            )
            .bind(&input.name)
            .bind(input.rate_bps)
            .bind(db::now())
            .bind(org_id)
            .bind(id),
        )
        .await?)
}

#[utoipa::path(
    delete, path = "/tax-rates/{id}", operation_id = "deleteTaxRate", summary = "Delete a tax rate",
    responses((status = 409, description = "Items use the tax rate", body = crate::error::Problem, content_type = "application/problem+json")),
)]
async fn remove(org: Org, Id(id): Id) -> ApiResult<StatusCode> {
    ROWS.delete(&org.db, &org.id, &id).await
}
