//! `/contacts`: customers and vendors, `{type, name, email?, phone?, address?}`.
//!
//! One table for both kinds because they share every field; sales orders will refer to
//! customers and purchase orders to vendors. The list filters by `type` and `search`
//! (case-insensitive substring of name or email).

use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use sqlx::any::AnyQueryResult;
use sqlx::FromRow;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;
use uuid::Uuid;

use crate::auth::Org;
use crate::db::{self, WriteTx, Writer};
use crate::error::{ApiError, ApiResult, Json, Query, Validator};
use crate::fields::{self, Id};
use crate::owned::{Owned, BY_NAME};
use crate::pagination::{PageParams, Paginated};
use crate::policy::{cached, invalidates, Group, RoutePolicy};
use crate::state::AppState;

const MAX_PHONE_CHARS: usize = 50;
const MAX_ADDRESS_CHARS: usize = 1000;
const MAX_SEARCH_CHARS: usize = 200;
const TYPES: [&str; 2] = ["customer", "vendor"];

/// The contact routes.
pub fn router() -> OpenApiRouter<AppState> {
    // Contact names appear in the dashboard's top customers and in reports.
    let writes = || invalidates(&[Group::Contacts, Group::Dashboard, Group::Reports]);
    crate::openapi::tagged(
        "contacts",
        OpenApiRouter::new()
            .routes(routes!(list).cache(cached("contacts:list", 60)))
            .routes(routes!(create).layer(writes()))
            .routes(routes!(read))
            .routes(routes!(replace, patch, remove).layer(writes())),
    )
}

#[derive(Debug, Clone, PartialEq, FromRow, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct Contact {
    id: String,
    #[sqlx(rename = "contact_type")]
    #[serde(rename = "type")]
    kind: String,
    name: String,
    email: Option<String>,
    phone: Option<String>,
    address: Option<String>,
    created_at: String,
    updated_at: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
struct ContactBody {
    #[serde(rename = "type")]
    #[schema(pattern = "^(customer|vendor)$")]
    kind: String,
    #[schema(schema_with = fields::name_schema)]
    name: String,
    #[serde(default)]
    #[schema(schema_with = fields::optional_email_schema)]
    email: Option<String>,
    #[serde(default)]
    #[schema(max_length = 50)]
    phone: Option<String>,
    #[serde(default)]
    #[schema(max_length = 1000)]
    address: Option<String>,
}

#[derive(Clone, Debug, Deserialize, utoipa::ToSchema)]
struct ContactPatch {
    #[serde(rename = "type", default, deserialize_with = "fields::patch")]
    #[schema(pattern = "^(customer|vendor)$", nullable = false)]
    kind: Option<Option<String>>,
    #[serde(default, deserialize_with = "fields::patch")]
    #[schema(schema_with = fields::name_schema)]
    name: Option<Option<String>>,
    #[serde(default, deserialize_with = "fields::patch")]
    #[schema(schema_with = fields::optional_email_schema)]
    email: Option<Option<String>>,
    #[serde(default, deserialize_with = "fields::patch")]
    #[schema(max_length = 50)]
    phone: Option<Option<String>>,
    #[serde(default, deserialize_with = "fields::patch")]
    #[schema(max_length = 1000)]
    address: Option<Option<String>>,
}

const ROWS: Owned<Contact> = Owned::new(
    "contacts",
    "",
    "SELECT id, contact_type, name, email, phone, address, created_at, updated_at FROM contacts",
    "contact",
);

fn validate(body: ContactBody, mut v: Validator) -> ApiResult<ContactBody> {
    let kind = body.kind.clone();
    v.check(
        TYPES.contains(&kind.as_str()),
        "type",
        "must be \"customer\" or \"vendor\"",
    );
    let name = fields::name(&body.name, "name", &mut v);
    let email = fields::optional_text(body.email, "email", fields::MAX_EMAIL_CHARS, &mut v);
    if let Some(email) = &email {
        v.check(
            fields::looks_like_email(email),
            "email",
            "must be a valid email address",
        );
    }
    let phone = fields::optional_text(body.phone, "phone", MAX_PHONE_CHARS, &mut v);
    let address = fields::optional_text(body.address, "address", MAX_ADDRESS_CHARS, &mut v);
    v.finish()?;
    Ok(ContactBody {
        kind,
        name,
        email,
        phone,
        address,
    })
}

#[derive(Debug, Deserialize)]
struct ListParams {
    #[serde(flatten)]
    page: PageParams,
    #[serde(rename = "type")]
    kind: Option<String>,
    search: Option<String>,
}

#[utoipa::path(
    get, path = "/contacts", operation_id = "listContacts", summary = "List contacts",
    params(
        crate::pagination::PageParams,
        ("type" = Option<String>, Query, pattern = "^(customer|vendor)$", description = "`customer` or `vendor`"),
        ("search" = Option<String>, Query, max_length = 200, description = "Case-insensitive substring of the name or email (on SQLite, only ASCII letters are matched regardless of case; PostgreSQL folds every letter)"),
    ),
    responses((status = 200, description = "One page of contacts", body = crate::pagination::Paginated<Contact>)),
)]
async fn list(org: Org, Query(params): Query<ListParams>) -> ApiResult<Json<Paginated<Contact>>> {
    let mut v = Validator::default();
    let page = params.page.parse(&mut v);
    let mut filter = ROWS.of_organization(&org.id);
    if let Some(kind) = params.kind.as_deref() {
        v.check(
            TYPES.contains(&kind),
            "type",
            "must be \"customer\" or \"vendor\"",
        );
        let p = filter.bind(kind);
        filter.and(format!("contact_type = {p}"));
    }
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
                "(LOWER(name) LIKE LOWER({p}) ESCAPE '\\' \
                 OR LOWER(COALESCE(email, '')) LIKE LOWER({p}) ESCAPE '\\')"
            ));
        }
    }
    v.finish()?;

    ROWS.page(&org.db, &filter, BY_NAME, page).await
}

#[utoipa::path(
    post, path = "/contacts", operation_id = "createContact", summary = "Create a contact",
    request_body = ContactBody,
    responses((status = 201, description = "The new contact", body = Contact)),
)]
async fn create(org: Org, Json(body): Json<ContactBody>) -> ApiResult<(StatusCode, Json<Contact>)> {
    let input = validate(body, Validator::default())?;
    let now = db::now();
    let row = Contact {
        id: Uuid::new_v4().to_string(),
        kind: input.kind,
        name: input.name,
        email: input.email,
        phone: input.phone,
        address: input.address,
        created_at: now.clone(),
        updated_at: now,
    };
    org.db
        .execute_write(
            sqlx::query(
                "INSERT INTO contacts
           (id, organization_id, contact_type, name, email, phone, address, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(&row.id)
            .bind(&org.id)
            .bind(&row.kind)
            .bind(&row.name)
            .bind(&row.email)
            .bind(&row.phone)
            .bind(&row.address)
            .bind(&row.created_at)
            .bind(&row.updated_at),
        )
        .await
        .map_err(fields::reference_gone)?;
    Ok((StatusCode::CREATED, Json(row)))
}

#[utoipa::path(
    get, path = "/contacts/{id}", operation_id = "getContact", summary = "Get a contact",
    responses((status = 200, description = "The contact", body = Contact)),
)]
async fn read(org: Org, Id(id): Id) -> ApiResult<Json<Contact>> {
    Ok(Json(ROWS.find(&org.db, &org.id, &id).await?))
}

#[utoipa::path(
    put, path = "/contacts/{id}", operation_id = "replaceContact", summary = "Replace a contact",
    request_body = ContactBody,
    responses(
        (status = 200, description = "The updated contact", body = Contact),
        (status = 409, description = "The type would change while orders or invoices name the contact", body = crate::error::Problem, content_type = "application/problem+json"),
    ),
)]
async fn replace(org: Org, Id(id): Id, Json(body): Json<ContactBody>) -> ApiResult<Json<Contact>> {
    let input = validate(body, Validator::default())?;
    let mut tx = org.db.begin_write().await?;
    // The type as it is under the row's lock (a no-op `UPDATE` takes it), not as an earlier
    // read saw it.
    let was: String = sqlx::query_scalar(
        "UPDATE contacts SET updated_at = updated_at WHERE organization_id = $1 AND id = $2
         RETURNING contact_type",
    )
    .bind(&org.id)
    .bind(&id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| fields::not_found("contact"))?;
    keep_type_if_named(&mut tx, &org.id, &id, &was, &input.kind).await?;
    let written = update(Writer::In(&mut tx), &org.id, &id, input).await?;
    tx.commit().await?;
    ROWS.read_back(&org.db, &org.id, &id, written).await
}

#[utoipa::path(
    patch, path = "/contacts/{id}", operation_id = "updateContact",
    summary = "Update some fields of a contact",
    request_body = ContactPatch,
    responses(
        (status = 200, description = "The updated contact", body = Contact),
        (status = 409, description = "The type would change while orders or invoices name the contact", body = crate::error::Problem, content_type = "application/problem+json"),
    ),
)]
async fn patch(org: Org, Id(id): Id, Json(body): Json<ContactPatch>) -> ApiResult<Json<Contact>> {
    let (mut tx, input) = ROWS
        .patch(&org.db, &org.id, &id, |current| {
            let body = body.clone();
            async move {
                let mut v = Validator::default();
                let was = current.kind.clone();
                let merged = ContactBody {
                    kind: fields::merge_required(body.kind, current.kind, "type", &mut v),
                    name: fields::merge_required(body.name, current.name, "name", &mut v),
                    email: fields::merge_nullable(body.email, current.email),
                    phone: fields::merge_nullable(body.phone, current.phone),
                    address: fields::merge_nullable(body.address, current.address),
                };
                Ok((validate(merged, v)?, was))
            }
        })
        .await?;
    let (input, was) = input;
    keep_type_if_named(&mut tx, &org.id, &id, &was, &input.kind).await?;
    let written = update(Writer::In(&mut tx), &org.id, &id, input).await?;
    tx.commit().await?;
    ROWS.read_back(&org.db, &org.id, &id, written).await
}

/// 409 when the type would change while orders or invoices name the contact: they would
/// then name a counterpart of the wrong kind (a probe turned a customer with an open order
/// into a vendor, then invoiced the order). Asked in the write's transaction, under the
/// contact's row lock, which an order naming the contact holds until it commits
/// (`fields::hold_contact`): asked before it, a concurrent order slipped through (a probe,
/// two requests at once).
async fn keep_type_if_named(
    tx: &mut WriteTx,
    org_id: &str,
    id: &str,
    was: &str,
    to: &str,
) -> ApiResult<()> {
    if was == to {
        return Ok(());
    }
    let named: Option<i64> = sqlx::query_scalar(
        "SELECT 1 FROM sales_orders WHERE organization_id = $1 AND customer_id = $2
         UNION ALL SELECT 1 FROM purchase_orders WHERE organization_id = $1 AND vendor_id = $2
         UNION ALL SELECT 1 FROM invoices WHERE organization_id = $1 AND customer_id = $2
         LIMIT 1",
    )
    .bind(org_id)
    .bind(id)
    .fetch_optional(&mut **tx)
    .await?;
    match named {
        Some(_) => Err(ApiError::Conflict(format!(
            "orders or invoices name this {was}: its type cannot change"
        ))),
        None => Ok(()),
    }
}

async fn update(
    to: Writer<'_>,
    org_id: &str,
    id: &str,
    input: ContactBody,
) -> ApiResult<AnyQueryResult> {
    let write = sqlx::query(
        "UPDATE contacts SET contact_type = $1, name = $2, email = $3, phone = $4, address = $5,
           updated_at = $6
         WHERE organization_id = $7 AND id = $8",
    )
    .bind(&input.kind)
    .bind(&input.name)
    .bind(&input.email)
    .bind(&input.phone)
    .bind(&input.address)
    .bind(db::now())
    .bind(org_id)
    .bind(id);
    Ok(to.execute(write).await?)
}

#[utoipa::path(
    delete, path = "/contacts/{id}", operation_id = "deleteContact", summary = "Delete a contact",
    responses((status = 409, description = "Orders or invoices refer to the contact", body = crate::error::Problem, content_type = "application/problem+json")),
)]
async fn remove(org: Org, Id(id): Id) -> ApiResult<StatusCode> {
    ROWS.delete(&org.db, &org.id, &id).await
}
