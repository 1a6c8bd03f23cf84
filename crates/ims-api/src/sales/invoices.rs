//! `/invoices`: one invoice per sales order, numbered `INV-000001`, `INV-000002`, … per
//! organization with no gaps and no duplicates, and the payments against it.
//!
//! The number comes from a per-organization counter row incremented in the same
//! transaction that inserts the invoice: a failed insert rolls the increment back (no gap),
//! and the counter's row lock (PostgreSQL) or the database write lock (SQLite) serialises
//! concurrent invoices, across any number of API instances sharing the database.

use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use sqlx::FromRow;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;
use uuid::Uuid;

use crate::auth::Org;
use crate::db;
use crate::error::{ApiError, ApiResult, Json, Query, Validator};
use crate::fields::{self, Id};
use crate::money::MAX_CENTS;
use crate::pagination::{DocumentFilter, DocumentQuery, Paginated};
use crate::policy::{invalidates, Group};
use crate::state::AppState;
use crate::status::{InvoiceStatus, SalesOrderStatus, Status};

/// The invoice routes.
pub fn router() -> OpenApiRouter<AppState> {
    let writes = || invalidates(&[Group::Dashboard, Group::Reports]);
    crate::openapi::tagged(
        "invoices",
        OpenApiRouter::new()
            .routes(routes!(list))
            .routes(routes!(create).layer(writes()))
            .routes(routes!(read))
            .routes(routes!(pay).layer(writes())),
    )
}

#[derive(Debug, Clone, FromRow, Serialize, utoipa::ToSchema)]
#[schema(as = InvoiceSummary)]
#[serde(rename_all = "camelCase")]
struct InvoiceRow {
    id: String,
    number: String,
    sales_order_id: String,
    customer_id: String,
    #[sqlx(try_from = "String")]
    status: InvoiceStatus,
    subtotal_cents: i64,
    tax_cents: i64,
    total_cents: i64,
    paid_cents: i64,
    issued_at: String,
    created_at: String,
    updated_at: String,
}

#[derive(Debug, Clone, FromRow, Serialize, utoipa::ToSchema)]
#[schema(as = Payment)]
#[serde(rename_all = "camelCase")]
struct PaymentRow {
    id: String,
    amount_cents: i64,
    paid_at: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct Invoice {
    #[serde(flatten)]
    invoice: InvoiceRow,
    balance_cents: i64,
    payments: Vec<PaymentRow>,
}

const INVOICE_COLUMNS: &str = "id, number, sales_order_id, customer_id, status, subtotal_cents, tax_cents, total_cents, paid_cents, issued_at, created_at, updated_at";

async fn load(conn: &mut sqlx::AnyConnection, org_id: &str, id: &str) -> ApiResult<Invoice> {
    let invoice: InvoiceRow = sqlx::query_as(&format!(
        "SELECT {INVOICE_COLUMNS} FROM invoices WHERE organization_id = $1 AND id = $2"
    ))
    .bind(org_id)
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| fields::not_found("invoice"))?;
    let payments = sqlx::query_as(
        "SELECT id, amount_cents, paid_at FROM payments
         WHERE invoice_id = $1 AND organization_id = $2 ORDER BY paid_at, id",
    )
    .bind(id)
    .bind(org_id)
    .fetch_all(&mut *conn)
    .await?;
    Ok(Invoice {
        balance_cents: invoice.total_cents - invoice.paid_cents,
        invoice,
        payments,
    })
}

/// `INV-000042`.
fn format_number(sequence: i64) -> String {
    format!("INV-{sequence:06}")
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(as = InvoiceBody)]
#[serde(rename_all = "camelCase")]
struct CreateBody {
    #[schema(format = Uuid)]
    sales_order_id: String,
}

#[derive(Debug, FromRow)]
struct OrderFacts {
    customer_id: String,
    #[sqlx(try_from = "String")]
    status: SalesOrderStatus,
    subtotal_cents: i64,
    tax_cents: i64,
    total_cents: i64,
}

#[utoipa::path(
    post, path = "/invoices", operation_id = "createInvoice", summary = "Invoice a sales order",
    description = "Numbers (`INV-000001`, …) are sequential per organization, without gaps or duplicates.",
    request_body = CreateBody,
    responses(
        (status = 201, description = "The new invoice", body = Invoice),
        (status = 409, description = "The order is cancelled or already invoiced", body = crate::error::Problem, content_type = "application/problem+json"),
    ),
)]
async fn create(org: Org, Json(body): Json<CreateBody>) -> ApiResult<(StatusCode, Json<Invoice>)> {
    let mut v = Validator::default();
    let order_id = fields::reference(Some(body.sales_order_id), "salesOrderId", &mut v);
    v.finish()?;
    let order_id = order_id.unwrap_or_default();

    let mut tx = org.db.begin_write().await?;
    // Counter first: it is the transaction's first write, so on SQLite the write lock is
    // held from here, and on PostgreSQL the row lock orders concurrent invoices.
    sqlx::query(
        "INSERT INTO invoice_counters (organization_id, last_number) VALUES ($1, 0)
         ON CONFLICT (organization_id) DO NOTHING",
    )
    .bind(&org.id)
    .execute(&mut *tx)
    .await?;
    let sequence: i64 = sqlx::query_scalar(
        "UPDATE invoice_counters SET last_number = last_number + 1
         WHERE organization_id = $1 RETURNING last_number",
    )
    .bind(&org.id)
    .fetch_one(&mut *tx)
    .await?;
    // Read through a no-op UPDATE: on PostgreSQL it takes the order's row lock, which a
    // PATCH of the order takes too, so the invoice copies the figures of a finished PATCH
    // and a later PATCH sees the invoice (and refuses to change what it billed).
    let order: Option<OrderFacts> = sqlx::query_as(
        "UPDATE sales_orders SET updated_at = updated_at
         WHERE organization_id = $1 AND id = $2
         RETURNING customer_id, status, subtotal_cents, tax_cents, total_cents",
    )
    .bind(&org.id)
    .bind(&order_id)
    .fetch_optional(&mut *tx)
    .await?;
    // Dropping `tx` on any early return rolls the counter back: no gap.
    let Some(order) = order else {
        return Err(ApiError::field("salesOrderId", "does not exist"));
    };
    if order.status == SalesOrderStatus::Cancelled {
        return Err(ApiError::Conflict(
            "a cancelled order cannot be invoiced".into(),
        ));
    }
    let now = db::now();
    let invoice = InvoiceRow {
        id: Uuid::new_v4().to_string(),
        number: format_number(sequence),
        sales_order_id: order_id,
        customer_id: order.customer_id,
        status: if order.total_cents == 0 {
            InvoiceStatus::Paid
        } else {
            InvoiceStatus::Unpaid
        },
        subtotal_cents: order.subtotal_cents,
        tax_cents: order.tax_cents,
        total_cents: order.total_cents,
        paid_cents: 0,
        issued_at: now.clone(),
        created_at: now.clone(),
        updated_at: now,
    };
    let inserted = sqlx::query(
        "INSERT INTO invoices (id, organization_id, number, sequence, sales_order_id, customer_id, status,
           subtotal_cents, tax_cents, total_cents, paid_cents, issued_at, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
    )
    .bind(&invoice.id)
    .bind(&org.id)
    .bind(&invoice.number)
    .bind(sequence)
    .bind(&invoice.sales_order_id)
    .bind(&invoice.customer_id)
    .bind(invoice.status.as_str())
    .bind(invoice.subtotal_cents)
    .bind(invoice.tax_cents)
    .bind(invoice.total_cents)
    .bind(invoice.paid_cents)
    .bind(&invoice.issued_at)
    .bind(&invoice.created_at)
    .bind(&invoice.updated_at)
    .execute(&mut *tx)
    .await;
    match inserted {
        Err(e) if db::is_unique_violation(&e) => {
            return Err(ApiError::Conflict(
                "this sales order is already invoiced".into(),
            ))
        }
        other => other.map_err(fields::reference_gone)?,
    };
    tx.commit().await?;
    Ok((
        StatusCode::CREATED,
        Json(Invoice {
            balance_cents: invoice.total_cents,
            invoice,
            payments: Vec::new(),
        }),
    ))
}

#[utoipa::path(
    get, path = "/invoices/{id}", operation_id = "getInvoice",
    summary = "Get an invoice with its payments",
    responses((status = 200, description = "The invoice", body = Invoice)),
)]
async fn read(org: Org, Id(id): Id) -> ApiResult<Json<Invoice>> {
    let mut conn = org.db.pool().acquire().await?;
    Ok(Json(load(&mut conn, &org.id, &id).await?))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListQuery {
    customer_id: Option<String>,
    #[serde(flatten)]
    document: DocumentQuery,
}

#[utoipa::path(
    get, path = "/invoices", operation_id = "listInvoices", summary = "List invoices",
    params(
        crate::pagination::PageParams,
        ("status" = Option<String>, Query, pattern = "^(unpaid|partially_paid|paid)$", description = "Invoice status"),
        ("customerId" = Option<String>, Query, format = Uuid, description = "Only this customer"),
        ("from" = Option<String>, Query, format = Date, description = "Issued on or after this date (`YYYY-MM-DD`, UTC)"),
        ("to" = Option<String>, Query, format = Date, description = "Issued on or before this date (`YYYY-MM-DD`, UTC)"),
    ),
    responses((status = 200, description = "One page of invoices", body = crate::pagination::Paginated<InvoiceRow>)),
)]
async fn list(org: Org, Query(query): Query<ListQuery>) -> ApiResult<Json<Paginated<InvoiceRow>>> {
    let (filter, page) = DocumentFilter {
        statuses: InvoiceStatus::NAMES,
        party: ("customerId", "customer_id"),
        date_column: "issued_at",
    }
    .build(&org.id, query.document, query.customer_id)?;
    Ok(Json(
        crate::pagination::newest_first(&org.db, INVOICE_COLUMNS, "invoices", filter, page).await?,
    ))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct PaymentBody {
    #[schema(minimum = 1, maximum = 10_000_000_000_000_i64)]
    amount_cents: i64,
}

/// Records a payment; it may not exceed the balance. The balance check and the increment
/// are one conditional statement, so concurrent payments can never overpay.
#[utoipa::path(
    post, path = "/invoices/{id}/payments", operation_id = "createPayment",
    summary = "Record a payment",
    request_body = PaymentBody,
    responses(
        (status = 201, description = "The invoice with the payment applied", body = Invoice),
        (status = 409, description = "The invoice is already paid in full", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 422, description = "The amount is not positive or exceeds the balance", body = crate::error::Problem, content_type = "application/problem+json"),
    ),
)]
async fn pay(
    org: Org,
    Id(id): Id,
    Json(body): Json<PaymentBody>,
) -> ApiResult<(StatusCode, Json<Invoice>)> {
    if !(1..=MAX_CENTS).contains(&body.amount_cents) {
        return Err(ApiError::field(
            "amountCents",
            format!("must be a positive number of cents, at most {MAX_CENTS}"),
        ));
    }
    let now = db::now();
    let mut tx = org.db.begin_write().await?;
    let applied = sqlx::query(
        "UPDATE invoices SET paid_cents = paid_cents + $1,
           status = CASE WHEN paid_cents + $1 >= total_cents THEN $5 ELSE $6 END,
           updated_at = $2
         WHERE organization_id = $3 AND id = $4 AND paid_cents + $1 <= total_cents",
    )
    .bind(body.amount_cents)
    .bind(&now)
    .bind(&org.id)
    .bind(&id)
    .bind(InvoiceStatus::Paid.as_str())
    .bind(InvoiceStatus::PartiallyPaid.as_str())
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if applied == 0 {
        let current = load(&mut tx, &org.id, &id).await?;
        return Err(if current.balance_cents == 0 {
            ApiError::Conflict("the invoice is already paid in full".into())
        } else {
            ApiError::field(
                "amountCents",
                format!(
                    "must not exceed the balance of {} cents",
                    current.balance_cents
                ),
            )
        });
    }
    sqlx::query(
        "INSERT INTO payments (id, organization_id, invoice_id, amount_cents, paid_at, created_at)
         VALUES ($1, $2, $3, $4, $5, $5)",
    )
    .bind(Uuid::new_v4().to_string())
    .bind(&org.id)
    .bind(&id)
    .bind(body.amount_cents)
    .bind(&now)
    .execute(&mut *tx)
    .await?;
    let invoice = load(&mut tx, &org.id, &id).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(invoice)))
}
