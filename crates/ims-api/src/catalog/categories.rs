//! `/categories`: `{name, parentId?}`, a tree per organization.

use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use sqlx::any::AnyQueryResult;
use sqlx::FromRow;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;
use uuid::Uuid;

use crate::auth::Org;
use crate::db::{self, Db, WriteTx, Writer};
use crate::error::{ApiError, ApiResult, Json, Query, Validator};
use crate::fields::{self, Id, Table};
use crate::owned::{Owned, BY_NAME};
use crate::pagination::{PageParams, Paginated};
use crate::policy::{cached_l1, invalidates, Group, RoutePolicy};
use crate::state::AppState;

/// Deepest tree walked when checking a new parent for cycles; trees are shallow in practice,
/// and the bound keeps a corrupted chain from looping forever.
const MAX_DEPTH: usize = 1000;

pub fn router() -> OpenApiRouter<AppState> {
    let writes = || invalidates(&[Group::Categories, Group::Items]);
    OpenApiRouter::new()
        .routes(routes!(list).cache(cached_l1("categories:list", 300)))
        .routes(routes!(create).layer(writes()))
        .routes(routes!(read))
        .routes(routes!(replace, patch, remove).layer(writes()))
}

/// A category as stored and as clients see it.
#[derive(Debug, Clone, PartialEq, FromRow, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct Category {
    id: String,
    name: String,
    parent_id: Option<String>,
    created_at: String,
    updated_at: String,
}

/// Create and replace body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct CategoryBody {
    #[schema(schema_with = fields::name_schema)]
    name: String,
    #[serde(default)]
    #[schema(format = Uuid)]
    parent_id: Option<String>,
}

#[derive(Clone, Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct CategoryPatch {
    #[serde(default, deserialize_with = "fields::patch")]
    #[schema(schema_with = fields::name_schema)]
    name: Option<Option<String>>,
    #[serde(default, deserialize_with = "fields::patch")]
    #[schema(format = Uuid)]
    parent_id: Option<Option<String>>,
}

/// Validated field values.
struct Input {
    name: String,
    parent_id: Option<String>,
}

const ROWS: Owned<Category> = Owned::new(
    "categories",
    "",
    "SELECT id, name, parent_id, created_at, updated_at FROM categories",
    "category",
);

/// Checks a body's shape and references (cycles are checked under the tree's lock:
/// [`keep_tree`]).
async fn validate(db: &Db, org_id: &str, body: CategoryBody, mut v: Validator) -> ApiResult<Input> {
    let name = fields::name(&body.name, "name", &mut v);
    let parent_id = fields::reference(body.parent_id, "parentId", &mut v);
    v.finish()?;
    fields::check_reference(
        db,
        Table::Categories,
        org_id,
        parent_id.as_deref(),
        "parentId",
        &mut v,
    )
    .await?;
    v.finish()?;
    Ok(Input { name, parent_id })
}

/// Refuses `parent` as the new parent of `id` when that would close a cycle, checked in the
/// write's transaction after it locked the organization's tree: two concurrent moves (A under
/// B, B under A) each checked alone and both landed, and the cycle then refused every edit of
/// its categories (found by a black-box probe with two instances). Moves of one organization
/// take turns on its row (a no-op `UPDATE`, the engines' one portable row lock; SQLite's
/// write lock already serialises them); nothing else locks that row but a rename of it.
async fn keep_tree(tx: &mut WriteTx, org_id: &str, id: &str, parent: &str) -> ApiResult<()> {
    sqlx::query("UPDATE organizations SET name = name WHERE id = $1")
        .bind(org_id)
        .execute(&mut **tx)
        .await?;
    if is_ancestor_or_self(tx, org_id, id, parent).await? {
        return Err(ApiError::field(
            "parentId",
            "must not be the category itself or one of its descendants",
        ));
    }
    Ok(())
}

/// True when `id` is `start` or one of `start`'s ancestors.
async fn is_ancestor_or_self(
    tx: &mut WriteTx,
    org_id: &str,
    id: &str,
    start: &str,
) -> ApiResult<bool> {
    let mut current = Some(start.to_string());
    for _ in 0..MAX_DEPTH {
        let Some(node) = current else {
            return Ok(false);
        };
        if node == id {
            return Ok(true);
        }
        current = sqlx::query_scalar::<_, Option<String>>(
            "SELECT parent_id FROM categories WHERE organization_id = $1 AND id = $2",
        )
        .bind(org_id)
        .bind(&node)
        .fetch_optional(&mut **tx)
        .await?
        .flatten();
    }
    Ok(true)
}

#[utoipa::path(
    get, path = "/categories", operation_id = "listCategories", summary = "List categories",
    params(crate::pagination::PageParams),
    responses((status = 200, description = "One page of categories", body = crate::pagination::Paginated<Category>)),
)]
async fn list(org: Org, Query(page): Query<PageParams>) -> ApiResult<Json<Paginated<Category>>> {
    let filter = ROWS.of_organization(&org.id);
    ROWS.page(&org.db, &filter, BY_NAME, page.validated()?)
        .await
}

#[utoipa::path(
    post, path = "/categories", operation_id = "createCategory", summary = "Create a category",
    request_body = CategoryBody,
    responses((status = 201, description = "The new category", body = Category)),
)]
async fn create(
    org: Org,
    Json(body): Json<CategoryBody>,
) -> ApiResult<(StatusCode, Json<Category>)> {
    let input = validate(&org.db, &org.id, body, Validator::default()).await?;
    let now = db::now();
    let row = Category {
        id: Uuid::new_v4().to_string(),
        name: input.name,
        parent_id: input.parent_id,
        created_at: now.clone(),
        updated_at: now,
    };
    let write = sqlx::query(
        "INSERT INTO categories (id, organization_id, name, parent_id, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&row.id)
    .bind(&org.id)
    .bind(&row.name)
    .bind(&row.parent_id)
    .bind(&row.created_at)
    .bind(&row.updated_at);
    org.db
        .execute_write(write)
        .await
        .map_err(fields::reference_gone)?;
    Ok((StatusCode::CREATED, Json(row)))
}

#[utoipa::path(
    get, path = "/categories/{id}", operation_id = "getCategory", summary = "Get a category",
    responses((status = 200, description = "The category", body = Category)),
)]
async fn read(org: Org, Id(id): Id) -> ApiResult<Json<Category>> {
    Ok(Json(ROWS.find(&org.db, &org.id, &id).await?))
}

#[utoipa::path(
    put, path = "/categories/{id}", operation_id = "replaceCategory",
    summary = "Replace a category",
    request_body = CategoryBody,
    responses((status = 200, description = "The updated category", body = Category)),
)]
async fn replace(
    org: Org,
    Id(id): Id,
    Json(body): Json<CategoryBody>,
) -> ApiResult<Json<Category>> {
    ROWS.find(&org.db, &org.id, &id).await?;
    let input = validate(&org.db, &org.id, body, Validator::default()).await?;
    let mut tx = org.db.begin_write().await?;
    // The row's lock first, then the tree's, in the order a PATCH takes them: a PUT that took
    // the tree first could wait on a PATCH of the same row waiting on it (a deadlock).
    ROWS.lock(&mut tx, &org.id, &id).await?;
    // Checked whatever the row held when it was read: it may have moved since.
    if let Some(parent) = input.parent_id.as_deref() {
        keep_tree(&mut tx, &org.id, &id, parent).await?;
    }
    let written = update(Writer::In(&mut tx), &org.id, &id, input).await?;
    tx.commit().await?;
    ROWS.read_back(&org.db, &org.id, &id, written).await
}

#[utoipa::path(
    patch, path = "/categories/{id}", operation_id = "updateCategory",
    summary = "Update some fields of a category",
    request_body = CategoryPatch,
    responses((status = 200, description = "The updated category", body = Category)),
)]
async fn patch(org: Org, Id(id): Id, Json(body): Json<CategoryPatch>) -> ApiResult<Json<Category>> {
    let (mut tx, input) = ROWS
        .patch(&org.db, &org.id, &id, |current| {
            let (body, org) = (body.clone(), &org);
            async move {
                let mut v = Validator::default();
                let was = current.parent_id.clone();
                let merged = CategoryBody {
                    name: fields::merge_required(body.name, current.name, "name", &mut v),
                    parent_id: fields::merge_nullable(body.parent_id, current.parent_id),
                };
                let input = validate(&org.db, &org.id, merged, v).await?;
                // Only a move can close a cycle.
                let moved = input
                    .parent_id
                    .clone()
                    .filter(|parent| was.as_ref() != Some(parent));
                Ok((input, moved))
            }
        })
        .await?;
    let (input, moved) = input;
    if let Some(parent) = moved {
        keep_tree(&mut tx, &org.id, &id, &parent).await?;
    }
    let written = update(Writer::In(&mut tx), &org.id, &id, input).await?;
    tx.commit().await?;
    ROWS.read_back(&org.db, &org.id, &id, written).await
}

async fn update(to: Writer<'_>, org_id: &str, id: &str, input: Input) -> ApiResult<AnyQueryResult> {
    to.execute(
        sqlx::query(
            "UPDATE categories SET name = $1, parent_id = $2, updated_at = $3
         WHERE organization_id = $4 AND id = $5",
        )
        .bind(&input.name)
        .bind(&input.parent_id)
        .bind(db::now())
        .bind(org_id)
        .bind(id),
    )
    .await
    .map_err(fields::reference_gone)
}

#[utoipa::path(
    delete, path = "/categories/{id}", operation_id = "deleteCategory",
    summary = "Delete a category",
    responses((status = 409, description = "The category has subcategories or items", body = crate::error::Problem, content_type = "application/problem+json")),
)]
async fn remove(org: Org, Id(id): Id) -> ApiResult<StatusCode> {
    ROWS.delete(&org.db, &org.id, &id).await
}
